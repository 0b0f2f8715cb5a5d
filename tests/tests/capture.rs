//! The capture format: round trips, torn tails, corruption, rotation, permissions, a full disk, and
//! the size of an event. No root needed except the full-disk test (a 64 KiB tmpfs in a private
//! mount namespace).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mntleak::capture::{
    CaptureReader, CaptureWriter, RotateOptions, encode_to_vec, frame_spans, rotated_set,
};
use mntleak::model::*;
use mntleak::report::event::{Summary, event_json, event_line, format_wall, lost_line};
use mntleak_tests::{read_varint, varint};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mntleak-capture-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn header() -> CaptureHeader {
    CaptureHeader {
        format_version: mntleak::capture::FORMAT_VERSION,
        kernel_release: "6.18.0-test".into(),
        hostname: "host\x1b[2J".into(),
        monotonic_to_wall_ns: 1_764_600_000_000_000_000,
        missing: vec!["fsconfig".into()],
    }
}

fn k(s: &str) -> KStr {
    KStr::new(s)
}

const NS_HOST: MntNs = MntNs {
    id: 1,
    inum: 4026531841,
};
const NS_C: MntNs = MntNs {
    id: 0x1_0000_0321,
    inum: 4026532301,
};

fn task(ts: u64, pid: u32, comm: KStr, ns: MntNs) -> Task {
    Task {
        ts_ns: ts,
        pid,
        tid: pid + 1,
        ppid: 1,
        comm,
        mnt_ns: ns,
        net_ns_inum: 4026531840,
        cgroup_id: 12345,
    }
}

fn hostile() -> Vec<KStr> {
    vec![
        k("\x1b[31mred\x1b[0m\x07"),
        k("line\nbreak\ttab\r"),
        k("\u{202e}txt.exe"),
        KStr::from_bytes(&[0xff, 0xfe, b'x', 0xc3], true),
        k(&"a/".repeat(2048)),
        k(""),
        k("quote\"back\\slash"),
    ]
}

fn every_action() -> Vec<Action> {
    let h = hostile();
    vec![
        Action::Mount {
            source: h[0].clone(),
            target: k("/mnt/a"),
            fstype: k("tmpfs"),
            flags: 0xC0ED_0000 | 4096 | 16384,
        },
        Action::Umount {
            target: h[1].clone(),
            flags: 2,
        },
        Action::Unlink {
            dirfd: -100,
            path: k("merged"),
            rmdir: true,
            call: UnlinkCall::Unlinkat,
        },
        Action::Unlink {
            dirfd: -100,
            path: h[2].clone(),
            rmdir: false,
            call: UnlinkCall::Unlink,
        },
        Action::Unlink {
            dirfd: -100,
            path: h[3].clone(),
            rmdir: true,
            call: UnlinkCall::Rmdir,
        },
        Action::Unshare {
            flags: 0x0002_0000 | 0x4000_0000,
        },
        Action::Setns {
            fd: 3,
            nstype: 0x0002_0000,
        },
        Action::Clone {
            flags: 0x0002_0000 | 17,
            clone3: false,
        },
        Action::Clone {
            flags: u64::MAX,
            clone3: true,
        },
        Action::Fsopen {
            fstype: k("ext4"),
            flags: 1,
        },
        Action::Fsconfig {
            fd: 4,
            cmd: 1,
            key: k("source"),
            value: h[4].clone(),
        },
        Action::Fsmount {
            fd: 4,
            flags: 1,
            attr_flags: 0x1,
        },
        Action::MoveMount {
            from_dirfd: 5,
            from_path: k(""),
            to_dirfd: -100,
            to_path: h[5].clone(),
            flags: 0x4,
        },
        Action::OpenTree {
            dirfd: -100,
            path: k("/src"),
            flags: 1 | 0o2000000 | 0x8000,
        },
        Action::MountSetattr {
            dirfd: i32::MIN,
            path: h[6].clone(),
            flags: 0x8000,
            attr_set: 1,
            attr_clr: 0x0010_0000,
            propagation: 1 << 18,
        },
        Action::PivotRoot {
            new_root: k("."),
            put_old: k("."),
        },
        Action::Chroot { path: k("/") },
        Action::Fork { child: u32::MAX },
        Action::Exec {
            filename: k("/usr/bin/runc"),
        },
        Action::Exit,
    ]
}

fn mounts() -> Vec<MountInfo> {
    hostile()
        .into_iter()
        .enumerate()
        .map(|(i, s)| MountInfo {
            mnt_id: 0x2000_0000_0000 + i as u64,
            parent_id: 1,
            mnt_id_old: i as u32,
            dev_major: 0,
            dev_minor: 42,
            root: k("/"),
            mountpoint: s.clone(),
            fstype: k("overlay"),
            source: s,
            options: k("rw,relatime"),
            propagation: Propagation {
                shared: (i % 2 == 0).then_some(i as u32),
                master: (i % 3 == 0).then_some(7),
                unbindable: i == 4,
            },
        })
        .collect()
}

/// One of every record variant, with hostile strings everywhere strings go.
fn every_record() -> Vec<Record> {
    let h = hostile();
    let mut recs = vec![Record::Snapshot(Snapshot {
        ts_ns: 1_000,
        host_ns: NS_HOST,
        namespaces: vec![
            NamespaceState {
                ns: NS_HOST,
                pids: vec![1, 2, u32::MAX],
                mounts: mounts(),
            },
            NamespaceState::default(),
        ],
        processes: h
            .iter()
            .enumerate()
            .map(|(i, s)| ProcessState {
                pid: i as u32 + 1,
                ppid: 0,
                comm: s.clone(),
                mnt_ns: NS_HOST,
                cgroup: k("/system.slice/docker.service"),
            })
            .collect(),
    })];
    // Timestamps go backwards once on purpose: ring-buffer order is not strictly monotonic.
    let ts = [5_000u64, 4_000, 9_000_000_000, u64::MAX, 0];
    for (i, a) in every_action().into_iter().enumerate() {
        recs.push(Record::Event(Event {
            task: task(
                ts[i % ts.len()],
                100 + i as u32 % 3,
                h[i % h.len()].clone(),
                NS_C,
            ),
            action: a,
            ret: match i % 4 {
                0 => Some(0),
                1 => Some(-16),
                2 => None,
                _ => Some(i64::MIN),
            },
            new_mnt_ns: (i % 2 == 0).then_some(NS_HOST),
            dir: (i % 3 == 0).then(|| h[i % h.len()].clone()),
            // Kernel-resolved paths (format version 2), in every combination of the two slots.
            resolved: [
                (i % 2 == 1).then(|| ResolvedPath {
                    path: h[(i + 1) % h.len()].clone(),
                    mnt_id: u64::MAX - i as u64,
                }),
                (i % 4 >= 2).then(|| ResolvedPath {
                    path: k("/run/containerd/rootfs"),
                    mnt_id: i as u64,
                }),
            ],
        }));
    }
    recs.push(Record::Lost {
        count: 17,
        first_ts_ns: 10,
        last_ts_ns: u64::MAX,
    });
    recs.push(Record::NamespaceMounts(NamespaceListing {
        ts_ns: 77,
        read_end_ns: 1_000_077,
        ns: NS_C,
        mounts: mounts(),
    }));
    recs.push(Record::NamespaceMounts(NamespaceListing {
        ts_ns: 78,
        read_end_ns: 78,
        ns: NS_C,
        mounts: vec![],
    }));
    recs.push(Record::Container(ContainerInfo {
        id: "abc\x1b".into(),
        name: "web".into(),
        runtime: "docker".into(),
        init_pid: 4242,
        mnt_ns: NS_C,
        net_ns_inum: 1,
        mount_paths: vec!["/var/lib/docker/overlay2/x/merged".into()],
        cgroup: "/docker/abc".into(),
        pod_name: Some("p".into()),
        pod_namespace: None,
        pod_uid: None,
    }));
    recs
}

fn read_all(paths: &[PathBuf]) -> (Vec<Record>, Option<(PathBuf, u64)>) {
    let mut r = CaptureReader::open(paths).unwrap();
    let recs = r.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    (recs, r.stopped_at())
}

fn write_file(path: &Path, recs: &[Record]) {
    let mut w = CaptureWriter::create(path, &header(), RotateOptions::default()).unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    assert_eq!(w.finish().unwrap(), recs.len() as u64);
}

#[test]
fn round_trip_every_record_variant() {
    let dir = scratch("roundtrip");
    let path = dir.join("cap");
    let recs = every_record();
    write_file(&path, &recs);
    let mut r = CaptureReader::open(std::slice::from_ref(&path)).unwrap();
    assert_eq!(r.header(), &header());
    let back = r.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(back, recs);
    assert_eq!(r.stopped_at(), None);
    // The in-memory encoder writes the bytes of a file writer flushing after every record.
    let flushed = dir.join("flushed");
    let mut w = CaptureWriter::create(&flushed, &header(), RotateOptions::default()).unwrap();
    for rec in &recs {
        w.write(rec).unwrap();
        w.flush().unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&flushed).unwrap(),
        encode_to_vec(&header(), &recs)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn small() -> Vec<Record> {
    let mut r = every_record();
    // Keep it small: truncation is tried at every byte offset.
    r.retain(|x| !matches!(x, Record::Snapshot(_) | Record::NamespaceMounts(_)));
    for x in r.iter_mut() {
        if let Record::Event(e) = x {
            e.task.comm = k("runc");
            if let Action::Fsconfig { value, .. } = &mut e.action {
                *value = k("v");
            }
        }
    }
    r
}

#[test]
fn truncation_at_every_offset_stops_at_the_last_whole_record() {
    let recs = small();
    let full = encode_to_vec(&header(), &recs);
    // Record i ends where the encoding of the first i records ends (the encoding is prefix-stable).
    let bounds: Vec<usize> = (0..=recs.len())
        .map(|i| encode_to_vec(&header(), &recs[..i]).len())
        .collect();
    let header_end = bounds[0];
    let spans = frame_spans(&full);
    assert_eq!(spans.last().unwrap().1, full.len());
    for len in 0..full.len() {
        let cut = full[..len].to_vec();
        let r = CaptureReader::from_bytes("cut.cap", cut);
        if len < header_end {
            let e = r.err().expect("a file cut inside its header cannot open");
            assert!(e.to_string().starts_with("cut.cap: "), "{e}");
            continue;
        }
        let mut r = r.unwrap();
        let got: Vec<Record> = r
            .by_ref()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("cut at {len}: {e}"));
        let whole = bounds.iter().rposition(|&b| b <= len).unwrap();
        assert_eq!(got, recs[..whole], "cut at {len}");
        let at_boundary = len == header_end || spans.iter().any(|s| s.1 == len);
        match r.stopped_at() {
            None => assert!(at_boundary, "cut at {len} inside a frame was not reported"),
            Some((p, off)) => {
                assert!(!at_boundary, "cut at {len} on a boundary reported as torn");
                assert_eq!(p, PathBuf::from("cut.cap"));
                assert!(
                    spans.iter().any(|s| s.0 as u64 == off && s.1 > len),
                    "{off}"
                );
            }
        }
    }
}

/// A writer's flush is one block of many records: a file cut anywhere keeps every block before
/// the cut whole, reports the torn one, and loses nothing else; a flipped byte anywhere in a block
/// is one error at that block.
#[test]
fn a_cut_or_damaged_block_loses_that_block_alone() {
    let dir = scratch("blocks");
    let path = dir.join("cap");
    let recs = small();
    let mut w = CaptureWriter::create(&path, &header(), RotateOptions::default()).unwrap();
    let mut flushed_after = Vec::new();
    for (i, rec) in recs.iter().enumerate() {
        w.write(rec).unwrap();
        if i % 3 == 2 || i + 1 == recs.len() {
            w.flush().unwrap();
            flushed_after.push(i + 1);
        }
    }
    w.finish().unwrap();
    let full = std::fs::read(&path).unwrap();
    let spans = frame_spans(&full);
    assert_eq!(spans.len(), flushed_after.len(), "one block per flush");
    assert_eq!(spans.last().unwrap().1, full.len());
    let header_end = spans[0].0;
    for len in header_end..full.len() {
        let mut r = CaptureReader::from_bytes("cut.cap", full[..len].to_vec()).unwrap();
        let got: Vec<Record> = r
            .by_ref()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("cut at {len}: {e}"));
        let whole_blocks = spans.iter().take_while(|s| s.1 <= len).count();
        let kept = whole_blocks.checked_sub(1).map_or(0, |b| flushed_after[b]);
        assert_eq!(got, recs[..kept], "cut at {len}");
        let torn = spans.iter().find(|s| s.0 < len && len < s.1);
        assert_eq!(
            r.stopped_at(),
            torn.map(|s| (PathBuf::from("cut.cap"), s.0 as u64)),
            "cut at {len}"
        );
    }
    for (b, &(start, end)) in spans.iter().enumerate() {
        for i in start..end {
            let mut bad = full.clone();
            bad[i] ^= 0x5a;
            let mut r = CaptureReader::from_bytes("flip.cap", bad).unwrap();
            let items: Vec<_> = r.by_ref().collect();
            let kept = b.checked_sub(1).map_or(0, |b| flushed_after[b]);
            assert!(
                items[..kept].iter().all(Result::is_ok),
                "flip at {i}: a record before the damaged block was lost"
            );
            if let Some(Err(e)) = items.get(kept) {
                assert!(
                    e.to_string()
                        .starts_with(&format!("flip.cap: corrupt capture at byte {start}: ")),
                    "flip at {i}: {e}"
                );
                assert_eq!(
                    items.len(),
                    kept + 1,
                    "flip at {i}: records after the error"
                );
            } else {
                // Only a block length grown past the end of the file reads as a torn tail.
                assert_eq!(items.len(), kept, "flip at {i}");
                assert!(r.stopped_at().is_some(), "flip at {i} went unnoticed");
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_bytes_never_pass_silently() {
    let recs = small();
    let full = encode_to_vec(&header(), &recs);
    for i in 0..full.len() {
        let mut bad = full.clone();
        bad[i] ^= 0x5a;
        let Ok(mut r) = CaptureReader::from_bytes("flip.cap", bad) else {
            continue;
        };
        let items: Vec<_> = r.by_ref().collect();
        let errors = items.iter().filter(|x| x.is_err()).count();
        assert!(errors <= 1, "flip at {i}: more than one error");
        if errors == 0 {
            // Only a torn-looking tail (a length field pointing past the end) may end quietly,
            // and then it must say so.
            assert!(r.stopped_at().is_some(), "flip at {i} went unnoticed");
            let ok: Vec<Record> = items.into_iter().map(Result::unwrap).collect();
            assert!(ok.len() < recs.len());
        }
    }
    // A payload byte inside a known frame: one error naming the file and that frame's offset.
    let spans = frame_spans(&full);
    let (s, e) = spans[spans.len() / 2];
    let mut bad = full.clone();
    bad[(s + e) / 2] ^= 1;
    let items: Vec<_> = CaptureReader::from_bytes("flip.cap", bad)
        .unwrap()
        .collect();
    let err = items.last().unwrap().as_ref().unwrap_err().to_string();
    assert_eq!(items.iter().filter(|x| x.is_err()).count(), 1);
    assert!(!err.contains('\n'));
    assert!(
        err.starts_with(&format!("flip.cap: corrupt capture at byte {s}: ")),
        "{err}"
    );
}

#[test]
fn foreign_newer_and_empty_files_are_refused() {
    let full = encode_to_vec(&header(), &small());
    let mut foreign = full.clone();
    foreign[0] = b'X';
    let e = CaptureReader::from_bytes("f.cap", foreign).err().unwrap();
    assert_eq!(
        e.to_string(),
        "f.cap: not an mntleak capture (bad magic at byte 0)"
    );
    let mut newer = full.clone();
    newer[8] = 99;
    let e = CaptureReader::from_bytes("n.cap", newer).err().unwrap();
    assert!(
        e.to_string()
            .starts_with("n.cap: capture format version 99 (byte 8) is newer"),
        "{e}"
    );
    let e = CaptureReader::from_bytes("e.cap", vec![]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "e.cap: corrupt capture at byte 0: the file is empty"
    );
    let e = CaptureReader::from_bytes("t.txt", b"hello world\n".to_vec())
        .err()
        .unwrap();
    assert!(e.to_string().contains("bad magic"));
    let e = CaptureReader::open(&[PathBuf::from("/nonexistent/x.cap")])
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("/nonexistent/x.cap: cannot open"));
}

fn churn_event(i: u64, cid: u64) -> Event {
    let id = format!("{:064x}", cid.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let merged = format!("/var/lib/docker/overlay2/{id}/merged");
    let comm = ["runc:[2:INIT]", "dockerd", "containerd-shim", "runc"][(i % 4) as usize];
    let action = match i % 8 {
        0 => Action::Mount {
            source: k("overlay"),
            target: k(&merged),
            fstype: k("overlay"),
            flags: 0,
        },
        1 => Action::Mount {
            source: k("proc"),
            target: k("/proc"),
            fstype: k("proc"),
            flags: 14,
        },
        2 => Action::Mount {
            source: k(&format!("/var/lib/docker/containers/{id}/hostname")),
            target: k(&format!("{merged}/etc/hostname")),
            fstype: k(""),
            flags: 4096 | 16384,
        },
        3 => Action::Clone {
            flags: 0x6c02_0000 | 17,
            clone3: false,
        },
        4 => Action::Umount {
            target: k(&merged),
            flags: 2,
        },
        5 => Action::Unlink {
            dirfd: -100,
            path: k(&merged),
            rmdir: true,
            call: UnlinkCall::Rmdir,
        },
        6 => Action::Exec {
            filename: k("/usr/bin/runc"),
        },
        _ => Action::Exit,
    };
    Event {
        task: task(
            1_000_000_000 + i * 37_000,
            10_000 + (cid as u32 % 500) * 7,
            k(comm),
            MntNs {
                id: 0x1_0000_0000 + cid,
                inum: 4026532000 + cid as u32,
            },
        ),
        action,
        ret: if i % 8 >= 6 { None } else { Some(0) },
        new_mnt_ns: None,
        dir: None,
        resolved: [None, None],
    }
}

#[test]
fn bytes_per_event_on_container_churn() {
    // 2,000 containers, 32 events each (mounts of per-container paths, clone, umount, rmdir, exec).
    let recs: Vec<Record> = (0..64_000u64)
        .map(|i| Record::Event(churn_event(i, i / 32)))
        .collect();
    let bytes = encode_to_vec(&header(), &recs).len();
    let per = bytes as f64 / recs.len() as f64;
    println!(
        "capture size on container churn: {per:.1} bytes/event ({bytes} bytes, {} events)",
        recs.len()
    );
    assert!(per <= 48.0, "{per} bytes per event");
}

#[test]
fn rotation_replays_in_order_and_loses_nothing() {
    let dir = scratch("rotate");
    let path = dir.join("cap");
    let snap = match &every_record()[0] {
        Record::Snapshot(s) => s.clone(),
        _ => unreachable!(),
    };
    let mut recs = vec![Record::Snapshot(snap)];
    recs.extend((0..3000u64).map(|i| Record::Event(churn_event(i, i / 32))));
    let mut w = CaptureWriter::create(
        &path,
        &header(),
        RotateOptions {
            size: Some(16 << 10),
            keep: None,
        },
    )
    .unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
    let set = rotated_set(&path);
    assert!(set.len() >= 4, "only {} files", set.len());
    for p in &set {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len < (16 << 10) + 4096, "{} is {len} bytes", p.display());
    }
    let (back, stopped) = read_all(&set);
    assert_eq!(stopped, None);
    assert_eq!(back.len(), recs.len());
    assert_eq!(back, recs);
    // The newest file alone: header, the re-emitted snapshot, then its own events.
    let (last, _) = read_all(&set[set.len() - 1..]);
    assert_eq!(last[0], recs[0]);
    assert_eq!(last[1..], recs[recs.len() - (last.len() - 1)..]);

    // A file of another run in the set is refused, naming it.
    let other = dir.join("other");
    let mut h = header();
    h.monotonic_to_wall_ns += 1;
    let mut w = CaptureWriter::create(&other, &h, RotateOptions::default()).unwrap();
    w.write(&recs[1]).unwrap();
    w.finish().unwrap();
    let mut r = CaptureReader::open(&[set[set.len() - 1].clone(), other.clone()]).unwrap();
    let e = r.find_map(Result::err).unwrap().to_string();
    assert_eq!(
        e,
        format!(
            "{}: not part of the same capture run as {} (the headers differ); give one run's files, oldest first",
            other.display(),
            set[set.len() - 1].display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();

    // keep = 2: three files remain and they are the newest records, in order.
    let dir = scratch("rotate-keep");
    let path = dir.join("cap");
    let mut w = CaptureWriter::create(
        &path,
        &header(),
        RotateOptions {
            size: Some(8 << 10),
            keep: Some(2),
        },
    )
    .unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    drop(w);
    let set = rotated_set(&path);
    assert_eq!(set.len(), 3);
    let (back, _) = read_all(&set);
    assert_eq!(
        back[0], recs[0],
        "the oldest kept file starts with the snapshot"
    );
    assert_eq!(back[1..], recs[recs.len() - (back.len() - 1)..]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn capture_files_are_0600_even_when_replacing_a_file() {
    let dir = scratch("mode");
    let path = dir.join("cap");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(&path, &small());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let (back, _) = read_all(&[path]);
    assert_eq!(back, small());
    // Never through a symlink.
    let link = dir.join("link");
    std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
    let e = CaptureWriter::create(&link, &header(), RotateOptions::default())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("cannot create the capture file"),
        "{e}"
    );
    assert!(!dir.join("elsewhere").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `f` on a thread with its own mount namespace in which `dir` is a 64 KiB tmpfs.
fn with_small_tmpfs(dir: &Path, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls on this thread; unshare(CLONE_NEWNS) also unshares the
            // thread's fs_struct, so the rest of the test process keeps the host namespace.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare");
                let root = c"/";
                assert_eq!(
                    libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null()
                    ),
                    0
                );
                let d = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
                let opts = c"size=64k,mode=0700";
                assert_eq!(
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        d.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        opts.as_ptr().cast()
                    ),
                    0,
                    "mount tmpfs: {}",
                    std::io::Error::last_os_error()
                );
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                libc::umount2(d.as_ptr(), libc::MNT_DETACH);
                if let Err(p) = res {
                    std::panic::resume_unwind(p);
                }
            }
        });
    });
}

#[test]
fn full_disk_names_the_file_and_keeps_what_was_flushed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("MNTLEAK_REQUIRE_BPF").is_none(),
            "the full-disk test needs root"
        );
        eprintln!("skipped: the full-disk test needs root (a tmpfs in a private namespace)");
        return;
    }
    let dir = scratch("full");
    let path = dir.join("cap");
    with_small_tmpfs(&dir, || {
        let mut w = CaptureWriter::create(&path, &header(), RotateOptions::default()).unwrap();
        let mut written = Vec::new();
        let err = loop {
            // Unique long paths: the dictionary grows until the disk is full.
            let i = written.len() as u64;
            let mut ev = churn_event(i, i);
            ev.action = Action::Mount {
                source: k(&format!("/src/{i:0200}")),
                target: k("/t"),
                fstype: k("tmpfs"),
                flags: 0,
            };
            let rec = Record::Event(ev);
            if let Err(e) = w.write(&rec) {
                break e;
            }
            written.push(rec);
            if written.len() % 10 == 0
                && let Err(e) = w.flush()
            {
                break e;
            }
            assert!(written.len() < 100_000, "the disk never filled");
        };
        let msg = err.to_string();
        let durable = w.records_written();
        assert!(durable > 0 && durable < written.len() as u64 + 1);
        assert!(
            msg.starts_with(&format!("{}: write failed at byte ", path.display())),
            "{msg}"
        );
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(
            msg.contains(&format!(
                "; {durable} records were safely written before it"
            )),
            "{msg}"
        );
        // Later calls keep failing the same way instead of writing a hole.
        assert!(w.flush().is_err());
        drop(w);
        let (back, stopped) = read_all(std::slice::from_ref(&path));
        assert_eq!(
            stopped, None,
            "the file was cut back to the last whole flush"
        );
        assert_eq!(back.len() as u64, durable);
        assert_eq!(back, written[..durable as usize]);
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rendering_escapes_hostile_strings_and_names_errors() {
    let ev = Event {
        task: task(0, 42, k("evil\x1b]0;pwned\x07"), NS_C),
        action: Action::Unlink {
            dirfd: -100,
            path: KStr {
                text: "/x\u{202e}\n".into(),
                truncated: true,
            },
            rmdir: true,
            call: UnlinkCall::Unlinkat,
        },
        ret: Some(-16),
        new_mnt_ns: None,
        dir: None,
        resolved: [None, None],
    };
    let wall = 1_764_601_152_123_456_789;
    let line = event_line(&ev, wall);
    assert_eq!(
        line,
        "2025-12-01T14:59:12.123Z 42/43(evil\\x1b]0;pwned\\x07) mnt:4026532301 \
         unlinkat(AT_FDCWD, \"/x\\u{202e}\\n\"..., AT_REMOVEDIR) = -1 EBUSY"
    );
    assert!(!line.chars().any(|c| c.is_control()));
    let j = event_json(&ev, wall);
    assert_eq!(j["kind"], "event");
    assert_eq!(j["syscall"], "unlinkat");
    assert_eq!(j["errno"], "EBUSY");
    assert_eq!(j["ret"], -16);
    assert_eq!(j["comm"], "evil\x1b]0;pwned\x07");
    assert_eq!(j["pathname"], "/x\u{202e}\n");
    assert_eq!(j["flags"], serde_json::json!(["AT_REMOVEDIR"]));
    assert_eq!(j["truncated"], serde_json::json!(["pathname"]));
    assert_eq!(j["mnt_ns"], 4026532301u32);
    let mount = Event {
        action: Action::Mount {
            source: k("/a"),
            target: k("/b"),
            fstype: k(""),
            flags: 0xC0ED_0000 | 4096 | 16384,
        },
        ret: Some(0),
        ..ev.clone()
    };
    assert!(
        event_line(&mount, 0)
            .ends_with("mount(\"/a\", \"/b\", \"\", MS_MGC_VAL|MS_BIND|MS_REC) = 0"),
        "{}",
        event_line(&mount, 0)
    );
    assert_eq!(
        event_json(&mount, 0)["mountflags"],
        serde_json::json!(["MS_MGC_VAL", "MS_BIND", "MS_REC"])
    );
    assert_eq!(format_wall(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_wall(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(
        format_wall(951_782_400_000_000_000),
        "2000-02-29T00:00:00.000Z"
    );
    assert_eq!(
        lost_line(5, 0, 1_000_000),
        "5 events lost between 1970-01-01T00:00:00.000Z and 1970-01-01T00:00:00.001Z"
    );
    // Every record variant renders as one line without raw control characters, and as JSON
    // that parses back, with the stable keys.
    for r in every_record() {
        let Record::Event(e) = r else { continue };
        let line = event_line(&e, wall);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.contains(&format!(" {}(", e.action.name())), "{line}");
        let j = event_json(&e, wall);
        let back: serde_json::Value = serde_json::from_str(&j.to_string()).unwrap();
        assert_eq!(back, j);
        for key in [
            "kind",
            "time",
            "ts_ns",
            "pid",
            "tid",
            "ppid",
            "comm",
            "mnt_ns",
            "mnt_ns_id",
            "net_ns",
            "syscall",
            "ret",
            "errno",
        ] {
            assert!(j.get(key).is_some(), "{key} missing in {j}");
        }
    }
    let clone = Event {
        action: Action::Clone {
            flags: 0x0002_0000 | 17,
            clone3: false,
        },
        ret: Some(4300),
        new_mnt_ns: Some(NS_HOST),
        ..ev.clone()
    };
    assert!(
        event_line(&clone, 0).ends_with("clone(CLONE_NEWNS|SIGCHLD) = 4300 -> mnt:4026531841"),
        "{}",
        event_line(&clone, 0)
    );
    let mut s = Summary::default();
    for r in every_record() {
        s.add(&r);
    }
    assert_eq!(s.events, 20);
    assert_eq!(s.lost, 17);
    assert_eq!(s.by_syscall()["clone"], 1);
    assert_eq!(s.render_json()["kind"], "summary");
    assert!(s.render_text().starts_with("summary: 20 events, 17 lost\n"));
}

#[test]
fn oversized_records_are_refused_and_the_capture_stays_readable() {
    let dir = scratch("large");
    let path = dir.join("cap");
    let mut w = CaptureWriter::create(&path, &header(), RotateOptions::default()).unwrap();
    let before = small();
    for r in &before {
        w.write(r).unwrap();
    }
    let huge = Record::Event(Event {
        action: Action::Chroot {
            path: k(&"x".repeat(mntleak::capture::MAX_FRAME + 1)),
        },
        ..churn_event(0, 0)
    });
    let e = w.write(&huge).unwrap_err();
    assert!(e.to_string().contains("exceeds the frame limit"), "{e}");
    // Strings the refused record introduced must not be referenced by later records.
    let after = vec![
        Record::Event(Event {
            action: Action::Chroot { path: k("/") },
            ..churn_event(0, 0)
        }),
        Record::Event(churn_event(2, 1)),
    ];
    for r in &after {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
    let (back, _) = read_all(&[path]);
    assert_eq!(back, [before, after].concat());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A namespace listing interleaves a container's paths with fs types, sources and options. Each
/// new path is stored as the earlier string it extends plus its own suffix, whatever came between,
/// so the container's 64-character id is in the file once.
#[test]
fn a_listing_of_container_paths_stores_the_container_id_once() {
    let id = format!("{:064x}", 0x1234_5678_9abc_def0_u64);
    let root = format!("/var/lib/docker/overlay2/{id}/merged");
    let subs = [
        "",
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/hosts",
    ];
    let mounts: Vec<MountInfo> = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| MountInfo {
            mnt_id: 100 + i as u64,
            parent_id: 99 + i as u64,
            mountpoint: k(&format!("{root}{sub}")),
            fstype: k(["overlay", "proc", "tmpfs", "devpts", "sysfs"][i % 5]),
            source: k(&format!("src{i}")),
            options: k(&format!("rw,nosuid,relatime,mode={i}")),
            ..MountInfo::default()
        })
        .collect();
    let rec = Record::NamespaceMounts(NamespaceListing {
        ts_ns: 1,
        read_end_ns: 1,
        ns: MntNs { id: 1, inum: 1 },
        mounts,
    });
    let data = encode_to_vec(&header(), std::slice::from_ref(&rec));
    let copies = data
        .windows(id.len())
        .filter(|w| *w == id.as_bytes())
        .count();
    assert_eq!(copies, 1);
    let back = CaptureReader::from_bytes("ids.cap", data)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(back, [rec]);
}

#[test]
fn a_small_frame_cannot_expand_without_bound() {
    // One 64 KiB dictionary string referenced by every field of thousands of mounts: a 40 KiB
    // frame that would decode to gigabytes. The reader must refuse it, not try.
    let s = k(&"m".repeat(64 << 10));
    let m = MountInfo {
        root: s.clone(),
        mountpoint: s.clone(),
        fstype: s.clone(),
        source: s.clone(),
        options: s,
        ..MountInfo::default()
    };
    let rec = Record::NamespaceMounts(NamespaceListing {
        ts_ns: 1,
        read_end_ns: 1,
        ns: MntNs { id: 1, inum: 1 },
        mounts: vec![m],
    });
    let mut d = encode_to_vec(&header(), &[rec]);
    // One block: its length, the string's frame, then the listing's frame, then the CRC.
    let (start, end) = *frame_spans(&d).last().unwrap();
    let (_, block_vlen) = read_varint(&d[start..]);
    let (string_len, string_vlen) = read_varint(&d[start + block_vlen..]);
    let listing = start + block_vlen + string_vlen + string_len as usize;
    let payload = d[listing + 2..end - 4].to_vec(); // 1-byte length, type
    assert_eq!(&payload[..4], &[1, 1, 1, 1], "ts, ns id, ns inum, count");
    assert_eq!(
        payload.last(),
        Some(&0),
        "the read's duration ends the record"
    );
    let one = &payload[4..payload.len() - 1];
    let n = 4000u64;
    let mut body = vec![13u8, 1, 1, 1]; // type NamespaceMounts, ts, ns
    body.extend(varint(n));
    for _ in 0..n {
        body.extend_from_slice(one);
    }
    body.push(0);
    let mut frames = d[start + block_vlen..listing].to_vec();
    frames.extend(varint(body.len() as u64));
    frames.extend_from_slice(&body);
    d.truncate(start);
    d.extend(varint(frames.len() as u64));
    d.extend_from_slice(&frames);
    d.extend_from_slice(&[0; 4]);
    mntleak::capture::fix_checksums(&mut d);
    let items: Vec<_> = CaptureReader::from_bytes("bomb.cap", d).unwrap().collect();
    assert_eq!(items.len(), 1);
    let e = items[0].as_ref().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "bomb.cap: corrupt capture at byte {listing}: record expands beyond"
        )),
        "{e}"
    );
}

#[test]
fn a_snapshot_bigger_than_the_rotation_size_does_not_rotate_every_record() {
    let dir = scratch("rotate-big");
    let path = dir.join("cap");
    let mut recs = vec![every_record().remove(0)];
    recs.extend((0..400u64).map(|i| Record::Event(churn_event(i, i / 32))));
    let mut w = CaptureWriter::create(
        &path,
        &header(),
        RotateOptions {
            size: Some(2048),
            keep: None,
        },
    )
    .unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
    let set = rotated_set(&path);
    // The snapshot alone exceeds 2 KiB; each file still holds at least 1 KiB of events.
    assert!(std::fs::metadata(&set[0]).unwrap().len() > 2048);
    assert!(set.len() > 2 && set.len() < 40, "{} files", set.len());
    let (back, _) = read_all(&set);
    assert_eq!(back, recs);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `replay` reads ahead on a second thread: from a torn or a corrupt capture it must still print
/// every record before the damage, in order, and end as the reader does (torn: a note and exit 0;
/// corrupt: one error line and exit 2). 1000 events span several of the reader's batches, written
/// in blocks of 10 (a flush every 10 records).
#[test]
fn replay_prints_every_record_before_the_damage() {
    let dir = scratch("damaged");
    let recs: Vec<Record> = (0..1000)
        .map(|i| Record::Event(churn_event(i, i / 40)))
        .collect();
    let good = dir.join("good.mntcap");
    let mut w = CaptureWriter::create(&good, &header(), RotateOptions::default()).unwrap();
    for chunk in recs.chunks(10) {
        for rec in chunk {
            w.write(rec).unwrap();
        }
        w.flush().unwrap();
    }
    w.finish().unwrap();
    let data = std::fs::read(&good).unwrap();
    let printed = |path: &Path| {
        let out = mntleak_tests::run_tracer(&["replay", "--json", path.to_str().unwrap()]);
        let ts: Vec<u64> = out
            .json()
            .iter()
            .filter(|v| v["kind"] == "event")
            .map(|v| v["ts_ns"].as_u64().unwrap())
            .collect();
        (out, ts)
    };
    let (out, all) = printed(&good);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(all.len(), 1000);

    let spans = frame_spans(&data);
    let (start, end) = *spans.last().unwrap();
    let torn = dir.join("torn.mntcap");
    std::fs::write(&torn, &data[..(start + end) / 2]).unwrap();
    let (out, ts) = printed(&torn);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.contains("ends inside a write at byte"),
        "{out:?}"
    );
    // A torn write loses its block, and nothing before it.
    assert_eq!(ts, all[..990]);

    let (start, end) = spans[spans.len() * 2 / 3];
    let mut bad = data.clone();
    bad[(start + end) / 2] ^= 0x5a;
    let corrupt = dir.join("corrupt.mntcap");
    std::fs::write(&corrupt, &bad).unwrap();
    // What the library reader yields before its error: the records replay must have printed.
    let before = CaptureReader::open(std::slice::from_ref(&corrupt))
        .unwrap()
        .take_while(Result::is_ok)
        .filter(|r| matches!(r, Ok(Record::Event(_))))
        .count();
    assert!(before > 300 && before < 1000, "{before}");
    let (out, ts) = printed(&corrupt);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("corrupt capture at byte"), "{out:?}");
    assert_eq!(ts, all[..before]);
}
