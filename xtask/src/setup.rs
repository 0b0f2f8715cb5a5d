//! `cargo xtask setup`: installs what building and testing need on a fresh Debian machine of the
//! kind DEVELOPERS.md describes (root, no sudo). Idempotent: each step checks before it acts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

#[path = "../../mntleak-user/ebpf_toolchain.rs"]
pub mod ebpf_toolchain;

const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "docker.io",
    "containerd",
    "runc",
    "busybox-static",
    "bpftrace",
    "iproute2",
    "util-linux",
    "e2fsprogs",
    "kmod",
];
const DEBIAN_RUST_PACKAGES: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";

/// What later steps (build, test, demo) must know after setup.
#[derive(Debug, Default, Clone)]
pub struct Toolchain {
    /// Set when no usable nightly was found and the eBPF object was built the Debian way:
    /// export it as `MNTLEAK_EBPF_OBJECT` for every later cargo command.
    pub ebpf_object: Option<PathBuf>,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn missing_debs(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing = missing_debs(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker() -> anyhow::Result<()> {
    let linker = cargo_bin().join("bpf-linker");
    if output(Command::new(&linker).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    run(Command::new("cargo")
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22", "--force"]))
}

fn has_rust_src(toolchain: &str) -> bool {
    output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        toolchain,
        "--installed",
    ]))
    .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")))
}

/// Makes sure `toolchain` is installed with rust-src (aya-build builds `core` from source).
fn install_with_rust_src(toolchain: &str) -> anyhow::Result<()> {
    if has_rust_src(toolchain) {
        return Ok(());
    }
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]))?;
    if !has_rust_src(toolchain) {
        bail!("{toolchain} still has no rust-src");
    }
    Ok(())
}

/// The eBPF crate's directory, where its rust-toolchain.toml pins the fallback nightly.
pub fn ebpf_dir() -> PathBuf {
    workspace_root().join("mntleak-ebpf")
}

/// Installs a nightly the eBPF crate can be built with (rust-src, an LLVM bpf-linker reads) and
/// names it. Tries, in build.rs's order, `MNTLEAK_EBPF_TOOLCHAIN`, `nightly`, the pinned nightly.
fn ebpf_nightly() -> Option<String> {
    let candidates = ebpf_toolchain::named()
        .into_iter()
        .chain(["nightly".to_string()])
        .chain(
            ebpf_toolchain::pinned(&ebpf_dir())
                .map_err(|e| eprintln!("setup: {e:#}"))
                .ok(),
        );
    for toolchain in candidates {
        if let Err(e) = install_with_rust_src(&toolchain) {
            eprintln!("setup: {toolchain} with rust-src unavailable ({e})");
            continue;
        }
        match ebpf_toolchain::llvm_major(&toolchain) {
            Some(major) if major <= ebpf_toolchain::LINKER_LLVM_MAJOR => return Some(toolchain),
            Some(major) => eprintln!(
                "setup: {toolchain} is on LLVM {major}, newer than bpf-linker's LLVM {}: its \
                 bitcode would not link",
                ebpf_toolchain::LINKER_LLVM_MAJOR
            ),
            None => eprintln!("setup: cannot tell which LLVM {toolchain} is on"),
        }
    }
    eprintln!("setup: no usable nightly; using the Debian toolchain instead");
    None
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Installs everything; returns what later steps need (see [`Toolchain`]).
pub fn setup() -> anyhow::Result<Toolchain> {
    if !is_root() {
        bail!("cargo xtask setup installs packages and must run as root (there is no sudo here)");
    }
    apt_install(APT_PACKAGES)?;
    bpf_linker()?;
    let mut result = Toolchain::default();
    match ebpf_nightly() {
        Some(toolchain) => eprintln!("setup: the eBPF crate is built with {toolchain}"),
        None => {
            apt_install(DEBIAN_RUST_PACKAGES)?;
            result.ebpf_object = Some(build_ebpf_debian()?);
        }
    }
    tracefs()?;
    Ok(result)
}

/// Builds the eBPF object with Debian's rustc-web (prebuilt `core` for bpfel-unknown-none, no
/// rust-src needed) and returns its path, for `MNTLEAK_EBPF_OBJECT`. Same flags as aya-build.
pub fn build_ebpf_debian() -> anyhow::Result<PathBuf> {
    let rustc = Path::new("/usr/bin/rustc");
    if !rustc.exists() {
        bail!(
            "{} is missing: apt-get install -y rustc-web libstd-rust-web-dev-bpf",
            rustc.display()
        );
    }
    let root = workspace_root();
    let target_dir = root.join("target").join("ebpf-debian");
    let arch = std::env::consts::ARCH;
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = vec![cargo_bin()];
    paths.extend(std::env::split_paths(&path));
    // The toolchain's own cargo, not rustup's proxy: in mntleak-ebpf the proxy would follow
    // rust-toolchain.toml to the pinned nightly, which this fallback exists to do without.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(root.join("mntleak-ebpf"))
        .env("RUSTC", rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env("PATH", std::env::join_paths(paths)?)
        .args(["build", "--package", "mntleak-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target_dir))?;
    let obj = target_dir.join("bpfel-unknown-none/release/mntleak");
    if !obj.exists() {
        bail!("the Debian eBPF build produced no {}", obj.display());
    }
    Ok(obj)
}
