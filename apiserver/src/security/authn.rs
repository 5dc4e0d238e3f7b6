//! Who is calling: kube-apiserver's authenticators, tried in its order — x509 client
//! certificate, then the bearer token (static token file, bootstrap token, ServiceAccount
//! JWT). A request with no credentials is anonymous, which the caller allows only for the
//! health and version endpoints.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use authz::{names, UserInfo};
use axum::http::{header, HeaderMap};
use base64::Engine;
use serde_json::Value;

use super::tls::PeerCertificates;
use crate::resource::Resource;
use crate::State;

/// Why a token or certificate file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Format {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{0}")]
    Pki(#[from] pki::Error),
}

/// The outcome of authentication for one request.
#[derive(Debug)]
pub enum Outcome {
    User(UserInfo),
    /// No credentials at all.
    Anonymous,
    /// Credentials were presented and are not valid (401).
    Rejected(String),
}

/// ServiceAccount token verification settings.
pub struct ServiceAccounts {
    pub verifier: pki::TokenVerifier,
    pub issuer: String,
    /// Audiences a token must carry one of (`--api-audiences`; default: the issuer).
    pub audiences: Vec<String>,
}

/// Every configured authenticator.
pub struct Authenticator {
    pub client_certs: pki::ClientCertVerifier,
    /// `--token-auth-file`: token → user.
    pub static_tokens: HashMap<String, UserInfo>,
    pub service_accounts: Option<ServiceAccounts>,
}

impl Authenticator {
    pub async fn authenticate(
        &self,
        state: &State,
        headers: &HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Outcome {
        let mut failure = None;
        if let Some(chain) = peer.filter(|p| !p.0.is_empty()) {
            match self.client_certs.verify(&chain.0, SystemTime::now()) {
                Ok(id) => {
                    return Outcome::User(with_authenticated(UserInfo {
                        username: id.common_name,
                        groups: id.organizations,
                        ..Default::default()
                    }))
                }
                Err(e) => failure = Some(format!("verifying certificate: {e}")),
            }
        }
        if let Some(token) = bearer_token(headers) {
            return match self.token(state, token).await {
                Ok(user) => Outcome::User(with_authenticated(user)),
                Err(e) => Outcome::Rejected(e),
            };
        }
        match failure {
            Some(e) => Outcome::Rejected(e),
            None => Outcome::Anonymous,
        }
    }

    /// A bearer token's user, or why it is not valid (for TokenReview too).
    pub async fn token(&self, state: &State, token: &str) -> Result<UserInfo, String> {
        self.token_for(state, token, None).await
    }

    /// As [`Self::token`], accepting ServiceAccount tokens for `audiences` instead of the
    /// server's own (TokenReview's `spec.audiences`).
    pub async fn token_for(
        &self,
        state: &State,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<UserInfo, String> {
        if let Some(user) = self.static_tokens.get(token) {
            return Ok(user.clone());
        }
        if let Some((id, secret)) = bootstrap_token_parts(token) {
            return bootstrap_user(state, id, secret).await;
        }
        if token.matches('.').count() == 2 {
            if let Some(sa) = &self.service_accounts {
                return service_account_user(state, sa, token, audiences).await;
            }
        }
        Err("invalid bearer token".into())
    }
}

/// Every authenticated user is also in `system:authenticated`.
pub fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if !user.in_group(names::AUTHENTICATED) {
        user.groups.push(names::AUTHENTICATED.to_string());
    }
    user
}

/// The anonymous user (`system:anonymous` in `system:unauthenticated`).
pub fn anonymous() -> UserInfo {
    UserInfo {
        username: names::ANONYMOUS.into(),
        groups: vec![names::UNAUTHENTICATED.into()],
        ..Default::default()
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads a static token file: CSV lines `token,user,uid[,"group1,group2"]` (upstream's
/// `--token-auth-file` format; blank lines and `#` comments skipped).
pub fn load_token_file(path: &Path) -> Result<HashMap<String, UserInfo>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut tokens = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| LoadError::Format {
            path: path.display().to_string(),
            line: e.position().map(|p| p.line()).unwrap_or(0),
            message: e.to_string(),
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() < 3 {
            return Err(LoadError::Format {
                path: path.display().to_string(),
                line,
                message: "want at least token,user,uid".into(),
            });
        }
        let groups = record
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        tokens.insert(
            record[0].to_string(),
            UserInfo {
                username: record[1].to_string(),
                uid: record[2].to_string(),
                groups,
                ..Default::default()
            },
        );
    }
    Ok(tokens)
}

/// `<6 chars>.<16 chars>` of `[a-z0-9]`.
fn bootstrap_token_parts(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn secret_field(secret: &Value, key: &str) -> Option<String> {
    let raw = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    String::from_utf8(bytes).ok()
}

/// A bootstrap token, checked against its Secret `kube-system/bootstrap-token-<id>`.
async fn bootstrap_user(state: &State, id: &str, secret: &str) -> Result<UserInfo, String> {
    let invalid = || "invalid bootstrap token".to_string();
    let res = resource("", "secrets", Some("kube-system"))?;
    let obj = state
        .registry
        .get(&res, &format!("bootstrap-token-{id}"))
        .await
        .map_err(|_| invalid())?;
    if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
        || secret_field(&obj, "token-id").as_deref() != Some(id)
        || secret_field(&obj, "token-secret").as_deref() != Some(secret)
        || secret_field(&obj, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return Err(invalid());
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(invalid());
    }
    if let Some(expiration) = secret_field(&obj, "expiration") {
        let expired = expiration
            .parse::<jiff::Timestamp>()
            .map(|t| t <= jiff::Timestamp::now())
            .unwrap_or(true);
        if expired {
            return Err("bootstrap token has expired".into());
        }
    }
    let mut groups = vec![names::BOOTSTRAPPERS_GROUP.to_string()];
    if let Some(extra) = secret_field(&obj, "auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(String::from),
        );
    }
    Ok(UserInfo {
        username: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    })
}

/// A ServiceAccount JWT: signature, issuer, audience and expiry, then — on every request, as
/// upstream's bound tokens — that the ServiceAccount (and the pod or Secret it is bound to)
/// still exists with the same uid, so deleting the pod revokes the token.
async fn service_account_user(
    state: &State,
    sa: &ServiceAccounts,
    token: &str,
    audiences: Option<&[String]>,
) -> Result<UserInfo, String> {
    let now = jiff::Timestamp::now().as_second();
    let audiences = audiences.unwrap_or(&sa.audiences);
    let claims = sa
        .verifier
        .verify(token, &sa.issuer, audiences, now)
        .map_err(|e| format!("invalid bearer token: {e}"))?;
    let k = claims
        .kubernetes
        .as_ref()
        .ok_or("invalid bearer token: not a ServiceAccount token")?;
    let stale =
        |what: &str| format!("invalid bearer token: {what} no longer exists or was recreated");
    let uid_of = |obj: &Value| {
        obj.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let sa_obj = state
        .registry
        .get(
            &resource("", "serviceaccounts", Some(&k.namespace))?,
            &k.serviceaccount.name,
        )
        .await
        .map_err(|_| stale("service account"))?;
    if uid_of(&sa_obj) != k.serviceaccount.uid {
        return Err(stale("service account"));
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Some(pod) = &k.pod {
        let obj = state
            .registry
            .get(&resource("", "pods", Some(&k.namespace))?, &pod.name)
            .await
            .map_err(|_| stale("pod"))?;
        if uid_of(&obj) != pod.uid || obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(stale("pod"));
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".to_string(),
            vec![pod.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".to_string(),
            vec![pod.uid.clone()],
        );
    }
    if let Some(secret) = &k.secret {
        let obj = state
            .registry
            .get(&resource("", "secrets", Some(&k.namespace))?, &secret.name)
            .await
            .map_err(|_| stale("secret"))?;
        if uid_of(&obj) != secret.uid {
            return Err(stale("secret"));
        }
    }
    if let Some(node) = &k.node {
        extra.insert(
            "authentication.kubernetes.io/node-name".to_string(),
            vec![node.name.clone()],
        );
    }
    if let Some(jti) = &claims.jti {
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!("JTI={jti}")],
        );
    }
    Ok(UserInfo {
        username: format!(
            "{}{}:{}",
            names::SERVICE_ACCOUNT_PREFIX,
            k.namespace,
            k.serviceaccount.name
        ),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            names::SERVICE_ACCOUNTS_GROUP.to_string(),
            format!("{}:{}", names::SERVICE_ACCOUNTS_GROUP, k.namespace),
        ],
        extra,
    })
}

fn resource(group: &str, plural: &str, ns: Option<&str>) -> Result<Resource, String> {
    Resource::builtin(group, plural, ns).map_err(|e| format!("{:?}", e.0.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "# comment\nt1,alice,1001,\"dev,ops\"\nt2,bob,1002\n").unwrap();
        let tokens = load_token_file(&path).unwrap();
        assert_eq!(tokens["t1"].username, "alice");
        assert_eq!(tokens["t1"].groups, ["dev", "ops"]);
        assert_eq!(tokens["t2"].uid, "1002");
        assert!(tokens["t2"].groups.is_empty());
        std::fs::write(&path, "lonely,token\n").unwrap();
        assert!(load_token_file(&path).is_err());
    }

    #[test]
    fn bootstrap_token_shape() {
        assert_eq!(
            bootstrap_token_parts("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "a.b.c",
        ] {
            assert_eq!(bootstrap_token_parts(bad), None, "{bad}");
        }
    }
}
