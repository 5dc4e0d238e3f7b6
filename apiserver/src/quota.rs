//! ResourceQuota enforcement (upstream's ResourceQuota admission plus the part of its quota
//! controller that keeps `status.used` current). Usage is charged to every matching quota
//! *before* the object is stored, through a compare-and-swap update of the quota's status —
//! concurrent creates serialize on the quota's revision, so `status.used` stays exact and a
//! create that would pass the limit is refused with 403. A create that then fails is refunded;
//! a deleted object gives its usage back.
//!
//! What is deliberately absent: the periodic full recount upstream's controller does (usage is
//! recounted only when a quota is created or its spec changes), and releasing the compute
//! usage of pods that reach Succeeded/Failed before they are deleted.

use std::collections::BTreeMap;

use admission::quota;
use admission::resources::ResourceList;
use api_types::k8s_openapi::api::core::v1::ResourceQuota;
use api_types::quantity::Quantity;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::registry::{Registry, WriteOptions};
use crate::resource::Resource;

/// A charge made to one quota, to refund if the write fails.
pub struct Charge {
    quota: String,
    namespace: String,
    delta: ResourceList,
}

fn quotas_resource(namespace: &str) -> Option<Resource> {
    Resource::builtin("", "resourcequotas", Some(namespace)).ok()
}

fn is_quota(res: &Resource) -> bool {
    res.info.group.is_empty() && res.info.plural == "resourcequotas"
}

fn used_of(quota: &Value) -> ResourceList {
    quota
        .pointer("/status/used")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn hard_of(quota: &ResourceQuota) -> ResourceList {
    quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(&v.0).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn list_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.to_canonical_string())))
            .collect(),
    )
}

impl Registry {
    fn quotas_in(&self, namespace: &str) -> Vec<(Value, ResourceQuota)> {
        let Some(res) = quotas_resource(namespace) else {
            return Vec::new();
        };
        self.cache()
            .list(&res.prefix())
            .0
            .iter()
            .filter_map(|o| {
                let v: Value = serde_json::from_slice(&o.json).ok()?;
                let q = serde_json::from_value(v.clone()).ok()?;
                Some((v, q))
            })
            .collect()
    }

    /// Charges `obj` (replacing `old`, for an update) to every quota of its namespace that
    /// tracks it. On refusal nothing stays charged.
    pub(crate) async fn charge_quota(
        &self,
        res: &Resource,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<Charge>, ApiError> {
        let Some(namespace) = res.namespace.clone().filter(|_| res.info.namespaced) else {
            return Ok(Vec::new());
        };
        if is_quota(res) {
            return Ok(Vec::new());
        }
        let quotas = self.quotas_in(&namespace);
        if quotas.is_empty() {
            return Ok(Vec::new());
        }
        let (group, plural) = (res.info.group, res.info.plural);
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let usage =
            quota::usage(group, plural, obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let delta = match old {
            Some(old) => {
                let before = quota::usage(group, plural, old).unwrap_or_default();
                quota::delta(&usage, &before)
            }
            None => usage,
        };
        let mut charges = Vec::new();
        for (_, q) in quotas {
            if !quota::matches_scopes(&q, obj, group, plural) {
                continue;
            }
            let quota_name = q.metadata.name.clone().unwrap_or_default();
            if old.is_none() && group.is_empty() && plural == "pods" {
                if let Some(message) = quota::missing_compute(&q, obj) {
                    self.refund(&charges).await;
                    return Err(ApiError::forbidden(res, &name, &message));
                }
            }
            let hard = hard_of(&q);
            let charged: ResourceList = delta
                .iter()
                .filter(|(k, v)| hard.contains_key(*k) && !v.is_zero())
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if charged.is_empty() {
                continue;
            }
            let Some(quota_res) = quotas_resource(&namespace) else {
                continue;
            };
            let result = Box::pin(self.update_with(
                &quota_res,
                &quota_name,
                Some("status"),
                &WriteOptions::default(),
                |cur| {
                    let used = used_of(cur);
                    quota::check(&quota_name, &hard, &used, &charged)
                        .map_err(|message| ApiError::forbidden(res, &name, &message))?;
                    let mut next_used = used.clone();
                    admission::resources::add_into(&mut next_used, &charged);
                    let mut next = crate::registry::unversioned(cur);
                    next["status"]["hard"] = list_json(&hard);
                    next["status"]["used"] = list_json(&next_used);
                    Ok(next)
                },
            ))
            .await;
            match result {
                Ok(_) => charges.push(Charge {
                    quota: quota_name,
                    namespace: namespace.clone(),
                    delta: charged,
                }),
                // The quota went away meanwhile: it limits nothing.
                Err(e) if e.code() == 404 => {}
                Err(e) => {
                    self.refund(&charges).await;
                    return Err(e);
                }
            }
        }
        Ok(charges)
    }

    /// Gives charges back (a failed write, or a deleted object's usage).
    pub(crate) async fn refund(&self, charges: &[Charge]) {
        for charge in charges {
            let Some(quota_res) = quotas_resource(&charge.namespace) else {
                continue;
            };
            let result = Box::pin(self.update_with(
                &quota_res,
                &charge.quota,
                Some("status"),
                &WriteOptions::default(),
                |cur| {
                    let mut used = used_of(cur);
                    for (k, v) in &charge.delta {
                        let entry = used.entry(k.clone()).or_insert(Quantity::ZERO);
                        let left = *entry - *v;
                        *entry = if left.milli() < 0 {
                            Quantity::ZERO
                        } else {
                            left
                        };
                    }
                    let mut next = crate::registry::unversioned(cur);
                    next["status"]["used"] = list_json(&used);
                    Ok(next)
                },
            ))
            .await;
            if let Err(e) = result {
                if e.code() != 404 {
                    tracing::warn!(quota = %charge.quota, error = ?e.0.message, "refunding quota usage");
                }
            }
        }
    }

    /// The usage of a deleted object, given back to the quotas that track it.
    pub(crate) async fn refund_deleted(&self, res: &Resource, obj: &Value) {
        let Some(namespace) = res.namespace.clone().filter(|_| res.info.namespaced) else {
            return;
        };
        if is_quota(res) {
            return;
        }
        let (group, plural) = (res.info.group, res.info.plural);
        let Ok(usage) = quota::usage(group, plural, obj) else {
            return;
        };
        let charges: Vec<Charge> = self
            .quotas_in(&namespace)
            .into_iter()
            .filter(|(_, q)| quota::matches_scopes(q, obj, group, plural))
            .map(|(_, q)| {
                let hard = hard_of(&q);
                Charge {
                    quota: q.metadata.name.clone().unwrap_or_default(),
                    namespace: namespace.clone(),
                    delta: usage
                        .iter()
                        .filter(|(k, _)| hard.contains_key(*k))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                }
            })
            .filter(|c| !c.delta.is_empty())
            .collect();
        self.refund(&charges).await;
    }

    /// A quota's status from scratch: `hard` from its spec, `used` recounted over every
    /// object of its namespace (on create, and when its spec changes).
    pub(crate) fn quota_status(&self, quota_obj: &Value) -> Option<Value> {
        let q: ResourceQuota = serde_json::from_value(quota_obj.clone()).ok()?;
        let namespace = q.metadata.namespace.clone()?;
        let mut used: ResourceList = BTreeMap::new();
        for info in api_types::RESOURCES.iter().filter(|i| i.namespaced) {
            let res = Resource {
                info,
                namespace: Some(namespace.clone()),
            };
            let objects: Vec<Value> = self
                .cache()
                .list(&res.prefix())
                .0
                .iter()
                .filter_map(|o| serde_json::from_slice(&o.json).ok())
                .collect();
            let counted =
                quota::recompute_used(&q, info.group, info.plural, objects.iter()).ok()?;
            for (k, v) in counted {
                let entry = used.entry(k).or_insert(Quantity::ZERO);
                *entry = *entry + v;
            }
        }
        Some(json!({"hard": list_json(&hard_of(&q)), "used": list_json(&used)}))
    }
}
