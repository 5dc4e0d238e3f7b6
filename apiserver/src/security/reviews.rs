//! The create-only review APIs (answered from the request, never stored) and TokenRequest:
//! `SelfSubjectReview` (`kubectl auth whoami`), `SelfSubjectAccessReview` (`kubectl auth
//! can-i`), `SelfSubjectRulesReview` (`can-i --list`), `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `TokenReview`, and `serviceaccounts/<name>/token`.

use authz::{Attributes, UserInfo};
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resource::Resource;
use crate::State;

/// Is this resource one of the reviews?
pub fn is_review(res: &Resource) -> bool {
    matches!(
        res.info.group,
        "authentication.k8s.io" | "authorization.k8s.io"
    )
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Answers a review `body` posted by `user`; `(status code, response object)`.
pub async fn create(
    state: &State,
    user: &UserInfo,
    res: &Resource,
    mut body: Value,
) -> Result<(StatusCode, Value), ApiError> {
    let kind = res.info.kind;
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "a {kind} object is required"
        )));
    }
    body["apiVersion"] = Value::from(res.info.api_version());
    body["kind"] = Value::from(kind);
    let status = match kind {
        "SelfSubjectReview" => json!({"userInfo": user_info_json(user)}),
        "SelfSubjectAccessReview" => access_status(state, user.clone(), &body, None)?,
        "SubjectAccessReview" => access_status(state, spec_user(&body), &body, None)?,
        "LocalSubjectAccessReview" => {
            let ns = res.namespace.clone().unwrap_or_default();
            let spec_ns = str_at(&body, "/spec/resourceAttributes/namespace");
            if !spec_ns.is_empty() && spec_ns != ns {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            access_status(state, spec_user(&body), &body, Some(&ns))?
        }
        "SelfSubjectRulesReview" => rules_status(state, user, &body),
        "TokenReview" => token_review_status(state, &body).await,
        _ => return Err(ApiError::not_found_path()),
    };
    let metadata = body
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    body["metadata"] = metadata;
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["status"] = status;
    Ok((StatusCode::CREATED, body))
}

fn user_info_json(user: &UserInfo) -> Value {
    let mut v = json!({"username": user.username, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = Value::from(user.uid.clone());
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
}

fn spec_user(body: &Value) -> UserInfo {
    let extra = body
        .pointer("/spec/extra")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    UserInfo {
        username: str_at(body, "/spec/user").to_string(),
        uid: str_at(body, "/spec/uid").to_string(),
        groups: strings_at(body, "/spec/groups"),
        extra,
    }
}

fn access_status(
    state: &State,
    user: UserInfo,
    body: &Value,
    namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let mut attrs = Attributes {
        user,
        ..Default::default()
    };
    if let Some(r) = body.pointer("/spec/resourceAttributes") {
        attrs.resource_request = true;
        attrs.verb = str_at(r, "/verb").to_string();
        attrs.api_group = str_at(r, "/group").to_string();
        attrs.api_version = str_at(r, "/version").to_string();
        attrs.resource = str_at(r, "/resource").to_string();
        attrs.subresource = str_at(r, "/subresource").to_string();
        attrs.name = str_at(r, "/name").to_string();
        attrs.namespace = namespace.unwrap_or(str_at(r, "/namespace")).to_string();
    } else if let Some(n) = body.pointer("/spec/nonResourceAttributes") {
        attrs.verb = str_at(n, "/verb").to_string();
        attrs.path = str_at(n, "/path").to_string();
    } else {
        return Err(ApiError::bad_request(
            "exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be set",
        ));
    }
    let decision = match &state.security {
        Some(security) => security.authorize(&attrs),
        None => authz::Decision::Allow(String::new()),
    };
    Ok(match decision {
        authz::Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        authz::Decision::Deny(reason) => {
            json!({"allowed": false, "denied": true, "reason": reason})
        }
        authz::Decision::NoOpinion(reason) => json!({"allowed": false, "reason": reason}),
    })
}

fn rules_status(state: &State, user: &UserInfo, body: &Value) -> Value {
    let namespace = str_at(body, "/spec/namespace");
    let Some(security) = &state.security else {
        return json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        });
    };
    let rules = security.rbac.read().rules_for(user, namespace);
    let resource_rules: Vec<Value> = rules
        .resource_rules
        .iter()
        .map(|r| {
            let mut v = json!({"verbs": r.verbs});
            if let Some(g) = &r.api_groups {
                v["apiGroups"] = json!(g);
            }
            if let Some(res) = &r.resources {
                v["resources"] = json!(res);
            }
            if let Some(n) = &r.resource_names {
                v["resourceNames"] = json!(n);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = rules
        .non_resource_rules
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": rules.incomplete,
    })
}

async fn token_review_status(state: &State, body: &Value) -> Value {
    let token = str_at(body, "/spec/token");
    let audiences = strings_at(body, "/spec/audiences");
    let Some(security) = &state.security else {
        return json!({"authenticated": false, "error": "authentication is not configured"});
    };
    let wanted = (!audiences.is_empty()).then_some(audiences.as_slice());
    match security.authenticator.token_for(state, token, wanted).await {
        Ok(user) => {
            let user = super::authn::with_authenticated(user);
            let audiences = if audiences.is_empty() {
                security.api_audiences.clone()
            } else {
                audiences
            };
            json!({"authenticated": true, "user": user_info_json(&user), "audiences": audiences})
        }
        Err(e) => json!({"authenticated": false, "error": e}),
    }
}

/// Default and bounds of `spec.expirationSeconds` (upstream: 1 h default, 10 min minimum).
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;

/// `POST .../serviceaccounts/<name>/token`: a signed, bound ServiceAccount token.
pub async fn token_request(
    state: &State,
    namespace: &str,
    sa_name: &str,
    mut body: Value,
) -> Result<(StatusCode, Value), ApiError> {
    let security = state.security.as_ref().ok_or_else(|| {
        ApiError::service_unavailable(
            "ServiceAccount tokens need the secure port (TLS and a signing key)",
        )
    })?;
    let signer = security.signer.as_ref().ok_or_else(|| {
        ApiError::service_unavailable("no --service-account-signing-key-file is configured")
    })?;
    let lookup = |plural: &str| Resource::builtin("", plural, Some(namespace));
    let sa = state
        .registry
        .get(&lookup("serviceaccounts")?, sa_name)
        .await?;
    let expiration = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION);
    if expiration < MIN_EXPIRATION {
        return Err(ApiError::bad_request(
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    let audiences = match strings_at(&body, "/spec/audiences") {
        a if a.is_empty() => security.api_audiences.clone(),
        a => a,
    };
    let mut kube = pki::KubernetesClaims {
        namespace: namespace.to_string(),
        serviceaccount: pki::ObjectRef {
            name: sa_name.to_string(),
            uid: str_at(&sa, "/metadata/uid").to_string(),
        },
        pod: None,
        node: None,
        secret: None,
    };
    if let Some(bound) = body
        .pointer("/spec/boundObjectRef")
        .filter(|b| b.is_object())
    {
        let kind = str_at(bound, "/kind");
        let name = str_at(bound, "/name");
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::bad_request(format!(
                "cannot bind token to object of kind {other:?}: supported kinds are Pod and Secret"
            )))
            }
        };
        let obj = state.registry.get(&lookup(plural)?, name).await?;
        let uid = str_at(&obj, "/metadata/uid").to_string();
        let want_uid = str_at(bound, "/uid");
        if !want_uid.is_empty() && want_uid != uid {
            return Err(ApiError::bad_request(format!(
                "the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            )));
        }
        let reference = pki::ObjectRef {
            name: name.to_string(),
            uid,
        };
        if kind == "Pod" {
            let pod_sa = match str_at(&obj, "/spec/serviceAccountName") {
                "" => "default",
                s => s,
            };
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            let node = str_at(&obj, "/spec/nodeName");
            if !node.is_empty() {
                let nodes = Resource::builtin("", "nodes", None)?;
                if let Ok(n) = state.registry.get(&nodes, node).await {
                    kube.node = Some(pki::ObjectRef {
                        name: node.to_string(),
                        uid: str_at(&n, "/metadata/uid").to_string(),
                    });
                }
            }
            kube.pod = Some(reference);
        } else {
            kube.secret = Some(reference);
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let claims = pki::Claims {
        iss: security.issuer.clone(),
        sub: format!("system:serviceaccount:{namespace}:{sa_name}"),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: Some(uuid::Uuid::new_v4().to_string()),
        kubernetes: Some(kube),
    };
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.to_string())
        .unwrap_or_default();
    body["apiVersion"] = Value::from("authentication.k8s.io/v1");
    body["kind"] = Value::from("TokenRequest");
    body["metadata"] =
        json!({"name": sa_name, "namespace": namespace, "creationTimestamp": now_rfc3339()});
    body["spec"]["audiences"] = json!(audiences);
    body["spec"]["expirationSeconds"] = json!(expiration);
    body["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok((StatusCode::CREATED, body))
}
