//! The kernel's rules, one handler per record kind and per action.

use super::{HashMap, HashSet};
use std::sync::Arc;

use super::Engine;
use super::paths::{basename, join, resolve, strip};
use super::state::{
    Cause, Change, CloneMode, Detail, EvInfo, FdObj, Keys, MKey, Mount, Ns, PendingCopy, Proc,
    Seed, count_name, nsfs_mnt_inum,
};
use crate::model::{Action, Event, MntNs, MountInfo, NamespaceListing, Snapshot};
use crate::uapi::*;

/// A family id meaning "a new filesystem: create its family when it is attached".
pub(super) const NEW_FAMILY: u32 = u32::MAX;

impl Engine {
    fn ensure_ns(&mut self, ns: MntNs) -> &mut Ns {
        let n = self.ns.entry(ns.id).or_default();
        if n.inum == 0 {
            n.inum = ns.inum;
        }
        n
    }

    fn fs_for_dev(&mut self, major: u32, minor: u32) -> u64 {
        if let Some(&f) = self.dev_fs.get(&(major, minor)) {
            return f;
        }
        let f = self.new_fs();
        self.dev_fs.insert((major, minor), f);
        f
    }

    fn kgroup(&mut self, kg: Option<u32>) -> Option<u32> {
        let kg = kg?;
        if let Some(&g) = self.kgroups.get(&kg) {
            return Some(g);
        }
        let g = self.new_group();
        self.kgroups.insert(kg, g);
        Some(g)
    }

    /// Inserts mounts as the kernel listed them (snapshot, or what a fact shows and the model
    /// lacks). `fam_by_obj` links the same (filesystem, root) across namespaces into one family:
    /// a mount in B showing the same object as one in A is a copy of it. `copy_ev` is the
    /// lineage of mounts that join an existing family.
    fn insert_kernel_mounts(
        &mut self,
        ns: u64,
        mounts: &[MountInfo],
        fam_by_obj: &mut HashMap<(u64, String), u32>,
        fact: Option<&FactCtx>,
    ) -> Vec<MKey> {
        let mut by_id: HashMap<u64, MKey> = HashMap::default();
        let mut added = Vec::with_capacity(mounts.len());
        for i in kernel_order(mounts) {
            let mi = &mounts[i];
            let mountpoint = resolve("", None, mi.mountpoint.as_str());
            let parent = by_id
                .get(&mi.parent_id)
                .copied()
                .or_else(|| self.by_kernel_id(ns, mi.parent_id))
                .or_else(|| {
                    if self.ns.get(&ns).is_some_and(|n| n.root.is_some()) {
                        self.lookup(ns, &mountpoint)
                    } else {
                        None
                    }
                });
            let fs = self.fs_for_dev(mi.dev_major, mi.dev_minor);
            let root = if mi.fstype.as_str() == "nsfs" {
                mi.root.as_str().to_string()
            } else {
                resolve("", None, mi.root.as_str())
            };
            let (fam, lineage) = match fam_by_obj.get(&(fs, root.clone())) {
                Some(&f)
                    if self
                        .families
                        .get(f as usize)
                        .is_some_and(|x| x.as_ref().is_some_and(|x| x.origin_ns != ns)) =>
                {
                    // A copy: made by the namespace copy when the source namespace has a mount
                    // there, else by the unplaced bind the fact follows.
                    let ev = fact.and_then(|c| {
                        let from_copy = c
                            .from
                            .is_some_and(|src| self.mount_at(src, &mountpoint).is_some());
                        if from_copy {
                            c.created.clone().or_else(|| c.bind.clone())
                        } else {
                            c.bind.clone().or_else(|| c.created.clone())
                        }
                    });
                    (f, ev)
                }
                Some(&f) if self.families.get(f as usize).is_some_and(|x| x.is_some()) => (f, None),
                _ => {
                    // Seen first in a fact of some other namespace: whose it is is unknown, so
                    // it is nobody's to lose (never a verdict unless the host shows it).
                    let owner = if fact.is_some() && ns != self.host_ns && self.host_ns != 0 {
                        self.host_ns
                    } else {
                        ns
                    };
                    let f = self.new_family(
                        None,
                        owner,
                        self.paths.get(&mountpoint),
                        self.paths.get(mi.source.as_str()),
                        self.paths.get(mi.fstype.as_str()),
                    );
                    fam_by_obj.insert((fs, root.clone()), f);
                    (f, None)
                }
            };
            // Found first as a pivoted container's root "/": the namespace where it hangs on
            // a real path (the runtime's) owns it and names it.
            if fact.is_none()
                && mountpoint != "/"
                && self.families[fam as usize]
                    .as_ref()
                    .is_some_and(|x| x.origin.is_none() && &*x.path == "/")
            {
                let looks =
                    self.looks_container(&mountpoint, mi.source.as_str(), mi.fstype.as_str());
                let path = self.paths.get(&mountpoint);
                if let Some(Some(x)) = self.families.get_mut(fam as usize) {
                    x.path = path;
                    x.origin_ns = ns;
                    x.container_looking |= looks;
                }
            }
            let shared = self.kgroup(mi.propagation.shared);
            let master = self.kgroup(mi.propagation.master);
            let m = Mount {
                ns,
                parent,
                children: Keys::new(),
                mountpoint: self.paths.get(&mountpoint),
                root: self.paths.get(&root),
                source: self.paths.get(mi.source.as_str()),
                fstype: self.paths.get(mi.fstype.as_str()),
                fs,
                kernel_id: Some(mi.mnt_id),
                shared,
                master,
                unbindable: mi.propagation.unbindable,
                family: fam,
                copy_ev: lineage,
                copy_prop: (shared, master, mi.propagation.unbindable),
                cut_ev: None,
                dentry: None,
            };
            let k = self.insert_mount(m);
            self.dirty.push(k);
            by_id.insert(mi.mnt_id, k);
            added.push(k);
        }
        added
    }

    /// The model mount of `ns` the kernel knows as `id`.
    fn by_kernel_id(&self, ns: u64, id: u64) -> Option<MKey> {
        if id == 0 {
            return None;
        }
        let n = self.ns.get(&ns)?;
        n.by_path
            .values()
            .flatten()
            .copied()
            .find(|&k| self.m(k).kernel_id == Some(id))
    }

    /// (filesystem, root) -> family of every live mount, preferring families that originate in
    /// the host, so a fact's mounts are linked to what they copy.
    fn family_index(&self) -> HashMap<(u64, String), u32> {
        let mut idx: HashMap<(u64, String), u32> = HashMap::default();
        for m in self.mounts.iter().flatten() {
            let Some(Some(f)) = self.families.get(m.family as usize) else {
                continue;
            };
            let key = (m.fs, m.root.to_string());
            let better = match idx.get(&key) {
                None => true,
                Some(&old) => {
                    let old_host = self.families[old as usize]
                        .as_ref()
                        .is_some_and(|o| o.origin_ns == self.host_ns);
                    !old_host && f.origin_ns == self.host_ns
                }
            };
            if better {
                idx.insert(key, m.family);
            }
        }
        idx
    }

    pub(super) fn apply_snapshot(&mut self, s: &Snapshot) {
        self.host_ns = s.host_ns.id;
        let mut order: Vec<&crate::model::NamespaceState> = s.namespaces.iter().collect();
        // The host first, so families found in several namespaces originate there.
        order.sort_by_key(|n| n.ns.id != s.host_ns.id);
        let mut fam_by_obj = HashMap::default();
        for n in order {
            if self.ns.get(&n.ns.id).is_some_and(|x| x.mounts > 0) {
                continue;
            }
            self.ensure_ns(n.ns);
            self.insert_kernel_mounts(n.ns.id, &n.mounts, &mut fam_by_obj, None);
            for &pid in &n.pids {
                self.procs.entry(pid).or_insert_with(|| Proc {
                    ns: n.ns.id,
                    ..Default::default()
                });
                self.ns.entry(n.ns.id).or_default().members.insert(pid);
            }
        }
        for p in &s.processes {
            if let Some(old) = self.procs.get(&p.pid).map(|x| x.ns)
                && old != p.mnt_ns.id
                && let Some(n) = self.ns.get_mut(&old)
            {
                n.members.remove(&p.pid);
            }
            let e = self.procs.entry(p.pid).or_default();
            e.comm = p.comm.as_str().to_string();
            e.ns = p.mnt_ns.id;
            let host = s.host_ns.id;
            let n = self.ensure_ns(p.mnt_ns);
            n.members.insert(p.pid);
            note_comm(n, p.comm.as_str());
            if runtime_init_comm(p.comm.as_str()) && p.mnt_ns.id != host {
                // Caught mid-setup: the runtime's init has not exec'd the container yet.
                n.runtime = true;
                n.runtime_setup = true;
            }
        }
    }

    /// A fact is applied once every event before the end of its read has been; the listing
    /// itself may predate those made while it was read. So it adds what the model lacks only if
    /// no mount went away meanwhile (it would come back), drops what it does not list only if
    /// none was added (the listing may not show it yet), and sets propagation only if none
    /// changed. Kernel ids are always taken.
    pub(super) fn apply_pending_fact(&mut self, f: NamespaceListing) {
        self.make_pending_copies();
        let during_read = |t: Option<u64>| t.is_some_and(|t| t > f.ts_ns);
        let trust = match self.ns.get(&f.ns.id) {
            Some(n) => FactTrust {
                add: !during_read(n.removed_at),
                drop: !during_read(n.added_at),
                propagation: !during_read(n.propagation_at),
            },
            None => FactTrust {
                add: true,
                drop: true,
                propagation: true,
            },
        };
        self.apply_fact(f.ns, &f.mounts, trust);
    }

    /// A kernel fact about one namespace: adopt kernel ids and propagation for the mounts the
    /// model has, add what it lacks (linked to what they copy), and drop model mounts only where
    /// the kernel's listing would have shown them (under a mount it lists); each as `trust` allows.
    fn apply_fact(&mut self, ns: MntNs, mounts: &[MountInfo], trust: FactTrust) {
        if self.recently_dead_set.contains(&ns.id) {
            return;
        }
        let first = self.ns.get(&ns.id).is_none_or(|n| n.mounts == 0);
        let (ctx, prop_ev) = {
            let n = self.ensure_ns(ns);
            if first {
                n.members_unknown = n.members.is_empty();
            }
            (
                FactCtx {
                    created: n.created_by.clone(),
                    from: n.copied_from,
                    bind: n.unplaced_bind.clone(),
                },
                n.unplaced_prop.clone(),
            )
        };
        let mut fams = self.family_index();
        if first {
            let added = self.insert_kernel_mounts(ns.id, mounts, &mut fams, Some(&ctx));
            self.mark_cut(&added, prop_ev.as_ref());
            return;
        }
        let mut matched: HashMap<MKey, usize> = HashMap::default();
        let mut missing = Vec::new();
        for (i, mi) in mounts.iter().enumerate() {
            match self.fact_match(ns.id, mi, &matched) {
                Some(k) => {
                    matched.insert(k, i);
                }
                None => missing.push(mi.clone()),
            }
        }
        let mut changed = Vec::new();
        for (&k, &i) in &matched {
            let mi = &mounts[i];
            self.mm(k).kernel_id = Some(mi.mnt_id);
            let dev = (mi.dev_major, mi.dev_minor);
            if !self.dev_fs.contains_key(&dev) {
                let fs = self.m(k).fs;
                self.dev_fs.insert(dev, fs);
            }
            if trust.propagation && self.adopt_propagation(k, &mi.propagation) {
                changed.push(k);
            }
        }
        // Gone: a model mount the kernel would have listed (its parent is listed) but did not.
        let gone: Vec<MKey> = self
            .ns_mounts(ns.id)
            .into_iter()
            .filter(|k| !matched.contains_key(k))
            .filter(|&k| self.m(k).parent.is_some_and(|p| matched.contains_key(&p)))
            .collect();
        for k in gone {
            if trust.drop && self.alive(k) {
                self.remove_subtree(k, &Cause::Fact);
            }
        }
        self.mark_cut(&changed, prop_ev.as_ref());
        if trust.add {
            let added = self.insert_kernel_mounts(ns.id, &missing, &mut fams, Some(&ctx));
            self.mark_cut(&added, prop_ev.as_ref());
        }
    }

    /// The model mount a fact's mount is: same place, same filesystem object.
    fn fact_match(&self, ns: u64, mi: &MountInfo, taken: &HashMap<MKey, usize>) -> Option<MKey> {
        let mp = resolve("", None, mi.mountpoint.as_str());
        let v = self.ns.get(&ns)?.by_path.get(mp.as_str())?;
        let free = || v.iter().copied().filter(|k| !taken.contains_key(k));
        if let Some(k) = free().find(|&k| self.m(k).kernel_id == Some(mi.mnt_id)) {
            return Some(k);
        }
        let root = if mi.fstype.as_str() == "nsfs" {
            mi.root.as_str().to_string()
        } else {
            resolve("", None, mi.root.as_str())
        };
        let dev_fs = self.dev_fs.get(&(mi.dev_major, mi.dev_minor)).copied();
        let same_obj = |k: MKey| {
            let m = self.m(k);
            *m.root == *root
                && match dev_fs {
                    Some(f) => m.fs == f,
                    None => &*m.fstype == mi.fstype.as_str(),
                }
        };
        // In a stack of look-alikes (two tmpfs at one place) the source tells them apart.
        let same_source = |k: MKey| &*self.m(k).source == mi.source.as_str();
        // Topmost first: a stack's hidden lower mounts are what the listing may leave out.
        let unnamed = |k: MKey| self.m(k).kernel_id.is_none() && same_obj(k);
        if let Some(k) = free()
            .rfind(|&k| unnamed(k) && same_source(k))
            .or_else(|| free().rfind(|&k| unnamed(k)))
        {
            return Some(k);
        }
        if let Some(k) = free().rfind(|&k| same_obj(k)) {
            return Some(k);
        }
        // The model's filesystem identity can differ from the kernel's device (a mount made by
        // an event): same kind and root at the same place is the same mount.
        let alike = |k: MKey| {
            let m = self.m(k);
            m.kernel_id.is_none() && *m.root == *root && &*m.fstype == mi.fstype.as_str()
        };
        free()
            .rfind(|&k| alike(k) && same_source(k))
            .or_else(|| free().rfind(|&k| alike(k)))
    }

    /// Takes the kernel's propagation for mount `k`; true if it changed.
    fn adopt_propagation(&mut self, k: MKey, p: &crate::model::Propagation) -> bool {
        let (shared, master, unb) = {
            let m = self.m(k);
            (m.shared, m.master, m.unbindable)
        };
        // Kernel group numbers are reused once a group empties, so a number learned earlier may
        // now name another group: where the model has a group for this role, that group is the
        // identity and the fact only tells its current number.
        let map = |this: &mut Self, kg: Option<u32>, model: Option<u32>| -> Option<u32> {
            let kg = kg?;
            match model {
                Some(g) => {
                    this.kgroups.insert(kg, g);
                    Some(g)
                }
                None => this.kgroup(Some(kg)),
            }
        };
        let ks = map(self, p.shared, shared);
        // A fact read after a make-slave the stream has not reached yet: the mount is a slave of
        // the group it was a peer of.
        let master_hint = master.or(if p.shared.is_none() { shared } else { None });
        let km = map(self, p.master, master_hint);
        if ks == shared && km == master && p.unbindable == unb {
            return false;
        }
        self.leave_group(k);
        if let Some(g) = ks {
            self.peers.entry(g).or_default().push(k);
        }
        if let Some(g) = km {
            self.slaves.entry(g).or_default().push(k);
        }
        let m = self.mm(k);
        m.shared = ks;
        m.master = km;
        m.unbindable = p.unbindable;
        self.dirty.push(k);
        true
    }

    fn mark_cut(&mut self, keys: &[MKey], ev: Option<&super::state::Ev>) {
        let Some(ev) = ev else { return };
        for &k in keys {
            if self.alive(k) && self.m(k).copy_ev.is_some() {
                self.mm(k).cut_ev = Some(ev.clone());
            }
        }
    }

    fn evinfo(&self, e: &Event, ns: u64, detail: Detail) -> super::state::Ev {
        Arc::new(EvInfo {
            pid: e.task.pid,
            comm: e.task.comm.as_str().to_string(),
            syscall: e.action.name(),
            ts: e.task.ts_ns,
            ns,
            detail,
        })
    }

    fn move_member(&mut self, pid: u32, from: u64, to: u64) {
        if from == to {
            return;
        }
        if let Some(n) = self.ns.get_mut(&from) {
            n.members.remove(&pid);
        }
        if let Some(n) = self.ns.get_mut(&to) {
            n.members.insert(pid);
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.ns = to;
        }
        self.maybe_kill(from, None);
    }

    /// A namespace with no member and no nsfs pin dies with its mounts.
    pub(super) fn maybe_kill(&mut self, id: u64, ev: Option<super::state::Ev>) {
        let Some(n) = self.ns.get(&id) else { return };
        if !n.members.is_empty() || n.members_unknown || self.nsfs_pins.contains_key(&n.inum) {
            return;
        }
        self.kill_ns(id, ev);
    }

    pub(super) fn kill_ns(&mut self, id: u64, ev: Option<super::state::Ev>) {
        if let Some(i) = self.pending_copies.iter().position(|p| p.dst == id) {
            // Never made: nothing to remove, and nothing was judged from it.
            self.pending_copies.remove(i);
        } else {
            // Frees mount keys: the copies due before are made first (see `copy_ns`).
            self.make_pending_copies();
        }
        let cause = Cause::NsDeath(ev);
        for k in self.ns_mounts(id).into_iter().rev() {
            if self.alive(k) {
                self.remove_mount(k, &cause);
            }
        }
        self.ns.remove(&id);
        self.ns_removals += 1;
        if self.recently_dead_set.insert(id) {
            self.recently_dead.push_back(id);
            if self.recently_dead.len() > super::RECENTLY_DEAD
                && let Some(old) = self.recently_dead.pop_front()
            {
                self.recently_dead_set.remove(&old);
            }
        }
        // A gone container's own namespace no longer needs recognising: keeps the list (scanned
        // per mount) the size of the live node, not of its history.
        self.containers.retain(|c| c.mnt_ns.id != id);
    }

    /// Copies namespace `src` into the new namespace `dst` (unshare/clone with CLONE_NEWNS).
    /// The copy waits while only process lifecycle records follow (`lets_copies_wait`) when
    /// nothing can be judged from it at once (`copy_can_wait`): most such namespaces belong to a
    /// short-lived process and die unread, and copying every mount twice (in, then out) was most
    /// of the engine's time on a node that forks such helpers.
    fn copy_ns(&mut self, src: u64, dst: MntNs, user: bool, ev: &super::state::Ev) {
        if self.ns.get(&dst.id).is_some_and(|n| n.mounts > 0) || self.copy_waits(dst.id) {
            return; // already copied (task_newtask and clone's exit both report it)
        }
        {
            let runtime = runtime_init_comm(&ev.comm);
            let n = self.ensure_ns(dst);
            n.created_by = Some(ev.clone());
            n.copied_from = Some(src);
            n.runtime = runtime;
            n.runtime_setup = runtime;
        }
        if self.copy_can_wait(src) {
            self.pending_copies.push(PendingCopy {
                dst: dst.id,
                src,
                user,
                ev: ev.clone(),
                ts: self.event_ts,
            });
            return;
        }
        // Mount keys are handed out in stream order, as if no copy had waited.
        self.make_pending_copies();
        self.fill_copy(src, dst.id, user, ev);
    }

    /// Whether copying `src` may wait: no copy of its mounts would be judged at risk (nothing
    /// container-looking) or pin a namespace (nsfs), and `src` itself is made.
    fn copy_can_wait(&self, src: u64) -> bool {
        let Some(n) = self.ns.get(&src) else {
            return false;
        };
        !self.copy_waits(src)
            && n.mounts > 0
            && n.by_path.values().flatten().all(|&k| {
                let m = self.m(k);
                &*m.fstype != "nsfs"
                    && !matches!(self.families.get(m.family as usize), Some(Some(f)) if f.container_looking)
            })
    }

    /// Whether namespace `id`'s copy waits.
    fn copy_waits(&self, id: u64) -> bool {
        self.pending_copies.iter().any(|p| p.dst == id)
    }

    /// Makes the copies that wait, oldest first, each as it would have been made at its call:
    /// every record that could read or change mounts, and every namespace death that frees
    /// mount keys, comes here first, so their sources have not changed since.
    pub(super) fn make_pending_copies(&mut self) {
        if self.pending_copies.is_empty() {
            return;
        }
        let (event_ts, dirty) = (self.event_ts, self.dirty.len());
        for p in std::mem::take(&mut self.pending_copies) {
            self.event_ts = p.ts;
            self.fill_copy(p.src, p.dst, p.user, &p.ev);
        }
        self.event_ts = event_ts;
        // Their calls' own at-risk checks passed them (nothing container-looking), and no
        // family changed since.
        self.dirty.truncate(dirty);
    }

    /// Each mount of `src`, copied into `dst`.
    fn fill_copy(&mut self, src: u64, dst: u64, user: bool, ev: &super::state::Ev) {
        let mode = if user {
            CloneMode::SharedToSlave
        } else {
            CloneMode::Keep
        };
        let order = self.ns_mounts(src);
        if let Some(n) = self.ns.get_mut(&dst) {
            n.by_path.reserve(order.len());
        }
        let idx: HashMap<MKey, usize> = order.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        // Each copy is made as its original is read (the source namespace does not change),
        // parents first. Each sits at its original's path: the copy's root is at "/", and a
        // child's parent copy need not be a prefix of it.
        let mut keys: Vec<MKey> = Vec::with_capacity(order.len());
        for &k in &order {
            let m = self.m(k);
            let parent = m.parent.and_then(|p| idx.get(&p)).map(|&i| keys[i]);
            let at = if parent.is_some() {
                m.mountpoint.clone()
            } else {
                self.paths.get("/")
            };
            let seed = self.seed_of(k, String::new(), None, mode);
            let copy = self.instantiate(dst, parent, &at, std::slice::from_ref(&seed), Some(ev))[0];
            keys.push(copy);
        }
    }

    pub(super) fn apply_event(&mut self, e: &Event) {
        let pid = e.task.pid;
        let lifecycle = matches!(
            e.action,
            Action::Fork { .. } | Action::Exec { .. } | Action::Exit
        );
        // Who is this, and in which namespace did it act?
        let task_ns = e.task.mnt_ns;
        // Its own events: a clone exit reported after them (vfork children run first) is old news.
        let own = !matches!(e.action, Action::Fork { .. } | Action::Clone { .. });
        // One lookup for a known process (almost every event).
        let known = self.procs.get_mut(&pid).map(|p| {
            if p.comm != e.task.comm.text {
                p.comm_noted = None;
                if !e.task.comm.text.is_empty() {
                    p.comm.clone_from(&e.task.comm.text);
                }
            }
            let noted = p.comm_noted;
            p.own_events |= own;
            // Usually no chroot: an empty root costs no clone.
            let root = if p.root.is_empty() {
                String::new()
            } else {
                p.root.clone()
            };
            (p.ns, root, noted)
        });
        let (pns, root, noted) = match known {
            Some(k) => k,
            None => {
                let ns = if task_ns.id != 0 {
                    task_ns
                } else {
                    MntNs::default()
                };
                self.procs.insert(
                    pid,
                    Proc {
                        comm: e.task.comm.as_str().to_string(),
                        ns: ns.id,
                        cgroup: e.task.cgroup_id,
                        own_events: own,
                        ..Default::default()
                    },
                );
                if ns.id != 0 && !matches!(e.action, Action::Unshare { .. } | Action::Setns { .. })
                {
                    self.ensure_ns(ns).members.insert(pid);
                }
                (ns.id, String::new(), None)
            }
        };
        // The namespace the call acted in (unshare/setns report the one after: use ours).
        let ns = match e.action {
            Action::Unshare { .. }
            | Action::Setns { .. }
            | Action::Clone { .. }
            | Action::Fork { .. }
                if pns != 0 =>
            {
                pns
            }
            _ if task_ns.id != 0 => {
                if task_ns.id != pns {
                    // We missed a namespace change: follow the kernel's word.
                    self.ensure_ns(task_ns);
                    self.move_member(pid, pns, task_ns.id);
                }
                task_ns.id
            }
            _ => pns,
        };
        if noted != Some((ns, self.ns_removals))
            && let Some(n) = self.ns.get_mut(&ns)
        {
            let comm = e.task.comm.as_str();
            note_comm(n, comm);
            if !comm.is_empty()
                && let Some(p) = self.procs.get_mut(&pid)
            {
                p.comm_noted = Some((ns, self.ns_removals));
            }
        }
        let ok = match e.ret {
            Some(r) => r >= 0,
            None => lifecycle,
        };
        if !ok {
            if let Some(r) = e.ret
                && r < 0
            {
                self.symptom(e, ns, r, &root);
            }
            return;
        }
        let ret = e.ret.unwrap_or(0);
        // Known by now (added above if it was not).
        let dir = e.dir.as_ref().map(|d| d.as_str());
        // A relative path with no directory from the source cannot be placed: skip the event
        // rather than guess.
        if dir.is_none() && action_has_relative_path(&e.action, &e.resolved) {
            return;
        }
        let path = |p: &str| resolve(&root, dir, p);
        // Path argument `i` (see `Action::path_args`): where the kernel resolved it at entry
        // (runc's `/proc/self/fd/N` and ".", a dirfd), else as written.
        let at = |i: usize, p: &str| match e.resolved_path(i) {
            Some(r) => resolve(&root, Some(r), ""),
            None => path(p),
        };
        match &e.action {
            Action::Mount {
                source,
                target,
                fstype,
                flags,
            } => {
                let mut flags = *flags;
                if flags & MS_MGC_MSK == MS_MGC_VAL {
                    flags &= !MS_MGC_MSK;
                }
                let target_unplaced = e.resolved[1].is_none() && via_proc_fd(target.as_str());
                let target = at(1, target.as_str());
                if flags & MS_REMOUNT != 0 {
                    return;
                }
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::Mount {
                        source: source.as_str().to_string(),
                        target: target.clone(),
                        flags,
                    },
                );
                let src_unplaced = flags & (MS_BIND | MS_MOVE) != 0
                    && e.resolved[0].is_none()
                    && via_proc_fd(source.as_str());
                if target_unplaced || via_proc_fd(&target) || src_unplaced {
                    // The kernel fact the source reads after this call shows the result.
                    if let Some(n) = self.ns.get_mut(&ns) {
                        if flags & MS_PROPAGATION != 0 {
                            n.unplaced_prop = Some(ev);
                        } else if flags & (MS_BIND | MS_MOVE) != 0 {
                            n.unplaced_bind = Some(ev);
                            n.unplaced_prop = None;
                        }
                    }
                    return;
                }
                if flags & MS_PROPAGATION != 0 {
                    if let Some(k) = self
                        .mount_at(ns, &target)
                        .or_else(|| self.lookup(ns, &target))
                    {
                        self.change_propagation(k, flags, flags & MS_REC != 0, &ev);
                    }
                } else if flags & MS_BIND != 0
                    && let Some(seed) = self.nsfs_seed(e, source.as_str())
                {
                    // `ip netns add`: a bind of /proc/self/ns/net is a namespace file, not procfs.
                    self.attach(ns, &target, vec![seed], &ev);
                } else if flags & MS_BIND != 0 {
                    let src = at(0, source.as_str());
                    if let Some(mut seeds) = self.seeds_at(ns, &src, flags & MS_REC != 0, true) {
                        // The bind itself is a new mount its maker manages; submounts copied by
                        // rbind stay in their families (their owners' umounts matter).
                        seeds[0].family = NEW_FAMILY;
                        self.attach(ns, &target, seeds, &ev);
                    }
                } else if flags & MS_MOVE != 0 {
                    let src = at(0, source.as_str());
                    self.do_move(ns, &src, &target, &ev);
                } else {
                    let seed = self.new_fs_seed(source.as_str(), fstype.as_str());
                    self.attach(ns, &target, vec![seed], &ev);
                }
            }
            Action::Umount { target, flags } => {
                let target = at(0, target.as_str());
                if via_proc_fd(&target) {
                    return;
                }
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::Umount {
                        target: target.clone(),
                        flags: *flags,
                    },
                );
                self.do_umount(ns, &target, &ev);
            }
            Action::Unlink { path: p, .. } => {
                if !self.cfg.detach_on_unlink {
                    return;
                }
                let b = basename(p.as_str().trim_end_matches('/'));
                if !self.mp_base.contains_key(b) {
                    return; // not a mountpoint name anywhere: O(1)
                }
                let full = path(p.as_str());
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::Text(format!("{}({})", e.action.name(), full)),
                );
                self.do_unlink(e, ns, &full, &ev);
            }
            Action::Unshare { flags } => {
                if flags & CLONE_NEWNS == 0 {
                    return;
                }
                let new = e.new_mnt_ns.unwrap_or(task_ns);
                if new.id == 0 || new.id == ns {
                    return;
                }
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::Clone {
                        call: "unshare",
                        flags: *flags,
                    },
                );
                self.copy_ns(ns, new, flags & CLONE_NEWUSER != 0, &ev);
                self.move_member(pid, ns, new.id);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.ns_change = Some(ev);
                }
            }
            Action::Setns { .. } => {
                let Some(new) = e.new_mnt_ns else { return };
                if new.id == ns {
                    return;
                }
                let ev = self.evinfo(e, ns, Detail::Text(format!("setns(-> mnt ns {})", new.id)));
                self.ensure_ns(new);
                self.move_member(pid, ns, new.id);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.ns_change = Some(ev);
                }
            }
            Action::Clone { flags, .. } => {
                if flags & CLONE_THREAD != 0 || ret <= 0 {
                    return;
                }
                let child_ns = if flags & CLONE_NEWNS != 0 {
                    e.new_mnt_ns
                } else {
                    None
                };
                let detail = Detail::Clone {
                    call: e.action.name(),
                    flags: *flags,
                };
                self.new_child(
                    e,
                    ns,
                    ret as u32,
                    child_ns,
                    flags & CLONE_NEWUSER != 0,
                    detail,
                );
            }
            Action::Fork { child } => {
                let detail = Detail::Static("fork");
                self.new_child(e, ns, *child, e.new_mnt_ns, false, detail);
            }
            Action::Exec { .. } => {
                // The runtime's init became the container's process: its setup is over.
                self.end_runtime_setup(ns);
            }
            Action::Exit => {
                if e.task.tid != 0 && e.task.tid != pid {
                    return; // a thread, not the process
                }
                if let Some(p) = self.procs.remove(&pid) {
                    if let Some(n) = self.ns.get_mut(&p.ns) {
                        n.members.remove(&pid);
                    }
                    if self.ns.get(&p.ns).is_some_and(|n| n.members.is_empty()) {
                        let ev = self.evinfo(e, p.ns, Detail::Static("exit"));
                        self.maybe_kill(p.ns, Some(ev));
                    }
                }
            }
            Action::Fsopen { fstype, .. } => {
                self.put_fd(
                    pid,
                    ret as i32,
                    FdObj::FsCtx {
                        fstype: fstype.as_str().to_string(),
                        source: String::new(),
                    },
                );
            }
            Action::Fsconfig {
                fd,
                cmd,
                key,
                value,
                ..
            } => {
                if *cmd == FSCONFIG_SET_STRING
                    && key.as_str() == "source"
                    && let Some(FdObj::FsCtx { source, .. }) =
                        self.procs.get_mut(&pid).and_then(|p| p.fds.get_mut(fd))
                {
                    *source = value.as_str().to_string();
                }
            }
            Action::Fsmount { fd, .. } => {
                let ctx = self.procs.get(&pid).and_then(|p| p.fds.get(fd)).cloned();
                if let Some(FdObj::FsCtx { fstype, source }) = ctx {
                    let seed = self.new_fs_seed(&source, &fstype);
                    self.put_fd(pid, ret as i32, FdObj::Detached(vec![seed]));
                }
            }
            Action::OpenTree { path: p, flags, .. } => {
                let full = at(0, p.as_str());
                let obj = if flags & OPEN_TREE_CLONE != 0 {
                    self.seeds_at(ns, &full, flags & AT_RECURSIVE != 0, true)
                        .map(|mut s| {
                            s[0].family = NEW_FAMILY;
                            FdObj::Detached(s)
                        })
                } else {
                    self.mount_at(ns, &full)
                        .or_else(|| self.lookup(ns, &full))
                        .map(|k| FdObj::Attached(k, self.m(k).mountpoint.to_string()))
                };
                if let Some(o) = obj {
                    self.put_fd(pid, ret as i32, o);
                }
            }
            Action::MoveMount {
                from_dirfd,
                from_path,
                to_path,
                flags,
                ..
            } => {
                let to = at(1, to_path.as_str());
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::Text(format!("move_mount({} -> {})", from_path.as_str(), to)),
                );
                if flags & MOVE_MOUNT_F_EMPTY_PATH != 0 || from_path.as_str().is_empty() {
                    let obj = self
                        .procs
                        .get_mut(&pid)
                        .and_then(|p| p.fds.remove(from_dirfd));
                    match obj {
                        Some(FdObj::Detached(seeds)) => self.attach(ns, &to, seeds, &ev),
                        Some(FdObj::Attached(k, mp))
                            if self.alive(k) && *self.m(k).mountpoint == *mp =>
                        {
                            self.do_move(ns, &mp, &to, &ev);
                        }
                        // Not an fd the model followed: the kernel's word for where it is.
                        _ => {
                            if let Some(from) = e.resolved_path(0) {
                                let from = resolve(&root, Some(from), "");
                                self.do_move(ns, &from, &to, &ev);
                            }
                        }
                    }
                } else {
                    let from = at(0, from_path.as_str());
                    self.do_move(ns, &from, &to, &ev);
                }
            }
            Action::MountSetattr {
                path: p,
                flags,
                propagation,
                ..
            } => {
                if *propagation == 0 {
                    return;
                }
                let full = at(0, p.as_str());
                let ev = self.evinfo(
                    e,
                    ns,
                    Detail::MountSetattr {
                        path: full.clone(),
                        propagation: *propagation,
                    },
                );
                if let Some(k) = self.mount_at(ns, &full).or_else(|| self.lookup(ns, &full)) {
                    self.change_propagation(k, *propagation, flags & AT_RECURSIVE != 0, &ev);
                }
            }
            Action::PivotRoot { new_root, put_old } => {
                let nr = at(0, new_root.as_str());
                let po = at(1, put_old.as_str());
                self.pivot_root(ns, &nr, &po);
            }
            Action::Chroot { path: p } => {
                let full = at(0, p.as_str());
                if let Some(pr) = self.procs.get_mut(&pid) {
                    pr.root = if full == "/" { String::new() } else { full };
                }
            }
        }
    }

    /// The runtime's setup of namespace `ns` ended: judge the copies it deferred.
    pub(super) fn end_runtime_setup(&mut self, ns: u64) {
        let now = self.now;
        if let Some(n) = self.ns.get_mut(&ns)
            && n.runtime_setup
        {
            n.runtime_setup = false;
            n.setup_ended_ts = Some(now);
            let d = std::mem::take(&mut n.deferred);
            self.dirty.extend(d);
        }
    }

    fn put_fd(&mut self, pid: u32, fd: i32, obj: FdObj) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.fds.len() >= 64 {
                p.fds.clear(); // bounded: a leaked fd table must not grow forever
            }
            p.fds.insert(fd, obj);
        }
    }

    /// The nsfs object a bind of `/proc/self/ns/{net,mnt}` mounts, as the kernel lists it
    /// (`net:[inum]`); other processes' namespace files are left to the kernel facts.
    fn nsfs_seed(&mut self, e: &Event, source: &str) -> Option<Seed> {
        let rest = source.strip_prefix("/proc/")?;
        let (who, kind) = rest.split_once("/ns/")?;
        let inum = match (who, kind) {
            ("self" | "thread-self", "net") => e.task.net_ns_inum,
            ("self" | "thread-self", "mnt") => e.task.mnt_ns.inum,
            _ => return None,
        };
        if inum == 0 {
            return None;
        }
        let fs = self
            .mounts
            .iter()
            .flatten()
            .find(|m| &*m.fstype == "nsfs")
            .map(|m| m.fs);
        let mut seed = self.new_fs_seed("nsfs", "nsfs");
        if let Some(fs) = fs {
            seed.fs = fs;
        }
        seed.root = self.paths.get(&format!("{kind}:[{inum}]"));
        Some(seed)
    }

    fn new_fs_seed(&mut self, source: &str, fstype: &str) -> Seed {
        // Block devices keep one superblock however often they are mounted.
        let fs = if source.starts_with("/dev/") {
            match self.dev_by_source.get(source) {
                Some(&f) => f,
                None => {
                    let f = self.new_fs();
                    self.dev_by_source.insert(source.to_string(), f);
                    f
                }
            }
        } else {
            self.new_fs()
        };
        Seed {
            rel: String::new(),
            parent: None,
            root: if fstype == "nsfs" {
                self.paths.get(source)
            } else {
                self.paths.get("/")
            },
            source: self.paths.get(source),
            fstype: self.paths.get(fstype),
            fs,
            shared: None,
            master: None,
            unbindable: false,
            family: NEW_FAMILY,
        }
    }

    fn new_child(
        &mut self,
        e: &Event,
        ns: u64,
        child: u32,
        child_ns: Option<MntNs>,
        user: bool,
        detail: Detail,
    ) {
        if child == 0 {
            return;
        }
        let cns = match child_ns {
            Some(c) if c.id != 0 && c.id != ns => {
                let ev = self.evinfo(e, ns, detail);
                self.copy_ns(ns, c, user, &ev);
                c.id
            }
            _ => ns,
        };
        let (comm, root, cgroup) = match self.procs.get(&e.task.pid) {
            Some(p) => (p.comm.clone(), p.root.clone(), p.cgroup),
            None => (e.task.comm.as_str().to_string(), String::new(), 0),
        };
        // Without the child's namespace (a fork event without the namespace offsets, a clone's
        // exit in captures from before the fork program sent clones) the parent's is a guess:
        // good enough for a child not seen yet, never a reason to move one already placed.
        let ns_known = child_ns.is_some_and(|c| c.id != 0);
        let old = self.procs.get(&child).map(|p| (p.ns, p.own_events));
        match old {
            Some((_, true)) => {}
            Some((o, false)) => {
                if ns_known && o != cns {
                    self.move_member(child, o, cns);
                }
            }
            None => {
                self.procs.insert(
                    child,
                    Proc {
                        comm,
                        ns: cns,
                        cgroup,
                        root,
                        ..Default::default()
                    },
                );
                if let Some(n) = self.ns.get_mut(&cns) {
                    n.members.insert(child);
                }
            }
        }
    }

    /// Attaches seeds under whatever `target` lives on, then propagates (do_add_mount /
    /// attach_recursive_mnt).
    fn attach(&mut self, ns: u64, target: &str, mut seeds: Vec<Seed>, ev: &super::state::Ev) {
        let Some(dest) = self.lookup(ns, target) else {
            return;
        };
        let at = self.paths.get(target);
        for s in seeds.iter_mut() {
            if s.family == NEW_FAMILY {
                let (source, fstype) = (s.source.clone(), s.fstype.clone());
                s.family = self.new_family(Some(ev.clone()), ns, at.clone(), source, fstype);
            }
        }
        let keys = self.instantiate(ns, Some(dest), &at, &seeds, Some(ev));
        self.propagate_attach(dest, target, &keys, false, ev);
    }

    fn unindex_paths(&mut self, k: MKey) {
        let m = self.m(k);
        let (ns, mp, d) = (m.ns, m.mountpoint.clone(), m.dentry.clone());
        if let Some(n) = self.ns.get_mut(&ns)
            && let Some(v) = n.by_path.get_mut(&mp)
        {
            v.retain(|&mut x| x != k);
            if v.is_empty() {
                n.by_path.remove(&mp);
            }
        }
        if let Some(d) = d
            && let Some(v) = self.mp_index.get_mut(&d)
        {
            v.retain(|&mut x| x != k);
            if v.is_empty() {
                self.mp_index.remove(&d);
            }
        }
        let b = basename(&mp);
        if let Some(c) = self.mp_base.get_mut(b) {
            *c -= 1;
            if *c == 0 {
                self.mp_base.remove(b);
            }
        }
    }

    fn index_paths(&mut self, k: MKey) {
        let m = self.m(k);
        let (ns, mp, parent) = (m.ns, m.mountpoint.clone(), m.parent);
        let d = parent.and_then(|p| self.dentry_of(p, &mp));
        self.mm(k).dentry = d.clone();
        if let Some(d) = d {
            self.mp_index.entry(d).or_default().push(k);
        }
        count_name(&mut self.mp_base, basename(&mp));
        self.ns.entry(ns).or_default().index_path(mp).push(k);
        self.note_change(ns, Change::Move);
    }

    /// MS_MOVE / move_mount of an attached mount: re-path its subtree, then propagate it.
    fn do_move(&mut self, ns: u64, from: &str, to: &str, ev: &super::state::Ev) {
        let Some(k) = self.mount_at(ns, from) else {
            return;
        };
        let sub = self.subtree(k);
        let Some(dest) = self.lookup(ns, to) else {
            return;
        };
        if sub.contains(&dest) {
            return;
        }
        for &x in sub.iter().rev() {
            self.unindex_paths(x);
        }
        for &x in &sub {
            let mp = self.m(x).mountpoint.clone();
            let rel = strip(&mp, from).unwrap_or("").to_string();
            self.mm(x).mountpoint = self.paths.join(to, &rel);
        }
        if let Some(old) = self.m(k).parent {
            self.mm(old).children.retain(|&mut c| c != k);
        }
        self.mm(dest).children.push(k);
        self.mm(k).parent = Some(dest);
        for &x in &sub {
            self.index_paths(x);
        }
        self.propagate_attach(dest, to, &sub, true, ev);
    }

    /// pivot_root: `new_root` becomes "/", the old root hangs at `put_old`.
    fn pivot_root(&mut self, ns: u64, new_root: &str, put_old: &str) {
        let Some(nr) = self.mount_at(ns, new_root) else {
            return;
        };
        let Some(old_root) = self.ns.get(&ns).and_then(|n| n.root) else {
            return;
        };
        if nr == old_root || !self.subtree(old_root).contains(&nr) {
            return;
        }
        let Some(po_rel) = strip(put_old, new_root).map(|s| s.to_string()) else {
            return;
        };
        let all = self.ns_mounts(ns);
        let nr_sub: HashSet<MKey> = self.subtree(nr).into_iter().collect();
        let po_abs = join("/", &po_rel);
        let new_mps: Vec<Arc<str>> = all
            .iter()
            .map(|&x| {
                let mp = &self.m(x).mountpoint;
                if nr_sub.contains(&x) {
                    self.paths.join("/", strip(mp, new_root).unwrap_or(""))
                } else {
                    self.paths.join(&po_abs, strip(mp, "/").unwrap_or(""))
                }
            })
            .collect();
        // Only mounts whose index entries change are re-indexed: a new mountpoint, a new parent
        // (the two roots), or a parent with a new mountpoint (the dentry is taken relative to
        // it). With runc's pivot_root(".", ".") the old root's mounts keep their paths.
        let moved: HashSet<MKey> = all
            .iter()
            .zip(&new_mps)
            .filter(|&(&x, mp)| *self.m(x).mountpoint != **mp)
            .map(|(&x, _)| x)
            .collect();
        let reindex: Vec<MKey> = all
            .iter()
            .copied()
            .filter(|&x| {
                x == nr
                    || x == old_root
                    || moved.contains(&x)
                    || self.m(x).parent.is_some_and(|p| moved.contains(&p))
            })
            .collect();
        for &x in reindex.iter().rev() {
            self.unindex_paths(x);
        }
        for (&x, mp) in all.iter().zip(new_mps) {
            self.mm(x).mountpoint = mp;
        }
        // Re-link: new root detaches from its parent; the old root goes under put_old.
        if let Some(p) = self.m(nr).parent {
            self.mm(p).children.retain(|&mut c| c != nr);
        }
        self.mm(nr).parent = None;
        let po_parent = {
            // The mount put_old now lives on (inside the new root's subtree).
            let mut best = nr;
            for &x in &nr_sub.iter().copied().collect::<Vec<_>>() {
                if strip(&po_abs, &self.m(x).mountpoint).is_some()
                    && self.m(x).mountpoint.len() >= self.m(best).mountpoint.len()
                {
                    best = x;
                }
            }
            best
        };
        self.mm(old_root).parent = Some(po_parent);
        self.mm(po_parent).children.push(old_root);
        if let Some(n) = self.ns.get_mut(&ns) {
            n.root = Some(nr);
        }
        for &x in &reindex {
            self.index_paths(x);
        }
    }

    fn do_umount(&mut self, ns: u64, target: &str, ev: &super::state::Ev) {
        let Some(k) = self.mount_at(ns, target) else {
            return;
        };
        let set = self.subtree(k);
        let extra = self.umount_propagation(&set);
        // What the verdict needs about the owner's copies, before they go.
        let removed: Vec<(u32, u64, Option<u32>, Option<u32>)> = set
            .iter()
            .map(|&x| {
                let m = self.m(x);
                (m.family, m.ns, m.shared, m.master)
            })
            .collect();
        let cause = Cause::Umount(ev.clone());
        let gone: HashSet<MKey> = set.iter().chain(&extra).copied().collect();
        self.reparent_survivors(&gone);
        // Children before parents, so that no removal orphans a mount still in the model.
        let mut order: Vec<MKey> = gone.iter().copied().collect();
        order.sort_by_cached_key(|&x| std::cmp::Reverse(self.depth(x)));
        for x in order {
            if self.alive(x) {
                self.remove_mount(x, &cause);
            }
        }
        self.leaks_after_removal(&removed, ev, target);
    }

    fn do_unlink(&mut self, e: &Event, ns: u64, full: &str, ev: &super::state::Ev) {
        let Some(on) = self.lookup(ns, full) else {
            return;
        };
        let dentry = if *self.m(on).mountpoint == *full {
            // The path is a mountpoint here: what is unlinked is the dentry under it.
            match self.m(on).parent {
                Some(p) => self.dentry_of(p, full),
                None => None,
            }
        } else {
            self.dentry_of(on, full)
        };
        let Some(d) = dentry else { return };
        // Mounts of the removed directory itself (binds of it) now have a deleted root: a new
        // directory made at that path is another dentry, and propagation there never reaches
        // them (the kernel lists such a root as `<path>//deleted`).
        let dead_roots: Vec<MKey> = self
            .mounts
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.as_ref().map(|m| (k as MKey, m)))
            .filter(|(_, m)| m.fs == d.0 && *m.root == *d.1 && &*m.fstype != "nsfs")
            .map(|(k, _)| k)
            .collect();
        for k in dead_roots {
            let old = self.m(k).root.clone();
            let root = format!("{old}//deleted");
            // Keep the name index in step with the new root.
            let b = basename(&old).to_string();
            if let Some(c) = self.mp_base.get_mut(&b) {
                *c -= 1;
                if *c == 0 {
                    self.mp_base.remove(&b);
                }
            }
            count_name(&mut self.mp_base, basename(&root));
            self.mm(k).root = self.paths.get(&root);
        }
        let victims: Vec<MKey> = self
            .mp_index
            .get(&d)
            .map(|v| v.iter().copied().filter(|&x| self.m(x).ns != ns).collect())
            .unwrap_or_default();
        if victims.is_empty() {
            return;
        }
        self.stranded_by_unlink(e, ns, &victims, full);
        let removed: Vec<(u32, u64, Option<u32>, Option<u32>)> = victims
            .iter()
            .map(|&x| {
                let m = self.m(x);
                (m.family, m.ns, m.shared, m.master)
            })
            .collect();
        let cause = Cause::Unlink(ev.clone());
        for v in victims {
            if self.alive(v) {
                self.remove_subtree(v, &cause);
            }
        }
        self.leaks_after_removal(&removed, ev, full);
    }

    /// The nsfs mount pinning a namespace, if any (for holders' display).
    pub(super) fn pin_path(&self, inum: u32) -> Option<String> {
        if !self.nsfs_pins.contains_key(&inum) {
            return None;
        }
        self.mounts.iter().flatten().find_map(|m| {
            (&*m.fstype == "nsfs" && nsfs_mnt_inum(&m.root) == Some(inum))
                .then(|| format!("nsfs mount {} in mnt ns {}", m.mountpoint, m.ns))
        })
    }
}

fn note_comm(n: &mut Ns, comm: &str) {
    // The same command acts many times in a row: decided already (the set never shrinks).
    if n.last_comm == comm {
        return;
    }
    n.last_comm.clear();
    n.last_comm.push_str(comm);
    if n.comms.len() < 32 && !comm.is_empty() && !n.comms.contains(comm) {
        n.comms.insert(comm.to_string());
    }
}

/// What a kernel fact may change in the model (see `apply_pending_fact`).
#[derive(Clone, Copy)]
struct FactTrust {
    add: bool,
    drop: bool,
    propagation: bool,
}

/// What a kernel fact's new mounts descend from.
pub(super) struct FactCtx {
    /// The event that created the namespace (unshare/clone), and the namespace it copied.
    created: Option<super::state::Ev>,
    from: Option<u64>,
    /// The last bind the model could not place there.
    bind: Option<super::state::Ev>,
}

/// A container runtime's init, which unshares and sets up the container's own mounts.
fn runtime_init_comm(comm: &str) -> bool {
    comm.starts_with("runc:[") || comm == "crun" || comm == "youki"
}

/// Parents before children: the kernel's listing is in id order, and a mount's parent can have a
/// larger id (a root mounted over, `pivot_root`). Roots (parent not listed) come first, "/" first.
fn kernel_order(mounts: &[MountInfo]) -> Vec<usize> {
    let ids: HashMap<u64, usize> = mounts
        .iter()
        .enumerate()
        .map(|(i, m)| (m.mnt_id, i))
        .collect();
    let mut kids: HashMap<usize, Vec<usize>> = HashMap::default();
    let mut roots = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        match ids.get(&m.parent_id) {
            Some(&p) if p != i => kids.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    roots.sort_by_key(|&i| {
        (
            mounts[i].mountpoint.as_str() != "/",
            mounts[i].mountpoint.text.len(),
        )
    });
    let mut out = Vec::with_capacity(mounts.len());
    let mut seen = vec![false; mounts.len()];
    let mut q: std::collections::VecDeque<usize> = roots.into_iter().collect();
    while let Some(i) = q.pop_front() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        out.push(i);
        if let Some(v) = kids.get(&i) {
            q.extend(v.iter().copied());
        }
    }
    // A parent cycle (corrupt input): keep the rest in listing order.
    out.extend((0..mounts.len()).filter(|&i| !seen[i]));
    out
}

/// A path the model cannot place: runc mounts onto `/proc/self/fd/N` (an O_PATH fd of the
/// target); the kernel fact that follows shows the result.
fn via_proc_fd(p: &str) -> bool {
    crate::model::in_proc_process_dir(p).is_some_and(|after| after.split('/').next() == Some("fd"))
}

/// Whether a path argument the engine needs is relative and was not resolved by the kernel.
fn action_has_relative_path(
    a: &Action,
    resolved: &[Option<crate::model::ResolvedPath>; 2],
) -> bool {
    let rel = |i: usize, p: &crate::model::KStr| {
        !p.as_str().is_empty() && !p.as_str().starts_with('/') && resolved[i].is_none()
    };
    match a {
        Action::Mount {
            source,
            target,
            flags,
            ..
        } => rel(1, target) || (flags & (MS_BIND | MS_MOVE) != 0 && rel(0, source)),
        Action::Umount { target, .. } => rel(0, target),
        Action::Unlink { path, .. } => rel(0, path),
        Action::OpenTree { path, .. }
        | Action::MountSetattr { path, .. }
        | Action::Chroot { path } => rel(0, path),
        Action::MoveMount {
            from_path, to_path, ..
        } => rel(0, from_path) || rel(1, to_path),
        Action::PivotRoot { new_root, put_old } => rel(0, new_root) || rel(1, put_old),
        _ => false,
    }
}
