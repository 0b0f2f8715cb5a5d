//! Resolving containers against a real dockerd and its containerd (ctr, namespace k8s.io): ids,
//! prefixes, names, one-line errors, and the identity mntleak keeps (init pid, namespaces, mounts,
//! cgroup, pod labels). Needs root; starts dockerd once if none answers.

use std::os::unix::fs::MetadataExt;

use mntleak::container::{
    ContainerError, RuntimeArgs, container_of_cgroup, list_containers, resolve,
};
use mntleak::model::ContainerInfo;
use mntleak_tests::Scratch;
use mntleak_tests::docker::{Cleanup, Docker, require_docker, unique_name};

/// The mountpoints of the host's (our) mount namespace.
fn host_mountpoints() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

fn assert_one_line(e: &ContainerError) -> String {
    let s = e.to_string();
    assert!(
        !s.is_empty() && !s.contains('\n'),
        "error is not one line: {s:?}"
    );
    s
}

/// Namespaces, init pid and cgroup: what the kernel says about the container's init process.
fn assert_identity(info: &ContainerInfo, pid: u32) {
    assert_eq!(info.init_pid, pid, "{info:?}");
    let ns = mntleak::sys::nsfs::mnt_ns_of_pid(pid).expect("mnt ns of init pid");
    assert_eq!(info.mnt_ns, ns, "{info:?}");
    let host = mntleak::sys::nsfs::mnt_ns_of_pid(std::process::id()).expect("own mnt ns");
    assert_ne!(
        info.mnt_ns.id, host.id,
        "container shares the host mount namespace? {info:?}"
    );
    let net = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("net ns")
        .ino();
    assert_eq!(info.net_ns_inum as u64, net, "{info:?}");
}

#[test]
fn docker_containers_resolve() {
    if !require_docker() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let rt = docker.runtime_args();
    let vol = Scratch::new("resolve-vol");

    let name_a = unique_name("mntleak-res-a");
    let name_b = unique_name("mntleak-res-b");
    cleanup.docker(&name_a);
    cleanup.docker(&name_b);
    let bind = format!("{}:/data", vol.s());
    let a = docker
        .run_sleeper(&[
            "--name",
            &name_a,
            "--ipc",
            "shareable",
            "-v",
            &bind,
            "--label",
            "io.kubernetes.pod.name=dpod",
            "--label",
            "io.kubernetes.pod.namespace=dns",
            "--label",
            "io.kubernetes.pod.uid=0f1e2d3c-0000-4000-8000-000000000001",
        ])
        .expect("docker run a");
    let b = docker
        .run_sleeper(&["--name", &name_b])
        .expect("docker run b");

    // By full id, by name (with and without docker's leading '/'), by a unique prefix.
    let info = resolve(&rt, &a).expect("resolve full id");
    assert_eq!(info.id, a);
    assert_eq!(info.name, name_a);
    assert_eq!(info.runtime, "docker");
    assert_eq!(resolve(&rt, &name_a).expect("resolve name").id, a);
    assert_eq!(
        resolve(&rt, &format!("/{name_a}"))
            .expect("resolve /name")
            .id,
        a
    );
    let all = list_containers(&rt).expect("list");
    let prefix_len = (1..=a.len())
        .find(|&n| all.iter().filter(|c| c.id.starts_with(&a[..n])).count() == 1)
        .expect("a unique prefix");
    let prefix = &a[..prefix_len.max(4).min(a.len())];
    assert_eq!(resolve(&rt, prefix).expect("resolve prefix").id, a);
    // Listed once although dockerd's containerd also has it (namespace moby).
    assert_eq!(all.iter().filter(|c| c.id == a).count(), 1, "{all:?}");

    // Pod labels on a docker container.
    assert_eq!(info.pod_name.as_deref(), Some("dpod"));
    assert_eq!(info.pod_namespace.as_deref(), Some("dns"));
    assert_eq!(
        info.pod_uid.as_deref(),
        Some("0f1e2d3c-0000-4000-8000-000000000001")
    );

    let pid = docker.pid_of(&a).expect("pid of a");
    assert_eq!(
        docker.exec(&a, &["cat", "/proc/1/comm"]).expect("exec"),
        "sleep"
    );
    assert_identity(&info, pid);

    // Mounts: overlay merged (first), shm, resolv.conf, the bind's source and host-side target,
    // the netns file; the mounted ones are mountpoints in the host namespace.
    let inspect = docker.inspect(&a).expect("inspect");
    let merged = inspect
        .pointer("/GraphDriver/Data/MergedDir")
        .and_then(|v| v.as_str())
        .expect("MergedDir");
    let merged = std::fs::canonicalize(merged)
        .expect("merged exists")
        .display()
        .to_string();
    assert_eq!(
        info.mount_paths.first(),
        Some(&merged),
        "{:?}",
        info.mount_paths
    );
    let shm = format!("/var/lib/docker/containers/{a}/mounts/shm");
    let shm = std::fs::canonicalize(&shm)
        .expect("shm exists")
        .display()
        .to_string();
    let resolv = format!("/var/lib/docker/containers/{a}/resolv.conf");
    let resolv = std::fs::canonicalize(&resolv)
        .expect("resolv.conf exists")
        .display()
        .to_string();
    let sandbox = inspect
        .pointer("/NetworkSettings/SandboxKey")
        .and_then(|v| v.as_str())
        .expect("SandboxKey");
    let netns = std::fs::canonicalize(sandbox)
        .expect("netns file")
        .display()
        .to_string();
    let target = format!("{merged}/data");
    for p in [&shm, &resolv, &netns, &vol.s(), &target] {
        assert!(
            info.mount_paths.contains(p),
            "{p} missing from {:?}",
            info.mount_paths
        );
    }
    let mps = host_mountpoints();
    for p in [&merged, &shm, &netns] {
        assert!(
            mps.contains(p),
            "{p} is not a mountpoint in the host namespace"
        );
    }
    // Without --ipc shareable Docker mounts no shm on the host, and we do not invent one.
    let info_b = resolve(&rt, &b).expect("resolve b");
    assert!(
        !info_b
            .mount_paths
            .iter()
            .any(|p| p.ends_with("/mounts/shm")),
        "{:?}",
        info_b.mount_paths
    );

    // The init pid's cgroup names the container.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let ids: Vec<Option<String>> = cg
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(container_of_cgroup)
        .collect();
    assert!(ids.iter().any(|i| i.as_deref() == Some(a.as_str())), "{cg}");
    assert!(
        ids.iter()
            .all(|i| i.is_none() || i.as_deref() == Some(a.as_str())),
        "{cg}"
    );
    assert_eq!(
        container_of_cgroup(&info.cgroup).as_deref(),
        Some(a.as_str()),
        "{}",
        info.cgroup
    );

    // Unknown: one line naming the candidates.
    let e = resolve(&rt, "mntleak-no-such-container").expect_err("unknown resolves?");
    assert!(matches!(e, ContainerError::NotFound { .. }), "{e}");
    let s = assert_one_line(&e);
    assert!(
        s.contains("mntleak-no-such-container") && s.contains(&name_a) && s.contains(&a[..12]),
        "{s}"
    );

    // Ambiguous prefix: the common prefix of a and b, when they have one.
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    if common > 0 {
        let q = &a[..common];
        let e = resolve(&rt, q).expect_err("common prefix resolves?");
        assert!(matches!(e, ContainerError::Ambiguous { .. }), "{e}");
        let s = assert_one_line(&e);
        assert!(s.contains(&name_a) && s.contains(&name_b), "{s}");
    }

    // Gone after removal.
    docker.rm_f(&a).expect("rm a");
    let e = resolve(&rt, &a).expect_err("removed container still resolves");
    assert!(matches!(e, ContainerError::NotFound { .. }), "{e}");
}

#[test]
fn containerd_k8s_container_resolves_with_pod() {
    if !require_docker() {
        return;
    }
    let docker = Docker::start().expect("dockerd");
    let cleanup = Cleanup::new(&docker);
    let rt = docker.runtime_args();
    let ns = "k8s.io";

    let id = unique_name("mntleak-ctr");
    cleanup.ctr(ns, &id);
    let uid = "7a1c2b3d-0000-4000-8000-000000000002";
    let pod_name = format!("io.kubernetes.pod.name={id}-pod");
    let pod_uid = format!("io.kubernetes.pod.uid={uid}");
    let pid = docker
        .ctr_run(
            ns,
            &id,
            &[
                "--label",
                &pod_name,
                "--label",
                "io.kubernetes.pod.namespace=default",
                "--label",
                &pod_uid,
                // S3's shape: host / bound rbind+rprivate at /rootfs.
                "--mount",
                "type=bind,src=/,dst=/rootfs,options=rbind:rprivate",
            ],
        )
        .expect("ctr run");

    let info = resolve(&rt, &id).expect("resolve ctr container");
    assert_eq!(info.id, id);
    assert_eq!(info.runtime, "containerd/k8s.io");
    assert_eq!(info.pod_name.as_deref(), Some(format!("{id}-pod").as_str()));
    assert_eq!(info.pod_namespace.as_deref(), Some("default"));
    assert_eq!(info.pod_uid.as_deref(), Some(uid));
    assert_identity(&info, pid);
    assert!(info.cgroup.contains(&id), "{}", info.cgroup);
    // The CLI's defaults find it too (dockerd's own containerd state is read besides /run/containerd).
    let by_default = resolve(&RuntimeArgs::default(), &id).expect("resolve with default flags");
    assert_eq!(by_default, info);

    // Its rootfs (containerd's overlay) is a host mountpoint; the `/` bind's target is listed, `/` is not.
    let rootfs = docker
        .containerd_state()
        .join(format!("io.containerd.runtime.v2.task/{ns}/{id}/rootfs"))
        .display()
        .to_string();
    assert_eq!(
        info.mount_paths.first(),
        Some(&rootfs),
        "{:?}",
        info.mount_paths
    );
    assert!(
        host_mountpoints().contains(&rootfs),
        "{rootfs} is not a mountpoint"
    );
    assert!(
        info.mount_paths.contains(&format!("{rootfs}/rootfs")),
        "{:?}",
        info.mount_paths
    );
    assert!(
        !info.mount_paths.iter().any(|p| p == "/"),
        "{:?}",
        info.mount_paths
    );
    // The container really sees the host's root there.
    let inside = std::fs::read_dir(format!("/proc/{pid}/root/rootfs/proc"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(inside > 0, "/rootfs/proc is empty inside the container");

    // A docker container named like a containerd id: the same word names two containers.
    let twin = unique_name("mntleak-twin");
    cleanup.docker(&twin);
    cleanup.ctr(ns, &twin);
    docker
        .run_sleeper(&["--name", &twin])
        .expect("docker run twin");
    docker.ctr_run(ns, &twin, &[]).expect("ctr run twin");
    let e = resolve(&rt, &twin).expect_err("twin resolves?");
    assert!(matches!(e, ContainerError::Ambiguous { .. }), "{e}");
    let s = assert_one_line(&e);
    assert!(
        s.contains("docker: ") && s.contains(&format!("containerd/k8s.io: {twin}")),
        "{s}"
    );

    // Gone after removal.
    docker.ctr_rm_f(ns, &id).expect("ctr rm");
    let e = resolve(&rt, &id).expect_err("removed ctr container still resolves");
    assert!(matches!(e, ContainerError::NotFound { .. }), "{e}");
}
