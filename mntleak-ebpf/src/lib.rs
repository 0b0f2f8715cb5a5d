//! Library half of the eBPF crate: empty, so that cargo can build it for the host as a
//! build-dependency of mntleak-user (which makes cargo rebuild the object when this crate changes).
#![no_std]
