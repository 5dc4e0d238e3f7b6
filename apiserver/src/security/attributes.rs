//! What a request asks to do, read off its method, path and query the way kube-apiserver's
//! `RequestInfoFactory` does. It is deliberately independent of the resource table: a request
//! for a resource we do not serve is still authorized (and then answered 404), so the answer to
//! "may I?" never leaks which resources exist.

use authz::{Attributes, UserInfo};
use axum::http::Method;

/// Subresources of a namespace itself (`/api/v1/namespaces/<ns>/status`), not resources in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The attributes of one HTTP request.
pub fn of_request(user: UserInfo, method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let mut attrs = Attributes {
        user,
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
        ..Default::default()
    };
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return attrs,
    };
    let mut parts: &[&str] = rest;
    if parts[0] == "namespaces" && parts.len() > 1 {
        attrs.namespace = parts[1].to_string();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    attrs.resource_request = true;
    attrs.api_group = group.to_string();
    attrs.api_version = version.to_string();
    attrs.resource = parts[0].to_string();
    attrs.name = parts.get(1).map(|s| (*s).to_string()).unwrap_or_default();
    attrs.subresource = parts.get(2).map(|s| (*s).to_string()).unwrap_or_default();
    let params = crate::query::Query::parse(query);
    attrs.verb = match *method {
        Method::GET | Method::HEAD if attrs.name.is_empty() => {
            // A list or watch narrowed to one name by field selector is authorized as that
            // name (how a node may watch its own Node object).
            if let Some(name) = single_name(params.get("fieldSelector")) {
                attrs.name = name;
            }
            if params.flag("watch") {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if attrs.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => return attrs,
    }
    .to_string();
    attrs
}

/// `metadata.name=<x>` (or `==`) as the whole field selector.
fn single_name(selector: Option<&str>) -> Option<String> {
    let s = selector?.trim();
    let value = s
        .strip_prefix("metadata.name==")
        .or_else(|| s.strip_prefix("metadata.name="))?;
    (!value.is_empty() && !value.contains(',')).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: Option<&str>) -> Attributes {
        of_request(UserInfo::default(), &method, path, query)
    }

    #[test]
    fn resource_requests() {
        // (method, path, query, verb, group, resource, subresource, namespace, name)
        let cases = [
            (
                Method::GET,
                "/api/v1/pods",
                None,
                "list",
                "",
                "pods",
                "",
                "",
                "",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods",
                Some("watch=true"),
                "watch",
                "",
                "pods",
                "",
                "d",
                "",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p",
                None,
                "get",
                "",
                "pods",
                "",
                "d",
                "p",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                None,
                "get",
                "",
                "pods",
                "log",
                "d",
                "p",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/exec",
                None,
                "create",
                "",
                "pods",
                "exec",
                "d",
                "p",
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                None,
                "update",
                "apps",
                "deployments",
                "scale",
                "d",
                "x",
            ),
            (
                Method::PATCH,
                "/api/v1/nodes/n/status",
                None,
                "patch",
                "",
                "nodes",
                "status",
                "",
                "n",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/configmaps",
                None,
                "deletecollection",
                "",
                "configmaps",
                "",
                "d",
                "",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/configmaps/c",
                None,
                "delete",
                "",
                "configmaps",
                "",
                "d",
                "c",
            ),
            // A namespace is named and "in" itself; its status is a subresource of it.
            (
                Method::GET,
                "/api/v1/namespaces/d",
                None,
                "get",
                "",
                "namespaces",
                "",
                "d",
                "d",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/d/finalize",
                None,
                "update",
                "",
                "namespaces",
                "finalize",
                "d",
                "d",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                "list",
                "",
                "namespaces",
                "",
                "",
                "",
            ),
            (
                Method::GET,
                "/api/v1/nodes",
                Some("fieldSelector=metadata.name%3Dn1&watch=1"),
                "watch",
                "",
                "nodes",
                "",
                "",
                "n1",
            ),
            // Proxy subresources: the id segment (port included) is the name, the path
            // after `proxy` does not matter, the verb follows the method.
            (
                Method::GET,
                "/api/v1/namespaces/d/services/https:web:443/proxy/a/b",
                None,
                "get",
                "",
                "services",
                "proxy",
                "d",
                "https:web:443",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p:80/proxy/",
                None,
                "create",
                "",
                "pods",
                "proxy",
                "d",
                "p:80",
            ),
            (
                Method::HEAD,
                "/api/v1/nodes/n1/proxy/healthz",
                None,
                "get",
                "",
                "nodes",
                "proxy",
                "",
                "n1",
            ),
            (
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                None,
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
                "",
            ),
        ];
        for (method, path, query, verb, group, resource, sub, ns, name) in cases {
            let a = attrs(method, path, query);
            assert!(a.resource_request, "{path}");
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.api_group.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.namespace.as_str(),
                    a.name.as_str()
                ),
                (verb, group, resource, sub, ns, name),
                "{path}"
            );
        }
    }

    #[test]
    fn non_resource_requests() {
        for (method, path, verb) in [
            (Method::GET, "/version", "get"),
            (Method::GET, "/api", "get"),
            (Method::GET, "/api/v1", "get"),
            (Method::GET, "/apis/apps/v1", "get"),
            (Method::GET, "/openapi/v3/apis/apps/v1", "get"),
            (Method::POST, "/healthz", "post"),
        ] {
            let a = attrs(method, path, None);
            assert!(!a.resource_request, "{path}");
            assert_eq!(a.verb, verb);
            assert_eq!(a.path, path);
        }
    }
}
