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
    let replay = run_tracer(&["replay", "--json", &cap_s, "--comm", "unshare"]);
    assert!(replay.status.code() == Some(0), "{replay:?}");
    let unshares = replay
        .json()
        .iter()
        .filter(|v| v["syscall"] == "unshare")
        .count();
    assert!(
        unshares >= 5,
        "only {unshares} unshare events survived: {}",
        replay.stdout
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
