//! The request chain in front of the registry: authenticate → authorize (→ admission, in the
//! registry). With no [`SecurityConfig`] the server runs as it did before issue 7 — plain HTTP
//! on loopback, every caller treated as an administrator — which only tests and an explicit
//! `--insecure-serving` ask for.

pub mod admission;
pub mod attributes;
pub mod audit;
pub mod authn;
mod impersonation;
mod policy;
pub mod reviews;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use authz::{names, Attributes, Decision, UserInfo};
use axum::extract::{Request, State as AxumState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;

use crate::error::ApiError;
use crate::State;

/// How requests are authorized, in the order given (`--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    AlwaysAllow,
    Node,
    Rbac,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(Self::AlwaysAllow),
            "Node" => Ok(Self::Node),
            "RBAC" => Ok(Self::Rbac),
            other => Err(format!(
                "authorization mode {other:?} is not supported (want AlwaysAllow, Node or RBAC)"
            )),
        }
    }
}

/// Everything the secure port needs (upstream's flags of the same names in comments).
#[derive(Clone)]
pub struct SecurityConfig {
    /// `--tls-cert-file` / `--tls-private-key-file`, as PEM.
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// `--client-ca-file`.
    pub client_ca_pem: String,
    /// `--token-auth-file`.
    pub token_auth_file: Option<PathBuf>,
    /// `--service-account-signing-key-file` (signs TokenRequests); `None` disables issuing.
    pub service_account_signing_key_pem: Option<String>,
    /// `--service-account-key-file` (verifies ServiceAccount tokens).
    pub service_account_public_pems: Vec<String>,
    /// `--service-account-issuer`.
    pub service_account_issuer: String,
    /// `--api-audiences` (default: the issuer).
    pub api_audiences: Vec<String>,
    /// `--authorization-mode`.
    pub authorization_modes: Vec<AuthorizationMode>,
    /// `--anonymous-auth`: unauthenticated requests may reach the health and version
    /// endpoints (and nothing else, whatever RBAC says).
    pub anonymous_auth: bool,
    /// Whether the ServiceAccount admission adds the projected `kube-api-access-*` volume
    /// (it always sets `serviceAccountName` and checks the account exists); on by default,
    /// off for clusters whose node agents cannot project tokens.
    pub mount_service_account_tokens: bool,
    /// `--kubelet-client-certificate` / `--kubelet-client-key`: presented to node agents when
    /// proxying logs, exec, attach and port-forward. With it, node agents are dialled over
    /// HTTPS; without it, over plain HTTP (agents serving on loopback without TLS).
    pub kubelet_client: Option<pki::CertKey>,
    /// `--kubelet-certificate-authority`: verifies node agents' serving certificates
    /// (default: `client_ca_pem`, the cluster CA that issues them).
    pub kubelet_ca_pem: Option<String>,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("SecurityConfig")
            .field("token_auth_file", &self.token_auth_file)
            .field("service_account_issuer", &self.service_account_issuer)
            .field("authorization_modes", &self.authorization_modes)
            .field("anonymous_auth", &self.anonymous_auth)
            .finish_non_exhaustive()
    }
}

/// Paths anonymous callers may reach (upstream 1.32's anonymous-endpoints configuration).
const ANONYMOUS_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// The security state shared by every request.
pub struct Security {
    pub authenticator: authn::Authenticator,
    pub modes: Vec<AuthorizationMode>,
    pub anonymous_auth: bool,
    pub rbac: Arc<RwLock<authz::rbac::RbacIndex>>,
    pub nodes: Arc<RwLock<authz::node::NodeGraph>>,
    pub signer: Option<pki::TokenSigner>,
    pub issuer: String,
    pub api_audiences: Vec<String>,
    pub tls: Arc<rustls::ServerConfig>,
    pub client_ca_pem: String,
    pub mount_service_account_tokens: bool,
    /// How to dial node agents over TLS (from `kubelet_client` and `kubelet_ca_pem`);
    /// `None` dials them over plain HTTP.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why the security configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Load(#[from] authn::LoadError),
    #[error("{0}")]
    Pki(#[from] pki::Error),
}

impl Security {
    pub fn new(config: &SecurityConfig) -> Result<Self, SetupError> {
        let static_tokens = match &config.token_auth_file {
            Some(path) => authn::load_token_file(path)?,
            None => Default::default(),
        };
        let service_accounts = if config.service_account_public_pems.is_empty() {
            None
        } else {
            let pems: Vec<&str> = config
                .service_account_public_pems
                .iter()
                .map(String::as_str)
                .collect();
            Some(authn::ServiceAccounts {
                verifier: pki::TokenVerifier::from_public_pems(&pems)?,
                issuer: config.service_account_issuer.clone(),
                audiences: audiences(config),
            })
        };
        Ok(Security {
            authenticator: authn::Authenticator {
                client_certs: pki::ClientCertVerifier::new(&config.client_ca_pem)?,
                static_tokens,
                service_accounts,
            },
            modes: config.authorization_modes.clone(),
            anonymous_auth: config.anonymous_auth,
            rbac: Default::default(),
            nodes: Default::default(),
            signer: config
                .service_account_signing_key_pem
                .as_deref()
                .map(pki::TokenSigner::from_pem)
                .transpose()?,
            issuer: config.service_account_issuer.clone(),
            api_audiences: audiences(config),
            tls: pki::server_config(&config.serving_cert_pem, &config.serving_key_pem)?,
            client_ca_pem: config.client_ca_pem.clone(),
            mount_service_account_tokens: config.mount_service_account_tokens,
            kubelet_tls: config
                .kubelet_client
                .as_ref()
                .map(|client| {
                    let ca = config
                        .kubelet_ca_pem
                        .as_ref()
                        .unwrap_or(&config.client_ca_pem);
                    pki::client_config(ca, Some(client))
                })
                .transpose()?,
        })
    }

    /// The authorizer chain: `system:masters` always (upstream's privileged-group
    /// short-circuit), then each mode in order; the first Allow or Deny wins.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.in_group(names::SYSTEM_MASTERS) {
            return Decision::Allow(String::new());
        }
        for mode in &self.modes {
            let decision = match mode {
                AuthorizationMode::AlwaysAllow => Decision::Allow(String::new()),
                AuthorizationMode::Node => authz::node::authorize_node(attrs, &self.nodes.read()),
                AuthorizationMode::Rbac => self.rbac.read().authorize(attrs),
            };
            if !matches!(decision, Decision::NoOpinion(_)) {
                return decision;
            }
        }
        Decision::NoOpinion(String::new())
    }
}

fn audiences(config: &SecurityConfig) -> Vec<String> {
    if config.api_audiences.is_empty() {
        vec![config.service_account_issuer.clone()]
    } else {
        config.api_audiences.clone()
    }
}

/// The caller of a server without security: an administrator, as the old insecure port was.
pub fn insecure_user() -> UserInfo {
    UserInfo {
        username: "system:unsecured".into(),
        groups: vec![names::SYSTEM_MASTERS.into(), names::AUTHENTICATED.into()],
        ..Default::default()
    }
}

/// Starts what keeps the authorizers' indexes current and reconciles the default policy.
pub async fn start(state: &Arc<State>) -> Result<(), String> {
    state.registry.set_admission(Arc::new(admission::Chain {
        security: state.security.clone(),
        cache: state.cache.clone(),
    }));
    if state.security.is_some() {
        policy::start(state).await?;
    }
    Ok(())
}

/// Middleware: authenticates, authorizes and audits every request; the user travels on as a
/// request extension (reviews) and as the task-local [`admission::REQUEST_USER`] (admission).
pub async fn guard(AxumState(state): AxumState<Arc<State>>, req: Request, next: Next) -> Response {
    let Some(security) = &state.security else {
        let user = insecure_user();
        let attrs = attributes::of_request(user, req.method(), req.uri().path(), req.uri().query());
        return serve(&state, attrs, ("allow", ""), req, next).await;
    };
    let peer = req.extensions().get::<tls::PeerCertificates>().cloned();
    let user = match security
        .authenticator
        .authenticate(&state, req.headers(), peer.as_ref())
        .await
    {
        authn::Outcome::User(user) => user,
        authn::Outcome::Anonymous
            if security.anonymous_auth && ANONYMOUS_PATHS.contains(&req.uri().path()) =>
        {
            authn::anonymous()
        }
        authn::Outcome::Anonymous => return unauthorized(),
        authn::Outcome::Rejected(why) => {
            tracing::debug!(path = %req.uri().path(), %why, "authentication failed");
            return unauthorized();
        }
    };
    let user = match impersonation::resolve(security, &user, req.headers()) {
        Ok(None) => user,
        Ok(Some(impersonated)) => impersonated,
        Err(impersonation::Refusal::Forbidden(attrs)) => {
            return forbidden(&attrs, "").into_response();
        }
        Err(impersonation::Refusal::BadRequest(message)) => {
            return ApiError::bad_request(message).into_response();
        }
    };
    let attrs = attributes::of_request(user, req.method(), req.uri().path(), req.uri().query());
    match security.authorize(&attrs) {
        Decision::Allow(reason) => serve(&state, attrs, ("allow", &reason), req, next).await,
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            tracing::debug!(user = %attrs.user.username, verb = %attrs.verb, path = %attrs.path, %reason, "forbidden");
            let answer = forbidden(&attrs, &reason).into_response();
            match &state.auditor {
                Some(auditor) => {
                    let (_, record) = audit::begin(auditor, &attrs, req).await;
                    match record {
                        Some(r) => {
                            audit::finish(auditor, r, &attrs, ("forbid", &reason), &[], answer)
                                .await
                        }
                        None => answer,
                    }
                }
                None => answer,
            }
        }
    }
}

/// Hands an authorized request on, with its user, under audit.
async fn serve(
    state: &State,
    attrs: Attributes,
    decision: (&str, &str),
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(attrs.user.clone());
    let Some(auditor) = &state.auditor else {
        return admission::REQUEST_USER
            .scope(attrs.user.clone(), next.run(req))
            .await;
    };
    let (req, record) = audit::begin(auditor, &attrs, req).await;
    let annotations: Arc<parking_lot::Mutex<Vec<(String, String)>>> = Default::default();
    let resp = admission::AUDIT_ANNOTATIONS
        .scope(
            annotations.clone(),
            admission::REQUEST_USER.scope(attrs.user.clone(), next.run(req)),
        )
        .await;
    let annotations = std::mem::take(&mut *annotations.lock());
    match record {
        Some(r) => audit::finish(auditor, r, &attrs, decision, &annotations, resp).await,
        None => resp,
    }
}

fn unauthorized() -> Response {
    ApiError::new(api_types::status::unauthorized()).into_response()
}

/// 403 worded as upstream: `pods is forbidden: User "u" cannot list resource "pods" in API
/// group "" in the namespace "d"[: reason]`.
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let mut message = authz::rbac::forbidden_message(attrs);
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    let (group, resource) = if attrs.resource_request {
        (attrs.api_group.as_str(), attrs.resource.as_str())
    } else {
        ("", "")
    };
    ApiError::new(api_types::status::forbidden(
        group,
        resource,
        &attrs.name,
        &message,
    ))
}

/// The default issuer (upstream's documented value for a cluster with the default domain).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl SecurityConfig {
    /// Everything from one generated cluster PKI with upstream's defaults: authorization
    /// `Node,RBAC`, anonymous access to health and version only.
    pub fn from_pki(pki: &pki::ClusterPki) -> Self {
        SecurityConfig {
            serving_cert_pem: pki.apiserver.cert_pem.clone(),
            serving_key_pem: pki.apiserver.key_pem.clone(),
            client_ca_pem: pki.ca.cert_pem().to_string(),
            token_auth_file: None,
            service_account_signing_key_pem: Some(pki.service_account_key_pem.clone()),
            service_account_public_pems: vec![pki.service_account_public_pem.clone()],
            service_account_issuer: DEFAULT_ISSUER.to_string(),
            api_audiences: Vec::new(),
            authorization_modes: vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
            anonymous_auth: true,
            mount_service_account_tokens: true,
            kubelet_client: Some(pki.kubelet_client.clone()),
            kubelet_ca_pem: Some(pki.ca.cert_pem().to_string()),
        }
    }
}
