//! The three PATCH flavours: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes' strategic merge patch.
//!
//! Strategic merge patch follows the server side of apimachinery's `strategicpatch`
//! (`StrategicMergeMapPatch`, i.e. `mergeMap` with parallel lists merged and unmatched nulls
//! ignored): maps merge recursively, `null` deletes, lists whose field has
//! `x-kubernetes-patch-strategy: merge` merge by `x-kubernetes-patch-merge-key` (or as sets for
//! primitives), other lists are replaced, and the directives `$patch`, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` apply. The resulting list
//! order is upstream's too (it is observable: `kubectl get -o yaml` shows it). Where upstream
//! errors on input kubectl never sends (`$patch: merge`), this implementation accepts it as a
//! no-op; and values copied wholesale from the patch are stripped of directives, so that no
//! `$`-key can leak into a stored object.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::definitions::{Definitions, Gvk, V3_REF_PREFIX};

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document is malformed: not the JSON shape its content type requires, or a
    /// directive with a wrong value. Upstream answers 400 Bad Request.
    #[error("{0}")]
    BadPatch(String),
    /// The patch is well formed but cannot be applied to this object: a JSON-patch `test`
    /// failed or a path does not exist, a merge key is missing, lists of lists. Upstream answers
    /// 422 Unprocessable Entity.
    #[error("{0}")]
    CannotApply(String),
}

impl PatchError {
    /// The HTTP status upstream answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::BadPatch(_) => 400,
            PatchError::CannotApply(_) => 422,
        }
    }
}

fn bad(msg: impl Into<String>) -> PatchError {
    PatchError::BadPatch(msg.into())
}
fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::CannotApply(msg.into())
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` removes a member,
/// anything else (arrays included) replaces.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Applies an RFC 6902 JSON patch (a list of operations). A body that is not such a list is a
/// [`PatchError::BadPatch`]; an operation that fails (a `test` that does not match, a missing
/// path) is a [`PatchError::CannotApply`], and nothing of the patch is applied.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| bad(format!("invalid JSON patch: {e}")))?;
    let mut out = original.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| invalid(e.to_string()))?;
    Ok(out)
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PREFIX: &str = "$deleteFromPrimitiveList";
const ORDER_PREFIX: &str = "$setElementOrder";

/// What a position in an object is, as far as patching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// No schema: maps merge, lists are replaced.
    Unknown,
    /// A definition with properties (index into `PatchSchema::structs`).
    Struct(usize),
    /// A map whose values are the node at this index of `PatchSchema::nodes`.
    Map(usize),
    /// A list whose items are the node at this index of `PatchSchema::nodes`.
    List(usize),
}

/// The patch metadata of one property.
#[derive(Debug, Clone)]
struct FieldMeta {
    node: Node,
    merge: bool,
    replace: bool,
    merge_key: Option<String>,
}

/// A property as the merge sees it.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    node: Node,
    merge: bool,
    replace: bool,
    merge_key: Option<&'a str>,
}

const UNKNOWN: Field<'static> = Field {
    node: Node::Unknown,
    merge: false,
    replace: false,
    merge_key: None,
};

/// The patch metadata of every definition, compiled once from the documents' schemas so that
/// the merge and the published `x-kubernetes-patch-*` extensions cannot disagree.
#[derive(Debug)]
pub(crate) struct PatchSchema {
    structs: Vec<HashMap<String, FieldMeta>>,
    nodes: Vec<Node>,
    by_gvk: HashMap<Gvk, usize>,
}

fn ref_of(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(V3_REF_PREFIX))
}

impl PatchSchema {
    pub(crate) fn build(defs: &Definitions) -> Self {
        let index: HashMap<&str, usize> = defs
            .schemas
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let mut schema = PatchSchema {
            structs: Vec::with_capacity(index.len()),
            nodes: Vec::new(),
            by_gvk: HashMap::new(),
        };
        for def in defs.schemas.values() {
            let mut fields = HashMap::new();
            if let Some(props) = def.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let strategy = prop
                        .get("x-kubernetes-patch-strategy")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let strategies: Vec<&str> = strategy.split(',').collect();
                    fields.insert(
                        name.clone(),
                        FieldMeta {
                            node: schema.node_of(prop, &index),
                            merge: strategies.contains(&"merge"),
                            replace: strategies.contains(&"replace"),
                            merge_key: prop
                                .get("x-kubernetes-patch-merge-key")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        },
                    );
                }
            }
            schema.structs.push(fields);
        }
        for (gvk, name) in &defs.by_gvk {
            if let Some(i) = index.get(name.as_str()) {
                schema.by_gvk.insert(gvk.clone(), *i);
            }
        }
        schema
    }

    fn node_of(&mut self, prop: &Value, index: &HashMap<&str, usize>) -> Node {
        if let Some(r) = ref_of(prop) {
            return index.get(r).map_or(Node::Unknown, |i| Node::Struct(*i));
        }
        match prop.get("type").and_then(Value::as_str) {
            Some("array") => {
                let inner = prop
                    .get("items")
                    .map_or(Node::Unknown, |items| self.node_of(items, index));
                self.nodes.push(inner);
                Node::List(self.nodes.len() - 1)
            }
            Some("object") => match prop.get("additionalProperties") {
                Some(values @ Value::Object(_)) => {
                    let inner = self.node_of(values, index);
                    self.nodes.push(inner);
                    Node::Map(self.nodes.len() - 1)
                }
                _ => Node::Unknown,
            },
            _ => Node::Unknown,
        }
    }

    /// The node of a kind's top-level object; `Unknown` (plain merge semantics with directives
    /// honoured) for kinds without a schema.
    fn root(&self, group: &str, version: &str, kind: &str) -> Node {
        self.by_gvk
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map_or(Node::Unknown, |i| Node::Struct(*i))
    }

    fn field(&self, node: Node, key: &str) -> Field<'_> {
        match node {
            Node::Struct(i) => self.structs[i].get(key).map_or(UNKNOWN, |f| Field {
                node: f.node,
                merge: f.merge,
                replace: f.replace,
                merge_key: f.merge_key.as_deref(),
            }),
            Node::Map(i) => Field {
                node: self.nodes[i],
                ..UNKNOWN
            },
            Node::List(_) | Node::Unknown => UNKNOWN,
        }
    }

    fn items(&self, node: Node) -> Node {
        match node {
            Node::List(i) => self.nodes[i],
            _ => Node::Unknown,
        }
    }

    /// Whether the kind has schema metadata (its lists can merge).
    pub(crate) fn knows(&self, group: &str, version: &str, kind: &str) -> bool {
        self.root(group, version, kind) != Node::Unknown
    }

    /// Applies a strategic merge patch to an object of the given kind.
    pub(crate) fn apply(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        original: &Value,
        patch: &Value,
    ) -> Result<Value, PatchError> {
        let Value::Object(patch) = patch else {
            return Err(bad(
                "invalid strategic merge patch: the patch must be a JSON object",
            ));
        };
        let original = match original {
            Value::Object(o) => o.clone(),
            _ => Map::new(),
        };
        let node = self.root(group, version, kind);
        Ok(Value::Object(self.merge_map(
            original,
            patch.clone(),
            node,
        )?))
    }

    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        node: Node,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.remove(DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return Ok(clean_map(discard_nulls_map(patch))),
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => return Err(bad(format!("unknown patch type: {directive} in map"))),
            }
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_element_orders(&mut original, &mut patch, node)?;

        // Sorted, so that results never depend on hash order; `$deleteFromPrimitiveList/x`
        // sorts before `x`, which gives the same set either way.
        let mut keys: Vec<String> = patch.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(value) = patch.remove(&key) else {
                continue;
            };
            let (name, is_delete_list) = match key.strip_prefix(DELETE_PREFIX) {
                Some(_) => (extract_key(&key, DELETE_PREFIX)?.to_string(), true),
                None => (key, false),
            };
            if value.is_null() {
                original.remove(&name);
                continue;
            }
            let Some(current) = original.remove(&name) else {
                if !is_delete_list {
                    if let Some(v) = clean(discard_nulls(value)) {
                        original.insert(name, v);
                    }
                }
                continue;
            };
            let merged = match (current, value) {
                (Value::Object(o), Value::Object(p)) => {
                    let field = self.field(node, &name);
                    if field.replace {
                        Some(Value::Object(clean_map(discard_nulls_map(p))))
                    } else {
                        Some(Value::Object(self.merge_map(o, p, field.node)?))
                    }
                }
                (Value::Array(o), Value::Array(p)) => {
                    let field = self.field(node, &name);
                    Some(Value::Array(self.merge_list(
                        o,
                        p,
                        field,
                        is_delete_list,
                    )?))
                }
                (current, value) => {
                    if is_delete_list {
                        Some(current)
                    } else {
                        clean(discard_nulls(value))
                    }
                }
            };
            if let Some(v) = merged {
                original.insert(name, v);
            }
        }
        Ok(original)
    }

    /// `mergeSliceHandler`: merge lists merge, other lists are replaced by the patch's.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        field: Field<'_>,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        if field.merge {
            self.merge_slice(
                original,
                patch,
                self.items(field.node),
                field.merge_key,
                is_delete_list,
            )
        } else if is_delete_list {
            Ok(delete_from_slice(original, &patch))
        } else {
            Ok(clean_list(patch))
        }
    }

    /// Processes every `$setElementOrder/<list>` of `patch` together with `<list>`, as
    /// upstream's `mergePatchIntoOriginal`: merges the list, then orders it by the directive
    /// (items the directive does not name keep their relative place from the live object).
    fn merge_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        node: Node,
    ) -> Result<(), PatchError> {
        let mut keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(ORDER_PREFIX))
            .cloned()
            .collect();
        keys.sort();
        for key in keys {
            let Some(order) = patch.remove(&key) else {
                continue;
            };
            let Value::Array(order) = order else {
                return Err(bad(format!("invalid patch: {key} must be a list")));
            };
            let name = extract_key(&key, ORDER_PREFIX)?.to_string();
            let live = match original.get(&name) {
                Some(Value::Array(a)) => Some(a.clone()),
                Some(_) => return Err(bad(format!("invalid patch: {name} is not a list"))),
                None => None,
            };
            let patched = match patch.remove(&name) {
                Some(Value::Array(a)) => Some(a),
                Some(_) => return Err(bad(format!("invalid patch: {name} is not a list"))),
                None => None,
            };
            let field = self.field(node, &name);
            validate_against_order(patched.as_deref().unwrap_or(&[]), &order, field.merge_key)?;
            let kind = element_kind(
                live.as_deref().unwrap_or(&[]),
                patched.as_deref().unwrap_or(&[]),
            )?;
            let live_order = live.clone().unwrap_or_default();
            let merged = match (live, patched) {
                (Some(l), None) => l,
                (None, Some(p)) => self.merge_list(Vec::new(), p, field, false)?,
                (Some(l), Some(p)) => self.merge_list(l, p, field, false)?,
                (None, None) => continue,
            };
            let Some(kind) = kind else {
                original.insert(name, Value::Array(merged));
                continue;
            };
            let (in_order, server_only) = partition(merged, &order, field.merge_key, kind)?;
            let both = normalize_element_order(
                in_order,
                server_only,
                &order,
                &live_order,
                field.merge_key,
                kind,
            )?;
            original.insert(name, Value::Array(both));
        }
        Ok(())
    }

    /// `mergeSlice`: merges a patch list into a live list with merge semantics.
    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        items: Node,
        merge_key: Option<&str>,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        let Some(kind) = element_kind(&original, &patch)? else {
            return Ok(original);
        };
        let (original, patch, merged) = if kind == Kind::Map {
            let key = merge_key.ok_or_else(|| {
                invalid("cannot merge lists without merge key for type map".to_string())
            })?;
            let (original, patch) = merge_special_elements(original, patch, key)?;
            let merged = self.merge_by_key(original.clone(), &patch, key, items)?;
            (original, patch, merged)
        } else {
            if is_delete_list {
                return Ok(delete_from_slice(original, &patch));
            }
            let mut merged = original.clone();
            merged.extend(patch.iter().cloned());
            (original, patch, dedup(merged))
        };
        let (in_patch, server_only) = partition(merged, &patch, merge_key, kind)?;
        normalize_element_order(in_patch, server_only, &patch, &original, merge_key, kind)
    }

    /// `mergeSliceWithoutSpecialElements`: each patch element merges into the live element
    /// with the same merge-key value, or is appended.
    fn merge_by_key(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &str,
        items: Node,
    ) -> Result<Vec<Value>, PatchError> {
        for v in patch {
            let Value::Object(p) = v else {
                return Err(invalid("list element is not an object"));
            };
            let Some(wanted) = p.get(key) else {
                return Err(no_merge_key(key));
            };
            let found = original
                .iter()
                .position(|o| o.get(key).is_some_and(|x| value_eq(x, wanted)));
            match found {
                Some(i) => {
                    let Value::Object(o) = std::mem::take(&mut original[i]) else {
                        return Err(invalid(format!("value for key {i} is not a map.")));
                    };
                    original[i] = Value::Object(self.merge_map(o, p.clone(), items)?);
                }
                None => {
                    if let Some(v) = clean(discard_nulls(v.clone())) {
                        original.push(v);
                    }
                }
            }
        }
        Ok(original)
    }
}

fn no_merge_key(key: &str) -> PatchError {
    invalid(format!("map does not contain declared merge key: {key}"))
}

/// `$deleteFromPrimitiveList/finalizers` → `finalizers`.
fn extract_key<'a>(key: &'a str, prefix: &str) -> Result<&'a str, PatchError> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix && !rest.is_empty() => Ok(rest),
        _ if prefix == DELETE_PREFIX => Err(bad(
            "invalid patch format for primitive list: the directive must be $deleteFromPrimitiveList/<list>",
        )),
        _ => Err(bad(
            "invalid patch format for $setElementOrder list: the directive must be $setElementOrder/<list>",
        )),
    }
}

/// `$retainKeys: [a, b]`: the live object keeps only these keys (and the patch may set no
/// others).
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad("invalid patch format of retainKeys"));
    };
    let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PREFIX) || k.starts_with(ORDER_PREFIX) {
            continue;
        }
        if !keep.contains(k.as_str()) {
            return Err(bad("invalid patch format of retainKeys"));
        }
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// The kind of a list's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    String,
    Number,
    Bool,
    Null,
}

/// The common element kind of the lists; `None` when they are empty. Mixed kinds and lists
/// of lists are errors, as upstream.
fn element_kind(a: &[Value], b: &[Value]) -> Result<Option<Kind>, PatchError> {
    let mut kind = None;
    for v in a.iter().chain(b) {
        let k = match v {
            Value::Object(_) => Kind::Map,
            Value::String(_) => Kind::String,
            Value::Number(_) => Kind::Number,
            Value::Bool(_) => Kind::Bool,
            Value::Null => Kind::Null,
            Value::Array(_) => return Err(invalid("lists of lists are not supported")),
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(invalid("list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// JSON equality with numbers compared by value (`1` equals `1.0`), as Go's decoded
/// `float64`s compare.
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| value_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

fn dedup(list: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for v in list {
        if !out.iter().any(|o| value_eq(o, &v)) {
            out.push(v);
        }
    }
    out
}

fn delete_from_slice(current: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    current
        .into_iter()
        .filter(|v| !to_delete.iter().any(|d| value_eq(v, d)))
        .collect()
}

fn directive_of(v: &Value) -> Option<&Value> {
    v.as_object().and_then(|m| m.get(DIRECTIVE))
}

/// `mergeSliceWithSpecialElements`: applies `$patch: delete` elements (removing every live
/// element with that merge-key value) and `$patch: replace` (the patch's other elements
/// become the list); returns the live list and the patch without directive elements.
fn merge_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Some(directive) = directive_of(&v) else {
            plain.push(v);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(wanted) = v.get(key) else {
                    return Err(no_merge_key(key));
                };
                original.retain(|o| !o.get(key).is_some_and(|x| value_eq(x, wanted)));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                let mut v = v;
                if let Value::Object(m) = &mut v {
                    m.remove(DIRECTIVE);
                }
                plain.push(v);
            }
            _ => {
                return Err(bad(format!(
                    "unknown patch type: {directive} in list element"
                )))
            }
        }
    }
    if replace {
        return Ok((clean_list(plain), Vec::new()));
    }
    Ok((original, plain))
}

/// The value an element is identified by: its merge-key value, or itself for primitives.
fn identity<'a>(v: &'a Value, key: Option<&str>, kind: Kind) -> Option<&'a Value> {
    match (kind, key) {
        (Kind::Map, Some(k)) => v.get(k),
        _ => Some(v),
    }
}

fn position(list: &[Value], v: &Value, key: Option<&str>, kind: Kind) -> Option<usize> {
    let want = identity(v, key, kind);
    list.iter()
        .position(|x| match (identity(x, key, kind), want) {
            (Some(a), Some(b)) => value_eq(a, b),
            (None, None) => true,
            _ => false,
        })
}

/// Splits `merged` into the elements `by` names and the rest, keeping their order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
    kind: Kind,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        if kind == Kind::Map {
            let Some(k) = key else {
                return Err(invalid("cannot merge lists without merge key for type map"));
            };
            if !v.is_object() {
                return Err(invalid("list element is not an object"));
            }
            if v.get(k).is_none() {
                return Err(no_merge_key(k));
            }
            if by.iter().any(|b| !b.is_object()) {
                return Err(invalid("list element is not an object"));
            }
        }
        if position(by, &v, key, kind).is_some() {
            named.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((named, rest))
}

/// `normalizeElementOrder`: orders the patch's elements as the patch (or `$setElementOrder`)
/// lists them, the live-only elements as the live list does, then interleaves the two.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, key, kind)?;
    let server_only = sort_by_order(server_only, server_order, key, kind)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        key,
        kind,
    ))
}

fn sort_by_order(
    mut items: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    if kind == Kind::Map {
        let k = key.ok_or_else(|| invalid("cannot merge lists without merge key for type map"))?;
        for v in items.iter().chain(order) {
            if !v.is_object() {
                return Err(invalid("list element is not an object"));
            }
            if v.get(k).is_none() {
                return Err(no_merge_key(k));
            }
        }
    }
    items.sort_by_key(|v| position(order, v, key, kind).unwrap_or(usize::MAX));
    Ok(items)
}

/// `mergeSortedSlice`: inserts the live-only elements (`left`) among the patch's (`right`).
/// A live-only element goes before a patch element only if both are in the live list and it
/// came first there; so elements new to the list come before live-only ones that follow them.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
    kind: Kind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    position(server_order, l, key, kind),
                    position(server_order, r, key, kind),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some(v) = next {
            out.push(v);
        }
    }
    out
}

/// `validatePatchWithSetOrderList`: the patch list's elements must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_against_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), PatchError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut plain: Vec<&Value> = Vec::with_capacity(patch.len());
    for v in patch {
        if key.is_some() {
            if !v.is_object() {
                return Err(invalid("list element is not an object"));
            }
            if directive_of(v).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        plain.push(v);
    }
    let (mut p, mut o) = (0, 0);
    while p < plain.len() && o < order.len() {
        if directive_of(plain[p]).is_some() {
            p += 1;
            continue;
        }
        let equal = match key {
            None => value_eq(plain[p], &order[o]),
            Some(k) => {
                let (Some(a), Some(b)) = (plain[p].get(k), order[o].get(k)) else {
                    return Err(no_merge_key(k));
                };
                value_eq(a, b)
            }
        };
        if equal {
            p += 1;
        }
        o += 1;
    }
    if p < plain.len() && o >= order.len() {
        return Err(invalid(format!(
            "The order in patch list:\n{}\n doesn't match {ORDER_PREFIX} list:\n{}\n",
            Value::Array(patch.to_vec()),
            Value::Array(order.to_vec()),
        )));
    }
    Ok(())
}

/// Drops `null` members everywhere: a `null` in a value that does not exist yet deletes
/// nothing, and must not be stored.
fn discard_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, discard_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(discard_nulls).collect()),
        other => other,
    }
}

fn discard_nulls_map(m: Map<String, Value>) -> Map<String, Value> {
    match discard_nulls(Value::Object(m)) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_PREFIX)
        || k.starts_with(ORDER_PREFIX)
}

/// Strips directives from a value taken over from the patch: `$patch: delete` removes the
/// value (`None`), other directives are dropped.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return None;
            }
            Some(Value::Object(clean_map(m)))
        }
        Value::Array(a) => Some(Value::Array(clean_list(a))),
        other => Some(other),
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter()
        .filter(|v| {
            // An element that is nothing but a directive (`{$patch: replace}`) is no element.
            !v.as_object()
                .is_some_and(|m| !m.is_empty() && m.keys().all(|k| is_directive_key(k)))
        })
        .filter_map(clean)
        .collect()
}
