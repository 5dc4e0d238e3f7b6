//! `ensure` and the node certificates on a real directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::SystemTime;

use pki::{ClientCertVerifier, PkiOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

const FILES: [&str; 14] = [
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "sa.key",
    "sa.pub",
    "admin.crt",
    "admin.key",
    "kube-scheduler.crt",
    "kube-scheduler.key",
    "kube-controller-manager.crt",
    "kube-controller-manager.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
];

fn read_all(dir: &Path) -> Vec<(String, String)> {
    FILES
        .iter()
        .map(|f| (f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether rustls accepts `cert_pem` as a server certificate for `name`, signed by `ca_pem`.
fn serves(ca_pem: &str, cert_pem: &str, name: &str) -> bool {
    use rustls::client::danger::ServerCertVerifier as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem)).unwrap();
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    v.verify_server_cert(
        &der(cert_pem),
        &[],
        &rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .is_ok()
}

#[test]
fn ensure_is_idempotent_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let opts = PkiOptions::default();
    let first = pki::ensure(&dir, &opts).unwrap();
    let files = read_all(&dir);
    let second = pki::ensure(&dir, &opts).unwrap();
    assert_eq!(files, read_all(&dir), "second ensure changed files");
    assert_eq!(first.apiserver, second.apiserver);
    assert_eq!(first.admin, second.admin);
    assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
    assert_eq!(
        first.service_account_key_pem,
        second.service_account_key_pem
    );
    assert_eq!(
        first.service_account_public_pem,
        second.service_account_public_pem
    );

    #[cfg(unix)]
    for f in FILES.iter().filter(|f| f.ends_with(".key")) {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    // Default SANs.
    let ca = first.ca.cert_pem();
    for name in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
    ] {
        assert!(serves(ca, &first.apiserver.cert_pem, name), "{name}");
    }
    assert!(!serves(ca, &first.apiserver.cert_pem, "example.com"));

    // Client identities.
    let verifier = ClientCertVerifier::new(ca).unwrap();
    let id = |pem: &str| verifier.verify(&[der(pem)], SystemTime::now()).unwrap();
    let admin = id(&first.admin.cert_pem);
    assert_eq!(admin.common_name, "kubernetes-admin");
    assert_eq!(admin.organizations, ["system:masters"]);
    assert_eq!(
        id(&first.scheduler.cert_pem).common_name,
        "system:kube-scheduler"
    );
    assert_eq!(
        id(&first.controller_manager.cert_pem).common_name,
        "system:kube-controller-manager"
    );
    assert_eq!(first.kubelet_client, second.kubelet_client);
    let kubelet_client = id(&first.kubelet_client.cert_pem);
    assert_eq!(kubelet_client.common_name, "kube-apiserver-kubelet-client");
    assert_eq!(kubelet_client.organizations, ["system:masters"]);
    assert!(first.service_account_key_pem.contains("BEGIN PRIVATE KEY"));
    assert!(first
        .service_account_public_pem
        .contains("BEGIN PUBLIC KEY"));
}

#[test]
fn new_san_reissues_apiserver_cert_and_keeps_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = pki::ensure(dir, &PkiOptions::default()).unwrap();
    let before = read_all(dir);

    let opts = PkiOptions {
        serving_dns: vec!["api.example.com".into()],
        serving_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))],
    };
    let second = pki::ensure(dir, &opts).unwrap();
    let after = read_all(dir);
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        if name.starts_with("apiserver.") {
            assert_ne!(a, b, "{name} should be reissued");
        } else {
            assert_eq!(a, b, "{name} should be kept");
        }
    }
    let ca = second.ca.cert_pem();
    assert_eq!(ca, first.ca.cert_pem());
    for name in ["api.example.com", "10.96.0.1", "localhost", "::1"] {
        assert!(serves(ca, &second.apiserver.cert_pem, name), "{name}");
    }

    // Asking again for a subset (the defaults only) keeps the broader certificate.
    let third = pki::ensure(dir, &PkiOptions::default()).unwrap();
    assert_eq!(third.apiserver, second.apiserver);
}

#[test]
fn missing_leaf_is_reissued_but_half_a_ca_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = pki::ensure(dir, &PkiOptions::default()).unwrap();
    std::fs::remove_file(dir.join("admin.key")).unwrap();
    let second = pki::ensure(dir, &PkiOptions::default()).unwrap();
    assert_ne!(first.admin, second.admin);
    assert_eq!(first.scheduler, second.scheduler);

    std::fs::remove_file(dir.join("ca.key")).unwrap();
    assert!(pki::ensure(dir, &PkiOptions::default()).is_err());
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        first.ca.cert_pem()
    );
}

/// A PKI directory from before the kubelet client certificate existed gains it, and nothing
/// else changes.
#[test]
fn kubelet_client_certificate_is_added_to_an_existing_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let first = pki::ensure(&dir, &PkiOptions::default()).unwrap();
    std::fs::remove_file(dir.join("apiserver-kubelet-client.crt")).unwrap();
    std::fs::remove_file(dir.join("apiserver-kubelet-client.key")).unwrap();
    let others: Vec<_> = read_all_but_kubelet_client(&dir);
    let second = pki::ensure(&dir, &PkiOptions::default()).unwrap();
    assert_eq!(others, read_all_but_kubelet_client(&dir));
    assert_ne!(first.kubelet_client, second.kubelet_client, "reissued");
    let id = ClientCertVerifier::new(second.ca.cert_pem())
        .unwrap()
        .verify(&[der(&second.kubelet_client.cert_pem)], SystemTime::now())
        .unwrap();
    assert_eq!(id.common_name, "kube-apiserver-kubelet-client");
    assert_eq!(id.organizations, ["system:masters"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("apiserver-kubelet-client.crt")).unwrap(),
        second.kubelet_client.cert_pem
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("apiserver-kubelet-client.key")), 0o600);
    // And it is kept from then on.
    let third = pki::ensure(&dir, &PkiOptions::default()).unwrap();
    assert_eq!(second.kubelet_client, third.kubelet_client);
}

fn read_all_but_kubelet_client(dir: &Path) -> Vec<(String, String)> {
    FILES
        .iter()
        .filter(|f| !f.starts_with("apiserver-kubelet-client"))
        .map(|f| (f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect()
}

#[test]
fn node_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki::ensure(tmp.path(), &PkiOptions::default()).unwrap();
    let ca = pki.ca.cert_pem();

    let client = pki.node_client("worker-1").unwrap();
    assert_eq!(client, pki.node_client("worker-1").unwrap(), "reused");
    let id = ClientCertVerifier::new(ca)
        .unwrap()
        .verify(&[der(&client.cert_pem)], SystemTime::now())
        .unwrap();
    assert_eq!(id.common_name, "system:node:worker-1");
    assert_eq!(id.organizations, ["system:nodes"]);
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("nodes/worker-1.key")), 0o600);

    let ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7));
    let serving = pki.node_serving("worker-1", &[ip]).unwrap();
    assert_eq!(
        serving,
        pki.node_serving("worker-1", &[ip]).unwrap(),
        "reused"
    );
    assert!(serves(ca, &serving.cert_pem, "worker-1"));
    assert!(serves(ca, &serving.cert_pem, "192.168.1.7"));
    assert_ne!(serving.cert_pem, client.cert_pem);
    // A node whose name ends in "-serving" does not collide with worker-1's serving files.
    let other = pki.node_client("worker-1-serving").unwrap();
    assert_eq!(serving, pki.node_serving("worker-1", &[ip]).unwrap());
    assert_ne!(other, serving);

    // New address: reissued without the old one.
    let ip2 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 8));
    let moved = pki.node_serving("worker-1", &[ip2]).unwrap();
    assert!(serves(ca, &moved.cert_pem, "192.168.1.8"));
    assert!(!serves(ca, &moved.cert_pem, "192.168.1.7"));

    for bad in ["", "../etc", "a/b", "UPPER", "-x", "x-", "a b"] {
        assert!(pki.node_client(bad).is_err(), "{bad:?}");
        assert!(pki.node_serving(bad, &[]).is_err(), "{bad:?}");
    }
}

#[test]
fn leaves_from_a_replaced_ca_or_corrupt_files_are_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = pki::ensure(dir, &PkiOptions::default()).unwrap();
    let node = first.node_client("n1").unwrap();

    // The operator installs a different CA: every leaf is reissued under it.
    let other = pki::Ca::generate("replacement-ca").unwrap();
    std::fs::write(dir.join("ca.crt"), other.cert_pem()).unwrap();
    std::fs::write(dir.join("ca.key"), other.key_pem()).unwrap();
    let second = pki::ensure(dir, &PkiOptions::default()).unwrap();
    assert_eq!(second.ca.cert_pem(), other.cert_pem());
    assert_ne!(second.admin, first.admin);
    assert_ne!(second.apiserver, first.apiserver);
    assert!(serves(
        other.cert_pem(),
        &second.apiserver.cert_pem,
        "localhost"
    ));
    let verifier = ClientCertVerifier::new(other.cert_pem()).unwrap();
    for ck in [&second.admin, &second.scheduler, &second.controller_manager] {
        verifier
            .verify(&[der(&ck.cert_pem)], SystemTime::now())
            .unwrap();
    }
    let node2 = second.node_client("n1").unwrap();
    assert_ne!(node, node2);
    verifier
        .verify(&[der(&node2.cert_pem)], SystemTime::now())
        .unwrap();
    // The ServiceAccount key is not a certificate and stays.
    assert_eq!(
        second.service_account_key_pem,
        first.service_account_key_pem
    );
    #[cfg(unix)]
    {
        // ca.key was rewritten by hand (umask mode); ensure tightened it.
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
    }

    // A corrupt certificate is replaced too.
    std::fs::write(dir.join("kube-scheduler.crt"), "garbage").unwrap();
    let third = pki::ensure(dir, &PkiOptions::default()).unwrap();
    verifier
        .verify(&[der(&third.scheduler.cert_pem)], SystemTime::now())
        .unwrap();
    assert_eq!(third.admin, second.admin);
}

#[test]
fn service_account_public_key_must_match_the_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = pki::ensure(dir, &PkiOptions::default()).unwrap();

    // sa.pub missing: derived again from sa.key.
    std::fs::remove_file(dir.join("sa.pub")).unwrap();
    let second = pki::ensure(dir, &PkiOptions::default()).unwrap();
    assert_eq!(
        second.service_account_public_pem,
        first.service_account_public_pem
    );

    // sa.pub with an extra (older) key as well: accepted as is.
    let other = tempfile::tempdir().unwrap();
    let other = pki::ensure(other.path(), &PkiOptions::default()).unwrap();
    let bundle = format!(
        "{}{}",
        other.service_account_public_pem, first.service_account_public_pem
    );
    std::fs::write(dir.join("sa.pub"), &bundle).unwrap();
    assert_eq!(
        pki::ensure(dir, &PkiOptions::default())
            .unwrap()
            .service_account_public_pem,
        bundle
    );

    // sa.pub without sa.key's public key: refused.
    std::fs::write(dir.join("sa.pub"), &other.service_account_public_pem).unwrap();
    assert!(pki::ensure(dir, &PkiOptions::default()).is_err());
}
