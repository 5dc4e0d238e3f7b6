//! rustls configurations and client-certificate authentication.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier as RustlsClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::ca::cert_chain;
use crate::{CertKey, Error};

/// The one crypto provider this crate uses, passed explicitly so behaviour never depends on
/// which provider some other crate installed as the process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn private_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::pem("private key", e))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in cert_chain(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// A rustls server configuration for kube-apiserver-style client authentication.
///
/// The server serves `cert_pem` (leaf first, intermediates after) with `key_pem`, offers ALPN
/// `h2` and `http/1.1`, and *requests* a client certificate without requiring or verifying
/// its chain during the handshake, like Go's `tls.RequestClientCert`. That way an expired or
/// foreign certificate still gets a connection, and the HTTP layer can answer 401 with a
/// Status body (what kubectl expects) instead of the client seeing a bare TLS alert. The
/// handshake signature is still checked, so a client cannot present someone else's
/// certificate without its key; call [`ClientCertVerifier::verify`] on
/// `peer_certificates()` to authenticate.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(RequestClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain(cert_pem)?, private_key(key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Offers client authentication, accepts any certificate chain, and checks only the proof of
/// key possession (the CertificateVerify signature). Chain verification is deferred to
/// [`ClientCertVerifier::verify`].
#[derive(Debug)]
struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl RustlsClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients then offer whatever certificate they have (as with Go).
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who a verified client certificate names: Kubernetes takes the CN as the user name and
/// each O as a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name (the user name).
    pub common_name: String,
    /// Every organization in the subject, in order (the groups).
    pub organizations: Vec<String>,
}

/// Verifies client certificate chains after the handshake (see [`server_config`]).
#[derive(Clone)]
pub struct ClientCertVerifier {
    inner: Arc<dyn RustlsClientCertVerifier>,
}

impl std::fmt::Debug for ClientCertVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier {
    /// Trusts the CA certificate(s) in `ca_pem` (a PEM bundle; several CAs allowed, e.g.
    /// during CA rotation).
    pub fn new(ca_pem: &str) -> Result<Self, Error> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider())
                .build()
                .map_err(|e| Error::Certificate(format!("client verifier: {e}")))?;
        Ok(ClientCertVerifier { inner })
    }

    /// Verifies `chain` (leaf first, as `peer_certificates()` returns it) at `now`: signed by a
    /// trusted CA, within its validity, with the clientAuth usage. Returns the identity it
    /// names.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<CertIdentity, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoClientCertificate)?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| Error::Validity("verification time before 1970"))?;
        self.inner
            .verify_client_cert(leaf, intermediates, UnixTime::since_unix_epoch(since_epoch))
            .map_err(Error::UntrustedClientCertificate)?;
        identity(leaf)
    }
}

/// Reads CN and O's from a certificate's subject.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Result<CertIdentity, Error> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| Error::Certificate(e.to_string()))?;
    let subject = x509.subject();
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str()
            .map(str::to_string)
            .map_err(|e| Error::Certificate(format!("subject attribute: {e}")))
    };
    let common_name = match subject.iter_common_name().next() {
        Some(cn) => text(cn)?,
        None => String::new(),
    };
    if common_name.is_empty() {
        return Err(Error::EmptyCommonName);
    }
    let organizations = subject
        .iter_organization()
        .map(text)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertIdentity {
        common_name,
        organizations,
    })
}

/// A rustls client configuration trusting only the CA(s) in `ca_pem`, optionally presenting
/// `client` as its certificate. Used for API server → node agent connections and in tests.
/// No ALPN is set: HTTP connectors (hyper-rustls) set their own.
pub fn client_config(
    ca_pem: &str,
    client: Option<&CertKey>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::Certificate(format!("server verifier: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let config = match client {
        Some(ck) => {
            builder.with_client_auth_cert(cert_chain(&ck.cert_pem)?, private_key(&ck.key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client configuration that accepts any server certificate, as Go's `InsecureSkipVerify`:
/// for peers whose certificates are never issued for the address dialled (pod IPs: kubelet's
/// HTTPS probes and hooks, the API server's pods/services proxy). The handshake signature is
/// still checked against the presented certificate's key. Built once per process.
pub fn insecure_client_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let verifier = Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            });
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|e| Error::Tls(rustls::Error::General(e)))
}

/// Accepts every server certificate chain ([`insecure_client_config`] only).
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
