//! The seed leak mechanisms, executed for real in a scratch namespace tree (no container
//! runtime), with the engine fed the matching records. Each test checks the kernel's ground
//! truth (the copy really survives, or really goes) and the engine's verdict: its kind, reason
//! and the event it names.

#[path = "../src/scenario/mod.rs"]
mod scenario;

use mntleak::engine::{Finding, FindingKind};
use mntleak::uapi::*;
use scenario::World;

fn has(w: &World, h: usize, mp: &str) -> bool {
    w.real_table(h)
        .unwrap()
        .iter()
        .any(|m| m.mountpoint.as_str() == mp)
}

/// The engine's findings about the scratch tree (the host's own mounts are in the snapshot too).
fn engine(w: &World) -> (mntleak::engine::Engine, Vec<Finding>) {
    let (e, f) = w.engine();
    (
        e,
        f.into_iter()
            .filter(|x| w.under_root(&x.mount.path))
            .collect(),
    )
}

fn leaks(f: &[Finding]) -> Vec<&Finding> {
    f.iter().filter(|f| f.kind == FindingKind::Leak).collect()
}

/// "dockerd" (the root namespace) mounts a container rootfs at `<root>/docker/overlay2/abc/merged`.
fn container_rootfs(w: &mut World) -> String {
    let r = w.root.clone();
    let merged = format!("{r}/docker/overlay2/abc/merged");
    w.run(
        0,
        &format!("mkdir -p {r}/lower {r}/upper {r}/work {merged} {r}/ctr/docker"),
    )
    .unwrap();
    w.comm = Some("dockerd".into());
    let ok = w
        .mount(
            0,
            &format!("mount -n -t overlay overlay -o lowerdir={r}/lower,upperdir={r}/upper,workdir={r}/work {merged}"),
            "overlay",
            &merged,
            "overlay",
            0,
        )
        .unwrap();
    assert!(ok, "overlay mount failed: {:?}", w.log);
    w.comm = None;
    merged
}

fn setup(tag: &str) -> Option<World> {
    if !scenario::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(World::new(tag, true).expect("scratch namespace"))
}

/// (a) A PrivateTmp-style service unshares (private) after the rootfs exists; the owner's
/// umount leaves its copy; the leak names the unshare; rmdir of the mountpoint resolves it.
#[test]
fn a_private_service_namespace() {
    let Some(mut w) = setup("mech-a") else { return };
    let merged = container_rootfs(&mut w);
    let svc = w.unshare(0, "private").unwrap();
    let (_, f) = engine(&w);
    let risk: Vec<_> = f.iter().filter(|f| f.kind == FindingKind::AtRisk).collect();
    assert_eq!(risk.len(), 1, "{f:#?}");
    assert_eq!(risk[0].into_mnt_ns_id, w.holders[svc].ns.id);
    assert!(w.umount(0, &merged, false).unwrap());
    assert!(has(&w, svc, &merged), "kernel: the private copy survives");
    let (eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    let l = l[0];
    assert_eq!(l.reason_code, "private_copy");
    let by = l.leaked_by.as_ref().unwrap();
    assert_eq!(
        (by.syscall.as_str(), by.pid),
        ("unshare", w.holders[svc].pid)
    );
    assert!(
        l.cut_off_by
            .as_ref()
            .unwrap()
            .detail
            .contains("MS_REC|MS_PRIVATE")
    );
    assert_eq!(l.origin.as_ref().unwrap().comm, "dockerd");
    assert_eq!(l.holders[0].pid, w.holders[svc].pid);
    w.compare(&eng).unwrap();
    // rmdir in the owner's namespace detaches the foreign copy (>= 3.18).
    assert!(w.rmdir(0, &merged).unwrap());
    assert!(
        !has(&w, svc, &merged),
        "kernel: the unlink detached the copy"
    );
    let (eng, f) = engine(&w);
    let done = f.iter().rfind(|x| x.id == l.id).unwrap();
    assert_eq!(
        done.resolved.as_ref().unwrap().by.as_ref().unwrap().syscall,
        "rmdir"
    );
    w.compare(&eng).unwrap();
}

/// (b) A "container" rbinds the runtime directory and makes it rprivate: its copies of every
/// rootfs under it survive the owner's umount; the leak names the rbind.
#[test]
fn b_rbind_rprivate_of_runtime_dir() {
    let Some(mut w) = setup("mech-b") else { return };
    let merged = container_rootfs(&mut w);
    let r = w.root.clone();
    let ctr = w.unshare(0, "slave").unwrap();
    w.mount(
        ctr,
        &format!("mount -n --rbind {r}/docker {r}/ctr/docker"),
        &format!("{r}/docker"),
        &format!("{r}/ctr/docker"),
        "",
        MS_BIND | MS_REC,
    )
    .unwrap();
    w.mount(
        ctr,
        &format!("mount -n --make-rprivate {r}/ctr/docker"),
        "none",
        &format!("{r}/ctr/docker"),
        "",
        MS_REC | MS_PRIVATE,
    )
    .unwrap();
    assert!(w.umount(0, &merged, false).unwrap());
    let copy = format!("{r}/ctr/docker/overlay2/abc/merged");
    assert!(
        has(&w, ctr, &copy) && !has(&w, ctr, &merged),
        "kernel: only the rprivate copy survives"
    );
    let (eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].mount.path_in_ns, copy);
    let by = l[0].leaked_by.as_ref().unwrap();
    assert_eq!(by.syscall, "mount");
    assert!(by.detail.contains("MS_BIND|MS_REC"), "{}", by.detail);
    w.compare(&eng).unwrap();
}

/// (c) A daemon in a slave namespace mounts a rootfs; a holder keeps that namespace; the daemon
/// restarts into a new namespace and its umount fails with EINVAL: a stranded leak.
#[test]
fn c_daemon_restarted_into_new_namespace() {
    let Some(mut w) = setup("mech-c") else { return };
    let r = w.root.clone();
    let merged = format!("{r}/docker/overlay2/abc/merged");
    w.run(0, &format!("mkdir -p {merged}")).unwrap();
    w.comm = Some("dockerd".into());
    let old = w.unshare(0, "slave").unwrap();
    assert!(
        w.mount(
            old,
            &format!("mount -n -t tmpfs rootfs {merged}"),
            "rootfs",
            &merged,
            "tmpfs",
            0
        )
        .unwrap()
    );
    let new = w.unshare(0, "slave").unwrap();
    assert!(
        !w.umount(new, &merged, false).unwrap(),
        "kernel: EINVAL in the new namespace"
    );
    w.comm = None;
    assert!(has(&w, old, &merged));
    let (eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].reason_code, "stranded");
    assert_eq!(l[0].into_mnt_ns_id, w.holders[old].ns.id);
    assert_eq!(l[0].from_mnt_ns_id, w.holders[new].ns.id);
    assert_eq!(l[0].leaked_by.as_ref().unwrap().pid, w.holders[new].pid);
    assert_eq!(l[0].holders[0].pid, w.holders[old].pid);
    w.compare(&eng).unwrap();
}

/// (d) "ip netns add" style pinned files under a shared self-bind; a container rbinds it
/// rprivate: later files do not reach the private copy, earlier ones do and leak on
/// "ip netns del" (umount -l + unlink) until the unlink detaches them.
#[test]
fn d_rbind_rprivate_and_netns_files() {
    let Some(mut w) = setup("mech-d") else { return };
    let r = w.root.clone();
    let nd = format!("{r}/netns");
    w.run(
        0,
        &format!("mkdir -p {nd} {r}/ctr/netns && touch {r}/netfile {nd}/n1"),
    )
    .unwrap();
    w.mount(
        0,
        &format!("mount -n --bind {nd} {nd}"),
        &nd,
        &nd,
        "",
        MS_BIND,
    )
    .unwrap();
    w.mount(
        0,
        &format!("mount -n --make-shared {nd}"),
        "none",
        &nd,
        "",
        MS_SHARED,
    )
    .unwrap();
    let n1 = format!("{nd}/n1");
    w.mount(
        0,
        &format!("mount -n --bind {r}/netfile {n1}"),
        &format!("{r}/netfile"),
        &n1,
        "",
        MS_BIND,
    )
    .unwrap();
    let ctr = w.unshare(0, "slave").unwrap();
    let cn = format!("{r}/ctr/netns");
    w.mount(
        ctr,
        &format!("mount -n --rbind {nd} {cn}"),
        &nd,
        &cn,
        "",
        MS_BIND | MS_REC,
    )
    .unwrap();
    w.mount(
        ctr,
        &format!("mount -n --make-rprivate {cn}"),
        "none",
        &cn,
        "",
        MS_REC | MS_PRIVATE,
    )
    .unwrap();
    let n2 = format!("{nd}/n2");
    w.run(0, &format!("touch {n2}")).unwrap();
    w.mount(
        0,
        &format!("mount -n --bind {r}/netfile {n2}"),
        &format!("{r}/netfile"),
        &n2,
        "",
        MS_BIND,
    )
    .unwrap();
    assert!(
        has(&w, ctr, &n2) && !has(&w, ctr, &format!("{cn}/n2")),
        "kernel: no copy into the private tree"
    );
    let (eng, _) = engine(&w);
    w.compare(&eng).unwrap();
    // ip netns del n1
    assert!(w.umount(0, &n1, true).unwrap());
    let (_, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].mount.path_in_ns, format!("{cn}/n1"));
    assert!(
        l[0].leaked_by
            .as_ref()
            .unwrap()
            .detail
            .contains("MS_BIND|MS_REC")
    );
    assert!(w.unlink(0, &n1).unwrap());
    assert!(
        !has(&w, ctr, &format!("{cn}/n1")),
        "kernel: the unlink detached the copy"
    );
    let (eng, f) = engine(&w);
    let done = f.iter().rfind(|x| x.id == l[0].id).unwrap();
    assert!(done.resolved.is_some(), "{done:#?}");
    w.compare(&eng).unwrap();
}

/// (e) Benign: a systemd-style slave service namespace (--propagation slave, then rshared) is
/// reached by the owner's umount: no verdict at all.
#[test]
fn e_slave_service_is_benign() {
    let Some(mut w) = setup("mech-e") else { return };
    let merged = container_rootfs(&mut w);
    let svc = w.unshare(0, "slave").unwrap();
    w.mount(
        svc,
        "mount -n --make-rshared /",
        "none",
        "/",
        "",
        MS_REC | MS_SHARED,
    )
    .unwrap();
    assert!(w.umount(0, &merged, false).unwrap());
    assert!(!has(&w, svc, &merged), "kernel: the slave copy was reached");
    let (eng, f) = engine(&w);
    assert!(f.is_empty(), "{f:#?}");
    w.compare(&eng).unwrap();
    // Benign too: the copy's holder exits before the owner's umount.
    let merged2 = container_rootfs(&mut w);
    let short = w.unshare(0, "private").unwrap();
    w.kill(short);
    assert!(w.umount(0, &merged2, false).unwrap());
    let (_, f) = engine(&w);
    assert!(leaks(&f).is_empty(), "{f:#?}");
}
