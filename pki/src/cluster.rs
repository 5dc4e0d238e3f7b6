//! One cluster's PKI on disk: create what is missing, reuse what exists.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PublicKeyData as _, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use x509_parser::extensions::GeneralName;

use crate::ca::first_cert_der;
use crate::{Ca, CertKey, Error};

/// Leaf certificates (serving and client) live one year, like kubeadm's; `ensure` renews
/// them when they have run out.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

const CA_COMMON_NAME: &str = "coxswain-ca";
const APISERVER_COMMON_NAME: &str = "kube-apiserver";
/// kubeadm's name for the API server's client certificate towards kubelets.
const KUBELET_CLIENT_COMMON_NAME: &str = "kube-apiserver-kubelet-client";
/// See [`ClusterPki::kubelet_client`] for why not kubeadm's current `kubeadm:cluster-admins`.
const KUBELET_CLIENT_GROUP: &str = "system:masters";

/// The SANs every API server certificate carries: the loopback names and the in-cluster
/// names of the `kubernetes` Service, so pods and local tools can both verify it.
const DEFAULT_DNS: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// What the API server certificate must cover beyond the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PkiOptions {
    /// Extra DNS names (e.g. the host name, a load balancer name).
    pub serving_dns: Vec<String>,
    /// Extra IP addresses (e.g. the node IP, the `kubernetes` Service ClusterIP).
    pub serving_ips: Vec<IpAddr>,
}

/// A cluster's PKI, loaded from (and kept in) `dir`.
///
/// Layout: `ca.crt ca.key apiserver.crt apiserver.key sa.key sa.pub admin.crt admin.key
/// kube-scheduler.{crt,key} kube-controller-manager.{crt,key}
/// apiserver-kubelet-client.{crt,key}`, node client certificates in
/// `nodes/<name>.{crt,key}` and node serving certificates in `nodes/serving/<name>.{crt,key}`
/// (a separate directory, so node `a`'s serving files can never collide with the client
/// files of a node named `a-serving`). Keys are mode 0600.
#[derive(Debug)]
pub struct ClusterPki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The cluster CA.
    pub ca: Ca,
    /// The API server's serving certificate.
    pub apiserver: CertKey,
    /// The ServiceAccount token signing key (P-256, PKCS#8 PEM).
    pub service_account_key_pem: String,
    /// Its public key (SPKI PEM), for token verification.
    pub service_account_public_pem: String,
    /// `kubernetes-admin` in `system:masters`.
    pub admin: CertKey,
    /// `system:kube-scheduler`.
    pub scheduler: CertKey,
    /// `system:kube-controller-manager`.
    pub controller_manager: CertKey,
    /// What the API server presents to node agents (kubelet's port 10250) when it proxies
    /// logs, exec, attach and port-forward: CN `kube-apiserver-kubelet-client`, O
    /// `system:masters`. kubeadm used `system:masters` until 1.29 and now uses
    /// `kubeadm:cluster-admins` (bound to cluster-admin by a binding kubeadm creates);
    /// Coxswain has no such binding, and `system:masters` is what its authorizer
    /// short-circuits, so a node agent's SubjectAccessReview allows it without RBAC objects.
    pub kubelet_client: CertKey,
}

/// Loads the PKI in `dir`, creating whatever is missing.
///
/// Idempotent: every file already present is reused, so restarts keep identities and
/// kubeconfigs valid. `apiserver.crt` is reissued (same CA) only when it lacks a wanted SAN,
/// and then covers both its old SANs and the wanted ones so that alternating callers do not
/// make it flap. A leaf whose key file is missing, which has expired, which does not parse,
/// or which was not signed by the current CA (say the operator swapped `ca.crt`/`ca.key`) is
/// reissued: it would be useless as it is. Half a
/// CA (a certificate without its key or the reverse) is an error rather than silently
/// replaced: replacing the CA invalidates every certificate handed out.
pub fn ensure(dir: &Path, opts: &PkiOptions) -> Result<ClusterPki, Error> {
    create_dir(dir)?;
    let (ca, ca_is_new) = ensure_ca(dir)?;

    let mut wanted_dns: BTreeSet<String> = DEFAULT_DNS.iter().map(|s| s.to_string()).collect();
    wanted_dns.extend(opts.serving_dns.iter().cloned());
    let mut wanted_ips: BTreeSet<IpAddr> = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .collect();
    wanted_ips.extend(opts.serving_ips.iter().copied());

    let apiserver = ensure_leaf(
        dir,
        "apiserver",
        &ca,
        ca_is_new,
        |existing| match existing {
            Some(ck) => {
                let (dns, ips) = sans(&ck.cert_pem)?;
                if wanted_dns.is_subset(&dns) && wanted_ips.is_subset(&ips) {
                    return Ok(None);
                }
                let all_dns: Vec<String> = dns.union(&wanted_dns).cloned().collect();
                let all_ips: Vec<IpAddr> = ips.union(&wanted_ips).copied().collect();
                Ok(Some(ca.issue_serving(
                    APISERVER_COMMON_NAME,
                    &all_dns,
                    &all_ips,
                    LEAF_VALIDITY,
                )?))
            }
            None => {
                let dns: Vec<String> = wanted_dns.iter().cloned().collect();
                let ips: Vec<IpAddr> = wanted_ips.iter().copied().collect();
                Ok(Some(ca.issue_serving(
                    APISERVER_COMMON_NAME,
                    &dns,
                    &ips,
                    LEAF_VALIDITY,
                )?))
            }
        },
    )?;

    let client = |name: &str, cn: &str, orgs: &[&str]| {
        let orgs: Vec<String> = orgs.iter().map(|s| s.to_string()).collect();
        ensure_leaf(dir, name, &ca, ca_is_new, |existing| match existing {
            Some(_) => Ok(None),
            None => Ok(Some(ca.issue_client(cn, &orgs, LEAF_VALIDITY)?)),
        })
    };
    let admin = client("admin", "kubernetes-admin", &["system:masters"])?;
    let scheduler = client("kube-scheduler", "system:kube-scheduler", &[])?;
    let controller_manager = client(
        "kube-controller-manager",
        "system:kube-controller-manager",
        &[],
    )?;
    let kubelet_client = client(
        "apiserver-kubelet-client",
        KUBELET_CLIENT_COMMON_NAME,
        &[KUBELET_CLIENT_GROUP],
    )?;

    let (service_account_key_pem, service_account_public_pem) = ensure_sa_key(dir)?;

    Ok(ClusterPki {
        dir: dir.to_path_buf(),
        ca,
        apiserver,
        service_account_key_pem,
        service_account_public_pem,
        admin,
        scheduler,
        controller_manager,
        kubelet_client,
    })
}

impl ClusterPki {
    /// The client certificate a node agent uses towards the API server: CN
    /// `system:node:<node>`, O `system:nodes` (what the Node authorizer expects). Created
    /// once and reused.
    pub fn node_client(&self, node: &str) -> Result<CertKey, Error> {
        check_node_name(node)?;
        let nodes = self.dir.join("nodes");
        create_dir(&nodes)?;
        ensure_leaf(&nodes, node, &self.ca, false, |existing| match existing {
            Some(_) => Ok(None),
            None => Ok(Some(self.ca.issue_client(
                &format!("system:node:{node}"),
                &["system:nodes".to_string()],
                LEAF_VALIDITY,
            )?)),
        })
    }

    /// The serving certificate for a node agent's port 10250, with SANs = the node name and
    /// `ips`. Reused while it covers exactly those SANs; reissued when the node's addresses
    /// change, so stale IPs do not linger.
    pub fn node_serving(&self, node: &str, ips: &[IpAddr]) -> Result<CertKey, Error> {
        check_node_name(node)?;
        let dir = self.dir.join("nodes").join("serving");
        create_dir(&dir)?;
        let wanted_dns: BTreeSet<String> = [node.to_string()].into_iter().collect();
        let wanted_ips: BTreeSet<IpAddr> = ips.iter().copied().collect();
        ensure_leaf(&dir, node, &self.ca, false, |existing| {
            if let Some(ck) = existing {
                let (dns, have_ips) = sans(&ck.cert_pem)?;
                if dns == wanted_dns && have_ips == wanted_ips {
                    return Ok(None);
                }
            }
            let dns: Vec<String> = wanted_dns.iter().cloned().collect();
            let ips: Vec<IpAddr> = wanted_ips.iter().copied().collect();
            Ok(Some(self.ca.issue_serving(
                node,
                &dns,
                &ips,
                LEAF_VALIDITY,
            )?))
        })
    }
}

/// Node names become file names, so anything that is not a DNS-subdomain-like name (which
/// Kubernetes requires of node names anyway) is refused, in particular `/` and `..`.
fn check_node_name(node: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: node.to_string(),
            reason,
        })
    };
    if node.is_empty() || node.len() > 253 {
        return bad("node names must be 1 to 253 characters");
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return bad("node names may contain only lowercase letters, digits, '-' and '.'");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !edge_ok(node.bytes().next()) || !edge_ok(node.bytes().last()) {
        return bad("node names must start and end with a letter or digit");
    }
    Ok(())
}

fn ensure_ca(dir: &Path) -> Result<(Ca, bool), Error> {
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert), Some(key)) => {
            tighten_key_mode(&key_path)?;
            Ok((Ca::from_pem(&cert, &key)?, false))
        }
        (None, None) => {
            let ca = Ca::generate(CA_COMMON_NAME)?;
            write_file(&key_path, ca.key_pem(), KEY_MODE)?;
            write_file(&cert_path, ca.cert_pem(), CERT_MODE)?;
            Ok((ca, true))
        }
        (Some(_), None) => Err(half_ca(&key_path)),
        (None, Some(_)) => Err(half_ca(&cert_path)),
    }
}

fn half_ca(missing: &Path) -> Error {
    Error::io(
        missing,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "missing while the other half of the CA exists; refusing to replace the cluster CA",
        ),
    )
}

/// Loads `<dir>/<name>.crt` and `.key`, then lets `decide` keep them (`Ok(None)`) or supply
/// a replacement, which is written. Missing files, a certificate that is no longer current
/// (see [`leaf_is_current`]) and `force` all pass `None` to `decide`, which must then issue.
fn ensure_leaf(
    dir: &Path,
    name: &str,
    ca: &Ca,
    force: bool,
    decide: impl FnOnce(Option<&CertKey>) -> Result<Option<CertKey>, Error>,
) -> Result<CertKey, Error> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let existing = if force {
        None
    } else {
        match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) if leaf_is_current(&cert_pem, ca)? => {
                tighten_key_mode(&key_path)?;
                Some(CertKey { cert_pem, key_pem })
            }
            _ => None,
        }
    };
    match decide(existing.as_ref())? {
        None => existing.ok_or_else(|| {
            Error::Certificate(format!("no certificate issued for {}", cert_path.display()))
        }),
        Some(new) => {
            // Key first: a crash in between leaves a cert/key mismatch that the next run
            // would reuse; writing the key first at least never exposes a cert whose key is
            // lost. Both writes are atomic renames.
            write_file(&key_path, &new.key_pem, KEY_MODE)?;
            write_file(&cert_path, &new.cert_pem, CERT_MODE)?;
            Ok(new)
        }
    }
}

/// The ServiceAccount signing key (`sa.key`, P-256 PKCS#8) and its public half (`sa.pub`,
/// SPKI). An existing `sa.pub` may hold several keys (old ones kept during rotation) but
/// must contain `sa.key`'s, or every token the API server signs would fail verification;
/// that mismatch is reported rather than repaired, since silently re-trusting or dropping
/// keys is a security decision for the operator.
fn ensure_sa_key(dir: &Path) -> Result<(String, String), Error> {
    let key_path = dir.join("sa.key");
    let pub_path = dir.join("sa.pub");
    let (key_pem, key, fresh) = match read_optional(&key_path)? {
        Some(pem) => {
            tighten_key_mode(&key_path)?;
            let key = KeyPair::from_pem(&pem).map_err(|e| Error::pem("sa.key", e))?;
            (pem, key, false)
        }
        None => {
            // PKCS#8, the encoding the JWT signer expects.
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let pem = key.serialize_pem();
            write_file(&key_path, &pem, KEY_MODE)?;
            (pem, key, true)
        }
    };
    let public = match read_optional(&pub_path)? {
        Some(pem) if !fresh => {
            let spki = key.subject_public_key_info();
            let contains = SubjectPublicKeyInfoDer::pem_slice_iter(pem.as_bytes())
                .any(|k| k.is_ok_and(|k| k.as_ref() == spki.as_slice()));
            if !contains {
                return Err(Error::pem(
                    "sa.pub",
                    "does not contain the public key of sa.key",
                ));
            }
            pem
        }
        _ => {
            // Derived from the key, so the two always match.
            let pem = key.public_key_pem();
            write_file(&pub_path, &pem, CERT_MODE)?;
            pem
        }
    };
    Ok((key_pem, public))
}

/// DNS and IP SANs of a PEM certificate.
fn sans(cert_pem: &str) -> Result<(BTreeSet<String>, BTreeSet<IpAddr>), Error> {
    let der = first_cert_der(cert_pem)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Certificate(e.to_string()))?;
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let ext = x509
        .subject_alternative_name()
        .map_err(|e| Error::Certificate(e.to_string()))?;
    for name in ext.iter().flat_map(|e| e.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => {
                dns.insert(d.to_string());
            }
            GeneralName::IPAddress(bytes) => {
                if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                    ips.insert(IpAddr::from(b));
                } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                    ips.insert(IpAddr::from(b));
                }
            }
            _ => {}
        }
    }
    Ok((dns, ips))
}

/// Whether a stored leaf can be reused: it parses, was signed by the current CA (an operator
/// may have replaced `ca.crt`/`ca.key`, after which old leaves verify nowhere), and has not
/// expired (or will not within a minute). Anything else is reissued rather than reported,
/// since a leaf is cheap to replace and nothing else depends on its exact bytes.
fn leaf_is_current(cert_pem: &str, ca: &Ca) -> Result<bool, Error> {
    let ca_der = first_cert_der(ca.cert_pem())?;
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let Ok(der) = first_cert_der(cert_pem) else {
        return Ok(false);
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        return Ok(false);
    };
    if x509.verify_signature(Some(ca_x509.public_key())).is_err() {
        return Ok(false);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::Validity("clock before 1970"))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    Ok(x509.validity().not_after.timestamp() > now.saturating_add(60))
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync,
/// rename) so a crash never leaves a truncated key or certificate behind; the temporary file
/// is created with `mode` so a key is never readable by others, not even briefly.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(mode);
        }
        let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        set_mode(&tmp, mode)?; // the umask may have masked bits off a 0644 certificate
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), Error> {
    Ok(())
}

/// Reused key files are brought back to 0600 (a restored backup may have looser modes).
fn tighten_key_mode(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            set_mode(path, KEY_MODE)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
