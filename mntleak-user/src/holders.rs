//! `mntleak-trace holders`: who holds a mount or a namespace now, with no trace running.
//!
//! One scan of the system ([`crate::snapshot::scan_system`]: every mount namespace by
//! `NS_MNT_GET_NEXT`, its mounts by `listmount`/`statmount`), then pure matching
//! ([`find_holders`], [`find_stranded`]) that returns data; printing is separate.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::model::{ContainerInfo, MntNs, MountInfo, Propagation};
use crate::report::escape::escape;
use crate::snapshot::{ScannedNs, SystemScan};
use crate::sys::proc::{NsFdRef, ProcInfo};
use crate::sys::{ScanMethod, nsfs, proc};

/// Who holds a mount or a namespace now: every mount namespace is searched, including ones with
/// no process in them.
#[derive(clap::Args, Debug, Clone)]
pub struct HoldersArgs {
    /// A path, a mount id, a container id or name, a device (/dev/loop0, 8:16), or a network
    /// namespace (/run/netns/NAME, net:[INODE] or its inode number).
    #[arg(required_unless_present = "stranded", conflicts_with = "stranded")]
    pub target: Option<String>,
    /// Scan for container mounts (overlay merged, shm, /run/netns/cni-*, kubelet volumes) that live
    /// on in other namespaces after their owner removed them.
    #[arg(long)]
    pub stranded: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: crate::container::RuntimeArgs,
}

/// What the user asked about, resolved.
#[derive(Clone, Debug)]
pub enum Target {
    /// Mounts at this path (and copies of the host's mount there, wherever they sit).
    Path(String),
    MountId(u64),
    /// Filesystems on these devices (a disk and its partitions).
    Device(Vec<(u32, u32)>),
    /// What keeps this network namespace (inode) alive.
    NetNs(u64),
    Container(Box<ContainerInfo>),
}

/// A process in a namespace that holds a mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HolderProc {
    pub pid: u32,
    pub comm: String,
    pub container: Option<String>,
    pub unit: Option<String>,
    /// Seconds since the Unix epoch.
    pub started: Option<u64>,
}

/// What keeps a namespace without processes alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pin {
    /// An nsfs bind mount of the namespace file, in namespace `in_ns_id`.
    NsfsMount {
        path: String,
        in_ns_id: u64,
        in_ns_inum: u32,
        /// A member of the namespace holding that mount, for `nsenter -t`.
        member_pid: Option<u32>,
    },
    /// An open file descriptor.
    Fd { pid: u32, fd: i32, comm: String },
    /// Nothing visible (a reference in the kernel or from another pid namespace).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MountRef {
    pub source: String,
    pub fstype: String,
    pub path: String,
    pub mnt_id: u64,
    pub dev: String,
}

/// One namespace holding one matching mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub ns_id: u64,
    pub ns_inum: u32,
    /// The owner's own namespace (the host, or the container's own): expected, not a leak.
    pub owner: bool,
    pub mount: MountRef,
    pub holders: Vec<HolderProc>,
    /// What keeps the namespace alive when no process is in it (empty when `holders` is not).
    pub pin: Vec<Pin>,
    /// "private", "shared:N", "slave of peer group N", "shared:N, slave of peer group M".
    pub propagation: String,
    /// Whether an umount by the owner (in its namespace) propagates here; `None` for the owner.
    pub reached_by_owner_umount: Option<bool>,
    /// Commands a person can run; never executed here.
    pub remediation: Vec<String>,
    /// For `--stranded`: why it is stranded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Processes inside a network namespace (for a netns target).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetNsKeepers {
    pub inum: u64,
    pub members: Vec<HolderProc>,
    pub fds: Vec<Pin>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HoldersReport {
    pub target: String,
    pub method: ScanMethod,
    pub host_ns: MntNs,
    pub namespaces_scanned: usize,
    pub elapsed_ms: f64,
    pub findings: Vec<Holding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetNsKeepers>,
}

impl HoldersReport {
    /// Holdings outside the owner's namespaces.
    pub fn foreign(&self) -> impl Iterator<Item = &Holding> {
        self.findings.iter().filter(|h| !h.owner)
    }
    pub fn is_clean(&self) -> bool {
        self.foreign().next().is_none()
            && self
                .netns
                .as_ref()
                .is_none_or(|n| n.members.is_empty() && n.fds.is_empty())
    }
}

/// Turn the argument into a [`Target`]. Numbers in the nsfs inode range (0xF0000000..2^32) are
/// network namespace inodes; other numbers are mount ids (64-bit or mountinfo's).
pub fn resolve_target(
    s: &str,
    resolve_container: &dyn Fn(&str) -> anyhow::Result<Option<ContainerInfo>>,
) -> anyhow::Result<Target> {
    if let Some(n) = proc::parse_ns_link(s, "net") {
        return Ok(Target::NetNs(n));
    }
    if let Some((a, b)) = s.split_once(':')
        && let (Ok(maj), Ok(min)) = (a.parse::<u32>(), b.parse::<u32>())
    {
        return Ok(Target::Device(with_partitions(maj, min)));
    }
    if let Ok(n) = s.parse::<u64>() {
        if (0xF000_0000..1u64 << 32).contains(&n) {
            return Ok(Target::NetNs(n));
        }
        return Ok(Target::MountId(n));
    }
    if s.starts_with('/') {
        let p = Path::new(s);
        if let Ok(md) = std::fs::metadata(p) {
            if md.file_type().is_block_device() {
                use std::os::unix::fs::MetadataExt;
                let rdev = md.rdev();
                return Ok(Target::Device(with_partitions(
                    libc::major(rdev),
                    libc::minor(rdev),
                )));
            }
            if let Ok(Some(ino)) = nsfs::nsfs_inode(p)
                && is_net_ns_file(p)
            {
                return Ok(Target::NetNs(ino));
            }
        }
        // Canonical when it exists; a removed directory is matched by its normalized name.
        let path = std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p));
        return Ok(Target::Path(path.to_string_lossy().into_owned()));
    }
    match resolve_container(s).with_context(|| format!("cannot look up container {s:?}"))? {
        Some(c) => Ok(Target::Container(Box::new(c))),
        None => anyhow::bail!(
            "{}: not a path, mount id, device, network namespace or known container",
            escape(s)
        ),
    }
}

fn is_net_ns_file(p: &Path) -> bool {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(p) else {
        return false;
    };
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the CLONE_NEW* type.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    t >= 0 && t as u64 == crate::uapi::CLONE_NEWNET
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// A block device and its partitions (from /sys/dev/block/M:m/*/dev).
fn with_partitions(maj: u32, min: u32) -> Vec<(u32, u32)> {
    let mut out = vec![(maj, min)];
    if let Ok(dir) = std::fs::read_dir(format!("/sys/dev/block/{maj}:{min}")) {
        for e in dir.flatten() {
            if !e.path().join("partition").exists() {
                continue;
            }
            if let Ok(d) = std::fs::read_to_string(e.path().join("dev"))
                && let Some((a, b)) = d.trim().split_once(':')
                && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            {
                out.push((a, b));
            }
        }
    }
    out
}

/// Facts shared by the matchers, computed once per scan.
struct Ctx<'a> {
    scan: &'a SystemScan,
    procs: HashMap<u32, &'a ProcInfo>,
    ns_fds: Vec<NsFdRef>,
}

impl<'a> Ctx<'a> {
    fn new(scan: &'a SystemScan, ns_fds: Vec<NsFdRef>) -> Self {
        Self {
            scan,
            procs: scan.processes.iter().map(|p| (p.pid, p)).collect(),
            ns_fds,
        }
    }

    fn holder(&self, pid: u32) -> HolderProc {
        let p = self.procs.get(&pid);
        let owner = p
            .map(|p| proc::owner_of_cgroup(&p.cgroup))
            .unwrap_or_default();
        HolderProc {
            pid,
            comm: p.map(|p| p.comm.text.clone()).unwrap_or_default(),
            container: owner.container_id,
            unit: owner.systemd_unit,
            started: p.and_then(|p| p.start_time),
        }
    }

    /// What keeps a namespace without members alive: nsfs mounts of it anywhere, fds to it.
    fn pins(&self, ns: &ScannedNs) -> Vec<Pin> {
        let root = format!("mnt:[{}]", ns.ns.inum);
        let mut pins = Vec::new();
        for other in &self.scan.namespaces {
            for m in &other.mounts {
                if m.fstype.as_str() == "nsfs" && m.root.as_str() == root {
                    pins.push(Pin::NsfsMount {
                        path: m.mountpoint.text.clone(),
                        in_ns_id: other.ns.id,
                        in_ns_inum: other.ns.inum,
                        member_pid: other.pids.first().copied(),
                    });
                }
            }
        }
        for r in &self.ns_fds {
            if r.kind == "mnt" && r.inum == ns.ns.inum as u64 {
                pins.push(Pin::Fd {
                    pid: r.pid,
                    fd: r.fd,
                    comm: self.holder(r.pid).comm,
                });
            }
        }
        if pins.is_empty() {
            pins.push(Pin::Unknown);
        }
        pins
    }

    fn holding(
        &self,
        ns: &ScannedNs,
        m: &MountInfo,
        owner: bool,
        reach: &HashSet<u32>,
        reason: Option<String>,
    ) -> Holding {
        let holders: Vec<HolderProc> = ns.pids.iter().map(|&p| self.holder(p)).collect();
        let pin = if holders.is_empty() {
            self.pins(ns)
        } else {
            Vec::new()
        };
        let reached = (!owner).then(|| {
            m.propagation.shared.is_some_and(|g| reach.contains(&g))
                || m.propagation.master.is_some_and(|g| reach.contains(&g))
        });
        let remediation = if owner {
            Vec::new()
        } else {
            remediation(&holders, &pin, m.mountpoint.as_str(), self.scan.host_ns.id)
        };
        Holding {
            ns_id: ns.ns.id,
            ns_inum: ns.ns.inum,
            owner,
            mount: MountRef {
                source: m.source.text.clone(),
                fstype: m.fstype.text.clone(),
                path: m.mountpoint.text.clone(),
                mnt_id: m.mnt_id,
                dev: format!("{}:{}", m.dev_major, m.dev_minor),
            },
            holders,
            pin,
            propagation: propagation_text(&m.propagation),
            reached_by_owner_umount: reached,
            remediation,
            reason,
        }
    }
}

pub fn propagation_text(p: &Propagation) -> String {
    let mut parts = Vec::new();
    if let Some(s) = p.shared {
        parts.push(format!("shared:{s}"));
    }
    if let Some(m) = p.master {
        parts.push(format!("slave of peer group {m}"));
    }
    if p.unbindable {
        parts.push("unbindable".to_string());
    }
    if parts.is_empty() {
        "private".to_string()
    } else {
        parts.join(", ")
    }
}

/// Peer groups an umount of the owner's mounts propagates to: their own groups, plus every group
/// that is (transitively) a slave of one of them.
fn reach_groups(scan: &SystemScan, owner_mounts: &[&MountInfo]) -> HashSet<u32> {
    let mut g: HashSet<u32> = owner_mounts
        .iter()
        .filter_map(|m| m.propagation.shared)
        .collect();
    loop {
        let before = g.len();
        for ns in &scan.namespaces {
            for m in &ns.mounts {
                if let (Some(s), Some(master)) = (m.propagation.shared, m.propagation.master)
                    && g.contains(&master)
                {
                    g.insert(s);
                }
            }
        }
        if g.len() == before {
            return g;
        }
    }
}

/// Single-quote for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+=@,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn remediation(holders: &[HolderProc], pins: &[Pin], path: &str, host_ns: u64) -> Vec<String> {
    let q = shell_quote(path);
    let mut out = Vec::new();
    if let Some(h) = holders.first() {
        out.push(format!("nsenter -t {} -m umount -l {q}", h.pid));
    }
    let mut seen = BTreeSet::new();
    for h in holders {
        if let Some(c) = &h.container
            && seen.insert(c.clone())
        {
            out.push(format!("docker restart {c}"));
        } else if let Some(u) = &h.unit
            && seen.insert(u.clone())
        {
            out.push(format!("systemctl restart {u}"));
        }
    }
    for p in pins {
        match p {
            Pin::NsfsMount {
                path: pin_path,
                in_ns_id,
                member_pid,
                ..
            } => {
                let pq = shell_quote(pin_path);
                if *in_ns_id == host_ns {
                    out.push(format!("nsenter --mount={pq} umount -l {q}"));
                    out.push(format!("umount {pq}"));
                } else if let Some(pid) = member_pid {
                    out.push(format!("nsenter -t {pid} -m umount {pq}"));
                }
            }
            Pin::Fd { pid, fd, .. } => {
                out.push(format!("nsenter --mount=/proc/{pid}/fd/{fd} umount -l {q}"));
                out.push(format!("kill {pid}"));
            }
            Pin::Unknown => {}
        }
    }
    out
}

/// Everything holding `target`, from one scan. Pure apart from reading /proc/*/fd once.
pub fn find_holders(scan: &SystemScan, target: &Target) -> HoldersReport {
    let t0 = std::time::Instant::now();
    let ns_fds = proc::fds_pointing_to_ns(&["mnt", "net"]).unwrap_or_default();
    let ctx = Ctx::new(scan, ns_fds);
    let host = scan.host_ns.id;
    let host_mounts: &[MountInfo] = scan.ns(host).map_or(&[], |n| &n.mounts);

    let mut owners: HashSet<u64> = HashSet::from([host]);
    let mut netns = None;
    // The identity of the owner's mount (dev, root) when it still exists, to find copies whose
    // mountpoint differs (after pivot_root).
    let matcher: Box<dyn Fn(&MountInfo) -> bool> = match target {
        Target::Path(p) => {
            let top = host_mounts
                .iter()
                .rev()
                .find(|m| m.mountpoint.as_str() == p);
            let id = top.map(|m| (m.dev_major, m.dev_minor, m.root.text.clone()));
            let p = p.clone();
            Box::new(move |m: &MountInfo| {
                m.mountpoint.as_str() == p
                    || id.as_ref().is_some_and(|(a, b, r)| {
                        m.dev_major == *a && m.dev_minor == *b && m.root.as_str() == r && r != "/"
                    })
            })
        }
        Target::MountId(id) => {
            let found = scan.namespaces.iter().find_map(|n| {
                n.mounts
                    .iter()
                    .find(|m| m.mnt_id == *id || m.mnt_id_old as u64 == *id)
                    .map(|m| (n.ns.id, m.clone()))
            });
            match found {
                Some((ns, m)) => {
                    owners = HashSet::from([ns]);
                    let (mp, d) = (m.mountpoint.text, (m.dev_major, m.dev_minor, m.root.text));
                    Box::new(move |x: &MountInfo| {
                        x.mountpoint.as_str() == mp
                            || (x.dev_major, x.dev_minor) == (d.0, d.1) && x.root.as_str() == d.2
                    })
                }
                None => Box::new(|_| false),
            }
        }
        Target::Device(devs) => {
            let devs = devs.clone();
            Box::new(move |m: &MountInfo| devs.contains(&(m.dev_major, m.dev_minor)))
        }
        Target::NetNs(inum) => {
            netns = Some(net_keepers(&ctx, *inum));
            let root = format!("net:[{inum}]");
            Box::new(move |m: &MountInfo| m.fstype.as_str() == "nsfs" && m.root.as_str() == root)
        }
        Target::Container(c) => {
            if c.mnt_ns.id != 0 {
                owners.insert(c.mnt_ns.id);
            }
            let paths: HashSet<String> = c.mount_paths.iter().cloned().collect();
            let net = (c.net_ns_inum != 0).then(|| format!("net:[{}]", c.net_ns_inum));
            Box::new(move |m: &MountInfo| {
                paths.contains(m.mountpoint.as_str())
                    || net
                        .as_deref()
                        .is_some_and(|r| m.fstype.as_str() == "nsfs" && m.root.as_str() == r)
            })
        }
    };
    let owner_mounts: Vec<&MountInfo> = scan
        .namespaces
        .iter()
        .filter(|n| owners.contains(&n.ns.id))
        .flat_map(|n| n.mounts.iter().filter(|m| matcher(m)))
        .collect();
    let reach = reach_groups(scan, &owner_mounts);
    let mut findings = Vec::new();
    for ns in &scan.namespaces {
        for m in ns.mounts.iter().filter(|m| matcher(m)) {
            findings.push(ctx.holding(ns, m, owners.contains(&ns.ns.id), &reach, None));
        }
    }
    HoldersReport {
        target: target_text(target),
        method: scan.method,
        host_ns: scan.host_ns,
        namespaces_scanned: scan.namespaces.len(),
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        findings,
        netns,
    }
}

fn net_keepers(ctx: &Ctx, inum: u64) -> NetNsKeepers {
    NetNsKeepers {
        inum,
        members: ctx
            .scan
            .processes
            .iter()
            .filter(|p| p.net_ns_inum == Some(inum))
            .map(|p| ctx.holder(p.pid))
            .collect(),
        fds: ctx
            .ns_fds
            .iter()
            .filter(|r| r.kind == "net" && r.inum == inum)
            .map(|r| Pin::Fd {
                pid: r.pid,
                fd: r.fd,
                comm: ctx.holder(r.pid).comm,
            })
            .collect(),
    }
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Path(p) => p.clone(),
        Target::MountId(id) => format!("mount {id}"),
        Target::Device(d) => d
            .iter()
            .map(|(a, b)| format!("{a}:{b}"))
            .collect::<Vec<_>>()
            .join(","),
        Target::NetNs(i) => format!("net:[{i}]"),
        Target::Container(c) => format!("container {}", c.id),
    }
}

/// Whether a mount looks like a container runtime's: overlay rootfs, runtime shm, CNI netns file,
/// kubelet volume.
pub fn container_looking(m: &MountInfo) -> bool {
    let mp = m.mountpoint.as_str();
    let fs = m.fstype.as_str();
    (fs == "overlay" && mp.ends_with("/merged"))
        || (mp.ends_with("/shm")
            && [
                "/var/lib/docker/containers/",
                "/run/containerd/",
                "/var/run/containerd/",
            ]
            .iter()
            .any(|p| mp.starts_with(p)))
        || (fs == "nsfs"
            && (mp.starts_with("/run/netns/cni-") || mp.starts_with("/var/run/netns/")))
        || mp.starts_with("/var/lib/kubelet/pods/")
}

/// `--stranded`: container-looking mounts in namespaces other than the host's that the host no
/// longer has (unmounted, or the mountpoint itself removed).
pub fn find_stranded(scan: &SystemScan) -> HoldersReport {
    let t0 = std::time::Instant::now();
    let ctx = Ctx::new(scan, proc::fds_pointing_to_ns(&["mnt"]).unwrap_or_default());
    let host = scan.host_ns.id;
    let host_points: HashSet<(&str, &str)> = scan.ns(host).map_or_else(HashSet::new, |n| {
        n.mounts
            .iter()
            .map(|m| (m.mountpoint.as_str(), m.fstype.as_str()))
            .collect()
    });
    let none = HashSet::new();
    let mut findings = Vec::new();
    for ns in scan.namespaces.iter().filter(|n| n.ns.id != host) {
        for m in ns.mounts.iter().filter(|m| container_looking(m)) {
            if host_points.contains(&(m.mountpoint.as_str(), m.fstype.as_str())) {
                continue;
            }
            let reason = if Path::new(m.mountpoint.as_str()).exists() {
                "not mounted in the host namespace any more"
            } else {
                "its mountpoint no longer exists in the host namespace"
            };
            findings.push(ctx.holding(ns, m, false, &none, Some(reason.to_string())));
        }
    }
    HoldersReport {
        target: "--stranded".to_string(),
        method: scan.method,
        host_ns: scan.host_ns,
        namespaces_scanned: scan.namespaces.len(),
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
        findings,
        netns: None,
    }
}

/// Scan and match in one call: what the CLI and the tests use.
pub fn holders_of(target: Option<&Target>) -> Result<HoldersReport, crate::sys::SysError> {
    let t0 = std::time::Instant::now();
    let scan = crate::snapshot::scan_system()?;
    let mut r = match target {
        Some(t) => find_holders(&scan, t),
        None => find_stranded(&scan),
    };
    r.elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(r)
}

/// The subcommand. Exit 0 when nothing outside the owner's namespaces holds the target, 1 when
/// something does.
pub fn run(
    args: &HoldersArgs,
    resolve_container: &dyn Fn(&str) -> anyhow::Result<Option<ContainerInfo>>,
) -> anyhow::Result<ExitCode> {
    let target = match (&args.target, args.stranded) {
        (Some(t), false) => Some(resolve_target(t, resolve_container)?),
        _ => None,
    };
    let report = holders_of(target.as_ref()).context("cannot scan mount namespaces")?;
    let out = if args.json {
        serde_json::to_string(&report)? + "\n"
    } else {
        render_text(&report)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(e).context("cannot write to stdout"));
        }
        _ => {}
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The text report.
pub fn render_text(r: &HoldersReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(
        s,
        "# {} mount namespaces scanned with {} in {:.1} ms",
        r.namespaces_scanned,
        r.method.describe(),
        r.elapsed_ms
    );
    if r.is_clean() && r.target == "--stranded" {
        let _ = writeln!(s, "no stranded container mounts");
    } else if r.is_clean() {
        let _ = writeln!(
            s,
            "nothing holds {} outside its owner's namespace",
            escape(&r.target)
        );
    }
    for h in &r.findings {
        let _ = writeln!(
            s,
            "{} mount namespace {} (id {}): {} {} on {} [{}]{}",
            if h.owner { "owner" } else { "HELD" },
            h.ns_inum,
            h.ns_id,
            escape(&h.mount.fstype),
            escape(&h.mount.source),
            escape(&h.mount.path),
            h.propagation,
            h.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        if h.owner {
            continue;
        }
        for p in h.holders.iter().take(10) {
            let _ = writeln!(s, "  member: {}", holder_text(p, now));
        }
        if h.holders.len() > 10 {
            let _ = writeln!(s, "  ... and {} more members", h.holders.len() - 10);
        }
        for p in &h.pin {
            let _ = writeln!(s, "  no process inside; pinned by {}", pin_text(p));
        }
        match h.reached_by_owner_umount {
            Some(true) => {
                let _ = writeln!(s, "  the owner's umount propagates here");
            }
            Some(false) => {
                let _ = writeln!(s, "  the owner's umount does NOT reach this copy");
            }
            None => {}
        }
        for c in &h.remediation {
            let _ = writeln!(s, "  fix: {}", escape(c));
        }
    }
    if let Some(n) = &r.netns {
        for p in &n.members {
            let _ = writeln!(s, "net:[{}] has member {}", n.inum, holder_text(p, now));
        }
        for p in &n.fds {
            let _ = writeln!(s, "net:[{}] pinned by {}", n.inum, pin_text(p));
        }
    }
    s
}

fn holder_text(p: &HolderProc, now: u64) -> String {
    let mut t = format!("pid {} {}", p.pid, escape(&p.comm));
    if let Some(c) = &p.container {
        let _ = std::fmt::Write::write_fmt(
            &mut t,
            format_args!(" container {}", &c[..c.len().min(12)]),
        );
    }
    if let Some(u) = &p.unit {
        t.push_str(&format!(" unit {}", escape(u)));
    }
    if let Some(st) = p.started {
        t.push_str(&format!(", started {}s ago", now.saturating_sub(st)));
    }
    t
}

fn pin_text(p: &Pin) -> String {
    match p {
        Pin::NsfsMount {
            path,
            in_ns_id,
            in_ns_inum,
            ..
        } => format!(
            "nsfs mount {} in mount namespace {} (id {})",
            escape(path),
            in_ns_inum,
            in_ns_id
        ),
        Pin::Fd { pid, fd, comm } => format!("fd {fd} of pid {pid} {}", escape(comm)),
        Pin::Unknown => "nothing visible (a kernel reference or another pid namespace)".to_string(),
    }
}
