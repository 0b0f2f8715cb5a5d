//! `mntleak-trace replay`: the capture reader as a source, then the same pipeline as live.

use std::io::BufWriter;
use std::process::ExitCode;

use anyhow::Context;

use crate::capture::CaptureReader;
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
    let mut reader = CaptureReader::open(&args.files)
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
    while let Some(rec) = reader.next_record().context("replay stopped")? {
        pipeline.handle(rec).context("cannot write to stdout")?;
    }
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
