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
//!   from whoever owned it before ([`track_update`]).
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

    fn shape<'a>(&'a self, schema: Option<&'a Value>) -> Shape<'a> {
        let Some(prop) = schema else {
            return Shape::Deduced;
        };
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
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
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
enum Shape<'a> {
    /// Scalars, `atomic` lists and maps: owned and replaced whole.
    Leaf,
    /// A struct with known properties.
    Struct(&'a Map<String, Value>),
    /// A map of one value schema (or unknown ones), merged per key.
    Map(Option<&'a Value>),
    /// `x-kubernetes-list-type: map`: elements identified by their keys.
    ListMap(&'a Value, Vec<String>),
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
    format!("f:{name}")
}

/// The `k:` element of a list-map element; missing `protocol` keys default to TCP (the one
/// defaulted key among the built-in kinds' list-map keys).
fn key_element(elem: &Value, keys: &[String]) -> Option<String> {
    let mut k = BTreeMap::new();
    for name in keys {
        match elem.get(name) {
            Some(v) if !v.is_null() => {
                k.insert(name.clone(), v.clone());
            }
            _ if name == "protocol" => {
                k.insert(name.clone(), json!("TCP"));
            }
            _ => {}
        }
    }
    if k.is_empty() {
        return None;
    }
    Some(format!("k:{}", serde_json::to_string(&k).ok()?))
}

fn value_element(v: &Value) -> String {
    format!("v:{}", serde_json::to_string(v).unwrap_or_default())
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
        if matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        let status_only = subresource == Some("status");
        if status_only != (k == "status") && res.info.subresource("status").is_some() {
            continue;
        }
        let child = s.child(&root_shape, k);
        let path = vec![field(k)];
        if k == "metadata" {
            let meta_shape = s.shape(child).deduce(v);
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if matches!(
                    mk.as_str(),
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
                ) {
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

fn walk(s: &Schemas, schema: Option<&Value>, v: &Value, path: Path, out: &mut Fields) {
    if v.is_null() {
        return;
    }
    match s.shape(schema).deduce(v) {
        shape @ (Shape::Struct(_) | Shape::Map(_)) => {
            let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
                out.insert(path, Some(v.clone()));
                return;
            };
            for (k, child) in m {
                let mut p = path.clone();
                p.push(field(k));
                walk(s, s.child(&shape, k), child, p, out);
            }
        }
        Shape::ListMap(items, keys) => {
            let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                out.insert(path, Some(v.clone()));
                return;
            };
            let elem_shape = s.shape(Some(items));
            for elem in list {
                let Some(k) = key_element(elem, &keys) else {
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
        Shape::ListSet => {
            let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                out.insert(path, Some(v.clone()));
                return;
            };
            for elem in list {
                let mut p = path.clone();
                p.push(value_element(elem));
                out.insert(p, Some(elem.clone()));
            }
        }
        Shape::Leaf | Shape::Deduced => {
            out.insert(path, Some(v.clone()));
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

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: BTreeSet<Path>,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), to_fields_v1(&self.set));
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Entry {
                manager: s("manager").unwrap_or_default(),
                operation: s("operation")?,
                api_version: s("apiVersion").unwrap_or_default(),
                time: s("time"),
                subresource: s("subresource").filter(|s| !s.is_empty()),
                set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            })
        })
        .collect()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::to_json)
        .collect();
    let meta = crate::object::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn is_reset(obj: &Value) -> bool {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
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
    // Entries the client rewrote (kubectl's client-side to server-side apply migration does,
    // by a JSON patch) are taken as given; otherwise the stored ones are kept.
    let sent = new.pointer("/metadata/managedFields");
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let rewritten = matches!(sent, Some(Value::Array(list)) if !list.is_empty()) && sent != stored;
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
    // Only earlier owners lose fields; a create (or an object nobody owned yet) has none,
    // and then walking the object twice more for `all_fields` is wasted on every write.
    if !entries.is_empty() {
        let all_new = all_fields(res, new);
        for e in &mut entries {
            e.set
                .retain(|p| all_new.contains(p) && !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        let now = now_rfc3339();
        match entries
            .iter_mut()
            .find(|e| e.same_owner(manager, "Update", subresource))
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = Some(now);
                e.api_version = res.info.api_version();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: res.info.api_version(),
                time: Some(now),
                subresource: subresource.map(str::to_string),
                set: changed,
            }),
        }
    }
    store_entries(new, entries);
    match old {
        Some(old) if !rewritten => keep_if_unchanged(old, new),
        _ => {}
    }
}

/// Every path an object has, whatever the subresource (so that a `/status` write does not
/// disown the spec).
fn all_fields(res: &Resource, obj: &Value) -> BTreeSet<Path> {
    let mut all: BTreeSet<Path> = fields_of(res, None, obj).into_keys().collect();
    if res.info.subresource("status").is_some() {
        all.extend(fields_of(res, Some("status"), obj).into_keys());
    }
    // Every prefix of a member is present too (ownership of `k:` nodes and their parents).
    let prefixes: Vec<Path> = all
        .iter()
        .flat_map(|p| (1..p.len()).map(move |i| p[..i].to_vec()))
        .collect();
    all.extend(prefixes);
    all
}

/// When a non-apply write changed nothing but managedFields, what is stored stays: a no-op
/// write stays a no-op (upstream keeps the entries' times unless their sets change).
fn keep_if_unchanged(current: &Value, desired: &mut Value) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        v
    };
    if strip(current) == strip(desired) {
        let meta = crate::object::meta_mut(desired);
        match current.pointer("/metadata/managedFields") {
            Some(mf) => meta.insert("managedFields".into(), mf.clone()),
            None => meta.remove("managedFields"),
        };
    }
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
            manager: self.manager.clone(),
            operation: "Apply".into(),
            api_version: res.info.api_version(),
            time,
            subresource: subresource.map(str::to_string),
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
        let mine = |e: &Entry| e.same_owner(&self.manager, "Apply", subresource);

        // Conflicts: a leaf someone else owns whose value would change.
        let differs = |p: &Path, v: &Option<Value>| match v {
            Some(v) => live_fields.get(p).is_some_and(|lv| lv.as_ref() != Some(v)),
            None => false,
        };
        let mut conflicts: Vec<(String, String, Path)> = Vec::new();
        for e in entries.iter().filter(|e| !mine(e)) {
            for (p, v) in &applied {
                if e.set.contains(p) && differs(p, v) {
                    conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
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
            .and_then(|e| e.time.clone());
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
        let keys = vec!["containerPort".to_string(), "protocol".to_string()];
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
