//! The system's mount state at one moment (every mount namespace, its mounts, its members, the
//! processes), and the live-loop watcher that reads a namespace's mounts when it first appears.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::model::{
    self, Action, MntNs, MountInfo, NamespaceListing, NamespaceState, ProcessState, Record,
};
use crate::sys::proc::ProcInfo;
use crate::sys::{ScanMethod, SysError, mountapi, nsfs, proc};
use crate::uapi;

/// One mount namespace as scanned.
#[derive(Clone, Debug, Default)]
pub struct ScannedNs {
    pub ns: MntNs,
    /// Member processes (tgids), sorted.
    pub pids: Vec<u32>,
    pub mounts: Vec<MountInfo>,
    /// False when the mounts could not be read (fallback method and no readable member).
    pub mounts_known: bool,
}

/// Everything a snapshot or `holders` needs, read once.
#[derive(Clone, Debug)]
pub struct SystemScan {
    pub method: ScanMethod,
    pub host_ns: MntNs,
    /// Sorted by namespace id.
    pub namespaces: Vec<ScannedNs>,
    pub processes: Vec<ProcInfo>,
}

impl SystemScan {
    pub fn ns(&self, id: u64) -> Option<&ScannedNs> {
        self.namespaces
            .binary_search_by_key(&id, |n| n.ns.id)
            .ok()
            .map(|i| &self.namespaces[i])
    }
    pub fn process(&self, pid: u32) -> Option<&ProcInfo> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// Read every mount namespace, its mounts and members. Uses the `NS_MNT_GET_NEXT` walk and
/// `listmount` when the kernel has them, else /proc (namespaces without a member are then missed
/// or their mounts unknown).
pub fn scan_system() -> Result<SystemScan, SysError> {
    let processes = proc::processes()?;
    let mut by_id: BTreeMap<u64, ScannedNs> = BTreeMap::new();
    let walk = if mountapi::listmount_supported() {
        match nsfs::all_mount_namespaces() {
            Ok(w) => Some(w),
            Err(e) if e.is_unsupported() => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let method = if walk.is_some() {
        ScanMethod::Listmount
    } else {
        ScanMethod::ProcFallback
    };
    for e in walk.iter().flatten() {
        by_id.entry(e.ns.id).or_insert_with(|| ScannedNs {
            ns: e.ns,
            ..Default::default()
        });
    }
    // Members; also namespaces the walk could not show (another user namespace's, or no walk).
    for p in &processes {
        if let Some(ns) = p.mnt_ns {
            by_id
                .entry(ns.id)
                .or_insert_with(|| ScannedNs {
                    ns,
                    ..Default::default()
                })
                .pids
                .push(p.pid);
        }
    }
    if method == ScanMethod::ProcFallback {
        // Namespaces pinned only by an fd: reachable through /proc/<pid>/fd/<n>.
        for r in proc::fds_pointing_to_ns(&["mnt"])? {
            if let Ok(ns) = nsfs::mnt_ns_of_path(format!("/proc/{}/fd/{}", r.pid, r.fd)) {
                by_id.entry(ns.id).or_insert_with(|| ScannedNs {
                    ns,
                    ..Default::default()
                });
            }
        }
    }
    for s in by_id.values_mut() {
        s.pids.sort_unstable();
        let read = match method {
            ScanMethod::Listmount => mountapi::namespace_mounts(s.ns.id).map(Some),
            ScanMethod::ProcFallback => match s.pids.first() {
                Some(pid) => mountapi::read_mountinfo(&format!("/proc/{pid}/mountinfo")).map(Some),
                None => Ok(None),
            },
        };
        match read {
            Ok(Some(m)) => {
                s.mounts = m;
                s.mounts_known = true;
            }
            Ok(None) => {}
            // The namespace died (or its last member exited) since it was listed.
            Err(e) if e.is_gone() => {}
            Err(e) => return Err(e),
        }
    }
    let namespaces: Vec<ScannedNs> = by_id.into_values().collect();
    let host_ns = namespaces
        .iter()
        .find(|n| n.ns.inum == uapi::INIT_MNT_NS_INUM)
        .map(|n| n.ns)
        .or_else(|| nsfs::mnt_ns_of_pid(1).ok())
        .map_or_else(|| nsfs::mnt_ns_of_path("/proc/self/ns/mnt"), Ok)?;
    Ok(SystemScan {
        method,
        host_ns,
        namespaces,
        processes,
    })
}

/// The capture's initial snapshot.
pub fn take_snapshot(now_ns: u64) -> Result<model::Snapshot, SysError> {
    let scan = scan_system()?;
    tracing::debug!(
        method = scan.method.describe(),
        namespaces = scan.namespaces.len(),
        "snapshot taken"
    );
    Ok(model::Snapshot {
        ts_ns: now_ns,
        host_ns: scan.host_ns,
        namespaces: scan
            .namespaces
            .into_iter()
            .map(|n| NamespaceState {
                ns: n.ns,
                pids: n.pids,
                mounts: n.mounts,
            })
            .collect(),
        processes: scan
            .processes
            .into_iter()
            .map(|p| ProcessState {
                pid: p.pid,
                ppid: p.ppid,
                comm: p.comm,
                mnt_ns: p.mnt_ns.unwrap_or_default(),
                cgroup: model::KStr::new(p.cgroup),
            })
            .collect(),
    })
}

/// Reads a namespace's mounts the first time an event shows it. Runs in the live loop: one
/// HashSet lookup per event; the set is pruned against the kernel's live namespaces when it grows.
pub struct NamespaceWatcher {
    seen: FxHashSet<u64>,
    prune_at: usize,
    /// Namespaces of the current batch that were made and gone within it (see `begin_batch`).
    gone_in_batch: FxHashSet<u64>,
}

const PRUNE_MIN: usize = 1024;

impl NamespaceWatcher {
    pub fn new(known: &model::Snapshot) -> Self {
        let seen: FxHashSet<u64> = known.namespaces.iter().map(|n| n.ns.id).collect();
        let prune_at = (seen.len() * 2).max(PRUNE_MIN);
        Self {
            seen,
            prune_at,
            gone_in_batch: FxHashSet::default(),
        }
    }

    /// Takes the next batch of records from the ring, before `observe` sees any of them, and
    /// notes the namespaces that first appear in it and whose every member (each process the
    /// batch shows entering or acting in it) also exits in it: a helper's fork, unshare and
    /// exit, made and gone between two reads of the ring. Reading one would cost a listmount
    /// that fails (about a microsecond each, a tenth of the tracer's time on such churn), and
    /// the engine has the copy from the unshare or fork already. Such a namespace is not marked
    /// seen: one kept alive by an nsfs bind mount or an open fd is read when an event shows it
    /// again (a setns into it, a process acting in it).
    pub fn begin_batch(&mut self, batch: &[Record]) {
        self.gone_in_batch.clear();
        // ns id -> (members seen in the batch, how many of them exited in it).
        let mut new: FxHashMap<u64, (SmallVec<[u32; 2]>, usize)> = FxHashMap::default();
        for rec in batch {
            let Record::Event(ev) = rec else { continue };
            for (ns, pid) in members(ev) {
                if ns.id == 0 || self.seen.contains(&ns.id) {
                    continue;
                }
                let (pids, exited) = new.entry(ns.id).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
                // An exit's one pair is the process and the namespace it dies in.
                if matches!(ev.action, Action::Exit) {
                    *exited += 1;
                }
            }
        }
        self.gone_in_batch.extend(
            new.into_iter()
                .filter(|(_, (pids, exited))| *exited >= pids.len())
                .map(|(id, _)| id),
        );
    }

    /// A `NamespaceMounts` record when `ev` shows a namespace not seen before, stamped with
    /// `clock()` (called only then: most events need no read, and a clock read per event shows).
    pub fn observe(&mut self, ev: &model::Event, clock: impl Fn() -> u64) -> Option<Record> {
        for (ns, pid) in members(ev) {
            if ns.id == 0
                || self.seen.contains(&ns.id)
                || (!self.gone_in_batch.is_empty() && self.gone_in_batch.contains(&ns.id))
            {
                continue;
            }
            self.seen.insert(ns.id);
            self.maybe_prune();
            // One read per event; a second new namespace is caught by a later event.
            return read_ns(ns, Some(pid), clock);
        }
        None
    }

    /// Re-read a namespace, e.g. after a mount whose target the engine cannot place by path
    /// (runc's `/proc/self/fd/N` targets).
    pub fn refresh(&mut self, ns: MntNs, clock: impl Fn() -> u64) -> Option<Record> {
        if ns.id == 0 {
            return None;
        }
        self.seen.insert(ns.id);
        read_ns(ns, None, clock)
    }

    /// Forget namespaces that no longer exist, so the set stays the size of the live system.
    fn maybe_prune(&mut self) {
        if self.seen.len() < self.prune_at {
            return;
        }
        if let Ok(live) = nsfs::all_mount_namespaces() {
            let live: FxHashSet<u64> = live.iter().map(|e| e.ns.id).collect();
            self.seen.retain(|id| live.contains(id));
        }
        self.prune_at = (self.seen.len() * 2).max(PRUNE_MIN);
    }
}

/// The namespaces `ev` shows a process in, with that process: the one it made or entered (for a
/// fork, the child's), then the caller's own.
fn members(ev: &model::Event) -> impl Iterator<Item = (MntNs, u32)> {
    let member = match ev.action {
        Action::Fork { child } => child,
        Action::Clone { .. } => match ev.ret {
            Some(child) if child > 0 => child as u32,
            _ => ev.task.pid,
        },
        _ => ev.task.pid,
    };
    [(ev.new_mnt_ns, member), (Some(ev.task.mnt_ns), ev.task.pid)]
        .into_iter()
        .filter_map(|(ns, pid)| Some((ns?, pid)))
}

/// Reads `ns`'s mounts, stamped with `clock()` before and after the read.
fn read_ns(ns: MntNs, pid: Option<u32>, clock: impl Fn() -> u64) -> Option<Record> {
    let ts_ns = clock();
    let mounts = if mountapi::listmount_supported() {
        mountapi::namespace_mounts(ns.id)
    } else {
        // Only valid when the process is (still) inside `ns`.
        let pid = pid?;
        match nsfs::mnt_ns_of_pid(pid) {
            Ok(cur) if cur.id == ns.id => {
                mountapi::read_mountinfo(&format!("/proc/{pid}/mountinfo"))
            }
            _ => return None,
        }
    };
    match mounts {
        Ok(mounts) => Some(Record::NamespaceMounts(NamespaceListing {
            ts_ns,
            read_end_ns: clock().max(ts_ns),
            ns,
            mounts,
        })),
        Err(e) => {
            tracing::debug!("cannot read mounts of namespace {}: {e}", ns.id);
            None
        }
    }
}
