//! The admission chain the registry runs on every create and update (upstream's plugin order
//! where it matters): NodeRestriction, RBAC escalation prevention, PodSecurity. The caller's
//! identity comes from the request's task-local [`REQUEST_USER`] (set by the guard
//! middleware, as upstream carries it in the request context); writes the server makes itself
//! (seeding, default policy, aggregation) carry no user and are admitted.

use std::collections::BTreeMap;
use std::sync::Arc;

use api_types::k8s_openapi::api::rbac::v1::PolicyRule;
use authz::node_restriction::{NodeRequest, Operation};
use authz::{names, Attributes, UserInfo};
use serde_json::Value;

use super::Security;
use crate::cache::WatchCache;
use crate::error::ApiError;
use crate::registry::Admit;
use crate::resource::Resource;

tokio::task_local! {
    /// The authenticated caller of the request being served.
    pub static REQUEST_USER: UserInfo;
    /// Audit annotations admission adds to the request's audit event (PodSecurity's
    /// `pod-security.kubernetes.io/audit-violations` and friends); set only when auditing.
    pub static AUDIT_ANNOTATIONS: std::sync::Arc<parking_lot::Mutex<Vec<(String, String)>>>;
}

fn annotate(annotations: &std::collections::BTreeMap<String, String>) {
    let _ = AUDIT_ANNOTATIONS.try_with(|a| {
        a.lock()
            .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())))
    });
}

/// The caller of the current request, if any.
pub fn current_user() -> Option<UserInfo> {
    REQUEST_USER.try_with(Clone::clone).ok()
}

pub struct Chain {
    pub security: Option<Arc<Security>>,
    pub cache: Arc<WatchCache>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn find(group: &str, plural: &str, namespace: Option<&str>) -> Option<Resource> {
    Resource::builtin(group, plural, namespace).ok()
}

impl Admit for Chain {
    fn admit_delete(&self, res: &Resource, current: &Value) -> Result<(), ApiError> {
        let Some(user) = current_user() else {
            return Ok(());
        };
        let namespace = res.namespace.clone().unwrap_or_default();
        self.node_restriction(
            &NodeRequest {
                user: &user,
                operation: Operation::Delete,
                resource: res.info.plural,
                subresource: "",
                namespace: &namespace,
                name: str_at(current, "/metadata/name"),
                object: None,
                old_object: Some(current),
            },
            res,
        )
    }

    fn admit_action(
        &self,
        res: &Resource,
        subresource: &str,
        name: &str,
        body: &Value,
        target: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(user) = current_user() else {
            return Ok(());
        };
        let namespace = res.namespace.clone().unwrap_or_default();
        self.node_restriction(
            &NodeRequest {
                user: &user,
                operation: Operation::Create,
                resource: res.info.plural,
                subresource,
                namespace: &namespace,
                name,
                object: Some(body),
                old_object: target,
            },
            res,
        )
    }

    fn admit(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        obj: &mut Value,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let Some(user) = current_user() else {
            return Ok(());
        };
        if res.info.group == "certificates.k8s.io" && res.info.kind == "CertificateSigningRequest" {
            self.certificate_request(res, subresource, obj, old, &user)?;
        }
        let name = str_at(obj, "/metadata/name").to_string();
        let namespace = res.namespace.clone().unwrap_or_default();
        if let Some(security) = &self.security {
            self.node_restriction(
                &NodeRequest {
                    user: &user,
                    operation: if old.is_some() {
                        Operation::Update
                    } else {
                        Operation::Create
                    },
                    resource: res.info.plural,
                    subresource: subresource.unwrap_or(""),
                    namespace: &namespace,
                    name: &name,
                    object: Some(obj),
                    old_object: old,
                },
                res,
            )?;
            if res.info.group == "rbac.authorization.k8s.io" {
                self.no_escalation(security, &user, res, obj, old)?;
            }
        }
        let is_pod = res.info.group.is_empty() && res.info.plural == "pods";
        if is_pod && subresource.is_none() && old.is_none() && self.security.is_some() {
            self.service_account(res, &namespace, &name, obj)?;
        }
        if is_pod && subresource.is_none() && old.is_none() {
            self.priority(res, &name, obj)?;
        }
        let is_pvc = res.info.group.is_empty() && res.info.plural == "persistentvolumeclaims";
        if (is_pod || is_pvc) && subresource.is_none() && old.is_none() {
            let ranges = self.limit_ranges(&namespace);
            if !ranges.is_empty() {
                let checked = if is_pod {
                    admission::limit_ranger::apply_to_pod(obj, &ranges)
                } else {
                    admission::limit_ranger::check_pvc(obj, &ranges)
                };
                checked.map_err(|reason| ApiError::forbidden(res, &name, &reason))?;
            }
        }
        if is_pod && subresource.is_none() {
            let policy = self.pod_security_policy(&namespace);
            let outcome = admission::pod_security::check_pod(&policy, obj);
            annotate(&outcome.audit_annotations);
            if let Some(denied) = outcome.denied {
                return Err(ApiError::forbidden(res, &name, &denied));
            }
            warnings.extend(outcome.warnings);
        } else if subresource.is_none() && res.info.namespaced {
            let policy = self.pod_security_policy(&namespace);
            let outcome = admission::pod_security::check_template(&policy, res.info.kind, obj);
            annotate(&outcome.audit_annotations);
            warnings.extend(outcome.warnings);
        }
        Ok(())
    }
}

/// Where the ServiceAccount admission mounts the token, CA and namespace.
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Chain {
    /// Upstream's ServiceAccount admission: a pod runs as `default` unless it names an
    /// account, the account must exist, and (unless either opts out with
    /// `automountServiceAccountToken: false`) every container gets the projected
    /// `kube-api-access-*` volume: a bound token, the cluster CA and the namespace. Only on a
    /// secure server: without a CA there is nothing for the volume to carry.
    fn service_account(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        pod: &mut Value,
    ) -> Result<(), ApiError> {
        if pod
            .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
            .is_some()
        {
            return Ok(());
        }
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => "default".to_string(),
        };
        spec.insert("serviceAccountName".into(), Value::from(account.clone()));
        let sa = find("", "serviceaccounts", Some(namespace))
            .and_then(|r| self.cache.get(&r.key(&account)))
            .and_then(|o| serde_json::from_slice::<Value>(&o.json).ok())
            .ok_or_else(|| {
                ApiError::forbidden(
                    res,
                    name,
                    &format!(
                        "error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
                    ),
                )
            })?;
        let opted_out = |v: Option<&Value>| v.and_then(Value::as_bool) == Some(false);
        let mount = self
            .security
            .as_ref()
            .is_some_and(|s| s.mount_service_account_tokens);
        if !mount
            || opted_out(spec.get("automountServiceAccountToken"))
            || (spec.get("automountServiceAccountToken").is_none()
                && opted_out(sa.get("automountServiceAccountToken")))
        {
            return Ok(());
        }
        let mounted = |c: &Value| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|m| {
                    m.iter().any(|m| {
                        m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT)
                    })
                })
        };
        let volume_name = format!("kube-api-access-{}", crate::object::random_suffix(5));
        let volume = serde_json::json!({
            "name": volume_name,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        });
        let mount = serde_json::json!({
            "name": volume_name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT,
        });
        let mut added = false;
        for list in ["initContainers", "containers"] {
            if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in containers.iter_mut().filter(|c| !mounted(c)) {
                    if let Some(obj) = c.as_object_mut() {
                        let mounts = obj
                            .entry("volumeMounts")
                            .or_insert_with(|| Value::Array(Vec::new()));
                        if let Some(m) = mounts.as_array_mut() {
                            m.push(mount.clone());
                            added = true;
                        }
                    }
                }
            }
        }
        if added {
            let volumes = spec
                .entry("volumes")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(v) = volumes.as_array_mut() {
                v.push(volume);
            }
        }
        Ok(())
    }

    /// CertificateSigningRequests: on create the requestor is the caller (upstream's
    /// `PrepareForCreate`); an approval that changes Approved/Denied needs `approve` on the
    /// signer, a status write that sets the certificate `sign` (upstream's
    /// CertificateApproval and CertificateSigning admission plugins).
    fn certificate_request(
        &self,
        res: &Resource,
        subresource: Option<&str>,
        obj: &mut Value,
        old: Option<&Value>,
        user: &UserInfo,
    ) -> Result<(), ApiError> {
        if old.is_none() && subresource.is_none() {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("username".into(), Value::from(user.username.clone()));
                for (field, empty) in [
                    ("uid", user.uid.is_empty()),
                    ("groups", user.groups.is_empty()),
                    ("extra", user.extra.is_empty()),
                ] {
                    if empty {
                        spec.remove(field);
                    }
                }
                if !user.uid.is_empty() {
                    spec.insert("uid".into(), Value::from(user.uid.clone()));
                }
                if !user.groups.is_empty() {
                    spec.insert("groups".into(), serde_json::json!(user.groups));
                }
                if !user.extra.is_empty() {
                    spec.insert("extra".into(), serde_json::json!(user.extra));
                }
            }
            return Ok(());
        }
        let (Some(security), Some(old)) = (&self.security, old) else {
            return Ok(());
        };
        let decisions = |v: &Value| -> Vec<Value> {
            v.pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter(|c| matches!(str_at(c, "/type"), "Approved" | "Denied"))
                        .map(|c| serde_json::json!([str_at(c, "/type"), str_at(c, "/status")]))
                        .collect()
                })
                .unwrap_or_default()
        };
        let verb = match subresource {
            Some("approval") if decisions(obj) != decisions(old) => "approve",
            // Upstream's CertificateSigning plugin: issuing a certificate needs `sign`.
            Some("status")
                if obj.pointer("/status/certificate") != old.pointer("/status/certificate") =>
            {
                "sign"
            }
            _ => return Ok(()),
        };
        let signer = str_at(old, "/spec/signerName").to_string();
        let allowed = |name: String| {
            security
                .authorize(&Attributes {
                    user: user.clone(),
                    verb: verb.into(),
                    resource_request: true,
                    api_group: "certificates.k8s.io".into(),
                    api_version: "*".into(),
                    resource: "signers".into(),
                    name,
                    ..Default::default()
                })
                .allowed()
        };
        let domain_wildcard = signer
            .split_once('/')
            .map(|(domain, _)| format!("{domain}/*"))
            .unwrap_or_default();
        if allowed(signer.clone()) || allowed(domain_wildcard) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            res,
            str_at(old, "/metadata/name"),
            &format!("user not permitted to {verb} requests with signerName \"{signer}\""),
        ))
    }

    fn node_restriction(&self, request: &NodeRequest<'_>, res: &Resource) -> Result<(), ApiError> {
        let node_mode = self
            .security
            .as_ref()
            .is_some_and(|s| s.modes.contains(&super::AuthorizationMode::Node));
        if !node_mode {
            return Ok(());
        }
        authz::node_restriction::admit(request)
            .map_err(|reason| ApiError::forbidden(res, request.name, &reason))
    }

    /// Upstream's Priority admission: `spec.priority` (and `preemptionPolicy`) come from the
    /// pod's PriorityClass, or from the class marked `globalDefault`, else 0; a pod naming a
    /// class that does not exist is refused; a client may not set a different priority itself.
    fn priority(&self, res: &Resource, name: &str, pod: &mut Value) -> Result<(), ApiError> {
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let wanted = spec
            .get("priorityClassName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        // Only the class that applies is parsed: the named one, or one marked globalDefault
        // (stored JSON is canonical, so the marker is found in the bytes).
        let classes = find("scheduling.k8s.io", "priorityclasses", None);
        let parse = |o: &crate::cache::CachedObject| serde_json::from_slice::<Value>(&o.json).ok();
        let class: Option<Value> = match (&wanted, &classes) {
            (Some(n), _) => Some(
                classes
                    .as_ref()
                    .and_then(|r| self.cache.get(&r.key(n)))
                    .and_then(|o| parse(&o))
                    .ok_or_else(|| {
                        ApiError::forbidden(
                            res,
                            name,
                            &format!("no PriorityClass with name {n} was found"),
                        )
                    })?,
            ),
            (None, Some(r)) => self
                .cache
                .list(&r.prefix())
                .0
                .iter()
                .filter(|o| contains(&o.json, br#""globalDefault":true"#))
                .filter_map(|o| parse(o))
                .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true)),
            (None, None) => None,
        };
        let class = class.as_ref();
        let value = class
            .and_then(|c| c.get("value"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
            if given != value {
                return Err(ApiError::forbidden(
                    res,
                    name,
                    "the integer value of priority must not be provided in pod spec; priority admission controller computed the priority from the given PriorityClass name",
                ));
            }
        }
        spec.insert("priority".into(), Value::from(value));
        if let Some(c) = class {
            spec.insert(
                "priorityClassName".into(),
                Value::from(str_at(c, "/metadata/name")),
            );
            let policy = c
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority");
            spec.insert("preemptionPolicy".into(), Value::from(policy));
        }
        Ok(())
    }

    fn limit_ranges(
        &self,
        namespace: &str,
    ) -> Vec<api_types::k8s_openapi::api::core::v1::LimitRange> {
        find("", "limitranges", Some(namespace))
            .map(|r| {
                self.cache
                    .list(&r.prefix())
                    .0
                    .iter()
                    .filter_map(|o| serde_json::from_slice(&o.json).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pod_security_policy(&self, namespace: &str) -> admission::pod_security::NamespacePolicy {
        let labels: BTreeMap<String, String> = find("", "namespaces", None)
            .and_then(|r| self.cache.get(&r.key(namespace)))
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        admission::pod_security::namespace_policy(&labels)
    }

    /// Upstream's escalation check: a Role's rules, or the rules a binding grants, must be
    /// rules the caller already holds where the object applies — unless RBAC lets the caller
    /// `escalate` that role or `bind` the referenced role.
    fn no_escalation(
        &self,
        security: &Security,
        user: &UserInfo,
        res: &Resource,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if user.in_group(names::SYSTEM_MASTERS) {
            return Ok(());
        }
        let namespace = res.namespace.clone().unwrap_or_default();
        let name = str_at(obj, "/metadata/name").to_string();
        let (requested, verb, target_resource, target_name): (Vec<PolicyRule>, &str, &str, String) =
            match res.info.kind {
                "Role" | "ClusterRole" => {
                    if old.is_some_and(|o| o.get("rules") == obj.get("rules")) {
                        return Ok(());
                    }
                    let rules = obj
                        .get("rules")
                        .cloned()
                        .and_then(|r| serde_json::from_value(r).ok())
                        .unwrap_or_default();
                    (rules, "escalate", res.info.plural, name.clone())
                }
                "RoleBinding" | "ClusterRoleBinding" => {
                    if old.is_some_and(|o| o.get("subjects") == obj.get("subjects")) {
                        return Ok(());
                    }
                    let kind = str_at(obj, "/roleRef/kind");
                    let role = str_at(obj, "/roleRef/name").to_string();
                    let (plural, ns) = if kind == "Role" {
                        ("roles", Some(namespace.as_str()))
                    } else {
                        ("clusterroles", None)
                    };
                    let rules = find("rbac.authorization.k8s.io", plural, ns)
                        .and_then(|r| self.cache.get(&r.key(&role)))
                        .and_then(|o| serde_json::from_slice::<Value>(&o.json).ok())
                        .and_then(|v| v.get("rules").cloned())
                        .and_then(|r| serde_json::from_value(r).ok())
                        .unwrap_or_default();
                    (rules, "bind", plural, role)
                }
                _ => return Ok(()),
            };
        let permitted = Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: "rbac.authorization.k8s.io".into(),
            api_version: "v1".into(),
            resource: target_resource.into(),
            namespace: if target_resource.starts_with("cluster") {
                String::new()
            } else {
                namespace.clone()
            },
            name: target_name,
            ..Default::default()
        };
        if security.authorize(&permitted).allowed() {
            return Ok(());
        }
        let held = security.rbac.read().rules_for(user, &namespace);
        match authz::rbac::covers(&held.all_rules(), &requested) {
            Ok(()) => Ok(()),
            Err(missing) => Err(ApiError::forbidden(
                res,
                &name,
                &authz::rbac::escalation_message(user, &missing, &held.errors),
            )),
        }
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
