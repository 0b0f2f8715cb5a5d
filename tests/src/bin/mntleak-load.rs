//! Workloads for `cargo xtask bench` and `cargo xtask soak` (not a test: nothing asserts on time).
//!
//! mntleak-load overhead --iterations N     mount/bind/fork+unshare/umount/unlinkat loop, timed
//!                                          (wall and CPU time per iteration)
//! mntleak-load churn --seconds S           the same loop for S seconds (soak, capture size)
//! mntleak-load rate --workers W --rate R (--seconds S | --events N)
//!                                          cheap traced syscalls at R events/s in total (0: flat out)
//! mntleak-load gen-capture --events N --out FILE
//!                                          a synthetic capture of container churn
//! mntleak-load docker-rig                  the tests' Docker: dockerd (started if none answers)
//!                                          and the busybox image (imported if missing)
//!
//! Each prints one JSON object on stdout. The mount workloads run in a private mount namespace of
//! their own, so nothing they mount reaches the host, and all of it goes when the process exits.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mntleak::model::{
    Action, CaptureHeader, ContainerInfo, Event, KStr, MntNs, MountInfo, NamespaceState,
    ProcessState, Propagation, Record, Snapshot, Task, UnlinkCall,
};
use mntleak::uapi;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("mntleak-load: {e:#}");
        std::process::exit(2);
    }
}

const USAGE: &str = "usage: mntleak-load overhead --iterations N | churn --seconds S | \
rate --workers W --rate R (--seconds S | --events N) | gen-capture --events N --out FILE | \
docker-rig";

/// `--key value` pairs after the subcommand.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {k:?}; {USAGE}"))?;
            let v = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Self(map))
    }
    fn num<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<Option<T>> {
        self.0
            .get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| anyhow::anyhow!("--{key} {v:?} is not a number"))
            })
            .transpose()
    }
    fn req<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<T> {
        self.num(key)?
            .with_context(|| format!("--{key} is required; {USAGE}"))
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{USAGE}")
    };
    let opts = Opts::parse(rest)?;
    let out = match cmd.as_str() {
        "overhead" => {
            let n: u64 = opts.req("iterations")?;
            mount_loop(Limit::Iterations(n))?
        }
        "churn" => {
            let s: f64 = opts.req("seconds")?;
            mount_loop(Limit::Time(Duration::from_secs_f64(s)))?
        }
        "rate" => rate(
            opts.req("workers")?,
            opts.req("rate")?,
            opts.num::<f64>("seconds")?,
            opts.num::<u64>("events")?,
        )?,
        "gen-capture" => {
            let out: String = opts.req("out")?;
            gen_capture(opts.req("events")?, Path::new(&out))?
        }
        "docker-rig" => {
            let d = mntleak_tests::docker::Docker::start()?;
            serde_json::json!({"socket": d.socket, "dockerd_pid": d.pid, "log": d.log})
        }
        other => bail!("unknown workload {other:?}; {USAGE}"),
    };
    println!("{out}");
    Ok(())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("scratch paths have no NUL")
}

fn check(what: &str, path: &Path, rc: libc::c_int) -> anyhow::Result<()> {
    if rc < 0 {
        bail!(
            "{what} {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn mount(src: &Path, target: &Path, fstype: Option<&str>, flags: u64) -> anyhow::Result<()> {
    let (s, t) = (cstr(src), cstr(target));
    let fs = fstype.map(|f| CString::new(f).expect("fstype"));
    // SAFETY: valid NUL-terminated strings or null.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags as libc::c_ulong,
            std::ptr::null(),
        )
    };
    check("mount", target, rc)
}

fn umount(target: &Path, flags: i32) -> anyhow::Result<()> {
    let t = cstr(target);
    // SAFETY: valid NUL-terminated string.
    check("umount2", target, unsafe {
        libc::umount2(t.as_ptr(), flags)
    })
}

enum Limit {
    Iterations(u64),
    Time(Duration),
}

/// A private mount namespace with a tmpfs scratch directory; the directory on the host is removed
/// when this is dropped (the namespace and its mounts go with the process).
struct PrivateScratch {
    base: PathBuf,
}

impl PrivateScratch {
    fn new() -> anyhow::Result<Self> {
        // Before any thread exists: unshare(CLONE_NEWNS) applies to this (only) thread.
        // SAFETY: plain syscall.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
            bail!(
                "unshare(CLONE_NEWNS): {} (run as root)",
                std::io::Error::last_os_error()
            );
        }
        mount(
            Path::new("none"),
            Path::new("/"),
            None,
            uapi::MS_REC | uapi::MS_PRIVATE,
        )?;
        // Our copy of the host's /dev/shm would make every child's unshare a (correct) at-risk
        // finding, with a holders scan each time: the loop measures the event path, not that.
        let _ = umount(Path::new("/dev/shm"), libc::MNT_DETACH);
        let base = PathBuf::from(format!("/tmp/mntleak-load-{}", std::process::id()));
        std::fs::create_dir_all(&base).with_context(|| format!("mkdir {}", base.display()))?;
        mount(Path::new("tmpfs"), &base, Some("tmpfs"), 0)?;
        for d in ["a", "b"] {
            std::fs::create_dir(base.join(d))
                .with_context(|| format!("mkdir {}/{d}", base.display()))?;
        }
        Ok(Self { base })
    }
}

impl Drop for PrivateScratch {
    fn drop(&mut self) {
        let _ = umount(&self.base, libc::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// The container-like loop: mount a tmpfs, create a file in it, bind it elsewhere, fork a child
/// that unshares its mount namespace (a copy of both mounts) and exits, then unmount the bind,
/// unlink the file and unmount the tmpfs. About nine traced events per iteration.
fn mount_loop(limit: Limit) -> anyhow::Result<serde_json::Value> {
    let scratch = PrivateScratch::new()?;
    let (a, b) = (scratch.base.join("a"), scratch.base.join("b"));
    let file = a.join("f");
    let file_c = cstr(&file);
    let cpu_start = cpu_ns();
    let start = Instant::now();
    let mut iterations = 0u64;
    loop {
        match limit {
            Limit::Iterations(n) if iterations >= n => break,
            Limit::Time(d) if start.elapsed() >= d => break,
            _ => {}
        }
        mount(Path::new("tmpfs"), &a, Some("tmpfs"), 0)?;
        std::fs::write(&file, b"x").with_context(|| format!("write {}", file.display()))?;
        mount(&a, &b, None, uapi::MS_BIND)?;
        // SAFETY: single-threaded process; the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only.
            unsafe {
                let rc = libc::unshare(libc::CLONE_NEWNS);
                libc::_exit(if rc == 0 { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("the unshare child failed (status {status})");
        }
        umount(&b, 0)?;
        // SAFETY: valid NUL-terminated string.
        check("unlinkat", &file, unsafe {
            libc::unlinkat(libc::AT_FDCWD, file_c.as_ptr(), 0)
        })?;
        umount(&a, 0)?;
        iterations += 1;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_ns() - cpu_start;
    drop(scratch);
    Ok(serde_json::json!({
        "iterations": iterations,
        "elapsed_ns": elapsed.as_nanos() as u64,
        "ns_per_iteration": elapsed.as_nanos() as u64 / iterations.max(1),
        "cpu_ns_per_iteration": cpu / iterations.max(1),
    }))
}

/// CPU time (user + system) of this process and its reaped children, in ns. A traced syscall's
/// BPF programs run in the caller's context, so they count here; a tracer busy on another CPU
/// does not.
fn cpu_ns() -> u64 {
    let of = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

/// `workers` threads making cheap traced syscalls that fail fast (umount2 of a directory that is
/// not a mount: EINVAL; unlinkat of a missing file: ENOENT), paced to `rate` events/s in total.
fn rate(
    workers: u32,
    rate: f64,
    seconds: Option<f64>,
    events: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    if seconds.is_none() && events.is_none() {
        bail!("rate needs --seconds or --events");
    }
    let dir = PathBuf::from(format!("/tmp/mntleak-load-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let deadline = seconds.map(Duration::from_secs_f64);
    let per_worker_events = events.map(|n| n.div_ceil(u64::from(workers)));
    let per_worker_rate = rate / f64::from(workers);
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let not_mount = cstr(&dir);
            let missing = cstr(&dir.join(format!("missing-{w}")));
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                let mut done = 0u64;
                loop {
                    let elapsed = start.elapsed();
                    if deadline.is_some_and(|d| elapsed >= d)
                        || per_worker_events.is_some_and(|n| done >= n)
                    {
                        break;
                    }
                    let due = if per_worker_rate > 0.0 {
                        (per_worker_rate * elapsed.as_secs_f64()) as u64
                    } else {
                        done + 64
                    };
                    let due = per_worker_events.map_or(due, |n| due.min(n));
                    if done >= due {
                        // Ahead of schedule: a short sleep keeps the pacing smooth at high rates.
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    // At most a batch before looking at the clock again.
                    let batch_end = due.min(done + 256);
                    while done < batch_end {
                        // SAFETY: valid NUL-terminated strings; both calls fail without side effects.
                        unsafe {
                            if done.is_multiple_of(2) {
                                libc::umount2(not_mount.as_ptr(), 0);
                            } else {
                                libc::unlinkat(libc::AT_FDCWD, missing.as_ptr(), 0);
                            }
                        }
                        done += 1;
                    }
                }
                total.fetch_add(done, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir(&dir);
    let events = total.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "events": events,
        "elapsed_ns": elapsed.as_nanos() as u64,
        "events_per_sec": events as f64 / elapsed.as_secs_f64(),
        "requested_rate": rate,
        "workers": workers,
    }))
}

/// Deterministic pseudo-random numbers (xorshift), so every generated capture is the same.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const HOST_NS: MntNs = MntNs {
    id: 2,
    inum: 4026531841,
};

struct Gen {
    rng: Rng,
    ts: u64,
    next_pid: u32,
    next_ns: u64,
    events: u64,
}

impl Gen {
    fn task(&mut self, pid: u32, ppid: u32, comm: &str, ns: MntNs) -> Task {
        self.ts += 1_000 + self.rng.below(20_000);
        Task {
            ts_ns: self.ts,
            pid,
            tid: pid,
            ppid,
            comm: KStr::new(comm),
            mnt_ns: ns,
            net_ns_inum: if ns == HOST_NS {
                4026531840
            } else {
                4026532000 + (ns.id as u32 % 1000)
            },
            cgroup_id: 1000 + ns.id,
        }
    }

    fn event(
        &mut self,
        task: Task,
        action: Action,
        ret: Option<i64>,
        new_mnt_ns: Option<MntNs>,
    ) -> Record {
        self.events += 1;
        Record::Event(Event {
            task,
            action,
            ret,
            new_mnt_ns,
            dir: None,
            resolved: [None, None],
        })
    }

    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        if self.next_pid > 4_000_000 {
            self.next_pid = 1000;
        }
        self.next_pid
    }
}

fn mnt(
    id: u64,
    parent: u64,
    mountpoint: &str,
    fstype: &str,
    source: &str,
    shared: Option<u32>,
) -> MountInfo {
    MountInfo {
        mnt_id: id,
        parent_id: parent,
        mnt_id_old: id as u32,
        root: KStr::new("/"),
        mountpoint: KStr::new(mountpoint),
        fstype: KStr::new(fstype),
        source: KStr::new(source),
        options: KStr::new("rw,relatime"),
        propagation: Propagation {
            shared,
            master: None,
            unbindable: false,
        },
        ..MountInfo::default()
    }
}

fn snapshot() -> Snapshot {
    let mounts = vec![
        mnt(1, 0, "/", "ext4", "/dev/vda", Some(1)),
        mnt(2, 1, "/proc", "proc", "proc", Some(2)),
        mnt(3, 1, "/sys", "sysfs", "sysfs", Some(3)),
        mnt(4, 1, "/dev", "devtmpfs", "udev", Some(4)),
        mnt(5, 4, "/dev/shm", "tmpfs", "tmpfs", Some(5)),
        mnt(6, 1, "/run", "tmpfs", "tmpfs", Some(6)),
        mnt(7, 1, "/tmp", "tmpfs", "tmpfs", Some(7)),
        mnt(8, 3, "/sys/fs/cgroup", "cgroup2", "cgroup2", Some(8)),
        mnt(9, 1, "/var/lib/docker", "ext4", "/dev/vdb", Some(9)),
    ];
    let proc = |pid: u32, ppid: u32, comm: &str| ProcessState {
        pid,
        ppid,
        comm: KStr::new(comm),
        mnt_ns: HOST_NS,
        cgroup: KStr::new("/system.slice"),
    };
    Snapshot {
        ts_ns: 1_000_000,
        host_ns: HOST_NS,
        namespaces: vec![NamespaceState {
            ns: HOST_NS,
            pids: vec![1, 400, 500],
            mounts,
        }],
        processes: vec![
            proc(1, 0, "systemd"),
            proc(400, 1, "containerd"),
            proc(500, 1, "dockerd"),
        ],
    }
}

/// One container's life, as the tracer sees it on a Docker host: the shim and runc init forked,
/// the overlay mounted, a new namespace with its mounts and pivot_root, the workload (mostly
/// unlinkat of files), exits, then the runtime's umount and rmdir of `merged`.
fn container_cycle(g: &mut Gen, out: &mut Vec<Record>) {
    let shim = g.pid();
    let init = g.pid();
    g.next_ns += 1;
    let ns = MntNs {
        id: g.next_ns,
        inum: 4026532200 + (g.next_ns % 500) as u32,
    };
    let id = format!("{:016x}{:016x}", g.rng.next(), g.rng.next());
    let merged = format!("/var/lib/docker/overlay2/{id}/merged");
    let host = |g: &mut Gen, pid, ppid, comm: &str| g.task(pid, ppid, comm, HOST_NS);

    let t = host(g, 500, 1, "dockerd");
    out.push(g.event(
        t,
        Action::Mount {
            source: KStr::new("overlay"),
            target: KStr::new(merged.clone()),
            fstype: KStr::new("overlay"),
            flags: 0,
        },
        Some(0),
        None,
    ));
    let t = host(g, 400, 1, "containerd");
    out.push(g.event(
        t,
        Action::Clone {
            flags: 0x1200011,
            clone3: false,
        },
        Some(i64::from(shim)),
        None,
    ));
    let t = host(g, 400, 1, "containerd");
    out.push(g.event(t, Action::Fork { child: shim }, None, None));
    let t = host(g, shim, 400, "containerd-shim");
    out.push(g.event(
        t,
        Action::Clone {
            flags: uapi::CLONE_NEWNS | uapi::CLONE_NEWPID | uapi::CLONE_NEWNET,
            clone3: false,
        },
        Some(i64::from(init)),
        Some(ns),
    ));
    let t = host(g, shim, 400, "containerd-shim");
    out.push(g.event(t, Action::Fork { child: init }, None, Some(ns)));

    // What the container layer records once the runtime knows the container (not an event).
    out.push(Record::Container(ContainerInfo {
        id: id.clone(),
        name: format!("bench-{}", g.next_ns),
        runtime: "docker".into(),
        init_pid: init,
        mnt_ns: ns,
        net_ns_inum: 4026532000 + (ns.id as u32 % 1000),
        mount_paths: vec![merged.clone()],
        cgroup: format!("/system.slice/docker-{id}.scope"),
        ..ContainerInfo::default()
    }));
    let inside = |g: &mut Gen| g.task(init, shim, "runc:[2:INIT]", ns);
    let mounts: [(&str, String, &str, u64); 5] = [
        ("", "/".into(), "", uapi::MS_REC | uapi::MS_PRIVATE),
        (
            merged.as_str(),
            merged.clone(),
            "",
            uapi::MS_BIND | uapi::MS_REC,
        ),
        (
            "proc",
            format!("{merged}/proc"),
            "proc",
            uapi::MS_NOSUID | uapi::MS_NODEV | uapi::MS_NOEXEC,
        ),
        ("tmpfs", format!("{merged}/dev"), "tmpfs", uapi::MS_NOSUID),
        (
            "shm",
            format!("{merged}/dev/shm"),
            "tmpfs",
            uapi::MS_NOSUID | uapi::MS_NODEV,
        ),
    ];
    for (source, target, fstype, flags) in mounts {
        let t = inside(g);
        out.push(g.event(
            t,
            Action::Mount {
                source: KStr::new(source),
                target: KStr::new(target),
                fstype: KStr::new(fstype),
                flags,
            },
            Some(0),
            None,
        ));
    }
    // runc: chdir(rootfs); pivot_root(".", "."); umount2(".", MNT_DETACH). The live source
    // resolves the relative paths against the cwd and puts it in `dir`.
    let t = inside(g);
    let rec = g.event(
        t,
        Action::PivotRoot {
            new_root: KStr::new("."),
            put_old: KStr::new("."),
        },
        Some(0),
        None,
    );
    out.push(with_dir(rec, &merged));
    let t = inside(g);
    let rec = g.event(
        t,
        Action::Umount {
            target: KStr::new("."),
            flags: uapi::MNT_DETACH,
        },
        Some(0),
        None,
    );
    out.push(with_dir(rec, "/"));
    let t = inside(g);
    out.push(g.event(
        t,
        Action::Exec {
            filename: KStr::new("/usr/local/bin/app"),
        },
        None,
        None,
    ));
    // The workload: temporary files created and removed, some already gone.
    let files = 80 + g.rng.below(80);
    for i in 0..files {
        let t = g.task(init, shim, "app", ns);
        let missing = g.rng.below(10) == 0;
        let path = format!("/tmp/app-{}/cache-{i}.tmp", g.rng.below(8));
        out.push(g.event(
            t,
            Action::Unlink {
                dirfd: uapi::AT_FDCWD,
                path: KStr::new(path),
                rmdir: false,
                call: UnlinkCall::Unlinkat,
            },
            Some(if missing { -2 } else { 0 }),
            None,
        ));
    }
    let t = g.task(init, shim, "app", ns);
    out.push(g.event(t, Action::Exit, None, None));
    let t = host(g, shim, 400, "containerd-shim");
    out.push(g.event(t, Action::Exit, None, None));
    let t = host(g, 500, 1, "dockerd");
    out.push(g.event(
        t,
        Action::Umount {
            target: KStr::new(merged.clone()),
            flags: 0,
        },
        Some(0),
        None,
    ));
    let t = host(g, 500, 1, "dockerd");
    out.push(g.event(
        t,
        Action::Unlink {
            dirfd: uapi::AT_FDCWD,
            path: KStr::new(merged),
            rmdir: true,
            call: UnlinkCall::Rmdir,
        },
        Some(0),
        None,
    ));
}

fn with_dir(mut rec: Record, dir: &str) -> Record {
    if let Record::Event(ev) = &mut rec {
        ev.dir = Some(KStr::new(dir));
    }
    rec
}

fn gen_capture(events: u64, path: &Path) -> anyhow::Result<serde_json::Value> {
    use mntleak::capture::{CaptureWriter, FORMAT_VERSION, RotateOptions};
    let header = CaptureHeader {
        format_version: FORMAT_VERSION,
        kernel_release: "6.18.0-synthetic".into(),
        hostname: "mntleak-load".into(),
        monotonic_to_wall_ns: 1_764_600_000_000_000_000,
        missing: Vec::new(),
    };
    let mut w = CaptureWriter::create(
        path,
        &header,
        RotateOptions {
            size: None,
            keep: None,
        },
    )
    .with_context(|| format!("cannot create {}", path.display()))?;
    w.write(&Record::Snapshot(snapshot()))
        .with_context(|| format!("write {}", path.display()))?;
    let mut g = Gen {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        ts: 2_000_000,
        next_pid: 1000,
        next_ns: 100,
        events: 0,
    };
    let mut buf = Vec::new();
    let mut written = 0u64;
    'cycles: while written < events {
        container_cycle(&mut g, &mut buf);
        for rec in buf.drain(..) {
            if matches!(rec, Record::Event(_)) {
                if written == events {
                    break 'cycles;
                }
                written += 1;
            }
            w.write(&rec)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    w.finish()
        .with_context(|| format!("finish {}", path.display()))?;
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    Ok(serde_json::json!({ "events": written, "bytes": bytes }))
}
