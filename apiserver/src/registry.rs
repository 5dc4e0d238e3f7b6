//! The generic registry: create, read, update, patch and delete for every kind through one
//! code path. What differs per kind comes from [`crate::strategy`]; what differs per
//! subresource (status, scale, binding, finalize) is a small transform on the same update path.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use storage::{KeyValue, Storage};

use crate::allocator::AllocError;
pub use crate::allocator::Allocators;
use crate::error::ApiError;
use crate::object::{
    self, finalizers, meta_mut, meta_str, name, now_rfc3339, random_suffix, resource_version,
    set_resource_version,
};
use crate::resource::Resource;
use crate::strategy;
use crate::typed;

/// How strictly a write treats fields its type does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (upstream's default for writes without the parameter).
    #[default]
    Warn,
    /// Reject the write.
    Strict,
}

impl FieldValidation {
    /// Applies this level to the `unknown` fields a decode dropped: 400 (strict), warnings
    /// (warn) or nothing.
    pub fn check(self, unknown: &[String], warnings: &mut Vec<String>) -> Result<(), ApiError> {
        if unknown.is_empty() {
            return Ok(());
        }
        match self {
            FieldValidation::Strict => {
                let list = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(ApiError::bad_request(format!(
                    "strict decoding error: {list}"
                )))
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }
}

/// Options common to every write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// `fieldManager`: who the write's fields are recorded under in managedFields (else the
    /// user agent's program name, see [`crate::apply::manager_for`]).
    pub field_manager: Option<String>,
    /// A server-side apply: the transform has already recorded managedFields.
    pub apply: bool,
}

/// Options of a delete (query parameters or a DeleteOptions body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// The result of a write: the object as stored and anything to warn the client about.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Admission beyond each kind's own rules (NodeRestriction, PodSecurity, LimitRanger, RBAC
/// escalation checks: `security::admission`), installed once at start. It runs on every create
/// and update after defaulting and before validation, and may change the object.
pub trait Admit: Send + Sync {
    fn admit(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        obj: &mut Value,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError>;

    /// A delete of `current`.
    fn admit_delete(&self, _res: &Resource, _current: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// A create on a subresource that does not store the posted object (`pods/eviction`,
    /// `serviceaccounts/token`): `body` is what was posted, `target` the object it acts on.
    fn admit_action(
        &self,
        _res: &Resource,
        _subresource: &str,
        _name: &str,
        _body: &Value,
        _target: Option<&Value>,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// `obj` without its resourceVersion, for [`Registry::update_with`] transforms written by the
/// server itself: the registry then retries on conflict instead of failing as it must when a
/// client named the revision.
pub(crate) fn unversioned(obj: &Value) -> Value {
    let mut next = obj.clone();
    if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    next
}

/// A failed allocation as the cause of a 422, as upstream reports both.
fn alloc_cause(e: AllocError) -> strategy::Cause {
    match e {
        AllocError::Invalid(cause) => cause,
        AllocError::Storage(e) => (
            "spec.clusterIPs".to_string(),
            format!("Internal error: failed to allocate a serviceIP: {e}"),
            "FieldValueInvalid".to_string(),
        ),
    }
}

/// The registry: every kind's CRUD on one storage.
pub struct Registry {
    pub storage: Arc<dyn Storage>,
    pub allocators: Allocators,
    /// Answers the namespace check of every create from memory.
    cache: Arc<crate::cache::WatchCache>,
    admission: std::sync::OnceLock<Arc<dyn Admit>>,
    /// Namespaces this server marked Terminating: the namespace check reads them from storage
    /// until they are gone, because the watch cache may not have seen the mark yet (upstream's
    /// NamespaceLifecycle keeps a live-lookup list for the same reason).
    terminating: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// Decodes a stored object and stamps its resourceVersion from the store.
pub fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// The stored form of `obj`: its JSON without `metadata.resourceVersion` (the revision is the
/// store's; it is stamped on read, never stored), written without copying the object.
fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(&Without {
        value: obj,
        skip: "metadata",
        then: Some("resourceVersion"),
    })
    .map(Bytes::from)
    .map_err(ApiError::internal)
}

/// Serializes `value`, an object, leaving out its key `skip` — or, when `then` is given,
/// leaving out `then` inside the object under `skip`.
struct Without<'a> {
    value: &'a Value,
    skip: &'static str,
    then: Option<&'static str>,
}

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(m) = self.value else {
            return self.value.serialize(s);
        };
        let mut out = s.serialize_map(None)?;
        for (k, v) in m {
            match (k == self.skip, self.then) {
                (false, _) => out.serialize_entry(k, v)?,
                (true, None) => {}
                (true, Some(inner)) => out.serialize_entry(
                    k,
                    &Without {
                        value: v,
                        skip: inner,
                        then: None,
                    },
                )?,
            }
        }
        out.end()
    }
}

fn has_status(res: &Resource) -> bool {
    res.info.subresource("status").is_some()
}

/// Everything but metadata and status: a change here is a new generation.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl Registry {
    pub fn new(
        storage: Arc<dyn Storage>,
        allocators: Allocators,
        cache: Arc<crate::cache::WatchCache>,
    ) -> Self {
        Registry {
            storage,
            allocators,
            cache,
            admission: std::sync::OnceLock::new(),
            terminating: parking_lot::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The watch cache (quota lookups read from memory).
    pub(crate) fn cache(&self) -> &Arc<crate::cache::WatchCache> {
        &self.cache
    }

    /// Installs the admission chain (once; later calls are ignored).
    pub fn set_admission(&self, admission: Arc<dyn Admit>) {
        let _ = self.admission.set(admission);
    }

    /// Runs [`Admit::admit_action`] of the installed chain.
    pub fn admit_action(
        &self,
        res: &Resource,
        subresource: &str,
        name: &str,
        body: &Value,
        target: Option<&Value>,
    ) -> Result<(), ApiError> {
        match self.admission.get() {
            Some(a) => a.admit_action(res, subresource, name, body, target),
            None => Ok(()),
        }
    }

    /// Reconciles Service allocation claims with stored Services and loads this server's
    /// view of them; at start and every [`crate::allocator::REPAIR_INTERVAL`].
    pub async fn load_allocations(&self) -> Result<(), ApiError> {
        self.allocators
            .repair(self.storage.as_ref())
            .await
            .map_err(ApiError::internal)
    }

    pub async fn get(&self, res: &Resource, name: &str) -> Result<Value, ApiError> {
        let kv = self
            .storage
            .get(&res.key(name))
            .await
            .map_err(|e| ApiError::from_storage(res, name, e))?;
        decode_stored(&kv)
    }

    /// Whether `ns` exists and accepts new objects: 404 if missing, 403 if terminating.
    async fn check_namespace(&self, res: &Resource, ns: &str) -> Result<(), ApiError> {
        let ns_res = Resource {
            info: api_types::resources::find("", "v1", "namespaces")
                .ok_or_else(|| ApiError::internal("namespaces missing from the table"))?,
            namespace: None,
        };
        // The cache knows every namespace but one created a moment ago; only then ask storage.
        let cached = if self.terminating.lock().contains(ns) {
            None
        } else {
            self.cache.get(&ns_res.key(ns))
        };
        let obj = match cached {
            Some(cached) => serde_json::from_slice(&cached.json).map_err(ApiError::internal)?,
            None => self.get(&ns_res, ns).await?,
        };
        if obj
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
            || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        {
            let name = "";
            let mut err = ApiError::forbidden(
                res,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            );
            err.0.message = Some(format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                res.qualified()
            ));
            return Err(err);
        }
        Ok(())
    }

    /// Runs defaults, canonicalisation and validation on an object about to be written.
    fn admit(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        obj: Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value, ApiError> {
        let strategy = strategy::for_kind(res.info);
        let mut obj = obj;
        strategy.defaults(&mut obj);
        let canonical = typed::canonicalize(res.info, &obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                res.info.kind, res.info.version, res.info.kind
            ))
        })?;
        opts.field_validation
            .check(&typed::unknown_fields(&obj, &canonical), warnings)?;
        let mut obj = canonical;
        if let Some(admission) = self.admission.get() {
            admission.admit(res, subresource, &mut obj, old, warnings)?;
        }
        let mut causes = Vec::new();
        strategy::validate_meta(strategy, &obj, &mut causes);
        strategy.validate(&obj, &mut causes);
        if let Some(old) = old {
            strategy.validate_update(&obj, old, &mut causes);
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(res, name(&obj).unwrap_or(""), causes));
        }
        Ok(obj)
    }

    pub async fn create(
        &self,
        res: &Resource,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        self.check_type(res, &mut obj)?;
        if res.info.namespaced {
            let url_ns = res.namespace.clone().unwrap_or_else(|| "default".into());
            match meta_str(&obj, "namespace") {
                Some(ns) if !ns.is_empty() && ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta_mut(&mut obj).insert("namespace".into(), json!(url_ns));
                }
            }
            self.check_namespace(res, &url_ns).await?;
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        let generate = meta_str(&obj, "generateName")
            .filter(|g| !g.is_empty())
            .map(str::to_string);
        if name(&obj).is_none() && generate.is_none() {
            return Err(ApiError::invalid(
                res,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                    "FieldValueRequired".into(),
                )],
            ));
        }
        let mut warnings = Vec::new();
        for attempt in 0..8 {
            let mut candidate = obj.clone();
            if name(&candidate).is_none() {
                if let Some(g) = &generate {
                    meta_mut(&mut candidate)
                        .insert("name".into(), json!(format!("{g}{}", random_suffix(5))));
                }
            }
            {
                let m = meta_mut(&mut candidate);
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), json!(now_rfc3339()));
                for field in [
                    "resourceVersion",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "selfLink",
                ] {
                    m.remove(field);
                }
                if has_status(res) {
                    m.insert("generation".into(), json!(1));
                } else {
                    m.remove("generation");
                }
            }
            if has_status(res) {
                let strategy = strategy::for_kind(res.info);
                // Status is the controllers' to write, through /status.
                if let (Some(status), Some(m)) = (
                    strategy.initial_status(&candidate),
                    candidate.as_object_mut(),
                ) {
                    m.insert("status".into(), status);
                }
            }
            let mut candidate = self.admit(res, None, candidate, None, opts, &mut warnings)?;
            if !opts.apply {
                match crate::apply::manager_for(opts.field_manager.as_deref()) {
                    Some(m) => crate::apply::track_update(res, None, &m, None, &mut candidate),
                    None => {
                        meta_mut(&mut candidate).remove("managedFields");
                    }
                }
            }
            let name = name(&candidate).unwrap_or_default().to_string();
            let is_service = res.info.group.is_empty() && res.info.kind == "Service";
            let namespace = res.namespace.clone().unwrap_or_default();
            if is_service {
                let is_default = namespace == "default" && name == "kubernetes";
                if opts.dry_run {
                    self.allocators.preview(&mut candidate, is_default)
                } else {
                    self.allocators
                        .allocate(
                            self.storage.as_ref(),
                            &mut candidate,
                            &namespace,
                            &name,
                            is_default,
                        )
                        .await
                        .map_err(alloc_cause)
                }
                .map_err(|cause| ApiError::invalid(res, &name, vec![cause]))?;
            }
            if res.info.group.is_empty() && res.info.plural == "resourcequotas" {
                if let Some(status) = self.quota_status(&candidate) {
                    candidate["status"] = status;
                }
            }
            if opts.dry_run {
                return Ok(Written {
                    object: candidate,
                    warnings,
                });
            }
            let charges = match Box::pin(self.charge_quota(res, &candidate, None)).await {
                Ok(charges) => charges,
                Err(e) => {
                    if is_service {
                        self.release_allocations(res, &candidate, &name, false)
                            .await;
                    }
                    return Err(e);
                }
            };
            let created = self
                .storage
                .create(&res.key(&name), encode(&candidate)?)
                .await;
            if created.is_err() {
                Box::pin(self.refund(&charges)).await;
            }
            match created {
                Ok(rev) => {
                    set_resource_version(&mut candidate, rev);
                    return Ok(Written {
                        object: candidate,
                        warnings,
                    });
                }
                Err(storage::Error::AlreadyExists { .. }) if generate.is_some() && attempt < 7 => {
                    if is_service {
                        self.release_allocations(res, &candidate, &name, true).await;
                    }
                    obj = obj.clone();
                    continue;
                }
                Err(e) => {
                    if is_service {
                        let lost_race = matches!(e, storage::Error::AlreadyExists { .. });
                        self.release_allocations(res, &candidate, &name, lost_race)
                            .await;
                    }
                    return Err(ApiError::from_storage(res, &name, e));
                }
            }
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// Sets apiVersion/kind if absent and rejects a body of another kind.
    fn check_type(&self, res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
        let want_av = res.info.api_version();
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if (!av.is_empty() && av != want_av) || (!kind.is_empty() && kind != res.info.kind) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            ))
            .with_message_if(kind != res.info.kind && !kind.is_empty(), || {
                format!(
                    "{} in version \"{}\" cannot be handled as a {}: the object provided is unrecognized (kind {kind})",
                    res.info.kind, res.info.version, res.info.kind
                )
            }));
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(want_av));
            m.insert("kind".into(), json!(res.info.kind));
        }
        Ok(())
    }

    /// The one update path: reads the object, asks `transform` for the desired object, applies
    /// the kind's rules, writes with the read revision as precondition, and retries on a
    /// conflict unless the client itself named the revision it expects.
    pub async fn update_with<F>(
        &self,
        res: &Resource,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mut transform: F,
    ) -> Result<Written, ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let key = res.key(name);
        let mut warnings = Vec::new();
        for _ in 0..storage::MAX_UPDATE_ATTEMPTS {
            let (kv, current) = self.read_stored(res, name, &key).await?;
            let mut desired = transform(&current)?;
            if !desired.is_object() {
                return Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ));
            }
            self.check_type(res, &mut desired)?;
            if name_of(&desired).is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&desired).unwrap_or_default()
                )));
            }
            let client_rv = match resource_version(&desired) {
                Some(Ok(rv)) => Some(rv),
                Some(Err(())) => {
                    return Err(ApiError::bad_request("invalid resourceVersion"));
                }
                None => None,
            };
            if client_rv.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(res, name));
            }
            let desired = self.merge_for_subresource(res, subresource, &current, desired);
            let mut desired = self.admit(
                res,
                subresource,
                desired,
                Some(&current),
                opts,
                &mut warnings,
            )?;
            if !opts.apply {
                match crate::apply::manager_for(opts.field_manager.as_deref()) {
                    Some(m) => crate::apply::track_update(
                        res,
                        subresource,
                        &m,
                        Some(&current),
                        &mut desired,
                    ),
                    None => {
                        let meta = meta_mut(&mut desired);
                        match current.pointer("/metadata/managedFields") {
                            Some(mf) => meta.insert("managedFields".into(), mf.clone()),
                            None => meta.remove("managedFields"),
                        };
                    }
                }
            }
            if has_status(res) && spec_part(&desired) != spec_part(&current) {
                let gen = current
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut desired).insert("generation".into(), json!(gen + 1));
            }
            set_resource_version(&mut desired, kv.mod_revision);
            let deleting = desired.pointer("/metadata/deletionTimestamp").is_some();
            if deleting && finalizers(&desired).is_empty() && !self.namespace_holds(res, &desired) {
                if opts.dry_run {
                    return Ok(Written {
                        object: desired,
                        warnings,
                    });
                }
                return match self.storage.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        self.after_delete(res, &desired).await;
                        Ok(Written {
                            object: desired,
                            warnings,
                        })
                    }
                    Err(storage::Error::Conflict { .. }) if client_rv.is_none() => continue,
                    Err(e) => Err(ApiError::from_storage(res, name, e)),
                };
            }
            // A stale stored form (an older encryption key) is rewritten even when nothing
            // changed: `kubectl replace` of every Secret finishes a key rotation.
            if (desired == current && !kv.stale) || opts.dry_run {
                return Ok(Written {
                    object: desired,
                    warnings,
                });
            }
            let is_quota = res.info.group.is_empty() && res.info.plural == "resourcequotas";
            if is_quota && subresource.is_none() && desired.get("spec") != current.get("spec") {
                if let Some(status) = self.quota_status(&desired) {
                    desired["status"] = status;
                }
            }
            let is_service = res.info.group.is_empty() && res.info.kind == "Service";
            let namespace = res.namespace.clone().unwrap_or_default();
            if is_service && subresource.is_none() {
                self.allocators
                    .allocate_update(
                        self.storage.as_ref(),
                        &mut desired,
                        &current,
                        &namespace,
                        name,
                    )
                    .await
                    .map_err(|e| ApiError::invalid(res, name, vec![alloc_cause(e)]))?;
            }
            let charges = if subresource.is_none() {
                match Box::pin(self.charge_quota(res, &desired, Some(&current))).await {
                    Ok(c) => c,
                    Err(e) => {
                        if is_service && subresource.is_none() {
                            self.give_back_replaced(res, name, &desired, &current).await;
                        }
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            match self
                .storage
                .update(&key, encode(&desired)?, kv.mod_revision)
                .await
            {
                Ok(rev) => {
                    if is_service && subresource.is_none() {
                        // What the Service held before and no longer does.
                        self.give_back_replaced(res, name, &current, &desired).await;
                    }
                    set_resource_version(&mut desired, rev);
                    return Ok(Written {
                        object: desired,
                        warnings,
                    });
                }
                Err(e) => {
                    Box::pin(self.refund(&charges)).await;
                    if is_service && subresource.is_none() {
                        self.give_back_replaced(res, name, &desired, &current).await;
                    }
                    if matches!(e, storage::Error::Conflict { .. }) && client_rv.is_none() {
                        continue;
                    }
                    return Err(ApiError::from_storage(res, name, e));
                }
            }
        }
        Err(ApiError::conflict(res, name))
    }

    /// The stored object at `key` (of `res`, named `name` in errors) with its resourceVersion
    /// stamped, and the key-value read, whose revision a write compares against.
    async fn read_stored(
        &self,
        res: &Resource,
        name: &str,
        key: &str,
    ) -> Result<(KeyValue, Value), ApiError> {
        let kv = self
            .storage
            .get(key)
            .await
            .map_err(|e| ApiError::from_storage(res, name, e))?;
        let obj = decode_stored(&kv)?;
        Ok((kv, obj))
    }

    /// A write the server makes to a stored object on its own authority, as upstream's
    /// storage-level `GuaranteedUpdate` (pods/binding): `transform` edits the stored object in
    /// place or refuses the write; there is no admission, validation, managedFields entry
    /// or generation bump, and a conflict with a concurrent write is retried on the new state.
    /// One call is one stored revision, so watchers never see a half-made change.
    pub async fn update_stored<F>(
        &self,
        res: &Resource,
        name: &str,
        dry_run: bool,
        mut transform: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&mut Value) -> Result<(), ApiError>,
    {
        let key = res.key(name);
        for _ in 0..storage::MAX_UPDATE_ATTEMPTS {
            let (kv, mut obj) = self.read_stored(res, name, &key).await?;
            transform(&mut obj)?;
            if dry_run {
                return Ok(obj);
            }
            match self
                .storage
                .update(&key, encode(&obj)?, kv.mod_revision)
                .await
            {
                Ok(rev) => {
                    set_resource_version(&mut obj, rev);
                    return Ok(obj);
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(res, name, e)),
            }
        }
        Err(ApiError::conflict(res, name))
    }

    /// What an update through the main resource or a subresource may change: the main
    /// resource keeps the stored status, `/status` changes only status (and labels and
    /// annotations, as upstream allows), and every write keeps the server-owned metadata.
    fn merge_for_subresource(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        current: &Value,
        desired: Value,
    ) -> Value {
        let mut out = match subresource {
            Some("status") => {
                let mut out = current.clone();
                if let (Some(m), Some(status)) = (out.as_object_mut(), desired.get("status")) {
                    m.insert("status".into(), status.clone());
                }
                out
            }
            // CertificateSigningRequest approval: only status.conditions, as upstream's
            // approval strategy (`strategy::certificate_request_merge` adds timestamps).
            Some("approval") => {
                let mut out = current.clone();
                if let Some(conditions) = desired.pointer("/status/conditions") {
                    out["status"]["conditions"] = conditions.clone();
                } else if let Some(s) = out.get_mut("status").and_then(Value::as_object_mut) {
                    s.remove("conditions");
                }
                out
            }
            Some("finalize") => {
                let mut out = current.clone();
                if let Some(f) = desired.pointer("/spec/finalizers") {
                    out["spec"]["finalizers"] = f.clone();
                }
                out
            }
            _ => {
                let mut out = desired;
                if has_status(res) {
                    if let Some(m) = out.as_object_mut() {
                        match current.get("status") {
                            Some(s) => m.insert("status".into(), s.clone()),
                            None => m.remove("status"),
                        };
                    }
                }
                out
            }
        };
        if res.info.group == "certificates.k8s.io" {
            strategy::certificate_request_merge(subresource, current, &mut out);
        }
        let m = meta_mut(&mut out);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current.get("metadata").and_then(|cm| cm.get(field)) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        out
    }

    /// A terminating namespace stays until its `spec.finalizers` are gone too.
    fn namespace_holds(&self, res: &Resource, obj: &Value) -> bool {
        res.info.group.is_empty()
            && res.info.kind == "Namespace"
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
    }

    /// Gives back what a Service that was not written (or is now deleted) held. When a create
    /// lost to another of the same name (`lost_race`), what that stored one holds stays.
    async fn release_allocations(&self, res: &Resource, svc: &Value, name: &str, lost_race: bool) {
        let stored = if lost_race {
            self.storage
                .get(&res.key(name))
                .await
                .ok()
                .and_then(|kv| decode_stored(&kv).ok())
        } else {
            None
        };
        let namespace = res.namespace.as_deref().unwrap_or_default();
        self.allocators
            .release(self.storage.as_ref(), svc, namespace, name, stored.as_ref())
            .await;
    }

    /// After a Service update `from` → `to` (or a failed one, the other way round): gives back
    /// what `from` holds and `to` does not.
    async fn give_back_replaced(&self, res: &Resource, name: &str, from: &Value, to: &Value) {
        let namespace = res.namespace.as_deref().unwrap_or_default();
        self.allocators
            .release(self.storage.as_ref(), from, namespace, name, Some(to))
            .await;
    }

    async fn after_delete(&self, res: &Resource, obj: &Value) {
        if res.info.group.is_empty() && res.info.kind == "Namespace" {
            if let Some(ns) = name(obj) {
                self.terminating.lock().remove(ns);
            }
        }
        if res.info.group.is_empty() && res.info.kind == "Service" {
            let name = name(obj).unwrap_or_default().to_string();
            self.release_allocations(res, obj, &name, false).await;
        }
        Box::pin(self.refund_deleted(res, obj)).await;
    }

    /// Deletes an object, or only marks it (graceful pod deletion, finalizers, terminating
    /// namespaces). Returns the object and whether it is gone.
    pub async fn delete(
        &self,
        res: &Resource,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let key = res.key(name);
        for _ in 0..storage::MAX_UPDATE_ATTEMPTS {
            let (kv, current) = self.read_stored(res, name, &key).await?;
            if let Some(admission) = self.admission.get() {
                admission.admit_delete(res, &current)?;
            }
            if let Some(uid) = &opts.precondition_uid {
                if meta_str(&current, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&current, "uid").unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if *rv != kv.mod_revision.to_string() {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    ));
                }
            }
            let mut marked = current.clone();
            let mut pending = false;
            let is_pod = res.info.group.is_empty() && res.info.kind == "Pod";
            let is_namespace = res.info.group.is_empty() && res.info.kind == "Namespace";
            if is_pod {
                // A pod on a node is only marked: its node agent stops the containers within
                // the grace period and then deletes it with grace 0.
                let on_node = current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let finished = matches!(
                    current.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded") | Some("Failed")
                );
                let grace = opts.grace_period_seconds.unwrap_or_else(|| {
                    current
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                if on_node && !finished && grace > 0 {
                    let m = meta_mut(&mut marked);
                    if !m.contains_key("deletionTimestamp") {
                        m.insert(
                            "deletionTimestamp".into(),
                            json!(object::in_seconds_rfc3339(grace)),
                        );
                        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                    pending = true;
                }
            }
            let mut fins = finalizers(&current);
            match opts.propagation_policy.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                _ => {}
            }
            if !fins.is_empty() || self.namespace_holds(res, &current) {
                let m = meta_mut(&mut marked);
                m.insert("finalizers".into(), json!(fins));
                if !m.contains_key("deletionTimestamp") {
                    m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if fins.is_empty() {
                    m.remove("finalizers");
                }
                if is_namespace {
                    marked["status"]["phase"] = json!("Terminating");
                    if !opts.dry_run {
                        self.terminating.lock().insert(name.to_string());
                    }
                }
                pending = true;
            }
            if pending {
                if marked == current || opts.dry_run {
                    return Ok((marked, false));
                }
                match self
                    .storage
                    .update(&key, encode(&marked)?, kv.mod_revision)
                    .await
                {
                    Ok(rev) => {
                        set_resource_version(&mut marked, rev);
                        return Ok((marked, false));
                    }
                    Err(storage::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_storage(res, name, e)),
                }
            }
            if opts.dry_run {
                return Ok((current, true));
            }
            match self.storage.delete(&key, Some(kv.mod_revision)).await {
                Ok(deleted) => {
                    self.after_delete(res, &current).await;
                    let mut obj = current;
                    set_resource_version(&mut obj, deleted.mod_revision);
                    return Ok((obj, true));
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(res, name, e)),
            }
        }
        Err(ApiError::conflict(res, name))
    }
}

fn name_of(obj: &Value) -> Option<&str> {
    name(obj)
}

trait WithMessage {
    fn with_message_if(self, cond: bool, msg: impl FnOnce() -> String) -> Self;
}

impl WithMessage for ApiError {
    fn with_message_if(mut self, cond: bool, msg: impl FnOnce() -> String) -> Self {
        if cond {
            self.0.message = Some(msg());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_leaves_out_only_the_revision() {
        let obj = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "resourceVersion": "42", "labels": {"resourceVersion": "x"}},
            "involvedObject": {"kind": "Pod", "resourceVersion": "7"}, "count": 1});
        let stored: Value = serde_json::from_slice(&encode(&obj).unwrap()).unwrap();
        let mut want = obj.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert_eq!(stored, want);
        let bare = json!({"kind": "Status", "resourceVersion": "1"});
        let stored: Value = serde_json::from_slice(&encode(&bare).unwrap()).unwrap();
        assert_eq!(stored, bare);
    }
}
