//! The live source: loads the eBPF programs, attaches them, and turns ring-buffer records into
//! [`Record`]s. Root only.

use std::{
    os::fd::{AsRawFd, RawFd},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};
use mntleak_common::{self as wire, LossInfo, RESOLVER_PROGRAMS};

use crate::{
    btf,
    decode::decode,
    model::{Action, Event, KStr, Record},
    pairing::Pairing,
    uapi,
};

#[cfg(not(mntleak_no_ebpf))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mntleak"));
/// Built with MNTLEAK_SKIP_EBPF=1: live mode reports that at run time.
#[cfg(mntleak_no_ebpf)]
static OBJECT: &[u8] = &[];

/// Syscalls traced by a `sys_enter_<name>` program paired with an exit program ([`exit_program`]).
/// `umount` is umount2's tracepoint.
pub const SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "unlink",
    "unlinkat",
    "rmdir",
    "unshare",
    "setns",
    "clone",
    "clone3",
    "fsopen",
    "fsconfig",
    "fsmount",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "chroot",
];

/// The syscalls whose exits go untraced while the fork program is attached.
const CLONE_SYSCALLS: &[&str] = &["clone", "clone3"];

/// The program for syscall `sc`'s exit: unshare's and setns' also read the caller's new
/// namespaces; clone's send only the parent's return.
fn exit_program(sc: &str) -> &'static str {
    match sc {
        "unshare" | "setns" => "sys_exit_ns",
        "clone" | "clone3" => "sys_exit_clone",
        _ => "sys_exit",
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Ring buffer size: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Attach points (as [`attach_points`] names them) to leave out: the run is then degraded
    /// and says so, as when the kernel lacks them.
    pub skip: Vec<String>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            skip: Vec::new(),
        }
    }
}

/// Every attach point the tracer may use, by the names a degraded run lists them under.
pub fn attach_points() -> Vec<String> {
    let mut all = vec![
        "paths/resolve_paths".to_string(),
        "tp_btf/sched_process_fork".to_string(),
    ];
    for sc in SYSCALLS {
        all.push(format!("syscalls/sys_enter_{sc}"));
        all.push(format!("syscalls/sys_exit_{sc}"));
    }
    all.extend([
        "sched/sched_process_exec".into(),
        "sched/sched_process_exit".into(),
    ]);
    all
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "this mntleak was built without eBPF (MNTLEAK_SKIP_EBPF=1); rebuild without it for live tracing"
    )]
    BuiltWithoutEbpf,
    #[error("live tracing needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs")]
    NotRoot,
    #[error(
        "kernel BTF {0} is missing: live tracing needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf(&'static str),
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("ring buffer size {0} is not a power of two of at least 4096 bytes")]
    RingSize(u32),
    #[error("--skip {0}: no such attach point (one of: {all})", all = attach_points().join(", "))]
    UnknownAttachPoint(String),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no eBPF program could be attached (first failure: {0})")]
    NothingAttached(String),
    #[error("cannot read the initial mount state: {0}")]
    Snapshot(#[source] crate::sys::SysError),
}

/// An attached tracer. Dropping it detaches every program.
pub struct Tracer {
    ring: RingBuf<MapData>,
    loss: PerCpuArray<MapData, LossInfo>,
    loss_prev: Vec<LossInfo>,
    /// Syscall returns dropped on a full ring and not yet warned of, and when the last warning
    /// went out: under a flood a warning per drain (every 100 ms) would bury the terminal.
    exit_losses_unwarned: u64,
    exit_losses_warned_at: Option<Instant>,
    missing: Vec<String>,
    own_pid: u32,
    decode_errors: u64,
    /// Syscall entries waiting for their return records.
    pairing: Pairing,
    /// Each ring record is copied here, then decoded (boxed: 1.3 KiB).
    raw: Box<wire::Event>,
    /// The aya-log reader, kept alive for the object's lifetime (boxed: its type names `log`).
    _logger: Option<Box<dyn std::any::Any + Send>>,
    // Owns the programs and their links; declared last so maps above drop first.
    _ebpf: Ebpf,
}

/// Bytes waiting in the ring at which the kernel side wakes the reader (`WAKEUP_MARK`): 1 MiB, or
/// a quarter of a smaller ring, so that it still wakes well before the ring is full.
fn wakeup_mark(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / 4).min(1 << 20)
}

fn mount_tracefs() -> Result<(), LiveError> {
    if Path::new(TRACEFS).join("events/syscalls").exists()
        || Path::new("/sys/kernel/debug/tracing/events/syscalls").exists()
    {
        return Ok(());
    }
    let r = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(LiveError::Tracefs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Loads the path resolvers into the `RESOLVERS` program array, where the syscall programs
/// tail-call them (without them, fd and cwd paths are not resolved).
fn install_resolvers(ebpf: &mut Ebpf) -> Result<(), String> {
    let mut fds = Vec::new();
    for name in RESOLVER_PROGRAMS {
        let p: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or("program not in the object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("load {name}: {e}"))?;
        let fd = p.fd().map_err(|e| format!("{e}"))?;
        fds.push(fd.try_clone().map_err(|e| format!("{e}"))?);
    }
    let mut table: ProgramArray<&mut MapData> = ebpf
        .map_mut("RESOLVERS")
        .ok_or("map not in the object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    for (i, fd) in fds.iter().enumerate() {
        table.set(i as u32, fd, 0).map_err(|e| format!("{e}"))?;
    }
    Ok(())
}

/// An error and its causes on one line: aya's attach and load errors name the file or program
/// and keep the reason (ENOENT, EPERM, the verifier's) in their source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn attach_tp(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<(), String> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .ok_or("program not in the object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    if p.fd().is_err() {
        p.load().map_err(|e| format!("load: {}", with_causes(&e)))?;
    }
    p.attach(category, name)
        .map_err(|e| format!("attach: {}", with_causes(&e)))?;
    Ok(())
}

impl Tracer {
    pub fn attach(opts: &LiveOptions) -> Result<Tracer, LiveError> {
        if OBJECT.is_empty() {
            return Err(LiveError::BuiltWithoutEbpf);
        }
        if unsafe { libc::geteuid() } != 0 {
            return Err(LiveError::NotRoot);
        }
        if !Path::new(btf::VMLINUX).exists() {
            return Err(LiveError::NoBtf(btf::VMLINUX));
        }
        if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < 4096 {
            return Err(LiveError::RingSize(opts.ring_bytes));
        }
        let known = attach_points();
        if let Some(unknown) = opts.skip.iter().find(|s| !known.contains(s)) {
            return Err(LiveError::UnknownAttachPoint(unknown.clone()));
        }
        mount_tracefs()?;
        let offsets = btf::kernel_offsets()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", opts.ring_bytes)
            .override_global("OFFSETS", &offsets, true)
            .override_global("WAKEUP_MARK", &wakeup_mark(opts.ring_bytes), true)
            .load(OBJECT)?;
        // The programs do not log today; a logger is kept if a future object does.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .ok()
            .map(|l| Box::new(l) as Box<dyn std::any::Any + Send>);

        let mut missing = Vec::new();
        let mut first_failure = None;
        let mut note = |what: String, why: String, missing: &mut Vec<String>| {
            tracing::warn!("cannot trace {what}: {why}");
            first_failure.get_or_insert_with(|| format!("{what}: {why}"));
            missing.push(what);
        };
        // Each attach point the user left out fails as one the kernel lacks would.
        let skipped = |what: &str| -> Result<(), String> {
            match opts.skip.iter().any(|s| s == what) {
                true => Err("left out by --skip".into()),
                false => Ok(()),
            }
        };
        // Before the syscall programs, so that their first events already carry resolved paths.
        if let Err(why) = skipped("paths/resolve_paths").and_then(|()| install_resolvers(&mut ebpf))
        {
            note("paths/resolve_paths".into(), why, &mut missing);
        }
        // First: whether clone's exits need tracing depends on it.
        let mut attached = 0usize;
        let fork = (|| -> Result<(), String> {
            skipped("tp_btf/sched_process_fork")?;
            let kbtf = aya::Btf::from_sys_fs().map_err(|e| format!("btf: {e}"))?;
            let p: &mut BtfTracePoint = ebpf
                .program_mut("sched_process_fork")
                .ok_or("program not in the object")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            p.load("sched_process_fork", &kbtf)
                .map_err(|e| format!("load: {}", with_causes(&e)))?;
            p.attach()
                .map_err(|e| format!("attach: {}", with_causes(&e)))?;
            Ok(())
        })();
        // The fork program tells a clone's new namespace only with the namespace offsets.
        let fork_sends_clones = match fork {
            Ok(()) => {
                attached += 1;
                offsets.valid != 0
            }
            Err(why) => {
                note("tp_btf/sched_process_fork".into(), why, &mut missing);
                false
            }
        };
        for sc in SYSCALLS {
            let enter = format!("sys_enter_{sc}");
            let exit = format!("sys_exit_{sc}");
            if let Err(why) = skipped(&format!("syscalls/{enter}"))
                .and_then(|()| attach_tp(&mut ebpf, &enter, "syscalls", &enter))
            {
                note(format!("syscalls/{enter}"), why, &mut missing);
                continue;
            }
            // The fork program sends a clone that made a mount namespace (see mntleak-ebpf
            // `complete_clone`); without it, clone's exits do.
            if CLONE_SYSCALLS.contains(sc) && fork_sends_clones {
                attached += 1;
                continue;
            }
            // Without its exit the enter's events would have no return value.
            match skipped(&format!("syscalls/{exit}"))
                .and_then(|()| attach_tp(&mut ebpf, exit_program(sc), "syscalls", &exit))
            {
                Ok(()) => attached += 1,
                Err(why) => note(format!("syscalls/{exit}"), why, &mut missing),
            }
        }
        for tp in ["sched_process_exec", "sched_process_exit"] {
            match skipped(&format!("sched/{tp}"))
                .and_then(|()| attach_tp(&mut ebpf, tp, "sched", tp))
            {
                Ok(()) => attached += 1,
                Err(why) => note(format!("sched/{tp}"), why, &mut missing),
            }
        }
        if attached == 0 {
            return Err(LiveError::NothingAttached(
                first_failure.unwrap_or_else(|| "unknown".into()),
            ));
        }

        // Loading parsed the kernel's BTF three times (offsets, relocations, the tp_btf target):
        // about 20 MiB of heap, all free now, which glibc keeps unless asked to give it back.
        // Before the ring is mapped, so that the two do not add up in the peak either.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        let ring = ebpf
            .take_map("EVENTS")
            .ok_or(LiveError::Map {
                name: "EVENTS",
                source: aya::maps::MapError::InvalidName {
                    name: "EVENTS".into(),
                },
            })
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|source| LiveError::Map {
                    name: "EVENTS",
                    source,
                })
            })?;
        let loss = ebpf
            .take_map("LOSS")
            .ok_or(LiveError::Map {
                name: "LOSS",
                source: aya::maps::MapError::InvalidName {
                    name: "LOSS".into(),
                },
            })
            .and_then(|m| {
                PerCpuArray::try_from(m).map_err(|source| LiveError::Map {
                    name: "LOSS",
                    source,
                })
            })?;
        Ok(Tracer {
            ring,
            loss,
            loss_prev: Vec::new(),
            exit_losses_unwarned: 0,
            exit_losses_warned_at: None,
            missing,
            own_pid: std::process::id(),
            decode_errors: 0,
            pairing: Pairing::default(),
            // SAFETY: integers and byte arrays only: all zero bytes are a valid `wire::Event`.
            raw: Box::new(unsafe { std::mem::zeroed() }),
            _logger: logger,
            _ebpf: ebpf,
        })
    }

    /// What this run cannot trace (`category/tracepoint`); empty when fully attached.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Becomes readable when events are waiting (for `tokio::io::unix::AsyncFd`).
    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Records the ring buffer delivered but that could not be decoded (a bug if non-zero).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Takes up to `max` ring-buffer records, and moves the events they complete into `out` as
    /// `Record::Event`s (a syscall's entry waits for its return: see [`Pairing`]); returns how
    /// many records were taken. Events of this process are skipped.
    pub fn drain(&mut self, out: &mut Vec<Record>, max: usize) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.ring.next() else {
                break;
            };
            taken += 1;
            let Self {
                pairing,
                raw,
                own_pid,
                decode_errors,
                ..
            } = self;
            let pushed = pairing.push(
                &item,
                raw,
                |raw| wanted_event(raw, *own_pid, decode_errors),
                |ev| out.push(Record::Event(ev)),
            );
            drop(item);
            if pushed.is_err() {
                *decode_errors += 1;
            }
        }
        taken
    }

    /// Moves the events of syscalls whose return has not come into `out`, without a return value:
    /// for the end of a run, after the last [`Tracer::drain`] (a call still running then, a hung
    /// umount say, is shown as such).
    pub fn release_in_flight(&mut self, out: &mut Vec<Record>) {
        self.pairing.release_all(|ev| out.push(Record::Event(ev)));
    }

    /// Events lost (ring buffer full) since the previous call, summed over CPUs. `first_ts_ns` is
    /// the first loss on a CPU that had none before, else that CPU's previous last loss (a lower
    /// bound); `last_ts_ns` is exact.
    pub fn take_losses(&mut self) -> Option<Record> {
        let values = self.loss.get(&0, 0).ok()?;
        let (mut count, mut first, mut last, mut exits) = (0u64, u64::MAX, 0u64, 0u64);
        let mut now = Vec::with_capacity(values.len());
        for (cpu, v) in values.iter().enumerate() {
            let prev = self.loss_prev.get(cpu).copied().unwrap_or_default();
            if v.count > prev.count {
                count += v.count - prev.count;
                first = first.min(if prev.count == 0 {
                    v.first_ts_ns
                } else {
                    prev.last_ts_ns
                });
                last = last.max(v.last_ts_ns);
            }
            exits += v.exits.saturating_sub(prev.exits);
            now.push(*v);
        }
        self.loss_prev = now;
        self.exit_losses_unwarned += exits;
        if self
            .exit_losses_warned_at
            .is_none_or(|t| t.elapsed() >= EXIT_LOSS_WARN_EVERY)
        {
            self.warn_exit_losses();
        }
        (count > 0).then_some(Record::Lost {
            count,
            first_ts_ns: first,
            last_ts_ns: last,
        })
    }
}

/// At most one warning of dropped syscall returns per this long (the rest at the end).
const EXIT_LOSS_WARN_EVERY: Duration = Duration::from_secs(10);

impl Tracer {
    fn warn_exit_losses(&mut self) {
        let n = std::mem::take(&mut self.exit_losses_unwarned);
        if n == 0 {
            return;
        }
        let since = match self.exit_losses_warned_at.replace(Instant::now()) {
            Some(t) => format!(" in the last {} s", t.elapsed().as_secs()),
            None => String::new(),
        };
        tracing::warn!(
            "the ring buffer was full for {n} syscall returns{since}: those calls are reported \
             without a return value, and change nothing in the reconstruction"
        );
    }
}

impl Drop for Tracer {
    /// The returns dropped since the last warning are not left unsaid.
    fn drop(&mut self) {
        self.warn_exit_losses();
    }
}

/// The event of `raw` unless it is the tracer's own (`own_pid`) or undecodable (counted in
/// `errors`).
fn wanted_event(raw: &wire::Event, own_pid: u32, errors: &mut u64) -> Option<Event> {
    if raw.task.tgid == own_pid {
        return None;
    }
    match decode(raw) {
        Ok(mut ev) => {
            ev.dir = resolve_dir(&ev.action, ev.task.tid);
            Some(ev)
        }
        Err(e) => {
            *errors += 1;
            tracing::warn!("undecodable event from the kernel: {e}");
            None
        }
    }
}

/// The directory a relative rmdir path was resolved against, read from /proc after the fact
/// (the process may have moved or exited by then: `None`). Only for directory removals, the ones
/// that can hit mountpoints, so that `rm -rf` of many files costs no extra syscalls.
fn resolve_dir(action: &Action, tid: u32) -> Option<KStr> {
    let Action::Unlink {
        dirfd,
        path,
        rmdir: true,
        ..
    } = action
    else {
        return None;
    };
    if path.as_str().starts_with('/') {
        return None;
    }
    let link = if *dirfd == uapi::AT_FDCWD {
        format!("/proc/{tid}/cwd")
    } else {
        format!("/proc/{tid}/fd/{dirfd}")
    };
    let target = std::fs::read_link(link).ok()?;
    Some(KStr::new(target.to_string_lossy()))
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // clock_gettime cannot fail for these clocks with a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Add to a kernel timestamp to get Unix-epoch nanoseconds.
pub fn monotonic_to_wall_ns() -> i64 {
    let m1 = clock_ns(libc::CLOCK_MONOTONIC);
    let wall = clock_ns(libc::CLOCK_REALTIME);
    let m2 = clock_ns(libc::CLOCK_MONOTONIC);
    (wall - (m1 + m2) / 2) as i64
}
