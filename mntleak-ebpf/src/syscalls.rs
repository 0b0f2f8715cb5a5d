//! Syscall tracepoints: one `sys_enter_*` program per syscall sends the arguments at once, flagged
//! `AWAITS_EXIT`; a shared exit program (attached to every matching exit tracepoint) sends the
//! return value as a `SyscallExit` record, and userspace pairs the two by thread. Only a syscall
//! with a string argument that cannot be read at entry waits in PENDING for its exit, which
//! reads it and sends the whole event. Argument layout per kind: see `mntleak-user/src/decode.rs`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use mntleak_common::{
    Event, EventKind, NsInfo, PATH_MAX_CAPTURED, RESOLVE_AT_ENTER, RESOLVE_AT_EXIT, SyscallExit,
    flags::{AWAITS_EXIT, HAS_RET, STR_TRUNCATED_SHIFT},
    res,
};

use crate::{
    maps::{
        InFlight, PENDING, RESOLVERS, disarm, emit, emit_exit, park, parked, record_loss, reset,
        scratch_slot, unpark,
    },
    task::{current_ns, fill_current, resolve_fd},
    tp_field,
};

const AT_FDCWD: u64 = -100i64 as u64;
const AT_EMPTY_PATH: u64 = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u64 = 0x40;
const MS_BIND: u64 = 0x1000;
const MS_MOVE: u64 = 0x2000;
const FSCONFIG_SET_STRING: u64 = 1;
const FSCONFIG_SET_PATH: u64 = 3;
const FSCONFIG_SET_PATH_EMPTY: u64 = 4;
const CLONE_NEWNS: u64 = 0x0002_0000;

/// Reads a NUL-terminated user string into `buf`: (length without NUL, truncated).
#[inline(always)]
fn user_str(buf: &mut [u8], src: u64) -> Option<(u16, bool)> {
    if src == 0 {
        return None;
    }
    let len = unsafe { bpf_probe_read_user_str_bytes(src as *const u8, buf) }
        .ok()?
        .len();
    let mut truncated = false;
    if len + 1 >= buf.len() {
        // A full buffer: truncated unless the string ends exactly here.
        let next: u8 = unsafe { bpf_probe_read_user((src + len as u64) as *const u8) }.unwrap_or(0);
        truncated = next != 0;
    }
    Some((len as u16, truncated))
}

#[inline(always)]
fn mark(ev: &mut Event, slot: usize, got: Option<(u16, bool)>) {
    if let Some((len, truncated)) = got {
        ev.flags |= 1 << slot;
        if truncated {
            ev.flags |= 1 << (STR_TRUNCATED_SHIFT as usize + slot);
        }
        ev.str_len[slot] = len;
    }
}

/// Reads user string `src` into slot `slot`; false if it could not be read (yet).
#[inline(always)]
fn read_slot(ev: &mut Event, slot: usize, src: u64) -> bool {
    let got = match slot {
        0 => user_str(&mut ev.str0, src),
        1 => user_str(&mut ev.str1, src),
        _ => user_str(&mut ev.str2, src),
    };
    mark(ev, slot, got);
    got.is_some()
}

/// String arguments not readable at enter, to retry at exit. A page the caller has not touched
/// since fork or exec is not resident, and BPF cannot fault it in; by the syscall's exit the kernel
/// has copied the string, so the page is there.
struct Retry([u64; 3]);

impl Retry {
    #[inline(always)]
    fn read(&mut self, ev: &mut Event, slot: usize, src: u64) {
        if src != 0 && !read_slot(ev, slot, src) {
            self.0[slot] = src;
        }
    }
}

/// `N` and the prefix length of `/proc/self/fd/N[/...]` or `/proc/thread-self/fd/N[/...]`.
#[inline(always)]
fn proc_fd(s: &[u8; PATH_MAX_CAPTURED], len: u16) -> Option<(i64, u16)> {
    if has_prefix(s, b"/proc/self/fd/") {
        fd_digits::<14>(s, len)
    } else if has_prefix(s, b"/proc/thread-self/fd/") {
        fd_digits::<21>(s, len)
    } else {
        None
    }
}

#[inline(always)]
fn has_prefix<const N: usize>(s: &[u8; PATH_MAX_CAPTURED], p: &[u8; N]) -> bool {
    let mut i = 0;
    while i < N {
        if s.get(i) != p.get(i) {
            return false;
        }
        i += 1;
    }
    true
}

/// Up to 9 digits at `START`, ending the string or followed by '/'.
#[inline(always)]
fn fd_digits<const START: usize>(s: &[u8; PATH_MAX_CAPTURED], len: u16) -> Option<(i64, u16)> {
    // `get` rather than indexing: a bounds-check panic path is a call the loader cannot link.
    let at = |i: usize| {
        if i < len as usize {
            s.get(i).copied()
        } else {
            None
        }
    };
    let mut fd: i64 = 0;
    let mut end = START;
    while end < START + 9 {
        match at(end) {
            Some(c) if c.is_ascii_digit() => fd = fd * 10 + (c - b'0') as i64,
            Some(b'/') | None => break,
            Some(_) => return None,
        }
        end += 1;
    }
    if end == START || !matches!(at(end), Some(b'/') | None) {
        return None;
    }
    Some((fd, end as u16))
}

/// How path slot `slot` of `ev` is resolved: against which dirfd, and whether an empty path names
/// the dirfd itself. None: the slot is not a path (mount's source without MS_BIND/MS_MOVE, ...).
#[inline(always)]
fn path_arg(ev: &Event, slot: usize) -> Option<(i64, bool)> {
    let cwd = crate::task::AT_FDCWD;
    let dirfd = |v: u64| v as u32 as i32 as i64;
    let a = &ev.args;
    let kind = ev.kind;
    if kind == EventKind::Mount as u16 {
        (slot == 1 || a[0] & (MS_BIND | MS_MOVE) != 0).then_some((cwd, false))
    } else if kind == EventKind::Umount as u16 || kind == EventKind::Chroot as u16 {
        (slot == 0).then_some((cwd, false))
    } else if kind == EventKind::PivotRoot as u16 {
        Some((cwd, false))
    } else if kind == EventKind::MoveMount as u16 {
        Some(if slot == 0 {
            (dirfd(a[0]), a[2] & MOVE_MOUNT_F_EMPTY_PATH != 0)
        } else {
            (dirfd(a[1]), a[2] & MOVE_MOUNT_T_EMPTY_PATH != 0)
        })
    } else if kind == EventKind::OpenTree as u16 || kind == EventKind::MountSetattr as u16 {
        (slot == 0).then_some((dirfd(a[0]), a[1] & AT_EMPTY_PATH != 0))
    } else {
        None
    }
}

/// What path slot `slot` (0 or 1) is resolved against, and how much of it that replaces: when it
/// is `/proc/self/fd/N`, relative, or empty with an `*_EMPTY_PATH` flag. None for absolute paths,
/// which need nothing, and for slots that are not paths or were not read whole.
#[inline(always)]
fn resolve_target(ev: &Event, slot: usize) -> Option<(i64, u16)> {
    let (dirfd, empty_ok) = path_arg(ev, slot)?;
    if ev.flags & (1 << slot) == 0 || ev.flags & (1 << (STR_TRUNCATED_SHIFT as usize + slot)) != 0 {
        return None; // unread or cut: nothing reliable to resolve
    }
    let len = ev.str_len[slot];
    let s = if slot == 0 { &ev.str0 } else { &ev.str1 };
    if len == 0 {
        empty_ok.then_some((dirfd, 0))
    } else if s[0] == b'/' {
        proc_fd(s, len)
    } else {
        Some((dirfd, 0))
    }
}

/// Resolves path slot `slot` in the kernel if [`resolve_target`] says it needs it.
#[inline(always)]
fn resolve_slot(ev: &mut Event, slot: usize) {
    if ev.res[slot & 1].status != res::NONE {
        return; // done at entry
    }
    let Some((fd, skip)) = resolve_target(ev, slot) else {
        return;
    };
    let out = if slot == 0 {
        &mut ev.res[0]
    } else {
        &mut ev.res[1]
    };
    out.skip = skip;
    resolve_fd(fd, out);
}

/// Whether the resolver has anything to do for `ev`: most paths are absolute, and skipping the
/// tail call then saves a lookup of the in-flight slot.
#[inline(always)]
fn needs_resolver(ev: &Event) -> bool {
    has_paths(ev.kind) && (resolve_target(ev, 0).is_some() || resolve_target(ev, 1).is_some())
}

#[inline(always)]
fn enter(ctx: &TracePointContext, kind: EventKind) -> u32 {
    if matches!(
        kind,
        EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit
    ) {
        return 0;
    }
    // `args[6]` of trace_event_raw_sys_enter, after the common fields and the syscall number.
    let a = |i: usize| -> u64 { tp_field::<u64>(ctx, 16 + 8 * i) };
    // A clone that makes no mount namespace (every fork, every thread) is not sent: the sched
    // fork event already says who was born where, and the engine has nothing else to take from
    // it. It is the most frequent traced syscall on a busy node.
    let clone_flags = match kind {
        EventKind::Clone => a(0),
        // struct clone_args starts with `__u64 flags`.
        EventKind::Clone3 => unsafe { bpf_probe_read_user(a(0) as *const u64) }.unwrap_or(0),
        _ => CLONE_NEWNS,
    };
    if clone_flags & CLONE_NEWNS == 0 {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    let Some(slot) = scratch_slot() else {
        record_loss();
        return 0;
    };
    let ev = &mut slot.ev;
    reset(ev, kind);
    ev.nr = tp_field::<i32>(ctx, 8) as u32;
    fill_current(&mut ev.task, key);
    let mut retry = Retry([0; 3]);
    match kind {
        EventKind::Mount => {
            retry.read(ev, 0, a(0));
            retry.read(ev, 1, a(1));
            retry.read(ev, 2, a(2));
            ev.args[0] = a(3);
        }
        EventKind::Umount => {
            retry.read(ev, 0, a(0));
            ev.args[0] = a(1);
        }
        EventKind::Unlink | EventKind::Rmdir | EventKind::Chroot => {
            retry.read(ev, 0, a(0));
            ev.args[0] = AT_FDCWD;
        }
        EventKind::Unlinkat => {
            ev.args[0] = a(0);
            retry.read(ev, 0, a(1));
            ev.args[1] = a(2);
        }
        EventKind::Unshare => ev.args[0] = a(0),
        EventKind::Setns => {
            ev.args[0] = a(0);
            ev.args[1] = a(1);
        }
        EventKind::Clone => ev.args[0] = clone_flags,
        EventKind::Clone3 => {
            ev.args[0] = clone_flags;
            ev.args[1] = a(1);
        }
        EventKind::Fsopen => {
            retry.read(ev, 2, a(0));
            ev.args[0] = a(1);
        }
        EventKind::Fsconfig => {
            let cmd = a(1);
            ev.args[0] = a(0);
            ev.args[1] = cmd;
            ev.args[2] = a(4);
            retry.read(ev, 2, a(2));
            if cmd == FSCONFIG_SET_STRING
                || cmd == FSCONFIG_SET_PATH
                || cmd == FSCONFIG_SET_PATH_EMPTY
            {
                retry.read(ev, 0, a(3));
            }
        }
        EventKind::Fsmount => {
            ev.args[0] = a(0);
            ev.args[1] = a(1);
            ev.args[2] = a(2);
        }
        EventKind::MoveMount => {
            ev.args[0] = a(0);
            retry.read(ev, 0, a(1));
            ev.args[1] = a(2);
            retry.read(ev, 1, a(3));
            ev.args[2] = a(4);
        }
        EventKind::OpenTree => {
            ev.args[0] = a(0);
            retry.read(ev, 0, a(1));
            ev.args[1] = a(2);
        }
        EventKind::MountSetattr => {
            ev.args[0] = a(0);
            retry.read(ev, 0, a(1));
            ev.args[1] = a(2);
            let uattr = a(3);
            let size = a(4);
            ev.args[5] = size;
            // struct mount_attr { attr_set, attr_clr, propagation, userns_fd }, all __u64.
            if uattr != 0 && size >= 24 {
                unsafe {
                    ev.args[2] = bpf_probe_read_user(uattr as *const u64).unwrap_or(0);
                    ev.args[3] = bpf_probe_read_user((uattr + 8) as *const u64).unwrap_or(0);
                    ev.args[4] = bpf_probe_read_user((uattr + 16) as *const u64).unwrap_or(0);
                }
            }
        }
        EventKind::PivotRoot => {
            retry.read(ev, 0, a(0));
            retry.read(ev, 1, a(1));
        }
        EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit => {}
    }
    // Volatile stores: plain ones of the two zeros become a call of the BPF `memset`.
    for (i, r) in retry.0.iter().enumerate() {
        // SAFETY: a field of this CPU's slot.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(slot.retry[i]), *r) };
    }
    // Paths are resolved at entry, while the fd is open and the cwd not yet moved (pivot_root,
    // umount2(".")). Does not return when the resolver is installed; it finishes the entry.
    if needs_resolver(&slot.ev) {
        unsafe { RESOLVERS.tail_call(ctx, RESOLVE_AT_ENTER) };
    }
    finish_enter(slot, key);
    0
}

/// Sends a syscall's entry, or parks it in PENDING until its exit when a string could not be
/// read yet (the exit then sends the whole event).
#[inline(always)]
fn finish_enter(slot: &mut InFlight, key: u64) {
    let r = &slot.retry;
    if (r[0] | r[1] | r[2]) != 0 {
        park(slot, key);
        return;
    }
    slot.ev.flags |= AWAITS_EXIT;
    emit(&slot.ev);
}

/// Kinds whose string slots 0 and 1 may be paths to resolve.
#[inline(always)]
fn has_paths(kind: u16) -> bool {
    kind == EventKind::Mount as u16
        || kind == EventKind::Umount as u16
        || kind == EventKind::MoveMount as u16
        || kind == EventKind::OpenTree as u16
        || kind == EventKind::MountSetattr as u16
        || kind == EventKind::PivotRoot as u16
        || kind == EventKind::Chroot as u16
}

/// The path resolver at entry, run as a tail call of the syscall programs (see [`RESOLVERS`]):
/// verified once here instead of once per syscall program and per path of each. It finishes the
/// entry, as the syscall program would have.
#[tracepoint]
pub fn resolve_paths(_ctx: TracePointContext) -> u32 {
    let Some(slot) = scratch_slot() else {
        return 0;
    };
    resolve_slot(&mut slot.ev, 0);
    resolve_slot(&mut slot.ev, 1);
    finish_enter(slot, bpf_get_current_pid_tgid());
    0
}

/// The path resolver at exit, for a parked syscall whose path could only be read then: it
/// sends the event, as the exit program would have.
#[tracepoint]
pub fn resolve_paths_exit(_ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // Disarmed by the exit program that tail-called here: looked up directly.
    let Some(slot) = PENDING.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: a value of PENDING; only this thread uses its key.
    let ev = unsafe { &mut (*slot).ev };
    resolve_slot(ev, 0);
    resolve_slot(ev, 1);
    emit(ev);
    unpark(key);
    0
}

/// What an exit program adds to the return value.
#[derive(Clone, Copy)]
enum ExitKind {
    /// Nothing.
    Plain,
    /// The caller's namespaces after a successful call (unshare, setns).
    NewNs,
    /// clone and clone3, traced only when the fork program cannot send their new namespaces
    /// (`complete_clone`): only the parent's return, which names the child, is sent.
    Clone,
}

/// The exit half of every traced syscall: sends its return value, or the whole event if it was
/// parked.
#[inline(always)]
fn exit(ctx: &TracePointContext, kind: ExitKind) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // `__syscall_nr` and `ret` of trace_event_raw_sys_exit.
    let nr = tp_field::<i32>(ctx, 8) as u32;
    let ret = tp_field::<i64>(ctx, 16);
    if let Some(slot) = parked(key) {
        send_parked(ctx, slot, key, ret);
        return 0;
    }
    match kind {
        ExitKind::Plain => emit_exit(key, nr, ret, None),
        // The caller is already in its new namespaces here.
        ExitKind::NewNs => emit_exit(key, nr, ret, (ret == 0).then(current_ns)),
        ExitKind::Clone if ret > 0 => emit_exit(key, nr, ret, None),
        ExitKind::Clone => {}
    }
    0
}

/// Completes a parked syscall with its return value and the strings that can be read now.
#[inline(always)]
fn send_parked(ctx: &TracePointContext, slot: &mut InFlight, key: u64, ret: i64) {
    disarm(slot);
    let ev = &mut slot.ev;
    ev.ret = ret;
    ev.flags |= HAS_RET;
    let r = slot.retry;
    let late_path = (r[0] != 0 && read_slot(ev, 0, r[0])) | (r[1] != 0 && read_slot(ev, 1, r[1]));
    if r[2] != 0 {
        read_slot(ev, 2, r[2]);
    }
    // A path read only now is resolved only now (the fd or cwd may have changed during the
    // call, which is rarer than no path at all); the resolver sends the event.
    if late_path && needs_resolver(ev) {
        unsafe { RESOLVERS.tail_call(ctx, RESOLVE_AT_EXIT) };
    }
    emit(ev);
    unpark(key);
}

#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, ExitKind::Plain)
}

#[tracepoint]
pub fn sys_exit_ns(ctx: TracePointContext) -> u32 {
    exit(&ctx, ExitKind::NewNs)
}

#[tracepoint]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    exit(&ctx, ExitKind::Clone)
}

/// Sends the return of a clone with `CLONE_NEWNS` (`key`'s, whose entry went out before), from
/// the fork tracepoint (`lifecycle`), which runs in the parent once the child exists: clone's and
/// clone3's exits are not traced when that program is attached, because every fork on the host
/// (the parent returning, then the child) would run an exit program for nothing. `ret` is the
/// child's pid as every pid here is (the initial namespace's), not as the caller's pid namespace
/// numbers it. A clone that fails makes no child, so no namespace: userspace drops its entry.
#[inline(always)]
pub fn complete_clone(key: u64, child_tgid: u32, child_ns: NsInfo) {
    emit_exit(
        key,
        SyscallExit::FROM_FORK,
        child_tgid as i64,
        Some(child_ns),
    );
}

macro_rules! enter_program {
    ($name:ident, $kind:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            enter(&ctx, $kind)
        }
    };
}

enter_program!(sys_enter_mount, EventKind::Mount);
enter_program!(sys_enter_umount, EventKind::Umount);
enter_program!(sys_enter_unlink, EventKind::Unlink);
enter_program!(sys_enter_unlinkat, EventKind::Unlinkat);
enter_program!(sys_enter_rmdir, EventKind::Rmdir);
enter_program!(sys_enter_unshare, EventKind::Unshare);
enter_program!(sys_enter_setns, EventKind::Setns);
enter_program!(sys_enter_clone, EventKind::Clone);
enter_program!(sys_enter_clone3, EventKind::Clone3);
enter_program!(sys_enter_fsopen, EventKind::Fsopen);
enter_program!(sys_enter_fsconfig, EventKind::Fsconfig);
enter_program!(sys_enter_fsmount, EventKind::Fsmount);
enter_program!(sys_enter_move_mount, EventKind::MoveMount);
enter_program!(sys_enter_open_tree, EventKind::OpenTree);
enter_program!(sys_enter_mount_setattr, EventKind::MountSetattr);
enter_program!(sys_enter_pivot_root, EventKind::PivotRoot);
enter_program!(sys_enter_chroot, EventKind::Chroot);
