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
/// bpf-linker reads the bitcode rustc writes, and LLVM reads only bitcode of its own major
/// version or older: a nightly on a newer LLVM fails at link time with "Invalid record".
const LINKER_LLVM_MAJOR: u32 = 22;
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

/// The major version of the LLVM behind `toolchain`'s rustc ("LLVM version: 23.1.4").
fn llvm_major(toolchain: &str) -> Option<u32> {
    let version = output(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))?;
    let line = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    line.split('.').next()?.trim().parse().ok()
}

/// The nightly pinned in mntleak-ebpf/rust-toolchain.toml (its `channel`), for when `nightly`
/// has moved to an LLVM bpf-linker cannot read. build.rs reads the same line.
fn pinned_nightly() -> anyhow::Result<String> {
    let file = workspace_root().join("mntleak-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .with_context(|| format!("{} names no channel", file.display()))
}

fn named_toolchain() -> Option<String> {
    std::env::var("MNTLEAK_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// The toolchain build.rs builds the eBPF crate with (same order, nothing installed), so that
/// lint checks the code with the compiler that builds it: new nightlies bring new lints.
pub fn ebpf_build_toolchain() -> String {
    if let Some(named) = named_toolchain() {
        return named;
    }
    if llvm_major("nightly").is_some_and(|major| major <= LINKER_LLVM_MAJOR) {
        return "nightly".into();
    }
    pinned_nightly()
        .ok()
        .filter(|pinned| llvm_major(pinned).is_some())
        .unwrap_or_else(|| "nightly".into())
}

/// Installs a nightly the eBPF crate can be built with (rust-src, an LLVM bpf-linker reads) and
/// names it. Tries, in build.rs's order, `MNTLEAK_EBPF_TOOLCHAIN`, `nightly`, the pinned nightly.
fn ebpf_nightly() -> Option<String> {
    let candidates = named_toolchain()
        .into_iter()
        .chain(["nightly".to_string()])
        .chain(pinned_nightly().map_err(|e| eprintln!("setup: {e:#}")).ok());
    for toolchain in candidates {
        if let Err(e) = install_with_rust_src(&toolchain) {
            eprintln!("setup: {toolchain} with rust-src unavailable ({e})");
            continue;
        }
        match llvm_major(&toolchain) {
            Some(major) if major <= LINKER_LLVM_MAJOR => return Some(toolchain),
            Some(major) => eprintln!(
                "setup: {toolchain} is on LLVM {major}, newer than bpf-linker's LLVM \
                 {LINKER_LLVM_MAJOR}: its bitcode would not link"
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
