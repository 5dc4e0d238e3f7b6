//! The `proxy` subresources, as kube-apiserver serves them: `pods/proxy`
//! (`/api/v1/namespaces/<ns>/pods/[<scheme>:]<name>[:<port>]/proxy/<path>`), `services/proxy`
//! (a ready endpoint of the Service) and `nodes/proxy` (the node agent, or another port of the
//! node). The rest of the path, the query, the method, the headers (but the client's
//! credentials and hop-by-hop ones) and the body are forwarded; the backend's answer is
//! streamed back as it is. Authorization happened in the guard, on the `proxy` subresource of
//! the named object (`get` for GET/HEAD, `create` for POST, …), as upstream.
//!
//! Where upstream's `IsProxyableIP` refuses a target (loopback, link-local, unspecified,
//! multicast), so does a secure server; a plain-HTTP server (loopback only, tests, `--port`)
//! allows loopback targets, since only local callers can reach it anyway.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::error::ApiError;
use crate::resource::Resource;
use crate::State;

/// How long to wait for the backend to accept a connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The methods upstream's proxy REST handlers accept.
const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a proxy path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    /// `pods`, `services` or `nodes`.
    pub plural: &'static str,
    pub namespace: Option<String>,
    /// The `[<scheme>:]<name>[:<port>]` segment as sent.
    pub id: String,
    /// The rest of the path after `/proxy`, raw (percent-encoding kept): empty or `/...`.
    pub rest: String,
}

impl ProxyPath {
    /// Recognises `/api/v1/namespaces/<ns>/{pods,services}/<id>/proxy[/...]` and
    /// `/api/v1/nodes/<id>/proxy[/...]`; anything else is not a proxy path.
    pub fn parse(path: &str) -> Option<ProxyPath> {
        let segs: Vec<&str> = path.split('/').collect();
        // ["", "api", "v1", ...]
        let (plural, namespace, id, consumed) = match segs.as_slice() {
            ["", "api", "v1", "namespaces", ns, kind @ ("pods" | "services"), id, "proxy", ..] => {
                let plural = if *kind == "pods" { "pods" } else { "services" };
                (plural, Some((*ns).to_string()), *id, 8)
            }
            ["", "api", "v1", "nodes", id, "proxy", ..] => ("nodes", None, *id, 6),
            _ => return None,
        };
        if id.is_empty() || namespace.as_deref() == Some("") {
            return None;
        }
        let prefix_len: usize = segs[..consumed].iter().map(|s| s.len() + 1).sum::<usize>() - 1;
        Some(ProxyPath {
            plural,
            namespace,
            id: id.to_string(),
            rest: path[prefix_len..].to_string(),
        })
    }
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, the scheme
/// `http`, `https` or empty.
fn split_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// Where a proxied request goes.
struct Location {
    https: bool,
    /// `host:port`.
    authority: String,
    /// Dial the node agent with the kubelet client credentials (`nodes/proxy` to its port).
    kubelet: Option<String>,
}

fn authority(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Upstream's `IsProxyableIP`, loopback allowed on a plain-HTTP (loopback-only) server.
fn proxyable(state: &State, ip: &str) -> Result<(), ApiError> {
    let not_allowed = || ApiError::bad_request("address not allowed");
    let ip: IpAddr = ip.parse().map_err(|_| not_allowed())?;
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_unspecified()
        || ip.is_multicast()
        || link_local
        || (ip.is_loopback() && state.security.is_some())
    {
        return Err(not_allowed());
    }
    Ok(())
}

fn core(plural: &str, namespace: Option<&str>) -> Result<Resource, ApiError> {
    Resource::builtin("", plural, namespace)
}

/// `pods/proxy`: the pod's IP and the named port, else its first declared container port,
/// else the scheme's default.
async fn pod_location(state: &State, ns: &str, id: &str) -> Result<Location, ApiError> {
    let (scheme, name, port) =
        split_id(id).ok_or_else(|| ApiError::bad_request(format!("invalid pod request {id:?}")))?;
    let pod = state.registry.get(&core("pods", Some(ns))?, name).await?;
    let mut port = port.to_string();
    if port.is_empty() {
        if let Some(p) = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| c.pointer("/ports/0/containerPort")?.as_i64())
        {
            port = p.to_string();
        }
    }
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    proxyable(state, ip)?;
    let https = scheme == "https";
    if port.is_empty() {
        port = if https { "443" } else { "80" }.to_string();
    }
    Ok(Location {
        https,
        authority: authority(ip, &port),
        kubelet: None,
    })
}

/// Whether an endpoint address stands for a pod that has that IP (upstream's
/// `isValidAddress`: addresses without a pod reference are skipped).
async fn valid_address(state: &State, ns: &str, ip: &str, target: Option<&Value>) -> bool {
    let Some(target) = target else {
        return false;
    };
    if target.get("kind").and_then(Value::as_str) != Some("Pod") {
        return false;
    }
    let pod_ns = target
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(ns);
    let Some(name) = target.get("name").and_then(Value::as_str) else {
        return false;
    };
    let Ok(res) = core("pods", Some(pod_ns)) else {
        return false;
    };
    let Ok(pod) = state.registry.get(&res, name).await else {
        return false;
    };
    pod.pointer("/status/podIP").and_then(Value::as_str) == Some(ip)
        || pod
            .pointer("/status/podIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("ip").and_then(Value::as_str) == Some(ip))
}

/// `(ip, port, targetRef)` of every ready endpoint of the Service serving the port named
/// `port_name`: from its Endpoints (upstream), else from its EndpointSlices.
async fn ready_endpoints(
    state: &State,
    ns: &str,
    svc: &str,
    port_name: &str,
) -> Result<Vec<(String, i64, Option<Value>)>, ApiError> {
    let mut out = Vec::new();
    match state.registry.get(&core("endpoints", Some(ns))?, svc).await {
        Ok(eps) => {
            if eps
                .get("subsets")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return Err(ApiError::service_unavailable(format!(
                    "no endpoints available for service \"{svc}\""
                )));
            }
            for subset in eps
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(port) = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
                    .and_then(|p| p.get("port")?.as_i64())
                else {
                    continue;
                };
                for addr in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(ip) = addr.get("ip").and_then(Value::as_str) {
                        out.push((ip.to_string(), port, addr.get("targetRef").cloned()));
                    }
                }
            }
            return Ok(out);
        }
        Err(e) if e.code() == 404 => {}
        Err(e) => return Err(e),
    }
    let prefix = api_types::resources::find("discovery.k8s.io", "v1", "endpointslices")
        .map(|i| i.namespace_prefix(ns))
        .ok_or_else(|| ApiError::internal("endpointslices missing from the resource table"))?;
    let (objects, _) = state.cache.list(&prefix);
    for obj in objects {
        let Ok(slice) = serde_json::from_slice::<Value>(&obj.json) else {
            continue;
        };
        if obj
            .labels
            .get("kubernetes.io/service-name")
            .map(String::as_str)
            != Some(svc)
        {
            continue;
        }
        let Some(port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port")?.as_i64())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            for ip in ep
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                out.push((ip.to_string(), port, ep.get("targetRef").cloned()));
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::service_unavailable(format!(
            "no endpoints available for service \"{svc}\""
        )));
    }
    Ok(out)
}

/// `services/proxy`: a port number is mapped to the Service port's name, then a ready
/// endpoint serving that port is picked (the first valid one from a random start, as
/// upstream picks at random).
async fn service_location(state: &State, ns: &str, id: &str) -> Result<Location, ApiError> {
    let (scheme, name, port) = split_id(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid service request {id:?}")))?;
    let mut port_name = port.to_string();
    if let Ok(number) = port.parse::<i64>() {
        let svc = state
            .registry
            .get(&core("services", Some(ns))?, name)
            .await?;
        port_name = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("port").and_then(Value::as_i64) == Some(number))
            .map(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .ok_or_else(|| {
                ApiError::service_unavailable(format!(
                    "no service port {number} found for service \"{name}\""
                ))
            })?;
    }
    let candidates = ready_endpoints(state, ns, name, &port_name).await?;
    let start = if candidates.is_empty() {
        0
    } else {
        usize::from(uuid::Uuid::new_v4().as_bytes()[0]) % candidates.len()
    };
    for i in 0..candidates.len() {
        let (ip, port, target) = &candidates[(start + i) % candidates.len()];
        if !valid_address(state, ns, ip, target.as_ref()).await || proxyable(state, ip).is_err() {
            tracing::debug!(service = %name, %ip, "endpoint address skipped");
            continue;
        }
        return Ok(Location {
            https: scheme == "https",
            authority: authority(ip, &port.to_string()),
            kubelet: None,
        });
    }
    Err(ApiError::service_unavailable(format!(
        "no endpoints available for service \"{id}\""
    )))
}

/// `nodes/proxy`: the node agent (with the kubelet client credentials) when no port or its
/// port is named, else that port of the node's address.
async fn node_location(state: &State, id: &str) -> Result<Location, ApiError> {
    let (scheme, name, port) = split_id(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    // 404 for an unknown node before anything about its endpoint.
    state.registry.get(&core("nodes", None)?, name).await?;
    let endpoint = crate::proxy::node_endpoint(state, name).await?;
    let (host, agent_port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| ApiError::internal("node endpoint without a port"))?;
    if port.is_empty() || port == agent_port {
        return Ok(Location {
            https: crate::proxy::kubelet_tls(state).is_some(),
            authority: endpoint.clone(),
            kubelet: Some(name.to_string()),
        });
    }
    Ok(Location {
        https: scheme == "https",
        authority: format!("{host}:{port}"),
        kubelet: None,
    })
}

/// TLS to pods and services: upstream's proxy transport does not verify their certificates
/// (they are not issued for the pod IP); the client's credentials are never forwarded.
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, ApiError> {
    pki::insecure_client_config().map_err(ApiError::internal)
}

/// One exchange with a pod or service backend on a fresh connection.
async fn dial(
    loc: &Location,
    req: Request<Body>,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    // Upstream's proxy error responder: 503 "error trying to reach service: <why>".
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!("error trying to reach service: {e}"))
    };
    let stream = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(&loc.authority))
        .await
        .map_err(|_| unreachable(&format!("dial tcp {}: i/o timeout", loc.authority)))?
        .map_err(|e| unreachable(&format!("dial tcp {}: {e}", loc.authority)))?;
    let _ = stream.set_nodelay(true);
    if !loc.https {
        return crate::proxy::send(TokioIo::new(stream), req)
            .await
            .map_err(|e| unreachable(&e));
    }
    let host = loc
        .authority
        .rsplit_once(':')
        .map_or(loc.authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| unreachable(&e))?;
    let tls = tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_rustls::TlsConnector::from(insecure_tls()?).connect(name, stream),
    )
    .await
    .map_err(|_| unreachable(&"TLS handshake timeout"))?
    .map_err(|e| unreachable(&e))?;
    crate::proxy::send(TokioIo::new(tls), req)
        .await
        .map_err(|e| unreachable(&e))
}

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Serves one proxy request.
pub async fn serve(
    state: &State,
    target: ProxyPath,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    use tracing::Instrument as _;
    let span = tracing::debug_span!(
        "proxy",
        resource = target.plural,
        namespace = target.namespace.as_deref().unwrap_or(""),
        id = %target.id
    );
    proxy(state, target, parts, body).instrument(span).await
}

async fn proxy(
    state: &State,
    target: ProxyPath,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    if !METHODS.contains(&parts.method) {
        let mut s = api_types::status::bad_request(
            "the server does not allow this method on the requested resource",
        );
        s.code = Some(405);
        s.reason = Some("MethodNotAllowed".into());
        return Err(ApiError::new(s));
    }
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let ns = target.namespace.clone().unwrap_or_default();
    let loc = match target.plural {
        "pods" => pod_location(state, &ns, &target.id).await?,
        "services" => service_location(state, &ns, &target.id).await?,
        _ => node_location(state, &target.id).await?,
    };
    // Upstream redirects an empty path to the same one with a trailing slash (issue 4958).
    if target.rest.is_empty() {
        let location = format!("{}/{query}", parts.uri.path());
        let location = HeaderValue::from_str(&location).map_err(ApiError::internal)?;
        return Ok((
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, location)],
        )
            .into_response());
    }
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{query}", target.rest))
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("invalid proxy path: {e}")))?;
    for (k, v) in &parts.headers {
        if !crate::proxy::NOT_FORWARDED.contains(k) && !hop_by_hop(k) {
            req.headers_mut().append(k.clone(), v.clone());
        }
    }
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, len.clone());
    }
    let host = HeaderValue::from_str(&loc.authority).map_err(ApiError::internal)?;
    req.headers_mut().insert(header::HOST, host);
    let resp = match &loc.kubelet {
        Some(node) => {
            crate::proxy::forward(
                crate::proxy::kubelet_tls(state),
                &loc.authority,
                node,
                Ok(req),
            )
            .await?
        }
        None => dial(&loc, req).await?,
    };
    let (mut head, incoming) = resp.into_parts();
    let drop_headers: Vec<HeaderName> = head
        .headers
        .keys()
        .filter(|k| hop_by_hop(k))
        .cloned()
        .collect();
    for k in drop_headers {
        head.headers.remove(&k);
    }
    // A long response ends with the server, like a log follow.
    let stream = futures::StreamExt::take_until(
        Body::new(incoming).into_data_stream(),
        state.shutdown.clone().cancelled_owned(),
    );
    Ok(Response::from_parts(head, Body::from_stream(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths() {
        let p =
            ProxyPath::parse("/api/v1/namespaces/d/services/https:web:443/proxy/a/b%20c/").unwrap();
        assert_eq!(
            (
                p.plural,
                p.namespace.as_deref(),
                p.id.as_str(),
                p.rest.as_str()
            ),
            ("services", Some("d"), "https:web:443", "/a/b%20c/")
        );
        let p = ProxyPath::parse("/api/v1/nodes/n1:10250/proxy").unwrap();
        assert_eq!(
            (p.plural, p.id.as_str(), p.rest.as_str()),
            ("nodes", "n1:10250", "")
        );
        let p = ProxyPath::parse("/api/v1/namespaces/d/pods/p/proxy/").unwrap();
        assert_eq!(p.rest, "/");
        assert!(ProxyPath::parse("/api/v1/namespaces/d/pods/p/log").is_none());
        assert!(ProxyPath::parse("/api/v1/namespaces/d/configmaps/c/proxy/").is_none());
    }

    #[test]
    fn ids_split_like_upstream() {
        assert_eq!(split_id("web"), Some(("", "web", "")));
        assert_eq!(split_id("web:http"), Some(("", "web", "http")));
        assert_eq!(split_id("https:web:443"), Some(("https", "web", "443")));
        assert_eq!(split_id("ftp:web:21"), None);
        assert_eq!(split_id(":80"), None);
        assert_eq!(split_id("a:b:c:d"), None);
    }
}
