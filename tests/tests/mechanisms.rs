//! The seed leak mechanisms, executed for real in a scratch namespace tree (no container
//! runtime) while the real eBPF tracer runs; the engine gets what the tracer recorded. Each test
//! checks the kernel's ground truth (the copy really survives, or really goes; the device really
//! is busy; the netns really stays) and the engine's verdict: its kind, reason, the event it
//! names, the holder and the remediation.

#[path = "../src/scenario/mod.rs"]
mod scenario;

use mntleak::engine::{Finding, FindingKind};
use mntleak_tests::{LoopDev, open_excl};
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
            .filter(|x| w.under_root(&x.mount.path) || w.under_root(&x.mount.path_in_ns))
            .collect(),
    )
}

fn leaks(f: &[Finding]) -> Vec<&Finding> {
    f.iter().filter(|f| f.kind == FindingKind::Leak).collect()
}

/// The latest version of each finding (a finding is re-emitted when it changes).
fn latest(f: &[Finding]) -> Vec<&Finding> {
    let mut out: Vec<&Finding> = Vec::new();
    for x in f {
        out.retain(|y| y.id != x.id);
        out.push(x);
    }
    out
}

/// Remediation exists, names the holder's pid, and never offers a lazy detach as the fix.
fn assert_remediation(f: &Finding, pid: u32) {
    assert!(!f.remediation.is_empty(), "no remediation: {f:#?}");
    assert!(
        f.remediation.iter().any(|r| r.contains(&pid.to_string())),
        "no remediation names pid {pid}: {:#?}",
        f.remediation
    );
    for r in &f.remediation {
        if r.contains("umount -l") || r.contains("MNT_DETACH") {
            assert!(r.contains("not"), "lazy detach offered as a fix: {r:?}");
        }
    }
}

/// `mntleak-act` under the name `dockerd`: the traced process that mounts is a "dockerd".
fn dockerd() -> String {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = format!("/tmp/mntleak-mech-bin-{}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        let path = format!("{dir}/dockerd");
        std::fs::copy(env!("CARGO_BIN_EXE_mntleak-act"), &path).expect("copy mntleak-act");
        path
    })
    .clone()
}

/// "dockerd" (the root namespace) mounts a container rootfs at `<root>/docker/overlay2/<tag>/merged`.
fn container_rootfs(w: &mut World, tag: &str) -> String {
    let r = w.root.clone();
    let l = format!("{r}/layers/{tag}");
    let merged = format!("{r}/docker/overlay2/{tag}/merged");
    w.run(
        0,
        &format!("mkdir -p {l}/lower {l}/upper {l}/work {merged} {r}/ctr/docker"),
    )
    .unwrap();
    let ok = w
        .run(
            0,
            &format!(
                "{} mount overlay {merged} overlay lowerdir={l}/lower,upperdir={l}/upper,workdir={l}/work",
                dockerd()
            ),
        )
        .unwrap();
    assert!(ok, "overlay mount failed: {:?}", w.log);
    merged
}

fn setup(tag: &str) -> Option<World> {
    if !scenario::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(World::new(tag, true).expect("scratch namespace"))
}

/// (a) A PrivateTmp-style service unshares (private) after the rootfs exists: at risk at once;
/// the owner's umount leaves its copy (a leak naming the unshare); the owner's rmdir of the
/// mountpoint makes the kernel detach the copy (>= 3.18): the leak is reported resolved.
#[test]
fn a_private_service_namespace() {
    let Some(mut w) = setup("mech-a") else { return };
    let merged = container_rootfs(&mut w, "a");
    let svc = w.unshare(0, "private").unwrap();
    let (_, f) = engine(&w);
    let risk: Vec<_> = f.iter().filter(|f| f.kind == FindingKind::AtRisk).collect();
    assert_eq!(risk.len(), 1, "{f:#?}");
    assert_eq!(risk[0].into_mnt_ns_id, w.holders[svc].ns.id);
    assert!(w.umount(0, &merged, false).unwrap());
    assert!(has(&w, svc, &merged), "kernel: the private copy survives");
    let (mut eng, f) = engine(&w);
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
    let origin = l.origin.as_ref().unwrap();
    assert_eq!(origin.comm, "dockerd");
    assert_eq!(origin.mnt_ns_id, w.holders[0].ns.id);
    assert_eq!(l.umount.as_ref().unwrap().syscall, "umount2");
    assert_eq!(l.holders[0].pid, w.holders[svc].pid);
    assert_remediation(l, w.holders[svc].pid);
    w.compare(&mut eng).unwrap();
    assert!(w.rmdir(0, &merged).unwrap());
    assert!(
        !has(&w, svc, &merged),
        "kernel: the unlink detached the copy"
    );
    let (mut eng, f) = engine(&w);
    let done = f.iter().rfind(|x| x.id == l.id).unwrap();
    assert_eq!(
        done.resolved.as_ref().unwrap().by.as_ref().unwrap().syscall,
        "rmdir"
    );
    w.compare(&mut eng).unwrap();
}

/// (b) A daemon in a slave namespace mounts a rootfs; its forked holder keeps that namespace;
/// the daemon restarts into a new namespace and its umount fails with EINVAL: a stranded leak
/// that names the restart, the failed umount and the holder.
#[test]
fn b_daemon_restarted_into_new_namespace() {
    let Some(mut w) = setup("mech-b") else { return };
    let r = w.root.clone();
    let merged = format!("{r}/docker/overlay2/abc/merged");
    w.run(0, &format!("mkdir -p {merged}")).unwrap();
    let old = w.unshare(0, "slave").unwrap();
    assert!(
        w.run(old, &format!("{} mount rootfs {merged} tmpfs", dockerd()))
            .unwrap()
    );
    // The restarted daemon, in a new namespace, cannot reach its old mount.
    let new = w.unshare(0, "slave").unwrap();
    assert!(
        !w.run(new, &format!("{} umount {merged}", dockerd()))
            .unwrap(),
        "kernel: EINVAL in the new namespace"
    );
    assert!(has(&w, old, &merged));
    let (mut eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].reason_code, "stranded");
    assert_eq!(l[0].into_mnt_ns_id, w.holders[old].ns.id);
    assert_eq!(l[0].from_mnt_ns_id, w.holders[new].ns.id);
    let by = l[0].leaked_by.as_ref().unwrap();
    assert_eq!(
        (by.syscall.as_str(), by.pid),
        ("unshare", w.holders[new].pid)
    );
    assert!(
        l[0].symptoms
            .iter()
            .any(|s| s.syscall == "umount2" && s.ret == -libc::EINVAL as i64),
        "the failed umount is a symptom: {:#?}",
        l[0].symptoms
    );
    assert_eq!(l[0].holders[0].pid, w.holders[old].pid);
    assert_remediation(l[0], w.holders[old].pid);
    w.compare(&mut eng).unwrap();
}

/// (c) A "container" rbinds the runtime directory and makes it rprivate: its copies of every
/// rootfs under it survive the owner's umount; the leak names the rbind.
#[test]
fn c_rbind_rprivate_of_runtime_dir() {
    let Some(mut w) = setup("mech-c") else { return };
    let merged = container_rootfs(&mut w, "c");
    let r = w.root.clone();
    let ctr = w.unshare(0, "slave").unwrap();
    assert!(
        w.run(
            ctr,
            &format!(
                "mount -n --rbind {r}/docker {r}/ctr/docker && mount -n --make-rprivate {r}/ctr/docker"
            ),
        )
        .unwrap()
    );
    assert!(w.umount(0, &merged, false).unwrap());
    let copy = format!("{r}/ctr/docker/overlay2/c/merged");
    assert!(
        has(&w, ctr, &copy) && !has(&w, ctr, &merged),
        "kernel: only the rprivate copy survives"
    );
    let (mut eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(l[0].mount.path_in_ns, copy);
    let by = l[0].leaked_by.as_ref().unwrap();
    assert_eq!(by.syscall, "mount");
    assert!(by.detail.contains("MS_BIND|MS_REC"), "{}", by.detail);
    assert!(
        l[0].cut_off_by
            .as_ref()
            .unwrap()
            .detail
            .contains("MS_REC|MS_PRIVATE")
    );
    assert_remediation(l[0], w.holders[ctr].pid);
    w.compare(&mut eng).unwrap();
}

/// Whether a network namespace with this inode is still held by a mount or a process.
fn netns_alive(inum: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("mountinfo"))
            .is_ok_and(|mi| mi.contains(&format!("net:[{inum}]")))
            || std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| m.ino() == inum)
    })
}

/// (d) `ip netns add`, then a "container" rbinds `/` rprivate (a hostPath of `/`): its copy of
/// the netns file survives `ip netns del`'s lazy umount. Without a pin the unlink that follows
/// detaches the copy (a resolved leak) and the network namespace goes; with the container's own
/// bind of the nsfs file (as network agents do) the namespace stays and the verdict names the pin.
fn d_ip_netns(pin: bool) {
    let tag = if pin { "mech-d-pin" } else { "mech-d" };
    let Some(mut w) = setup(tag) else { return };
    let r = w.root.clone();
    let name = format!("{tag}-{}", std::process::id());
    let file = format!("/run/netns/{name}");
    assert!(
        w.run(0, &format!("ip netns add {name}")).unwrap(),
        "{:?}",
        w.log
    );
    let inum = std::fs::read_to_string(format!("/proc/{}/mountinfo", w.holders[0].pid))
        .unwrap()
        .lines()
        .find(|l| l.contains(&format!(" {file} ")))
        .and_then(|l| l.split(' ').nth(3).map(str::to_string))
        .and_then(|root| {
            root.trim_start_matches("net:[")
                .trim_end_matches(']')
                .parse::<u64>()
                .ok()
        })
        .expect("the netns file is an nsfs mount");
    let ctr = w.unshare(0, "slave").unwrap();
    let rootfs = format!("{r}/ctrroot/rootfs");
    assert!(
        w.run(
            ctr,
            &format!(
                "mkdir -p {r}/ctrroot && mount -n -t tmpfs ctrroot {r}/ctrroot && mkdir {rootfs} && \
                 mount -n --rbind / {rootfs} && mount -n --make-rprivate {rootfs}"
            ),
        )
        .unwrap(),
        "{:?}",
        w.log
    );
    let copy = format!("{rootfs}{file}");
    let pin_path = format!("{r}/ctrroot/pin");
    if pin {
        assert!(
            w.run(
                ctr,
                &format!("touch {pin_path} && mount -n --bind {copy} {pin_path}")
            )
            .unwrap()
        );
    }
    assert!(
        w.run(0, &format!("ip netns del {name}")).unwrap(),
        "{:?}",
        w.log
    );
    assert!(
        !has(&w, ctr, &copy),
        "kernel: the unlink detached the rbind copy"
    );
    assert_eq!(has(&w, ctr, &pin_path), pin);
    assert_eq!(netns_alive(inum), pin, "kernel: the netns lives iff pinned");
    let (mut eng, f) = engine(&w);
    let nsfs_leak = |x: &&Finding| x.kind == FindingKind::Leak && x.mount.fstype == "nsfs";
    // The moment it leaked: the container's rbind (cut off by its make-rprivate).
    let rbind_copy = f
        .iter()
        .filter(nsfs_leak)
        .find(|x| x.mount.path_in_ns == copy)
        .unwrap_or_else(|| panic!("no leak of {copy}: {f:#?}"));
    let by = rbind_copy.leaked_by.as_ref().unwrap();
    assert_eq!(by.syscall, "mount");
    assert!(by.detail.contains("MS_BIND|MS_REC"), "{}", by.detail);
    assert!(
        rbind_copy
            .cut_off_by
            .as_ref()
            .is_some_and(|c| c.detail.contains("MS_REC|MS_PRIVATE")),
        "{rbind_copy:#?}"
    );
    assert_eq!(rbind_copy.into_mnt_ns_id, w.holders[ctr].ns.id);
    let latest = latest(&f);
    let now = latest
        .iter()
        .find(|x| x.id == rbind_copy.id)
        .expect("latest version");
    if pin {
        // The unlink detached the rbind copy, but the namespace is still held by the pin: the
        // same leak now names the pin, live.
        assert_eq!(now.mount.path_in_ns, pin_path, "{now:#?}");
        assert!(
            now.resolved.is_none(),
            "the pinned netns is alive: {now:#?}"
        );
        assert_eq!(now.holders[0].pid, w.holders[ctr].pid);
        assert_remediation(now, w.holders[ctr].pid);
        assert!(
            now.remediation.iter().any(|r| r.contains(&pin_path)),
            "the remediation names the pin: {:#?}",
            now.remediation
        );
    } else {
        assert_eq!(
            now.resolved
                .as_ref()
                .and_then(|r| r.by.as_ref())
                .map(|e| e.syscall.as_str()),
            Some("unlink"),
            "ip netns del's unlink resolved it: {now:#?}"
        );
        assert!(
            latest
                .iter()
                .filter(|x| nsfs_leak(x))
                .all(|x| x.resolved.is_some()),
            "nothing holds the netns any more: {latest:#?}"
        );
    }
    w.compare(&mut eng).unwrap();
}

#[test]
fn d_ip_netns_del_with_a_rbind_copy_is_resolved_by_the_unlink() {
    d_ip_netns(false);
}

#[test]
fn d_ip_netns_pinned_by_the_container_stays_alive() {
    d_ip_netns(true);
}

/// (e) A loop-device ext4 "volume" mounted by the runtime; a service unshares (private); after
/// the runtime's umount the device stays busy because of the service's copy.
#[test]
fn e_loop_ext4_volume_stays_busy() {
    let Some(mut w) = setup("mech-e") else { return };
    let img = format!("/tmp/mntleak-mech-e-{}.img", std::process::id());
    let mk = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("rm -f {img} && truncate -s 16M {img} && mkfs.ext4 -q {img}"),
        ])
        .status()
        .unwrap();
    assert!(mk.success(), "mkfs.ext4");
    let dev = LoopDev::attach(&img).expect("losetup");
    let _ = std::fs::remove_file(&img); // the loop device keeps the file
    let vol = format!("{}/volumes/data", w.root);
    assert!(
        w.run(
            0,
            &format!("mkdir -p {vol} && {} mount {} {vol} ext4", dockerd(), dev.0)
        )
        .unwrap()
    );
    let svc = w.unshare(0, "private").unwrap();
    assert!(w.umount(0, &vol, false).unwrap());
    assert_eq!(
        open_excl(&dev.0).err().and_then(|e| e.raw_os_error()),
        Some(libc::EBUSY),
        "kernel: the device is still busy"
    );
    let (mut eng, f) = engine(&w);
    let l = leaks(&f);
    assert_eq!(l.len(), 1, "{f:#?}");
    assert_eq!(
        (l[0].mount.fstype.as_str(), l[0].mount.source.as_str()),
        ("ext4", dev.0.as_str())
    );
    let by = l[0].leaked_by.as_ref().unwrap();
    assert_eq!(
        (by.syscall.as_str(), by.pid),
        ("unshare", w.holders[svc].pid)
    );
    assert_eq!(l[0].holders[0].pid, w.holders[svc].pid);
    assert!(
        l[0].reason
            .contains(&format!("device {} stays busy", dev.0)),
        "the verdict explains the busy device: {:#?}",
        l[0]
    );
    assert_remediation(l[0], w.holders[svc].pid);
    w.compare(&mut eng).unwrap();
    // The holder goes: the copy dies with its namespace and the device is free.
    w.kill(svc);
    assert!(open_excl(&dev.0).is_ok(), "kernel: the device is free");
    let (_, f) = engine(&w);
    let done = f.iter().rfind(|x| x.id == l[0].id).unwrap();
    assert!(done.resolved.is_some(), "{done:#?}");
}

/// Benign: a systemd-style slave service namespace (--propagation slave, then rshared) is
/// reached by the owner's umount; and a private copy whose holder exits before the owner's
/// umount leaks nothing. No leak verdict.
#[test]
fn benign_slave_service_and_short_lived_copy() {
    let Some(mut w) = setup("mech-benign") else {
        return;
    };
    let merged = container_rootfs(&mut w, "b1");
    let svc = w.unshare(0, "slave").unwrap();
    assert!(w.run(svc, "mount -n --make-rshared /").unwrap());
    assert!(w.umount(0, &merged, false).unwrap());
    assert!(!has(&w, svc, &merged), "kernel: the slave copy was reached");
    let (mut eng, f) = engine(&w);
    assert!(f.is_empty(), "{f:#?}");
    w.compare(&mut eng).unwrap();
    let merged2 = container_rootfs(&mut w, "b2");
    let short = w.unshare(0, "private").unwrap();
    w.kill(short);
    assert!(w.umount(0, &merged2, false).unwrap());
    let (_, f) = engine(&w);
    assert!(leaks(&f).is_empty(), "{f:#?}");
}
