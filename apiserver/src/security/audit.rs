//! Audit logging (`--audit-policy-file`, `--audit-log-path`): one JSON line per request stage
//! in the `audit.k8s.io/v1` Event shape, at the level the policy picks for the request. The
//! policy and event types live in the `audit` crate; this is the request-side glue.

use std::path::PathBuf;

use audit::{AuditConfig, Event, Level, Policy, RequestInfo, Stage};
use authz::Attributes;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;

/// Bodies larger than this are not recorded (the event notes the request anyway).
const MAX_RECORDED_BODY: usize = 1 << 20;

/// Where and what to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// `--audit-log-path`.
    pub log_path: PathBuf,
    /// `--audit-policy-file`; `None` uses the default policy (Metadata for everything,
    /// never a Secret's body).
    pub policy_file: Option<PathBuf>,
}

/// The audit backend of a running server.
pub struct Auditor {
    policy: Policy,
    sink: audit::FileSink,
}

impl Auditor {
    pub fn open(options: &AuditOptions) -> Result<Self, audit::Error> {
        let policy = match &options.policy_file {
            Some(path) => Policy::from_file(path)?,
            None => Policy::default_policy(),
        };
        Ok(Auditor {
            policy,
            sink: audit::FileSink::open(&options.log_path)?,
        })
    }

    fn write(&self, event: &Event, config: &AuditConfig) {
        if config.omit_stages.contains(&event.stage) {
            return;
        }
        if let Err(e) = self.sink.write(event) {
            tracing::warn!(error = %e, "writing an audit event");
        }
    }
}

fn request_info<'a>(attrs: &'a Attributes) -> RequestInfo<'a> {
    RequestInfo {
        user: &attrs.user,
        verb: &attrs.verb,
        resource_request: attrs.resource_request,
        api_group: &attrs.api_group,
        api_version: &attrs.api_version,
        resource: &attrs.resource,
        subresource: &attrs.subresource,
        namespace: &attrs.namespace,
        name: &attrs.name,
        path: &attrs.path,
    }
}

/// Streams (watch, logs, exec) are never buffered for their bodies.
fn is_stream(attrs: &Attributes) -> bool {
    attrs.verb == "watch"
        || matches!(
            attrs.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward" | "proxy"
        )
}

/// One request's audit record in progress.
pub struct Record {
    event: Event,
    config: AuditConfig,
    recorded_body: Option<Bytes>,
}

/// Starts auditing `req` (writes its RequestReceived event); `None` when the policy says
/// Level None. A request body the level wants is read here and put back.
pub async fn begin(
    auditor: &Auditor,
    attrs: &Attributes,
    req: Request,
) -> (Request, Option<Record>) {
    let config = auditor.policy.evaluate(&request_info(attrs));
    if config.level == Level::None {
        return (req, None);
    }
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut event = Event::new(&request_info(attrs), config.level, uri);
    event.user_agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(peer) = req.extensions().get::<super::tls::RemoteAddr>() {
        event.source_ips.push(peer.0.ip().to_string());
    }
    let mut req = req;
    let mut recorded_body = None;
    let has_body = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if config.level >= Level::Request && has_body && !is_stream(attrs) {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, MAX_RECORDED_BODY).await {
            Ok(bytes) => {
                recorded_body = Some(bytes.clone());
                req = Request::from_parts(parts, Body::from(bytes));
            }
            // Too large to record: the handler answers 413 for it anyway.
            Err(_) => req = Request::from_parts(parts, Body::empty()),
        }
    }
    auditor.write(&event, &config);
    (
        req,
        Some(Record {
            event,
            config,
            recorded_body,
        }),
    )
}

/// Writes the ResponseComplete event (with the answer's code, and the bodies the level
/// wants) and hands the response back.
pub async fn finish(
    auditor: &Auditor,
    record: Record,
    attrs: &Attributes,
    decision: (&str, &str),
    annotations: &[(String, String)],
    resp: Response,
) -> Response {
    let Record {
        event,
        config,
        recorded_body,
    } = record;
    let mut event = event.at_stage(Stage::ResponseComplete);
    event.annotate(audit::ANNOTATION_DECISION, decision.0);
    if !decision.1.is_empty() {
        event.annotate(audit::ANNOTATION_REASON, decision.1);
    }
    for (k, v) in annotations {
        event.annotate(k.clone(), v.clone());
    }
    if let Some(body) = recorded_body {
        if let Ok(v) = serde_json::from_slice(&body) {
            event.set_request_object(v, config.omit_managed_fields);
        }
    }
    let code = resp.status().as_u16();
    let wants_response = config.level >= Level::RequestResponse && !is_stream(attrs);
    let resp = if code >= 400 || wants_response {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_RECORDED_BODY)
            .await
            .unwrap_or_default();
        let value: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let field = |k: &str| {
            value
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        event.set_response_status(code, &field("reason"), &field("message"));
        if let Some(v) = value {
            event.set_response_object(v, config.omit_managed_fields);
        }
        Response::from_parts(parts, Body::from(bytes))
    } else {
        event.set_response_status(code, "", "");
        resp
    };
    auditor.write(&event, &config);
    resp
}
