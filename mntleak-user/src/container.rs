//! Containers on this host: Docker (Engine API on its unix socket) and containerd (every namespace,
//! `k8s.io` included, read from its task state directory). Turns `--container <id|prefix|name>` into
//! a [`ContainerInfo`]: init pid, namespaces, the host paths of its mounts, cgroup and pod labels.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::model::ContainerInfo;

/// Where to find the container runtimes.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct RuntimeArgs {
    /// Docker Engine API socket
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: PathBuf,
    /// containerd state directory (holds io.containerd.runtime.v2.task/<namespace>/<id>/); the one
    /// of a dockerd-managed containerd, /run/docker/containerd/daemon, is read as well
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONTAINERD_STATE)]
    pub containerd_state: PathBuf,
}

pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
pub const DEFAULT_CONTAINERD_STATE: &str = "/run/containerd";
/// The state directory of the containerd that dockerd starts itself when no system one runs.
pub const DOCKER_MANAGED_CONTAINERD_STATE: &str = "/run/docker/containerd/daemon";

impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            docker_socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            containerd_state: PathBuf::from(DEFAULT_CONTAINERD_STATE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot talk to docker on {}: {source}", socket.display())]
    Docker {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("docker on {} answered GET {path} with {status}: {message}", socket.display())]
    DockerHttp {
        socket: PathBuf,
        path: String,
        status: u16,
        message: String,
    },
    #[error("docker on {} sent a bad answer to GET {path}: {reason}", socket.display())]
    DockerProtocol {
        socket: PathBuf,
        path: String,
        reason: String,
    },
    #[error("cannot read containerd state {}: {source}", path.display())]
    Containerd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no container matches {query:?} ({candidates})")]
    NotFound { query: String, candidates: String },
    #[error("{query:?} is ambiguous: {candidates}")]
    Ambiguous { query: String, candidates: String },
}

/// Every container of both runtimes; a runtime that is not installed or not running gives none.
/// A container known to Docker is listed once, with Docker's richer view (its containerd `moby`
/// task, when the state directory is dockerd's own, is the same container).
pub fn list_containers(rt: &RuntimeArgs) -> Result<Vec<ContainerInfo>, ContainerError> {
    let mut all = docker_containers(&rt.docker_socket)?;
    let mut states = vec![rt.containerd_state.clone()];
    // dockerd starts a containerd of its own when none runs at the default socket; its tasks (ctr
    // ones too) live in another state directory, and they are containers of this host as well.
    let docker_managed = PathBuf::from(DOCKER_MANAGED_CONTAINERD_STATE);
    if !states.contains(&docker_managed) && docker_managed.is_dir() {
        states.push(docker_managed);
    }
    for state in &states {
        for c in containerd_containers(state)? {
            if !all.iter().any(|d| d.id == c.id) {
                all.push(c);
            }
        }
    }
    Ok(all)
}

/// The container `query` names: a full id, a unique id prefix, or a name.
pub fn resolve(rt: &RuntimeArgs, query: &str) -> Result<ContainerInfo, ContainerError> {
    match_query(&list_containers(rt)?, query)
}

/// [`resolve`] against a known list (the containers recorded in a capture, for replay). Exact id or
/// name matches win over prefixes; several exact matches (a Docker name equal to a containerd id) are
/// ambiguous. Repeated entries for one container (several records in a capture) count once: the last.
pub fn match_query(known: &[ContainerInfo], query: &str) -> Result<ContainerInfo, ContainerError> {
    let mut uniq: Vec<&ContainerInfo> = Vec::new();
    for c in known {
        // One id is one container even if recorded through two runtimes (docker and its
        // containerd's `moby` namespace while dockerd restarts): Docker's view wins.
        match uniq.iter_mut().find(|u| u.id == c.id) {
            Some(u) if u.runtime == "docker" && c.runtime != "docker" => {}
            Some(u) => *u = c,
            None => uniq.push(c),
        }
    }
    let query_trim = query.trim();
    let q = query_trim.strip_prefix('/').unwrap_or(query_trim);
    if !q.is_empty() {
        let exact: Vec<&ContainerInfo> = uniq
            .iter()
            .copied()
            .filter(|c| c.id == q || c.name == q)
            .collect();
        let found = if exact.is_empty() {
            uniq.iter()
                .copied()
                .filter(|c| c.id.starts_with(q))
                .collect()
        } else {
            exact
        };
        match found.len() {
            0 => {}
            1 => return Ok(found[0].clone()),
            _ => {
                return Err(ContainerError::Ambiguous {
                    query: query.to_owned(),
                    candidates: describe(&found),
                });
            }
        }
    }
    Err(ContainerError::NotFound {
        query: query.to_owned(),
        candidates: if uniq.is_empty() {
            "no containers are running".to_owned()
        } else {
            describe(&uniq)
        },
    })
}

/// One line naming containers: `docker: 3f2a1b2c3d4e web, containerd/k8s.io: nginx-1`.
fn describe(list: &[&ContainerInfo]) -> String {
    const MAX: usize = 20;
    let mut parts: Vec<String> = list
        .iter()
        .take(MAX)
        .map(|c| {
            // Digest ids are shortened as docker shows them; a containerd id is a name, kept whole.
            let digest = c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit());
            let short: String = if digest {
                c.id.chars().take(12).collect()
            } else {
                c.id.clone()
            };
            let mut s = format!("{}: {short}", c.runtime);
            if !c.name.is_empty() && c.name != c.id {
                s.push(' ');
                s.push_str(&c.name);
            }
            if let Some(pod) = &c.pod_name {
                s.push_str(&format!(" (pod {pod})"));
            }
            // Names come from runtimes: keep the error on one line whatever they contain.
            s.chars()
                .map(|ch| if ch.is_control() { '?' } else { ch })
                .collect()
        })
        .collect();
    if list.len() > MAX {
        parts.push(format!("and {} more", list.len() - MAX));
    }
    parts.join(", ")
}

/// The container id in a `/proc/<pid>/cgroup` path, for the layouts of Docker (cgroupfs and systemd
/// drivers), containerd/CRI, CRI-O, podman and Kubernetes' cgroupfs driver. Ids are 64 hex digits;
/// the innermost component that holds one wins (a container's own sub-cgroups sit below it).
pub fn container_of_cgroup(cgroup_path: &str) -> Option<String> {
    crate::sys::proc::container_id_of_cgroup(cgroup_path)
}

// ---------------------------------------------------------------------------------------------
// Docker

/// GET `path` from the Docker Engine API and return the body.
///
/// A hand-written HTTP/1.1 client rather than hyper: we make a few synchronous GETs per run (one
/// list, one inspect per container) and need no async stack, TLS or connection pool for it.
pub fn docker_get(socket: &Path, path: &str) -> Result<Vec<u8>, ContainerError> {
    let io_err = |source| ContainerError::Docker {
        socket: socket.to_owned(),
        source,
    };
    let proto = |reason: String| ContainerError::DockerProtocol {
        socket: socket.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    // A wedged daemon must not hang the tracer's start.
    let timeout = Some(Duration::from_secs(10));
    stream.set_read_timeout(timeout).map_err(io_err)?;
    stream.set_write_timeout(timeout).map_err(io_err)?;
    // `Connection: close` lets us read to EOF; the body framing is still honoured below.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: mntleak\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io_err)?;
    let (status, body) = parse_http_response(&raw).map_err(proto)?;
    if status != 200 {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        return Err(ContainerError::DockerHttp {
            socket: socket.to_owned(),
            path: path.to_owned(),
            status,
            message,
        });
    }
    Ok(body)
}

/// Split an HTTP/1.1 response into status and decoded body (chunked or Content-Length or to EOF).
fn parse_http_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            );
        }
    }
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("body cut short: {} of {n} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("chunk size line not terminated")?;
        let size_field = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        // Chunk extensions (`;name=value`) are allowed and ignored.
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(chunk);
        data = data.get(size..).ok_or("chunk cut short")?;
        data = data
            .strip_prefix(b"\r\n")
            .ok_or("chunk not followed by CRLF")?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn docker_json(socket: &Path, path: &str) -> Result<Value, ContainerError> {
    let body = docker_get(socket, path)?;
    serde_json::from_slice(&body).map_err(|e| ContainerError::DockerProtocol {
        socket: socket.to_owned(),
        path: path.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })
}

fn docker_containers(socket: &Path) -> Result<Vec<ContainerInfo>, ContainerError> {
    let list = match docker_json(socket, "/containers/json?all=1") {
        Ok(v) => v,
        // No socket, or a stale one after dockerd stopped: Docker is simply not running.
        Err(ContainerError::Docker { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for item in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(id) = item.get("Id").and_then(Value::as_str) else {
            continue;
        };
        if !is_safe_id(id) {
            continue;
        }
        match docker_json(socket, &format!("/containers/{id}/json")) {
            Ok(inspect) => out.push(docker_info(&inspect)),
            // Removed between the list and the inspect.
            Err(ContainerError::DockerHttp { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// An id we put into a URL path unescaped.
fn is_safe_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn docker_info(v: &Value) -> ContainerInfo {
    let s = |ptr: &str| {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let id = s("/Id");
    let init_pid = v.pointer("/State/Pid").and_then(Value::as_u64).unwrap_or(0) as u32;
    let merged = s("/GraphDriver/Data/MergedDir");
    let mut paths = Vec::new();
    push_path(&mut paths, &merged);
    // Only with `--ipc shareable` (or a container joining its ipc) does Docker mount shm on the host.
    let shm = format!("/var/lib/docker/containers/{id}/mounts/shm");
    if Path::new(&shm).exists() {
        push_path(&mut paths, &shm);
    }
    for key in ["/ResolvConfPath", "/HostsPath", "/HostnamePath"] {
        push_path(&mut paths, &s(key));
    }
    for m in v
        .pointer("/Mounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
        push_source(&mut paths, get("Source"));
        push_target(&mut paths, &merged, get("Destination"));
    }
    push_path(&mut paths, &s("/NetworkSettings/SandboxKey"));
    let labels = v.pointer("/Config/Labels").cloned().unwrap_or(Value::Null);
    let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut info = ContainerInfo {
        name: s("/Name").trim_start_matches('/').to_owned(),
        id,
        runtime: "docker".to_owned(),
        init_pid,
        mount_paths: paths,
        pod_name: label("io.kubernetes.pod.name"),
        pod_namespace: label("io.kubernetes.pod.namespace"),
        pod_uid: label("io.kubernetes.pod.uid"),
        ..Default::default()
    };
    fill_from_proc(&mut info);
    info
}

// ---------------------------------------------------------------------------------------------
// containerd

/// Tasks from containerd's state directory: `<state>/io.containerd.runtime.v2.task/<ns>/<id>/` with
/// the OCI `config.json` and the shim's `init.pid`. Reading the state needs no gRPC client and works
/// while containerd itself is restarting.
fn containerd_containers(state: &Path) -> Result<Vec<ContainerInfo>, ContainerError> {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    let Some(namespaces) = read_dir_opt(&tasks)? else {
        return Ok(out);
    };
    for ns_dir in namespaces {
        let Some(ns) = ns_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        for task_dir in read_dir_opt(&ns_dir)?.unwrap_or_default() {
            // A task being created or deleted may lack its files: skip it rather than fail.
            if let Some(info) = containerd_task(&ns, &task_dir)? {
                out.push(info);
            }
        }
    }
    Ok(out)
}

/// The entries of `dir`, sorted; `None` when it does not exist.
fn read_dir_opt(dir: &Path) -> Result<Option<Vec<PathBuf>>, ContainerError> {
    let err = |source| ContainerError::Containerd {
        path: dir.to_owned(),
        source,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut v = Vec::new();
    for entry in rd {
        let entry = entry.map_err(err)?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            v.push(entry.path());
        }
    }
    v.sort();
    Ok(Some(v))
}

fn containerd_task(ns: &str, dir: &Path) -> Result<Option<ContainerInfo>, ContainerError> {
    let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
        return Ok(None);
    };
    let config_path = dir.join("config.json");
    let spec: Value = match std::fs::read(&config_path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            // Being written by the shim right now.
            Err(_) => return Ok(None),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ContainerError::Containerd {
                path: config_path,
                source,
            });
        }
    };
    let init_pid = std::fs::read_to_string(dir.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let annotations: BTreeMap<String, String> = spec
        .get("annotations")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    // `io.kubernetes.pod.*` are the kubelet's labels; CRI writes the sandbox's as `io.kubernetes.cri.*`.
    let ann = |keys: &[&str]| keys.iter().find_map(|k| annotations.get(*k).cloned());
    let rootfs = match spec.pointer("/root/path").and_then(Value::as_str) {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => dir.join(p),
        None => dir.join("rootfs"),
    };
    let rootfs = rootfs.to_string_lossy().into_owned();
    let mut paths = Vec::new();
    push_path(&mut paths, &rootfs);
    for m in spec
        .get("mounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
        let is_bind = get("type") == "bind"
            || m.get("options").and_then(Value::as_array).is_some_and(|o| {
                o.iter()
                    .any(|x| matches!(x.as_str(), Some("bind" | "rbind")))
            });
        if is_bind {
            push_source(&mut paths, get("source"));
            push_target(&mut paths, &rootfs, get("destination"));
        }
    }
    let netns = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|nss| {
            nss.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
                .and_then(|n| n.get("path").and_then(Value::as_str))
        })
        .unwrap_or_default();
    push_path(&mut paths, netns);
    let mut info = ContainerInfo {
        name: ann(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ])
        .unwrap_or_else(|| id.clone()),
        id,
        runtime: format!("containerd/{ns}"),
        init_pid,
        mount_paths: paths,
        pod_name: ann(&["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"]),
        pod_namespace: ann(&[
            "io.kubernetes.pod.namespace",
            "io.kubernetes.cri.sandbox-namespace",
        ]),
        pod_uid: ann(&["io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid"]),
        cgroup: spec
            .pointer("/linux/cgroupsPath")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        ..Default::default()
    };
    fill_from_proc(&mut info);
    Ok(Some(info))
}

// ---------------------------------------------------------------------------------------------
// Shared

/// Add a host path once, in the form mountinfo shows it (`/var/run` is a symlink to `/run`).
fn push_path(paths: &mut Vec<String>, p: &str) {
    if p.is_empty() {
        return;
    }
    let p = std::fs::canonicalize(p)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_owned());
    if !paths.contains(&p) {
        paths.push(p);
    }
}

/// A bind or volume source. A bind of `/` (host root exposed at `/rootfs`) is left out: it would make
/// every host mount look like the container's.
fn push_source(paths: &mut Vec<String>, src: &str) {
    if Path::new(src).is_absolute() && Path::new(src) != Path::new("/") {
        push_path(paths, src);
    }
}

/// A mount target as seen from the host: under the container's rootfs (where a copy of it lives).
fn push_target(paths: &mut Vec<String>, rootfs: &str, dest: &str) {
    if rootfs.is_empty() || dest.is_empty() {
        return;
    }
    let t = format!(
        "{}/{}",
        rootfs.trim_end_matches('/'),
        dest.trim_start_matches('/')
    );
    if !paths.contains(&t) {
        paths.push(t);
    }
}

/// Namespaces and cgroup of a running container, from its init process. A stopped one keeps zeros.
fn fill_from_proc(info: &mut ContainerInfo) {
    if info.init_pid == 0 {
        return;
    }
    let pid = info.init_pid;
    if let Ok(ns) = crate::sys::nsfs::mnt_ns_of_pid(pid) {
        info.mnt_ns = ns;
    }
    if let Ok(md) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
        info.net_ns_inum = md.ino() as u32;
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        && let Some(cg) = pick_cgroup(&text)
    {
        info.cgroup = cg;
    }
}

/// The cgroup path to report: the one naming a container id, else the unified (v2) one, else the
/// first non-root one (cgroup v1 and hybrid hosts list one line per hierarchy).
fn pick_cgroup(proc_cgroup: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hier = it.next()?;
            let _controllers = it.next()?;
            Some((hier, it.next()?))
        })
        .collect();
    entries
        .iter()
        .find(|(_, p)| container_of_cgroup(p).is_some())
        .or_else(|| entries.iter().find(|(h, p)| *h == "0" && *p != "/"))
        .or_else(|| entries.iter().find(|(_, p)| *p != "/"))
        .map(|(_, p)| (*p).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0ba39695b928b5e23bba870221d6bcf76cecfcc7551946a0917aa3c7aaf8f6a0";

    #[test]
    fn cgroup_forms() {
        for p in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/burstable/pod0f1e2d3c-aaaa-bbbb-cccc-000000000000/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(container_of_cgroup(&p).as_deref(), Some(ID), "{p}");
        }
        for p in [
            "/",
            "/system.slice/ntpd.service",
            "/process_api/b49a8ceaadd5991300ef00ddb3b86812",
            "/k8s.io/web",
        ] {
            assert_eq!(container_of_cgroup(p), None, "{p}");
        }
    }

    #[test]
    fn http_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(raw).unwrap(), (200, b"[1,2]".to_vec()));
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnopeEXTRA";
        assert_eq!(parse_http_response(raw).unwrap(), (404, b"nope".to_vec()));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_err()
        );
        assert!(parse_http_response(b"garbage").is_err());
    }

    fn c(id: &str, name: &str, runtime: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: name.into(),
            runtime: runtime.into(),
            ..Default::default()
        }
    }

    #[test]
    fn matching() {
        let known = vec![
            c("abc123", "web", "docker"),
            c("abd456", "db", "docker"),
            c("web", "web", "containerd/k8s.io"),
            c("abc123", "web", "docker"),
        ];
        assert_eq!(match_query(&known, "abd").unwrap().name, "db");
        assert_eq!(match_query(&known, "/db").unwrap().id, "abd456");
        assert_eq!(match_query(&known, "abc123").unwrap().name, "web");
        let e = match_query(&known, "ab").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"ab\" is ambiguous: docker: abc123 web, docker: abd456 db"
        );
        let e = match_query(&known, "web").unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("containerd/k8s.io: web"),
            "{e}"
        );
        let e = match_query(&known, "zz\n").unwrap_err();
        assert!(matches!(e, ContainerError::NotFound { .. }));
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(matches!(
            match_query(&known, ""),
            Err(ContainerError::NotFound { .. })
        ));
        assert!(matches!(
            match_query(&[], "x"),
            Err(ContainerError::NotFound { .. })
        ));
        // Seen through docker and through its containerd (`moby`): one container, docker's view.
        let twice = vec![
            c("f00d", "api", "docker"),
            c("f00d", "f00d", "containerd/moby"),
        ];
        assert_eq!(match_query(&twice, "f00").unwrap().runtime, "docker");
    }
}
