//! Rebuild the eBPF object when bpf-linker changes: cargo cannot see that the
//! linker, which turns our bitcode into BPF and DWARF into BTF, was replaced.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => {
            println!("cargo:warning=bpf-linker not found on PATH ({e}); run `cargo xtask setup`")
        }
    }
}
