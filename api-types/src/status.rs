//! Failure `Status` objects worded exactly as kube-apiserver words them.
//!
//! kubectl, client-go and kube-rs branch on `reason` and `code`, and people and scripts match on
//! `message`, so each constructor mirrors its counterpart in
//! `k8s.io/apimachinery/pkg/api/errors` byte for byte. Group and resource are passed separately
//! so `pods "x"` and `deployments.apps "x"` come out as upstream prints them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

/// A failure `Status` as a Rust error, so handlers can propagate it with `?` and render it once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.message.as_deref().unwrap_or("unknown error"))]
pub struct StatusError(pub Status);

impl StatusError {
    /// The HTTP status code to answer with; 500 when the status carries none.
    pub fn code(&self) -> u16 {
        self.0
            .code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500)
    }

    /// The machine-readable reason, e.g. `NotFound`; empty when unset.
    pub fn reason(&self) -> &str {
        self.0.reason.as_deref().unwrap_or("")
    }

    /// The status as the JSON body to send.
    pub fn to_json(&self) -> serde_json::Value {
        to_json(&self.0)
    }
}

impl From<Status> for StatusError {
    fn from(status: Status) -> Self {
        StatusError(status)
    }
}

/// Serializes a `Status` for a response body, making sure it carries `kind: Status` and
/// `apiVersion: v1`: clients only recognise an error body as a `Status` by those two fields.
pub fn to_json(status: &Status) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), "Status".into());
        map.insert("apiVersion".into(), "v1".into());
    }
    value
}

fn failure(code: i32, reason: &str, message: String, details: Option<StatusDetails>) -> Status {
    Status {
        code: Some(code),
        details,
        message: Some(message),
        metadata: Default::default(),
        reason: Some(reason.to_string()),
        status: Some("Failure".to_string()),
    }
}

/// Go omits empty strings (`omitempty`); so do we, to keep bodies identical.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Go's `%q`, which upstream uses for names: escapes like Rust's `{:?}` for printable text but
/// spells control characters `\x01` / `\u0085` rather than `\u{1}`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream's `GroupResource.String()`: `pods`, `deployments.apps`.
fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// Upstream's `GroupKind.String()`: `Pod`, `Deployment.apps`.
fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// Upstream puts the resource (plural), not the kind, in `details.kind` for these errors.
fn resource_details(group: &str, plural: &str, name: &str) -> StatusDetails {
    StatusDetails {
        group: non_empty(group),
        kind: non_empty(plural),
        name: non_empty(name),
        ..Default::default()
    }
}

/// 404 `NotFound`: `pods "x" not found`.
pub fn not_found(group: &str, plural: &str, name: &str) -> Status {
    failure(
        404,
        "NotFound",
        format!(
            "{} {} not found",
            group_resource(group, plural),
            go_quote(name)
        ),
        Some(resource_details(group, plural, name)),
    )
}

/// 409 `AlreadyExists`: `pods "x" already exists`.
pub fn already_exists(group: &str, plural: &str, name: &str) -> Status {
    failure(
        409,
        "AlreadyExists",
        format!(
            "{} {} already exists",
            group_resource(group, plural),
            go_quote(name)
        ),
        Some(resource_details(group, plural, name)),
    )
}

/// 409 `Conflict`: `Operation cannot be fulfilled on pods "x": <detail>`. Clients retry on this
/// reason, so optimistic-concurrency failures must use it.
pub fn conflict(group: &str, plural: &str, name: &str, detail: &str) -> Status {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {}: {detail}",
            group_resource(group, plural),
            go_quote(name)
        ),
        Some(resource_details(group, plural, name)),
    )
}

/// 410 `Expired`: a list continue token or watch resourceVersion older than compaction. The
/// reason tells reflectors to relist rather than fail.
pub fn gone_expired(message: &str) -> Status {
    failure(410, "Expired", message.to_string(), None)
}

/// 400 `BadRequest`, message verbatim.
pub fn bad_request(message: &str) -> Status {
    failure(400, "BadRequest", message.to_string(), None)
}

/// 405 `MethodNotAllowed`: `deletecollection is not supported on resources of kind "namespaces"`.
/// `action` is the verb as upstream names it (`create`, `delete`, `list`, ...).
pub fn method_not_allowed(group: &str, plural: &str, action: &str) -> Status {
    failure(
        405,
        "MethodNotAllowed",
        format!(
            "{action} is not supported on resources of kind {}",
            go_quote(&group_resource(group, plural))
        ),
        Some(resource_details(group, plural, "")),
    )
}

/// 415 `UnsupportedMediaType`. Upstream names the media types it would have accepted, not the
/// one it got, which is what tells the user how to fix the request.
pub fn unsupported_media_type(accepted: &[&str]) -> Status {
    failure(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// 413 `RequestEntityTooLarge`: `Request entity too large: <message>` (upstream passes e.g.
/// `limit is 3145728`).
pub fn request_entity_too_large(message: &str) -> Status {
    failure(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: {message}"),
        None,
    )
}

/// 500 `InternalError`: `Internal error occurred: <message>`, with the message repeated as the
/// one cause, as upstream does.
pub fn internal_error(message: &str) -> Status {
    failure(
        500,
        "InternalError",
        format!("Internal error occurred: {message}"),
        Some(StatusDetails {
            causes: Some(vec![StatusCause {
                message: Some(message.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    )
}

/// 503 `ServiceUnavailable`, message verbatim; clients back off and retry.
pub fn service_unavailable(message: &str) -> Status {
    failure(503, "ServiceUnavailable", message.to_string(), None)
}

/// 422 `Invalid`: `Pod "x" is invalid: spec.containers[0].image: Required value`.
///
/// Each cause is `(field, message, reason)`, e.g. `("spec.containers[0].image", "Required
/// value", "FieldValueRequired")`: the message is the part after `field: ` and the reason is the
/// upstream `CauseType`. Several causes are joined as upstream aggregates them, `[a, b]`, with
/// repeated lines dropped; every cause is still listed in `details.causes`.
pub fn invalid<I, F, M, R>(group: &str, kind: &str, name: &str, causes: I) -> Status
where
    I: IntoIterator<Item = (F, M, R)>,
    F: Into<String>,
    M: Into<String>,
    R: Into<String>,
{
    let causes: Vec<StatusCause> = causes
        .into_iter()
        .map(|(field, message, reason)| StatusCause {
            field: Some(field.into()),
            message: Some(message.into()),
            reason: Some(reason.into()),
        })
        .collect();
    let mut lines: Vec<String> = Vec::new();
    for c in &causes {
        let line = format!(
            "{}: {}",
            c.field.as_deref().unwrap_or(""),
            c.message.as_deref().unwrap_or("")
        );
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let subject = format!("{} {} is invalid", group_kind(group, kind), go_quote(name));
    let message = match lines.len() {
        0 => subject,
        1 => format!("{subject}: {}", lines[0]),
        _ => format!("{subject}: [{}]", lines.join(", ")),
    };
    failure(
        422,
        "Invalid",
        message,
        Some(StatusDetails {
            group: non_empty(group),
            kind: non_empty(kind),
            name: non_empty(name),
            causes: (!causes.is_empty()).then_some(causes),
            ..Default::default()
        }),
    )
}

/// 403 `Forbidden`: `pods "x" is forbidden: <reason>`, or `pods is forbidden: <reason>` without
/// a name (e.g. a list or create denied), or `forbidden: <reason>` without a resource.
pub fn forbidden(group: &str, plural: &str, name: &str, reason: &str) -> Status {
    let message = if group.is_empty() && plural.is_empty() {
        format!("forbidden: {reason}")
    } else if name.is_empty() {
        format!("{} is forbidden: {reason}", group_resource(group, plural))
    } else {
        format!(
            "{} {} is forbidden: {reason}",
            group_resource(group, plural),
            go_quote(name)
        )
    };
    failure(
        403,
        "Forbidden",
        message,
        Some(resource_details(group, plural, name)),
    )
}

/// 429 `TooManyRequests`, message verbatim, with empty details a caller may add causes to (the
/// eviction API adds a `DisruptionBudget` cause).
pub fn too_many_requests(message: &str) -> Status {
    failure(
        429,
        "TooManyRequests",
        message.to_string(),
        Some(StatusDetails::default()),
    )
}

/// 401 `Unauthorized`, as kube-apiserver answers a request whose credentials it cannot
/// authenticate (or a request without credentials when anonymous access is off).
pub fn unauthorized() -> Status {
    failure(401, "Unauthorized", "Unauthorized".to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(s: &Status, code: i32, reason: &str, message: &str) {
        assert_eq!(s.code, Some(code));
        assert_eq!(s.reason.as_deref(), Some(reason));
        assert_eq!(s.message.as_deref(), Some(message));
        assert_eq!(s.status.as_deref(), Some("Failure"));
    }

    #[test]
    fn not_found_core_and_grouped() {
        let s = not_found("", "pods", "x");
        check(&s, 404, "NotFound", r#"pods "x" not found"#);
        assert_eq!(
            to_json(&s),
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "pods \"x\" not found",
                "reason": "NotFound",
                "details": {"name": "x", "kind": "pods"},
                "code": 404,
            })
        );
        let s = not_found("apps", "deployments", "x");
        check(&s, 404, "NotFound", r#"deployments.apps "x" not found"#);
        let d = s.details.unwrap();
        assert_eq!(d.group.as_deref(), Some("apps"));
        assert_eq!(d.kind.as_deref(), Some("deployments"));
        assert_eq!(d.name.as_deref(), Some("x"));
    }

    #[test]
    fn conflicts() {
        check(
            &already_exists("", "pods", "x"),
            409,
            "AlreadyExists",
            r#"pods "x" already exists"#,
        );
        check(
            &conflict(
                "",
                "pods",
                "x",
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            409,
            "Conflict",
            r#"Operation cannot be fulfilled on pods "x": the object has been modified; please apply your changes to the latest version and try again"#,
        );
        check(
            &conflict("apps", "deployments", "web", "boom"),
            409,
            "Conflict",
            r#"Operation cannot be fulfilled on deployments.apps "web": boom"#,
        );
    }

    #[test]
    fn plain_messages() {
        check(
            &gone_expired("too old resource version: 1 (5)"),
            410,
            "Expired",
            "too old resource version: 1 (5)",
        );
        check(&bad_request("bad"), 400, "BadRequest", "bad");
        check(
            &service_unavailable("etcd is down"),
            503,
            "ServiceUnavailable",
            "etcd is down",
        );
        check(
            &too_many_requests("Cannot evict pod as it would violate the pod's disruption budget."),
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        check(
            &request_entity_too_large("limit is 3145728"),
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        );
    }

    #[test]
    fn method_and_media_type() {
        let s = method_not_allowed("", "namespaces", "deletecollection");
        check(
            &s,
            405,
            "MethodNotAllowed",
            r#"deletecollection is not supported on resources of kind "namespaces""#,
        );
        assert_eq!(s.details.unwrap().name, None);
        check(
            &unsupported_media_type(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
                "application/strategic-merge-patch+json",
            ]),
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml, application/strategic-merge-patch+json",
        );
    }

    #[test]
    fn internal() {
        let s = internal_error("boom");
        check(&s, 500, "InternalError", "Internal error occurred: boom");
        assert_eq!(
            to_json(&s)["details"],
            json!({"causes": [{"message": "boom"}]})
        );
    }

    #[test]
    fn invalid_messages() {
        let s = invalid(
            "",
            "Pod",
            "x",
            vec![(
                "spec.containers[0].image",
                "Required value",
                "FieldValueRequired",
            )],
        );
        check(
            &s,
            422,
            "Invalid",
            r#"Pod "x" is invalid: spec.containers[0].image: Required value"#,
        );
        assert_eq!(
            to_json(&s)["details"],
            json!({
                "name": "x",
                "kind": "Pod",
                "causes": [{
                    "reason": "FieldValueRequired",
                    "message": "Required value",
                    "field": "spec.containers[0].image",
                }],
            })
        );

        let s = invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                (
                    "spec.replicas".to_string(),
                    "Invalid value: -1: must be greater than or equal to 0".to_string(),
                    "FieldValueInvalid".to_string(),
                ),
                (
                    "spec.selector".to_string(),
                    "Required value".to_string(),
                    "FieldValueRequired".to_string(),
                ),
                (
                    "spec.selector".to_string(),
                    "Required value".to_string(),
                    "FieldValueRequired".to_string(),
                ),
            ],
        );
        check(
            &s,
            422,
            "Invalid",
            r#"Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.selector: Required value]"#,
        );
        assert_eq!(s.details.unwrap().causes.unwrap().len(), 3);

        let none: Vec<(&str, &str, &str)> = Vec::new();
        let s = invalid("", "Pod", "x", none);
        check(&s, 422, "Invalid", r#"Pod "x" is invalid"#);
        assert_eq!(s.details.unwrap().causes, None);
    }

    #[test]
    fn forbidden_forms() {
        check(
            &forbidden(
                "",
                "pods",
                "x",
                "unable to create new content in namespace ns because it is being terminated",
            ),
            403,
            "Forbidden",
            r#"pods "x" is forbidden: unable to create new content in namespace ns because it is being terminated"#,
        );
        check(
            &forbidden("apps", "deployments", "", "nope"),
            403,
            "Forbidden",
            "deployments.apps is forbidden: nope",
        );
        check(
            &forbidden("", "", "", "nope"),
            403,
            "Forbidden",
            "forbidden: nope",
        );
    }

    #[test]
    fn names_are_go_quoted() {
        check(
            &not_found("", "pods", "a\"b\\c\u{1}\n\u{7f}\u{85}é"),
            404,
            "NotFound",
            r#"pods "a\"b\\c\x01\n\x7f\u0085é" not found"#,
        );
    }

    #[test]
    fn status_error() {
        let e = StatusError::from(not_found("", "pods", "x"));
        assert_eq!(e.code(), 404);
        assert_eq!(e.reason(), "NotFound");
        assert_eq!(e.to_string(), r#"pods "x" not found"#);
        assert_eq!(e.to_json()["kind"], "Status");
        assert_eq!(StatusError(Status::default()).code(), 500);
    }

    #[test]
    fn json_round_trips() {
        let s = invalid("", "Pod", "x", vec![("a", "b", "c")]);
        let back: Status = serde_json::from_value(to_json(&s)).unwrap();
        assert_eq!(back, s);
    }
}
