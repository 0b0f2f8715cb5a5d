//! `cargo xtask setup`: installs what building and testing need on a fresh Debian machine of the
//! kind DEVELOPERS.md describes (root, no sudo). Idempotent: each step checks before it acts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

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
    /// Set when nightly rust-src was unavailable and the eBPF object was built the Debian way:
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

fn nightly_rust_src() -> bool {
    let installed = |()| {
        output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")))
    };
    if installed(()) {
        return true;
    }
    let added = run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .and_then(|()| {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
    });
    if let Err(e) = added {
        eprintln!("setup: nightly rust-src unavailable ({e}); using the Debian toolchain instead");
        return false;
    }
    installed(())
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
    if !nightly_rust_src() {
        apt_install(DEBIAN_RUST_PACKAGES)?;
        result.ebpf_object = Some(build_ebpf_debian()?);
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
    run(Command::new("cargo")
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
