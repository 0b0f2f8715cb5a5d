//! Syscall tracepoints: one `sys_enter_*` program per syscall records the arguments into PENDING;
//! one shared `sys_exit` program (attached to every matching exit tracepoint) adds the return value
//! and sends the event. Argument layout per kind: see `mntleak-user/src/decode.rs`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use mntleak_common::{
    Event, EventKind,
    flags::{HAS_NEW_NS, HAS_RET, STR_TRUNCATED_SHIFT},
};

use crate::{
    maps::{PENDING, RETRY, emit, scratch},
    task::{current_ns, fill_current},
};

const AT_FDCWD: u64 = -100i64 as u64;
const FSCONFIG_SET_STRING: u64 = 1;
const FSCONFIG_SET_PATH: u64 = 3;
const FSCONFIG_SET_PATH_EMPTY: u64 = 4;

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

#[inline(always)]
fn enter(ctx: &TracePointContext, kind: EventKind) -> u32 {
    let Some(ev) = scratch() else {
        return 0;
    };
    ev.kind = kind as u16;
    fill_current(&mut ev.task);
    let a = |i: usize| -> u64 { unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0) };
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
        EventKind::Clone => ev.args[0] = a(0),
        EventKind::Clone3 => {
            // struct clone_args starts with `__u64 flags`.
            let uargs = a(0);
            ev.args[0] = unsafe { bpf_probe_read_user(uargs as *const u64) }.unwrap_or(0);
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
        EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit => return 0,
    }
    let key = bpf_get_current_pid_tgid();
    let r = retry.0;
    // By reference: a by-value Event (728 bytes) would not fit on the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = PENDING.insert(key, &*ev, 0).is_ok();
    if inserted && (r[0] | r[1] | r[2]) != 0 {
        let _ = RETRY.insert(key, r, 0);
    } else {
        // A leftover from a syscall whose exit was never seen must not be applied to this one.
        let _ = RETRY.remove(key);
    }
    0
}

/// The exit half of every traced syscall: pairs with the enter by pid_tgid.
#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(ev) = PENDING.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: a value of PENDING; only this thread uses its key.
    let ev = unsafe { &mut *ev };
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    ev.ret = ret;
    ev.flags |= HAS_RET;
    if let Some(retry) = RETRY.get_ptr(key) {
        let r = unsafe { *retry };
        if r[0] != 0 {
            read_slot(ev, 0, r[0]);
        }
        if r[1] != 0 {
            read_slot(ev, 1, r[1]);
        }
        if r[2] != 0 {
            read_slot(ev, 2, r[2]);
        }
        let _ = RETRY.remove(key);
    }
    let kind = ev.kind;
    if (kind == EventKind::Unshare as u16 || kind == EventKind::Setns as u16) && ret == 0 {
        // The caller is already in its new namespaces here.
        ev.new_ns = current_ns();
        ev.flags |= HAS_NEW_NS;
    }
    emit(ev);
    let _ = PENDING.remove(key);
    0
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
