//! Reading who acted from a `task_struct`, with offsets that userspace computed from BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
};
use mntleak_common::{KernelOffsets, NsInfo, TaskInfo};

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
    _pad: 0,
};

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the zeros above.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
unsafe fn read_at<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Namespaces of `task` (a `task_struct *`). Zero fields when unknown.
#[inline(always)]
pub fn task_ns(task: u64, o: &KernelOffsets) -> NsInfo {
    let mut ns = NsInfo::default();
    if o.valid == 0 {
        return ns;
    }
    unsafe {
        let Some(nsproxy) = read_at::<u64>(task, o.task_nsproxy) else {
            return ns;
        };
        if let Some(mnt) = read_at::<u64>(nsproxy, o.nsproxy_mnt_ns) {
            ns.mnt_ns_inum = read_at::<u32>(mnt, o.mnt_ns_inum).unwrap_or(0);
            if o.mnt_ns_id != 0 {
                ns.mnt_ns_id = read_at::<u64>(mnt, o.mnt_ns_id).unwrap_or(0);
            }
        }
        if let Some(net) = read_at::<u64>(nsproxy, o.nsproxy_net_ns) {
            ns.net_ns_inum = read_at::<u32>(net, o.net_ns_inum).unwrap_or(0);
        }
    }
    ns
}

/// tgid of `task`.
#[inline(always)]
pub fn task_tgid(task: u64, o: &KernelOffsets) -> u32 {
    if o.valid == 0 {
        return 0;
    }
    unsafe { read_at::<u32>(task, o.task_tgid).unwrap_or(0) }
}

/// The current task's namespaces.
#[inline(always)]
pub fn current_ns() -> NsInfo {
    let o = offsets();
    task_ns(unsafe { bpf_get_current_task() }, &o)
}

/// Everything about the current task.
#[inline(always)]
pub fn fill_current(info: &mut TaskInfo) {
    let o = offsets();
    let task = unsafe { bpf_get_current_task() };
    let pid_tgid = bpf_get_current_pid_tgid();
    info.ts_ns = unsafe { bpf_ktime_get_ns() };
    info.tgid = (pid_tgid >> 32) as u32;
    info.tid = pid_tgid as u32;
    info.ppid = if o.valid != 0 {
        let parent = unsafe { read_at::<u64>(task, o.task_real_parent) }.unwrap_or(0);
        task_tgid(parent, &o)
    } else {
        0
    };
    info._pad0 = 0;
    info.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    info.ns = task_ns(task, &o);
    info.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}
