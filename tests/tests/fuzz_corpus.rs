//! Replays every file of the checked-in fuzz corpus (`tests/fuzz-corpus`: real captures and
//! mutants the fuzzer found interesting) through the capture reader: no input may panic, and each
//! ends in records, a reported torn tail, or one error line naming the file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use mntleak::capture::CaptureReader;

#[derive(Debug, Default)]
struct Outcome {
    records: usize,
    error: Option<String>,
    torn: bool,
}

fn replay(path: &PathBuf) -> Outcome {
    let mut out = Outcome::default();
    match CaptureReader::open(std::slice::from_ref(path)) {
        Err(e) => out.error = Some(e.to_string()),
        Ok(mut r) => {
            for item in r.by_ref() {
                match item {
                    Ok(_) => out.records += 1,
                    Err(e) => {
                        assert!(out.error.is_none(), "{}: a second error", path.display());
                        out.error = Some(e.to_string());
                    }
                }
            }
            out.torn = r.stopped_at().is_some();
        }
    }
    out
}

#[test]
fn every_corpus_file_replays_without_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the corpus is missing");
    let (mut clean, mut failed) = (0, 0);
    for f in &files {
        let out = catch_unwind(AssertUnwindSafe(|| replay(f)))
            .unwrap_or_else(|_| panic!("the reader panicked on {}", f.display()));
        if let Some(e) = &out.error {
            assert!(!e.contains('\n'), "{}: multi-line error {e:?}", f.display());
            assert!(e.starts_with(&f.display().to_string()), "{e}");
            failed += 1;
        } else if !out.torn {
            clean += 1;
        }
    }
    // The seeds are real captures: they must replay in full, or this test proves nothing. They
    // span the format's versions: 1 (every-record), 2 (docker-v2-head), 4 (the -v4 ones: blocks).
    for seed in ["every-record.cap", "every-record-v4.cap"] {
        let every = replay(&dir.join(seed));
        assert!(every.error.is_none() && !every.torn, "{seed}: {every:?}");
        assert_eq!(every.records, 21, "{seed}");
    }
    // Heads of real Docker captures, cut inside a frame (version 2) or a block (version 4).
    for (seed, records) in [("docker-v2-head.cap", 288), ("docker-v4-head.cap", 849)] {
        let head = replay(&dir.join(seed));
        assert!(head.error.is_none() && head.torn, "{seed}: {head:?}");
        assert_eq!(head.records, records, "{seed}");
    }
    assert!(clean >= 5 && failed >= 5, "clean {clean}, failed {failed}");
}
