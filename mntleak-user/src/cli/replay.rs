//! `mntleak-trace replay`: the capture reader as a source, then the same pipeline as live.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context;

use crate::capture::{CaptureError, CaptureReader, EMPTY_SLOT};
use crate::model::{ContainerInfo, Record};

use super::{EXIT_LEAK, Filter, Pipeline, ReplayArgs};

pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let focus = if args.view.containers.is_empty() {
        Vec::new()
    } else {
        // The container identities live in the capture: read them first, so focus works offline.
        let known = containers_in(args)?;
        args.view
            .containers
            .iter()
            .map(|q| crate::container::match_query(&known, q).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let reader = CaptureReader::open(&args.files)
        .with_context(|| format!("cannot replay {}", args.files[0].display()))?;
    let header = reader.header().clone();
    let missing = header.missing.clone();
    let stdout = std::io::stdout().lock();
    let mut pipeline = Pipeline::new(
        header,
        Filter::new(&args.view, focus),
        args.view.json,
        args.view.quiet,
        BufWriter::new(stdout),
    );
    let stopped = read_ahead(reader, |rec| {
        pipeline.handle(rec).context("cannot write to stdout")
    })?;
    let outcome = pipeline.finish().context("cannot write to stdout")?;
    // After the replay, so that a capture that fails to read gets one error line only.
    if !missing.is_empty() {
        eprintln!(
            "mntleak-trace: {} was recorded by a degraded run that could not trace: {}",
            args.files[0].display(),
            crate::report::escape::escape(&missing.join(", "))
        );
    }
    if let Some((file, offset)) = stopped {
        eprintln!(
            "mntleak-trace: {} ends inside a write at byte {offset} (cut short, or still being written): replayed everything before it",
            file.display()
        );
    }
    Ok(if outcome.leaks > 0 {
        ExitCode::from(EXIT_LEAK)
    } else {
        ExitCode::SUCCESS
    })
}

fn containers_in(args: &ReplayArgs) -> anyhow::Result<Vec<ContainerInfo>> {
    let reader = CaptureReader::open(&args.files)
        .with_context(|| format!("cannot replay {}", args.files[0].display()))?;
    let mut found = Vec::new();
    for rec in reader {
        if let Record::Container(c) = rec.context("replay stopped")? {
            found.push(c);
        }
    }
    Ok(found)
}

/// Records per batch handed from the reader thread to the engine: enough that the handoff costs
/// little per record, few enough that every slot in flight stays in cache. A decoded record is
/// much bigger than its frame and crosses between cores; with 2048-record batches the slots
/// fell out of cache and the pipeline was slower than one thread (measured on 10M events).
const BATCH: usize = 128;
/// Batches cycling between the two threads, so neither waits on the other's jitter.
const BATCHES: usize = 6;

/// Reusable record slots, decoded into in place by the reader thread (no allocation per record
/// once their buffers have grown), then applied in order by the engine and sent back.
struct Batch {
    slots: Vec<Record>,
    len: usize,
    /// Set on the last batch: how reading ended (where the last file was torn, or the error that
    /// stopped it, which comes after the records of this batch).
    end: Option<Result<Option<(PathBuf, u64)>, CaptureError>>,
}

/// Feeds every record of `reader` to `apply` in order, reading and decoding on a second thread
/// so that reading and the engine overlap. Returns where the capture was torn, if it was; a read
/// error is returned after every record before it was applied, as a single-threaded loop would.
fn read_ahead(
    mut reader: CaptureReader,
    mut apply: impl FnMut(&Record) -> anyhow::Result<()>,
) -> anyhow::Result<Option<(PathBuf, u64)>> {
    let (free_tx, free_rx) = mpsc::channel::<Batch>();
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(BATCHES);
    for _ in 0..BATCHES {
        let slots = std::iter::repeat_with(|| EMPTY_SLOT).take(BATCH).collect();
        free_tx
            .send(Batch {
                slots,
                len: 0,
                end: None,
            })
            .expect("the receiver is alive");
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            // Stops when the engine side hangs up (its error) or after the last batch.
            while let Ok(mut batch) = free_rx.recv() {
                batch.len = 0;
                while batch.len < batch.slots.len() {
                    match reader.read_into(&mut batch.slots[batch.len]) {
                        Ok(true) => batch.len += 1,
                        Ok(false) => {
                            batch.end = Some(Ok(reader.stopped_at()));
                            break;
                        }
                        Err(e) => {
                            batch.end = Some(Err(e));
                            break;
                        }
                    }
                }
                let last = batch.end.is_some();
                if full_tx.send(batch).is_err() || last {
                    return;
                }
            }
        });
        // Dropping the channel ends on return (also on an error) lets the reader thread finish.
        let (full_rx, free_tx) = (full_rx, free_tx);
        loop {
            let Ok(mut batch) = full_rx.recv() else {
                // Only if the reader thread panicked: the scope passes the panic on.
                return Ok(None);
            };
            let recs = &batch.slots[..batch.len];
            for (i, rec) in recs.iter().enumerate() {
                // Two ahead: one record's work is too short to hide a fetch from the other core.
                if let Some(coming) = recs.get(i + 2) {
                    prefetch(coming);
                }
                apply(rec)?;
            }
            if let Some(end) = batch.end.take() {
                return end.context("replay stopped");
            }
            // The reader may have finished already and hung up; the batch is then just dropped.
            let _ = free_tx.send(batch);
        }
    })
}

/// Starts loading a coming record's strings into this core's cache while the engine applies the
/// current one: the reader thread wrote them on the other core, and fetching them on first use
/// stalled the engine (a tenth of replay's time, measured on 10M events).
#[inline]
fn prefetch(rec: &Record) {
    #[cfg(target_arch = "x86_64")]
    if let Record::Event(e) = rec {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let path = match &e.action {
            crate::model::Action::Unlink { path, .. } => path.as_str(),
            a => a.path_args()[0].map_or("", |(_, p)| p.as_str()),
        };
        // SAFETY: a prefetch is a hint: it never faults and changes nothing observable.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(e.task.comm.as_str().as_ptr().cast());
            _mm_prefetch::<_MM_HINT_T0>(path.as_ptr().cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rec;
}
