//! `/openapi/v2` and `/openapi/v3`: the documents `api-schema` builds from the Kubernetes
//! types, served with upstream's caching rules. kubectl's default `--validate=strict` needs the
//! v3 documents for `apply`, `create -f` and `replace`; `kubectl explain` reads their schemas;
//! `apply -f` of a `kind: List` validates against the protobuf v2 document.

use std::collections::BTreeMap;
use std::sync::Arc;

use api_schema::OpenApi;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::State;

/// Headers of a document fetched by its content hash: it can never change, so clients may keep
/// it for a year (upstream sends the same), and kubectl stops re-downloading it on every apply.
fn immutable(content_type: &str, hash: &str, body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::ETAG, format!("\"{hash}\"")),
            (header::CACHE_CONTROL, "public, immutable".to_string()),
            (header::EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT".to_string()),
            (header::VARY, "Accept".to_string()),
        ],
        body,
    )
        .into_response()
}

pub async fn v3_index(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.v3_index().to_vec(),
    )
        .into_response()
}

/// A group-version document; a stale `?hash=` is redirected to the current one.
pub async fn v3_document(
    AxumState(state): AxumState<Arc<State>>,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some((doc, hash)) = state.openapi.v3_document(&key) else {
        return ApiError::not_found_path().into_response();
    };
    match q.get("hash") {
        Some(asked) if asked != hash => {
            let location = format!("/openapi/v3/{}?hash={hash}", key.trim_matches('/'));
            let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Some(_) => immutable("application/json", hash, doc.to_vec()),
        None => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{hash}\"")),
            ],
            doc.to_vec(),
        )
            .into_response(),
    }
}

/// The Swagger 2.0 document, as JSON or as gnostic protobuf when the client asks for it.
pub async fn v2(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let hash = state.openapi.v2_hash();
    if let Some(tag) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if tag.trim_matches('"') == hash {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    if accept.contains("com.github.proto-openapi.spec.v2") {
        (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    api_schema::V2_PROTOBUF_CONTENT_TYPE.to_string(),
                ),
                (header::ETAG, format!("\"{hash}\"")),
                (header::VARY, "Accept".to_string()),
            ],
            state.openapi.v2_protobuf().to_vec(),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{hash}\"")),
                (header::VARY, "Accept".to_string()),
            ],
            state.openapi.v2_json().to_vec(),
        )
            .into_response()
    }
}

/// Builds the documents (about 0.1 s in release), once per server.
pub fn build() -> OpenApi {
    OpenApi::build()
}
