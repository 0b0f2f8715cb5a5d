//! Processes from /proc: identity, mount namespace, cgroup (and the container or systemd unit it
//! names), start time, and which processes hold an fd to a namespace.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::SysError;
use crate::model::{KStr, MntNs};

/// One process (thread group) as read from /proc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: KStr,
    /// `None` when /proc/<pid>/ns/mnt could not be read (EACCES, kernel threads).
    pub mnt_ns: Option<MntNs>,
    pub net_ns_inum: Option<u64>,
    /// The cgroup v2 path (or the first v1 path when there is no unified hierarchy).
    pub cgroup: String,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<u64>,
}

/// Who a cgroup belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub container_id: Option<String>,
    pub systemd_unit: Option<String>,
}

/// Every process except kernel threads. Processes that exit while being read are skipped.
pub fn processes() -> Result<Vec<ProcInfo>, SysError> {
    let all =
        procfs::process::all_processes().map_err(|e| SysError::parse("/proc", e.to_string()))?;
    let tps = procfs::ticks_per_second().max(1);
    let boot = procfs::boot_time_secs().ok();
    let mut out = Vec::new();
    for p in all.flatten() {
        let Ok(stat) = p.stat() else { continue };
        // Kernel threads (PF_KTHREAD) share the initial namespaces and hold nothing.
        if stat.flags & 0x0020_0000 != 0 {
            continue;
        }
        let pid = stat.pid as u32;
        out.push(ProcInfo {
            pid,
            ppid: stat.ppid as u32,
            comm: KStr::new(stat.comm.clone()),
            mnt_ns: super::nsfs::mnt_ns_of_pid(pid).ok(),
            net_ns_inum: ns_link_inum(&format!("/proc/{pid}/ns/net"), "net"),
            cgroup: cgroup_of(pid),
            start_time: boot.map(|b| b + stat.starttime / tps),
        });
    }
    Ok(out)
}

/// The inode in a `kind:[inode]` namespace link.
fn ns_link_inum(path: &str, kind: &str) -> Option<u64> {
    let l = std::fs::read_link(path).ok()?;
    parse_ns_link(l.to_str()?, kind)
}

/// Parse `mnt:[4026531832]`.
pub fn parse_ns_link(s: &str, kind: &str) -> Option<u64> {
    s.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn cgroup_of(pid: u32) -> String {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return String::new();
    };
    let mut fallback = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(h), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if h == "0" && ctrl.is_empty() && path != "/" {
            return path.to_string();
        }
        // On v1 hosts the interesting path is under a controller; prefer one that is not "/".
        if path != "/" && fallback.is_none() {
            fallback = Some(path.to_string());
        }
    }
    fallback.unwrap_or_else(|| "/".to_string())
}

/// Map a cgroup path to a container id and/or a systemd unit: `docker-<id>.scope`, `/docker/<id>`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `/kubepods/.../<id>`, `*.service`.
pub fn owner_of_cgroup(cgroup: &str) -> Owner {
    Owner {
        container_id: container_id_of_cgroup(cgroup),
        systemd_unit: cgroup
            .split('/')
            .rfind(|c| c.ends_with(".service"))
            .map(str::to_string),
    }
}

/// The container id in a cgroup path: `/docker/<id>`, `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>`, `libpod-<id>`, `/kubepods/.../<id>`.
pub fn container_id_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup.rsplit('/').find_map(|comp| {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        // The runtime prefixes end in '-': the id is after the last one.
        let id = comp.rsplit('-').next().unwrap_or(comp);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

/// One open fd that refers to a namespace file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsFdRef {
    pub pid: u32,
    pub fd: i32,
    /// "mnt", "net", ...
    pub kind: String,
    pub inum: u64,
}

/// Every fd, in every process, that points at a namespace of one of `kinds` (readlink of
/// /proc/*/fd/* is `mnt:[inode]`). Unreadable processes are skipped.
pub fn fds_pointing_to_ns(kinds: &[&str]) -> Result<Vec<NsFdRef>, SysError> {
    let mut out = Vec::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| SysError::io("read /proc", e))?;
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(t) = target.to_str() else { continue };
            for kind in kinds {
                if let Some(inum) = parse_ns_link(t, kind) {
                    out.push(NsFdRef {
                        pid,
                        fd: fd
                            .file_name()
                            .to_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(-1),
                        kind: kind.to_string(),
                        inum,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Group processes by mount namespace id.
pub fn members_by_ns(procs: &[ProcInfo]) -> HashMap<u64, Vec<u32>> {
    let mut m: HashMap<u64, Vec<u32>> = HashMap::new();
    for p in procs {
        if let Some(ns) = p.mnt_ns {
            m.entry(ns.id).or_default().push(p.pid);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let id = "a".repeat(64);
        let o = owner_of_cgroup(&format!("/system.slice/docker-{id}.scope"));
        assert_eq!(o.container_id.as_deref(), Some(id.as_str()));
        let o = owner_of_cgroup(&format!("/docker/{id}"));
        assert_eq!(o.container_id.as_deref(), Some(id.as_str()));
        let o = owner_of_cgroup(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{id}.scope"
        ));
        assert_eq!(o.container_id.as_deref(), Some(id.as_str()));
        let o = owner_of_cgroup(&format!("/kubepods/besteffort/pod1/{id}"));
        assert_eq!(o.container_id.as_deref(), Some(id.as_str()));
        let o = owner_of_cgroup("/system.slice/containerd.service");
        assert_eq!(o.systemd_unit.as_deref(), Some("containerd.service"));
        assert_eq!(o.container_id, None);
        assert_eq!(owner_of_cgroup("/"), Owner::default());
        assert_eq!(parse_ns_link("mnt:[4026531832]", "mnt"), Some(4026531832));
        assert_eq!(parse_ns_link("net:[1]", "mnt"), None);
    }
}
