//! Turning a URL path into what it addresses: discovery, a resource collection, one object or
//! one of its subresources. Everything is looked up in the one resource table.

use api_types::resources::{self, ResourceInfo};

/// The resource a request addresses, with its scope.
#[derive(Debug, Clone)]
pub struct Resource {
    pub info: &'static ResourceInfo,
    /// The namespace from the URL; `None` for cluster-scoped kinds and cluster-wide lists.
    pub namespace: Option<String>,
}

impl Resource {
    /// A built-in `v1` resource by group and plural, for the server's own reads and writes (a
    /// missing table entry is a bug, answered as a 500).
    pub fn builtin(
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Resource, crate::error::ApiError> {
        Ok(Resource {
            info: resources::find(group, "v1", plural).ok_or_else(|| {
                crate::error::ApiError::internal(format!(
                    "{plural} missing from the resource table"
                ))
            })?,
            namespace: namespace.map(String::from),
        })
    }

    /// The storage key of the named object.
    pub fn key(&self, name: &str) -> String {
        self.info.storage_key(self.namespace.as_deref(), name)
    }

    /// The storage prefix of the collection: all namespaces, or one.
    pub fn prefix(&self) -> String {
        match &self.namespace {
            Some(ns) if self.info.namespaced => self.info.namespace_prefix(ns),
            _ => self.info.storage_prefix(),
        }
    }

    /// `<plural>` or `<plural>.<group>`, as upstream names resources in messages.
    pub fn qualified(&self) -> String {
        if self.info.group.is_empty() {
            self.info.plural.to_string()
        } else {
            format!("{}.{}", self.info.plural, self.info.group)
        }
    }
}

/// What a path addresses.
#[derive(Debug)]
pub enum Target {
    /// `/api`
    Api,
    /// `/apis`
    Apis,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    GroupVersion(String, String),
    /// A collection, object or subresource.
    Object {
        resource: Resource,
        name: Option<String>,
        subresource: Option<String>,
    },
}

/// Parses an API path (`/api/...` or `/apis/...`). `None` means no such path (404).
pub fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Some(Target::Api),
        ["apis"] => return Some(Target::Apis),
        ["apis", g] => return Some(Target::Group((*g).to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        let known = resources::groups()
            .iter()
            .any(|(g, vs)| *g == group && vs.contains(&version));
        return known.then(|| Target::GroupVersion(group.to_string(), version.to_string()));
    }
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    // `namespaces/<ns>/<resource>/...` addresses a namespaced resource, unless the third
    // segment is not a namespaced resource of this group-version (then it is a subresource of
    // the namespace itself, e.g. `namespaces/x/status`).
    if rest[0] == "namespaces" && rest.len() >= 3 {
        if let Some(info) = resources::find(group, version, rest[2]).filter(|i| i.namespaced) {
            if rest.len() > 5 {
                return None;
            }
            return Some(Target::Object {
                resource: Resource {
                    info,
                    namespace: Some(rest[1].to_string()),
                },
                name: rest.get(3).map(|s| (*s).to_string()),
                subresource: rest.get(4).map(|s| (*s).to_string()),
            });
        }
    }
    if rest.len() > 3 {
        return None;
    }
    let info = resources::find(group, version, rest[0])?;
    Some(Target::Object {
        resource: Resource {
            info,
            namespace: None,
        },
        name: rest.get(1).map(|s| (*s).to_string()),
        subresource: rest.get(2).map(|s| (*s).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str) -> (String, Option<String>, Option<String>, Option<String>) {
        match parse(path) {
            Some(Target::Object {
                resource,
                name,
                subresource,
            }) => (
                resource.info.plural.to_string(),
                resource.namespace,
                name,
                subresource,
            ),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            object("/api/v1/namespaces/default/pods/p/status"),
            (
                "pods".into(),
                Some("default".into()),
                Some("p".into()),
                Some("status".into())
            )
        );
        assert_eq!(object("/api/v1/pods"), ("pods".into(), None, None, None));
        assert_eq!(
            object("/api/v1/namespaces/kube-system"),
            ("namespaces".into(), None, Some("kube-system".into()), None)
        );
        assert_eq!(
            object("/api/v1/namespaces/x/finalize"),
            (
                "namespaces".into(),
                None,
                Some("x".into()),
                Some("finalize".into())
            )
        );
        assert_eq!(
            object("/apis/apps/v1/namespaces/d/deployments/web/scale"),
            (
                "deployments".into(),
                Some("d".into()),
                Some("web".into()),
                Some("scale".into())
            )
        );
        assert_eq!(
            object("/api/v1/nodes/n1"),
            ("nodes".into(), None, Some("n1".into()), None)
        );
        assert!(parse("/api/v1/widgets").is_none());
        assert!(parse("/apis/nope/v1").is_none());
        assert!(parse("/api/v1/namespaces/d/pods/p/log/extra").is_none());
        assert!(matches!(
            parse("/apis/apps/v1/"),
            Some(Target::GroupVersion(..))
        ));
    }
}
