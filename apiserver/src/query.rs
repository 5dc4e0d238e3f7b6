//! Query parameters, parsed the way kube-apiserver parses them.

/// The decoded query string, in order (some parameters repeat, like exec's `command`).
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, if present (even empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value of `name`.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Upstream's boolean rule: absent → false; `0` or `false` in any case → false; anything
    /// else (including `True` from the Python client, and an empty value) → true.
    pub fn flag(&self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid value for {name}: {v:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_upstream() {
        let q = Query::parse(Some("watch=True&a=0&b=false&c=FALSE&d=&e=1"));
        assert!(q.flag("watch"));
        assert!(!q.flag("a"));
        assert!(!q.flag("b"));
        assert!(!q.flag("c"));
        assert!(q.flag("d"));
        assert!(q.flag("e"));
        assert!(!q.flag("missing"));
    }

    #[test]
    fn decodes_and_repeats() {
        let q = Query::parse(Some("labelSelector=app%3Dweb&command=echo&command=hi"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.get("command"), Some("echo"));
        assert_eq!(q.int("limit"), Ok(None));
    }
}
