//! Issue 4's seed incidents reproduced on real runtimes (dockerd, its containerd through `ctr`),
//! with the real eBPF tracer started before each scenario: S1 (daemon restarted into a new
//! namespace), S2 (the runtime's directory rbound rprivate into another container), S3 (host `/`
//! rbound rprivate into a pod, `ip netns del`, with and without a pin), S4 (a PrivateTmp-style
//! service, idle and with an open file), S5 (a loop-device ext4 volume kept busy), a benign churn of
//! 50 containers, and capture + replay. Every container, process, mount, loop device and network
//! namespace is removed by a guard, even when an assertion fails; a failing test keeps its capture
//! as `/tmp/mntleak-scenario-<name>.mntcap` (replay it with `mntleak-trace replay --json`).
//!
//! Needs root, docker.io, containerd, runc, busybox-static; run with `--test-threads=1` (S1 restarts
//! dockerd). The default dockerd is started once and reused.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mntleak_tests::docker::{Cleanup, Docker, DockerdOpts, require_docker, run_cmd, unique_name};
use mntleak_tests::{
    Background, LoopDev, Scratch, TraceOutput, TraceSession, mnt_ns_of, open_excl, run_tracer, sh,
    tracer_bin,
};
use serde_json::Value;

const K8S_NS: &str = "k8s.io";
/// How long a `--container` run may take to end by itself after the container is removed.
const SELF_END_LIMIT: Duration = Duration::from_secs(60);

// ---- helpers ----------------------------------------------------------------------------------

/// True when the scenario can run here (root, docker, the tracer binary).
fn ready() -> bool {
    if !require_docker() {
        return false;
    }
    let bin = tracer_bin();
    if !bin.exists() {
        if std::env::var_os("MNTLEAK_REQUIRE_BPF").is_some() {
            panic!("no tracer binary at {}", bin.display());
        }
        eprintln!("skipped: no tracer binary at {}", bin.display());
        return false;
    }
    true
}

/// A capture file in a scratch dir, copied to `/tmp/mntleak-scenario-<name>.mntcap` when the test
/// fails so the run can be replayed.
struct Capture {
    name: &'static str,
    path: PathBuf,
    _dir: Scratch,
}

impl Capture {
    fn new(name: &'static str) -> Self {
        let dir = Scratch::new(&format!("cap-{name}"));
        let path = dir.join(&format!("{name}.mntcap"));
        Self {
            name,
            path,
            _dir: dir,
        }
    }
    fn s(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = format!("/tmp/mntleak-scenario-{}.mntcap", self.name);
            if std::fs::copy(&self.path, &keep).is_ok() {
                eprintln!("capture kept: {keep} (mntleak-trace replay --json {keep})");
                // CI machines are gone after the run: the last events (the scenario's final
                // calls) in the log are what a flaky failure can be diagnosed from.
                let replay = run_tracer(&["replay", &keep]);
                let lines: Vec<&str> = replay.stdout.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("last events of the capture:\n{}", tail.join("\n"));
            }
        }
    }
}

/// Runs `finish` (wait or stop) on the tracer with a watchdog: a tracer that has not exited
/// `limit` later is killed and the test fails saying so (a hung tracer must not hang CI).
fn bounded(
    trace: TraceSession,
    limit: Duration,
    signal: i32,
    finish: impl FnOnce(TraceSession) -> anyhow::Result<TraceOutput>,
) -> TraceOutput {
    let pid = trace.pid();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if flag.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill(2) on our own child, still unreaped (finish has not returned).
        unsafe { libc::kill(pid as i32, signal) };
        true
    });
    let out = finish(trace).expect("tracer output");
    done.store(true, Ordering::SeqCst);
    let fired = watchdog.join().unwrap();
    assert!(
        !fired,
        "the tracer did not end within {limit:?}: {}",
        out.stderr
    );
    out
}

/// Waits for a `--container` run to end by itself after the container's removal.
fn wait_self_end(trace: TraceSession) -> TraceOutput {
    bounded(trace, SELF_END_LIMIT, libc::SIGINT, TraceSession::wait)
}

/// SIGINT, and SIGKILL if the tracer has not printed its verdicts within a minute.
fn stop(trace: TraceSession) -> TraceOutput {
    bounded(
        trace,
        Duration::from_secs(60),
        libc::SIGKILL,
        TraceSession::stop,
    )
}

/// Polls `cond` every 50 ms for up to 20 s: the state a scenario needs before its next step.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn ns_ino(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Starts a PrivateTmp-style service (`unshare -m --propagation private <cmd>`, which ends in
/// `sleep`) and waits until it sleeps in its own namespace; its (pid, 64-bit ns id).
fn start_service(script: &str) -> (Background, u32, u64) {
    let svc = Background::spawn(&format!("exec unshare -m --propagation private {script}"))
        .expect("spawn service");
    let pid = svc.pid();
    let host = ns_ino(std::process::id());
    wait_for("the service to sleep in its own namespace", || {
        comm_of(pid) == "sleep" && ns_ino(pid) != host
    });
    let (_, id) = mnt_ns_of(pid).expect("service ns");
    (svc, pid, id)
}

/// The overlay `merged` directory of a docker container.
fn merged_dir(docker: &Docker, id: &str) -> String {
    let v = docker.inspect(id).expect("docker inspect");
    v.pointer("/GraphDriver/Data/MergedDir")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no MergedDir for {id}: {v}"))
        .to_owned()
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn u64_of(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

/// Findings of `kind` whose mount (path in A, path in B or source) is `needle`.
fn findings_on(out: &TraceOutput, kind: &str, needle: &str) -> Vec<Value> {
    out.findings()
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .filter(|f| {
            str_of(f, "/mount/path") == needle
                || str_of(f, "/mount/path_in_ns") == needle
                || str_of(f, "/mount/source") == needle
        })
        .collect()
}

/// The one leak on `needle` copied into namespace `into`; fails listing what was found.
fn the_leak(out: &TraceOutput, needle: &str, into: u64) -> Value {
    let all = findings_on(out, "leak", needle);
    let mut mine: Vec<Value> = all
        .iter()
        .filter(|f| u64_of(f, "/into_mnt_ns_id") == into)
        .cloned()
        .collect();
    assert!(
        !mine.is_empty(),
        "no leak of {needle} into mnt ns {into}; leaks on it: {all:#?}\nall findings: {:#?}\nsummary: {:?}\nstderr: {}",
        out.findings(),
        out.json().into_iter().find(|v| v["kind"] == "summary"),
        out.stderr
    );
    // A finding may be re-emitted as it changes (same id): the last word counts.
    mine.pop().unwrap()
}

fn holder_pids(f: &Value) -> Vec<u64> {
    f["holders"]
        .as_array()
        .map(|a| a.iter().map(|h| u64_of(h, "/pid")).collect())
        .unwrap_or_default()
}

/// Remediation is present, names `pid` somewhere, and never offers a blind lazy detach as the fix.
fn assert_remediation(f: &Value, pid: u32) {
    let rem: Vec<&str> = f["remediation"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(!rem.is_empty(), "no remediation: {f:#}");
    assert!(
        rem.iter().any(|r| r.contains(&pid.to_string())),
        "no remediation names pid {pid}: {rem:#?}"
    );
    for r in &rem {
        if r.contains("umount -l") || r.contains("MNT_DETACH") {
            assert!(r.contains("not"), "lazy detach offered as a fix: {r:?}");
        }
    }
}

// ---- S4: a PrivateTmp-style service started after a container ---------------------------------

#[test]
fn s4_idle_service_copy_is_a_leak_resolved_by_dockers_rmdir() {
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("s4-idle");
    let name = unique_name("mntleak-s4");
    cleanup.docker(&name);
    let id = docker.run_sleeper(&["--name", &name]).expect("docker run");
    let merged = merged_dir(&docker, &id);

    let trace = TraceSession::start(&[
        "--json",
        "--quiet",
        "--container",
        &id,
        "--output",
        &cap.s(),
    ])
    .expect("tracer");
    let (svc, svc_pid, svc_ns) = start_service("sleep 1000");
    // The kernel's side: the service holds a copy of the container's rootfs.
    let mi = std::fs::read_to_string(format!("/proc/{svc_pid}/mountinfo")).unwrap();
    assert!(
        mi.contains(&format!(" {merged} ")),
        "service has no copy of {merged}"
    );
    docker.rm_f(&id).expect("docker rm -f");
    let out = wait_self_end(trace);
    // On 6.18 docker's rmdir of `merged` detached the copy: the kernel agrees before we ask the tool.
    let mi = std::fs::read_to_string(format!("/proc/{svc_pid}/mountinfo")).unwrap();
    assert!(!mi.contains(&format!(" {merged} ")), "copy still attached");
    drop(svc);

    assert_eq!(
        out.status.code(),
        Some(1),
        "a leak sets exit 1: {}",
        out.stderr
    );
    let leak = the_leak(&out, &merged, svc_ns);
    assert_eq!(str_of(&leak, "/mount/fstype"), "overlay", "{leak:#}");
    assert_eq!(str_of(&leak, "/leaked_by/syscall"), "unshare", "{leak:#}");
    assert_eq!(u64_of(&leak, "/leaked_by/pid"), svc_pid as u64, "{leak:#}");
    assert!(
        holder_pids(&leak).contains(&(svc_pid as u64)),
        "service pid {svc_pid} not a holder: {leak:#}"
    );
    assert!(!leak["resolved"].is_null(), "not marked resolved: {leak:#}");
    assert_remediation(&leak, svc_pid);

    // Offline: the container is gone, the capture still knows it.
    let replay = run_tracer(&["replay", "--json", "--quiet", "--container", &id, &cap.s()]);
    assert_eq!(replay.status.code(), Some(1), "{replay:?}");
    let again = the_leak(&replay, &merged, svc_ns);
    assert_eq!(again["leaked_by"], leak["leaked_by"], "{again:#}");
    assert_eq!(again["resolved"], leak["resolved"], "{again:#}");
}

#[test]
fn s4_service_with_an_open_file_keeps_the_overlay_and_is_named() {
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("s4-open");
    let name = unique_name("mntleak-s4o");
    cleanup.docker(&name);
    let id = docker.run_sleeper(&["--name", &name]).expect("docker run");
    let merged = merged_dir(&docker, &id);

    let trace = TraceSession::start(&[
        "--json",
        "--quiet",
        "--container",
        &id,
        "--output",
        &cap.s(),
    ])
    .expect("tracer");
    // A log shipper: a file of the container's rootfs open through the service's copy.
    let (svc, svc_pid, svc_ns) = start_service(&format!(
        "sh -c 'exec 3< {merged}/etc/passwd; exec sleep 1000'"
    ));
    docker.rm_f(&id).expect("docker rm -f");
    let out = wait_self_end(trace);
    // The kernel's side: the fd still reads the container's file (the overlay lives on).
    let fd_target = std::fs::read_link(format!("/proc/{svc_pid}/fd/3")).expect("fd 3");
    let content = std::fs::read_to_string(format!("/proc/{svc_pid}/fd/3")).expect("read via fd");
    assert!(content.starts_with("root:"), "{content:?}");
    drop(svc);

    assert_eq!(
        out.status.code(),
        Some(1),
        "a leak sets exit 1: {}",
        out.stderr
    );
    let leak = the_leak(&out, &merged, svc_ns);
    eprintln!("open-file leak ({}): {leak:#}", fd_target.display());
    assert_eq!(str_of(&leak, "/leaked_by/syscall"), "unshare", "{leak:#}");
    assert_eq!(u64_of(&leak, "/leaked_by/pid"), svc_pid as u64, "{leak:#}");
    assert!(
        holder_pids(&leak).contains(&(svc_pid as u64)),
        "service pid {svc_pid} not a holder: {leak:#}"
    );
    assert_remediation(&leak, svc_pid);
}

// ---- S5: a loop-device ext4 volume kept busy by a leaked copy -----------------------------------

#[test]
fn s5_loop_ext4_volume_stays_busy_because_of_a_leaked_copy() {
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let dir = Scratch::new("s5");
    let img = dir.join("vol.img").display().to_string();
    let vol = dir.join("vol").display().to_string();
    sh(&format!(
        "truncate -s 8M {img} && mkfs.ext4 -q {img} && mkdir -p {vol}"
    ))
    .unwrap();
    let dev = LoopDev::attach(&img).expect("losetup");
    run_cmd("mount", &[&dev.0, &vol]).expect("mount the volume");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("s5");
    let name = unique_name("mntleak-s5");
    cleanup.docker(&name);
    let bind = format!("{vol}:/data");
    let id = docker
        .run_sleeper(&["--name", &name, "-v", &bind])
        .expect("docker run");
    docker
        .exec(&id, &["sh", "-c", "echo hi > /data/f"])
        .expect("write the volume");

    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    let (svc, svc_pid, svc_ns) = start_service("sleep 1000");
    docker.rm_f(&id).expect("docker rm -f");
    run_cmd("umount", &[&vol]).expect("host umount of the volume");
    // The kernel's side: the device is still busy, detaching it only arms autoclear.
    let busy = open_excl(&dev.0);
    assert_eq!(
        busy.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EBUSY),
        "{busy:?}"
    );
    let out = stop(trace);
    drop(svc);
    // Free now (the copy died with the service's namespace).
    wait_for("the loop device to be free", || open_excl(&dev.0).is_ok());

    let leak = the_leak(&out, &dev.0, svc_ns);
    assert_eq!(str_of(&leak, "/mount/fstype"), "ext4", "{leak:#}");
    assert_eq!(str_of(&leak, "/mount/source"), dev.0, "{leak:#}");
    assert_eq!(str_of(&leak, "/leaked_by/syscall"), "unshare", "{leak:#}");
    assert_eq!(u64_of(&leak, "/leaked_by/pid"), svc_pid as u64, "{leak:#}");
    assert!(
        holder_pids(&leak).contains(&(svc_pid as u64)),
        "service pid {svc_pid} not a holder: {leak:#}"
    );
    assert!(
        leak["resolved"].is_null(),
        "nothing unlinked the mountpoint, the copy was live: {leak:#}"
    );
    assert_remediation(&leak, svc_pid);
    assert_eq!(out.status.code(), Some(1), "a leak sets exit 1");
}

// ---- S2: the runtime's directory rbound rprivate into another container -------------------------

#[test]
fn s2_rprivate_bind_of_var_lib_docker_leaks_the_first_containers_rootfs() {
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("s2");
    let name_a = unique_name("mntleak-s2a");
    cleanup.docker(&name_a);
    let a = docker
        .run_sleeper(&["--name", &name_a])
        .expect("docker run a");
    let merged = merged_dir(&docker, &a);
    docker.ctr_image_ensure(K8S_NS).expect("ctr image");

    let trace =
        TraceSession::start(&["--json", "--quiet", "--container", &a, "--output", &cap.s()])
            .expect("tracer");
    // dockerd refuses rprivate binds of its root ("must use rslave or rshared"); a hostPath pod
    // under containerd gets exactly that, so b is a containerd container.
    let b = unique_name("mntleak-s2b");
    cleanup.ctr(K8S_NS, &b);
    let b_pid = docker
        .ctr_run(
            K8S_NS,
            &b,
            &[
                "--label",
                "io.kubernetes.pod.name=s2pod",
                "--mount",
                "type=bind,src=/var/lib/docker,dst=/host-docker,options=rbind:rprivate",
            ],
        )
        .expect("ctr run b");
    let (_, b_ns) = mnt_ns_of(b_pid).expect("ns of b");
    let in_b = merged.replacen("/var/lib/docker", "/host-docker", 1);
    let mi = std::fs::read_to_string(format!("/proc/{b_pid}/mountinfo")).unwrap();
    assert!(mi.contains(&format!(" {in_b} ")), "b has no copy at {in_b}");
    docker.rm_f(&a).expect("docker rm -f a");
    let out = wait_self_end(trace);
    let mi = std::fs::read_to_string(format!("/proc/{b_pid}/mountinfo")).unwrap();
    assert!(
        !mi.contains(&format!(" {in_b} ")),
        "docker's rmdir did not detach {in_b}"
    );

    assert_eq!(
        out.status.code(),
        Some(1),
        "a leak sets exit 1: {}",
        out.stderr
    );
    let leak = the_leak(&out, &merged, b_ns);
    assert_eq!(str_of(&leak, "/mount/fstype"), "overlay", "{leak:#}");
    assert_eq!(str_of(&leak, "/mount/path_in_ns"), in_b, "{leak:#}");
    // The bind that made the copy: runc (or a runtime helper) mounting into b's namespace.
    let by = str_of(&leak, "/leaked_by/syscall");
    assert!(
        matches!(by, "mount" | "open_tree" | "move_mount"),
        "leaked_by is not the bind: {leak:#}"
    );
    assert!(!leak["resolved"].is_null(), "not marked resolved: {leak:#}");
    assert!(
        holder_pids(&leak).contains(&(b_pid as u64)),
        "b's init {b_pid} not a holder: {leak:#}"
    );
    assert_remediation(&leak, b_pid);
    assert!(
        leak["remediation"]
            .to_string()
            .to_lowercase()
            .contains("slave"),
        "no rslave/HostToContainer advice for a host-path bind: {leak:#}"
    );
}

// ---- S3: a pod with host `/` rbound rprivate, `ip netns del` ------------------------------------

/// `ip netns add` now, `ip netns del` on drop (already deleted is fine).
struct Netns(String);

impl Netns {
    fn add() -> Self {
        let name = unique_name("cni-test");
        run_cmd("ip", &["netns", "add", &name]).expect("ip netns add");
        Self(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_cmd("ip", &["netns", "del", &self.0]);
    }
}

fn s3(pin: bool) {
    let docker = Docker::start().expect("dockerd");
    docker.ctr_image_ensure(K8S_NS).expect("ctr image");
    let netns = Netns::add();
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new(if pin { "s3-pin" } else { "s3" });
    let cid = unique_name("mntleak-s3");
    cleanup.ctr(K8S_NS, &cid);
    // Attached before the container exists: runc's setup path (mounts onto /proc/self/fd/N,
    // pivot_root(".", ".")) is traced.
    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    let pid = docker
        .ctr_run(
            K8S_NS,
            &cid,
            &[
                "--label",
                "io.kubernetes.pod.name=s3pod",
                "--label",
                "io.kubernetes.pod.namespace=default",
                "--mount",
                "type=bind,src=/,dst=/rootfs,options=rbind:rprivate",
                "--cap-add",
                "CAP_SYS_ADMIN",
            ],
        )
        .expect("ctr run");
    let (_, c_ns) = mnt_ns_of(pid).expect("ns of the pod");
    let copy = format!("/rootfs{}", netns.path());
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mi.contains(&format!(" {copy} ")),
        "the pod has no copy at {copy}"
    );
    if pin {
        // A network agent pins the netns with a bind of the nsfs file to a path of its own.
        docker
            .ctr(
                K8S_NS,
                &[
                    "task",
                    "exec",
                    "--exec-id",
                    "pin",
                    &cid,
                    "sh",
                    "-c",
                    &format!("touch /pin && mount --bind {copy} /pin"),
                ],
            )
            .expect("pin the netns inside the pod");
    }
    run_cmd("ip", &["netns", "del", &netns.0]).expect("ip netns del");
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        !mi.contains(&format!(" {copy} ")),
        "the unlink did not detach {copy}"
    );
    assert_eq!(mi.contains(" /pin "), pin, "{mi}");
    let out = stop(trace);
    drop(cleanup);

    let leak = the_leak(&out, &netns.path(), c_ns);
    eprintln!("S3 (pin {pin}) leak: {leak:#}");
    assert_eq!(str_of(&leak, "/mount/fstype"), "nsfs", "{leak:#}");
    assert!(
        matches!(
            str_of(&leak, "/leaked_by/syscall"),
            "mount" | "open_tree" | "move_mount"
        ),
        "leaked_by is not runc's rbind: {leak:#}"
    );
    assert!(
        holder_pids(&leak).contains(&(pid as u64)) || !leak["pin"].is_null(),
        "neither the pod's init {pid} nor a pin holds it: {leak:#}"
    );
    if pin {
        assert!(
            leak["resolved"].is_null(),
            "the pinned netns is alive: {leak:#}"
        );
        assert!(
            leak.to_string().contains("/pin"),
            "the verdict does not name the pin /pin: {leak:#}"
        );
    } else {
        assert!(
            !leak["resolved"].is_null(),
            "ip netns del's unlink detached it: {leak:#}"
        );
    }
}

#[test]
fn s3_rbind_root_copy_of_a_netns_is_resolved_by_ip_netns_del() {
    if ready() {
        s3(false);
    }
}

#[test]
fn s3_netns_pinned_by_the_pod_stays_alive_and_the_pin_is_named() {
    if ready() {
        s3(true);
    }
}

// ---- S1: dockerd restarted into a new namespace (live-restore) ---------------------------------

/// Gives the default dockerd back, whatever happened.
struct RestoreDefaultDocker;

impl Drop for RestoreDefaultDocker {
    fn drop(&mut self) {
        if let Err(e) = Docker::stop_daemon().and_then(|_| Docker::start()) {
            eprintln!("cannot restore the default dockerd: {e:#}");
        }
    }
}

#[test]
fn s1_daemon_restarted_into_a_new_namespace_strands_the_rootfs() {
    if !ready() {
        return;
    }
    let _restore = RestoreDefaultDocker;
    Docker::stop_daemon().expect("stop the default dockerd");
    let opts = DockerdOpts {
        unshare_slave: true,
        live_restore: true,
        ..Default::default()
    };
    let d1 = Docker::start_custom(&opts).expect("dockerd in a slave namespace");
    let cleanup = Cleanup::new(&d1);
    let cap = Capture::new("s1");
    let name = unique_name("mntleak-s1");
    cleanup.docker(&name);
    let id = d1.run_sleeper(&["--name", &name]).expect("docker run");
    let merged = merged_dir(&d1, &id);
    let init = d1.pid_of(&id).expect("init pid");
    let (_, ns1) = mnt_ns_of(d1.pid).expect("ns of dockerd 1");

    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    Docker::stop_daemon().expect("stop dockerd 1");
    let d2 = Docker::start_custom(&opts).expect("dockerd restarted");
    let (_, ns2) = mnt_ns_of(d2.pid).expect("ns of dockerd 2");
    assert_ne!(ns1, ns2, "the restart did not make a new namespace");
    assert_eq!(d2.pid_of(&id).expect("live-restored"), init);
    d2.rm_f(&id).expect("docker rm -f");
    let out = stop(trace);

    let leak = the_leak(&out, &merged, ns1);
    eprintln!("S1 leak: {leak:#}");
    assert_eq!(str_of(&leak, "/mount/fstype"), "overlay", "{leak:#}");
    let text = leak.to_string();
    // The restart: the new dockerd and its namespace.
    assert!(
        text.contains(&format!("\"pid\":{}", d2.pid)),
        "new dockerd {} not named: {leak:#}",
        d2.pid
    );
    assert!(
        text.contains(&ns2.to_string()),
        "new namespace {ns2} not named: {leak:#}"
    );
    // dockerd's failed umount in its new namespace.
    let symptoms = leak["symptoms"].as_array().cloned().unwrap_or_default();
    assert!(
        symptoms.iter().any(|s| s["syscall"] == "umount2"
            && u64_of(s, "/pid") == d2.pid as u64
            && matches!(str_of(s, "/errno"), "EINVAL" | "ENOENT")),
        "no failed umount2 by dockerd {} among the symptoms: {leak:#}",
        d2.pid
    );
    // The shims keep the old namespace alive.
    assert!(
        leak["holders"].as_array().is_some_and(|h| h
            .iter()
            .any(|h| str_of(h, "/comm").starts_with("containerd-shim"))),
        "no containerd-shim holder: {leak:#}"
    );
    assert!(
        !leak["resolved"].is_null(),
        "the rmdir detached it: {leak:#}"
    );
    let rem = leak["remediation"].to_string().to_lowercase();
    assert!(
        rem.contains("live-restore") || rem.contains("mountflags"),
        "no live-restore/MountFlags advice: {leak:#}"
    );
}

// ---- benign churn, capture and replay ---------------------------------------------------------

/// A process of the container runtime or of a churn container.
fn runtime_actor(comm: &str) -> bool {
    ["dockerd", "containerd", "runc", "docker", "true", "exe"]
        .iter()
        .any(|p| comm.starts_with(p))
}

/// A docker-managed path: what the churn touches.
fn dockerish(f: &Value) -> bool {
    let m = f["mount"].to_string();
    m.contains("/var/lib/docker") || m.contains("/run/docker") || m.contains("/run/containerd")
}

#[test]
fn benign_churn_of_50_containers_has_no_leak_and_replays_identically() {
    if !ready() {
        return;
    }
    // The daemon and the image; the lanes use the docker CLI on the default socket.
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("churn");
    let ids = Scratch::new("churn-ids");
    // One container that exists when the capture begins and is removed during it.
    let name = unique_name("mntleak-churn");
    cleanup.docker(&name);
    let early = docker.run_sleeper(&["--name", &name]).expect("docker run");
    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    docker.rm_f(&early).expect("docker rm -f");
    // 5 parallel lanes of 10 `docker run --rm`: each container starts, runs `true`, is removed.
    let lanes: Vec<_> = (0..5)
        .map(|lane| {
            let d = ids.s();
            std::thread::spawn(move || {
                sh(&format!(
                    "for i in 0 1 2 3 4 5 6 7 8 9; do docker run --rm --network none \
                     --cidfile {d}/{lane}-$i mntleak-busybox:latest true || exit 1; done"
                ))
            })
        })
        .collect();
    for l in lanes {
        l.join().unwrap().expect("churn lane");
    }
    let mut cids: Vec<String> = std::fs::read_dir(&ids.path)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    cids.sort();
    assert_eq!(cids.len(), 50);
    let out = stop(trace);

    let leaks: Vec<Value> = out
        .findings()
        .into_iter()
        .filter(|f| f["kind"] == "leak" && dockerish(f))
        // Only what the churn's own processes did: on a shared machine other work (a private
        // `unshare`, `nsenter ... mount`) may copy docker mounts while containers come and go.
        .filter(|f| {
            f["leaked_by"].is_null()
                || runtime_actor(str_of(f, "/leaked_by/comm"))
                || f["holders"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| runtime_actor(str_of(h, "/comm"))))
        })
        .collect();
    assert!(leaks.is_empty(), "leaks in a benign churn: {leaks:#?}");
    let at_risk = out
        .findings()
        .iter()
        .filter(|f| f["kind"] == "at_risk" && dockerish(f))
        .count();
    eprintln!("churn: {at_risk} at_risk findings on docker mounts");

    // The capture gives the same findings offline.
    let replay = run_tracer(&["replay", "--json", "--quiet", &cap.s()]);
    assert_eq!(replay.status.code(), out.status.code(), "{}", replay.stderr);
    assert_eq!(
        replay.findings(),
        out.findings(),
        "replay differs from live"
    );
    // And a container that is long gone is still known by the capture.
    let replay = run_tracer(&[
        "replay",
        "--json",
        "--quiet",
        "--container",
        &early,
        &cap.s(),
    ]);
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    let leaks = replay
        .findings()
        .into_iter()
        .filter(|f| f["kind"] == "leak")
        .count();
    assert_eq!(leaks, 0, "{}", replay.stdout);
}

#[test]
fn replay_knows_a_container_created_during_the_capture() {
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("created");
    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    let name = unique_name("mntleak-created");
    cleanup.docker(&name);
    let id = docker.run_sleeper(&["--name", &name]).expect("docker run");
    // Longer than one runtime poll, so the recording does not depend on the busy-poll's timing.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    docker.rm_f(&id).expect("docker rm -f");
    let out = stop(trace);
    assert!(out.status.code().is_some(), "{out:?}");
    for who in [id.as_str(), &id[..12], name.as_str()] {
        let replay = run_tracer(&["replay", "--json", "--quiet", "--container", who, &cap.s()]);
        assert_eq!(
            replay.status.code(),
            Some(0),
            "--container {who}: {replay:?}"
        );
    }
}

/// The engine's table of a started container's namespace, rebuilt from the capture, is the
/// kernel's: runc's read-only binds inside /proc (bus, fs, irq, sys, sysrq-trigger) and the rest of
/// its setup are placed by path, without the namespace being read again after each of them.
#[test]
fn a_started_containers_namespace_is_modelled_as_the_kernel_has_it() {
    use mntleak::capture::CaptureReader;
    use mntleak::engine::{Engine, EngineConfig};
    if !ready() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let cap = Capture::new("modelled");
    let trace = TraceSession::start(&["--json", "--quiet", "--output", &cap.s()]).expect("tracer");
    let name = unique_name("mntleak-modelled");
    cleanup.docker(&name);
    let id = docker.run_sleeper(&["--name", &name]).expect("docker run");
    let pid = docker.pid_of(&id).expect("container pid");
    let (_, ns_id) = mnt_ns_of(pid).expect("container namespace");
    // mountinfo: id parent major:minor root mountpoint options [optional...] - fstype source ...
    let mut kernel: Vec<(String, String, String)> =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .expect("mountinfo")
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|x| *x == "-")?;
                Some((
                    f[4].to_owned(),
                    f[3].to_owned(),
                    f.get(dash + 1)?.to_string(),
                ))
            })
            .collect();
    kernel.sort();
    let out = stop(trace);
    assert!(out.status.code().is_some(), "{out:?}");

    let mut engine = Engine::new(EngineConfig::default());
    let mut reader = CaptureReader::open(std::slice::from_ref(&cap.path)).expect("capture");
    while let Some(rec) = reader.next_record().expect("capture record") {
        engine.apply(rec);
    }
    let mut model: Vec<(String, String, String)> = engine
        .mount_table(ns_id)
        .into_iter()
        .map(|m| (m.mountpoint, m.root, m.fstype))
        .collect();
    model.sort();
    assert!(
        kernel.iter().any(|m| m.0 == "/proc/bus"),
        "runc no longer binds /proc/bus: {kernel:#?}"
    );
    assert_eq!(model, kernel, "the model (left) against mountinfo (right)");
}
