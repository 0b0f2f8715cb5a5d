//! `cargo xtask demo`: the tracer on a built-in reproduction of the PrivateTmp incident
//! (a service unshares with private propagation after a "container" mount exists; the runtime's
//! umount then cannot reach the service's copy), then an offline replay of the capture.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

const SCENARIO: &str = r#"
set -e
d=/tmp/mntleak-demo
mkdir -p $d/lower $d/upper $d/work $d/merged
echo "hello from the container image" > $d/lower/file
# The "runtime" mounts the container's rootfs.
mount -t overlay demo-overlay -o lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work $d/merged
sleep 0.3
# A PrivateTmp-style service starts after it: its new namespace copies every mount, privately.
unshare -m --propagation private sleep 6 &
sleep 0.5
# The runtime removes the container: the umount succeeds here but cannot reach the service's copy.
umount $d/merged
sleep 1.5
# Removing the mountpoint makes Linux >= 3.18 detach the copy in every other namespace.
rmdir $d/merged
sleep 0.5
"#;

pub fn demo() -> anyhow::Result<()> {
    let tc = crate::setup::setup()?;
    crate::build(&tc)?;
    let out_dir = crate::root().join("target/demo");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let capture = out_dir.join("demo.mntcap");
    let _ = std::fs::remove_file(&capture);
    let _ = Command::new("sh")
        .args([
            "-c",
            "umount -l /tmp/mntleak-demo/merged 2>/dev/null; rm -rf /tmp/mntleak-demo",
        ])
        .status();

    println!(
        "== live: mntleak-trace --comm mount --comm umount --comm unshare --comm rmdir --output {}",
        capture.display()
    );
    let mut tracer = Command::new(crate::tracer_bin())
        .args([
            "--comm", "mount", "--comm", "umount", "--comm", "unshare", "--comm", "rmdir",
            "--output",
        ])
        .arg(&capture)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start mntleak-trace")?;
    let stderr = tracer.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                eprintln!("{line}");
                if line.contains("tracing;") {
                    break;
                }
            }
            _ => bail!("mntleak-trace exited before it attached"),
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
    crate::run(Command::new("sh").args(["-c", SCENARIO]))?;
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: the tracer detaches, flushes, prints its verdicts and summary.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = tracer.wait()?;
    println!("== live run exit status: {status} (1 = a leak was found)");
    println!(
        "\n== offline: mntleak-trace replay --quiet {} (no root needed)",
        capture.display()
    );
    let status = Command::new(crate::tracer_bin())
        .args(["replay", "--quiet"])
        .arg(&capture)
        .status()?;
    println!("== replay exit status: {status}");
    Ok(())
}
