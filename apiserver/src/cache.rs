//! The watch cache: every stored object in memory, fed by one storage watch, serving watches
//! and lists without touching storage.
//!
//! # Why one storage watch for everything
//! Upstream runs one cache per resource. Here a single watch on `/registry/` feeds one cache,
//! so the cache's revision *is* the store's revision: a consistent list (no resourceVersion)
//! reads the store's current revision, waits until the cache has applied it (normally
//! already true, at worst a few milliseconds), and is then served from memory. Per-resource
//! caches could not know that a newer revision belongs to another resource without extra
//! progress requests.
//!
//! # What is kept
//! Each object once, as its JSON bytes with `resourceVersion` stamped, plus its labels and
//! the fields selectors ask about — never a parsed tree, which costs several times the JSON.
//! A list is its items' bytes joined; a watch event is encoded once, however many watchers
//! receive it. Each resource keeps a bounded history of events for watches that resume from
//! a recent revision; older ones get 410 Expired and re-list, as upstream.
//!
//! # Fan-out
//! One broadcast channel per resource. A watcher that falls behind the channel's capacity
//! is cut off (its stream ends with 410 Expired) rather than allowed to hold memory or slow
//! anyone else.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::Value;
use storage::{ListOptions, Revision, Storage, WatchEvent, WatchOptions};
use tokio::sync::{broadcast, watch};

use crate::object::set_resource_version;

/// Events per resource kept for watches resuming from an older revision.
const HISTORY: usize = 10_000;
/// Undelivered events a watcher may fall behind before it is cut off.
const FANOUT_CAPACITY: usize = 10_000;

/// One object as the cache holds it.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    /// The object's JSON, `metadata.resourceVersion` included.
    pub json: Bytes,
    pub labels: BTreeMap<String, String>,
    /// Values of the fields selectors may ask about (`metadata.name`, `spec.nodeName`, ...).
    pub fields: BTreeMap<String, String>,
}

impl CachedObject {
    fn new(key: String, value: &[u8], mod_revision: Revision) -> Option<Self> {
        let indexed = indexed_part(value).ok()?;
        let json = match splice_resource_version(value, mod_revision) {
            Some(json) => json,
            None => {
                let mut obj: Value = serde_json::from_slice(value).ok()?;
                set_resource_version(&mut obj, mod_revision);
                Bytes::from(serde_json::to_vec(&obj).ok()?)
            }
        };
        Some(CachedObject {
            labels: crate::object::labels(&indexed),
            fields: crate::filter::selectable_fields(&key, &indexed),
            key,
            json,
        })
    }
}

/// The part of a stored object the cache indexes, parsed without building the rest: every
/// scalar up to two levels deep (`type`, `spec.nodeName`, `involvedObject.kind`, …), plus
/// `metadata.labels` and `status.podIPs` whole. Field selectors read nothing deeper, and
/// building the full tree of every written object (containers, managedFields) was a tenth of
/// the API server's CPU under a create load. The rest is still checked to be valid JSON.
fn indexed_part(value: &[u8]) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(value);
    let v = Prune {
        parent: None,
        depth: 0,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(v.unwrap_or(Value::Null))
}

/// [`indexed_part`]'s visitor at one level: `None` for a value left out.
#[derive(Clone, Copy)]
struct Prune<'p> {
    /// The top-level key this value is under (for depth 1 and 2).
    parent: Option<&'p str>,
    depth: u8,
}

impl<'de> serde::de::DeserializeSeed<'de> for Prune<'_> {
    type Value = Option<Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Prune<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<Option<Value>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Option<Value>, A::Error> {
        if self.depth >= 2 {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(None);
        }
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let whole = self.depth == 1
                && matches!(
                    (self.parent, key.as_str()),
                    (Some("metadata"), "labels") | (Some("status"), "podIPs")
                );
            let value = if whole {
                Some(map.next_value::<Value>()?)
            } else {
                map.next_value_seed(Prune {
                    parent: Some(self.parent.unwrap_or(key.as_str())),
                    depth: self.depth + 1,
                })?
            };
            if let Some(v) = value {
                out.insert(key, v);
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

/// The kinds of change a watcher is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, as broadcast to watchers of its resource.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    pub kind: EventType,
    /// The object after the change (for deletes: its last state, at the delete's revision).
    pub object: Arc<CachedObject>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<CachedObject>>,
    lines: [OnceLock<Bytes>; 3],
}

impl CachedEvent {
    fn new(
        revision: Revision,
        kind: EventType,
        object: Arc<CachedObject>,
        prev: Option<Arc<CachedObject>>,
    ) -> Self {
        CachedEvent {
            revision,
            kind,
            object,
            prev,
            lines: Default::default(),
        }
    }

    /// `{"type":..,"object":..}\n` for this event as `as_type`, encoded once per type.
    pub fn line(&self, as_type: EventType) -> Bytes {
        let slot = match as_type {
            EventType::Added => &self.lines[0],
            EventType::Modified => &self.lines[1],
            EventType::Deleted => &self.lines[2],
        };
        slot.get_or_init(|| watch_line(as_type.as_str(), &self.object.json))
            .clone()
    }
}

/// Inserts `"resourceVersion":"<rev>"` at the start of the top-level `metadata` object of
/// stored JSON, which never carries one, instead of re-encoding the whole object. Stored
/// objects are encoded by the registry from typed structs, so `metadata` comes right after
/// `apiVersion` and `kind` and is the first `"metadata":{` in the text.
fn splice_resource_version(stored: &[u8], rev: Revision) -> Option<Bytes> {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    let at = stored.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    // Only trust the position if everything before it is the top-level apiVersion/kind.
    let before = &stored[..at];
    if before.iter().filter(|b| **b == b'{').count() != 2 {
        return None;
    }
    let field = format!("\"resourceVersion\":\"{rev}\"");
    let empty = stored.get(at) == Some(&b'}');
    let mut out = Vec::with_capacity(stored.len() + field.len() + 1);
    out.extend_from_slice(&stored[..at]);
    out.extend_from_slice(field.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at..]);
    Some(Bytes::from(out))
}

/// Encodes a watch line around already-encoded object JSON.
pub fn watch_line(kind: &str, object_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object_json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object_json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

struct ResourceState {
    history: VecDeque<Arc<CachedEvent>>,
    /// The history holds every event of this resource after this revision.
    complete_since: Revision,
    tx: broadcast::Sender<Arc<CachedEvent>>,
}

struct Inner {
    objects: BTreeMap<String, Arc<CachedObject>>,
    resources: HashMap<String, ResourceState>,
    revision: Revision,
    /// Revision the cache started from (after its initial list).
    started_at: Revision,
}

/// The cache. Cheap to share behind an `Arc`.
pub struct WatchCache {
    inner: RwLock<Inner>,
    revision_tx: watch::Sender<Revision>,
    storage: Arc<dyn Storage>,
    /// Bumped each time the cache restarts from a fresh list; watchers of an older epoch end.
    epoch: watch::Sender<u64>,
    /// Cancelled when the cache is dropped, so its follower lets go of the storage watch (and
    /// with it the embedded store's file).
    dropped: tokio_util::sync::CancellationToken,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.dropped.cancel();
    }
}

/// `/registry/<group>/<plural>/` of a key.
pub fn resource_prefix(key: &str) -> Option<&str> {
    let mut slashes = 0;
    for (i, b) in key.bytes().enumerate() {
        if b == b'/' {
            slashes += 1;
            if slashes == 4 {
                return Some(&key[..=i]);
            }
        }
    }
    None
}

/// What a watch asks the cache for.
pub enum Start {
    /// Current state as ADDED events, then changes.
    Now,
    /// Changes after this revision.
    After(Revision),
}

/// Why a watch could not start.
pub enum WatchError {
    /// The revision is older than the cache's history.
    Expired {
        requested: Revision,
        oldest: Revision,
    },
}

/// A watch's starting material: the initial items or replayed events, and the live feed.
pub struct Subscription {
    pub initial: Vec<Arc<CachedObject>>,
    pub replay: Vec<Arc<CachedEvent>>,
    /// Events at or below this revision are covered by `initial`/`replay`: skip them live.
    pub skip_through: Revision,
    pub live: broadcast::Receiver<Arc<CachedEvent>>,
    pub epoch: watch::Receiver<u64>,
    pub revision: Revision,
}

impl WatchCache {
    /// Loads every object and starts following the store. Returns once the cache is ready.
    /// Loads the cache and starts following storage. The returned task ends once the cache
    /// is dropped and its storage watch released (what a clean stop waits for).
    pub async fn start(
        storage: Arc<dyn Storage>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), storage::Error> {
        let (revision_tx, _) = watch::channel(0);
        let (epoch, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                resources: HashMap::new(),
                revision: 0,
                started_at: 0,
            }),
            revision_tx,
            storage,
            epoch,
            dropped: tokio_util::sync::CancellationToken::new(),
        });
        let stream = cache.load().await?;
        let follower = Arc::downgrade(&cache);
        let dropped = cache.dropped.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = follow(follower, stream) => {}
                _ = dropped.cancelled() => {}
            }
        });
        Ok((cache, task))
    }

    /// Lists everything into the cache and opens the storage watch after that list.
    async fn load(&self) -> Result<storage::WatchStream, storage::Error> {
        let mut objects = BTreeMap::new();
        let mut opts = ListOptions {
            limit: Some(5_000),
            ..Default::default()
        };
        let revision = loop {
            let page = self.storage.list("/registry/", &opts).await?;
            for kv in page.items {
                if let Some(obj) = CachedObject::new(kv.key.clone(), &kv.value, kv.mod_revision) {
                    objects.insert(kv.key, Arc::new(obj));
                }
            }
            match page.continue_token {
                Some(t) => opts.continue_token = Some(t),
                None => break page.revision,
            }
        };
        let stream = self
            .storage
            .watch(WatchOptions {
                progress_interval: Some(Duration::from_secs(1)),
                buffer: 100_000,
                ..WatchOptions::new("/registry/", revision)
            })
            .await?;
        {
            let mut inner = self.inner.write();
            inner.objects = objects;
            // Old subscribers belong to the previous epoch: their channels close here.
            inner.resources.clear();
            inner.revision = revision;
            inner.started_at = revision;
        }
        self.epoch.send_modify(|e| *e += 1);
        self.revision_tx.send_replace(revision);
        Ok(stream)
    }

    fn apply(&self, event: WatchEvent) {
        let mut inner = self.inner.write();
        let revision = event.revision();
        let cached = match event {
            WatchEvent::Progress(_) => None,
            WatchEvent::Created(kv) | WatchEvent::Modified { kv, .. } => {
                CachedObject::new(kv.key.clone(), &kv.value, kv.mod_revision).map(|obj| {
                    let obj = Arc::new(obj);
                    let prev = inner.objects.insert(kv.key.clone(), obj.clone());
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    CachedEvent::new(revision, kind, obj, prev)
                })
            }
            WatchEvent::Deleted(kv) => {
                let prev = inner.objects.remove(&kv.key);
                CachedObject::new(kv.key.clone(), &kv.value, kv.mod_revision)
                    .map(|obj| CachedEvent::new(revision, EventType::Deleted, Arc::new(obj), prev))
            }
        };
        if let Some(event) = cached {
            if let Some(prefix) = resource_prefix(&event.object.key).map(str::to_string) {
                let started_at = inner.started_at;
                let state = inner
                    .resources
                    .entry(prefix)
                    .or_insert_with(|| ResourceState {
                        history: VecDeque::new(),
                        complete_since: started_at,
                        tx: broadcast::channel(FANOUT_CAPACITY).0,
                    });
                let event = Arc::new(event);
                if state.history.len() >= HISTORY {
                    if let Some(old) = state.history.pop_front() {
                        state.complete_since = old.revision;
                    }
                }
                state.history.push_back(event.clone());
                let _ = state.tx.send(event);
            }
        }
        if revision > inner.revision {
            inner.revision = revision;
            drop(inner);
            self.revision_tx.send_replace(revision);
        }
    }

    /// The storage the cache follows.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// The cache's revision.
    pub fn revision(&self) -> Revision {
        self.inner.read().revision
    }

    /// Waits until the cache has applied the store's current revision, so what it serves is
    /// as fresh as a read from the store. `false` if it did not catch up in time.
    pub async fn sync_to_store(&self) -> bool {
        let Ok(current) = self.storage.current_revision().await else {
            return false;
        };
        self.wait_for(current, Duration::from_secs(3)).await
    }

    /// Waits until the cache has reached `revision`.
    pub async fn wait_for(&self, revision: Revision, limit: Duration) -> bool {
        let mut rx = self.revision_tx.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// One object, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.inner.read().objects.get(key).cloned()
    }

    /// The objects under `prefix` in key order, at the cache's current revision.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let inner = self.inner.read();
        let items = inner
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision)
    }

    /// Subscribes to the resource `resource_prefix` (as [`resource_prefix`] spells it).
    pub fn subscribe(
        &self,
        resource_prefix: &str,
        scope: &str,
        start: Start,
    ) -> Result<Subscription, WatchError> {
        let mut inner = self.inner.write();
        let started_at = inner.started_at;
        let revision = inner.revision;
        let state = inner
            .resources
            .entry(resource_prefix.to_string())
            .or_insert_with(|| ResourceState {
                history: VecDeque::new(),
                complete_since: started_at,
                tx: broadcast::channel(FANOUT_CAPACITY).0,
            });
        let live = state.tx.subscribe();
        let (initial, replay, skip_through) = match start {
            Start::Now => (Vec::new(), Vec::new(), revision),
            Start::After(from) => {
                if from < state.complete_since {
                    return Err(WatchError::Expired {
                        requested: from,
                        oldest: state.complete_since,
                    });
                }
                let replay: Vec<_> = state
                    .history
                    .iter()
                    .filter(|e| e.revision > from && e.object.key.starts_with(scope))
                    .cloned()
                    .collect();
                (Vec::new(), replay, revision.max(from))
            }
        };
        let initial = if matches!(start, Start::Now) {
            inner
                .objects
                .range::<str, _>((std::ops::Bound::Included(scope), std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(scope))
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            initial
        };
        Ok(Subscription {
            initial,
            replay,
            skip_through,
            live,
            epoch: self.epoch.subscribe(),
            revision,
        })
    }
}

/// Applies storage events to the cache until it is dropped; on a broken or expired storage
/// watch, re-lists and starts over (ending every watcher, who re-list too).
async fn follow(cache: std::sync::Weak<WatchCache>, mut stream: storage::WatchStream) {
    loop {
        let item = stream.next().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match item {
            Some(Ok(event)) => cache.apply(event),
            other => {
                tracing::warn!(reason = ?other.map(|r| r.err()), "watch cache lost its storage watch; re-listing");
                loop {
                    match cache.load().await {
                        Ok(s) => {
                            stream = s;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "watch cache re-list failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefixes() {
        assert_eq!(
            resource_prefix("/registry/core/pods/default/p"),
            Some("/registry/core/pods/")
        );
        assert_eq!(
            resource_prefix("/registry/core/nodes/n1"),
            Some("/registry/core/nodes/")
        );
        assert_eq!(resource_prefix("/registry/core"), None);
    }

    /// The pruned parse indexes exactly what the full parse would, for every kind with
    /// selectable fields beyond name and namespace (each sample sets every field its kind's
    /// selectors read, among the nested parts the pruning drops).
    #[test]
    fn the_indexed_part_indexes_like_the_whole_object() {
        let containers =
            json!([{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "b"}]}]);
        let managed = json!([{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:nodeName": {}}}}]);
        let samples = [
            (
                "/registry/core/pods/default/p",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web", "tier": "x"},
                             "managedFields": managed, "annotations": {"a": "b"}},
                "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "s",
                         "serviceAccount": "legacy", "hostNetwork": true, "containers": containers,
                         "affinity": {"nodeAffinity": {"x": 1}}},
                "status": {"phase": "Running", "podIP": "10.0.0.9",
                           "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                           "nominatedNodeName": "n2", "conditions": [{"type": "Ready"}]}}),
            ),
            (
                "/registry/core/pods/default/q",
                json!({"metadata": {"name": "q", "namespace": "default"},
                "spec": {"serviceAccountName": "sa", "containers": containers},
                "status": {"podIP": "10.0.0.9"}}),
            ),
            (
                "/registry/core/nodes/n1",
                json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                "spec": {"unschedulable": true, "taints": [{"key": "k"}]},
                "status": {"capacity": {"cpu": "4"}}}),
            ),
            (
                "/registry/core/events/default/e",
                json!({"metadata": {"name": "e", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "uid": "u",
                                   "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{c}"},
                "reason": "Scheduled", "type": "Normal", "source": {"component": "kubelet", "host": "n1"},
                "reportingComponent": "kubelet", "reportingInstance": "n1", "series": {"count": 2}}),
            ),
            (
                "/registry/core/namespaces/ns",
                json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Terminating", "conditions": [{"type": "x"}]}}),
            ),
            (
                "/registry/core/secrets/default/s",
                json!({"metadata": {"name": "s", "namespace": "default"},
                "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
            ),
            (
                "/registry/core/services/default/svc",
                json!({"metadata": {"name": "svc", "namespace": "default"},
                "spec": {"clusterIP": "10.0.0.10", "type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "web"}}}),
            ),
            (
                "/registry/batch/jobs/default/j",
                json!({"metadata": {"name": "j", "namespace": "default"},
                "spec": {"template": {"spec": {"containers": containers}}}, "status": {"succeeded": 2}}),
            ),
            (
                "/registry/certificates.k8s.io/certificatesigningrequests/csr",
                json!({"metadata": {"name": "csr"},
                "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "request": "LS0t", "usages": ["client auth"]}}),
            ),
        ];
        for (key, obj) in samples {
            assert!(
                crate::cache::resource_prefix(key).is_some(),
                "not a storage key: {key}"
            );
            let bytes = serde_json::to_vec(&obj).unwrap();
            let part = indexed_part(&bytes).unwrap();
            let (full_fields, part_fields) = (
                crate::filter::selectable_fields(key, &obj),
                crate::filter::selectable_fields(key, &part),
            );
            assert!(
                full_fields.keys().any(|f| !f.starts_with("metadata.")),
                "{key}: the sample sets no kind-specific field: {full_fields:?}"
            );
            assert_eq!(part_fields, full_fields, "{key}");
            assert_eq!(
                crate::object::labels(&part),
                crate::object::labels(&obj),
                "{key}"
            );
            // Nothing nested is built.
            assert!(part.pointer("/metadata/managedFields").is_none(), "{key}");
            assert!(part.pointer("/spec/containers").is_none(), "{key}");
            assert!(part.pointer("/spec/template").is_none(), "{key}");
        }
        assert!(indexed_part(br#"{"metadata": {"name": "x"}, "spec": {"a": [1, }}"#).is_err());
        assert!(indexed_part(br#"{"metadata": {}} trailing"#).is_err());
    }

    #[test]
    fn splices_the_revision_into_metadata() {
        let stored = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}},"data":{"metadata":{}}}"#;
        let spliced = splice_resource_version(stored, 42).unwrap();
        let v: Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        assert_eq!(v["data"]["metadata"], serde_json::json!({}));
        let empty =
            splice_resource_version(br#"{"apiVersion":"v1","kind":"X","metadata":{}}"#, 7).unwrap();
        let v: Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        // Anything else falls back to a full re-encode.
        assert!(splice_resource_version(br#"{"data":{"metadata":{}}}"#, 1).is_none());
    }

    #[test]
    fn lines_wrap_the_encoded_object() {
        let line = watch_line("ADDED", br#"{"a":1}"#);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "ADDED");
        assert_eq!(v["object"]["a"], 1);
        assert!(line.ends_with(b"\n"));
    }
}
