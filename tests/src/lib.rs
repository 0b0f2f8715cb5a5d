//! Shared helpers for the real-kernel integration tests: a running tracer, scratch directories,
//! shell steps. Tests need root and the eBPF object; under `MNTLEAK_REQUIRE_BPF=1` (CI) a missing
//! prerequisite fails the test instead of skipping it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// True when the test may run; false (with a note) when it should be skipped on this machine.
/// Panics when CI demands the prerequisites.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var_os("MNTLEAK_REQUIRE_BPF").is_some() {
            panic!("this test needs root and MNTLEAK_REQUIRE_BPF is set");
        }
        eprintln!("skipped: needs root");
    }
    root
}

/// The `mntleak-trace` binary under test.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MNTLEAK_TRACE_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/mntleak-trace
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("mntleak-trace")
}

/// A unique directory under /tmp, unmounted (lazily, recursively) and removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/tmp/mntleak-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// The path as a string for shell scripts.
    pub fn s(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let p = self.s();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for m in $(awk '{{print $5}}' /proc/self/mountinfo | grep '^{p}' | sort -r); do umount -l \"$m\" 2>/dev/null; done; rm -rf '{p}'"
            ))
            .status();
    }
}

/// Runs a shell script, failing with its output when it fails.
pub fn sh(script: &str) -> anyhow::Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .context("cannot run sh")?;
    if !out.status.success() {
        bail!(
            "script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A background process killed on drop (sleepers that hold namespaces).
pub struct Background(pub Child);

impl Background {
    pub fn spawn(script: &str) -> anyhow::Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot spawn background script")?;
        Ok(Self(child))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // The sh -c child may have forked; kill its whole process group is not ours, so kill children too.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `mntleak-trace`; `stop` sends SIGINT and collects what it printed.
pub struct TraceSession {
    child: Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

/// What a finished tracer printed.
#[derive(Debug)]
pub struct TraceOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl TraceOutput {
    /// stdout as NDJSON values (for `--json` runs).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line {l:?}: {e}"))
            })
            .collect()
    }

    /// Findings (records with a `kind` of leak or at_risk).
    pub fn findings(&self) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|v| {
                matches!(
                    v.get("kind").and_then(|k| k.as_str()),
                    Some("leak" | "at_risk")
                )
            })
            .collect()
    }
}

impl TraceSession {
    /// Starts the tracer with `args` and waits until it reports that it is tracing.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(tracer_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", tracer_bin().display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = Self {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match session
                .stderr_lines
                .recv_timeout(Duration::from_millis(200))
            {
                Ok(line) => {
                    let ready = line.contains("tracing;");
                    session.stderr_seen.push(line);
                    if ready {
                        return Ok(session);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = session.child.try_wait()? {
                        bail!(
                            "mntleak-trace exited ({status}) before tracing: {:?}",
                            session.stderr_seen
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "mntleak-trace did not attach within 60 s: {:?}",
                            session.stderr_seen
                        );
                    }
                }
                Err(_) => bail!("mntleak-trace closed stderr: {:?}", session.stderr_seen),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits for the exit, returns everything printed.
    pub fn stop_with(self, signal: i32) -> anyhow::Result<TraceOutput> {
        // Let the ring buffer's last events reach userspace before the stop.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.collect()
    }

    pub fn stop(self) -> anyhow::Result<TraceOutput> {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for the tracer to end by itself (`--duration`, a removed container).
    pub fn wait(self) -> anyhow::Result<TraceOutput> {
        self.collect()
    }

    fn collect(mut self) -> anyhow::Result<TraceOutput> {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout)?;
        }
        let status = self.child.wait()?;
        let mut stderr = self.stderr_seen.join("\n");
        while let Ok(l) = self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
            stderr.push('\n');
            stderr.push_str(&l);
        }
        Ok(TraceOutput {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for TraceSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the tracer binary to completion (replay, holders, bad flags).
pub fn run_tracer(args: &[&str]) -> TraceOutput {
    let out = Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run mntleak-trace");
    TraceOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The (inode, 64-bit id) of a process's mount namespace.
pub fn mnt_ns_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/ns/mnt");
    let ino = std::fs::metadata(&path)
        .with_context(|| format!("stat {path}"))?
        .ino();
    let ns = mntleak::sys::nsfs::mnt_ns_of_path(Path::new(&path))
        .with_context(|| format!("ns id of {path}"))?;
    Ok((ino, ns.id))
}
pub mod docker;

/// A loop device over an image file, detached (after the mounts on it are gone) when dropped.
pub struct LoopDev(pub String);

impl LoopDev {
    /// `losetup -f --show image`.
    pub fn attach(image: &str) -> anyhow::Result<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show", image])
            .output()
            .with_context(|| format!("losetup {image}"))?;
        anyhow::ensure!(
            out.status.success(),
            "losetup {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// `open(dev, O_RDONLY|O_EXCL)`: EBUSY while any mount of the block device lives.
pub fn open_excl(dev: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map(drop)
}

/// `v` as the capture format writes lengths and numbers: LEB128, 7 bits a byte.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// The varint at the start of `b` as far as it goes (at most 10 bytes, or to the end of `b`, for
/// damaged input): its value and how many bytes it took.
pub fn read_varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, b.len().min(10))
}
