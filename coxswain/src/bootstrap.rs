//! Kubelet TLS bootstrap: a node that holds only a bootstrap token and the cluster CA asks
//! the API server for its client certificate through a CertificateSigningRequest (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, subject `CN=system:node:<node>,
//! O=system:nodes`), which the controller manager's csrapproving approves and csrsigning
//! signs; the node then writes the certificate, its key and a kubeconfig into its cert
//! directory and runs as `system:node:<node>`. A certificate already there is reused unless it
//! is past 90 % of its lifetime: then it is renewed first (a request authenticated with it),
//! or, once expired, requested again with the bootstrap token. While the agent runs, the
//! certificate is renewed before it expires ([`rotate`], kubelet's `--rotate-certificates`;
//! the mechanics are in [`crate::rotation`]).
//!
//! Also `coxswain token create`: a bootstrap token Secret, as `kubeadm token create`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;
use tracing::Instrument as _;

use crate::rotation::{self, NodeIdentity};
use crate::{client_from_kubeconfig, AgentOptions, Error, Progress};

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// File names inside the cert directory.
pub const CERT_FILE: &str = "kubelet-client.crt";
pub const KEY_FILE: &str = "kubelet-client.key";
pub const KUBECONFIG_FILE: &str = "kubeconfig";
/// Certificate and key in one file (kubelet's `kubelet-client-current.pem`), replaced by one
/// rename, so a reader never sees a certificate with another one's key. The authoritative
/// copy; the three files above are written after it.
pub const CURRENT_FILE: &str = "kubelet-client-current.pem";

/// The longest wait between two failed renewals (they start at 2 s and double).
const MAX_RENEW_BACKOFF: Duration = Duration::from_secs(64);

/// How a node obtains its client certificate.
#[derive(Clone)]
pub struct BootstrapConfig {
    /// The API server, `https://host:port`.
    pub server: String,
    /// A bootstrap token, `<id>.<secret>`.
    pub token: String,
    /// The cluster CA (PEM) the API server's certificate is checked against.
    pub ca_pem: String,
    /// Where the certificate, key and kubeconfig are kept.
    pub cert_dir: PathBuf,
    /// The node's name: the certificate is for `system:node:<node_name>`.
    pub node_name: String,
    /// How long to wait for the request to be approved and signed.
    pub timeout: Duration,
    /// Renew the certificate while the agent runs (kubelet's `--rotate-certificates`).
    pub rotate_certificates: bool,
}

impl std::fmt::Debug for BootstrapConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapConfig")
            .field("server", &self.server)
            .field("cert_dir", &self.cert_dir)
            .field("node_name", &self.node_name)
            .field("timeout", &self.timeout)
            .field("rotate_certificates", &self.rotate_certificates)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Bootstrap(format!("{}: {e}", path.display()))
}

/// Writes `contents` to `path` readable only by the owner (keys, kubeconfigs with keys).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// The user a node's certificate must name.
fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Whether `cert` is a client certificate for this node that the CA verifies at `at`.
fn for_this_node(config: &BootstrapConfig, cert_pem: &str, at: SystemTime) -> bool {
    pki::client_identity(&config.ca_pem, cert_pem, at).is_ok_and(|id| {
        id.common_name == node_user(&config.node_name)
            && id.organizations.iter().any(|o| o == "system:nodes")
    })
}

/// Splits [`CURRENT_FILE`]'s contents into certificate and key.
fn split_current(pem: &str) -> Option<pki::CertKey> {
    let at = pem.find("-----BEGIN PRIVATE KEY-----")?;
    let (cert_pem, key_pem) = pem.split_at(at);
    Some(pki::CertKey {
        cert_pem: cert_pem.to_string(),
        key_pem: key_pem.to_string(),
    })
}

/// The certificate and key in `cert_dir` ([`CURRENT_FILE`], else the separate files of an
/// older agent), if they are for this node and valid now.
fn load(config: &BootstrapConfig) -> Option<pki::CertKey> {
    let ck = match std::fs::read_to_string(config.cert_dir.join(CURRENT_FILE)) {
        Ok(pem) => split_current(&pem)?,
        Err(_) => pki::CertKey {
            cert_pem: std::fs::read_to_string(config.cert_dir.join(CERT_FILE)).ok()?,
            key_pem: std::fs::read_to_string(config.cert_dir.join(KEY_FILE)).ok()?,
        },
    };
    // A pair whose key is not the certificate's is unusable, as a missing one.
    NodeIdentity::new(ck.clone()).ok()?;
    for_this_node(config, &ck.cert_pem, SystemTime::now()).then_some(ck)
}

/// The certificate in `cert_dir` if it can be used as it is: for this node, valid, and not yet
/// past 90 % of its lifetime.
fn existing(config: &BootstrapConfig) -> Option<pki::CertKey> {
    let ck = load(config)?;
    let (not_before, not_after) = rotation::validity(&ck.cert_pem).ok()?;
    (!rotation::due_at_start(not_before, not_after, SystemTime::now())).then_some(ck)
}

/// Writes the credential files, each by a rename: [`CURRENT_FILE`] first, then the
/// certificate, key and kubeconfig (kube clients and `kubectl --kubeconfig` read that one).
fn save(config: &BootstrapConfig, ck: &pki::CertKey) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(&config.cert_dir).map_err(|e| io_error(&config.cert_dir, e))?;
    write_private(
        &config.cert_dir.join(CURRENT_FILE),
        &format!("{}{}", ck.cert_pem, ck.key_pem),
    )?;
    write_private(&config.cert_dir.join(KEY_FILE), &ck.key_pem)?;
    write_private(&config.cert_dir.join(CERT_FILE), &ck.cert_pem)?;
    let kubeconfig_path = config.cert_dir.join(KUBECONFIG_FILE);
    let yaml = pki::kubeconfig(
        &config.server,
        &config.ca_pem,
        &node_user(&config.node_name),
        pki::Credentials::ClientCert(ck),
    );
    write_private(&kubeconfig_path, &yaml)?;
    Ok(kubeconfig_path)
}

/// Short random lowercase alphanumerics (`[a-z0-9]`), as bootstrap tokens and names use.
fn random_alnum(n: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// Makes sure `cert_dir` holds a valid client certificate for the node — renewing one past
/// 90 % of its lifetime, requesting one with the bootstrap token if there is none (or it
/// expired, or renewal failed) — and returns the path of a kubeconfig using it.
pub async fn bootstrap_credentials(
    config: &BootstrapConfig,
    progress: &Progress,
) -> Result<PathBuf, Error> {
    let cert = obtain(config, progress).await?;
    save(config, &cert)
}

/// The node's client certificate, as [`bootstrap_credentials`] describes (not yet saved).
async fn obtain(config: &BootstrapConfig, progress: &Progress) -> Result<pki::CertKey, Error> {
    std::fs::create_dir_all(&config.cert_dir).map_err(|e| io_error(&config.cert_dir, e))?;
    if let Some(cert) = existing(config) {
        progress(&format!(
            "using the client certificate in {}",
            config.cert_dir.display()
        ));
        return Ok(cert);
    }
    if let Some(current) = load(config) {
        progress(&format!(
            "the client certificate in {} is past 90 % of its lifetime: renewing it",
            config.cert_dir.display()
        ));
        let yaml = pki::kubeconfig(
            &config.server,
            &config.ca_pem,
            &node_user(&config.node_name),
            pki::Credentials::ClientCert(&current),
        );
        let renewed = match client_from_kubeconfig(&yaml).await {
            Ok(client) => request_certificate(config, client, "csr-", progress).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(cert) => return Ok(cert),
            Err(e) => progress(&format!(
                "renewing with the current certificate failed ({e}); using the bootstrap token"
            )),
        }
    }
    request_with_token(config, progress).await
}

/// Requests a certificate authenticated with the bootstrap token.
async fn request_with_token(
    config: &BootstrapConfig,
    progress: &Progress,
) -> Result<pki::CertKey, Error> {
    let yaml = pki::kubeconfig(
        &config.server,
        &config.ca_pem,
        "tls-bootstrap-token-user",
        pki::Credentials::Token(&config.token),
    );
    let client = client_from_kubeconfig(&yaml).await?;
    request_certificate(config, client, "node-csr-", progress).await
}

/// Creates a CertificateSigningRequest named `<prefix><random>` for a new key with `client`
/// (the bootstrap token's, or the node's own when renewing) and waits until it is signed (or
/// denied, failed, or the deadline passes).
async fn request_certificate(
    config: &BootstrapConfig,
    client: kube::Client,
    prefix: &str,
    progress: &Progress,
) -> Result<pki::CertKey, Error> {
    let user = node_user(&config.node_name);
    let (csr_pem, key_pem) = pki::generate_csr(&user, Some("system:nodes"))?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let name = format!("{prefix}{}", random_alnum(10));
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: KUBELET_CLIENT_SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .map_err(|e| Error::Bootstrap(format!("creating CertificateSigningRequest {name}: {e}")))?;
    progress(&format!(
        "requested a client certificate for {user} (CertificateSigningRequest {name}); waiting for it to be approved and signed"
    ));
    let deadline = tokio::time::Instant::now() + config.timeout;
    let mut last_error = String::new();
    loop {
        match api.get(&name).await {
            Ok(csr) => {
                let status = csr.status.unwrap_or_default();
                for c in status.conditions.iter().flatten() {
                    if matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True" {
                        return Err(Error::Bootstrap(format!(
                            "CertificateSigningRequest {name} {}: {}",
                            c.type_.to_lowercase(),
                            c.message.as_deref().unwrap_or_default()
                        )));
                    }
                }
                if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                    let cert_pem = String::from_utf8(cert.0).map_err(|_| {
                        Error::Bootstrap(format!(
                            "CertificateSigningRequest {name}: the certificate is not PEM"
                        ))
                    })?;
                    pki::client_identity(&config.ca_pem, &cert_pem, SystemTime::now()).map_err(
                        |e| {
                            Error::Bootstrap(format!(
                                "CertificateSigningRequest {name}: unusable certificate: {e}"
                            ))
                        },
                    )?;
                    let ck = pki::CertKey { cert_pem, key_pem };
                    NodeIdentity::new(ck.clone()).map_err(|e| {
                        Error::Bootstrap(format!("CertificateSigningRequest {name}: {e}"))
                    })?;
                    progress(&format!("got the client certificate for {user}"));
                    return Ok(ck);
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Bootstrap(format!(
                "CertificateSigningRequest {name} was not signed within {:?}{}{last_error}",
                config.timeout,
                if last_error.is_empty() {
                    ""
                } else {
                    "; last error: "
                },
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A node agent started by TLS bootstrap, with the task renewing its certificate; dropping it
/// stops both.
pub struct BootstrappedAgent {
    pub agent: node_agent::agent::Agent,
    /// The certificate the agent's connections present.
    pub identity: Arc<NodeIdentity>,
    rotation: Option<tokio::task::JoinHandle<()>>,
}

impl BootstrappedAgent {
    /// Resolves when the agent stops.
    pub async fn wait(&mut self) {
        self.agent.wait().await;
    }
}

impl Drop for BootstrappedAgent {
    fn drop(&mut self) {
        if let Some(r) = self.rotation.take() {
            r.abort();
        }
    }
}

/// `coxswain agent --token`: obtains the node's client certificate (see
/// [`bootstrap_credentials`]), then runs the node agent with a client that follows the
/// certificate's renewals ([`rotation::rotating_client`]) and, unless
/// `rotate_certificates` is off, the task renewing it ([`rotate`]).
pub async fn agent_bootstrap(
    config: BootstrapConfig,
    opts: AgentOptions,
    progress: Progress,
) -> Result<BootstrappedAgent, Error> {
    let cert = obtain(&config, &progress).await?;
    save(&config, &cert)?;
    let identity = NodeIdentity::new(cert)?;
    let client = rotation::rotating_client(&config.server, &config.ca_pem, identity.clone())?;
    let agent = crate::agent_with_client(client.clone(), opts, progress.clone()).await?;
    let rotation = config.rotate_certificates.then(|| {
        let span = tracing::info_span!("certificate_rotation", node = %config.node_name);
        tokio::spawn(rotate(config, identity.clone(), client, progress).instrument(span))
    });
    Ok(BootstrappedAgent {
        agent,
        identity,
        rotation,
    })
}

/// Renews the node's client certificate for as long as the agent runs: at a random point
/// between 70 % and 90 % of its lifetime ([`rotation::rotation_deadline`]) a new key and a
/// CertificateSigningRequest sent with the current certificate through `client`; once signed,
/// the files are replaced, then `identity` (so new connections present the new certificate
/// and old ones end). Failures are retried with back-off (2 s doubling to 64 s); a
/// certificate that expired before it could be renewed is requested again with the bootstrap
/// token, as kubelet falls back to its bootstrap kubeconfig.
pub async fn rotate(
    config: BootstrapConfig,
    identity: Arc<NodeIdentity>,
    client: kube::Client,
    progress: Progress,
) {
    use rand::Rng as _;
    loop {
        let current = identity.current();
        let deadline = match rotation::validity(&current.cert_pem) {
            Ok((not_before, not_after)) => {
                rotation::rotation_deadline(not_before, not_after, rand::rng().random::<f64>())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the client certificate; renewing it now");
                SystemTime::now()
            }
        };
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            in_seconds = wait.as_secs(),
            "client certificate renewal scheduled"
        );
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_secs(2);
        loop {
            match renew_once(&config, &identity, &client, &progress).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "renewing the client certificate failed");
                    let jitter = backoff.mul_f64(rand::rng().random_range(0.0..0.1));
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(MAX_RENEW_BACKOFF);
                }
            }
        }
    }
}

/// One renewal: a new certificate (with the current one, or the bootstrap token once it has
/// expired), saved, then made the running identity.
async fn renew_once(
    config: &BootstrapConfig,
    identity: &NodeIdentity,
    client: &kube::Client,
    progress: &Progress,
) -> Result<(), Error> {
    let current = identity.current();
    let cert = if for_this_node(config, &current.cert_pem, SystemTime::now()) {
        request_certificate(config, client.clone(), "csr-", progress).await?
    } else {
        progress("the client certificate expired before it was renewed; requesting one with the bootstrap token");
        request_with_token(config, progress).await?
    };
    save(config, &cert)?;
    identity.replace(cert.clone())?;
    let not_after = rotation::validity(&cert.cert_pem)
        .ok()
        .and_then(|(_, na)| na.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    progress(&format!(
        "renewed the client certificate for {} (serial {}, valid until {not_after} s after the epoch)",
        node_user(&config.node_name),
        rotation::serial(&cert.cert_pem).unwrap_or_default(),
    ));
    Ok(())
}

/// `coxswain token create`: a bootstrap token Secret (`kube-system/bootstrap-token-<id>`,
/// usable for authentication, in `system:bootstrappers`), expiring after `ttl` unless `None`.
/// Returns the token, `<id>.<secret>`.
pub async fn create_bootstrap_token(
    client: kube::Client,
    ttl: Option<Duration>,
) -> Result<String, Error> {
    let id = random_alnum(6);
    let secret = random_alnum(16);
    let mut data = std::collections::BTreeMap::from([
        ("token-id".to_string(), id.clone()),
        ("token-secret".to_string(), secret.clone()),
        (
            "usage-bootstrap-authentication".to_string(),
            "true".to_string(),
        ),
        ("usage-bootstrap-signing".to_string(), "true".to_string()),
        (
            "description".to_string(),
            "Created by coxswain token create".to_string(),
        ),
    ]);
    if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
        let secs =
            i64::try_from(ttl.as_secs()).map_err(|_| Error::Bootstrap("--ttl too large".into()))?;
        let expires = k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .map_err(|e| Error::Bootstrap(format!("--ttl: {e}")))?;
        data.insert(
            "expiration".to_string(),
            expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    }
    let object = Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| Error::Bootstrap(format!("creating the bootstrap token Secret: {e}")))?;
    Ok(format!("{id}.{secret}"))
}

/// Parses `--ttl` as kubeadm does (`24h`, `30m`, `90s`, `0` for never).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (use s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        assert!(parse_ttl("1d").is_err());
        assert!(parse_ttl("").is_err());
    }

    #[test]
    fn random_names() {
        let t = random_alnum(16);
        assert_eq!(t.len(), 16);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(random_alnum(16), t);
    }

    #[test]
    fn existing_certificates_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Ca::generate("ca").unwrap();
        let config = BootstrapConfig {
            server: "https://127.0.0.1:1".into(),
            token: "abcdef.0123456789abcdef".into(),
            ca_pem: ca.cert_pem().into(),
            cert_dir: dir.path().into(),
            node_name: "n1".into(),
            timeout: Duration::from_secs(1),
            rotate_certificates: true,
        };
        assert!(existing(&config).is_none());
        let write = |ck: &pki::CertKey| {
            save(&config, ck).unwrap();
        };
        let nodes = vec!["system:nodes".to_string()];
        write(
            &ca.issue_client("system:node:n1", &nodes, Duration::from_secs(3600))
                .unwrap(),
        );
        assert!(existing(&config).is_some());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another node's, past 90 % of its life (backdated 5 min, so 10 s more is 97 %), or
        // from another CA: not used as it is.
        write(
            &ca.issue_client("system:node:n2", &nodes, Duration::from_secs(3600))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
        write(
            &ca.issue_client("system:node:n1", &nodes, Duration::from_secs(10))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
        assert!(load(&config).is_some(), "still valid: renewed with itself");
        let other = pki::Ca::generate("other").unwrap();
        write(
            &other
                .issue_client("system:node:n1", &nodes, Duration::from_secs(3600))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
    }
}
