//! Watches: newline-delimited JSON events over a chunked response, served from the
//! [watch cache](crate::cache).
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
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::cache::{self, CachedEvent, EventType, Start, Subscription};
use crate::error::ApiError;
use crate::filter::Filter;
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
    /// Send each object as a one-row `meta.k8s.io` Table (what `kubectl get -w` asks for).
    pub table: Option<(api_query::TableVersion, api_query::IncludeObject)>,
}

/// Rewrites an event line's object as a one-row Table; the first row carries the column
/// definitions, later ones do not (as upstream).
fn as_table_line(
    res: &Resource,
    line: Bytes,
    first: &mut bool,
    table: (api_query::TableVersion, api_query::IncludeObject),
) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&line) else {
        return line;
    };
    if !matches!(
        event["type"].as_str(),
        Some("ADDED" | "MODIFIED" | "DELETED")
    ) {
        return line;
    }
    let mut opts = api_query::TableOptions::at(api_query::current_time());
    opts.version = table.0;
    opts.include_object = table.1;
    opts.no_headers = !*first;
    opts.resource_version = event
        .pointer("/object/metadata/resourceVersion")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    *first = false;
    let object = event["object"].take();
    event["object"] = api_query::to_table(res.info, std::slice::from_ref(&object), &opts);
    let mut out = serde_json::to_vec(&event).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// An event line of a stored core Event as the events.k8s.io/v1 object.
fn events_v1_line(line: Bytes) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&line) else {
        return line;
    };
    if !matches!(
        event["type"].as_str(),
        Some("ADDED" | "MODIFIED" | "DELETED")
    ) {
        return line;
    }
    event["object"] = crate::events::to_events_v1(&event["object"]);
    let mut out = serde_json::to_vec(&event).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn error_line(err: &ApiError) -> Bytes {
    let object = serde_json::to_vec(&api_types::status::to_json(&err.0)).unwrap_or_default();
    cache::watch_line("ERROR", &object)
}

fn bookmark(res: &Resource, rev: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object =
        json!({"kind": res.info.kind, "apiVersion": res.info.api_version(), "metadata": meta});
    cache::watch_line("BOOKMARK", &serde_json::to_vec(&object).unwrap_or_default())
}

fn ok_stream(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub async fn serve(
    state: Arc<State>,
    res: Resource,
    filter: Filter,
    params: WatchParams,
) -> Result<Response, ApiError> {
    let rv = params
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "0");
    let from = match rv {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        ),
        None => None,
    };
    let consistent = params.resource_version.as_deref().unwrap_or("").is_empty();
    if consistent {
        state.cache.sync_to_store().await;
    }
    let start = match (from, params.send_initial_events) {
        (None, _) | (Some(_), true) => Start::Now,
        (Some(from), false) => Start::After(from),
    };
    if let Some(from) = from {
        // A client may watch from a revision the cache has not applied yet.
        state.cache.wait_for(from, Duration::from_secs(3)).await;
    }
    // The events.k8s.io view watches the stored core Events and converts each line.
    let events_v1 = crate::events::is_events_v1(res.info);
    let stored_in = if events_v1 {
        crate::events::storage_resource(&res)?
    } else {
        res.clone()
    };
    let resource_prefix = stored_in.info.storage_prefix();
    let scope = stored_in.prefix();
    let sub = match state.cache.subscribe(&resource_prefix, &scope, start) {
        Ok(sub) => sub,
        Err(cache::WatchError::Expired { requested, oldest }) => {
            // Upstream answers 200 and reports a too-old version as an ERROR event.
            let err =
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"));
            return Ok(ok_stream(Body::from(error_line(&err))));
        }
    };
    let mut head = Vec::new();
    for obj in &sub.initial {
        if filter.matches_cached(obj) {
            head.push(cache::watch_line("ADDED", &obj.json));
        }
    }
    for event in &sub.replay {
        if let Some(line) = to_line(&filter, event) {
            head.push(line);
        }
    }
    if params.send_initial_events && params.allow_bookmarks {
        head.push(bookmark(&res, sub.revision, true));
    }
    let live = Live {
        sub,
        filter,
        scope,
        res: res.clone(),
        cache: state.cache.clone(),
        bookmarks: params.allow_bookmarks.then(|| {
            let mut t = tokio::time::interval_at(
                tokio::time::Instant::now() + BOOKMARK_INTERVAL,
                BOOKMARK_INTERVAL,
            );
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        }),
    };
    let live = futures::stream::unfold(live, |mut l| async move { l.next().await.map(|b| (b, l)) });
    let timeout = params.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let shutdown = state.shutdown.clone().cancelled_owned();
    let mut first = true;
    let table = params.table;
    let guard = state.metrics.watcher(res.info.group, res.info.kind);
    let body = futures::stream::iter(head)
        .chain(live)
        .take_until(tokio::time::sleep(timeout))
        .take_until(shutdown)
        .map(move |line| {
            let _counted = &guard;
            let line = if events_v1 {
                events_v1_line(line)
            } else {
                line
            };
            match table {
                Some(t) => as_table_line(&res, line, &mut first, t),
                None => line,
            }
        })
        .map(Ok::<Bytes, Infallible>);
    Ok(ok_stream(Body::from_stream(body)))
}

/// The live part of one watch.
struct Live {
    sub: Subscription,
    filter: Filter,
    scope: String,
    res: Resource,
    cache: Arc<cache::WatchCache>,
    bookmarks: Option<tokio::time::Interval>,
}

impl Live {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let received = match &mut self.bookmarks {
                Some(t) => tokio::select! {
                    r = self.sub.live.recv() => Some(r),
                    _ = t.tick() => None,
                    _ = self.sub.epoch.changed() => return None,
                },
                None => tokio::select! {
                    r = self.sub.live.recv() => Some(r),
                    _ = self.sub.epoch.changed() => return None,
                },
            };
            match received {
                Some(Ok(event)) => {
                    if event.revision <= self.sub.skip_through
                        || !event.object.key.starts_with(&self.scope)
                    {
                        continue;
                    }
                    if let Some(line) = to_line(&self.filter, &event) {
                        return Some(line);
                    }
                }
                // Too slow for the fan-out: end the watch; the client re-watches and, if its
                // revision is gone by then, re-lists.
                Some(Err(RecvError::Lagged(_))) | Some(Err(RecvError::Closed)) => return None,
                None => {
                    // Everything up to the cache's revision has been delivered when nothing is
                    // queued for this watcher.
                    let rev = self.cache.revision();
                    if self.sub.live.is_empty() {
                        return Some(bookmark(&self.res, rev, false));
                    }
                }
            }
        }
    }
}

fn to_line(filter: &Filter, event: &CachedEvent) -> Option<Bytes> {
    match event.kind {
        EventType::Added | EventType::Deleted => filter
            .matches_cached(&event.object)
            .then(|| event.line(event.kind)),
        EventType::Modified => {
            let now = filter.matches_cached(&event.object);
            let before = filter.is_empty()
                || event
                    .prev
                    .as_ref()
                    .is_some_and(|p| filter.matches_cached(p));
            match (before, now) {
                (true, true) => Some(event.line(EventType::Modified)),
                (false, true) => Some(event.line(EventType::Added)),
                (true, false) => Some(event.line(EventType::Deleted)),
                (false, false) => None,
            }
        }
    }
}
