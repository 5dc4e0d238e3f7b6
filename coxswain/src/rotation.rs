//! Client certificate rotation, as kubelet's certificate manager (`--rotate-certificates`,
//! `k8s.io/client-go/util/certificate`): a node renews its `system:node:<node>` client
//! certificate while it runs, at a random point between 70 % and 90 % of the certificate's
//! lifetime, with a CertificateSigningRequest authenticated by the certificate it still holds
//! (so csrapproving approves it as `selfnodeclient`), and the running agent moves to the new
//! identity without a restart.
//!
//! How the running client picks up the new identity: the kube client built by
//! [`rotating_client`] has its own TLS stack (the layers of kube's default client that matter
//! here: base URI, hyper over hyper-rustls) whose rustls configuration presents the client
//! certificate through a resolver ([`NodeIdentity`]) that answers every handshake with the
//! *current* certificate. That alone is not enough: the API server checks the client
//! certificate on every request (an expired one is a 401 even on an old connection), and a
//! pooled connection keeps the identity it was opened with. So, as kubelet's `connrotation`
//! dialer does, every connection is wrapped ([`RotatingIo`]) to end when the certificate
//! changes: idle ones close at once, in-flight requests and watches fail and are retried
//! (the agent's heartbeats and kube-runtime watchers retry by themselves) on new
//! connections with the new certificate. TLS session resumption is disabled, since a resumed
//! TLS 1.3 session carries the identity of the handshake it resumes. This keeps the same
//! `kube::Client` (and everything the agent built on it) valid across renewals, which
//! rebuilding the client would not: the agent's components hold clones of it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::Error;

fn rotation_error(what: impl std::fmt::Display) -> Error {
    Error::Rotation(what.to_string())
}

/// The validity window of a PEM certificate (its first certificate).
pub fn validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), Error> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| rotation_error(format!("certificate PEM: {e}")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| rotation_error(format!("certificate: {e}")))?;
    let at = |secs: i64| -> Result<SystemTime, Error> {
        let secs = u64::try_from(secs).map_err(|_| rotation_error("certificate before 1970"))?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    };
    let v = x509.validity();
    Ok((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

/// The certificate's serial number, lowercase hex (for progress lines and tests).
pub fn serial(cert_pem: &str) -> Result<String, Error> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| rotation_error(format!("certificate PEM: {e}")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| rotation_error(format!("certificate: {e}")))?;
    Ok(x509.raw_serial_as_string().replace(':', ""))
}

/// When a certificate valid from `not_before` to `not_after` is renewed: at `not_before` plus
/// 70 % of its lifetime plus `jitter` (in `[0, 1)`) times 20 % of it — kubelet's
/// `nextRotationDeadline`, so a fleet of nodes issued at once does not renew at once.
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + total.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Whether a certificate is already past 90 % of its lifetime at `now` (the latest point
/// [`rotation_deadline`] picks): one found so at start is renewed before the agent runs.
pub fn due_at_start(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    now >= not_before + total.mul_f64(0.9)
}

/// The node's current client certificate: what every TLS handshake of the
/// [`rotating_client`] presents, and what the renewal task replaces.
pub struct NodeIdentity {
    current: parking_lot::RwLock<Current>,
    /// Bumped on every replacement; each connection ends when it changes.
    generation: watch::Sender<u64>,
}

struct Current {
    cert: pki::CertKey,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for NodeIdentity {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

fn certified_key(ck: &pki::CertKey) -> Result<Arc<CertifiedKey>, Error> {
    let chain = CertificateDer::pem_slice_iter(ck.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rotation_error(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(rotation_error("no certificate in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes())
        .map_err(|e| rotation_error(format!("private key PEM: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| rotation_error(format!("certificate and key: {e}")))
}

impl NodeIdentity {
    pub fn new(cert: pki::CertKey) -> Result<Arc<NodeIdentity>, Error> {
        let key = certified_key(&cert)?;
        Ok(Arc::new(NodeIdentity {
            current: parking_lot::RwLock::new(Current { cert, key }),
            generation: watch::channel(0).0,
        }))
    }

    /// The certificate and key in use.
    pub fn current(&self) -> pki::CertKey {
        self.current.read().cert.clone()
    }

    /// Makes `cert` the identity of new connections and ends every existing one.
    pub fn replace(&self, cert: pki::CertKey) -> Result<(), Error> {
        let key = certified_key(&cert)?;
        *self.current.write() = Current { cert, key };
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }
}

impl rustls::client::ResolvesClientCert for NodeIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client for `server` (verified against `ca_pem`) that authenticates with whatever
/// certificate `identity` holds at each handshake, and drops its connections when it
/// changes (see the module documentation).
pub fn rotating_client(
    server: &str,
    ca_pem: &str,
    identity: Arc<NodeIdentity>,
) -> Result<kube::Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| rotation_error(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| rotation_error(format!("CA certificate: {e}")))?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(rotation_error)?
    .with_root_certificates(roots)
    .with_client_cert_resolver(identity.clone());
    tls.resumption = rustls::client::Resumption::disabled();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let connector = RotatingConnector {
        inner: https,
        generation: identity.generation.subscribe(),
    };
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let url: http::Uri = server
        .parse()
        .map_err(|e| rotation_error(format!("server URL {server:?}: {e}")))?;
    let mut config = kube::Config::new(url);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&api_types::user_agent("kubelet")).map_err(rotation_error)?,
    ));
    use kube::client::ConfigExt as _;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(config.extra_headers_layer().map_err(rotation_error)?)
        .service(hyper);
    Ok(kube::Client::new(service, "default"))
}

/// Wraps each connection of `inner` in a [`RotatingIo`] that ends at the next certificate
/// change after the connection was started.
#[derive(Clone)]
struct RotatingConnector<C> {
    inner: C,
    generation: watch::Receiver<u64>,
}

impl<C> tower::Service<http::Uri> for RotatingConnector<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = RotatingIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        // Subscribed before the handshake: a change during it ends this connection too, so
        // no connection outlives a change made after it picked its certificate.
        let mut rx = self.generation.clone();
        rx.borrow_and_update();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(RotatingIo {
                inner: io,
                rotated: Box::pin(async move {
                    if rx.changed().await.is_err() {
                        // The identity is gone (the agent is stopping): nothing rotates.
                        std::future::pending::<()>().await;
                    }
                }),
                ended: false,
            })
        })
    }
}

/// A connection that reads as closed once the node's certificate has changed (kubelet's
/// `connrotation` closes them all).
pub struct RotatingIo<T> {
    inner: T,
    rotated: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl<T> RotatingIo<T> {
    /// Whether the certificate changed; registers for the wake-up otherwise, so an idle
    /// connection parked in a read is closed right away.
    fn ended(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && self.rotated.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }
}

fn rotated() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed: the node's client certificate was rotated",
    )
}

impl<T: Read + Unpin> Read for RotatingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ended(cx) {
            // End of stream: hyper drops the connection (and fails what was in flight).
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for RotatingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ended(cx) {
            return Poll::Ready(Err(rotated()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for RotatingIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fall_between_70_and_90_percent() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(1000);
        assert_eq!(
            rotation_deadline(nb, na, 0.0),
            nb + Duration::from_secs(700)
        );
        assert_eq!(
            rotation_deadline(nb, na, 1.0),
            nb + Duration::from_secs(900)
        );
        assert!(!due_at_start(nb, na, nb + Duration::from_secs(899)));
        assert!(due_at_start(nb, na, nb + Duration::from_secs(900)));
        assert!(due_at_start(nb, na, na + Duration::from_secs(1)));
    }

    #[test]
    fn identity_replaces_and_reads_validity() {
        let ca = pki::Ca::generate("ca").expect("ca");
        let nodes = vec!["system:nodes".to_string()];
        let a = ca
            .issue_client("system:node:n1", &nodes, Duration::from_secs(3600))
            .expect("a");
        let b = ca
            .issue_client("system:node:n1", &nodes, Duration::from_secs(7200))
            .expect("b");
        let (nb, na) = validity(&a.cert_pem).expect("validity");
        assert!(nb < SystemTime::now() && na > SystemTime::now());
        assert_ne!(
            serial(&a.cert_pem).expect("a"),
            serial(&b.cert_pem).expect("b")
        );
        let id = NodeIdentity::new(a.clone()).expect("identity");
        let rx = id.generation.subscribe();
        id.replace(b.clone()).expect("replace");
        assert_eq!(id.current().cert_pem, b.cert_pem);
        assert!(rx.has_changed().expect("sender alive"));
        // A key that is not the certificate's is refused.
        let mismatched = pki::CertKey {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
        };
        assert!(id.replace(mismatched).is_err());
    }
}
