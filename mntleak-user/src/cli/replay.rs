//! `mntleak-trace replay`: the capture reader as a source, then the same pipeline as live.

use std::io::BufWriter;
use std::process::ExitCode;

use anyhow::Context;

use crate::capture::CaptureReader;
use crate::model::{ContainerInfo, Record};

use super::{EXIT_LEAK, Filter, Pipeline, ReplayArgs};

/// Records handed from the reader thread to the engine at a time.
const BATCH: usize = 1024;

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
    let stdout = std::io::stdout().lock();
    let mut pipeline = Pipeline::new(
        header,
        Filter::new(&args.view, focus),
        args.view.json,
        args.view.quiet,
        BufWriter::new(stdout),
    );
    // Decoding runs beside the engine: batches of records go through a short queue, so the
    // reader stays at most a few batches ahead and memory stays bounded.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<_>>(4);
    let decoder = std::thread::Builder::new()
        .name("capture-reader".into())
        .spawn(move || {
            let mut reader = reader;
            let mut batch = Vec::with_capacity(BATCH);
            for rec in reader.by_ref() {
                batch.push(rec);
                if batch.len() == BATCH
                    && tx
                        .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_err()
                {
                    return reader;
                }
            }
            let _ = tx.send(batch);
            reader
        })
        .context("cannot start the capture reader thread")?;
    for batch in rx {
        for rec in batch {
            let rec = rec.context("replay stopped")?;
            pipeline.handle(&rec).context("cannot write to stdout")?;
        }
    }
    let reader = decoder
        .join()
        .map_err(|_| anyhow::anyhow!("the capture reader thread panicked"))?;
    let outcome = pipeline.finish().context("cannot write to stdout")?;
    if let Some((file, offset)) = reader.stopped_at() {
        eprintln!(
            "mntleak-trace: {} ends inside a record at byte {offset}: replayed up to the last whole record",
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
