//! Which objects a list or watch returns: its label and field selectors.

use serde_json::Value;

use crate::error::ApiError;
use crate::query::Query;
use crate::resource::Resource;

/// A list's or watch's selection.
#[derive(Debug, Default)]
pub struct Filter {
    labels: Vec<(String, String, bool)>,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    pub fn from_query(_res: &Resource, q: &Query) -> Result<Self, ApiError> {
        let mut f = Filter::default();
        if let Some(sel) = q.non_empty("labelSelector") {
            for req in sel.split(',') {
                let (k, v, eq) = if let Some((k, v)) = req.split_once("!=") {
                    (k, v, false)
                } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                    (k, v, true)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse requirement: {req}"
                    )));
                };
                f.labels.push((k.trim().into(), v.trim().into(), eq));
            }
        }
        if let Some(sel) = q.non_empty("fieldSelector") {
            for req in sel.split(',') {
                let (k, v, eq) = if let Some((k, v)) = req.split_once("!=") {
                    (k, v, false)
                } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                    (k, v, true)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{sel}'; can't understand '{req}'"
                    )));
                };
                f.fields.push((k.trim().into(), v.trim().into(), eq));
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = crate::object::labels(obj);
        self.labels
            .iter()
            .all(|(k, v, eq)| (labels.get(k) == Some(v)) == *eq)
            && self.fields.iter().all(|(k, v, eq)| {
                let path = format!("/{}", k.replace('.', "/"));
                let got = match obj.pointer(&path) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                (got == *v) == *eq
            })
    }
}

impl Filter {
    /// Whether a cached object matches, using the labels and fields extracted when cached.
    pub fn matches_cached(&self, obj: &crate::cache::CachedObject) -> bool {
        self.labels
            .iter()
            .all(|(k, v, eq)| (obj.labels.get(k) == Some(v)) == *eq)
            && self.fields.iter().all(|(k, v, eq)| {
                let got = obj.fields.get(k).map(String::as_str).unwrap_or("");
                (got == v) == *eq
            })
    }
}

/// The fields selectors may use on the object stored at `key`, with their values.
pub fn selectable_fields(key: &str, obj: &Value) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let resource = crate::cache::resource_prefix(key).unwrap_or("");
    let extra: &[&str] = match resource {
        "/registry/core/pods/" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "/registry/core/nodes/" => &["spec.unschedulable"],
        "/registry/core/events/" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "/registry/core/secrets/" => &["type"],
        "/registry/core/namespaces/" => &["status.phase"],
        "/registry/apps/replicasets/" => &["status.replicas"],
        "/registry/batch/jobs/" => &["status.successful"],
        _ => &[],
    };
    for field in ["metadata.name", "metadata.namespace"].iter().chain(extra) {
        let path = format!("/{}", field.replace('.', "/"));
        let v = match obj.pointer(&path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        out.insert((*field).to_string(), v);
    }
    out
}
