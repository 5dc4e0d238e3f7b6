//! The HTTP(S) GET of httpGet probes and httpGet lifecycle hooks, as kubelet makes it.
//!
//! One HTTP/1.1 request per attempt on a fresh connection (kubelet disables keep-alives for
//! probes). Redirects are followed as Go's client does for kubelet's prober: at most 10
//! requests, and only while the redirect stays on the host of the first request — a redirect
//! elsewhere ends the chain and its 3xx is the answer (a probe counts it as success, as
//! upstream's "Probe terminated redirects" warning does). `HTTPS` is TLS *without* certificate
//! verification (kubelet's `InsecureSkipVerify`): pods serve self-signed certificates, and a
//! probe asks "is it up", not "who is it". That verifier lives only here, in the client for
//! probes and hooks; nothing else in the agent can reach it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::Empty;
use hyper::body::Bytes;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// At most this many requests per GET (Go's client: "stopped after 10 redirects").
const MAX_REQUESTS: usize = 10;

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// `host:port`, with brackets around an IPv6 literal.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL as Go prints it in probe messages.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }

    /// Where a `Location` header points, relative to this target.
    fn resolve(&self, location: &str) -> Result<Target, String> {
        let absolute = if location.starts_with("//") {
            format!("{}:{location}", if self.https { "https" } else { "http" })
        } else {
            location.to_string()
        };
        if let Ok(uri) = absolute.parse::<hyper::Uri>() {
            if let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) {
                let https = match scheme.to_ascii_lowercase().as_str() {
                    "https" => true,
                    "http" => false,
                    other => return Err(format!("unsupported protocol scheme {other:?}")),
                };
                let host = auth.host().trim_start_matches('[').trim_end_matches(']');
                return Ok(Target {
                    https,
                    host: host.to_string(),
                    port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
                    path: uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into()),
                });
            }
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            // Relative to the current path's directory.
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            format!("{dir}/{location}")
        };
        Ok(Target {
            path,
            ..self.clone()
        })
    }
}

/// A failed GET, worded as Go's client words it (`Get "<url>": …`).
#[derive(Debug)]
pub(crate) struct GetError {
    pub message: String,
    /// An `HTTPS` request whose server answered the TLS handshake in plain HTTP (Go's
    /// "server gave HTTP response to HTTPS client"): hooks then retry over HTTP.
    pub plain_http: bool,
}

impl From<String> for GetError {
    fn from(message: String) -> Self {
        GetError {
            message,
            plain_http: false,
        }
    }
}

impl From<GetError> for String {
    fn from(e: GetError) -> String {
        e.message
    }
}

/// Sends the GET (following local redirects) and returns the final status code.
pub(crate) async fn get(
    target: Target,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<u16, GetError> {
    let first_host = target.host.clone();
    let mut target = target;
    for n in 1..=MAX_REQUESTS {
        let (status, location) = once(&target, headers, user_agent).await?;
        let Some(location) = location.filter(|_| is_redirect(status)) else {
            return Ok(status);
        };
        let next = target
            .resolve(&location)
            .map_err(|e| GetError::from(format!("Get \"{}\": {e}", target.url())))?;
        if next.host != first_host {
            // Not followed: the redirect itself is the answer.
            return Ok(status);
        }
        if n == MAX_REQUESTS {
            break;
        }
        target = next;
    }
    Err(format!("Get \"{}\": stopped after 10 redirects", target.url()).into())
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// One request on one connection: the status and the `Location` header.
async fn once(
    target: &Target,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<(u16, Option<String>), GetError> {
    let url = target.url();
    let fail = |e: &dyn std::fmt::Display| GetError::from(format!("Get \"{url}\": {e}"));
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| fail(&format!("dial tcp {}: {e}", target.authority())))?;
    if !target.https {
        return exchange(tcp, target, headers, user_agent)
            .await
            .map_err(|e| fail(&e));
    }
    let name = ServerName::try_from(target.host.clone()).map_err(|e| fail(&e))?;
    let head = Arc::new(Mutex::new(Vec::new()));
    let sniffed = Sniff {
        inner: tcp,
        head: head.clone(),
    };
    let tls = tokio_rustls::TlsConnector::from(insecure_config().map_err(|e| fail(&e))?)
        .connect(name, sniffed)
        .await
        .map_err(|e| {
            // Go's test: the first record header reads like an HTTP status line.
            if head.lock().starts_with(b"HTTP/") {
                GetError {
                    plain_http: true,
                    ..fail(&"http: server gave HTTP response to HTTPS client")
                }
            } else {
                fail(&format!("tls: {e}"))
            }
        })?;
    exchange(tls, target, headers, user_agent)
        .await
        .map_err(|e| fail(&e))
}

/// Keeps the first five bytes the server sends (a TLS record header's length), so a failed
/// handshake can tell a plain HTTP server from a broken TLS one.
struct Sniff<S> {
    inner: S,
    head: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let mut head = this.head.lock();
        if head.len() < 5 {
            let new = &buf.filled()[before..];
            let take = (5 - head.len()).min(new.len());
            head.extend_from_slice(&new[..take]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn exchange<S>(
    io: S,
    target: &Target,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<(u16, Option<String>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(target.path.as_str())
        .header("User-Agent", user_agent)
        .header("Accept", "*/*");
    // A `Host` among the headers replaces the default, as kubelet sets `req.Host` from it.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("Host", target.authority());
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    conn.abort();
    let resp = resp?;
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

/// The TLS client configuration of probes and hooks: any server certificate is accepted, as
/// with Go's `InsecureSkipVerify`. The handshake signature is still checked against the
/// presented certificate's key. Built once per process.
fn insecure_config() -> Result<Arc<rustls::ClientConfig>, String> {
    pki::insecure_client_config().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        Target {
            https: false,
            host: "10.0.0.5".into(),
            port: 8080,
            path: path.into(),
        }
    }

    #[test]
    fn resolves_locations_as_a_browser_does() {
        assert_eq!(t("/a/b").resolve("/c").unwrap(), t("/c"));
        assert_eq!(t("/a/b").resolve("c?x=1").unwrap(), t("/a/c?x=1"));
        let abs = t("/").resolve("https://10.0.0.5/healthz").unwrap();
        assert_eq!(
            (abs.https, abs.port, abs.path.as_str()),
            (true, 443, "/healthz")
        );
        let other = t("/").resolve("//example.com:81").unwrap();
        assert_eq!(
            (other.host.as_str(), other.port, other.path.as_str()),
            ("example.com", 81, "/")
        );
        assert!(t("/").resolve("ftp://x/").is_err());
        assert_eq!(
            t("/").url(),
            "http://10.0.0.5:8080/",
            "Go's URL formatting in messages"
        );
    }
}
