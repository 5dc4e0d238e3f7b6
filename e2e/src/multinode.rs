//! A multi-node Coxswain cluster on one machine, built from the real binaries.
//!
//! [`LocalCluster::up`] starts, in this order:
//! - a **3-member etcd cluster** (Debian's `etcd`) on free loopback ports, each member with its
//!   own data directory;
//! - one **PKI** (`pki::ensure`, generated once; serving SANs: the bridge address, 127.0.0.1,
//!   the `kubernetes` Service IP) and a kubeconfig per component from its own certificate;
//! - **2 `cox-apiserver`s** on the same etcd and PKI, both on the host bridge address (TLS is
//!   on, so a non-loopback bind is allowed), each on its own free port;
//! - **2 `cox-scheduler`s and 2 `cox-controller-manager`s**, leader-elected (the defaults),
//!   component `i` talking to API server `i % 2`;
//! - **N nodes** (3 by default). Node `i` (1-based) is a network namespace `<prefix>-n<i>`
//!   joined to a host bridge `<prefix>0` (address `10.99.<subnet>.1/24`) by a veth pair (host
//!   end `<prefix>-n<i>`, node end `eth0` with `10.99.<subnet>.1<i>`). Inside it run its own
//!   containerd (own root, state, sockets, runc root, cgroupfs, `restrict_oom_score_adj`,
//!   pod netns mounts under its state dir) and a `cox-node-agent` serving its streaming port on
//!   the node address over TLS with a node serving certificate. The node's pod CIDR is
//!   `10.244.<i>.0/24` (`--pod-cidr`; node IPAM is off so the CIDR is known before the first
//!   pod starts) on a CNI bridge `cni0` inside the namespace; each namespace forwards IPv4 and
//!   routes every other node's pod CIDR via that node's address, so pods on different nodes
//!   reach each other by pod IP. No route is added on the host: pod CIDRs never leak there.
//!
//! Processes inside a node namespace are started with `nsenter --net=/run/netns/<ns>`, not
//! `ip netns exec`: the latter also remounts `/sys` in a private mount namespace, which hides
//! `/sys/fs/cgroup` and breaks runc's cgroupfs driver.
//!
//! Every process runs in its own process group with its log in `<dir>/logs/<name>.log`. The
//! layout (prefix, subnet, node count) is written to `<dir>/cluster.json`, so [`down`] can
//! tear down a cluster started by another process (`deploy/local-cluster.sh down`).
//!
//! **Teardown** ([`LocalCluster::down`], also run by `Drop`, and [`down`] for a directory):
//! processes of the cluster (our children, plus any `etcd`, `cox-*`, `containerd`,
//! `containerd-shim*` or `nsenter` whose command line names `<dir>/`) get SIGTERM then SIGKILL
//! (node agents first, containerd last); runc containers are force-deleted in each node's runc
//! root and the remaining shims killed; libcni result caches of the node's sandboxes
//! (`/var/lib/cni/results/*-<id>-*`) and the shims' sockets (`/run/containerd/s/…`) are
//! removed; every mount under `<dir>` is unmounted (deepest first); each node's cgroup tree
//! (`/<prefix>-n<i>` in every hierarchy) is removed; the namespaces (`ip netns del`, which
//! also destroys the veths and everything inside, including the bridge plugin's iptables
//! rules), the host veths and the bridge are deleted; the directory is removed and the subnet
//! claim released. [`LocalCluster::leftovers`] / [`leftovers`] list whatever is still there.
//!
//! **Joining.** By default nodes join with a bootstrap token over TLS ([`NodeJoin`]): from
//! inside its namespace each node sends a CertificateSigningRequest authenticated only by the
//! token, the controller managers (`--cluster-signing-cert-file`/`--cluster-signing-key-file`
//! = the cluster CA) approve and sign it, and the agent runs with the signed certificate.
//! [`NodeJoin::ClientCert`] issues the node certificates from the PKI directly instead. The
//! agents' serving certificates (port 10250) are issued from the PKI in both cases.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{kubectl_path, Run};

/// The `kubernetes` Service range the API servers allocate from.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// Pod CIDR of node `i` (1-based).
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// How nodes get their client certificates.
#[derive(Clone, Debug, Default)]
pub enum NodeJoin {
    /// TLS bootstrapping, as kubeadm joins: one bootstrap token (a `bootstrap.kubernetes.io/token`
    /// Secret, deleted once every node has joined); from inside each node's namespace, kubectl
    /// with only that token and the CA creates a CertificateSigningRequest for
    /// `system:node:<name>` (signer `kubernetes.io/kube-apiserver-client-kubelet`, key generated
    /// for the node), the controller manager's csrapproving approves it and csrsigning signs it
    /// with the cluster CA, and the node's kubeconfig carries the signed certificate.
    #[default]
    BootstrapToken,
    /// A client certificate (`system:node:<name>`, `system:nodes`) issued straight from the
    /// cluster PKI before the agent starts.
    ClientCert,
}

/// What [`LocalCluster::up`] builds.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cluster's directory: data, PKI, kubeconfigs, logs, each node's containerd. Keep it
    /// short: containerd puts unix sockets (≤ 107 bytes) inside it.
    pub dir: PathBuf,
    /// Where `cox-apiserver`, `cox-scheduler`, `cox-controller-manager` and `cox-node-agent`
    /// are (a cargo `target/debug` or `target/release`).
    pub bin_dir: PathBuf,
    /// Interface and namespace names start with it (at most 8 characters).
    pub prefix: String,
    /// The host bridge's subnet is `10.99.<subnet>.0/24`.
    pub subnet: u8,
    /// Number of nodes (1..=9).
    pub nodes: usize,
    pub join: NodeJoin,
    /// `--node-monitor-grace-period` of the controller managers.
    pub node_monitor_grace_period: Duration,
    /// `--default-unreachable-toleration-seconds` (and not-ready) of the controller managers.
    pub eviction_toleration_seconds: u32,
    /// `--node-lease-renew-interval` of the node agents.
    pub node_lease_renew_interval: Duration,
    /// Where the busybox and pause OCI tarballs are built (`deploy/images/build.sh`).
    pub images_dir: PathBuf,
}

impl Options {
    /// Defaults for a cluster in `dir` using binaries from `bin_dir`: 3 nodes, names
    /// `<prefix>…`, subnet 10.99.`subnet`.0/24, a node declared unreachable after 16 s without
    /// heartbeats (renewed every 2 s), pods evicted 10 s later.
    pub fn new(dir: PathBuf, bin_dir: PathBuf, prefix: &str, subnet: u8) -> Options {
        Options {
            dir,
            bin_dir,
            prefix: prefix.to_string(),
            subnet,
            nodes: 3,
            join: NodeJoin::BootstrapToken,
            node_monitor_grace_period: Duration::from_secs(16),
            eviction_toleration_seconds: 10,
            node_lease_renew_interval: Duration::from_secs(2),
            images_dir: default_images_dir(),
        }
    }
}

/// `/tmp/coxswain-images-<uid>`, shared with `node_agent::testing`.
pub fn default_images_dir() -> PathBuf {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    PathBuf::from(format!("/tmp/coxswain-images-{uid}"))
}

/// The cargo target directory next to this crate holding the cox-* binaries: `release` when
/// it has all of them, else `debug`.
pub fn default_bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let has_all = |d: &Path| BINARIES.iter().all(|b| d.join(b).is_file());
    let release = target.join("release");
    if has_all(&release) {
        release
    } else {
        target.join("debug")
    }
}

/// The binaries a cluster runs.
pub const BINARIES: [&str; 4] = [
    "cox-apiserver",
    "cox-scheduler",
    "cox-controller-manager",
    "cox-node-agent",
];

/// Process names [`down`] may kill when their command line names the cluster directory.
const OWNED_COMMANDS: [&str; 9] = [
    "etcd",
    "cox-apiserver",
    "cox-scheduler",
    "cox-controller-manager",
    "cox-node-agent",
    "containerd",
    "containerd-shim-runc-v2",
    "containerd-shim",
    "nsenter",
];

/// The layout written to `<dir>/cluster.json`.
#[derive(Clone, Debug)]
struct Layout {
    dir: PathBuf,
    prefix: String,
    subnet: u8,
    nodes: usize,
}

impl Layout {
    fn bridge(&self) -> String {
        format!("{}0", self.prefix)
    }
    fn netns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }
    fn host_veth(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet, 1)
    }
    fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet, 10 + i as u8)
    }
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }
    fn cgroup_root(&self, i: usize) -> String {
        format!("/{}-n{i}", self.prefix)
    }
    fn save(&self) -> std::io::Result<()> {
        let v = serde_json::json!({
            "prefix": self.prefix, "subnet": self.subnet, "nodes": self.nodes,
        });
        std::fs::write(self.dir.join("cluster.json"), v.to_string())
    }
    fn load(dir: &Path) -> Option<Layout> {
        let text = std::fs::read_to_string(dir.join("cluster.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Layout {
            dir: dir.to_path_buf(),
            prefix: v["prefix"].as_str()?.to_string(),
            subnet: u8::try_from(v["subnet"].as_u64()?).ok()?,
            nodes: usize::try_from(v["nodes"].as_u64()?).ok()?,
        })
    }
}

/// One process of the cluster, restartable with the same command line.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    netns: Option<String>,
    child: Option<Child>,
}

/// Kinds of processes, for [`LocalCluster::pid`] and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Etcd,
    ApiServer,
    Scheduler,
    ControllerManager,
    Containerd,
    NodeAgent,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Etcd => "etcd",
            Role::ApiServer => "apiserver",
            Role::Scheduler => "scheduler",
            Role::ControllerManager => "controller-manager",
            Role::Containerd => "containerd",
            Role::NodeAgent => "node-agent",
        }
    }
}

/// A running multi-node cluster; dropping it tears everything down.
pub struct LocalCluster {
    layout: Layout,
    procs: Vec<Proc>,
    etcd_client_ports: Vec<u16>,
    apiserver_ports: Vec<u16>,
    /// Leave everything running on drop ([`LocalCluster::detach`]).
    detached: bool,
    claim: Option<PathBuf>,
}

/// Errors are strings with context: this is a test harness.
pub type Result<T> = std::result::Result<T, String>;

fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port nobody listens on, from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default): a port from `bind(0)` is in that
/// range, where any process's outgoing connection may take it as its source port before the
/// server started later binds it (an etcd member once failed with "address already in use"
/// that way). Ports handed out in this process are not handed out again.
fn free_port(ip: IpAddr) -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: parking_lot::Mutex<BTreeSet<u16>> = parking_lot::Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for _ in 0..1_000 {
        // RandomState's keys are random per instance: a cheap random number without a crate.
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = low + (r % u64::from(high - low)) as u16;
        let mut given = GIVEN.lock();
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(format!("no free port on {ip} in {low}..{high}"))
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `limit` with `what`.
pub fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where [`claim_subnet`] keeps its claims, one file per octet holding the claimer's pid.
const CLAIMS_DIR: &str = "/tmp/coxswain-mn-subnets";

/// Picks a free `10.99.X.0/24` (no host address in it) and claims it with a file under
/// `/tmp/coxswain-mn-subnets` holding this process's pid (claims of dead processes are taken
/// over). Returns the octet and the claim file.
pub fn claim_subnet() -> Result<(u8, PathBuf)> {
    let addrs = run_cmd("ip", &["-4", "-o", "addr", "show"])?;
    let claims = PathBuf::from(CLAIMS_DIR);
    std::fs::create_dir_all(&claims).map_err(|e| format!("claims dir: {e}"))?;
    let start = std::process::id() % 200;
    for k in 0..200u32 {
        let octet = u8::try_from(20 + (start + k) % 200).unwrap_or(99);
        if addrs.contains(&format!(" 10.99.{octet}.")) {
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
                    let _ = write!(f, "{}", std::process::id());
                    return Ok((octet, claim));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&claim).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists());
                    if alive || holder.is_empty() {
                        break;
                    }
                    let _ = std::fs::remove_file(&claim);
                }
                Err(e) => return Err(format!("claim {}: {e}", claim.display())),
            }
        }
    }
    Err("every 10.99.X.0/24 is in use".into())
}

impl LocalCluster {
    /// Builds the whole cluster and waits until every node is Ready. On failure everything
    /// started so far is torn down and the error carries the tail of the relevant log.
    pub fn up(opts: Options) -> Result<LocalCluster> {
        if opts.prefix.is_empty() || opts.prefix.len() > 8 {
            return Err("the prefix must be 1 to 8 characters".into());
        }
        if !(1..=9).contains(&opts.nodes) {
            return Err("1 to 9 nodes".into());
        }
        for b in BINARIES {
            if !opts.bin_dir.join(b).is_file() {
                return Err(format!(
                    "{} is missing: cargo build -p apiserver -p scheduler -p controller-manager -p node-agent --bins",
                    opts.bin_dir.join(b).display()
                ));
            }
        }
        let layout = Layout {
            dir: opts.dir.clone(),
            prefix: opts.prefix.clone(),
            subnet: opts.subnet,
            nodes: opts.nodes,
        };
        if layout.dir.join("cluster.json").exists() {
            // A previous cluster in this directory: remove what it left first.
            down(&layout.dir);
        }
        std::fs::create_dir_all(layout.dir.join("logs"))
            .map_err(|e| format!("create {}: {e}", layout.dir.display()))?;
        layout
            .save()
            .map_err(|e| format!("write cluster.json: {e}"))?;
        let mut cluster = LocalCluster {
            layout,
            procs: Vec::new(),
            etcd_client_ports: Vec::new(),
            apiserver_ports: Vec::new(),
            detached: false,
            claim: None,
        };
        cluster.start(&opts)?;
        Ok(cluster)
    }

    /// Hands over the subnet claim file (removed at teardown).
    pub fn set_claim(&mut self, claim: PathBuf) {
        self.claim = Some(claim);
    }

    fn start(&mut self, opts: &Options) -> Result<()> {
        let l = self.layout.clone();
        let dir = l.dir.clone();
        let bin = |b: &str| opts.bin_dir.join(b);

        // Images first (slowest to fail).
        node_agent::images::build_local_images(&opts.images_dir)
            .map_err(|e| format!("building the local images: {e}"))?;

        // Network: bridge, namespaces, veths, routes.
        self.network()?;

        // etcd.
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut peers = Vec::new();
        for _ in 0..3 {
            let client = free_port(lo)?;
            let peer = free_port(lo)?;
            self.etcd_client_ports.push(client);
            peers.push(peer);
        }
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let initial = initial.join(",");
        let ports: Vec<(u16, u16)> = self
            .etcd_client_ports
            .iter()
            .copied()
            .zip(peers.iter().copied())
            .collect();
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let client = format!("http://127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let args: Vec<String> = vec![
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.join(format!("etcd{i}")).display().to_string(),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client,
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                peer,
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                format!("{}-etcd", l.prefix),
                "--logger".into(),
                "zap".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            self.spawn(&format!("etcd-{i}"), PathBuf::from("etcd"), args, None)?;
        }
        for i in 0..3 {
            let port = self.etcd_client_ports[i];
            let name = format!("etcd-{i}");
            poll(Duration::from_secs(60), &name, || {
                etcd_healthy(port).then_some(())
            })
            .map_err(|e| self.with_log(&name, e))?;
        }

        // PKI, once, with every SAN either API server needs.
        let gw = l.gateway();
        let pki = pki::ensure(
            &dir.join("pki"),
            &pki::PkiOptions {
                serving_dns: vec!["localhost".into()],
                serving_ips: vec![IpAddr::V4(gw), lo, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            },
        )
        .map_err(|e| format!("generating the PKI: {e}"))?;
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, pki.ca.cert_pem()).map_err(|e| format!("ca.crt: {e}"))?;
        let ca_key_file = dir.join("pki").join("ca.key");

        // API servers.
        let etcd_servers: Vec<String> = self
            .etcd_client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        for i in 0..2 {
            let port = free_port(IpAddr::V4(gw))?;
            self.apiserver_ports.push(port);
            let args: Vec<String> = vec![
                "--etcd-servers".into(),
                etcd_servers.join(","),
                "--bind-address".into(),
                gw.to_string(),
                "--secure-port".into(),
                port.to_string(),
                "--data-dir".into(),
                dir.join(format!("apiserver{i}")).display().to_string(),
                "--cert-dir".into(),
                dir.join("pki").display().to_string(),
                "--tls-sans".into(),
                format!("{gw},127.0.0.1,localhost"),
                "--service-cluster-ip-range".into(),
                SERVICE_CIDR.into(),
            ];
            let url = self.apiserver_url(i);
            pki.write_kubeconfig(&self.admin_kubeconfig_of(i), &url, &pki.admin, "admin")
                .map_err(|e| format!("admin kubeconfig: {e}"))?;
            self.spawn(&format!("apiserver-{i}"), bin("cox-apiserver"), args, None)?;
            // One at a time: both would otherwise race on `pki::ensure` in the same directory
            // (it has everything, so neither should write, but a race is not worth the risk).
            self.wait_apiserver(i)?;
        }
        std::fs::copy(self.admin_kubeconfig_of(0), self.kubeconfig())
            .map_err(|e| format!("kubeconfig: {e}"))?;

        // Schedulers and controller managers, component i on API server i % 2.
        for i in 0..2 {
            let url = self.apiserver_url(i % 2);
            let kc = dir.join(format!("scheduler-{i}.kubeconfig"));
            pki.write_kubeconfig(&kc, &url, &pki.scheduler, "system:kube-scheduler")
                .map_err(|e| format!("scheduler kubeconfig: {e}"))?;
            let args: Vec<String> = vec![
                "--kubeconfig".into(),
                kc.display().to_string(),
                "--port".into(),
                "0".into(),
            ];
            self.spawn(&format!("scheduler-{i}"), bin("cox-scheduler"), args, None)?;
            let kc = dir.join(format!("controller-manager-{i}.kubeconfig"));
            pki.write_kubeconfig(
                &kc,
                &url,
                &pki.controller_manager,
                "system:kube-controller-manager",
            )
            .map_err(|e| format!("controller-manager kubeconfig: {e}"))?;
            let tol = opts.eviction_toleration_seconds.to_string();
            let args: Vec<String> = vec![
                "--kubeconfig".into(),
                kc.display().to_string(),
                "--port".into(),
                "0".into(),
                "--root-ca-file".into(),
                ca_file.display().to_string(),
                // csrsigning signs node client certificates (TLS bootstrapping).
                "--cluster-signing-cert-file".into(),
                ca_file.display().to_string(),
                "--cluster-signing-key-file".into(),
                ca_key_file.display().to_string(),
                // Each node's pod CIDR is fixed by --pod-cidr (known before its first pod).
                "--allocate-node-cidrs=false".into(),
                "--node-monitor-period".into(),
                "1s".into(),
                "--node-monitor-grace-period".into(),
                format!("{}s", opts.node_monitor_grace_period.as_secs()),
                "--default-unreachable-toleration-seconds".into(),
                tol.clone(),
                "--default-not-ready-toleration-seconds".into(),
                tol,
            ];
            self.spawn(
                &format!("controller-manager-{i}"),
                bin("cox-controller-manager"),
                args,
                None,
            )?;
        }

        // Nodes: containerd, then the agent, inside the node's namespace.
        for i in 1..=l.nodes {
            let nd = l.node_dir(i);
            std::fs::create_dir_all(nd.join("cni/net.d")).map_err(|e| format!("{e}"))?;
            std::fs::write(nd.join("config.toml"), containerd_config(&nd))
                .map_err(|e| format!("containerd config: {e}"))?;
            self.spawn(
                &format!("containerd-{i}"),
                PathBuf::from("containerd"),
                vec![
                    "--config".into(),
                    nd.join("config.toml").display().to_string(),
                    "--log-level".into(),
                    "warn".into(),
                ],
                Some(l.netns(i)),
            )?;
        }
        for i in 1..=l.nodes {
            let sock = l.node_dir(i).join("c.sock");
            let name = format!("containerd-{i}");
            poll(Duration::from_secs(30), &name, || {
                sock.exists().then_some(())
            })
            .map_err(|e| self.with_log(&name, e))?;
        }
        let token = match opts.join {
            NodeJoin::BootstrapToken => Some(self.create_bootstrap_token()?),
            NodeJoin::ClientCert => None,
        };
        let busybox = opts.images_dir.join("busybox.tar");
        let pause = opts.images_dir.join("pause.tar");
        for i in 1..=l.nodes {
            let name = self.node_name(i);
            let nd = l.node_dir(i);
            let ip = l.node_ip(i);
            let url = self.apiserver_url(i % 2);
            let kc = nd.join("kubeconfig");
            match &token {
                Some((_, token)) => {
                    let yaml = self.join_with_token(i, &url, token, pki.ca.cert_pem())?;
                    write_private(&kc, &yaml)?;
                }
                None => {
                    let cert = pki
                        .node_client(&name)
                        .map_err(|e| format!("node certificate: {e}"))?;
                    let yaml = pki::kubeconfig(
                        &url,
                        pki.ca.cert_pem(),
                        &format!("system:node:{name}"),
                        pki::Credentials::ClientCert(&cert),
                    );
                    write_private(&kc, &yaml)?;
                }
            }
            let serving = pki
                .node_serving(&name, &[IpAddr::V4(ip)])
                .map_err(|e| format!("node serving certificate: {e}"))?;
            write_private(&nd.join("kubelet.crt"), &serving.cert_pem)?;
            write_private(&nd.join("kubelet.key"), &serving.key_pem)?;
            let args: Vec<String> = vec![
                "--kubeconfig".into(),
                kc.display().to_string(),
                "--node-name".into(),
                name.clone(),
                "--node-ip".into(),
                ip.to_string(),
                "--bind-address".into(),
                ip.to_string(),
                "--container-runtime-endpoint".into(),
                nd.join("c.sock").display().to_string(),
                "--root-dir".into(),
                nd.join("agent").display().to_string(),
                "--pod-log-dir".into(),
                nd.join("pod-logs").display().to_string(),
                "--cgroup-root".into(),
                l.cgroup_root(i),
                "--cni-conf-dir".into(),
                nd.join("cni/net.d").display().to_string(),
                "--cni-bridge".into(),
                "cni0".into(),
                "--pod-cidr".into(),
                pod_cidr(i),
                "--node-lease-renew-interval".into(),
                format!("{}ms", opts.node_lease_renew_interval.as_millis()),
                "--node-status-report-frequency".into(),
                "10s".into(),
                "--tls-cert-file".into(),
                nd.join("kubelet.crt").display().to_string(),
                "--tls-private-key-file".into(),
                nd.join("kubelet.key").display().to_string(),
                "--client-ca-file".into(),
                ca_file.display().to_string(),
                "--import-image".into(),
                pause.display().to_string(),
                "--import-image".into(),
                busybox.display().to_string(),
            ];
            self.spawn(
                &format!("node-agent-{i}"),
                bin("cox-node-agent"),
                args,
                Some(l.netns(i)),
            )?;
        }
        if let Some((id, _)) = &token {
            // Every node has its certificate: the token has done its job.
            let secret = format!("bootstrap-token-{id}");
            let r = self.kubectl(&["delete", "secret", "-n", "kube-system", &secret]);
            if !r.ok {
                return Err(format!("deleting the bootstrap token: {}", r.stderr));
            }
        }
        for i in 1..=l.nodes {
            let name = self.node_name(i);
            poll(
                Duration::from_secs(120),
                &format!("node {name} Ready"),
                || {
                    self.check_alive().ok()?;
                    self.node_ready(&name).then_some(())
                },
            )
            .map_err(|e| self.with_log(&format!("node-agent-{i}"), e))?;
        }
        Ok(())
    }

    /// Creates a bootstrap token Secret (authentication and signing usages) in `kube-system`,
    /// as `coxswain token create` does; returns `(id, "<id>.<secret>")`.
    fn create_bootstrap_token(&self) -> Result<(String, String)> {
        let id = random_alnum(6)?;
        let secret = random_alnum(16)?;
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  \
             namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  \
             token-id: {id}\n  token-secret: {secret}\n  \
             usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n  \
             description: local-cluster node join\n"
        );
        let r = self.kubectl_stdin(&["create", "-f", "-"], &yaml);
        if !r.ok {
            return Err(format!("creating the bootstrap token: {}", r.stderr));
        }
        Ok((id.clone(), format!("{id}.{secret}")))
    }

    /// Node `i` joins with the bootstrap token: from inside its namespace, kubectl (holding
    /// only the token and the CA) creates a CSR for `system:node:<name>` and waits until it is
    /// approved and signed. Returns the node's kubeconfig with its key and signed certificate.
    fn join_with_token(&self, i: usize, url: &str, token: &str, ca_pem: &str) -> Result<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let name = self.node_name(i);
        let user = format!("system:node:{name}");
        let (csr_pem, key_pem) = pki::generate_csr(&user, Some("system:nodes"))
            .map_err(|e| format!("generating a CSR: {e}"))?;
        let nd = self.layout.node_dir(i);
        let bootstrap_kc = nd.join("bootstrap.kubeconfig");
        let yaml = pki::kubeconfig(
            url,
            ca_pem,
            "tls-bootstrap-token-user",
            pki::Credentials::Token(token),
        );
        write_private(&bootstrap_kc, &yaml)?;
        let csr_name = format!("node-csr-{name}-{}", random_alnum(6)?);
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  \
             name: {csr_name}\nspec:\n  request: {}\n  \
             signerName: kubernetes.io/kube-apiserver-client-kubelet\n  \
             usages: [digital signature, client auth]\n",
            b64.encode(csr_pem.as_bytes())
        );
        let ns = self.layout.netns(i);
        let r = kubectl_in(
            &self.layout.dir,
            &ns,
            &bootstrap_kc,
            &["create", "-f", "-"],
            Some(&csr),
        );
        if !r.ok {
            return Err(format!(
                "{name}: creating its CSR with the bootstrap token: {}",
                r.stderr
            ));
        }
        let cert_pem = poll(
            Duration::from_secs(60),
            &format!("{name}'s CSR approved and signed"),
            || {
                let r = kubectl_in(
                    &self.layout.dir,
                    &ns,
                    &bootstrap_kc,
                    &[
                        "get",
                        "csr",
                        &csr_name,
                        "-o",
                        "jsonpath={.status.certificate}",
                    ],
                    None,
                );
                let cert = b64.decode(r.stdout.trim()).ok()?;
                let cert = String::from_utf8(cert).ok()?;
                cert.contains("BEGIN CERTIFICATE").then_some(cert)
            },
        )
        .map_err(|e| self.with_log("controller-manager-0", e))?;
        let _ = std::fs::remove_file(&bootstrap_kc);
        let cert = pki::CertKey { cert_pem, key_pem };
        Ok(pki::kubeconfig(
            url,
            ca_pem,
            &user,
            pki::Credentials::ClientCert(&cert),
        ))
    }

    /// The bridge, one namespace + veth per node, addresses, forwarding and pod routes.
    fn network(&self) -> Result<()> {
        let l = &self.layout;
        let br = l.bridge();
        let gw = format!("{}/24", l.gateway());
        run_cmd("ip", &["link", "add", &br, "type", "bridge"])?;
        run_cmd("ip", &["addr", "add", &gw, "dev", &br])?;
        run_cmd("ip", &["link", "set", &br, "up"])?;
        for i in 1..=l.nodes {
            let ns = l.netns(i);
            let veth = l.host_veth(i);
            run_cmd("ip", &["netns", "add", &ns])?;
            run_cmd(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run_cmd("ip", &["link", "set", &veth, "master", &br])?;
            run_cmd("ip", &["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", l.node_ip(i));
            run_cmd("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let netns_path = format!("--net=/run/netns/{ns}");
            run_cmd(
                "nsenter",
                &[&netns_path, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            )?;
            for j in (1..=l.nodes).filter(|j| *j != i) {
                let via = l.node_ip(j).to_string();
                run_cmd(
                    "ip",
                    &["-n", &ns, "route", "add", &pod_cidr(j), "via", &via],
                )?;
            }
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        netns: Option<String>,
    ) -> Result<()> {
        let mut p = Proc {
            name: name.to_string(),
            program,
            args: args.into_iter().map(OsString::from).collect(),
            netns,
            child: None,
        };
        self.launch(&mut p)?;
        self.procs.push(p);
        Ok(())
    }

    fn launch(&self, p: &mut Proc) -> Result<()> {
        let log_path = self.log_path(&p.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = match &p.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&p.program);
                c
            }
            None => Command::new(&p.program),
        };
        cmd.args(&p.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Out of the caller's process group: a terminal's Ctrl-C after `up` returned, or
            // for the caller, does not reach the cluster; `down` stops it.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", p.program.display()))?;
        p.child = Some(child);
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.layout.dir.join("logs").join(format!("{name}.log"))
    }

    /// The last 40 lines of process `name`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn with_log(&self, name: &str, e: String) -> String {
        format!("{e}\n--- {name}.log (tail) ---\n{}", self.log_tail(name))
    }

    /// Fails naming the first process that has exited unexpectedly.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let name = p.name.clone();
                    p.child = None;
                    return Err(format!("{name} exited with {status}"));
                }
            }
        }
        Ok(())
    }

    fn wait_apiserver(&mut self, i: usize) -> Result<()> {
        let kc = self.admin_kubeconfig_of(i);
        let name = format!("apiserver-{i}");
        poll(Duration::from_secs(60), &format!("{name} ready"), || {
            if self.check_alive().is_err() {
                return None;
            }
            let r = kubectl_with(&self.layout.dir, &kc, &["get", "--raw", "/readyz"]);
            (r.ok && r.stdout.trim() == "ok").then_some(())
        })
        .map_err(|e| self.with_log(&name, e))
    }

    fn node_ready(&self, name: &str) -> bool {
        let r = self.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        r.ok && r.stdout.trim() == "True"
    }

    /// Node `i`'s name (1-based): `node-<i>`.
    pub fn node_name(&self, i: usize) -> String {
        format!("node-{i}")
    }

    /// Node `i`'s address on the bridge.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.layout.node_ip(i)
    }

    pub fn nodes(&self) -> usize {
        self.layout.nodes
    }

    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// `https://10.99.<subnet>.1:<port>` of API server `i` (0 or 1).
    pub fn apiserver_url(&self, i: usize) -> String {
        format!(
            "https://{}:{}",
            self.layout.gateway(),
            self.apiserver_ports[i]
        )
    }

    /// The admin kubeconfig (API server 0).
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.dir.join("admin.kubeconfig")
    }

    /// An admin kubeconfig for API server `i`.
    pub fn admin_kubeconfig_of(&self, i: usize) -> PathBuf {
        self.layout.dir.join(format!("admin-{i}.kubeconfig"))
    }

    /// kubectl (the pinned 1.32) as admin on API server 0.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        kubectl_with(&self.layout.dir, &self.kubeconfig(), args)
    }

    /// kubectl as admin on API server `i`.
    pub fn kubectl_on(&self, i: usize, args: &[&str]) -> Run {
        kubectl_with(&self.layout.dir, &self.admin_kubeconfig_of(i), args)
    }

    /// kubectl with `stdin` (`apply -f -`), as admin on API server 0.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        use std::io::Write;
        let mut child = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &self.layout.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output").into()
    }

    /// The pids of the running processes of `role`, by index (`None`: not running).
    pub fn pids(&mut self, role: Role) -> Vec<(String, Option<u32>)> {
        let _ = self.check_alive();
        self.procs
            .iter()
            .filter(|p| {
                p.name
                    .strip_prefix(role.prefix())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .map(|p| (p.name.clone(), p.child.as_ref().map(Child::id)))
            .collect()
    }

    /// The process (name) whose pid is `pid`, if it is one of the cluster's.
    pub fn name_of_pid(&self, pid: u32) -> Option<String> {
        self.procs
            .iter()
            .find(|p| p.child.as_ref().map(Child::id) == Some(pid))
            .map(|p| p.name.clone())
    }

    /// SIGKILLs process `name` (e.g. `apiserver-1`, `node-agent-2`) and waits for it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no process {name}"))?;
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERMs process `name` and waits up to 10 s for it to exit (then SIGKILL).
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no process {name}"))?;
        if let Some(c) = p.child.take() {
            terminate(c, Duration::from_secs(10));
        }
        Ok(())
    }

    /// Starts process `name` again with the same command line (after [`LocalCluster::kill`]
    /// or [`LocalCluster::stop`], or when it exited by itself). A running process is left
    /// alone.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let idx = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("no process {name}"))?;
        let mut p = self.procs.remove(idx);
        if let Some(c) = p.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                self.procs.insert(idx, p);
                return Ok(());
            }
            p.child = None;
        }
        let launched = self.launch(&mut p);
        self.procs.insert(idx, p);
        launched?;
        if let Some(i) = name.strip_prefix("apiserver-").and_then(|s| s.parse().ok()) {
            self.wait_apiserver(i)?;
        }
        Ok(())
    }

    /// Restarts every process that is not running, except those named in `except`: a
    /// controller manager that lost its lease exits by design, as upstream's does, and is
    /// brought back as a standby.
    pub fn restart_exited(&mut self, except: &[&str]) -> Result<Vec<String>> {
        let _ = self.check_alive();
        let dead: Vec<String> = self
            .procs
            .iter()
            .filter(|p| p.child.is_none() && !except.contains(&p.name.as_str()))
            .map(|p| p.name.clone())
            .collect();
        for name in &dead {
            self.restart(name)?;
        }
        Ok(dead)
    }

    /// The holder of Lease `kube-system/<lease>` mapped to one of our processes (identities
    /// are `<host>_<pid>`).
    pub fn leader(&self, lease: &str) -> Option<String> {
        let r = self.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        let holder = r.stdout.trim().to_string();
        let pid: u32 = holder.rsplit('_').next()?.parse().ok()?;
        self.name_of_pid(pid)
    }

    /// Leaves the cluster running when this value is dropped (for `local-cluster up`);
    /// [`down`] removes it later.
    pub fn detach(mut self) {
        self.detached = true;
        self.claim = None;
    }

    /// Tears everything down and returns what is left over (empty when clean).
    #[must_use = "the returned list names leftovers"]
    pub fn down(mut self) -> Vec<String> {
        self.teardown();
        let left = leftovers_of(&self.layout);
        self.detached = true;
        left
    }

    /// What of this cluster still exists on the host.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_of(&self.layout)
    }

    fn teardown(&mut self) {
        // Our children first, in dependency order, so each sees a clean SIGTERM.
        let order = [
            Role::NodeAgent,
            Role::ControllerManager,
            Role::Scheduler,
            Role::ApiServer,
            Role::Etcd,
            Role::Containerd,
        ];
        for role in order {
            let children: Vec<Child> = self
                .procs
                .iter_mut()
                .filter(|p| p.name.starts_with(role.prefix()))
                .filter_map(|p| p.child.take())
                .collect();
            terminate_all(children, Duration::from_secs(10));
        }
        teardown_layout(&self.layout);
        if let Some(claim) = self.claim.take() {
            let _ = std::fs::remove_file(claim);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.detached {
            self.teardown();
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// kubectl inside network namespace `ns` (`nsenter --net`), with `kubeconfig` and optional
/// standard input.
fn kubectl_in(dir: &Path, ns: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "20s"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nsenter kubectl");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output").into()
}

/// `n` random characters from `[a-z0-9]` (from /dev/urandom), as bootstrap tokens use.
fn random_alnum(n: usize) -> Result<String> {
    use std::io::Read;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    let mut byte = [0u8; 1];
    while out.len() < n {
        f.read_exact(&mut byte)
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        // 252 = 7 * 36: reject the rest so every character is equally likely.
        if byte[0] < 252 {
            out.push(char::from(CHARS[usize::from(byte[0] % 36)]));
        }
    }
    Ok(out)
}

/// kubectl with `kubeconfig`, HOME (its cache) in `dir`.
pub fn kubectl_with(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
    Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "20s"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
        .into()
}

/// etcd's `/health` says true (the member is up and the cluster has a leader).
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
    if c.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl LocalCluster {
    /// Whether etcd member `i` of the cluster reports healthy.
    pub fn etcd_healthy(&self, i: usize) -> bool {
        etcd_healthy(self.etcd_client_ports[i])
    }
}

/// containerd's configuration for a node, every path inside `nd` (as
/// `node_agent::testing`'s, which `../shared/design/containerd-on-these-machines.md` measured):
/// `restrict_oom_score_adj` (root lacks CAP_SYS_RESOURCE), cgroupfs (PID 1 is not systemd),
/// private runc root, ttrpc address and `opt`, pod netns mounts under the state dir.
fn containerd_config(nd: &Path) -> String {
    let d = nd.display();
    let pause = node_agent::images::PAUSE_IMAGE;
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
    sandbox_image = "{pause}"
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

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn terminate(child: Child, limit: Duration) {
    terminate_all(vec![child], limit);
}

/// SIGTERM to all, wait up to `limit`, SIGKILL the rest.
fn terminate_all(mut children: Vec<Child>, limit: Duration) {
    for c in &children {
        signal(c.id(), "TERM");
    }
    let deadline = Instant::now() + limit;
    while !children.is_empty() && Instant::now() < deadline {
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        if !children.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Tears down the cluster whose directory is `dir` (from its `cluster.json`), whoever started
/// it, and returns what is left over.
pub fn down(dir: &Path) -> Vec<String> {
    let Some(layout) = Layout::load(dir) else {
        return vec![format!("{}: no cluster.json", dir.display())];
    };
    teardown_layout(&layout);
    // A test's subnet claim ([`claim_subnet`]) whose process died with its cluster.
    let claim = Path::new(CLAIMS_DIR).join(layout.subnet.to_string());
    let holder = std::fs::read_to_string(&claim).unwrap_or_default();
    let alive = holder
        .trim()
        .parse::<u32>()
        .is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists());
    if !holder.is_empty() && !alive {
        let _ = std::fs::remove_file(claim);
    }
    leftovers_of(&layout)
}

/// What of the cluster in `dir` still exists.
pub fn leftovers(dir: &Path) -> Vec<String> {
    match Layout::load(dir) {
        Some(l) => leftovers_of(&l),
        None => Vec::new(),
    }
}

/// Processes (pid, command line) of the cluster: an owned command whose command line names a
/// path inside `dir`.
fn cluster_processes(dir: &Path) -> Vec<(u32, String)> {
    let inside = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(a0) = args.first() else { continue };
        let base = a0.rsplit('/').next().unwrap_or(a0);
        if OWNED_COMMANDS.contains(&base) && args.iter().any(|a| a.contains(&inside)) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

fn processes_named(dir: &Path, names: &[&str]) -> Vec<u32> {
    cluster_processes(dir)
        .into_iter()
        .filter(|(_, cmd)| {
            let a0 = cmd.split(' ').next().unwrap_or("");
            let base = a0.rsplit('/').next().unwrap_or(a0);
            names.contains(&base)
        })
        .map(|(p, _)| p)
        .collect()
}

fn poll_quiet(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    poll(limit, "", || done().then_some(())).is_ok()
}

/// Everything but the processes we still hold as children (those are stopped first by
/// [`LocalCluster::teardown`]). Idempotent.
fn teardown_layout(l: &Layout) {
    let dir = &l.dir;
    // Processes not ours as children (another `up`, or orphans): same order, by pid.
    let groups: [&[&str]; 5] = [
        &["cox-node-agent"],
        &["cox-controller-manager", "cox-scheduler"],
        &["cox-apiserver"],
        &["etcd"],
        &["containerd"],
    ];
    for names in groups {
        let pids = processes_named(dir, names);
        for p in &pids {
            signal(*p, "TERM");
        }
        if !poll_quiet(Duration::from_secs(10), || {
            processes_named(dir, names).is_empty()
        }) {
            for p in processes_named(dir, names) {
                signal(p, "KILL");
            }
            poll_quiet(Duration::from_secs(5), || {
                processes_named(dir, names).is_empty()
            });
        }
    }
    // What CRI left: note task ids and shim sockets, force-delete runc containers (kills
    // their processes), then kill the shims.
    let mut task_ids = BTreeSet::new();
    let mut shim_sockets = BTreeSet::new();
    for i in 1..=l.nodes {
        let tasks = l.node_dir(i).join("state/io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let id = bundle.file_name().to_string_lossy().into_owned();
                if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    task_ids.insert(id);
                }
                if let Ok(address) = std::fs::read_to_string(bundle.path().join("address")) {
                    let path = address.trim().trim_start_matches("unix://");
                    if path.starts_with("/run/containerd/s/") && !path.contains("..") {
                        shim_sockets.insert(PathBuf::from(path));
                    }
                }
            }
        }
        let root = l.node_dir(i).join("runc/k8s.io");
        if root.exists() {
            if let Ok(out) = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = Command::new("runc")
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", id.trim()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
    let shim_names = ["containerd-shim-runc-v2", "containerd-shim", "nsenter"];
    for p in processes_named(dir, &shim_names) {
        signal(p, "KILL");
    }
    poll_quiet(Duration::from_secs(5), || {
        processes_named(dir, &shim_names).is_empty()
    });
    for s in &shim_sockets {
        let _ = std::fs::remove_file(s);
    }
    for f in cni_cache_files(&task_ids) {
        let _ = std::fs::remove_file(f);
    }
    // Mounts, deepest first.
    let mut mounts = mounts_under(dir);
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
    // Cgroups (rmdir fails while killed tasks are still exiting: retry briefly).
    for i in 1..=l.nodes {
        let root = l.cgroup_root(i);
        poll_quiet(Duration::from_secs(5), || {
            remove_cgroup_tree(&root);
            cgroup_dirs(&root).is_empty()
        });
    }
    // Network.
    for i in 1..=l.nodes {
        let ns = l.netns(i);
        if Path::new("/run/netns").join(&ns).exists() {
            let _ = run_cmd("ip", &["netns", "del", &ns]);
        }
        let veth = l.host_veth(i);
        if link_exists(&veth) {
            let _ = run_cmd("ip", &["link", "del", &veth]);
        }
    }
    let br = l.bridge();
    if link_exists(&br) {
        let _ = run_cmd("ip", &["link", "del", &br]);
    }
    if dir.exists() && mounts_under(dir).is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn leftovers_of(l: &Layout) -> Vec<String> {
    let dir = &l.dir;
    let mut found = Vec::new();
    for (pid, cmd) in cluster_processes(dir) {
        found.push(format!("process {pid}: {cmd}"));
    }
    for m in mounts_under(dir) {
        found.push(format!("mount {}", m.display()));
    }
    for i in 1..=l.nodes {
        for c in cgroup_dirs(&l.cgroup_root(i)) {
            found.push(format!("cgroup {}", c.display()));
        }
        let ns = l.netns(i);
        if Path::new("/run/netns").join(&ns).exists() {
            found.push(format!("network namespace {ns}"));
        }
        if link_exists(&l.host_veth(i)) {
            found.push(format!("interface {}", l.host_veth(i)));
        }
    }
    if link_exists(&l.bridge()) {
        found.push(format!("interface {}", l.bridge()));
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// libcni's cached results (`/var/lib/cni/results/<network>-<id>-<ifname>`) of sandboxes `ids`.
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

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

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

fn remove_cgroup_tree(cgroup: &str) {
    fn remove(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for d in cgroup_dirs(cgroup) {
        remove(&d);
    }
}

/// Mount points at or under `dir` (this process's mount namespace).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}
