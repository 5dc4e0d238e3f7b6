//! Small readers over stored JSON objects, and the formatting helpers the printers share.
//!
//! Printers read objects as `serde_json::Value` (the API server never deserializes into typed
//! structs on the hot path), so every read tolerates a missing or mistyped field by falling
//! back to the Go zero value, which is what upstream's typed printers see for an unset field.

use api_types::k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::duration::human_duration;

/// What every printer needs besides the object.
pub(crate) struct Ctx {
    /// "Now" for AGE and other relative times; passed in so output is reproducible.
    pub now: Timestamp,
}

impl Ctx {
    /// Upstream `translateTimestampSince`: the age of `t`, or `<unknown>` when unset.
    pub fn since(&self, t: Option<Timestamp>) -> String {
        match t {
            None => "<unknown>".to_string(),
            Some(t) => human_duration(self.now.as_nanosecond() - t.as_nanosecond()),
        }
    }

    /// The AGE cell: time since `metadata.creationTimestamp`.
    pub fn age(&self, obj: &Value) -> String {
        self.since(ts(obj, "/metadata/creationTimestamp"))
    }
}

/// The string at a JSON pointer, `""` when absent or not a string.
pub(crate) fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The string at a JSON pointer, if present and non-null.
pub(crate) fn opt_s<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The integer at a JSON pointer, 0 when absent.
pub(crate) fn i(v: &Value, pointer: &str) -> i64 {
    opt_i(v, pointer).unwrap_or(0)
}

/// The integer at a JSON pointer, if present.
pub(crate) fn opt_i(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// The boolean at a JSON pointer, false when absent.
pub(crate) fn b(v: &Value, pointer: &str) -> bool {
    opt_b(v, pointer).unwrap_or(false)
}

/// The boolean at a JSON pointer, if present.
pub(crate) fn opt_b(v: &Value, pointer: &str) -> Option<bool> {
    v.pointer(pointer).and_then(Value::as_bool)
}

/// The array at a JSON pointer, empty when absent.
pub(crate) fn arr<'v>(v: &'v Value, pointer: &str) -> &'v [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// Whether the JSON pointer names a present, non-null value (Go's `!= nil` on a pointer field).
pub(crate) fn present(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).is_some_and(|x| !x.is_null())
}

/// The number of entries of the object at a JSON pointer (Go's `len(map)`).
pub(crate) fn map_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

/// The RFC 3339 timestamp at a JSON pointer; `None` when absent or unparseable, which is how
/// upstream's zero `metav1.Time` reads.
pub(crate) fn ts(v: &Value, pointer: &str) -> Option<Timestamp> {
    opt_s(v, pointer).and_then(|t| t.parse::<Timestamp>().ok())
}

/// An `IntOrString` as upstream's `String()` prints it.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A resource quantity (`"10Gi"`, or a bare number) as stored.
pub(crate) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// Upstream `layoutContainerCells`: container names and images, each joined with `,`.
pub(crate) fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Upstream `listWithMoreString`: up to `max` entries, `+ N more...`, or `<unset>`.
pub(crate) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        "<unset>".to_string()
    } else {
        ret
    }
}

/// Upstream's load balancer status stringers (wide form, which the server always uses): the
/// sorted, de-duplicated IPs (or hostnames when an entry has no IP), joined with `,`.
pub(crate) fn load_balancer_ingress(ingress: &[Value]) -> String {
    let mut out: Vec<&str> = ingress
        .iter()
        .filter_map(|e| {
            let ip = s(e, "/ip");
            let host = s(e, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out.join(",")
}

/// `<none>` for an empty string, as many printers render unset fields.
pub(crate) fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".to_string()
    } else {
        v.to_string()
    }
}
