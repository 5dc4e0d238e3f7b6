//! End-to-end tests of Coxswain as a user meets it: the real `kubectl` (1.32, pinned), real
//! client libraries, a real etcd or the embedded store.
//!
//! [`Cluster`] runs an API server in this process on a free loopback port with its own
//! temporary directory and writes a kubeconfig for it; [`Cluster::kubectl`] runs kubectl
//! against it. A missing kubectl fails the test: these tests never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use apiserver::{Config, Running, StorageConfig};
use storage::testing::EtcdServer;

pub mod multinode;

/// The kubectl the tests pin: 1.32 as bundled next to the dispatcher at /usr/bin/kubectl.
/// `/usr/bin/kubectl` itself would pick the same from `/version`; pinning it makes a wrong
/// `/version` fail loudly instead of silently testing another kubectl.
pub fn kubectl_path() -> PathBuf {
    let pinned = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.32");
    if pinned.exists() {
        return pinned.to_path_buf();
    }
    let fallback = Path::new("/usr/bin/kubectl");
    assert!(
        fallback.exists(),
        "kubectl 1.32 is required for the e2e tests (expected {} or /usr/bin/kubectl)",
        pinned.display()
    );
    fallback.to_path_buf()
}

/// What a secure test cluster encrypts: Secrets with AES-GCM (a fixed test key), anything
/// stored before in plaintext still readable.
pub const ENCRYPTION_CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys:
      - name: key1
        secret: c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluaywgbWF5YmU=
  - identity: {}
";

/// Where a cluster keeps its objects.
pub enum Backend {
    Embedded,
    Etcd,
}

/// One API server for one test.
pub struct Cluster {
    running: Option<Running>,
    config: Config,
    kubeconfig: PathBuf,
    /// Set for a secure cluster: its certificates (the admin kubeconfig uses `admin`).
    pub pki: Option<pki::ClusterPki>,
    dir: tempfile::TempDir,
    _etcd: Option<EtcdServer>,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cluster {
    pub async fn start(backend: Backend) -> Cluster {
        Self::start_with(backend, None).await
    }

    /// A cluster serving HTTPS with authentication and `Node,RBAC` authorization, as
    /// `coxswain up` runs it. `tokens` is the content of a `--token-auth-file` (CSV lines
    /// `token,user,uid,"group1,group2"`); the kubeconfig is the admin's (system:masters).
    pub async fn start_secure(backend: Backend, tokens: &str) -> Cluster {
        Self::start_with(backend, Some(tokens)).await
    }

    async fn start_with(backend: Backend, secure_tokens: Option<&str>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cox-e2e-")
            .tempdir()
            .expect("temp dir");
        let (storage, etcd) = match backend {
            Backend::Embedded => (
                StorageConfig::Embedded {
                    data_dir: dir.path().join("data"),
                },
                None,
            ),
            Backend::Etcd => {
                let etcd = tokio::task::spawn_blocking(EtcdServer::start)
                    .await
                    .expect("etcd");
                (
                    StorageConfig::Etcd {
                        endpoints: vec![etcd.endpoint()],
                    },
                    Some(etcd),
                )
            }
        };
        let kubeconfig = dir.path().join("kubeconfig");
        let mut pki = None;
        let security = secure_tokens.map(|tokens| {
            let generated = pki::ensure(&dir.path().join("pki"), &pki::PkiOptions::default())
                .expect("generate the cluster PKI");
            let mut security = apiserver::security::SecurityConfig::from_pki(&generated);
            let token_file = dir.path().join("tokens.csv");
            std::fs::write(&token_file, tokens).expect("write the token file");
            security.token_auth_file = Some(token_file);
            pki = Some(generated);
            security
        });
        // A secure cluster also audits (default policy) and encrypts Secrets at rest, as a
        // production configuration would.
        let audit = secure_tokens.map(|_| apiserver::security::audit::AuditOptions {
            log_path: dir.path().join("audit.log"),
            policy_file: None,
        });
        let encryption_provider_config = secure_tokens.map(|_| {
            let path = dir.path().join("encryption.yaml");
            std::fs::write(&path, ENCRYPTION_CONFIG).expect("write the encryption config");
            path
        });
        let config = Config {
            storage,
            bind_address: "127.0.0.1".parse().expect("loopback"),
            port: 0,
            service_cluster_ip_range: ("10.0.0.0".parse().expect("ip"), 24),
            write_kubeconfig: Some(kubeconfig.clone()),
            event_ttl: Duration::from_secs(3600),
            security,
            audit,
            encryption_provider_config,
        };
        let running = apiserver::start(config.clone())
            .await
            .expect("API server starts");
        let mut config = config;
        config.port = running.addr.port();
        if let Some(pki) = &pki {
            let url = format!("https://127.0.0.1:{}", config.port);
            pki.write_kubeconfig(&kubeconfig, &url, &pki.admin, "admin")
                .expect("write the admin kubeconfig");
        }
        Cluster {
            running: Some(running),
            config,
            kubeconfig,
            pki,
            dir,
            _etcd: etcd,
        }
    }

    /// `http://127.0.0.1:<port>`, or `https://` for a secure cluster.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.config.port)
    }

    /// Writes a kubeconfig for this (secure) cluster with other credentials; returns its path.
    pub fn user_kubeconfig(&self, name: &str, credentials: pki::Credentials<'_>) -> PathBuf {
        let pki = self.pki.as_ref().expect("a secure cluster");
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        let yaml = pki::kubeconfig(&self.url(), pki.ca.cert_pem(), name, credentials);
        std::fs::write(&path, yaml).expect("write a user kubeconfig");
        path
    }

    /// Runs kubectl with another kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
            .into()
    }

    /// The etcd this cluster stores in, for tests that read what is at rest.
    pub fn etcd_endpoint(&self) -> Option<String> {
        self._etcd.as_ref().map(EtcdServer::endpoint)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server and starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        // `stop` returns once the storage is released, so the same store opens again.
        let running = apiserver::start(self.config.clone())
            .await
            .expect("API server restarts");
        self.running = Some(running);
    }

    /// Blocks until at least `n` watches of `kind` (core group) are open on the server, read
    /// from its `apiserver_registered_watchers` metric: how a test knows a `kubectl get -w` or
    /// `kubectl wait` it started is watching before it writes. Panics after 60 s.
    pub fn wait_for_watchers(&self, kind: &str, n: i64) {
        use std::io::{Read, Write};
        let needle = format!("apiserver_registered_watchers{{group=\"\",kind=\"{kind}\"}} ");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut body = String::new();
            if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.config.port)) {
                let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let _ = conn.read_to_string(&mut body);
            }
            let open = body
                .lines()
                .find_map(|l| l.strip_prefix(&needle))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if open >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {n} open {kind} watches within 60 s"
            );
            std::thread::yield_now();
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Runs kubectl with this cluster's kubeconfig (blocking; call from `spawn_blocking` or
    /// a multi-threaded runtime).
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin` as its standard input (`-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        use std::io::Write;
        let mut child = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output").into()
    }

    /// Like [`Cluster::kubectl`] but fails the test unless kubectl succeeds; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let run = self.kubectl(args);
        assert!(
            run.ok,
            "kubectl {} failed:\n{}\n{}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Starts kubectl in the background (`logs -f`, `port-forward`) with its stdout fed line
    /// by line into a channel; kill the child to stop it.
    pub fn kubectl_lines(
        &self,
        args: &[&str],
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        use std::io::BufRead;
        let mut child = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl");
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        (child, rx)
    }

    /// `kubectl apply -f -` with `yaml`; fails the test on error.
    pub fn apply(&self, yaml: &str, extra: &[&str]) -> String {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        let run = self.kubectl_stdin(&args, Some(yaml));
        assert!(
            run.ok,
            "kubectl apply failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}
