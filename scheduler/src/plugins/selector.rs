//! `metav1.LabelSelector` matching, as the pod-to-pod plugins need it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A nil selector matches nothing; an empty one matches everything (upstream's
/// `LabelSelectorAsSelector`).
pub fn matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return false };
    let ml = sel.match_labels.iter().flatten();
    let exact = ml.into_iter().all(|(k, v)| labels.get(k) == Some(v));
    exact
        && sel.match_expressions.iter().flatten().all(|e| {
            let got = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => got.is_some_and(|v| values.contains(v)),
                "NotIn" => !got.is_some_and(|v| values.contains(v)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let sel =
            |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).expect("sel") };
        let table = [
            (Some(sel(serde_json::json!({}))), true),
            (None, false),
            (
                Some(sel(serde_json::json!({"matchLabels": {"app": "web"}}))),
                true,
            ),
            (
                Some(sel(serde_json::json!({"matchLabels": {"app": "db"}}))),
                false,
            ),
            (
                Some(sel(serde_json::json!({"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "api"]}]}))),
                true,
            ),
            (
                Some(sel(serde_json::json!({"matchExpressions": [
                {"key": "app", "operator": "DoesNotExist"}]}))),
                false,
            ),
            (
                Some(sel(serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["x"]}]}))),
                true,
            ),
        ];
        for (s, want) in table {
            assert_eq!(matches(s.as_ref(), &labels), want, "{s:?}");
        }
    }
}
