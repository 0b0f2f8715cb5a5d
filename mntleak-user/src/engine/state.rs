//! The modelled state: processes, namespaces, mounts, peer groups, and the mount-tree operations
//! that the kernel's propagation rules are built from (clone, attach with propagation, umount
//! with propagation, propagation-type changes).

use super::{HashMap, HashSet};
use std::sync::Arc;

use super::Engine;
use super::paths::{Interned, basename, join, strip};

pub(super) type MKey = u32;

/// The mounts of one index entry (at a path, on a dentry, in a peer group, under a mount): one or
/// two almost always, so held inline.
pub(super) type Keys = smallvec::SmallVec<[MKey; 2]>;

/// A directory as (filesystem, path inside it); shared by a mount and the unlink index.
pub(super) type Dentry = (u64, Interned);

/// What a finding needs to know about an event, shared by every mount it created.
#[derive(Clone, Debug)]
pub(super) struct EvInfo {
    pub pid: u32,
    pub comm: String,
    pub syscall: &'static str,
    pub ts: u64,
    pub ns: u64,
    pub detail: Detail,
}

pub(super) type Ev = Arc<EvInfo>;

/// How a finding names an event's call (`mount(overlay, /x, MS_BIND)`): kept as its parts and
/// written out only when a finding shows it (few events ever are).
#[derive(Clone, Debug)]
pub(super) enum Detail {
    Text(String),
    Static(&'static str),
    Mount {
        source: String,
        target: String,
        flags: u64,
    },
    Umount {
        target: String,
        flags: u64,
    },
    /// unshare, clone and clone3, by name.
    Clone {
        call: &'static str,
        flags: u64,
    },
    MountSetattr {
        path: String,
        propagation: u64,
    },
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::report::names::{clone_flags, mount_flags, umount_flags};
        match self {
            Detail::Text(t) => f.write_str(t),
            Detail::Static(t) => f.write_str(t),
            Detail::Mount {
                source,
                target,
                flags,
            } => write!(f, "mount({}, {}, {})", source, target, mount_flags(*flags)),
            Detail::Umount { target, flags } => {
                write!(f, "umount2({}, {})", target, umount_flags(*flags))
            }
            Detail::Clone { call, flags } => write!(f, "{}({})", call, clone_flags(*flags)),
            Detail::MountSetattr { path, propagation } => {
                write!(f, "mount_setattr({}, {})", path, mount_flags(*propagation))
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Mount {
    pub ns: u64,
    pub parent: Option<MKey>,
    pub children: Keys,
    // Shared (not copied) by every copy of the mount: a namespace copy clones them all.
    pub mountpoint: Arc<str>,
    pub root: Arc<str>,
    pub source: Arc<str>,
    pub fstype: Arc<str>,
    /// Superblock identity (model-internal).
    pub fs: u64,
    pub kernel_id: Option<u64>,
    pub shared: Option<u32>,
    pub master: Option<u32>,
    pub unbindable: bool,
    pub family: u32,
    /// Lineage: the event that created this copy and its propagation right after.
    pub copy_ev: Option<Ev>,
    /// Its propagation then (shared, master, unbindable), rendered only for a finding.
    pub copy_prop: (Option<u32>, Option<u32>, bool),
    /// The last propagation change applied to this mount.
    pub cut_ev: Option<Ev>,
    /// The mountpoint dentry (fs, path in fs) this mount sits on, for the unlink rule.
    pub dentry: Option<Dentry>,
}

impl Mount {
    pub fn prop_string(&self) -> String {
        prop_str(self.shared, self.master, self.unbindable)
    }
}

pub(super) fn prop_str(shared: Option<u32>, master: Option<u32>, unbindable: bool) -> String {
    let mut v = Vec::new();
    if let Some(g) = shared {
        v.push(format!("shared:{g}"));
    }
    if let Some(m) = master {
        v.push(format!("master:{m}"));
    }
    if unbindable {
        v.push("unbindable".to_string());
    }
    if v.is_empty() {
        "private".to_string()
    } else {
        v.join(" ")
    }
}

#[derive(Debug, Default)]
pub(super) struct Ns {
    pub inum: u32,
    pub root: Option<MKey>,
    pub members: HashSet<u32>,
    pub created_by: Option<Ev>,
    pub copied_from: Option<u64>,
    /// Mountpoint path -> mounts there, bottom first. Added to by `index_path` only.
    pub by_path: HashMap<Arc<str>, Keys>,
    pub path_lens: PathLens,
    pub mounts: usize,
    /// Known only from a kernel fact: members unknown, never killed for lack of members.
    pub members_unknown: bool,
    /// The last mount call in this namespace the model could not place (runc's targets under
    /// /proc/self/fd): the lineage of mounts a later kernel fact shows.
    pub unplaced_bind: Option<Ev>,
    pub unplaced_prop: Option<Ev>,
    /// Made by a container runtime's init (runc:[1:CHILD]...) that has not exec'd yet: its
    /// copies are the container's own setup, judged once the container runs.
    pub runtime_setup: bool,
    /// Made by a container runtime's init: a container's own namespace.
    pub runtime: bool,
    /// When the runtime's init exec'd the container's process (kernel ns): copies that reached
    /// the namespace before then are setup transients, detached with runc's old root.
    pub setup_ended_ts: Option<u64>,
    /// Mounts whose at-risk check waits for the runtime setup to end.
    pub deferred: Vec<MKey>,
    /// When an event last added, removed (a move is both) or changed the propagation of a mount
    /// here: a kernel fact read across such a moment may show either side of it.
    pub added_at: Option<u64>,
    pub removed_at: Option<u64>,
    pub propagation_at: Option<u64>,
    /// Command names seen acting in this namespace (bounded): who may have made its mounts
    /// when they predate the capture.
    pub comms: HashSet<String>,
    /// The last command noted (see `note_comm`).
    pub last_comm: String,
}

impl Ns {
    /// The stack of mounts at `mountpoint`, made if new.
    pub fn index_path(&mut self, mountpoint: Arc<str>) -> &mut Keys {
        self.path_lens.note(mountpoint.len());
        self.by_path.entry(mountpoint).or_default()
    }
}

/// The lengths (mod 256) of every mountpoint a namespace ever indexed, never cleared: a path
/// prefix of any other length is no mountpoint there, so `lookup`'s walk skips hashing it (a
/// container path has six prefixes; a namespace's mountpoints a few dozen lengths).
#[derive(Debug, Default)]
pub(super) struct PathLens([u64; 4]);

impl PathLens {
    fn note(&mut self, len: usize) {
        self.0[(len >> 6) & 3] |= 1 << (len & 63);
    }

    pub fn may_hold(&self, len: usize) -> bool {
        self.0[(len >> 6) & 3] & (1 << (len & 63)) != 0
    }
}

/// A namespace copy that waits (see `Engine::copy_ns`): what making it needs, as it was at the
/// call.
#[derive(Debug)]
pub(super) struct PendingCopy {
    pub dst: u64,
    pub src: u64,
    pub user: bool,
    pub ev: Ev,
    /// The call's time (see `Engine::event_ts`).
    pub ts: Option<u64>,
}

#[derive(Clone, Debug)]
pub(super) enum FdObj {
    FsCtx { fstype: String, source: String },
    Detached(Vec<Seed>),
    Attached(MKey, String),
}

#[derive(Debug, Default)]
pub(super) struct Proc {
    pub comm: String,
    pub ns: u64,
    pub cgroup: u64,
    /// chroot prefix, "" for none.
    pub root: String,
    pub fds: HashMap<i32, FdObj>,
    /// The event that last moved this process to another namespace.
    pub ns_change: Option<Ev>,
    /// Events of its own were seen: a late clone/fork record must not move it any more.
    pub own_events: bool,
    /// (namespace, `Engine::ns_removals` then): `comm` is in that namespace's `comms` already,
    /// so its next events there skip the namespace lookup (most events are one process's
    /// unlinks in a row).
    pub comm_noted: Option<(u64, u64)>,
}

#[derive(Debug)]
pub(super) struct Family {
    pub origin: Option<Ev>,
    pub origin_ns: u64,
    /// Held in the engine's `PathSet`, as its mounts' strings are: a family costs no string
    /// allocation (a tenth of replay's allocations were these three).
    pub path: Arc<str>,
    pub source: Arc<str>,
    pub fstype: Arc<str>,
    pub members: HashSet<MKey>,
    pub container_looking: bool,
}

/// A mount to be created (a copy of `from`, or a new filesystem).
#[derive(Clone, Debug)]
pub(super) struct Seed {
    pub rel: String,
    pub parent: Option<usize>,
    pub root: Arc<str>,
    pub source: Arc<str>,
    pub fstype: Arc<str>,
    pub fs: u64,
    pub shared: Option<u32>,
    pub master: Option<u32>,
    pub unbindable: bool,
    pub family: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CloneMode {
    /// clone_mnt(old, 0): peer of a shared original, slave of the same master.
    Keep,
    /// CL_SHARED_TO_SLAVE (namespace copy across a user namespace).
    SharedToSlave,
}

/// A change to a namespace's mounts besides an insertion or removal (see [`Ns::added_at`]).
#[derive(Clone, Copy)]
pub(super) enum Change {
    /// A mount moved: what a listing shows there may be from before or after.
    Move,
    Propagation,
}

/// Why a mount went away, for resolutions.
#[derive(Clone, Debug)]
pub(super) enum Cause {
    Umount(Ev),
    Unlink(Ev),
    NsDeath(Option<Ev>),
    Fact,
}

impl Engine {
    pub(super) fn m(&self, k: MKey) -> &Mount {
        self.mounts[k as usize].as_ref().expect("live mount key")
    }
    pub(super) fn mm(&mut self, k: MKey) -> &mut Mount {
        self.mounts[k as usize].as_mut().expect("live mount key")
    }
    pub(super) fn alive(&self, k: MKey) -> bool {
        self.mounts.get(k as usize).is_some_and(|m| m.is_some())
    }

    pub(super) fn new_group(&mut self) -> u32 {
        self.next_group += 1;
        self.next_group
    }

    pub(super) fn new_fs(&mut self) -> u64 {
        self.next_fs += 1;
        self.next_fs
    }

    pub(super) fn new_family(
        &mut self,
        origin: Option<Ev>,
        ns: u64,
        path: Arc<str>,
        source: Arc<str>,
        fstype: Arc<str>,
    ) -> u32 {
        let container_looking = self.looks_container(&path, &source, &fstype);
        let f = Family {
            origin,
            origin_ns: ns,
            path,
            source,
            fstype,
            members: HashSet::default(),
            container_looking,
        };
        if let Some(i) = self.fam_free.pop() {
            self.families[i as usize] = Some(f);
            i
        } else {
            self.families.push(Some(f));
            (self.families.len() - 1) as u32
        }
    }

    /// The visible mount whose mountpoint is exactly `path` (the top of the stack there).
    pub(super) fn mount_at(&self, ns: u64, path: &str) -> Option<MKey> {
        let k = self.lookup(ns, path)?;
        (&*self.m(k).mountpoint == path).then_some(k)
    }

    /// The mount `path` lives on, resolved top-down like the kernel's path walk: at each
    /// prefix, only a child of the mount reached so far counts, then whatever is stacked on it.
    pub(super) fn lookup(&self, ns: u64, path: &str) -> Option<MKey> {
        let n = self.ns.get(&ns)?;
        let climb = |mut c: MKey, p: &str| -> MKey {
            if let Some(v) = n.by_path.get(p) {
                for _ in 0..v.len() {
                    match v.iter().find(|&&x| x != c && self.m(x).parent == Some(c)) {
                        Some(&x) => c = x,
                        None => break,
                    }
                }
            }
            c
        };
        let mut cur = climb(n.root?, "/");
        if path == "/" {
            return Some(cur);
        }
        let mut end = 0;
        let b = path.as_bytes();
        while end < b.len() {
            end += 1;
            while end < b.len() && b[end] != b'/' {
                end += 1;
            }
            let p = &path[..end];
            if n.path_lens.may_hold(end)
                && let Some(v) = n.by_path.get(p)
                && let Some(&c) = v.iter().find(|&&x| self.m(x).parent == Some(cur))
            {
                cur = climb(c, p);
            }
        }
        Some(cur)
    }

    /// Dentry (fs, path inside fs) of `path` as resolved on mount `k`.
    pub(super) fn dentry_of(&self, k: MKey, path: &str) -> Option<Dentry> {
        let m = self.m(k);
        let rel = strip(path, &m.mountpoint)?;
        // The mount's own root (a mount at its parent's root) needs no new string.
        let p = if rel.is_empty() {
            m.root.clone()
        } else {
            self.paths.join(&m.root, rel)
        };
        Some((m.fs, Interned(p)))
    }

    /// Inserts a mount into the slab and every index. `below` tucks it under an existing stack.
    pub(super) fn insert_mount(&mut self, mut m: Mount) -> MKey {
        m.dentry = m.parent.and_then(|p| self.dentry_of(p, &m.mountpoint));
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.mounts.push(None);
                (self.mounts.len() - 1) as MKey
            }
        };
        if let Some(p) = m.parent {
            self.mm(p).children.push(key);
        }
        if let Some(g) = m.shared {
            self.peers.entry(g).or_default().push(key);
        }
        if let Some(g) = m.master {
            self.slaves.entry(g).or_default().push(key);
        }
        if let Some(d) = &m.dentry {
            self.mp_index.entry(d.clone()).or_default().push(key);
        }
        count_name(&mut self.mp_base, basename(&m.mountpoint));
        if let Some(b) = root_base(&m) {
            count_name(&mut self.mp_base, b);
        }
        if &*m.fstype == "nsfs"
            && let Some(inum) = nsfs_mnt_inum(&m.root)
        {
            *self.nsfs_pins.entry(inum).or_default() += 1;
        }
        if let Some(f) = self
            .families
            .get_mut(m.family as usize)
            .and_then(|f| f.as_mut())
        {
            f.members.insert(key);
        }
        let ns = self.ns.entry(m.ns).or_default();
        ns.index_path(m.mountpoint.clone()).push(key);
        ns.mounts += 1;
        ns.added_at = self.event_ts.or(ns.added_at);
        if m.parent.is_none() && ns.root.is_none() {
            ns.root = Some(key);
        }
        self.live_mounts += 1;
        self.mounts[key as usize] = Some(m);
        key
    }

    /// Removes one mount from every index (its children must be gone or are orphaned).
    pub(super) fn remove_mount(&mut self, k: MKey, cause: &Cause) {
        self.leave_group(k);
        let Some(m) = self.mounts[k as usize].take() else {
            return;
        };
        self.free.push(k);
        self.live_mounts -= 1;
        if let Some(p) = m.parent
            && let Some(Some(pm)) = self.mounts.get_mut(p as usize)
        {
            pm.children.retain(|&mut c| c != k);
        }
        for &c in &m.children {
            if let Some(Some(cm)) = self.mounts.get_mut(c as usize) {
                cm.parent = None;
            }
        }
        if let Some(d) = &m.dentry
            && let Some(v) = self.mp_index.get_mut(d)
        {
            v.retain(|&mut x| x != k);
            if v.is_empty() {
                self.mp_index.remove(d);
            }
        }
        for b in [Some(basename(&m.mountpoint)), root_base(&m)]
            .into_iter()
            .flatten()
        {
            if let Some(c) = self.mp_base.get_mut(b) {
                *c -= 1;
                if *c == 0 {
                    self.mp_base.remove(b);
                }
            }
        }
        if &*m.fstype == "nsfs"
            && let Some(inum) = nsfs_mnt_inum(&m.root)
            && let Some(c) = self.nsfs_pins.get_mut(&inum)
        {
            *c -= 1;
            if *c == 0 {
                self.nsfs_pins.remove(&inum);
                self.unpinned.push(inum);
            }
        }
        if let Some(Some(f)) = self.families.get_mut(m.family as usize) {
            f.members.remove(&k);
            self.touched_families.push(m.family);
        }
        if let Some(ns) = self.ns.get_mut(&m.ns) {
            if let Some(v) = ns.by_path.get_mut(&m.mountpoint) {
                v.retain(|&mut x| x != k);
                if v.is_empty() {
                    ns.by_path.remove(&m.mountpoint);
                }
            }
            ns.mounts -= 1;
            if ns.root == Some(k) {
                ns.root = None;
            }
            ns.removed_at = self.event_ts.or(ns.removed_at);
        }
        self.on_mount_gone(k, &m, cause);
    }

    /// Removes `k` and its subtree, children first.
    pub(super) fn remove_subtree(&mut self, k: MKey, cause: &Cause) {
        let order = self.subtree(k);
        for &x in order.iter().rev() {
            self.remove_mount(x, cause);
        }
    }

    /// How many parents `k` has above it.
    pub(super) fn depth(&self, k: MKey) -> usize {
        let mut d = 0;
        let mut cur = self.m(k).parent;
        while let Some(p) = cur
            && d <= self.live_mounts
        {
            d += 1;
            cur = self.m(p).parent;
        }
        d
    }

    /// `k` and its descendants, parents before children.
    pub(super) fn subtree(&self, k: MKey) -> Vec<MKey> {
        // Room for a typical subtree up front rather than growing from one.
        let mut out = Vec::with_capacity(16);
        out.push(k);
        let mut i = 0;
        // Bounded by the live mount count: a modelling bug must not turn into unbounded memory.
        while i < out.len() && out.len() <= self.live_mounts + 1 {
            let m = self.m(out[i]);
            out.extend(m.children.iter().copied());
            i += 1;
        }
        out
    }

    // ---- propagation types -------------------------------------------------------------------

    fn remove_from(map: &mut HashMap<u32, Keys>, g: u32, k: MKey) -> bool {
        if let Some(v) = map.get_mut(&g) {
            v.retain(|&mut x| x != k);
            if v.is_empty() {
                map.remove(&g);
                return true;
            }
        }
        false
    }

    /// The group lost its last member: its slaves now receive from the departing mount's master.
    fn hand_over_slaves(&mut self, g: u32, to: Option<u32>) {
        if let Some(sl) = self.slaves.remove(&g) {
            for x in sl {
                if let Some(Some(xm)) = self.mounts.get_mut(x as usize) {
                    xm.master = to;
                }
                if let Some(t) = to {
                    self.slaves.entry(t).or_default().push(x);
                }
            }
        }
    }

    /// Leaves peer group and master (what umount and MS_PRIVATE do).
    pub(super) fn leave_group(&mut self, k: MKey) {
        let (shared, master) = match self.mounts.get(k as usize) {
            Some(Some(m)) => (m.shared, m.master),
            _ => return,
        };
        if let Some(g) = shared
            && Self::remove_from(&mut self.peers, g, k)
        {
            self.hand_over_slaves(g, master);
        }
        if let Some(mm) = master {
            Self::remove_from(&mut self.slaves, mm, k);
        }
        let m = self.mm(k);
        m.shared = None;
        m.master = None;
    }

    pub(super) fn make_private(&mut self, k: MKey) {
        self.leave_group(k);
        self.mm(k).unbindable = false;
    }

    pub(super) fn make_unbindable(&mut self, k: MKey) {
        self.leave_group(k);
        self.mm(k).unbindable = true;
    }

    pub(super) fn make_shared(&mut self, k: MKey) {
        if self.m(k).shared.is_none() {
            let g = self.new_group();
            self.peers.entry(g).or_default().push(k);
            self.mm(k).shared = Some(g);
        }
        self.mm(k).unbindable = false;
    }

    pub(super) fn make_slave(&mut self, k: MKey) {
        let (shared, master) = (self.m(k).shared, self.m(k).master);
        if let Some(g) = shared {
            let last = Self::remove_from(&mut self.peers, g, k);
            if last {
                // No peer to follow: keep the old master (or become private).
                self.hand_over_slaves(g, master);
            } else {
                if let Some(mm) = master {
                    Self::remove_from(&mut self.slaves, mm, k);
                }
                self.slaves.entry(g).or_default().push(k);
                self.mm(k).master = Some(g);
            }
            self.mm(k).shared = None;
        }
        // MS_SLAVE keeps MNT_UNBINDABLE (change_mnt_propagation only clears it otherwise).
    }

    /// Applies MS_SHARED/SLAVE/PRIVATE/UNBINDABLE to `k` (and its subtree with MS_REC).
    pub(super) fn change_propagation(&mut self, k: MKey, flags: u64, rec: bool, ev: &Ev) {
        use crate::uapi::*;
        let keys = if rec { self.subtree(k) } else { vec![k] };
        self.note_change(self.m(k).ns, Change::Propagation);
        for x in keys {
            if flags & MS_SHARED != 0 {
                self.make_shared(x);
            } else if flags & MS_SLAVE != 0 {
                self.make_slave(x);
            } else if flags & MS_PRIVATE != 0 {
                self.make_private(x);
            } else if flags & MS_UNBINDABLE != 0 {
                self.make_unbindable(x);
            }
            self.mm(x).cut_ev = Some(ev.clone());
            self.dirty.push(x);
            let kids = self.m(x).children.clone();
            self.dirty.extend(kids);
        }
    }

    // ---- copies ------------------------------------------------------------------------------

    pub(super) fn seed_of(
        &self,
        k: MKey,
        rel: String,
        parent: Option<usize>,
        mode: CloneMode,
    ) -> Seed {
        let m = self.m(k);
        let (shared, master) = match mode {
            CloneMode::Keep => (m.shared, m.master),
            CloneMode::SharedToSlave => match m.shared {
                Some(g) => (None, Some(g)),
                None => (None, m.master),
            },
        };
        Seed {
            rel,
            parent,
            root: m.root.clone(),
            source: m.source.clone(),
            fstype: m.fstype.clone(),
            fs: m.fs,
            shared,
            master,
            // Measured on 6.18: copies (namespace copy included) do not inherit unbindable.
            unbindable: false,
            family: m.family,
        }
    }

    /// Seeds copying what is visible at `path` (bind), with submounts when `rec` (rbind,
    /// skipping unbindable ones and what is under them).
    pub(super) fn seeds_at(
        &self,
        ns: u64,
        path: &str,
        rec: bool,
        skip_unbindable: bool,
    ) -> Option<Vec<Seed>> {
        let src = self.lookup(ns, path)?;
        let sm = self.m(src);
        let rel_in = strip(path, &sm.mountpoint)?.to_string();
        let mut top = self.seed_of(src, String::new(), None, CloneMode::Keep);
        top.root = self.paths.join(&sm.root, &rel_in);
        let mut out = vec![top];
        if !rec {
            return Some(out);
        }
        // (mount, index of its seed)
        let mut stack: Vec<(MKey, usize)> = vec![(src, 0)];
        while let Some((k, idx)) = stack.pop() {
            for &c in &self.m(k).children {
                let cm = self.m(c);
                if skip_unbindable && cm.unbindable {
                    continue;
                }
                let Some(rel) = strip(&cm.mountpoint, path) else {
                    continue;
                };
                if k == src && rel.is_empty() && cm.parent == Some(src) && path == &*cm.mountpoint {
                    // A mount stacked on the bind source itself is not part of the copy.
                    continue;
                }
                let s = self.seed_of(c, rel.to_string(), Some(idx), CloneMode::Keep);
                out.push(s);
                stack.push((c, out.len() - 1));
            }
        }
        Some(out)
    }

    /// Creates the seeds as mounts under `parent` at `at` in `ns`. Returns keys in seed order.
    pub(super) fn instantiate(
        &mut self,
        ns: u64,
        parent: Option<MKey>,
        at: &Arc<str>,
        seeds: &[Seed],
        ev: Option<&Ev>,
    ) -> Vec<MKey> {
        let mut keys: Vec<MKey> = Vec::with_capacity(seeds.len());
        for s in seeds {
            let p = match s.parent {
                Some(i) => Some(keys[i]),
                None => parent,
            };
            // A seed at `at` itself (every mount of a namespace copy) shares its string.
            let mountpoint = if s.rel.is_empty() {
                at.clone()
            } else {
                self.paths.join(at, &s.rel)
            };
            let m = Mount {
                ns,
                parent: p,
                children: Keys::new(),
                mountpoint,
                root: s.root.clone(),
                source: s.source.clone(),
                fstype: s.fstype.clone(),
                fs: s.fs,
                kernel_id: None,
                shared: s.shared,
                master: s.master,
                unbindable: s.unbindable,
                family: s.family,
                copy_ev: ev.cloned(),
                copy_prop: (s.shared, s.master, s.unbindable),
                cut_ev: None,
                dentry: None,
            };
            let k = self.insert_mount(m);
            keys.push(k);
            self.dirty.push(k);
        }
        keys
    }

    /// Attach propagation: after a tree (`keys`, root first) was attached under `dest` at `at`,
    /// copy it into every peer and slave of `dest` (kernel propagate_mnt). A `moved` tree was
    /// already in the namespace, so its own mounts receive the propagation too.
    pub(super) fn propagate_attach(
        &mut self,
        dest: MKey,
        at: &str,
        keys: &[MKey],
        moved: bool,
        ev: &Ev,
    ) {
        let Some(g) = self.m(dest).shared else {
            return;
        };
        // Like the kernel, give the tree its groups now but make it shared only afterwards: a
        // moved slave that receives this propagation receives it as a plain slave.
        let mut pending: Vec<(MKey, u32)> = Vec::new();
        for &k in keys {
            if self.m(k).shared.is_none() {
                let grp = self.new_group();
                pending.push((k, grp));
            }
        }
        if let Some(dentry) = self.dentry_of(dest, at) {
            self.propagate_tree(g, dest, &dentry, keys, &pending, moved, ev);
        }
        for (k, grp) in pending {
            if self.alive(k) && self.m(k).shared.is_none() {
                self.peers.entry(grp).or_default().push(k);
                let m = self.mm(k);
                m.shared = Some(grp);
                m.unbindable = false;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn propagate_tree(
        &mut self,
        g: u32,
        dest: MKey,
        dentry: &Dentry,
        keys: &[MKey],
        pending: &[(MKey, u32)],
        moved: bool,
        ev: &Ev,
    ) {
        let base = self.m(keys[0]).mountpoint.clone();
        let template: Vec<Seed> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let rel = strip(&self.m(k).mountpoint, &base)
                    .unwrap_or("")
                    .to_string();
                let parent = self
                    .m(k)
                    .parent
                    .and_then(|p| keys[..i].iter().position(|&x| x == p));
                let mut s = self.seed_of(k, rel, parent, CloneMode::Keep);
                if i == 0 {
                    s.parent = None;
                }
                s
            })
            .collect();
        // Everything created by this propagation: never a receiver of it (IS_MNT_NEW).
        let mut newset: HashSet<MKey> = if moved {
            HashSet::default()
        } else {
            keys.iter().copied().collect()
        };
        let src_groups: Vec<Option<u32>> = keys
            .iter()
            .map(|&k| {
                self.m(k)
                    .shared
                    .or_else(|| pending.iter().find(|p| p.0 == k).map(|p| p.1))
            })
            .collect();
        let src_masters: Vec<Option<u32>> = keys.iter().map(|&k| self.m(k).master).collect();
        let peers = self.peers.get(&g).cloned().unwrap_or_default();
        for p in peers {
            if p == dest || newset.contains(&p) {
                continue;
            }
            self.place(
                p,
                dentry,
                &template,
                &src_groups,
                &src_masters,
                &mut newset,
                ev,
            );
        }
        let mut visited = HashSet::default();
        visited.insert(g);
        self.walk_slaves(
            g,
            &src_groups,
            dentry,
            &template,
            &mut newset,
            &mut visited,
            ev,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_slaves(
        &mut self,
        g: u32,
        src: &[Option<u32>],
        dentry: &Dentry,
        template: &[Seed],
        newset: &mut HashSet<MKey>,
        visited: &mut HashSet<u32>,
        ev: &Ev,
    ) {
        let slaves = self.slaves.get(&g).cloned().unwrap_or_default();
        let none: Vec<Option<u32>> = vec![None; template.len()];
        for x in slaves {
            if newset.contains(&x) || !self.alive(x) {
                continue;
            }
            match self.m(x).shared {
                Some(h) => {
                    if !visited.insert(h) {
                        continue;
                    }
                    let newg: Vec<Option<u32>> =
                        template.iter().map(|_| Some(self.new_group())).collect();
                    let mut placed = false;
                    for y in self.peers.get(&h).cloned().unwrap_or_default() {
                        if newset.contains(&y) {
                            continue;
                        }
                        placed |= self.place(y, dentry, template, &newg, src, newset, ev);
                    }
                    let next = if placed { &newg } else { src };
                    self.walk_slaves(h, next, dentry, template, newset, visited, ev);
                }
                None => {
                    self.place(x, dentry, template, &none, src, newset, ev);
                }
            }
        }
    }

    /// One propagated copy of `template` onto receiver `r` at `dentry`, tucked under anything
    /// already mounted there. Returns false when the dentry is outside `r`'s root.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        r: MKey,
        dentry: &Dentry,
        template: &[Seed],
        shared: &[Option<u32>],
        master: &[Option<u32>],
        newset: &mut HashSet<MKey>,
        ev: &Ev,
    ) -> bool {
        let rm = self.m(r);
        if rm.fs != dentry.0 {
            return false;
        }
        let Some(rel) = strip(&dentry.1, &rm.root) else {
            return false;
        };
        let path = self.paths.join(&rm.mountpoint, rel);
        let ns = rm.ns;
        let existing: Vec<MKey> = rm
            .children
            .iter()
            .copied()
            .filter(|&c| *self.m(c).mountpoint == *path)
            .collect();
        let seeds: Vec<Seed> = template
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                s.shared = shared[i];
                s.master = master[i];
                s
            })
            .collect();
        let keys = self.instantiate(ns, Some(r), &path, &seeds, Some(ev));
        let top = keys[0];
        newset.extend(keys.iter().copied());
        for e in existing {
            self.reparent(e, top);
        }
        // Keep the by_path stack bottom-first: the tucked copy goes under what was there.
        if let Some(n) = self.ns.get_mut(&ns)
            && let Some(v) = n.by_path.get_mut(&path)
            && v.len() > 1
        {
            v.retain(|&mut x| x != top);
            let pos = v
                .iter()
                .position(|&x| {
                    self.mounts[x as usize]
                        .as_ref()
                        .is_some_and(|m| m.parent == Some(top))
                })
                .unwrap_or(v.len());
            v.insert(pos, top);
        }
        true
    }

    /// Moves mount `e` to hang under `p` at the same mountpoint path.
    pub(super) fn reparent(&mut self, e: MKey, p: MKey) {
        if let Some(old) = self.m(e).parent {
            self.mm(old).children.retain(|&mut c| c != e);
        }
        self.mm(p).children.push(e);
        let old_d = self.m(e).dentry.clone();
        if let Some(d) = &old_d
            && let Some(v) = self.mp_index.get_mut(d)
        {
            v.retain(|&mut x| x != e);
            if v.is_empty() {
                self.mp_index.remove(d);
            }
        }
        let mp = self.m(e).mountpoint.clone();
        let nd = self.dentry_of(p, &mp);
        if let Some(d) = &nd {
            self.mp_index.entry(d.clone()).or_default().push(e);
        }
        let m = self.mm(e);
        m.parent = Some(p);
        m.dentry = nd;
        let ns = m.ns;
        self.note_change(ns, Change::Move);
    }

    /// Records that the event being applied changed `ns`'s mounts (see [`Ns::added_at`]).
    pub(super) fn note_change(&mut self, ns: u64, change: Change) {
        if let Some(t) = self.event_ts
            && let Some(n) = self.ns.get_mut(&ns)
        {
            match change {
                Change::Move => {
                    n.added_at = Some(t);
                    n.removed_at = Some(t);
                }
                Change::Propagation => n.propagation_at = Some(t),
            }
        }
    }

    /// Every mount that receives propagation from `p` (peers and slaves, transitively).
    pub(super) fn prop_tree(&self, p: MKey) -> Vec<MKey> {
        let mut out = Vec::new();
        let Some(g) = self.m(p).shared else {
            return out;
        };
        let mut groups = vec![g];
        let mut seen: HashSet<u32> = HashSet::default();
        seen.insert(g);
        while let Some(h) = groups.pop() {
            if let Some(v) = self.peers.get(&h) {
                out.extend(v.iter().copied().filter(|&x| x != p));
            }
            if let Some(v) = self.slaves.get(&h) {
                for &x in v {
                    match self.m(x).shared {
                        Some(h2) => {
                            if seen.insert(h2) {
                                groups.push(h2);
                            }
                        }
                        None => out.push(x),
                    }
                }
            }
        }
        out
    }

    /// The mounts an umount of `set` (a closed subtree, parents first) takes with it by
    /// propagation, as Linux >= 6.16 decides (Documentation/filesystems/propagate_umount.txt):
    /// the candidates are the children, on every mount that receives propagation from a victim's
    /// parent, at that victim's mountpoint; then every candidate with a submount strictly inside
    /// it that is not going too is dropped, until none is left ("maximal non-shifting subset").
    /// A candidate's submounts that only overmount its root do not keep it: they are reparented
    /// (see [`State::reparent_survivors`]).
    pub(super) fn umount_propagation(&self, set: &[MKey]) -> Vec<MKey> {
        let inset: HashSet<MKey> = set.iter().copied().collect();
        let mut cands: Vec<MKey> = Vec::new();
        let mut candset: HashSet<MKey> = HashSet::default();
        for &u in set {
            let um = self.m(u);
            let Some(p) = um.parent else { continue };
            let Some(d) = self.dentry_of(p, &um.mountpoint) else {
                continue;
            };
            for r in self.prop_tree(p) {
                let rm = self.m(r);
                if rm.fs != d.0 {
                    continue;
                }
                let Some(rel) = strip(&d.1, &rm.root) else {
                    continue;
                };
                let path = join(&rm.mountpoint, rel);
                // Tucking keeps one child of r per mountpoint: the bottom of the stack there.
                let c = rm
                    .children
                    .iter()
                    .copied()
                    .find(|&x| *self.m(x).mountpoint == *path);
                if let Some(c) = c
                    && !inset.contains(&c)
                    && candset.insert(c)
                {
                    cands.push(c);
                }
            }
        }
        loop {
            let forbidden: Vec<MKey> = cands
                .iter()
                .copied()
                .filter(|&x| {
                    let xm = self.m(x);
                    xm.children.iter().any(|&c| {
                        self.m(c).mountpoint != xm.mountpoint
                            && self
                                .subtree(c)
                                .iter()
                                .any(|y| !inset.contains(y) && !candset.contains(y))
                    })
                })
                .collect();
            if forbidden.is_empty() {
                break;
            }
            for x in forbidden {
                candset.remove(&x);
            }
            cands.retain(|x| candset.contains(x));
        }
        cands
    }

    /// After `gone` is unmounted: its submounts that stay (they only overmounted a root in it)
    /// drop to where the bottom of their stack is attached to a surviving mount.
    pub(super) fn reparent_survivors(&mut self, gone: &HashSet<MKey>) {
        let mut moves = Vec::new();
        for &x in gone {
            for &c in &self.m(x).children {
                if gone.contains(&c) {
                    continue;
                }
                let mut to = self.m(x).parent;
                while let Some(t) = to
                    && gone.contains(&t)
                {
                    to = self.m(t).parent;
                }
                if let Some(t) = to {
                    moves.push((c, t));
                }
            }
        }
        for (c, t) in moves {
            self.reparent(c, t);
        }
    }

    /// Every mount of a namespace, parents first.
    pub(super) fn ns_mounts(&self, ns: u64) -> Vec<MKey> {
        let Some(n) = self.ns.get(&ns) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n.mounts);
        if let Some(r) = n.root {
            out = self.subtree(r);
        }
        if out.len() < n.mounts {
            // Orphans (parent outside the namespace): collect them too.
            let have: HashSet<MKey> = out.iter().copied().collect();
            let mut rest: Vec<MKey> = n
                .by_path
                .values()
                .flatten()
                .copied()
                .filter(|k| !have.contains(k))
                .collect();
            rest.sort_unstable();
            for k in rest {
                if !out.contains(&k) {
                    out.extend(self.subtree(k).into_iter().filter(|x| !have.contains(x)));
                }
            }
        }
        out
    }
}

/// One more mount named `name` (looked up first: the name is usually known already).
pub(super) fn count_name(names: &mut HashMap<String, u32>, name: &str) {
    match names.get_mut(name) {
        Some(c) => *c += 1,
        None => {
            names.insert(name.to_string(), 1);
        }
    }
}

/// The basename of a bind mount's root directory: removing that directory matters to the mount
/// (its root is then a deleted dentry), so the unlink rule must not skip the name.
pub(super) fn root_base(m: &Mount) -> Option<&str> {
    (&*m.root != "/" && &*m.fstype != "nsfs").then(|| basename(&m.root))
}

/// `mnt:[4026531841]` -> 4026531841.
pub(super) fn nsfs_mnt_inum(root: &str) -> Option<u32> {
    let r = root.trim_start_matches('/');
    r.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}
