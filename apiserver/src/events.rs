//! Event expiry. Upstream stores Events with an etcd lease so they vanish after `--event-ttl`
//! (1 h); without it, every controller's and scheduler's events would grow the store forever.
//! Here a sweeper finds expired Events in the watch cache and deletes them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use storage::Storage;

use crate::cache::WatchCache;

/// Every Event is stored as a core Event; the second prefix holds events.k8s.io Events written
/// before both APIs shared one storage, which expire like the rest.
const PREFIXES: [&str; 2] = ["/registry/core/events/", "/registry/events.k8s.io/events/"];

/// The last time an Event was written to: the newest of its timestamps.
fn last_written(event: &Value) -> Option<jiff::Timestamp> {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p)?.as_str()?.parse::<jiff::Timestamp>().ok())
    .max()
}

/// Deletes every Event last written more than `ttl` before `now`; returns how many went.
pub async fn sweep(
    cache: &WatchCache,
    storage: &dyn Storage,
    ttl: Duration,
    now: jiff::Timestamp,
) -> usize {
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return 0;
    };
    let mut deleted = 0;
    for prefix in PREFIXES {
        let (objects, _) = cache.list(prefix);
        for obj in objects {
            let Ok(event) = serde_json::from_slice::<Value>(&obj.json) else {
                continue;
            };
            let expired = last_written(&event)
                .and_then(|t| t.checked_add(ttl).ok())
                .is_some_and(|deadline| deadline < now);
            if !expired {
                continue;
            }
            let rev = crate::object::resource_version(&event).and_then(Result::ok);
            // The revision precondition keeps an Event that was just updated.
            if storage.delete(&obj.key, rev).await.is_ok() {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Sweeps every `min(ttl, 1 min)` until the cache is dropped (holding only a weak reference,
/// so a stopped server releases its storage).
pub fn spawn_sweeper(cache: &Arc<WatchCache>, ttl: Duration) {
    let cache = Arc::downgrade(cache);
    let period = ttl
        .min(Duration::from_secs(60))
        .max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            let n = sweep(&cache, cache.storage(), ttl, jiff::Timestamp::now()).await;
            if n > 0 {
                tracing::debug!(deleted = n, "expired events removed");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// One Event resource behind two APIs.
//
// Upstream serves `events` of core/v1 and of events.k8s.io/v1 from one storage (the core shape
// under `/registry/events`), converting field by field (k8s.io/kubernetes
// pkg/apis/events/v1 conversion). Here the core shape under `/registry/core/events/` is the one
// stored form; an events.k8s.io request is converted on the way in and on the way out, so an
// Event written through either API is read, listed and watched through both.
// ---------------------------------------------------------------------------------------------

/// `(events.k8s.io/v1 field, core/v1 field)` of the fields that only change their name.
const RENAMED: [(&str, &str); 7] = [
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Fields both shapes spell alike.
const SHARED: [&str; 8] = [
    "metadata",
    "eventTime",
    "series",
    "reportingInstance",
    "type",
    "reason",
    "action",
    "related",
];

/// Whether a resource is the events.k8s.io view of the core Events.
pub fn is_events_v1(info: &api_types::resources::ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.plural == "events"
}

/// The core resource that stores what `res` (the events.k8s.io view) addresses.
pub fn storage_resource(
    res: &crate::resource::Resource,
) -> Result<crate::resource::Resource, crate::error::ApiError> {
    crate::resource::Resource::builtin("", "events", res.namespace.as_deref())
}

/// Moves each field named in `pairs` from its first to its second spelling; every other field
/// (including unknown ones, so that `fieldValidation` still sees them) stays as it is.
fn rename(obj: &Value, to_core: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from("Event"));
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let renamed = RENAMED.iter().find_map(|(ev, core)| {
            let (from, to) = if to_core { (ev, core) } else { (core, ev) };
            (*from == k.as_str()).then_some(*to)
        });
        match renamed {
            Some(to) => {
                out.insert(to.to_string(), v.clone());
            }
            None if SHARED.contains(&k.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            // A field only the target shape knows (`message` in an events.k8s.io body) is not
            // this shape's: dropped, as decoding drops it. Unknown fields stay, for the typed
            // decoding to report.
            None => {
                let foreign = RENAMED.iter().any(|(ev, core)| {
                    if to_core {
                        *core == k.as_str()
                    } else {
                        *ev == k.as_str()
                    }
                });
                if !foreign {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if to_core && !out.contains_key("involvedObject") {
        // Required in core/v1 (an empty reference, as upstream's zero value).
        out.insert("involvedObject".into(), Value::Object(Default::default()));
    }
    Value::Object(out)
}

/// The events.k8s.io/v1 form of a stored (core/v1) Event.
pub fn to_events_v1(core: &Value) -> Value {
    let mut out = rename(core, false, "events.k8s.io/v1");
    // Empty values upstream's conversion leaves at their zero value, which the JSON omits.
    if let Some(m) = out.as_object_mut() {
        if m.get("deprecatedSource")
            .and_then(Value::as_object)
            .is_some_and(|s| s.values().all(|v| v.as_str().is_some_and(str::is_empty)))
        {
            m.remove("deprecatedSource");
        }
        if m.get("regarding")
            .and_then(Value::as_object)
            .is_some_and(serde_json::Map::is_empty)
        {
            m.remove("regarding");
        }
    }
    out
}

/// The stored (core/v1) form of an events.k8s.io/v1 Event.
pub fn to_core(events_v1: &Value) -> Value {
    rename(events_v1, true, "v1")
}

/// A stored Event's JSON bytes as events.k8s.io/v1 JSON (the input when it is not JSON).
pub fn bytes_to_events_v1(core: &[u8]) -> bytes::Bytes {
    match serde_json::from_slice::<Value>(core) {
        Ok(v) => bytes::Bytes::from(serde_json::to_vec(&to_events_v1(&v)).unwrap_or_default()),
        Err(_) => bytes::Bytes::copy_from_slice(core),
    }
}

/// The core field a field selector of the events.k8s.io view means (upstream's field label
/// conversion: `regarding.*` → `involvedObject.*`, `reportingController` → `reportingComponent`).
pub fn core_field(field: &str) -> std::borrow::Cow<'_, str> {
    if let Some(sub) = field.strip_prefix("regarding.") {
        return format!("involvedObject.{sub}").into();
    }
    match field {
        "reportingController" => "reportingComponent".into(),
        other => other.into(),
    }
}

type Cause = (String, String, String);

fn required(path: &str) -> Cause {
    (
        path.into(),
        "Required value".into(),
        "FieldValueRequired".into(),
    )
}

fn invalid(path: &str, value: &str, msg: &str) -> Cause {
    (
        path.into(),
        format!("Invalid value: \"{value}\": {msg}"),
        "FieldValueInvalid".into(),
    )
}

fn text<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn set(obj: &Value, ptr: &str) -> bool {
    obj.pointer(ptr).is_some_and(|v| !v.is_null())
}

/// Upstream's checks on every Event that carries an `eventTime` (legacyValidateEvent's second
/// half) plus the strict ones of a create through events.k8s.io/v1 (ValidateEventCreate), on
/// the core form; field paths are the core names, as upstream reports them.
pub fn validate_v1_create(core: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if !set(core, "/eventTime") {
        causes.push(required("eventTime"));
    }
    legacy_with_event_time(core, &mut causes);
    series(core, &mut causes);
    let ty = text(core, "/type");
    if ty != "Normal" && ty != "Warning" {
        causes.push(invalid("type", "", &format!("has invalid value: {ty}")));
    }
    for (field, ptr) in [
        ("firstTimestamp", "/firstTimestamp"),
        ("lastTimestamp", "/lastTimestamp"),
    ] {
        if set(core, ptr) {
            causes.push(invalid(field, "", "needs to be unset"));
        }
    }
    if core.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        causes.push(invalid("count", "", "needs to be unset"));
    }
    if !text(core, "/source/component").is_empty() || !text(core, "/source/host").is_empty() {
        causes.push(invalid("source", "", "needs to be unset"));
    }
    causes
}

/// ValidateEventUpdate through events.k8s.io/v1: everything but the series (and metadata) is
/// immutable.
pub fn validate_v1_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if set(new, "/eventTime") {
        legacy_with_event_time(new, &mut causes);
    }
    if new.get("series") != old.get("series") {
        series(new, &mut causes);
    }
    for field in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ] {
        let empty = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        let (a, b) = (new.get(field), old.get(field));
        if a != b && !(empty(a) && empty(b)) {
            let shown = a.map(Value::to_string).unwrap_or_default();
            let shown = shown.trim_matches('"');
            causes.push(invalid(
                if field == "reportingComponent" {
                    "reportingController"
                } else {
                    field
                },
                shown,
                "field is immutable",
            ));
        }
    }
    causes
}

fn series(core: &Value, causes: &mut Vec<Cause>) {
    if let Some(s) = core.get("series").filter(|s| !s.is_null()) {
        if s.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            causes.push(invalid("series.count", "", "should be at least 2"));
        }
        if !set(s, "/lastObservedTime") {
            causes.push(required("series.lastObservedTime"));
        }
    }
}

fn legacy_with_event_time(core: &Value, causes: &mut Vec<Cause>) {
    let ns = text(core, "/metadata/namespace");
    let involved_ns = text(core, "/involvedObject/namespace");
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        causes.push(invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        ));
    }
    let controller = text(core, "/reportingComponent");
    if controller.is_empty() {
        causes.push(required("reportingController"));
    } else if !qualified_name(controller) {
        causes.push(invalid(
            "reportingController",
            controller,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ));
    }
    for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        let v = text(core, &format!("/{field}"));
        if v.is_empty() {
            causes.push(required(field));
        } else if v.len() > limit {
            causes.push(invalid(
                field,
                "",
                &format!("can have at most {limit} characters"),
            ));
        }
    }
    if text(core, "/message").len() > 1024 {
        causes.push(invalid("message", "", "can have at most 1024 characters"));
    }
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn qualified_name(s: &str) -> bool {
    let name = match s.rsplit_once('/') {
        Some((prefix, name)) => {
            let ok_prefix = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok_prefix {
                return false;
            }
            name
        }
        None => s,
    };
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_both_ways() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "note": "hello", "regarding": {"kind": "Pod", "name": "p"},
            "reportingController": "c", "reportingInstance": "i", "action": "A",
            "reason": "R", "type": "Normal", "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"},
            "deprecatedCount": 3, "deprecatedSource": {"component": "x"}});
        let core = to_core(&ev);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(core["count"], 3);
        assert_eq!(core["source"]["component"], "x");
        assert_eq!(core["series"]["count"], 2);
        assert!(core.get("note").is_none());
        assert_eq!(to_events_v1(&core), ev);
    }

    #[test]
    fn strict_create_rules() {
        let core = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {}, "type": "Normal", "reason": "R"});
        let fields: Vec<String> = validate_v1_create(&core).into_iter().map(|c| c.0).collect();
        for f in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
        ] {
            assert!(fields.contains(&f.to_string()), "{f}: {fields:?}");
        }
        assert!(qualified_name("example.com/ctl"));
        assert!(!qualified_name("-bad"));
    }
}
