//! `/openapi/v3`: the index and one document per group-version, generated from the resource
//! table. kubectl's default `--validate=strict` looks for each kind's PATCH operation with the
//! `x-kubernetes-group-version-kind` extension and a `fieldValidation` parameter, then lets the
//! server validate; without these documents `apply`, `create -f` and `replace` refuse to run.
//!
//! These documents carry operations only, no schemas: kubectl then computes apply patches from
//! the types compiled into it. Full schemas (for `kubectl explain`) come with `api-schema`.

use std::collections::BTreeMap;

use api_types::resources::{self, RESOURCES};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;

/// The documents, built once at start.
pub struct OpenApi {
    index: Vec<u8>,
    /// Key as in the index (`api/v1`, `apis/apps/v1`) → (document, hash).
    docs: BTreeMap<String, (Vec<u8>, String)>,
}

fn hash(bytes: &[u8]) -> String {
    // FNV-1a over the content: stable across runs, changes with the content.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn patch_operation(group: &str, version: &str, kind: &str) -> Value {
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    json!({
        "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
        "x-kubernetes-action": "patch",
        "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}],
        "requestBody": {"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }, "required": true},
        "responses": {"200": {"description": "OK"}},
    })
}

impl OpenApi {
    pub fn build() -> Self {
        let mut docs = BTreeMap::new();
        for (group, versions) in resources::groups() {
            for version in versions {
                let (key, root) = if group.is_empty() {
                    (format!("api/{version}"), format!("/api/{version}"))
                } else {
                    (
                        format!("apis/{group}/{version}"),
                        format!("/apis/{group}/{version}"),
                    )
                };
                let mut paths = serde_json::Map::new();
                for r in RESOURCES
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                {
                    let item = if r.namespaced {
                        format!("{root}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
                    } else {
                        format!("{root}/{}/{{name}}", r.plural)
                    };
                    paths.insert(
                        item,
                        json!({"patch": patch_operation(group, version, r.kind)}),
                    );
                }
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::MINOR)},
                    "paths": paths,
                    "components": {},
                });
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let h = hash(&bytes);
                docs.insert(key, (bytes, h));
            }
        }
        let paths: serde_json::Map<String, Value> = docs
            .iter()
            .map(|(k, (_, h))| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={h}")}),
                )
            })
            .collect();
        OpenApi {
            index: serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default(),
            docs,
        }
    }
}

pub async fn index(AxumState(state): AxumState<std::sync::Arc<crate::State>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.index.clone(),
    )
        .into_response()
}

/// A group-version document. With `?hash=` matching, the response is immutable and cached for
/// a year (as upstream), so kubectl does not download it again on every apply; a stale hash is
/// redirected to the current one.
pub async fn document(
    AxumState(state): AxumState<std::sync::Arc<crate::State>>,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some((doc, h)) = state.openapi.docs.get(key.trim_matches('/')) else {
        return ApiError::not_found_path().into_response();
    };
    match q.get("hash") {
        Some(asked) if asked != h => {
            let location = format!("/openapi/v3/{key}?hash={h}");
            let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Some(_) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{h}\"")),
                (header::CACHE_CONTROL, "public, immutable".to_string()),
                (header::EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT".to_string()),
                (header::VARY, "Accept".to_string()),
            ],
            doc.clone(),
        )
            .into_response(),
        None => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{h}\"")),
            ],
            doc.clone(),
        )
            .into_response(),
    }
}
