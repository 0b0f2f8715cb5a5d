//! An in-process mutation fuzzer for the capture reader: the reader must never panic (or hang,
//! or allocate without bound) on any input. Seeds come from the corpus directory plus captures
//! generated here; mutants are byte flips, truncations, splices, frame-length tweaks, frame
//! duplication/removal, half of them with checksums recomputed so they reach the decoders.
//!
//! mntleak-fuzz [--runs N] [--corpus DIR] [--out DIR] [--seed S] [--write-seeds DIR] [--verbose]

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use mntleak::capture::{CaptureReader, encode_to_vec, fix_checksums, frame_spans};
use mntleak::model::*;
use mntleak_tests::{read_varint, varint};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic for a given --seed.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

struct Args {
    runs: u64,
    corpus: Option<PathBuf>,
    out: PathBuf,
    seed: u64,
    write_seeds: Option<PathBuf>,
    verbose: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        runs: 100_000,
        corpus: None,
        out: PathBuf::from("target/fuzz-out"),
        seed: 0x6d6e_746c_6561_6b21,
        write_seeds: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = val()?.parse().context("--runs")?,
            "--corpus" => a.corpus = Some(val()?.into()),
            "--out" => a.out = val()?.into(),
            "--seed" => a.seed = val()?.parse().context("--seed")?,
            "--write-seeds" => a.write_seeds = Some(val()?.into()),
            "--verbose" => a.verbose = true,
            "-h" | "--help" => {
                println!(
                    "mntleak-fuzz [--runs N] [--corpus DIR] [--out DIR] [--seed S] [--write-seeds DIR] [--verbose]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn k(s: &str) -> KStr {
    KStr::new(s)
}

/// Real captures written by the encoder: every record kind, hostile strings, a dictionary reset.
fn generated_seeds() -> Vec<(String, Vec<u8>)> {
    let header = CaptureHeader {
        format_version: mntleak::capture::FORMAT_VERSION,
        kernel_release: "6.18.0".into(),
        hostname: "fuzz".into(),
        monotonic_to_wall_ns: 1_764_600_000_000_000_000,
        missing: vec!["fsconfig".into()],
    };
    let ns = MntNs {
        id: 0x1_0000_0001,
        inum: 4026532301,
    };
    let mount = MountInfo {
        mnt_id: 0x2000_0000_0001,
        parent_id: 1,
        mnt_id_old: 30,
        dev_major: 0,
        dev_minor: 42,
        root: k("/"),
        mountpoint: k("/var/lib/docker/overlay2/abc/merged"),
        fstype: k("overlay"),
        source: k("overlay"),
        options: k("rw,relatime"),
        propagation: Propagation {
            shared: Some(5),
            master: Some(2),
            unbindable: false,
        },
    };
    let task = |ts: u64, comm: &str| Task {
        ts_ns: ts,
        pid: 4242,
        tid: 4243,
        ppid: 1,
        comm: KStr::from_bytes(comm.as_bytes(), comm.len() > 8),
        mnt_ns: ns,
        net_ns_inum: 4026531840,
        cgroup_id: 77,
    };
    let actions = vec![
        Action::Mount {
            source: k("overlay"),
            target: k("/merged\x1b[2J"),
            fstype: k("overlay"),
            flags: 4096 | 16384,
        },
        Action::Umount {
            target: k("/merged"),
            flags: 2,
        },
        Action::Unlink {
            dirfd: -100,
            path: k("merged"),
            rmdir: true,
            call: UnlinkCall::Unlinkat,
        },
        Action::Unshare { flags: 0x20000 },
        Action::Setns {
            fd: 3,
            nstype: 0x20000,
        },
        Action::Clone {
            flags: 0x20011,
            clone3: false,
        },
        Action::Fsopen {
            fstype: k("tmpfs"),
            flags: 1,
        },
        Action::Fsconfig {
            fd: 3,
            cmd: 1,
            key: k("size"),
            value: k("1m"),
        },
        Action::Fsmount {
            fd: 3,
            flags: 1,
            attr_flags: 1,
        },
        Action::MoveMount {
            from_dirfd: 4,
            from_path: k(""),
            to_dirfd: -100,
            to_path: k("/mnt"),
            flags: 4,
        },
        Action::OpenTree {
            dirfd: -100,
            path: k("/src"),
            flags: 1,
        },
        Action::MountSetattr {
            dirfd: -100,
            path: k("/mnt"),
            flags: 0x8000,
            attr_set: 1,
            attr_clr: 0,
            propagation: 1 << 18,
        },
        Action::PivotRoot {
            new_root: k("."),
            put_old: k("."),
        },
        Action::Chroot { path: k("/") },
        Action::Fork { child: 4300 },
        Action::Exec {
            filename: k("/bin/sh"),
        },
        Action::Exit,
    ];
    let mut all = vec![Record::Snapshot(Snapshot {
        ts_ns: 1,
        host_ns: ns,
        namespaces: vec![NamespaceState {
            ns,
            pids: vec![1, 4242],
            mounts: vec![mount.clone(), MountInfo::default()],
        }],
        processes: vec![ProcessState {
            pid: 1,
            ppid: 0,
            comm: k("init"),
            mnt_ns: ns,
            cgroup: k("/"),
        }],
    })];
    for (i, a) in actions.into_iter().enumerate() {
        all.push(Record::Event(Event {
            task: task(
                1000 + i as u64 * 997,
                ["runc", "dockerd", "containerd-shim-runc"][i % 3],
            ),
            action: a,
            ret: [Some(0), Some(-16), None][i % 3],
            new_mnt_ns: (i % 4 == 0).then_some(ns),
            dir: (i % 5 == 0).then(|| k("/run")),
            resolved: [
                (i % 3 == 0).then(|| ResolvedPath {
                    path: k("/run/c/rootfs"),
                    mnt_id: i as u64,
                }),
                None,
            ],
        }));
    }
    all.push(Record::Lost {
        count: 3,
        first_ts_ns: 5,
        last_ts_ns: 9,
    });
    all.push(Record::NamespaceMounts(NamespaceListing {
        ts_ns: 99,
        read_end_ns: 140,
        ns,
        mounts: vec![mount],
    }));
    all.push(Record::Container(ContainerInfo {
        id: "abc".into(),
        name: "web".into(),
        runtime: "docker".into(),
        init_pid: 4242,
        mnt_ns: ns,
        mount_paths: vec!["/merged".into()],
        ..Default::default()
    }));
    let events: Vec<Record> = all
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .cloned()
        .collect();
    vec![
        ("every-record.cap".into(), encode_to_vec(&header, &all)),
        ("events.cap".into(), encode_to_vec(&header, &events)),
        ("empty.cap".into(), encode_to_vec(&header, &[])),
        ("snapshot.cap".into(), encode_to_vec(&header, &all[..1])),
        (
            "tail.cap".into(),
            encode_to_vec(&header, &all[all.len() - 3..]),
        ),
    ]
}

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut d = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let spans = frame_spans(&d);
        match rng.below(10) {
            0 | 1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0, 0x7f, 0x80, 0xff, rng.next() as u8][rng.below(5)];
            }
            3 => d.truncate(rng.below(d.len() + 1)),
            4 => {
                // Splice: a prefix of this input and a suffix of another.
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(d.len() + 1);
                let from = rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            5 if !spans.is_empty() => {
                // Rewrite a frame's length varint (the frame body is left alone).
                let (s, _) = spans[rng.below(spans.len())];
                let (old, vlen) = read_varint(&d[s..]);
                let new = match rng.below(4) {
                    0 => old.saturating_add(1 + rng.below(3) as u64),
                    1 => old.saturating_sub(1 + rng.below(3) as u64),
                    2 => rng.next() >> rng.below(64),
                    _ => 64 << 20,
                };
                d.splice(s..s + vlen, varint(new));
            }
            6 if !spans.is_empty() => {
                let (s, e) = spans[rng.below(spans.len())];
                let f = d[s..e].to_vec();
                let at = spans[rng.below(spans.len())].0;
                d.splice(at..at, f);
            }
            7 if !spans.is_empty() => {
                let (s, e) = spans[rng.below(spans.len())];
                d.drain(s..e);
            }
            8 => {
                let at = rng.below(d.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            _ if d.len() > 14 => {
                // Header fields: version and header length.
                let i = 8 + rng.below(6);
                d[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    if rng.below(2) == 0 {
        fix_checksums(&mut d);
    }
    d
}

/// Reads a whole input; returns a coarse signature of what happened (for "interesting").
fn run_one(data: Vec<u8>) -> String {
    match CaptureReader::from_bytes("input", data) {
        Err(e) => format!("open:{}", shape(&e.to_string())),
        Ok(mut r) => {
            let mut n = 0usize;
            let mut kinds = 0u32;
            let mut last = String::new();
            for item in r.by_ref() {
                match item {
                    Ok(rec) => {
                        n += 1;
                        kinds |= 1 << kind(&rec);
                    }
                    Err(e) => last = shape(&e.to_string()),
                }
            }
            format!(
                "n{}:k{kinds:x}:{last}:{}",
                n.min(8),
                r.stopped_at().is_some()
            )
        }
    }
}

fn kind(r: &Record) -> u32 {
    match r {
        Record::Snapshot(_) => 0,
        Record::Event(e) => 5 + e.action.name().len() as u32 % 20,
        Record::Lost { .. } => 1,
        Record::NamespaceMounts(_) => 2,
        Record::Container(_) => 3,
    }
}

/// An error message without its numbers.
fn shape(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let generated = generated_seeds();
    if let Some(dir) = &args.write_seeds {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, data) in &generated {
            std::fs::write(dir.join(name), data)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
    }
    pool.extend(generated.into_iter().map(|(_, d)| d));
    if let Some(dir) = &args.corpus {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read corpus {}", dir.display()))?;
        for e in entries {
            let p = e?.path();
            if p.is_file() {
                pool.push(
                    std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
                );
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Unbounded allocation is a bug too: cap the address space so it aborts instead of swapping.
    // (The reader may legitimately use a few hundred MiB on a hostile frame.)
    let limit = libc::rlimit {
        rlim_cur: 2 << 30,
        rlim_max: 2 << 30,
    };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        eprintln!(
            "mntleak-fuzz: cannot limit memory: {}",
            std::io::Error::last_os_error()
        );
    }
    println!(
        "mntleak-fuzz: seed {} (rerun with --seed to reproduce), memory capped at 2 GiB",
        args.seed
    );
    // Panics are caught and reported with the input; the default hook would spam stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(args.seed | 1);
    let mut seen: HashSet<String> = HashSet::new();
    let mut saved = 0usize;
    let seeds = pool.len();
    let started = Instant::now();
    for run in 0..args.runs {
        let base = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, &pool);
        let copy = input.clone();
        match catch_unwind(AssertUnwindSafe(|| run_one(copy))) {
            Ok(sig) => {
                if seen.insert(sig) && saved < 500 {
                    // A new outcome: keep it, both on disk and as a seed for further mutation.
                    let p = args.out.join(format!("new-{run:08}"));
                    std::fs::write(&p, &input)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    saved += 1;
                    if input.len() <= 64 << 10 {
                        pool.push(input);
                    }
                }
            }
            Err(payload) => {
                let p = args.out.join(format!("crash-{run:08}"));
                std::fs::write(&p, &input)
                    .with_context(|| format!("cannot write {}", p.display()))?;
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!(
                    "mntleak-fuzz: the reader panicked on input {} (run {run}): {msg}",
                    p.display()
                );
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if args.verbose {
        let mut all: Vec<_> = seen.iter().collect();
        all.sort();
        for s in all {
            println!("{s}");
        }
    }
    println!(
        "mntleak-fuzz: {} inputs in {secs:.1}s ({:.0}/s), {seeds} seeds, {} distinct outcomes, {saved} saved to {}, no panic",
        args.runs,
        args.runs as f64 / secs.max(1e-9),
        seen.len(),
        args.out.display()
    );
    Ok(())
}
