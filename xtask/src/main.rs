//! Project tasks: `cargo xtask setup|build|test|lint|demo|bench|fuzz|soak`.

mod bench;
mod demo;
mod fuzz;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the build and the tests need (idempotent; runs as root).
    Setup,
    /// Build the tracer (eBPF object included).
    Build,
    /// Set up, build, then run every test (the CI command).
    Test,
    /// fmt, clippy (workspace and the eBPF crate).
    Lint,
    /// Set up, build, and run the tracer on a built-in leak reproduction, then replay its capture.
    Demo,
    /// Overhead, loss ceiling, replay speed, capture size, RSS; writes target/bench/latest.json.
    Bench(bench::BenchArgs),
    /// Run the tracer for N minutes under container-like churn; RSS samples to target/bench/soak.json.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Run the real-kernel oracle: N seeded scenarios compared with /proc mountinfo.
    Oracle {
        #[arg(long, default_value_t = 1000)]
        scenarios: u64,
        /// Run only this seed (to reproduce a failure).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Fuzz the capture reader.
    Fuzz {
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup().map(|_| ()),
        Task::Build => build(&setup::setup()?),
        Task::Test => test(),
        Task::Lint => lint(),
        Task::Demo => demo::demo(),
        Task::Bench(args) => bench::bench(&args),
        Task::Fuzz { runs } => fuzz::fuzz(runs),
        Task::Soak { minutes } => bench::soak(minutes),
        Task::Oracle { scenarios, seed } => oracle(scenarios, seed),
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Applies what setup found (the Debian-built eBPF object, if that way was taken) to a cargo command.
fn with_toolchain(cmd: &mut Command, tc: &setup::Toolchain) {
    if let Some(obj) = &tc.ebpf_object {
        cmd.env("MNTLEAK_EBPF_OBJECT", obj);
    }
}

pub fn build(tc: &setup::Toolchain) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "mntleak-user",
        "-p",
        "mntleak-tests",
        "--bins",
    ]);
    with_toolchain(&mut c, tc);
    run(&mut c)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

pub fn tracer_bin() -> PathBuf {
    target_dir().join("release/mntleak-trace")
}

fn test() -> anyhow::Result<()> {
    let tc = setup::setup()?;
    build(&tc)?;
    let mut c = cargo();
    // Tests share kernel state (mounts, namespaces, the docker daemon): one at a time.
    c.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "mntleak-ebpf",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ])
    .env("MNTLEAK_REQUIRE_BPF", "1")
    .env("MNTLEAK_TRACE_BIN", tracer_bin());
    with_toolchain(&mut c, &tc);
    run(&mut c)
}

fn oracle(scenarios: u64, seed: Option<u64>) -> anyhow::Result<()> {
    let tc = setup::setup()?;
    let mut c = cargo();
    c.args([
        "test",
        "--release",
        "-p",
        "mntleak-tests",
        "--test",
        "oracle",
        "--",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("MNTLEAK_ORACLE_SCENARIOS", scenarios.to_string());
    if let Some(seed) = seed {
        c.env("MNTLEAK_ORACLE_SEED", seed.to_string());
    }
    with_toolchain(&mut c, &tc);
    run(&mut c)
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "mntleak-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate needs nightly (build-std), the one it is built with; `rustup run` because
    // the cargo running xtask is a toolchain's own binary, which does not understand `+nightly`.
    let toolchain =
        setup::ebpf_toolchain::choose(&setup::ebpf_dir()).unwrap_or_else(|| "nightly".into());
    run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", &toolchain]))?;
    run(Command::new("rustup")
        .current_dir(root().join("mntleak-ebpf"))
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .args(["run", &toolchain, "cargo", "clippy", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]))
}
