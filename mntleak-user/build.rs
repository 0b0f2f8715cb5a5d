//! Embeds the eBPF object as `$OUT_DIR/mntleak`:
//! - default: builds `mntleak-ebpf` with aya-build (nightly + rust-src + bpf-linker);
//!   when `nightly` is on an LLVM newer than bpf-linker's, the nightly pinned in
//!   `mntleak-ebpf/rust-toolchain.toml` is used if installed (`cargo xtask setup` installs it);
//!   `MNTLEAK_EBPF_TOOLCHAIN=<toolchain>` overrides both;
//! - `MNTLEAK_EBPF_OBJECT=/path`: copies a prebuilt object (the Debian rustc-web way);
//! - `MNTLEAK_SKIP_EBPF=1`: embeds nothing and sets `cfg(mntleak_no_ebpf)`, so live mode says at
//!   run time that it was built without eBPF (userspace-only work needs no BPF toolchain).
#[path = "ebpf_toolchain.rs"]
mod ebpf_toolchain;

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(mntleak_no_ebpf)");
    println!("cargo:rerun-if-env-changed=MNTLEAK_SKIP_EBPF");
    println!("cargo:rerun-if-env-changed=MNTLEAK_EBPF_OBJECT");
    println!(
        "cargo:rerun-if-env-changed={}",
        ebpf_toolchain::TOOLCHAIN_ENV
    );

    if env::var("MNTLEAK_SKIP_EBPF").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:rustc-cfg=mntleak_no_ebpf");
        return Ok(());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let dst = out_dir.join("mntleak");

    if let Some(obj) = env::var_os("MNTLEAK_EBPF_OBJECT").filter(|v| !v.is_empty()) {
        let obj = PathBuf::from(obj);
        println!("cargo:rerun-if-changed={}", obj.display());
        fs::copy(&obj, &dst).with_context(|| {
            format!(
                "MNTLEAK_EBPF_OBJECT: cannot copy {} to {}",
                obj.display(),
                dst.display()
            )
        })?;
        return Ok(());
    }

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("no manifest dir"))?);
    let root_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("mntleak-user has no parent directory"))?
        .join("mntleak-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    let toolchain = ebpf_toolchain_or_warn(Path::new(root_dir));
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mntleak-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building mntleak-ebpf (set MNTLEAK_SKIP_EBPF=1 for a userspace-only build, or MNTLEAK_EBPF_OBJECT to use a prebuilt object)")
}

/// The toolchain to build the eBPF crate with (see `ebpf_toolchain`); `nightly` when none fits,
/// whose build error then names the problem.
fn ebpf_toolchain_or_warn(ebpf_dir: &Path) -> String {
    ebpf_toolchain::choose(ebpf_dir).unwrap_or_else(|| {
        println!(
            "cargo:warning=no nightly whose LLVM bpf-linker reads ({} or older) is installed: \
             run `cargo xtask setup`",
            ebpf_toolchain::LINKER_LLVM_MAJOR
        );
        "nightly".into()
    })
}
