//! The `audit.k8s.io/v1` Event: one record of one stage of one request.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::policy::{Level, RequestInfo, Stage};
use crate::time::serde_micro_time;

/// The annotation upstream's authorizer sets: `"allow"` or `"forbid"`.
pub const ANNOTATION_DECISION: &str = "authorization.k8s.io/decision";
/// The annotation with the authorizer's reason (e.g. the RBAC binding that allowed it).
pub const ANNOTATION_REASON: &str = "authorization.k8s.io/reason";

/// The `kind`/`apiVersion` pair every event carries, first, as upstream's inline TypeMeta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    /// `Event`.
    pub kind: String,
    /// `audit.k8s.io/v1`.
    pub api_version: String,
}

impl Default for TypeMeta {
    fn default() -> Self {
        TypeMeta {
            kind: "Event".into(),
            api_version: "audit.k8s.io/v1".into(),
        }
    }
}

/// The object a resource request was about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// The resource (plural).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// The namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's UID, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The API group; omitted for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// The API version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The object's resourceVersion, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// The subresource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The empty `metadata` object of a `metav1.Status`: upstream always writes `"metadata":{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyMetadata {}

/// The response's `metav1.Status`: the code always, the rest for failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// Always empty.
    #[serde(default)]
    pub metadata: EmptyMetadata,
    /// `"Failure"` for errors; omitted for successes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The error message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The machine-readable reason (`Forbidden`, `NotFound`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The HTTP status code.
    #[serde(default)]
    pub code: i32,
}

/// One audit event, serialised with upstream's field names and omissions.
///
/// Build one with [`Event::new`] when the request arrives, then derive the later stages'
/// events with [`Event::at_stage`] so they share the audit ID and `requestReceivedTimestamp`.
/// The body setters respect the level, so a Metadata-level event can never carry a body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `kind` and `apiVersion`.
    #[serde(flatten)]
    pub type_meta: TypeMeta,
    /// The level the policy chose.
    pub level: Level,
    /// Unique per request, shared by all of its stages' events.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// The stage this event records.
    pub stage: Stage,
    /// The request URI as sent (path and query).
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The verb.
    pub verb: String,
    /// The authenticated user.
    pub user: authz::UserInfo,
    /// The user impersonated, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<authz::UserInfo>,
    /// The client and any proxies' addresses (X-Forwarded-For, then the peer).
    #[serde(default, rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The User-Agent header.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// The object of a resource request; omitted for non-resource requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// How the request ended; set for ResponseComplete and Panic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request body (Request and RequestResponse levels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
    /// The response body (RequestResponse level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<serde_json::Value>,
    /// When the request arrived.
    #[serde(with = "serde_micro_time")]
    pub request_received_timestamp: SystemTime,
    /// When this stage was reached.
    #[serde(with = "serde_micro_time")]
    pub stage_timestamp: SystemTime,
    /// Notes from the handlers (authorization decision and reason, admission, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Event {
    /// The RequestReceived event of a request, with a fresh audit ID and both timestamps now.
    pub fn new(req: &RequestInfo<'_>, level: Level, request_uri: impl Into<String>) -> Self {
        let now = SystemTime::now();
        let object_ref = req.resource_request.then(|| ObjectReference {
            resource: req.resource.to_owned(),
            namespace: req.namespace.to_owned(),
            name: req.name.to_owned(),
            api_group: req.api_group.to_owned(),
            api_version: req.api_version.to_owned(),
            subresource: req.subresource.to_owned(),
            ..ObjectReference::default()
        });
        Event {
            type_meta: TypeMeta::default(),
            level,
            audit_id: new_audit_id(),
            stage: Stage::RequestReceived,
            request_uri: request_uri.into(),
            verb: req.verb.to_owned(),
            user: req.user.clone(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: now,
            stage_timestamp: now,
            annotations: BTreeMap::new(),
        }
    }

    /// This request's event for a later stage: same audit ID and request data, the stage
    /// timestamp now.
    pub fn at_stage(&self, stage: Stage) -> Self {
        Event {
            stage,
            stage_timestamp: SystemTime::now(),
            ..self.clone()
        }
    }

    /// Records the response code; for codes of 400 and above also upstream's failure fields.
    pub fn set_response_status(&mut self, code: u16, reason: &str, message: &str) {
        let failed = code >= 400;
        self.response_status = Some(ResponseStatus {
            metadata: EmptyMetadata {},
            status: if failed {
                "Failure".into()
            } else {
                String::new()
            },
            message: if failed {
                message.into()
            } else {
                String::new()
            },
            reason: if failed { reason.into() } else { String::new() },
            code: i32::from(code),
        });
    }

    /// Records the request body, if the level allows it (Request or above); drops
    /// `metadata.managedFields` when the policy says so.
    pub fn set_request_object(&mut self, body: serde_json::Value, omit_managed_fields: bool) {
        if self.level >= Level::Request {
            self.request_object = Some(strip_managed_fields(body, omit_managed_fields));
        }
    }

    /// Records the response body, if the level allows it (RequestResponse only).
    pub fn set_response_object(&mut self, body: serde_json::Value, omit_managed_fields: bool) {
        if self.level >= Level::RequestResponse {
            self.response_object = Some(strip_managed_fields(body, omit_managed_fields));
        }
    }

    /// Adds an annotation (the first value for a key wins, as upstream's
    /// `AddAuditAnnotation`, so a later handler cannot rewrite an earlier decision).
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.annotations
            .entry(key.into())
            .or_insert_with(|| value.into());
    }

    /// The event as one line of JSON, without the newline.
    pub fn to_json(&self) -> Result<String, crate::Error> {
        Ok(serde_json::to_string(self)?)
    }
}

/// Removes `metadata.managedFields` from an object, or from every item of a list.
fn strip_managed_fields(mut body: serde_json::Value, omit: bool) -> serde_json::Value {
    if !omit {
        return body;
    }
    let strip = |obj: &mut serde_json::Value| {
        if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    };
    strip(&mut body);
    if let Some(items) = body.get_mut("items").and_then(|i| i.as_array_mut()) {
        items.iter_mut().for_each(strip);
    }
    body
}

/// A fresh audit ID: a random (version 4) UUID, as upstream generates when the client sent no
/// `Audit-ID` header.
pub fn new_audit_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
