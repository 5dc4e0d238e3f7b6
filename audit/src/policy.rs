//! The audit policy: which requests are recorded, at what level, at which stages.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How much of a request an event records. Ordered: each level records everything the previous
/// one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Nothing: no event at all.
    None,
    /// Who did what to which object and how it ended; no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

/// When in a request's life an event is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// When the response headers are sent, for long-running requests (watch) only.
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When the handler panicked.
    Panic,
}

/// A set of resources of one API group in a [`PolicyRule`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    /// The API group; `""` is the core group.
    #[serde(default)]
    pub group: String,
    /// Resources: `"pods"`, `"pods/log"` (a subresource), `"*"` (every resource and
    /// subresource), `"*/status"` (that subresource of any resource), `"pods/*"` (pods and all
    /// its subresources). Empty means every resource of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// One rule: the first rule whose every set criterion matches decides the request's level.
/// An empty criterion matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// The level of matching requests.
    pub level: Level,
    /// User names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups; a request matches if its user is in any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_groups: Vec<String>,
    /// Verbs (`get`, `list`, `watch`, `create`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// Resources; setting this (or `namespaces`) makes the rule match resource requests only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<GroupResources>,
    /// Namespaces; `""` matches cluster-scoped resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Non-resource paths: exact, `"*"`, or a prefix ending in `*` (`/healthz*`); setting this
    /// makes the rule match non-resource requests only.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
    /// Stages not to emit events for, in addition to the policy's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<Stage>,
    /// Overrides the policy's `omitManagedFields` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_managed_fields: Option<bool>,
}

impl PolicyRule {
    /// A rule matching everything at `level`: the base the other criteria are added to.
    pub fn new(level: Level) -> Self {
        PolicyRule {
            level,
            users: Vec::new(),
            user_groups: Vec::new(),
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            non_resource_urls: Vec::new(),
            omit_stages: Vec::new(),
            omit_managed_fields: None,
        }
    }
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// How much to record; [`Level::None`] means no events.
    pub level: Level,
    /// Stages not to emit events for (the rule's and the policy's).
    pub omit_stages: Vec<Stage>,
    /// Whether to drop `metadata.managedFields` from recorded bodies.
    pub omit_managed_fields: bool,
}

/// The request attributes the policy matches on: the authorizer's view of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The authenticated user.
    pub user: &'a authz::UserInfo,
    /// The verb (`get`, `list`, `watch`, `create`, …; for non-resource requests the lowercased
    /// HTTP method).
    pub verb: &'a str,
    /// Whether the request is for an API resource (as opposed to `/healthz`, `/version`, …).
    pub resource_request: bool,
    /// The API group; `""` for the core group.
    pub api_group: &'a str,
    /// The API version.
    pub api_version: &'a str,
    /// The resource (plural), e.g. `pods`.
    pub resource: &'a str,
    /// The subresource, e.g. `log`; `""` for none.
    pub subresource: &'a str,
    /// The namespace; `""` for cluster-scoped requests.
    pub namespace: &'a str,
    /// The object name; `""` for collections.
    pub name: &'a str,
    /// The URL path.
    pub path: &'a str,
}

/// The `apiVersion` of a policy file.
const API_VERSION: &str = "audit.k8s.io/v1";
/// The `kind` of a policy file.
const KIND: &str = "Policy";

/// An `audit.k8s.io/v1` Policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Always `audit.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `Policy`.
    #[serde(default)]
    pub kind: String,
    /// The rules, in order: the first match wins; no match means [`Level::None`].
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Stages never emitted, whatever rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_stages: Vec<Stage>,
    /// Drop `metadata.managedFields` from recorded bodies unless a rule says otherwise.
    #[serde(default)]
    pub omit_managed_fields: bool,
}

impl Policy {
    /// Reads the file given to `--audit-policy-file`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates a policy in YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let policy: Policy = serde_yaml::from_str(text)?;
        policy.validate()?;
        Ok(policy)
    }

    /// The policy used when `--audit-log-path` is given without `--audit-policy-file`:
    /// every request at [`Level::Metadata`].
    ///
    /// Upstream has no such default (no policy file means no auditing); Coxswain logs metadata
    /// so that turning on the log is enough to see who did what. Secrets, ConfigMaps and
    /// TokenReviews get a rule of their own ahead of the catch-all: their bodies are
    /// credentials, and the explicit rule keeps them at Metadata even if someone raises the
    /// catch-all by editing a copy of this policy.
    pub fn default_policy() -> Self {
        let sensitive = PolicyRule {
            resources: vec![
                GroupResources {
                    group: String::new(),
                    resources: vec!["secrets".into(), "configmaps".into()],
                    resource_names: Vec::new(),
                },
                GroupResources {
                    group: "authentication.k8s.io".into(),
                    resources: vec!["tokenreviews".into()],
                    resource_names: Vec::new(),
                },
            ],
            ..PolicyRule::new(Level::Metadata)
        };
        Policy {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            rules: vec![sensitive, PolicyRule::new(Level::Metadata)],
            omit_stages: Vec::new(),
            omit_managed_fields: false,
        }
    }

    /// The level of a request and the stages to omit for it.
    pub fn level_for(&self, req: &RequestInfo<'_>) -> (Level, Vec<Stage>) {
        let config = self.evaluate(req);
        (config.level, config.omit_stages)
    }

    /// Everything the policy decides for a request: the first matching rule's level, its
    /// omitted stages together with the policy's, and whether to drop managed fields.
    pub fn evaluate(&self, req: &RequestInfo<'_>) -> AuditConfig {
        match self.rules.iter().find(|rule| rule_matches(rule, req)) {
            Some(rule) => {
                let mut omit_stages = self.omit_stages.clone();
                for stage in &rule.omit_stages {
                    if !omit_stages.contains(stage) {
                        omit_stages.push(*stage);
                    }
                }
                AuditConfig {
                    level: rule.level,
                    omit_stages,
                    omit_managed_fields: rule
                        .omit_managed_fields
                        .unwrap_or(self.omit_managed_fields),
                }
            }
            None => AuditConfig {
                level: Level::None,
                omit_stages: self.omit_stages.clone(),
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }

    /// Upstream's validation: a policy that would silently do something other than what its
    /// author meant is refused at startup.
    fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::InvalidPolicy(msg));
        if self.api_version != API_VERSION || self.kind != KIND {
            return invalid(format!(
                "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got {:?} and {:?}",
                self.api_version, self.kind
            ));
        }
        if self.rules.is_empty() {
            // Upstream refuses this too: a policy with no rules would audit nothing.
            return invalid("the policy has no rules".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            if !rule.non_resource_urls.is_empty()
                && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return invalid(format!(
                    "{field}: a rule cannot apply to both resources and non-resource URLs"
                ));
            }
            for (j, url) in rule.non_resource_urls.iter().enumerate() {
                if url == "*" {
                    continue;
                }
                if !url.starts_with('/') {
                    return invalid(format!(
                        "{field}.nonResourceURLs[{j}]: {url:?} must begin with '/'"
                    ));
                }
                if url.find('*').is_some_and(|at| at != url.len() - 1) {
                    return invalid(format!(
                        "{field}.nonResourceURLs[{j}]: {url:?}: '*' may only be the last character"
                    ));
                }
            }
            for (j, gr) in rule.resources.iter().enumerate() {
                // A group written with its version ("apps/v1") would never match anything.
                if !gr.group.is_empty() && !is_dns_subdomain(&gr.group) {
                    return invalid(format!(
                        "{field}.resources[{j}].group: {:?} is not a lowercase DNS subdomain \
                         (write the group without its version)",
                        gr.group
                    ));
                }
                if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                    return invalid(format!(
                        "{field}.resources[{j}]: resourceNames require at least one resource"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// RFC 1123 subdomain: what API group names must be.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether every criterion the rule sets matches the request.
fn rule_matches(rule: &PolicyRule, req: &RequestInfo<'_>) -> bool {
    if !rule.users.is_empty() && !rule.users.contains(&req.user.username) {
        return false;
    }
    if !rule.user_groups.is_empty() && !req.user.groups.iter().any(|g| rule.user_groups.contains(g))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !rule.verbs.iter().any(|v| v == req.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return resource_matches(rule, req);
    }
    if !rule.non_resource_urls.is_empty() {
        return !req.resource_request
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(req.path, spec));
    }
    true
}

/// A non-resource path against `*`, an exact path, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    match spec.strip_suffix('*') {
        _ if spec == "*" || spec == path => true,
        Some(prefix) => path.starts_with(prefix.trim_end_matches('*')),
        None => false,
    }
}

/// The resource criteria (namespaces, groups, resources with subresources, names).
fn resource_matches(rule: &PolicyRule, req: &RequestInfo<'_>) -> bool {
    if !req.resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !rule.namespaces.iter().any(|ns| ns == req.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let combined = if req.subresource.is_empty() {
        req.resource.to_owned()
    } else {
        format!("{}/{}", req.resource, req.subresource)
    };
    rule.resources
        .iter()
        .filter(|gr| gr.group == req.api_group)
        .any(|gr| {
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.iter().any(|n| n == req.name) {
                return false;
            }
            gr.resources.iter().any(|res| {
                res == "*"
                    || *res == combined
                    || (!req.subresource.is_empty()
                        && res.strip_prefix("*/") == Some(req.subresource))
                    || res.strip_suffix("/*") == Some(req.resource)
            })
        })
}
