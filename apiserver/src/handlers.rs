//! HTTP glue: turns a request into a registry call and its result into a response. Every
//! resource of every kind goes through [`dispatch`]; nothing here is kind-specific except the
//! subresources that are not plain updates.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use storage::ListOptions;

use crate::discovery;
use crate::error::ApiError;
use crate::filter::Filter;
use crate::query::Query;
use crate::registry::{decode_stored, DeleteOptions, FieldValidation, WriteOptions, Written};
use crate::resource::{self, Resource, Target};
use crate::watch::{self, WatchParams};
use crate::State;

/// The largest request body accepted (upstream's limit for JSON/YAML bodies).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Entry point for every `/api` and `/apis` request.
pub async fn dispatch(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    crate::apply::init(&state.openapi);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match crate::apply::USER_AGENT
        .scope(user_agent, handle(state, req))
        .await
    {
        Ok(resp) => resp,
        Err(e) if e.code() == 413 => {
            // The rest of the oversized body is never read, so the connection cannot carry
            // another request: tell the client to open a new one.
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(state: Arc<State>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // `pods|services|nodes/<id>/proxy/<path...>`: any depth of path, the body streamed.
    if let Some(target) = crate::resource_proxy::ProxyPath::parse(parts.uri.path()) {
        return crate::resource_proxy::serve(&state, target, parts, body).await;
    }
    let target = resource::parse(parts.uri.path()).ok_or_else(ApiError::not_found_path)?;
    let method = parts.method.clone();
    let read_body = || async {
        axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::too_large())
    };
    match target {
        Target::Api | Target::Apis | Target::Group(_) | Target::GroupVersion(..)
            if method != Method::GET =>
        {
            Err(method_not_allowed_plain())
        }
        Target::Api => Ok(if discovery::wants_aggregated(&accept) {
            aggregated_response(discovery::aggregated(true))
        } else {
            json_response(StatusCode::OK, &discovery::api_versions(&state.address))
        }),
        Target::Apis => Ok(if discovery::wants_aggregated(&accept) {
            aggregated_response(discovery::aggregated(false))
        } else {
            json_response(StatusCode::OK, &discovery::api_group_list())
        }),
        Target::Group(g) => discovery::api_group(&g)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::not_found_path),
        Target::GroupVersion(g, v) => Ok(json_response(
            StatusCode::OK,
            &discovery::api_resource_list(&g, &v),
        )),
        // Upgrades need the connection (in the request's extensions), which the generic path
        // drops.
        Target::Object {
            resource,
            name: Some(name),
            subresource: Some(sub),
        } if crate::proxy::is_pod_stream(&resource, &sub) => {
            crate::proxy::pod_stream(&state, &resource, &name, &sub, &query, &mut parts).await
        }
        Target::Object {
            resource,
            name: None,
            subresource: None,
        } if crate::security::reviews::is_review(&resource) => {
            if method != Method::POST {
                return Err(method_not_allowed_plain());
            }
            let body = decode_body(&parts.headers, &read_body().await?)?;
            let user = parts
                .extensions
                .get::<authz::UserInfo>()
                .cloned()
                .unwrap_or_else(crate::security::insecure_user);
            let (code, obj) =
                crate::security::reviews::create(&state, &user, &resource, body).await?;
            Ok(json_response(code, &obj))
        }
        Target::Object {
            resource,
            name: Some(name),
            subresource: Some(sub),
        } if method == Method::POST
            && sub == "token"
            && resource.info.group.is_empty()
            && resource.info.plural == "serviceaccounts" =>
        {
            let body = decode_body(&parts.headers, &read_body().await?)?;
            let ns = resource.namespace.clone().unwrap_or_default();
            let (code, obj) =
                crate::security::reviews::token_request(&state, &ns, &name, body).await?;
            Ok(json_response(code, &obj))
        }
        Target::Object {
            resource,
            name,
            subresource,
        } => {
            let body = if matches!(
                method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            ) {
                read_body().await?
            } else {
                bytes::Bytes::new()
            };
            object_request(
                state,
                method,
                &parts.headers,
                query,
                &accept,
                resource,
                name,
                subresource,
                body,
            )
            .await
        }
    }
}

fn method_not_allowed_plain() -> ApiError {
    let mut s = api_types::status::bad_request("");
    s.code = Some(405);
    s.reason = Some("MethodNotAllowed".into());
    s.message = Some("the server does not allow this method on the requested resource".into());
    ApiError::new(s)
}

fn aggregated_response(value: Value) -> Response {
    let body = serde_json::to_vec(&value).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)],
        body,
    )
        .into_response()
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body by its content type.
fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    match content_type(headers).as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}"
            ))
        }),
        "application/vnd.kubernetes.protobuf" => api_protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding protobuf body: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_yaml::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => Err(ApiError::unsupported_media_type()),
    }
}

fn write_options(q: &Query) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dryRun value: \"{other}\": supported values: \"All\""
            )))
        }
    };
    let field_validation = match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
        field_manager: q.non_empty("fieldManager").map(str::to_string),
        apply: false,
    })
}

#[allow(clippy::too_many_arguments)]
async fn object_request(
    state: Arc<State>,
    method: Method,
    headers: &HeaderMap,
    q: Query,
    accept: &str,
    mut res: Resource,
    name: Option<String>,
    subresource: Option<String>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let registry = &state.registry;
    if let Some(sub) = &subresource {
        if res.info.subresource(sub).is_none() {
            return Err(ApiError::not_found_path());
        }
    }
    if res.info.namespaced && name.is_some() && res.namespace.is_none() {
        // `/api/v1/pods/x` names no namespace: upstream has no such path.
        return Err(ApiError::not_found_path());
    }
    if !res.info.namespaced {
        res.namespace = None;
    }
    // events.k8s.io Events are the core Events seen in another shape: lists and watches convert
    // as they read; everything else goes through the view.
    if crate::events::is_events_v1(res.info) && !(method == Method::GET && name.is_none()) {
        return events_v1_request(&state, method, headers, &q, accept, &res, name, &body)
            .await
            .map_err(|e| events_v1_error(&res, e));
    }
    match (method, name, subresource.as_deref()) {
        (Method::GET, None, None) => {
            let filter = Filter::from_query(&res, &q)?;
            if q.flag("watch") {
                let timeout = q
                    .int("timeoutSeconds")
                    .map_err(ApiError::bad_request)?
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                return watch::serve(
                    state.clone(),
                    res,
                    filter,
                    WatchParams {
                        resource_version: q.get("resourceVersion").map(str::to_string),
                        send_initial_events: q.flag("sendInitialEvents"),
                        allow_bookmarks: q.flag("allowWatchBookmarks"),
                        timeout,
                        table: match table_version(accept) {
                            Some(v) => Some((
                                v,
                                match q.non_empty("includeObject") {
                                    Some(io) => {
                                        api_query::IncludeObject::parse(io).ok_or_else(|| {
                                            ApiError::bad_request(format!(
                                                "includeObject: Unsupported value: \"{io}\""
                                            ))
                                        })?
                                    }
                                    None => api_query::IncludeObject::Metadata,
                                },
                            )),
                            None => None,
                        },
                    },
                )
                .await;
            }
            list(&state, &res, &q, filter, accept).await
        }
        (Method::GET, Some(name), None) => {
            let obj = registry.get(&res, &name).await?;
            if let Some(version) = table_version(accept) {
                let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
                return table_response(&res, &q, version, std::slice::from_ref(&obj), &meta);
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::GET, Some(name), Some("status" | "approval")) => {
            let obj = registry.get(&res, &name).await?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = registry.get(&res, &name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj)))
        }
        (Method::POST, None, None) => {
            let opts = write_options(&q)?;
            let obj = decode_body(headers, &body)?;
            let Written { object, warnings } = registry.create(&res, obj, &opts).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &object),
                &warnings,
            ))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = decode_body(headers, &body)?;
            bind(&state, &res, &name, binding, &write_options(&q)?).await
        }
        (
            Method::PUT,
            Some(name),
            sub @ (None | Some("status") | Some("finalize") | Some("approval")),
        ) => {
            let opts = write_options(&q)?;
            let desired = decode_body(headers, &body)?;
            let Written { object, warnings } = registry
                .update_with(&res, &name, sub, &opts, |_| Ok(desired.clone()))
                .await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &object),
                &warnings,
            ))
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) => {
            scale(&state, &res, &name, headers, &q, &body).await
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status")))
            if crate::apply::is_apply(&content_type(headers)) =>
        {
            let opts = WriteOptions {
                apply: true,
                ..write_options(&q)?
            };
            let req = crate::apply::ApplyRequest::decode(
                &body,
                q.non_empty("fieldManager"),
                q.get("force"),
            )?;
            if res.info.namespaced {
                let sent = crate::object::meta_str(&req.config, "namespace").unwrap_or("");
                if !sent.is_empty() && Some(sent) != res.namespace.as_deref() {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            let applied = registry
                .update_with(&res, &name, sub, &opts, |current| {
                    Ok(crate::registry::unversioned(
                        &req.apply(&res, sub, current)?,
                    ))
                })
                .await;
            let (code, Written { object, warnings }) = match applied {
                Err(e) if e.code() == 404 && sub.is_none() => {
                    if crate::object::name(&req.config) != Some(name.as_str()) {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            crate::object::name(&req.config).unwrap_or_default()
                        )));
                    }
                    let obj = req.new_object(&res, sub);
                    (
                        StatusCode::CREATED,
                        registry.create(&res, obj, &opts).await?,
                    )
                }
                other => (StatusCode::OK, other?),
            };
            Ok(with_warnings(json_response(code, &object), &warnings))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status") | Some("approval"))) => {
            let opts = write_options(&q)?;
            let patch = Patch::decode(headers, &body)?;
            let Written { object, warnings } = registry
                .update_with(&res, &name, sub, &opts, |current| {
                    let mut patched = patch.apply(&state, &res, current)?;
                    // A patch without a resourceVersion must not fail on a concurrent write.
                    if patch.resource_version_in_patch().is_none() {
                        if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            m.remove("resourceVersion");
                        }
                    }
                    Ok(patched)
                })
                .await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &object),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_options(&q, headers, &body)?;
            let (obj, gone) = registry.delete(&res, &name, &opts).await?;
            let code = if gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, None, None) => {
            if !res.info.has_verb(api_types::Verb::DeleteCollection) {
                return Err(ApiError::method_not_allowed(&res, "deletecollection"));
            }
            let opts = delete_options(&q, headers, &body)?;
            let filter = Filter::from_query(&res, &q)?;
            let items = delete_collection(registry, &res, &filter, &opts).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": res.info.list_kind(), "apiVersion": res.info.api_version(),
                        "metadata": {}, "items": items}),
            ))
        }
        (Method::GET, Some(name), Some("log")) if res.info.plural == "pods" => {
            crate::proxy::pod_log(&state, &res, &name, &q).await
        }
        (_, Some(name), Some(sub @ ("log" | "exec" | "attach" | "portforward"))) => {
            node_proxy_unavailable(&state, &res, &name, sub).await
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let eviction = decode_body(headers, &body)?;
            evict(
                &state,
                &res,
                &name,
                &eviction,
                q.get("dryRun") == Some("All"),
            )
            .await
        }
        _ => Err(method_not_allowed_plain()),
    }
}

/// An events.k8s.io/v1 body as the stored core/v1 Event: typed decoding in the events shape
/// (unknown fields per `fieldValidation`, warnings worded for that shape), then the field
/// conversion.
fn events_v1_to_core(
    res: &Resource,
    mut obj: Value,
    opts: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let want = res.info.api_version();
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != res.info.kind {
        return Err(ApiError::bad_request(format!(
            "Event in version \"v1\" cannot be handled as a Event: the object provided is unrecognized (kind {kind})"
        )));
    }
    if !av.is_empty() && av != want {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want})"
        )));
    }
    obj["apiVersion"] = json!(want);
    obj["kind"] = json!("Event");
    let canonical = crate::typed::canonicalize(res.info, &obj).map_err(|e| {
        ApiError::bad_request(format!(
            "Event in version \"v1\" cannot be handled as a Event: {e}"
        ))
    })?;
    opts.field_validation
        .check(&crate::typed::unknown_fields(&obj, &canonical), warnings)?;
    let mut core = crate::events::to_core(&canonical);
    if let Some(rv) = obj.pointer("/metadata/resourceVersion").cloned() {
        crate::object::meta_mut(&mut core).insert("resourceVersion".into(), rv);
    }
    Ok(core)
}

/// A registry error about the stored core Event, worded for the events.k8s.io resource the
/// client addressed (`events.events.k8s.io "x" not found`).
fn events_v1_error(res: &Resource, mut e: ApiError) -> ApiError {
    if let Some(d) = e.0.details.as_mut() {
        if d.group.as_deref().unwrap_or("").is_empty() && d.kind.as_deref() == Some("events") {
            d.group = Some(res.info.group.to_string());
            if let Some(m) = e.0.message.as_mut() {
                if let Some(rest) = m.strip_prefix("events ") {
                    *m = format!("events.{} {rest}", res.info.group);
                }
            }
        }
    }
    e
}

/// Single-object reads and every write of events.k8s.io/v1 Events, on the stored core Events.
#[allow(clippy::too_many_arguments)]
async fn events_v1_request(
    state: &Arc<State>,
    method: Method,
    headers: &HeaderMap,
    q: &Query,
    accept: &str,
    res: &Resource,
    name: Option<String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let store = crate::events::storage_resource(res)?;
    let registry = &state.registry;
    let v1 = crate::events::to_events_v1;
    match (method, name) {
        (Method::GET, Some(name)) => {
            let obj = v1(&registry.get(&store, &name).await?);
            if let Some(version) = table_version(accept) {
                let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
                return table_response(res, q, version, std::slice::from_ref(&obj), &meta);
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::POST, None) => {
            let opts = write_options(q)?;
            let mut warnings = Vec::new();
            let mut core =
                events_v1_to_core(res, decode_body(headers, body)?, &opts, &mut warnings)?;
            if crate::object::meta_str(&core, "namespace").is_none_or(str::is_empty) {
                let ns = res.namespace.clone().unwrap_or_else(|| "default".into());
                crate::object::meta_mut(&mut core).insert("namespace".into(), json!(ns));
            }
            let causes = crate::events::validate_v1_create(&core);
            if !causes.is_empty() {
                let name = crate::object::name(&core).unwrap_or("").to_string();
                return Err(ApiError::invalid(res, &name, causes));
            }
            let Written {
                object,
                warnings: w,
            } = registry.create(&store, core, &opts).await?;
            warnings.extend(w);
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &v1(&object)),
                &warnings,
            ))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_options(q)?;
            let mut warnings = Vec::new();
            let desired =
                events_v1_to_core(res, decode_body(headers, body)?, &opts, &mut warnings)?;
            let Written {
                object,
                warnings: w,
            } = registry
                .update_with(&store, &name, None, &opts, |current| {
                    let causes = crate::events::validate_v1_update(&desired, current);
                    if !causes.is_empty() {
                        return Err(ApiError::invalid(res, &name, causes));
                    }
                    Ok(desired.clone())
                })
                .await?;
            warnings.extend(w);
            Ok(with_warnings(
                json_response(StatusCode::OK, &v1(&object)),
                &warnings,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let opts = write_options(q)?;
            let patch = Patch::decode(headers, body)?;
            let mut warnings = Vec::new();
            let Written {
                object,
                warnings: w,
            } = registry
                .update_with(&store, &name, None, &opts, |current| {
                    let mut patched = patch.apply(state, res, &v1(current))?;
                    if patch.resource_version_in_patch().is_none() {
                        if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            m.remove("resourceVersion");
                        }
                    }
                    let desired = events_v1_to_core(res, patched, &opts, &mut warnings)?;
                    let causes = crate::events::validate_v1_update(&desired, current);
                    if !causes.is_empty() {
                        return Err(ApiError::invalid(res, &name, causes));
                    }
                    Ok(desired)
                })
                .await?;
            warnings.extend(w);
            Ok(with_warnings(
                json_response(StatusCode::OK, &v1(&object)),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(q, headers, body)?;
            let (obj, gone) = registry.delete(&store, &name, &opts).await?;
            let code = if gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &v1(&obj)))
        }
        (Method::DELETE, None) => {
            let opts = delete_options(q, headers, body)?;
            let filter = Filter::from_query(res, q)?;
            let items: Vec<Value> = delete_collection(registry, &store, &filter, &opts)
                .await?
                .iter()
                .map(v1)
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": res.info.list_kind(), "apiVersion": res.info.api_version(),
                        "metadata": {}, "items": items}),
            ))
        }
        _ => Err(method_not_allowed_plain()),
    }
}

/// `deletecollection`: deletes every stored object of `res` that `filter` matches (each
/// through the registry's delete, so finalizers and grace apply) and returns them.
async fn delete_collection(
    registry: &crate::registry::Registry,
    res: &Resource,
    filter: &Filter,
    opts: &DeleteOptions,
) -> Result<Vec<Value>, ApiError> {
    let listed = registry
        .storage
        .list(&res.prefix(), &ListOptions::default())
        .await
        .map_err(|e| ApiError::from_storage(res, "", e))?;
    let mut items = Vec::new();
    for kv in &listed.items {
        let obj = decode_stored(kv)?;
        if !filter.matches(&obj) {
            continue;
        }
        let Some(name) = crate::object::name(&obj).map(str::to_string) else {
            continue;
        };
        let mut per_ns = res.clone();
        per_ns.namespace = crate::object::meta_str(&obj, "namespace").map(str::to_string);
        match registry.delete(&per_ns, &name, opts).await {
            Ok((o, _)) => items.push(o),
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(items)
}

/// The Table version the client asked for in Accept, if any (kubectl's `get` asks for
/// `application/json;as=Table;v=v1;g=meta.k8s.io`).
fn table_version(accept: &str) -> Option<api_query::TableVersion> {
    accept.split(',').find_map(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if !params.contains(&"as=Table") || !params.contains(&"g=meta.k8s.io") {
            return None;
        }
        if params.contains(&"v=v1") {
            Some(api_query::TableVersion::V1)
        } else if params.contains(&"v=v1beta1") {
            Some(api_query::TableVersion::V1Beta1)
        } else {
            None
        }
    })
}

/// Renders objects as a `meta.k8s.io` Table with the list's metadata.
fn table_response(
    res: &Resource,
    q: &Query,
    version: api_query::TableVersion,
    items: &[Value],
    meta: &Value,
) -> Result<Response, ApiError> {
    let mut opts = api_query::TableOptions::at(api_query::current_time());
    opts.version = version;
    if let Some(io) = q.non_empty("includeObject") {
        opts.include_object = api_query::IncludeObject::parse(io).ok_or_else(|| {
            ApiError::bad_request(format!("includeObject: Unsupported value: \"{io}\""))
        })?;
    }
    opts.resource_version = meta["resourceVersion"].as_str().map(str::to_string);
    opts.continue_token = meta["continue"].as_str().map(str::to_string);
    opts.remaining_item_count = meta["remainingItemCount"].as_i64();
    let table = api_query::to_table(res.info, items, &opts);
    Ok(json_response(StatusCode::OK, &table))
}

fn opts_continue_is_none(q: &Query) -> bool {
    q.non_empty("continue").is_none()
}

async fn list(
    state: &State,
    res: &Resource,
    q: &Query,
    filter: Filter,
    accept: &str,
) -> Result<Response, ApiError> {
    let limit = q
        .int("limit")
        .map_err(ApiError::bad_request)?
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    let continue_token = q.non_empty("continue").map(str::to_string);
    let rv = q.non_empty("resourceVersion");
    let exact = q.get("resourceVersionMatch") == Some("Exact");
    if continue_token.is_some() && rv.is_some_and(|v| v != "0") {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let revision = match rv {
        Some(v) if exact => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        ),
        _ => None,
    };
    let view = crate::events::is_events_v1(res.info);
    let stored_in = if view {
        crate::events::storage_resource(res)?
    } else {
        res.clone()
    };
    // Unpaged lists, and any list at resourceVersion=0 (which upstream serves from its cache
    // ignoring the limit), come from the watch cache; paged and exact-revision lists read
    // storage, whose snapshots the continue token refers to.
    let from_cache = rv == Some("0") || (limit.is_none() && opts_continue_is_none(q) && !exact);
    if from_cache {
        match rv {
            Some("0") => {}
            Some(v) => {
                let at = v
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?;
                state.cache.wait_for(at, Duration::from_secs(3)).await;
            }
            None => {
                state.cache.sync_to_store().await;
            }
        }
        let (objects, revision) = state.cache.list(&stored_in.prefix());
        if let Some(version) = table_version(accept) {
            let items: Vec<Value> = objects
                .iter()
                .filter(|o| filter.matches_cached(o))
                .filter_map(|o| serde_json::from_slice(&o.json).ok())
                .map(|o| {
                    if view {
                        crate::events::to_events_v1(&o)
                    } else {
                        o
                    }
                })
                .collect();
            let meta = json!({"resourceVersion": revision.to_string()});
            return table_response(res, q, version, &items, &meta);
        }
        let mut body =
            Vec::with_capacity(objects.iter().map(|o| o.json.len() + 1).sum::<usize>() + 128);
        body.extend_from_slice(
            format!(
                "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}},\"items\":[",
                res.info.list_kind(),
                res.info.api_version()
            )
            .as_bytes(),
        );
        let mut first = true;
        for obj in objects.iter().filter(|o| filter.matches_cached(o)) {
            if !first {
                body.push(b',');
            }
            first = false;
            if view {
                body.extend_from_slice(&crate::events::bytes_to_events_v1(&obj.json));
            } else {
                body.extend_from_slice(&obj.json);
            }
        }
        body.extend_from_slice(b"]}");
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response());
    }
    let storage = &state.registry.storage;
    let prefix = stored_in.prefix();
    let mut items = Vec::new();
    let mut opts = ListOptions {
        revision,
        limit,
        continue_token,
    };
    // With a selector, pages may come back thinner than `limit`; read on until the page is
    // full or the collection ends, then continue after the last item returned.
    let (revision, next, remaining) = loop {
        let page = storage
            .list(&prefix, &opts)
            .await
            .map_err(|e| ApiError::from_storage(res, "", e))?;
        let mut last_key = None;
        for kv in &page.items {
            let obj = decode_stored(kv)?;
            if filter.matches(&obj) {
                items.push(obj);
                last_key = Some(kv.key.clone());
                if limit.is_some_and(|l| items.len() as u64 >= l) {
                    break;
                }
            }
        }
        let full = limit.is_some_and(|l| items.len() as u64 >= l);
        match (&page.continue_token, full) {
            (Some(_), true) | (None, true) if filter.is_empty() => {
                break (page.revision, page.continue_token.clone(), page.remaining)
            }
            (_, true) => {
                let after = last_key.unwrap_or_default();
                let more = page.continue_token.is_some()
                    || page.items.last().is_some_and(|kv| kv.key != after);
                let token = more.then(|| storage::continue_after(&prefix, &after, page.revision));
                break (page.revision, token, None);
            }
            (Some(token), false) => {
                opts = ListOptions {
                    continue_token: Some(token.clone()),
                    ..opts
                };
            }
            (None, false) => break (page.revision, None, None),
        }
    };
    if view {
        for item in &mut items {
            *item = crate::events::to_events_v1(item);
        }
    }
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(t) = &next {
        meta["continue"] = json!(t);
        if let Some(r) = remaining {
            meta["remainingItemCount"] = json!(r);
        }
    }
    if let Some(version) = table_version(accept) {
        return table_response(res, q, version, &items, &meta);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": res.info.list_kind(),
            "apiVersion": res.info.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

/// The three patch types a client may send (server-side apply is `crate::apply`).
enum Patch {
    Json(Value),
    Merge(Value),
    Strategic(Value),
}

impl Patch {
    fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Patch, ApiError> {
        let ct = content_type(headers);
        let parse = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
        };
        match ct.as_str() {
            "application/json-patch+json" => Ok(Patch::Json(parse()?)),
            "application/merge-patch+json" => Ok(Patch::Merge(parse()?)),
            "application/strategic-merge-patch+json" => Ok(Patch::Strategic(parse()?)),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                let mut s = ApiError::unsupported_media_type().0;
                s.message = Some(
                    "server-side apply (application/apply-patch+yaml) is not supported on this resource"
                        .into(),
                );
                Err(ApiError(s))
            }
            _ => Err(ApiError::unsupported_media_type()),
        }
    }

    fn resource_version_in_patch(&self) -> Option<&str> {
        match self {
            Patch::Merge(p) | Patch::Strategic(p) => {
                p.pointer("/metadata/resourceVersion")?.as_str()
            }
            Patch::Json(ops) => ops.as_array()?.iter().find_map(|op| {
                (op.get("path")?.as_str()? == "/metadata/resourceVersion")
                    .then(|| op.get("value")?.as_str())
                    .flatten()
            }),
        }
    }

    fn apply(&self, state: &State, res: &Resource, current: &Value) -> Result<Value, ApiError> {
        let name = crate::object::name(current).unwrap_or("");
        let patched = match self {
            Patch::Merge(p) => Ok(api_schema::merge_patch(current, p)),
            Patch::Strategic(p) => state.openapi.strategic_merge_patch(
                res.info.group,
                res.info.version,
                res.info.kind,
                current,
                p,
            ),
            Patch::Json(ops) => api_schema::json_patch(current, ops),
        };
        patched.map_err(|e| {
            if e.http_status() == 400 {
                ApiError::bad_request(e.to_string())
            } else {
                let mut err = ApiError::invalid(res, name, Vec::new());
                err.0.message = Some(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ));
                err
            }
        })
    }
}

fn delete_options(q: &Query, headers: &HeaderMap, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: q.get("dryRun") == Some("All"),
        grace_period_seconds: q.int("gracePeriodSeconds").map_err(ApiError::bad_request)?,
        propagation_policy: q.non_empty("propagationPolicy").map(str::to_string),
        ..Default::default()
    };
    if !body.is_empty() {
        let b = decode_body(headers, body)?;
        if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period_seconds = Some(g);
        }
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation_policy = Some(p.to_string());
        }
        if b.get("orphanDependents") == Some(&json!(true)) {
            opts.propagation_policy = Some("Orphan".into());
        }
        if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
            opts.dry_run |= d.iter().any(|v| v == "All");
        }
        opts.precondition_uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.precondition_resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = &opts.propagation_policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            )));
        }
    }
    Ok(opts)
}

/// `autoscaling/v1` Scale view of a workload.
fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn scale(
    state: &State,
    res: &Resource,
    name: &str,
    headers: &HeaderMap,
    q: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts = write_options(q)?;
    let is_patch = content_type(headers).contains("patch");
    let input: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    let Written { object, .. } = state
        .registry
        .update_with(res, name, None, &opts, |current| {
            let scale = if is_patch {
                api_schema::merge_patch(&scale_of(current), &input)
            } else {
                input.clone()
            };
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
            if let Some(rv) = scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                if !is_patch && Some(rv) != crate::object::meta_str(current, "resourceVersion") {
                    return Err(ApiError::conflict(res, name));
                }
            }
            let mut out = current.clone();
            out["spec"]["replicas"] = json!(replicas);
            if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(out)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&object)))
}

/// `pods/binding`: assigns a pod to a node, once. As upstream's `BindingREST`, this is one
/// storage-level write of the pod (node name, the binding's annotations and the
/// `PodScheduled=True` condition together), not an update through the pod's admission and
/// field managers: watchers see a single change, and the scheduler costs one write per pod.
async fn bind(
    state: &State,
    res: &Resource,
    name: &str,
    binding: Value,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                res,
                name,
                vec![(
                    "target.name".into(),
                    "Required value".into(),
                    "FieldValueRequired".into(),
                )],
            )
        })?
        .to_string();
    let precondition = |field: &str| {
        binding
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    // A binding naming a uid (the scheduler's always does) or a resourceVersion binds only
    // that incarnation, or that revision, of the pod.
    let (uid, rv) = (precondition("uid"), precondition("resourceVersion"));
    let annotations = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let now = crate::object::now_rfc3339();
    let conflict = |msg: &str| ApiError::conflict_msg(res, name, msg);
    state
        .registry
        .update_stored(res, name, opts.dry_run, |pod| {
            if let Some(uid) = &uid {
                let actual = crate::object::meta_str(pod, "uid").unwrap_or("");
                if uid != actual {
                    return Err(conflict(&format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if let Some(rv) = &rv {
                let actual = crate::object::meta_str(pod, "resourceVersion").unwrap_or("");
                if rv != actual {
                    return Err(conflict(&format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    )));
                }
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(conflict(&format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                )));
            }
            if let Some(existing) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(conflict(&format!(
                    "pod {name} is already assigned to node \"{existing}\""
                )));
            }
            if pod
                .pointer("/spec/schedulingGates")
                .and_then(Value::as_array)
                .is_some_and(|g| !g.is_empty())
            {
                return Err(conflict(&format!(
                    "pod {name} has non-empty .spec.schedulingGates"
                )));
            }
            pod["spec"]["nodeName"] = json!(node);
            if !annotations.is_empty() {
                let meta = &mut pod["metadata"];
                if !meta.get("annotations").is_some_and(Value::is_object) {
                    meta["annotations"] = json!({});
                }
                if let Some(a) = meta["annotations"].as_object_mut() {
                    a.extend(annotations.clone());
                }
            }
            set_pod_scheduled(pod, &now);
            Ok(())
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Sets `PodScheduled=True` (upstream's `UpdatePodCondition`: the transition time moves only
/// when the status changes).
fn set_pod_scheduled(pod: &mut Value, now: &str) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": now});
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {}
        Some(c) => *c = scheduled,
        None => conds.push(scheduled),
    }
}

/// The most evictions a budget may have recorded and not yet seen confirmed by the disruption
/// controller (upstream's `MaxDisruptedPodSize`).
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

/// How many times an eviction re-reads a budget after losing a compare-and-swap race before it
/// gives up with upstream's timeout (upstream retries 20 times too, 500 ms apart).
const EVICTION_ATTEMPTS: u32 = 20;

/// The message of every eviction refused by a budget (kubectl drain matches on the 429).
const EVICTION_REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// A 429 refusing an eviction, with the `DisruptionBudget` cause upstream gives and, when the
/// client should come back later, `retryAfterSeconds`.
fn eviction_refused(cause: String, retry_after: Option<i32>) -> ApiError {
    use api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
    let mut err = ApiError::too_many_requests(EVICTION_REFUSED);
    err.0.details = Some(StatusDetails {
        causes: Some(vec![StatusCause {
            reason: Some("DisruptionBudget".into()),
            message: Some(cause),
            field: None,
        }]),
        retry_after_seconds: retry_after,
        ..Default::default()
    });
    err
}

/// Upstream's `createTooManyRequestsError`: the budget's status is behind its spec (or the
/// pod changed under an unhealthy-pod eviction), so the client should retry.
fn budget_being_processed(pdb_name: &str) -> ApiError {
    eviction_refused(
        format!("The disruption budget {pdb_name} is still being processed by the server."),
        Some(10),
    )
}

/// A Status with only a code and a message (upstream returns such bare Statuses from the
/// eviction REST handler, without a reason).
fn bare_failure(code: i32, message: &str) -> ApiError {
    ApiError::new(
        api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
            status: Some("Failure".into()),
            message: Some(message.into()),
            code: Some(code),
            ..Default::default()
        },
    )
}

/// Whether the pod's Ready condition is True (`podutil.IsPodReady`).
fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// `pods/eviction`, as kube-apiserver's `EvictionREST.Create`: a pod that is finished, still
/// Pending or already terminating is deleted outright; otherwise the one
/// PodDisruptionBudget selecting it (more than one is a 500) must allow a disruption, which
/// is taken by a compare-and-swap on the budget's status — `disruptionsAllowed` decremented
/// and the pod recorded in `disruptedPods`, written with the revision it was read at — and
/// only then is the pod deleted. Two concurrent evictions against an allowance of one thus
/// cannot both succeed: the loser's write conflicts, it re-reads the budget and finds no
/// disruption left (429).
async fn evict(
    state: &State,
    res: &Resource,
    name: &str,
    eviction: &Value,
    query_dry_run: bool,
) -> Result<Response, ApiError> {
    let success = || {
        json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    };
    if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = eviction
        .get("deleteOptions")
        .filter(|o| o.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let body_dry_run = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    let mut opts = DeleteOptions {
        dry_run: query_dry_run || body_dry_run,
        grace_period_seconds: options.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: options
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_uid: options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string),
        precondition_resource_version: options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            .map(str::to_string),
    };
    if options.get("orphanDependents") == Some(&json!(true)) {
        opts.propagation_policy = Some("Orphan".into());
    }
    let client_named_rv = opts.precondition_resource_version.is_some();

    let mut pod = state.registry.get(res, name).await?;
    state
        .registry
        .admit_action(res, "eviction", name, eviction, Some(&pod))?;
    // A pod whose PDB check can be skipped is deleted at once; a conflict (the pod changed
    // since it was read) is retried unless the client named the revision itself.
    for attempt in 0..EVICTION_ATTEMPTS {
        if attempt > 0 {
            pod = state.registry.get(res, name).await?;
        }
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
        // `canIgnorePDB`; a pod without a phase yet has not started either.
        if !(terminal || terminating || matches!(phase, None | Some("Pending"))) {
            break;
        }
        let mut o = opts.clone();
        // `shouldEnforceResourceVersion`: a Pending pod must not become ready (and so
        // protected) between this read and the delete.
        if !terminal && !terminating && !client_named_rv {
            o.precondition_resource_version =
                crate::object::meta_str(&pod, "resourceVersion").map(str::to_string);
        }
        match add_condition_and_delete(state, res, name, o).await {
            Ok(()) => return Ok(success()),
            Err(e) if e.code() == 409 && !client_named_rv && attempt + 1 < EVICTION_ATTEMPTS => {
                continue
            }
            Err(e) => return Err(e),
        }
    }

    let pdbs = api_types::resources::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets missing from the table"))?;
    let pdb_res = Resource {
        info: pdbs,
        namespace: res.namespace.clone(),
    };
    let listed = state
        .registry
        .storage
        .list(&pdb_res.prefix(), &ListOptions::default())
        .await
        .map_err(|e| ApiError::from_storage(&pdb_res, "", e))?;
    let labels = crate::object::labels(&pod);
    let mut matching = Vec::new();
    for kv in &listed.items {
        let pdb = decode_stored(kv)?;
        // A missing (null) selector selects nothing, an empty one everything; an invalid
        // one selects nothing.
        let selector = pdb.pointer("/spec/selector").unwrap_or(&Value::Null);
        let Ok(selector) = api_query::LabelSelector::from_label_selector(selector) else {
            continue;
        };
        if selector.matches(&labels) {
            matching.push(pdb);
        }
    }
    if matching.len() > 1 {
        return Err(bare_failure(
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    // Whether the delete must carry the pod's revision: an unready pod evicted without
    // taking a disruption must not have become ready in the meantime.
    let mut pin_pod_revision = false;
    let mut pdb_name = String::new();
    if let Some(pdb) = matching.pop() {
        pdb_name = crate::object::name(&pdb).unwrap_or_default().to_string();
        let unhealthy_can_go = !pod_ready(&pod)
            && (pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str)
                == Some("AlwaysAllow")
                || {
                    // IfHealthyBudget (the default): only while the budget is met.
                    let current = pdb
                        .pointer("/status/currentHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let desired = pdb
                        .pointer("/status/desiredHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    current >= desired && desired > 0
                });
        if unhealthy_can_go {
            pin_pod_revision = true;
        } else {
            take_disruption(state, &pdb_res, pdb, name, opts.dry_run).await?;
        }
    }
    let mut o = opts.clone();
    if pin_pod_revision {
        o.precondition_resource_version =
            crate::object::meta_str(&pod, "resourceVersion").map(str::to_string);
    }
    match add_condition_and_delete(state, res, name, o).await {
        Ok(()) => Ok(success()),
        Err(e) if e.code() == 409 && pin_pod_revision && !client_named_rv => {
            Err(budget_being_processed(&pdb_name))
        }
        Err(e) => Err(e),
    }
}

/// Upstream's `addConditionAndDeletePod`: unless this is a dry run, the pod first gets the
/// `DisruptionTarget` condition (reason `EvictionByEvictionAPI`) so that its owner and
/// `kubectl describe` can tell an eviction from other deletions — on the latest stored pod,
/// honouring the delete's preconditions; a resourceVersion precondition then moves to the
/// revision this write produced. Then the pod is deleted.
async fn add_condition_and_delete(
    state: &State,
    res: &Resource,
    name: &str,
    mut opts: DeleteOptions,
) -> Result<(), ApiError> {
    if !opts.dry_run {
        let written = state
            .registry
            .update_with(res, name, Some("status"), &WriteOptions::default(), |current| {
                let meta = |f: &str| crate::object::meta_str(current, f).unwrap_or_default();
                if let Some(uid) = opts.precondition_uid.as_deref() {
                    if uid != meta("uid") {
                        return Err(ApiError::conflict_msg(res, name, &format!(
                            "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                            meta("uid")
                        )));
                    }
                }
                if let Some(rv) = opts.precondition_resource_version.as_deref() {
                    if rv != meta("resourceVersion") {
                        return Err(ApiError::conflict_msg(res, name, &format!(
                            "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                            meta("resourceVersion")
                        )));
                    }
                }
                let mut next = crate::registry::unversioned(current);
                set_disruption_target(&mut next);
                Ok(next)
            })
            .await?;
        if opts.precondition_resource_version.is_some() {
            opts.precondition_resource_version =
                crate::object::meta_str(&written.object, "resourceVersion").map(str::to_string);
        }
    }
    state.registry.delete(res, name, &opts).await?;
    Ok(())
}

/// `podutil.UpdatePodCondition` with `DisruptionTarget=True`: the transition time moves only
/// when the status changes.
fn set_disruption_target(pod: &mut Value) {
    let now = crate::object::now_rfc3339();
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    let wanted = json!({"type": "DisruptionTarget", "status": "True",
        "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
        "lastTransitionTime": now});
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionTarget"))
    {
        Some(c) => {
            if c.get("status") != wanted.get("status") {
                c["lastTransitionTime"] = wanted["lastTransitionTime"].clone();
            }
            c["status"] = wanted["status"].clone();
            c["reason"] = wanted["reason"].clone();
            c["message"] = wanted["message"].clone();
        }
        None => conditions.push(wanted),
    }
}

/// Upstream's `checkAndDecrement` under `RetryOnConflict`: checks that `pdb` allows one more
/// disruption and takes it by writing the decremented status with the revision it was read
/// at; on a conflict re-reads the budget and checks again.
async fn take_disruption(
    state: &State,
    pdb_res: &Resource,
    mut pdb: Value,
    pod_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let pdb_name = crate::object::name(&pdb).unwrap_or_default().to_string();
    for attempt in 0..EVICTION_ATTEMPTS {
        if attempt > 0 {
            // Someone else changed the budget (another eviction, the controller): back off
            // a little, so a crowd of evictions does not retry in lockstep.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 20);
            tokio::time::sleep(Duration::from_millis(5 + jitter)).await;
            pdb = state.registry.get(pdb_res, &pdb_name).await?;
        }
        let Some(next) = decremented(&pdb, &pdb_name, pod_name, dry_run)? else {
            return Ok(());
        };
        let written = state
            .registry
            .update_with(
                pdb_res,
                &pdb_name,
                Some("status"),
                &WriteOptions::default(),
                // `next` carries the revision it was computed from: the registry refuses the
                // write (409) if the budget changed since, instead of retrying on its own.
                |_| Ok(next.clone()),
            )
            .await;
        match written {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    let mut err = bare_failure(
        504,
        &format!("Timeout: couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts"),
    );
    err.0.reason = Some("Timeout".into());
    err.0.details = Some(
        api_types::k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
            retry_after_seconds: Some(10),
            ..Default::default()
        },
    );
    Err(err)
}

/// The budget's status after one more disruption of `pod_name`, or the refusal; `None` for a
/// dry run that would have been allowed (nothing to write).
fn decremented(
    pdb: &Value,
    pdb_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> Result<Option<Value>, ApiError> {
    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let observed = int("/status/observedGeneration");
    if observed < int("/metadata/generation") {
        return Err(budget_being_processed(pdb_name));
    }
    let allowed = int("/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::new(api_types::status::forbidden(
            "policy",
            "poddisruptionbudget",
            pdb_name,
            "pdb disruptions allowed is negative",
        )));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_POD_SIZE {
        return Err(ApiError::new(api_types::status::forbidden(
            "policy",
            "poddisruptionbudget",
            pdb_name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        )));
    }
    if allowed == 0 {
        return Err(eviction_refused(
            format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                int("/status/desiredHealthy"),
                int("/status/currentHealthy"),
            ),
            None,
        ));
    }
    if dry_run {
        return Ok(None);
    }
    let mut next = pdb.clone();
    next["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        // `UpdateDisruptionAllowedCondition`: no disruption left.
        let now = crate::object::now_rfc3339();
        let mut conditions: Vec<Value> = pdb
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let wanted = json!({"type": "DisruptionAllowed", "status": "False",
            "reason": "InsufficientPods", "message": "", "observedGeneration": observed,
            "lastTransitionTime": now});
        match conditions
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"))
        {
            Some(c) => {
                if c.get("status") != wanted.get("status") {
                    c["lastTransitionTime"] = wanted["lastTransitionTime"].clone();
                }
                c["status"] = wanted["status"].clone();
                c["reason"] = wanted["reason"].clone();
                c["message"] = wanted["message"].clone();
                c["observedGeneration"] = wanted["observedGeneration"].clone();
            }
            None => conditions.push(wanted),
        }
        next["status"]["conditions"] = json!(conditions);
    }
    if !next["status"]["disruptedPods"].is_object() {
        next["status"]["disruptedPods"] = json!({});
    }
    next["status"]["disruptedPods"][pod_name] = json!(crate::object::now_rfc3339());
    Ok(Some(next))
}

/// Log, exec, attach and port-forward are served by the node agent; until a node publishes
/// its endpoint there is nothing to proxy to.
async fn node_proxy_unavailable(
    state: &State,
    res: &Resource,
    name: &str,
    sub: &str,
) -> Result<Response, ApiError> {
    let obj = state.registry.get(res, name).await?;
    let node = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let msg = if node.is_empty() {
        format!(
            "pod {name} is not scheduled to a node, so there is no node endpoint to serve {sub}"
        )
    } else {
        format!("no node endpoint for node \"{node}\": {sub} is served by the node agent (cox-node-agent), which has not registered a kubelet endpoint")
    };
    Err(ApiError::service_unavailable(msg))
}

/// `/version` and `/version/`.
pub async fn version() -> Response {
    json_response(StatusCode::OK, &discovery::version())
}

pub async fn healthz() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

pub async fn method_not_allowed() -> Response {
    method_not_allowed_plain().into_response()
}

pub async fn not_found() -> Response {
    ApiError::not_found_path().into_response()
}
