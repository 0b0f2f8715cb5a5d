#![allow(clippy::too_many_arguments)]
//! Rule and verdict tests on hand-built record streams. The real-kernel oracle lives in
//! tests/tests/oracle.rs; these pin the intended semantics of each rule and verdict.

use super::HashMap;
use super::*;
use crate::model::*;
use crate::report::finding::FindingKind;
use crate::uapi::*;

const HOST: u64 = 1;

struct S {
    eng: Engine,
    ts: u64,
    out: Vec<Finding>,
}

fn mi(
    id: u64,
    parent: u64,
    mp: &str,
    root: &str,
    fstype: &str,
    source: &str,
    dev: (u32, u32),
    shared: Option<u32>,
    master: Option<u32>,
) -> MountInfo {
    MountInfo {
        mnt_id: id,
        parent_id: parent,
        dev_major: dev.0,
        dev_minor: dev.1,
        root: KStr::new(root),
        mountpoint: KStr::new(mp),
        fstype: KStr::new(fstype),
        source: KStr::new(source),
        propagation: Propagation {
            shared,
            master,
            unbindable: false,
        },
        ..Default::default()
    }
}

fn ns(id: u64) -> MntNs {
    MntNs {
        id,
        inum: 4026531840 + id as u32,
    }
}

impl S {
    /// A host with `/` (ext4, shared:1), `/run` (tmpfs, shared:2) and `/proc`; pid 1 systemd.
    fn new() -> Self {
        Self::with_mounts(vec![])
    }

    fn with_mounts(extra: Vec<MountInfo>) -> Self {
        let mut mounts = vec![
            mi(1, 0, "/", "/", "ext4", "/dev/sda1", (8, 1), Some(1), None),
            mi(2, 1, "/run", "/", "tmpfs", "tmpfs", (0, 25), Some(2), None),
            mi(3, 1, "/proc", "/", "proc", "proc", (0, 22), Some(3), None),
        ];
        mounts.extend(extra);
        let snap = Snapshot {
            ts_ns: 1,
            host_ns: ns(HOST),
            namespaces: vec![NamespaceState {
                ns: ns(HOST),
                pids: vec![1],
                mounts,
            }],
            processes: vec![ProcessState {
                pid: 1,
                ppid: 0,
                comm: KStr::new("systemd"),
                mnt_ns: ns(HOST),
                cgroup: KStr::new("/"),
            }],
        };
        let mut eng = Engine::new(EngineConfig::default());
        let out = eng.apply(&Record::Snapshot(snap));
        Self { eng, ts: 100, out }
    }

    fn ev(
        &mut self,
        pid: u32,
        comm: &str,
        in_ns: u64,
        action: Action,
        ret: Option<i64>,
        new_ns: Option<u64>,
    ) -> Vec<Finding> {
        self.ts += 10;
        let e = Event {
            task: Task {
                ts_ns: self.ts,
                pid,
                tid: pid,
                ppid: 0,
                comm: KStr::new(comm),
                mnt_ns: ns(in_ns),
                net_ns_inum: 0,
                cgroup_id: 0,
            },
            action,
            ret,
            new_mnt_ns: new_ns.map(ns),
            dir: None,
            resolved: [None, None],
        };
        let f = self.eng.apply(&Record::Event(e));
        self.out.extend(f.clone());
        f
    }

    fn fork(&mut self, parent: u32, comm: &str, in_ns: u64, child: u32) {
        self.ev(
            parent,
            comm,
            in_ns,
            Action::Fork { child },
            None,
            Some(in_ns),
        );
    }

    fn unshare(&mut self, pid: u32, comm: &str, _from: u64, to: u64) -> Vec<Finding> {
        // The tracer reports the task already in its new namespace at sys_exit_unshare.
        self.ev(
            pid,
            comm,
            to,
            Action::Unshare { flags: CLONE_NEWNS },
            Some(0),
            Some(to),
        )
    }

    fn mount(
        &mut self,
        pid: u32,
        comm: &str,
        in_ns: u64,
        source: &str,
        target: &str,
        fstype: &str,
        flags: u64,
    ) -> Vec<Finding> {
        self.ev(
            pid,
            comm,
            in_ns,
            Action::Mount {
                source: KStr::new(source),
                target: KStr::new(target),
                fstype: KStr::new(fstype),
                flags,
            },
            Some(0),
            None,
        )
    }

    fn umount(
        &mut self,
        pid: u32,
        comm: &str,
        in_ns: u64,
        target: &str,
        flags: u64,
        ret: i64,
    ) -> Vec<Finding> {
        self.ev(
            pid,
            comm,
            in_ns,
            Action::Umount {
                target: KStr::new(target),
                flags,
            },
            Some(ret),
            None,
        )
    }

    fn unlink(
        &mut self,
        pid: u32,
        comm: &str,
        in_ns: u64,
        path: &str,
        rmdir: bool,
        ret: i64,
    ) -> Vec<Finding> {
        self.ev(
            pid,
            comm,
            in_ns,
            Action::Unlink {
                dirfd: AT_FDCWD,
                path: KStr::new(path),
                rmdir,
                call: if rmdir {
                    UnlinkCall::Rmdir
                } else {
                    UnlinkCall::Unlink
                },
            },
            Some(ret),
            None,
        )
    }

    fn exit(&mut self, pid: u32, comm: &str, in_ns: u64) -> Vec<Finding> {
        self.ev(pid, comm, in_ns, Action::Exit, None, None)
    }

    fn has(&mut self, ns_id: u64, mp: &str) -> bool {
        self.eng
            .mount_table(ns_id)
            .iter()
            .any(|m| m.mountpoint == mp)
    }

    fn get(&mut self, ns_id: u64, mp: &str) -> ModelMount {
        let table = self.eng.mount_table(ns_id);
        match table.iter().rfind(|m| m.mountpoint == mp) {
            Some(m) => m.clone(),
            None => panic!("no {mp} in ns {ns_id}: {table:#?}"),
        }
    }
}

const MERGED: &str = "/var/lib/docker/overlay2/abc/merged";

fn docker_mounts_merged(s: &mut S) {
    s.fork(1, "systemd", HOST, 100);
    s.mount(100, "dockerd", HOST, "overlay", MERGED, "overlay", 0);
}

fn leaks(f: &[Finding]) -> Vec<&Finding> {
    f.iter().filter(|f| f.kind == FindingKind::Leak).collect()
}

/// A service (pid 300) clones a child (301) into mount namespace 50 with CLONE_NEWNS; the child
/// makes its mounts private, and dockerd's umount of MERGED then leaks into 50. The leak, if any.
/// `as_sent_now`: the records as the tracer sends them (the clone first, with the child's
/// namespace, then the fork event); otherwise as older captures hold them (the fork event, then
/// the clone's exit without the child's namespace).
fn leak_into_cloned_namespace(as_sent_now: bool) -> Option<Finding> {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 300);
    let clone = Action::Clone {
        flags: CLONE_NEWNS,
        clone3: true,
    };
    let fork = Action::Fork { child: 301 };
    if as_sent_now {
        s.ev(300, "svc", HOST, clone, Some(301), Some(50));
        s.ev(300, "svc", HOST, fork, None, Some(50));
    } else {
        s.ev(300, "svc", HOST, fork, None, Some(50));
        s.ev(300, "svc", HOST, clone, Some(301), None);
    }
    s.mount(301, "svc", 50, "none", "/", "", MS_REC | MS_PRIVATE);
    let f = s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    f.into_iter()
        .find(|l| l.kind == FindingKind::Leak && l.into_mnt_ns_id == 50)
}

/// The clone's record comes first: the namespace copy is credited to it, and the fork event that
/// follows leaves the child where the clone put it.
#[test]
fn a_clone_that_makes_a_namespace_is_credited_with_the_copy() {
    let leak = leak_into_cloned_namespace(true).expect("a leak into the clone's namespace");
    let by = leak.leaked_by.as_ref().unwrap();
    assert!(by.detail.starts_with("clone3(CLONE_NEWNS"), "{}", by.detail);
    assert_eq!(by.pid, 300);
}

/// A clone's exit without the child's namespace, after the fork event, moves nobody: moved back
/// to its parent's namespace, the child left its own empty, and that copy died with its leak.
#[test]
fn an_old_clone_exit_without_the_childs_namespace_moves_nobody() {
    assert!(leak_into_cloned_namespace(false).is_some());
}

#[test]
fn new_mount_under_shared_parent_is_shared_and_ns_copy_keeps_peers() {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    let m = s.get(HOST, MERGED);
    assert!(m.shared.is_some() && m.master.is_none());
    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    let c = s.get(2, MERGED);
    assert_eq!(c.shared, m.shared, "namespace copy is a peer");
    // Propagation of a new mount into the peer namespace.
    s.mount(
        100,
        "dockerd",
        HOST,
        "shm",
        "/var/lib/docker/containers/abc/shm",
        "tmpfs",
        0,
    );
    assert!(s.has(2, "/var/lib/docker/containers/abc/shm"));
    // And the umount reaches it: no leak.
    s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    assert!(!s.has(2, MERGED));
    assert!(leaks(&s.out).is_empty());
}

/// (a) A PrivateTmp-style service unshares after the container mount exists.
#[test]
fn mechanism_a_private_service_leaks_and_unlink_resolves() {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 200);
    let f = s.unshare(200, "svc", HOST, 2);
    assert!(f.is_empty(), "a peer copy is not at risk: {f:#?}");
    let f = s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_PRIVATE);
    let risk: Vec<_> = f.iter().filter(|f| f.kind == FindingKind::AtRisk).collect();
    assert_eq!(risk.len(), 1, "{f:#?}");
    assert_eq!(risk[0].mount.path_in_ns, MERGED);
    let f = s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    let l = l[0];
    assert_eq!(l.id, risk[0].id, "the at-risk finding becomes the leak");
    assert_eq!(l.reason_code, "private_copy");
    assert_eq!(l.leaked_by.as_ref().unwrap().syscall, "unshare");
    assert_eq!(l.leaked_by.as_ref().unwrap().pid, 200);
    assert!(l.cut_off_by.as_ref().unwrap().detail.contains("MS_PRIVATE"));
    assert_eq!((l.from_mnt_ns_id, l.into_mnt_ns_id), (HOST, 2));
    assert_eq!(l.origin.as_ref().unwrap().comm, "dockerd");
    assert_eq!(l.holders.len(), 1);
    assert_eq!(l.holders[0].pid, 200);
    assert!(l.remediation[0].starts_with("nsenter -t 200 -m umount "));
    assert!(s.has(2, MERGED));
    // rmdir of the mountpoint in the host detaches the copy (>= 3.18): resolved.
    let f = s.unlink(100, "dockerd", HOST, MERGED, true, 0);
    assert_eq!(f.len(), 1, "{f:#?}");
    let r = f[0].resolved.as_ref().expect("resolved");
    assert!(r.how.contains("3.18"), "{}", r.how);
    assert_eq!(r.by.as_ref().unwrap().syscall, "rmdir");
    // The copy is gone: no command to undo it (an nsenter umount would fail), only how to keep
    // it from recurring, naming who held it.
    let fix = &f[0].remediation;
    assert!(fix[0].starts_with("nothing to undo"), "{fix:#?}");
    assert!(fix[0].contains("svc (pid 200)"), "{fix:#?}");
    assert!(
        fix.iter().any(|r| r.contains("slave namespace")),
        "{fix:#?}"
    );
    assert!(
        !fix.iter()
            .any(|r| r.contains("nsenter") || r.contains("umount -l")),
        "{fix:#?}"
    );
    let txt = crate::report::finding::finding_text(&f[0], &|t| format!("T{t}"));
    assert!(
        txt.contains("held by:     200 (svc) (until the copy went)"),
        "{txt}"
    );
    assert!(!s.has(2, MERGED));
    let fin = s.eng.finish();
    assert_eq!(fin.len(), 1);
    assert!(fin[0].resolved.is_some());
}

#[test]
fn mechanism_a_holder_exit_resolves_and_symptoms_link() {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_PRIVATE);
    s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    // An old kernel (no detach on unlink) reports EBUSY on rmdir: linked as a symptom.
    let f = s.unlink(100, "dockerd", HOST, MERGED, true, -16);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].symptoms.last().unwrap().errno, "EBUSY");
    let f = s.exit(200, "svc", 2);
    assert_eq!(f.len(), 1);
    assert!(f[0].resolved.as_ref().unwrap().how.contains("last process"));
    assert_eq!(s.eng.stats().namespaces, 1, "the service namespace died");
}

/// (e) benign: a slave service namespace (systemd --propagation slave, then rshared).
#[test]
fn mechanism_e_slave_service_is_reached() {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_SHARED);
    let c = s.get(2, MERGED);
    let h = s.get(HOST, MERGED);
    assert_eq!(c.master, h.shared);
    assert!(c.shared.is_some() && c.shared != h.shared);
    s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    assert!(!s.has(2, MERGED));
    assert!(s.out.is_empty(), "{:#?}", s.out);
    // The slave's own mounts do not flow back to the master.
    s.mount(200, "svc", 2, "tmpfs", "/var/lib/x", "tmpfs", 0);
    assert!(!s.has(HOST, "/var/lib/x"));
}

/// (b) A container rbinds /var/lib/docker and makes it rprivate.
#[test]
fn mechanism_b_rbind_rprivate_leaks_naming_the_rbind() {
    let mut s = S::new();
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 300);
    s.ev(
        300,
        "runc",
        HOST,
        Action::Clone {
            flags: CLONE_NEWNS,
            clone3: false,
        },
        Some(301),
        Some(3),
    );
    s.mount(301, "runc:[2:INIT]", 3, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(
        301,
        "runc:[2:INIT]",
        3,
        "/var/lib/docker",
        "/rootfs/var/lib/docker",
        "",
        MS_BIND | MS_REC,
    );
    s.mount(
        301,
        "runc:[2:INIT]",
        3,
        "none",
        "/rootfs/var/lib/docker",
        "",
        MS_REC | MS_PRIVATE,
    );
    assert!(s.has(3, "/rootfs/var/lib/docker/overlay2/abc/merged"));
    assert!(
        !s.has(HOST, "/rootfs/var/lib/docker"),
        "a slave's rbind does not flow to the host"
    );
    let f = s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(
        l[0].mount.path_in_ns,
        "/rootfs/var/lib/docker/overlay2/abc/merged"
    );
    let by = l[0].leaked_by.as_ref().unwrap();
    assert_eq!((by.syscall.as_str(), by.pid), ("mount", 301));
    assert!(by.detail.contains("MS_BIND|MS_REC"), "{}", by.detail);
    assert!(l[0].remediation.iter().any(|r| r.contains("rslave")));
    assert!(
        !s.has(3, MERGED),
        "the slave copy at the original path was reached"
    );
}

/// (c) dockerd restarted into a new namespace: its old mounts are stranded.
#[test]
fn mechanism_c_daemon_restart_strands_mounts() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 100);
    s.unshare(100, "dockerd", HOST, 10);
    s.mount(100, "dockerd", 10, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(100, "dockerd", 10, "overlay", MERGED, "overlay", 0);
    assert!(!s.has(HOST, MERGED));
    s.fork(100, "dockerd", 10, 150);
    s.ev(
        150,
        "containerd-shim",
        10,
        Action::Exec {
            filename: KStr::new("/usr/bin/containerd-shim"),
        },
        None,
        None,
    );
    s.exit(100, "dockerd", 10);
    s.fork(1, "systemd", HOST, 300);
    s.unshare(300, "dockerd", HOST, 11);
    s.mount(300, "dockerd", 11, "none", "/", "", MS_REC | MS_SLAVE);
    let f = s.umount(300, "dockerd", 11, MERGED, 0, -22);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    let l = l[0];
    assert_eq!(l.reason_code, "stranded");
    assert_eq!((l.from_mnt_ns_id, l.into_mnt_ns_id), (11, 10));
    assert_eq!(l.leaked_by.as_ref().unwrap().pid, 300);
    assert_eq!(l.leaked_by.as_ref().unwrap().syscall, "unshare");
    assert_eq!(
        l.holders.iter().map(|h| h.pid).collect::<Vec<_>>(),
        vec![150]
    );
    assert_eq!(l.symptoms[0].errno, "EINVAL");
    // The shim exits: the namespace dies and the stranded mount with it.
    let f = s.exit(150, "containerd-shim", 10);
    assert!(f[0].resolved.is_some());
}

/// (d) `/` rbound at /rootfs rprivate: later netns files do not reach the private copy;
/// earlier ones were copied and leak on `ip netns del` until the unlink detaches them.
#[test]
fn mechanism_d_netns_and_rootfs_rbind() {
    let mut s = S::with_mounts(vec![
        mi(
            4,
            2,
            "/run/netns",
            "/netns",
            "tmpfs",
            "tmpfs",
            (0, 25),
            Some(4),
            None,
        ),
        mi(
            5,
            4,
            "/run/netns/old",
            "net:[4026532001]",
            "nsfs",
            "nsfs",
            (0, 4),
            Some(5),
            None,
        ),
    ]);
    s.fork(1, "systemd", HOST, 300);
    s.ev(
        300,
        "runc",
        HOST,
        Action::Clone {
            flags: CLONE_NEWNS,
            clone3: false,
        },
        Some(301),
        Some(20),
    );
    s.mount(301, "runc", 20, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(301, "runc", 20, "/", "/rootfs", "", MS_BIND | MS_REC);
    let f = s.mount(301, "runc", 20, "none", "/rootfs", "", MS_REC | MS_PRIVATE);
    assert!(
        f.iter().any(|f| f.kind == FindingKind::AtRisk && f.mount.path_in_ns == "/rootfs/run/netns/old"),
        "{f:#?}"
    );
    // ip netns add new
    s.fork(1, "systemd", HOST, 400);
    s.mount(
        400,
        "ip",
        HOST,
        "/proc/400/ns/net",
        "/run/netns/new",
        "",
        MS_BIND,
    );
    assert!(s.has(20, "/run/netns/new"));
    assert!(!s.has(20, "/rootfs/run/netns/new"));
    // ip netns del old
    let f = s.umount(400, "ip", HOST, "/run/netns/old", MNT_DETACH, 0);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].mount.path_in_ns, "/rootfs/run/netns/old");
    assert!(!s.has(20, "/run/netns/old"));
    let f = s.unlink(400, "ip", HOST, "/run/netns/old", false, 0);
    assert_eq!(f.len(), 1);
    assert!(f[0].resolved.is_some());
    assert!(!s.has(20, "/rootfs/run/netns/old"));
}

#[test]
fn slave_of_slave_chain_and_umount() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 10);
    s.unshare(10, "a", HOST, 2);
    s.mount(10, "a", 2, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(10, "a", 2, "none", "/", "", MS_REC | MS_SHARED);
    s.fork(10, "a", 2, 11);
    s.unshare(11, "b", 2, 3);
    s.mount(11, "b", 3, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(1, "systemd", HOST, "tmpfs", "/mnt", "tmpfs", 0);
    assert!(s.has(2, "/mnt") && s.has(3, "/mnt"));
    let (a, b) = (s.get(2, "/mnt"), s.get(3, "/mnt"));
    assert_eq!(
        b.master, a.shared,
        "slave of the middle namespace's new group"
    );
    s.umount(1, "systemd", HOST, "/mnt", 0, 0);
    assert!(!s.has(2, "/mnt") && !s.has(3, "/mnt"));
}

#[test]
fn unbindable_is_skipped_by_rbind_and_newuser_makes_slaves() {
    let mut s = S::new();
    s.mount(1, "systemd", HOST, "tmpfs", "/srv", "tmpfs", 0);
    s.mount(1, "systemd", HOST, "tmpfs", "/srv/u", "tmpfs", 0);
    s.mount(1, "systemd", HOST, "none", "/srv/u", "", MS_UNBINDABLE);
    s.mount(1, "systemd", HOST, "/srv", "/mnt", "", MS_BIND | MS_REC);
    assert!(s.has(HOST, "/mnt") && !s.has(HOST, "/mnt/u"));
    assert!(s.get(HOST, "/srv/u").unbindable);
    s.fork(1, "systemd", HOST, 20);
    s.ev(
        20,
        "podman",
        HOST,
        Action::Unshare {
            flags: CLONE_NEWNS | CLONE_NEWUSER,
        },
        Some(0),
        Some(5),
    );
    let (h, c) = (s.get(HOST, "/srv"), s.get(5, "/srv"));
    assert_eq!((c.shared, c.master), (None, h.shared));
    assert!(
        !s.get(5, "/srv/u").unbindable,
        "6.18: a namespace copy drops unbindable"
    );
}

#[test]
fn move_and_new_mount_api() {
    let mut s = S::new();
    s.mount(1, "systemd", HOST, "tmpfs", "/a", "tmpfs", 0);
    s.mount(1, "systemd", HOST, "tmpfs", "/a/b", "tmpfs", 0);
    s.mount(1, "systemd", HOST, "none", "/", "", MS_REC | MS_PRIVATE);
    s.mount(1, "systemd", HOST, "/a", "/c", "", MS_MOVE);
    assert!(!s.has(HOST, "/a") && s.has(HOST, "/c") && s.has(HOST, "/c/b"));
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsopen {
            fstype: KStr::new("tmpfs"),
            flags: 0,
        },
        Some(3),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsconfig {
            fd: 3,
            cmd: FSCONFIG_SET_STRING,
            key: KStr::new("source"),
            value: KStr::new("mytmp"),
        },
        Some(0),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsmount {
            fd: 3,
            flags: 0,
            attr_flags: 0,
        },
        Some(4),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::MoveMount {
            from_dirfd: 4,
            from_path: KStr::new(""),
            to_dirfd: AT_FDCWD,
            to_path: KStr::new("/d"),
            flags: MOVE_MOUNT_F_EMPTY_PATH,
        },
        Some(0),
        None,
    );
    assert_eq!(s.get(HOST, "/d").source, "mytmp");
    s.ev(
        1,
        "systemd",
        HOST,
        Action::OpenTree {
            dirfd: AT_FDCWD,
            path: KStr::new("/c"),
            flags: OPEN_TREE_CLONE | AT_RECURSIVE,
        },
        Some(5),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::MoveMount {
            from_dirfd: 5,
            from_path: KStr::new(""),
            to_dirfd: AT_FDCWD,
            to_path: KStr::new("/e"),
            flags: MOVE_MOUNT_F_EMPTY_PATH,
        },
        Some(0),
        None,
    );
    assert!(s.has(HOST, "/e") && s.has(HOST, "/e/b"));
    s.ev(
        1,
        "systemd",
        HOST,
        Action::MountSetattr {
            dirfd: AT_FDCWD,
            path: KStr::new("/e"),
            flags: AT_RECURSIVE,
            attr_set: 0,
            attr_clr: 0,
            propagation: MS_SHARED,
        },
        Some(0),
        None,
    );
    assert!(s.get(HOST, "/e/b").shared.is_some());
    // A failed call changes nothing.
    s.umount(1, "systemd", HOST, "/e/b", 0, -16);
    assert!(s.has(HOST, "/e/b"));
}

#[test]
fn pivot_root_and_chroot_paths() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 50);
    s.unshare(50, "runc", HOST, 7);
    s.mount(50, "runc", 7, "none", "/", "", MS_REC | MS_PRIVATE);
    s.mount(50, "runc", 7, "overlay", "/r", "overlay", 0);
    s.mount(50, "runc", 7, "proc", "/r/proc", "proc", 0);
    s.ev(
        50,
        "runc",
        7,
        Action::PivotRoot {
            new_root: KStr::new("/r"),
            put_old: KStr::new("/r/old"),
        },
        Some(0),
        None,
    );
    assert_eq!(s.get(7, "/").fstype, "overlay");
    assert!(s.has(7, "/proc") && s.has(7, "/old") && s.has(7, "/old/run"));
    s.umount(50, "runc", 7, "/old", MNT_DETACH, 0);
    assert!(!s.has(7, "/old/run"));
    s.ev(
        50,
        "runc",
        7,
        Action::Chroot {
            path: KStr::new("/proc"),
        },
        Some(0),
        None,
    );
    s.mount(50, "runc", 7, "tmpfs", "/x", "tmpfs", 0);
    assert!(s.has(7, "/proc/x"));
}

#[test]
fn nsfs_pin_keeps_namespace_alive() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 60);
    s.unshare(60, "holder", HOST, 8);
    let inum = ns(8).inum;
    // Pin ns 8 from the host with a bind of its nsfs file (root shows mnt:[inum]).
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsopen {
            fstype: KStr::new("nsfs"),
            flags: 0,
        },
        Some(3),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsconfig {
            fd: 3,
            cmd: FSCONFIG_SET_STRING,
            key: KStr::new("source"),
            value: KStr::new(format!("mnt:[{inum}]")),
        },
        Some(0),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::Fsmount {
            fd: 3,
            flags: 0,
            attr_flags: 0,
        },
        Some(4),
        None,
    );
    s.ev(
        1,
        "systemd",
        HOST,
        Action::MoveMount {
            from_dirfd: 4,
            from_path: KStr::new(""),
            to_dirfd: AT_FDCWD,
            to_path: KStr::new("/run/pin"),
            flags: MOVE_MOUNT_F_EMPTY_PATH,
        },
        Some(0),
        None,
    );
    s.exit(60, "holder", 8);
    assert!(
        !s.eng.mount_table(8).is_empty(),
        "pinned namespace lives on"
    );
    s.umount(1, "systemd", HOST, "/run/pin", 0, 0);
    assert!(s.eng.mount_table(8).is_empty(), "unpinned namespace died");
}

#[test]
fn focus_filters_leaks() {
    let mut s = S::new();
    s.eng.cfg.focus = vec![ContainerInfo {
        id: "abc".into(),
        mount_paths: vec!["/var/lib/docker/overlay2/zzz/merged".into()],
        ..Default::default()
    }];
    docker_mounts_merged(&mut s);
    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_PRIVATE);
    s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    assert!(s.out.is_empty(), "not the focused container: {:#?}", s.out);
}

#[test]
fn rendering_escapes_and_keeps_keys() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 100);
    s.mount(100, "evil\x1b[2J", HOST, "overlay", MERGED, "overlay", 0);
    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_PRIVATE);
    let f = s.umount(100, "dockerd", HOST, MERGED, 0, 0);
    let l = leaks(&f)[0];
    let wall = |t: u64| format!("T{t}");
    let txt = crate::report::finding::finding_text(l, &wall);
    assert!(
        !txt.contains('\x1b') && txt.contains("evil\\x1b[2J"),
        "{txt}"
    );
    assert!(txt.contains("leaked by:   unshare"), "{txt}");
    let j = crate::report::finding::finding_json(l, &wall);
    for k in [
        "kind",
        "mount",
        "origin",
        "leaked_by",
        "from_mnt_ns_id",
        "into_mnt_ns_id",
        "reason",
        "symptoms",
        "holders",
        "remediation",
    ] {
        assert!(j.get(k).is_some(), "missing {k}: {j}");
    }
    assert_eq!(j["kind"], "leak");
    for k in ["source", "fstype", "path", "mount_id"] {
        assert!(j["mount"].get(k).is_some(), "missing mount.{k}");
    }
    assert_eq!(j["leaked_by"]["syscall"], "unshare");
    assert!(j["origin"]["wall"].is_string());
}

#[test]
fn memory_stays_flat_over_churn() {
    let mut s = S::new();
    for i in 0..2000u32 {
        let pid = 1000 + i;
        let n = 100 + i as u64;
        s.fork(1, "systemd", HOST, pid);
        s.unshare(pid, "svc", HOST, n);
        s.mount(pid, "svc", n, "none", "/", "", MS_REC | MS_PRIVATE);
        s.mount(1, "dockerd", HOST, "overlay", MERGED, "overlay", 0);
        s.umount(1, "dockerd", HOST, MERGED, 0, 0);
        s.unlink(1, "dockerd", HOST, MERGED, true, 0);
        s.exit(pid, "svc", n);
    }
    let st = s.eng.stats();
    assert_eq!(
        (st.processes, st.namespaces, st.mounts),
        (1, 1, 3),
        "{st:?}"
    );
    assert!(st.families <= 4, "{st:?}");
    assert!(st.resolved_leaks <= MAX_RESOLVED);
}

/// A copy with nothing container-looking or nsfs in it waits (`Engine::copy_ns`) until a record
/// that can read or change mounts. Whether it waited must not show: a helper's copy dies unmade,
/// a copy of a waiting copy is whole, and a copy cut off before the umount is still the leak
/// named by its unshare.
#[test]
fn a_waiting_namespace_copy_is_made_before_anything_reads_it() {
    let mut s = S::new();
    s.mount(1, "systemd", HOST, "tmpfs", "/mnt/data", "tmpfs", 0);
    s.fork(1, "systemd", HOST, 300);
    s.unshare(300, "helper", HOST, 3);
    assert_eq!(s.eng.stats().mounts, 8, "a waiting copy still counts");
    let f = s.exit(300, "helper", 3);
    assert!(f.is_empty(), "{f:#?}");
    assert!(!s.eng.namespaces().contains(&3));
    assert_eq!(s.eng.stats().mounts, 4);

    s.fork(1, "systemd", HOST, 200);
    s.unshare(200, "svc", HOST, 2);
    s.fork(200, "svc", 2, 201);
    s.unshare(201, "svc-child", 2, 4);
    let host: Vec<_> = s
        .eng
        .mount_table(HOST)
        .into_iter()
        .map(|m| m.mountpoint)
        .collect();
    for n in [2, 4] {
        let copy: Vec<_> = s
            .eng
            .mount_table(n)
            .into_iter()
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(copy, host, "ns {n}");
    }
    assert_eq!(
        s.get(4, "/mnt/data").shared,
        s.get(HOST, "/mnt/data").shared
    );
    s.mount(200, "svc", 2, "none", "/", "", MS_REC | MS_PRIVATE);
    let f = s.umount(1, "systemd", HOST, "/mnt/data", 0, 0);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].into_mnt_ns_id, 2);
    assert_eq!(l[0].leaked_by.as_ref().unwrap().pid, 200);
    assert_eq!(l[0].leaked_by.as_ref().unwrap().syscall, "unshare");
    assert!(!s.has(4, "/mnt/data"), "the peer copy was reached");
}

/// The live source reads a new namespace's mounts when it first sees it; that read can land
/// between the last member's exit event and the namespace's end. Applied after the exit, it must
/// not bring the namespace back (nothing would ever end it again: a soak grew by hundreds).
#[test]
fn a_fact_read_as_the_namespace_dies_does_not_resurrect_it() {
    let mut s = S::new();
    for i in 0..100u32 {
        let pid = 1000 + i;
        let n = 100 + i as u64;
        s.fork(1, "systemd", HOST, pid);
        s.unshare(pid, "svc", HOST, n);
        s.exit(pid, "svc", n);
        s.ts += 10;
        s.out
            .extend(s.eng.apply(&Record::NamespaceMounts(NamespaceListing {
                ts_ns: s.ts,
                read_end_ns: s.ts,
                ns: ns(n),
                mounts: vec![mi(
                    900,
                    1,
                    "/",
                    "/",
                    "ext4",
                    "/dev/vda1",
                    (8, 1),
                    None,
                    None,
                )],
            })));
        s.fork(1, "systemd", HOST, 9000 + i);
    }
    let st = s.eng.stats();
    assert_eq!(st.namespaces, 1, "{st:?}");
}

/// Debug aid: `MNTLEAK_DEBUG_CAP=/tmp/x.mntcap [MNTLEAK_DEBUG_NS=id] cargo test -p mntleak-user
/// debug_replay -- --nocapture` replays a capture and prints every record's findings and, for
/// the watched namespace, its model table after each record that changed it.
#[test]
fn debug_replay() {
    let Ok(p) = std::env::var("MNTLEAK_DEBUG_CAP") else {
        return;
    };
    let watch: Vec<u64> = std::env::var("MNTLEAK_DEBUG_NS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let rd = crate::capture::CaptureReader::open(&[std::path::PathBuf::from(p)]).unwrap();
    let mut eng = Engine::new(EngineConfig::default());
    let mut last: HashMap<u64, usize> = HashMap::default();
    for (i, r) in rd.enumerate() {
        let r = r.unwrap();
        let desc = match &r {
            Record::Event(e) => format!(
                "#{i} ev pid {} {} ns {} {:?} ret {:?} new {:?} dir {:?}",
                e.task.pid,
                e.task.comm.as_str(),
                e.task.mnt_ns.id,
                e.action,
                e.ret,
                e.new_mnt_ns.map(|n| n.id),
                e.dir.as_ref().map(|d| d.as_str())
            ),
            Record::NamespaceMounts(NamespaceListing { ns, mounts, .. }) => {
                let mut d = format!("#{i} FACT ns {} {} mounts", ns.id, mounts.len());
                if watch.contains(&ns.id) {
                    for m in mounts {
                        d += &format!(
                            "\n     F {} p{} {}:{} {} {} {} {} {:?}",
                            m.mnt_id,
                            m.parent_id,
                            m.dev_major,
                            m.dev_minor,
                            m.mountpoint.as_str(),
                            m.fstype.as_str(),
                            m.source.as_str(),
                            m.root.as_str(),
                            m.propagation
                        );
                    }
                }
                d
            }
            Record::Container(c) => format!("#{i} CONTAINER {c:?}"),
            Record::Snapshot(s) => {
                let mut d = format!(
                    "#{i} SNAPSHOT {} ns host {}",
                    s.namespaces.len(),
                    s.host_ns.id
                );
                for n in &s.namespaces {
                    if !watch.contains(&n.ns.id) {
                        continue;
                    }
                    for m in &n.mounts {
                        d += &format!(
                            "\n     S {} p{} {}:{} {} {} {} {} {:?}",
                            m.mnt_id,
                            m.parent_id,
                            m.dev_major,
                            m.dev_minor,
                            m.mountpoint.as_str(),
                            m.fstype.as_str(),
                            m.source.as_str(),
                            m.root.as_str(),
                            m.propagation
                        );
                    }
                }
                d
            }
            Record::Lost { count, .. } => format!("#{i} LOST {count}"),
        };
        let f = eng.apply(&r);
        if std::env::var("MNTLEAK_DEBUG_ALL").is_ok() || !f.is_empty() {
            println!("{desc}");
        }
        for x in &f {
            println!(
                "   -> {:?} id {} {} in ns {} by {:?} reason {}",
                x.kind,
                x.id,
                x.mount.path,
                x.into_mnt_ns_id,
                x.leaked_by.as_ref().map(|e| &e.detail),
                x.reason_code
            );
        }
        for &w in &watch {
            let t = eng.mount_table(w);
            if last.get(&w) != Some(&t.len()) {
                println!("{desc}\n  ns {w}: {} mounts", t.len());
                for m in &t {
                    println!(
                        "     {:?} {} {} {} {}",
                        m.mount_id, m.mountpoint, m.fstype, m.source, m.root
                    );
                }
                last.insert(w, t.len());
            }
        }
    }
    for x in eng.finish() {
        println!(
            "FINAL {:?} {} ns {} {} in_ns {} resolved {}",
            x.kind,
            x.mount.path,
            x.into_mnt_ns_id,
            x.reason_code,
            x.mount.path_in_ns,
            x.resolved.is_some()
        );
    }
}

impl S {
    /// A successful call whose path arguments the kernel resolved to `res`.
    fn resolved(
        &mut self,
        pid: u32,
        comm: &str,
        in_ns: u64,
        action: Action,
        res: [Option<&str>; 2],
    ) -> Vec<Finding> {
        self.ts += 10;
        let e = Event {
            task: Task {
                ts_ns: self.ts,
                pid,
                tid: pid,
                comm: KStr::new(comm),
                mnt_ns: ns(in_ns),
                ..Default::default()
            },
            action,
            ret: Some(0),
            new_mnt_ns: None,
            dir: None,
            resolved: res.map(|r| {
                r.map(|p| ResolvedPath {
                    path: KStr::new(p),
                    mnt_id: 0,
                })
            }),
        };
        let f = self.eng.apply(&Record::Event(e));
        self.out.extend(f.clone());
        f
    }

    fn fact(&mut self, ns_id: u64, mounts: Vec<MountInfo>) -> Vec<Finding> {
        let f = self.eng.apply(&Record::NamespaceMounts(NamespaceListing {
            ts_ns: self.ts,
            read_end_ns: self.ts,
            ns: ns(ns_id),
            mounts,
        }));
        self.out.extend(f.clone());
        f
    }
}

/// Real snapshots list mounts in id order with a hidden root below "/" (a parent that is not
/// listed, or listed after its children); the model must still nest them right.
fn real_host() -> Vec<MountInfo> {
    vec![
        mi(11, 16, "/proc", "/", "proc", "proc", (0, 21), None, None),
        mi(
            12,
            16,
            "/dev",
            "/",
            "devtmpfs",
            "devtmpfs",
            (0, 6),
            None,
            None,
        ),
        mi(
            13,
            12,
            "/dev/shm",
            "/",
            "tmpfs",
            "tmpfs",
            (0, 23),
            None,
            None,
        ),
        mi(16, 5, "/", "/", "ext4", "/dev/vda", (254, 0), None, None),
        mi(
            20,
            16,
            "/var/lib/docker",
            "/var/lib/docker",
            "ext4",
            "/dev/vda",
            (254, 0),
            Some(1),
            None,
        ),
        mi(
            21,
            16,
            "/data/vol",
            "/",
            "ext4",
            "/dev/loop0",
            (7, 0),
            None,
            None,
        ),
    ]
}

fn snapshot_of(mounts: Vec<MountInfo>) -> Engine {
    let snap = Snapshot {
        ts_ns: 1,
        host_ns: ns(HOST),
        namespaces: vec![NamespaceState {
            ns: ns(HOST),
            pids: vec![1],
            mounts,
        }],
        processes: vec![],
    };
    let mut eng = Engine::new(EngineConfig::default());
    eng.apply(&Record::Snapshot(snap));
    eng
}

#[test]
fn snapshot_in_id_order_nests_children_under_the_listed_root() {
    let mut eng = snapshot_of(real_host());
    let t = eng.mount_table(HOST);
    assert_eq!(t[0].mountpoint, "/", "{t:#?}");
    assert_eq!(t[0].fstype, "ext4", "{t:#?}");
    let proc_ = t.iter().find(|m| m.mountpoint == "/proc").unwrap();
    assert_eq!(proc_.parent_mountpoint.as_deref(), Some("/"), "{t:#?}");
    let shm = t.iter().find(|m| m.mountpoint == "/dev/shm").unwrap();
    assert_eq!(shm.parent_mountpoint.as_deref(), Some("/dev"), "{t:#?}");
}

/// S5: the fact read for a newly unshared namespace lists the copy with new kernel ids; it must
/// adopt them, not drop the copies, so the host's later umount finds the leak.
#[test]
fn fact_for_an_unshared_namespace_keeps_the_copies() {
    let mut s = S {
        eng: snapshot_of(real_host()),
        ts: 100,
        out: vec![],
    };
    s.fork(1, "systemd", HOST, 500);
    s.unshare(500, "unshare", HOST, 30);
    let kernel: Vec<MountInfo> = real_host()
        .into_iter()
        .map(|mut m| {
            m.mnt_id += 1000;
            m.parent_id += 1000;
            m.propagation = Propagation::default();
            m
        })
        .collect();
    s.fact(30, kernel);
    s.mount(500, "unshare", 30, "none", "/", "", MS_REC | MS_PRIVATE);
    let t = s.eng.mount_table(30);
    assert!(
        t.iter()
            .any(|m| m.mountpoint == "/data/vol" && m.mount_id == Some(1021)),
        "{t:#?}"
    );
    assert!(
        t.iter().any(|m| m.mountpoint == "/var/lib/docker"),
        "{t:#?}"
    );
    let f = s.umount(1, "systemd", HOST, "/data/vol", 0, 0);
    let leak = f
        .iter()
        .find(|f| f.kind == FindingKind::Leak && f.into_mnt_ns_id == 30)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(leak.leaked_by.as_ref().unwrap().syscall, "unshare");
}

/// posix_spawn's clone3(CLONE_VM|CLONE_VFORK) exit arrives after the child's own events: it
/// must not move the child back into the parent's namespace.
#[test]
fn a_late_clone_exit_does_not_move_a_child_that_acted() {
    let mut s = S::with_mounts(vec![mi(
        4,
        1,
        "/var/lib/docker/overlay2/x/merged",
        "/",
        "overlay",
        "overlay",
        (0, 40),
        Some(4),
        None,
    )]);
    s.fork(1, "systemd", HOST, 600);
    // The child's own events first (it runs before its parent returns from clone3).
    s.ev(
        601,
        "svc",
        HOST,
        Action::Exec {
            filename: KStr::new("/usr/bin/svc"),
        },
        None,
        None,
    );
    s.unshare(601, "svc", HOST, 40);
    s.mount(601, "svc", 40, "none", "/", "", MS_REC | MS_PRIVATE);
    s.ev(
        600,
        "systemd",
        HOST,
        Action::Clone {
            flags: CLONE_VM | 0x4000, // CLONE_VFORK
            clone3: true,
        },
        Some(601),
        None,
    );
    assert!(
        s.eng.namespaces().contains(&40),
        "the service namespace died"
    );
    let f = s.umount(
        1,
        "dockerd",
        HOST,
        "/var/lib/docker/overlay2/x/merged",
        0,
        0,
    );
    assert!(
        f.iter()
            .any(|f| f.kind == FindingKind::Leak && f.into_mnt_ns_id == 40),
        "{f:#?}"
    );
}

/// runc binds onto /proc/self/fd/N; the kernel fact that follows shows the copies. They are
/// linked to what they copy, named by that bind, and cut off by the rprivate that followed.
#[test]
fn unplaced_runc_bind_is_learnt_from_the_fact_with_its_lineage() {
    let netns = || {
        mi(
            5,
            2,
            "/run/netns/cni-1",
            "net:[4026532001]",
            "nsfs",
            "nsfs",
            (0, 4),
            Some(5),
            None,
        )
    };
    let mut s = S::with_mounts(vec![netns()]);
    s.fork(1, "systemd", HOST, 700);
    s.unshare(700, "runc:[1:CHILD]", HOST, 50);
    s.mount(700, "runc:[2:INIT]", 50, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(
        700,
        "runc:[2:INIT]",
        50,
        "/",
        "/proc/self/fd/6",
        "bind",
        MS_BIND | MS_REC,
    );
    s.mount(
        700,
        "runc:[2:INIT]",
        50,
        "",
        "/proc/self/fd/6",
        "",
        MS_REC | MS_PRIVATE,
    );
    let t = s.eng.mount_table(50);
    assert!(
        !t.iter().any(|m| m.mountpoint.starts_with("/proc/self")),
        "{t:#?}"
    );
    // What the kernel shows: the copy tree, plus the rbind at /ctr/rootfs (private).
    let mut kernel = vec![
        mi(101, 0, "/", "/", "ext4", "/dev/sda1", (8, 1), None, Some(1)),
        mi(
            102,
            101,
            "/run",
            "/",
            "tmpfs",
            "tmpfs",
            (0, 25),
            None,
            Some(2),
        ),
        mi(
            103,
            101,
            "/proc",
            "/",
            "proc",
            "proc",
            (0, 22),
            None,
            Some(3),
        ),
    ];
    let mut n = netns();
    n.mnt_id = 104;
    n.parent_id = 102;
    n.propagation = Propagation {
        shared: None,
        master: Some(5),
        unbindable: false,
    };
    kernel.push(n);
    kernel.push(mi(
        110,
        101,
        "/ctr/rootfs",
        "/",
        "ext4",
        "/dev/sda1",
        (8, 1),
        None,
        None,
    ));
    kernel.push(mi(
        111,
        110,
        "/ctr/rootfs/run",
        "/",
        "tmpfs",
        "tmpfs",
        (0, 25),
        None,
        None,
    ));
    let mut n = netns();
    n.mnt_id = 112;
    n.parent_id = 111;
    n.mountpoint = KStr::new("/ctr/rootfs/run/netns/cni-1");
    n.propagation = Propagation::default();
    kernel.push(n);
    s.fact(50, kernel);
    s.ev(
        700,
        "runc:[2:INIT]",
        50,
        Action::Exec {
            filename: KStr::new("/pause"),
        },
        None,
        None,
    );
    let t = s.eng.mount_table(50);
    assert!(
        t.iter()
            .any(|m| m.mountpoint == "/ctr/rootfs/run/netns/cni-1" && m.mount_id == Some(112)),
        "{t:#?}"
    );
    let f = s.umount(1, "ip", HOST, "/run/netns/cni-1", MNT_DETACH, 0);
    let leak = f
        .iter()
        .find(|f| {
            f.kind == FindingKind::Leak && f.mount.path_in_ns == "/ctr/rootfs/run/netns/cni-1"
        })
        .unwrap_or_else(|| panic!("{f:#?}"));
    let by = leak.leaked_by.as_ref().unwrap();
    assert_eq!(by.syscall, "mount", "{leak:#?}");
    assert!(by.detail.contains("MS_BIND|MS_REC"), "{leak:#?}");
    assert!(
        leak.cut_off_by
            .as_ref()
            .is_some_and(|c| c.detail.contains("MS_REC|MS_PRIVATE")),
        "{leak:#?}"
    );
}

/// runc's setup with the paths the kernel resolved at entry, and no kernel fact at all: the bind
/// onto `/proc/self/fd/6`, `pivot_root(".", ".")` and `umount2(".")` are placed by path, so the
/// copy of the netns file is known however late userspace would have read the namespace.
#[test]
fn runc_setup_is_placed_by_kernel_resolved_paths() {
    let netns = mi(
        5,
        2,
        "/run/netns/cni-1",
        "net:[4026532001]",
        "nsfs",
        "nsfs",
        (0, 4),
        Some(5),
        None,
    );
    let mut s = S::with_mounts(vec![netns]);
    let runc = "runc:[2:INIT]";
    let rootfs = "/ctr/rootfs";
    let resolved = |s: &mut S, action: Action, res: [Option<&str>; 2]| {
        s.resolved(700, runc, 50, action, res);
    };
    let mount = |source: &str, target: &str, flags: u64| Action::Mount {
        source: KStr::new(source),
        target: KStr::new(target),
        fstype: KStr::new(""),
        flags,
    };
    s.fork(1, "systemd", HOST, 700);
    s.unshare(700, "runc:[1:CHILD]", HOST, 50);
    s.mount(700, runc, 50, "none", "/", "", MS_REC | MS_SLAVE);
    s.mount(700, runc, 50, rootfs, rootfs, "", MS_BIND | MS_REC);
    let pod_root = "/ctr/rootfs/rootfs";
    resolved(
        &mut s,
        mount("/", "/proc/self/fd/6", MS_BIND | MS_REC),
        [None, Some(pod_root)],
    );
    resolved(
        &mut s,
        mount("", "/proc/self/fd/6", MS_REC | MS_PRIVATE),
        [None, Some(pod_root)],
    );
    assert!(s.has(50, "/ctr/rootfs/rootfs/run/netns/cni-1"));
    resolved(
        &mut s,
        Action::PivotRoot {
            new_root: KStr::new("."),
            put_old: KStr::new("."),
        },
        [Some(rootfs), Some(rootfs)],
    );
    resolved(&mut s, mount("", ".", MS_REC | MS_SLAVE), [None, Some("/")]);
    resolved(
        &mut s,
        Action::Umount {
            target: KStr::new("."),
            flags: MNT_DETACH,
        },
        [Some("/"), None],
    );
    // The old root is gone; the pod's /rootfs copy stays, private.
    let t: Vec<String> = s
        .eng
        .mount_table(50)
        .into_iter()
        .map(|m| m.mountpoint)
        .collect();
    assert!(t.contains(&"/rootfs/run/netns/cni-1".to_string()), "{t:#?}");
    assert!(!t.contains(&"/run/netns/cni-1".to_string()), "{t:#?}");
    assert!(!t.iter().any(|m| m.starts_with("/proc/self")), "{t:#?}");
    let f = s.umount(1, "ip", HOST, "/run/netns/cni-1", MNT_DETACH, 0);
    let leak = f
        .iter()
        .find(|f| f.kind == FindingKind::Leak && f.mount.path_in_ns == "/rootfs/run/netns/cni-1")
        .unwrap_or_else(|| panic!("{f:#?}"));
    let by = leak.leaked_by.as_ref().unwrap();
    assert_eq!(by.syscall, "mount", "{leak:#?}");
    // The detail names where the bind went, not the fd.
    assert!(by.detail.contains(pod_root), "{leak:#?}");
}

/// The source re-reads a namespace after runc-style calls; when the kernel resolved the call's
/// paths the listing is redundant, and one read late (here: after everything was unmounted) must
/// not undo what the event placed. A listing after any other event still counts.
#[test]
fn a_listing_after_a_kernel_resolved_call_is_redundant() {
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 700);
    s.unshare(700, "runc:[1:CHILD]", HOST, 50);
    let late = || vec![mi(90, 0, "/", "/", "ext4", "/dev/sda1", (8, 1), None, None)];
    s.resolved(
        700,
        "runc:[2:INIT]",
        50,
        Action::Mount {
            source: KStr::new("tmpfs"),
            target: KStr::new("/proc/self/fd/6"),
            fstype: KStr::new("tmpfs"),
            flags: 0,
        },
        [None, Some("/run/x")],
    );
    s.fact(50, late());
    // Facts wait for the stream to reach their time.
    s.fork(1, "systemd", HOST, 701);
    assert!(s.has(50, "/run/x") && s.has(50, "/proc"));
    // After an ordinary event, the same listing is the kernel's word.
    s.mount(701, "sh", HOST, "tmpfs", "/run/y", "tmpfs", 0);
    s.fact(50, late());
    s.fork(1, "systemd", HOST, 702);
    assert!(!s.has(50, "/run/x") && !s.has(50, "/proc"));
}

/// The host's own /dev/shm copied into a service namespace is not a container mount.
#[test]
fn host_dev_shm_is_not_container_looking() {
    let mut s = S::with_mounts(vec![mi(
        6,
        1,
        "/dev/shm",
        "/",
        "tmpfs",
        "tmpfs",
        (0, 30),
        None,
        None,
    )]);
    s.fork(1, "systemd", HOST, 800);
    let f = s.unshare(800, "svc", HOST, 60);
    assert!(!f.iter().any(|f| f.mount.path == "/dev/shm"), "{f:#?}");
}

/// S1: dockerd (live-restore) restarted into a new namespace; its rmdir of the rootfs dir
/// detaches the mount stranded in its old namespace (kept by the shims), and its umount fails.
#[test]
fn daemon_restarted_into_a_new_namespace_strands_its_mount() {
    let merged = "/var/lib/docker/overlay2/x/merged";
    let host_mounts = vec![
        mi(1, 0, "/", "/", "ext4", "/dev/sda1", (8, 1), Some(1), None),
        mi(2, 1, "/proc", "/", "proc", "proc", (0, 22), Some(3), None),
    ];
    let old_mounts = vec![
        mi(11, 0, "/", "/", "ext4", "/dev/sda1", (8, 1), None, Some(1)),
        mi(12, 11, "/proc", "/", "proc", "proc", (0, 22), None, Some(3)),
        mi(
            13,
            11,
            merged,
            "/",
            "overlay",
            "overlay",
            (0, 40),
            None,
            None,
        ),
    ];
    let snap = Snapshot {
        ts_ns: 1,
        host_ns: ns(HOST),
        namespaces: vec![
            NamespaceState {
                ns: ns(HOST),
                pids: vec![1],
                mounts: host_mounts,
            },
            NamespaceState {
                ns: ns(70),
                pids: vec![900, 901],
                mounts: old_mounts,
            },
        ],
        processes: vec![
            ProcessState {
                pid: 900,
                ppid: 1,
                comm: KStr::new("dockerd"),
                mnt_ns: ns(70),
                cgroup: KStr::new("/"),
            },
            ProcessState {
                pid: 901,
                ppid: 1,
                comm: KStr::new("containerd-shim"),
                mnt_ns: ns(70),
                cgroup: KStr::new("/"),
            },
        ],
    };
    let mut eng = Engine::new(EngineConfig::default());
    eng.apply(&Record::Snapshot(snap));
    let mut s = S {
        eng,
        ts: 100,
        out: vec![],
    };
    s.ev(900, "dockerd", 70, Action::Exit, None, None);
    s.fork(1, "systemd", HOST, 950);
    s.unshare(950, "unshare", HOST, 71);
    s.ev(
        950,
        "dockerd",
        71,
        Action::Exec {
            filename: KStr::new("/usr/sbin/dockerd"),
        },
        None,
        None,
    );
    let f = s.unlink(950, "dockerd", 71, merged, true, 0);
    let leak = f
        .iter()
        .find(|f| f.kind == FindingKind::Leak && f.into_mnt_ns_id == 70)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(leak.reason_code, "stranded", "{leak:#?}");
    assert_eq!(leak.from_mnt_ns_id, 71, "{leak:#?}");
    assert_eq!(leak.leaked_by.as_ref().unwrap().pid, 950, "{leak:#?}");
    assert!(leak.resolved.is_some(), "{leak:#?}");
    assert!(
        leak.holders.iter().any(|h| h.comm == "containerd-shim"),
        "{leak:#?}"
    );
    let f = s.umount(950, "dockerd", 71, merged, MNT_DETACH, -2);
    let again = f
        .iter()
        .find(|x| x.id == leak.id)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(
        again
            .symptoms
            .iter()
            .any(|s| s.pid == 950 && s.errno == "ENOENT"),
        "{again:#?}"
    );
}

/// A netns file copied into B and bound again inside B (a pin): the unlink detaches the copy,
/// but B still holds the namespace at the pin, so the leak stays open and names it.
#[test]
fn a_pinned_netns_copy_stays_a_leak_at_its_pin() {
    let mut s = S::with_mounts(vec![mi(
        5,
        2,
        "/run/netns/cni-1",
        "net:[4026532001]",
        "nsfs",
        "nsfs",
        (0, 4),
        None,
        None,
    )]);
    s.fork(1, "systemd", HOST, 810);
    s.unshare(810, "agent", HOST, 80);
    s.mount(810, "agent", 80, "none", "/", "", MS_REC | MS_PRIVATE);
    s.mount(810, "agent", 80, "/run/netns/cni-1", "/pin", "", MS_BIND);
    let f = s.umount(1, "ip", HOST, "/run/netns/cni-1", MNT_DETACH, 0);
    let leak = f
        .iter()
        .find(|f| f.kind == FindingKind::Leak && f.into_mnt_ns_id == 80)
        .unwrap_or_else(|| panic!("{f:#?}"))
        .clone();
    let f = s.unlink(1, "ip", HOST, "/run/netns/cni-1", false, 0);
    let now = f
        .iter()
        .rfind(|x| x.id == leak.id)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(now.resolved.is_none(), "{now:#?}");
    assert_eq!(now.mount.path_in_ns, "/pin", "{now:#?}");
}

/// A pod (ns 40) whose copy of the host's `/run/netns/cni-x` is private, and a kernel fact of
/// the pod read from `from` to `until` that no longer lists the copy.
fn pod_with_private_netns_copy(from: u64, until: u64) -> S {
    let netns = "/run/netns/cni-x";
    let nsfs = (0, 4);
    let mut s = S::with_mounts(vec![mi(
        4,
        2,
        netns,
        "net:[4026532000]",
        "nsfs",
        "nsfs",
        nsfs,
        Some(4),
        None,
    )]);
    s.fork(1, "runc", HOST, 600);
    s.unshare(600, "runc", HOST, 40);
    s.mount(600, "runc", 40, "none", "/", "", MS_REC | MS_PRIVATE);
    assert!(s.has(40, netns));
    let listing = vec![
        mi(101, 1, "/", "/", "ext4", "/dev/sda1", (8, 1), None, None),
        mi(102, 101, "/run", "/", "tmpfs", "tmpfs", (0, 25), None, None),
        mi(103, 101, "/proc", "/", "proc", "proc", (0, 22), None, None),
    ];
    s.out
        .extend(s.eng.apply(&Record::NamespaceMounts(NamespaceListing {
            ts_ns: from,
            read_end_ns: until,
            ns: ns(40),
            mounts: listing,
        })));
    s
}

/// A starved tracer's read of the pod's mounts finished after the host's `ip netns del` and no
/// longer lists the pod's copy. The umount2, made while the read ran, must still find the copy and
/// report the leak (and the unlink, 3.18+, resolve it) rather than find it already gone; and the
/// fact, blurred by those calls, must not undo a mount the pod made meanwhile.
#[test]
fn a_slow_fact_does_not_preempt_calls_made_while_it_was_read() {
    let netns = "/run/netns/cni-x";
    let t0 = 131;
    let mut s = pod_with_private_netns_copy(t0, t0 + 60);
    let f = s.umount(1, "ip", HOST, netns, MNT_DETACH, 0);
    let leak = f
        .iter()
        .find(|f| f.kind == FindingKind::Leak && f.into_mnt_ns_id == 40)
        .unwrap_or_else(|| panic!("no leak into the pod: {f:#?}"));
    assert_eq!(leak.reason_code, "private_copy", "{leak:#?}");
    let f = s.unlink(1, "ip", HOST, netns, false, 0);
    assert!(
        f.iter()
            .any(|f| f.kind == FindingKind::Leak && f.resolved.is_some()),
        "the unlink detaches the copy: {f:#?}"
    );
    s.mount(600, "sh", 40, "tmpfs", "/pin", "tmpfs", 0);
    for child in 700..704 {
        s.fork(1, "systemd", HOST, child);
    }
    assert!(s.ts > t0 + 60, "the read is over");
    assert!(!s.has(40, netns));
    assert!(s.has(40, "/pin"), "{:#?}", s.eng.mount_table(40));
}

/// The same fact with nothing happening while it was read: the copy it does not list is dropped
/// once the stream passes the read's end, not before, and without a finding.
#[test]
fn a_mount_a_fact_does_not_list_goes_once_the_read_is_over() {
    let netns = "/run/netns/cni-x";
    let t0 = 131;
    let mut s = pod_with_private_netns_copy(t0, t0 + 15);
    s.fork(1, "systemd", HOST, 700);
    assert!(s.has(40, netns), "dropped before the read ended");
    s.fork(1, "systemd", HOST, 701);
    assert!(!s.has(40, netns), "still there after the read ended");
    assert!(s.eng.finish().iter().all(|f| f.kind != FindingKind::Leak));
}

/// A fact read while the pod only gained mounts (runc's setup goes on while the tracer reads) still
/// adds the mount the model could not place, and keeps the one made meanwhile that it does not
/// list yet.
#[test]
fn a_fact_read_during_new_mounts_adds_what_it_shows_and_keeps_the_rest() {
    let mut s = S::new();
    s.fork(1, "runc", HOST, 600);
    s.unshare(600, "runc", HOST, 40);
    let t0 = s.ts + 1;
    let listing = vec![
        mi(101, 1, "/", "/", "ext4", "/dev/sda1", (8, 1), None, None),
        mi(102, 101, "/run", "/", "tmpfs", "tmpfs", (0, 25), None, None),
        mi(103, 101, "/proc", "/", "proc", "proc", (0, 22), None, None),
        mi(
            104,
            102,
            "/run/unplaced",
            "/",
            "tmpfs",
            "tmpfs",
            (0, 77),
            None,
            None,
        ),
    ];
    s.out
        .extend(s.eng.apply(&Record::NamespaceMounts(NamespaceListing {
            ts_ns: t0,
            read_end_ns: t0 + 25,
            ns: ns(40),
            mounts: listing,
        })));
    s.mount(600, "runc", 40, "tmpfs", "/pin", "tmpfs", 0);
    s.fork(1, "systemd", HOST, 700);
    s.fork(1, "systemd", HOST, 701);
    assert!(s.ts > t0 + 25, "the read is over");
    assert!(s.has(40, "/run/unplaced"), "{:#?}", s.eng.mount_table(40));
    assert!(s.has(40, "/pin"), "{:#?}", s.eng.mount_table(40));
}

#[test]
fn a_namespace_id_seen_again_learns_who_acts_in_it_again() {
    // A process's events skip noting its command once it is noted in a namespace; a namespace
    // that died and whose id came back (inode numbers repeat in long captures) starts empty.
    let mut s = S::new();
    s.fork(1, "systemd", HOST, 300);
    s.unshare(300, "ntpd", HOST, 10);
    s.unlink(300, "ntpd", 10, "/tmp/x", false, 0);
    assert!(s.eng.ns[&10].comms.contains("ntpd"));
    s.unshare(300, "ntpd", 10, 11);
    assert!(!s.eng.ns.contains_key(&10), "its last member left");
    s.unlink(300, "ntpd", 10, "/tmp/y", false, 0);
    assert!(s.eng.ns[&10].comms.contains("ntpd"));
}
