//! Every schema the documents reference, generated from k8s-openapi's `schemars` impls and
//! completed with what upstream's swagger has and k8s-openapi's schemas do not: the
//! `x-kubernetes-*` extensions, one definition per list kind, and upstream's spelling of
//! `IntOrString`, `Quantity` and references that carry a description.
//!
//! The schemas are kept in their OpenAPI v3 form (`$ref: "#/components/schemas/..."`, a
//! reference with siblings wrapped in `allOf`, as upstream's v3 documents do); [`crate::v2`]
//! rewrites them for swagger 2.0.

use std::collections::{BTreeMap, BTreeSet};

use api_types::k8s_openapi;
use api_types::resources::{self, RESOURCES};
use k8s_openapi::Resource;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::schema_ext::{FIELD_EXTENSIONS, TYPE_MAP_TYPES};

/// Where v3 documents keep their schemas; every `$ref` points below it.
pub(crate) const V3_REF_PREFIX: &str = "#/components/schemas/";

pub(crate) const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub(crate) const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

/// A group, version and kind, as `x-kubernetes-group-version-kind` spells them.
pub(crate) type Gvk = (String, String, String);

/// The definitions, and which one describes each kind.
pub(crate) struct Definitions {
    /// Definition name → schema (v3 form).
    pub schemas: BTreeMap<String, Value>,
    /// Kind → definition name, for every definition carrying `x-kubernetes-group-version-kind`.
    pub by_gvk: BTreeMap<Gvk, String>,
}

/// One typed kind: its identity and the name of its schema.
struct Typed {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    schema: String,
}

/// Registers `T`'s schema (and everything it references) with the generator.
fn typed<T: Resource + JsonSchema>(generator: &mut SchemaGenerator) -> Typed {
    let _ = generator.subschema_for::<T>();
    Typed {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        schema: T::schema_name().into_owned(),
    }
}

macro_rules! typed_kinds {
    ($generator:ident; $($ty:ty),* $(,)?) => {
        vec![$(typed::<$ty>($generator)),*]
    };
}

/// The kinds the served resources speak, and the subresource kinds (`Scale`, `Eviction`,
/// `Binding`, `TokenRequest`). A resource added to `RESOURCES` without a type here still gets
/// documents (with an open schema), but `tests::every_resource_is_typed` points it out.
fn typed_kinds(generator: &mut SchemaGenerator) -> Vec<Typed> {
    use k8s_openapi::api::*;
    typed_kinds![generator;
        core::v1::Namespace,
        core::v1::Pod,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::Node,
        core::v1::Event,
        core::v1::LimitRange,
        core::v1::ResourceQuota,
        core::v1::PersistentVolumeClaim,
        core::v1::PersistentVolume,
        core::v1::Binding,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        apps::v1::DaemonSet,
        apps::v1::ControllerRevision,
        batch::v1::Job,
        batch::v1::CronJob,
        coordination::v1::Lease,
        discovery::v1::EndpointSlice,
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
        policy::v1::Eviction,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
        rbac::v1::ClusterRole,
        rbac::v1::ClusterRoleBinding,
        authentication::v1::TokenReview,
        authentication::v1::SelfSubjectReview,
        authorization::v1::LocalSubjectAccessReview,
        authorization::v1::SelfSubjectAccessReview,
        authorization::v1::SelfSubjectRulesReview,
        authorization::v1::SubjectAccessReview,
        certificates::v1::CertificateSigningRequest,
        networking::v1::Ingress,
        networking::v1::NetworkPolicy,
        scheduling::v1::PriorityClass,
        storage::v1::StorageClass,
        autoscaling::v1::Scale,
        authentication::v1::TokenRequest,
    ]
}

/// The `apiVersion` of a group-version, as objects carry it.
pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The definition name for a kind without a typed schema: upstream's convention for CRDs.
pub(crate) fn untyped_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    if group.is_empty() {
        format!("io.k8s.api.core.{version}.{kind}")
    } else {
        format!("{}.{version}.{kind}", reversed.join("."))
    }
}

fn gvk_ext(list: &[(&str, &str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(g, v, k)| json!({"group": g, "kind": k, "version": v}))
            .collect(),
    )
}

impl Definitions {
    /// Generates every definition. Pure and deterministic: the same build always yields the
    /// same documents, so their hashes only change when the content does.
    pub(crate) fn build() -> Self {
        let mut generator = SchemaSettings::openapi3()
            .with(|s| {
                s.transforms.clear();
                s.meta_schema = None;
            })
            .into_generator();
        let typed = typed_kinds(&mut generator);
        {
            use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
            let _ = generator.subschema_for::<meta::Status>();
            let _ = generator.subschema_for::<meta::DeleteOptions>();
            let _ = generator.subschema_for::<meta::Patch>();
            let _ = generator.subschema_for::<meta::APIResourceList>();
            let _ = generator.subschema_for::<meta::WatchEvent<k8s_openapi::api::core::v1::Pod>>();
        }
        let mut schemas: BTreeMap<String, Value> =
            generator.take_definitions(false).into_iter().collect();

        let mut by_gvk = BTreeMap::new();
        let mut add_gvk =
            |schemas: &mut BTreeMap<String, Value>, name: &str, list: &[(&str, &str, &str)]| {
                if let Some(Value::Object(s)) = schemas.get_mut(name) {
                    s.insert("x-kubernetes-group-version-kind".into(), gvk_ext(list));
                    for (g, v, k) in list {
                        by_gvk
                            .entry((g.to_string(), v.to_string(), k.to_string()))
                            .or_insert_with(|| name.to_string());
                    }
                }
            };

        for t in &typed {
            add_gvk(&mut schemas, &t.schema, &[(t.group, t.version, t.kind)]);
        }
        // Every served kind gets a list definition; a kind without a typed schema gets an
        // open one, so that its documents still resolve every reference.
        for r in RESOURCES {
            let name = match typed
                .iter()
                .find(|t| t.group == r.group && t.version == r.version && t.kind == r.kind)
            {
                Some(t) => t.schema.clone(),
                None => {
                    let name = untyped_name(r.group, r.version, r.kind);
                    schemas.entry(name.clone()).or_insert_with(|| {
                        json!({
                            "description": format!("{} is served without a published schema.", r.kind),
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        })
                    });
                    add_gvk(&mut schemas, &name, &[(r.group, r.version, r.kind)]);
                    name
                }
            };
            let list_name = format!("{name}List");
            let list_kind = r.list_kind();
            if !schemas.contains_key(&list_name) {
                let list = list_schema(&schemas, &name, r.kind, r.plural);
                schemas.insert(list_name.clone(), list);
            }
            add_gvk(
                &mut schemas,
                &list_name,
                &[(r.group, r.version, &list_kind)],
            );
        }

        // Meta kinds: upstream registers Status in the core group, and WatchEvent and
        // DeleteOptions in every group-version.
        add_gvk(&mut schemas, STATUS, &[("", "v1", "Status")]);
        add_gvk(
            &mut schemas,
            API_RESOURCE_LIST,
            &[("", "v1", "APIResourceList")],
        );
        let gvs: Vec<(&str, &str)> = resources::groups()
            .into_iter()
            .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)))
            .collect();
        for (kind, name) in [
            ("DeleteOptions", DELETE_OPTIONS),
            ("WatchEvent", WATCH_EVENT),
        ] {
            let list: Vec<(&str, &str, &str)> = gvs.iter().map(|(g, v)| (*g, *v, kind)).collect();
            add_gvk(&mut schemas, name, &list);
        }

        // Upstream's v3 documents spell IntOrString and Quantity as `oneOf` their JSON types
        // (their Go types' `OpenAPIV3OneOfTypes`); `kubectl explain` then shows the type's name.
        // [`crate::v2`] turns these into swagger 2.0's strings.
        for (name, format, types) in [
            (INT_OR_STRING, Some("int-or-string"), ["integer", "string"]),
            (QUANTITY, None, ["string", "number"]),
        ] {
            if let Some(Value::Object(s)) = schemas.get_mut(name) {
                s.remove("x-kubernetes-int-or-string");
                s.remove("type");
                s.insert(
                    "oneOf".into(),
                    json!([{"type": types[0]}, {"type": types[1]}]),
                );
                if let Some(f) = format {
                    s.insert("format".into(), json!(f));
                }
            }
        }

        // k8s-openapi marks `metadata` required on every object, since its Rust types do not
        // make it optional; upstream requires it only where the Go field lacks `omitempty`
        // (core/v1 Event). kubectl's validation and `explain` read `required`.
        for (name, schema) in schemas.iter_mut() {
            if name == CORE_EVENT {
                continue;
            }
            if let Value::Object(s) = schema {
                if let Some(Value::Array(required)) = s.get_mut("required") {
                    required.retain(|r| r != "metadata");
                    if required.is_empty() {
                        s.remove("required");
                    }
                }
            }
        }

        for ext in FIELD_EXTENSIONS {
            if let Some(prop) = schemas
                .get_mut(ext.definition)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(ext.property))
                .and_then(Value::as_object_mut)
            {
                ext.apply(prop);
            }
        }
        for (name, map_type) in TYPE_MAP_TYPES {
            if let Some(Value::Object(s)) = schemas.get_mut(*name) {
                s.insert("x-kubernetes-map-type".into(), json!(map_type));
            }
        }

        for schema in schemas.values_mut() {
            normalize(schema);
        }
        Definitions { schemas, by_gvk }
    }

    /// The definition describing a kind, if there is one.
    pub(crate) fn for_gvk(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.by_gvk
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(String::as_str)
    }

    /// `names` and every definition they reference, transitively.
    pub(crate) fn closure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = names.into_iter().map(str::to_string).collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(schema) = self.schemas.get(&name) {
                collect_refs(schema, &mut |r| {
                    if !seen.contains(r) {
                        todo.push(r.to_string());
                    }
                });
            }
        }
        seen
    }
}

/// Calls `f` with the definition name of every `$ref` inside `v`.
pub(crate) fn collect_refs(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(name) = x.as_str().and_then(|s| s.strip_prefix(V3_REF_PREFIX)) {
                        f(name);
                    }
                } else {
                    collect_refs(x, f);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, f)),
        _ => {}
    }
}

/// Upstream's list definition for `item` (e.g. `DeploymentList` for `Deployment`).
fn list_schema(schemas: &BTreeMap<String, Value>, item: &str, kind: &str, plural: &str) -> Value {
    // The apiVersion/kind descriptions are the same for every type; reuse the item's.
    let describe = |field: &str| {
        schemas
            .get(item)
            .and_then(|s| s.pointer(&format!("/properties/{field}/description")))
            .cloned()
            .unwrap_or_else(|| json!(""))
    };
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "properties": {
            "apiVersion": {"description": describe("apiVersion"), "type": "string"},
            "items": {
                "description": format!("List of {plural}."),
                "items": {"$ref": format!("{V3_REF_PREFIX}{item}")},
                "type": "array",
            },
            "kind": {"description": describe("kind"), "type": "string"},
            "metadata": {
                "$ref": format!("{V3_REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
        "required": ["items"],
        "type": "object",
    })
}

/// Brings a generated schema to upstream's v3 spelling: a `$ref` with siblings (a property's
/// own description) becomes `allOf: [{$ref}]` plus the siblings, since a `$ref`'s siblings are
/// ignored in OpenAPI 3.0; `true` schemas become `{}`.
fn normalize(schema: &mut Value) {
    match schema {
        Value::Bool(true) => *schema = json!({}),
        Value::Object(m) => {
            if m.len() > 1 {
                if let Some(r) = m.remove("$ref") {
                    m.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            for (k, v) in m.iter_mut() {
                match k.as_str() {
                    "properties" => {
                        if let Value::Object(props) = v {
                            props.values_mut().for_each(normalize);
                        }
                    }
                    "items" | "additionalProperties" | "not" => normalize(v),
                    "allOf" | "anyOf" | "oneOf" => {
                        if let Value::Array(a) = v {
                            a.iter_mut().for_each(normalize);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Rebuilds every object of `v` with sorted keys: the documents then serialize identically
/// whether or not some crate in the build turned on serde_json's `preserve_order`.
pub(crate) fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let entries: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect::<Map<String, Value>>())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_typed() {
        let defs = Definitions::build();
        for r in RESOURCES {
            let name = defs
                .for_gvk(r.group, r.version, r.kind)
                .unwrap_or_else(|| panic!("no schema for {}", r.kind));
            assert!(
                !defs.schemas[name]
                    .get("x-kubernetes-preserve-unknown-fields")
                    .is_some_and(|v| v == true),
                "{} has no typed schema: add it to typed_kinds",
                r.kind
            );
            assert!(defs.for_gvk(r.group, r.version, &r.list_kind()).is_some());
            for s in r.subresources {
                let g = s.group.unwrap_or(r.group);
                let v = s.version.unwrap_or(r.version);
                if ["Scale", "Eviction", "Binding", "TokenRequest"].contains(&s.kind) {
                    assert!(defs.for_gvk(g, v, s.kind).is_some(), "{}", s.kind);
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let defs = Definitions::build();
        for (name, schema) in &defs.schemas {
            collect_refs(schema, &mut |r| {
                assert!(
                    defs.schemas.contains_key(r),
                    "{name} references missing {r}"
                );
            });
        }
    }

    #[test]
    fn every_field_extension_lands() {
        let defs = Definitions::build();
        for ext in FIELD_EXTENSIONS {
            let Some(def) = defs.schemas.get(ext.definition) else {
                continue;
            };
            let prop = def
                .pointer(&format!("/properties/{}", ext.property))
                .unwrap_or_else(|| panic!("{}.{} missing", ext.definition, ext.property));
            if let Some(s) = ext.patch_strategy {
                assert_eq!(prop["x-kubernetes-patch-strategy"], s);
            }
        }
    }

    #[test]
    fn upstream_spellings() {
        let defs = Definitions::build();
        let s = &defs.schemas;
        assert_eq!(
            s[INT_OR_STRING]["oneOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert_eq!(s[INT_OR_STRING]["format"], "int-or-string");
        assert_eq!(
            s[QUANTITY]["oneOf"],
            json!([{"type": "string"}, {"type": "number"}])
        );
        assert!(s["io.k8s.api.apps.v1.Deployment"].get("required").is_none());
        assert_eq!(
            s["io.k8s.api.core.v1.Event"]["required"],
            json!(["involvedObject", "metadata"])
        );
        assert_eq!(
            s["io.k8s.api.rbac.v1.RoleBinding"]["required"],
            json!(["roleRef"])
        );
        let spec = &s["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(spec["description"].is_string());
        let list = &s["io.k8s.api.apps.v1.DeploymentList"];
        assert_eq!(
            list["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            s["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert_eq!(
            s["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
            "atomic"
        );
    }

    #[test]
    fn untyped_names_follow_upstream() {
        assert_eq!(
            untyped_name("example.com", "v1", "Widget"),
            "com.example.v1.Widget"
        );
        assert_eq!(untyped_name("", "v1", "Thing"), "io.k8s.api.core.v1.Thing");
    }
}
