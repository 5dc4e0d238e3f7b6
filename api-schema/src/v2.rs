//! The swagger 2.0 document (`/openapi/v2`): every group-version's operations and every
//! definition in one document, as upstream serves it. kubectl asks for it (as protobuf, see
//! [`crate::gnostic`]) to validate `kind: List` manifests and for `explain
//! --output=plaintext-openapiv2`.

use serde_json::{json, Map, Value};

use crate::definitions::{sorted, Definitions, INT_OR_STRING, QUANTITY, V3_REF_PREFIX};
use crate::paths::{Body, In, Operation, Param, PathItem};
use crate::v3::KUBERNETES_VERSION;

const V2_REF_PREFIX: &str = "#/definitions/";

fn param(p: &Param) -> Value {
    let mut m = Map::new();
    if !p.description.is_empty() {
        m.insert("description".into(), json!(p.description));
    }
    m.insert(
        "in".into(),
        json!(match p.location {
            In::Query => "query",
            In::Path => "path",
        }),
    );
    m.insert("name".into(), json!(p.name));
    if p.required {
        m.insert("required".into(), json!(true));
    }
    m.insert("type".into(), json!(p.ty));
    m.insert("uniqueItems".into(), json!(true));
    Value::Object(m)
}

fn schema(body: &Body) -> Value {
    match body {
        Body::Def(d) => json!({"$ref": format!("{V2_REF_PREFIX}{d}")}),
        Body::Text => json!({"type": "string"}),
    }
}

fn operation(op: &Operation) -> Value {
    let mut m = Map::new();
    let consumes: &[&str] = op.body.as_ref().map_or(&["*/*"], |(_, types)| types);
    m.insert("consumes".into(), json!(consumes));
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.operation_id));
    let mut params: Vec<Value> = Vec::new();
    if let Some((body, _)) = &op.body {
        params
            .push(json!({"in": "body", "name": "body", "required": true, "schema": schema(body)}));
    }
    params.extend(op.params.iter().map(param));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    m.insert("produces".into(), json!(op.produces));
    let mut responses: Map<String, Value> = op
        .responses
        .iter()
        .map(|r| {
            (
                r.code.to_string(),
                json!({"description": r.description, "schema": schema(&r.body)}),
            )
        })
        .collect();
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("schemes".into(), json!(["https"]));
    m.insert("tags".into(), json!([op.tag]));
    m.insert("x-kubernetes-action".into(), json!(op.action));
    if let Some((g, v, k)) = &op.gvk {
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!({"group": g, "kind": k, "version": v}),
        );
    }
    Value::Object(m)
}

/// Rewrites a v3 schema for swagger 2.0: references point into `#/definitions/`, and the
/// `allOf: [{$ref}]` wrapper v3 needs for a reference with a description becomes a plain
/// `$ref` with siblings, which is how upstream's swagger spells it (and the only form
/// kubectl's v2 model builder reads).
fn to_v2(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let unwrap = match m.get("allOf") {
                Some(Value::Array(a)) if a.len() == 1 => a[0]
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .and_then(|o| o.get("$ref"))
                    .cloned(),
                _ => None,
            };
            if let Some(r) = unwrap {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(V3_REF_PREFIX) {
                    *r = format!("{V2_REF_PREFIX}{name}");
                }
            }
            m.values_mut().for_each(to_v2);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2),
        _ => {}
    }
}

/// The swagger 2.0 document over all group-versions.
pub(crate) fn document(defs: &Definitions, items: &[PathItem]) -> Value {
    let mut definitions = Value::Object(
        defs.schemas
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    to_v2(&mut definitions);
    // Swagger 2.0 has no oneOf: upstream publishes these two as strings there (and kubectl's
    // v2 validation accepts numbers for `int-or-string`).
    for (name, format) in [(INT_OR_STRING, Some("int-or-string")), (QUANTITY, None)] {
        if let Some(Value::Object(s)) = definitions.get_mut(name) {
            s.remove("oneOf");
            s.insert("type".into(), json!("string"));
            if let Some(f) = format {
                s.insert("format".into(), json!(f));
            }
        }
    }
    let paths: Map<String, Value> = items
        .iter()
        .map(|item| {
            let mut m = Map::new();
            for op in &item.ops {
                m.insert(op.method.to_string(), operation(op));
            }
            if !item.params.is_empty() {
                m.insert(
                    "parameters".into(),
                    Value::Array(item.params.iter().map(param).collect()),
                );
            }
            (item.path.clone(), Value::Object(m))
        })
        .collect();
    sorted(json!({
        "definitions": definitions,
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "security": [{"BearerToken": []}],
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            },
        },
        "swagger": "2.0",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_rewritten() {
        let mut v = json!({"properties": {
            "spec": {"allOf": [{"$ref": "#/components/schemas/a.B"}], "description": "d"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/a.C"}},
        }});
        to_v2(&mut v);
        assert_eq!(
            v,
            json!({"properties": {
                "spec": {"$ref": "#/definitions/a.B", "description": "d"},
                "items": {"type": "array", "items": {"$ref": "#/definitions/a.C"}},
            }})
        );
    }
}
