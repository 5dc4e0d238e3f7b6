//! Watches: newline-delimited JSON events over a chunked response, fed by a storage watch.
//!
//! A watch from "no version" or `0` first sends the current state as ADDED events (as
//! upstream does); `sendInitialEvents=true` does the same and then marks the end of the initial
//! state with a BOOKMARK annotated `k8s.io/initial-events-end`. Selectors are applied to both
//! the new and the previous state of each change, so an object that stops matching is sent as
//! DELETED and one that starts matching as ADDED.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use storage::{ListOptions, WatchEvent, WatchOptions};

use crate::error::ApiError;
use crate::filter::Filter;
use crate::object::set_resource_version;
use crate::registry::decode_stored;
use crate::resource::Resource;
use crate::State;

/// Bookmarks go out about this often when the client allows them (upstream: about a minute).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
/// Upstream's `--min-request-timeout`: a watch without `timeoutSeconds` ends after this.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct WatchParams {
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", &api_types::status::to_json(&err.0))
}

pub async fn serve(
    state: Arc<State>,
    res: Resource,
    filter: Filter,
    params: WatchParams,
) -> Result<Response, ApiError> {
    let storage = state.registry.storage.clone();
    let prefix = res.prefix();
    let rv = params
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "0");
    let from = match rv {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        None => 0,
    };
    let initial = rv.is_none() || params.send_initial_events;

    let (initial_items, start) = if initial {
        let list = storage
            .list(
                &prefix,
                &ListOptions {
                    revision: (from > 0).then_some(from),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ApiError::from_storage(&res, "", e))?;
        (list.items, list.revision)
    } else {
        (Vec::new(), from)
    };
    let progress =
        (params.allow_bookmarks || params.send_initial_events).then_some(BOOKMARK_INTERVAL);
    let watch = storage
        .watch(WatchOptions {
            progress_interval: progress,
            ..WatchOptions::new(prefix, start)
        })
        .await;

    let mut head: Vec<Bytes> = Vec::new();
    for kv in &initial_items {
        let obj = decode_stored(kv)?;
        if filter.matches(&obj) {
            head.push(line("ADDED", &obj));
        }
    }
    let bookmark = |rev: u64, initial_end: bool| {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": res.info.kind, "apiVersion": res.info.api_version(), "metadata": meta}),
        )
    };
    if params.send_initial_events && params.allow_bookmarks {
        head.push(bookmark(start, true));
    }

    let events = match watch {
        Ok(stream) => stream,
        Err(e) => {
            // Upstream answers 200 and reports a too-old version as an ERROR event.
            let err = ApiError::from_storage(&res, "", e);
            let body = Body::from(error_line(&err));
            return Ok(ok_stream(body));
        }
    };
    let allow_bookmarks = params.allow_bookmarks;
    let res_for_events = res.clone();
    let converted = events.filter_map(move |item| {
        let out = match item {
            Ok(WatchEvent::Progress(rev)) => allow_bookmarks.then(|| bookmark(rev, false)),
            Ok(event) => to_line(&filter, event),
            Err(e) => Some(error_line(&ApiError::from_storage(&res_for_events, "", e))),
        };
        futures::future::ready(out)
    });
    let timeout = params.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let shutdown = state.shutdown.clone().cancelled_owned();
    let body_stream = futures::stream::iter(head)
        .chain(converted)
        .take_until(tokio::time::sleep(timeout))
        .take_until(shutdown)
        .map(Ok::<Bytes, Infallible>);
    Ok(ok_stream(Body::from_stream(body_stream)))
}

fn ok_stream(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn to_line(filter: &Filter, event: WatchEvent) -> Option<Bytes> {
    let decode = |kv: &storage::KeyValue| decode_stored(kv).ok();
    match event {
        WatchEvent::Created(kv) => {
            let obj = decode(&kv)?;
            filter.matches(&obj).then(|| line("ADDED", &obj))
        }
        WatchEvent::Modified { kv, prev } => {
            let obj = decode(&kv)?;
            let now = filter.matches(&obj);
            let before = filter.is_empty()
                || serde_json::from_slice::<Value>(&prev)
                    .map(|p| filter.matches(&p))
                    .unwrap_or(false);
            match (before, now) {
                (true, true) => Some(line("MODIFIED", &obj)),
                (false, true) => Some(line("ADDED", &obj)),
                (true, false) => Some(line("DELETED", &obj)),
                (false, false) => None,
            }
        }
        WatchEvent::Deleted(kv) => {
            let mut obj: Value = serde_json::from_slice(&kv.value).ok()?;
            set_resource_version(&mut obj, kv.mod_revision);
            filter.matches(&obj).then(|| line("DELETED", &obj))
        }
        WatchEvent::Progress(_) => None,
    }
}
