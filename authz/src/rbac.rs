//! Role-based access control, as kube-apiserver's RBAC authorizer does it
//! (`plugin/pkg/auth/authorizer/rbac` and `pkg/registry/rbac/validation`).
//!
//! The API server feeds [`RbacIndex`] from watches on the four RBAC kinds and asks it on every
//! request; nothing here touches storage, so the answer for a given index state and request is
//! always the same and can be tested table-driven.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{names, Attributes, Decision, UserInfo};

/// Which of the four RBAC kinds a watch event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacKind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

/// The RBAC objects the authorizer consults, kept current from watch events.
///
/// Objects are stored decoded (k8s-openapi types) so that a request does not re-parse JSON;
/// maps are ordered so that bindings are visited in a stable order (upstream's informer cache
/// has no order at all; any order gives the same allow/deny, a stable one gives stable reasons).
#[derive(Debug, Clone, Default)]
pub struct RbacIndex {
    roles: BTreeMap<(String, String), Role>,
    cluster_roles: BTreeMap<String, ClusterRole>,
    role_bindings: BTreeMap<(String, String), RoleBinding>,
    cluster_role_bindings: BTreeMap<String, ClusterRoleBinding>,
}

/// Everything a user may do in a namespace: upstream's `RulesFor`, split the way a
/// `SelfSubjectRulesReview` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesFor {
    /// Rules naming resources (they may also name non-resource URLs, upstream keeps such a
    /// rule in both lists).
    pub resource_rules: Vec<PolicyRule>,
    /// Rules naming non-resource URLs.
    pub non_resource_rules: Vec<PolicyRule>,
    /// A binding refers to a role that does not exist (or is of the wrong kind): the lists may
    /// be missing rules (SelfSubjectRulesReview's `incomplete`).
    pub incomplete: bool,
    /// Why the lists are incomplete, in upstream's wording (SelfSubjectRulesReview's
    /// `evaluationError`, and the escalation check's "resolution errors").
    pub errors: Vec<String>,
}

impl RulesFor {
    /// Every rule, once each: what the escalation check compares against.
    pub fn all_rules(&self) -> Vec<PolicyRule> {
        let mut all = self.resource_rules.clone();
        for rule in &self.non_resource_rules {
            if !all.contains(rule) {
                all.push(rule.clone());
            }
        }
        all
    }
}

/// The parts of a binding the authorizer needs, shared by both binding kinds.
struct BindingView<'a> {
    kind: &'static str,
    name: &'a str,
    /// The binding's namespace; empty for a ClusterRoleBinding.
    namespace: &'a str,
    role_kind: &'a str,
    role_name: &'a str,
    subjects: &'a [k8s_openapi::api::rbac::v1::Subject],
}

impl BindingView<'_> {
    /// Upstream's binding describer, used in Allow reasons.
    fn describe(&self, subject: &k8s_openapi::api::rbac::v1::Subject) -> String {
        let binding = if self.namespace.is_empty() {
            self.name.to_string()
        } else {
            format!("{}/{}", self.name, self.namespace)
        };
        format!(
            "{} {:?} of {} {:?} to {}",
            self.kind,
            binding,
            self.role_kind,
            self.role_name,
            describe_subject(subject, self.namespace)
        )
    }
}

fn describe_subject(subject: &k8s_openapi::api::rbac::v1::Subject, binding_ns: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let ns = subject
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(binding_ns);
        format!("{} {:?}", subject.kind, format!("{}/{}", subject.name, ns))
    } else {
        format!("{} {:?}", subject.kind, subject.name)
    }
}

/// Whether a binding subject names this user (upstream `appliesToUser`). A ServiceAccount
/// subject without a namespace means the binding's own namespace; for a ClusterRoleBinding
/// that leaves none, and upstream then matches nobody.
fn subject_applies(
    subject: &k8s_openapi::api::rbac::v1::Subject,
    user: &UserInfo,
    binding_ns: &str,
) -> bool {
    match subject.kind.as_str() {
        "User" => user.username == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_ns);
            if ns.is_empty() {
                return false;
            }
            user.username == format!("{}{}:{}", names::SERVICE_ACCOUNT_PREFIX, ns, subject.name)
        }
        _ => false,
    }
}

impl RbacIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object from a watch event. An object that does not decode as the
    /// given kind, or has no name, is ignored: one bad object must not stop authorization of
    /// everything else (the caller logs it).
    pub fn upsert(&mut self, kind: RbacKind, obj: &serde_json::Value) {
        fn key(
            meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        ) -> Option<(String, String)> {
            let name = meta.name.clone().filter(|n| !n.is_empty())?;
            Some((meta.namespace.clone().unwrap_or_default(), name))
        }
        match kind {
            RbacKind::Role => {
                if let Ok(role) = serde_json::from_value::<Role>(obj.clone()) {
                    if let Some(k) = key(&role.metadata) {
                        self.roles.insert(k, role);
                    }
                }
            }
            RbacKind::ClusterRole => {
                if let Ok(role) = serde_json::from_value::<ClusterRole>(obj.clone()) {
                    if let Some((_, name)) = key(&role.metadata) {
                        self.cluster_roles.insert(name, role);
                    }
                }
            }
            RbacKind::RoleBinding => {
                if let Ok(binding) = serde_json::from_value::<RoleBinding>(obj.clone()) {
                    if let Some(k) = key(&binding.metadata) {
                        self.role_bindings.insert(k, binding);
                    }
                }
            }
            RbacKind::ClusterRoleBinding => {
                if let Ok(binding) = serde_json::from_value::<ClusterRoleBinding>(obj.clone()) {
                    if let Some((_, name)) = key(&binding.metadata) {
                        self.cluster_role_bindings.insert(name, binding);
                    }
                }
            }
        }
    }

    /// Forgets an object after a delete event. The namespace is ignored for the cluster kinds.
    pub fn remove(&mut self, kind: RbacKind, namespace: Option<&str>, name: &str) {
        let ns = namespace.unwrap_or_default().to_string();
        match kind {
            RbacKind::Role => {
                self.roles.remove(&(ns, name.to_string()));
            }
            RbacKind::ClusterRole => {
                self.cluster_roles.remove(name);
            }
            RbacKind::RoleBinding => {
                self.role_bindings.remove(&(ns, name.to_string()));
            }
            RbacKind::ClusterRoleBinding => {
                self.cluster_role_bindings.remove(name);
            }
        }
    }

    /// The bindings that count for a request in `namespace`: every ClusterRoleBinding, then
    /// the RoleBindings of that namespace (none for cluster-scoped requests), upstream's
    /// `VisitRulesFor` order.
    fn bindings<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = BindingView<'a>> + 'a {
        let cluster = self.cluster_role_bindings.values().map(|b| BindingView {
            kind: "ClusterRoleBinding",
            name: b.metadata.name.as_deref().unwrap_or_default(),
            namespace: "",
            role_kind: &b.role_ref.kind,
            role_name: &b.role_ref.name,
            subjects: b.subjects.as_deref().unwrap_or_default(),
        });
        let namespaced = self
            .role_bindings
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| !namespace.is_empty() && ns == namespace)
            .map(|((ns, name), b)| BindingView {
                kind: "RoleBinding",
                name: name.as_str(),
                namespace: ns.as_str(),
                role_kind: &b.role_ref.kind,
                role_name: &b.role_ref.name,
                subjects: b.subjects.as_deref().unwrap_or_default(),
            });
        cluster.chain(namespaced)
    }

    /// The rules a binding grants, or upstream's not-found wording when its role is missing.
    /// A RoleBinding may refer to a Role of its namespace or to a ClusterRole.
    fn role_rules(&self, binding: &BindingView<'_>) -> Result<&[PolicyRule], String> {
        match binding.role_kind {
            "ClusterRole" => self
                .cluster_roles
                .get(binding.role_name)
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    )
                }),
            // A ClusterRoleBinding's namespace is empty, so its Role is never found.
            "Role" => self
                .roles
                .get(&(binding.namespace.to_string(), binding.role_name.to_string()))
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    )
                }),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Upstream's RBAC authorizer: Allow if any binding that names the user grants a rule
    /// matching the request, NoOpinion otherwise (RBAC never denies; the chain's end does).
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        let mut errors = Vec::new();
        for binding in self.bindings(&attrs.namespace) {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| subject_applies(s, &attrs.user, binding.namespace))
            else {
                continue;
            };
            match self.role_rules(&binding) {
                Ok(rules) => {
                    if rules.iter().any(|rule| rule_allows(attrs, rule)) {
                        return Decision::Allow(format!(
                            "RBAC: allowed by {}",
                            binding.describe(subject)
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Decision::NoOpinion(String::new())
        } else {
            Decision::NoOpinion(format!("RBAC: {}", go_aggregate(&errors)))
        }
    }

    /// Every rule that applies to `user` in `namespace` ("" = cluster-wide bindings only).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> RulesFor {
        let mut out = RulesFor::default();
        for binding in self.bindings(namespace) {
            if !binding
                .subjects
                .iter()
                .any(|s| subject_applies(s, user, binding.namespace))
            {
                continue;
            }
            match self.role_rules(&binding) {
                Ok(rules) => {
                    for rule in rules {
                        if rule.resources.as_ref().is_some_and(|r| !r.is_empty())
                            && !out.resource_rules.contains(rule)
                        {
                            out.resource_rules.push(rule.clone());
                        }
                        if rule
                            .non_resource_urls
                            .as_ref()
                            .is_some_and(|r| !r.is_empty())
                            && !out.non_resource_rules.contains(rule)
                        {
                            out.non_resource_rules.push(rule.clone());
                        }
                    }
                }
                Err(e) => {
                    out.incomplete = true;
                    out.errors.push(e);
                }
            }
        }
        out
    }
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

/// Whether one rule grants the request (upstream `RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    if !verb_matches(rule, &attrs.verb) {
        return false;
    }
    if attrs.resource_request {
        let combined = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        api_group_matches(rule, &attrs.api_group)
            && resource_matches(rule, &combined, &attrs.subresource)
            && resource_name_matches(rule, &attrs.name)
    } else {
        non_resource_url_matches(rule, &attrs.path)
    }
}

/// Whether any rule grants the request (upstream `RulesAllow`).
pub fn rules_allow(attrs: &Attributes, rules: &[PolicyRule]) -> bool {
    rules.iter().any(|r| rule_allows(attrs, r))
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    list(&rule.api_groups)
        .iter()
        .any(|g| g == "*" || g == group)
}

/// `combined` is `resource` or `resource/subresource`; a rule for `*/sub` matches that
/// subresource of every resource (upstream `ResourceMatches`).
fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    list(&rule.resources).iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = list(&rule.resource_names);
    names.is_empty() || has(names, name)
}

/// A trailing `*` makes a non-resource URL a prefix (`/apis/*` matches `/apis/apps/v1`).
fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(&rule.non_resource_urls).iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Escalation prevention (upstream `Covers`, the heart of `ConfirmNoEscalation`): every rule
/// in `requested` must be covered by `owner_rules`. Requested rules are broken down into
/// single-verb, single-group, single-resource(-name) pieces first, so that a piece is either
/// covered by one owner rule or missing; the missing pieces are returned in breakdown order.
pub fn covers(owner_rules: &[PolicyRule], requested: &[PolicyRule]) -> Result<(), Vec<PolicyRule>> {
    let missing: Vec<PolicyRule> = requested
        .iter()
        .flat_map(breakdown_rule)
        .filter(|sub| !owner_rules.iter().any(|owner| rule_covers(owner, sub)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &String| Some(vec![s.clone()]);
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    ..PolicyRule::default()
                };
                let names = list(&rule.resource_names);
                if names.is_empty() {
                    out.push(base);
                } else {
                    for n in names {
                        out.push(PolicyRule {
                            resource_names: one(n),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let owner_groups = list(&owner.api_groups);
    let groups = has(owner_groups, "*") || has_all(owner_groups, list(&sub.api_groups));
    let resources = resource_covers_all(list(&owner.resources), list(&sub.resources));
    let urls = list(&sub.non_resource_urls).iter().all(|path| {
        list(&owner.non_resource_urls).iter().any(|o| {
            o == path
                || o.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
        })
    });
    let owner_names = list(&owner.resource_names);
    let sub_names = list(&sub.resource_names);
    let names =
        owner_names.is_empty() || (!sub_names.is_empty() && has_all(owner_names, sub_names));
    verbs && groups && resources && names && urls
}

fn resource_covers_all(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// Go's `utilerrors.NewAggregate(errs).Error()`: one message as is, several distinct ones
/// bracketed and comma-separated.
fn go_aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// A rule in upstream's `CompactString` form, e.g.
/// `{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", list(&rule.api_groups)),
        ("Resources", list(&rule.resources)),
        ("NonResourceURLs", list(&rule.non_resource_urls)),
        ("ResourceNames", list(&rule.resource_names)),
        ("Verbs", rule.verbs.as_slice()),
    ] {
        if !values.is_empty() {
            parts.push(format!("{label}:{}", go_quoted_list(values)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// Upstream's escalation error for `user`, given [`covers`]'s missing rules: the pieces are
/// recombined per (group, resource, name) with their verbs (upstream `CompactRules`), then
/// listed sorted, one a line. `resolution_errors` are [`RulesFor::errors`].
pub fn escalation_message(
    user: &UserInfo,
    missing: &[PolicyRule],
    resolution_errors: &[String],
) -> String {
    let mut compacted: Vec<PolicyRule> = Vec::new();
    for rule in missing {
        let simple = list(&rule.api_groups).len() == 1
            && list(&rule.resources).len() == 1
            && list(&rule.resource_names).is_empty()
            && list(&rule.non_resource_urls).is_empty();
        let target = compacted.iter_mut().find(|c| {
            simple
                && c.api_groups == rule.api_groups
                && c.resources == rule.resources
                && list(&c.resource_names).is_empty()
                && list(&c.non_resource_urls).is_empty()
        });
        match target {
            Some(c) => {
                for v in &rule.verbs {
                    if !has(&c.verbs, v) {
                        c.verbs.push(v.clone());
                    }
                }
            }
            None => compacted.push(rule.clone()),
        }
    }
    let lines: BTreeSet<String> = compacted.iter().map(compact_string).collect();
    let mut msg = format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        go_quoted_list(&user.groups),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !resolution_errors.is_empty() {
        msg.push_str(&format!(
            "; resolution errors: [{}]",
            // Go's `%v` of a `[]error`.
            resolution_errors.join(" ")
        ));
    }
    msg
}

/// Upstream's 403 wording (`forbiddenMessage` in the apiserver's response writers). The
/// object's name is deliberately absent, as upstream: the Status message adds it.
pub fn forbidden_message(attrs: &Attributes) -> String {
    let user = &attrs.user.username;
    if !attrs.resource_request {
        return format!(
            "User {:?} cannot {} path {:?}",
            user, attrs.verb, attrs.path
        );
    }
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    if attrs.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user, attrs.verb, resource, attrs.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user, attrs.verb, resource, attrs.api_group, attrs.namespace
        )
    }
}

/// The whole `Status.message` of upstream's 403 (`apierrors.NewForbidden` around
/// [`forbidden_message`] and the authorizer's reason), e.g.
/// `pods "p" is forbidden: User "x" cannot get resource "pods" in API group "" in the namespace "y"`,
/// `deployments.apps is forbidden: ...` without a name, `forbidden: ...` for a path.
pub fn forbidden_status_message(attrs: &Attributes, reason: &str) -> String {
    let mut err = forbidden_message(attrs);
    if !reason.is_empty() {
        err = format!("{err}: {reason}");
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    if !attrs.resource_request || qualified.is_empty() {
        format!("forbidden: {err}")
    } else if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {:?} is forbidden: {err}", attrs.name)
    }
}

/// Whether a label set satisfies a selector (matchLabels and matchExpressions, ANDed). An
/// unknown operator matches nothing, as upstream rejects such a selector outright.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|req| {
        let values = list(&req.values);
        match req.operator.as_str() {
            "In" => labels.get(&req.key).is_some_and(|v| has(values, v)),
            "NotIn" => labels.get(&req.key).is_none_or(|v| !has(values, v)),
            "Exists" => labels.contains_key(&req.key),
            "DoesNotExist" => !labels.contains_key(&req.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// ClusterRole aggregation (upstream's clusterrole-aggregation controller). For each role with
/// an aggregationRule, its rules become the union of the rules of the other ClusterRoles
/// matched by any of its selectors, visited selector by selector and by name, duplicates
/// dropped. Upstream reaches a chain (view → edit → admin) over several syncs, each reading
/// the previous result; this computes that fixpoint at once. Returns only the roles whose
/// rules change.
pub fn aggregate(cluster_roles: &[ClusterRole]) -> Vec<(String, Vec<PolicyRule>)> {
    let mut current: BTreeMap<String, Vec<PolicyRule>> = cluster_roles
        .iter()
        .filter_map(|r| {
            Some((
                r.metadata.name.clone()?,
                r.rules.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let mut by_name: Vec<&ClusterRole> = cluster_roles
        .iter()
        .filter(|r| r.metadata.name.is_some())
        .collect();
    by_name.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let empty = BTreeMap::new();

    // Each pass lets aggregated rules travel one more link; a chain can be no longer than the
    // number of roles, so the bound only guards against selector cycles that never settle.
    for _ in 0..=cluster_roles.len() {
        let mut changed = false;
        for role in cluster_roles {
            let (Some(name), Some(rule)) = (&role.metadata.name, &role.aggregation_rule) else {
                continue;
            };
            let mut rules: Vec<PolicyRule> = Vec::new();
            for selector in rule.cluster_role_selectors.iter().flatten() {
                for other in &by_name {
                    let other_name = other.metadata.name.as_deref().unwrap_or_default();
                    if other_name == name
                        || !selector_matches(
                            selector,
                            other.metadata.labels.as_ref().unwrap_or(&empty),
                        )
                    {
                        continue;
                    }
                    for r in current.get(other_name).into_iter().flatten() {
                        if !rules.contains(r) {
                            rules.push(r.clone());
                        }
                    }
                }
            }
            if current.get(name) != Some(&rules) {
                current.insert(name.clone(), rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    cluster_roles
        .iter()
        .filter(|r| r.aggregation_rule.is_some())
        .filter_map(|r| {
            let name = r.metadata.name.as_ref()?;
            let new = current.get(name)?;
            let old = r.rules.as_deref().unwrap_or_default();
            (old != new.as_slice()).then(|| (name.clone(), new.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: user("alice", &[]),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn path(verb: &str, path: &str) -> Attributes {
        Attributes {
            user: user("alice", &[]),
            verb: verb.into(),
            path: path.into(),
            ..Attributes::default()
        }
    }

    fn pr(v: serde_json::Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rule_matching() {
        let cases: Vec<(&str, serde_json::Value, Attributes, bool)> = vec![
            (
                "exact",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods"]}),
                res("get", "", "pods", "", "ns", ""),
                true,
            ),
            (
                "other verb",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods"]}),
                res("list", "", "pods", "", "ns", ""),
                false,
            ),
            (
                "verb *",
                json!({"verbs":["*"],"apiGroups":[""],"resources":["pods"]}),
                res("delete", "", "pods", "", "ns", ""),
                true,
            ),
            (
                "other group",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["deployments"]}),
                res("get", "apps", "deployments", "", "ns", ""),
                false,
            ),
            (
                "group *",
                json!({"verbs":["get"],"apiGroups":["*"],"resources":["deployments"]}),
                res("get", "apps", "deployments", "", "ns", ""),
                true,
            ),
            (
                "resource *",
                json!({"verbs":["get"],"apiGroups":["apps"],"resources":["*"]}),
                res("get", "apps", "deployments", "scale", "ns", ""),
                true,
            ),
            (
                "resource rule misses subresource",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods"]}),
                res("get", "", "pods", "log", "ns", ""),
                false,
            ),
            (
                "subresource rule",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods/log"]}),
                res("get", "", "pods", "log", "ns", ""),
                true,
            ),
            (
                "subresource rule misses parent",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods/log"]}),
                res("get", "", "pods", "", "ns", ""),
                false,
            ),
            (
                "*/scale",
                json!({"verbs":["update"],"apiGroups":["apps"],"resources":["*/scale"]}),
                res("update", "apps", "deployments", "scale", "ns", ""),
                true,
            ),
            (
                "*/scale misses status",
                json!({"verbs":["update"],"apiGroups":["apps"],"resources":["*/scale"]}),
                res("update", "apps", "deployments", "status", "ns", ""),
                false,
            ),
            (
                "*/scale misses parent",
                json!({"verbs":["update"],"apiGroups":["apps"],"resources":["*/scale"]}),
                res("update", "apps", "deployments", "", "ns", ""),
                false,
            ),
            (
                "resourceNames hit",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["configmaps"],"resourceNames":["a","b"]}),
                res("get", "", "configmaps", "", "ns", "b"),
                true,
            ),
            (
                "resourceNames miss",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["configmaps"],"resourceNames":["a"]}),
                res("get", "", "configmaps", "", "ns", "c"),
                false,
            ),
            (
                "resourceNames vs list without name",
                json!({"verbs":["list"],"apiGroups":[""],"resources":["configmaps"],"resourceNames":["a"]}),
                res("list", "", "configmaps", "", "ns", ""),
                false,
            ),
            (
                "resource rule vs path",
                json!({"verbs":["get"],"apiGroups":["*"],"resources":["*"]}),
                path("get", "/version"),
                false,
            ),
            (
                "url exact",
                json!({"verbs":["get"],"nonResourceURLs":["/version"]}),
                path("get", "/version"),
                true,
            ),
            (
                "url exact miss",
                json!({"verbs":["get"],"nonResourceURLs":["/version"]}),
                path("get", "/versions"),
                false,
            ),
            (
                "url prefix",
                json!({"verbs":["get"],"nonResourceURLs":["/apis/*"]}),
                path("get", "/apis/apps/v1"),
                true,
            ),
            (
                "url prefix not the bare dir",
                json!({"verbs":["get"],"nonResourceURLs":["/apis/*"]}),
                path("get", "/apis"),
                false,
            ),
            (
                "url *",
                json!({"verbs":["*"],"nonResourceURLs":["*"]}),
                path("post", "/anything"),
                true,
            ),
            (
                "url rule vs resource",
                json!({"verbs":["*"],"nonResourceURLs":["*"]}),
                res("get", "", "pods", "", "ns", ""),
                false,
            ),
            (
                "url verb miss",
                json!({"verbs":["get"],"nonResourceURLs":["/healthz"]}),
                path("post", "/healthz"),
                false,
            ),
        ];
        for (name, rule, attrs, want) in cases {
            assert_eq!(rule_allows(&attrs, &pr(rule)), want, "{name}");
        }
    }

    fn index() -> RbacIndex {
        let mut idx = RbacIndex::new();
        idx.upsert(
            RbacKind::ClusterRole,
            &json!({"metadata":{"name":"pod-reader"},
            "rules":[{"verbs":["get","list"],"apiGroups":[""],"resources":["pods"]}]}),
        );
        idx.upsert(
            RbacKind::ClusterRole,
            &json!({"metadata":{"name":"node-reader"},
            "rules":[{"verbs":["get"],"apiGroups":[""],"resources":["nodes"]}]}),
        );
        idx.upsert(
            RbacKind::Role,
            &json!({"metadata":{"name":"cm-writer","namespace":"team"},
            "rules":[{"verbs":["create"],"apiGroups":[""],"resources":["configmaps"]}]}),
        );
        idx.upsert(RbacKind::ClusterRoleBinding, &json!({"metadata":{"name":"ops-nodes"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"node-reader"},
            "subjects":[{"kind":"Group","name":"ops"}]}));
        idx.upsert(RbacKind::RoleBinding, &json!({"metadata":{"name":"bob-pods","namespace":"team"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"pod-reader"},
            "subjects":[{"kind":"User","name":"bob"}, {"kind":"ServiceAccount","name":"builder"}]}));
        idx.upsert(
            RbacKind::RoleBinding,
            &json!({"metadata":{"name":"carol-cm","namespace":"team"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"cm-writer"},
            "subjects":[{"kind":"ServiceAccount","name":"ci","namespace":"tools"}]}),
        );
        idx.upsert(RbacKind::ClusterRoleBinding, &json!({"metadata":{"name":"dangling"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"missing"},
            "subjects":[{"kind":"User","name":"dave"}]}));
        idx
    }

    #[test]
    fn bindings() {
        let idx = index();
        let sa = |ns: &str, n: &str| format!("system:serviceaccount:{ns}:{n}");
        let cases: Vec<(&str, UserInfo, Attributes, Option<&str>)> = vec![
            (
                "group via ClusterRoleBinding",
                user("x", &["ops"]),
                res("get", "", "nodes", "", "", "n1"),
                Some(
                    r#"RBAC: allowed by ClusterRoleBinding "ops-nodes" of ClusterRole "node-reader" to Group "ops""#,
                ),
            ),
            (
                "group lacks verb",
                user("x", &["ops"]),
                res("list", "", "nodes", "", "", ""),
                None,
            ),
            (
                "user via RoleBinding to ClusterRole",
                user("bob", &[]),
                res("list", "", "pods", "", "team", ""),
                Some(
                    r#"RBAC: allowed by RoleBinding "bob-pods/team" of ClusterRole "pod-reader" to User "bob""#,
                ),
            ),
            (
                "RoleBinding does not reach other namespaces",
                user("bob", &[]),
                res("list", "", "pods", "", "other", ""),
                None,
            ),
            (
                "RoleBinding does not reach cluster scope",
                user("bob", &[]),
                res("list", "", "pods", "", "", ""),
                None,
            ),
            (
                "SA defaults to the binding's namespace",
                user(&sa("team", "builder"), &[]),
                res("get", "", "pods", "", "team", "p"),
                Some(
                    r#"RBAC: allowed by RoleBinding "bob-pods/team" of ClusterRole "pod-reader" to ServiceAccount "builder/team""#,
                ),
            ),
            (
                "SA of another namespace",
                user(&sa("other", "builder"), &[]),
                res("get", "", "pods", "", "team", "p"),
                None,
            ),
            (
                "SA with explicit namespace via Role",
                user(&sa("tools", "ci"), &[]),
                res("create", "", "configmaps", "", "team", ""),
                Some(
                    r#"RBAC: allowed by RoleBinding "carol-cm/team" of Role "cm-writer" to ServiceAccount "ci/tools""#,
                ),
            ),
            (
                "stranger",
                user("eve", &[]),
                res("get", "", "pods", "", "team", ""),
                None,
            ),
        ];
        for (name, u, mut attrs, want) in cases {
            attrs.user = u;
            match (idx.authorize(&attrs), want) {
                (Decision::Allow(reason), Some(w)) => assert_eq!(reason, w, "{name}"),
                (Decision::NoOpinion(_), None) => {}
                (got, _) => panic!("{name}: got {got:?}"),
            }
        }
    }

    #[test]
    fn missing_role_is_reported_and_removal_works() {
        let mut idx = index();
        let mut attrs = res("get", "", "pods", "", "team", "");
        attrs.user = user("dave", &[]);
        assert_eq!(
            idx.authorize(&attrs),
            Decision::NoOpinion(
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#.into()
            )
        );
        let rules = idx.rules_for(&attrs.user, "team");
        assert!(rules.incomplete);
        // A ClusterRoleBinding cannot use a Role; several errors are listed together.
        idx.upsert(
            RbacKind::ClusterRoleBinding,
            &json!({"metadata":{"name":"to-role"},
                "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"cm-writer"},
                "subjects":[{"kind":"User","name":"dave"}]}),
        );
        assert_eq!(
            idx.authorize(&attrs),
            Decision::NoOpinion(
                r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, role.rbac.authorization.k8s.io "cm-writer" not found]"#.into()
            )
        );
        assert_eq!(idx.rules_for(&attrs.user, "").errors.len(), 2);

        attrs.user = user("bob", &[]);
        assert!(idx.authorize(&attrs).allowed());
        idx.remove(RbacKind::RoleBinding, Some("team"), "bob-pods");
        assert!(!idx.authorize(&attrs).allowed());

        // Invalid objects are ignored.
        idx.upsert(
            RbacKind::ClusterRole,
            &json!({"metadata":{"name":"bad"},"rules":"nope"}),
        );
        idx.upsert(RbacKind::ClusterRole, &json!({"rules":[]}));
        assert!(!idx.cluster_roles.contains_key("bad"));
        // Objects as the store holds them (apiVersion and kind set) are accepted.
        idx.upsert(
            RbacKind::ClusterRole,
            &json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"full"}}),
        );
        assert!(idx.cluster_roles.contains_key("full"));
        // An object of another kind is not.
        idx.upsert(
            RbacKind::ClusterRole,
            &json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"wrong"}}),
        );
        assert!(!idx.cluster_roles.contains_key("wrong"));
        idx.remove(RbacKind::ClusterRole, None, "full");
        assert!(!idx.cluster_roles.contains_key("full"));
    }

    #[test]
    fn rules_for_lists_cluster_and_namespace_rules() {
        let idx = index();
        let bob = user("bob", &["ops"]);
        let team = idx.rules_for(&bob, "team");
        assert_eq!(team.resource_rules.len(), 2);
        assert!(!team.incomplete);
        let cluster = idx.rules_for(&bob, "");
        assert_eq!(cluster.resource_rules.len(), 1);
        assert_eq!(cluster.all_rules().len(), 1);
    }

    #[test]
    fn covers_cases() {
        let edit_like = vec![
            pr(
                json!({"verbs":["get","list","create"],"apiGroups":["apps"],"resources":["deployments","deployments/scale"]}),
            ),
            pr(json!({"verbs":["get"],"apiGroups":[""],"resources":["*/status"]})),
            pr(
                json!({"verbs":["get"],"apiGroups":[""],"resources":["configmaps"],"resourceNames":["a","b"]}),
            ),
            pr(json!({"verbs":["get"],"nonResourceURLs":["/apis/*"]})),
        ];
        let cases: Vec<(&str, serde_json::Value, Result<(), usize>)> = vec![
            (
                "subset",
                json!({"verbs":["get","create"],"apiGroups":["apps"],"resources":["deployments"]}),
                Ok(()),
            ),
            (
                "*/status covers pods/status",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["pods/status"]}),
                Ok(()),
            ),
            (
                "named subset",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["configmaps"],"resourceNames":["a"]}),
                Ok(()),
            ),
            (
                "unnamed vs named owner",
                json!({"verbs":["get"],"apiGroups":[""],"resources":["configmaps"]}),
                Err(1),
            ),
            (
                "url under prefix",
                json!({"verbs":["get"],"nonResourceURLs":["/apis/apps"]}),
                Ok(()),
            ),
            (
                "url outside prefix",
                json!({"verbs":["get"],"nonResourceURLs":["/api"]}),
                Err(1),
            ),
            (
                "extra verbs",
                json!({"verbs":["get","delete","patch"],"apiGroups":["apps"],"resources":["deployments"]}),
                Err(2),
            ),
            (
                "cluster-admin's stars",
                json!({"verbs":["*"],"apiGroups":["*"],"resources":["*"]}),
                Err(1),
            ),
        ];
        for (name, requested, want) in cases {
            let got = covers(&edit_like, &[pr(requested)]).map_err(|m| m.len());
            assert_eq!(got, want, "{name}");
        }
        let star = vec![
            pr(json!({"verbs":["*"],"apiGroups":["*"],"resources":["*"]})),
            pr(json!({"verbs":["*"],"nonResourceURLs":["*"]})),
        ];
        assert_eq!(covers(&star, &edit_like), Ok(()));
    }

    #[test]
    fn escalation_wording() {
        let owner = vec![pr(
            json!({"verbs":["get"],"apiGroups":["apps"],"resources":["deployments"]}),
        )];
        let missing = covers(&owner, &[pr(json!({"verbs":["get","create","delete"],"apiGroups":["apps"],"resources":["deployments"]}))]).unwrap_err();
        let msg = escalation_message(&user("alice", &["system:authenticated"]), &missing, &[]);
        assert_eq!(
            msg,
            "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"create\" \"delete\"]}"
        );
        assert_eq!(
            compact_string(&pr(json!({"verbs":["get"],"nonResourceURLs":["/x"]}))),
            "{NonResourceURLs:[\"/x\"], Verbs:[\"get\"]}"
        );
    }

    #[test]
    fn forbidden_messages() {
        let sa = |mut a: Attributes| {
            a.user = user("system:serviceaccount:ns:sa", &[]);
            a
        };
        let cases: Vec<(Attributes, &str, &str)> = vec![
            (
                res("create", "", "pods", "", "y", ""),
                r#"User "alice" cannot create resource "pods" in API group "" in the namespace "y""#,
                r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "y""#,
            ),
            (
                res("get", "", "pods", "log", "y", "p"),
                r#"User "alice" cannot get resource "pods/log" in API group "" in the namespace "y""#,
                r#"pods "p" is forbidden: User "alice" cannot get resource "pods/log" in API group "" in the namespace "y""#,
            ),
            (
                res("list", "apps", "deployments", "", "", ""),
                r#"User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope"#,
                r#"deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope"#,
            ),
            (
                res("get", "", "nodes", "", "", "n1"),
                r#"User "alice" cannot get resource "nodes" in API group "" at the cluster scope"#,
                r#"nodes "n1" is forbidden: User "alice" cannot get resource "nodes" in API group "" at the cluster scope"#,
            ),
            (
                path("get", "/foo"),
                r#"User "alice" cannot get path "/foo""#,
                r#"forbidden: User "alice" cannot get path "/foo""#,
            ),
            (
                sa(res("list", "", "secrets", "", "ns", "")),
                r#"User "system:serviceaccount:ns:sa" cannot list resource "secrets" in API group "" in the namespace "ns""#,
                r#"secrets is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "secrets" in API group "" in the namespace "ns""#,
            ),
        ];
        for (attrs, msg, status) in cases {
            assert_eq!(forbidden_message(&attrs), msg);
            assert_eq!(forbidden_status_message(&attrs, ""), status);
        }
        assert_eq!(
            forbidden_status_message(&path("get", "/foo"), "no RBAC policy matched"),
            r#"forbidden: User "alice" cannot get path "/foo": no RBAC policy matched"#
        );
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let cases = vec![
            (json!({}), true),
            (json!({"matchLabels":{"a":"1"}}), true),
            (json!({"matchLabels":{"a":"2"}}), false),
            (
                json!({"matchExpressions":[{"key":"a","operator":"In","values":["1","2"]}]}),
                true,
            ),
            (
                json!({"matchExpressions":[{"key":"a","operator":"NotIn","values":["1"]}]}),
                false,
            ),
            (
                json!({"matchExpressions":[{"key":"b","operator":"NotIn","values":["1"]}]}),
                true,
            ),
            (
                json!({"matchExpressions":[{"key":"a","operator":"Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions":[{"key":"a","operator":"DoesNotExist"}]}),
                false,
            ),
            (
                json!({"matchExpressions":[{"key":"a","operator":"Bogus"}]}),
                false,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(selector_matches(&sel(s.clone()), &labels), want, "{s}");
        }
    }

    #[test]
    fn aggregation_dedups_and_reports_changes_only() {
        let role = |v: serde_json::Value| -> ClusterRole { serde_json::from_value(v).unwrap() };
        let roles = vec![
            role(
                json!({"metadata":{"name":"agg"},"aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"x":"y"}}]}}),
            ),
            role(
                json!({"metadata":{"name":"b","labels":{"x":"y"}},"rules":[{"verbs":["get"],"apiGroups":[""],"resources":["pods"]}]}),
            ),
            role(json!({"metadata":{"name":"a","labels":{"x":"y"}},"rules":[
                {"verbs":["list"],"apiGroups":[""],"resources":["pods"]},
                {"verbs":["get"],"apiGroups":[""],"resources":["pods"]}]})),
            role(
                json!({"metadata":{"name":"c"},"rules":[{"verbs":["*"],"apiGroups":["*"],"resources":["*"]}]}),
            ),
        ];
        let out = aggregate(&roles);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "agg");
        let verbs: Vec<&str> = out[0].1.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["list", "get"], "by role name, deduplicated");

        let mut settled = roles.clone();
        settled[0].rules = Some(out[0].1.clone());
        assert!(aggregate(&settled).is_empty());
    }
}
