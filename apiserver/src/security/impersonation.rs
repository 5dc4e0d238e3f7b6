//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers
//! replace the authenticated user for the rest of the request, provided the caller may
//! `impersonate` each requested user, group, uid and extra value (upstream's filter; the
//! checks are ordinary authorizer calls on `users`, `groups`, `serviceaccounts`, `uids` and
//! `userextras/<key>`).

use std::collections::BTreeMap;

use authz::{names, Attributes, UserInfo};
use axum::http::HeaderMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The user the request acts as: `Ok(None)` without impersonation headers, `Err` with the
/// attributes of the first check that failed (for the 403) or a bad-request message.
pub fn resolve(
    security: &super::Security,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, Refusal> {
    let value = |v: &axum::http::HeaderValue| v.to_str().map(str::to_string);
    let user = headers
        .get(USER)
        .map(value)
        .transpose()
        .map_err(|_| bad())?;
    let groups: Vec<String> = headers
        .get_all(GROUP)
        .iter()
        .map(value)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let uid = headers.get(UID).map(value).transpose().map_err(|_| bad())?;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, v) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            // Keys are percent-encoded in header names (upstream's rule).
            let key = percent_decode(key);
            extra
                .entry(key)
                .or_default()
                .push(value(v).map_err(|_| bad())?);
        }
    }
    let Some(username) = user else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(Refusal::BadRequest(
                "requested impersonation of groups, uid or extra without impersonating a user"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let check = |resource: &str, group: &str, namespace: &str, name: &str| {
        let attrs = Attributes {
            user: caller.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        };
        if security.authorize(&attrs).allowed() {
            Ok(())
        } else {
            Err(Refusal::Forbidden(Box::new(attrs)))
        }
    };
    let mut impersonated = UserInfo {
        username: username.clone(),
        uid: uid.clone().unwrap_or_default(),
        groups: groups.clone(),
        extra: extra.clone(),
    };
    match username
        .strip_prefix(names::SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => {
            check("serviceaccounts", "", namespace, name)?;
            if groups.is_empty() {
                impersonated.groups = vec![
                    names::SERVICE_ACCOUNTS_GROUP.to_string(),
                    format!("{}:{namespace}", names::SERVICE_ACCOUNTS_GROUP),
                ];
            }
        }
        None => check("users", "", "", &username)?,
    }
    for group in &groups {
        check("groups", "", "", group)?;
    }
    if let Some(uid) = &uid {
        check("uids", "authentication.k8s.io", "", uid)?;
    }
    for (key, values) in &extra {
        for v in values {
            check(&format!("userextras/{key}"), "authentication.k8s.io", "", v)?;
        }
    }
    if username != names::ANONYMOUS && !impersonated.in_group(names::AUTHENTICATED) {
        impersonated.groups.push(names::AUTHENTICATED.to_string());
    }
    Ok(Some(impersonated))
}

/// Why impersonation was refused.
pub enum Refusal {
    Forbidden(Box<Attributes>),
    BadRequest(String),
}

fn bad() -> Refusal {
    Refusal::BadRequest("impersonation headers must be valid UTF-8".into())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}
