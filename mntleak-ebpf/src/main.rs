//! mntleak's eBPF programs, one module per attach family.
#![no_std]
#![no_main]
// `asm!` on BPF: the one atomic add core does not offer there (`maps::parked_add`).
#![feature(asm_experimental_arch)]

mod lifecycle;
mod maps;
mod syscalls;
mod task;

use aya_ebpf::{EbpfContext, programs::TracePointContext};

/// The field at `offset` of a tracepoint's record, loaded directly. A tracepoint program may read
/// its context (the verifier checks the offset against the record), where `read_at` calls
/// `bpf_probe_read_kernel`: a helper call per syscall argument was a tenth of the tracer's cost
/// on a cheap syscall. `offset` must be a constant aligned to `T`.
#[inline(always)]
pub(crate) fn tp_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the context is the record the kernel passed; the verifier rejects the program if
    // `offset` is out of its bounds or misaligned.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
