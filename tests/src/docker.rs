//! A real dockerd (and its containerd, driven with `ctr`) for the end-to-end tests.
//!
//! `Docker::start()` reuses a dockerd that answers on `/var/run/docker.sock` or starts
//! `dockerd --iptables=false --bridge=none` in the background (it starts its own containerd, socket
//! `/run/docker/containerd/containerd.sock`, state `/run/docker/containerd/daemon`). The daemon is left
//! running when the test process ends, so each test binary pays the start-up once per machine.
//!
//! Images come from the host's static busybox, never from a registry: a rootfs tarball is built once
//! and `docker import`ed as `mntleak-busybox:latest`; for containerd the image is `docker save`d and
//! `ctr image import`ed (ctr wants an image archive, not a bare rootfs tarball).
//!
//! Scenario S1 needs dockerd in a namespace of its own: `Docker::stop_daemon()` then
//! `Docker::start_custom(&DockerdOpts { unshare_slave: true, live_restore: true, .. })`, and again for
//! the restart into a new namespace; `Docker::start()` afterwards gives the default daemon back.
//! Measured here: stopping a `--live-restore` dockerd also stops the containerd it started, the
//! `containerd-shim-runc-v2` processes keep the containers running, and the next dockerd starts a
//! new containerd (in its own namespace) that reconnects to them; same init pids.
//! Containers here: `--network none` (no bridge), never `--privileged` (fails on this VM).

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mntleak::container::RuntimeArgs;

pub const SOCKET: &str = "/var/run/docker.sock";
pub const PIDFILE: &str = "/var/run/docker.pid";
/// The image every test container runs.
pub const IMAGE: &str = "mntleak-busybox:latest";
/// The same image as containerd names it after `ctr image import`.
pub const CTR_IMAGE: &str = "docker.io/library/mntleak-busybox:latest";
/// The busybox rootfs tarball (`docker import` input), built once per machine.
pub const ROOTFS_TAR: &str = "/tmp/mntleak-busybox-rootfs.tar";
/// `docker save` of [`IMAGE`], the `ctr image import` input.
pub const IMAGE_TAR: &str = "/tmp/mntleak-busybox-image.tar";
/// Where a dockerd-managed containerd lives.
pub const DOCKER_CONTAINERD_SOCKET: &str = "/run/docker/containerd/containerd.sock";
pub const DOCKER_CONTAINERD_STATE: &str = "/run/docker/containerd/daemon";
/// A system containerd (used by dockerd instead of its own when it runs before dockerd starts).
pub const SYSTEM_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const SYSTEM_CONTAINERD_STATE: &str = "/run/containerd";

static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a dockerd of our own.
#[derive(Clone, Debug, Default)]
pub struct DockerdOpts {
    /// Run it as `unshare -m --propagation slave dockerd ...`: its mounts (and its containerd's)
    /// live in a private-ish namespace that only receives the host's.
    pub unshare_slave: bool,
    /// `--live-restore`: containers survive a dockerd restart.
    pub live_restore: bool,
    /// More dockerd flags.
    pub extra_args: Vec<String>,
    /// Log file; default `/tmp/mntleak-dockerd-<unix time>.log`.
    pub log: Option<PathBuf>,
}

/// A dockerd that answers on [`SOCKET`].
#[derive(Clone, Debug)]
pub struct Docker {
    pub socket: PathBuf,
    /// dockerd's pid (from its pid file).
    pub pid: u32,
    /// The log file when this process started it.
    pub log: Option<PathBuf>,
}

impl Docker {
    /// The default daemon: reuse a running one, else start `dockerd --iptables=false --bridge=none`.
    /// Ensures the busybox image.
    pub fn start() -> Result<Docker> {
        // Tests of one binary run on several threads: one start at a time.
        let _one = START_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let docker = if answers(Path::new(SOCKET)) {
            Docker {
                socket: SOCKET.into(),
                pid: dockerd_pid().unwrap_or(0),
                log: None,
            }
        } else {
            spawn_dockerd(&DockerdOpts::default())?
        };
        docker.ensure_image()?;
        Ok(docker)
    }

    /// A daemon with a custom setup. Fails if one already answers: call [`Docker::stop_daemon`] first.
    pub fn start_custom(opts: &DockerdOpts) -> Result<Docker> {
        let _one = START_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if answers(Path::new(SOCKET)) {
            bail!("a dockerd already answers on {SOCKET}: stop it first (Docker::stop_daemon)");
        }
        let docker = spawn_dockerd(opts)?;
        docker.ensure_image()?;
        Ok(docker)
    }

    /// Stop the running dockerd (SIGTERM, SIGKILL after 30 s) and wait until it is gone. With
    /// `--live-restore` its containerd and the containers keep running. No daemon: nothing to do.
    pub fn stop_daemon() -> Result<()> {
        let Some(pid) = dockerd_pid() else {
            return Ok(());
        };
        kill(pid, libc::SIGTERM);
        if !wait_gone(pid, STOP_TIMEOUT) {
            kill(pid, libc::SIGKILL);
            if !wait_gone(pid, Duration::from_secs(5)) {
                bail!("dockerd pid {pid} does not exit after SIGKILL");
            }
        }
        Ok(())
    }

    /// The dockerd pid: used by S1 to name the old and the new daemon.
    pub fn daemon_pid() -> Option<u32> {
        dockerd_pid()
    }

    /// `docker <args>` with its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let host = format!("unix://{}", self.socket.display());
        let mut full = vec!["-H", &host];
        full.extend_from_slice(args);
        run_cmd("docker", &full)
    }

    /// `docker run -d --network none <args>` (args end with the image and command); the full id.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["run", "-d", "--network", "none"];
        full.extend_from_slice(args);
        let id = self.cli(&full)?;
        if id.len() != 64 {
            bail!("docker run {args:?} printed {id:?}, not a container id");
        }
        Ok(id)
    }

    /// `docker run` of [`IMAGE`] running `sleep` forever; `args` are flags (name, volumes, ...).
    pub fn run_sleeper(&self, args: &[&str]) -> Result<String> {
        let mut full = args.to_vec();
        full.extend_from_slice(&[IMAGE, "sleep", "1000000"]);
        self.run(&full)
    }

    /// `docker rm -f <id>`; a container that is already gone is fine.
    pub fn rm_f(&self, id: &str) -> Result<()> {
        match self.cli(&["rm", "-f", id]) {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:#}").contains("No such container") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `docker exec <id> <cmd>` with its stdout.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Result<String> {
        let mut full = vec!["exec", id];
        full.extend_from_slice(cmd);
        self.cli(&full)
    }

    /// `docker inspect <id>`: the one object.
    pub fn inspect(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.cli(&["inspect", id])?;
        let mut v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("docker inspect {id}: bad JSON"))?;
        match v.as_array_mut().and_then(|a| a.pop()) {
            Some(obj) => Ok(obj),
            None => bail!("docker inspect {id}: empty answer"),
        }
    }

    /// The container's init pid.
    pub fn pid_of(&self, id: &str) -> Result<u32> {
        let v = self.inspect(id)?;
        let pid = v
            .pointer("/State/Pid")
            .and_then(|p| p.as_u64())
            .unwrap_or(0);
        if pid == 0 {
            bail!("container {id} is not running");
        }
        Ok(pid as u32)
    }

    fn ensure_image(&self) -> Result<()> {
        if self
            .cli(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .is_ok()
        {
            return Ok(());
        }
        let tar = busybox_tarball()?;
        self.cli(&["import", &tar.to_string_lossy(), IMAGE])
            .with_context(|| format!("cannot import {} as {IMAGE}", tar.display()))?;
        Ok(())
    }

    // ---- containerd, through ctr -------------------------------------------------------------

    /// The containerd that runs dockerd's containers: dockerd's own when it started one, else the
    /// system one.
    pub fn containerd_socket(&self) -> PathBuf {
        if Path::new(DOCKER_CONTAINERD_SOCKET).exists() {
            DOCKER_CONTAINERD_SOCKET.into()
        } else {
            SYSTEM_CONTAINERD_SOCKET.into()
        }
    }

    /// Its state directory (what `--containerd-state` takes).
    pub fn containerd_state(&self) -> PathBuf {
        if Path::new(DOCKER_CONTAINERD_SOCKET).exists() {
            DOCKER_CONTAINERD_STATE.into()
        } else {
            SYSTEM_CONTAINERD_STATE.into()
        }
    }

    /// The runtime flags that make mntleak see this dockerd and its containerd.
    pub fn runtime_args(&self) -> RuntimeArgs {
        RuntimeArgs {
            docker_socket: self.socket.clone(),
            containerd_state: self.containerd_state(),
        }
    }

    /// `ctr -a <socket> -n <ns> <args>` with its stdout.
    pub fn ctr(&self, ns: &str, args: &[&str]) -> Result<String> {
        let sock = self.containerd_socket();
        let sock = sock.to_string_lossy();
        let mut full = vec!["-a", &sock, "-n", ns];
        full.extend_from_slice(args);
        run_cmd("ctr", &full)
    }

    /// Import [`CTR_IMAGE`] into containerd namespace `ns` once.
    pub fn ctr_image_ensure(&self, ns: &str) -> Result<()> {
        let have = self.ctr(ns, &["images", "ls", "-q"])?;
        if have.lines().any(|l| l.trim() == CTR_IMAGE) {
            return Ok(());
        }
        if !Path::new(IMAGE_TAR).exists() {
            let tmp = format!("{IMAGE_TAR}.{}", std::process::id());
            self.cli(&["save", "-o", &tmp, IMAGE])?;
            std::fs::rename(&tmp, IMAGE_TAR).with_context(|| format!("cannot rename {tmp}"))?;
        }
        self.ctr(ns, &["images", "import", IMAGE_TAR])?;
        Ok(())
    }

    /// `ctr run -d <extra_args> CTR_IMAGE <id> sleep 1000000` in namespace `ns`; the init pid.
    /// S3 passes `--mount type=bind,src=/,dst=/rootfs,options=rbind:rprivate`; pod labels go as
    /// `--label io.kubernetes.pod.name=...` (ctr writes them into the OCI spec's annotations too).
    pub fn ctr_run(&self, ns: &str, id: &str, extra_args: &[&str]) -> Result<u32> {
        self.ctr_run_cmd(ns, id, extra_args, &["sleep", "1000000"])
    }

    /// [`Docker::ctr_run`] with a command of your own.
    pub fn ctr_run_cmd(
        &self,
        ns: &str,
        id: &str,
        extra_args: &[&str],
        cmd: &[&str],
    ) -> Result<u32> {
        self.ctr_image_ensure(ns)?;
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(extra_args);
        full.extend_from_slice(&[CTR_IMAGE, id]);
        full.extend_from_slice(cmd);
        self.ctr(ns, &full)?;
        let pidfile = self
            .containerd_state()
            .join(format!("io.containerd.runtime.v2.task/{ns}/{id}/init.pid"));
        let text = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("cannot read {}", pidfile.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("bad pid in {}", pidfile.display()))
    }

    /// Kill and delete a ctr container (task, container, snapshot); already gone is fine.
    pub fn ctr_rm_f(&self, ns: &str, id: &str) -> Result<()> {
        // The task may be gone already; `task rm -f` kills a running one.
        let _ = self.ctr(ns, &["tasks", "rm", "-f", id]);
        match self.ctr(ns, &["containers", "rm", id]) {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:#}").contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Removes the containers it was given when dropped, so a failing test leaves nothing behind.
pub struct Cleanup {
    docker: Docker,
    docker_ids: RefCell<Vec<String>>,
    ctr_ids: RefCell<Vec<(String, String)>>,
}

impl Cleanup {
    pub fn new(docker: &Docker) -> Self {
        Self {
            docker: docker.clone(),
            docker_ids: RefCell::default(),
            ctr_ids: RefCell::default(),
        }
    }
    /// Remove this docker container (id or name) at the end.
    pub fn docker(&self, id: &str) {
        self.docker_ids.borrow_mut().push(id.to_owned());
    }
    /// Remove this ctr container at the end.
    pub fn ctr(&self, ns: &str, id: &str) {
        self.ctr_ids
            .borrow_mut()
            .push((ns.to_owned(), id.to_owned()));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.docker_ids.borrow().iter() {
            if let Err(e) = self.docker.rm_f(id) {
                eprintln!("cleanup: docker rm -f {id}: {e:#}");
            }
        }
        for (ns, id) in self.ctr_ids.borrow().iter() {
            if let Err(e) = self.docker.ctr_rm_f(ns, id) {
                eprintln!("cleanup: ctr -n {ns} rm {id}: {e:#}");
            }
        }
    }
}

/// True when docker can be used here; false (with a note) to skip. Panics instead when CI demands
/// the prerequisites (`MNTLEAK_REQUIRE_BPF` or `MNTLEAK_REQUIRE_DOCKER` set).
pub fn require_docker() -> bool {
    let missing: Vec<&str> = ["dockerd", "docker", "ctr", "chroot", "tar"]
        .into_iter()
        .filter(|p| run_cmd("sh", &["-c", &format!("command -v {p}")]).is_err())
        .collect();
    if missing.is_empty() && crate::require_root() {
        return true;
    }
    if std::env::var_os("MNTLEAK_REQUIRE_BPF").is_some()
        || std::env::var_os("MNTLEAK_REQUIRE_DOCKER").is_some()
    {
        panic!("this test needs root and {missing:?} (cargo xtask setup)");
    }
    eprintln!("skipped: needs root and {missing:?}");
    false
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The busybox rootfs tarball, built from the host's `/bin/busybox` (busybox-static) if missing.
pub fn busybox_tarball() -> Result<PathBuf> {
    let tar = PathBuf::from(ROOTFS_TAR);
    if tar.exists() {
        return Ok(tar);
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("no busybox binary: apt-get install busybox-static")?;
    let root = PathBuf::from(format!("/tmp/mntleak-busybox-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root", "data"] {
        std::fs::create_dir_all(root.join(d))
            .with_context(|| format!("cannot create {}", root.display()))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))
        .with_context(|| format!("cannot copy {busybox}"))?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    // Inside a chroot, so the applet links point at /bin/busybox, not at our scratch path.
    run_cmd(
        "chroot",
        &[
            &root.to_string_lossy(),
            "/bin/busybox",
            "--install",
            "-s",
            "/bin",
        ],
    )?;
    let tmp = format!("{ROOTFS_TAR}.{}", std::process::id());
    let made = run_cmd("tar", &["-C", &root.to_string_lossy(), "-cf", &tmp, "."]);
    let _ = std::fs::remove_dir_all(&root);
    made?;
    std::fs::rename(&tmp, &tar).with_context(|| format!("cannot rename {tmp}"))?;
    Ok(tar)
}

/// Run a program, fail with its stderr when it fails.
pub fn run_cmd(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn answers(socket: &Path) -> bool {
    mntleak::container::docker_get(socket, "/_ping").is_ok_and(|b| b == b"OK")
}

fn dockerd_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(PIDFILE).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Alive and not a zombie (a zombie child of ours is reaped here).
fn alive(pid: u32) -> bool {
    // SAFETY: waitpid with WNOHANG on a pid that may not be our child only reports ECHILD.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the `(comm)` field, which may itself contain spaces or parens.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as i32, sig) };
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

fn spawn_dockerd(opts: &DockerdOpts) -> Result<Docker> {
    let log = opts.log.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        PathBuf::from(format!("/tmp/mntleak-dockerd-{t}.log"))
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut argv: Vec<String> = Vec::new();
    if opts.unshare_slave {
        argv.extend(["unshare", "-m", "--propagation", "slave"].map(String::from));
    }
    argv.extend(["dockerd", "--iptables=false", "--bridge=none"].map(String::from));
    if opts.live_restore {
        argv.push("--live-restore".into());
    }
    argv.extend(opts.extra_args.iter().cloned());
    writeln!(file, "=== mntleak test rig: {}", argv.join(" "))?;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        // Its own process group: a Ctrl-C of the test run does not take the daemon down mid-test.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", argv.join(" ")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(Path::new(SOCKET)) {
            break;
        }
        // Another test process may have won the race to start dockerd (ours then exits because of
        // the pid file): keep waiting for the socket while that daemon lives.
        if let Some(status) = child.try_wait()?
            && dockerd_pid().is_none()
        {
            bail!(
                "{} exited ({status}) before answering on {SOCKET}; {}",
                argv.join(" "),
                log_tail(&log)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "dockerd did not answer on {SOCKET} within {START_TIMEOUT:?}; {}",
                log_tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // `unshare` execs dockerd, so the child is the daemon; the pid file says so too.
    let pid = dockerd_pid().unwrap_or(child.id());
    Ok(Docker {
        socket: SOCKET.into(),
        pid,
        log: Some(log),
    })
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("last lines of {}:\n{tail}", log.display())
}
