//! Process lifecycle: who inherits a namespace (fork) and who lets go of one (exit).
//! fork is tp_btf (it needs the child's task_struct for its namespaces); exec and exit use the
//! classic sched tracepoints, whose records carry what we need without extra offsets.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use mntleak_common::{
    EventKind,
    flags::{HAS_NEW_NS, STR_TRUNCATED_SHIFT},
};

use crate::{
    maps::{emit, scratch},
    syscalls::complete_clone,
    task::{fill_current, offsets_valid, task_ns, task_tgid},
    tp_field,
};

/// sched_process_fork(parent, child): new processes only, not new threads.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let child_tgid = task_tgid(child);
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent_tgid = (pid_tgid >> 32) as u32;
    if child_tgid == parent_tgid {
        return 0;
    }
    let Some(ev) = scratch(EventKind::ProcessFork) else {
        return 0;
    };
    fill_current(&mut ev.task, pid_tgid);
    ev.args[0] = child_tgid as u64;
    if !offsets_valid() {
        emit(ev);
        return 0;
    }
    let child_ns = task_ns(child);
    ev.new_ns = child_ns;
    ev.flags |= HAS_NEW_NS;
    // Only CLONE_NEWNS puts a child in another mount namespace than its parent's. The clone goes
    // first: the engine credits a namespace copy to the first record that shows it, and
    // "clone3(CLONE_NEWNS)" says more than "fork".
    if child_ns.mnt_ns_inum != ev.task.ns.mnt_ns_inum {
        complete_clone(pid_tgid, child_tgid, child_ns);
    }
    emit(ev);
    0
}

/// sched_process_exec: record layout `__data_loc char[] filename` at 8, `pid` at 12, `old_pid` at 16.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(ev) = scratch(EventKind::ProcessExec) else {
        return 0;
    };
    fill_current(&mut ev.task, bpf_get_current_pid_tgid());
    ev.args[0] = tp_field::<i32>(&ctx, 16) as u32 as u64;
    let loc = tp_field::<u32>(&ctx, 8);
    let src = (ctx.as_ptr() as u64 + (loc & 0xffff) as u64) as *const u8;
    if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.str0) } {
        let len = s.len();
        ev.str_len[0] = len as u16;
        ev.flags |= 1;
        if len + 1 >= ev.str0.len() && (loc >> 16) as usize > len + 1 {
            ev.flags |= 1 << STR_TRUNCATED_SHIFT;
        }
    }
    emit(ev);
    0
}

/// sched_process_exit: only the thread group leader, i.e. the process, is an event.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 != (pid_tgid >> 32) as u32 {
        return 0;
    }
    let Some(ev) = scratch(EventKind::ProcessExit) else {
        return 0;
    };
    fill_current(&mut ev.task, pid_tgid);
    emit(ev);
    0
}
