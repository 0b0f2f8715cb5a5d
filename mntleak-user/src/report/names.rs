//! Names for numbers: errno values and the flag words of the mount-related syscalls.

use crate::uapi::*;

/// A flag table: (bit or bits, name). Bits not in the table are shown in hex.
pub type FlagTable = &'static [(u64, &'static str)];

// mount(2) flags that `uapi` does not need elsewhere.
const MS_SYNCHRONOUS: u64 = 16;
const MS_MANDLOCK: u64 = 64;
const MS_DIRSYNC: u64 = 128;
const MS_NOSYMFOLLOW: u64 = 256;
const MS_NOATIME: u64 = 1024;
const MS_NODIRATIME: u64 = 2048;
const MS_SILENT: u64 = 32768;
const MS_POSIXACL: u64 = 1 << 16;
const MS_RELATIME: u64 = 1 << 21;
const MS_KERNMOUNT: u64 = 1 << 22;
const MS_I_VERSION: u64 = 1 << 23;
const MS_STRICTATIME: u64 = 1 << 24;
const MS_LAZYTIME: u64 = 1 << 25;

pub const MOUNT_FLAGS: FlagTable = &[
    (MS_RDONLY, "MS_RDONLY"),
    (MS_NOSUID, "MS_NOSUID"),
    (MS_NODEV, "MS_NODEV"),
    (MS_NOEXEC, "MS_NOEXEC"),
    (MS_SYNCHRONOUS, "MS_SYNCHRONOUS"),
    (MS_REMOUNT, "MS_REMOUNT"),
    (MS_MANDLOCK, "MS_MANDLOCK"),
    (MS_DIRSYNC, "MS_DIRSYNC"),
    (MS_NOSYMFOLLOW, "MS_NOSYMFOLLOW"),
    (MS_NOATIME, "MS_NOATIME"),
    (MS_NODIRATIME, "MS_NODIRATIME"),
    (MS_BIND, "MS_BIND"),
    (MS_MOVE, "MS_MOVE"),
    (MS_REC, "MS_REC"),
    (MS_SILENT, "MS_SILENT"),
    (MS_POSIXACL, "MS_POSIXACL"),
    (MS_UNBINDABLE, "MS_UNBINDABLE"),
    (MS_PRIVATE, "MS_PRIVATE"),
    (MS_SLAVE, "MS_SLAVE"),
    (MS_SHARED, "MS_SHARED"),
    (MS_RELATIME, "MS_RELATIME"),
    (MS_KERNMOUNT, "MS_KERNMOUNT"),
    (MS_I_VERSION, "MS_I_VERSION"),
    (MS_STRICTATIME, "MS_STRICTATIME"),
    (MS_LAZYTIME, "MS_LAZYTIME"),
];

pub const UMOUNT_FLAGS: FlagTable = &[
    (MNT_FORCE, "MNT_FORCE"),
    (MNT_DETACH, "MNT_DETACH"),
    (MNT_EXPIRE, "MNT_EXPIRE"),
    (UMOUNT_NOFOLLOW, "UMOUNT_NOFOLLOW"),
];

/// clone3/unshare/setns flags (for clone(2) the low byte is the exit signal instead).
pub const CLONE_FLAGS: FlagTable = &[
    (CLONE_NEWTIME, "CLONE_NEWTIME"),
    (CLONE_VM, "CLONE_VM"),
    (CLONE_FS, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (CLONE_THREAD, "CLONE_THREAD"),
    (CLONE_NEWNS, "CLONE_NEWNS"),
    (0x0004_0000, "CLONE_SYSVSEM"),
    (0x0008_0000, "CLONE_SETTLS"),
    (0x0010_0000, "CLONE_PARENT_SETTID"),
    (0x0020_0000, "CLONE_CHILD_CLEARTID"),
    (0x0040_0000, "CLONE_DETACHED"),
    (0x0080_0000, "CLONE_UNTRACED"),
    (0x0100_0000, "CLONE_CHILD_SETTID"),
    (CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
    (CLONE_NEWUTS, "CLONE_NEWUTS"),
    (CLONE_NEWIPC, "CLONE_NEWIPC"),
    (CLONE_NEWUSER, "CLONE_NEWUSER"),
    (CLONE_NEWPID, "CLONE_NEWPID"),
    (CLONE_NEWNET, "CLONE_NEWNET"),
    (0x8000_0000, "CLONE_IO"),
    (0x1_0000_0000, "CLONE_CLEAR_SIGHAND"),
    (0x2_0000_0000, "CLONE_INTO_CGROUP"),
];

pub const AT_FLAGS: FlagTable = &[
    (AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"),
    (AT_REMOVEDIR, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (AT_EMPTY_PATH, "AT_EMPTY_PATH"),
    (AT_RECURSIVE, "AT_RECURSIVE"),
];

pub const OPEN_TREE_FLAGS: FlagTable = &[
    (OPEN_TREE_CLONE, "OPEN_TREE_CLONE"),
    (OPEN_TREE_CLOEXEC, "OPEN_TREE_CLOEXEC"),
    (AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (AT_EMPTY_PATH, "AT_EMPTY_PATH"),
    (AT_RECURSIVE, "AT_RECURSIVE"),
];

pub const MOVE_MOUNT_FLAGS: FlagTable = &[
    (MOVE_MOUNT_F_SYMLINKS, "MOVE_MOUNT_F_SYMLINKS"),
    (MOVE_MOUNT_F_AUTOMOUNTS, "MOVE_MOUNT_F_AUTOMOUNTS"),
    (MOVE_MOUNT_F_EMPTY_PATH, "MOVE_MOUNT_F_EMPTY_PATH"),
    (MOVE_MOUNT_T_SYMLINKS, "MOVE_MOUNT_T_SYMLINKS"),
    (MOVE_MOUNT_T_AUTOMOUNTS, "MOVE_MOUNT_T_AUTOMOUNTS"),
    (MOVE_MOUNT_T_EMPTY_PATH, "MOVE_MOUNT_T_EMPTY_PATH"),
    (MOVE_MOUNT_SET_GROUP, "MOVE_MOUNT_SET_GROUP"),
    (MOVE_MOUNT_BENEATH, "MOVE_MOUNT_BENEATH"),
];

/// `struct mount_attr` attr_set/attr_clr and fsmount's attr_flags.
pub const MOUNT_ATTR_FLAGS: FlagTable = &[
    (MOUNT_ATTR_RDONLY, "MOUNT_ATTR_RDONLY"),
    (0x2, "MOUNT_ATTR_NOSUID"),
    (0x4, "MOUNT_ATTR_NODEV"),
    (0x8, "MOUNT_ATTR_NOEXEC"),
    (0x10, "MOUNT_ATTR_NOATIME"),
    (0x20, "MOUNT_ATTR_STRICTATIME"),
    (0x80, "MOUNT_ATTR_NODIRATIME"),
    (MOUNT_ATTR_IDMAP, "MOUNT_ATTR_IDMAP"),
    (0x0020_0000, "MOUNT_ATTR_NOSYMFOLLOW"),
];

/// fsopen's FSOPEN_CLOEXEC and fsmount's FSMOUNT_CLOEXEC share the value 1.
pub const FSOPEN_FLAGS: FlagTable = &[(1, "FSOPEN_CLOEXEC")];
pub const FSMOUNT_FLAGS: FlagTable = &[(1, "FSMOUNT_CLOEXEC")];

/// The names of the bits set in `v`, in table order, then any unknown bits in hex.
pub fn flag_list(v: u64, table: FlagTable) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = v;
    for &(bit, name) in table {
        if bit != 0 && v & bit == bit {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

fn join(list: Vec<String>) -> String {
    if list.is_empty() {
        "0".to_owned()
    } else {
        list.join("|")
    }
}

/// mount(2) flags as names; the historic magic in the top half is named, not shown as a number.
pub fn mount_flag_list(v: u64) -> Vec<String> {
    if v & MS_MGC_MSK == MS_MGC_VAL {
        let mut l = vec!["MS_MGC_VAL".to_owned()];
        l.extend(flag_list(v & !MS_MGC_MSK, MOUNT_FLAGS));
        l
    } else {
        flag_list(v, MOUNT_FLAGS)
    }
}

/// e.g. `MS_BIND|MS_REC`, or `0`.
pub fn mount_flags(v: u64) -> String {
    join(mount_flag_list(v))
}

pub fn umount_flags(v: u64) -> String {
    join(flag_list(v, UMOUNT_FLAGS))
}

/// unshare, clone3 and setns flags.
pub fn clone_flags(v: u64) -> String {
    join(flag_list(v, CLONE_FLAGS))
}

/// clone(2) flags: the low byte is the exit signal.
pub fn clone_flag_list_with_signal(v: u64) -> Vec<String> {
    let mut l = flag_list(v & !0xff, CLONE_FLAGS);
    let sig = (v & 0xff) as i32;
    if sig != 0 {
        l.push(signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_owned));
    }
    l
}

pub fn at_flags(v: u64) -> String {
    join(flag_list(v, AT_FLAGS))
}

pub fn open_tree_flags(v: u64) -> String {
    join(flag_list(v, OPEN_TREE_FLAGS))
}

pub fn move_mount_flags(v: u64) -> String {
    join(flag_list(v, MOVE_MOUNT_FLAGS))
}

pub fn mount_attr_flags(v: u64) -> String {
    join(flag_list(v, MOUNT_ATTR_FLAGS))
}

/// Joins a list from `flag_list` the way the text output shows flags.
pub fn join_flags(list: Vec<String>) -> String {
    join(list)
}

pub fn fsconfig_cmd(cmd: u32) -> Option<&'static str> {
    Some(match cmd {
        FSCONFIG_SET_FLAG => "FSCONFIG_SET_FLAG",
        FSCONFIG_SET_STRING => "FSCONFIG_SET_STRING",
        FSCONFIG_SET_BINARY => "FSCONFIG_SET_BINARY",
        FSCONFIG_SET_PATH => "FSCONFIG_SET_PATH",
        FSCONFIG_SET_PATH_EMPTY => "FSCONFIG_SET_PATH_EMPTY",
        FSCONFIG_SET_FD => "FSCONFIG_SET_FD",
        FSCONFIG_CMD_CREATE => "FSCONFIG_CMD_CREATE",
        FSCONFIG_CMD_RECONFIGURE => "FSCONFIG_CMD_RECONFIGURE",
        FSCONFIG_CMD_CREATE_EXCL => "FSCONFIG_CMD_CREATE_EXCL",
        _ => return None,
    })
}

pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return None,
    })
}

/// A file descriptor argument: `AT_FDCWD` by name.
pub fn fd_name(fd: i32) -> String {
    if fd == AT_FDCWD {
        "AT_FDCWD".to_owned()
    } else {
        fd.to_string()
    }
}

const ERRNOS: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::ENOEXEC, "ENOEXEC"),
    (libc::EBADF, "EBADF"),
    (libc::ECHILD, "ECHILD"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::ENOTBLK, "ENOTBLK"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EMLINK, "EMLINK"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOLCK, "ENOLCK"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::ENOMSG, "ENOMSG"),
    (libc::ENODATA, "ENODATA"),
    (libc::ENOLINK, "ENOLINK"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::EUSERS, "EUSERS"),
    (libc::ENOTSOCK, "ENOTSOCK"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ESTALE, "ESTALE"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::ECANCELED, "ECANCELED"),
    (libc::EOWNERDEAD, "EOWNERDEAD"),
    (libc::EKEYREJECTED, "EKEYREJECTED"),
    (libc::EUCLEAN, "EUCLEAN"),
    (libc::EMEDIUMTYPE, "EMEDIUMTYPE"),
    // Kernel-internal values that can escape to user space on some paths.
    (512, "ERESTARTSYS"),
    (513, "ERESTARTNOINTR"),
    (514, "ERESTARTNOHAND"),
    (516, "ERESTART_RESTARTBLOCK"),
    (524, "ENOTSUPP"),
];

/// `errno_name(16) == Some("EBUSY")`.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|(n, _)| *n == errno).map(|(_, s)| *s)
}
