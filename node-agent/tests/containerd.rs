//! The private-containerd fixture (`node_agent::testing::Containerd`) against the real
//! containerd, runc and CNI plugins: the runtime comes up ready, the locally built images are
//! there, a pod with a busybox container runs and logs in CRI format, fixtures run side by side,
//! and teardown leaves nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use node_agent::cri::{api, Cri};
use node_agent::images::{self, BUSYBOX_IMAGE, PAUSE_IMAGE};
use node_agent::testing::Containerd;

/// Polls `cond` every 50 ms until it returns `Some` or `limit` passes: a hang detector.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal bridge + host-local + loopback conflist on the fixture's own bridge and CIDR, with
/// the IPAM data inside the fixture's directory. Masquerading adds the bridge plugin's per-pod
/// iptables NAT chains, which only a CNI DEL (StopPodSandbox) removes: teardown must run it.
fn write_conflist(cxd: &Containerd, masquerade: bool) {
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cxtest",
        "plugins": [
            {
                "type": "bridge",
                "bridge": cxd.bridge(),
                "isGateway": true,
                "ipMasq": masquerade,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cxd.pod_cidr()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": cxd.dir().join("cni/ipam"),
                }
            },
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        cxd.cni_conf_dir().join("10-cxtest.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
}

/// The runtime's conditions by type.
async fn conditions(cri: &Cri) -> Vec<(String, bool)> {
    let status = cri
        .runtime
        .clone()
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.r#type, c.status))
        .collect()
}

/// Writes the conflist and waits until CRI reports NetworkReady (containerd watches conf_dir).
async fn make_network_ready(cxd: &Containerd) {
    make_network_ready_with(cxd, true).await
}

async fn make_network_ready_with(cxd: &Containerd, masquerade: bool) {
    write_conflist(cxd, masquerade);
    let cri = cxd.cri();
    eventually(Duration::from_secs(20), "NetworkReady", || {
        let cri = cri.clone();
        async move { cri.ready().await.unwrap().ok() }
    })
    .await;
}

/// Runs a pod with one busybox container `echo hello` through CRI, waits for it to exit, and
/// checks its IP and its CRI-format log line. Leaves the pod in place for teardown to remove;
/// returns its id and config.
async fn run_echo_pod(cxd: &Containerd, name: &str) -> (String, api::PodSandboxConfig) {
    let mut rt = cxd.cri().runtime;
    let log_dir = cxd.dir().join("logs").join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let sandbox_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod-{name}", cxd.cgroup_root()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e:?}\n{}", cxd.containerd_log()))
        .into_inner()
        .pod_sandbox_id;

    let status = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, api::PodSandboxState::SandboxReady as i32);
    let ip = status.network.unwrap().ip;
    let prefix = cxd.pod_cidr().trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} in {}", cxd.pod_cidr());

    let container = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "echo".into(),
                    attempt: 0,
                }),
                image: Some(api::ImageSpec {
                    image: BUSYBOX_IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["echo".into(), "hello".into()],
                log_path: "echo.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e:?}\n{}", cxd.containerd_log()))
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e:?}\n{}", cxd.containerd_log()));

    let exited = eventually(Duration::from_secs(20), "the container exits", || {
        let mut rt = rt.clone();
        let container = container.clone();
        async move {
            let s = rt
                .container_status(api::ContainerStatusRequest {
                    container_id: container,
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            (s.state == api::ContainerState::ContainerExited as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(exited.exit_code, 0, "{exited:?}");

    let log = std::fs::read_to_string(log_dir.join("echo.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log:?}");
    let fields: Vec<&str> = lines[0].splitn(4, ' ').collect();
    assert_eq!(fields.len(), 4, "{log:?}");
    // <RFC 3339 timestamp with nanoseconds, UTC> <stream> <F = full line, P = partial> <text>
    let ts = fields[0];
    assert!(
        ts.len() > 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z') && ts.contains('.'),
        "timestamp {ts:?}"
    );
    assert_eq!(&fields[1..], ["stdout", "F", "hello"], "{log:?}");
    (sandbox, sandbox_config)
}

/// Starts `sleep 3600` in the pod: a running container for teardown to stop.
async fn start_sleeper(cxd: &Containerd, sandbox: &str, sandbox_config: api::PodSandboxConfig) {
    let mut rt = cxd.cri().runtime;
    let id = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: Some(api::ImageSpec {
                    image: BUSYBOX_IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "sleeper.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest { container_id: id })
        .await
        .unwrap();
}

async fn assert_clean(cxd: Containerd) {
    let dir = cxd.dir().to_path_buf();
    let bridge = cxd.bridge().to_string();
    let problems = cxd.shutdown().await;
    assert!(problems.is_empty(), "teardown left: {problems:#?}");
    assert!(!dir.exists());
    assert!(!Path::new("/sys/class/net").join(bridge).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_ready_images_listed_pod_runs_and_teardown_is_clean() {
    let cxd = Containerd::start().await.unwrap();
    let cri = cxd.cri();
    assert!(cri.version().await.unwrap().starts_with("containerd://"));

    let before = conditions(&cri).await;
    assert!(
        before.contains(&("RuntimeReady".into(), true)),
        "{before:?}"
    );
    assert!(
        before.contains(&("NetworkReady".into(), false)),
        "no conflist yet: {before:?}"
    );
    make_network_ready(&cxd).await;

    let images = cri
        .images
        .clone()
        .list_images(api::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let tags: Vec<&str> = images
        .iter()
        .flat_map(|i| i.repo_tags.iter().map(String::as_str))
        .collect();
    for want in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
        assert!(tags.contains(&want), "{want} in {tags:?}");
    }
    // What is not an image tarball fails with ctr's own words.
    let not_an_image = cxd.dir().join("config.toml");
    match images::import(cxd.socket(), &not_an_image).await {
        Err(node_agent::Error::ImageImport { path, message }) => {
            assert_eq!(path, not_an_image.display().to_string());
            assert!(message.contains("ctr"), "{message}");
        }
        other => panic!("importing a non-image: {other:?}"),
    }

    let (sandbox, config) = run_echo_pod(&cxd, "echo").await;
    start_sleeper(&cxd, &sandbox, config).await;
    // While the pod runs, leftovers() sees it: its shim, its rootfs mounts and its network
    // namespace, which this fixture's containerd mounts under its own state directory.
    let running = cxd.leftovers();
    let has = |what: &str| running.iter().any(|l| l.contains(what));
    assert!(has("shim process"), "{running:#?}");
    assert!(has("/rootfs"), "{running:#?}");
    assert!(has("/netns/cni-"), "{running:#?}");
    assert!(has(cxd.bridge()), "{running:#?}");
    let cgroup = format!("cgroup /sys/fs/cgroup/memory{}", cxd.cgroup_root());
    assert!(has(&cgroup), "{running:#?}");
    assert_clean(cxd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fixtures_run_pods_side_by_side() {
    let (a, b) = tokio::join!(Containerd::start(), Containerd::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.socket(), b.socket());
    assert_ne!(a.bridge(), b.bridge());
    assert_ne!(a.pod_cidr(), b.pod_cidr());
    tokio::join!(make_network_ready(&a), make_network_ready(&b));
    let (_, (right, config)) = tokio::join!(run_echo_pod(&a, "left"), run_echo_pod(&b, "right"));
    start_sleeper(&b, &right, config).await;
    // Tear one down while the other still has its pod: each cleans only its own.
    assert_clean(a).await;
    assert_eq!(
        b.cri()
            .runtime
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        1
    );
    assert_clean(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_fixture_kills_and_removes_everything() {
    let cxd = Containerd::start().await.unwrap();
    make_network_ready(&cxd).await;
    let (sandbox, config) = run_echo_pod(&cxd, "dropped").await;
    start_sleeper(&cxd, &sandbox, config).await;
    let dir = cxd.dir().to_path_buf();
    let bridge = cxd.bridge().to_string();
    let cgroup = format!("/sys/fs/cgroup/memory{}", cxd.cgroup_root());
    let subnet = cxd.pod_cidr().trim_end_matches("0/24").to_string();
    let running = cxd.leftovers();
    assert!(
        running.iter().any(|l| l.starts_with("iptables NAT rule")),
        "the pod is masqueraded: {running:#?}"
    );
    // Drop still has containerd run CNI DEL, which removes the NAT rules.
    drop(cxd);
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(
        !nat.lines().any(|l| l.contains(&format!(" {subnet}"))),
        "NAT rules for {subnet}0/24 left: {nat}"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
    // The pod cgroup could only be removed once the sleeper and the pause process were dead.
    assert!(!Path::new(&cgroup).exists(), "{cgroup} removed");
    let inside = format!("{}/", dir.display());
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(proc.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains(&inside), "process left: {cmdline}");
    }
    assert!(!Path::new("/sys/class/net").join(&bridge).exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&format!("{}/", dir.display())),
        "{mountinfo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_a_containerd_restart() {
    let mut cxd = Containerd::start().await.unwrap();
    make_network_ready(&cxd).await;
    let (sandbox, config) = run_echo_pod(&cxd, "survivor").await;
    start_sleeper(&cxd, &sandbox, config).await;
    let old = cxd.cri();
    cxd.kill().await;
    cxd.restart().await.unwrap();
    // A client from before the restart reconnects by itself.
    let pods = old
        .runtime
        .clone()
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, api::PodSandboxState::SandboxReady as i32);
    let running = cxd
        .cri()
        .runtime
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running, 1, "the sleeper still runs");
    assert_clean(cxd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_without_containerd_still_removes_everything_local() {
    let mut cxd = Containerd::start().await.unwrap();
    // No masquerading: with containerd dead nobody runs CNI DEL, which alone removes NAT rules.
    make_network_ready_with(&cxd, false).await;
    let (sandbox, config) = run_echo_pod(&cxd, "orphan").await;
    start_sleeper(&cxd, &sandbox, config).await;
    cxd.kill().await;
    let dir = cxd.dir().to_path_buf();
    let problems = cxd.shutdown().await;
    // CRI cannot answer; everything else (shims, containers, mounts, cgroups, bridge, the
    // directory) is force-removed.
    assert!(!problems.is_empty(), "the CRI failure is reported");
    assert!(
        problems
            .iter()
            .all(|p| p.starts_with("removing pods through CRI")),
        "{problems:#?}"
    );
    assert!(!dir.exists());
}

/// `deploy/images/build.sh` is deterministic (a rebuild elsewhere gives identical tarballs, so
/// identical digests) and does nothing when its outputs are up to date.
#[test]
fn image_build_is_reproducible_and_skipped_when_fresh() {
    let base = std::env::temp_dir().join(format!("cox-imgtest-{}", std::process::id()));
    let (a, b) = (base.join("a"), base.join("b"));
    images::build_local_images(&a).unwrap();
    images::build_local_images(&b).unwrap();
    for name in ["busybox.tar", "pause.tar"] {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between two builds");
    }
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&a.join("busybox.tar"));
    images::build_local_images(&a).unwrap();
    assert_eq!(
        mtime(&a.join("busybox.tar")),
        before,
        "an up-to-date build is skipped"
    );
    let missing = images::build_local_images_with(Path::new("/nonexistent/build.sh"), &a);
    assert!(
        matches!(missing, Err(node_agent::Error::ImageBuild { .. })),
        "{missing:?}"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
