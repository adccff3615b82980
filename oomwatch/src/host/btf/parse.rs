//! A small parser for the kernel's BTF, over bytes (no I/O: [`super`] reads
//! the file): just enough to find struct member offsets, enum values and
//! tracepoint prototypes.
//!
//! Rust eBPF programs have no CO-RE field relocations, so the agent resolves the
//! offsets its programs need here and passes them in as globals before load.
//! aya's own `Btf` does not expose member offsets. Format reference:
//! `Documentation/bpf/btf.rst` and `include/uapi/linux/btf.h`.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// How many references a lookup follows (typedef/const/volatile chains,
/// anonymous members, array elements) before it calls the BTF cyclic:
/// the kernel's own bound (`MAX_RESOLVE_DEPTH` in kernel/bpf/btf.c), which
/// rejects deeper BTF at load.
const MAX_RESOLVE_DEPTH: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no {kind} named `{name}`")]
    NoSuchType { kind: &'static str, name: String },
    #[error("BTF: `{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("BTF: `{ty}.{member}` is a bitfield, not a byte-addressable member")]
    Bitfield { ty: String, member: String },
    #[error("BTF: enum `{ty}` has no value `{name}`")]
    NoSuchEnumValue { ty: String, name: String },
    #[error("corrupt BTF: type {id} refers to type {to}, but the last type is {last}")]
    BadTypeId { id: u32, to: u32, last: u32 },
    #[error(
        "corrupt BTF: type {id}'s references go deeper than {MAX_RESOLVE_DEPTH} (a cycle?), \
         where the kernel stops resolving"
    )]
    TooDeep { id: u32 },
    #[error("corrupt BTF: type {id}: {what}")]
    Corrupt { id: u32, what: &'static str },
    #[error(
        "{path} is not BTF the kernel would load ({reason}): pass /sys/kernel/btf/vmlinux or a BTF file from the same kernel build"
    )]
    InFile { path: String, reason: Box<BtfError> },
}

/// See [`Btf::member_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLayout {
    pub offset: u32,
    pub type_name: String,
    pub elem_size: u32,
    pub count: u32,
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset inside the containing struct.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union (`is_union` matters only for Debug output).
    Composite {
        name: u32,
        /// sizeof, in bytes.
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        name: u32,
        size: u32,
        values: Vec<(u32, i64)>,
    },
    Int {
        size: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    /// PTR, TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG: name + the type it refers to.
    Ref {
        kind: u32,
        name: u32,
        to: u32,
    },
    FuncProto {
        params: Vec<u32>,
    },
    Func {
        name: u32,
        /// The FUNC_PROTO type id.
        proto: u32,
    },
    Other,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off.saturating_add(4))
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

/// Every type id a type refers to must name a type of the file, as the
/// kernel checks at load (`btf_type_id_size` and the kinds' `check_meta`):
/// after this, following a reference cannot index past `types`.
fn check_references(types: &[Type]) -> Result<(), BtfError> {
    let last = types.len() as u32 - 1;
    for (id, ty) in types.iter().enumerate() {
        let beyond = |t: &u32| *t > last;
        let bad = match ty {
            Type::Composite { members, .. } => members.iter().map(|m| m.ty).find(beyond),
            Type::FuncProto { params } => params.iter().copied().find(beyond),
            Type::Array { elem: to, .. } | Type::Ref { to, .. } | Type::Func { proto: to, .. } => {
                Some(*to).filter(beyond)
            }
            Type::Enum { .. } | Type::Int { .. } | Type::Other => None,
        };
        if let Some(to) = bad {
            return Err(BtfError::BadTypeId {
                id: id as u32,
                to,
                last,
            });
        }
    }
    Ok(())
}

impl Btf {
    /// Parses raw BTF (native endianness, as the kernel exports it).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Malformed("shorter than a header"));
        }
        if u16::from_ne_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        // u32 sums cannot overflow a 64-bit usize, but may a 32-bit one.
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types_raw =
            section(type_off, type_len).ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = section(str_off, str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type::Other]; // id 0: void
        let mut off = 0;
        while off < types_raw.len() {
            let name = u32_at(types_raw, off)?;
            let info = u32_at(types_raw, off + 4)?;
            let size_or_type = u32_at(types_raw, off + 8)?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    off += 4;
                    Type::Int { size: size_or_type }
                }
                KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_TYPE_TAG => Type::Ref {
                    kind,
                    name,
                    to: size_or_type,
                },
                KIND_ARRAY => {
                    let elem = u32_at(types_raw, off)?;
                    let nelems = u32_at(types_raw, off + 8)?;
                    off += 12;
                    Type::Array { elem, nelems }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(types_raw, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (raw & 0xff_ffff, raw >> 24)
                        } else {
                            (raw, 0)
                        };
                        members.push(Member {
                            name: u32_at(types_raw, m)?,
                            ty: u32_at(types_raw, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    off += vlen * 12;
                    Type::Composite {
                        name,
                        size: size_or_type,
                        members,
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 8;
                        let v = u32_at(types_raw, m + 4)?;
                        let v = if kind_flag {
                            i64::from(v as i32)
                        } else {
                            i64::from(v)
                        };
                        values.push((u32_at(types_raw, m)?, v));
                    }
                    off += vlen * 8;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        values,
                    }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let lo = u64::from(u32_at(types_raw, m + 4)?);
                        let hi = u64::from(u32_at(types_raw, m + 8)?);
                        values.push((u32_at(types_raw, m)?, ((hi << 32) | lo) as i64));
                    }
                    off += vlen * 12;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        values,
                    }
                }
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        params.push(u32_at(types_raw, off + i * 8 + 4)?);
                    }
                    off += vlen * 8;
                    Type::FuncProto { params }
                }
                KIND_FUNC => Type::Func {
                    name,
                    proto: size_or_type,
                },
                KIND_VAR | KIND_DECL_TAG => {
                    off += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    off += vlen * 12;
                    Type::Other
                }
                KIND_FWD | KIND_FLOAT => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(ty);
        }

        check_references(&types)?;
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            let name = match ty {
                Type::Composite { name, .. }
                | Type::Enum { name, .. }
                | Type::Ref { name, .. }
                | Type::Func { name, .. } => *name,
                _ => 0,
            };
            if name != 0 {
                by_name
                    .entry(btf.str_at(name).to_owned())
                    .or_default()
                    .push(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    fn named(&self, name: &str, pred: impl Fn(&Type) -> bool) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| self.ty(id).is_some_and(&pred))
    }

    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        // A struct can appear once as a forward declaration and once with its
        // members; take the one with members.
        self.named(
            name,
            |t| matches!(t, Type::Composite { members, .. } if !members.is_empty()),
        )
        .ok_or_else(|| BtfError::NoSuchType {
            kind: "struct",
            name: name.to_owned(),
        })
    }

    /// The names of the file's named types, each once, in id order (the
    /// fuzz target queries them).
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        let mut seen = std::collections::HashSet::new();
        self.types.iter().filter_map(move |t| match t {
            Type::Composite { name, .. }
            | Type::Enum { name, .. }
            | Type::Ref { name, .. }
            | Type::Func { name, .. }
                if *name != 0 =>
            {
                Some(self.str_at(*name)).filter(|n| seen.insert(*n))
            }
            _ => None,
        })
    }

    /// The names of struct or union `ty`'s members, anonymous members'
    /// members included (the fuzz target queries them); empty when there is
    /// no such struct or its members nest deeper than the kernel resolves.
    pub fn member_names(&self, ty: &str) -> Vec<&str> {
        let mut names = Vec::new();
        if let Ok(id) = self.composite(ty) {
            let _ = self.walk_members(id, 0, 0, &mut |m, _| {
                names.push(self.str_at(m.name));
                None::<()>
            });
        }
        names
    }

    /// Byte offset of `member` inside struct or union `ty`, looking through
    /// anonymous struct/union members as C does.
    pub fn member_offset(&self, ty: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.composite(ty)?;
        match self.find_member(id, member)? {
            Some((bits, _, 0)) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(BtfError::Bitfield {
                ty: ty.to_owned(),
                member: member.to_owned(),
            }),
            None => Err(BtfError::NoSuchMember {
                ty: ty.to_owned(),
                member: member.to_owned(),
            }),
        }
    }

    /// Whether struct `ty` exists and has `member`.
    pub fn has_member(&self, ty: &str, member: &str) -> bool {
        self.member_offset(ty, member).is_ok()
    }

    /// Where `member` of struct `ty` is and what it holds: its byte offset,
    /// its type's name (an array's element type's, through typedefs to the
    /// first named struct, union or typedef), the size of one element, and
    /// the number of elements (1 for a plain member).
    pub fn member_layout(&self, ty: &str, member: &str) -> Result<MemberLayout, BtfError> {
        let offset = self.member_offset(ty, member)?;
        let id = self.composite(ty)?;
        let (_, ty_id, _) =
            self.find_member(id, member)?
                .ok_or_else(|| BtfError::NoSuchMember {
                    ty: ty.to_owned(),
                    member: member.to_owned(),
                })?;
        let stripped = self.strip_modifiers(ty_id)?;
        let (elem, count) = match self.ty(stripped) {
            Some(Type::Array { elem, nelems }) => (*elem, *nelems),
            _ => (ty_id, 1),
        };
        Ok(MemberLayout {
            offset,
            type_name: self.type_name(elem)?,
            elem_size: self.type_size(elem, 0)?.unwrap_or(0),
            count,
        })
    }

    /// The first name met following `id` through modifiers and typedefs.
    fn type_name(&self, mut id: u32) -> Result<String, BtfError> {
        let start = id;
        for _ in 0..MAX_RESOLVE_DEPTH {
            match self.ty(id) {
                Some(Type::Composite { name, .. } | Type::Enum { name, .. }) if *name != 0 => {
                    return Ok(self.str_at(*name).to_owned());
                }
                Some(Type::Ref { kind, name, .. }) if *kind == KIND_TYPEDEF && *name != 0 => {
                    return Ok(self.str_at(*name).to_owned());
                }
                Some(Type::Ref { kind, to, .. }) if *kind != KIND_PTR => id = *to,
                _ => return Ok(String::new()),
            }
        }
        Err(BtfError::TooDeep { id: start })
    }

    /// sizeof the type `id`, where BTF says it; `depth` counts the arrays
    /// of arrays followed so far.
    fn type_size(&self, id: u32, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > MAX_RESOLVE_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        let stripped = self.strip_modifiers(id)?;
        Ok(match self.ty(stripped) {
            Some(Type::Composite { size, .. } | Type::Enum { size, .. } | Type::Int { size }) => {
                Some(*size)
            }
            Some(Type::Ref { kind, .. }) if *kind == KIND_PTR => Some(8),
            Some(Type::Array { elem, nelems }) => match self.type_size(*elem, depth + 1)? {
                Some(size) => Some(size.checked_mul(*nelems).ok_or(BtfError::Corrupt {
                    id: stripped,
                    what: "array size overflows 32 bits",
                })?),
                None => None,
            },
            _ => None,
        })
    }

    /// sizeof struct or union `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = self.composite(name)?;
        match self.ty(id) {
            Some(Type::Composite { size, .. }) => Ok(*size),
            _ => unreachable!("composite() returns a struct or union"),
        }
    }

    /// The value of enumerator `name` in whichever enum defines it (for the
    /// kernel's anonymous enums, such as `MM_FILEPAGES`).
    pub fn enum_constant(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { values, .. } => values
                .iter()
                .find(|(n, _)| self.str_at(*n) == name)
                .map(|&(_, v)| v),
            _ => None,
        })
    }

    /// Member `member` of composite `id`, looking through anonymous
    /// members: its bit offset, its type and its bitfield size.
    fn find_member(&self, id: u32, member: &str) -> Result<Option<(u32, u32, u32)>, BtfError> {
        self.walk_members(id, 0, 0, &mut |m, bits| {
            (self.str_at(m.name) == member).then_some((bits, m.ty, m.bitfield_size))
        })
    }

    /// Calls `visit` on each named member of composite `id` (with its bit
    /// offset from the outermost struct) until it returns Some, descending
    /// into anonymous struct and union members as C does, at most
    /// [`MAX_RESOLVE_DEPTH`] deep.
    fn walk_members<T>(
        &self,
        id: u32,
        base_bits: u32,
        depth: u32,
        visit: &mut impl FnMut(&Member, u32) -> Option<T>,
    ) -> Result<Option<T>, BtfError> {
        if depth > MAX_RESOLVE_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        let Some(Type::Composite { members, .. }) = self.ty(id) else {
            return Ok(None);
        };
        for m in members {
            let bits = base_bits
                .checked_add(m.bit_offset)
                .ok_or(BtfError::Corrupt {
                    id,
                    what: "a member's bit offset overflows 32 bits",
                })?;
            let found = if m.name == 0 {
                let inner = self.strip_modifiers(m.ty)?;
                self.walk_members(inner, bits, depth + 1, visit)?
            } else {
                visit(m, bits)
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn strip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        let start = id;
        for _ in 0..MAX_RESOLVE_DEPTH {
            match self.ty(id) {
                Some(Type::Ref { kind, to, .. }) if *kind != KIND_PTR => id = *to,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep { id: start })
    }

    /// Value of `name` in enum `ty` (plain or 64-bit enum).
    pub fn enum_value(&self, ty: &str, name: &str) -> Result<i64, BtfError> {
        let id = self
            .named(ty, |t| matches!(t, Type::Enum { .. }))
            .ok_or_else(|| BtfError::NoSuchType {
                kind: "enum",
                name: ty.to_owned(),
            })?;
        let Some(Type::Enum { values, .. }) = self.ty(id) else {
            unreachable!("named() matched an enum");
        };
        values
            .iter()
            .find(|(n, _)| self.str_at(*n) == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| BtfError::NoSuchEnumValue {
                ty: ty.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Whether the kernel has a BTF function `name` (an fentry/fexit target).
    pub fn has_func(&self, name: &str) -> bool {
        self.named(name, |t| matches!(t, Type::Func { .. }))
            .is_some()
    }

    /// How many parameters the kernel function `name` takes, from its BTF
    /// prototype; None without such a function. An fexit program finds the
    /// return value right after them.
    pub fn func_param_count(&self, name: &str) -> Option<usize> {
        let id = self.named(name, |t| matches!(t, Type::Func { .. }))?;
        let Some(Type::Func { proto, .. }) = self.ty(id) else {
            return None;
        };
        match self.ty(*proto)? {
            Type::FuncProto { params } => Some(params.len()),
            _ => None,
        }
    }

    /// Whether argument `n` (0-based, as in `TP_PROTO`) of the raw tracepoint
    /// `tp` is a pointer. `None` if the kernel has no such tracepoint or no such
    /// argument, or its BTF is cyclic. Uses the `btf_trace_<tp>` typedef that
    /// tp_btf programs bind to: a pointer to a prototype whose first parameter
    /// is the hidden `void *`.
    pub fn tracepoint_arg_is_pointer(&self, tp: &str, n: usize) -> Option<bool> {
        let id = self.named(&format!("btf_trace_{tp}"), |t| {
            matches!(
                t,
                Type::Ref {
                    kind: KIND_TYPEDEF,
                    ..
                }
            )
        })?;
        let Some(Type::Ref { to: ptr, .. }) = self.ty(id) else {
            return None;
        };
        let Some(Type::Ref { to: proto, .. }) = self.ty(self.strip_modifiers(*ptr).ok()?) else {
            return None;
        };
        let Some(Type::FuncProto { params }) = self.ty(*proto) else {
            return None;
        };
        let arg = *params.get(n.checked_add(1)?)?;
        Some(matches!(
            self.ty(self.strip_modifiers(arg).ok()?),
            Some(Type::Ref { kind: KIND_PTR, .. })
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.push(1); // version
        b.push(0); // flags
        for w in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        b.extend_from_slice(&type_bytes);
        b.extend_from_slice(strings);
        b
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    /// struct outer { int a; union { int x; int y; }; int bf:3; } at bit
    /// offsets 0, 32 and 64; enum e { A = 0, B = 7 }.
    fn sample() -> Btf {
        // strings: 0 "", 1 "int", 5 "outer", 11 "a", 13 "x", 15 "y", 17 "bf", 20 "e", 22 "A", 24 "B"
        let strings = b"\0int\0outer\0a\0x\0y\0bf\0e\0A\0B\0";
        #[rustfmt::skip]
        let types = [
            // 1: int
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            // 2: anonymous union { int x; int y; }
            0, info(KIND_UNION, 2, false), 4,
                13, 1, 0,
                15, 1, 0,
            // 3: struct outer, kind_flag set: bitfield sizes in the top byte
            5, info(KIND_STRUCT, 3, true), 12,
                11, 1, 0,
                0, 2, 32,
                17, 1, (3 << 24) | 64,
            // 4: enum e
            20, info(KIND_ENUM, 2, false), 4,
                22, 0,
                24, 7,
        ];
        Btf::parse(&blob(&types, strings)).expect("sample parses")
    }

    #[test]
    fn member_offsets_including_anonymous_unions() {
        let btf = sample();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("outer", "bf"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoSuchMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoSuchType { .. })
        ));
    }

    #[test]
    fn enum_values() {
        let btf = sample();
        assert_eq!(btf.enum_value("e", "B").unwrap(), 7);
        assert!(btf.enum_value("e", "C").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut b = blob(&[1, info(KIND_STRUCT, 9, false), 4], b"\0s\0");
        assert!(Btf::parse(&b).is_err(), "members run past the section");
        b.truncate(30);
        assert!(Btf::parse(&b).is_err());
    }

    /// The fuzz target's committed seed (oomwatch/fuzz/seeds/btf, written
    /// little-endian) is BTF whose every lookup resolves, so the fuzzer
    /// starts from inputs that reach them.
    #[cfg(target_endian = "little")]
    #[test]
    fn fuzz_seed_resolves() {
        let btf = Btf::parse(include_bytes!("../../../fuzz/seeds/btf/task_struct.btf"))
            .expect("the seed parses");
        assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), 4);
        assert_eq!(btf.member_offset("task_struct", "y").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("task_struct", "flags"),
            Err(BtfError::Bitfield { .. })
        ));
        let counters = btf.member_layout("task_struct", "counters").unwrap();
        assert_eq!(
            counters,
            MemberLayout {
                offset: 24,
                // Names are those of structs, unions, enums and typedefs.
                type_name: String::new(),
                elem_size: 8,
                count: 4,
            }
        );
        assert_eq!(
            btf.member_layout("task_struct", "tgid").unwrap().type_name,
            "pid_t"
        );
        assert_eq!(btf.struct_size("task_struct").unwrap(), 64);
        assert_eq!(
            btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
                .unwrap(),
            4
        );
        assert_eq!(btf.enum_constant("BIG"), Some(0x1_ffff_ffff));
        assert_eq!(btf.func_param_count("out_of_memory"), Some(2));
        assert_eq!(btf.tracepoint_arg_is_pointer("mark_victim", 0), Some(true));
        assert!(btf.member_names("task_struct").contains(&"x"));
    }

    /// A truncated header or string section is an error naming the part
    /// that is short, not a panic.
    #[test]
    fn truncated_header_or_strings_is_an_error() {
        let full = blob(&[1, info(KIND_INT, 0, false), 4, 0x0100_0020], b"\0int\0");
        for cut in [0, 2, 10, 23] {
            let e = Btf::parse(&full[..cut]).err().expect("short header");
            assert!(e.to_string().contains("header"), "{cut}: {e}");
        }
        let e = Btf::parse(&full[..full.len() - 1])
            .err()
            .expect("short strings");
        assert!(e.to_string().contains("string section"), "{e}");
        // A header whose offsets point past the end of a 32-bit address space.
        let mut far = full.clone();
        far[16..20].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(Btf::parse(&far).is_err());
    }

    /// A type id past the last type (a member's type, a typedef's target,
    /// an array's element, a function's prototype) is refused at parse, so
    /// no later lookup indexes past the types.
    #[test]
    fn out_of_range_type_id_is_an_error() {
        let strings = b"\0s\0a\0t\0";
        #[rustfmt::skip]
        let cases: [&[u32]; 4] = [
            // struct s { <type 99> a; }
            &[1, info(KIND_STRUCT, 1, false), 4, 3, 99, 0],
            // typedef <type 7> t;
            &[5, info(KIND_TYPEDEF, 0, false), 7],
            // <type 42>[4]
            &[0, info(KIND_ARRAY, 0, false), 0, 42, 1, 4],
            // a func whose prototype is type 1000
            &[3, info(KIND_FUNC, 0, false), 1000],
        ];
        for types in cases {
            let e = Btf::parse(&blob(types, strings)).err().expect("refused");
            assert!(
                matches!(e, BtfError::BadTypeId { id: 1, last: 1, .. }),
                "{e}"
            );
            assert!(e.to_string().contains("refers to type"), "{e}");
        }
    }

    /// Cycles the kernel would refuse to load (typedef a → typedef b → a; a
    /// struct whose anonymous member is itself; an array of itself) end in
    /// an error at the kernel's depth, not an endless loop or a stack
    /// overflow.
    #[test]
    fn cycles_are_an_error_not_a_hang() {
        // strings: 1 "int", 5 "s", 7 "m", 9 "a", 11 "b"
        let strings = b"\0int\0s\0m\0a\0b\0";
        #[rustfmt::skip]
        let types = [
            // 1: int
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            // 2: typedef 3 a;  3: typedef 2 b
            9, info(KIND_TYPEDEF, 0, false), 3,
            11, info(KIND_TYPEDEF, 0, false), 2,
            // 4: struct s { int x; <anonymous of type 5>; a m; }
            5, info(KIND_STRUCT, 3, false), 8,
                0, 1, 0,
                0, 5, 0,
                7, 2, 32,
            // 5: const 4 (the struct itself, through a modifier)
            0, info(KIND_CONST, 0, false), 4,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parses");
        assert!(matches!(
            btf.member_offset("s", "nope"),
            Err(BtfError::TooDeep { .. })
        ));
        assert!(btf.member_names("s").is_empty());
        assert!(btf.type_names().any(|n| n == "a"));

        // struct s { int x; a m; } with typedef a → b → a: the member's
        // layout has to resolve the cycle.
        #[rustfmt::skip]
        let types = [
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            9, info(KIND_TYPEDEF, 0, false), 3,
            11, info(KIND_TYPEDEF, 0, false), 2,
            5, info(KIND_STRUCT, 1, false), 8,
                7, 2, 32,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parses");
        assert_eq!(btf.member_offset("s", "m").unwrap(), 4);
        let e = btf.member_layout("s", "m").unwrap_err();
        assert!(matches!(e, BtfError::TooDeep { id: 2 }), "{e}");
        assert!(e.to_string().contains("deeper than 32"), "{e}");

        // struct s { t m; } where t is an array of arrays of itself.
        #[rustfmt::skip]
        let types = [
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            0, info(KIND_ARRAY, 0, false), 0, 2, 1, 2,
            5, info(KIND_STRUCT, 1, false), 8,
                7, 2, 0,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parses");
        assert!(matches!(
            btf.member_layout("s", "m"),
            Err(BtfError::TooDeep { .. })
        ));
    }

    /// An array whose size does not fit 32 bits, and member offsets that
    /// overflow when nested, are errors (they panicked in debug builds).
    #[test]
    fn overflowing_sizes_are_an_error() {
        let strings = b"\0int\0s\0m\0";
        #[rustfmt::skip]
        let types = [
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            // 2: int[0x8000_0000]
            0, info(KIND_ARRAY, 0, false), 0, 1, 1, 0x8000_0000,
            // 3: struct s { int m[2][0x8000_0000]; anonymous <4> at 0xffff_fff0 }
            5, info(KIND_STRUCT, 2, false), 8,
                7, 5, 0,
                0, 4, 0xffff_fff0,
            // 4: union { int m at 0x20 }
            0, info(KIND_UNION, 1, false), 4,
                7, 1, 0x20,
            // 5: <2>[2]: 2^33 bytes
            0, info(KIND_ARRAY, 0, false), 0, 2, 1, 2,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parses");
        let e = btf.member_layout("s", "m").unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = btf.member_offset("s", "nope").unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
