//! The pure reconstruction engine: applies the `Record` stream (snapshot first, then events and
//! kernel facts) to a model of processes, mount namespaces and mount trees with their propagation,
//! following the kernel's rules (man 7 mount_namespaces, Documentation/filesystems/
//! sharedsubtree.rst), and raises `leak` / `at_risk` findings. No I/O, no clock, no /proc.

pub(crate) mod paths;
mod rules;
mod state;
mod verdict;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

/// The engine's maps: keyed by ids and paths, hashed once per event, so a fast non-DoS-resistant
/// hash (the inputs are the kernel's own ids and paths of the machine being traced).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;
pub(crate) type HashSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

use serde::Serialize;

use crate::model::{Action, ContainerInfo, Record};
pub use crate::report::finding::{Finding, FindingKind};
use state::{Dentry, Family, Keys, MKey, Mount, Ns, Proc};

pub struct EngineConfig {
    /// Containers to follow; empty follows every container-looking mount.
    pub focus: Vec<ContainerInfo>,
    /// Linux >= 3.18: unlink/rmdir of a mountpoint detaches the mounts on it in other namespaces.
    pub detach_on_unlink: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            focus: Vec::new(),
            detach_on_unlink: true,
        }
    }
}

/// One mount of the modelled table, as `mount_table` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelMount {
    pub mount_id: Option<u64>,
    pub parent_mountpoint: Option<String>,
    pub mountpoint: String,
    pub root: String,
    pub source: String,
    pub fstype: String,
    /// Model-internal peer group numbers (consistent within one engine, not the kernel's).
    pub shared: Option<u32>,
    pub master: Option<u32>,
    pub unbindable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub records: u64,
    pub events: u64,
    pub lost: u64,
    pub processes: usize,
    pub namespaces: usize,
    pub mounts: usize,
    pub families: usize,
    pub peer_groups: usize,
    pub open_leaks: usize,
    pub resolved_leaks: usize,
    pub at_risk: usize,
}

/// Dead namespaces remembered (see `Engine::recently_dead`).
const RECENTLY_DEAD: usize = 8192;

/// Resolved findings kept at most (oldest dropped), so a days-long run stays flat.
const MAX_RESOLVED: usize = 4096;

pub struct Engine {
    cfg: EngineConfig,
    containers: Vec<ContainerInfo>,
    host_ns: u64,
    /// Kernel time of the latest event applied: the stream's clock (the engine reads none).
    now: u64,
    // model
    mounts: Vec<Option<Mount>>,
    free: Vec<MKey>,
    live_mounts: usize,
    ns: HashMap<u64, Ns>,
    procs: HashMap<u32, Proc>,
    peers: HashMap<u32, Keys>,
    slaves: HashMap<u32, Keys>,
    next_group: u32,
    next_fs: u64,
    dev_fs: HashMap<(u32, u32), u64>,
    dev_by_source: HashMap<String, u64>,
    kgroups: HashMap<u32, u32>,
    families: Vec<Option<Family>>,
    fam_free: Vec<u32>,
    /// Mountpoint dentry -> mounts on it (any namespace), for the unlink rule.
    mp_index: HashMap<Dentry, Keys>,
    /// Mountpoint basenames, so unlinks of ordinary files cost one hash lookup.
    mp_base: HashMap<String, u32>,
    /// Mount-namespace inode -> nsfs mounts pinning it.
    nsfs_pins: HashMap<u32, u32>,
    paths: paths::PathSet,
    // per-event scratch
    dirty: Vec<MKey>,
    touched_families: Vec<u32>,
    unpinned: Vec<u32>,
    out: Vec<Finding>,
    // findings
    next_finding: u64,
    leaks: HashMap<u64, Finding>,
    leak_by_mount: HashMap<MKey, u64>,
    at_risk: HashMap<MKey, Finding>,
    resolved: VecDeque<Finding>,
    recent_symptoms: VecDeque<verdict::RecentFailure>,
    /// Kernel facts waiting for the event stream to pass the end of their read (the ring buffer
    /// delivers events older than a fact after it).
    pending_facts: VecDeque<crate::model::NamespaceListing>,
    /// The time of the event being applied, for [`Ns::added_at`] and its kin (facts do not set
    /// them).
    event_ts: Option<u64>,
    /// The namespace of the record just applied when it was an event placed by paths the kernel
    /// resolved (see [`crate::model::Event::placed_by_kernel_paths`]).
    placed_in: Option<u64>,
    /// Namespaces seen dying, most recent last: a kernel fact read in the moment between a
    /// process's exit event and its namespace's end must not bring the namespace back (it would
    /// never die again). Namespace ids are never reused, so remembering recent ones suffices.
    recently_dead: VecDeque<u64>,
    recently_dead_set: HashSet<u64>,
    /// Namespaces removed so far: a process's note that its comm is in a namespace's `comms`
    /// holds only while none was (an id may come back as a new namespace).
    ns_removals: u64,
    /// Namespace copies that wait (see `copy_ns`), oldest first. Rarely more than one: any
    /// record other than process lifecycle makes them.
    pending_copies: Vec<state::PendingCopy>,
    stats: EngineStats,
}

/// Facts held back at most; beyond, the oldest is applied.
const MAX_PENDING_FACTS: usize = 64;

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            cfg: config,
            containers: Vec::new(),
            host_ns: 0,
            now: 0,
            mounts: Vec::new(),
            free: Vec::new(),
            live_mounts: 0,
            ns: HashMap::default(),
            procs: HashMap::default(),
            peers: HashMap::default(),
            slaves: HashMap::default(),
            next_group: 0,
            next_fs: 0,
            dev_fs: HashMap::default(),
            dev_by_source: HashMap::default(),
            kgroups: HashMap::default(),
            families: Vec::new(),
            fam_free: Vec::new(),
            mp_index: HashMap::default(),
            mp_base: HashMap::default(),
            nsfs_pins: HashMap::default(),
            paths: paths::PathSet::default(),
            dirty: Vec::new(),
            touched_families: Vec::new(),
            unpinned: Vec::new(),
            out: Vec::new(),
            next_finding: 0,
            leaks: HashMap::default(),
            leak_by_mount: HashMap::default(),
            at_risk: HashMap::default(),
            resolved: VecDeque::new(),
            recent_symptoms: VecDeque::new(),
            pending_facts: VecDeque::new(),
            event_ts: None,
            placed_in: None,
            recently_dead: VecDeque::new(),
            recently_dead_set: HashSet::default(),
            ns_removals: 0,
            pending_copies: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// Apply one record; returns findings raised or changed by it.
    pub fn apply(&mut self, rec: &Record) -> Vec<Finding> {
        self.stats.records += 1;
        if !self.pending_copies.is_empty() && !lets_copies_wait(rec) {
            self.make_pending_copies();
        }
        let placed_in = self.placed_in.take();
        match rec {
            Record::Snapshot(s) => self.apply_snapshot(s),
            Record::Event(e) => {
                self.stats.events += 1;
                self.now = self.now.max(e.task.ts_ns);
                // The source reads facts one after another: their read ends come in order.
                while self
                    .pending_facts
                    .front()
                    .is_some_and(|f| f.read_end_ns <= e.task.ts_ns)
                {
                    if let Some(f) = self.pending_facts.pop_front() {
                        self.apply_pending_fact(f);
                    }
                }
                self.event_ts = Some(e.task.ts_ns);
                self.apply_event(e);
                self.event_ts = None;
                if e.placed_by_kernel_paths() {
                    self.placed_in = Some(e.task.mnt_ns.id);
                }
            }
            Record::Lost { count, .. } => self.stats.lost += count,
            // The source re-reads a namespace right after a call it thinks cannot be placed by
            // path (runc's fd targets, pivot_root, umount2(".")). When the kernel resolved its
            // paths the event placed itself; the listing, read later and possibly after further
            // calls whose records arrive after it, would only apply them twice.
            Record::NamespaceMounts(l)
                if placed_in == Some(l.ns.id)
                    && self.ns.get(&l.ns.id).is_some_and(|n| n.mounts > 0) => {}
            Record::NamespaceMounts(listing) => {
                // Read after the events before it in the stream, and often after some that
                // follow it: applied when the stream passes the end of its read.
                self.pending_facts.push_back(listing.clone());
                while self.pending_facts.len() > MAX_PENDING_FACTS {
                    if let Some(f) = self.pending_facts.pop_front() {
                        self.apply_pending_fact(f);
                    }
                }
            }
            Record::Container(c) => {
                // Rotated captures and runtime polls may repeat a container: keep one record.
                self.containers.retain(|k| k.id != c.id);
                self.containers.push(c.clone());
                self.end_runtime_setup(c.mnt_ns.id);
            }
        }
        // Containers are recorded right after the snapshot (and when created): judge copies
        // once they are known, so a container's own mounts are not reported at risk.
        let wait = matches!(rec, Record::Snapshot(_) | Record::Container(_));
        self.after_record(wait);
        let mut out = std::mem::take(&mut self.out);
        if out.len() > 1 {
            // One emission per finding and record: its last state (raised and resolved by the
            // same record shows once, resolved).
            let mut seen = std::collections::HashSet::new();
            out.reverse();
            out.retain(|f| seen.insert(f.id));
            out.reverse();
        }
        out
    }

    /// End of stream: every leak (open and resolved) and the at-risk copies still alive.
    pub fn finish(&mut self) -> Vec<Finding> {
        self.make_pending_copies();
        while let Some(f) = self.pending_facts.pop_front() {
            self.apply_pending_fact(f);
        }
        self.check_at_risk();
        self.out.clear();
        let mut v: Vec<Finding> = self.resolved.iter().cloned().collect();
        let mut open: Vec<Finding> = self.leaks.values().cloned().collect();
        open.sort_by_key(|f| f.id);
        v.extend(open);
        let mut risk: Vec<Finding> = self.at_risk.values().cloned().collect();
        risk.sort_by_key(|f| f.id);
        v.extend(risk);
        v
    }

    /// The modelled mount table of a namespace, parents before children.
    pub fn mount_table(&mut self, ns_id: u64) -> Vec<ModelMount> {
        self.make_pending_copies();
        self.ns_mounts(ns_id)
            .into_iter()
            .map(|k| {
                let m = self.m(k);
                ModelMount {
                    mount_id: m.kernel_id,
                    parent_mountpoint: m.parent.map(|p| self.m(p).mountpoint.to_string()),
                    mountpoint: m.mountpoint.to_string(),
                    root: m.root.to_string(),
                    source: m.source.to_string(),
                    fstype: m.fstype.to_string(),
                    shared: m.shared,
                    master: m.master,
                    unbindable: m.unbindable,
                }
            })
            .collect()
    }

    /// Namespaces the model holds (alive), sorted.
    pub fn namespaces(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.ns.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.processes = self.procs.len();
        s.namespaces = self.ns.len();
        // A waiting copy (see `copy_ns`) will hold as many mounts as its source.
        s.mounts = self.live_mounts
            + self
                .pending_copies
                .iter()
                .filter_map(|p| self.ns.get(&p.src))
                .map(|n| n.mounts)
                .sum::<usize>();
        s.families = self.families.len() - self.fam_free.len();
        s.peer_groups = self.peers.len();
        s.open_leaks = self.leaks.len();
        s.resolved_leaks = self.resolved.len();
        s.at_risk = self.at_risk.len();
        s
    }

    fn looks_container(&self, path: &str, source: &str, fstype: &str) -> bool {
        let in_focus = |p: &str| {
            self.cfg
                .focus
                .iter()
                .chain(self.containers.iter())
                .any(|c| {
                    c.mount_paths.iter().any(|fp| {
                        !fp.is_empty() && (p == fp || paths::strip(p, fp).is_some() || source == fp)
                    })
                })
        };
        if in_focus(path) {
            return true;
        }
        if !self.cfg.focus.is_empty() {
            return false;
        }
        // Runtime-owned places and container block devices; not the host's own /dev/shm.
        let shm = path.ends_with("/shm")
            && (path.starts_with("/var/lib/docker/containers/")
                || path.starts_with("/run/containerd/")
                || path.starts_with("/var/lib/kubelet/pods/"));
        let task_rootfs =
            path.contains("/io.containerd.runtime.v2.task/") && path.ends_with("/rootfs");
        fstype == "overlay"
            || path.ends_with("/merged")
            || task_rootfs
            || shm
            || (fstype == "nsfs"
                && (path.starts_with("/run/netns/")
                    || path.starts_with("/var/run/netns/")
                    || path.starts_with("/run/docker/netns/")))
            || source.starts_with("/dev/loop")
            || source.starts_with("/dev/dm-")
            || source.starts_with("/dev/mapper/")
            || source.starts_with("/dev/rbd")
            || source.starts_with("/dev/nbd")
            || path.starts_with("/var/lib/kubelet/pods/")
            || path.starts_with("/var/lib/docker/containers/")
            || path.starts_with("/run/containerd/")
    }

    /// With a focus, leaks are only reported for the focused containers' mounts.
    fn family_relevant(&self, f: &Family) -> bool {
        self.cfg.focus.is_empty() || f.container_looking
    }

    fn after_record(&mut self, wait: bool) {
        if !wait {
            self.check_at_risk();
            self.dirty.clear();
        }
        // Both lists are empty after almost every record: then not even taken.
        if !self.unpinned.is_empty() {
            self.kill_unpinned();
        }
        if !self.touched_families.is_empty() {
            self.free_emptied_families();
        }
    }

    /// Namespaces whose last nsfs pin went and that have no member die.
    fn kill_unpinned(&mut self) {
        for inum in std::mem::take(&mut self.unpinned) {
            let ids: Vec<u64> = self
                .ns
                .iter()
                .filter(|(_, n)| n.inum == inum && n.members.is_empty() && !n.members_unknown)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                self.kill_ns(id, None);
            }
        }
    }

    /// Frees families that lost every member (only those touched: O(1) per record).
    fn free_emptied_families(&mut self) {
        for i in std::mem::take(&mut self.touched_families) {
            if self.families[i as usize]
                .as_ref()
                .is_some_and(|f| f.members.is_empty())
            {
                self.families[i as usize] = None;
                self.fam_free.push(i);
            }
        }
    }
}

/// Records that neither read nor change mounts, so that namespace copies may keep waiting across
/// them: process lifecycle and the copies themselves (see `Engine::copy_ns`). A short-lived
/// process that unshares and exits then costs no copy at all.
fn lets_copies_wait(rec: &Record) -> bool {
    match rec {
        Record::Event(e) => {
            e.ret.is_none_or(|r| r >= 0)
                && matches!(
                    e.action,
                    Action::Fork { .. }
                        | Action::Clone { .. }
                        | Action::Unshare { .. }
                        | Action::Exit
                )
        }
        Record::Lost { .. } => true,
        _ => false,
    }
}

pub(crate) fn errno_name(e: i64) -> &'static str {
    match -e {
        1 => "EPERM",
        2 => "ENOENT",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        22 => "EINVAL",
        39 => "ENOTEMPTY",
        _ => "E?",
    }
}
