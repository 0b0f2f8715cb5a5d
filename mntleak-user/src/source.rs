//! The live source: kernel events from the eBPF tracer, each followed by the kernel facts it calls
//! for. The CLI's live mode and the real-kernel tests (the oracle, the seed mechanisms) read the
//! kernel through this one type, so what the tests check is what users run.

use crate::live::{LiveError, LiveOptions, Tracer, monotonic_ns};
use crate::model::{Action, Event, Record, Snapshot};
use crate::snapshot::{NamespaceWatcher, take_snapshot};

pub struct LiveSource {
    tracer: Tracer,
    watcher: NamespaceWatcher,
    events: Vec<Record>,
}

impl LiveSource {
    /// Attaches the tracer, then reads the starting state: every event after the returned
    /// snapshot is recorded (events between attach and snapshot are applied on top of it, which
    /// the engine tolerates: the snapshot is newer than they are).
    pub fn start(opts: &LiveOptions) -> Result<(Self, Snapshot), LiveError> {
        let tracer = Tracer::attach(opts)?;
        let snapshot = take_snapshot(monotonic_ns()).map_err(LiveError::Snapshot)?;
        let watcher = NamespaceWatcher::new(&snapshot);
        Ok((
            Self {
                tracer,
                watcher,
                events: Vec::new(),
            },
            snapshot,
        ))
    }

    /// Starts over on the same attachment (attaching and detaching cost far more): what is in
    /// the ring is dropped, and a fresh starting state is read.
    pub fn restart(&mut self) -> Result<Snapshot, LiveError> {
        let mut discard = Vec::new();
        while self.tracer.drain(&mut discard, 4096) > 0 {
            discard.clear();
        }
        self.tracer.take_losses();
        let snapshot = take_snapshot(monotonic_ns()).map_err(LiveError::Snapshot)?;
        self.watcher = NamespaceWatcher::new(&snapshot);
        Ok(snapshot)
    }

    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Takes up to `max` ring records and hands each event they complete to `each`, followed by
    /// the namespace facts it calls for; returns the number of records taken (0: the ring is
    /// empty), or the first error of `each`, which drops the rest of the batch (the live CLI
    /// stops on it). Records go straight from the batch to `each`: an event is a few hundred
    /// bytes, and every extra vector it passed through was a copy of them.
    pub fn drain<E>(
        &mut self,
        max: usize,
        each: impl FnMut(Record) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.events.clear();
        let n = self.tracer.drain(&mut self.events, max);
        self.hand_over(each)?;
        Ok(n)
    }

    /// The events of syscalls whose return has not come, without one (see
    /// [`Tracer::release_in_flight`]), with their facts: for the end of a run, after the last
    /// [`LiveSource::drain`].
    pub fn release_in_flight<E>(
        &mut self,
        each: impl FnMut(Record) -> Result<(), E>,
    ) -> Result<(), E> {
        self.events.clear();
        self.tracer.release_in_flight(&mut self.events);
        self.hand_over(each)
    }

    /// Hands each event of the batch in `self.events` to `each`, followed by its facts.
    fn hand_over<E>(&mut self, mut each: impl FnMut(Record) -> Result<(), E>) -> Result<(), E> {
        self.watcher.begin_batch(&self.events);
        for rec in self.events.drain(..) {
            let fact = match &rec {
                Record::Event(ev) if needs_kernel_view(ev) => {
                    self.watcher.refresh(ev.task.mnt_ns, monotonic_ns)
                }
                Record::Event(ev) => self.watcher.observe(ev, monotonic_ns),
                _ => None,
            };
            each(rec)?;
            if let Some(fact) = fact {
                each(fact)?;
            }
        }
        Ok(())
    }

    /// Everything in the ring now, with its facts, then the losses counted since the last call.
    pub fn drain_all(&mut self, out: &mut Vec<Record>) {
        let mut push = |rec| {
            out.push(rec);
            Ok::<(), std::convert::Infallible>(())
        };
        while let Ok(1..) = self.drain(4096, &mut push) {}
        out.extend(self.tracer.take_losses());
    }

    /// Events lost since the previous call (see [`Tracer::take_losses`]).
    pub fn take_losses(&mut self) -> Option<Record> {
        self.tracer.take_losses()
    }
}

/// A successful call the engine cannot place by path: runc mounts onto `/proc/self/fd/N` (an
/// O_PATH fd), and after `pivot_root(".", ".")` detaches the old root with `umount2(".")`. The
/// eBPF side resolves such paths at the call; where it could not (a path too long, an fd on
/// another namespace's mount), the kernel's view of the namespace, read right after, tells what
/// the call did.
fn needs_kernel_view(ev: &Event) -> bool {
    let unplaceable = crate::model::needs_kernel_placement;
    ev.ret == Some(0)
        && !ev.placed_by_kernel_paths()
        && match &ev.action {
            Action::Mount { target, .. } => unplaceable(target.as_str()),
            Action::MoveMount { to_path, .. } => unplaceable(to_path.as_str()),
            Action::Umount { target, .. } => unplaceable(target.as_str()),
            Action::PivotRoot { .. } => true,
            _ => false,
        }
}
