//! Who may use the streaming API, decided as kubelet decides it with
//! `authentication.x509.clientCAFile`, `authentication.webhook.enabled` and
//! `authorization.mode: Webhook` (anonymous access off):
//!
//! - authentication: a client certificate that verifies against the client CA names the user
//!   (CN) and groups (O's); otherwise an `Authorization: Bearer` token is sent to the API
//!   server as a TokenReview; otherwise (or if either fails) the answer is `401 Unauthorized`;
//! - authorization: a SubjectAccessReview for that user on the Node object, with kubelet's
//!   attributes (`nodes/proxy` by default; `nodes/stats`, `nodes/metrics`, `nodes/log` for
//!   paths under `/stats`, `/metrics`, `/logs`; the verb from the HTTP method); a denial is
//!   `403` with kubelet's wording. Decisions are cached like kubelet's defaults: 5 minutes
//!   when allowed, 30 seconds when denied.
//!
//! The API server reaches this with its kubelet client certificate (`system:masters`), so only
//! it and users whom RBAC grants `nodes/proxy` can exec into pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use super::text;

/// How long an allowed decision is reused (kubelet's `cacheAuthorizedTTL` default).
const ALLOWED_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a denial is reused (kubelet's `cacheUnauthorizedTTL` default).
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Past this many cached decisions, expired ones are dropped, and if that is not enough the
/// cache starts over: a flood of distinct users must not grow it without bound.
const CACHE_LIMIT: usize = 4096;
/// A TokenReview or SubjectAccessReview that takes longer fails the request.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain the client presented in the TLS handshake (leaf first), unverified:
/// [`guard`] verifies it.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request asks for, in kubelet's terms (always resource `nodes`, named after this
/// node, in the core group).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// kubelet's verb for an HTTP method; methods it does not map get an empty verb (which no
/// rule grants, except `*`).
fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// Whether `path` is `prefix` or below it (`/stats` and `/stats/summary`, not `/statsx`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// kubelet's request attributes: subresource `proxy` unless the path is under `/stats`,
/// `/metrics` or `/logs`.
pub fn attributes(method: &Method, path: &str) -> Attributes {
    let subresource = if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        "log"
    } else {
        "proxy"
    };
    Attributes {
        verb: verb(method),
        subresource,
    }
}

/// kubelet's 403 body.
pub fn forbidden_message(user: &str, attrs: &Attributes) -> String {
    format!(
        "Forbidden (user={user}, verb={}, resource=nodes, subresource(s)=[{}])",
        attrs.verb, attrs.subresource
    )
}

/// The authenticator and authorizer of one node's streaming API.
pub struct Auth {
    verifier: pki::ClientCertVerifier,
    client: kube::Client,
    node: String,
    decisions: Mutex<HashMap<(User, Attributes), (bool, Instant)>>,
}

/// Why a request was not let through.
enum Refusal {
    Unauthenticated(String),
    Forbidden(String),
    Error(String),
}

impl Auth {
    /// Trusts client certificates from `client_ca_pem`; reviews tokens and access through
    /// `client` (the node's own API credentials) for node `node`.
    pub fn new(client_ca_pem: &str, client: kube::Client, node: &str) -> Result<Auth, pki::Error> {
        Ok(Auth {
            verifier: pki::ClientCertVerifier::new(client_ca_pem)?,
            client,
            node: node.to_string(),
            decisions: Mutex::new(HashMap::new()),
        })
    }

    async fn authenticate(
        &self,
        peer: Option<&PeerCertificates>,
        authorization: Option<&str>,
    ) -> Result<User, Refusal> {
        let mut why = Vec::new();
        if let Some(peer) = peer {
            match self.verifier.verify(&peer.0, SystemTime::now()) {
                Ok(id) => {
                    return Ok(User {
                        name: id.common_name,
                        uid: String::new(),
                        groups: id.organizations,
                        extra: BTreeMap::new(),
                    })
                }
                Err(e) => why.push(format!("client certificate: {e}")),
            }
        }
        let token = authorization
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            match self.review_token(token).await {
                Ok(user) => return Ok(user),
                Err(e) => why.push(format!("token: {e}")),
            }
        }
        if why.is_empty() {
            why.push("no client certificate or bearer token".into());
        }
        Err(Refusal::Unauthenticated(why.join("; ")))
    }

    async fn review_token(&self, token: &str) -> Result<User, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "TokenReview timed out".to_string())?
                .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = done.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(status
                .error
                .unwrap_or_else(|| "the token was not accepted".into()));
        }
        let info = status.user.unwrap_or_default();
        let name = info.username.unwrap_or_default();
        if name.is_empty() {
            return Err("the TokenReview named no user".into());
        }
        Ok(User {
            name,
            uid: info.uid.unwrap_or_default(),
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default().into_iter().collect(),
        })
    }

    async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), Refusal> {
        let key = (user.clone(), attrs.clone());
        let now = Instant::now();
        if let Some(&(allowed, at)) = self.decisions.lock().get(&key) {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if now.duration_since(at) < ttl {
                return if allowed {
                    Ok(())
                } else {
                    Err(Refusal::Forbidden(forbidden_message(&user.name, attrs)))
                };
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let error = |e: &dyn std::fmt::Display| {
            tracing::warn!(user = %user.name, error = %e, "SubjectAccessReview failed");
            Refusal::Error(format!(
                "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                user.name, attrs.verb, attrs.subresource
            ))
        };
        let done =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| error(&"timed out"))?
                .map_err(|e| error(&e))?;
        let allowed = done
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        {
            let mut cache = self.decisions.lock();
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, &mut (allowed, at)| {
                    now.duration_since(at) < if allowed { ALLOWED_TTL } else { DENIED_TTL }
                });
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(key, (allowed, now));
        }
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden(forbidden_message(&user.name, attrs)))
        }
    }
}

/// Middleware: every request is authenticated and authorized before it reaches a handler.
pub async fn guard(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerCertificates>();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let attrs = attributes(req.method(), req.uri().path());
    let outcome = match auth.authenticate(peer, authorization).await {
        Ok(user) => auth.authorize(&user, &attrs).await.map(|()| user),
        Err(r) => Err(r),
    };
    match outcome {
        Ok(user) => {
            tracing::debug!(user = %user.name, verb = attrs.verb, subresource = attrs.subresource, path = %req.uri().path(), "streaming API request");
            next.run(req).await
        }
        Err(Refusal::Unauthenticated(why)) => {
            tracing::debug!(path = %req.uri().path(), %why, "unauthenticated streaming API request");
            text(StatusCode::UNAUTHORIZED, "Unauthorized")
        }
        Err(Refusal::Forbidden(msg)) => {
            tracing::debug!(path = %req.uri().path(), "{msg}");
            text(StatusCode::FORBIDDEN, msg)
        }
        Err(Refusal::Error(msg)) => text(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_like_kubelet() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/exec/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/portForward/ns/p"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/healthz"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/stats"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/statsx"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/"), ("get", "log"));
        assert_eq!(a(Method::PUT, "/x"), ("update", "proxy"));
        assert_eq!(a(Method::PATCH, "/x"), ("patch", "proxy"));
        assert_eq!(a(Method::DELETE, "/x"), ("delete", "proxy"));
        assert_eq!(a(Method::OPTIONS, "/x"), ("", "proxy"));
        assert_eq!(
            forbidden_message("bob", &attributes(&Method::POST, "/exec/a/b/c")),
            "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])"
        );
    }
}
