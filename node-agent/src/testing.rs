//! A private containerd for tests, the way `storage::testing::EtcdServer` gives tests a private
//! etcd.
//!
//! [`Containerd::start`] runs Debian's containerd with every path of its own (root, state,
//! sockets, runc root, `opt`, CNI config, pod network namespaces) inside a fresh directory
//! `/tmp/cxd-…`, imports the busybox and pause images built by `deploy/images/build.sh`, and
//! waits until CRI answers. Each fixture gets its own CNI bridge name and pod CIDR, so fixtures
//! in one or several test processes run side by side without sharing anything, and none of
//! them touches a system containerd. The configuration is the one measured to work on these
//! machines (`../shared/design/containerd-on-these-machines.md`).
//!
//! [`Containerd::shutdown`] tears everything down (pods through CRI, containerd, shims, the
//! bridge, mounts, pod cgroups, the directory) and returns whatever it could not remove, so
//! tests assert a clean teardown. Dropping a fixture without `shutdown` (a panicking test) does
//! the same synchronously. A missing `containerd`, `ctr`, `runc` or busybox fails the test
//! loudly: these tests never skip.
//!
//! Pod network namespaces are mounted under the fixture's state directory
//! (`netns_mounts_under_state_dir`), not in the host-wide `/var/run/netns`, so they are this
//! fixture's by location and `leftovers` never mistakes another process's pods for its own.
//!
//! What only CNI DEL removes (the bridge plugin's NAT rules, libcni's result cache) is removed
//! by letting containerd stop the pods; when containerd is dead ([`Containerd::kill`]) the
//! cache is removed by hand but NAT rules of masqueraded pods stay, and `leftovers` names them.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::cri::{api, cri_err, Cri};
use crate::images::{self, BUSYBOX_IMAGE, PAUSE_IMAGE};
use crate::Error;

/// Fixtures started by this process so far; part of every fixture's names.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// Held while a fixture of this process claims a pod CIDR.
static CLAIMING: Mutex<()> = parking_lot::const_mutex(());

/// The directory holding the built image tarballs, once per process.
static IMAGES: OnceCell<PathBuf> = OnceCell::const_new();

/// How long containerd may take to answer CRI after it is spawned (it takes ~0.1 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often conditions (socket up, process gone) are polled.
const POLL: Duration = Duration::from_millis(20);

/// One CRI call during teardown; a hung containerd must not hang the test forever.
const CRI_TIMEOUT: Duration = Duration::from_secs(30);

/// A private containerd with CRI, for one test.
pub struct Containerd {
    scratch: Scratch,
    socket: PathBuf,
    cni_conf_dir: PathBuf,
    pod_cidr: String,
    cri: Cri,
}

/// What a fixture owns on the host, with the synchronous best-effort cleanup `Drop` runs.
/// Separate from [`Containerd`] so a half-started fixture is cleaned up too.
struct Scratch {
    child: Option<Child>,
    dir: PathBuf,
    bridge: String,
    subnet: Option<u8>,
    /// cgroupfs parent for the pods of this fixture, e.g. `/cxd-1a2b30-x9z1`.
    cgroup_root: String,
    /// Shim sockets seen in `/run/containerd/s` (from the bundles' `address` files): a shim
    /// removes its socket when it exits normally, but not when it is killed.
    shim_sockets: BTreeSet<PathBuf>,
    /// Ids of the sandboxes and containers whose tasks were still there at teardown.
    task_ids: BTreeSet<String>,
}

impl Containerd {
    /// Starts a private containerd, imports [`BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`], and waits
    /// until it answers CRI `Version`.
    ///
    /// The images are built once per process into `/tmp/coxswain-images-<uid>` (the build
    /// script skips up-to-date outputs and renames finished files into place, so concurrent
    /// test processes share the directory safely).
    pub async fn start() -> Result<Containerd, Error> {
        let images_dir = IMAGES.get_or_try_init(build_images).await?.clone();

        let pid = std::process::id();
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let bridge = format!(
            "cxt{}{}",
            base36(u64::from(pid), 5),
            base36(u64::from(n), 1)
        );
        let dir = make_dir(pid, n)?;
        let cgroup_root = format!("/{}", dir.file_name().unwrap_or_default().to_string_lossy());
        let mut scratch = Scratch {
            child: None,
            dir,
            bridge,
            subnet: None,
            cgroup_root,
            shim_sockets: BTreeSet::new(),
            task_ids: BTreeSet::new(),
        };
        // A bridge of this name can only be left from a dead process that had our pid.
        delete_link(&scratch.bridge);
        let subnet = pick_subnet(pid, n)?;
        scratch.subnet = Some(subnet);
        let dir = scratch.dir.clone();

        let socket = dir.join("c.sock");
        let cni_conf_dir = dir.join("cni/net.d");
        std::fs::create_dir_all(&cni_conf_dir).map_err(io_err("create the CNI conf dir"))?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir)).map_err(io_err("write config.toml"))?;
        scratch.spawn_containerd()?;
        let cri = wait_for_cri(&mut scratch, &socket).await?;
        for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            let tarball = images::tarball_for(&images_dir, image)
                .ok_or_else(|| Error::Fixture(format!("no tarball for {image}")))?;
            let names = images::import(&socket, &tarball).await?;
            if !names.iter().any(|n| n == image) {
                return Err(Error::Fixture(format!(
                    "importing {} gave {names:?}, not {image}",
                    tarball.display()
                )));
            }
        }
        Ok(Containerd {
            scratch,
            socket,
            cni_conf_dir,
            pod_cidr: format!("10.200.{subnet}.0/24"),
            cri,
        })
    }

    /// Kills containerd (SIGKILL) and leaves everything else as it is: shims and containers
    /// keep running, as after a crash of containerd. [`Containerd::restart`] brings it back.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.scratch.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts containerd again (after [`Containerd::kill`], or SIGTERM first if it runs) with
    /// the same configuration and state, and waits until it answers CRI. Running pods survive:
    /// their shims reconnect. Clones of [`Containerd::cri`] taken earlier reconnect by
    /// themselves on their next call.
    pub async fn restart(&mut self) -> Result<(), Error> {
        if let Some(child) = self.scratch.child.take() {
            terminate(child).await.map_err(Error::Fixture)?;
        }
        self.scratch.spawn_containerd()?;
        self.cri = wait_for_cri(&mut self.scratch, &self.socket).await?;
        Ok(())
    }

    /// A node agent configuration for node `name` that runs its pods on this containerd with
    /// the fixture's bridge, pod CIDR, cgroup parent and scratch directories, advertising
    /// 127.0.0.1 with its streaming server on a free loopback port.
    pub fn agent_config(&self, name: &str) -> crate::agent::AgentConfig {
        let mut node = crate::host::host_node_config(name, Some("127.0.0.1".into()));
        node.pod_cidr = None;
        let mut cfg = crate::agent::AgentConfig::new(node, self.socket.clone());
        cfg.layout.root_dir = self.dir().join("agent");
        cfg.layout.log_dir = self.dir().join("pod-logs");
        cfg.layout.cgroup_root = self.cgroup_root().to_string();
        cfg.cni.conf_dir = self.cni_conf_dir.clone();
        cfg.cni.bridge = self.bridge().to_string();
        cfg.cni.ipam_dir = self.dir().join("cni-ipam");
        cfg.default_pod_cidr = self.pod_cidr.clone();
        cfg.server_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg
    }

    /// containerd's gRPC (CRI) socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where containerd's CRI plugin looks for a CNI conflist (`max_conf_num = 1`). It starts
    /// empty, so the runtime reports `NetworkReady=false` until a test or the agent writes one.
    pub fn cni_conf_dir(&self) -> &Path {
        &self.cni_conf_dir
    }

    /// The fixture's scratch directory: a place for the agent's state, pod logs and the CNI
    /// IPAM data directory, removed by [`Containerd::shutdown`].
    pub fn dir(&self) -> &Path {
        &self.scratch.dir
    }

    /// A CRI client connected to this containerd.
    pub fn cri(&self) -> Cri {
        self.cri.clone()
    }

    /// A CNI bridge name no other fixture uses (at most 15 bytes, the kernel's limit). The
    /// bridge plugin creates it and never deletes it; [`Containerd::shutdown`] does.
    pub fn bridge(&self) -> &str {
        &self.scratch.bridge
    }

    /// A pod CIDR (`10.200.X.0/24`) that no other live fixture (of any test process) holds
    /// and no host interface or iptables NAT rule mentioned when the fixture started.
    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// A cgroupfs parent (`/cxd-…`, in every hierarchy) for this fixture's pods: give pod
    /// sandboxes `cgroup_parent = <cgroup_root>/pod<uid>` (the agent's cgroup root). runc
    /// removes only container leaves; [`Containerd::shutdown`] removes this whole tree. Pods
    /// without a cgroup parent land in containerd's default `/k8s.io`, shared with every other
    /// containerd on the host, which the fixture does not clean.
    pub fn cgroup_root(&self) -> &str {
        &self.scratch.cgroup_root
    }

    /// containerd's log so far, for failure messages.
    pub fn containerd_log(&self) -> String {
        std::fs::read_to_string(self.scratch.dir.join("containerd.log"))
            .unwrap_or_else(|e| format!("(containerd.log unreadable: {e})"))
    }

    /// What this fixture created that still exists, one line each: containerd itself, the
    /// `containerd-shim-runc-v2` processes serving its socket and their sockets, mounts under
    /// its directory (container rootfs, sandbox shm, pod network namespaces), cgroups under
    /// [`Containerd::cgroup_root`], libcni result caches of sandboxes killed by force, its
    /// bridge, iptables NAT rules for its pod CIDR, and the directory. While pods run this is
    /// never empty; after a clean [`Containerd::shutdown`] (which returns it) it is.
    pub fn leftovers(&self) -> Vec<String> {
        self.scratch.leftovers()
    }

    /// Tears the fixture down and returns what went wrong or is left over (empty when the
    /// teardown was clean): removes every pod and container through CRI (containers first,
    /// stopped with timeout 0), stops containerd (SIGTERM, then SIGKILL after 10 s), waits for
    /// the shims to exit (killing any that do not, after force-deleting their runc containers),
    /// removes the cgroup root and the bridge, unmounts what is still mounted under the
    /// directory and removes it.
    #[must_use = "the returned list names leftovers; assert that it is empty"]
    pub async fn shutdown(mut self) -> Vec<String> {
        let mut problems: Vec<String> = remove_pods(&self.cri)
            .await
            .into_iter()
            .map(|e| format!("removing pods through CRI: {e}"))
            .collect();
        self.scratch.note_tasks();
        if let Some(child) = self.scratch.child.take() {
            if let Err(e) = terminate(child).await {
                problems.push(e);
            }
        }
        let dir = self.scratch.dir.clone();
        // A shim exits once its sandbox is removed; give it a moment before killing it (no
        // point waiting when CRI could not remove the sandboxes).
        let grace = if problems.is_empty() {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
        if !wait_until(grace, || shims(&dir).is_empty()).await {
            delete_runc_containers(&dir);
            for (pid, _) in shims(&dir) {
                signal(pid, "KILL");
            }
            wait_until(Duration::from_secs(5), || shims(&dir).is_empty()).await;
        }
        self.scratch.remove_host_state();
        problems.extend(self.scratch.leftovers());
        problems
    }
}

/// Stops and removes every container, then every pod sandbox, through CRI. Goes on past
/// failures (what CRI cannot remove is force-removed afterwards) and returns them.
async fn remove_pods(cri: &Cri) -> Vec<String> {
    let mut errors = Vec::new();
    let mut rt = cri.runtime.clone();
    let containers = bounded(rt.list_containers(api::ListContainersRequest { filter: None }))
        .await
        .and_then(|r| r.map_err(cri_err("ListContainers")));
    match containers {
        Ok(list) => {
            for c in list.into_inner().containers {
                let id = c.id;
                let stopped = bounded(rt.stop_container(api::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                }))
                .await
                .and_then(|r| r.map_err(cri_err("StopContainer")));
                let removed = remove_container(&mut rt, &id).await;
                for e in [stopped.err(), removed.err()].into_iter().flatten() {
                    errors.push(format!("container {id}: {e}"));
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    let sandboxes = bounded(rt.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }))
        .await
        .and_then(|r| r.map_err(cri_err("ListPodSandbox")));
    match sandboxes {
        Ok(list) => {
            for sandbox in list.into_inner().items {
                let id = sandbox.id;
                let stopped = bounded(rt.stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await
                .and_then(|r| r.map_err(cri_err("StopPodSandbox")));
                let removed = bounded(rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await
                .and_then(|r| r.map_err(cri_err("RemovePodSandbox")));
                for e in [stopped.err(), removed.err()].into_iter().flatten() {
                    errors.push(format!("pod sandbox {id}: {e}"));
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    errors
}

/// RemoveContainer, waiting out a removal already under way: an agent stopped in the middle
/// of removing a container leaves containerd finishing that call, and a second one meanwhile
/// fails with "already in removing state" although the container is about to be gone.
async fn remove_container(
    rt: &mut api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + CRI_TIMEOUT;
    loop {
        let removed = bounded(rt.remove_container(api::RemoveContainerRequest {
            container_id: id.to_string(),
        }))
        .await
        .and_then(|r| r.map(drop).map_err(cri_err("RemoveContainer")));
        match removed {
            Err(Error::Cri { ref status, .. })
                if status.message().contains("in removing state")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

impl Scratch {
    /// Synchronous, best-effort removal of everything on the host: kills containerd (if still
    /// running), the runc containers and shims, deletes the bridge, unmounts and removes the
    /// directory. Idempotent and cheap when there is nothing left.
    fn remove_host_state(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.note_tasks();
        if !shims(&self.dir).is_empty() {
            delete_runc_containers(&self.dir);
            for (pid, _) in shims(&self.dir) {
                signal(pid, "KILL");
            }
            // SIGKILL is delivered asynchronously; a killed process's cmdline reads empty.
            poll_sync(Duration::from_secs(5), || shims(&self.dir).is_empty());
        }
        for socket in &self.shim_sockets {
            // Only once its shim is gone: a live shim still serves it.
            if socket.exists() && shims(&self.dir).is_empty() {
                let _ = std::fs::remove_file(socket);
            }
        }
        // CNI DEL never ran for sandboxes CRI could not remove: drop libcni's result cache.
        for f in cni_cache_files(&self.task_ids) {
            let _ = std::fs::remove_file(f);
        }
        // rmdir of a cgroup fails while killed tasks are still exiting: retry briefly.
        poll_sync(Duration::from_secs(5), || {
            remove_cgroup_tree(&self.cgroup_root);
            cgroup_dirs(&self.cgroup_root).is_empty()
        });
        delete_link(&self.bridge);
        // Deepest first, so a mount inside another mount goes before it.
        let mut mounts = mounts_under(&self.dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let ok = Command::new("umount")
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(child) = &self.child {
            found.push(format!("containerd (pid {}) is running", child.id()));
        }
        for (pid, cmdline) in shims(&self.dir) {
            found.push(format!("shim process {pid}: {cmdline}"));
        }
        for m in mounts_under(&self.dir) {
            found.push(format!("mount {}", m.display()));
        }
        for socket in self.shim_sockets.iter().filter(|s| s.exists()) {
            found.push(format!("shim socket {}", socket.display()));
        }
        for cgroup in cgroup_dirs(&self.cgroup_root) {
            found.push(format!("cgroup {}", cgroup.display()));
        }
        for f in cni_cache_files(&self.task_ids) {
            found.push(format!("CNI result cache {}", f.display()));
        }
        if link_exists(&self.bridge) {
            found.push(format!("network interface {}", self.bridge));
        }
        if let Some(subnet) = self.subnet {
            for rule in nat_rules_for(subnet) {
                found.push(format!("iptables NAT rule {rule}"));
            }
        }
        if self.dir.exists() {
            found.push(format!("directory {}", self.dir.display()));
        }
        found
    }
}

impl Scratch {
    /// Runs containerd on `config.toml`, appending to `containerd.log`.
    fn spawn_containerd(&mut self) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .map_err(io_err("open containerd.log"))?;
        let log2 = log.try_clone().map_err(io_err("dup containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                Error::Fixture(format!(
                    "cannot run `containerd` ({e}); install Debian's containerd (scripts/test.sh does)"
                ))
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Records the id and shim socket of every task bundle still in the state directory (pod
    /// sandboxes and containers that CRI did not remove), so a forced teardown can remove what
    /// they left outside the directory.
    fn note_tasks(&mut self) {
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task");
        let Ok(namespaces) = std::fs::read_dir(tasks) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(bundles) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for bundle in bundles.flatten() {
                let id = bundle.file_name().to_string_lossy().into_owned();
                if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.task_ids.insert(id);
                }
                let Ok(address) = std::fs::read_to_string(bundle.path().join("address")) else {
                    continue;
                };
                let path = address.trim().trim_start_matches("unix://");
                // Never anything but a shim socket, whatever the file says.
                if path.starts_with("/run/containerd/s/") && !path.contains("..") {
                    self.shim_sockets.insert(PathBuf::from(path));
                }
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_host_state();
        // Last: until here the pod CIDR names this fixture's NAT rules in `leftovers`.
        if let Some(subnet) = self.subnet.take() {
            release_subnet(subnet);
        }
    }
}

impl Drop for Containerd {
    /// Without [`Containerd::shutdown`] (a test that panicked, or forgot), first asks the still
    /// running containerd to remove its pods, so CNI DEL runs and the bridge plugin's NAT rules
    /// and IPAM reservations go too; then `Scratch`'s drop force-removes the rest. The CRI calls
    /// run on a thread of their own with its own runtime: `Drop` cannot await, and blocking a
    /// current-thread runtime's only thread on work queued to that runtime would deadlock.
    fn drop(&mut self) {
        if self.scratch.child.is_none() {
            return;
        }
        let socket = self.socket.clone();
        let teardown = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(cri) = Cri::connect(&socket).await {
                    let _ = remove_pods(&cri).await;
                }
            });
        });
        let _ = teardown.join();
    }
}

/// containerd's configuration, every path inside `dir`. Non-default values and why:
/// `restrict_oom_score_adj` because root lacks CAP_SYS_RESOURCE on these VMs (every
/// RunPodSandbox fails without it); cgroupfs because PID 1 is not systemd; the runc `Root`, the
/// ttrpc address and `opt` path because their defaults are shared with any other containerd;
/// `netns_mounts_under_state_dir` so pod network namespaces are mounted inside `dir` (and
/// attributable to this fixture) instead of the host-wide `/var/run/netns`.
fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{d}/runc"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni/net.d"
      max_conf_num = 1
"#
    )
}

/// Builds the image tarballs into this user's shared cache directory.
async fn build_images() -> Result<PathBuf, Error> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(io_err("read /proc/self"))?;
    let out = PathBuf::from(format!("/tmp/coxswain-images-{uid}"));
    let dir = out.clone();
    tokio::task::spawn_blocking(move || images::build_local_images(&dir))
        .await
        .map_err(|e| Error::Fixture(format!("image build task: {e}")))??;
    Ok(out)
}

/// Polls until containerd answers CRI `Version`, failing early (with its log) if it exits.
async fn wait_for_cri(scratch: &mut Scratch, socket: &Path) -> Result<Cri, Error> {
    let log = scratch.dir.join("containerd.log");
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("socket not created");
    while Instant::now() < deadline {
        if let Some(child) = scratch.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                scratch.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(Error::Fixture(format!(
                    "containerd exited with {status}: {log}"
                )));
            }
        }
        if socket.exists() {
            match Cri::connect(socket).await {
                Ok(cri) => match cri.version().await {
                    Ok(_) => return Ok(cri),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    Err(Error::Fixture(format!(
        "containerd did not answer CRI within {START_TIMEOUT:?} ({last}): {log}"
    )))
}

/// SIGTERM, then SIGKILL if containerd has not exited after 10 s.
async fn terminate(mut child: Child) -> Result<(), String> {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => tokio::time::sleep(POLL).await,
            Err(e) => return Err(format!("waiting for containerd: {e}")),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("containerd ignored SIGTERM for 10 s and was killed".into())
}

/// Polls `done` until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The synchronous [`wait_until`], for `Drop`: polls `done` every 10 ms for at most `limit`.
fn poll_sync(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One CRI call with [`CRI_TIMEOUT`].
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> Result<T, Error> {
    tokio::time::timeout(CRI_TIMEOUT, call)
        .await
        .map_err(|_| Error::Fixture(format!("a CRI call took longer than {CRI_TIMEOUT:?}")))
}

/// Sends a signal with `kill(1)` (the crate has no libc binding, and `Child::kill` only knows
/// SIGKILL).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Creates `/tmp/cxd-<pid><n><salt>`: short, because unix socket paths are limited to 107
/// bytes and containerd puts sockets inside it.
fn make_dir(pid: u32, n: u32) -> Result<PathBuf, Error> {
    let mut salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let dir = PathBuf::from(format!(
            "/tmp/cxd-{}{}-{}",
            base36(u64::from(pid), 5),
            base36(u64::from(n), 1),
            base36(u64::from(salt % 1_679_616), 4)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                salt = salt.wrapping_add(7919);
            }
            Err(e) => return Err(Error::Fixture(format!("create {}: {e}", dir.display()))),
        }
    }
    Err(Error::Fixture("no free /tmp/cxd-* directory name".into()))
}

/// Where fixtures of every test process claim pod CIDRs: one file per third octet, holding
/// the claiming pid.
fn subnet_claims() -> PathBuf {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    PathBuf::from(format!("/tmp/coxswain-subnets-{uid}"))
}

/// Chooses the third octet of a `10.200.X.0/24` pod CIDR and claims it: no live fixture of any
/// test process holds it (claim files with `O_EXCL`; claims of dead processes are taken over),
/// no host interface has an address in it and no iptables NAT rule mentions it. Starts from a pid-derived point so concurrent
/// processes rarely contend.
fn pick_subnet(pid: u32, n: u32) -> Result<u8, Error> {
    let addrs = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| Error::Fixture(format!("cannot run `ip` ({e}); install iproute2")))?;
    // NAT rules a crashed run leaked for a subnet would show up as this fixture's leftovers.
    let nat = Command::new("iptables-save")
        .args(["-t", "nat"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let claims = subnet_claims();
    std::fs::create_dir_all(&claims).map_err(io_err("create the subnet claims directory"))?;
    // Serialises this process's fixtures; other processes are kept apart by O_EXCL.
    let _guard = CLAIMING.lock();
    let start = pid.wrapping_mul(37).wrapping_add(n.wrapping_mul(5)) % 256;
    for i in 0..256u32 {
        let Ok(octet) = u8::try_from((start + i) % 256) else {
            continue;
        };
        let prefix = format!(" 10.200.{octet}.");
        if addrs.contains(&prefix) || nat.contains(&prefix) {
            continue;
        }
        let claim = claims.join(octet.to_string());
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{pid}");
                    return Ok(octet);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&claim).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists());
                    // A claim being written right now reads empty: leave it alone.
                    if alive || holder.is_empty() {
                        break;
                    }
                    let _ = std::fs::remove_file(&claim);
                }
                Err(e) => {
                    return Err(Error::Fixture(format!("claim {}: {e}", claim.display())));
                }
            }
        }
    }
    Err(Error::Fixture("every 10.200.X.0/24 is in use".into()))
}

/// Gives a pod CIDR claimed by [`pick_subnet`] back.
fn release_subnet(octet: u8) {
    let _ = std::fs::remove_file(subnet_claims().join(octet.to_string()));
}

/// `n` in base 36, zero-padded to `width`.
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Rules in iptables' NAT table that mention `10.200.<subnet>.`: the bridge plugin's
/// masquerading for this fixture's pods (the pod CIDR is unique while the fixture lives), which
/// only a CNI DEL removes. Empty when iptables is missing.
fn nat_rules_for(subnet: u8) -> Vec<String> {
    let Ok(out) = Command::new("iptables-save")
        .args(["-t", "nat"])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let needle = format!(" 10.200.{subnet}.");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// libcni's cached results (`/var/lib/cni/results/<network>-<id>-<ifname>`) of the sandboxes
/// `ids`. CNI DEL removes them; a sandbox that never got one leaves them behind.
fn cni_cache_files(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            ids.iter().any(|id| name.contains(&format!("-{id}-")))
        })
        .map(|e| e.path())
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn delete_link(name: &str) {
    if link_exists(name) {
        let _ = Command::new("ip")
            .args(["link", "del", name])
            .stderr(Stdio::null())
            .status();
    }
}

/// `containerd-shim*` processes whose command line names a path inside `dir` (their
/// `-address` is the fixture's socket), with their command lines.
fn shims(dir: &Path) -> Vec<(u32, String)> {
    let inside = format!("{}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a0| {
            a0.rsplit('/')
                .next()
                .unwrap_or(a0)
                .starts_with("containerd-shim")
        });
        if is_shim && args.iter().any(|a| a.contains(&inside)) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// Force-deletes every runc container in the fixture's runc root (namespace `k8s.io`): kills
/// their processes and removes their cgroups, which a killed shim would leave behind.
fn delete_runc_containers(dir: &Path) {
    let root = dir.join("runc/k8s.io");
    if !root.exists() {
        return;
    }
    let Ok(out) = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id.trim()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Every cgroup hierarchy: each v1 controller mount plus the v2 tree (`unified` in hybrid
/// mode), or just the root on a v2-only host.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// The directories of cgroupfs path `cgroup` (absolute, e.g. `/cxd-…`) in each hierarchy.
fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Removes cgroup `cgroup` and every cgroup below it, deepest first (cgroupfs deletes with
/// rmdir, which fails harmlessly while a cgroup still has tasks).
fn remove_cgroup_tree(cgroup: &str) {
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for dir in cgroup_dirs(cgroup) {
        remove(&dir);
    }
}

/// Mount points at or under `dir`, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Fixture(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_distinct() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
        let max = format!(
            "cxt{}{}",
            base36(4_194_304, 5),
            base36(u64::from(u32::MAX), 1)
        );
        assert!(max.len() <= 15, "{max}");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/tmp/x\"), r"/tmp/x\");
    }
}
