//! Maps shared by all programs, and the two ways an event leaves the kernel.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_kernel},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use mntleak_common::{Event, LossInfo, PATH_MAX_CAPTURED};

/// Events to userspace. Userspace may resize it at load time (`map_max_entries("EVENTS", ..)`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Syscall enters waiting for their exit, by pid_tgid. LRU so that threads killed inside a
/// syscall cannot fill it up.
#[map]
pub static PENDING: LruHashMap<u64, Event> = LruHashMap::with_max_entries(16384, 0);

/// User string pointers to read at exit, by pid_tgid (see `syscalls::Retry`).
#[map]
pub static RETRY: LruHashMap<u64, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);

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

/// Never written: copied over the scratch so that every byte of an event is defined.
#[map]
pub static ZERO: Array<Event> = Array::with_max_entries(1, 0);

/// The per-CPU scratch event, zeroed.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Event> {
    let ev = SCRATCH.get_ptr_mut(0)?;
    let zero = ZERO.get_ptr(0)?;
    // SAFETY: both pointers are map values of size_of::<Event>().
    unsafe {
        bpf_probe_read_kernel(ev.cast(), core::mem::size_of::<Event>() as u32, zero.cast());
        Some(&mut *ev)
    }
}

// bpf_ringbuf_query / bpf_ringbuf_output flags (include/uapi/linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// Wake the reader once this much is waiting (capped at a quarter of the ring); below it the
/// reader's own 50 ms tick drains. One wake-up per event costs more than the event on a VM.
const WAKEUP_BYTES: u64 = 64 << 10;

/// Bytes of an event before its path resolutions: all that is sent when it has none, so that the
/// common event costs the ring (and the reader) no more than before paths were resolved.
const CORE: usize = core::mem::offset_of!(Event, res);

/// Send an event; count it as lost if the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    let threshold = core::cmp::min(EVENTS.query(BPF_RB_RING_SIZE) / 4, WAKEUP_BYTES);
    let flags = if waiting >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let sent = if ev.res[0].status != 0 || ev.res[1].status != 0 {
        EVENTS.output::<Event>(ev, flags)
    } else {
        // SAFETY: the first CORE bytes of an Event, which is larger.
        let core = unsafe { &*(ev as *const Event).cast::<[u8; CORE]>() };
        EVENTS.output::<[u8; CORE]>(core, flags)
    };
    if sent.is_err() {
        record_loss();
    }
}

#[inline(always)]
fn record_loss() {
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
