//! listmount/statmount and the NS_MNT_GET_NEXT walk against /proc (root, real namespaces).

use std::process::{Child, Command, Stdio};

use mntleak::sys::{mountapi, nsfs};

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_sleep(pid: u32) {
    for _ in 0..1000 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} never reached sleep");
}

/// A private namespace (host changes cannot race the comparison) with a shared tmpfs and a slave
/// bind of it, so both `shared:N` and `master:N` appear.
fn private_ns(k: &mut Kill, tag: &str) -> (u32, String) {
    let d = format!("/tmp/mntleak-sys-{}-{tag}", std::process::id());
    let script = format!(
        "mkdir -p {d}/a {d}/b && mount -t tmpfs sysa {d}/a && mount --make-shared {d}/a && \
         mount --bind {d}/a {d}/b && mount --make-slave {d}/b && exec sleep 1000"
    );
    let c = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    k.0.push(c);
    wait_sleep(pid);
    (pid, d)
}

#[test]
fn statmount_agrees_with_mountinfo() {
    let mut k = Kill(Vec::new());
    let (pid, dir) = private_ns(&mut k, "cmp");
    let ns = nsfs::mnt_ns_of_pid(pid).unwrap();
    let from_api = mountapi::namespace_mounts(ns.id).unwrap();
    let from_proc = mountapi::read_mountinfo(&format!("/proc/{pid}/mountinfo")).unwrap();
    let key = |m: &mntleak::model::MountInfo, old: u32| {
        (
            old,
            m.mountpoint.text.clone(),
            m.fstype.text.clone(),
            m.source.text.clone(),
            m.root.text.clone(),
            (m.dev_major, m.dev_minor),
            (
                m.propagation.shared,
                m.propagation.master,
                m.propagation.unbindable,
            ),
        )
    };
    let mut a: Vec<_> = from_api.iter().map(|m| key(m, m.mnt_id_old)).collect();
    let mut b: Vec<_> = from_proc.iter().map(|m| key(m, m.mnt_id as u32)).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(from_api.iter().any(|m| m.propagation.shared.is_some()));
    assert!(from_api.iter().any(|m| m.propagation.master.is_some()));
    // 64-bit ids and parents link up.
    let ids: std::collections::HashSet<u64> = from_api.iter().map(|m| m.mnt_id).collect();
    assert!(
        from_api
            .iter()
            .filter(|m| ids.contains(&m.parent_id))
            .count()
            >= from_api.len() - 1
    );
    // Options agree too (statmount builds them from mnt_attr + sb options).
    for m in &from_api {
        let p = from_proc
            .iter()
            .find(|p| p.mnt_id as u32 == m.mnt_id_old)
            .unwrap();
        assert_eq!(m.options, p.options, "{}", m.mountpoint.text);
    }
    drop(k);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn walk_finds_namespace_held_only_by_fd() {
    let mut k = Kill(Vec::new());
    let member = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "1000"])
        .spawn()
        .unwrap();
    let mpid = member.id();
    k.0.push(member);
    let own = nsfs::mnt_ns_of_pid(std::process::id()).unwrap();
    let mut ns = own;
    for _ in 0..1000 {
        ns = nsfs::mnt_ns_of_pid(mpid).unwrap();
        if ns.id != own.id {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_ne!(ns.id, own.id);
    let holder = Command::new("sh")
        .args(["-c", &format!("exec sleep 1000 3</proc/{mpid}/ns/mnt")])
        .spawn()
        .unwrap();
    let hpid = holder.id();
    k.0.push(holder);
    wait_sleep(hpid);
    let mut m = k.0.remove(0);
    m.kill().unwrap();
    m.wait().unwrap();
    let all = nsfs::all_mount_namespaces().unwrap();
    let e = all
        .iter()
        .find(|e| e.ns.id == ns.id)
        .expect("fd-held namespace found by the walk");
    assert_eq!(e.ns.inum, ns.inum);
    assert!(e.nr_mounts > 0);
    // And through the fd path.
    assert_eq!(
        nsfs::mnt_ns_of_path(format!("/proc/{hpid}/fd/3")).unwrap(),
        ns
    );
    // Gone once the fd closes.
    drop(k);
    let mut gone = false;
    for _ in 0..1000 {
        let all = nsfs::all_mount_namespaces().unwrap();
        if !all.iter().any(|e| e.ns.id == ns.id) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone, "namespace {} outlived its last fd", ns.id);
}

/// A namespace that a batch shows made and left by all its members is not read in that batch
/// (its read would fail: the kernel freed it), and is read after all when a later batch shows it
/// again, as one kept alive by an nsfs bind mount or an open fd would be. Here a live namespace
/// stands in for the kept one, and the exit is the record of a process that "left" it.
#[test]
fn watcher_passes_over_a_namespace_made_and_gone_in_one_batch() {
    use mntleak::model::{Action, Event, Record, Task};
    use mntleak::snapshot::{NamespaceWatcher, take_snapshot};
    let snap = take_snapshot(1).unwrap();
    let mut w = NamespaceWatcher::new(&snap);
    let mut k = Kill(Vec::new());
    let (pid, dir) = private_ns(&mut k, "gone");
    let ns = nsfs::mnt_ns_of_pid(pid).unwrap();
    let event = |task_ns, action, new_mnt_ns| {
        Record::Event(Event {
            task: Task {
                pid,
                tid: pid,
                mnt_ns: task_ns,
                ..Default::default()
            },
            action,
            ret: Some(0),
            new_mnt_ns,
            dir: None,
            resolved: [None, None],
        })
    };
    let unshare = event(
        snap.host_ns,
        Action::Unshare {
            flags: mntleak::uapi::CLONE_NEWNS,
        },
        Some(ns),
    );
    let exit = event(ns, Action::Exit, None);
    let fork = event(ns, Action::Fork { child: pid + 1 }, Some(ns));
    let observe_all = |w: &mut NamespaceWatcher, batch: &[Record]| -> usize {
        w.begin_batch(batch);
        batch
            .iter()
            .filter_map(|r| match r {
                Record::Event(ev) => w.observe(ev, || 5),
                _ => None,
            })
            .count()
    };
    assert_eq!(observe_all(&mut w, &[unshare.clone(), exit.clone()]), 0);
    // A member that outlives the batch (the child of a fork): read.
    assert_eq!(observe_all(&mut w, &[unshare, fork, exit.clone()]), 1);
    // Seen now, whatever later batches show.
    assert_eq!(observe_all(&mut w, &[exit]), 0);
    drop(k);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watcher_reads_a_new_namespace_once() {
    use mntleak::model::{Action, Event, KStr, NamespaceListing, Record, Task};
    use mntleak::snapshot::{NamespaceWatcher, take_snapshot};
    let snap = take_snapshot(1).unwrap();
    assert!(snap.namespaces.iter().any(|n| n.ns == snap.host_ns));
    let mut w = NamespaceWatcher::new(&snap);
    let mut k = Kill(Vec::new());
    let (pid, dir) = private_ns(&mut k, "watch");
    let ns = nsfs::mnt_ns_of_pid(pid).unwrap();
    assert!(!snap.namespaces.iter().any(|n| n.ns.id == ns.id));
    let ev = Event {
        task: Task {
            pid,
            tid: pid,
            mnt_ns: snap.host_ns,
            ..Default::default()
        },
        action: Action::Unshare {
            flags: mntleak::uapi::CLONE_NEWNS,
        },
        ret: Some(0),
        new_mnt_ns: Some(ns),
        dir: None,
        resolved: [None, None],
    };
    // A clock that ticks per read: the record is stamped before and after the listing.
    let tick = std::cell::Cell::new(6);
    let clock = || {
        tick.set(tick.get() + 1);
        tick.get()
    };
    let Some(Record::NamespaceMounts(NamespaceListing {
        ts_ns,
        read_end_ns,
        ns: got,
        mounts,
    })) = w.observe(&ev, clock)
    else {
        panic!("no NamespaceMounts for a new namespace");
    };
    assert_eq!((ts_ns, read_end_ns, got), (7, 8, ns));
    let a = format!("{dir}/a");
    assert!(
        mounts
            .iter()
            .any(|m| m.mountpoint.as_str() == a && m.fstype.as_str() == "tmpfs")
    );
    // Seen now: no second read; the host namespace was known from the snapshot.
    assert_eq!(w.observe(&ev, || 8), None);
    let exec = Event {
        action: Action::Exec {
            filename: KStr::new("/bin/true"),
        },
        new_mnt_ns: None,
        ..ev.clone()
    };
    assert_eq!(w.observe(&exec, || 9), None);
    assert!(matches!(
        w.refresh(ns, || 10),
        Some(Record::NamespaceMounts(_))
    ));
    drop(k);
    let _ = std::fs::remove_dir_all(&dir);
}
