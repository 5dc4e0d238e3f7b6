//! Real TLS handshakes over 127.0.0.1 with the configurations this crate builds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pki::{Ca, CertIdentity, CertKey, ClientCertVerifier, Error};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

struct Fixture {
    ca: Ca,
    server: CertKey,
}

fn fixture() -> Fixture {
    let ca = Ca::generate("test-ca").unwrap();
    let server = ca
        .issue_serving(
            "kube-apiserver",
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            DAY,
        )
        .unwrap();
    Fixture { ca, server }
}

/// Runs one handshake (plus a one-byte echo, so the TLS 1.3 client certificate flight is
/// certainly processed) and returns the certificates the server saw and the ALPN protocol.
async fn handshake(
    fx: &Fixture,
    client: Option<&CertKey>,
) -> (Option<Vec<CertificateDer<'static>>>, Option<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        TlsAcceptor::from(pki::server_config(&fx.server.cert_pem, &fx.server.key_pem).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        tls.write_all(&byte).await.unwrap();
        tls.flush().await.unwrap();
        let (_, conn) = tls.get_ref();
        (
            conn.peer_certificates().map(|c| c.to_vec()),
            conn.alpn_protocol().map(|p| p.to_vec()),
        )
    });

    let mut config = (*pki::client_config(fx.ca.cert_pem(), client).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"x").await.unwrap();
    tls.flush().await.unwrap();
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"x");
    server.await.unwrap()
}

#[tokio::test]
async fn good_client_cert_yields_identity_with_every_group() {
    let fx = fixture();
    let groups = vec!["system:masters".to_string(), "developers".to_string()];
    let client = fx.ca.issue_client("alice", &groups, DAY).unwrap();
    let (peer, alpn) = handshake(&fx, Some(&client)).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let peer = peer.expect("server saw the client certificate");
    let verifier = ClientCertVerifier::new(fx.ca.cert_pem()).unwrap();
    let id = verifier.verify(&peer, SystemTime::now()).unwrap();
    assert_eq!(
        id,
        CertIdentity {
            common_name: "alice".into(),
            organizations: groups,
        }
    );
}

#[tokio::test]
async fn expired_client_cert_completes_handshake_but_is_rejected() {
    let fx = fixture();
    let now = SystemTime::now();
    let client = fx
        .ca
        .issue_client_with_validity("bob", &["g".to_string()], now - 10 * DAY, now - DAY)
        .unwrap();
    let (peer, _) = handshake(&fx, Some(&client)).await;
    let peer = peer.expect("server saw the client certificate");
    let verifier = ClientCertVerifier::new(fx.ca.cert_pem()).unwrap();
    let err = verifier.verify(&peer, SystemTime::now()).unwrap_err();
    assert!(matches!(err, Error::UntrustedClientCertificate(_)), "{err}");
    // The same certificate was fine while it was valid.
    let id = verifier.verify(&peer, now - 5 * DAY).unwrap();
    assert_eq!(id.common_name, "bob");
}

#[tokio::test]
async fn foreign_ca_client_cert_completes_handshake_but_is_rejected() {
    let fx = fixture();
    let other = Ca::generate("other-ca").unwrap();
    let client = other
        .issue_client("mallory", &["system:masters".to_string()], DAY)
        .unwrap();
    let (peer, _) = handshake(&fx, Some(&client)).await;
    let peer = peer.expect("server saw the client certificate");
    let verifier = ClientCertVerifier::new(fx.ca.cert_pem()).unwrap();
    let err = verifier.verify(&peer, SystemTime::now()).unwrap_err();
    assert!(matches!(err, Error::UntrustedClientCertificate(_)), "{err}");
}

#[tokio::test]
async fn no_client_cert_completes_handshake_without_peer_certs() {
    let fx = fixture();
    let (peer, _) = handshake(&fx, None).await;
    assert!(peer.is_none());
    let verifier = ClientCertVerifier::new(fx.ca.cert_pem()).unwrap();
    assert!(matches!(
        verifier.verify(&[], SystemTime::now()),
        Err(Error::NoClientCertificate)
    ));
}

#[tokio::test]
async fn server_cert_from_another_ca_is_refused_by_the_client() {
    let fx = fixture();
    let other = Ca::generate("other-ca").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        TlsAcceptor::from(pki::server_config(&fx.server.cert_pem, &fx.server.key_pem).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.is_err()
    });
    let connector = TlsConnector::from(pki::client_config(other.cert_pem(), None).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let result = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(result.is_err());
    assert!(server.await.unwrap());
}

#[test]
fn serving_cert_is_not_a_client_cert() {
    let fx = fixture();
    let chain = vec![CertificateDer::from(
        rustls::pki_types::pem::PemObject::from_pem_slice(fx.server.cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c.to_vec())
            .unwrap(),
    )];
    let verifier = ClientCertVerifier::new(fx.ca.cert_pem()).unwrap();
    assert!(verifier.verify(&chain, SystemTime::now()).is_err());
}

#[test]
fn client_cert_with_three_organizations_round_trips() {
    let ca = Ca::generate("test-ca").unwrap();
    let orgs: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let ck = ca.issue_client("carol", &orgs, DAY).unwrap();
    let der: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(ck.cert_pem.as_bytes()).unwrap();
    let id = ClientCertVerifier::new(ca.cert_pem())
        .unwrap()
        .verify(&[der], SystemTime::now())
        .unwrap();
    assert_eq!(id.organizations, orgs);
    assert_eq!(id.common_name, "carol");
}

#[test]
fn ca_round_trips_through_pem_and_rejects_mismatched_key() {
    let ca = Ca::generate("test-ca").unwrap();
    let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    // A certificate issued by the reloaded CA verifies against the original certificate.
    let ck = again.issue_client("dave", &[], DAY).unwrap();
    let der: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(ck.cert_pem.as_bytes()).unwrap();
    let id = ClientCertVerifier::new(ca.cert_pem())
        .unwrap()
        .verify(&[der], SystemTime::now())
        .unwrap();
    assert_eq!(id.common_name, "dave");
    assert!(id.organizations.is_empty());

    let other = Ca::generate("other").unwrap();
    assert!(Ca::from_pem(ca.cert_pem(), other.key_pem()).is_err());
    assert!(Ca::from_pem("garbage", ca.key_pem()).is_err());
    assert!(Ca::from_pem(ca.cert_pem(), "garbage").is_err());
    // A leaf certificate is not a CA.
    assert!(Ca::from_pem(&ck.cert_pem, &ck.key_pem).is_err());
}

/// TLS 1.2 takes the other signature-verification path (`verify_tls12_signature`).
#[tokio::test]
async fn tls12_client_cert_is_seen_and_verifies() {
    let fx = fixture();
    let client = fx
        .ca
        .issue_client("erin", &["system:nodes".to_string()], DAY)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        TlsAcceptor::from(pki::server_config(&fx.server.cert_pem, &fx.server.key_pem).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let (_, conn) = tls.get_ref();
        (
            conn.protocol_version(),
            conn.peer_certificates().map(|c| c.to_vec()),
        )
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_cert(fx.ca.cert_pem())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![pem_cert(&client.cert_pem)],
        rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (version, peer) = server.await.unwrap();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
    let id = ClientCertVerifier::new(fx.ca.cert_pem())
        .unwrap()
        .verify(&peer.unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!(id.common_name, "erin");
}

fn pem_cert(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Presents a valid certificate but signs the handshake with a different key.
#[derive(Debug)]
struct StolenCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for StolenCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn certificate_without_its_key_fails_the_handshake() {
    let fx = fixture();
    let victim = fx
        .ca
        .issue_client("admin", &["system:masters".to_string()], DAY)
        .unwrap();
    let attacker = fx.ca.issue_client("nobody", &[], DAY).unwrap();
    let attacker_key = rustls::crypto::ring::sign::any_supported_type(
        &rustls::pki_types::PrivateKeyDer::from_pem_slice(attacker.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let stolen = rustls::sign::CertifiedKey::new(vec![pem_cert(&victim.cert_pem)], attacker_key);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        TlsAcceptor::from(pki::server_config(&fx.server.cert_pem, &fx.server.key_pem).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                // TLS 1.3: the client's flight is processed on first read.
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.is_err()
            }
            Err(_) => true,
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_cert(fx.ca.cert_pem())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(StolenCert(Arc::new(stolen))));
    let tcp = TcpStream::connect(addr).await.unwrap();
    if let Ok(mut tls) = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let _ = tls.write_all(b"x").await;
        let _ = tls.flush().await;
    }
    assert!(
        server.await.unwrap(),
        "server accepted a forged CertificateVerify"
    );
}
