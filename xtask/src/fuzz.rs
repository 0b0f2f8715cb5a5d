//! `cargo xtask fuzz --runs N`: builds the capture-reader fuzzer in release mode and runs it over
//! the checked-in corpus. New interesting inputs land in `target/fuzz-out/`; a panic exits
//! non-zero and names the saved input (copy it into `tests/fuzz-corpus/` once fixed).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub fn fuzz(runs: u64) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // The fuzzer exercises the capture reader only: no eBPF object needed.
    let status = Command::new(&cargo)
        .current_dir(&root)
        .env("MNTLEAK_SKIP_EBPF", "1")
        .args([
            "build",
            "--release",
            "-p",
            "mntleak-tests",
            "--bin",
            "mntleak-fuzz",
        ])
        .status()
        .context("cannot run cargo build for the fuzzer")?;
    if !status.success() {
        bail!("building the fuzzer failed ({status})");
    }
    let bin = target.join("release/mntleak-fuzz");
    let out = target.join("fuzz-out");
    let status = Command::new(&bin)
        .current_dir(&root)
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--corpus")
        .arg(root.join("tests/fuzz-corpus"))
        .arg("--out")
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !status.success() {
        bail!(
            "the fuzzer found a crash ({status}); the input is in {}",
            out.display()
        );
    }
    Ok(())
}
