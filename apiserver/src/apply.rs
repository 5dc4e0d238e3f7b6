//! Server-side apply and `metadata.managedFields`, after kube-apiserver 1.32's field manager
//! (sigs.k8s.io/structured-merge-diff).
//!
//! Every write records which manager set which fields. A field set is kept as a set of paths
//! whose elements are spelled as in upstream's FieldsV1 (`f:spec`, `k:{"name":"c"}` for an
//! element of a `map` list, `v:"x"` for an element of a `set` list, `i:0`), so the stored
//! `fieldsV1` is exactly a path set folded into a tree (`.` marks a node that is itself a
//! member and has members below it).
//!
//! - An **apply** (`PATCH` with `application/apply-patch+yaml`) merges the applied
//!   configuration into the live object along the schema's `x-kubernetes-list-type`,
//!   `-list-map-keys` and `-map-type`, removes what the manager applied before and no longer
//!   does (unless another manager owns it too), and refuses with a 409 to change a field
//!   another manager owns, unless forced ([`apply`]).
//! - Any other write (create, update, patch) is an **Update** by the request's
//!   `fieldManager` (or the user agent's program name): it owns what it changed, taking it
//!   from whoever owned it before ([`track_update`]). Every write does this, so it works on
//!   the folded trees directly, walking old and new objects together.
//!
//! The schemas are read from the OpenAPI v3 documents the server serves, so the list and map
//! semantics are the ones clients see.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Status, StatusCause, StatusDetails,
};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::object::now_rfc3339;
use crate::resource::Resource;

tokio::task_local! {
    /// The request's `User-Agent`, for the default field manager of a write.
    pub static USER_AGENT: String;
}

/// A path from the object's root: FieldsV1 elements (`f:spec`, `k:{"name":"c"}`, `v:"a"`).
pub type Path = Vec<String>;

/// A field set: each member path, with its value when it is a leaf (a scalar or an atomic
/// list/map), or `None` for a node owned as such (an element of a `map` list).
type Fields = BTreeMap<Path, Option<Value>>;

/// The field manager a non-apply write is recorded under: the `fieldManager` parameter, else
/// the program name the user agent starts with (`kubectl-edit/v1.32.0 (linux/amd64) …` →
/// `kubectl-edit`), as upstream defaults it.
pub fn manager_for(field_manager: Option<&str>) -> Option<String> {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return Some(m.to_string());
    }
    let ua = USER_AGENT.try_with(Clone::clone).ok()?;
    let prefix = ua.split('/').next().unwrap_or("").trim();
    Some(if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix.chars().take(128).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// The component schemas of every served group-version, and each kind's root definition.
struct Schemas {
    defs: HashMap<String, Value>,
    roots: HashMap<(String, String, String), String>,
}

static SCHEMAS: OnceLock<Schemas> = OnceLock::new();

/// [`Schemas::shape`]'s answers for the schemas in [`SCHEMAS`], by the schema node's address.
static SHAPES: OnceLock<HashMap<usize, Shape<'static>>> = OnceLock::new();

/// Reads the schemas from the served documents (once per process: they never change).
pub fn init(openapi: &api_schema::OpenApi) {
    SCHEMAS.get_or_init(|| Schemas::from(openapi));
}

fn schemas() -> &'static Schemas {
    SCHEMAS.get_or_init(|| Schemas::from(&api_schema::OpenApi::build()))
}

impl Schemas {
    fn from(openapi: &api_schema::OpenApi) -> Self {
        let mut defs = HashMap::new();
        let mut roots = HashMap::new();
        for key in openapi.v3_keys() {
            let Some((doc, _)) = openapi.v3_document(key) else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<Value>(doc) else {
                continue;
            };
            let Some(schemas) = doc
                .pointer("/components/schemas")
                .and_then(Value::as_object)
            else {
                continue;
            };
            for (name, schema) in schemas {
                if let Some(gvks) = schema
                    .get("x-kubernetes-group-version-kind")
                    .and_then(Value::as_array)
                {
                    for gvk in gvks {
                        let s = |k: &str| gvk.get(k).and_then(Value::as_str).unwrap_or("");
                        roots
                            .entry((s("group").into(), s("version").into(), s("kind").into()))
                            .or_insert_with(|| name.clone());
                    }
                }
                defs.entry(name.clone()).or_insert_with(|| schema.clone());
            }
        }
        Schemas { defs, roots }
    }

    fn root(&self, res: &Resource) -> Option<&Value> {
        let key = (
            res.info.group.to_string(),
            res.info.version.to_string(),
            res.info.kind.to_string(),
        );
        self.defs.get(self.roots.get(&key)?)
    }

    /// Follows `$ref` (bare or wrapped in `allOf`) to the definition.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let reference = schema.get("$ref").or_else(|| {
            schema
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|s| s.get("$ref"))
        });
        match reference
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| self.defs.get(n))
        {
            Some(def) => def,
            None => schema,
        }
    }

    /// How a node of this schema merges and is owned (worked out once per schema node: it
    /// takes a dozen map lookups, and every field of every write asks).
    fn shape<'a>(&'a self, schema: Option<&'a Value>) -> Shape<'a> {
        let Some(prop) = schema else {
            return Shape::Deduced;
        };
        let known = SHAPES.get_or_init(|| schemas().every_shape());
        match known.get(&(prop as *const Value as usize)) {
            Some(shape) => *shape,
            None => self.work_out_shape(prop),
        }
    }

    /// The shape of every schema node [`Schemas::shape`] can be asked about (definitions,
    /// their properties, items and additional properties, at any depth), by address.
    fn every_shape(&'static self) -> HashMap<usize, Shape<'static>> {
        let mut shapes = HashMap::new();
        let mut todo: Vec<&'static Value> = self.defs.values().collect();
        while let Some(schema) = todo.pop() {
            shapes.insert(schema as *const Value as usize, self.work_out_shape(schema));
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                todo.extend(props.values());
            }
            for below in ["items", "additionalProperties"] {
                todo.extend(schema.get(below).filter(|v| v.is_object()));
            }
        }
        shapes
    }

    fn work_out_shape<'a>(&'a self, prop: &'a Value) -> Shape<'a> {
        let def = self.resolve(prop);
        let ext = |k: &str| {
            prop.get(k)
                .or_else(|| def.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        if let Some(items) = def.get("items") {
            return match ext("x-kubernetes-list-type") {
                "map" => {
                    let keys = prop
                        .get("x-kubernetes-list-map-keys")
                        .or_else(|| def.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    Shape::ListMap(items, keys)
                }
                "set" => Shape::ListSet,
                _ => Shape::Leaf,
            };
        }
        let atomic = ext("x-kubernetes-map-type") == "atomic";
        if let Some(props) = def.get("properties").and_then(Value::as_object) {
            return if atomic {
                Shape::Leaf
            } else {
                Shape::Struct(props)
            };
        }
        if let Some(ap) = def.get("additionalProperties") {
            return if atomic {
                Shape::Leaf
            } else {
                Shape::Map(Some(ap))
            };
        }
        if def.get("type").and_then(Value::as_str) == Some("object") {
            return Shape::Map(None);
        }
        if def.get("type").is_some() || def.get("format").is_some() {
            return Shape::Leaf;
        }
        Shape::Deduced
    }

    /// The schema of a child of a struct or map node.
    fn child<'a>(&'a self, shape: &Shape<'a>, key: &str) -> Option<&'a Value> {
        match shape {
            Shape::Struct(props) => props.get(key),
            Shape::Map(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// How a node merges and is owned.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// Scalars, `atomic` lists and maps: owned and replaced whole.
    Leaf,
    /// A struct with known properties.
    Struct(&'a Map<String, Value>),
    /// A map of one value schema (or unknown ones), merged per key.
    Map(Option<&'a Value>),
    /// `x-kubernetes-list-type: map`: elements identified by their keys (the item schema and
    /// `x-kubernetes-list-map-keys`).
    ListMap(&'a Value, &'a [Value]),
    /// `x-kubernetes-list-type: set`: scalar elements identified by value.
    ListSet,
    /// No schema: maps are granular, lists atomic.
    Deduced,
}

impl Shape<'_> {
    /// The shape of a schemaless value.
    fn deduce(self, v: &Value) -> Self {
        match (self, v) {
            (Shape::Deduced, Value::Object(_)) => Shape::Map(None),
            (Shape::Deduced, _) => Shape::Leaf,
            (s, _) => s,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

fn field(name: &str) -> String {
    let mut el = String::with_capacity(name.len() + 2);
    el.push_str("f:");
    el.push_str(name);
    el
}

/// The key fields of a list-map element, by name (as a JSON object orders them), with their
/// values; `None` for a `protocol` key the element leaves out, which defaults to TCP (the one
/// defaulted key among the built-in kinds' list-map keys).
fn key_fields<'a>(elem: &'a Value, keys: &'a [Value]) -> Vec<(&'a str, Option<&'a Value>)> {
    let mut fields: Vec<(&str, Option<&Value>)> = keys
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|name| match elem.get(name) {
            Some(v) if !v.is_null() => Some((name, Some(v))),
            _ if name == "protocol" => Some((name, None)),
            _ => None,
        })
        .collect();
    fields.sort_unstable_by_key(|(name, _)| *name);
    fields.dedup_by_key(|(name, _)| *name);
    fields
}

/// Whether a list-map element has a `k:` element (is owned at all).
fn has_key(elem: &Value, keys: &[Value]) -> bool {
    keys.iter()
        .filter_map(Value::as_str)
        .any(|name| name == "protocol" || elem.get(name).is_some_and(|v| !v.is_null()))
}

/// The `k:` element of a list-map element: its key fields as a compact JSON object
/// (`k:{"containerPort":80,"protocol":"TCP"}`).
fn key_element(elem: &Value, keys: &[Value]) -> Option<String> {
    let fields = key_fields(elem, keys);
    if fields.is_empty() {
        return None;
    }
    let mut el = b"k:{".to_vec();
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            el.push(b',');
        }
        serde_json::to_writer(&mut el, name).ok()?;
        el.push(b':');
        match value {
            Some(v) => serde_json::to_writer(&mut el, v).ok()?,
            None => el.extend_from_slice(b"\"TCP\""),
        }
    }
    el.push(b'}');
    String::from_utf8(el).ok()
}

fn value_element(v: &Value) -> String {
    let mut el = b"v:".to_vec();
    // Writing a JSON value into memory cannot fail.
    let _ = serde_json::to_writer(&mut el, v);
    String::from_utf8(el).unwrap_or_default()
}

/// Upstream's human spelling of a path: `.spec.template.spec.containers[name="c"].image`.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

fn position(list: &[Value], el: &str) -> Option<usize> {
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return list.iter().position(|e| {
            key.iter().all(|(name, want)| match e.get(name) {
                Some(got) if !got.is_null() => got == want,
                _ => name == "protocol" && want == "TCP",
            })
        });
    }
    if let Some(s) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(s).ok()?;
        return list.iter().position(|e| *e == want);
    }
    el.strip_prefix("i:")?.parse().ok()
}

/// Removes the node at `path`; containers it leaves empty go too.
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut parent = &mut *v;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            parent.get_mut(f)
        } else {
            match parent.as_array().and_then(|l| position(l, el)) {
                Some(i) => parent.get_mut(i),
                None => None,
            }
        };
        match next {
            Some(n) => parent = n,
            None => return,
        }
    }
    let removed = if let Some(f) = last.strip_prefix("f:") {
        parent.as_object_mut().and_then(|m| m.remove(f)).is_some()
    } else {
        match parent.as_array().and_then(|l| position(l, last)) {
            Some(i) => parent.as_array_mut().map(|l| l.remove(i)).is_some(),
            None => false,
        }
    };
    let empty = match parent {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if removed && empty && !parent_path.is_empty() {
        remove_path(v, parent_path);
    }
}

// ---------------------------------------------------------------------------------------------
// Field sets

/// Whether a top-level field is anyone's on this write: apiVersion and kind are nobody's,
/// and for kinds with a status subresource, status is the status subresource's alone.
fn tracked_at_root(res: &Resource, subresource: Option<&str>, key: &str) -> bool {
    if matches!(key, "apiVersion" | "kind") {
        return false;
    }
    let status_only = subresource == Some("status");
    status_only == (key == "status") || res.info.subresource("status").is_none()
}

/// Metadata the server owns: nobody's.
fn server_owned(meta_key: &str) -> bool {
    matches!(
        meta_key,
        "name"
            | "namespace"
            | "uid"
            | "resourceVersion"
            | "generation"
            | "creationTimestamp"
            | "deletionTimestamp"
            | "deletionGracePeriodSeconds"
            | "managedFields"
            | "selfLink"
    )
}

/// The fields an object sets, with the leaves' values. Server-owned metadata, apiVersion,
/// kind and (for kinds with a status subresource, written through the main resource) status
/// are nobody's.
fn fields_of(res: &Resource, subresource: Option<&str>, obj: &Value) -> Fields {
    let s = schemas();
    let mut out = Fields::new();
    let root = s.root(res);
    let root_shape = s.shape(root).deduce(obj);
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        if !tracked_at_root(res, subresource, k) {
            continue;
        }
        let child = s.child(&root_shape, k);
        let path = vec![field(k)];
        if k == "metadata" {
            let meta_shape = s.shape(child).deduce(v);
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if server_owned(mk) {
                    continue;
                }
                let mut p = path.clone();
                p.push(field(mk));
                walk(s, s.child(&meta_shape, mk), mv, p, &mut out);
            }
            continue;
        }
        walk(s, child, v, path, &mut out);
    }
    out
}

/// What a value is in a field set, by its schema's shape.
enum Node<'a> {
    /// `null`: not set, no member.
    Nothing,
    /// A member owned whole, with its value: a scalar, an atomic list or map, or an empty
    /// map or list.
    Leaf(&'a Value),
    /// A struct or map with members below: `f:<key>`.
    Fields(&'a Map<String, Value>, Shape<'a>),
    /// A list map (its elements, their schema and key names): each keyed element is a
    /// member `k:{…}` with its fields below.
    Elements(&'a [Value], &'a Value, &'a [Value]),
    /// A set: each element is a member `v:<json>`.
    SetElements(&'a [Value]),
}

impl<'a> Node<'a> {
    fn of(shape: Shape<'a>, v: &'a Value) -> Self {
        if v.is_null() {
            return Node::Nothing;
        }
        match shape.deduce(v) {
            shape @ (Shape::Struct(_) | Shape::Map(_)) => match v.as_object() {
                Some(m) if !m.is_empty() => Node::Fields(m, shape),
                _ => Node::Leaf(v),
            },
            Shape::ListMap(items, keys) => match v.as_array() {
                Some(l) if !l.is_empty() => Node::Elements(l, items, keys),
                _ => Node::Leaf(v),
            },
            Shape::ListSet => match v.as_array() {
                Some(l) if !l.is_empty() => Node::SetElements(l),
                _ => Node::Leaf(v),
            },
            Shape::Leaf | Shape::Deduced => Node::Leaf(v),
        }
    }
}

fn walk(s: &Schemas, schema: Option<&Value>, v: &Value, path: Path, out: &mut Fields) {
    match Node::of(s.shape(schema), v) {
        Node::Nothing => {}
        Node::Leaf(v) => {
            out.insert(path, Some(v.clone()));
        }
        Node::Fields(m, shape) => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(field(k));
                walk(s, s.child(&shape, k), child, p, out);
            }
        }
        Node::Elements(list, items, keys) => {
            let elem_shape = s.shape(Some(items));
            for elem in list {
                let Some(k) = key_element(elem, keys) else {
                    continue;
                };
                let mut p = path.clone();
                p.push(k);
                out.insert(p.clone(), None);
                for (f, child) in elem.as_object().into_iter().flatten() {
                    let mut cp = p.clone();
                    cp.push(field(f));
                    walk(s, s.child(&elem_shape, f), child, cp, out);
                }
            }
        }
        Node::SetElements(list) => {
            for elem in list {
                let mut p = path.clone();
                p.push(value_element(elem));
                out.insert(p, Some(elem.clone()));
            }
        }
    }
}

/// Folds a path set into upstream's FieldsV1 tree.
pub fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            let child = node.entry(el.clone()).or_insert_with(|| json!({}));
            if !child.is_object() {
                *child = json!({});
            }
            let Value::Object(next) = child else {
                unreachable!("made an object above")
            };
            node = next;
        }
        node.insert(".".into(), json!({}));
    }
    // `.` only where a member also has members below it.
    fn tidy(node: &mut Map<String, Value>) {
        for child in node.values_mut() {
            if let Some(m) = child.as_object_mut() {
                tidy(m);
            }
        }
        if node.len() == 1 && node.contains_key(".") {
            node.remove(".");
        }
    }
    tidy(&mut root);
    Value::Object(root)
}

/// Unfolds a FieldsV1 tree into its path set.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut BTreeSet<Path>) {
        for (k, child) in node {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            match child.as_object() {
                Some(m) if !m.is_empty() => go(m, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Some(m) = v.as_object() {
        go(m, &mut Vec::new(), &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// managedFields entries

/// Whose a managedFields entry is and when it last changed: everything but its fields.
#[derive(Debug, Clone)]
struct Owner {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
}

impl Owner {
    /// `None` for an entry without an operation: it is dropped.
    fn of(entry: &Value) -> Option<Owner> {
        let s = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Owner {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
        })
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn to_json(&self, fields_v1: Value) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), fields_v1);
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }
}

/// A managedFields entry as apply reads it: its fields as a path set.
#[derive(Debug, Clone)]
struct Entry {
    owner: Owner,
    set: BTreeSet<Path>,
}

/// The stored managedFields entries, each with its `fieldsV1` (if an object).
fn stored_entries(obj: &Value) -> impl Iterator<Item = (Owner, Option<&Map<String, Value>>)> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((Owner::of(e)?, e.get("fieldsV1").and_then(Value::as_object))))
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    stored_entries(obj)
        .map(|(owner, fields)| Entry {
            owner,
            set: fields
                .map(|f| from_fields_v1(&Value::Object(f.clone())))
                .unwrap_or_default(),
        })
        .collect()
}

/// Stores the entries that own anything, or no managedFields if none does.
fn store_managed_fields(obj: &mut Value, list: Vec<Value>) {
    let meta = crate::object::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| e.owner.to_json(to_fields_v1(&e.set)))
        .collect();
    store_managed_fields(obj, list);
}

fn is_reset(obj: &Value) -> bool {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

// ---------------------------------------------------------------------------------------------
// Update tracking
//
// Every write goes through here, so it works on `fieldsV1` trees directly instead of path
// sets: one walk of the old and new object together yields the changed members as a tree
// (skipping equal subtrees), and one walk of each stored entry beside the new object keeps
// what is still there and unchanged. No path is materialised and no value is copied; what
// is stored is exactly what folding the path sets (`fields_of`, `from_fields_v1`,
// `to_fields_v1`) gives.

/// A field set as `fieldsV1` spells it: a member with no members below is `{}`, one with
/// members below also has `.: {}`, a node that is no member has only the members below.
type FieldsV1 = Map<String, Value>;

fn is_member(node: &FieldsV1) -> bool {
    node.is_empty() || node.contains_key(".")
}

/// Adds `node` under `el` to `tree` if it is a member or has any: `member` says whether it is
/// one itself, `node` holds the members below.
fn add_node(tree: &mut FieldsV1, el: String, mut node: FieldsV1, member: bool) {
    if member && !node.is_empty() {
        node.insert(".".into(), json!({}));
    }
    if member || !node.is_empty() {
        tree.insert(el, Value::Object(node));
    }
}

/// Adds the members of `from` to `into`.
fn union(into: &mut FieldsV1, from: FieldsV1) {
    for (el, node) in from {
        let Value::Object(mut node) = node else {
            continue;
        };
        match into.get_mut(&el).and_then(Value::as_object_mut) {
            Some(existing) => {
                let member = is_member(existing) || is_member(&node);
                existing.remove(".");
                node.remove(".");
                union(existing, node);
                if member && !existing.is_empty() {
                    existing.insert(".".into(), json!({}));
                }
            }
            None => {
                into.insert(el, Value::Object(node));
            }
        }
    }
}

/// Deep equality that also tells `-0.0` from `0.0` (their `v:`/`k:` elements differ): equal
/// subtrees have equal members with equal values and can be skipped.
fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| identical(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && identical(x, y))
        }
        _ => a == b,
    }
}

/// The members [`fields_of`] lists for `new` (on this subresource) that `old` does not have
/// with the same value: what this write changed.
fn changed_fields(
    s: &Schemas,
    res: &Resource,
    subresource: Option<&str>,
    old: Option<&Value>,
    new: &Value,
) -> FieldsV1 {
    let mut out = FieldsV1::new();
    let Some(fields) = new.as_object() else {
        return out;
    };
    let root_shape = s.shape(s.root(res)).deduce(new);
    let old_fields = old.and_then(Value::as_object);
    for (k, v) in fields {
        if !tracked_at_root(res, subresource, k) {
            continue;
        }
        let o = old_fields.and_then(|m| m.get(k));
        if o.is_some_and(|o| identical(o, v)) {
            continue;
        }
        let schema = s.child(&root_shape, k);
        let changed = if k == "metadata" {
            changed_metadata(s, schema, o, v)
        } else {
            changed_below(s, schema, o, v)
        };
        if let Some(node) = changed {
            out.insert(field(k), Value::Object(node));
        }
    }
    out
}

/// [`changed_below`] for `metadata`, whose server-owned fields are nobody's.
fn changed_metadata(
    s: &Schemas,
    schema: Option<&Value>,
    old: Option<&Value>,
    new: &Value,
) -> Option<FieldsV1> {
    let fields = new.as_object()?;
    let shape = s.shape(schema).deduce(new);
    let old_fields = old.and_then(Value::as_object);
    let mut out = FieldsV1::new();
    for (k, v) in fields {
        let o = old_fields.and_then(|m| m.get(k));
        if server_owned(k) || o.is_some_and(|o| identical(o, v)) {
            continue;
        }
        if let Some(node) = changed_below(s, s.child(&shape, k), o, v) {
            out.insert(field(k), Value::Object(node));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The members at and below a path (as [`walk`] lists them) that `new` has and `old` (the
/// old object's value at that path, if it has one) does not have with the same value, as the
/// fieldsV1 node of the path; `None` if there are none.
fn changed_below(
    s: &Schemas,
    schema: Option<&Value>,
    old: Option<&Value>,
    new: &Value,
) -> Option<FieldsV1> {
    let shape = s.shape(schema);
    let old_node = old.map(|o| Node::of(shape, o));
    match Node::of(shape, new) {
        Node::Nothing => None,
        Node::Leaf(v) => match old_node {
            Some(Node::Leaf(o)) if o == v => None,
            _ => Some(FieldsV1::new()),
        },
        Node::Fields(fields, shape) => {
            let old_fields = match old_node {
                Some(Node::Fields(m, _)) => Some(m),
                _ => None,
            };
            let mut out = FieldsV1::new();
            for (k, v) in fields {
                let o = old_fields.and_then(|m| m.get(k));
                if o.is_some_and(|o| identical(o, v)) {
                    continue;
                }
                if let Some(node) = changed_below(s, s.child(&shape, k), o, v) {
                    out.insert(field(k), Value::Object(node));
                }
            }
            (!out.is_empty()).then_some(out)
        }
        Node::Elements(list, items, keys) => {
            let old_list = match old_node {
                Some(Node::Elements(l, ..)) => l,
                _ => &[],
            };
            let out = match (keyed(list, keys), keyed(old_list, keys)) {
                (Some(new_keyed), Some(old_keyed)) => {
                    changed_elements(s, items, old_keyed, new_keyed)
                }
                // Elements sharing a key share their members: compare the merged path sets.
                _ => changed_paths(s, schema, old, new),
            };
            (!out.is_empty()).then_some(out)
        }
        Node::SetElements(list) => {
            let old_members: BTreeSet<String> = match old_node {
                Some(Node::SetElements(l)) => l.iter().map(value_element).collect(),
                _ => BTreeSet::new(),
            };
            let mut out = FieldsV1::new();
            for elem in list {
                let el = value_element(elem);
                if !old_members.contains(&el) {
                    out.insert(el, json!({}));
                }
            }
            (!out.is_empty()).then_some(out)
        }
    }
}

/// A list map's keyed elements by their `k:` element; `None` if two share one.
fn keyed<'a>(list: &'a [Value], keys: &[Value]) -> Option<BTreeMap<String, &'a Value>> {
    let mut out = BTreeMap::new();
    for elem in list {
        if let Some(k) = key_element(elem, keys) {
            if out.insert(k, elem).is_some() {
                return None;
            }
        }
    }
    Some(out)
}

/// [`changed_below`] for the elements of a list map, each matched to the old element of the
/// same key: an element is a member of its own, new if the old list lacks its key.
fn changed_elements(
    s: &Schemas,
    items: &Value,
    old: BTreeMap<String, &Value>,
    new: BTreeMap<String, &Value>,
) -> FieldsV1 {
    let elem_shape = s.shape(Some(items));
    let mut out = FieldsV1::new();
    for (k, elem) in new {
        let old_elem = old.get(&k).copied();
        if old_elem.is_some_and(|o| identical(o, elem)) {
            continue;
        }
        let mut node = FieldsV1::new();
        for (f, v) in elem.as_object().into_iter().flatten() {
            let o = old_elem.and_then(|o| o.get(f));
            if o.is_some_and(|o| identical(o, v)) {
                continue;
            }
            if let Some(below) = changed_below(s, s.child(&elem_shape, f), o, v) {
                node.insert(field(f), Value::Object(below));
            }
        }
        add_node(&mut out, k, node, old_elem.is_none());
    }
    out
}

/// [`changed_below`] by path sets, for list maps with elements sharing a key (where a later
/// element's leaf wins, as in [`fields_of`]'s map).
fn changed_paths(
    s: &Schemas,
    schema: Option<&Value>,
    old: Option<&Value>,
    new: &Value,
) -> FieldsV1 {
    let mut new_fields = Fields::new();
    walk(s, schema, new, Vec::new(), &mut new_fields);
    let mut old_fields = Fields::new();
    if let Some(old) = old {
        walk(s, schema, old, Vec::new(), &mut old_fields);
    }
    let changed: BTreeSet<Path> = new_fields
        .into_iter()
        .filter(|(p, v)| old_fields.get(p) != Some(v))
        .map(|(p, _)| p)
        .collect();
    match to_fields_v1(&changed) {
        Value::Object(tree) => tree,
        _ => FieldsV1::new(),
    }
}

/// A place in the new object that a stored entry's path leads to, to tell whether the object
/// still has the path (it is a member, or has members below, whatever the subresource).
enum At<'a> {
    /// The object.
    Root(Option<&'a Value>, &'a Value),
    /// `metadata` (its schema and value), where server-owned fields are nobody's.
    Metadata(Option<&'a Value>, &'a Value),
    /// A value (its schema and itself), with members as [`walk`] lists them.
    Value(Option<&'a Value>, &'a Value),
    /// A list-map element (the item schema and the element): a member, its fields below.
    Element(&'a Value, &'a Value),
    /// A set element: a member with nothing below.
    SetElement,
    /// List-map elements sharing a key: their members together.
    Several(Vec<At<'a>>),
}

impl<'a> At<'a> {
    /// Whether the object has this path.
    fn has_members(&self, s: &'a Schemas) -> bool {
        match self {
            At::Root(..) | At::Element(..) | At::SetElement => true,
            At::Metadata(schema, meta) => {
                let shape = s.shape(*schema).deduce(meta);
                meta.as_object().into_iter().flatten().any(|(k, v)| {
                    !server_owned(k) && At::Value(s.child(&shape, k), v).has_members(s)
                })
            }
            At::Value(schema, v) => match Node::of(s.shape(*schema), v) {
                Node::Nothing => false,
                Node::Leaf(_) | Node::SetElements(_) => true,
                Node::Fields(m, shape) => m
                    .iter()
                    .any(|(k, v)| At::Value(s.child(&shape, k), v).has_members(s)),
                Node::Elements(list, _, keys) => list.iter().any(|e| has_key(e, keys)),
            },
            At::Several(all) => all.iter().any(|at| at.has_members(s)),
        }
    }

    /// What is below this place, to look up path elements in.
    fn below(&self, s: &'a Schemas) -> Below<'a> {
        match self {
            At::Root(schema, obj) => match obj.as_object() {
                Some(m) => Below::Fields(m, s.shape(*schema).deduce(obj), Level::Root),
                None => Below::Nothing,
            },
            At::Metadata(schema, meta) => match meta.as_object() {
                Some(m) => Below::Fields(m, s.shape(*schema).deduce(meta), Level::Metadata),
                None => Below::Nothing,
            },
            At::Value(schema, v) => match Node::of(s.shape(*schema), v) {
                Node::Fields(m, shape) => Below::Fields(m, shape, Level::Inner),
                Node::Elements(list, items, keys) => Below::Elements(
                    list.iter()
                        .filter_map(|e| Some((key_element(e, keys)?, e)))
                        .collect(),
                    items,
                ),
                Node::SetElements(list) => {
                    Below::SetElements(list.iter().map(value_element).collect())
                }
                Node::Nothing | Node::Leaf(_) => Below::Nothing,
            },
            At::Element(items, elem) => match elem.as_object() {
                Some(m) => Below::Fields(m, s.shape(Some(items)), Level::Inner),
                None => Below::Nothing,
            },
            At::SetElement => Below::Nothing,
            At::Several(all) => Below::Several(all.iter().map(|at| at.below(s)).collect()),
        }
    }
}

/// Where a struct or map is, for which of its fields are anyone's.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Metadata,
    Inner,
}

/// The children of a place in the new object, by path element.
enum Below<'a> {
    Nothing,
    /// A struct or map (its fields and shape).
    Fields(&'a Map<String, Value>, Shape<'a>, Level),
    /// A list map's keyed elements, with the item schema.
    Elements(Vec<(String, &'a Value)>, &'a Value),
    /// A set's `v:` elements.
    SetElements(Vec<String>),
    Several(Vec<Below<'a>>),
}

impl<'a> Below<'a> {
    /// The place the path element `el` leads to, if the object has it.
    fn get(&self, s: &'a Schemas, el: &str) -> Option<At<'a>> {
        match self {
            Below::Nothing => None,
            Below::Fields(fields, shape, level) => {
                let k = el.strip_prefix("f:")?;
                let owned = match level {
                    Level::Root => !matches!(k, "apiVersion" | "kind"),
                    Level::Metadata => !server_owned(k),
                    Level::Inner => true,
                };
                let v = fields.get(k).filter(|_| owned)?;
                let schema = s.child(shape, k);
                Some(if *level == Level::Root && k == "metadata" {
                    At::Metadata(schema, v)
                } else {
                    At::Value(schema, v)
                })
            }
            Below::Elements(keyed, items) => several(
                keyed
                    .iter()
                    .filter(|(k, _)| k == el)
                    .map(|(_, e)| At::Element(items, e))
                    .collect(),
            ),
            Below::SetElements(members) => {
                members.iter().any(|m| m == el).then_some(At::SetElement)
            }
            Below::Several(all) => several(all.iter().filter_map(|b| b.get(s, el)).collect()),
        }
    }
}

fn several(mut found: Vec<At<'_>>) -> Option<At<'_>> {
    match found.len() {
        0 => None,
        1 => found.pop(),
        _ => Some(At::Several(found)),
    }
}

/// What of a stored entry's fields (`stored`, the fieldsV1 node of a path) the new object
/// still has (`at`, where the path is in it) and this write did not change (`changed`, the
/// changed fields' node of the path), as the fieldsV1 node of the path.
fn kept_below(s: &Schemas, stored: &FieldsV1, at: &At<'_>, changed: Option<&FieldsV1>) -> FieldsV1 {
    let below = at.below(s);
    let mut out = FieldsV1::new();
    for (el, child) in stored {
        if el == "." {
            continue;
        }
        // Not in the object: neither is anything below.
        let Some(child_at) = below.get(s, el) else {
            continue;
        };
        let child_changed = changed.and_then(|c| c.get(el)).and_then(Value::as_object);
        let (member, node) = match child.as_object() {
            Some(m) if !m.is_empty() => (
                m.contains_key("."),
                kept_below(s, m, &child_at, child_changed),
            ),
            _ => (true, FieldsV1::new()),
        };
        let kept = member && !child_changed.is_some_and(is_member) && child_at.has_members(s);
        add_node(&mut out, el.clone(), node, kept);
    }
    out
}

/// Records a non-apply write (create, update, patch, subresource) in `new`'s managedFields:
/// `manager` owns every field it changed, taken from whoever owned it; fields the object no
/// longer has are nobody's. `[{}]` in the written object clears managedFields (upstream's
/// reset); any other managedFields the client sent are ignored, the stored ones kept.
pub fn track_update(
    res: &Resource,
    subresource: Option<&str>,
    manager: &str,
    old: Option<&Value>,
    new: &mut Value,
) {
    if is_reset(new) {
        crate::object::meta_mut(new).remove("managedFields");
        return;
    }
    let s = schemas();
    // Entries the client rewrote (kubectl's client-side to server-side apply migration does,
    // by a JSON patch) are taken as given; otherwise the stored ones are kept.
    let sent = new.pointer("/metadata/managedFields");
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let rewritten = matches!(sent, Some(Value::Array(list)) if !list.is_empty()) && sent != stored;
    let changed = changed_fields(s, res, subresource, old, new);
    // Earlier owners keep what is still there and this write did not change.
    let source = if rewritten { Some(&*new) } else { old };
    let at = At::Root(s.root(res), new);
    let mut entries: Vec<(Owner, FieldsV1)> = source
        .into_iter()
        .flat_map(stored_entries)
        .map(|(owner, fields)| {
            let kept = fields
                .map(|f| kept_below(s, f, &at, Some(&changed)))
                .unwrap_or_default();
            (owner, kept)
        })
        .collect();
    if !changed.is_empty() {
        let now = now_rfc3339();
        match entries
            .iter_mut()
            .find(|(owner, _)| owner.is(manager, "Update", subresource))
        {
            Some((owner, fields)) => {
                union(fields, changed);
                owner.time = Some(now);
                owner.api_version = res.info.api_version();
            }
            None => entries.push((
                Owner {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: res.info.api_version(),
                    time: Some(now),
                    subresource: subresource.map(str::to_string),
                },
                changed,
            )),
        }
    }
    let list = entries
        .into_iter()
        .filter(|(_, fields)| !fields.is_empty())
        .map(|(owner, fields)| owner.to_json(Value::Object(fields)))
        .collect();
    store_managed_fields(new, list);
    match old {
        Some(old) if !rewritten => keep_if_unchanged(old, new),
        _ => {}
    }
}

/// When a non-apply write changed nothing but managedFields, what is stored stays: a no-op
/// write stays a no-op (upstream keeps the entries' times unless their sets change).
fn keep_if_unchanged(current: &Value, desired: &mut Value) {
    if same_but_bookkeeping(current, desired) {
        let meta = crate::object::meta_mut(desired);
        match current.pointer("/metadata/managedFields") {
            Some(mf) => meta.insert("managedFields".into(), mf.clone()),
            None => meta.remove("managedFields"),
        };
    }
}

/// Whether two objects are equal but for `metadata.managedFields` and `resourceVersion`
/// (without copying them to strip those).
fn same_but_bookkeeping(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let same_meta = |a: &Value, b: &Value| {
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return a == b;
        };
        let kept =
            |(k, _): &(&String, &Value)| !matches!(k.as_str(), "managedFields" | "resourceVersion");
        a.iter().filter(kept).eq(b.iter().filter(kept))
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && if ka == "metadata" {
                    same_meta(va, vb)
                } else {
                    va == vb
                }
        })
}

// ---------------------------------------------------------------------------------------------
// Apply

/// A decoded apply request.
pub struct ApplyRequest {
    pub manager: String,
    pub force: bool,
    pub config: Value,
}

impl ApplyRequest {
    /// Decodes an apply-patch body (YAML, of which JSON is a subset) and checks what upstream
    /// requires of it.
    pub fn decode(
        body: &[u8],
        field_manager: Option<&str>,
        force: Option<&str>,
    ) -> Result<Self, ApiError> {
        let manager = field_manager
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("PATCH /apply requires fieldManager"))?;
        if manager.chars().count() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
        let force = match force {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for force: {other:?}"
                )))
            }
        };
        let config: Value = serde_json::from_slice(body)
            .or_else(|_| serde_yaml::from_slice(body))
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "couldn't get version/kind; json parse error: the applied configuration must be an object",
            ));
        }
        for (field, what) in [("apiVersion", "apiVersion"), ("kind", "kind")] {
            if config
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                return Err(ApiError::bad_request(format!(
                    "invalid object type: {what} must be set in the applied configuration"
                )));
            }
        }
        if crate::object::name(&config).unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "metadata.name: Required value: name is required in the applied configuration",
            ));
        }
        Ok(ApplyRequest {
            manager: manager.to_string(),
            force,
            config,
        })
    }

    /// The object to create when nothing is stored: the configuration itself, owned by the
    /// manager.
    pub fn new_object(&self, res: &Resource, subresource: Option<&str>) -> Value {
        let mut obj = self.config.clone();
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let set = fields_of(res, subresource, &self.config)
            .into_keys()
            .collect();
        store_entries(
            &mut obj,
            vec![self.entry(res, subresource, set, Some(now_rfc3339()))],
        );
        obj
    }

    fn entry(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        set: BTreeSet<Path>,
        time: Option<String>,
    ) -> Entry {
        Entry {
            owner: Owner {
                manager: self.manager.clone(),
                operation: "Apply".into(),
                api_version: res.info.api_version(),
                time,
                subresource: subresource.map(str::to_string),
            },
            set,
        }
    }

    /// Merges the configuration into `live`, as the manager: conflicts (409) unless forced,
    /// prunes what the manager no longer applies, and records the ownership.
    pub fn apply(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        live: &Value,
    ) -> Result<Value, ApiError> {
        let s = schemas();
        let applied = fields_of(res, subresource, &self.config);
        let live_fields = fields_of(res, subresource, live);
        let mut entries = entries_of(live);
        let mine = |e: &Entry| e.owner.is(&self.manager, "Apply", subresource);

        // Conflicts: a leaf someone else owns whose value would change.
        let differs = |p: &Path, v: &Option<Value>| match v {
            Some(v) => live_fields.get(p).is_some_and(|lv| lv.as_ref() != Some(v)),
            None => false,
        };
        let mut conflicts: Vec<(String, String, Path)> = Vec::new();
        for e in entries.iter().filter(|e| !mine(e)) {
            for (p, v) in &applied {
                if e.set.contains(p) && differs(p, v) {
                    conflicts.push((
                        e.owner.manager.clone(),
                        e.owner.api_version.clone(),
                        p.clone(),
                    ));
                }
            }
        }
        if !conflicts.is_empty() && !self.force {
            return Err(conflict_error(&conflicts));
        }
        // Forced (or nothing conflicts): the changed fields are this manager's alone.
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            e.set
                .retain(|p| !applied.get(p).is_some_and(|v| differs(p, v)));
        }

        let mut merged = live.clone();
        let root = s.root(res);
        merge(s, root, &mut merged, &self.config, true);

        // What the manager applied before and now leaves out, unless someone else owns it.
        let previous = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| e.set.clone())
            .unwrap_or_default();
        let others: BTreeSet<&Path> = entries
            .iter()
            .filter(|e| !mine(e))
            .flat_map(|e| e.set.iter())
            .collect();
        let mut gone: Vec<&Path> = previous
            .iter()
            .filter(|p| !applied.contains_key(*p) && !others.contains(p))
            .filter(|p| {
                // Keep an element someone else owns a field of.
                !others.iter().any(|o| o.len() > p.len() && o.starts_with(p))
            })
            .collect();
        // Shallowest first: an element goes whole, before its key fields would be removed
        // from under it (it could no longer be found by its key).
        gone.sort_by_key(|p| p.len());
        for p in gone {
            remove_path(&mut merged, p);
        }

        let set: BTreeSet<Path> = applied.into_keys().collect();
        let unchanged = previous == set;
        let old_time = entries
            .iter()
            .find(|e| mine(e))
            .and_then(|e| e.owner.time.clone());
        entries.retain(|e| !mine(e));
        let time = if unchanged && old_time.is_some() {
            old_time
        } else {
            Some(now_rfc3339())
        };
        // Upstream lists the Apply entries first, then the updates.
        entries.insert(0, self.entry(res, subresource, set, time));
        store_entries(&mut merged, entries);
        Ok(merged)
    }
}

/// Sets what `applied` sets in `live`, following the schema.
fn merge(s: &Schemas, schema: Option<&Value>, live: &mut Value, applied: &Value, root: bool) {
    let shape = s.shape(schema).deduce(applied);
    match (&shape, live.is_null()) {
        (Shape::Struct(_) | Shape::Map(_), _) => {
            let Some(a) = applied.as_object() else {
                *live = applied.clone();
                return;
            };
            if !live.is_object() {
                *live = json!({});
            }
            for (k, v) in a {
                if root && k == "metadata" {
                    if let Some(meta) = v.as_object() {
                        let meta_schema = s.child(&shape, k);
                        let meta_shape = s.shape(meta_schema).deduce(v);
                        let lm = &mut live["metadata"];
                        if !lm.is_object() {
                            *lm = json!({});
                        }
                        for (mk, mv) in meta {
                            if matches!(mk.as_str(), "managedFields" | "resourceVersion") {
                                continue;
                            }
                            merge_child(s, s.child(&meta_shape, mk), lm, mk, mv);
                        }
                    }
                    continue;
                }
                merge_child(s, s.child(&shape, k), live, k, v);
            }
        }
        (Shape::ListMap(items, keys), _) => {
            let Some(a) = applied.as_array() else {
                *live = applied.clone();
                return;
            };
            if !live.is_array() {
                *live = json!([]);
            }
            for elem in a {
                let found = key_element(elem, keys)
                    .and_then(|k| live.as_array().and_then(|l| position(l, &k)));
                match (found, live.as_array_mut()) {
                    (Some(i), Some(l)) => merge(s, Some(items), &mut l[i], elem, false),
                    (None, Some(l)) => l.push(elem.clone()),
                    _ => {}
                }
            }
        }
        (Shape::ListSet, _) => {
            let Some(a) = applied.as_array() else {
                *live = applied.clone();
                return;
            };
            if !live.is_array() {
                *live = json!([]);
            }
            if let Some(l) = live.as_array_mut() {
                for elem in a {
                    if !l.contains(elem) {
                        l.push(elem.clone());
                    }
                }
            }
        }
        _ => *live = applied.clone(),
    }
}

fn merge_child(s: &Schemas, schema: Option<&Value>, live: &mut Value, k: &str, v: &Value) {
    let Some(m) = live.as_object_mut() else {
        return;
    };
    if v.is_null() {
        m.remove(k);
        return;
    }
    let slot = m.entry(k.to_string()).or_insert(Value::Null);
    merge(s, schema, slot, v, false);
}

/// Upstream's 409 for apply conflicts: `Apply failed with 1 conflict: conflict with "m" using
/// apps/v1: .spec.replicas`, one `FieldManagerConflict` cause per field.
fn conflict_error(conflicts: &[(String, String, Path)]) -> ApiError {
    let owner = |m: &str, v: &str| {
        if v.is_empty() {
            format!("{m:?}")
        } else {
            format!("{m:?} using {v}")
        }
    };
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (m, v, p) in conflicts {
        by_owner
            .entry(owner(m, v))
            .or_default()
            .push(path_string(p));
    }
    let groups: Vec<String> = by_owner
        .iter()
        .map(|(o, paths)| {
            if paths.len() == 1 {
                format!("conflict with {o}: {}", paths[0])
            } else {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {o}:\n{}", list.join("\n"))
            }
        })
        .collect();
    let n = conflicts.len();
    let message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        groups.join("\n")
    );
    let causes = conflicts
        .iter()
        .map(|(m, v, p)| StatusCause {
            reason: Some("FieldManagerConflict".into()),
            message: Some(format!("conflict with {}", owner(m, v))),
            field: Some(path_string(p)),
        })
        .collect();
    ApiError::new(Status {
        status: Some("Failure".into()),
        message: Some(message),
        reason: Some("Conflict".into()),
        details: Some(StatusDetails {
            causes: Some(causes),
            ..Default::default()
        }),
        code: Some(409),
        ..Default::default()
    })
}

/// Whether this PATCH is an apply.
pub fn is_apply(content_type: &str) -> bool {
    content_type == "application/apply-patch+yaml"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(els: &[&str]) -> Path {
        els.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_and_marks_members_with_children() {
        let c = r#"k:{"name":"c"}"#;
        let set: BTreeSet<Path> = [
            path(&["f:spec", "f:replicas"]),
            path(&["f:spec", "f:containers", c]),
            path(&["f:spec", "f:containers", c, "f:name"]),
            path(&["f:metadata", "f:finalizers", r#"v:"a""#]),
        ]
        .into_iter()
        .collect();
        let tree = to_fields_v1(&set);
        assert_eq!(
            tree,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:containers": {c: {".": {}, "f:name": {}}}
                }
            })
        );
        assert_eq!(from_fields_v1(&tree), set);
    }

    #[test]
    fn paths_read_as_upstream_prints_them() {
        assert_eq!(
            path_string(&path(&[
                "f:spec",
                "f:containers",
                r#"k:{"name":"c"}"#,
                "f:ports",
                r#"k:{"containerPort":80,"protocol":"TCP"}"#,
                "f:name",
            ])),
            r#".spec.containers[name="c"].ports[containerPort=80,protocol="TCP"].name"#
        );
        assert_eq!(
            path_string(&path(&["f:metadata", "f:finalizers", r#"v:"x""#])),
            r#".metadata.finalizers[="x"]"#
        );
    }

    #[test]
    fn list_map_keys_default_the_protocol() {
        let keys = [json!("containerPort"), json!("protocol")];
        let k = key_element(&json!({"containerPort": 80}), &keys);
        assert_eq!(
            k.as_deref(),
            Some(r#"k:{"containerPort":80,"protocol":"TCP"}"#)
        );
        let list = [json!({"containerPort": 81}), json!({"containerPort": 80})];
        assert_eq!(position(&list, k.as_deref().unwrap_or_default()), Some(1));
    }

    #[test]
    fn removing_the_last_member_removes_emptied_parents() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}, "name": "x"}});
        remove_path(&mut obj, &path(&["f:metadata", "f:labels", "f:a"]));
        assert_eq!(obj, json!({"metadata": {"name": "x"}}));
    }
}

/// Pins what [`track_update`] records on realistic writes, byte for byte (entry order,
/// `fieldsV1` key order, `.` markers), so that a change to how it computes them cannot change
/// what is stored. Fresh timestamps read `NOW`; stored ones are [`T0`].
#[cfg(test)]
mod tracking_tests {
    use super::*;

    const T0: &str = "2020-01-01T00:00:00Z";

    fn res(group: &str, plural: &str) -> Resource {
        Resource {
            info: api_types::resources::find(group, "v1", plural).expect("a served resource"),
            namespace: Some("default".into()),
        }
    }

    /// `track_update`'s managedFields as stored (JSON text), checking that nothing else in
    /// the object changed.
    fn tracked(
        res: &Resource,
        subresource: Option<&str>,
        manager: &str,
        old: Option<&Value>,
        new: &Value,
    ) -> String {
        let mut out = new.clone();
        track_update(res, subresource, manager, old, &mut out);
        let without = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            v
        };
        assert_eq!(without(&out), without(new), "only managedFields change");
        let mut mf = out
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        for e in mf.as_array_mut().into_iter().flatten() {
            if let Some(t) = e.get_mut("time").filter(|t| *t != T0) {
                *t = json!("NOW");
            }
        }
        mf.to_string()
    }

    /// The object `new` as stored after tracking it (for the next write's `old`).
    fn stored(
        res: &Resource,
        subresource: Option<&str>,
        manager: &str,
        old: Option<&Value>,
        new: &Value,
    ) -> Value {
        let mut out = new.clone();
        track_update(res, subresource, manager, old, &mut out);
        for e in out
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            e["time"] = json!(T0);
        }
        out
    }

    /// Compares `actual` with a recorded `expected`; an empty one (a new case) prints `actual`
    /// with the caller's line, to be recorded, and fails.
    #[track_caller]
    fn pin(actual: String, expected: &str) {
        if expected.is_empty() {
            println!("PIN {} {actual}", std::panic::Location::caller().line());
        }
        assert_eq!(actual, expected);
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "generateName": "web-",
                "namespace": "default",
                "uid": "6b1c2a5e",
                "resourceVersion": "41",
                "creationTimestamp": T0,
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {"note": "first", "example.com/owner": "team-a"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
                    "uid": "0f3e", "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx:1.27",
                        "command": ["nginx", "-g", "daemon off;"],
                        "ports": [
                            {"containerPort": 80, "name": "http"},
                            {"containerPort": 53, "protocol": "UDP", "name": "dns"}
                        ],
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                        ],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}
                        ],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {}},
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    },
                    {
                        "name": "sidecar",
                        "image": "busybox:1.36",
                        "args": ["sleep", "1d"],
                        "securityContext": {"runAsNonRoot": true, "capabilities": {"add": ["NET_ADMIN"]}}
                    }
                ],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "web-cfg", "items": [{"key": "a", "path": "a"}]}}
                ],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "priority": 0,
                "enableServiceLinks": true
            },
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "d1", "resourceVersion": "7",
                "generation": 1, "creationTimestamp": T0,
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "1"}
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                            {"name": "log", "image": "busybox", "args": ["tail"]}
                        ],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {
                "observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ]
            }
        })
    }

    fn without_label(mut obj: Value, label: &str) -> Value {
        if let Some(l) = obj
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove(label);
        }
        obj
    }

    #[test]
    fn a_create_owns_every_field_but_server_owned_metadata_and_status() {
        let pods = res("", "pods");
        pin(
            tracked(&pods, None, "kubectl-create", None, &pod()),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:example.com/owner":{},"f:note":{}},"f:finalizers":{"v:\"example.com/keep\"":{}},"f:generateName":{},"f:labels":{"f:app":{},"f:tier":{}},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"MODE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD\"}":{".":{},"f:name":{},"f:valueFrom":{"f:fieldRef":{}}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":53,\"protocol\":\"UDP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}}}},"manager":"kubectl-create","operation":"Update","time":"NOW"}]"##,
        );
    }

    #[test]
    fn an_update_takes_the_changed_image_and_drops_the_removed_label() {
        let pods = res("", "pods");
        let old = stored(&pods, None, "kubectl-create", None, &pod());
        let mut new = without_label(old.clone(), "tier");
        new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        new["metadata"]["resourceVersion"] = json!("42");
        pin(
            tracked(&pods, None, "kubectl-edit", Some(&old), &new),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:example.com/owner":{},"f:note":{}},"f:finalizers":{"v:\"example.com/keep\"":{}},"f:generateName":{},"f:labels":{"f:app":{}},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"MODE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD\"}":{".":{},"f:name":{},"f:valueFrom":{"f:fieldRef":{}}}},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":53,\"protocol\":\"UDP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}}}},"manager":"kubectl-create","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:image":{}}}}},"manager":"kubectl-edit","operation":"Update","time":"NOW"}]"##,
        );
    }

    #[test]
    fn a_status_write_owns_status_and_keeps_the_spec_owners() {
        let pods = res("", "pods");
        let old = stored(&pods, None, "kubectl-create", None, &pod());
        let mut new = old.clone();
        new["status"] = json!({
            "phase": "Running",
            "qosClass": "Burstable",
            "hostIP": "10.0.0.5",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": T0,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": T0},
                {"type": "Ready", "status": "True", "lastTransitionTime": T0, "lastProbeTime": null}
            ],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 0, "image": "nginx:1.27",
                "imageID": "", "started": true,
                "state": {"running": {"startedAt": T0}}, "lastState": {}
            }]
        });
        pin(
            tracked(&pods, Some("status"), "kubelet", Some(&old), &new),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:example.com/owner":{},"f:note":{}},"f:finalizers":{"v:\"example.com/keep\"":{}},"f:generateName":{},"f:labels":{"f:app":{},"f:tier":{}},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"MODE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD\"}":{".":{},"f:name":{},"f:valueFrom":{"f:fieldRef":{}}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":53,\"protocol\":\"UDP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}}}},"manager":"kubectl-create","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:conditions":{"k:{\"type\":\"Initialized\"}":{".":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:phase":{},"f:podIP":{},"f:podIPs":{"k:{\"ip\":\"10.244.1.7\"}":{".":{},"f:ip":{}}},"f:startTime":{}}},"manager":"kubelet","operation":"Update","subresource":"status","time":"NOW"}]"##,
        );
        // A second status write: a condition gone, one changed.
        let old = stored(&pods, Some("status"), "kubelet", Some(&old), &new);
        let mut next = old.clone();
        next["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "lastTransitionTime": T0, "lastProbeTime": null}]);
        pin(
            tracked(&pods, Some("status"), "kubelet", Some(&old), &next),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:example.com/owner":{},"f:note":{}},"f:finalizers":{"v:\"example.com/keep\"":{}},"f:generateName":{},"f:labels":{"f:app":{},"f:tier":{}},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"MODE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD\"}":{".":{},"f:name":{},"f:valueFrom":{"f:fieldRef":{}}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":53,\"protocol\":\"UDP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}}}},"manager":"kubectl-create","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{".":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:phase":{},"f:podIP":{},"f:podIPs":{"k:{\"ip\":\"10.244.1.7\"}":{".":{},"f:ip":{}}},"f:startTime":{}}},"manager":"kubelet","operation":"Update","subresource":"status","time":"NOW"}]"##,
        );
    }

    #[test]
    fn a_second_manager_takes_the_fields_it_changes_from_the_first() {
        let deployments = res("apps", "deployments");
        let created = stored(
            &deployments,
            None,
            "kubectl-client-side-apply",
            None,
            &deployment(),
        );
        let mut status = created.clone();
        status["status"]["updatedReplicas"] = json!(2);
        let old = stored(
            &deployments,
            Some("status"),
            "kube-controller-manager",
            Some(&created),
            &status,
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        new["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = json!("3");
        new["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .expect("env")
            .push(json!({"name": "C", "value": "4"}));
        pin(
            tracked(&deployments, None, "hpa-and-edit", Some(&old), &new),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}},"f:labels":{"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"log\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}},"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"B\"}":{".":{},"f:name":{}}},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}},"f:restartPolicy":{}}}}},"manager":"kubectl-client-side-apply","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:updatedReplicas":{}}},"manager":"kube-controller-manager","operation":"Update","subresource":"status","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:env":{"k:{\"name\":\"B\"}":{"f:value":{}},"k:{\"name\":\"C\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{}}}}}}},"manager":"hpa-and-edit","operation":"Update","time":"NOW"}]"##,
        );
        // The same manager again: its entry grows, the first keeps the rest.
        let old = stored(&deployments, None, "hpa-and-edit", Some(&old), &new);
        let mut again = old.clone();
        again["spec"]["replicas"] = json!(6);
        again["metadata"]["labels"]["extra"] = json!("x");
        pin(
            tracked(&deployments, None, "hpa-and-edit", Some(&old), &again),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}},"f:labels":{"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"log\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}},"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"B\"}":{".":{},"f:name":{}}},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}},"f:restartPolicy":{}}}}},"manager":"kubectl-client-side-apply","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:updatedReplicas":{}}},"manager":"kube-controller-manager","operation":"Update","subresource":"status","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:extra":{}}},"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:env":{"k:{\"name\":\"B\"}":{"f:value":{}},"k:{\"name\":\"C\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{}}}}}}},"manager":"hpa-and-edit","operation":"Update","time":"NOW"}]"##,
        );
        // Through /scale: status is not this write's.
        let mut scaled = again.clone();
        scaled["spec"]["replicas"] = json!(1);
        scaled["status"]["replicas"] = json!(1);
        pin(
            tracked(&deployments, Some("scale"), "scaler", Some(&old), &scaled),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}},"f:labels":{"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"log\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}},"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"B\"}":{".":{},"f:name":{}}},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}},"f:restartPolicy":{}}}}},"manager":"kubectl-client-side-apply","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:updatedReplicas":{}}},"manager":"kube-controller-manager","operation":"Update","subresource":"status","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:env":{"k:{\"name\":\"B\"}":{"f:value":{}},"k:{\"name\":\"C\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{}}}}}}},"manager":"hpa-and-edit","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:extra":{}}},"f:spec":{"f:replicas":{}}},"manager":"scaler","operation":"Update","subresource":"scale","time":"NOW"}]"##,
        );
    }

    #[test]
    fn removed_list_map_elements_are_nobodys() {
        let deployments = res("apps", "deployments");
        let old = stored(&deployments, None, "kubectl-create", None, &deployment());
        let mut new = old.clone();
        let spec = &mut new["spec"]["template"]["spec"];
        spec["containers"]
            .as_array_mut()
            .expect("containers")
            .remove(1);
        spec["containers"][0]["env"]
            .as_array_mut()
            .expect("env")
            .remove(0);
        spec["containers"][0]["ports"] = json!([]);
        pin(
            tracked(&deployments, None, "kubectl-edit", Some(&old), &new),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}},"f:labels":{"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:replicas":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"B\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{}}},"f:restartPolicy":{}}}}},"manager":"kubectl-create","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:ports":{}}}}}}},"manager":"kubectl-edit","operation":"Update","time":"NOW"}]"##,
        );
    }

    #[test]
    fn an_empty_entry_resets_managed_fields() {
        let pods = res("", "pods");
        let old = stored(&pods, None, "kubectl-create", None, &pod());
        let mut new = old.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        new["metadata"]["labels"]["more"] = json!("y");
        let mut out = new.clone();
        track_update(&pods, None, "kubectl-edit", Some(&old), &mut out);
        assert_eq!(out.pointer("/metadata/managedFields"), None);
        assert_eq!(tracked(&pods, None, "x", Some(&old), &new), "null");
    }

    #[test]
    fn a_write_that_changes_nothing_keeps_what_is_stored() {
        let pods = res("", "pods");
        let old = stored(&pods, None, "kubectl-create", None, &pod());
        let mut new = old.clone();
        new["metadata"]["resourceVersion"] = json!("99");
        new["metadata"]["managedFields"] = json!([]);
        pin(
            tracked(&pods, None, "kubectl-edit", Some(&old), &new),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:example.com/owner":{},"f:note":{}},"f:finalizers":{"v:\"example.com/keep\"":{}},"f:generateName":{},"f:labels":{"f:app":{},"f:tier":{}},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"MODE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD\"}":{".":{},"f:name":{},"f:valueFrom":{"f:fieldRef":{}}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":53,\"protocol\":\"UDP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}}}},"manager":"kubectl-create","operation":"Update","time":"2020-01-01T00:00:00Z"}]"##,
        );
        let mut bare = pod();
        bare["metadata"]["resourceVersion"] = json!("99");
        pin(
            tracked(&pods, None, "kubectl-edit", Some(&pod()), &bare),
            r##"null"##,
        );
    }

    #[test]
    fn entries_the_client_rewrote_are_taken_as_given() {
        let deployments = res("apps", "deployments");
        let old = stored(&deployments, None, "kubectl-create", None, &deployment());
        let mut new = old.clone();
        new["metadata"]["managedFields"] = json!([
            {"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
             "fieldsType": "FieldsV1", "extra": 1,
             "fieldsV1": {".": {}, "f:metadata": {".": {}, "f:labels": {"f:app": {}}, "f:name": {}},
                          "f:spec": {"f:replicas": {".": {}}, "f:paused": {}, "f:selector": {"f:matchLabels": {}},
                                     "f:template": {"f:spec": {"f:containers": {
                                        "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:value": {}}}},
                                        "k:{\"name\":\"gone\"}": {".": {}, "f:image": {}}}}}},
                          "f:status": {"f:replicas": 5}}},
            {"manager": "no-operation", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-create", "operation": "Update", "subresource": "", "apiVersion": "apps/v1",
             "fieldsV1": {"f:spec": {"f:revisionHistoryLimit": {}, "f:replicas": {}}}}
        ]);
        new["spec"]["replicas"] = json!(3);
        pin(
            tracked(
                &deployments,
                None,
                "kubectl-client-side-apply",
                Some(&old),
                &new,
            ),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{".":{},"f:labels":{"f:app":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:value":{}}},"f:image":{}}}}}},"f:status":{"f:replicas":{}}},"manager":"kubectl","operation":"Apply","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:revisionHistoryLimit":{}}},"manager":"kubectl-create","operation":"Update"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{}}},"manager":"kubectl-client-side-apply","operation":"Update","time":"NOW"}]"##,
        );
        // On a create too.
        let mut created = deployment();
        created["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
        pin(
            tracked(&deployments, None, "kubectl-create", None, &created),
            r##"[{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{},"f:status":{"f:replicas":{}}},"manager":"kubectl","operation":"Apply","time":"2020-01-01T00:00:00Z"},{"apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}},"f:labels":{"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:replicas":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"log\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}},"k:{\"name\":\"nginx\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"B\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}},"f:restartPolicy":{}}}}},"manager":"kubectl-create","operation":"Update","time":"NOW"}]"##,
        );
    }

    #[test]
    fn odd_shapes_are_tracked_as_before() {
        let pods = res("", "pods");
        let mut odd = pod();
        odd["metadata"]["labels"] = json!({});
        odd["metadata"]["annotations"] = json!(null);
        odd["spec"]["affinity"] = json!({"nodeAffinity": null});
        odd["spec"]["imagePullSecrets"] = json!([{"name": "a"}, {}, "not-an-object"]);
        odd["spec"]["hostAliases"] = json!("not-a-list");
        odd["spec"]["x-unknown"] = json!({"a": [1, 2], "b": {"c": null, "d": {}}, "e": 1.5});
        // Duplicate keys in a list map (env names are not validated unique).
        odd["spec"]["containers"][0]["env"] = json!([
            {"name": "DUP", "value": "1"},
            {"name": "DUP", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "ONE"}
        ]);
        odd["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]);
        odd["metadata"]["finalizers"] = json!(["a", "b", "a", 1, {"x": [true]}]);
        let first = tracked(&pods, None, "creator", None, &odd);
        pin(
            first,
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:finalizers":{"v:\"a\"":{},"v:\"b\"":{},"v:1":{},"v:{\"x\":[true]}":{}},"f:generateName":{},"f:labels":{},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"DUP\"}":{".":{},"f:name":{},"f:value":{},"f:valueFrom":{"f:fieldRef":{}}},"k:{\"name\":\"ONE\"}":{".":{},"f:name":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:protocol":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{},"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:hostAliases":{},"f:imagePullSecrets":{"k:{\"name\":\"a\"}":{".":{},"f:name":{}}},"f:nodeSelector":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}},"f:x-unknown":{"f:a":{},"f:b":{"f:d":{}},"f:e":{}}}},"manager":"creator","operation":"Update","time":"NOW"}]"##,
        );

        let old = stored(&pods, None, "creator", None, &odd);
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"now": "set"});
        new["metadata"]["annotations"] = json!({});
        new["metadata"]["finalizers"] = json!(["b", "c", {"x": [true]}]);
        new["spec"]["affinity"] =
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": null}});
        new["spec"]["imagePullSecrets"] = json!([{"name": "b"}, {}]);
        new["spec"]["hostAliases"] = json!([{"ip": "1.2.3.4", "hostnames": ["h"]}]);
        new["spec"]["x-unknown"] = json!({"a": [1, 3], "b": "flat", "e": 1.5});
        new["spec"]["containers"][0]["env"][1]["valueFrom"]["fieldRef"]["fieldPath"] =
            json!("spec.hostIP");
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "name": "web"}]);
        new["spec"]["containers"][1]["securityContext"] = json!(null);
        new["spec"]["volumes"] = json!([]);
        new["spec"]["nodeSelector"] = json!({});
        pin(
            tracked(&pods, None, "editor", Some(&old), &new),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:finalizers":{"v:\"b\"":{},"v:{\"x\":[true]}":{}},"f:generateName":{},"f:labels":{},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"DUP\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"ONE\"}":{".":{},"f:name":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:hostAliases":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:x-unknown":{"f:e":{}}}},"manager":"creator","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{},"f:finalizers":{"v:\"c\"":{}},"f:labels":{"f:now":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:env":{"k:{\"name\":\"DUP\"}":{"f:valueFrom":{"f:fieldRef":{}}}},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{"f:name":{}}}}},"f:hostAliases":{"k:{\"ip\":\"1.2.3.4\"}":{".":{},"f:hostnames":{},"f:ip":{}}},"f:imagePullSecrets":{"k:{\"name\":\"b\"}":{".":{},"f:name":{}}},"f:nodeSelector":{},"f:volumes":{},"f:x-unknown":{"f:a":{},"f:b":{}}}},"manager":"editor","operation":"Update","time":"NOW"}]"##,
        );
        // And back, by a third manager.
        let old2 = stored(&pods, None, "editor", Some(&old), &new);
        let mut back = odd.clone();
        back["metadata"]["managedFields"] = old2["metadata"]["managedFields"].clone();
        pin(
            tracked(&pods, None, "third", Some(&old2), &back),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:finalizers":{"v:\"b\"":{},"v:{\"x\":[true]}":{}},"f:generateName":{},"f:ownerReferences":{"k:{\"uid\":\"0f3e\"}":{".":{},"f:apiVersion":{},"f:blockOwnerDeletion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:command":{},"f:env":{"k:{\"name\":\"DUP\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"ONE\"}":{".":{},"f:name":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}},"f:resources":{"f:limits":{"f:cpu":{},"f:memory":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{"k:{\"mountPath\":\"/data\"}":{".":{},"f:mountPath":{},"f:name":{}},"k:{\"mountPath\":\"/etc/cfg\"}":{".":{},"f:mountPath":{},"f:name":{},"f:readOnly":{}}}},"k:{\"name\":\"sidecar\"}":{".":{},"f:args":{},"f:image":{},"f:name":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:priority":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{},"f:x-unknown":{"f:e":{}}}},"manager":"creator","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:volumes":{},"f:x-unknown":{"f:b":{}}}},"manager":"editor","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:finalizers":{"v:\"a\"":{},"v:1":{}},"f:labels":{}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{"f:env":{"k:{\"name\":\"DUP\"}":{"f:valueFrom":{"f:fieldRef":{}}}},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{"f:protocol":{}}}},"k:{\"name\":\"sidecar\"}":{"f:securityContext":{"f:capabilities":{"f:add":{}},"f:runAsNonRoot":{}}}},"f:hostAliases":{},"f:imagePullSecrets":{"k:{\"name\":\"a\"}":{".":{},"f:name":{}}},"f:nodeSelector":{},"f:volumes":{"k:{\"name\":\"cfg\"}":{".":{},"f:configMap":{"f:items":{},"f:name":{}},"f:name":{}},"k:{\"name\":\"data\"}":{".":{},"f:emptyDir":{},"f:name":{}}},"f:x-unknown":{"f:a":{},"f:b":{"f:d":{}}}}},"manager":"third","operation":"Update","time":"NOW"}]"##,
        );
    }

    #[test]
    fn kinds_without_a_status_subresource_own_everything_they_write() {
        let config_maps = res("", "configmaps");
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"a": "1", "b": "2"},
            "binaryData": {"z": "AA=="},
            "status": {"odd": true}
        });
        let old = stored(&config_maps, None, "creator", None, &cm);
        pin(
            tracked(&config_maps, None, "creator", None, &cm),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:binaryData":{"f:z":{}},"f:data":{"f:a":{},"f:b":{}},"f:status":{"f:odd":{}}},"manager":"creator","operation":"Update","time":"NOW"}]"##,
        );
        let mut new = old.clone();
        new["data"]["a"] = json!("changed");
        new["data"].as_object_mut().expect("data").remove("b");
        new["status"] = json!({"odd": false});
        pin(
            tracked(&config_maps, Some("status"), "writer", Some(&old), &new),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:binaryData":{"f:z":{}}},"manager":"creator","operation":"Update","time":"2020-01-01T00:00:00Z"},{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:a":{}},"f:status":{"f:odd":{}}},"manager":"writer","operation":"Update","subresource":"status","time":"NOW"}]"##,
        );
        let services = res("", "services");
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"},
                     "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "type": "ClusterIP"}
        });
        pin(
            tracked(&services, None, "creator", None, &svc),
            r##"[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:clusterIP":{},"f:clusterIPs":{},"f:ports":{"k:{\"port\":53,\"protocol\":\"UDP\"}":{".":{},"f:port":{},"f:protocol":{}},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{}}},"f:selector":{},"f:type":{}}},"manager":"creator","operation":"Update","time":"NOW"}]"##,
        );
    }

    /// The implementation before update tracking worked on fieldsV1 trees (path sets from
    /// `fields_of`, every entry unfolded and folded again), kept as the reference the fast
    /// one must agree with; fresh timestamps read `NOW`.
    fn reference_track_update(
        res: &Resource,
        subresource: Option<&str>,
        manager: &str,
        old: Option<&Value>,
        new: &mut Value,
    ) {
        if is_reset(new) {
            crate::object::meta_mut(new).remove("managedFields");
            return;
        }
        let sent = new.pointer("/metadata/managedFields");
        let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
        let rewritten =
            matches!(sent, Some(Value::Array(list)) if !list.is_empty()) && sent != stored;
        let mut entries = if rewritten {
            entries_of(new)
        } else {
            old.map(entries_of).unwrap_or_default()
        };
        let new_fields = fields_of(res, subresource, new);
        let old_fields = old
            .map(|o| fields_of(res, subresource, o))
            .unwrap_or_default();
        let changed: BTreeSet<Path> = new_fields
            .iter()
            .filter(|(p, v)| old_fields.get(*p) != Some(*v))
            .map(|(p, _)| p.clone())
            .collect();
        if !entries.is_empty() {
            let mut all_new: BTreeSet<Path> = fields_of(res, None, new).into_keys().collect();
            if res.info.subresource("status").is_some() {
                all_new.extend(fields_of(res, Some("status"), new).into_keys());
            }
            let prefixes: Vec<Path> = all_new
                .iter()
                .flat_map(|p| (1..p.len()).map(move |i| p[..i].to_vec()))
                .collect();
            all_new.extend(prefixes);
            for e in &mut entries {
                e.set
                    .retain(|p| all_new.contains(p) && !changed.contains(p));
            }
        }
        if !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.owner.is(manager, "Update", subresource))
            {
                Some(e) => {
                    e.set.extend(changed);
                    e.owner.time = Some("NOW".into());
                    e.owner.api_version = res.info.api_version();
                }
                None => entries.push(Entry {
                    owner: Owner {
                        manager: manager.to_string(),
                        operation: "Update".into(),
                        api_version: res.info.api_version(),
                        time: Some("NOW".into()),
                        subresource: subresource.map(str::to_string),
                    },
                    set: changed,
                }),
            }
        }
        store_entries(new, entries);
        if let (Some(old), false) = (old, rewritten) {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                    m.remove("resourceVersion");
                }
                v
            };
            if strip(old) == strip(new) {
                let meta = crate::object::meta_mut(new);
                match old.pointer("/metadata/managedFields") {
                    Some(mf) => meta.insert("managedFields".into(), mf.clone()),
                    None => meta.remove("managedFields"),
                };
            }
        }
    }

    /// `v` with managedFields times other than [`T0`] spelled `NOW`.
    fn fresh_times_as_now(mut v: Value) -> Value {
        for e in v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(t) = e.get_mut("time").filter(|t| *t != T0) {
                *t = json!("NOW");
            }
        }
        v
    }

    /// `-0.0` equals `0.0`, but their `v:` and `k:` elements differ: a write from one to the
    /// other changes the member.
    #[test]
    fn negative_zero_is_another_member() {
        let pods = res("", "pods");
        let mut old = pod();
        old["metadata"]["finalizers"] = json!([-0.0]);
        old["spec"]["containers"][0]["ports"] = json!([{"containerPort": -0.0}]);
        let old = stored(&pods, None, "a", None, &old);
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!([0.0]);
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0.0}]);
        // Else the write is a no-op (the objects are equal) and keeps what is stored.
        new["metadata"]["labels"]["x"] = json!("y");
        let mut fast = new.clone();
        track_update(&pods, None, "b", Some(&old), &mut fast);
        let mut reference = new;
        reference_track_update(&pods, None, "b", Some(&old), &mut reference);
        let entry_b = |v: &Value| v.pointer("/metadata/managedFields/1/fieldsV1").cloned();
        assert_eq!(
            entry_b(&reference),
            Some(json!({
                "f:metadata": {"f:finalizers": {"v:0.0": {}}, "f:labels": {"f:x": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:ports": {
                    "k:{\"containerPort\":0.0,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
                }}}}
            }))
        );
        assert_eq!(fresh_times_as_now(fast), fresh_times_as_now(reference));
    }

    /// A small deterministic generator (xorshift), for the randomised comparison.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }

        fn value(&mut self) -> Value {
            match self.below(12) {
                0 => json!(null),
                1 => json!({}),
                2 => json!([]),
                3 => json!(-0.0),
                4 => json!(0.0),
                5 => json!(1),
                6 => json!(1.0),
                7 => json!(true),
                8 => json!({"name": format!("n{}", self.below(3)), "value": "v"}),
                9 => json!([{"name": "a"}, {"name": format!("n{}", self.below(3))}]),
                10 => json!(["a", format!("s{}", self.below(3))]),
                _ => json!(format!("s{}", self.below(3))),
            }
        }

        /// Changes one random place of `v`.
        fn mutate(&mut self, v: &mut Value) {
            let descend = self.below(5) != 0;
            self.mutate_at(v, descend);
        }

        /// Changes `v` itself, or (`descend`) one random place below it.
        fn mutate_at(&mut self, v: &mut Value, descend: bool) {
            match v {
                Value::Object(m) if descend && !m.is_empty() => {
                    let i = self.below(m.len());
                    if let Some(child) = m.values_mut().nth(i) {
                        self.mutate(child);
                    }
                }
                Value::Array(a) if descend && !a.is_empty() => {
                    let i = self.below(a.len());
                    self.mutate(&mut a[i]);
                }
                Value::Object(m) => match self.below(3) {
                    0 if !m.is_empty() => {
                        let i = self.below(m.len());
                        if let Some(k) = m.keys().nth(i).cloned() {
                            m.remove(&k);
                        }
                    }
                    1 => {
                        let k = ["name", "value", "image", "x", "protocol"][self.below(5)];
                        m.insert(k.into(), self.value());
                    }
                    _ => *v = self.value(),
                },
                Value::Array(a) => match self.below(4) {
                    0 if !a.is_empty() => {
                        let i = self.below(a.len());
                        a.remove(i);
                    }
                    // Duplicates: list-map elements sharing a key, repeated set members.
                    1 if !a.is_empty() => {
                        let i = self.below(a.len());
                        let mut dup = a[i].clone();
                        if self.below(2) == 0 {
                            self.mutate(&mut dup);
                        }
                        a.push(dup);
                    }
                    2 => a.push(self.value()),
                    _ => *v = self.value(),
                },
                _ => *v = self.value(),
            }
        }
    }

    /// `track_update` agrees with the reference on chains of random writes (creates, updates,
    /// status and scale writes, resets and rewritten entries, odd shapes and duplicates) to
    /// every kind of object above.
    #[test]
    fn agrees_with_the_path_set_implementation_on_random_writes() {
        let kinds = [
            (res("", "pods"), pod()),
            (res("apps", "deployments"), deployment()),
            (
                res("", "configmaps"),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                       "data": {"a": "1"}, "status": {"odd": [1]}}),
            ),
            (
                res("", "services"),
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
                                "selector": {"app": "web"}}}),
            ),
        ];
        let mut compared = 0;
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (res, start) = &kinds[rng.below(kinds.len())];
            let mut old: Option<Value> = None;
            let mut next = start.clone();
            for _ in 0..8 {
                for _ in 0..1 + rng.below(3) {
                    // Lists of every kind, more often than a random pick would reach them.
                    let lists = [
                        "/metadata/finalizers",
                        "/spec/containers/0/env",
                        "/spec/containers/0/ports",
                        "/spec/template/spec/containers",
                        "/spec/template/spec/containers/0/env",
                        "/spec/ports",
                        "/status/conditions",
                    ];
                    if let Some(list) = next
                        .pointer_mut(lists[rng.below(lists.len())])
                        .filter(|_| rng.below(2) == 0)
                    {
                        let descend = rng.below(3) == 0;
                        rng.mutate_at(list, descend);
                    // Objects stay objects.
                    } else if let Some(m) = next.as_object_mut() {
                        let i = rng.below(m.len());
                        if let Some(child) = m.values_mut().nth(i) {
                            rng.mutate(child);
                        }
                    }
                }
                if rng.below(10) == 0 && next["metadata"].is_object() {
                    next["metadata"]["managedFields"] = match rng.below(4) {
                        0 => json!([{}]),
                        // As a client could write them: fields nobody can own, too.
                        3 => json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {
                            "f:apiVersion": {}, "f:kind": {}, "f:data": {"f:a": {}},
                            "f:metadata": {"f:name": {}, "f:labels": {".": {}, "f:app": {}}},
                            "f:spec": {".": {}, "f:containers": {"k:{\"name\":\"app\"}": {
                                ".": {}, "f:image": {}, "f:env": {}}},
                                "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {}}},
                            "f:status": {"f:replicas": {}, "f:conditions": {}}}}]),
                        1 => start["metadata"]["managedFields"].clone(),
                        _ => old
                            .as_ref()
                            .and_then(|o| o.pointer("/metadata/managedFields"))
                            .cloned()
                            .map(|mut mf| {
                                rng.mutate(&mut mf);
                                mf
                            })
                            .unwrap_or(Value::Null),
                    };
                }
                let manager = ["a", "b", "c"][rng.below(3)];
                let subresource = [None, Some("status"), Some("scale")][rng.below(3)];
                let mut fast = next.clone();
                track_update(res, subresource, manager, old.as_ref(), &mut fast);
                let mut reference = next.clone();
                reference_track_update(res, subresource, manager, old.as_ref(), &mut reference);
                let (fast, reference) = (fresh_times_as_now(fast), fresh_times_as_now(reference));
                assert_eq!(
                    fast.to_string(),
                    reference.to_string(),
                    "seed {seed}: {subresource:?} write by {manager} of {next} over {old:?}"
                );
                compared += 1;
                // Stored with a fixed time, so that the next write can keep it.
                let mut stored = reference;
                for e in stored
                    .pointer_mut("/metadata/managedFields")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    e["time"] = json!(T0);
                }
                next = stored.clone();
                old = if rng.below(8) == 0 {
                    None
                } else {
                    Some(stored)
                };
            }
        }
        assert_eq!(compared, 2400);
    }
}
