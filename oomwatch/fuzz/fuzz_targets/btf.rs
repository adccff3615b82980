//! Any bytes as kernel BTF (`/sys/kernel/btf/vmlinux`, or a file given
//! with `--btf`): parsing, then every lookup the agent makes, on every
//! name the file defines and every member of those. None of it may panic
//! or hang (a cycle is an error at the kernel's resolve depth), and the
//! lookups must agree with each other.
#![no_main]

use oomwatch::host::btf::Btf;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    // Bounded: a large file names thousands of types; the first ones reach
    // every code path.
    let names: Vec<&str> = btf.type_names().take(64).collect();
    for &ty in &names {
        let size = btf.struct_size(ty);
        for member in btf.member_names(ty).into_iter().take(64) {
            let offset = btf.member_offset(ty, member);
            assert_eq!(offset.is_ok(), btf.has_member(ty, member));
            assert!(size.is_ok(), "`{ty}` has members but no size");
            if let Ok(layout) = btf.member_layout(ty, member) {
                assert_eq!(Ok(layout.offset), offset.map_err(|e| e.to_string()));
            }
        }
        let _ = btf.enum_value(ty, "A");
        let _ = btf.enum_constant(ty);
        let _ = btf.func_param_count(ty);
        if let Some(tp) = ty.strip_prefix("btf_trace_") {
            for n in 0..4 {
                let _ = btf.tracepoint_arg_is_pointer(tp, n);
            }
        }
    }
});
