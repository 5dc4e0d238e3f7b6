//! Kubelet TLS bootstrap: a node that holds only a bootstrap token and the cluster CA asks
//! the API server for its client certificate through a CertificateSigningRequest (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, subject `CN=system:node:<node>,
//! O=system:nodes`), which the controller manager's csrapproving approves and csrsigning
//! signs; the node then writes the certificate, its key and a kubeconfig into its cert
//! directory and runs as `system:node:<node>`. A valid certificate already there is reused.
//!
//! Also `coxswain token create`: a bootstrap token Secret, as `kubeadm token create`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;

use crate::{client_from_kubeconfig, AgentOptions, Error, Progress};

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// File names inside the cert directory.
pub const CERT_FILE: &str = "kubelet-client.crt";
pub const KEY_FILE: &str = "kubelet-client.key";
pub const KUBECONFIG_FILE: &str = "kubeconfig";

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
}

impl std::fmt::Debug for BootstrapConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapConfig")
            .field("server", &self.server)
            .field("cert_dir", &self.cert_dir)
            .field("node_name", &self.node_name)
            .field("timeout", &self.timeout)
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

/// The certificate and key already in `cert_dir`, if they are for this node, signed by the
/// CA and valid for at least another ten minutes.
fn existing(config: &BootstrapConfig) -> Option<pki::CertKey> {
    let cert_pem = std::fs::read_to_string(config.cert_dir.join(CERT_FILE)).ok()?;
    let key_pem = std::fs::read_to_string(config.cert_dir.join(KEY_FILE)).ok()?;
    let soon = SystemTime::now() + Duration::from_secs(600);
    let id = pki::client_identity(&config.ca_pem, &cert_pem, soon).ok()?;
    (id.common_name == node_user(&config.node_name)
        && id.organizations.iter().any(|o| o == "system:nodes"))
    .then_some(pki::CertKey { cert_pem, key_pem })
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

/// Makes sure `cert_dir` holds a valid client certificate for the node — requesting one with
/// the bootstrap token if it does not — and returns the path of a kubeconfig using it.
pub async fn bootstrap_credentials(
    config: &BootstrapConfig,
    progress: &Progress,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(&config.cert_dir).map_err(|e| io_error(&config.cert_dir, e))?;
    let kubeconfig_path = config.cert_dir.join(KUBECONFIG_FILE);
    let user = node_user(&config.node_name);
    let cert = match existing(config) {
        Some(cert) => {
            progress(&format!(
                "using the client certificate in {}",
                config.cert_dir.display()
            ));
            cert
        }
        None => {
            let cert = request_certificate(config, progress).await?;
            write_private(&config.cert_dir.join(KEY_FILE), &cert.key_pem)?;
            write_private(&config.cert_dir.join(CERT_FILE), &cert.cert_pem)?;
            cert
        }
    };
    let yaml = pki::kubeconfig(
        &config.server,
        &config.ca_pem,
        &user,
        pki::Credentials::ClientCert(&cert),
    );
    write_private(&kubeconfig_path, &yaml)?;
    Ok(kubeconfig_path)
}

/// Creates the CertificateSigningRequest with the bootstrap token and waits until it is
/// signed (or denied, failed, or the deadline passes).
async fn request_certificate(
    config: &BootstrapConfig,
    progress: &Progress,
) -> Result<pki::CertKey, Error> {
    let user = node_user(&config.node_name);
    let (csr_pem, key_pem) = pki::generate_csr(&user, Some("system:nodes"))?;
    let yaml = pki::kubeconfig(
        &config.server,
        &config.ca_pem,
        "tls-bootstrap-token-user",
        pki::Credentials::Token(&config.token),
    );
    let client = client_from_kubeconfig(&yaml).await?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let name = format!("node-csr-{}", random_alnum(10));
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
                    progress(&format!("got the client certificate for {user}"));
                    return Ok(pki::CertKey { cert_pem, key_pem });
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

/// `coxswain agent --token`: obtains the node's client certificate (see
/// [`bootstrap_credentials`]), then runs the node agent with it.
pub async fn agent_bootstrap(
    config: BootstrapConfig,
    opts: AgentOptions,
    progress: Progress,
) -> Result<node_agent::agent::Agent, Error> {
    let kubeconfig = bootstrap_credentials(&config, &progress).await?;
    crate::agent(&kubeconfig, opts, progress).await
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
        };
        assert!(existing(&config).is_none());
        let write = |ck: &pki::CertKey| {
            write_private(&dir.path().join(CERT_FILE), &ck.cert_pem).unwrap();
            write_private(&dir.path().join(KEY_FILE), &ck.key_pem).unwrap();
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
        // Another node's, about to expire, or from another CA: not used.
        write(
            &ca.issue_client("system:node:n2", &nodes, Duration::from_secs(3600))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
        write(
            &ca.issue_client("system:node:n1", &nodes, Duration::from_secs(60))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
        let other = pki::Ca::generate("other").unwrap();
        write(
            &other
                .issue_client("system:node:n1", &nodes, Duration::from_secs(3600))
                .unwrap(),
        );
        assert!(existing(&config).is_none());
    }
}
