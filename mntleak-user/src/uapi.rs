//! Kernel ABI constants used across the crate, checked against the 6.18 uapi headers. One place, so
//! the decoder, the engine and the reports agree. `libc` lacks several of them (mount API, fanotify
//! mount events, statmount/listmount numbers).

// mount(2) flags
pub const MS_RDONLY: u64 = 1;
pub const MS_NOSUID: u64 = 2;
pub const MS_NODEV: u64 = 4;
pub const MS_NOEXEC: u64 = 8;
pub const MS_REMOUNT: u64 = 32;
pub const MS_BIND: u64 = 4096;
pub const MS_MOVE: u64 = 8192;
pub const MS_REC: u64 = 16384;
pub const MS_UNBINDABLE: u64 = 1 << 17;
pub const MS_PRIVATE: u64 = 1 << 18;
pub const MS_SLAVE: u64 = 1 << 19;
pub const MS_SHARED: u64 = 1 << 20;
pub const MS_PROPAGATION: u64 = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED;
/// Magic value old callers put in the top half of the flags; ignored by the kernel.
pub const MS_MGC_MSK: u64 = 0xffff_0000;
pub const MS_MGC_VAL: u64 = 0xC0ED_0000;

// umount2(2)
pub const MNT_FORCE: u64 = 1;
pub const MNT_DETACH: u64 = 2;
pub const MNT_EXPIRE: u64 = 4;
pub const UMOUNT_NOFOLLOW: u64 = 8;

// clone/unshare
pub const CLONE_NEWNS: u64 = 0x0002_0000;
pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
pub const CLONE_NEWPID: u64 = 0x2000_0000;
pub const CLONE_NEWNET: u64 = 0x4000_0000;
pub const CLONE_NEWTIME: u64 = 0x80;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_THREAD: u64 = 0x0001_0000;
pub const CLONE_VM: u64 = 0x100;

// *at()
pub const AT_FDCWD: i32 = -100;
pub const AT_REMOVEDIR: u64 = 0x200;
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub const AT_EMPTY_PATH: u64 = 0x1000;
pub const AT_RECURSIVE: u64 = 0x8000;

// open_tree(2)
pub const OPEN_TREE_CLONE: u64 = 1;
pub const OPEN_TREE_CLOEXEC: u64 = 0o2000000;

// move_mount(2)
pub const MOVE_MOUNT_F_SYMLINKS: u64 = 0x01;
pub const MOVE_MOUNT_F_AUTOMOUNTS: u64 = 0x02;
pub const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x04;
pub const MOVE_MOUNT_T_SYMLINKS: u64 = 0x10;
pub const MOVE_MOUNT_T_AUTOMOUNTS: u64 = 0x20;
pub const MOVE_MOUNT_T_EMPTY_PATH: u64 = 0x40;
pub const MOVE_MOUNT_SET_GROUP: u64 = 0x100;
pub const MOVE_MOUNT_BENEATH: u64 = 0x200;

// mount_setattr(2): `struct mount_attr` fields are read by the eBPF side into args.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

// fsconfig(2) commands
pub const FSCONFIG_SET_FLAG: u32 = 0;
pub const FSCONFIG_SET_STRING: u32 = 1;
pub const FSCONFIG_SET_BINARY: u32 = 2;
pub const FSCONFIG_SET_PATH: u32 = 3;
pub const FSCONFIG_SET_PATH_EMPTY: u32 = 4;
pub const FSCONFIG_SET_FD: u32 = 5;
pub const FSCONFIG_CMD_CREATE: u32 = 6;
pub const FSCONFIG_CMD_RECONFIGURE: u32 = 7;
pub const FSCONFIG_CMD_CREATE_EXCL: u32 = 8;

// setns(2) nstype
pub const NSTYPE_ANY: u64 = 0;

// statmount/listmount (x86_64 syscall numbers, include/uapi/linux/mount.h)
pub const SYS_STATMOUNT: libc::c_long = 457;
pub const SYS_LISTMOUNT: libc::c_long = 458;
pub const LSMT_ROOT: u64 = 0xffff_ffff_ffff_ffff;
pub const STATMOUNT_SB_BASIC: u64 = 0x1;
pub const STATMOUNT_MNT_BASIC: u64 = 0x2;
pub const STATMOUNT_PROPAGATE_FROM: u64 = 0x4;
pub const STATMOUNT_MNT_ROOT: u64 = 0x8;
pub const STATMOUNT_MNT_POINT: u64 = 0x10;
pub const STATMOUNT_FS_TYPE: u64 = 0x20;
pub const STATMOUNT_MNT_NS_ID: u64 = 0x40;
pub const STATMOUNT_MNT_OPTS: u64 = 0x80;
pub const STATMOUNT_FS_SUBTYPE: u64 = 0x100;
pub const STATMOUNT_SB_SOURCE: u64 = 0x200;
pub const MNT_ID_REQ_SIZE_VER0: u32 = 24;
pub const MNT_ID_REQ_SIZE_VER1: u32 = 32;

// nsfs ioctls (include/uapi/linux/nsfs.h): _IO(0xb7, n) and _IOR(0xb7, n, __u64)
pub const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;
pub const NS_MNT_GET_INFO: libc::c_ulong = 0x8010_b70a;
pub const NS_MNT_GET_NEXT: libc::c_ulong = 0x8010_b70b;
pub const NS_MNT_GET_PREV: libc::c_ulong = 0x8010_b70c;

/// The initial mount namespace's inode (PROC_MNT_INIT_INO), stable on every kernel.
pub const INIT_MNT_NS_INUM: u32 = 0xF000_0000 - 8;
