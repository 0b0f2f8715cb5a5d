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

/// One traced event. Fixed size; strings are NUL-free byte runs of `str_len[i]` bytes.
///
/// String slots by kind: mount (source, target, fstype), umount (target), unlink/unlinkat/rmdir
/// (path), move_mount (from, to), open_tree/mount_setattr/chroot (path), pivot_root (new, old),
/// fsopen (fstype in slot 2), fsconfig (key in slot 2, value in slot 0), exec (filename).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub kind: u16,
    pub flags: u16,
    pub str_len: [u16; 3],
    pub _pad: [u16; 3],
    pub task: TaskInfo,
    /// Namespaces after the call (see [`flags::HAS_NEW_NS`]); for fork, the child's.
    pub new_ns: NsInfo,
    pub ret: i64,
    /// Raw syscall arguments (flags, fds), by the kind's own order; see the userspace decoder.
    pub args: [u64; 6],
    pub str0: [u8; PATH_MAX_CAPTURED],
    pub str1: [u8; PATH_MAX_CAPTURED],
    pub str2: [u8; SHORT_STR],
}

/// Per-CPU count of events that could not be reserved in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LossInfo {
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
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
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all four are repr(C), made only of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::LossInfo {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::NsInfo {}
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
            2 * 8 + core::mem::size_of::<TaskInfo>() + 16 + 8 + 48 + 256 + 256 + 64
        );
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 40);
    }

    #[test]
    fn kinds_round_trip() {
        for v in 0..64u16 {
            if let Some(k) = EventKind::from_u16(v) {
                assert_eq!(k as u16, v);
            }
        }
    }
}
