//! `listmount(2)` / `statmount(2)` (Linux >= 6.8; foreign namespaces by id since 6.10) through
//! `libc::syscall`, with struct layouts checked against the 6.18 uapi `include/uapi/linux/mount.h`,
//! and a `/proc/<pid>/mountinfo` parser for kernels without them.

use std::sync::OnceLock;

use super::SysError;
use crate::model::{KStr, MountInfo, Propagation};
use crate::uapi;

/// `struct mnt_id_req`, version 1 (32 bytes): `mnt_ns_id` selects a foreign namespace.
#[repr(C)]
#[derive(Default)]
struct MntIdReq {
    size: u32,
    /// `mnt_ns_fd` / `mnt_fd` union in 6.18; 0 = use `mnt_ns_id`.
    mnt_ns_fd: u32,
    mnt_id: u64,
    /// statmount: request mask; listmount: last mount id listed (0 = start).
    param: u64,
    mnt_ns_id: u64,
}

/// `struct statmount` as of 6.18 (512 bytes, strings follow in `str[]`).
#[repr(C)]
#[derive(Clone, Copy)]
struct StatMount {
    size: u32,
    mnt_opts: u32,
    mask: u64,
    sb_dev_major: u32,
    sb_dev_minor: u32,
    sb_magic: u64,
    sb_flags: u32,
    fs_type: u32,
    mnt_id: u64,
    mnt_parent_id: u64,
    mnt_id_old: u32,
    mnt_parent_id_old: u32,
    mnt_attr: u64,
    mnt_propagation: u64,
    mnt_peer_group: u64,
    mnt_master: u64,
    propagate_from: u64,
    mnt_root: u32,
    mnt_point: u32,
    mnt_ns_id: u64,
    fs_subtype: u32,
    sb_source: u32,
    opt_num: u32,
    opt_array: u32,
    opt_sec_num: u32,
    opt_sec_array: u32,
    supported_mask: u64,
    mnt_uidmap_num: u32,
    mnt_uidmap: u32,
    mnt_gidmap_num: u32,
    mnt_gidmap: u32,
    spare2: [u64; 43],
}

const _: () = assert!(std::mem::size_of::<MntIdReq>() == uapi::MNT_ID_REQ_SIZE_VER1 as usize);
const _: () = assert!(std::mem::size_of::<StatMount>() == 512);
const _: () = assert!(std::mem::offset_of!(StatMount, mnt_ns_id) == 112);
const _: () = assert!(std::mem::offset_of!(StatMount, sb_source) == 124);
const _: () = assert!(std::mem::offset_of!(StatMount, supported_mask) == 144);

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

const WANT: u64 = uapi::STATMOUNT_SB_BASIC
    | uapi::STATMOUNT_MNT_BASIC
    | uapi::STATMOUNT_MNT_ROOT
    | uapi::STATMOUNT_MNT_POINT
    | uapi::STATMOUNT_FS_TYPE
    | uapi::STATMOUNT_MNT_NS_ID
    | uapi::STATMOUNT_MNT_OPTS
    | uapi::STATMOUNT_SB_SOURCE;

/// The mount ids of namespace `ns_id` (0 = the caller's), in the kernel's order (parents first).
pub fn list_mounts(ns_id: u64) -> Result<Vec<u64>, SysError> {
    const BATCH: usize = 512;
    let mut out = Vec::new();
    let mut buf = vec![0u64; BATCH];
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: uapi::MNT_ID_REQ_SIZE_VER1,
            mnt_id: uapi::LSMT_ROOT,
            param: last,
            mnt_ns_id: ns_id,
            ..Default::default()
        };
        // SAFETY: req and buf are valid for the sizes passed; the kernel writes at most BATCH ids.
        let ret = unsafe {
            libc::syscall(
                uapi::SYS_LISTMOUNT,
                &req as *const MntIdReq,
                buf.as_mut_ptr(),
                BATCH,
                0u32,
            )
        };
        if ret < 0 {
            return Err(SysError::last_os(format!(
                "listmount of mount namespace {ns_id}"
            )));
        }
        let n = ret as usize;
        out.extend_from_slice(&buf[..n]);
        if n < BATCH {
            return Ok(out);
        }
        last = buf[n - 1];
    }
}

/// One mount of namespace `ns_id` (0 = the caller's), by its 64-bit id.
pub fn stat_mount(mnt_id: u64, ns_id: u64) -> Result<MountInfo, SysError> {
    let what = || format!("statmount of mount {mnt_id} in mount namespace {ns_id}");
    // u64 elements keep the buffer 8-aligned for the header read below.
    let mut words = 1024usize; // 8 KiB: enough for almost every mount; grown on EOVERFLOW.
    loop {
        let mut buf = vec![0u64; words];
        let req = MntIdReq {
            size: uapi::MNT_ID_REQ_SIZE_VER1,
            mnt_id,
            param: WANT,
            mnt_ns_id: ns_id,
            ..Default::default()
        };
        // SAFETY: buf is words*8 bytes, passed as its size.
        let ret = unsafe {
            libc::syscall(
                uapi::SYS_STATMOUNT,
                &req as *const MntIdReq,
                buf.as_mut_ptr(),
                words * 8,
                0u32,
            )
        };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EOVERFLOW) && words < (1 << 20) {
                words *= 4;
                continue;
            }
            return Err(SysError::io(what(), err));
        }
        // SAFETY: the buffer is at least 512 bytes, 8-aligned, and StatMount is plain data.
        let sm: StatMount = unsafe { std::ptr::read(buf.as_ptr() as *const StatMount) };
        // SAFETY: reinterpreting initialised u64s as bytes.
        let bytes: &[u8] =
            unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, words * 8) };
        let used = (sm.size as usize).min(bytes.len());
        let strings = bytes
            .get(std::mem::size_of::<StatMount>()..used)
            .unwrap_or(&[]);
        return Ok(decode(&sm, strings));
    }
}

fn decode(sm: &StatMount, strings: &[u8]) -> MountInfo {
    let s = |bit: u64, off: u32| -> KStr {
        if sm.mask & bit == 0 {
            return KStr::default();
        }
        let tail = strings.get(off as usize..).unwrap_or(&[]);
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        KStr::from_bytes(&tail[..end], false)
    };
    let mut options = mount_attr_options(sm.mnt_attr);
    let sb_opts = s(uapi::STATMOUNT_MNT_OPTS, sm.mnt_opts);
    if !sb_opts.text.is_empty() {
        options.push(',');
        options.push_str(&sb_opts.text);
    }
    let prop = sm.mnt_propagation;
    let propagation = Propagation {
        shared: (prop & uapi::MS_SHARED != 0 && sm.mnt_peer_group != 0)
            .then_some(sm.mnt_peer_group as u32),
        master: (prop & uapi::MS_SLAVE != 0 && sm.mnt_master != 0).then_some(sm.mnt_master as u32),
        unbindable: prop & uapi::MS_UNBINDABLE != 0,
    };
    MountInfo {
        mnt_id: sm.mnt_id,
        parent_id: sm.mnt_parent_id,
        mnt_id_old: sm.mnt_id_old,
        dev_major: sm.sb_dev_major,
        dev_minor: sm.sb_dev_minor,
        root: s(uapi::STATMOUNT_MNT_ROOT, sm.mnt_root),
        mountpoint: s(uapi::STATMOUNT_MNT_POINT, sm.mnt_point),
        fstype: s(uapi::STATMOUNT_FS_TYPE, sm.fs_type),
        source: s(uapi::STATMOUNT_SB_SOURCE, sm.sb_source),
        options: KStr::new(options),
        propagation,
    }
}

/// Per-mount options as mountinfo's sixth field shows them.
fn mount_attr_options(attr: u64) -> String {
    let mut o = vec![if attr & MOUNT_ATTR_RDONLY != 0 {
        "ro"
    } else {
        "rw"
    }];
    for (bit, name) in [
        (MOUNT_ATTR_NOSUID, "nosuid"),
        (MOUNT_ATTR_NODEV, "nodev"),
        (MOUNT_ATTR_NOEXEC, "noexec"),
    ] {
        if attr & bit != 0 {
            o.push(name);
        }
    }
    o.push(match attr & MOUNT_ATTR_ATIME_MASK {
        MOUNT_ATTR_NOATIME => "noatime",
        MOUNT_ATTR_STRICTATIME => "strictatime",
        _ => "relatime",
    });
    if attr & MOUNT_ATTR_NODIRATIME != 0 {
        o.push("nodiratime");
    }
    if attr & MOUNT_ATTR_NOSYMFOLLOW != 0 {
        o.push("nosymfollow");
    }
    o.join(",")
}

/// Every mount of namespace `ns_id` (0 = the caller's). Mounts that vanish between `listmount` and
/// `statmount` are skipped.
pub fn namespace_mounts(ns_id: u64) -> Result<Vec<MountInfo>, SysError> {
    let ids = list_mounts(ns_id)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match stat_mount(id, ns_id) {
            Ok(m) => out.push(m),
            Err(e) if e.is_gone() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether this kernel has `listmount` with namespace ids (probed once).
pub fn listmount_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| match list_mounts(0) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("listmount unavailable: {e}");
            false
        }
    })
}

/// A namespace's mounts by the best method available: `listmount` by ns id, else the mountinfo of
/// a member process (`pid`).
pub fn namespace_mounts_any(
    ns_id: u64,
    pid: Option<u32>,
) -> Result<(Vec<MountInfo>, super::ScanMethod), SysError> {
    if ns_id != 0 && listmount_supported() {
        return Ok((namespace_mounts(ns_id)?, super::ScanMethod::Listmount));
    }
    let path = match pid {
        Some(p) => format!("/proc/{p}/mountinfo"),
        None => "/proc/self/mountinfo".to_string(),
    };
    Ok((read_mountinfo(&path)?, super::ScanMethod::ProcFallback))
}

/// Parse a mountinfo file. Hand-written rather than `procfs`'s because that keeps the octal escapes
/// (`\040`), maps a literal "none" source to nothing and reorders options.
pub fn read_mountinfo(path: &str) -> Result<Vec<MountInfo>, SysError> {
    let text = std::fs::read_to_string(path).map_err(|e| SysError::io(path, e))?;
    parse_mountinfo(&text).map_err(|msg| SysError::parse(path, msg))
}

/// Parse mountinfo text (see proc_pid_mountinfo(5)).
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| parse_line(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn parse_line(line: &str) -> Result<MountInfo, String> {
    let (head, tail) = line
        .split_once(" - ")
        .ok_or_else(|| "no ' - ' separator".to_string())?;
    let mut h = head.split(' ');
    let mut next = |name: &str| h.next().ok_or_else(|| format!("missing {name}"));
    let id: u32 = next("mount id")?.parse().map_err(|_| "bad mount id")?;
    let parent: u32 = next("parent id")?.parse().map_err(|_| "bad parent id")?;
    let (maj, min) = next("major:minor")?
        .split_once(':')
        .ok_or("bad major:minor")?;
    let root = unescape(next("root")?);
    let mountpoint = unescape(next("mount point")?);
    let mnt_opts = next("mount options")?.to_string();
    let mut propagation = Propagation::default();
    for f in h {
        if let Some(n) = f.strip_prefix("shared:") {
            propagation.shared = n.parse().ok();
        } else if let Some(n) = f.strip_prefix("master:") {
            propagation.master = n.parse().ok();
        } else if f == "unbindable" {
            propagation.unbindable = true;
        }
    }
    let mut t = tail.split(' ');
    let fstype = unescape(t.next().ok_or("missing fstype")?);
    let source = unescape(t.next().ok_or("missing source")?);
    let sb_opts = t.next().unwrap_or("");
    // statmount's sb options omit the superblock's ro/rw; drop it here too for equal strings.
    let sb_opts = sb_opts
        .strip_prefix("rw")
        .or_else(|| sb_opts.strip_prefix("ro"))
        .map(|r| r.strip_prefix(',').unwrap_or(r))
        .unwrap_or(sb_opts);
    let options = if sb_opts.is_empty() {
        mnt_opts
    } else {
        format!("{mnt_opts},{sb_opts}")
    };
    Ok(MountInfo {
        mnt_id: id as u64,
        parent_id: parent as u64,
        mnt_id_old: id,
        dev_major: maj.parse().map_err(|_| "bad major")?,
        dev_minor: min.parse().map_err(|_| "bad minor")?,
        root: KStr::new(root),
        mountpoint: KStr::new(mountpoint),
        fstype: KStr::new(fstype),
        source: KStr::new(source),
        options: KStr::new(options),
        propagation,
    })
}

/// Undo the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_line() {
        let l = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue";
        let m = parse_mountinfo(l).unwrap().remove(0);
        assert_eq!(m.mnt_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!((m.dev_major, m.dev_minor), (98, 0));
        assert_eq!(m.mountpoint.as_str(), "/mnt/a b");
        assert_eq!(m.propagation.shared, Some(2));
        assert_eq!(m.propagation.master, Some(1));
        assert_eq!(m.options.as_str(), "rw,noatime,errors=continue");
        assert!(parse_mountinfo("garbage").is_err());
    }

    #[test]
    fn attr_options() {
        assert_eq!(mount_attr_options(0x1 | 0x2 | 0x10), "ro,nosuid,noatime");
        assert_eq!(mount_attr_options(0), "rw,relatime");
    }
}
