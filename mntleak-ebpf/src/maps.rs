//! Maps shared by all programs, and the two ways an event leaves the kernel.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use mntleak_common::{Event, EventKind, LossInfo, PATH_MAX_CAPTURED, res};

/// Events to userspace. Userspace may resize it at load time (`map_max_entries("EVENTS", ..)`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// One syscall of one thread between its enter and its exit.
#[repr(C)]
pub struct InFlight {
    pub ev: Event,
    /// User string pointers to read at exit (see `syscalls::Retry`).
    pub retry: [u64; 3],
    /// Set by an enter program, cleared by the exit: an exit without its enter (a thread that was
    /// inside the syscall when the tracer attached, or a clone child) sends nothing.
    pub armed: u64,
}

/// Each thread's in-flight syscall, by pid_tgid. The slot stays from one syscall to the next (it
/// goes when the thread exits), so a syscall costs two lookups rather than an insert and a
/// delete of a 1.3 KiB value. LRU so that threads whose exit was missed cannot fill it up.
#[map]
pub static PENDING: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// Events that could not be reserved in EVENTS.
#[map]
pub static LOSS: PerCpuArray<LossInfo> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch: an Event (1272 bytes) does not fit on the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

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

/// Never written: copied into PENDING for a thread's first traced syscall, so that every byte of
/// its slot is defined.
#[map]
static ZERO: Array<InFlight> = Array::with_max_entries(1, 0);

/// The per-CPU scratch event, reset for an event of `kind`.
#[inline(always)]
pub fn scratch(kind: EventKind) -> Option<&'static mut Event> {
    // SAFETY: this CPU's value; a program runs to completion on its CPU before the next one.
    let ev = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
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
            put(addr_of_mut!(ev._pad[i]), 0);
        }
        put(addr_of_mut!(ev.new_ns), Default::default());
        put(addr_of_mut!(ev.ret), 0);
        for i in 0..ev.args.len() {
            put(addr_of_mut!(ev.args[i]), 0);
        }
        put(addr_of_mut!(ev.res[0].status), res::NONE);
        put(addr_of_mut!(ev.res[1].status), res::NONE);
    }
}

/// The current thread's in-flight slot, created zeroed on its first traced syscall.
#[inline(always)]
pub fn in_flight(key: u64) -> Option<&'static mut InFlight> {
    if let Some(p) = PENDING.get_ptr_mut(key) {
        // SAFETY: a value of PENDING; only this thread uses its key.
        return Some(unsafe { &mut *p });
    }
    PENDING.insert(key, ZERO.get(0)?, 0).ok()?;
    // SAFETY: as above.
    PENDING.get_ptr_mut(key).map(|p| unsafe { &mut *p })
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

/// Send an event; count it as lost if the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    let size = ev.wire_len();
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    // SAFETY: a read of a global; volatile so that the loader's value is the one used.
    let mark = unsafe { core::ptr::read_volatile(&WAKEUP_MARK) };
    let flags = if waiting < mark && waiting + size as u64 >= mark {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: wire_len() is at most size_of::<Event>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const Event).cast::<u8>(), size) };
    let sent = EVENTS.output::<[u8]>(bytes, flags);
    if sent.is_err() {
        record_loss();
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
