//! OpenAPI 3.0 documents, one per group-version, as upstream's `/openapi/v3/<gv>` serves them:
//! the group-version's operations plus every schema they reach.

use serde_json::{json, Map, Value};

use crate::definitions::{sorted, Definitions, V3_REF_PREFIX};
use crate::paths::{referenced_definitions, Body, In, Operation, Param, PathItem};

/// The `info.version` the documents carry: the Kubernetes release whose API is served.
pub(crate) const KUBERNETES_VERSION: &str = "v1.32.4";

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
    m.insert("schema".into(), json!({"type": p.ty, "uniqueItems": true}));
    Value::Object(m)
}

fn schema(body: &Body) -> Value {
    match body {
        Body::Def(d) => json!({"$ref": format!("{V3_REF_PREFIX}{d}")}),
        Body::Text => json!({"type": "string"}),
    }
}

fn operation(op: &Operation) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.operation_id));
    if !op.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(op.params.iter().map(param).collect()),
        );
    }
    if let Some((body, types)) = &op.body {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": schema(body)})))
            .collect();
        m.insert(
            "requestBody".into(),
            json!({"content": content, "required": true}),
        );
    }
    let responses: Map<String, Value> = op
        .responses
        .iter()
        .map(|r| {
            let content: Map<String, Value> = op
                .produces
                .iter()
                .map(|t| (t.to_string(), json!({"schema": schema(&r.body)})))
                .collect();
            (
                r.code.to_string(),
                json!({"content": content, "description": r.description}),
            )
        })
        .collect();
    m.insert("responses".into(), Value::Object(responses));
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

/// The `paths` object of a document.
pub(crate) fn paths(items: &[PathItem]) -> Map<String, Value> {
    items
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
        .collect()
}

/// The document of one group-version.
pub(crate) fn document(defs: &Definitions, items: &[PathItem]) -> Value {
    let schemas: Map<String, Value> = defs
        .closure(referenced_definitions(items))
        .into_iter()
        .filter_map(|name| defs.schemas.get(&name).map(|s| (name, s.clone())))
        .collect();
    sorted(json!({
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey",
                },
            },
        },
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "openapi": "3.0.0",
        "paths": paths(items),
        "security": [{"BearerToken": []}],
    }))
}
