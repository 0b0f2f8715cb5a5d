//! Live mode: the eBPF tracer as a source, optionally teeing every record to a capture, then the
//! same pipeline as replay.

use std::collections::HashSet;
use std::io::BufWriter;
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use crate::capture::{CaptureWriter, RotateOptions};
use crate::live::{LiveOptions, monotonic_to_wall_ns};
use crate::model::{CaptureHeader, ContainerInfo, Record};
use crate::source::LiveSource;

use super::{EXIT_LEAK, Filter, LiveArgs, Pipeline};

/// Records drained and fed at a time. Small, so that a batch's records (a few hundred bytes each,
/// with their strings) stay in cache from decoding to the engine, and the allocator hands the
/// strings the engine freed back to the next batch: on 2,000 iterations of the mount loop the
/// tracer's drain and feed took 111M instructions with 4096, 107M with 256 (callgrind). A
/// helper's unshare and exit, a few records apart, are still seen in one batch
/// (`NamespaceWatcher::begin_batch`) almost always.
const BATCH: usize = 256;
/// How often the ring is drained when the kernel side has not woken us.
const TICK: Duration = Duration::from_millis(100);
/// Records taken per tick at most (the ring's own wake-up takes the rest), so that a flood cannot
/// starve signals: 655k records/s, as with 32768 on the 50 ms tick before.
const TICK_MAX: usize = 65536;
/// A capture is flushed at least this often, so a SIGKILL loses at most this much.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// After a focused container disappears, keep tracing this long for the runtime's cleanup calls.
const REMOVAL_GRACE: Duration = Duration::from_millis(1500);

/// How often the runtimes are asked for new containers (and whether focused ones are gone).
const RUNTIME_POLL: Duration = Duration::from_secs(1);
/// While containers are being set up (a pivot_root was just seen), ask this often, so that a
/// short-lived container is recorded before it is gone.
const RUNTIME_POLL_BUSY: Duration = Duration::from_millis(200);
const BUSY_FOR: Duration = Duration::from_secs(3);

struct RingFd(RawFd);
impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub fn run(args: &LiveArgs) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "live tracing needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN); `mntleak-trace replay FILE` needs none"
        );
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        bail!("--duration must be a positive number of seconds, not {d}");
    }
    let focus = args
        .view
        .containers
        .iter()
        .map(|q| crate::container::resolve(&args.runtime, q).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ring_bytes = u32::try_from(args.ring_size)
        .ok()
        .filter(|b| b.is_power_of_two() && *b >= 4096)
        .with_context(|| {
            format!(
                "--ring-size {} must be a power of two between 4K and 2G",
                args.ring_size
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the event loop")?;
    runtime.block_on(trace(args, focus, ring_bytes))
}

async fn trace(
    args: &LiveArgs,
    focus: Vec<ContainerInfo>,
    ring_bytes: u32,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (mut source, snapshot) = LiveSource::start(&LiveOptions {
        ring_bytes,
        skip: args.skip.clone(),
    })
    .context("cannot start tracing")?;
    tracing::info!(attach_ms = started.elapsed().as_millis() as u64, "attached");
    let missing = source.tracer().missing().to_vec();
    if !missing.is_empty() {
        eprintln!(
            "mntleak-trace: degraded run, cannot trace: {}",
            missing.join(", ")
        );
    }
    let header = CaptureHeader {
        format_version: crate::capture::FORMAT_VERSION,
        kernel_release: kernel_release(),
        hostname: hostname(),
        monotonic_to_wall_ns: monotonic_to_wall_ns(),
        missing,
    };
    let mut writer = match &args.output {
        Some(path) => Some(
            CaptureWriter::create(
                path,
                &header,
                RotateOptions {
                    size: args.rotate_size,
                    keep: args.rotate_keep,
                },
            )
            .with_context(|| format!("cannot create capture {}", path.display()))?,
        ),
        None => None,
    };
    // Containers are recorded as they appear, so `replay --container` works after they are gone.
    let mut recorded = HashSet::new();
    let known = match crate::container::list_containers(&args.runtime) {
        Ok(all) => unrecorded(&all, &mut recorded),
        Err(e) => {
            tracing::warn!("cannot list containers: {e}");
            Vec::new()
        }
    };
    let stdout = std::io::stdout().lock();
    let filter = Filter::new(&args.view, focus.clone());
    let mut sink = Sink {
        pipeline: Pipeline::new(
            header,
            filter,
            args.view.json,
            args.view.quiet,
            BufWriter::new(stdout),
        ),
        writer: writer.take(),
        write_error: None,
        container_setup_at: None,
    };
    sink.feed(Record::Snapshot(snapshot))?;
    for c in known {
        sink.feed(Record::Container(c))?;
    }

    // Tests and wrappers wait for this line: from here on, every event is recorded.
    eprintln!("mntleak-trace: tracing; Ctrl-C or SIGTERM ends the run with a summary");
    // SAFETY: the ring fd is owned by `source`, which is dropped only after `ring` (below).
    let ring = unsafe {
        AsyncFd::register_with_interest(RingFd(source.tracer().ring_fd()), Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    // The kernel side wakes us only when the ring fills up (see mntleak-ebpf maps::emit); the
    // tick drains what trickles in below that, so an event is shown at most ~100 ms late. Each
    // tick is a sleep and a wake-up, and they are most of an idle tracer's CPU: 3.4 ms/s with a
    // 50 ms tick, 2.1 ms/s with this one (2026-12-02).
    let mut tick = tokio::time::interval(TICK);
    let mut last_flush = Instant::now();
    let mut last_runtime_check = Instant::now();
    let mut removed_at: Option<Instant> = None;
    loop {
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard.context("ring buffer poll failed")?;
                if source.drain(BATCH, |rec| sink.feed(rec))? < BATCH {
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {
                // Bounded, so a flood cannot starve signals; the readable branch takes the rest.
                for _ in 0..TICK_MAX / BATCH {
                    if source.drain(BATCH, |rec| sink.feed(rec))? == 0 {
                        break;
                    }
                }
                if let Some(lost) = source.take_losses() {
                    sink.feed(lost)?;
                }
                if last_flush.elapsed() >= FLUSH_EVERY {
                    sink.flush()?;
                    last_flush = Instant::now();
                }
                let busy = sink.container_setup_at.is_some_and(|t| t.elapsed() < BUSY_FOR);
                if last_runtime_check.elapsed() >= if busy { RUNTIME_POLL_BUSY } else { RUNTIME_POLL } {
                    last_runtime_check = Instant::now();
                    if let Ok(all) = crate::container::list_containers(&args.runtime) {
                        for c in unrecorded(&all, &mut recorded) {
                            sink.feed(Record::Container(c))?;
                        }
                        if !focus.is_empty() && removed_at.is_none() && focus.iter().all(|c| !all.iter().any(|k| k.id == c.id)) {
                            removed_at = Some(Instant::now());
                        }
                    }
                }
                if removed_at.is_some_and(|t| t.elapsed() >= REMOVAL_GRACE) {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }
    // Detach first, then take what is still in the ring.
    while source.drain(BATCH, |rec| sink.feed(rec))? > 0 {}
    source.release_in_flight(|rec| sink.feed(rec))?;
    if let Some(lost) = source.take_losses() {
        sink.feed(lost)?;
    }
    drop(ring);
    drop(source);
    sink.flush()?;
    let outcome = sink.pipeline.finish().context("cannot write to stdout")?;
    if let Some(e) = sink.write_error {
        return Err(e);
    }
    Ok(if outcome.leaks > 0 {
        ExitCode::from(EXIT_LEAK)
    } else {
        ExitCode::SUCCESS
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where every record goes: the capture first (nothing recorded is lost to a display error), then
/// the pipeline.
struct Sink<W: std::io::Write> {
    pipeline: Pipeline<W>,
    writer: Option<CaptureWriter>,
    /// A capture write failure ends capturing but not the run: the verdict still prints.
    write_error: Option<anyhow::Error>,
    /// When a container init last pivoted into its rootfs.
    container_setup_at: Option<Instant>,
}

impl<W: std::io::Write> Sink<W> {
    fn feed(&mut self, rec: Record) -> anyhow::Result<()> {
        if let Record::Event(ev) = &rec
            && matches!(ev.action, crate::model::Action::PivotRoot { .. })
        {
            self.container_setup_at = Some(Instant::now());
        }
        self.record(&rec)
    }

    fn record(&mut self, rec: &Record) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.write(rec)
        {
            self.stop_capture(e.into());
        }
        self.pipeline.handle(rec).context("cannot write to stdout")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.flush()
        {
            self.stop_capture(e.into());
        }
        Ok(())
    }

    fn stop_capture(&mut self, e: anyhow::Error) {
        eprintln!("mntleak-trace: capture stopped: {e:#}");
        self.writer = None;
        self.write_error
            .get_or_insert(e.context("the capture is incomplete"));
    }
}

/// Running containers that this run has not recorded yet.
fn unrecorded(all: &[ContainerInfo], recorded: &mut HashSet<String>) -> Vec<ContainerInfo> {
    all.iter()
        .filter(|c| c.init_pid != 0 && recorded.insert(c.id.clone()))
        .cloned()
        .collect()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
