//! `holders` against real namespaces (root): copies held by a process, namespaces pinned only by an
//! nsfs bind mount or an fd, a loop device, a network namespace kept by a foreign bind, and a clean
//! target. Run with `--test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use mntleak::holders::{self, HoldersReport, Pin, Target};
use mntleak::model::MntNs;
use mntleak::sys::nsfs;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Everything a test made, undone on drop (also when an assertion fails).
#[derive(Default)]
struct Scratch {
    children: Vec<Child>,
    mounts: Vec<PathBuf>,
    paths: Vec<PathBuf>,
    loops: Vec<String>,
    netns: Vec<String>,
}

impl Scratch {
    fn dir(&mut self, tag: &str) -> PathBuf {
        let p = PathBuf::from(format!(
            "/tmp/mntleak-holders-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        self.paths.push(p.clone());
        p
    }

    fn mount(&mut self, args: &[&str], target: &Path) {
        let st = Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?} {}", target.display());
        self.mounts.push(target.to_path_buf());
    }

    /// A process in a new private mount namespace (running `sh -c script` that ends in `exec sleep`),
    /// returned once it is inside that namespace and `script` has run.
    fn sleeper(&mut self, script: &str) -> (u32, MntNs) {
        let own = nsfs::mnt_ns_of_pid(std::process::id()).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{script}\nexec sleep 1000"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        wait_for(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        let ns = nsfs::mnt_ns_of_pid(pid).unwrap();
        assert_ne!(ns.id, own.id, "sleeper did not get its own mount namespace");
        (pid, ns)
    }

    fn spawn(&mut self, script: &str) -> u32 {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        wait_for(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        pid
    }

    fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.mounts.iter().rev() {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: plain syscall on a NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
        for n in &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
        for p in self.paths.iter().rev() {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// Wait for a condition the test set up (a child reaching `exec sleep`); not a timing assertion.
fn wait_for(mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("condition not reached in 10 s");
}

fn umount(p: &Path) {
    let st = Command::new("umount").arg(p).status().unwrap();
    assert!(st.success(), "umount {}", p.display());
}

fn holders_of(arg: &str) -> HoldersReport {
    let t = holders::resolve_target(arg, &|_| Ok(None)).unwrap();
    holders::holders_of(Some(&t)).unwrap()
}

fn foreign_in(r: &HoldersReport, ns: MntNs) -> Vec<&holders::Holding> {
    r.foreign().filter(|h| h.ns_id == ns.id).collect()
}

#[test]
fn copy_held_by_sleeping_process() {
    let mut s = Scratch::default();
    let d = s.dir("copy");
    s.mount(&["-t", "tmpfs", "mntleak-copy"], &d);
    let (pid, ns) = s.sleeper("true");
    umount(&d);
    let dstr = d.to_str().unwrap();
    let r = holders_of(dstr);
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    let h = h[0];
    assert_eq!(h.ns_inum, ns.inum);
    assert_eq!(h.mount.fstype, "tmpfs");
    assert_eq!(h.mount.source, "mntleak-copy");
    assert_eq!(h.mount.path, dstr);
    assert_eq!(
        h.holders.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![pid]
    );
    assert_eq!(h.holders[0].comm, "sleep");
    assert!(h.pin.is_empty());
    assert_eq!(h.propagation, "private");
    assert_eq!(h.reached_by_owner_umount, Some(false));
    assert!(
        h.remediation
            .contains(&format!("nsenter -t {pid} -m umount -l {dstr}")),
        "{:?}",
        h.remediation
    );
    assert!(!r.is_clean());
    // The JSON shape the engine's findings share.
    let v = serde_json::to_value(h).unwrap();
    for k in [
        "ns_id",
        "ns_inum",
        "mount",
        "holders",
        "pin",
        "propagation",
        "reached_by_owner_umount",
        "remediation",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["mount"]["path"], dstr);
    // Gone with its last member.
    s.kill(pid);
    // The namespace is freed once its last reference drops; wait for that, bounded.
    wait_for(|| holders_of(dstr).is_clean());
}

#[test]
fn namespace_pinned_only_by_nsfs_bind_mount() {
    let mut s = Scratch::default();
    let d = s.dir("nsfs");
    s.mount(&["-t", "tmpfs", "mntleak-nsfs"], &d);
    let (pid, ns) = s.sleeper("true");
    let pin = s.dir("pinfile");
    std::fs::remove_dir(&pin).unwrap();
    std::fs::write(&pin, b"").unwrap();
    s.mount(&["--bind", &format!("/proc/{pid}/ns/mnt")], &pin);
    s.kill(pid);
    umount(&d);
    let r = holders_of(d.to_str().unwrap());
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    assert!(h[0].holders.is_empty());
    let host = nsfs::mnt_ns_of_pid(std::process::id()).unwrap();
    assert_eq!(
        h[0].pin,
        vec![Pin::NsfsMount {
            path: pin.to_str().unwrap().to_string(),
            in_ns_id: host.id,
            in_ns_inum: host.inum,
            member_pid: h[0].pin.first().and_then(|p| match p {
                Pin::NsfsMount { member_pid, .. } => *member_pid,
                _ => None,
            }),
        }]
    );
    assert!(
        h[0].remediation
            .contains(&format!("umount {}", pin.display())),
        "{:?}",
        h[0].remediation
    );
}

#[test]
fn namespace_pinned_only_by_fd() {
    let mut s = Scratch::default();
    let d = s.dir("fd");
    s.mount(&["-t", "tmpfs", "mntleak-fd"], &d);
    let (pid, ns) = s.sleeper("true");
    let holder = s.spawn(&format!("exec sleep 1000 3</proc/{pid}/ns/mnt"));
    s.kill(pid);
    umount(&d);
    let r = holders_of(d.to_str().unwrap());
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    assert!(h[0].holders.is_empty());
    assert_eq!(
        h[0].pin,
        vec![Pin::Fd {
            pid: holder,
            fd: 3,
            comm: "sleep".into()
        }]
    );
    assert!(h[0].remediation.contains(&format!("kill {holder}")));
    s.kill(holder);
    wait_for(|| holders_of(d.to_str().unwrap()).is_clean());
}

#[test]
fn loop_device_held_by_private_copy() {
    let mut s = Scratch::default();
    let dir = s.dir("loop");
    let img = dir.join("img");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(
        Command::new("truncate")
            .args(["-s", "4M"])
            .arg(&img)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    s.loops.push(dev.clone());
    s.mount(&[&dev], &mnt);
    let (pid, ns) = s.sleeper("true");
    umount(&mnt);
    let t = holders::resolve_target(&dev, &|_| Ok(None)).unwrap();
    assert!(matches!(t, Target::Device(_)), "{t:?}");
    let r = holders::holders_of(Some(&t)).unwrap();
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    assert_eq!(h[0].mount.fstype, "ext4");
    assert_eq!(h[0].mount.path, mnt.to_str().unwrap());
    assert_eq!(h[0].holders[0].pid, pid);
    // Nothing else on the host holds it (the host's own mount is gone).
    assert_eq!(r.findings.len(), 1);
    s.kill(pid);
}

#[test]
fn netns_kept_alive_by_foreign_bind() {
    let mut s = Scratch::default();
    let name = format!("mntleak-h-{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success()
    );
    s.netns.push(name.clone());
    let file = format!("/run/netns/{name}");
    let inum = nsfs::nsfs_inode(&file).unwrap().expect("nsfs file");
    let keep = s.dir("netkeep");
    std::fs::remove_dir(&keep).unwrap();
    std::fs::write(&keep, b"").unwrap();
    let (pid, ns) = s.sleeper(&format!("mount --bind {file} {} || exit 1", keep.display()));
    assert!(
        Command::new("ip")
            .args(["netns", "del", &name])
            .status()
            .unwrap()
            .success()
    );
    let r = holders_of(&format!("net:[{inum}]"));
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    assert_eq!(h[0].mount.fstype, "nsfs");
    assert_eq!(h[0].mount.path, keep.to_str().unwrap());
    assert_eq!(h[0].holders[0].pid, pid);
    // By bare inode too.
    let r2 = holders_of(&inum.to_string());
    assert_eq!(foreign_in(&r2, ns).len(), 1);
    s.kill(pid);
    wait_for(|| holders_of(&format!("net:[{inum}]")).is_clean());
}

#[test]
fn stranded_overlay_merged() {
    let mut s = Scratch::default();
    let dir = s.dir("stranded");
    for sub in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    let merged = dir.join("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    s.mount(&["-t", "overlay", "overlay", "-o", &opts], &merged);
    let (pid, ns) = s.sleeper("true");
    let before = holders::holders_of(None).unwrap();
    assert!(
        !before
            .findings
            .iter()
            .any(|h| h.mount.path == merged.to_str().unwrap())
    );
    umount(&merged);
    let r = holders::holders_of(None).unwrap();
    let h: Vec<_> = r
        .findings
        .iter()
        .filter(|h| h.mount.path == merged.to_str().unwrap())
        .collect();
    assert_eq!(h.len(), 1, "{r:#?}");
    assert_eq!(h[0].ns_id, ns.id);
    assert_eq!(h[0].holders[0].pid, pid);
    assert!(h[0].reason.is_some());
}

#[test]
fn clean_target_reports_nothing() {
    let mut s = Scratch::default();
    let d = s.dir("clean");
    let r = holders_of(d.to_str().unwrap());
    assert!(r.findings.is_empty(), "{r:#?}");
    assert!(r.is_clean());
    assert!(holders::render_text(&r).contains("nothing holds"));
    assert_eq!(r.method, mntleak::sys::ScanMethod::Listmount);
}

#[test]
fn container_target_through_resolver() {
    let mut s = Scratch::default();
    let d = s.dir("ctr");
    s.mount(&["-t", "tmpfs", "mntleak-ctr"], &d);
    let (pid, ns) = s.sleeper("true");
    umount(&d);
    let info = mntleak::model::ContainerInfo {
        id: "0123456789ab".into(),
        name: "web".into(),
        runtime: "docker".into(),
        mount_paths: vec![d.to_str().unwrap().to_string()],
        ..Default::default()
    };
    let t = holders::resolve_target("web", &|q| Ok((q == "web").then(|| info.clone()))).unwrap();
    assert!(matches!(t, Target::Container(_)));
    let r = holders::holders_of(Some(&t)).unwrap();
    let h = foreign_in(&r, ns);
    assert_eq!(h.len(), 1, "{r:#?}");
    assert_eq!(h[0].holders[0].pid, pid);
    assert!(holders::resolve_target("nope", &|_| Ok(None)).is_err());
}
