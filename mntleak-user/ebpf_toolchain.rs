//! Which nightly builds the eBPF crate. Shared by `build.rs` (which picks it) and xtask (whose
//! setup installs it and whose lint uses it), by `#[path]`, so the two cannot disagree.
//!
//! bpf-linker reads the bitcode rustc writes, and LLVM reads bitcode of its own major version or
//! older only: a nightly on a newer LLVM than bpf-linker's fails to link ("ERROR llvm: Invalid
//! record"). The fallback nightly is pinned in `mntleak-ebpf/rust-toolchain.toml`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

/// The LLVM major version bpf-linker 0.13 is built against (`--features llvm-22`).
pub const LINKER_LLVM_MAJOR: u32 = 22;

/// Names a toolchain to use instead of choosing one.
pub const TOOLCHAIN_ENV: &str = "MNTLEAK_EBPF_TOOLCHAIN";

/// The toolchain named by [`TOOLCHAIN_ENV`], if any.
pub fn named() -> Option<String> {
    std::env::var(TOOLCHAIN_ENV).ok().filter(|t| !t.is_empty())
}

/// The major version of the LLVM behind `toolchain`'s rustc ("LLVM version: 23.1.4"), or None
/// when the toolchain is not installed.
pub fn llvm_major(toolchain: &str) -> Option<u32> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    version.split('.').next()?.trim().parse().ok()
}

/// Whether bpf-linker can link what `toolchain` compiles (false when it is not installed).
pub fn links(toolchain: &str) -> bool {
    llvm_major(toolchain).is_some_and(|major| major <= LINKER_LLVM_MAJOR)
}

/// The pinned nightly: `channel` of `<ebpf_dir>/rust-toolchain.toml`. Read by hand rather than
/// with a TOML crate: the file is ours, one key, and a build-dependency builds for every user.
pub fn pinned(ebpf_dir: &Path) -> anyhow::Result<String> {
    let file: PathBuf = ebpf_dir.join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .ok_or_else(|| anyhow!("{} names no channel", file.display()))
}

/// The toolchain to build with, installing nothing: the named one, else `nightly` when bpf-linker
/// links its output, else the pinned nightly when installed. None: nothing installed fits.
pub fn choose(ebpf_dir: &Path) -> Option<String> {
    if let Some(named) = named() {
        return Some(named);
    }
    if links("nightly") {
        return Some("nightly".into());
    }
    pinned(ebpf_dir).ok().filter(|p| links(p))
}
