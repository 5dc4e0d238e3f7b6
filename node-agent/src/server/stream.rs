//! exec, attach and port-forward, as kubelet serves them: ask the runtime for a streaming URL
//! (CRI `Exec`, `Attach`, `PortForward`) and splice the client's connection to it.
//!
//! containerd's CRI plugin runs its own streaming server (on 127.0.0.1 in our configuration)
//! that already speaks every Kubernetes streaming protocol it supports (SPDY/3.1 with
//! `channel.k8s.io` v1–v4 and `portforward.k8s.io`, WebSocket `channel.k8s.io` up to v4), so for
//! those the agent implements no protocol: it forwards the client's upgrade request (method,
//! `Connection`/`Upgrade`/`Sec-WebSocket-*`/`X-Stream-Protocol-Version` headers) to the
//! runtime's URL, relays the answer, and after a `101 Switching Protocols` copies bytes both
//! ways until either side closes. The two WebSocket protocols kubectl 1.31+ tries first and
//! containerd 1.6 lacks, exec/attach `v5.channel.k8s.io` and the port-forward tunnel
//! `SPDY/3.1+portforward.k8s.io`, are served by the agent itself on top of containerd's SPDY
//! ([`ws`]), so kubectl does not have to fall back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::ws::{self, Streams};
use super::{not_found, text, Shared};
use crate::cri::api;

/// How long to wait for the runtime's streaming server to accept a connection.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers that describe the client's connection to *this* server, not the request:
/// never forwarded (the body is never forwarded either; upgrade requests have none).
const CONNECTION_LOCAL: &[header::HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// apimachinery's boolean rule (kubelet itself sends `1`; kubectl and the API server may send
/// `true`).
fn flag(params: &[(String, String)], name: &str) -> bool {
    params
        .iter()
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| !(v == "0" || v.eq_ignore_ascii_case("false")))
}

/// The stream options of exec and attach, validated as kubelet's `NewOptions` does.
struct StreamOptions {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl StreamOptions {
    fn parse(params: &[(String, String)]) -> Result<Self, String> {
        let tty = flag(params, "tty");
        let o = StreamOptions {
            command: params
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag(params, "input") || flag(params, "stdin"),
            stdout: flag(params, "output") || flag(params, "stdout"),
            // A terminal has one output stream: kubelet drops stderr rather than failing.
            stderr: (flag(params, "error") || flag(params, "stderr")) && !tty,
            tty,
        };
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(o)
    }

    /// The streams the runtime is told to expect, for the agent's own protocol bridges.
    fn streams(&self) -> Streams {
        Streams {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }
}

/// A failed CRI call as kubelet answers it: NotFound → 404, anything else → 500.
fn cri_error(op: &str, s: &tonic::Status) -> Response {
    let code = if s.code() == tonic::Code::NotFound {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    text(code, format!("{op}: {}", s.message()))
}

fn no_runtime() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node agent has no container runtime to stream from",
    )
}

/// The current container's CRI id, or the answer to give.
fn container_id(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, Box<Response>> {
    let Some(found) = shared.lookup.container(namespace, pod, container) else {
        return Err(Box::new(not_found(shared, namespace, pod, container)));
    };
    found.container_id.ok_or_else(|| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        ))
    })
}

/// `GET|POST /exec/{namespace}/{pod}/{container}?command=..&stdin=..&stdout=..&stderr=..&tty=..`
pub(super) async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let opts = match StreamOptions::parse(&params) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let id = match container_id(&shared, &namespace, &pod, &container) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let Some(cri) = &shared.cri else {
        return no_runtime();
    };
    let streams = opts.streams();
    let url = match cri
        .runtime
        .clone()
        .exec(api::ExecRequest {
            container_id: id,
            cmd: opts.command,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
    {
        Ok(r) => r.into_inner().url,
        Err(s) => return cri_error("failed to exec in container", &s),
    };
    if ws::wants_v5(req.headers()) {
        return ws::exec_v5(req, &url, streams).await;
    }
    relay(req, &url).await
}

/// `GET|POST /attach/{namespace}/{pod}/{container}?stdin=..&stdout=..&stderr=..&tty=..`
pub(super) async fn attach(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let opts = match StreamOptions::parse(&params) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let id = match container_id(&shared, &namespace, &pod, &container) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let Some(cri) = &shared.cri else {
        return no_runtime();
    };
    let streams = opts.streams();
    let url = match cri
        .runtime
        .clone()
        .attach(api::AttachRequest {
            container_id: id,
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
    {
        Ok(r) => r.into_inner().url,
        Err(s) => return cri_error("failed to attach to container", &s),
    };
    if ws::wants_v5(req.headers()) {
        return ws::exec_v5(req, &url, streams).await;
    }
    relay(req, &url).await
}

/// `GET|POST /portForward/{namespace}/{pod}[?ports=80,443]`: the ports matter only to
/// WebSocket clients; SPDY clients name the port in each stream's headers.
pub(super) async fn port_forward(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let mut ports = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "ports" || k == "port") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(i32::from(n)),
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("unable to parse \"{p}\" as a port: must be 1-65535"),
                    )
                }
            }
        }
    }
    let Some(sandbox) = shared.lookup.sandbox(&namespace, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist"),
        );
    };
    let Some(cri) = &shared.cri else {
        return no_runtime();
    };
    let url = match cri
        .runtime
        .clone()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox,
            port: ports,
        })
        .await
    {
        Ok(r) => r.into_inner().url,
        Err(s) => return cri_error("failed to port-forward", &s),
    };
    if ws::wants_tunnel(req.headers()) {
        return ws::port_forward_tunnel(req, &url).await;
    }
    relay(req, &url).await
}

/// Forwards `req` (method, headers, not the body) to `url` on a fresh connection and relays
/// the answer. After a `101` the two upgraded connections are spliced byte for byte in a task
/// that ends when either side closes.
pub(super) async fn relay(mut req: Request, url: &str) -> Response {
    let target: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the runtime returned an invalid streaming URL {url:?}: {e}"),
            )
        }
    };
    let Some(authority) = target.authority().map(|a| a.to_string()) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} has no host"),
        );
    };
    if target.scheme_str() != Some("http") {
        // containerd serves TLS only when configured to; ours is plain HTTP on loopback.
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unsupported runtime streaming URL {url:?}: only http:// is supported"),
        );
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut upstream = hyper::Request::new(Body::empty());
    *upstream.method_mut() = req.method().clone();
    *upstream.uri_mut() = target
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    copy_headers(req.headers(), upstream.headers_mut(), CONNECTION_LOCAL);
    if let Ok(host) = HeaderValue::from_str(&authority) {
        upstream.headers_mut().insert(header::HOST, host);
    }
    let failed = |e: &dyn std::fmt::Display| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error connecting to the runtime's streaming server at {authority}: {e}"),
        )
    };
    let stream = match tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return failed(&"timed out"),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "runtime streaming connection ended");
        }
    });
    let mut resp = match sender.send_request(upstream).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let status = resp.status();
    let mut out = Response::new(Body::empty());
    *out.status_mut() = status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        copy_headers(resp.headers(), out.headers_mut(), &[]);
        let runtime_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, runtime) = tokio::join!(client_upgrade, runtime_upgrade);
            match (client, runtime) {
                (Ok(client), Ok(runtime)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(runtime),
                    )
                    .await;
                }
                (c, r) => tracing::debug!(
                    client = c.is_ok(),
                    runtime = r.is_ok(),
                    "a side of the stream did not upgrade"
                ),
            }
        });
    } else {
        copy_headers(
            resp.headers(),
            out.headers_mut(),
            &[
                header::CONNECTION,
                header::TRANSFER_ENCODING,
                header::CONTENT_LENGTH,
            ],
        );
        *out.body_mut() = Body::new(resp.into_body());
    }
    out
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, skip: &[header::HeaderName]) {
    for (k, v) in from {
        if !skip.contains(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stream_options_like_kubelet() {
        let o = StreamOptions::parse(&params(&[
            ("command", "echo"),
            ("command", "hi"),
            ("stdout", "1"),
            ("stderr", "true"),
        ]))
        .unwrap();
        assert_eq!(o.command, ["echo", "hi"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        let o = StreamOptions::parse(&params(&[("stdout", "1"), ("stderr", "1"), ("tty", "1")]))
            .unwrap();
        assert!(o.tty && !o.stderr);
        assert_eq!(
            StreamOptions::parse(&params(&[("command", "ls"), ("stdout", "0")])).err(),
            Some("you must specify at least 1 of stdin, stdout, stderr".to_string())
        );
    }
}
