//! Puts a syscall's entry and its return back together. The kernel side sends a syscall's entry
//! at once, flagged `AWAITS_EXIT`, and its return value apart, as a [`SyscallExit`] record of the
//! same thread: it keeps no per-thread state, whose map slot (created, looked up at entry and at
//! exit, deleted) cost about a third of its time per syscall. Each pair becomes the one event
//! the kernel side used to send at the return, in the order of the returns. Pure: the live
//! source feeds it ring records and says how to decode them.

use std::collections::hash_map;

use rustc_hash::FxHashMap;

use mntleak_common::{self as wire, SyscallExit, flags};

use crate::{
    decode::{DecodeError, wire_fill},
    model::{Action, Event, MntNs},
};

/// Entries kept at most. A thread waits for one return at a time, so more means returns were
/// lost by the thousand (the ring was full); the oldest entry then goes on without its return.
const MAX_WAITING: usize = 1 << 16;

/// An entry waiting for its return, decoded already: the return only adds two fields.
struct Waiting {
    nr: u32,
    /// Arrival order, so that entries released together keep it.
    seq: u64,
    event: Event,
}

#[derive(Default)]
pub struct Pairing {
    /// By thread id: a thread is in one syscall at a time.
    waiting: FxHashMap<u32, Waiting>,
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

    /// Takes one ring record (copied into `raw` when it is an event). `decode` makes the event
    /// of a wire event, or None for one the caller does not want (the tracer's own, an
    /// undecodable one). `out` gets each whole event, in order: the event a return completes;
    /// an entry whose return never came (see [`release`]) when its thread enters another
    /// syscall or exits as its process's leader, or when [`MAX_WAITING`] are waiting; any
    /// other event as it is. A return without its entry (lost, not wanted, or the tracer
    /// attached during the call) is dropped. An error for a record too short to be what it
    /// says.
    pub fn push(
        &mut self,
        rec: &[u8],
        raw: &mut wire::Event,
        mut decode: impl FnMut(&wire::Event) -> Option<Event>,
        mut out: impl FnMut(Event),
    ) -> Result<(), DecodeError> {
        if rec.get(..2) == Some(&SyscallExit::KIND.to_ne_bytes()[..]) {
            let exit = exit_from_bytes(rec)?;
            let hash_map::Entry::Occupied(waiting) = self.waiting.entry(exit.tid) else {
                return Ok(());
            };
            let clone = matches!(waiting.get().event.action, Action::Clone { .. });
            if exit.nr != waiting.get().nr && !(exit.nr == SyscallExit::FROM_FORK && clone) {
                // Another syscall's return: this entry's was lost; it goes with the next entry.
                return Ok(());
            }
            let mut event = waiting.remove().event;
            event.ret = Some(exit.ret);
            if exit.flags & flags::HAS_NEW_NS != 0 {
                event.new_mnt_ns = Some(MntNs {
                    id: exit.new_ns.mnt_ns_id,
                    inum: exit.new_ns.mnt_ns_inum,
                });
            }
            out(event);
            return Ok(());
        }
        if !wire_fill(rec, raw) {
            return Err(DecodeError::Short {
                got: rec.len(),
                want: wire::Event::HEADER_LEN,
            });
        }
        let tid = raw.task.tid;
        if raw.flags & flags::AWAITS_EXIT != 0 {
            // The thread is in a new syscall: whatever it still had waiting is over.
            if let Some(stale) = self.waiting.remove(&tid) {
                release(stale, &mut out);
            }
            if let Some(event) = decode(raw) {
                self.seq += 1;
                let waiting = Waiting {
                    nr: raw.nr,
                    seq: self.seq,
                    event,
                };
                self.waiting.insert(tid, waiting);
                if self.waiting.len() > MAX_WAITING {
                    self.release_oldest(&mut out);
                }
            }
            return Ok(());
        }
        // The exit of a process is its leader thread's (`sched_process_exit`), which is in no
        // syscall any more. Its other threads may still be, until their returns: a mount that
        // completes while exit_group kills its thread still returns 0.
        if raw.kind == wire::EventKind::ProcessExit as u16
            && let Some(stale) = self.waiting.remove(&tid)
        {
            release(stale, &mut out);
        }
        if let Some(event) = decode(raw) {
            out(event);
        }
        Ok(())
    }

    /// Releases every entry still waiting (the run ends), oldest first.
    pub fn release_all(&mut self, mut out: impl FnMut(Event)) {
        let mut gone: Vec<Waiting> = self.waiting.drain().map(|(_, e)| e).collect();
        gone.sort_unstable_by_key(|e| e.seq);
        for e in gone {
            release(e, &mut out);
        }
    }

    fn release_oldest(&mut self, out: &mut impl FnMut(Event)) {
        let oldest = self
            .waiting
            .iter()
            .min_by_key(|(_, e)| e.seq)
            .map(|(&tid, _)| tid);
        if let Some(e) = oldest.and_then(|tid| self.waiting.remove(&tid)) {
            release(e, out);
        }
    }
}

/// Passes on an entry whose return never came, without a return value (the engine applies no
/// syscall without one); its return was lost, or it is still running. Except a clone: one that
/// made a namespace has its return sent from the fork tracepoint before its child runs, so a
/// clone without one failed and made nothing, and is not an event.
fn release(e: Waiting, out: &mut impl FnMut(Event)) {
    if !matches!(e.event.action, Action::Clone { .. }) {
        out(e.event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, wire_from_bytes};
    use mntleak_common::EventKind;

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

    /// (ts, call, ret, new mnt ns id) of each event `records` make, then of those still waiting.
    fn run(records: &[Vec<u8>]) -> Vec<(u64, &'static str, Option<i64>, Option<u64>)> {
        let mut p = Pairing::default();
        let mut raw = wire_from_bytes(&[0u8; wire::Event::HEADER_LEN]).unwrap();
        let mut got = Vec::new();
        let mut out = |e: Event| {
            got.push((
                e.task.ts_ns,
                e.action.name(),
                e.ret,
                e.new_mnt_ns.map(|n| n.id),
            ));
        };
        for r in records {
            p.push(r, &mut raw, |raw| decode(raw).ok(), &mut out)
                .unwrap();
        }
        p.release_all(&mut out);
        assert_eq!(p.in_flight(), 0);
        got
    }

    #[test]
    fn each_return_completes_its_threads_entry_in_the_order_of_returns() {
        let (m, u) = ("mount", "umount2");
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
        let (m, u, x) = ("mount", "umount2", "exit");
        let got = run(&[
            // Its return lost: released by the thread's next entry, which pairs as usual.
            entry(EventKind::Mount, MOUNT_NR, 10, 10, 1),
            entry(EventKind::Umount, UMOUNT_NR, 10, 10, 2),
            exit(10, UMOUNT_NR, 0, None),
            // Process 30's leader lost its return, then exits; its thread 31 is in a mount
            // that returns after the exit (exit_group killing it as it completes).
            entry(EventKind::Umount, UMOUNT_NR, 30, 30, 3),
            entry(EventKind::Mount, MOUNT_NR, 30, 31, 4),
            entry(EventKind::ProcessExit, 0, 30, 30, 5),
            exit(31, MOUNT_NR, 0, None),
            // Still running when the run ends.
            entry(EventKind::Umount, UMOUNT_NR, 40, 40, 6),
        ]);
        assert_eq!(
            got,
            [
                (1, m, None, None),
                (2, u, Some(0), None),
                (3, u, None, None),
                (5, x, None, None),
                (4, m, Some(0), None),
                (6, u, None, None)
            ]
        );
    }

    #[test]
    fn past_the_cap_the_oldest_entry_goes_on_without_its_return() {
        let mut records: Vec<Vec<u8>> = (0..=MAX_WAITING as u32)
            .map(|t| entry(EventKind::Umount, UMOUNT_NR, 100 + t, 100 + t, u64::from(t)))
            .collect();
        records.push(exit(100, UMOUNT_NR, 0, None));
        records.push(exit(101, UMOUNT_NR, -22, None));
        let got = run(&records);
        assert_eq!(got.len(), MAX_WAITING + 1);
        // Released when the cap was passed, so its return completed nothing.
        assert_eq!(got[0], (0, "umount2", None, None));
        assert_eq!(got[1], (1, "umount2", Some(-22), None));
        assert!(got[2..].iter().all(|g| g.2.is_none()));
    }

    #[test]
    fn a_return_of_another_syscall_or_of_no_entry_completes_nothing() {
        let m = "mount";
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
        let (c, s) = ("clone3", "unshare");
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
        assert!(p.push(short_exit, &mut raw, |_| None, |_| {}).is_err());
        let short_entry = &entry(EventKind::Mount, MOUNT_NR, 1, 1, 1)[..20];
        assert!(p.push(short_entry, &mut raw, |_| None, |_| {}).is_err());
        assert_eq!(p.in_flight(), 0);
    }
}
