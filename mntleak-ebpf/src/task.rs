//! Reading who acted from a `task_struct`, and where its fds and cwd point, with offsets that
//! userspace computed from BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    generated,
};
use mntleak_common::{KernelOffsets, NsInfo, PATH_MAX_CAPTURED, PathRes, TaskInfo, res};

use crate::maps::{PATHBUF, WALK};

/// Filled by the loader from the running kernel's BTF; all zero means unknown.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_nsproxy: 0,
    task_real_parent: 0,
    task_tgid: 0,
    nsproxy_mnt_ns: 0,
    nsproxy_net_ns: 0,
    mnt_ns_inum: 0,
    mnt_ns_id: 0,
    net_ns_inum: 0,
    path_valid: 0,
    task_fs: 0,
    task_files: 0,
    fs_root: 0,
    fs_pwd: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_path: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name_len: 0,
    dentry_name: 0,
    vfsmount_root: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    mount_id_unique: 0,
    cgroup_valid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    task_comm: 0,
};

/// One field of `OFFSETS`. Volatile so the compiler does not fold the zeros above; one field at a
/// time so the whole struct is never copied onto the 512-byte stack.
macro_rules! off {
    ($f:ident) => {
        read_offset(core::ptr::addr_of!(OFFSETS.$f))
    };
}

#[inline(always)]
fn read_offset(field: *const u32) -> u32 {
    // SAFETY: `field` points into the `OFFSETS` global (see `off!`).
    unsafe { core::ptr::read_volatile(field) }
}

/// Whether the namespace offsets are known.
#[inline(always)]
pub fn offsets_valid() -> bool {
    off!(valid) != 0
}

/// Field at `base + off` by `bpf_probe_read_kernel`, for any address whatever its origin; None
/// for a null `base` or an unreadable address.
#[inline(always)]
unsafe fn read_at<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// [`read_at`] as a plain load, for `base` a BTF-typed pointer (`bpf_get_current_task_btf`, a
/// tp_btf argument, a pointer read from either). The verifier checks each offset against the
/// kernel's BTF (the offsets are constants to it: they come from the frozen `.rodata`) and makes
/// the load fault-safe: several times cheaper than a helper call, and every syscall event reads
/// eight fields.
#[inline(always)]
unsafe fn load_btf<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: see above; a faulting load yields zero instead of trapping.
    Some(unsafe { core::ptr::read_volatile((base + off as u64) as *const T) })
}

/// Namespaces of `task`, a BTF-typed `task_struct *` (the current task, a tp_btf argument).
/// Zero fields when unknown.
#[inline(always)]
pub fn task_ns(task: u64) -> NsInfo {
    let mut ns = NsInfo::default();
    if !offsets_valid() {
        return ns;
    }
    unsafe {
        let Some(nsproxy) = load_btf::<u64>(task, off!(task_nsproxy)) else {
            return ns;
        };
        if let Some(mnt) = load_btf::<u64>(nsproxy, off!(nsproxy_mnt_ns)) {
            ns.mnt_ns_inum = load_btf::<u32>(mnt, off!(mnt_ns_inum)).unwrap_or(0);
            let id = off!(mnt_ns_id);
            if id != 0 {
                ns.mnt_ns_id = load_btf::<u64>(mnt, id).unwrap_or(0);
            }
        }
        if let Some(net) = load_btf::<u64>(nsproxy, off!(nsproxy_net_ns)) {
            ns.net_ns_inum = load_btf::<u32>(net, off!(net_ns_inum)).unwrap_or(0);
        }
    }
    ns
}

/// tgid of `task`, a BTF-typed `task_struct *`.
#[inline(always)]
pub fn task_tgid(task: u64) -> u32 {
    if !offsets_valid() {
        return 0;
    }
    unsafe { load_btf::<u32>(task, off!(task_tgid)).unwrap_or(0) }
}

#[inline(always)]
fn current_task_btf() -> u64 {
    unsafe { generated::bpf_get_current_task_btf() as u64 }
}

/// The current task's namespaces.
#[inline(always)]
pub fn current_ns() -> NsInfo {
    task_ns(current_task_btf())
}

/// Everything about the current task, whose `bpf_get_current_pid_tgid()` the caller has already
/// read (every program needs it first, for its map key or a filter).
#[inline(always)]
pub fn fill_current(info: &mut TaskInfo, pid_tgid: u64) {
    let task = current_task_btf();
    info.ts_ns = unsafe { bpf_ktime_get_ns() };
    info.tgid = (pid_tgid >> 32) as u32;
    info.tid = pid_tgid as u32;
    info.ppid = if offsets_valid() {
        let parent = unsafe { load_btf::<u64>(task, off!(task_real_parent)) }.unwrap_or(0);
        task_tgid(parent)
    } else {
        0
    };
    info._pad0 = 0;
    info.cgroup_id = current_cgroup_id(task);
    info.ns = task_ns(task);
    let at = off!(task_comm);
    if at != 0 {
        // Plain loads, as the kernel's own readers of another task's comm do; a rename racing
        // with them may mix the two names, as it may with the helper.
        for (i, part) in info.comm.chunks_exact_mut(8).enumerate() {
            let word = unsafe { load_btf::<u64>(task, at + 8 * i as u32) }.unwrap_or(0);
            part.copy_from_slice(&word.to_ne_bytes());
        }
    } else {
        // Straight into the event: the wrapper's by-value array costs stack copies and memsets.
        let comm = info.comm.as_mut_ptr().cast();
        if unsafe { generated::bpf_get_current_comm(comm, info.comm.len() as u32) } != 0 {
            info.comm = [0; 16];
        }
    }
}

/// The cgroup-v2 id of `task` (the current task): task->cgroups->dfl_cgrp->kn->id, what
/// `bpf_get_current_cgroup_id` returns. Four loads cost less than the helper call, which with
/// the comm helper was a tenth of an event's BPF time here (calls and returns are dear under
/// the SRSO "safe RET" mitigation).
#[inline(always)]
fn current_cgroup_id(task: u64) -> u64 {
    if off!(cgroup_valid) == 0 {
        return unsafe { bpf_get_current_cgroup_id() };
    }
    unsafe {
        let Some(css) = load_btf::<u64>(task, off!(task_cgroups)) else {
            return 0;
        };
        let Some(cgrp) = load_btf::<u64>(css, off!(css_set_dfl_cgrp)) else {
            return 0;
        };
        let Some(kn) = load_btf::<u64>(cgrp, off!(cgroup_kn)) else {
            return 0;
        };
        load_btf::<u64>(kn, off!(kernfs_node_id)).unwrap_or(0)
    }
}

/// `AT_FDCWD`: resolve against the cwd.
pub const AT_FDCWD: i64 = -100;
/// Dentries and mount crossings walked at most; deeper paths are reported TOO_LONG.
const WALK_MAX: u32 = 64;
/// The walk builds the path backwards, ending at this offset of the 2x-sized PATHBUF, so that a
/// name of up to 255 bytes written at any start below it stays inside the buffer.
const END: u64 = PATH_MAX_CAPTURED as u64;

/// Hides a value from the optimizer so that the masks applied to it stay in the program: the
/// verifier needs them to bound variable offsets into PATHBUF.
#[inline(always)]
fn opaque(v: u64) -> u64 {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Resolves what `fd` (or the cwd, for [`AT_FDCWD`]) of the current task points to into `out`:
/// its absolute path as seen from the task's root, like d_path(), and its mount's unique id.
/// Sets `out.status`, `out.len`, `out.path`, `out.mnt_id`; the caller sets `out.skip`.
#[inline(never)]
pub fn resolve_fd(fd: i64, out: &mut PathRes) {
    out.status = resolve(fd, out);
}

/// Where the walk is: one `bpf_loop` step per dentry or mount crossing. Kept in a map (`WALK`),
/// not on the stack: the verifier does not track map contents, so every step starts from the
/// same verifier state and the loop is checked in two passes instead of one per combination of
/// names and mount crossings.
#[repr(C)]
pub struct Walk {
    /// Current dentry, its `vfsmount *`, that mount's `struct mount *` and root dentry.
    d: u64,
    vfs: u64,
    m: u64,
    mnt_root: u64,
    /// The task's root, where the walk ends.
    root_mnt: u64,
    root_dentry: u64,
    /// Start of the path built so far in PATHBUF (it ends at `END`).
    pos: u64,
    /// `res::NONE` while walking.
    status: u64,
}

#[inline(always)]
fn resolve(fd: i64, out: &mut PathRes) -> u16 {
    if off!(path_valid) == 0 {
        return res::FAILED;
    }
    let task = unsafe { bpf_get_current_task() };
    let path_mnt = off!(path_mnt);
    let path_dentry = off!(path_dentry);
    // SAFETY (all reads below): bpf_probe_read_kernel checks the address.
    let Some(fs) = (unsafe { read_at::<u64>(task, off!(task_fs)) }) else {
        return res::FAILED;
    };
    let root = off!(fs_root);
    let (Some(root_mnt), Some(root_dentry)) = (unsafe {
        (
            read_at::<u64>(fs, root + path_mnt),
            read_at::<u64>(fs, root + path_dentry),
        )
    }) else {
        return res::FAILED;
    };
    // The starting point: the cwd, or the fd's file.
    let (base, at) = if fd == AT_FDCWD {
        (fs, off!(fs_pwd))
    } else {
        if fd < 0 {
            return res::BAD_FD;
        }
        let Some(fdt) = (unsafe {
            read_at::<u64>(task, off!(task_files)).and_then(|f| read_at::<u64>(f, off!(files_fdt)))
        }) else {
            return res::FAILED;
        };
        let max = unsafe { read_at::<u32>(fdt, off!(fdt_max_fds)) }.unwrap_or(0);
        if fd as u64 >= max as u64 {
            return res::BAD_FD;
        }
        let Some(arr) = (unsafe { read_at::<u64>(fdt, off!(fdt_fd)) }) else {
            return res::FAILED;
        };
        let file = unsafe { read_at::<u64>(arr + 8 * fd as u64, 0) }.unwrap_or(0);
        if file == 0 {
            return res::BAD_FD;
        }
        (file, off!(file_path))
    };
    let (Some(vfs), Some(d)) = (unsafe {
        (
            read_at::<u64>(base, at + path_mnt),
            read_at::<u64>(base, at + path_dentry),
        )
    }) else {
        return res::FAILED;
    };
    let m = vfs - off!(mount_mnt) as u64;
    let id_off = off!(mount_id_unique);
    out.mnt_id = if id_off != 0 {
        unsafe { read_at::<u64>(m, id_off) }.unwrap_or(0)
    } else {
        0
    };
    let Some(mnt_root) = (unsafe { read_at::<u64>(vfs, off!(vfsmount_root)) }) else {
        return res::FAILED;
    };
    let Some(w) = WALK.get_ptr_mut(0) else {
        return res::FAILED;
    };
    // SAFETY: this CPU's value; like SCRATCH, used by one program at a time on a CPU.
    let w = unsafe { &mut *w };
    *w = Walk {
        d,
        vfs,
        m,
        mnt_root,
        root_mnt,
        root_dentry,
        pos: END,
        status: res::NONE as u64,
    };
    // bpf_loop: the verifier checks one step, not WALK_MAX unrolled copies of it.
    unsafe {
        generated::bpf_loop(
            WALK_MAX,
            walk_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let status = match w.status as u16 {
        res::NONE => res::TOO_LONG, // WALK_MAX steps without reaching the root
        s => s,
    };
    if status != res::OK {
        return status;
    }
    let Some(buf) = PATHBUF.get_ptr_mut(0) else {
        return res::FAILED;
    };
    let pos = w.pos & 0x1ff;
    if pos >= END {
        out.path[0] = b'/';
        out.len = 1;
        return res::OK;
    }
    let n = (END - pos) & 0x1ff;
    if n == 0 || n > END {
        return res::FAILED;
    }
    // SAFETY: n <= 256 = out.path's size; the source is PATHBUF[pos..END].
    let r = unsafe {
        generated::bpf_probe_read_kernel(
            out.path.as_mut_ptr().cast(),
            n as u32,
            buf.cast::<u8>().add(pos as usize).cast(),
        )
    };
    if r != 0 {
        return res::FAILED;
    }
    out.len = n as u16;
    res::OK
}

/// One step of the walk, like the kernel's prepend_path(): at the task's root, done; at a mount's
/// root, across to its mountpoint in the parent mount; else prepend "/<name>" and go up.
/// Returns 1 to stop the loop, 0 to go on.
extern "C" fn walk_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's value, set up by `resolve`.
    let w = unsafe { &mut *w };
    let stop = |w: &mut Walk, status: u16| {
        w.status = status as u64;
        1
    };
    if w.d == w.root_dentry && w.vfs == w.root_mnt {
        return stop(w, res::OK);
    }
    // SAFETY (all reads below): bpf_probe_read_kernel checks the address.
    if w.d == w.mnt_root {
        let parent = unsafe { read_at::<u64>(w.m, off!(mount_parent)) }.unwrap_or(0);
        if parent == 0 || parent == w.m {
            // The top of a tree that is not the task's root: another namespace's mount, a
            // detached one, or outside a chroot.
            return stop(w, res::UNREACHABLE);
        }
        let Some(mp) = (unsafe { read_at::<u64>(w.m, off!(mount_mountpoint)) }) else {
            return stop(w, res::FAILED);
        };
        let vfs = parent + off!(mount_mnt) as u64;
        let Some(r) = (unsafe { read_at::<u64>(vfs, off!(vfsmount_root)) }) else {
            return stop(w, res::FAILED);
        };
        w.d = mp;
        w.m = parent;
        w.vfs = vfs;
        w.mnt_root = r;
        return 0;
    }
    let d = w.d;
    let up = unsafe { read_at::<u64>(d, off!(dentry_parent)) }.unwrap_or(0);
    let len = unsafe { read_at::<u32>(d, off!(dentry_name_len)) }.unwrap_or(0) as u64;
    let name = unsafe { read_at::<u64>(d, off!(dentry_name)) }.unwrap_or(0);
    if up == 0 || up == d || name == 0 || len == 0 {
        return stop(w, res::FAILED);
    }
    let pos = w.pos & 0x1ff;
    if len >= pos {
        return stop(w, res::TOO_LONG); // the name and its '/' do not fit
    }
    let Some(buf) = PATHBUF.get_ptr_mut(0) else {
        return stop(w, res::FAILED);
    };
    let buf = buf.cast::<u8>();
    let pos = pos - (len + 1);
    let p = opaque(pos) & 0xff;
    let n = opaque(len) & 0xff;
    // SAFETY: p <= 255 and n <= 255: inside the 512-byte PATHBUF.
    unsafe {
        *buf.add(p as usize) = b'/';
        generated::bpf_probe_read_kernel(
            buf.add(p as usize + 1).cast(),
            n as u32,
            name as *const core::ffi::c_void,
        );
    }
    w.pos = pos;
    w.d = up;
    0
}
