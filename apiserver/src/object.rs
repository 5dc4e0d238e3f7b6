//! Small accessors on objects as JSON. The API server keeps objects as `serde_json::Value`
//! end to end (one code path for every kind); these helpers keep the field juggling readable.

use serde_json::{Map, Value};

/// `metadata` of an object, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|n| !n.is_empty())
}

/// The object's labels as (key, value) pairs.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_resource_version(obj: &mut Value, rev: u64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

/// The object's `metadata.resourceVersion` as a revision, if it carries a valid one.
pub fn resource_version(obj: &Value) -> Option<Result<u64, ()>> {
    meta_str(obj, "resourceVersion")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| ()))
}

/// Now, formatted as Kubernetes timestamps are (RFC 3339, second precision, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `now + secs`, formatted like [`now_rfc3339`].
pub fn in_seconds_rfc3339(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Fills in `key` with `default` if absent or null.
pub fn default_field(obj: &mut Map<String, Value>, key: &str, default: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), default);
    }
}

/// The object at `pointer`, created as empty objects along the way if missing.
pub fn ensure_object<'a>(obj: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = obj;
    for key in path {
        let map = cur.as_object_mut()?;
        if !map.get(*key).is_some_and(Value::is_object) {
            map.insert((*key).to_string(), Value::Object(Map::new()));
        }
        cur = map.get_mut(*key)?;
    }
    cur.as_object_mut()
}

/// A random lowercase suffix as upstream's `generateName` uses (no vowels, no lookalikes).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .chain(more.iter())
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
