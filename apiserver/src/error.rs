//! Every failed request ends here: an [`ApiError`] carries the `metav1.Status` the client gets,
//! so no handler can answer an error in any other shape.

use api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use api_types::status;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::resource::Resource;

/// A failed request: the Status to send.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Status>);

impl ApiError {
    pub fn new(status: Status) -> Self {
        ApiError(Box::new(status))
    }

    /// The HTTP code.
    pub fn code(&self) -> u16 {
        self.0
            .code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500)
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(status::bad_request(&msg.into()))
    }

    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::new(status::internal_error(&msg.to_string()))
    }

    pub fn not_found_path() -> Self {
        let mut s = status::not_found("", "", "");
        s.message = Some("the server could not find the requested resource".into());
        s.details = None;
        ApiError::new(s)
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        ApiError::new(status::not_found(res.info.group, res.info.plural, name))
    }

    pub fn already_exists(res: &Resource, name: &str) -> Self {
        ApiError::new(status::already_exists(
            res.info.group,
            res.info.plural,
            name,
        ))
    }

    pub fn conflict(res: &Resource, name: &str) -> Self {
        ApiError::new(status::conflict(
            res.info.group,
            res.info.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ))
    }

    pub fn conflict_msg(res: &Resource, name: &str, detail: &str) -> Self {
        ApiError::new(status::conflict(
            res.info.group,
            res.info.plural,
            name,
            detail,
        ))
    }

    pub fn expired(msg: impl Into<String>) -> Self {
        ApiError::new(status::gone_expired(&msg.into()))
    }

    pub fn method_not_allowed(res: &Resource, action: &str) -> Self {
        ApiError::new(status::method_not_allowed(
            res.info.group,
            res.info.plural,
            action,
        ))
    }

    pub fn forbidden(res: &Resource, name: &str, reason: &str) -> Self {
        ApiError::new(status::forbidden(
            res.info.group,
            res.info.plural,
            name,
            reason,
        ))
    }

    pub fn invalid(res: &Resource, name: &str, causes: Vec<(String, String, String)>) -> Self {
        ApiError::new(status::invalid(res.info.group, res.info.kind, name, causes))
    }

    pub fn unsupported_media_type() -> Self {
        ApiError::new(status::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ]))
    }

    pub fn too_large() -> Self {
        ApiError::new(status::request_entity_too_large("limit is 3145728 bytes"))
    }

    pub fn service_unavailable(msg: impl Into<String>) -> Self {
        ApiError::new(status::service_unavailable(&msg.into()))
    }

    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        ApiError::new(status::too_many_requests(&msg.into()))
    }

    /// Maps a storage failure for `name` of `res` to the Status upstream answers.
    pub fn from_storage(res: &Resource, name: &str, e: storage::Error) -> Self {
        match e {
            storage::Error::NotFound { .. } => Self::not_found(res, name),
            storage::Error::AlreadyExists { .. } => Self::already_exists(res, name),
            storage::Error::Conflict { .. } => Self::conflict(res, name),
            storage::Error::Expired {
                requested,
                compacted,
            } => Self::expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            storage::Error::FutureRevision { requested, current } => {
                // Upstream answers a read at a revision the store has not reached with 504
                // Timeout and a ResourceVersionTooLarge cause, so clients retry.
                let mut s = status::internal_error("");
                s.code = Some(504);
                s.reason = Some("Timeout".into());
                let current = if current > 0 {
                    current.to_string()
                } else {
                    "unknown".into()
                };
                s.message = Some(format!(
                    "Too large resource version: {requested}, current: {current}"
                ));
                s.details = Some(api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
                    causes: Some(vec![api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusCause {
                        reason: Some("ResourceVersionTooLarge".into()),
                        message: Some("Too large resource version".into()),
                        field: None,
                    }]),
                    retry_after_seconds: Some(1),
                    ..Default::default()
                });
                ApiError::new(s)
            }
            storage::Error::InvalidContinue(why) => {
                Self::bad_request(format!("continue key is not valid: {why}"))
            }
            storage::Error::WatcherTooSlow | storage::Error::Unavailable(_) => {
                Self::service_unavailable(e.to_string())
            }
            storage::Error::Internal(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&status::to_json(&self.0)).unwrap_or_default();
        let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        // As kube-apiserver's `ErrorNegotiated`: a suggested retry delay is also a
        // `Retry-After` header, which client-go honours by retrying by itself.
        if let Some(secs) = self
            .0
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}
