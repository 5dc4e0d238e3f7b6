//! The node agent's streaming API: what kubelet serves on port 10250 and the API server proxies
//! `pods/{name}/log|exec|attach|portforward` to.
//!
//! Routes and behaviour follow kubelet's `pkg/kubelet/server`: `GET
//! /containerLogs/{namespace}/{pod}/{container}` with `PodLogOptions` as query parameters
//! (served here from the CRI log files, [`logs`]); `/exec`, `/attach` and `/portForward`
//! relayed to the runtime's own streaming server (`stream`); errors as plain-text bodies with kubelet's status codes and wording (the API server wraps
//! them in a `Status`). Runtime state comes only through [`PodLookup`], so the server is tested
//! against a fixed table.
//!
//! [`serve`] is plain HTTP (tests, and nodes without certificates, on loopback);
//! [`serve_secure`] is what a node of a secure cluster runs, as kubelet: HTTPS with the node's
//! serving certificate, every request authenticated and authorized ([`auth`]).

pub mod auth;
pub mod logs;
mod stream;
mod ws;

use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::agent::AgentTls;
use crate::cri::{api, Cri};
use crate::lookup::PodLookup;
use crate::Error;
use logs::{Formatter, LogOptions};

/// How often a follower looks for new output, and for the end of its container, once it has
/// read everything written so far. Polling (rather than inotify) keeps the agent free of a
/// platform-specific dependency; 200 ms is below what a person watching `kubectl logs -f`
/// notices and costs one `stat` per follower per tick.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Every this many idle polls a follower asks the runtime whether its container still runs
/// (kubelet does the same): a container that exited ends `kubectl logs -f`.
const RUNTIME_CHECK_POLLS: u32 = 5;

/// Output is sent in pieces of about this size when reading a backlog; a follower sends
/// whatever it has as soon as it catches up with the file.
const SEND_AT: usize = 32 * 1024;

/// Bytes read from a log file per read: each read of a `tokio::fs::File` is a trip to the
/// blocking pool, so a large buffer keeps a big backlog from costing thousands of them.
const READ_BUFFER: usize = 256 * 1024;

/// What every handler shares.
struct Shared {
    lookup: Arc<dyn PodLookup>,
    cri: Option<Cri>,
}

/// The streaming API's routes. `cri` is `None` where no runtime is reachable (tests of the log
/// path): logs still work, but a follower then only ends when the pod or its log file goes.
pub fn router(lookup: Arc<dyn PodLookup>, cri: Option<Cri>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(stream::exec).post(stream::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(stream::attach).post(stream::attach),
        )
        // kubelet's spelling, and the one the API server's subresource uses.
        .route(
            "/portForward/{namespace}/{pod}",
            get(stream::port_forward).post(stream::port_forward),
        )
        .route(
            "/portforward/{namespace}/{pod}",
            get(stream::port_forward).post(stream::port_forward),
        )
        .with_state(Arc::new(Shared { lookup, cri }))
}

/// Binds the streaming API's listener.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    Ok(tokio::net::TcpListener::bind(addr).await?)
}

/// Serves the streaming API on `addr` (port 0 picks a free one) until the task is aborted.
/// Returns the bound address, which the node publishes as
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub async fn serve(
    addr: SocketAddr,
    lookup: Arc<dyn PodLookup>,
    cri: Option<Cri>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let listener = bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(lookup, cri);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "streaming server stopped");
        }
    });
    Ok((addr, task))
}

/// Serves the streaming API over HTTPS on `addr` with `tls.serving`, as kubelet serves port
/// 10250: callers authenticate with a client certificate from `tls.client_ca_pem` or a bearer
/// token (TokenReview), and are authorized by a SubjectAccessReview on Node `node`; both
/// reviews go through `client` (the node's credentials). Returns like [`serve`].
pub async fn serve_secure(
    addr: SocketAddr,
    lookup: Arc<dyn PodLookup>,
    cri: Option<Cri>,
    tls: &AgentTls,
    client: kube::Client,
    node: &str,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let bad = |e: pki::Error| Error::Config(format!("streaming server TLS: {e}"));
    let config = pki::server_config(&tls.serving.cert_pem, &tls.serving.key_pem).map_err(bad)?;
    let auth = Arc::new(auth::Auth::new(&tls.client_ca_pem, client, node).map_err(bad)?);
    let listener = bind(addr).await?;
    let addr = listener.local_addr()?;
    // `layer`, not `route_layer`: unknown paths are refused to strangers too.
    let app = router(lookup, cri).layer(axum::middleware::from_fn_with_state(auth, auth::guard));
    let task = tokio::spawn(serve_tls(listener, config, app));
    Ok((addr, task))
}

/// Handshakes that take longer are dropped (a client that opens a socket and sends nothing
/// must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS accept loop (axum's `serve` speaks only plain TCP): each connection is handshaken
/// with rustls and served by hyper (HTTP/1.1 with upgrades, or HTTP/2) with the client's
/// certificate chain attached to every request as [`auth::PeerCertificates`]. Connection tasks
/// belong to the loop, so aborting it closes them; upgraded streams (exec sessions) live in
/// their own tasks, as with plain HTTP. The same shape as the API server's
/// `security::tls::serve` (duplicated rather than shared: `pki` stays free of axum and hyper).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
) {
    use tower::ServiceExt as _;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "streaming server: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "streaming server: TLS handshake timed out");
                    return;
                }
            };
            let peer = tls.get_ref().1.peer_certificates().map(|chain| {
                auth::PeerCertificates(Arc::new(
                    chain.iter().map(|c| c.clone().into_owned()).collect(),
                ))
            });
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(peer) = &peer {
                        req.extensions_mut().insert(peer.clone());
                    }
                    app.clone().oneshot(req.map(Body::new))
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "streaming server: connection ended with an error");
            }
        });
    }
}

/// A plain-text answer, as kubelet writes its errors.
fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// kubelet's 404 for a pod or container it does not run.
fn not_found(shared: &Shared, namespace: &str, pod: &str, container: &str) -> Response {
    if shared.lookup.sandbox(namespace, pod).is_some() {
        text(
            StatusCode::NOT_FOUND,
            format!("container \"{container}\" not found in pod \"{pod}\""),
        )
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist"),
        )
    }
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
///
/// Everything that can fail (lookup, options, opening the file, the tail search) happens
/// before the response starts, so failures get a status code; then a task streams the body.
async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let opts = match LogOptions::from_query(&params, jiff::Timestamp::now()) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let Some(found) = shared.lookup.container(&namespace, &pod, &container) else {
        return not_found(&shared, &namespace, &pod, &container);
    };
    let path = if opts.previous {
        match found.previous_log_path {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                )
            }
        }
    } else {
        match found.log_path.clone() {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                    ),
                )
            }
        }
    };
    let opened = {
        let path = path.clone();
        let tail = opts.tail_lines;
        tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64, u64, u64)> {
            let mut file = std::fs::File::open(&path)?;
            let meta = file.metadata()?;
            let start = match tail {
                Some(n) => logs::tail_start(&mut file, meta.len(), n)?,
                None => 0,
            };
            file.seek(SeekFrom::Start(start))?;
            Ok((file, start, meta.len(), meta.ino()))
        })
        .await
    };
    let (file, start, len, ino) = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("failed to open log file \"{}\": {e}", path.display()),
            )
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Without follow, the answer is the file as it was when asked: later writes are not read.
    let limit = if opts.follow {
        u64::MAX
    } else {
        len.saturating_sub(start)
    };
    let reader = BufReader::with_capacity(READ_BUFFER, tokio::fs::File::from_std(file).take(limit));
    // A previous instance's log never grows, so following it ends at its end.
    let follow = (opts.follow && !opts.previous).then(|| Follow {
        shared: shared.clone(),
        namespace,
        pod,
        container,
        path,
        container_id: found.container_id,
        ino,
    });
    let formatter = Formatter::new(opts.timestamps, opts.since, opts.limit_bytes);
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(pump(reader, follow, formatter, tx));
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// What a follower watches to know when to stop.
struct Follow {
    shared: Arc<Shared>,
    namespace: String,
    pod: String,
    container: String,
    path: PathBuf,
    container_id: Option<String>,
    /// The inode of the file being read: a different file at `path` means the log was rotated.
    ino: u64,
}

/// What a follower does once it has read everything written so far.
enum Next {
    /// Look again after the next poll.
    Wait,
    /// Read what is left, then end: the container stopped, the pod left, or the log moved.
    Finish,
    /// Read what is left, then continue with the new file at the same path (rotation).
    Reopen,
}

impl Follow {
    async fn check(&self, polls: u32) -> Next {
        match self
            .shared
            .lookup
            .container(&self.namespace, &self.pod, &self.container)
        {
            Some(c) if c.log_path.as_deref() == Some(self.path.as_path()) => {}
            _ => return Next::Finish,
        }
        match tokio::fs::metadata(&self.path).await {
            Ok(m) if m.ino() != self.ino => return Next::Reopen,
            Ok(_) => {}
            Err(_) => return Next::Finish,
        }
        if polls % RUNTIME_CHECK_POLLS == 0 {
            if let (Some(cri), Some(id)) = (&self.shared.cri, &self.container_id) {
                let status = cri
                    .runtime
                    .clone()
                    .container_status(api::ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await;
                let running = match status {
                    Ok(r) => r.into_inner().status.is_some_and(|s| {
                        s.state == api::ContainerState::ContainerRunning as i32
                            || s.state == api::ContainerState::ContainerCreated as i32
                    }),
                    Err(s) => s.code() != tonic::Code::NotFound,
                };
                if !running {
                    return Next::Finish;
                }
            }
        }
        Next::Wait
    }
}

/// Sends what has been formatted; `false` when the client has gone.
async fn send(tx: &mpsc::Sender<std::io::Result<Bytes>>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    tx.send(Ok(Bytes::from(std::mem::take(out)))).await.is_ok()
}

/// Reads records from `reader`, formats them and sends them to the response body; with
/// `follow`, keeps reading what the runtime appends until [`Follow::check`] says stop or the
/// client disconnects.
async fn pump(
    mut reader: BufReader<tokio::io::Take<tokio::fs::File>>,
    mut follow: Option<Follow>,
    mut formatter: Formatter,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut record = Vec::new();
    let mut out = Vec::new();
    let mut after_eof = Next::Wait;
    let mut polls = 0u32;
    loop {
        if let Err(e) = reader.read_until(b'\n', &mut record).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        if record.last() == Some(&b'\n') {
            let more = formatter.push(&record, &mut out);
            record.clear();
            if !more {
                send(&tx, &mut out).await;
                return;
            }
            if out.len() >= SEND_AT && !send(&tx, &mut out).await {
                return;
            }
            continue;
        }
        // Everything written so far has been read; `record` may hold the start of a record the
        // runtime is still writing.
        if !send(&tx, &mut out).await {
            return;
        }
        let Some(f) = &mut follow else {
            return;
        };
        match after_eof {
            Next::Finish => return,
            Next::Reopen => match tokio::fs::File::open(&f.path).await {
                Ok(file) => {
                    if let Ok(m) = file.metadata().await {
                        f.ino = m.ino();
                    }
                    reader = BufReader::with_capacity(READ_BUFFER, file.take(u64::MAX));
                    record.clear();
                    after_eof = Next::Wait;
                    continue;
                }
                Err(_) => return,
            },
            Next::Wait => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
        polls = polls.wrapping_add(1);
        after_eof = f.check(polls).await;
    }
}
