//! The kernel is the reference: seeded random scenarios run for real (unshare, mount --bind,
//! --rbind, --make-*, --move, umount, rmdir, holder exits) in a private scratch namespace tree,
//! while the real eBPF tracer runs and the engine is fed what it recorded; after every step the engine's mount table of
//! each live namespace must equal /proc/<pid>/mountinfo under the scratch root (mountpoints,
//! sources, propagation kinds and peer-group structure). A failure prints the seed and the log.
//! `MNTLEAK_ORACLE_SCENARIOS=N` runs N seeds (default 200), `MNTLEAK_ORACLE_SEED=S` just one.

#[path = "../src/scenario/mod.rs"]
mod scenario;

use mntleak::source::LiveSource;
use scenario::{Rng, World};

const STEPS: usize = 16;

/// Seeds whose disagreement is understood and not yet modelled: umount propagation over a stack
/// of mounts on one mountpoint where a propagated copy was tucked under (89: MS_MOVE of such a
/// stack; 106, 189: umount of the top of a tucked stack). Reported, not failed; fix, then remove.
const KNOWN_GAPS: &[u64] = &[];

fn candidates(w: &World, h: usize) -> (Vec<String>, Vec<String>) {
    let mut mps: Vec<String> = w
        .real_table(h)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mountpoint.text)
        .collect();
    mps.sort();
    mps.dedup();
    let mut dirs: Vec<String> = (0..4).map(|i| format!("{}/d{i}", w.root)).collect();
    for m in &mps {
        if m != &w.root {
            dirs.push(format!("{m}/e0"));
            dirs.push(format!("{m}/e1"));
        }
    }
    (mps, dirs)
}

fn step(w: &mut World, rng: &mut Rng, n: usize) -> std::io::Result<()> {
    let live: Vec<usize> = (0..w.holders.len()).filter(|&i| w.alive(i)).collect();
    let h = *rng.pick(&live);
    let (mps, dirs) = candidates(w, h);
    let sub: Vec<String> = mps.iter().filter(|m| **m != w.root).cloned().collect();
    match rng.below(100) {
        0..=24 => {
            let t = rng.pick(&dirs).clone();
            let src = format!("o{n}");
            if w.run(h, &format!("mount -n -t tmpfs {src} {t}"))? {
                w.run(h, &format!("mkdir -p {t}/e0 {t}/e1"))?;
            }
        }
        25..=39 => {
            let src = rng.pick(&dirs).clone();
            let dst = rng.pick(&dirs).clone();
            let rec = rng.below(2) == 0;
            let opt = if rec { "--rbind" } else { "--bind" };
            w.run(h, &format!("mount -n {opt} {src} {dst}"))?;
        }
        40..=61 => {
            let t = rng.pick(&mps).clone();
            let k = *rng.pick(&["shared", "slave", "private", "unbindable"]);
            let rec = rng.below(2) == 0;
            let opt = format!("--make-{}{k}", if rec { "r" } else { "" });
            w.run(h, &format!("mount -n {opt} {t}"))?;
        }
        62..=76 => {
            if !sub.is_empty() {
                let t = rng.pick(&sub).clone();
                let detach = rng.below(3) == 0;
                w.umount(h, &t, detach)?;
            }
        }
        77..=84 => {
            if live.len() < 5 {
                let prop = *rng.pick(&["unchanged", "private", "slave", "shared"]);
                w.unshare(h, prop)?;
            }
        }
        85..=87 => {
            let others: Vec<usize> = live.iter().copied().filter(|&i| i != 0).collect();
            if !others.is_empty() {
                let k = *rng.pick(&others);
                w.kill(k);
            }
        }
        88..=94 => {
            // rmdir, here, of a directory another namespace mounts on (3.18 detach rule).
            let other = *rng.pick(&live);
            let (omps, _) = candidates(w, other);
            let osub: Vec<String> = omps.into_iter().filter(|m| *m != w.root).collect();
            if !osub.is_empty() {
                let p = rng.pick(&osub).clone();
                if w.rmdir(h, &p)? {
                    w.run(h, &format!("mkdir -p {p}"))?;
                }
            }
        }
        _ => {
            if !sub.is_empty() {
                let src = rng.pick(&sub).clone();
                let dst = rng.pick(&dirs).clone();
                w.run(h, &format!("mount -n --move {src} {dst}"))?;
            }
        }
    }
    Ok(())
}

/// With MNTLEAK_ORACLE_VERBOSE: the records that concern the scenario, as the engine gets them.
fn debug_record(w: &World, r: &mntleak::model::Record) {
    use mntleak::model::{NamespaceListing, Record};
    let ours = |id: u64| w.holders.iter().any(|h| h.ns.id == id);
    match r {
        Record::Event(e) if ours(e.task.mnt_ns.id) || e.new_mnt_ns.is_some_and(|n| ours(n.id)) => {
            eprintln!(
                "  rec {} pid {} {} ns {} new {:?} {:?} ret {:?}",
                e.task.ts_ns,
                e.task.pid,
                e.task.comm.text,
                e.task.mnt_ns.id,
                e.new_mnt_ns.map(|n| n.id),
                e.action,
                e.ret
            )
        }
        Record::NamespaceMounts(NamespaceListing {
            ts_ns,
            read_end_ns,
            ns,
            mounts,
        }) if ours(ns.id) => {
            eprintln!("  fact {ts_ns}..{read_end_ns} ns {}", ns.id);
            for m in mounts
                .iter()
                .filter(|m| w.under_root(m.mountpoint.as_str()))
            {
                eprintln!(
                    "     {} {} {} parent {} {:?}",
                    m.mnt_id, m.mountpoint.text, m.source.text, m.parent_id, m.propagation
                );
            }
        }
        _ => {}
    }
}

/// One scenario; `tracer` is reused across scenarios (a failed one drops it, the next attaches).
fn run_seed(seed: u64, tracer: &mut Option<LiveSource>) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let shared = rng.below(4) != 0;
    let mut w = World::with_source("oracle", shared, tracer.take())
        .map_err(|e| format!("seed {seed}: setup: {e}"))?;
    let mut eng = mntleak::engine::Engine::new(mntleak::engine::EngineConfig::default());
    let mut fed = 0;
    let verbose = std::env::var_os("MNTLEAK_ORACLE_VERBOSE").is_some();
    let check = |w: &World, eng: &mut mntleak::engine::Engine, fed: &mut usize| {
        for r in &w.records[*fed..] {
            if verbose {
                debug_record(w, r);
            }
            eng.apply(r);
        }
        *fed = w.records.len();
        w.compare(eng)
    };
    if let Err(e) = check(&w, &mut eng, &mut fed) {
        return Err(format!("seed {seed}: at start: {e}"));
    }
    for n in 0..STEPS {
        step(&mut w, &mut rng, n).map_err(|e| format!("seed {seed}: step {n}: {e}"))?;
        if let Err(e) = check(&w, &mut eng, &mut fed) {
            return Err(format!(
                "seed {seed}: after step {n}: {e}\nlog:\n  {}",
                w.log.join("\n  ")
            ));
        }
    }
    *tracer = w.into_source();
    Ok(())
}

#[test]
fn engine_agrees_with_the_kernel_on_random_scenarios() {
    if !scenario::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let seeds: Vec<u64> = match std::env::var("MNTLEAK_ORACLE_SEED") {
        Ok(s) => vec![s.parse().expect("MNTLEAK_ORACLE_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("MNTLEAK_ORACLE_SCENARIOS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=n).collect()
        }
    };
    let mut failures = Vec::new();
    let mut tracer = None;
    for &s in &seeds {
        match run_seed(s, &mut tracer) {
            Err(e) if KNOWN_GAPS.contains(&s) => eprintln!("known gap (not failing): {e}"),
            Err(e) => failures.push(e),
            Ok(()) if KNOWN_GAPS.contains(&s) => {
                eprintln!("seed {s}: known gap now agrees; drop it from KNOWN_GAPS")
            }
            Ok(()) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios disagree with the kernel; first:\n{}\nfailing seeds: {:?}",
        failures.len(),
        seeds.len(),
        failures[0],
        failures
            .iter()
            .map(|f| f.split(':').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    );
}
