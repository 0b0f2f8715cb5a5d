//! Which events to show. The engine always sees every record; filters only decide what is printed,
//! so a filtered view never changes a verdict.

use crate::model::{Action, ContainerInfo, Event};
use crate::uapi::CLONE_NEWNS;

use super::ViewArgs;

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    mntns: Vec<u64>,
    /// Containers in focus, once resolved (live: from the runtime; replay: from the capture).
    focus: Vec<ContainerInfo>,
}

impl Filter {
    pub fn new(view: &ViewArgs, focus: Vec<ContainerInfo>) -> Self {
        Self {
            pids: view.pids.clone(),
            comms: view.comms.clone(),
            mntns: view.mntns.clone(),
            focus,
        }
    }

    pub fn focus(&self) -> &[ContainerInfo] {
        &self.focus
    }

    pub fn matches(&self, ev: &Event) -> bool {
        let t = &ev.task;
        if !self.pids.is_empty() && !self.pids.contains(&t.pid) {
            return false;
        }
        if !self.comms.is_empty() && !self.comms.iter().any(|c| c == t.comm.as_str()) {
            return false;
        }
        if !self.mntns.is_empty()
            && !self.mntns.iter().any(|n| {
                *n == t.mnt_ns.id
                    || *n == u64::from(t.mnt_ns.inum)
                    || ev
                        .new_mnt_ns
                        .is_some_and(|m| *n == m.id || *n == u64::from(m.inum))
            })
        {
            return false;
        }
        self.focus.is_empty() || self.focus.iter().any(|c| concerns_container(ev, c))
    }
}

/// Whether an event belongs in a container's timeline: done inside it, naming one of its mounts,
/// or copying mount namespaces (every copy may take the container's mounts with it).
fn concerns_container(ev: &Event, c: &ContainerInfo) -> bool {
    if c.mnt_ns.id != 0 && ev.task.mnt_ns.id == c.mnt_ns.id {
        return true;
    }
    if c.init_pid != 0 && ev.task.pid == c.init_pid {
        return true;
    }
    let names_container = |p: &str| {
        !p.is_empty()
            && ((c.id.len() >= 12 && p.contains(&c.id[..12]))
                || c.mount_paths.iter().any(|m| path_overlaps(p, m)))
    };
    // A runc mount onto /proc/self/fd/N names the container by the path the kernel resolved.
    if ev
        .resolved
        .iter()
        .flatten()
        .any(|r| names_container(r.path.as_str()))
    {
        return true;
    }
    match &ev.action {
        Action::Unshare { flags } | Action::Clone { flags, .. } => flags & CLONE_NEWNS != 0,
        Action::Setns { .. } => true,
        Action::Mount { source, target, .. } => {
            names_container(source.as_str()) || names_container(target.as_str())
        }
        Action::Umount { target: p, .. }
        | Action::OpenTree { path: p, .. }
        | Action::MountSetattr { path: p, .. }
        | Action::Chroot { path: p } => names_container(p.as_str()),
        Action::Unlink { path, .. } => {
            names_container(path.as_str())
                || ev.dir.as_ref().is_some_and(|d| names_container(d.as_str()))
        }
        Action::MoveMount {
            from_path, to_path, ..
        } => names_container(from_path.as_str()) || names_container(to_path.as_str()),
        Action::PivotRoot { new_root, put_old } => {
            names_container(new_root.as_str()) || names_container(put_old.as_str())
        }
        _ => false,
    }
}

/// One path is the other or lies below it (a bind of /var/lib/docker copies every container mount
/// under it; an umount of .../merged names the container's mount).
fn path_overlaps(a: &str, b: &str) -> bool {
    let below = |inner: &str, outer: &str| {
        let outer = outer.trim_end_matches('/');
        inner == outer
            || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
    };
    b.len() > 1 && (below(a, b) || below(b, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_on_component_boundaries() {
        assert!(path_overlaps(
            "/var/lib/docker/overlay2/x/merged",
            "/var/lib/docker"
        ));
        assert!(path_overlaps(
            "/var/lib/docker",
            "/var/lib/docker/overlay2/x/merged"
        ));
        assert!(!path_overlaps("/var/lib/dockerfoo", "/var/lib/docker"));
        assert!(!path_overlaps("/x", "/"));
    }
}
