//! Mount namespaces through nsfs: identity (`NS_GET_MNTNS_ID` + inode) and the walk over every mount
//! namespace (`NS_MNT_GET_NEXT`/`NS_MNT_GET_PREV`, Linux >= 6.11), which also finds namespaces kept
//! alive only by an fd or an nsfs bind mount.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::SysError;
use crate::model::MntNs;
use crate::uapi;

/// `NSFS_MAGIC`: the filesystem type of /proc/<pid>/ns/* and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `struct mnt_ns_info` (include/uapi/linux/nsfs.h).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct MntNsInfo {
    size: u32,
    nr_mounts: u32,
    mnt_ns_id: u64,
}

const _: () = assert!(std::mem::size_of::<MntNsInfo>() == 16);

/// A mount namespace found by the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsEntry {
    pub ns: MntNs,
    pub nr_mounts: u32,
}

/// The 64-bit id of the mount namespace behind an nsfs fd.
pub fn mnt_ns_id_of_fd(fd: &impl AsRawFd, what: &str) -> Result<u64, SysError> {
    let mut id: u64 = 0;
    // SAFETY: NS_GET_MNTNS_ID writes one u64.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), uapi::NS_GET_MNTNS_ID, &mut id as *mut u64) };
    if r < 0 {
        return Err(SysError::last_os(format!("NS_GET_MNTNS_ID on {what}")));
    }
    Ok(id)
}

fn inum_of_fd(f: &File, what: &str) -> Result<u32, SysError> {
    let md = f
        .metadata()
        .map_err(|e| SysError::io(format!("fstat {what}"), e))?;
    Ok(md.ino() as u32)
}

/// The mount namespace of a process (`/proc/<pid>/ns/mnt`).
pub fn mnt_ns_of_pid(pid: u32) -> Result<MntNs, SysError> {
    mnt_ns_of_path(format!("/proc/{pid}/ns/mnt"))
}

/// The mount namespace behind an nsfs file: `/proc/<pid>/ns/mnt`, a bind mount of one, or
/// `/proc/<pid>/fd/<n>` pointing at one.
pub fn mnt_ns_of_path(path: impl AsRef<Path>) -> Result<MntNs, SysError> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| SysError::io(format!("open {what}"), e))?;
    Ok(MntNs {
        id: mnt_ns_id_of_fd(&f, &what)?,
        inum: inum_of_fd(&f, &what)?,
    })
}

/// If `path` is an nsfs file (a namespace file or a bind mount of one), its inode number.
pub fn nsfs_inode(path: impl AsRef<Path>) -> Result<Option<u64>, SysError> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| SysError::io(format!("open {what}"), e))?;
    // SAFETY: fstatfs fills a plain struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } < 0 {
        return Err(SysError::last_os(format!("fstatfs {what}")));
    }
    if st.f_type as i64 != NSFS_MAGIC {
        return Ok(None);
    }
    let md = f
        .metadata()
        .map_err(|e| SysError::io(format!("fstat {what}"), e))?;
    Ok(Some(md.ino()))
}

/// One step of the walk: the namespace after (or before) the one `fd` refers to, as a new fd.
fn step(fd: &OwnedFd, req: libc::c_ulong) -> Result<Option<(OwnedFd, MntNsInfo)>, SysError> {
    let mut info = MntNsInfo {
        size: std::mem::size_of::<MntNsInfo>() as u32,
        ..Default::default()
    };
    // SAFETY: the ioctl fills `info` and returns a new fd we take ownership of.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut info as *mut MntNsInfo) };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(SysError::io(
            "NS_MNT_GET_NEXT/PREV walk of mount namespaces",
            err,
        ));
    }
    // SAFETY: r is a fresh fd returned by the kernel.
    Ok(Some((unsafe { OwnedFd::from_raw_fd(r) }, info)))
}

/// Every mount namespace the caller may see, by id order, including ones pinned only by an fd or
/// an nsfs bind mount. Starts from the caller's own namespace and walks both ways.
pub fn all_mount_namespaces() -> Result<Vec<NsEntry>, SysError> {
    let start =
        File::open("/proc/self/ns/mnt").map_err(|e| SysError::io("open /proc/self/ns/mnt", e))?;
    let own = NsEntry {
        ns: MntNs {
            id: mnt_ns_id_of_fd(&start, "/proc/self/ns/mnt")?,
            inum: inum_of_fd(&start, "/proc/self/ns/mnt")?,
        },
        nr_mounts: 0,
    };
    let start: OwnedFd = start.into();
    let mut out = vec![own];
    for req in [uapi::NS_MNT_GET_PREV, uapi::NS_MNT_GET_NEXT] {
        let mut cur = start
            .try_clone()
            .map_err(|e| SysError::io("dup ns fd", e))?;
        while let Some((fd, info)) = step(&cur, req)? {
            let f = File::from(fd);
            out.push(NsEntry {
                ns: MntNs {
                    id: info.mnt_ns_id,
                    inum: inum_of_fd(&f, "namespace fd from NS_MNT_GET_NEXT")?,
                },
                nr_mounts: info.nr_mounts,
            });
            cur = f.into();
        }
    }
    // Fill the caller's own mount count.
    let mut info = MntNsInfo {
        size: 16,
        ..Default::default()
    };
    // SAFETY: NS_MNT_GET_INFO fills `info`.
    if unsafe {
        libc::ioctl(
            start.as_raw_fd(),
            uapi::NS_MNT_GET_INFO,
            &mut info as *mut MntNsInfo,
        )
    } == 0
    {
        out[0].nr_mounts = info.nr_mounts;
    }
    out.sort_by_key(|e| e.ns.id);
    out.dedup_by_key(|e| e.ns.id);
    Ok(out)
}

/// Whether the kernel supports the namespace walk (probed once).
pub fn ns_walk_supported() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| all_mount_namespaces().is_ok())
}
