//! The real eBPF programs, loaded in-process, watching real syscalls of child processes.
//! Root and BPF needed: without them these tests skip, unless MNTLEAK_REQUIRE_BPF=1 (CI), where
//! they fail. Run with `--test-threads=1`.

use std::{ffi::CString, os::unix::fs::MetadataExt};

use mntleak::{
    live::{LiveOptions, Tracer},
    model::{Action, Event, KStr, MntNs, Record, UnlinkCall},
    uapi,
};

fn tracer() -> Option<Tracer> {
    let required = std::env::var("MNTLEAK_REQUIRE_BPF").is_ok_and(|v| v == "1");
    match Tracer::attach(&LiveOptions::default()) {
        Ok(t) => {
            assert!(
                t.missing().is_empty(),
                "programs not attached: {:?}",
                t.missing()
            );
            Some(t)
        }
        Err(e) if !required => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("MNTLEAK_REQUIRE_BPF=1 but the tracer cannot attach: {e}"),
    }
}

/// Every event the ring holds from `pid`. Called after the child was reaped, when all of its
/// events are already in the ring (the programs write synchronously).
fn events_of(t: &mut Tracer, pid: u32) -> Vec<Event> {
    let mut out = Vec::new();
    t.drain(&mut out, usize::MAX);
    events_in(&out, pid)
}

/// The events of `pid` among `recs`.
fn events_in(recs: &[Record], pid: u32) -> Vec<Event> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Event(e) if e.task.pid == pid => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A unique scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);
impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mntleak-live-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&p);
        std::fs::create_dir(&p).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let c = CString::new(self.path()).unwrap();
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// Forks; the child runs `f` (no allocation in there: we may be multi-threaded) and exits with its
/// result.
fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        unsafe { libc::_exit(code) };
    }
    pid
}

fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
    libc::WEXITSTATUS(status)
}

/// The mount namespace of `pid` as /proc and the nsfs ioctl report it.
fn mnt_ns_of(pid: &str) -> MntNs {
    let path = format!("/proc/{pid}/ns/mnt");
    let f = std::fs::File::open(&path).unwrap();
    let inum = f.metadata().unwrap().ino() as u32;
    let mut id = 0u64;
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            uapi::NS_GET_MNTNS_ID as _,
            &mut id,
        )
    };
    assert_eq!(r, 0, "NS_GET_MNTNS_ID on {path}");
    MntNs { id, inum }
}

#[test]
fn unshare_then_mount_tmpfs_in_the_new_namespace() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("tmpfs");
    let target = CString::new(dir.path()).unwrap();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let child = fork_child(|| unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 10;
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return 11;
        }
        if libc::mount(
            c"mntleak-test".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return 12;
        }
        // Stay alive (and in the namespace) until the parent has looked at it.
        libc::write(ready_w, b"r".as_ptr().cast(), 1);
        let mut b = 0u8;
        libc::read(go_r, (&raw mut b).cast(), 1);
        0
    });
    let mut b = 0u8;
    assert_eq!(
        unsafe { libc::read(ready_r, (&raw mut b).cast(), 1) },
        1,
        "child failed early"
    );
    let child_ns = mnt_ns_of(&child.to_string());
    let host_ns = mnt_ns_of("self");
    unsafe { libc::write(go_w, b"g".as_ptr().cast(), 1) };
    assert_eq!(reap(child), 0);
    for fd in [ready_r, ready_w, go_r, go_w] {
        unsafe { libc::close(fd) };
    }
    assert_ne!(child_ns, host_ns);

    let evs = events_of(&mut t, child as u32);
    let unshare = evs
        .iter()
        .find(|e| matches!(e.action, Action::Unshare { .. }))
        .unwrap_or_else(|| panic!("no unshare in {evs:#?}"));
    assert_eq!(
        unshare.action,
        Action::Unshare {
            flags: uapi::CLONE_NEWNS
        }
    );
    assert_eq!(unshare.ret, Some(0));
    assert_eq!(
        unshare.task.mnt_ns, host_ns,
        "unshare is entered in the old namespace"
    );
    assert_eq!(unshare.new_mnt_ns, Some(child_ns));
    assert_eq!(unshare.task.ppid, std::process::id());

    let mounts: Vec<&Event> = evs
        .iter()
        .filter(|e| matches!(e.action, Action::Mount { .. }))
        .collect();
    assert_eq!(mounts.len(), 2, "{mounts:#?}");
    assert_eq!(
        mounts[0].action,
        Action::Mount {
            source: KStr::new("none"),
            target: KStr::new("/"),
            fstype: KStr::default(),
            flags: uapi::MS_REC | uapi::MS_PRIVATE,
        }
    );
    assert_eq!(
        mounts[1].action,
        Action::Mount {
            source: KStr::new("mntleak-test"),
            target: KStr::new(dir.path()),
            fstype: KStr::new("tmpfs"),
            flags: 0,
        }
    );
    for m in &mounts {
        assert_eq!(m.ret, Some(0));
        assert_eq!(m.task.mnt_ns, child_ns);
        assert_eq!(m.task.pid, child as u32);
        assert_eq!(m.task.tid, child as u32);
    }
    // The exit event closes the child's history, still in its namespace.
    let exit = evs.last().unwrap();
    assert_eq!(exit.action, Action::Exit);
    assert_eq!(exit.task.mnt_ns, child_ns);
}

#[test]
fn failing_umount2_reports_einval_and_long_paths_are_truncated() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("notmount");
    let target = CString::new(dir.path()).unwrap();
    let long = format!("/tmp/{}", "x".repeat(400));
    let long_c = CString::new(long.clone()).unwrap();
    let child = fork_child(|| unsafe {
        let a = libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        let b = libc::umount2(long_c.as_ptr(), 0);
        if a == -1 && b == -1 { 0 } else { 1 }
    });
    assert_eq!(reap(child), 0);
    let evs = events_of(&mut t, child as u32);
    let umounts: Vec<&Event> = evs
        .iter()
        .filter(|e| matches!(e.action, Action::Umount { .. }))
        .collect();
    assert_eq!(umounts.len(), 2, "{evs:#?}");
    assert_eq!(
        umounts[0].action,
        Action::Umount {
            target: KStr::new(dir.path()),
            flags: uapi::MNT_DETACH
        }
    );
    assert_eq!(umounts[0].ret, Some(-(libc::EINVAL as i64)));
    let Action::Umount { target, flags } = &umounts[1].action else {
        unreachable!()
    };
    assert_eq!(*flags, 0);
    assert!(
        target.truncated,
        "a 405-byte path is cut to the 256-byte buffer"
    );
    assert_eq!(target.text, long[..255]);
    assert_eq!(umounts[1].ret, Some(-(libc::ENAMETOOLONG as i64)));
    assert_eq!(umounts[0].task.mnt_ns, mnt_ns_of("self"));
}

/// A string argument in a page the caller has not touched is not readable at the syscall's
/// entry (BPF cannot fault it in): that syscall waits in the kernel for its return, where the
/// kernel's own copy has brought the page in, and is sent whole from there, its relative path
/// resolved then. Each string gets its own mapping so that the first fault does not map the
/// other page too (fault-around stays within a mapping).
#[test]
fn strings_in_pages_not_yet_touched_are_read_at_the_return() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("untouched");
    let notmount = format!("{}/notmount", dir.path());
    std::fs::create_dir(&notmount).unwrap();
    let page = 4096;
    let mut bytes = vec![0u8; 2 * page];
    bytes[..notmount.len()].copy_from_slice(notmount.as_bytes());
    bytes[page..page + 8].copy_from_slice(b"notmount");
    let file = format!("{}/strings", dir.path());
    std::fs::write(&file, &bytes).unwrap();
    let f = std::fs::File::open(&file).unwrap();
    let map = |offset: usize| unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            offset as libc::off_t,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p as *const libc::c_char
    };
    let (absolute, relative) = (map(0), map(page));
    let cwd = CString::new(dir.path()).unwrap();
    let child = fork_child(|| unsafe {
        libc::chdir(cwd.as_ptr());
        let a = libc::umount2(absolute, 0);
        let b = libc::umount2(relative, 0);
        // And a string read at entry as usual after them.
        let c = libc::umount2(c"/mntleak-no-such-path".as_ptr(), 0);
        if a == -1 && b == -1 && c == -1 { 0 } else { 1 }
    });
    assert_eq!(reap(child), 0);
    unsafe {
        libc::munmap(absolute as *mut _, page);
        libc::munmap(relative as *mut _, page);
    }
    let evs = events_of(&mut t, child as u32);
    let umounts: Vec<&Event> = evs
        .iter()
        .filter(|e| matches!(e.action, Action::Umount { .. }))
        .collect();
    let targets: Vec<(&str, Option<&str>, Option<i64>)> = umounts
        .iter()
        .map(|e| {
            let Action::Umount { target, .. } = &e.action else {
                unreachable!()
            };
            (target.as_str(), e.resolved_path(0), e.ret)
        })
        .collect();
    let einval = Some(-(libc::EINVAL as i64));
    assert_eq!(
        targets,
        [
            (notmount.as_str(), None, einval),
            ("notmount", Some(notmount.as_str()), einval),
            ("/mntleak-no-such-path", None, Some(-(libc::ENOENT as i64))),
        ],
        "{evs:#?}"
    );
}

/// A call still running when the run ends is reported, without a return value: here an unlinkat
/// on a FUSE mount whose daemon never answers (requests wait for its INIT reply), the way calls
/// hang on a dead FUSE or NFS server.
#[test]
fn a_call_still_running_at_the_end_is_reported_without_a_return() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("fuse");
    let fuse = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(
        fuse >= 0,
        "open /dev/fuse: {}",
        std::io::Error::last_os_error()
    );
    let target = CString::new(dir.path()).unwrap();
    let opts = CString::new(format!("fd={fuse},rootmode=40000,user_id=0,group_id=0")).unwrap();
    let r = unsafe {
        libc::mount(
            c"mntleak-test".as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount fuse: {}", std::io::Error::last_os_error());
    let file = CString::new(format!("{}/f", dir.path())).unwrap();
    let child = fork_child(|| unsafe { libc::unlinkat(libc::AT_FDCWD, file.as_ptr(), 0) });
    // Until it sleeps in FUSE: its entry is in the ring by then.
    let wchan = format!("/proc/{child}/wchan");
    let waiting = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("fuse"))
    });
    let mut during = Vec::new();
    t.drain(&mut during, usize::MAX);
    let mut at_end = Vec::new();
    t.release_in_flight(&mut at_end);
    // Closing the device aborts the connection; the kill ends the wait either way.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::close(fuse);
    }
    assert!(
        waiting,
        "the child never slept in FUSE: {:?}",
        std::fs::read_to_string(&wchan)
    );
    assert!(events_in(&during, child as u32).is_empty(), "{during:#?}");
    let ended = events_in(&at_end, child as u32);
    assert_eq!(ended.len(), 1, "{at_end:#?}");
    assert_eq!(
        ended[0].action,
        Action::Unlink {
            dirfd: libc::AT_FDCWD,
            path: KStr::new(file.to_str().unwrap()),
            rmdir: false,
            call: UnlinkCall::Unlinkat,
        }
    );
    assert_eq!(ended[0].ret, None);
}

#[test]
fn rmdir_of_relative_path_records_the_directory() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("rmdir");
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    let parent = CString::new(dir.path()).unwrap();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let child = fork_child(|| unsafe {
        if libc::chdir(parent.as_ptr()) != 0 {
            return 10;
        }
        let r = libc::rmdir(c"sub".as_ptr());
        // Stay in the directory until the tracer has read our cwd.
        libc::write(ready_w, b"r".as_ptr().cast(), 1);
        let mut b = 0u8;
        libc::read(go_r, (&raw mut b).cast(), 1);
        if r == 0 { 0 } else { 11 }
    });
    let mut b = 0u8;
    assert_eq!(unsafe { libc::read(ready_r, (&raw mut b).cast(), 1) }, 1);
    let evs = events_of(&mut t, child as u32);
    unsafe { libc::write(go_w, b"g".as_ptr().cast(), 1) };
    assert_eq!(reap(child), 0);
    for fd in [ready_r, ready_w, go_r, go_w] {
        unsafe { libc::close(fd) };
    }
    let rmdir = evs
        .iter()
        .find(|e| matches!(e.action, Action::Unlink { .. }))
        .unwrap_or_else(|| panic!("no rmdir in {evs:#?}"));
    assert_eq!(
        rmdir.action,
        Action::Unlink {
            dirfd: uapi::AT_FDCWD,
            path: KStr::new("sub"),
            rmdir: true,
            call: UnlinkCall::Rmdir
        }
    );
    assert_eq!(rmdir.ret, Some(0));
    assert_eq!(rmdir.dir, Some(KStr::new(dir.path())));
}

#[test]
fn fork_exec_exit_of_a_child_process() {
    let Some(mut t) = tracer() else { return };
    // sh forks for the first command (a second follows), so the fork is done by sh, not by us:
    // the tracer ignores its own process.
    let sh = std::process::Command::new("/bin/sh")
        .args(["-c", "/bin/true & wait; echo $!"])
        .output()
        .unwrap();
    assert!(sh.status.success());
    let true_pid: u32 = String::from_utf8_lossy(&sh.stdout).trim().parse().unwrap();
    let mut all = Vec::new();
    t.drain(&mut all, usize::MAX);
    let evs: Vec<Event> = all
        .into_iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    let fork = evs
        .iter()
        .find(|e| e.action == Action::Fork { child: true_pid })
        .unwrap_or_else(|| panic!("no fork of {true_pid}"));
    let sh_pid = fork.task.pid;
    assert_eq!(fork.task.ppid, std::process::id());
    assert_eq!(fork.new_mnt_ns, Some(fork.task.mnt_ns));
    assert_eq!(fork.new_mnt_ns, Some(mnt_ns_of("self")));
    let mine: Vec<&Action> = evs
        .iter()
        .filter(|e| e.task.pid == true_pid)
        .map(|e| &e.action)
        .collect();
    assert_eq!(
        mine,
        [
            &Action::Exec {
                filename: KStr::new("/bin/true")
            },
            &Action::Exit
        ],
        "events of {true_pid}"
    );
    let child_exec = evs.iter().find(|e| e.task.pid == true_pid).unwrap();
    assert_eq!(child_exec.task.ppid, sh_pid);
    assert_eq!(child_exec.task.comm.as_str(), "true");
    // sh itself exits as a process; its threads-only exits are not reported.
    assert_eq!(
        evs.iter()
            .filter(|e| e.task.pid == sh_pid && e.action == Action::Exit)
            .count(),
        1
    );
}

#[test]
fn a_full_ring_buffer_counts_losses() {
    // A syscall is two records: its entry, the event up to its last string (152 bytes before the
    // strings + the 21-byte path, 8-aligned, + the ring's 8-byte header = 184), and its return
    // (40 + 8). One page holds 17 syscalls; at most 22 entries. Nobody drains it meanwhile.
    let required = std::env::var("MNTLEAK_REQUIRE_BPF").is_ok_and(|v| v == "1");
    let mut t = match Tracer::attach(&LiveOptions {
        ring_bytes: 4096,
        ..Default::default()
    }) {
        Ok(t) => t,
        Err(e) if !required => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    let _ = t.take_losses();
    let child = fork_child(|| unsafe {
        for _ in 0..200 {
            libc::umount2(c"/mntleak-no-such-path".as_ptr(), 0);
        }
        0
    });
    assert_eq!(reap(child), 0);
    let Some(Record::Lost {
        count,
        first_ts_ns,
        last_ts_ns,
    }) = t.take_losses()
    else {
        panic!("no loss reported");
    };
    assert!(count >= 200 - 22, "lost {count}");
    assert!(first_ts_ns <= last_ts_ns && first_ts_ns > 0);
    // Reported once: the next call only has what was lost since.
    let evs = events_of(&mut t, child as u32);
    assert!(evs.len() <= 22, "{} events", evs.len());
    assert_eq!(
        Tracer::attach(&LiveOptions {
            ring_bytes: 5000,
            ..Default::default()
        })
        .err()
        .map(|e| e.to_string()),
        Some("ring buffer size 5000 is not a power of two of at least 4096 bytes".into())
    );
}

/// `struct mount_attr` (include/uapi/linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Without the fork program (left out here, as on a kernel without tp_btf), clone's own exit
/// programs send its return: a clone that makes a mount namespace still names its child, and
/// the run lists what it lacks. A plain fork is still not sent, and its return completes nothing.
#[test]
fn without_the_fork_program_a_clone_gets_its_child_from_its_own_return() {
    let required = std::env::var("MNTLEAK_REQUIRE_BPF").is_ok_and(|v| v == "1");
    let fork_program = "tp_btf/sched_process_fork".to_string();
    let mut t = match Tracer::attach(&LiveOptions {
        skip: vec![fork_program.clone()],
        ..Default::default()
    }) {
        Ok(t) => t,
        Err(e) if !required => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(t.missing(), [fork_program]);
    let mut cargs: libc::clone_args = unsafe { std::mem::zeroed() };
    cargs.flags = uapi::CLONE_NEWNS;
    cargs.exit_signal = libc::SIGCHLD as u64;
    let child = fork_child(|| unsafe {
        use libc::{SYS_clone, SYS_clone3, syscall};
        let wait = |pid: libc::c_long| {
            pid > 0 && libc::waitpid(pid as i32, std::ptr::null_mut(), 0) == pid as i32
        };
        let pid = syscall(
            SYS_clone3,
            &raw const cargs,
            std::mem::size_of::<libc::clone_args>(),
        );
        if pid == 0 {
            syscall(libc::SYS_exit, 0);
        }
        if !wait(pid) {
            return 1;
        }
        // clone(flags, stack = NULL: the child runs on a copy of this stack, as fork's does).
        let flags = (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong;
        let pid = syscall(SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
        if pid == 0 {
            syscall(libc::SYS_exit, 0);
        }
        if !wait(pid) {
            return 2;
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        if !wait(pid as libc::c_long) {
            return 3;
        }
        0
    });
    assert_eq!(reap(child), 0);
    let evs = events_of(&mut t, child as u32);
    let clones: Vec<&Event> = evs
        .iter()
        .filter(|e| matches!(e.action, Action::Clone { .. }))
        .collect();
    assert_eq!(clones.len(), 2, "clone3 and clone, not the fork: {evs:#?}");
    for c in &clones {
        let Action::Clone { flags, .. } = c.action else {
            unreachable!()
        };
        assert_eq!(flags & uapi::CLONE_NEWNS, uapi::CLONE_NEWNS, "{c:?}");
        let child = c.ret.expect("the clone's return, from its exit program");
        assert!(child > 0, "the parent's return names the child: {c:?}");
    }
    assert!(
        !evs.iter().any(|e| matches!(e.action, Action::Fork { .. })),
        "no fork events without the fork program: {evs:#?}"
    );
}

#[test]
fn new_mount_api_setns_and_clone3_arguments() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("mountapi");
    let target = CString::new(dir.path()).unwrap();
    let host_ns = mnt_ns_of("self");
    let host_fd = std::fs::File::open("/proc/self/ns/mnt").unwrap();
    let host_fd = std::os::fd::AsRawFd::as_raw_fd(&host_fd);
    let attr = MountAttr {
        attr_set: uapi::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: uapi::MS_SHARED,
        userns_fd: 0,
    };
    let mut cargs: libc::clone_args = unsafe { std::mem::zeroed() };
    cargs.flags = uapi::CLONE_NEWNS;
    cargs.exit_signal = libc::SIGCHLD as u64;
    // Everything below happens in a private namespace of the child, so the host sees nothing.
    let child = fork_child(|| unsafe {
        use libc::{SYS_clone3, SYS_fsconfig, SYS_fsmount, SYS_fsopen, syscall};
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 10;
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none.cast(),
        ) != 0
        {
            return 11;
        }
        let fs = syscall(SYS_fsopen, c"tmpfs".as_ptr(), 1);
        if fs < 0 {
            return 12;
        }
        if syscall(SYS_fsconfig, fs, 1, c"size".as_ptr(), c"1m".as_ptr(), 0) != 0
            || syscall(SYS_fsconfig, fs, 6, none, none, 0) != 0
        {
            return 13;
        }
        let mnt = syscall(SYS_fsmount, fs, 1, 4);
        if mnt < 0 {
            return 14;
        }
        if syscall(
            libc::SYS_move_mount,
            mnt,
            c"".as_ptr(),
            -100,
            target.as_ptr(),
            4,
        ) != 0
        {
            return 15;
        }
        if syscall(
            libc::SYS_mount_setattr,
            -100,
            target.as_ptr(),
            0,
            &raw const attr,
            32,
        ) != 0
        {
            return 16;
        }
        if syscall(
            libc::SYS_open_tree,
            -100,
            target.as_ptr(),
            1 | libc::O_CLOEXEC,
        ) < 0
        {
            return 17;
        }
        if libc::setns(host_fd, libc::CLONE_NEWNS) != 0 {
            return 18;
        }
        let pid = syscall(
            SYS_clone3,
            &raw const cargs,
            std::mem::size_of::<libc::clone_args>(),
        );
        if pid == 0 {
            syscall(libc::SYS_exit, 0);
        }
        if pid < 0 || libc::waitpid(pid as i32, std::ptr::null_mut(), 0) != pid as i32 {
            return 19;
        }
        0
    });
    assert_eq!(reap(child), 0);
    let evs = events_of(&mut t, child as u32);
    let find =
        |name: &str| -> Vec<&Event> { evs.iter().filter(|e| e.action.name() == name).collect() };
    let ret = |e: &Event| e.ret.expect("syscalls carry their return value");

    let private_ns = find("unshare")[0].new_mnt_ns.unwrap();
    let fsopen = find("fsopen")[0];
    assert_eq!(
        fsopen.action,
        Action::Fsopen {
            fstype: KStr::new("tmpfs"),
            flags: 1
        }
    );
    let fs = ret(fsopen) as i32;
    assert!(fs >= 0);
    let fsconfig = find("fsconfig");
    assert_eq!(
        fsconfig[0].action,
        Action::Fsconfig {
            fd: fs,
            cmd: uapi::FSCONFIG_SET_STRING,
            key: KStr::new("size"),
            value: KStr::new("1m")
        }
    );
    assert_eq!(
        fsconfig[1].action,
        Action::Fsconfig {
            fd: fs,
            cmd: uapi::FSCONFIG_CMD_CREATE,
            key: KStr::default(),
            value: KStr::default()
        }
    );
    let fsmount = find("fsmount")[0];
    assert_eq!(
        fsmount.action,
        Action::Fsmount {
            fd: fs,
            flags: 1,
            attr_flags: 4
        }
    );
    let mnt = ret(fsmount) as i32;
    assert_eq!(
        find("move_mount")[0].action,
        Action::MoveMount {
            from_dirfd: mnt,
            from_path: KStr::default(),
            to_dirfd: uapi::AT_FDCWD,
            to_path: KStr::new(dir.path()),
            flags: uapi::MOVE_MOUNT_F_EMPTY_PATH
        }
    );
    assert_eq!(
        find("mount_setattr")[0].action,
        Action::MountSetattr {
            dirfd: uapi::AT_FDCWD,
            path: KStr::new(dir.path()),
            flags: 0,
            attr_set: uapi::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: uapi::MS_SHARED
        }
    );
    assert_eq!(
        find("open_tree")[0].action,
        Action::OpenTree {
            dirfd: uapi::AT_FDCWD,
            path: KStr::new(dir.path()),
            flags: uapi::OPEN_TREE_CLONE | uapi::OPEN_TREE_CLOEXEC
        }
    );
    for e in [
        "fsopen",
        "fsmount",
        "move_mount",
        "mount_setattr",
        "open_tree",
    ] {
        let e = find(e)[0];
        assert!(ret(e) >= 0, "{e:?}");
        assert_eq!(e.task.mnt_ns, private_ns, "{e:?}");
    }

    let setns = find("setns")[0];
    assert_eq!(
        setns.action,
        Action::Setns {
            fd: host_fd,
            nstype: uapi::CLONE_NEWNS
        }
    );
    assert_eq!(ret(setns), 0);
    assert_eq!(setns.task.mnt_ns, private_ns);
    assert_eq!(setns.new_mnt_ns, Some(host_ns));

    let clone3 = find("clone3")[0];
    assert_eq!(
        clone3.action,
        Action::Clone {
            flags: uapi::CLONE_NEWNS,
            clone3: true
        }
    );
    let grandchild = ret(clone3);
    assert!(grandchild > 0);
    assert_eq!(clone3.task.mnt_ns, host_ns);
    let fork = evs
        .iter()
        .find(|e| {
            e.action
                == Action::Fork {
                    child: grandchild as u32,
                }
        })
        .expect("fork event of the clone3 child");
    let child_ns = fork.new_mnt_ns.expect("the child's namespaces");
    assert!(child_ns != host_ns && child_ns != private_ns && child_ns.id != 0);
    // The fork program sends the clone once the child exists (clone's exit is not traced): it
    // carries the child's namespace too, and comes before the fork event, so that the copy is
    // credited to the clone.
    assert_eq!(clone3.new_mnt_ns, Some(child_ns));
    let at = |e: &Event| evs.iter().position(|x| std::ptr::eq(x, e)).unwrap();
    assert!(at(clone3) < at(fork));
}

#[test]
fn pivot_root_chroot_and_unlinkat_with_a_dirfd() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("pivot");
    let root = CString::new(dir.path()).unwrap();
    let old = CString::new(format!("{}/old", dir.path())).unwrap();
    let parent = CString::new(std::env::temp_dir().to_str().unwrap()).unwrap();
    let name = CString::new(dir.0.file_name().unwrap().to_str().unwrap()).unwrap();
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let child = fork_child(|| unsafe {
        // A failing rmdir through a dirfd: "<scratch>" is not empty, so ENOTEMPTY.
        let dfd = libc::open(parent.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        if dfd < 0 || libc::unlinkat(dfd, name.as_ptr(), libc::AT_REMOVEDIR) == 0 {
            return 9;
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 10;
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none.cast(),
        ) != 0
            || libc::mount(
                c"mntleak-pivot".as_ptr(),
                root.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                none.cast(),
            ) != 0
            || libc::mkdir(old.as_ptr(), 0o700) != 0
        {
            return 11;
        }
        if libc::syscall(libc::SYS_pivot_root, root.as_ptr(), old.as_ptr()) != 0 {
            return 12;
        }
        if libc::chroot(c"/old".as_ptr()) != 0 {
            return 13;
        }
        // Keep the dirfd open until the tracer has resolved it.
        libc::write(ready_w, b"r".as_ptr().cast(), 1);
        let mut b = 0u8;
        libc::read(go_r, (&raw mut b).cast(), 1);
        0
    });
    let mut b = 0u8;
    assert_eq!(
        unsafe { libc::read(ready_r, (&raw mut b).cast(), 1) },
        1,
        "child failed early"
    );
    let evs = events_of(&mut t, child as u32);
    unsafe { libc::write(go_w, b"g".as_ptr().cast(), 1) };
    assert_eq!(reap(child), 0);
    for fd in [ready_r, ready_w, go_r, go_w] {
        unsafe { libc::close(fd) };
    }
    let unlinkat = evs
        .iter()
        .find(|e| e.action.name() == "unlinkat")
        .unwrap_or_else(|| panic!("no unlinkat in {evs:#?}"));
    let Action::Unlink {
        dirfd,
        path,
        rmdir: true,
        call: UnlinkCall::Unlinkat,
    } = &unlinkat.action
    else {
        panic!("{unlinkat:?}")
    };
    assert!(*dirfd >= 0);
    assert_eq!(path.as_str(), name.to_str().unwrap());
    assert_eq!(unlinkat.ret, Some(-(libc::ENOTEMPTY as i64)));
    assert_eq!(
        unlinkat.dir.as_ref().map(KStr::as_str),
        parent.to_str().ok()
    );

    let pivot = evs
        .iter()
        .find(|e| e.action.name() == "pivot_root")
        .expect("pivot_root");
    assert_eq!(
        pivot.action,
        Action::PivotRoot {
            new_root: KStr::new(dir.path()),
            put_old: KStr::new(format!("{}/old", dir.path()))
        }
    );
    assert_eq!(pivot.ret, Some(0));
    let chroot = evs
        .iter()
        .find(|e| e.action.name() == "chroot")
        .expect("chroot");
    assert_eq!(
        chroot.action,
        Action::Chroot {
            path: KStr::new("/old")
        }
    );
    assert_eq!(chroot.ret, Some(0));
}

#[test]
fn attach_without_root_is_one_clear_error() {
    // Only meaningful where the tracer can attach at all.
    let Some(t) = tracer() else { return };
    drop(t);
    // attach checks the uid before it allocates anything, so this is safe after fork.
    let child = fork_child(|| unsafe {
        if libc::setuid(65534) != 0 {
            return 10;
        }
        let ok = matches!(
            Tracer::attach(&LiveOptions::default()),
            Err(mntleak::live::LiveError::NotRoot)
        );
        if ok { 0 } else { 11 }
    });
    assert_eq!(reap(child), 0);
    assert_eq!(
        mntleak::live::LiveError::NotRoot.to_string(),
        "live tracing needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs"
    );
}

/// Every event is built in its CPU's scratch slot, reused from one event to the next: nothing of
/// an unshare (the new namespace) or of a bind mount (three strings, two resolved relative paths)
/// may show in the umount2 that follows it.
#[test]
fn each_event_carries_only_its_own_call() {
    let Some(mut t) = tracer() else { return };
    let dir = Scratch::new("reuse");
    let cwd = CString::new(dir.path()).unwrap();
    std::fs::create_dir(dir.0.join("not-a-mount")).unwrap();
    let abs = CString::new(format!("{}/not-a-mount", dir.path())).unwrap();
    let child = fork_child(|| unsafe {
        if libc::chdir(cwd.as_ptr()) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 10;
        }
        let m = libc::mount(
            c"src".as_ptr(),
            c"no-such-dir".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        );
        let u = libc::umount2(abs.as_ptr(), 0);
        if m == -1 && u == -1 { 0 } else { 11 }
    });
    assert_eq!(reap(child), 0);
    let evs = events_of(&mut t, child as u32);
    let find = |pred: fn(&Action) -> bool| {
        evs.iter()
            .find(|e| pred(&e.action))
            .unwrap_or_else(|| panic!("missing in {evs:#?}"))
    };
    let unshare = find(|a| matches!(a, Action::Unshare { .. }));
    assert!(unshare.new_mnt_ns.is_some(), "{unshare:#?}");
    let mount = find(|a| matches!(a, Action::Mount { .. }));
    assert_eq!(mount.ret, Some(-(libc::ENOENT as i64)));
    assert_eq!(mount.new_mnt_ns, None, "{mount:#?}");
    for (slot, name) in [(0, "src"), (1, "no-such-dir")] {
        let want = format!("{}/{name}", dir.path());
        assert_eq!(mount.resolved_path(slot), Some(want.as_str()), "{mount:#?}");
    }
    let umount = find(|a| matches!(a, Action::Umount { .. }));
    assert_eq!(
        umount.action,
        Action::Umount {
            target: KStr::new(abs.to_str().unwrap()),
            flags: 0
        }
    );
    assert_eq!(umount.ret, Some(-(libc::EINVAL as i64)));
    assert_eq!(umount.new_mnt_ns, None, "{umount:#?}");
    assert!(umount.resolved.iter().all(Option::is_none), "{umount:#?}");
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` or, on hybrid hosts,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> Option<std::path::PathBuf> {
    mntleak::sys::mountapi::read_mountinfo("/proc/self/mountinfo")
        .ok()?
        .into_iter()
        .find(|m| m.fstype.as_str() == "cgroup2")
        .map(|m| std::path::PathBuf::from(m.mountpoint.as_str()))
}

/// The eBPF side reads the caller's cgroup id and comm through BTF offsets (not the helpers):
/// the id must be the inode of the caller's cgroup2 directory, the comm all 15 bytes prctl set.
#[test]
fn events_carry_the_callers_cgroup_id_and_comm() {
    let Some(mut t) = tracer() else { return };
    let Some(root) = cgroup2_root() else {
        eprintln!("skipping: no cgroup2 hierarchy mounted");
        return;
    };
    let dir = root.join(format!("mntleak-live-cg-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let ino = dir.metadata().unwrap().ino();
    let procs = CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let missing = CString::new(format!("/nonexistent-mntleak-{}", std::process::id())).unwrap();
    let child = fork_child(|| unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return 10;
        }
        // "0" moves the writer itself.
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            return 11;
        }
        libc::close(fd);
        if libc::prctl(libc::PR_SET_NAME, c"mntleak-cg-test".as_ptr()) != 0 {
            return 12;
        }
        libc::umount2(missing.as_ptr(), 0); // traced; fails with ENOENT
        0
    });
    let status = reap(child);
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(status, 0, "child failed");
    let evs = events_of(&mut t, child as u32);
    let umount = evs
        .iter()
        .find(|e| matches!(e.action, Action::Umount { .. }))
        .unwrap_or_else(|| panic!("no umount2 in {evs:#?}"));
    assert_eq!(umount.ret, Some(-(libc::ENOENT as i64)));
    assert_eq!(umount.task.cgroup_id, ino, "cgroup id of {}", dir.display());
    assert_eq!(umount.task.comm.as_str(), "mntleak-cg-test");
}
