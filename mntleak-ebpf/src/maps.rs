//! Maps shared by all programs, and the two ways an event leaves the kernel.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use mntleak_common::{
    Event, EventKind, LossInfo, NsInfo, PATH_MAX_CAPTURED, SyscallExit, flags::HAS_NEW_NS, res,
};

/// Events to userspace. Userspace may resize it at load time (`map_max_entries("EVENTS", ..)`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// One syscall of one thread between its enter and its exit.
#[repr(C)]
pub struct InFlight {
    pub ev: Event,
    /// User string pointers to read at exit (see `syscalls::Retry`).
    pub retry: [u64; 3],
    /// Set when parked in PENDING, cleared by the exit that sends it.
    pub armed: u64,
}

/// Syscalls waiting for their exit, by pid_tgid: only those with a string argument that could
/// not be read at entry (see `syscalls::Retry`); every other entry is sent at once and its exit
/// apart (`SyscallExit`). The exit deletes the slot. LRU so that a slot whose exit was missed
/// cannot keep a later one out.
#[map]
pub static PENDING: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(4096, 0);

/// How many syscalls are parked in PENDING: while none is, an exit need not look there.
/// Changed by atomic adds only ([`parked_add`]): parked on one CPU, sent from another. Were an
/// exit ever missed, the count would stay above zero, which costs each exit a lookup, no event.
#[unsafe(no_mangle)]
static mut PARKED: u64 = 0;

/// Atomically adds `v` (two's complement: -1 as u64 subtracts) to PARKED. The BPF target has no
/// `AtomicU64::fetch_add` (core gates it on compare-and-swap), so the instruction is written out.
#[inline(always)]
fn parked_add(v: u64) {
    // SAFETY: an atomic add to a global of this object.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) &raw mut PARKED,
            v = in(reg) v,
            options(nostack)
        )
    };
}

/// Events that could not be reserved in EVENTS.
#[map]
pub static LOSS: PerCpuArray<LossInfo> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch where every event is built: an Event (1272 bytes) does not fit on the
/// 512-byte BPF stack. A syscall's entry, and the resolver it tail-calls, use it on one CPU.
#[map]
pub static SCRATCH: PerCpuArray<InFlight> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU buffer in which `task::resolve_fd` builds a path backwards: twice the captured size,
/// so that any name written below the end is within bounds the verifier can check.
#[map]
pub static PATHBUF: PerCpuArray<[u8; 2 * PATH_MAX_CAPTURED]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of that walk (see `task::Walk`).
#[map]
pub static WALK: PerCpuArray<crate::task::Walk> = PerCpuArray::with_max_entries(1, 0);

/// The path resolvers (`RESOLVER_PROGRAMS`), installed by userspace, tail-called by the syscall
/// programs.
#[map]
pub static RESOLVERS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// This CPU's scratch slot, as the previous event left it.
#[inline(always)]
pub fn scratch_slot() -> Option<&'static mut InFlight> {
    // SAFETY: this CPU's value; a program (and its tail calls) runs to completion on its CPU
    // before the next one starts there.
    Some(unsafe { &mut *SCRATCH.get_ptr_mut(0)? })
}

/// The per-CPU scratch event, reset for an event of `kind`.
#[inline(always)]
pub fn scratch(kind: EventKind) -> Option<&'static mut Event> {
    let ev = &mut scratch_slot()?.ev;
    reset(ev, kind);
    Some(ev)
}

/// Clears what the previous event left in a reused buffer (a thread's in-flight slot, a CPU's
/// scratch), except `task`, which `fill_current` writes whole. String bytes past each `str_len`
/// and resolution fields behind a `res::NONE` status are never read, so they stay.
/// Volatile stores: plain ones are merged into a call of the BPF `memset`, a byte loop.
#[inline(always)]
pub fn reset(ev: &mut Event, kind: EventKind) {
    // SAFETY: each pointer is to a field of `ev`.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as put};
        put(addr_of_mut!(ev.kind), kind as u16);
        put(addr_of_mut!(ev.flags), 0);
        for i in 0..3 {
            put(addr_of_mut!(ev.str_len[i]), 0);
        }
        put(addr_of_mut!(ev._pad), 0);
        put(addr_of_mut!(ev.nr), 0);
        put(addr_of_mut!(ev.new_ns), Default::default());
        put(addr_of_mut!(ev.ret), 0);
        for i in 0..ev.args.len() {
            put(addr_of_mut!(ev.args[i]), 0);
        }
        put(addr_of_mut!(ev.res[0].status), res::NONE);
        put(addr_of_mut!(ev.res[1].status), res::NONE);
    }
}

/// Parks `slot` (this CPU's scratch) in PENDING under `key` until its exit.
#[inline(always)]
pub fn park(slot: &mut InFlight, key: u64) {
    slot.armed = 1;
    if PENDING.insert(key, slot, 0).is_err() {
        record_loss();
        return;
    }
    parked_add(1);
}

/// The thread's parked syscall, if any.
#[inline(always)]
pub fn parked(key: u64) -> Option<&'static mut InFlight> {
    // SAFETY: a read of a global; volatile, as other CPUs change it.
    if unsafe { core::ptr::read_volatile(&raw const PARKED) } == 0 {
        return None;
    }
    // SAFETY: a value of PENDING; only this thread uses its key.
    let slot = unsafe { &mut *PENDING.get_ptr_mut(key)? };
    (slot.armed != 0).then_some(slot)
}

/// Takes the thread's parked syscall out of the count; the caller sends it, then [`unpark`]s.
#[inline(always)]
pub fn disarm(slot: &mut InFlight) {
    slot.armed = 0;
    parked_add(u64::MAX);
}

/// Deletes the thread's slot once its event is sent.
#[inline(always)]
pub fn unpark(key: u64) {
    let _ = PENDING.remove(key);
}

// bpf_ringbuf_query / bpf_ringbuf_output flags (include/uapi/linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Wake the reader when this many bytes become waiting; below it the reader's own 50 ms tick
/// drains. Only the event that crosses the mark wakes: a reader that is behind is awake already,
/// and a wake-up is an inter-processor interrupt, which costs a VM more than the whole event.
/// Set by the loader from the ring's size (`live::wakeup_mark`), so no event has to ask for it.
#[unsafe(no_mangle)]
static WAKEUP_MARK: u64 = 1 << 20;

/// The ring-buffer flags for a record of `size` bytes: wake the reader if it crosses the mark.
#[inline(always)]
fn wakeup(size: usize) -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    // SAFETY: a read of a global; volatile so that the loader's value is the one used.
    let mark = unsafe { core::ptr::read_volatile(&WAKEUP_MARK) };
    if waiting < mark && waiting + size as u64 >= mark {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Send an event; count it as lost if the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    let size = ev.wire_len();
    // SAFETY: wire_len() is at most size_of::<Event>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const Event).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup(size)).is_err() {
        record_loss();
    }
}

/// Send the return of the current thread's syscall number `nr` (`key` its pid_tgid), whose entry
/// went out with `AWAITS_EXIT`.
#[inline(always)]
pub fn emit_exit(key: u64, nr: u32, ret: i64, new_ns: Option<NsInfo>) {
    let rec = SyscallExit {
        kind: SyscallExit::KIND,
        flags: if new_ns.is_some() { HAS_NEW_NS } else { 0 },
        tid: key as u32,
        tgid: (key >> 32) as u32,
        nr,
        ret,
        new_ns: new_ns.unwrap_or_default(),
    };
    let size = core::mem::size_of::<SyscallExit>();
    if EVENTS.output::<SyscallExit>(&rec, wakeup(size)).is_err()
        && let Some(loss) = LOSS.get_ptr_mut(0)
    {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*loss).exits += 1 };
    }
}

/// Counts an event that could not be sent (or not even started).
#[inline(always)]
pub fn record_loss() {
    if let Some(loss) = LOSS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        let loss = unsafe { &mut *loss };
        let now = unsafe { bpf_ktime_get_ns() };
        if loss.count == 0 {
            loss.first_ts_ns = now;
        }
        loss.count += 1;
        loss.last_ts_ns = now;
    }
}
