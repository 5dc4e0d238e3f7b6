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
