//! Real-kernel scenarios for the engine: namespaces held by `sleep` processes inside a private
//! root namespace, operations run with `nsenter -t <holder> -m`, while the real eBPF tracer runs
//! (the same `LiveSource` as `mntleak-trace`). After each operation the records it produced are
//! drained, so the engine fed with them can be checked against `/proc/<pid>/mountinfo`.
//! Included with `#[path]` by the tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use mntleak::live::LiveOptions;
use mntleak::model::*;
use mntleak::source::LiveSource;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// (inode, 64-bit id) of a process's mount namespace.
pub fn ns_of(pid: u32) -> std::io::Result<MntNs> {
    mntleak::sys::nsfs::mnt_ns_of_pid(pid).map_err(std::io::Error::other)
}

/// /proc/<pid>/mountinfo as `MountInfo`s (the kernel's side of every comparison).
pub fn mountinfo(pid: u32) -> std::io::Result<Vec<MountInfo>> {
    mntleak::sys::mountapi::read_mountinfo(&format!("/proc/{pid}/mountinfo"))
        .map_err(std::io::Error::other)
}

pub fn kind(shared: Option<u32>, master: Option<u32>, unbindable: bool) -> &'static str {
    match (shared.is_some(), master.is_some(), unbindable) {
        (_, _, true) => "unbindable",
        (true, true, _) => "shared+slave",
        (true, false, _) => "shared",
        (false, true, _) => "slave",
        _ => "private",
    }
}

/// A namespace held open by a `sleep` process.
pub struct Holder {
    pub child: Child,
    pub pid: u32,
    pub ns: MntNs,
}

/// The world of one scenario: a private root namespace holding a tmpfs at `root`.
pub struct World {
    pub root: String,
    pub holders: Vec<Holder>,
    /// Everything the tracer recorded since the world began: the snapshot, then events and facts.
    pub records: Vec<Record>,
    pub log: Vec<String>,
    /// Always `Some` until [`World::into_source`] takes it back.
    source: Option<LiveSource>,
}

fn wait_for_sleep(pid: u32, not_ns: u64) -> std::io::Result<MntNs> {
    for _ in 0..2000 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep"
            && let Ok(ns) = ns_of(pid)
            && ns.id != not_ns
        {
            return Ok(ns);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(std::io::Error::other(format!(
        "holder {pid} did not settle"
    )))
}

impl World {
    /// A fresh private namespace with a tmpfs at a unique /tmp path; `shared` makes it shared.
    /// The tracer is attached first: the holders' creation is traced like everything after it.
    pub fn new(tag: &str, shared: bool) -> std::io::Result<Self> {
        Self::with_source(tag, shared, None)
    }

    /// Like [`World::new`], reusing the tracer of a previous world (see [`World::into_source`]).
    pub fn with_source(
        tag: &str,
        shared: bool,
        reuse: Option<LiveSource>,
    ) -> std::io::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = format!("/tmp/mntleak-{tag}-{}-{n}", std::process::id());
        std::fs::create_dir_all(&root)?;
        let tracer_error = |e| std::io::Error::other(format!("cannot start the tracer: {e}"));
        let (source, snapshot) = match reuse {
            Some(mut s) => {
                let snap = s.restart().map_err(tracer_error)?;
                (s, snap)
            }
            None => LiveSource::start(&LiveOptions {
                ring_bytes: 4 << 20,
                ..Default::default()
            })
            .map_err(tracer_error)?,
        };
        if !source.tracer().missing().is_empty() {
            return Err(std::io::Error::other(format!(
                "degraded tracer: {:?}",
                source.tracer().missing()
            )));
        }
        let me = ns_of(std::process::id())?;
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--", "sleep", "1000000"])
            .stdin(Stdio::null())
            .spawn()?;
        let pid = child.id();
        let mut child = child;
        let ns = match wait_for_sleep(pid, me.id) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut w = World {
            root: root.clone(),
            holders: vec![Holder { child, pid, ns }],
            records: vec![Record::Snapshot(snapshot)],
            log: Vec::new(),
            source: Some(source),
        };
        w.run(
            0,
            &format!(
                "mount -n -t tmpfs scratch {root} && mkdir {root}/d0 {root}/d1 {root}/d2 {root}/d3"
            ),
        )?;
        if shared {
            w.run(0, &format!("mount -n --make-shared {root}"))?;
        }
        Ok(w)
    }

    /// Takes what the tracer recorded so far. Every operation's processes have exited by the
    /// time it returns, so their events are in the ring.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let before = self.records.len();
        if let Some(s) = self.source.as_mut() {
            s.drain_all(&mut self.records);
        }
        if let Some(lost) = self.records[before..]
            .iter()
            .find(|r| matches!(r, Record::Lost { .. }))
        {
            return Err(std::io::Error::other(format!(
                "the tracer lost events: {lost:?}"
            )));
        }
        Ok(())
    }

    /// Runs a shell command inside holder `h`'s namespace; true when it succeeded.
    pub fn run(&mut self, h: usize, script: &str) -> std::io::Result<bool> {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.holders[h].pid.to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()?;
        self.log.push(format!(
            "[ns{h}] {script} -> {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        if std::env::var_os("MNTLEAK_ORACLE_VERBOSE").is_some() {
            eprintln!("{}", self.log.last().map(|s| s.as_str()).unwrap_or(""));
        }
        self.sync()?;
        Ok(out.status.success())
    }

    pub fn umount(&mut self, h: usize, target: &str, detach: bool) -> std::io::Result<bool> {
        let cmd = format!("umount -n {} {target}", if detach { "-l" } else { "" });
        self.run(h, &cmd)
    }

    pub fn rmdir(&mut self, h: usize, path: &str) -> std::io::Result<bool> {
        self.run(h, &format!("rmdir {path}"))
    }

    pub fn unlink(&mut self, h: usize, path: &str) -> std::io::Result<bool> {
        self.run(h, &format!("rm {path}"))
    }

    /// A new namespace unshared from holder `parent`'s, with `--propagation prop`
    /// (unchanged|private|slave|shared). Returns its holder index.
    pub fn unshare(&mut self, parent: usize, prop: &str) -> std::io::Result<usize> {
        let ppid = self.holders[parent].pid;
        let pns = self.holders[parent].ns;
        let child = Command::new("nsenter")
            .args([
                "-t",
                &ppid.to_string(),
                "-m",
                "--",
                "unshare",
                "-m",
                "--propagation",
                prop,
                "--",
                "sleep",
                "1000000",
            ])
            .stdin(Stdio::null())
            .spawn()?;
        let pid = child.id();
        let mut child = child;
        let ns = match wait_for_sleep(pid, pns.id) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        self.log.push(format!(
            "[ns{parent}] unshare --propagation {prop} -> pid {pid} ns {}",
            ns.id
        ));
        self.holders.push(Holder { child, pid, ns });
        self.sync()?;
        Ok(self.holders.len() - 1)
    }

    /// Ends holder `h` (its namespace dies with it).
    pub fn kill(&mut self, h: usize) {
        let hd = &mut self.holders[h];
        let _ = hd.child.kill();
        let _ = hd.child.wait();
        self.log.push(format!("[ns{h}] holder {} exits", hd.pid));
        let _ = self.sync();
    }

    /// Ends the world (holders killed, scratch removed) and hands back its tracer.
    pub fn into_source(mut self) -> Option<LiveSource> {
        self.source.take()
    }

    pub fn alive(&self, h: usize) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.holders[h].pid)).exists()
    }

    /// Mountpoints under the scratch root in holder `h`'s namespace.
    pub fn real_table(&self, h: usize) -> std::io::Result<Vec<MountInfo>> {
        Ok(mountinfo(self.holders[h].pid)?
            .into_iter()
            .filter(|m| self.under_root(m.mountpoint.as_str()))
            .collect())
    }

    pub fn under_root(&self, p: &str) -> bool {
        p == self.root || p.starts_with(&format!("{}/", self.root))
    }

    /// Feeds every record to a fresh engine.
    pub fn engine(&self) -> (mntleak::engine::Engine, Vec<mntleak::engine::Finding>) {
        let mut e = mntleak::engine::Engine::new(mntleak::engine::EngineConfig::default());
        let mut out = Vec::new();
        for r in &self.records {
            out.extend(e.apply(r));
        }
        (e, out)
    }

    /// Compares the engine's table with the kernel's for every live holder: mountpoints,
    /// sources, propagation kinds, and the peer-group structure (a bijection between the
    /// engine's group numbers and the kernel's). Returns a description of the first difference.
    pub fn compare(&self, eng: &mut mntleak::engine::Engine) -> Result<(), String> {
        let mut e2k: HashMap<u32, u32> = HashMap::new();
        let mut k2e: HashMap<u32, u32> = HashMap::new();
        let mut bij = |e: Option<u32>, k: Option<u32>, what: &str| -> Result<(), String> {
            match (e, k) {
                (None, None) => Ok(()),
                (Some(e), Some(k)) => {
                    if *e2k.entry(e).or_insert(k) != k || *k2e.entry(k).or_insert(e) != e {
                        Err(format!(
                            "{what} group structure differs (engine {e} / kernel {k})"
                        ))
                    } else {
                        Ok(())
                    }
                }
                _ => Err(format!("{what}: engine {e:?} kernel {k:?}")),
            }
        };
        for (i, h) in self.holders.iter().enumerate() {
            if !self.alive(i) {
                continue;
            }
            let real = self.real_table(i).map_err(|e| e.to_string())?;
            let model: Vec<_> = eng
                .mount_table(h.ns.id)
                .into_iter()
                .filter(|m| self.under_root(&m.mountpoint))
                .collect();
            let mut r: Vec<(String, String, &str)> = real
                .iter()
                .map(|m| {
                    let p = m.propagation;
                    (
                        m.mountpoint.text.clone(),
                        m.source.text.clone(),
                        kind(p.shared, p.master, p.unbindable),
                    )
                })
                .collect();
            let mut m: Vec<(String, String, &str)> = model
                .iter()
                .map(|m| {
                    (
                        m.mountpoint.clone(),
                        m.source.clone(),
                        kind(m.shared, m.master, m.unbindable),
                    )
                })
                .collect();
            r.sort();
            m.sort();
            if r != m {
                return Err(format!(
                    "ns{i} (id {}) differs:\n kernel: {r:?}\n engine: {m:?}",
                    h.ns.id
                ));
            }
            // Group structure, on entries unique by (mountpoint, source).
            let mut count: HashMap<(String, String), usize> = HashMap::new();
            for x in &r {
                *count.entry((x.0.clone(), x.1.clone())).or_default() += 1;
            }
            for km in &real {
                let key = (km.mountpoint.text.clone(), km.source.text.clone());
                if count.get(&key) != Some(&1) {
                    continue;
                }
                let Some(em) = model
                    .iter()
                    .find(|x| x.mountpoint == key.0 && x.source == key.1)
                else {
                    continue;
                };
                bij(
                    em.shared,
                    km.propagation.shared,
                    &format!("ns{i} {} shared", key.0),
                )?;
                bij(
                    em.master,
                    km.propagation.master,
                    &format!("ns{i} {} master", key.0),
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for h in &mut self.holders {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
        // The tmpfs lived only in the holders' namespaces; the host sees an empty directory.
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// A small deterministic generator (xorshift64*), so seeds reproduce exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}
