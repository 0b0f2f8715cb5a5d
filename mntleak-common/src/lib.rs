//! The wire format between the eBPF programs and userspace: defined once, here.
//!
//! Every struct is `#[repr(C)]` with explicit padding so that it is `Pod` and so that the eBPF side
//! writes every byte of a ring-buffer reservation (reservations are not zeroed).
#![no_std]

/// Bytes kept of each path argument; longer paths are truncated and flagged.
pub const PATH_MAX_CAPTURED: usize = 256;
/// Bytes kept of short string arguments (fstype, fsconfig key).
pub const SHORT_STR: usize = 64;
pub const COMM_LEN: usize = 16;

/// What an [`Event`] describes. Syscall kinds share the tracepoint name of the syscall.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Mount = 1,
    Umount = 2,
    Unlink = 3,
    Unlinkat = 4,
    Rmdir = 5,
    Unshare = 6,
    Setns = 7,
    Clone = 8,
    Clone3 = 9,
    Fsopen = 10,
    Fsconfig = 11,
    Fsmount = 12,
    MoveMount = 13,
    OpenTree = 14,
    MountSetattr = 15,
    PivotRoot = 16,
    Chroot = 17,
    ProcessFork = 32,
    ProcessExec = 33,
    ProcessExit = 34,
}

impl EventKind {
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Mount,
            2 => Self::Umount,
            3 => Self::Unlink,
            4 => Self::Unlinkat,
            5 => Self::Rmdir,
            6 => Self::Unshare,
            7 => Self::Setns,
            8 => Self::Clone,
            9 => Self::Clone3,
            10 => Self::Fsopen,
            11 => Self::Fsconfig,
            12 => Self::Fsmount,
            13 => Self::MoveMount,
            14 => Self::OpenTree,
            15 => Self::MountSetattr,
            16 => Self::PivotRoot,
            17 => Self::Chroot,
            32 => Self::ProcessFork,
            33 => Self::ProcessExec,
            34 => Self::ProcessExit,
            _ => return None,
        })
    }

    /// The syscall (or sched tracepoint) name, as users know it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mount => "mount",
            Self::Umount => "umount2",
            Self::Unlink => "unlink",
            Self::Unlinkat => "unlinkat",
            Self::Rmdir => "rmdir",
            Self::Unshare => "unshare",
            Self::Setns => "setns",
            Self::Clone => "clone",
            Self::Clone3 => "clone3",
            Self::Fsopen => "fsopen",
            Self::Fsconfig => "fsconfig",
            Self::Fsmount => "fsmount",
            Self::MoveMount => "move_mount",
            Self::OpenTree => "open_tree",
            Self::MountSetattr => "mount_setattr",
            Self::PivotRoot => "pivot_root",
            Self::Chroot => "chroot",
            Self::ProcessFork => "fork",
            Self::ProcessExec => "exec",
            Self::ProcessExit => "exit",
        }
    }
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// `str_len[i]` is meaningful for string slot i (bit i).
    pub const STR_PRESENT: u16 = 0b0000_0111;
    /// String slot i was cut at its buffer size (bit 3 + i).
    pub const STR_TRUNCATED_SHIFT: u16 = 3;
    /// `new_ns` holds the caller's namespaces after the call (unshare, setns, clone child).
    pub const HAS_NEW_NS: u16 = 1 << 6;
    /// The exit half of the syscall was seen, so `ret` is real.
    pub const HAS_RET: u16 = 1 << 7;
    /// On a ring record: the syscall's entry only; its return follows as a [`SyscallExit`]
    /// record of the same thread. Never set on a decoded or captured event.
    ///
    /// [`SyscallExit`]: super::SyscallExit
    pub const AWAITS_EXIT: u16 = 1 << 8;
}

/// Who did it: read from the current task at syscall entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskInfo {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at entry.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub _pad0: u32,
    pub cgroup_id: u64,
    pub ns: NsInfo,
    pub comm: [u8; COMM_LEN],
}

/// A task's namespaces: the mount namespace by 64-bit id (inodes are reused) and by inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsInfo {
    pub mnt_ns_id: u64,
    pub mnt_ns_inum: u32,
    pub net_ns_inum: u32,
}

/// Programs the syscall programs tail-call to resolve paths, by their index in the `RESOLVERS`
/// program array: not attached anywhere, installed there by the loader.
pub const RESOLVER_PROGRAMS: [&str; 2] = ["resolve_paths", "resolve_paths_exit"];
/// Index in `RESOLVERS` of the resolver run at syscall entry.
pub const RESOLVE_AT_ENTER: u32 = 0;
/// Index of the resolver run at exit for paths that could only be read then; it sends the event.
pub const RESOLVE_AT_EXIT: u32 = 1;

/// Values of [`PathRes::status`].
pub mod res {
    /// Not a path the kernel side resolves (absolute, not `/proc/self/fd/N`), or not attempted.
    pub const NONE: u16 = 0;
    /// `path` holds the absolute path, as seen from the caller's root.
    pub const OK: u16 = 1;
    /// Longer than `PATH_MAX_CAPTURED` or more components than the walk takes.
    pub const TOO_LONG: u16 = 2;
    /// Outside the caller's root: another namespace's mount, a detached tree, a chroot escape.
    pub const UNREACHABLE: u16 = 3;
    /// The fd is not open.
    pub const BAD_FD: u16 = 4;
    /// A kernel read failed, or the BTF offsets it needs are unknown.
    pub const FAILED: u16 = 5;
}

/// A path argument resolved in the kernel at syscall entry: `/proc/self/fd/N` (or
/// `/proc/thread-self/fd/N`) through the fd table, a relative path through its dirfd or the cwd,
/// an empty path with `*_EMPTY_PATH` through its dirfd. runc mounts onto O_PATH fds and detaches
/// its old root with `umount2(".")`; by the time userspace could look, the fd or cwd is gone.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRes {
    /// `mount.mnt_id_unique` of the mount the fd or directory is on (what statx's
    /// STATX_MNT_ID_UNIQUE and statmount report); 0 when unknown.
    pub mnt_id: u64,
    /// One of [`res`].
    pub status: u16,
    /// Bytes of `path` (with status OK).
    pub len: u16,
    /// Bytes at the start of the argument that `path` stands for (the `/proc/self/fd/N` prefix);
    /// the rest of the argument is relative to `path`. 0 for a relative or empty argument.
    pub skip: u16,
    pub _pad: u16,
    pub path: [u8; PATH_MAX_CAPTURED],
}

/// One traced event. Fixed size; strings are NUL-free byte runs of `str_len[i]` bytes.
///
/// String slots by kind: mount (source, target, fstype), umount (target), unlink/unlinkat/rmdir
/// (path), move_mount (from, to), open_tree/mount_setattr/chroot (path), pivot_root (new, old),
/// fsopen (fstype in slot 2), fsconfig (key in slot 2, value in slot 0), exec (filename).
/// `res[i]` resolves the path in string slot i (slots 0 and 1 only).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub kind: u16,
    pub flags: u16,
    pub str_len: [u16; 3],
    pub _pad: u16,
    /// The syscall's number (its tracepoint's `__syscall_nr`), which its [`SyscallExit`]
    /// repeats; 0 for the sched events.
    pub nr: u32,
    pub task: TaskInfo,
    /// Namespaces after the call (see [`flags::HAS_NEW_NS`]); for fork, the child's.
    pub new_ns: NsInfo,
    pub ret: i64,
    /// Raw syscall arguments (flags, fds), by the kind's own order; see the userspace decoder.
    pub args: [u64; 6],
    pub str0: [u8; PATH_MAX_CAPTURED],
    pub str1: [u8; PATH_MAX_CAPTURED],
    pub str2: [u8; SHORT_STR],
    pub res: [PathRes; 2],
}

impl Event {
    /// The shortest ring record: everything before the strings.
    pub const HEADER_LEN: usize = core::mem::offset_of!(Event, str0);

    /// How much of the event a ring record carries: all of it when a path was resolved, else up
    /// to the end of the last string present (8-aligned); the reader zero-fills the rest. Most
    /// events carry one short path, so this is a fraction of the struct.
    #[inline(always)]
    pub fn wire_len(&self) -> usize {
        if self.res[0].status != res::NONE || self.res[1].status != res::NONE {
            return core::mem::size_of::<Event>();
        }
        let present = self.flags & flags::STR_PRESENT;
        let end = if present & 0b100 != 0 {
            core::mem::offset_of!(Event, str2) + self.str_len[2] as usize
        } else if present & 0b010 != 0 {
            core::mem::offset_of!(Event, str1) + self.str_len[1] as usize
        } else if present & 0b001 != 0 {
            core::mem::offset_of!(Event, str0) + self.str_len[0] as usize
        } else {
            Self::HEADER_LEN
        };
        let end = (end + 7) & !7;
        // Also what keeps the length provably in bounds for the verifier.
        let core = core::mem::offset_of!(Event, res);
        if end > core { core } else { end }
    }
}

/// The return of a syscall whose entry was sent with [`flags::AWAITS_EXIT`]: userspace pairs the
/// two by `tid`. Sending the entry at once and the return apart keeps no per-thread state in the
/// kernel (a map slot to create, look up twice and delete), which was a third of the BPF time of
/// a syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallExit {
    /// [`SyscallExit::KIND`], which no [`EventKind`] has: how a ring record says what it is.
    pub kind: u16,
    /// [`flags::HAS_NEW_NS`] or 0.
    pub flags: u16,
    pub tid: u32,
    pub tgid: u32,
    /// The entry's [`Event::nr`], or [`SyscallExit::FROM_FORK`]: a return that names another
    /// syscall is not this entry's (records are lost when the ring is full).
    pub nr: u32,
    pub ret: i64,
    /// The caller's namespaces after the call (unshare, setns); for clone, the child's.
    pub new_ns: NsInfo,
}

impl SyscallExit {
    pub const KIND: u16 = 0x100;
    /// `nr` of a clone's return sent by the fork tracepoint, which has no syscall number.
    pub const FROM_FORK: u32 = u32::MAX;
}

/// Per-CPU count of events that could not be reserved in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LossInfo {
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// [`SyscallExit`] records that could not be reserved: their events arrive without `ret`.
    pub exits: u64,
}

/// Kernel struct offsets read from the running kernel's BTF at load time (global `OFFSETS`).
/// Zero in `valid` means the loader could not find them: namespace fields are then left zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub valid: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `nsproxy.net_ns`
    pub nsproxy_net_ns: u32,
    /// `mnt_namespace.ns` + `ns_common.inum`
    pub mnt_ns_inum: u32,
    /// `mnt_namespace.ns` + `ns_common.ns_id` (0 on kernels without it)
    pub mnt_ns_id: u32,
    /// `net.ns` + `ns_common.inum`
    pub net_ns_inum: u32,
    /// Non-zero when every path-walk offset below was found (they resolve fd and cwd paths).
    pub path_valid: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `fs_struct.root`
    pub fs_root: u32,
    /// `fs_struct.pwd`
    pub fs_pwd: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `file.f_path`
    pub file_path: u32,
    /// `path.mnt`
    pub path_mnt: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name` + `qstr.len`
    pub dentry_name_len: u32,
    /// `dentry.d_name` + `qstr.name`
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mount.mnt`: a `vfsmount *` minus this is its `struct mount *`
    pub mount_mnt: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// `mount.mnt_id_unique` (0 on kernels before 6.8)
    pub mount_id_unique: u32,
    /// Non-zero when the four fields below were found: the caller's cgroup id is then read
    /// through them, else by `bpf_get_current_cgroup_id`.
    pub cgroup_valid: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`
    pub kernfs_node_id: u32,
    /// `task_struct.comm` (0: unknown, `bpf_get_current_comm` is used)
    pub task_comm: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all six are repr(C), made only of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SyscallExit {}
    unsafe impl aya::Pod for super::LossInfo {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::NsInfo {}
    unsafe impl aya::Pod for super::PathRes {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<NsInfo>(), 16);
        assert_eq!(core::mem::size_of::<TaskInfo>(), 8 + 4 * 4 + 8 + 16 + 16);
        assert_eq!(
            core::mem::size_of::<Event>(),
            2 * 8 + core::mem::size_of::<TaskInfo>() + 16 + 8 + 48 + 256 + 256 + 64 + 2 * 272
        );
        assert_eq!(core::mem::size_of::<PathRes>(), 16 + PATH_MAX_CAPTURED);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 34 * 4);
        assert_eq!(core::mem::size_of::<SyscallExit>(), 2 * 2 + 3 * 4 + 8 + 16);
    }

    #[test]
    fn kinds_round_trip() {
        for v in 0..64u16 {
            if let Some(k) = EventKind::from_u16(v) {
                assert_eq!(k as u16, v);
            }
        }
        assert!(EventKind::from_u16(SyscallExit::KIND).is_none());
    }
}
