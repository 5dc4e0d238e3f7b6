//! Tests of the public API: the documents and the three patch flavours.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use api_types::resources::{self, RESOURCES};
use serde_json::json;

use super::*;

/// Built once for all tests: building is deterministic, so sharing changes nothing.
fn api() -> &'static OpenApi {
    static API: OnceLock<OpenApi> = OnceLock::new();
    API.get_or_init(OpenApi::build)
}

fn v3(key: &str) -> Value {
    let (doc, _) = api()
        .v3_document(key)
        .unwrap_or_else(|| panic!("no document {key}"));
    serde_json::from_slice(doc).expect("document is JSON")
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

#[test]
fn index_lists_every_group_version() {
    let index: Value = serde_json::from_slice(api().v3_index()).expect("index is JSON");
    let paths = index["paths"].as_object().expect("paths");
    let want: BTreeSet<String> = resources::groups()
        .into_iter()
        .flat_map(|(g, vs)| vs.into_iter().map(move |v| gv_key(g, v)))
        .collect();
    let got: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(got, want);
    for (key, entry) in paths {
        let (_, hash) = api().v3_document(key).expect("document for index entry");
        assert_eq!(
            entry["serverRelativeURL"],
            format!("/openapi/v3/{key}?hash={hash}")
        );
        assert_eq!(hash.len(), 128, "sha512 hex");
    }
    assert!(api().v3_document("/apis/apps/v1/").is_some());
    assert!(api().v3_document("apis/nope/v1").is_none());
}

#[test]
fn every_resource_has_a_patch_operation_kubectl_accepts() {
    // Create-only kinds (the reviews) have no PATCH, as upstream.
    for r in RESOURCES
        .iter()
        .filter(|r| r.verbs.contains(&api_types::resources::Verb::Patch))
    {
        let doc = v3(&gv_key(r.group, r.version));
        let paths = doc["paths"].as_object().expect("paths");
        let want = json!({"group": r.group, "version": r.version, "kind": r.kind});
        // What cli-runtime's query_param_verifier_v3 does: the first path item whose PATCH
        // operation carries the kind's GVK, then a query parameter named fieldValidation.
        let patch = paths
            .values()
            .filter_map(|item| item.get("patch"))
            .find(|op| op["x-kubernetes-group-version-kind"] == want)
            .unwrap_or_else(|| panic!("no PATCH operation for {}", r.kind));
        let params = patch["parameters"].as_array().expect("parameters");
        for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "query"),
                "{}: {name}",
                r.kind
            );
        }
        let content = patch["requestBody"]["content"]
            .as_object()
            .expect("content");
        for t in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            assert!(content.contains_key(t), "{}: {t}", r.kind);
        }
        assert_eq!(patch["x-kubernetes-action"], "patch");
        // And the kind's schema carries its GVK, which `kubectl explain` looks for.
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        assert!(
            schemas
                .values()
                .any(|s| s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|a| a.contains(&want))),
            "no schema with the GVK of {}",
            r.kind
        );
    }
}

#[test]
fn every_reference_in_every_document_resolves() {
    for key in api().v3_keys() {
        let doc = v3(key);
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        definitions::collect_refs(&doc, &mut |r| {
            assert!(schemas.contains_key(r), "{key}: dangling reference {r}");
        });
        assert_eq!(doc["openapi"], "3.0.0");
    }
}

#[test]
fn deployment_schema_explains_replicas() {
    let doc = v3("apis/apps/v1");
    let schemas = &doc["components"]["schemas"];
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let spec = &deployment["properties"]["spec"];
    assert_eq!(
        spec["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
    let replicas = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
    assert_eq!(replicas["type"], "integer");
    assert!(replicas["description"]
        .as_str()
        .is_some_and(|d| d.contains("desired pods")));
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
            ["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
}

#[test]
fn documents_are_deterministic() {
    let again = OpenApi::build();
    assert_eq!(again.v3_index(), api().v3_index());
    assert_eq!(again.v2_json(), api().v2_json());
    assert_eq!(again.v2_protobuf(), api().v2_protobuf());
    assert_eq!(again.v2_hash(), api().v2_hash());
    assert_ne!(content_hash(b"a"), content_hash(b"b"));
}

#[test]
fn core_document_has_subresource_kinds() {
    let doc = v3("api/v1");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "io.k8s.api.policy.v1.Eviction",
        "io.k8s.api.core.v1.Binding",
        "io.k8s.api.authentication.v1.TokenRequest",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "io.k8s.api.core.v1.PodList",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    let scale = v3("apis/apps/v1");
    assert!(scale["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
}

#[test]
fn v2_json_is_complete_swagger() {
    let doc: Value = serde_json::from_slice(api().v2_json()).expect("v2 is JSON");
    assert_eq!(doc["swagger"], "2.0");
    let defs = doc["definitions"].as_object().expect("definitions");
    let mut refs = 0;
    definitions::collect_refs(&doc, &mut |_| refs += 1);
    assert_eq!(refs, 0, "no v3-style references left");
    fn walk(v: &Value, defs: &Map<String, Value>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    let name = r.strip_prefix("#/definitions/").expect("v2 ref");
                    assert!(defs.contains_key(name), "dangling {r}");
                }
                assert!(!m.contains_key("allOf"), "allOf left in v2");
                m.values().for_each(|x| walk(x, defs));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, defs)),
            _ => {}
        }
    }
    walk(&doc, defs);
    let spec = &defs["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
    assert_eq!(
        spec["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    assert!(patch["consumes"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("application/strategic-merge-patch+json"))));
    assert!(patch["parameters"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["in"] == "body")));
}

/// kubectl builds its v2 validation model with kube-openapi's `proto.NewOpenAPIData`, which
/// rejects the whole document if any definition is outside what it understands. These are its
/// rules (pkg/util/proto/document.go `ParseSchema`).
fn check_kube_openapi_model(name: &str, s: &gnostic::Schema, defs: &BTreeSet<String>) {
    if !s.r#ref.is_empty() {
        let target = s.r#ref.strip_prefix("#/definitions/").unwrap_or_default();
        assert!(
            defs.contains(target),
            "{name}: unknown model in reference {}",
            s.r#ref
        );
        return;
    }
    let types = s
        .r#type
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    assert!(types.len() <= 1, "{name}: definitions with multiple types");
    let props = s
        .properties
        .as_ref()
        .map(|p| p.additional_properties.as_slice())
        .unwrap_or_default();
    match types.first().map(String::as_str) {
        Some("array") => {
            let items = s
                .items
                .as_ref()
                .map(|i| i.schema.as_slice())
                .unwrap_or_default();
            assert_eq!(
                items.len(),
                1,
                "{name}: array should have exactly one sub-item"
            );
            check_kube_openapi_model(&format!("{name}[]"), &items[0], defs);
        }
        Some("object") | None => {
            for p in props {
                if let Some(v) = &p.value {
                    check_kube_openapi_model(&format!("{name}.{}", p.name), v, defs);
                }
            }
            if let Some(a) = &s.additional_properties {
                if let Some(gnostic::additional_properties_item::Oneof::Schema(v)) = &a.oneof {
                    check_kube_openapi_model(&format!("{name}{{}}"), v, defs);
                }
            }
        }
        Some(t) => assert!(
            ["string", "number", "integer", "boolean"].contains(&t),
            "{name}: unknown primitive type {t}"
        ),
    }
}

#[test]
fn v2_protobuf_decodes_with_gvk_extensions() {
    let doc = gnostic::Document::decode(api().v2_protobuf()).expect("decodes");
    assert_eq!(doc.swagger, "2.0");
    let defs = doc.definitions.as_ref().expect("definitions");
    let names: BTreeSet<String> = defs
        .additional_properties
        .iter()
        .map(|d| d.name.clone())
        .collect();
    for d in &defs.additional_properties {
        check_kube_openapi_model(&d.name, d.value.as_ref().expect("schema"), &names);
    }
    let deployment = defs
        .additional_properties
        .iter()
        .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
        .and_then(|d| d.value.as_ref())
        .expect("Deployment definition");
    let gvk = deployment
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .and_then(|e| e.value.as_ref())
        .expect("GVK extension");
    let parsed: Value = serde_yaml::from_str(&gvk.yaml).expect("YAML");
    assert_eq!(
        parsed,
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    // Every served kind is findable by GVK, as kubectl's `LookupResource` does.
    for r in RESOURCES {
        let want = json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
        assert!(
            defs.additional_properties.iter().any(|d| d
                .value
                .as_ref()
                .into_iter()
                .flat_map(|v| &v.vendor_extension)
                .filter(|e| e.name == "x-kubernetes-group-version-kind")
                .filter_map(|e| e.value.as_ref())
                .any(|a| serde_yaml::from_str::<Value>(&a.yaml).ok() == Some(want.clone()))),
            "{}",
            r.kind
        );
    }
    let paths = doc.paths.as_ref().expect("paths");
    let item = paths
        .path
        .iter()
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .and_then(|p| p.value.as_ref())
        .expect("deployment path");
    let patch = item.patch.as_ref().expect("patch op");
    assert_eq!(patch.operation_id, "patchAppsV1NamespacedDeployment");
    assert!(patch.parameters.iter().any(|p| matches!(
        &p.oneof,
        Some(gnostic::parameters_item::Oneof::Parameter(gnostic::Parameter {
            oneof: Some(gnostic::parameter::Oneof::NonBodyParameter(gnostic::NonBodyParameter {
                oneof: Some(gnostic::non_body_parameter::Oneof::QueryParameterSubSchema(q)),
            })),
        })) if q.name == "fieldValidation"
    )));
    // Re-encoding what was decoded gives the same bytes: no field is lost on the way.
    assert_eq!(doc.encode_to_vec(), api().v2_protobuf());
}

#[test]
fn build_is_fast_enough() {
    let t = std::time::Instant::now();
    let api = OpenApi::build();
    let total: usize = api
        .v3_keys()
        .filter_map(|k| api.v3_document(k))
        .map(|(d, _)| d.len())
        .sum::<usize>()
        + api.v2_json().len()
        + api.v2_protobuf().len();
    // Generous: debug builds are ~10x slower than release (~0.1 s there).
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    assert!(total < 16 << 20, "{total} bytes of documents");
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch and JSON patch

#[test]
fn merge_patch_rfc7386() {
    let original = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
    let patch = json!({"a": "z", "c": {"f": null, "h": 1}, "l": [3], "n": null});
    assert_eq!(
        merge_patch(&original, &patch),
        json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [3]})
    );
    // RFC 7386 appendix A examples.
    assert_eq!(
        merge_patch(&json!({"a": "b"}), &json!({"a": "c"})),
        json!({"a": "c"})
    );
    assert_eq!(
        merge_patch(&json!({"a": "b"}), &json!({"a": null})),
        json!({})
    );
    assert_eq!(
        merge_patch(&json!({"a": [{"b": "c"}]}), &json!({"a": [1]})),
        json!({"a": [1]})
    );
    assert_eq!(
        merge_patch(&json!(["a", "b"]), &json!(["c", "d"])),
        json!(["c", "d"])
    );
    assert_eq!(merge_patch(&json!({"a": "b"}), &json!(["c"])), json!(["c"]));
    assert_eq!(
        merge_patch(&json!({"e": null}), &json!({"a": 1})),
        json!({"e": null, "a": 1})
    );
    assert_eq!(
        merge_patch(&json!([1, 2]), &json!({"a": "b", "c": null})),
        json!({"a": "b"})
    );
    assert_eq!(
        merge_patch(&json!({}), &json!({"a": {"bb": {"ccc": null}}})),
        json!({"a": {"bb": {}}})
    );
}

#[test]
fn json_patch_rfc6902() {
    let original = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
    let patch = json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"},
    ]);
    assert_eq!(
        json_patch(&original, &patch),
        Ok(json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}}))
    );
    let failed = json_patch(
        &original,
        &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
    );
    assert!(
        matches!(failed, Err(PatchError::CannotApply(_))),
        "{failed:?}"
    );
    assert_eq!(failed.map_err(|e| e.http_status()), Err(422));
    let missing = json_patch(&original, &json!([{"op": "remove", "path": "/nope"}]));
    assert!(matches!(missing, Err(PatchError::CannotApply(_))));
    let malformed = json_patch(&original, &json!({"op": "add"}));
    assert!(matches!(malformed, Err(PatchError::BadPatch(_))));
    assert_eq!(malformed.map_err(|e| e.http_status()), Err(400));
    let unknown_op = json_patch(&original, &json!([{"op": "frobnicate", "path": "/a"}]));
    assert!(matches!(unknown_op, Err(PatchError::BadPatch(_))));
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

fn smp(group: &str, version: &str, kind: &str, original: Value, patch: Value) -> Value {
    api()
        .strategic_merge_patch(group, version, kind, &original, &patch)
        .unwrap_or_else(|e| panic!("patch failed: {e}"))
}

fn deploy(original: Value, patch: Value) -> Value {
    smp("apps", "v1", "Deployment", original, patch)
}

fn pod(original: Value, patch: Value) -> Value {
    smp("", "v1", "Pod", original, patch)
}

fn deployment_with(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

#[test]
fn smp_kubectl_apply_update() {
    // The body `kubectl apply` sends after the image changed.
    let original = deployment_with(json!([
        {"name": "web", "image": "busybox:1", "args": ["sleep", "1"]},
        {"name": "side", "image": "pause"}
    ]));
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"image": "busybox:2", "name": "web"}]
        }}}
    });
    let got = deploy(original, patch);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "web", "image": "busybox:2", "args": ["sleep", "1"]},
            {"name": "side", "image": "pause"}
        ])
    );
    assert_eq!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}"
    );
    assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(got["spec"]["replicas"], 1);
}

/// The body kubectl 1.32 computed (from these documents) when re-applying a Deployment whose
/// container image and env changed and which gained a container; captured from a real run.
#[test]
fn smp_captured_kubectl_apply_patch() {
    let original = deployment_with(json!([{
        "name": "web",
        "image": "busybox:1",
        "ports": [{"containerPort": 80}],
        "env": [{"name": "A", "value": "1"}]
    }]));
    let patch: Value = serde_json::from_str(
        r#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\n"}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":[{"$setElementOrder/env":[{"name":"B"}],"env":[{"name":"B","value":"2"},{"$patch":"delete","name":"A"}],"image":"busybox:2","name":"web"},{"image":"pause","name":"side"}]}}}}"#,
    )
    .expect("JSON");
    let got = deploy(original, patch);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "web", "image": "busybox:2", "ports": [{"containerPort": 80}], "env": [{"name": "B", "value": "2"}]},
            {"name": "side", "image": "pause"}
        ])
    );
}

#[test]
fn smp_merge_directive_is_accepted_as_a_no_op() {
    let original = deployment_with(json!([{"name": "a", "image": "1"}]));
    let got = deploy(
        original,
        json!({"metadata": {"$patch": "merge", "labels": {"b": "2"}},
               "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2", "$patch": "merge"}]}}}}),
    );
    assert_eq!(got["metadata"]["labels"], json!({"app": "web", "b": "2"}));
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "2"}])
    );
}

#[test]
fn smp_containers_merge_by_name_and_new_ones_go_first() {
    let original =
        deployment_with(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let got = deploy(
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "z"}, {"name": "b", "image": "y2"}]}}}}),
    );
    // Upstream: patch elements keep the patch's order, and an element new to the list goes
    // before the live-only elements it is compared with.
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c", "image": "z"}, {"name": "a", "image": "x"}, {"name": "b", "image": "y2"}])
    );
}

#[test]
fn smp_env_and_ports_merge_by_their_keys() {
    let original = json!({"spec": {"containers": [{
        "name": "web",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
        "volumeMounts": [{"mountPath": "/data", "name": "data"}]
    }]}});
    let got = pod(
        original,
        json!({"spec": {"containers": [{
            "name": "web",
            "env": [{"name": "B", "value": "3"}],
            "ports": [{"containerPort": 80.0, "name": "http"}],
            "volumeMounts": [{"mountPath": "/data", "readOnly": true}]
        }]}}),
    );
    let c = &got["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
    );
    assert_eq!(
        c["ports"],
        // Matched by value (80 == 80.0, as Go's float64s); the patch's spelling wins.
        json!([{"containerPort": 80.0, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"mountPath": "/data", "name": "data", "readOnly": true}])
    );
}

#[test]
fn smp_patch_delete_on_list_element() {
    let original = deployment_with(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let got = deploy(
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}}}),
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a"}, {"name": "c"}])
    );
}

#[test]
fn smp_patch_replace_on_list_and_map() {
    let original = deployment_with(json!([{"name": "a", "image": "1"}, {"name": "b"}]));
    let got = deploy(
        original.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "z", "image": "9"}, {"$patch": "replace"}]}}}}),
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "z", "image": "9"}])
    );
    let got = deploy(
        original,
        json!({"metadata": {"labels": {"$patch": "replace", "tier": "fe"}}}),
    );
    assert_eq!(got["metadata"]["labels"], json!({"tier": "fe"}));
    let got = deploy(got, json!({"metadata": {"labels": {"$patch": "delete"}}}));
    assert_eq!(got["metadata"]["labels"], json!({}));
}

#[test]
fn smp_set_element_order() {
    let original = deployment_with(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let got = deploy(
        original,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
        }}}}),
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
    );
    // kubectl apply removing a container: a delete directive plus the order of what remains.
    let original = deployment_with(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let got = deploy(
        original,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [{"name": "b", "$patch": "delete"}]
        }}}}),
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c"}, {"name": "a"}])
    );
    // The order list names an element that is neither live nor in the patch: ignored.
    let original = json!({"metadata": {"finalizers": ["x", "z"]}});
    let got = pod(
        original,
        json!({"metadata": {"$setElementOrder/finalizers": ["z", "y", "x"]}}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["z", "x"]));
}

#[test]
fn smp_set_element_order_must_match_patch() {
    let original = deployment_with(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let err = api()
        .strategic_merge_patch(
            "apps",
            "v1",
            "Deployment",
            &original,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                "containers": [{"name": "c", "image": "3"}, {"name": "a", "image": "1"}]
            }}}}),
        )
        .expect_err("order mismatch");
    assert!(err.to_string().contains("doesn't match"), "{err}");
}

#[test]
fn smp_retain_keys_on_deployment_strategy() {
    let mut original = deployment_with(json!([{"name": "a"}]));
    original["spec"]["strategy"] = json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
    });
    let got = deploy(
        original,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
    // A key set by the patch must be retained.
    let bad = api().strategic_merge_patch(
        "apps",
        "v1",
        "Deployment",
        &json!({"spec": {"strategy": {"type": "Recreate"}}}),
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
    );
    assert!(matches!(bad, Err(PatchError::BadPatch(_))), "{bad:?}");
}

#[test]
fn smp_retain_keys_in_volumes() {
    let original = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    let got = pod(
        original,
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}]}}),
    );
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "v", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn smp_finalizers_merge_as_a_set() {
    let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
    let got = pod(
        original.clone(),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let got = pod(
        original.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["b"]));
    let got = pod(
        original,
        json!({"metadata": {
            "$setElementOrder/finalizers": ["c", "b"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "finalizers": ["c"]
        }}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["c", "b"]));
    // Deleting from a list that is not there adds nothing.
    let got = pod(
        json!({"metadata": {}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(got, json!({"metadata": {}}));
}

#[test]
fn smp_null_deletes() {
    let original = deployment_with(json!([{"name": "a", "image": "x", "command": ["sh"]}]));
    let got = deploy(
        original,
        json!({
            "metadata": {"labels": {"app": null, "new": "1"}},
            "spec": {"replicas": null, "template": {"spec": {"containers": [{"name": "a", "command": null}]}}},
            "status": {"ghost": null}
        }),
    );
    assert_eq!(got["metadata"]["labels"], json!({"new": "1"}));
    assert!(got["spec"].get("replicas").is_none());
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "x"}])
    );
    // A null inside a value that did not exist is dropped, not stored.
    assert_eq!(got["status"], json!({}));
}

#[test]
fn smp_non_merge_lists_are_replaced() {
    let original = deployment_with(json!([{"name": "a", "args": ["1", "2"], "command": ["x"]}]));
    let got = deploy(
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}}),
    );
    let c = &got["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"], json!(["3"]));
    assert_eq!(c["command"], json!(["x"]));
    // selector.matchExpressions has no merge strategy either.
    let original =
        json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
    let got = deploy(
        original,
        json!({"spec": {"selector": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}}}),
    );
    assert_eq!(
        got["spec"]["selector"]["matchExpressions"],
        json!([{"key": "b", "operator": "Exists"}])
    );
}

#[test]
fn smp_conditions_merge_by_type() {
    let original = json!({"status": {"conditions": [
        {"type": "Available", "status": "False"},
        {"type": "Progressing", "status": "True"}
    ]}});
    let got = deploy(
        original,
        json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}}),
    );
    // The patched element came before the live-only one in the live list, so it stays first.
    assert_eq!(
        got["status"]["conditions"],
        json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}])
    );
    let got = deploy(
        got,
        json!({"status": {"conditions": [{"type": "Progressing", "status": "False"}]}}),
    );
    assert_eq!(
        got["status"]["conditions"],
        json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "False"}])
    );
}

#[test]
fn smp_service_ports_merge_by_port() {
    let original = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
    let got = smp(
        "",
        "v1",
        "Service",
        original,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
    );
    assert_eq!(
        got["spec"]["ports"],
        json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
    );
}

#[test]
fn smp_replace_strategy_on_pdb_selector() {
    let original = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let got = smp(
        "policy",
        "v1",
        "PodDisruptionBudget",
        original,
        json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
    );
    // Without `replace` the labels would have merged to {a, b}.
    assert_eq!(got["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn smp_maps_of_structs_use_value_schema() {
    // ConfigMap data is a map of strings; annotations merge key by key.
    let original = json!({"data": {"a": "1", "b": "2"}, "metadata": {"annotations": {"x": "1"}}});
    let got = smp(
        "",
        "v1",
        "ConfigMap",
        original,
        json!({"data": {"a": null, "c": "3"}, "metadata": {"annotations": {"y": "2"}}}),
    );
    assert_eq!(got["data"], json!({"b": "2", "c": "3"}));
    assert_eq!(got["metadata"]["annotations"], json!({"x": "1", "y": "2"}));
}

#[test]
fn smp_scale_subresource_kind() {
    let got = smp(
        "autoscaling",
        "v1",
        "Scale",
        json!({"spec": {"replicas": 1}, "status": {"replicas": 1}}),
        json!({"spec": {"replicas": 4}}),
    );
    assert_eq!(got["spec"]["replicas"], 4);
}

#[test]
fn smp_unknown_kind_falls_back_to_merge_semantics() {
    let original = json!({"spec": {"list": [{"name": "a"}], "m": {"x": 1}}});
    let patch =
        json!({"spec": {"list": [{"name": "b"}], "m": {"y": 2}, "$setElementOrder/other": []}});
    let got = smp("example.com", "v1", "Widget", original, patch);
    assert_eq!(
        got,
        json!({"spec": {"list": [{"name": "b"}], "m": {"x": 1, "y": 2}}})
    );
    assert!(!api().has_patch_schema("example.com", "v1", "Widget"));
    assert!(api().has_patch_schema("apps", "v1", "Deployment"));
}

#[test]
fn smp_directives_never_leak_into_new_values() {
    let got = pod(
        json!({}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}], "$retainKeys": ["name"]}],
            "nodeSelector": {"$patch": "replace", "k": "v"}
        }}),
    );
    assert_eq!(
        got,
        json!({"spec": {"containers": [{"name": "a", "env": []}], "nodeSelector": {"k": "v"}}})
    );
}

#[test]
fn smp_errors() {
    let bad = |original: Value, patch: Value| {
        api()
            .strategic_merge_patch("apps", "v1", "Deployment", &original, &patch)
            .expect_err("should fail")
    };
    assert!(matches!(
        bad(json!({}), json!([1])),
        PatchError::BadPatch(_)
    ));
    assert!(matches!(
        bad(
            json!({"metadata": {}}),
            json!({"metadata": {"$patch": "frobnicate"}})
        ),
        PatchError::BadPatch(_)
    ));
    // A merge-list element without its merge key.
    let original = deployment_with(json!([{"name": "a"}]));
    assert!(matches!(
        bad(
            original,
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
        ),
        PatchError::CannotApply(_)
    ));
    assert!(matches!(
        bad(json!({}), json!({"$setElementOrder/x": {}})),
        PatchError::BadPatch(_)
    ));
    assert!(matches!(
        bad(
            json!({"metadata": {}}),
            json!({"metadata": {"$setElementOrder": []}})
        ),
        PatchError::BadPatch(_)
    ));
}

#[test]
fn smp_upstream_order_cases() {
    // From apimachinery's strategicpatch tests ("preserve the order from the patch in a
    // merging list 2" and its int-list twin).
    let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]}});
    let got = pod(
        original,
        json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}}),
    );
    assert_eq!(
        got["spec"]["containers"],
        json!([{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}])
    );
    let got = pod(
        json!({"metadata": {"finalizers": ["1", "2", "3"]}}),
        json!({"metadata": {"finalizers": ["3", "1"]}}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["2", "3", "1"]));
    // "delete all duplicate entries in a merging list".
    let got = pod(
        json!({"spec": {"containers": [{"name": "1"}, {"name": "1"}, {"name": "2", "image": "a"}, {"name": "3"}, {"name": "3"}]}}),
        json!({"spec": {"containers": [{"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}]}}),
    );
    assert_eq!(
        got["spec"]["containers"],
        json!([{"name": "2", "image": "a"}])
    );
    // "$setElementOrder contains item that is not present in the list to be merged".
    let got = pod(
        json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}]}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
            "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]
        }}),
    );
    assert_eq!(
        got["spec"]["containers"],
        json!([{"name": "3", "image": "3"}, {"name": "1", "image": "1"}])
    );
}
