//! Turns the wire struct (`mntleak_common::Event`) into a [`model::Event`]. Never panics: a
//! capture or a fuzzer may hand it any bytes.
//!
//! Argument layout per kind (what the eBPF side writes; `s0`/`s1`/`s2` are the string slots):
//!
//! | kind          | args                                                         | strings                     |
//! |---------------|--------------------------------------------------------------|-----------------------------|
//! | mount         | 0 mountflags (the data page is not read)                     | s0 source, s1 target, s2 fstype |
//! | umount2       | 0 flags                                                      | s0 target                   |
//! | unlink, rmdir | 0 AT_FDCWD                                                   | s0 pathname                 |
//! | unlinkat      | 0 dirfd, 1 flags                                             | s0 pathname                 |
//! | unshare       | 0 flags                                                      |                             |
//! | setns         | 0 fd, 1 nstype                                               |                             |
//! | clone         | 0 flags                                                      |                             |
//! | clone3        | 0 `clone_args.flags` (read from user memory), 1 size         |                             |
//! | fsopen        | 0 flags                                                      | s2 fsname                   |
//! | fsconfig      | 0 fd, 1 cmd, 2 aux                                           | s2 key, s0 value (string and path commands only) |
//! | fsmount       | 0 fd, 1 flags, 2 attr_flags                                  |                             |
//! | move_mount    | 0 from_dirfd, 1 to_dirfd, 2 flags                            | s0 from_path, s1 to_path    |
//! | open_tree     | 0 dirfd, 1 flags                                             | s0 path                     |
//! | mount_setattr | 0 dirfd, 1 flags, 2 attr_set, 3 attr_clr, 4 propagation, 5 size | s0 path                  |
//! | pivot_root    |                                                              | s0 new_root, s1 put_old     |
//! | chroot        | 0 AT_FDCWD                                                   | s0 path                     |
//! | fork          | 0 child pid (tgid); `new_ns` = the child's namespaces        |                             |
//! | exec          | 0 old pid                                                    | s0 filename                 |
//! | exit          |                                                              |                             |
//!
//! `ret` is meaningful when `HAS_RET` is set (syscalls); for clone/clone3 it is the child pid
//! (in the initial pid namespace, like every pid here, when the fork program sent the event).
//! `new_ns` is meaningful when `HAS_NEW_NS` is set (unshare/setns after success, fork, clone
//! sent by the fork program).
//! `res[i]` is the kernel's resolution of string slot i when it is a path argument given as
//! `/proc/self/fd/N`, relative, or empty with a dirfd: a base directory for the first `skip`
//! bytes of the argument (all of a relative one: skip 0), to which the rest is relative.

use mntleak_common::{self as wire, EventKind, flags};

use crate::{
    engine::paths,
    model::{Action, Event, KStr, MntNs, ResolvedPath, Task, UnlinkCall},
    uapi,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("string slot {slot} claims {len} bytes, more than its {cap}-byte buffer")]
    BadStrLen { slot: usize, len: u16, cap: usize },
    #[error("event record is {got} bytes, expected at least {want}")]
    Short { got: usize, want: usize },
    #[error("resolved path {slot} is malformed: {what}")]
    BadResolved { slot: usize, what: &'static str },
}

/// A file descriptor from a raw 64-bit register: the kernel reads an `int`.
fn fd(v: u64) -> i32 {
    v as u32 as i32
}

fn comm(raw: &[u8]) -> KStr {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    KStr::from_bytes(&raw[..end], false)
}

/// The bytes of string slot `i` (empty when absent).
fn slot_bytes(raw: &wire::Event, i: usize) -> Result<&[u8], DecodeError> {
    let buf: &[u8] = match i {
        0 => &raw.str0,
        1 => &raw.str1,
        _ => &raw.str2,
    };
    if raw.flags & (1 << i) == 0 {
        return Ok(&[]);
    }
    let len = raw.str_len[i];
    buf.get(..len as usize).ok_or(DecodeError::BadStrLen {
        slot: i,
        len,
        cap: buf.len(),
    })
}

/// Path argument `i` as the kernel resolved it: its base joined with the rest of the argument.
fn resolved(raw: &wire::Event, i: usize) -> Result<Option<ResolvedPath>, DecodeError> {
    let r = &raw.res[i];
    if r.status != wire::res::OK {
        return Ok(None);
    }
    let bad = |what| DecodeError::BadResolved { slot: i, what };
    let base = r.path.get(..r.len as usize).ok_or(bad("length"))?;
    if base.first() != Some(&b'/') {
        return Err(bad("not absolute"));
    }
    let rest = slot_bytes(raw, i)?
        .get(r.skip as usize..)
        .ok_or(bad("skips past the argument"))?;
    let base = String::from_utf8_lossy(base);
    let rest = String::from_utf8_lossy(rest);
    Ok(Some(ResolvedPath {
        path: KStr::new(paths::resolve(
            "",
            Some(&base),
            rest.trim_start_matches('/'),
        )),
        mnt_id: r.mnt_id,
    }))
}

pub fn decode(raw: &wire::Event) -> Result<Event, DecodeError> {
    let kind = EventKind::from_u16(raw.kind).ok_or(DecodeError::UnknownKind(raw.kind))?;
    let slot = |i: usize| -> Result<KStr, DecodeError> {
        Ok(KStr::from_bytes(
            slot_bytes(raw, i)?,
            raw.flags & (1 << (flags::STR_TRUNCATED_SHIFT as usize + i)) != 0,
        ))
    };
    let a = raw.args;
    let action = match kind {
        EventKind::Mount => Action::Mount {
            source: slot(0)?,
            target: slot(1)?,
            fstype: slot(2)?,
            flags: a[0],
        },
        EventKind::Umount => Action::Umount {
            target: slot(0)?,
            flags: a[0],
        },
        EventKind::Unlink => Action::Unlink {
            dirfd: uapi::AT_FDCWD,
            path: slot(0)?,
            rmdir: false,
            call: UnlinkCall::Unlink,
        },
        EventKind::Rmdir => Action::Unlink {
            dirfd: uapi::AT_FDCWD,
            path: slot(0)?,
            rmdir: true,
            call: UnlinkCall::Rmdir,
        },
        EventKind::Unlinkat => Action::Unlink {
            dirfd: fd(a[0]),
            path: slot(0)?,
            rmdir: a[1] & uapi::AT_REMOVEDIR != 0,
            call: UnlinkCall::Unlinkat,
        },
        EventKind::Unshare => Action::Unshare { flags: a[0] },
        EventKind::Setns => Action::Setns {
            fd: fd(a[0]),
            nstype: a[1],
        },
        EventKind::Clone => Action::Clone {
            flags: a[0],
            clone3: false,
        },
        EventKind::Clone3 => Action::Clone {
            flags: a[0],
            clone3: true,
        },
        EventKind::Fsopen => Action::Fsopen {
            fstype: slot(2)?,
            flags: a[0],
        },
        EventKind::Fsconfig => Action::Fsconfig {
            fd: fd(a[0]),
            cmd: a[1] as u32,
            key: slot(2)?,
            value: slot(0)?,
        },
        EventKind::Fsmount => Action::Fsmount {
            fd: fd(a[0]),
            flags: a[1],
            attr_flags: a[2],
        },
        EventKind::MoveMount => Action::MoveMount {
            from_dirfd: fd(a[0]),
            from_path: slot(0)?,
            to_dirfd: fd(a[1]),
            to_path: slot(1)?,
            flags: a[2],
        },
        EventKind::OpenTree => Action::OpenTree {
            dirfd: fd(a[0]),
            path: slot(0)?,
            flags: a[1],
        },
        EventKind::MountSetattr => Action::MountSetattr {
            dirfd: fd(a[0]),
            path: slot(0)?,
            flags: a[1],
            attr_set: a[2],
            attr_clr: a[3],
            propagation: a[4],
        },
        EventKind::PivotRoot => Action::PivotRoot {
            new_root: slot(0)?,
            put_old: slot(1)?,
        },
        EventKind::Chroot => Action::Chroot { path: slot(0)? },
        EventKind::ProcessFork => Action::Fork { child: a[0] as u32 },
        EventKind::ProcessExec => Action::Exec { filename: slot(0)? },
        EventKind::ProcessExit => Action::Exit,
    };
    let args = action.path_args();
    let mut res = [None, None];
    for (i, r) in res.iter_mut().enumerate() {
        if args[i].is_some() {
            *r = resolved(raw, i)?;
        }
    }
    let t = &raw.task;
    Ok(Event {
        task: Task {
            ts_ns: t.ts_ns,
            pid: t.tgid,
            tid: t.tid,
            ppid: t.ppid,
            comm: comm(&t.comm),
            mnt_ns: MntNs {
                id: t.ns.mnt_ns_id,
                inum: t.ns.mnt_ns_inum,
            },
            net_ns_inum: t.ns.net_ns_inum,
            cgroup_id: t.cgroup_id,
        },
        action,
        ret: (raw.flags & flags::HAS_RET != 0).then_some(raw.ret),
        new_mnt_ns: (raw.flags & flags::HAS_NEW_NS != 0).then_some(MntNs {
            id: raw.new_ns.mnt_ns_id,
            inum: raw.new_ns.mnt_ns_inum,
        }),
        dir: None,
        resolved: res,
    })
}

/// The shortest record: the kernel sends an event up to its last string present (see
/// `wire::Event::wire_len`), or whole when it carries a path resolution.
const HEADER: usize = wire::Event::HEADER_LEN;

/// Decodes an event from raw ring-buffer or capture bytes (any alignment).
pub fn decode_bytes(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw = wire_from_bytes(bytes).ok_or(DecodeError::Short {
        got: bytes.len(),
        want: HEADER,
    })?;
    decode(&raw)
}

/// The wire struct from a ring-buffer record: a whole `wire::Event`, or its first bytes (the rest
/// is zero: no resolution, empty strings); `None` if shorter than the header.
pub fn wire_from_bytes(bytes: &[u8]) -> Option<wire::Event> {
    // SAFETY: integers and byte arrays only: all zero bytes are a valid `wire::Event`.
    let mut raw: wire::Event = unsafe { std::mem::zeroed() };
    wire_fill(bytes, &mut raw).then_some(raw)
}

/// [`wire_from_bytes`] over an existing `raw` (the live reader keeps one): one copy of the
/// record's bytes, where building a new value copies the whole struct three times. False, and
/// `raw` unspecified, if the record is shorter than [`wire::Event::HEADER_LEN`].
pub fn wire_fill(bytes: &[u8], raw: &mut wire::Event) -> bool {
    let size = std::mem::size_of::<wire::Event>();
    let n = bytes.len().min(size);
    if n < HEADER {
        return false;
    }
    // SAFETY: `raw` is exactly `size` bytes, and every bit pattern is a valid `wire::Event`
    // (integers and byte arrays only).
    let dst =
        unsafe { std::slice::from_raw_parts_mut((raw as *mut wire::Event).cast::<u8>(), size) };
    dst[..n].copy_from_slice(&bytes[..n]);
    // What the record does not carry is zero: missing resolutions are `res::NONE`.
    dst[n..].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(kind: EventKind) -> wire::Event {
        let mut e: wire::Event =
            wire_from_bytes(&[0u8; std::mem::size_of::<wire::Event>()]).unwrap();
        e.kind = kind as u16;
        e
    }

    fn put(buf: &mut [u8], s: &[u8]) -> u16 {
        buf[..s.len()].copy_from_slice(s);
        s.len() as u16
    }

    #[test]
    fn mount_with_ret_and_truncation() {
        let mut e = blank(EventKind::Mount);
        e.str_len[0] = put(&mut e.str0, b"none");
        e.str_len[1] = put(&mut e.str1, b"/tmp/x");
        e.str_len[2] = put(&mut e.str2, b"tmpfs");
        e.flags = flags::STR_PRESENT | (1 << (flags::STR_TRUNCATED_SHIFT + 1)) | flags::HAS_RET;
        e.args[0] = uapi::MS_BIND;
        e.ret = -16;
        e.task.tgid = 42;
        e.task.comm[..5].copy_from_slice(b"mount");
        let d = decode(&e).unwrap();
        assert_eq!(d.ret, Some(-16));
        assert_eq!(d.task.pid, 42);
        assert_eq!(d.task.comm.as_str(), "mount");
        assert_eq!(d.new_mnt_ns, None);
        match d.action {
            Action::Mount {
                source,
                target,
                fstype,
                flags,
            } => {
                assert_eq!(source, KStr::new("none"));
                assert_eq!(target.as_str(), "/tmp/x");
                assert!(target.truncated);
                assert_eq!(fstype.as_str(), "tmpfs");
                assert_eq!(flags, uapi::MS_BIND);
            }
            other => panic!("wrong action {other:?}"),
        }
    }

    #[test]
    fn strings_that_are_not_utf8_decode_lossily() {
        let mut e = blank(EventKind::Umount);
        // A byte that is never UTF-8, then a valid two-byte character.
        e.str_len[0] = put(&mut e.str0, b"/mnt/a\xffb/\xc3\xa9");
        e.flags = 1; // string slot 0 present
        e.task.comm[..4].copy_from_slice(b"c\x1b[m");
        match decode(&e).unwrap().action {
            Action::Umount { target, .. } => assert_eq!(target.as_str(), "/mnt/a\u{fffd}b/\u{e9}"),
            other => panic!("wrong action {other:?}"),
        }
        assert_eq!(decode(&e).unwrap().task.comm.as_str(), "c\x1b[m");
    }

    #[test]
    fn unlinkat_removedir_and_negative_dirfd() {
        let mut e = blank(EventKind::Unlinkat);
        e.args[0] = (-100i32) as u32 as u64;
        e.args[1] = uapi::AT_REMOVEDIR;
        e.str_len[0] = put(&mut e.str0, b"merged");
        e.flags = 1;
        let d = decode(&e).unwrap();
        assert_eq!(
            d.action,
            Action::Unlink {
                dirfd: -100,
                path: KStr::new("merged"),
                rmdir: true,
                call: UnlinkCall::Unlinkat
            }
        );
        assert_eq!(d.ret, None);
        assert_eq!(d.action.name(), "unlinkat");
    }

    fn put_res(e: &mut wire::Event, i: usize, base: &[u8], skip: u16, mnt_id: u64) {
        let r = &mut e.res[i];
        r.status = wire::res::OK;
        r.len = put(&mut r.path, base);
        r.skip = skip;
        r.mnt_id = mnt_id;
    }

    #[test]
    fn kernel_resolved_paths_join_the_rest_of_the_argument() {
        let mut e = blank(EventKind::Mount);
        e.str_len[0] = put(&mut e.str0, b"../x/./y");
        e.str_len[1] = put(&mut e.str1, b"/proc/self/fd/6");
        e.flags = flags::STR_PRESENT | flags::HAS_RET;
        e.args[0] = uapi::MS_BIND;
        put_res(&mut e, 0, b"/run/c/rootfs", 0, 7);
        put_res(&mut e, 1, b"/var/lib/x/merged", 15, 9);
        let d = decode(&e).unwrap();
        let r0 = d.resolved[0].as_ref().unwrap();
        assert_eq!((r0.path.as_str(), r0.mnt_id), ("/run/c/x/y", 7));
        assert_eq!(d.resolved_path(1), Some("/var/lib/x/merged"));
        // The argument itself is kept as the caller wrote it.
        match &d.action {
            Action::Mount { target, .. } => assert_eq!(target.as_str(), "/proc/self/fd/6"),
            other => panic!("wrong action {other:?}"),
        }

        // `/proc/self/fd/N/sub`: the rest is below the fd's directory; `.` is the base itself.
        let mut e = blank(EventKind::PivotRoot);
        e.str_len[0] = put(&mut e.str0, b"/proc/thread-self/fd/12/sub");
        e.str_len[1] = put(&mut e.str1, b".");
        e.flags = 0b11;
        put_res(&mut e, 0, b"/a", 23, 0);
        put_res(&mut e, 1, b"/", 0, 0);
        let d = decode(&e).unwrap();
        assert_eq!(d.resolved_path(0), Some("/a/sub"));
        assert_eq!(d.resolved_path(1), Some("/"));

        // Only path arguments are resolved: a status on a kind without them is ignored.
        let mut e = blank(EventKind::Unshare);
        put_res(&mut e, 0, b"/x", 0, 0);
        assert_eq!(decode(&e).unwrap().resolved, [None, None]);
        // A failed resolution is no resolution.
        let mut e = blank(EventKind::Umount);
        e.res[0].status = wire::res::UNREACHABLE;
        assert_eq!(decode(&e).unwrap().resolved, [None, None]);
    }

    #[test]
    fn records_end_after_their_last_string() {
        let mut e = blank(EventKind::Umount);
        e.str_len[0] = put(&mut e.str0, b"/x");
        e.flags = 1;
        // SAFETY: reading the bytes of a plain-data struct.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(
                (&e as *const wire::Event).cast::<u8>(),
                std::mem::size_of::<wire::Event>(),
            )
        };
        let sent = e.wire_len();
        assert_eq!(sent, HEADER + 8, "the header and \"/x\", 8-aligned");
        let short = decode_bytes(&bytes[..sent]).unwrap();
        assert_eq!(short, decode(&e).unwrap());
        assert_eq!(short.resolved, [None, None]);
        assert!(decode_bytes(&bytes[..HEADER - 1]).is_err());
    }

    #[test]
    fn bad_resolved_paths_are_errors() {
        let mut e = blank(EventKind::Umount);
        e.flags = 1;
        e.str_len[0] = put(&mut e.str0, b".");
        put_res(&mut e, 0, b"/x", 2, 0);
        assert_eq!(
            decode(&e).unwrap_err(),
            DecodeError::BadResolved {
                slot: 0,
                what: "skips past the argument"
            }
        );
        e.res[0].skip = 0;
        e.res[0].len = 300;
        assert!(matches!(
            decode(&e),
            Err(DecodeError::BadResolved { slot: 0, .. })
        ));
        e.res[0].len = put(&mut e.res[0].path, b"rel");
        assert!(decode(&e).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut e = blank(EventKind::Mount);
        e.flags = 1;
        e.str_len[0] = 300;
        assert!(matches!(
            decode(&e),
            Err(DecodeError::BadStrLen { slot: 0, .. })
        ));
        let mut e = blank(EventKind::Fsopen);
        e.flags = 4;
        e.str_len[2] = 65;
        assert!(decode(&e).is_err());
        e.kind = 999;
        assert_eq!(decode(&e).unwrap_err(), DecodeError::UnknownKind(999));
        assert!(decode_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn every_kind_decodes_from_arbitrary_bytes() {
        // A cheap stand-in for fuzzing: pseudo-random bytes for every kind must not panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut bytes = vec![0u8; std::mem::size_of::<wire::Event>()];
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let mut e = wire_from_bytes(&bytes).unwrap();
            if round % 2 == 0 {
                e.kind = [
                    1u16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 32, 33, 34,
                ][round / 2 % 20];
            }
            let _ = decode(&e);
        }
    }
}
