//! The decoded event stream: what every source (live, capture reader) produces and what the engine
//! and the reports consume. One type per concept; no I/O here.

use mntleak_common::EventKind;
use serde::{Deserialize, Serialize};

/// A string from the kernel or /proc: untrusted bytes, kept as lossy UTF-8 plus a truncation mark.
/// Escaping for terminals happens in `report::escape`; JSON gets it through serde.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KStr {
    pub text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl KStr {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            truncated: false,
        }
    }
    pub fn from_bytes(bytes: &[u8], truncated: bool) -> Self {
        // Strict validation first: it checks ASCII a word at a time, where the lossy decoder goes
        // byte by byte, and nearly every string from the kernel is ASCII.
        let text = match std::str::from_utf8(bytes) {
            Ok(valid) => valid.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        Self { text, truncated }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A mount namespace: the 64-bit id is the identity (inodes are reused), the inode is what /proc shows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct MntNs {
    pub id: u64,
    pub inum: u32,
}

/// Who acted, at the moment of the event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Kernel CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub comm: KStr,
    pub mnt_ns: MntNs,
    pub net_ns_inum: u32,
    pub cgroup_id: u64,
}

/// A file descriptor argument. `AT_FDCWD` is -100.
pub type Fd = i32;

/// The decoded syscall or lifecycle action, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Mount {
        source: KStr,
        target: KStr,
        fstype: KStr,
        flags: u64,
    },
    Umount {
        target: KStr,
        flags: u64,
    },
    /// unlink, unlinkat and rmdir; `rmdir` is true for rmdir(2) and unlinkat(AT_REMOVEDIR).
    Unlink {
        dirfd: Fd,
        path: KStr,
        rmdir: bool,
        call: UnlinkCall,
    },
    Unshare {
        flags: u64,
    },
    Setns {
        fd: Fd,
        nstype: u64,
    },
    /// clone and clone3: `child` is the return value when positive.
    Clone {
        flags: u64,
        clone3: bool,
    },
    Fsopen {
        fstype: KStr,
        flags: u64,
    },
    Fsconfig {
        fd: Fd,
        cmd: u32,
        key: KStr,
        value: KStr,
    },
    Fsmount {
        fd: Fd,
        flags: u64,
        attr_flags: u64,
    },
    MoveMount {
        from_dirfd: Fd,
        from_path: KStr,
        to_dirfd: Fd,
        to_path: KStr,
        flags: u64,
    },
    OpenTree {
        dirfd: Fd,
        path: KStr,
        flags: u64,
    },
    MountSetattr {
        dirfd: Fd,
        path: KStr,
        flags: u64,
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
    },
    PivotRoot {
        new_root: KStr,
        put_old: KStr,
    },
    Chroot {
        path: KStr,
    },
    Fork {
        child: u32,
    },
    Exec {
        filename: KStr,
    },
    Exit,
}

/// Every call, by [`Action::call_index`].
const CALL_KINDS: [EventKind; 20] = {
    use EventKind::*;
    [
        Mount,
        Umount,
        Unlink,
        Unlinkat,
        Rmdir,
        Unshare,
        Setns,
        Clone,
        Clone3,
        Fsopen,
        Fsconfig,
        Fsmount,
        MoveMount,
        OpenTree,
        MountSetattr,
        PivotRoot,
        Chroot,
        ProcessFork,
        ProcessExec,
        ProcessExit,
    ]
};

/// Every call's user-facing name (the wire format's, spelled once), by [`Action::call_index`].
pub const CALL_NAMES: [&str; CALL_KINDS.len()] = {
    let mut names = [""; CALL_KINDS.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = CALL_KINDS[i].name();
        i += 1;
    }
    names
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlinkCall {
    Unlink,
    Unlinkat,
    Rmdir,
}

impl Action {
    /// The path arguments the kernel side resolves, by position in [`Event::resolved`], under
    /// their man-page names: mount (source, target), umount2 (target), move_mount (from_path,
    /// to_path), open_tree / mount_setattr / chroot (path), pivot_root (new_root, put_old).
    pub fn path_args(&self) -> [Option<(&'static str, &KStr)>; 2] {
        match self {
            Action::Mount { source, target, .. } => {
                [Some(("source", source)), Some(("target", target))]
            }
            Action::Umount { target, .. } => [Some(("target", target)), None],
            Action::MoveMount {
                from_path, to_path, ..
            } => [Some(("from_path", from_path)), Some(("to_path", to_path))],
            Action::OpenTree { path, .. }
            | Action::MountSetattr { path, .. }
            | Action::Chroot { path } => [Some(("path", path)), None],
            Action::PivotRoot { new_root, put_old } => {
                [Some(("new_root", new_root)), Some(("put_old", put_old))]
            }
            _ => [None, None],
        }
    }

    /// The name users know the call by.
    pub fn name(&self) -> &'static str {
        CALL_NAMES[self.call_index()]
    }

    /// The call's position in [`CALL_NAMES`], for per-call counters.
    pub fn call_index(&self) -> usize {
        match self {
            Action::Mount { .. } => 0,
            Action::Umount { .. } => 1,
            Action::Unlink {
                call: UnlinkCall::Unlink,
                ..
            } => 2,
            Action::Unlink {
                call: UnlinkCall::Unlinkat,
                ..
            } => 3,
            Action::Unlink {
                call: UnlinkCall::Rmdir,
                ..
            } => 4,
            Action::Unshare { .. } => 5,
            Action::Setns { .. } => 6,
            Action::Clone { clone3: false, .. } => 7,
            Action::Clone { clone3: true, .. } => 8,
            Action::Fsopen { .. } => 9,
            Action::Fsconfig { .. } => 10,
            Action::Fsmount { .. } => 11,
            Action::MoveMount { .. } => 12,
            Action::OpenTree { .. } => 13,
            Action::MountSetattr { .. } => 14,
            Action::PivotRoot { .. } => 15,
            Action::Chroot { .. } => 16,
            Action::Fork { .. } => 17,
            Action::Exec { .. } => 18,
            Action::Exit => 19,
        }
    }
}

/// A path argument as the kernel resolved it at syscall entry: `/proc/self/fd/N` through the fd
/// table, a relative path through its dirfd or the cwd, an empty path through its dirfd. What the
/// call named even when the fd or cwd is gone by the time anyone could look (runc's O_PATH mount
/// targets, `pivot_root(".", ".")`, `umount2(".")`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResolvedPath {
    /// Absolute and normalized, as seen from the caller's root (like `/proc/<pid>/cwd`).
    pub path: KStr,
    /// 64-bit unique id of the mount the fd or directory was on (statx STATX_MNT_ID_UNIQUE,
    /// statmount); 0 when unknown.
    pub mnt_id: u64,
}

/// One traced event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub task: Task,
    pub action: Action,
    /// The syscall's return value (negative errno), `None` for lifecycle events or a missed exit.
    pub ret: Option<i64>,
    /// The caller's namespace after the call (unshare, setns), or the child's (fork, clone).
    pub new_mnt_ns: Option<MntNs>,
    /// For relative paths: the directory they were resolved against (dirfd or cwd), read by the
    /// live source, so the engine can place `unlinkat(dirfd, "merged")`.
    pub dir: Option<KStr>,
    /// The action's path arguments as the kernel resolved them (see [`Action::path_args`]):
    /// `[0]` the first, `[1]` the second; `None` for absolute paths (they need nothing) or when
    /// the kernel could not.
    #[serde(default)]
    pub resolved: [Option<ResolvedPath>; 2],
}

impl Event {
    /// Path argument `i` as the kernel resolved it, if it did.
    pub fn resolved_path(&self, i: usize) -> Option<&str> {
        self.resolved.get(i)?.as_ref().map(|r| r.path.as_str())
    }

    /// A successful mount, move_mount, umount2 or pivot_root that can be placed by path only
    /// thanks to the kernel, and was: each relative, `/proc/...` or empty destination (and a
    /// bind's or move's source) came resolved. Re-reading the namespace after it is redundant.
    pub fn placed_by_kernel_paths(&self) -> bool {
        if self.ret != Some(0) {
            return false;
        }
        let needs = |p: &KStr| needs_kernel_placement(p.as_str());
        let (need0, need1) = match &self.action {
            Action::Mount {
                source,
                target,
                flags,
                ..
            } => (
                flags & (crate::uapi::MS_BIND | crate::uapi::MS_MOVE) != 0 && needs(source),
                needs(target),
            ),
            // An empty from_path is a mount fd, which the engine follows itself.
            Action::MoveMount {
                from_path, to_path, ..
            } => (
                !from_path.as_str().is_empty() && needs(from_path),
                needs(to_path),
            ),
            Action::Umount { target, .. } => (needs(target), false),
            Action::PivotRoot { new_root, put_old } => (needs(new_root), needs(put_old)),
            _ => return false,
        };
        (need0 || need1)
            && (!need0 || self.resolved[0].is_some())
            && (!need1 || self.resolved[1].is_some())
    }
}

/// A path argument only the kernel can place: relative (to a cwd or dirfd), or through a
/// process's own directory in `/proc` (runc's `/proc/self/fd/N`, `/proc/<pid>/root/...`, and the
/// `/proc/net` and `/proc/mounts` links into `self`), whose meaning is gone by the time userspace
/// could look. The rest of `/proc` is an ordinary tree: runc's read-only binds of `/proc/bus`,
/// `/proc/sys` and the like are placed by path, like any mount (re-reading the namespace after
/// each of them was two thirds of the namespace reads a container start cost).
pub fn needs_kernel_placement(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("/proc/") else {
        return !p.starts_with('/');
    };
    in_proc_process_dir(p).is_some()
        || rest.starts_with("./")
        || rest == "."
        || rest.split('/').any(|c| c == "..")
}

/// What follows the process directory when `p` goes through one in `/proc` (`self`,
/// `thread-self`, a pid, or the `net` and `mounts` links into `self`): `Some("fd/7")` for
/// `/proc/self/fd/7`, `Some("")` for `/proc/self`. An empty directory name (`/proc//fd/7`) counts
/// as a pid, so that an unusual spelling is not taken for an ordinary path.
pub fn in_proc_process_dir(p: &str) -> Option<&str> {
    let rest = p.strip_prefix("/proc/")?;
    let (dir, after) = rest.split_once('/').unwrap_or((rest, ""));
    (matches!(dir, "self" | "thread-self" | "net" | "mounts")
        || dir.bytes().all(|b| b.is_ascii_digit()))
    .then_some(after)
}

/// Propagation of one mount, as mountinfo shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Propagation {
    /// `shared:N` peer group.
    pub shared: Option<u32>,
    /// `master:N`.
    pub master: Option<u32>,
    pub unbindable: bool,
}

impl Propagation {
    pub fn is_private(&self) -> bool {
        self.shared.is_none() && self.master.is_none() && !self.unbindable
    }
}

/// One mount as the kernel reports it (statmount or mountinfo).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// 64-bit unique mount id (statmount), or the 32-bit mountinfo id when that is all we have.
    pub mnt_id: u64,
    pub parent_id: u64,
    /// Old-style 32-bit id as in /proc/<pid>/mountinfo, 0 when unknown.
    pub mnt_id_old: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Path inside the filesystem that is mounted (the bind source).
    pub root: KStr,
    /// Mountpoint as seen from the namespace's root.
    pub mountpoint: KStr,
    pub fstype: KStr,
    pub source: KStr,
    pub options: KStr,
    pub propagation: Propagation,
}

/// A mount namespace as found when the capture (or a namespace) began.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceState {
    pub ns: MntNs,
    /// Member processes (tgids) at snapshot time.
    pub pids: Vec<u32>,
    pub mounts: Vec<MountInfo>,
}

/// A process alive at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub pid: u32,
    pub ppid: u32,
    pub comm: KStr,
    pub mnt_ns: MntNs,
    pub cgroup: KStr,
}

/// The system's mount state at the start of a capture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC ns when it was taken.
    pub ts_ns: u64,
    pub host_ns: MntNs,
    pub namespaces: Vec<NamespaceState>,
    pub processes: Vec<ProcessState>,
}

/// A container known to a runtime, kept in the capture so replay needs no runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// "docker" or "containerd/<namespace>".
    pub runtime: String,
    pub init_pid: u32,
    pub mnt_ns: MntNs,
    pub net_ns_inum: u32,
    /// Mount sources and targets that belong to it: rootfs `merged`, shm, netns file, volumes.
    pub mount_paths: Vec<String>,
    pub cgroup: String,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
}

/// One item of the event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Snapshot(Snapshot),
    Event(Event),
    /// Events the ring buffer could not take.
    Lost {
        count: u64,
        first_ts_ns: u64,
        last_ts_ns: u64,
    },
    NamespaceMounts(NamespaceListing),
    Container(ContainerInfo),
}

/// The kernel's view of one namespace's mounts (listmount/statmount), read by the source when a
/// namespace appears or after a mount the engine cannot place by path. The read began at `ts_ns`
/// and ended at `read_end_ns`: the listing shows some moment in between (a starved reader can
/// take milliseconds, and calls made meanwhile may or may not show in it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceListing {
    pub ts_ns: u64,
    pub read_end_ns: u64,
    pub ns: MntNs,
    pub mounts: Vec<MountInfo>,
}

/// Facts about the capture itself, from its header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    pub format_version: u16,
    pub kernel_release: String,
    pub hostname: String,
    /// Add to a kernel CLOCK_MONOTONIC timestamp to get Unix-epoch nanoseconds.
    pub monotonic_to_wall_ns: i64,
    /// Programs that could not be attached in the recording run (a degraded capture says so).
    pub missing: Vec<String>,
}

impl CaptureHeader {
    pub fn wall_ns(&self, ts_ns: u64) -> i64 {
        ts_ns as i64 + self.monotonic_to_wall_ns
    }
}

#[cfg(test)]
mod tests {
    use super::needs_kernel_placement;

    #[test]
    fn only_paths_through_a_process_or_relative_need_the_kernel() {
        for p in [
            "/proc/self/fd/7",
            "/proc/thread-self/fd/7",
            "/proc/1234/root/var/lib",
            "/proc/self",
            "/proc/net/dev_snmp6",
            "/proc/mounts",
            "/proc//self/fd/7",
            "/proc/./self/fd/7",
            "/proc/bus/../self/fd/7",
            ".",
            "merged",
            "",
        ] {
            assert!(needs_kernel_placement(p), "{p:?}");
        }
        for p in [
            "/proc",
            "/proc/bus",
            "/proc/sys/kernel",
            "/proc/sysrq-trigger",
            "/proc/selfish",
            "/var/lib/docker/overlay2/x/merged",
        ] {
            assert!(!needs_kernel_placement(p), "{p:?}");
        }
    }
}
