//! Puts a syscall's entry and its return back together. The kernel side sends a syscall's entry
//! at once, flagged `AWAITS_EXIT`, and its return value apart, as a [`SyscallExit`] record of the
//! same thread: it keeps no per-thread state, whose map slot (created, looked up at entry and at
//! exit, deleted) cost about a third of its time per syscall. Each pair becomes the one event
//! the kernel side used to send at the return, in the order of the returns. Pure: the live
//! source feeds it ring records.

use std::collections::HashMap;

use mntleak_common::{self as wire, EventKind, SyscallExit, flags};

use crate::decode::{DecodeError, wire_fill};

/// An entry waiting for its return.
struct Entry {
    tgid: u32,
    nr: u32,
    clone: bool,
    /// Arrival order, so that entries released together keep it.
    seq: u64,
    /// The ring record, as it came.
    bytes: Vec<u8>,
}

#[derive(Default)]
pub struct Pairing {
    /// By thread id: a thread is in one syscall at a time.
    waiting: HashMap<u32, Entry>,
    /// Buffers of released entries, reused.
    spare: Vec<Vec<u8>>,
    seq: u64,
}

/// The [`SyscallExit`] in a ring record of that kind.
fn exit_from_bytes(rec: &[u8]) -> Result<SyscallExit, DecodeError> {
    let want = std::mem::size_of::<SyscallExit>();
    if rec.len() < want {
        return Err(DecodeError::Short {
            got: rec.len(),
            want,
        });
    }
    // SAFETY: `rec` holds at least `want` bytes, and every bit pattern is a valid
    // `SyscallExit` (integers only); the read does not assume alignment.
    Ok(unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<SyscallExit>()) })
}

impl Pairing {
    /// Syscalls whose entry came and whose return has not.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Takes one ring record. Each whole event it completes is written to `raw` and passed to
    /// `out`, in order: the event a return completes; an entry whose return never came (see
    /// [`Pairing::release`]) when its thread enters another syscall or its process exits; any
    /// other record as it is. A return without its entry (it was lost, or the tracer attached
    /// during the call) is dropped. An error for a record too short to be what it says.
    pub fn push(
        &mut self,
        rec: &[u8],
        raw: &mut wire::Event,
        mut out: impl FnMut(&wire::Event),
    ) -> Result<(), DecodeError> {
        if rec.get(..2) == Some(&SyscallExit::KIND.to_ne_bytes()[..]) {
            let exit = exit_from_bytes(rec)?;
            let Some(entry) = self.waiting.get(&exit.tid) else {
                return Ok(());
            };
            let ours = exit.nr == entry.nr || (exit.nr == SyscallExit::FROM_FORK && entry.clone);
            if !ours {
                // Another syscall's return: this entry's was lost; it goes with the next entry.
                return Ok(());
            }
            let entry = self.waiting.remove(&exit.tid).expect("looked up above");
            self.fill(entry, raw);
            raw.ret = exit.ret;
            raw.flags |= flags::HAS_RET;
            if exit.flags & flags::HAS_NEW_NS != 0 {
                raw.new_ns = exit.new_ns;
                raw.flags |= flags::HAS_NEW_NS;
            }
            out(raw);
            return Ok(());
        }
        if !wire_fill(rec, raw) {
            return Err(DecodeError::Short {
                got: rec.len(),
                want: wire::Event::HEADER_LEN,
            });
        }
        if raw.flags & flags::AWAITS_EXIT != 0 {
            let mut bytes = self.spare.pop().unwrap_or_default();
            bytes.clear();
            bytes.extend_from_slice(rec);
            self.seq += 1;
            let entry = Entry {
                tgid: raw.task.tgid,
                nr: raw.nr,
                clone: is_clone(raw.kind),
                seq: self.seq,
                bytes,
            };
            if let Some(stale) = self.waiting.insert(raw.task.tid, entry) {
                self.release(stale, raw, &mut out);
            }
            return Ok(());
        }
        if raw.kind == EventKind::ProcessExit as u16 {
            let tgid = raw.task.tgid;
            if self.waiting.values().any(|e| e.tgid == tgid) {
                self.release_where(|e| e.tgid == tgid, raw, &mut out);
                wire_fill(rec, raw);
            }
        }
        out(raw);
        Ok(())
    }

    /// Releases every entry still waiting (the run ends), oldest first.
    pub fn release_all(&mut self, raw: &mut wire::Event, mut out: impl FnMut(&wire::Event)) {
        self.release_where(|_| true, raw, &mut out);
    }

    fn release_where(
        &mut self,
        which: impl Fn(&Entry) -> bool,
        raw: &mut wire::Event,
        out: &mut impl FnMut(&wire::Event),
    ) {
        let mut gone: Vec<Entry> = self
            .waiting
            .extract_if(|_, e| which(e))
            .map(|(_, e)| e)
            .collect();
        gone.sort_unstable_by_key(|e| e.seq);
        for e in gone {
            self.release(e, raw, out);
        }
    }

    /// Passes on an entry whose return never came, without a return value (the engine applies
    /// no syscall without one); its return was lost, or it is still running. Except a clone:
    /// one that made a namespace has its return sent from the fork tracepoint before its child
    /// runs, so a clone without one failed and made nothing, and is not an event.
    fn release(&mut self, e: Entry, raw: &mut wire::Event, out: &mut impl FnMut(&wire::Event)) {
        let clone = e.clone;
        self.fill(e, raw);
        if !clone {
            out(raw);
        }
    }

    /// `raw` from a waiting entry, which is then no longer awaiting anything.
    fn fill(&mut self, e: Entry, raw: &mut wire::Event) {
        // Whole when it came in (checked then).
        wire_fill(&e.bytes, raw);
        raw.flags &= !flags::AWAITS_EXIT;
        self.spare.push(e.bytes);
    }
}

fn is_clone(kind: u16) -> bool {
    kind == EventKind::Clone as u16 || kind == EventKind::Clone3 as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::wire_from_bytes;

    const MOUNT_NR: u32 = 165;
    const UMOUNT_NR: u32 = 166;

    fn entry(kind: EventKind, nr: u32, tgid: u32, tid: u32, ts: u64) -> Vec<u8> {
        let mut e = wire_from_bytes(&[0u8; wire::Event::HEADER_LEN]).unwrap();
        e.kind = kind as u16;
        e.nr = nr;
        e.task.tgid = tgid;
        e.task.tid = tid;
        e.task.ts_ns = ts;
        if kind != EventKind::ProcessExit && kind != EventKind::ProcessFork {
            e.flags = flags::AWAITS_EXIT;
        }
        bytes_of(&e)[..wire::Event::HEADER_LEN].to_vec()
    }

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: the wire structs are plain integers and byte arrays.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
    }

    fn exit(tid: u32, nr: u32, ret: i64, new_ns: Option<u64>) -> Vec<u8> {
        let mut x = SyscallExit {
            kind: SyscallExit::KIND,
            tid,
            tgid: tid,
            nr,
            ret,
            ..Default::default()
        };
        if let Some(id) = new_ns {
            x.flags = flags::HAS_NEW_NS;
            x.new_ns.mnt_ns_id = id;
        }
        bytes_of(&x).to_vec()
    }

    /// (ts, kind, ret, new mnt ns id) of each event `records` make, then of those still waiting.
    fn run(records: &[Vec<u8>]) -> Vec<(u64, u16, Option<i64>, Option<u64>)> {
        let mut p = Pairing::default();
        let mut raw = wire_from_bytes(&[0u8; wire::Event::HEADER_LEN]).unwrap();
        let mut got = Vec::new();
        let mut out = |e: &wire::Event| {
            assert_eq!(e.flags & flags::AWAITS_EXIT, 0);
            got.push((
                e.task.ts_ns,
                e.kind,
                (e.flags & flags::HAS_RET != 0).then_some(e.ret),
                (e.flags & flags::HAS_NEW_NS != 0).then_some(e.new_ns.mnt_ns_id),
            ));
        };
        for r in records {
            p.push(r, &mut raw, &mut out).unwrap();
        }
        p.release_all(&mut raw, &mut out);
        assert_eq!(p.in_flight(), 0);
        got
    }

    #[test]
    fn each_return_completes_its_threads_entry_in_the_order_of_returns() {
        let m = EventKind::Mount as u16;
        let u = EventKind::Umount as u16;
        let got = run(&[
            entry(EventKind::Mount, MOUNT_NR, 10, 11, 1),
            entry(EventKind::Umount, UMOUNT_NR, 20, 20, 2),
            exit(20, UMOUNT_NR, -22, None),
            exit(11, MOUNT_NR, 0, None),
        ]);
        assert_eq!(got, [(2, u, Some(-22), None), (1, m, Some(0), None)]);
    }

    #[test]
    fn an_entry_without_its_return_goes_on_without_one_when_its_thread_moves_on() {
        let m = EventKind::Mount as u16;
        let u = EventKind::Umount as u16;
        let x = EventKind::ProcessExit as u16;
        let got = run(&[
            // Its return lost: released by the thread's next entry, which pairs as usual.
            entry(EventKind::Mount, MOUNT_NR, 10, 10, 1),
            entry(EventKind::Umount, UMOUNT_NR, 10, 10, 2),
            exit(10, UMOUNT_NR, 0, None),
            // A thread of process 30 in a syscall when the process exits.
            entry(EventKind::Mount, MOUNT_NR, 30, 31, 3),
            entry(EventKind::ProcessExit, 0, 30, 30, 4),
            // Still running when the run ends.
            entry(EventKind::Umount, UMOUNT_NR, 40, 40, 5),
        ]);
        assert_eq!(
            got,
            [
                (1, m, None, None),
                (2, u, Some(0), None),
                (3, m, None, None),
                (4, x, None, None),
                (5, u, None, None)
            ]
        );
    }

    #[test]
    fn a_return_of_another_syscall_or_of_no_entry_completes_nothing() {
        let m = EventKind::Mount as u16;
        let got = run(&[
            exit(10, MOUNT_NR, 0, None),
            entry(EventKind::Mount, MOUNT_NR, 10, 10, 1),
            // The umount's entry was lost, and with it this mount's return.
            exit(10, UMOUNT_NR, -22, None),
        ]);
        assert_eq!(got, [(1, m, None, None)]);
    }

    #[test]
    fn a_clone_completes_from_the_fork_or_is_not_an_event() {
        let c = EventKind::Clone3 as u16;
        let s = EventKind::Unshare as u16;
        let got = run(&[
            entry(EventKind::Clone3, 435, 10, 10, 1),
            exit(10, SyscallExit::FROM_FORK, 99, Some(7)),
            // A fork-sent return is a clone's only.
            entry(EventKind::Unshare, 272, 20, 20, 2),
            exit(20, SyscallExit::FROM_FORK, 98, Some(8)),
            exit(20, 272, 0, Some(9)),
            // A clone that failed: no return from the fork tracepoint.
            entry(EventKind::Clone, 56, 30, 30, 3),
        ]);
        assert_eq!(got, [(1, c, Some(99), Some(7)), (2, s, Some(0), Some(9))]);
    }

    #[test]
    fn short_records_are_errors() {
        let mut p = Pairing::default();
        let mut raw = wire_from_bytes(&[0u8; wire::Event::HEADER_LEN]).unwrap();
        let short_exit = &exit(1, 1, 0, None)[..20];
        assert!(p.push(short_exit, &mut raw, |_| {}).is_err());
        let short_entry = &entry(EventKind::Mount, MOUNT_NR, 1, 1, 1)[..20];
        assert!(p.push(short_entry, &mut raw, |_| {}).is_err());
        assert_eq!(p.in_flight(), 0);
    }
}
