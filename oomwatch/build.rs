//! Builds `oomwatch-ebpf` for bpfel-unknown-none through aya-build and leaves the
//! object at `$OUT_DIR/oomwatch`, where `src/ebpf/mod.rs` embeds it.
//!
//! Without `bpf-linker` on PATH (a machine where `cargo xtask setup` never ran)
//! an empty object is written instead, so `cargo build` and `cargo test` still
//! work; the agent then says at start-up that it was built without its eBPF
//! programs.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=OOMWATCH_EBPF_TOOLCHAIN");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=OOMWATCH_COMMIT");
    println!("cargo::rerun-if-env-changed=OOMWATCH_REQUIRE_EBPF");
    // `--version`: the crate's version, and the commit when a release build
    // (`cargo xtask dist`) says which.
    let version = env::var("CARGO_PKG_VERSION").context("CARGO_PKG_VERSION")?;
    match env::var("OOMWATCH_COMMIT") {
        Ok(c) if !c.is_empty() => println!("cargo::rustc-env=OOMWATCH_VERSION={version} ({c})"),
        _ => println!("cargo::rustc-env=OOMWATCH_VERSION={version}"),
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join("oomwatch");

    let have_linker = env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !have_linker || env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1") {
        // A package must never ship an agent without its programs.
        anyhow::ensure!(
            env::var_os("OOMWATCH_REQUIRE_EBPF").is_none_or(|v| v != "1"),
            "OOMWATCH_REQUIRE_EBPF=1 but the eBPF programs cannot be built (bpf-linker not on \
             PATH or AYA_BUILD_SKIP=1): run `cargo xtask setup`"
        );
        println!(
            "cargo::warning=building oomwatch WITHOUT its eBPF programs (bpf-linker not on PATH \
             or AYA_BUILD_SKIP=1); run `cargo xtask setup` for a working agent"
        );
        // Empty means "no programs" to src/ebpf/mod.rs; overwrite any real object
        // left from an earlier build so the binary says what it is.
        fs::write(&object, b"").context("write stub eBPF object")?;
        return Ok(());
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "oomwatch-ebpf")
        .ok_or_else(|| anyhow!("oomwatch-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("oomwatch-ebpf manifest has no parent"))?;
    let package = Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    // Debian's rustc-web (linked by `cargo xtask setup` as the rustup toolchain
    // "debian") ships a prebuilt `core` for bpfel-unknown-none; the rustup
    // nightly on these machines has no rust-src. See ../shared/toolchain.md.
    let name = env::var("OOMWATCH_EBPF_TOOLCHAIN").unwrap_or_default();
    let toolchain = match name.as_str() {
        "" | "nightly" => Toolchain::Nightly,
        other => Toolchain::Custom(Box::leak(other.to_owned().into_boxed_str())),
    };
    aya_build::build_ebpf([package], toolchain)
}
