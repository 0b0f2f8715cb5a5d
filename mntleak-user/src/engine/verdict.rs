//! Verdicts: a copy that survives the owner's umount is a leak; a copy the owner's umount would
//! not reach is at risk; a mount whose creator left its namespace is stranded.

use super::{HashMap, HashSet};

use super::paths::resolve_into;
use super::state::{Cause, Ev, MKey, Mount, prop_str};
use super::{Engine, MAX_RESOLVED, errno_name};
use crate::model::{Action, Event};
use crate::report::finding::{
    EventRef, Finding, FindingKind, FindingMount, Holder, Origin, Resolved, Symptom,
};

const MAX_SYMPTOMS: usize = 32;
const MAX_RECENT: usize = 256;
const MAX_HOLDERS: usize = 16;

fn evref(e: &Ev, propagation: Option<String>) -> EventRef {
    EventRef {
        pid: e.pid,
        comm: e.comm.clone(),
        syscall: e.syscall.to_string(),
        time: e.ts,
        mnt_ns_id: e.ns,
        detail: e.detail.to_string(),
        propagation,
    }
}

/// A failed call, kept for the findings it may explain later: a [`Symptom`] without the strings
/// that follow from its call and return value.
#[derive(Debug, Default)]
pub(super) struct RecentFailure {
    pid: u32,
    comm: String,
    syscall: &'static str,
    path: String,
    ret: i64,
    time: u64,
}

impl RecentFailure {
    fn symptom(&self) -> Symptom {
        let errno = errno_name(self.ret);
        Symptom {
            pid: self.pid,
            comm: self.comm.clone(),
            syscall: self.syscall.to_string(),
            path: self.path.clone(),
            ret: self.ret,
            errno: errno.to_string(),
            time: self.time,
            explanation: explain(self.syscall, errno).to_string(),
        }
    }
}

fn explain(syscall: &str, errno: &str) -> &'static str {
    match (syscall, errno) {
        ("umount2", "EINVAL") => {
            "the path is not a mount in the caller's namespace: the mount lives in another namespace"
        }
        ("umount2", "ENOENT") => "the path does not exist in the caller's namespace",
        ("umount2", "EBUSY") => {
            "the mount is busy; a busy slave copy in another namespace also fails the master's umount"
        }
        ("rmdir" | "unlink" | "unlinkat", "EBUSY") => {
            "the path is a mountpoint (on kernels before 3.18 also when only another namespace mounts on it)"
        }
        ("mount" | "move_mount", "EBUSY") => {
            "the device, or the overlay upper/work directory, is still in use by a surviving copy"
        }
        _ => "failed call on a path involved in the leak",
    }
}

impl Engine {
    /// A container's own namespace holding its own rootfs or volumes is not a foreign copy.
    fn own_container_ns(&self, ns: u64, fam: u32) -> bool {
        let Some(Some(f)) = self.families.get(fam as usize) else {
            return false;
        };
        if let Some(n) = self.ns.get(&ns)
            && let Some(r) = n.root
        {
            let rm = self.m(r);
            if rm.family == fam {
                return true; // pivot_root'ed into it
            }
            // A runtime's namespace pivoted into a bind of the rootfs: the rootfs is its own.
            if n.runtime
                && let Some(Some(rf)) = self.families.get(rm.family as usize)
                && &*rf.path != "/"
                && (f.path == rf.path || super::paths::strip(&f.path, &rf.path).is_some())
            {
                return true;
            }
        }
        // One of its mounts, exactly: what lies below a bind source (another container's rootfs
        // under a bound /var/lib/docker, a pod's volumes under /var/lib/kubelet) is the copy that
        // leaks, not the container's own. Below its rootfs is covered above.
        self.cfg
            .focus
            .iter()
            .chain(self.containers.iter())
            .any(|c| c.mnt_ns.id == ns && c.mount_paths.iter().any(|p| **p == *f.path))
    }

    /// A copy a container runtime's init made by creating its namespace: runc pivots away
    /// from it and detaches the old root, so it is transient setup, never a foreign copy.
    fn runtime_setup_copy(&self, k: MKey) -> bool {
        let m = self.m(k);
        let Some(n) = self.ns.get(&m.ns) else {
            return false;
        };
        n.runtime
            && match &m.copy_ev {
                // Already there when the capture began, while the runtime was setting up.
                None => n.runtime_setup,
                Some(e) => {
                    matches!(e.syscall, "unshare" | "clone" | "clone3" | "fork")
                        // Propagated in from another namespace while runc was still setting
                        // up: the old root it detaches takes it along, even when that detach
                        // was not seen. (runc's own binds into the rootfs are not transient.)
                        || (e.ns != m.ns
                            && (n.runtime_setup
                                || n.setup_ended_ts.is_some_and(|end| e.ts <= end)))
                }
            }
    }

    fn holders(&self, ns: u64) -> Vec<Holder> {
        let mut v: Vec<Holder> = self
            .ns
            .get(&ns)
            .map(|n| {
                n.members
                    .iter()
                    .map(|&pid| Holder {
                        pid,
                        comm: self
                            .procs
                            .get(&pid)
                            .map(|p| p.comm.clone())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|h| h.pid);
        v.truncate(MAX_HOLDERS);
        v
    }

    /// Why the owner's umount does not reach copy `c`.
    fn reason(&self, c: &Mount, owner: Option<(Option<u32>, Option<u32>)>) -> (String, String) {
        let copy_how = match &c.copy_ev {
            Some(e) => format!("created by {} (pid {} {})", e.detail, e.pid, e.comm),
            None => "present when the capture began".to_string(),
        };
        let cut = match &c.cut_ev {
            Some(e) => format!(", then changed by {} (pid {} {})", e.detail, e.pid, e.comm),
            None => String::new(),
        };
        if c.shared.is_none() && c.master.is_none() {
            return (
                "private_copy".into(),
                format!(
                    "B's copy is private ({copy_how}{cut}): umount events never propagate to a private mount"
                ),
            );
        }
        if let Some((_, Some(om))) = owner
            && c.shared == Some(om)
        {
            return (
                "slave_direction".into(),
                format!(
                    "A's mount is a slave of B's peer group ({copy_how}{cut}): umount does not propagate from slave to master"
                ),
            );
        }
        let parent_private = c
            .parent
            .and_then(|p| self.mounts.get(p as usize).and_then(|m| m.as_ref()))
            .map(|p| {
                (
                    p.mountpoint.clone(),
                    p.shared.is_none() && p.master.is_none(),
                )
            });
        if let Some((pmp, true)) = parent_private {
            return (
                "parent_not_propagating".into(),
                format!(
                    "B's copy hangs on {pmp}, a private mount in B ({copy_how}{cut}): umount propagates through the parent mount, which receives nothing from A"
                ),
            );
        }
        (
            "different_peer_group".into(),
            format!(
                "B's copy ({}) is not a peer or slave of A's mount's parent group ({copy_how}{cut})",
                c.prop_string()
            ),
        )
    }

    /// What to do about a finding: undo the copy now (while it exists), then keep it from
    /// recurring. A resolved leak's copy is gone, so only the second part is left, naming who
    /// held it.
    fn remediation(&self, f: &Finding) -> Vec<String> {
        let mut r = Vec::new();
        let target = if f.reason_code == "stranded" {
            &f.mount.path
        } else {
            &f.mount.path_in_ns
        };
        let names: Vec<String> = f
            .holders
            .iter()
            .map(|h| format!("{} (pid {})", h.comm, h.pid))
            .collect();
        let resolved = f.resolved.is_some();
        if !resolved {
            if let Some(h) = f.holders.first() {
                r.push(format!("nsenter -t {} -m umount {}", h.pid, target));
                r.push(format!(
                    "or stop/restart the holder so its namespace goes away: {}",
                    names.join(", ")
                ));
            }
            if let Some(p) = &f.pin {
                r.push(format!(
                    "remove the pin keeping the namespace alive: umount the {p} (and close fds open on it)"
                ));
            }
        }
        let prevention = Self::prevention(f, resolved);
        if resolved {
            let who = if names.is_empty() {
                String::new()
            } else {
                format!("; it was held by {}", names.join(", "))
            };
            let next = if prevention.is_empty() {
                ""
            } else {
                "; to keep it from recurring:"
            };
            r.push(format!(
                "nothing to undo: the kernel no longer has the copy{who}{next}"
            ));
        }
        r.extend(prevention);
        if !resolved {
            r.push("do not lazily detach (umount -l) as the fix: it hides the mount but keeps the filesystem busy".into());
        }
        r
    }

    /// Advice that keeps such a copy from being made again, by how it was made.
    fn prevention(f: &Finding, resolved: bool) -> Vec<String> {
        let mut r = Vec::new();
        let by = f.leaked_by.as_ref();
        let cut = f.cut_off_by.as_ref();
        match f.reason_code.as_str() {
            "stranded" if resolved => r.push(
                "keep the daemon's namespace across restarts (MountFlags=shared, or docker live-restore)".into(),
            ),
            "stranded" => r.push(
                "run the owner's umount in the namespace that holds the mount; keep the daemon's namespace across restarts (MountFlags=shared, or docker live-restore)".into(),
            ),
            _ => {
                if by.is_some_and(|e| e.detail.contains("MS_BIND|MS_REC"))
                    || cut.is_some_and(|e| e.detail.contains("MS_REC|MS_PRIVATE"))
                        && by.is_some_and(|e| e.syscall == "mount")
                {
                    r.push("bind host paths with rslave (HostToContainer) propagation instead of rprivate, so the runtime's umounts reach the copy".into());
                }
                if by.is_some_and(|e| e.syscall == "unshare" || e.syscall.starts_with("clone") || e.syscall == "fork") {
                    r.push("give the service a slave namespace (systemd MountFlags=slave, unshare --propagation slave) or avoid PrivateTmp/ProtectSystem for services that must not hold container mounts".into());
                }
            }
        }
        r
    }

    fn build(
        &mut self,
        kind: FindingKind,
        c: MKey,
        owner: Option<(Option<u32>, Option<u32>)>,
        umount: Option<&Ev>,
    ) -> Option<Finding> {
        let id = match self.at_risk.get(&c) {
            Some(f) => f.id,
            None => {
                self.next_finding += 1;
                self.next_finding
            }
        };
        let m = self.m(c);
        let fam = self.families.get(m.family as usize)?.as_ref()?;
        let (reason_code, mut reason) = self.reason(m, owner);
        if kind == FindingKind::Leak && fam.source.starts_with("/dev/") {
            // What the user sees: the device cannot be detached, checked or reformatted.
            reason.push_str(&format!(
                "; the device {} stays busy (open O_EXCL, mkfs, fsck and detaching it fail with EBUSY) while this copy lives",
                fam.source
            ));
        }
        let holders = self.holders(m.ns);
        let inum = self.ns.get(&m.ns).map(|n| n.inum).unwrap_or(0);
        let pin = if holders.is_empty() {
            self.pin_path(inum)
        } else {
            None
        };
        let path_in_ns = m.mountpoint.clone();
        let symptoms: Vec<Symptom> = self
            .recent_symptoms
            .iter()
            .filter(|s| *s.path == *fam.path || *s.path == *path_in_ns || *s.path == *fam.source)
            .map(RecentFailure::symptom)
            .collect();
        let mut f = Finding {
            kind,
            id,
            mount: FindingMount {
                source: fam.source.to_string(),
                fstype: fam.fstype.to_string(),
                path: fam.path.to_string(),
                path_in_ns: path_in_ns.to_string(),
                mount_id: m.kernel_id,
            },
            origin: fam.origin.as_ref().map(|o| Origin {
                pid: o.pid,
                comm: o.comm.clone(),
                mnt_ns_id: fam.origin_ns,
                time: o.ts,
            }),
            leaked_by: m.copy_ev.as_ref().map(|e| {
                let (shared, master, unbindable) = m.copy_prop;
                evref(e, Some(prop_str(shared, master, unbindable)))
            }),
            cut_off_by: m.cut_ev.as_ref().map(|e| evref(e, Some(m.prop_string()))),
            from_mnt_ns_id: fam.origin_ns,
            into_mnt_ns_id: m.ns,
            reason_code,
            reason,
            umount: umount.map(|e| evref(e, None)),
            symptoms,
            holders,
            pin,
            resolved: None,
            remediation: Vec::new(),
        };
        f.remediation = self.remediation(&f);
        Some(f)
    }

    /// After the owner's copies went (umount, or an unlink elsewhere): every surviving member of
    /// the family in another namespace is a leak.
    pub(super) fn leaks_after_removal(
        &mut self,
        removed: &[(u32, u64, Option<u32>, Option<u32>)],
        ev: &Ev,
        _path: &str,
    ) {
        let mut done: HashSet<u32> = HashSet::default();
        for &(fam, ns, shared, master) in removed {
            let Some(Some(f)) = self.families.get(fam as usize) else {
                continue;
            };
            if ns != f.origin_ns || !done.insert(fam) || !self.family_relevant(f) {
                continue;
            }
            if f.members.iter().any(|&k| self.m(k).ns == f.origin_ns) {
                continue; // the owner still has it
            }
            let mut survivors: Vec<MKey> = f.members.iter().copied().collect();
            survivors.sort_unstable();
            for c in survivors {
                if self.leak_by_mount.contains_key(&c)
                    || self.own_container_ns(self.m(c).ns, fam)
                    || self.runtime_setup_copy(c)
                {
                    continue;
                }
                if let Some(fd) = self.build(FindingKind::Leak, c, Some((shared, master)), Some(ev))
                {
                    self.at_risk.remove(&c);
                    self.leak_by_mount.insert(c, fd.id);
                    self.out.push(fd.clone());
                    self.leaks.insert(fd.id, fd);
                }
            }
        }
    }

    /// A mount left the model: resolve its leak, drop its at-risk entry.
    pub(super) fn on_mount_gone(&mut self, k: MKey, m: &Mount, cause: &Cause) {
        self.at_risk.remove(&k);
        let Some(id) = self.leak_by_mount.remove(&k) else {
            return;
        };
        let Some(mut f) = self.leaks.remove(&id) else {
            return;
        };
        if !matches!(cause, Cause::NsDeath(_)) && &*m.fstype == "nsfs" {
            // Another mount of the same namespace shows the same namespace file (a bind of the
            // copy, e.g. a netns pinned at /pin): it is still held there.
            let heir = self
                .ns
                .get(&m.ns)
                .into_iter()
                .flat_map(|n| n.by_path.values().flatten().copied())
                .find(|&x| {
                    x != k && self.alive(x) && !self.leak_by_mount.contains_key(&x) && {
                        let xm = self.m(x);
                        xm.fs == m.fs && xm.root == m.root
                    }
                });
            if let Some(x) = heir {
                let xm = self.m(x);
                f.reason = format!(
                    "{}; the copy at {} is gone but {} in the same namespace still holds the same filesystem",
                    f.reason, m.mountpoint, xm.mountpoint
                );
                f.mount.path_in_ns = xm.mountpoint.to_string();
                f.mount.mount_id = xm.kernel_id;
                f.remediation = self.remediation(&f);
                self.leak_by_mount.insert(x, id);
                self.out.push(f.clone());
                self.leaks.insert(id, f);
                return;
            }
        }
        let (how, ev) = match cause {
            Cause::Umount(e) if e.ns == m.ns => ("unmounted inside the foreign namespace".to_string(), Some(e)),
            Cause::Umount(e) => ("reached by a later umount's propagation".to_string(), Some(e)),
            Cause::Unlink(e) => (
                "its mountpoint was removed in another namespace; the kernel (>= 3.18) detached the copy".to_string(),
                Some(e),
            ),
            Cause::NsDeath(Some(e)) => ("the last process of the namespace exited".to_string(), Some(e)),
            Cause::NsDeath(None) => ("the namespace lost its last pin".to_string(), None),
            Cause::Fact => ("the kernel no longer lists it".to_string(), None),
        };
        let time = ev.map(|e| e.ts).unwrap_or(0);
        f.resolved = Some(Resolved {
            how,
            time,
            by: ev.map(|e| evref(e, None)),
        });
        f.remediation = self.remediation(&f);
        self.out.push(f.clone());
        self.resolved.push_back(f);
        while self.resolved.len() > MAX_RESOLVED {
            self.resolved.pop_front();
        }
    }

    /// Copies created or changed by this record that the owner's umount would not reach.
    pub(super) fn check_at_risk(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut reach: HashMap<MKey, HashSet<MKey>> = HashMap::default();
        for c in dirty {
            if !self.alive(c) || self.leak_by_mount.contains_key(&c) {
                continue;
            }
            let m = self.m(c);
            let Some(Some(f)) = self.families.get(m.family as usize) else {
                continue;
            };
            if m.ns == f.origin_ns
                || !f.container_looking
                || self.own_container_ns(m.ns, m.family)
                || self.runtime_setup_copy(c)
            {
                continue;
            }
            let ns = m.ns;
            if let Some(n) = self.ns.get_mut(&ns)
                && n.runtime_setup
            {
                // Judged when the runtime's init execs (or the container is recorded).
                if n.deferred.len() < 4096 && !n.deferred.contains(&c) {
                    n.deferred.push(c);
                }
                continue;
            }
            let Some(o) = f
                .members
                .iter()
                .copied()
                .filter(|&x| self.m(x).ns == f.origin_ns)
                .min()
            else {
                continue;
            };
            let owner = (self.m(o).shared, self.m(o).master);
            let r = reach
                .entry(o)
                .or_insert_with(|| self.umount_propagation(&[o]).into_iter().collect());
            if r.contains(&c) {
                self.at_risk.remove(&c);
            } else if !self.at_risk.contains_key(&c)
                && let Some(fd) = self.build(FindingKind::AtRisk, c, Some(owner), None)
            {
                self.out.push(fd.clone());
                self.at_risk.insert(c, fd);
            }
        }
    }

    /// A failed call: remember it, link it to open findings, and detect stranded mounts.
    pub(super) fn symptom(&mut self, e: &Event, ns: u64, ret: i64, root: &str) {
        // The path argument that failed, by its slot in `e.resolved`.
        let (path, slot, source) = match &e.action {
            Action::Umount { target, .. } => (target.as_str(), 0, None),
            Action::Unlink { path, .. } => (path.as_str(), 0, None),
            Action::Mount { source, target, .. } => (target.as_str(), 1, Some(source.as_str())),
            Action::MoveMount { to_path, .. } => (to_path.as_str(), 1, None),
            _ => return,
        };
        let errno = errno_name(ret);
        // Remembered in the buffers of the oldest one when the window is full.
        let mut r = if self.recent_symptoms.len() >= MAX_RECENT {
            self.recent_symptoms.pop_front()
        } else {
            None
        }
        .unwrap_or_default();
        match e.resolved_path(slot) {
            Some(p) => resolve_into(&mut r.path, root, Some(p), ""),
            None => resolve_into(&mut r.path, root, e.dir.as_ref().map(|d| d.as_str()), path),
        }
        r.pid = e.task.pid;
        r.comm.clear();
        r.comm.push_str(e.task.comm.as_str());
        r.syscall = e.action.name();
        r.ret = ret;
        r.time = e.task.ts_ns;
        self.recent_symptoms.push_back(r);
        let umount = matches!(e.action, Action::Umount { .. });
        // Most failures explain nothing yet: no symptom to build.
        if !umount && self.leaks.is_empty() && self.at_risk.is_empty() {
            return;
        }
        let s = self
            .recent_symptoms
            .back()
            .map(RecentFailure::symptom)
            .unwrap_or_default();
        let full = s.path.clone();
        let mut changed = Vec::new();
        for f in self.leaks.values_mut().chain(self.at_risk.values_mut()) {
            let hit = f.mount.path == full
                || f.mount.path_in_ns == full
                || source.is_some_and(|src| src == f.mount.source && src.starts_with('/'));
            if hit && f.symptoms.len() < MAX_SYMPTOMS {
                f.symptoms.push(s.clone());
                changed.push(f.clone());
            }
        }
        // A stranded mount already detached (by an unlink) still explains the creator's
        // failed umount that follows.
        if umount {
            for f in self.resolved.iter_mut().rev().take(64) {
                if f.reason_code == "stranded"
                    && (f.mount.path == full || f.mount.path_in_ns == full)
                    && f.symptoms.len() < MAX_SYMPTOMS
                    && !f.symptoms.contains(&s)
                {
                    f.symptoms.push(s.clone());
                    if f.umount.is_none() {
                        f.umount = Some(EventRef {
                            pid: s.pid,
                            comm: s.comm.clone(),
                            syscall: s.syscall.clone(),
                            time: s.time,
                            mnt_ns_id: ns,
                            detail: format!("umount2({}) = {} {}", full, s.ret, s.errno),
                            propagation: None,
                        });
                    }
                    changed.push(f.clone());
                }
            }
        }
        self.out.extend(changed);
        if umount && (errno == "EINVAL" || errno == "ENOENT") {
            self.stranded(e, ns, &full, s);
        }
    }

    /// The creator (same pid or same comm) fails to umount a path it mounted in a namespace it
    /// has left, while others keep that namespace alive.
    fn stranded(&mut self, e: &Event, ns: u64, path: &str, sym: Symptom) {
        if self.mount_at(ns, path).is_some() {
            return;
        }
        let comm = e.task.comm.as_str();
        let mut hits: Vec<(u64, MKey)> = Vec::new();
        for (&aid, a) in &self.ns {
            if aid == ns {
                continue;
            }
            let Some(&k) = a.by_path.get(path).and_then(|v| v.last()) else {
                continue;
            };
            let m = self.m(k);
            let Some(Some(f)) = self.families.get(m.family as usize) else {
                continue;
            };
            if !self.family_relevant(f) {
                continue;
            }
            // The creator: the mount's origin, or (made before the capture) a process of the
            // same name that acted in that namespace.
            let creator = match &f.origin {
                Some(o) => f.origin_ns == aid && (o.pid == e.task.pid || o.comm == comm),
                None => a.comms.contains(comm),
            };
            if creator && !self.leak_by_mount.contains_key(&k) {
                hits.push((aid, k));
            }
        }
        hits.sort_unstable();
        let leaving: Option<Ev> = self
            .procs
            .get(&e.task.pid)
            .and_then(|p| p.ns_change.clone())
            .or_else(|| self.ns.get(&ns).and_then(|n| n.created_by.clone()));
        for (aid, k) in hits {
            self.raise_stranded(k, aid, ns, comm, leaving.as_ref(), Some(&sym), path);
        }
    }

    /// A stranded leak on mount `k` of namespace `aid`: its creator `comm` now runs in `ns`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn raise_stranded(
        &mut self,
        k: MKey,
        aid: u64,
        ns: u64,
        comm: &str,
        leaving: Option<&Ev>,
        sym: Option<&Symptom>,
        path: &str,
    ) {
        let Some(mut f) = self.build(FindingKind::Leak, k, None, None) else {
            return;
        };
        f.reason_code = "stranded".into();
        f.reason = format!(
            "the mount's creator ({}) now runs in mnt ns {} and cannot reach mnt ns {}, which other processes keep alive",
            comm, ns, aid
        );
        f.from_mnt_ns_id = ns;
        f.into_mnt_ns_id = aid;
        f.leaked_by = leaving.map(|e| evref(e, None));
        f.cut_off_by = None;
        if let Some(sym) = sym {
            f.umount = Some(EventRef {
                pid: sym.pid,
                comm: sym.comm.clone(),
                syscall: sym.syscall.clone(),
                time: sym.time,
                mnt_ns_id: ns,
                detail: format!("umount2({}) = {} {}", path, sym.ret, sym.errno),
                propagation: None,
            });
            if !f.symptoms.contains(sym) {
                f.symptoms.push(sym.clone());
            }
        }
        f.remediation = self.remediation(&f);
        self.at_risk.remove(&k);
        self.leak_by_mount.insert(k, f.id);
        self.out.push(f.clone());
        self.leaks.insert(f.id, f);
    }

    /// An unlink by a process that left namespace B detaches B's mounts its name made there:
    /// they were stranded until now (the leak is reported, resolved by this unlink).
    pub(super) fn stranded_by_unlink(&mut self, e: &Event, ns: u64, victims: &[MKey], path: &str) {
        let comm = e.task.comm.as_str();
        let leaving: Option<Ev> = self
            .procs
            .get(&e.task.pid)
            .and_then(|p| p.ns_change.clone())
            .or_else(|| self.ns.get(&ns).and_then(|n| n.created_by.clone()));
        if leaving.is_none() {
            return; // the unlinker never changed namespace: nothing was stranded by a move
        }
        for &k in victims {
            if !self.alive(k) || self.leak_by_mount.contains_key(&k) {
                continue;
            }
            let m = self.m(k);
            let aid = m.ns;
            let Some(Some(f)) = self.families.get(m.family as usize) else {
                continue;
            };
            if !f.container_looking || &*m.mountpoint != path {
                continue;
            }
            let creator = match &f.origin {
                Some(o) => f.origin_ns == aid && (o.pid == e.task.pid || o.comm == comm),
                None => self.ns.get(&aid).is_some_and(|a| a.comms.contains(comm)),
            };
            let alive_others = self.ns.get(&aid).is_some_and(|a| !a.members.is_empty());
            if creator && alive_others {
                self.raise_stranded(k, aid, ns, comm, leaving.as_ref(), None, path);
            }
        }
    }
}
