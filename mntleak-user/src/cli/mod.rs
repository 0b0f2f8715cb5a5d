//! The command line: `mntleak-trace` (live), `mntleak-trace replay`, `mntleak-trace holders`.
//! The binary edge: errors become one line on stderr and an exit code.

mod filter;
mod live;
mod pipeline;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use filter::Filter;
pub use pipeline::{Pipeline, PipelineOutcome};

/// Exit status when a leak was found (live or replay).
pub const EXIT_LEAK: u8 = 1;
/// Exit status for bad input: flags, files, unknown containers, missing privileges.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Trace mount-namespace events with eBPF and explain mount leaks into foreign namespaces.
#[derive(Parser, Debug)]
#[command(
    name = "mntleak-trace",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replay one capture, or a rotated set in order; needs no root.
    Replay(ReplayArgs),
    /// Who holds a mount or a namespace now, with no trace running.
    Holders(crate::holders::HoldersArgs),
}

/// What to show, shared by live and replay.
#[derive(Args, Debug, Clone, Default)]
pub struct ViewArgs {
    /// Print NDJSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only events of these processes (tgid); repeatable.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Only events of processes with this command name; repeatable.
    #[arg(long = "comm")]
    pub comms: Vec<String>,
    /// Only events in this mount namespace (inode as in /proc/<pid>/ns/mnt, or 64-bit ns id); repeatable.
    #[arg(long = "mntns")]
    pub mntns: Vec<u64>,
    /// Focus on this container (id, unique prefix or name); repeatable. Without it every container is followed.
    #[arg(long = "container")]
    pub containers: Vec<String>,
    /// Print only findings and the summary, not every event.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Default)]
pub struct LiveArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Also write a capture to this file (replay it with `mntleak-trace replay`).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Start a new capture file when the current one exceeds this size (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "output")]
    pub rotate_size: Option<u64>,
    /// Keep at most this many rotated files besides the current one.
    #[arg(long, value_name = "N", requires = "rotate_size")]
    pub rotate_keep: Option<u32>,
    /// Ring buffer size in bytes (a power of two multiple of the page size).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    pub ring_size: u64,
    /// Do not attach this program (e.g. syscalls/sys_enter_unlinkat); the run says it is
    /// degraded, and so does its capture. Repeatable.
    #[arg(long, value_name = "ATTACH POINT")]
    pub skip: Vec<String>,
    #[command(flatten)]
    pub runtime: crate::container::RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Capture files, oldest first (a rotated set: `cap.2 cap.1 cap`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub view: ViewArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let mult = match s[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?} (use K, M or G)")),
            };
            (&s[..i], mult)
        }
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    let result = match &cli.command {
        None => live::run(&cli.live),
        Some(Command::Replay(args)) => replay::run(args),
        Some(Command::Holders(args)) => {
            crate::holders::run(
                args,
                &|q| match crate::container::resolve(&args.runtime, q) {
                    Ok(c) => Ok(Some(c)),
                    Err(crate::container::ContainerError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                },
            )
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of contexts, outermost first.
            eprintln!("mntleak-trace: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MNTLEAK_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
