//! The `mntleak-trace` binary end to end on the real kernel: live output, capture, replay, errors.

use mntleak_tests::{Background, Scratch, TraceSession, mnt_ns_of, require_root, run_tracer, sh};

#[test]
fn live_json_reports_mount_with_real_namespace_and_result() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("live");
    let trace = TraceSession::start(&["--json", "--comm", "umount"]).unwrap();
    // A process in its own mount namespace mounts, then fails an umount, then stays to be measured.
    let holder = Background::spawn(&format!(
        "exec unshare -m --propagation private sh -c 'mkdir -p {d}/m; mount -t tmpfs probe-src {d}/m; \
         umount {d}/not-a-mount; exec sleep 30'",
        d = dir.s()
    ))
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ino, id) = mnt_ns_of(holder.pid()).unwrap();
    let out = trace.stop().unwrap();
    let events = out.json();
    let target = format!("{}/not-a-mount", dir.s());
    let umount = events
        .iter()
        .find(|e| e["syscall"] == "umount2" && e.to_string().contains(&target))
        .unwrap_or_else(|| panic!("no umount2 of {target} in {}", out.stdout));
    assert_eq!(umount["mnt_ns"].as_u64(), Some(ino), "{umount}");
    assert_eq!(umount["mnt_ns_id"].as_u64(), Some(id), "{umount}");
    assert_eq!(umount["errno"], "ENOENT", "{umount}");
    assert_eq!(umount["comm"], "umount");
    // The summary counts it.
    assert!(out.stdout.contains("\"summary\""), "{}", out.stdout);
}

#[test]
fn capture_replays_exactly_what_live_printed() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("replay");
    let cap = dir.join("run.mntcap");
    let cap_s = cap.display().to_string();
    let trace = TraceSession::start(&[
        "--output", &cap_s, "--comm", "unshare", "--comm", "mount", "--comm", "umount",
    ])
    .unwrap();
    sh(&format!(
        "mkdir -p {d}/a; unshare -m --propagation private sh -c 'mount -t tmpfs t {d}/a && umount {d}/a'",
        d = dir.s()
    ))
    .unwrap();
    let live = trace.stop().unwrap();
    assert!(live.status.success(), "{live:?}");
    assert!(live.stdout.contains("unshare"), "{}", live.stdout);
    let replay = run_tracer(&[
        "replay", &cap_s, "--comm", "unshare", "--comm", "mount", "--comm", "umount",
    ]);
    assert!(replay.status.success(), "{replay:?}");
    assert_eq!(replay.stdout, live.stdout);
    // Capture files are private to root.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn sigkill_leaves_a_capture_readable_to_the_last_whole_record() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("kill");
    let cap = dir.join("k.mntcap");
    let cap_s = cap.display().to_string();
    let trace = TraceSession::start(&["--output", &cap_s, "--quiet"]).unwrap();
    sh(&format!(
        "mkdir -p {d}/a; for i in 1 2 3 4 5; do unshare -m true; done",
        d = dir.s()
    ))
    .unwrap();
    // Past one flush interval, then no chance to clean up.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = trace.stop_with(libc::SIGKILL).unwrap();
    assert!(!out.status.success());
    let unshares = unshares_replayed(&cap_s);
    assert!(unshares >= 5, "only {unshares} unshare events survived");
}

/// The unshare events a replay of `cap` shows (the replay must succeed).
fn unshares_replayed(cap: &str) -> usize {
    let replay = run_tracer(&["replay", "--json", cap, "--comm", "unshare"]);
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    replay
        .json()
        .iter()
        .filter(|v| v["syscall"] == "unshare")
        .count()
}

/// SIGTERM (what systemd and `docker stop` send) ends a capture like Ctrl-C: the events still in
/// the ring and in the write buffer, well inside one flush interval, reach the file, and the run
/// ends with its summary and exit 0. The default action would end it with nothing after the last
/// periodic flush.
#[test]
fn sigterm_ends_a_capture_with_everything_recorded_and_a_summary() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("term");
    let cap = dir.join("t.mntcap");
    let cap_s = cap.display().to_string();
    let trace = TraceSession::start(&["--output", &cap_s, "--comm", "unshare"]).unwrap();
    sh("for i in 1 2 3 4 5 6 7; do unshare -m true; done").unwrap();
    let out = trace.stop_with(libc::SIGTERM).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("verdict:"),
        "no summary: {}",
        out.stdout
    );
    assert_eq!(unshares_replayed(&cap_s), 7);
}

/// With tracefs unmounted (a minimal host, a fresh container), the tracepoints cannot be found
/// by name: the tracer mounts tracefs itself and traces. Done in a private mount namespace, so
/// the host's tracefs is never touched.
#[test]
fn a_host_without_tracefs_mounted_gets_it_mounted_and_traced() {
    if !require_root() {
        return;
    }
    let script = format!(
        "set -e; umount /sys/kernel/debug/tracing 2>/dev/null || true; \
         umount /sys/kernel/tracing 2>/dev/null || true; \
         if [ -e /sys/kernel/tracing/events/syscalls ] || [ -e /sys/kernel/debug/tracing/events/syscalls ]; \
         then echo STILL_MOUNTED; exit 1; fi; \
         {bin} --duration 1 --quiet --json >/dev/null; \
         [ -e /sys/kernel/tracing/events/syscalls ] && echo MOUNTED_BY_TRACER",
        bin = mntleak_tests::tracer_bin().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("MOUNTED_BY_TRACER"), "{stdout}{stderr}");
    assert!(stderr.contains("tracing;"), "{stderr}");

    // Where it cannot be mounted (an empty /sys/kernel, but for its BTF, has no mountpoint for
    // it): one line that says so, and no run.
    let dir = Scratch::new("tracefs");
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; mkdir -p {d}/btf && \
         mount --bind /sys/kernel/btf {d}/btf && mount -t tmpfs empty /sys/kernel && \
         mkdir /sys/kernel/btf && mount --move {d}/btf /sys/kernel/btf && \
         exec {bin} --duration 1 --quiet",
        d = dir.s(),
        bin = mntleak_tests::tracer_bin().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tracefs"), "{stderr}");
}

/// A kernel without BTF (the struct offsets the eBPF side needs come from it), or with a BTF
/// file that does not parse: one line naming it, exit 2, nothing loaded. Made by hiding
/// `/sys/kernel/btf` in a private mount namespace.
#[test]
fn a_kernel_without_usable_btf_is_one_line_and_exit_2() {
    if !require_root() {
        return;
    }
    for (setup, expect) in [
        ("true", "is missing"),
        (
            "head -c 4096 /dev/urandom > /sys/kernel/btf/vmlinux",
            "malformed BTF",
        ),
    ] {
        let script = format!(
            "mount -t tmpfs empty /sys/kernel/btf && {setup} && exec {bin} --duration 1 --quiet",
            bin = mntleak_tests::tracer_bin().display()
        );
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{setup}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{setup}: {stderr}");
        assert!(stderr.contains(expect), "{setup}: {stderr}");
        assert!(
            stderr.contains("/sys/kernel/btf/vmlinux"),
            "{setup}: {stderr}"
        );
    }
}

/// A tracepoint the kernel does not have (hidden here by an empty directory over its tracefs
/// entry, in a private mount namespace): a degraded run that names it and why, not a failure.
#[test]
fn a_missing_tracepoint_makes_a_degraded_run_that_says_why() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("notp");
    let script = format!(
        "mkdir -p {d}/empty && \
         mount --bind {d}/empty /sys/kernel/tracing/events/syscalls/sys_enter_unlinkat && \
         exec {bin} --duration 1 --quiet --json",
        d = dir.s(),
        bin = mntleak_tests::tracer_bin().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("degraded run, cannot trace: syscalls/sys_enter_unlinkat"),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(
        stdout.contains("\"not_traced\":[\"syscalls/sys_enter_unlinkat\"]"),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = Scratch::new("bad");
    let foreign = dir.join("foreign");
    std::fs::write(&foreign, b"this is not a capture at all").unwrap();
    let out = run_tracer(&["replay", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains(foreign.to_str().unwrap()), "{out:?}");

    let out = run_tracer(&["replay", "/nonexistent/capture"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");

    let out = run_tracer(&["--duration", "-3"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run_tracer(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// An attach point left out (`--skip`, as a kernel without it would) makes a degraded run that
/// says what it cannot trace: on stderr at the start, in the summary, in the capture's header,
/// and again when the capture is replayed. Its events are really missing; the others are not.
#[test]
fn a_degraded_run_lists_what_it_cannot_trace_live_and_in_its_capture() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("degraded");
    let cap = dir.join("degraded.mntcap");
    let cap_s = cap.display().to_string();
    let skipped = "syscalls/sys_enter_unlinkat";
    let trace = TraceSession::start(&[
        "--json", "--skip", skipped, "--output", &cap_s, "--comm", "rm", "--comm", "rmdir",
    ])
    .unwrap();
    // rm unlinks with unlinkat (left out); rmdir uses rmdir (still traced).
    sh(&format!(
        "mkdir -p {d}/gone; touch {d}/file; rm {d}/file; rmdir {d}/gone",
        d = dir.s()
    ))
    .unwrap();
    let live = trace.stop().unwrap();
    assert!(live.status.success(), "{live:?}");
    let said = format!("degraded run, cannot trace: {skipped}");
    assert!(live.stderr.contains(&said), "{}", live.stderr);
    let events = live.json();
    let gone = format!("{}/gone", dir.s());
    assert!(
        events
            .iter()
            .any(|e| e["syscall"] == "rmdir" && e.to_string().contains(&gone)),
        "the rmdir is traced: {}",
        live.stdout
    );
    assert!(
        !events.iter().any(|e| e["syscall"] == "unlinkat"),
        "unlinkat was left out: {}",
        live.stdout
    );
    let summary = events.iter().find(|e| e["kind"] == "summary").unwrap();
    assert_eq!(
        summary["not_traced"],
        serde_json::json!([skipped]),
        "{summary}"
    );

    // Offline the capture says so too, without root.
    let replay = run_tracer(&["replay", "--json", "--quiet", &cap_s]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        replay.stderr.contains("degraded run") && replay.stderr.contains(skipped),
        "{replay:?}"
    );
    assert!(
        replay
            .stdout
            .contains(&format!("\"not_traced\":[\"{skipped}\"]")),
        "{replay:?}"
    );

    // A name that is no attach point is one line and exit 2, before anything is attached.
    let out = run_tracer(&["--skip", "syscalls/sys_enter_unlinkt", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("no such attach point"), "{out:?}");
}

#[test]
fn without_root_live_mode_says_so_in_one_line() {
    if !require_root() {
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(mntleak_tests::tracer_bin())
        .args(["--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("root"), "{stderr}");
}

#[test]
fn private_copy_outliving_the_umount_is_a_leak_named_by_its_unshare() {
    if !require_root() {
        return;
    }
    let dir = Scratch::new("leak");
    let d = dir.s();
    sh(&format!(
        "mkdir -p {d}/src {d}/merged && mount -t tmpfs leak-src {d}/merged"
    ))
    .unwrap();
    let trace = TraceSession::start(&["--json", "--quiet"]).unwrap();
    let _service = Background::spawn("exec unshare -m --propagation private sleep 60").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    sh(&format!("umount {d}/merged")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = trace.stop().unwrap();
    let leak = out
        .findings()
        .into_iter()
        .find(|f| f["kind"] == "leak" && f.to_string().contains(&format!("{d}/merged")))
        .unwrap_or_else(|| panic!("no leak for {d}/merged in {}", out.stdout));
    assert_eq!(leak["leaked_by"]["syscall"], "unshare", "{leak}");
    assert_eq!(out.status.code(), Some(1), "a leak sets exit status 1");
}

/// The kernel side resolves what runc-style path arguments name, at syscall entry: an O_PATH fd
/// through `/proc/self/fd/N` and `/proc/thread-self/fd/N`, relative paths through the cwd, an
/// empty path through its dirfd. The decoded events carry the real absolute path and the unique
/// id of the mount it is on, while the arguments stay as the caller wrote them.
#[test]
fn kernel_resolves_fd_and_cwd_paths_of_mount_calls() {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;

    if !require_root() {
        return;
    }
    let dir = Scratch::new("resolve");
    let d = dir.s();
    for sub in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let c = |s: &str| CString::new(s).unwrap();
    let (root, a, d_c) = (c("/"), c(&format!("{d}/a")), c(&d));
    let (tmpfs, src_fd, src_rel) = (c("tmpfs"), c("res-fd"), c("res-rel"));
    let (via_fd, via_thread) = (c("/proc/self/fd/37"), c("/proc/thread-self/fd/37"));
    let (rel_b, rel_c, dot, empty) = (c("b"), c("c"), c("."), c(""));
    let trace = TraceSession::start(&["--json"]).unwrap();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30");
    // SAFETY: only async-signal-safe system calls on prepared C strings, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_long| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            let (null, no_data) = (std::ptr::null(), std::ptr::null());
            check(libc::unshare(libc::CLONE_NEWNS) as _)?;
            check(libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                no_data,
            ) as _)?;
            let fd = check(libc::open(a.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) as _)?;
            check(libc::dup2(fd as i32, 37) as _)?;
            check(libc::chdir(d_c.as_ptr()) as _)?;
            check(libc::mount(src_fd.as_ptr(), via_fd.as_ptr(), tmpfs.as_ptr(), 0, no_data) as _)?;
            check(libc::mount(src_rel.as_ptr(), rel_b.as_ptr(), tmpfs.as_ptr(), 0, no_data) as _)?;
            check(libc::mount(
                rel_b.as_ptr(),
                via_thread.as_ptr(),
                null,
                libc::MS_BIND,
                no_data,
            ) as _)?;
            let tree = check(libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                rel_c.as_ptr(),
                1 | libc::O_CLOEXEC, // OPEN_TREE_CLONE
            ))?;
            check(libc::syscall(
                libc::SYS_move_mount,
                tree,
                empty.as_ptr(),
                37,
                empty.as_ptr(),
                0x4 | 0x40, // MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
            ))?;
            check(libc::umount2(rel_b.as_ptr(), libc::MNT_DETACH) as _)?;
            check(libc::chdir(a.as_ptr()) as _)?;
            check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH) as _)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("the mounting child");
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the child did not exec"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The unique id of the mount `d` is on, in the child's namespace.
    let mnt_id = {
        let p = c(&format!("/proc/{pid}/root{d}"));
        // SAFETY: statx fills the zeroed struct; the path is a valid C string.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, 0x4000, &mut stx) };
        assert_eq!(r, 0, "statx: {}", std::io::Error::last_os_error());
        assert_ne!(stx.stx_mask & 0x4000, 0, "no STATX_MNT_ID_UNIQUE here");
        stx.stx_mnt_id
    };
    let out = trace.stop().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let events: Vec<serde_json::Value> = out
        .json()
        .into_iter()
        .filter(|e| e["kind"] == "event" && e["pid"].as_u64() == Some(u64::from(pid)))
        .filter(|e| e["syscall"] != "exec" && e["syscall"] != "exit")
        .collect();
    let names: Vec<String> = events.iter().map(|e| e["syscall"].to_string()).collect();
    assert_eq!(
        names,
        [
            "unshare",
            "mount",
            "mount",
            "mount",
            "mount",
            "open_tree",
            "move_mount",
            "umount2",
            "umount2"
        ]
        .map(|s| format!("\"{s}\"")),
        "{events:#?}"
    );
    let res = |i: usize, arg: &str| -> (String, u64) {
        let r = &events[i]["resolved"][arg];
        assert!(
            r.is_object(),
            "{arg} of event {i} not resolved: {:#}",
            events[i]
        );
        (
            r["path"].as_str().unwrap().to_owned(),
            r["mnt_id"].as_u64().unwrap(),
        )
    };
    let at = |sub: &str| (format!("{d}/{sub}"), mnt_id);
    // mount(2) onto the O_PATH fd: the argument is kept, the path is the directory.
    assert_eq!(events[2]["target"], "/proc/self/fd/37");
    assert_eq!(res(2, "target"), at("a"));
    assert!(events[2]["resolved"]["source"].is_null(), "{:#}", events[2]);
    // Relative to the cwd.
    assert_eq!(events[3]["target"], "b");
    assert_eq!(res(3, "target"), at("b"));
    // A bind: relative source, /proc/thread-self target.
    assert_eq!(res(4, "source"), at("b"));
    assert_eq!(res(4, "target"), at("a"));
    assert_eq!(res(5, "path"), at("c"));
    // move_mount of a detached tree onto the fd: the tree has no path; the fd does.
    assert_eq!(res(6, "to_path"), at("a"));
    assert!(
        events[6]["resolved"]["from_path"].is_null(),
        "{:#}",
        events[6]
    );
    assert_eq!(res(7, "target"), at("b"));
    // umount2(".") inside the stack at `a`: the path of the cwd, on the top mount there.
    let (path, top) = res(8, "target");
    assert_eq!(path, format!("{d}/a"));
    assert_ne!(top, mnt_id, "the cwd is on the mount stacked at a");
}

#[test]
fn a_flood_of_dropped_returns_is_warned_of_twice_not_every_drain() {
    if !require_root() {
        return;
    }
    // One page of ring overflows at once under a tight loop of failing umount2 calls; the tracer
    // drains every 100 ms, so 1.5 s of flood used to print fifteen warnings.
    let trace = TraceSession::start(&["--quiet", "--ring-size", "4096"]).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        for _ in 0..1000 {
            // SAFETY: umount2 of a path that does not exist changes nothing.
            unsafe { libc::umount2(c"/mntleak-no-such-path".as_ptr(), 0) };
        }
    }
    let out = trace.stop().unwrap();
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("the ring buffer was full for"))
        .collect();
    // The first as it happens, the rest once at the end.
    assert!(
        (1..=2).contains(&warnings.len()),
        "{} warnings: {}",
        warnings.len(),
        out.stderr
    );
    assert!(out.status.success(), "{}", out.stderr);
}
