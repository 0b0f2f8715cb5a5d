//! Embeds the eBPF object as `$OUT_DIR/mntleak`:
//! - default: builds `mntleak-ebpf` with aya-build (nightly + rust-src + bpf-linker);
//!   when `nightly` is on an LLVM newer than bpf-linker's, the nightly pinned in
//!   `mntleak-ebpf/rust-toolchain.toml` is used if installed (`cargo xtask setup` installs it);
//!   `MNTLEAK_EBPF_TOOLCHAIN=<toolchain>` overrides both;
//! - `MNTLEAK_EBPF_OBJECT=/path`: copies a prebuilt object (the Debian rustc-web way);
//! - `MNTLEAK_SKIP_EBPF=1`: embeds nothing and sets `cfg(mntleak_no_ebpf)`, so live mode says at
//!   run time that it was built without eBPF (userspace-only work needs no BPF toolchain).
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(mntleak_no_ebpf)");
    println!("cargo:rerun-if-env-changed=MNTLEAK_SKIP_EBPF");
    println!("cargo:rerun-if-env-changed=MNTLEAK_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=MNTLEAK_EBPF_TOOLCHAIN");

    if env::var("MNTLEAK_SKIP_EBPF").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:rustc-cfg=mntleak_no_ebpf");
        return Ok(());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let dst = out_dir.join("mntleak");

    if let Some(obj) = env::var_os("MNTLEAK_EBPF_OBJECT").filter(|v| !v.is_empty()) {
        let obj = PathBuf::from(obj);
        println!("cargo:rerun-if-changed={}", obj.display());
        fs::copy(&obj, &dst).with_context(|| {
            format!(
                "MNTLEAK_EBPF_OBJECT: cannot copy {} to {}",
                obj.display(),
                dst.display()
            )
        })?;
        return Ok(());
    }

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("no manifest dir"))?);
    let root_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("mntleak-user has no parent directory"))?
        .join("mntleak-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    let toolchain = ebpf_toolchain(Path::new(root_dir))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mntleak-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building mntleak-ebpf (set MNTLEAK_SKIP_EBPF=1 for a userspace-only build, or MNTLEAK_EBPF_OBJECT to use a prebuilt object)")
}

/// bpf-linker 0.13 built against LLVM 22 reads bitcode of LLVM 22 or older only.
const LINKER_LLVM_MAJOR: u32 = 22;

/// The toolchain to build the eBPF crate with: `MNTLEAK_EBPF_TOOLCHAIN`, else `nightly` when it is
/// installed on an LLVM bpf-linker reads, else the pinned nightly when it is installed, else
/// `nightly` (whose build error then names the problem).
fn ebpf_toolchain(ebpf_dir: &Path) -> anyhow::Result<String> {
    if let Some(named) = env::var("MNTLEAK_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(named);
    }
    if llvm_major("nightly").is_some_and(|major| major <= LINKER_LLVM_MAJOR) {
        return Ok("nightly".into());
    }
    let pinned = pinned_nightly(&ebpf_dir.join("rust-toolchain.toml"))?;
    if llvm_major(&pinned).is_some() {
        return Ok(pinned);
    }
    println!(
        "cargo:warning=neither nightly on LLVM {LINKER_LLVM_MAJOR} or older (what bpf-linker \
         reads) nor {pinned} is installed: run `cargo xtask setup`"
    );
    Ok("nightly".into())
}

/// The LLVM major version behind `toolchain`'s rustc, or None when the toolchain is missing.
fn llvm_major(toolchain: &str) -> Option<u32> {
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

/// `channel` from the eBPF crate's rust-toolchain.toml. Read by hand rather than with a TOML
/// crate: the file is ours, one key, and a build-dependency would build for every user.
fn pinned_nightly(file: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .ok_or_else(|| anyhow!("{} names no channel", file.display()))
}
