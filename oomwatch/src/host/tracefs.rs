//! tracefs: where it is, mounting it when it is not, and parsing event
//! `format` files into the record layouts the eBPF programs read.

use std::path::{Path, PathBuf};

use oomwatch_common::{FIELD_ABSENT, MarkVictimLayout, PageAllocLayout, ReclaimRetryLayout};

/// The size of every trace record's common fields (`struct trace_entry`).
const COMMON_HEADER_BYTES: u32 = 8;

/// Where tracefs lives, newest convention first.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing and mounting it \
         failed ({0}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NotMounted(nix::Error),
    #[error("the kernel has no tracepoint {category}:{name} ({path} is missing)")]
    NoTracepoint {
        category: String,
        name: String,
        path: PathBuf,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: field `{field}` has size {size}, expected {expected}")]
    FieldSize {
        path: PathBuf,
        field: String,
        size: u32,
        expected: u32,
    },
    #[error(
        "{path}: field `{field}` at offset {offset} overlaps the record's 8-byte common header: \
         not a format file this kernel wrote"
    )]
    FieldInHeader {
        path: PathBuf,
        field: String,
        offset: u32,
    },
}

/// The mounted tracefs, if any (a directory holding `events/`).
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// The mounted tracefs, mounting it at `/sys/kernel/tracing` if needed (root).
pub fn find_or_mount() -> Result<PathBuf, TracefsError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(TracefsError::NotMounted)?;
    tracing::info!(path = %target.display(), "mounted tracefs");
    Ok(target.to_path_buf())
}

/// Directory of one event, checked to exist.
pub fn event_dir(root: &Path, category: &str, name: &str) -> Result<PathBuf, TracefsError> {
    let path = root.join("events").join(category).join(name);
    if path.join("format").is_file() {
        Ok(path)
    } else {
        Err(TracefsError::NoTracepoint {
            category: category.to_owned(),
            name: name.to_owned(),
            path,
        })
    }
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `unsigned long`, `__data_loc char[]`.
    pub decl: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of an event's `format` file.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("field:")?;
            let mut parts = line.split(';').map(str::trim);
            let decl = parts.next()?;
            let mut offset = None;
            let mut size = None;
            for p in parts {
                if let Some(v) = p.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            let (ty, name) = decl.rsplit_once(' ')?;
            // `char comm[16]` style: the brackets belong to the type.
            let (name, brackets) = match name.find('[') {
                Some(i) => (&name[..i], &name[i..]),
                None => (name, ""),
            };
            Some(Field {
                name: name.to_owned(),
                decl: format!("{ty}{brackets}"),
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// The `oom:mark_victim` record layout from its format text. Fields this kernel
/// lacks are [`FIELD_ABSENT`]; a field with an unexpected size is an error,
/// since the eBPF side reads fixed widths.
pub fn mark_victim_layout(text: &str, path: &Path) -> Result<MarkVictimLayout, TracefsError> {
    let fields = parse_format(text);
    let mut layout = MarkVictimLayout::ABSENT;
    let word = std::mem::size_of::<u64>() as u32;
    let slots: [(&str, &mut u32, u32); 9] = [
        ("pid", &mut layout.pid, 4),
        ("comm", &mut layout.comm, 4),
        ("total_vm", &mut layout.total_vm, word),
        ("anon_rss", &mut layout.anon_rss, word),
        ("file_rss", &mut layout.file_rss, word),
        ("shmem_rss", &mut layout.shmem_rss, word),
        ("uid", &mut layout.uid, 4),
        ("pgtables", &mut layout.pgtables, word),
        ("oom_score_adj", &mut layout.oom_score_adj, 2),
    ];
    for (name, slot, expected) in slots {
        let Some(f) = fields.iter().find(|f| f.name == name) else {
            continue;
        };
        // Only the `__data_loc` form of comm is read (the only form mark_victim has).
        if name == "comm" && !f.decl.starts_with("__data_loc") {
            continue;
        }
        if f.size != expected {
            return Err(TracefsError::FieldSize {
                path: path.to_path_buf(),
                field: name.to_owned(),
                size: f.size,
                expected,
            });
        }
        // The event's own fields follow the common ones (type, flags,
        // preempt count, pid); the program reads comm's string through
        // its offset there.
        if f.offset < COMMON_HEADER_BYTES {
            return Err(TracefsError::FieldInHeader {
                path: path.to_path_buf(),
                field: name.to_owned(),
                offset: f.offset,
            });
        }
        *slot = f.offset;
    }
    Ok(layout)
}

/// The `oom:reclaim_retry_zone` record layout from its format text (fields
/// this kernel lacks, or of another width, are [`FIELD_ABSENT`]: the program
/// then stays idle).
pub fn reclaim_retry_layout(text: &str) -> ReclaimRetryLayout {
    let fields = parse_format(text);
    let at = |name: &str, size: u32| {
        fields
            .iter()
            .find(|f| f.name == name && f.size == size)
            .map_or(FIELD_ABSENT, |f| f.offset)
    };
    ReclaimRetryLayout {
        order: at("order", 4),
        no_progress_loops: at("no_progress_loops", 4),
        wmark_check: at("wmark_check", 1),
        _pad: 0,
    }
}

/// The `kmem:mm_page_alloc` layout and GFP class bits from its format text;
/// None when the record lacks `order` or `gfp_flags`.
pub fn page_alloc_layout(text: &str) -> Option<PageAllocLayout> {
    let fields = parse_format(text);
    let at = |name: &str, sizes: &[u32]| {
        fields
            .iter()
            .find(|f| f.name == name && sizes.contains(&f.size))
    };
    let gfp = at("gfp_flags", &[4, 8])?;
    let table = crate::model::gfp::GfpTable::from_trace_format(text);
    let bit = |name: &str| {
        table
            .as_ref()
            .map_or(0, |t| u32::try_from(t.flag(name)).unwrap_or(0))
    };
    Some(PageAllocLayout {
        pfn: at("pfn", &[8]).map_or(FIELD_ABSENT, |f| f.offset),
        page: at("page", &[8]).map_or(FIELD_ABSENT, |f| f.offset),
        order: at("order", &[4])?.offset,
        gfp_flags: gfp.offset,
        gfp_size: gfp.size,
        migratetype: at("migratetype", &[4]).map_or(FIELD_ABSENT, |f| f.offset),
        direct_reclaim: bit("__GFP_DIRECT_RECLAIM"),
        hardwall: bit("__GFP_HARDWALL"),
    })
}

/// Reads `events/kmem/mm_page_alloc/format` under `root`.
pub fn read_page_alloc_layout(root: &Path) -> Option<PageAllocLayout> {
    let path = event_dir(root, "kmem", "mm_page_alloc")
        .ok()?
        .join("format");
    page_alloc_layout(&std::fs::read_to_string(path).ok()?)
}

/// Reads `events/oom/reclaim_retry_zone/format` under `root`; None when this
/// kernel has no such tracepoint.
/// Offset of field `name` (exactly `size` bytes wide) in the record of
/// tracepoint `category:event`; None when the tracepoint or the field is
/// missing or has another width.
pub fn read_field_offset(
    root: &Path,
    category: &str,
    event: &str,
    name: &str,
    size: u32,
) -> Option<u32> {
    let path = event_dir(root, category, event).ok()?.join("format");
    parse_format(&std::fs::read_to_string(path).ok()?)
        .into_iter()
        .find(|f| f.name == name && f.size == size)
        .map(|f| f.offset)
}

pub fn read_reclaim_retry_layout(root: &Path) -> Option<ReclaimRetryLayout> {
    let path = event_dir(root, "oom", "reclaim_retry_zone")
        .ok()?
        .join("format");
    Some(reclaim_retry_layout(&std::fs::read_to_string(path).ok()?))
}

/// Reads and parses `events/oom/mark_victim/format` under `root`.
pub fn read_mark_victim_layout(root: &Path) -> Result<MarkVictimLayout, TracefsError> {
    let path = event_dir(root, "oom", "mark_victim")?.join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    mark_victim_layout(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/oom/mark_victim/format` on the lab's Linux 6.18.44 x86_64.
    const FORMAT_6_18: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s\", REC->pid, __get_str(comm)
";

    /// A hostile format putting `comm` (or any field the program reads)
    /// inside the common header is an error naming the field, not a
    /// debug assertion's panic (found by the `tracefs` fuzz target's
    /// harness review).
    #[test]
    fn field_inside_the_common_header_is_an_error() {
        let text = "format:\n\tfield:__data_loc char[] comm;\toffset:4;\tsize:4;\tsigned:0;\n";
        let e = mark_victim_layout(text, Path::new("f")).unwrap_err();
        assert!(
            matches!(e, TracefsError::FieldInHeader { offset: 4, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("`comm`"), "{e}");
        let text = "format:\n\tfield:int pid;\toffset:0;\tsize:4;\tsigned:1;\n";
        assert!(mark_victim_layout(text, Path::new("f")).is_err());
    }

    #[test]
    fn reclaim_retry_zone_layout_of_6_18() {
        // events/oom/reclaim_retry_zone/format on the lab's 6.18.44.
        let text = "name: reclaim_retry_zone
ID: 610
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int node;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int zone_idx;\toffset:12;\tsize:4;\tsigned:1;
\tfield:int order;\toffset:16;\tsize:4;\tsigned:1;
\tfield:unsigned long reclaimable;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long available;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long min_wmark;\toffset:40;\tsize:8;\tsigned:0;
\tfield:int no_progress_loops;\toffset:48;\tsize:4;\tsigned:1;
\tfield:bool wmark_check;\toffset:52;\tsize:1;\tsigned:0;
";
        let l = reclaim_retry_layout(text);
        assert_eq!((l.order, l.no_progress_loops, l.wmark_check), (16, 48, 52));
        let l =
            reclaim_retry_layout("format:\n\tfield:int order;\toffset:16;\tsize:4;\tsigned:1;\n");
        assert_eq!(l.no_progress_loops, FIELD_ABSENT);
    }

    #[test]
    fn page_alloc_layout_of_this_kernel() {
        // The live format file: this kernel's GFP bit values, whatever they are.
        let Ok(text) =
            std::fs::read_to_string("/sys/kernel/tracing/events/kmem/mm_page_alloc/format")
        else {
            eprintln!("skipped: no tracefs here");
            return;
        };
        let l = page_alloc_layout(&text).expect("order and gfp_flags");
        assert_ne!(l.pfn, FIELD_ABSENT);
        assert!(l.gfp_size == 4 || l.gfp_size == 8);
        // One bit each, and distinct.
        assert_eq!(l.direct_reclaim.count_ones(), 1, "{l:?}");
        assert_eq!(l.hardwall.count_ones(), 1, "{l:?}");
        assert_ne!(l.direct_reclaim, l.hardwall);
    }

    /// The pid-only record of mainline kernels before the fields were added.
    const FORMAT_PID_ONLY: &str = "name: mark_victim
ID: 412
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn field_offsets_of_this_kernel() {
        let Some(root) = find() else {
            eprintln!("skipped: tracefs not mounted");
            return;
        };
        if event_dir(&root, "oom", "wake_reaper").is_err() {
            eprintln!("skipped: no oom:wake_reaper");
            return;
        }
        assert_eq!(
            read_field_offset(&root, "oom", "wake_reaper", "pid", 4),
            Some(8)
        );
        assert_eq!(
            read_field_offset(&root, "oom", "wake_reaper", "pid", 8),
            None
        );
        assert_eq!(
            read_field_offset(&root, "oom", "nonexistent", "pid", 4),
            None
        );
    }

    #[test]
    fn layout_6_18() {
        let l = mark_victim_layout(FORMAT_6_18, Path::new("t")).unwrap();
        assert_eq!(
            (l.pid, l.comm, l.total_vm, l.anon_rss, l.file_rss),
            (8, 12, 16, 24, 32)
        );
        assert_eq!(
            (l.shmem_rss, l.uid, l.pgtables, l.oom_score_adj),
            (40, 48, 56, 64)
        );
    }

    #[test]
    fn layout_pid_only() {
        let l = mark_victim_layout(FORMAT_PID_ONLY, Path::new("t")).unwrap();
        assert_eq!(l.pid, 8);
        assert_eq!(l.comm, FIELD_ABSENT);
        assert_eq!(l.anon_rss, FIELD_ABSENT);
        assert_eq!(l.oom_score_adj, FIELD_ABSENT);
    }

    #[test]
    fn wrong_width_is_refused() {
        let text = FORMAT_6_18.replace(
            "anon_rss;\toffset:24;\tsize:8",
            "anon_rss;\toffset:24;\tsize:4",
        );
        let err = mark_victim_layout(&text, Path::new("fmt")).unwrap_err();
        assert!(err.to_string().contains("anon_rss"), "{err}");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let root = tempfile::tempdir().unwrap();
        let err = read_mark_victim_layout(root.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("the kernel has no tracepoint oom:mark_victim ("),
            "{msg}"
        );
        assert!(msg.contains("events/oom/mark_victim is missing"), "{msg}");
    }

    #[test]
    fn array_fields_keep_brackets_in_the_type() {
        let f = parse_format("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;");
        assert_eq!(f[0].name, "comm");
        assert_eq!(f[0].decl, "char[16]");
    }
}
