//! `pods/{name}/log` (and the other node-served subresources): find the node agent that runs
//! the pod and proxy the request to its streaming API, as kube-apiserver proxies to kubelet.
//!
//! The API server decides everything it can from the pod alone (which container, whether the
//! options are valid, whether the pod is on a node) so those errors are upstream's `Status`es;
//! the node agent answers the rest (kubelet's plain-text errors, wrapped here the way
//! upstream's `GenericHttpResponseChecker` wraps them). The body is streamed chunk by chunk,
//! so `kubectl logs -f` follows live. With a kubelet client certificate configured (a secure
//! cluster), node agents are dialled over HTTPS, as kube-apiserver dials kubelets: the agent's
//! serving certificate is verified against the kubelet CA and the API server authenticates
//! with its certificate (`kube-apiserver-kubelet-client`, `system:masters`), which the agent
//! authorizes with a SubjectAccessReview.

use std::time::Duration;

use api_types::status;
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::ApiError;
use crate::query::Query;
use crate::resource::Resource;
use crate::State;

/// How long to wait for the node agent to accept a connection before answering an error.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The annotation naming the container kubectl picks when none is given; honoured here too, so
/// clients that do not default (the Python client) get the same container.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The log options kubelet takes, passed through verbatim (after validation).
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "tailLines",
    "limitBytes",
];

/// Names of every container of the pod, init and ephemeral ones included, in upstream's
/// `VisitContainers` order.
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str())
        .collect()
}

/// The container a request addresses: `?container=`, else the default-container annotation,
/// else the only container; errors worded as kube-apiserver's `validateContainer`.
fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let all = container_names(pod);
    if let Some(c) = asked {
        return if all.contains(&c) {
            Ok(c.to_string())
        } else {
            Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        };
    }
    if let Some(c) = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|c| all.contains(c))
    {
        return Ok(c.to_string());
    }
    let regular: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str()).collect())
        .unwrap_or_default();
    match regular.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// Upstream's `ValidatePodLogOptions`: 422 `PodLogOptions "p" is invalid: ...`; integers that
/// do not parse are 400s, as the parameter decoder rejects them.
fn validate_log_options(name: &str, q: &Query) -> Result<(), ApiError> {
    let mut causes: Vec<(String, String, String)> = Vec::new();
    let int = |k: &str| q.int(k).map_err(ApiError::bad_request);
    if let Some(n) = int("tailLines")? {
        if n < 0 {
            causes.push((
                "tailLines".into(),
                format!("Invalid value: {n}: must be greater than or equal to 0"),
                "FieldValueInvalid".into(),
            ));
        }
    }
    if let Some(n) = int("limitBytes")? {
        if n < 1 {
            causes.push((
                "limitBytes".into(),
                format!("Invalid value: {n}: must be greater than 0"),
                "FieldValueInvalid".into(),
            ));
        }
    }
    let since_seconds = int("sinceSeconds")?;
    if let Some(n) = since_seconds {
        if n < 1 {
            causes.push((
                "sinceSeconds".into(),
                format!("Invalid value: {n}: must be greater than 0"),
                "FieldValueInvalid".into(),
            ));
        }
    }
    if let Some(t) = q.non_empty("sinceTime") {
        if t.parse::<jiff::Timestamp>().is_err() {
            return Err(ApiError::bad_request(format!(
                "parsing time \"{t}\" as \"2006-01-02T15:04:05Z07:00\": cannot parse"
            )));
        }
        if since_seconds.is_some() {
            causes.push((
                String::new(),
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
                "FieldValueForbidden".into(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(status::invalid(
            "",
            "PodLogOptions",
            name,
            causes,
        )))
    }
}

/// `host:port` of the node agent serving `node`'s pods: the first address by preference
/// (InternalIP first) and the port the agent published in `status.daemonEndpoints`.
pub(crate) async fn node_endpoint(state: &State, node: &str) -> Result<String, ApiError> {
    let info = api_types::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the resource table has no nodes"))?;
    let nodes = Resource {
        info,
        namespace: None,
    };
    let obj = state.registry.get(&nodes, node).await?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=u64::from(u16::MAX)).contains(p))
        .ok_or_else(|| {
            ApiError::service_unavailable(format!(
                "node \"{node}\" has not published a kubelet endpoint port \
                 (status.daemonEndpoints.kubeletEndpoint.Port): its node agent does not serve \
                 logs, exec, attach or port-forward"
            ))
        })?;
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let host = [
        "InternalIP",
        "ExternalIP",
        "Hostname",
        "InternalDNS",
        "ExternalDNS",
    ]
    .iter()
    .find_map(|kind| {
        addresses.iter().find_map(|a| {
            (a.get("type")?.as_str()? == *kind)
                .then(|| a.get("address")?.as_str())
                .flatten()
                .filter(|s| !s.is_empty())
        })
    })
    .ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "node \"{node}\" has no address in status.addresses to reach its node agent at"
        ))
    })?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The pod, its node (`None` when unscheduled) and the container the request is for.
async fn locate(
    state: &State,
    res: &Resource,
    name: &str,
    q: &Query,
) -> Result<(Value, Option<String>, String), ApiError> {
    let pod = state.registry.get(res, name).await?;
    let container = pick_container(&pod, name, q.non_empty("container"))?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    Ok((pod, node, container))
}

/// A path segment with everything but unreserved characters percent-encoded (names are DNS
/// labels, but the path must not be injectable).
fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET pods/{name}/log`.
pub async fn pod_log(
    state: &State,
    res: &Resource,
    name: &str,
    q: &Query,
) -> Result<Response, ApiError> {
    validate_log_options(name, q)?;
    let (_, node, container) = locate(state, res, name, q).await?;
    let Some(node) = node else {
        // Upstream's `LogLocation` gives an unscheduled pod an empty location, which streams
        // an empty body (exec and attach answer 400 instead).
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            Body::empty(),
        )
            .into_response());
    };
    let endpoint = node_endpoint(state, &node).await?;
    // (The serializer is not `Send`: it must not live across an await.)
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for k in LOG_PARAMS {
            if let Some(v) = q.get(k) {
                query.append_pair(k, v);
            }
        }
        query.finish()
    };
    let namespace = res.namespace.as_deref().unwrap_or_default();
    let path = format!(
        "/containerLogs/{}/{}/{}{}{query}",
        segment(namespace),
        segment(name),
        segment(&container),
        if query.is_empty() { "" } else { "?" },
    );
    let resp = forward(
        kubelet_tls(state),
        &endpoint,
        &node,
        Request::get(path).body(Body::empty()),
    )
    .await?;
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        return Err(node_error(parts.status, body, "pods/log", name).await);
    }
    // A follow ends with the server, like a watch: a graceful stop must not wait for it.
    let body = futures::StreamExt::take_until(
        Body::new(body).into_data_stream(),
        state.shutdown.clone().cancelled_owned(),
    );
    let mut out = Response::new(Body::from_stream(body));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// How node agents are dialled: over TLS with the API server's kubelet client certificate when
/// the security configuration has one (`--kubelet-client-certificate`), else plain HTTP.
pub(crate) fn kubelet_tls(state: &State) -> Option<std::sync::Arc<rustls::ClientConfig>> {
    state.security.as_ref()?.kubelet_tls.clone()
}

/// Sends one request to the node agent at `endpoint` on a fresh connection (upgrades are
/// per-connection, and log follows hold theirs for as long as they run) and returns its
/// response head with the body still streaming. With `tls` the connection is HTTPS: the
/// agent's certificate must be valid for the address dialled (its node serving certificate
/// names the node's IPs) and the API server presents its kubelet client certificate.
pub(crate) async fn forward(
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    endpoint: &str,
    node: &str,
    req: Result<Request<Body>, axum::http::Error>,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let mut req = req.map_err(ApiError::internal)?;
    let host = HeaderValue::from_str(endpoint).map_err(ApiError::internal)?;
    req.headers_mut().insert(header::HOST, host);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let dial_error = |e: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!(
            "error dialing the node agent of node \"{node}\" at {scheme}://{endpoint}: {e}"
        ))
    };
    let stream = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| dial_error(&"timed out"))?
        .map_err(|e| dial_error(&e))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return send(TokioIo::new(stream), req)
            .await
            .map_err(|e| dial_error(&e));
    };
    // `host:port` or `[v6]:port` → the name the certificate must carry.
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| dial_error(&e))?;
    let stream = tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(server_name, stream),
    )
    .await
    .map_err(|_| dial_error(&"TLS handshake timed out"))?
    .map_err(|e| dial_error(&e))?;
    send(TokioIo::new(stream), req)
        .await
        .map_err(|e| dial_error(&e))
}

/// One HTTP/1.1 exchange on `io`, the connection driven (upgrades included) by its own task.
pub(crate) async fn send<IO>(
    io: IO,
    req: Request<Body>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node agent connection ended");
        }
    });
    sender.send_request(req).await
}

/// Upstream's `GenericHttpResponseChecker`: a node agent's error body (plain text, at most
/// 50 000 bytes read) becomes the message of a `Status` with the same code.
async fn node_error(
    code: StatusCode,
    body: hyper::body::Incoming,
    resource: &str,
    name: &str,
) -> ApiError {
    use futures::StreamExt;
    const MAX_READ: usize = 50_000;
    let mut text = Vec::new();
    let mut stream = Body::new(body).into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        text.extend_from_slice(&chunk);
        if text.len() >= MAX_READ {
            text.truncate(MAX_READ);
            break;
        }
    }
    let text = String::from_utf8_lossy(&text).trim_end().to_string();
    match code {
        StatusCode::BAD_REQUEST => ApiError::bad_request(text),
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::internal(format!("Internal error occurred: {text}"))
        }
        _ => {
            let mut s = status::bad_request(&text);
            s.code = Some(i32::from(code.as_u16()));
            s.reason = Some(
                match code {
                    StatusCode::NOT_FOUND => "NotFound",
                    StatusCode::UNAUTHORIZED => "Unauthorized",
                    StatusCode::FORBIDDEN => "Forbidden",
                    StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                    _ => "",
                }
                .to_string(),
            );
            if text.is_empty() {
                s.message = Some(format!(
                    "the server responded with the status code {} but did not return more information ({resource} {name})",
                    code.as_u16()
                ));
            }
            ApiError::new(s)
        }
    }
}

/// Whether `sub` of `res` is one of the upgrade-based subresources [`pod_stream`] serves.
pub fn is_pod_stream(res: &Resource, sub: &str) -> bool {
    res.info.group.is_empty()
        && res.info.plural == "pods"
        && matches!(sub, "exec" | "attach" | "portforward")
}

/// Request headers not forwarded to the node agent: the hop's own framing, and the client's
/// credentials, which are for this server only.
pub(crate) const NOT_FORWARDED: &[header::HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::AUTHORIZATION,
    header::COOKIE,
];

/// Every query parameter in order, repeats included (exec's `command`).
fn raw_params(
    parts: &axum::http::request::Parts,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
}

/// `GET|POST pods/{name}/exec|attach|portforward`: an upgrade request (WebSocket or SPDY)
/// forwarded to the node agent with the client's upgrade headers; after its `101` the two
/// connections are spliced byte for byte. Any other answer becomes a `Status` with its code,
/// which to kubectl is an upgrade failure: it then retries over SPDY.
pub async fn pod_stream(
    state: &State,
    res: &Resource,
    name: &str,
    sub: &str,
    q: &Query,
    parts: &mut axum::http::request::Parts,
) -> Result<Response, ApiError> {
    if !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::POST
    ) {
        let mut s =
            status::bad_request("the server does not allow this method on the requested resource");
        s.code = Some(405);
        s.reason = Some("MethodNotAllowed".into());
        return Err(ApiError::new(s));
    }
    let namespace = res.namespace.clone().ok_or_else(ApiError::not_found_path)?;
    let pod = state.registry.get(res, name).await?;
    let path = if sub == "portforward" {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (_, p) in raw_params(parts).filter(|(k, _)| k == "ports") {
                query.append_pair("ports", &p);
            }
            query.finish()
        };
        format!(
            "/portForward/{}/{}{}{query}",
            segment(&namespace),
            segment(name),
            if query.is_empty() { "" } else { "?" }
        )
    } else {
        let container = pick_container(&pod, name, q.non_empty("container"))?;
        let (stdin, stdout, stderr, tty) = (
            q.flag("stdin"),
            q.flag("stdout"),
            q.flag("stderr"),
            q.flag("tty"),
        );
        if !stdin && !stdout && !stderr {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        // kubelet's parameter names, as upstream's `streamLocation` writes them.
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (on, key) in [
                (stdin, "input"),
                (stdout, "output"),
                (stderr, "error"),
                (tty, "tty"),
            ] {
                if on {
                    query.append_pair(key, "1");
                }
            }
            if sub == "exec" {
                for (_, c) in raw_params(parts).filter(|(k, _)| k == "command") {
                    query.append_pair("command", &c);
                }
            }
            query.finish()
        };
        format!(
            "/{sub}/{}/{}/{}?{query}",
            segment(&namespace),
            segment(name),
            segment(&container)
        )
    };
    let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let endpoint = node_endpoint(state, node).await?;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .body(Body::empty())
        .map_err(ApiError::internal)?;
    for (k, v) in &parts.headers {
        if !NOT_FORWARDED.contains(k) {
            req.headers_mut().append(k.clone(), v.clone());
        }
    }
    let mut resp = forward(kubelet_tls(state), &endpoint, node, Ok(req)).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Err(node_error(parts.status, body, &format!("pods/{sub}"), name).await);
    }
    let Some(client_upgrade) = client_upgrade else {
        return Err(ApiError::bad_request(format!(
            "{sub} needs a connection upgrade (WebSocket or SPDY/3.1), which this request cannot make"
        )));
    };
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        out.headers_mut().append(k.clone(), v.clone());
    }
    let node_upgrade = hyper::upgrade::on(&mut resp);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        match tokio::join!(client_upgrade, node_upgrade) {
            (Ok(client), Ok(node)) => {
                // Sessions end with the server (upgraded connections are outside its
                // graceful shutdown otherwise).
                let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut node) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            (c, n) => tracing::debug!(
                client = c.is_ok(),
                node = n.is_ok(),
                "a side of the stream did not upgrade"
            ),
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_defaulting_like_upstream() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
        let two = json!({"spec": {"initContainers": [{"name": "i"}],
                                  "containers": [{"name": "a"}, {"name": "b"}]}});
        let e = pick_container(&two, "p", None).unwrap_err();
        assert_eq!(
            e.0.message.as_deref(),
            Some("a container name must be specified for pod p, choose one of: [i a b]")
        );
        assert_eq!(e.code(), 400);
        assert_eq!(pick_container(&two, "p", Some("i")).unwrap(), "i");
        let e = pick_container(&two, "p", Some("c")).unwrap_err();
        assert_eq!(
            e.0.message.as_deref(),
            Some("container c is not valid for pod p")
        );
        let mut annotated = two.clone();
        annotated["metadata"] =
            json!({"annotations": {"kubectl.kubernetes.io/default-container": "b"}});
        assert_eq!(pick_container(&annotated, "p", None).unwrap(), "b");
    }

    #[test]
    fn log_options_validated_like_upstream() {
        let ok = Query::parse(Some("tailLines=2&limitBytes=5&sinceSeconds=3&follow=true"));
        assert!(validate_log_options("p", &ok).is_ok());
        let e = validate_log_options("p", &Query::parse(Some("tailLines=-1"))).unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.0.message.as_deref(),
            Some("PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0")
        );
        let e = validate_log_options("p", &Query::parse(Some("tailLines=x"))).unwrap_err();
        assert_eq!(e.code(), 400);
        let both = Query::parse(Some("sinceSeconds=1&sinceTime=2026-11-29T03:00:00Z"));
        assert_eq!(validate_log_options("p", &both).unwrap_err().code(), 422);
    }
}
