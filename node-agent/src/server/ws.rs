//! The WebSocket streaming protocols containerd 1.6's streaming server lacks, served by the
//! agent itself on top of the protocols it does speak.
//!
//! * exec/attach over WebSocket `v5.channel.k8s.io` (kubectl 1.30+'s first choice). v5 is v4's
//!   framing (first byte of each binary message = channel: 0 stdin, 1 stdout, 2 stderr,
//!   3 status, 4 resize) plus channel 255, *close*, whose second byte names the stream being
//!   half-closed. containerd's WebSocket v4 cannot express that: its `wsstream` server closes
//!   stdin only when the whole socket ends, and then closes the socket too, losing the output
//!   still to come and the exit status. So upstream we speak what kubectl's own fallback speaks,
//!   SPDY/3.1 with `v4.channel.k8s.io`, where each stream half-closes on its own: a v5 close of
//!   stdin becomes a `FIN` on the stdin stream, and the process reads EOF while its output and
//!   status still flow — what kubelet's native v5 server does.
//! * port-forward over WebSocket `SPDY/3.1+portforward.k8s.io` (KEP-4006, kubectl 1.31+): the
//!   SPDY byte stream of `portforward.k8s.io` carried in WebSocket binary messages (client-go's
//!   `tools/portforward` `TunnelingConnection`). Upstream is containerd's native SPDY
//!   port-forward; the agent only re-frames bytes, as the API server's tunnelling handler does.
//!
//! Only the client side of SPDY is needed, and only enough of it for these streams: streams are
//! opened by us, header blocks are written as zlib *stored* blocks (valid zlib input to the
//! server's decompressor, so no compressor is needed) and the server's header blocks are never
//! read (only their frames' lengths matter). containerd's SPDY (moby/spdystream) does no flow
//! control (a 200 KB `kubectl cp` each way passes in `e2e/tests/exec.rs` without any), so no
//! `WINDOW_UPDATE` is sent.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::text;

/// kubectl's exec/attach WebSocket protocol, served here.
pub(super) const V5: &str = "v5.channel.k8s.io";
/// KEP-4006's port-forward tunnel, served here.
pub(super) const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// What containerd 1.6 serves itself for exec/attach: requests choosing one of these are relayed.
const RUNTIME_CHANNEL_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
];
/// What containerd 1.6 serves itself for port-forward over WebSocket (the Python client's).
const RUNTIME_PORT_FORWARD_PROTOCOLS: &[&str] = RUNTIME_CHANNEL_PROTOCOLS;

/// How long a finished session waits for the client to answer its WebSocket close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// v5's channel numbers (apimachinery `remotecommand` constants).
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which streams the runtime was told to expect (the CRI `Exec`/`Attach` request): the SPDY
/// server waits for exactly these, so exactly these are opened.
#[derive(Clone, Copy, Debug)]
pub(super) struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The WebSocket subprotocols a request offers, in its order (the header may repeat and each
/// value may list several).
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the agent serves this request itself: it is a WebSocket upgrade whose first offered
/// protocol that anyone here understands is `ours`. The client's order decides, as in
/// apimachinery's `wsstream` handshake; offers of protocols containerd speaks are relayed.
fn serves(headers: &HeaderMap, ours: &str, runtime: &[&str]) -> bool {
    is_websocket(headers)
        && offered(headers)
            .iter()
            .find(|p| p.as_str() == ours || runtime.contains(&p.as_str()))
            .is_some_and(|p| p == ours)
}

/// Whether exec/attach `headers` ask for WebSocket v5 (served by [`exec_v5`]).
pub(super) fn wants_v5(headers: &HeaderMap) -> bool {
    serves(headers, V5, RUNTIME_CHANNEL_PROTOCOLS)
}

/// Whether port-forward `headers` ask for the KEP-4006 tunnel (served by [`port_forward_tunnel`]).
pub(super) fn wants_tunnel(headers: &HeaderMap) -> bool {
    serves(headers, PORT_FORWARD_TUNNEL, RUNTIME_PORT_FORWARD_PROTOCOLS)
}

/// The `101` accepting the client's WebSocket with `protocol`, or a `400` for a malformed
/// handshake (RFC 6455 §4.2.1).
fn accept(headers: &HeaderMap, protocol: &'static str) -> Result<Response, Box<Response>> {
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
    else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "invalid WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version 13 are required",
        )));
    };
    let accept_key = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|e| Box::new(text(StatusCode::BAD_REQUEST, e.to_string())))?;
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(out)
}

/// Opens an HTTP/1.1 upgrade to `url` asking for SPDY/3.1 with `stream_protocol`, as client-go's
/// SPDY round tripper does. A refusal comes back as the runtime's own answer for the client.
async fn dial_spdy(url: &str, stream_protocol: &'static str) -> Result<Upgraded, Response> {
    let target: Uri = url.parse().map_err(|e| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime returned an invalid streaming URL {url:?}: {e}"),
        )
    })?;
    let authority = match (target.scheme_str(), target.authority()) {
        (Some("http"), Some(a)) => a.to_string(),
        _ => {
            return Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unsupported runtime streaming URL {url:?}: only http:// is supported"),
            ))
        }
    };
    let failed = |e: &dyn std::fmt::Display| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error connecting to the runtime's streaming server at {authority}: {e}"),
        )
    };
    let stream = match tokio::time::timeout(
        super::stream::DIAL_TIMEOUT,
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(failed(&e)),
        Err(_) => return Err(failed(&"timed out")),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "runtime streaming connection ended");
        }
    });
    let mut req = hyper::Request::new(Body::empty());
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = target
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    let h = req.headers_mut();
    if let Ok(host) = HeaderValue::from_str(&authority) {
        h.insert(header::HOST, host);
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(stream_protocol),
    );
    let mut resp = sender.send_request(req).await.map_err(|e| failed(&e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut out = Response::new(Body::empty());
        *out.status_mut() = resp.status();
        if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
            out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        *out.body_mut() = Body::new(resp.into_body());
        return Err(out);
    }
    hyper::upgrade::on(&mut resp).await.map_err(|e| failed(&e))
}

/// Serves an exec/attach WebSocket v5 request whose runtime streaming URL is `url` (see the
/// module docs): answers `101` once the runtime has accepted SPDY, then bridges the two.
pub(super) async fn exec_v5(mut req: Request, url: &str, streams: Streams) -> Response {
    let accepted = match accept(req.headers(), V5) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let runtime = match dial_spdy(url, "v4.channel.k8s.io").await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let client = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "the exec client did not upgrade");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        if let Err(e) = bridge_v5(ws, TokioIo::new(runtime), streams).await {
            tracing::debug!(error = %e, "exec/attach WebSocket v5 session ended");
        }
    });
    accepted
}

/// Serves a port-forward KEP-4006 tunnel whose runtime streaming URL is `url`.
pub(super) async fn port_forward_tunnel(mut req: Request, url: &str) -> Response {
    let accepted = match accept(req.headers(), PORT_FORWARD_TUNNEL) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let runtime = match dial_spdy(url, "portforward.k8s.io").await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let client = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "the port-forward client did not upgrade");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        if let Err(e) = tunnel(ws, TokioIo::new(runtime)).await {
            tracing::debug!(error = %e, "port-forward tunnel ended");
        }
    });
    accepted
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// KEP-4006: every binary message from the client is a run of SPDY bytes for the runtime, and
/// every read from the runtime goes back as one binary message. Ends when either side does.
async fn tunnel<S, R>(mut ws: WebSocketStream<S>, mut runtime: R) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => runtime.write_all(&data).await?,
                // Pings are answered by tungstenite itself; client-go sends no text.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    let _ = runtime.shutdown().await;
                    let _ = ws.close(Some(normal_close())).await;
                    return Ok(());
                }
                Some(Err(e)) => return Err(e.into()),
            },
            n = runtime.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    let _ = ws.close(Some(normal_close())).await;
                    return Ok(());
                }
                ws.send(Message::binary(buf[..n].to_vec())).await?;
            }
        }
    }
}

/// SPDY/3 frame types and flags used here (draft-mbelshe-httpbis-spdy-00 §2.6).
mod spdy {
    pub const VERSION: u16 = 3;
    pub const SYN_STREAM: u16 = 1;
    pub const RST_STREAM: u16 = 3;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const FLAG_FIN: u8 = 0x01;
    /// The longest payload a frame's 24-bit length can carry.
    pub const MAX_PAYLOAD: usize = 0x00ff_ffff;
}

/// Writes SPDY client frames. The header compression context spans the connection, so one
/// writer serves all streams.
struct SpdyWriter<W> {
    out: W,
    /// Whether the zlib stream's two-byte header has been sent.
    zlib_started: bool,
}

impl<W: AsyncWrite + Unpin> SpdyWriter<W> {
    /// `SYN_STREAM` for client stream `id` with `headers` (names lower case, as SPDY requires).
    async fn syn_stream(&mut self, id: u32, headers: &[(&str, &str)]) -> std::io::Result<()> {
        let mut block = Vec::new();
        block.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            block.extend_from_slice(&(k.len() as u32).to_be_bytes());
            block.extend_from_slice(k.as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        // The block goes out as a zlib stored block followed by an empty one (a sync flush, as
        // zlib's Z_SYNC_FLUSH ends each SPDY header block), continuing the connection's zlib
        // stream. Header blocks here are a few dozen bytes, far below a stored block's 64 KiB.
        let mut z = Vec::with_capacity(block.len() + 12);
        if !self.zlib_started {
            // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no preset dictionary, check bits.
            z.extend_from_slice(&[0x78, 0x01]);
            self.zlib_started = true;
        }
        let len = block.len() as u16;
        z.push(0x00);
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(&block);
        z.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        let mut payload = Vec::with_capacity(10 + z.len());
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes()); // associated stream
        payload.extend_from_slice(&[0, 0]); // priority, slot
        payload.extend_from_slice(&z);
        self.control(spdy::SYN_STREAM, 0, &payload).await
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(0x8000 | spdy::VERSION).to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.extend_from_slice(&frame_len(flags, payload.len()));
        frame.extend_from_slice(payload);
        // One write per frame: the server's decompressor expects a header block whole.
        self.out.write_all(&frame).await
    }

    /// `DATA` on stream `id`, split at the frame size limit; `fin` half-closes the stream.
    async fn data(&mut self, id: u32, mut data: &[u8], fin: bool) -> std::io::Result<()> {
        loop {
            let n = data.len().min(spdy::MAX_PAYLOAD);
            let last = n == data.len();
            let flags = if last && fin { spdy::FLAG_FIN } else { 0 };
            let mut frame = Vec::with_capacity(8 + n);
            frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            frame.extend_from_slice(&frame_len(flags, n));
            frame.extend_from_slice(&data[..n]);
            self.out.write_all(&frame).await?;
            data = &data[n..];
            if last {
                return Ok(());
            }
        }
    }
}

/// A frame's flags byte and 24-bit length; `len` is at most [`spdy::MAX_PAYLOAD`].
fn frame_len(flags: u8, len: usize) -> [u8; 4] {
    let l = (len.min(spdy::MAX_PAYLOAD) as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

/// What the runtime sent that the bridge acts on.
#[derive(Debug, PartialEq)]
enum Event {
    Data {
        stream: u32,
        data: Vec<u8>,
        fin: bool,
    },
    /// A stream the runtime reset.
    Reset(u32),
    /// A `PING` from the runtime, to be echoed.
    Ping([u8; 4]),
    /// `GOAWAY`, or the end of the connection.
    End,
}

/// Reads one SPDY frame; `None` for frames the bridge ignores (`SYN_REPLY`, `SETTINGS`,
/// `HEADERS`, `WINDOW_UPDATE`, unknown types).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Event>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Some(Event::End)),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Event::Data {
            stream,
            data: payload,
            fin: flags & spdy::FLAG_FIN != 0,
        }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let word = |p: &[u8]| -> Option<[u8; 4]> { p.get(..4)?.try_into().ok() };
    Ok(match kind {
        spdy::RST_STREAM => {
            word(&payload).map(|w| Event::Reset(u32::from_be_bytes(w) & 0x7fff_ffff))
        }
        spdy::PING => word(&payload).map(Event::Ping),
        spdy::GOAWAY => Some(Event::End),
        _ => None,
    })
}

/// Bridges a v5 client to the runtime's SPDY `v4.channel.k8s.io` session.
///
/// Streams are opened as client-go's v4 client does (error first, then stdin, stdout, stderr,
/// resize). The runtime's stdout/stderr go to channels 1/2 as they come; the error stream's JSON
/// `Status` is collected and sent on channel 3 when that stream ends (the runtime writes it once,
/// after the output), and then the WebSocket is closed, which is how kubectl learns the session
/// is over and reads the exit code from the status.
async fn bridge_v5<S, R>(
    mut ws: WebSocketStream<S>,
    runtime: R,
    streams: Streams,
) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(runtime);
    let mut spdy = SpdyWriter {
        out: wr,
        zlib_started: false,
    };
    // channel → SPDY stream id, and back. Client stream ids are odd, from 1.
    let mut ids: HashMap<u8, u32> = HashMap::new();
    let mut next = 1u32;
    for (channel, kind, wanted) in [
        (STATUS, "error", true),
        (STDIN, "stdin", streams.stdin),
        (STDOUT, "stdout", streams.stdout),
        (STDERR, "stderr", streams.stderr),
        (RESIZE, "resize", streams.tty),
    ] {
        if wanted {
            spdy.syn_stream(next, &[("streamtype", kind)]).await?;
            ids.insert(channel, next);
            next += 2;
        }
    }
    let channel_of: HashMap<u32, u8> = ids.iter().map(|(c, id)| (*id, *c)).collect();

    // Frames are read in their own task: a half-read frame must not be dropped by `select!`.
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Event>>(16);
    let reader = tokio::spawn(async move {
        loop {
            let ev = match read_frame(&mut rd).await {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let end = ev == Event::End;
            if tx.send(Ok(ev)).await.is_err() || end {
                return;
            }
        }
    });

    let mut status = Vec::new();
    let result: Result<(), BoxError> = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Ok(Event::Data { stream, data, fin })) => match channel_of.get(&stream) {
                    Some(&STATUS) => {
                        status.extend_from_slice(&data);
                        if fin {
                            break finish(&mut ws, &status).await;
                        }
                    }
                    Some(&channel) if !data.is_empty() => {
                        let mut msg = Vec::with_capacity(1 + data.len());
                        msg.push(channel);
                        msg.extend_from_slice(&data);
                        if let Err(e) = ws.send(Message::binary(msg)).await {
                            break Err(e.into());
                        }
                    }
                    _ => {}
                },
                Some(Ok(Event::Ping(id))) => {
                    if let Err(e) = spdy.control(spdy::PING, 0, &id).await {
                        break Err(e.into());
                    }
                }
                Some(Ok(Event::Reset(stream))) if channel_of.get(&stream) != Some(&STATUS) => {}
                Some(Ok(Event::Reset(_) | Event::End)) | None => break finish(&mut ws, &status).await,
                Some(Err(e)) => {
                    let _ = finish(&mut ws, &status).await;
                    break Err(e.into());
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = from_client(&mut spdy, &ids, &data).await {
                        break Err(e.into());
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_))) => {}
                // The client hung up: dropping the runtime connection ends the session there.
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Err(e)) => break Err(e.into()),
            },
        }
    };
    reader.abort();
    let _ = spdy.out.shutdown().await;
    result
}

/// One v5 message from the client, onto its SPDY stream.
async fn from_client<W: AsyncWrite + Unpin>(
    spdy: &mut SpdyWriter<W>,
    ids: &HashMap<u8, u32>,
    msg: &[u8],
) -> std::io::Result<()> {
    let Some((&channel, data)) = msg.split_first() else {
        return Ok(());
    };
    if channel == CLOSE {
        // v5's half-close: `FIN` on that stream. Closing stdin is what kubectl sends at the end
        // of its input; the process then reads EOF.
        if let Some(id) = data.first().and_then(|c| ids.get(c)) {
            return spdy.data(*id, &[], true).await;
        }
        return Ok(());
    }
    match ids.get(&channel) {
        Some(id) if (channel == STDIN || channel == RESIZE) && !data.is_empty() => {
            spdy.data(*id, data, false).await
        }
        // Anything else (output channels, streams the runtime was not asked for) has no
        // meaning from a client; kubelet's server drops such frames too.
        _ => Ok(()),
    }
}

/// The end of a v5 session: the runtime's status on channel 3 and a normal close (1000), or,
/// when the runtime ended without a status, a close with 1011 (internal error) and a reason.
/// client-go's WebSocket reader turns any close but 1000, including one without a code (1005),
/// into an error on every stream; that is what a missing status must be, since a clean end
/// without one would read as success.
async fn finish<S>(ws: &mut WebSocketStream<S>, status: &[u8]) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = if status.is_empty() {
        CloseFrame {
            code: CloseCode::Error,
            reason: "the container runtime ended the stream without an exit status".into(),
        }
    } else {
        let mut msg = Vec::with_capacity(1 + status.len());
        msg.push(STATUS);
        msg.extend_from_slice(status);
        ws.send(Message::binary(msg)).await?;
        normal_close()
    };
    ws.close(Some(close)).await?;
    // Let the client's close frame arrive, so the TCP connection is not reset under it; a
    // client that never answers is not waited for beyond CLOSE_WAIT.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

/// A close with status 1000, the only one client-go's readers take as a clean end.
fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn chooses_by_the_clients_order() {
        let ws = |p: &str| headers(&[("upgrade", "websocket"), ("sec-websocket-protocol", p)]);
        assert!(wants_v5(&ws("v5.channel.k8s.io")));
        assert!(wants_v5(&ws("v5.channel.k8s.io, v4.channel.k8s.io")));
        assert!(!wants_v5(&ws("v4.channel.k8s.io,v5.channel.k8s.io")));
        assert!(!wants_v5(&ws("v4.channel.k8s.io")));
        assert!(!wants_v5(&headers(&[("upgrade", "SPDY/3.1")])));
        assert!(wants_tunnel(&ws("SPDY/3.1+portforward.k8s.io")));
        assert!(!wants_tunnel(&ws("v4.channel.k8s.io")));
    }

    #[tokio::test]
    async fn syn_stream_header_block_is_valid_zlib() {
        let mut w = SpdyWriter {
            out: Vec::new(),
            zlib_started: false,
        };
        w.syn_stream(1, &[("streamtype", "error")]).await.unwrap();
        w.syn_stream(3, &[("streamtype", "stdin")]).await.unwrap();
        let out = w.out;
        // First frame: control, version 3, SYN_STREAM, length = 10 + zlib bytes.
        assert_eq!(&out[..4], &[0x80, 0x03, 0x00, 0x01]);
        let len = u32::from_be_bytes([0, out[5], out[6], out[7]]) as usize;
        let first = &out[8..8 + len];
        assert_eq!(&first[..4], &1u32.to_be_bytes());
        let z1 = &first[10..];
        assert_eq!(&z1[..2], &[0x78, 0x01]);
        assert_eq!((0x78u32 * 256 + 0x01) % 31, 0);
        // Stored block: header byte, LEN, NLEN, then the uncompressed header block.
        let n = u16::from_le_bytes([z1[3], z1[4]]) as usize;
        assert_eq!(u16::from_le_bytes([z1[5], z1[6]]), !(n as u16));
        let block = &z1[7..7 + n];
        assert_eq!(&block[..4], &1u32.to_be_bytes());
        assert_eq!(&block[8..18], b"streamtype");
        assert_eq!(&z1[7 + n..], &[0, 0, 0, 0xff, 0xff]);
        // The second frame continues the stream: no zlib header again.
        let second = &out[8 + len..];
        assert_eq!(second[8 + 10], 0x00);
    }

    #[tokio::test]
    async fn v5_close_of_stdin_is_a_fin() {
        let mut w = SpdyWriter {
            out: Vec::new(),
            zlib_started: false,
        };
        let ids = HashMap::from([(STATUS, 1), (STDIN, 3), (STDOUT, 5)]);
        from_client(&mut w, &ids, &[STDIN, b'x']).await.unwrap();
        from_client(&mut w, &ids, &[CLOSE, STDIN]).await.unwrap();
        // Output channels and unknown streams from the client are dropped.
        from_client(&mut w, &ids, &[STDOUT, b'y']).await.unwrap();
        from_client(&mut w, &ids, &[CLOSE, 9]).await.unwrap();
        from_client(&mut w, &ids, &[]).await.unwrap();
        let mut r = &w.out[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Event::Data {
                stream: 3,
                data: b"x".to_vec(),
                fin: false
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Event::Data {
                stream: 3,
                data: Vec::new(),
                fin: true
            })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Event::End));
    }

    #[tokio::test]
    async fn reads_frames() {
        let mut w = SpdyWriter {
            out: Vec::new(),
            zlib_started: false,
        };
        w.data(5, b"hi", true).await.unwrap();
        w.control(spdy::PING, 0, &[0, 0, 0, 2]).await.unwrap();
        w.control(spdy::RST_STREAM, 0, &[0, 0, 0, 3, 0, 0, 0, 5])
            .await
            .unwrap();
        w.control(2, 0, &[0, 0, 0, 1, 0, 0]).await.unwrap(); // SYN_REPLY: ignored
        let mut r = &w.out[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Event::Data {
                stream: 5,
                data: b"hi".to_vec(),
                fin: true
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Event::Ping([0, 0, 0, 2]))
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Event::Reset(3)));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Event::End));
    }
}
