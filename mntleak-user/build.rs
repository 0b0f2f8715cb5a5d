// Being written: builds mntleak-ebpf with aya-build. MNTLEAK_SKIP_EBPF=1 skips it (userspace-only work).
fn main() {}
