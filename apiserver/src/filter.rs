//! Which objects a list or watch returns: its label and field selectors (parsed and matched by
//! `api-query`, with upstream's grammar and messages), on stored objects or cached ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use api_query::{FieldOp, FieldSelector, LabelSelector};
use api_types::resources::{ResourceInfo, RESOURCES};
use serde_json::Value;

use crate::error::ApiError;
use crate::query::Query;
use crate::resource::Resource;

/// A list's or watch's selection.
#[derive(Debug, Default)]
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    group: &'static str,
    kind: &'static str,
    /// Selecting events.k8s.io Events among the stored core ones: objects are converted, and
    /// field names mapped to the core fields the cache extracted.
    events_v1: bool,
}

impl Filter {
    pub fn from_query(res: &Resource, q: &Query) -> Result<Self, ApiError> {
        let labels = match q.non_empty("labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => LabelSelector::everything(),
        };
        let fields = match q.non_empty("fieldSelector") {
            Some(s) => {
                let f =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate_for(res.info.group, res.info.kind)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                f
            }
            None => FieldSelector::everything(),
        };
        Ok(Filter {
            labels,
            fields,
            group: res.info.group,
            kind: res.info.kind,
            events_v1: crate::events::is_events_v1(res.info),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_everything() && self.fields.is_empty()
    }

    /// Whether a stored object matches (events.k8s.io selectors apply to the converted form).
    pub fn matches(&self, obj: &Value) -> bool {
        if self.events_v1 {
            let v1 = crate::events::to_events_v1(obj);
            return self.labels.matches_object(&v1)
                && self.fields.matches(&v1, self.group, self.kind);
        }
        self.labels.matches_object(obj) && self.fields.matches(obj, self.group, self.kind)
    }

    /// Whether a cached object matches, using the labels and fields extracted when cached.
    pub fn matches_cached(&self, obj: &crate::cache::CachedObject) -> bool {
        self.labels.matches(&obj.labels)
            && self.fields.terms().iter().all(|t| {
                let field = if self.events_v1 {
                    crate::events::core_field(t.field())
                } else {
                    t.field().into()
                };
                let got = obj
                    .fields
                    .get(field.as_ref())
                    .map(String::as_str)
                    .unwrap_or("");
                match t.op() {
                    FieldOp::Equals => got == t.value(),
                    FieldOp::NotEquals => got != t.value(),
                }
            })
    }
}

/// The resource stored under a key's resource prefix.
fn info_for_key(key: &str) -> Option<&'static ResourceInfo> {
    static BY_PREFIX: OnceLock<HashMap<String, &'static ResourceInfo>> = OnceLock::new();
    // The events.k8s.io view stores nothing of its own (its objects are core Events).
    let map = BY_PREFIX.get_or_init(|| {
        RESOURCES
            .iter()
            .filter(|r| !crate::events::is_events_v1(r))
            .map(|r| (r.storage_prefix(), r))
            .collect()
    });
    map.get(crate::cache::resource_prefix(key)?).copied()
}

/// The fields selectors may use on the object stored at `key`, with their values: extracted
/// once when the object enters the cache.
pub fn selectable_fields(key: &str, obj: &Value) -> BTreeMap<String, String> {
    let Some(info) = info_for_key(key) else {
        return BTreeMap::new();
    };
    api_query::supported_fields(info.group, info.kind)
        .iter()
        .filter_map(|f| {
            api_query::field_value(obj, info.group, info.kind, f).map(|v| ((*f).to_string(), v))
        })
        .collect()
}
