//! Field selectors: the `fieldSelector=` query syntax and the fields each kind can be selected on.
//!
//! Parsing follows apimachinery's `fields.ParseSelector`; which fields a kind accepts follows
//! the field label conversion functions kube-apiserver registers per kind (and their error
//! wording), and the value of each field follows the kind's `GetAttrs`/`ToSelectableFields`. A
//! field the object does not set reads as the empty string, exactly as upstream's `fields.Set`
//! lookup, so `spec.nodeName=` selects unscheduled pods.

use std::fmt;

use serde_json::Value;

use crate::error::SelectorError;
use crate::validation::go_quote;

/// Whether a term requires equality or inequality. `==` is `=`: upstream builds the same term
/// for both and prints it back as `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One `field<op>value` clause; all clauses of a selector must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

impl FieldTerm {
    /// The field label as the client spelled it, e.g. `spec.nodeName`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The operator.
    pub fn op(&self) -> FieldOp {
        self.op
    }

    /// The value with escapes removed.
    pub fn value(&self) -> &str {
        &self.value
    }

    fn matches(&self, actual: &str) -> bool {
        match self.op {
            FieldOp::Equals => actual == self.value,
            FieldOp::NotEquals => actual != self.value,
        }
    }
}

/// Upstream `hasTerm`/`notHasTerm` `String()`: the value re-escaped so the output parses back.
impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FieldOp::Equals => "=",
            FieldOp::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A parsed field selector: the AND of its terms. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that restricts nothing.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// A selector with the one term `field=value`, as upstream `OneTermEqualSelector`.
    pub fn one_term_equal(field: impl Into<String>, value: impl Into<String>) -> Self {
        FieldSelector {
            terms: vec![FieldTerm {
                field: field.into(),
                op: FieldOp::Equals,
                value: value.into(),
            }],
        }
    }

    /// Parses the `fieldSelector=` syntax as apimachinery's `fields.ParseSelector`: terms are
    /// separated by unescaped commas, each split at its first `!=`, `==` or `=`; in values, `\`
    /// escapes `\`, `,` and `=`. Empty terms are skipped. Field names are not checked here
    /// (see [`FieldSelector::validate_for`]), because which names exist depends on the kind.
    ///
    /// # Errors
    ///
    /// [`SelectorError::Field`] worded as upstream, e.g.
    /// `invalid selector: 'a'; can't understand 'a'`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs).map_err(SelectorError::Field)?;
            terms.push(FieldTerm {
                field: lhs.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The terms, in the (sorted) order upstream keeps them.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Whether the selector restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Checks every field against what kube-apiserver accepts for `group`/`kind` (the kind's
    /// field label conversion function, or the default `metadata.name`/`metadata.namespace`).
    ///
    /// # Errors
    ///
    /// [`SelectorError::UnsupportedField`] for the first unsupported field, worded as upstream
    /// words it for that kind: `field label not supported: spec.foo`, or for kinds without
    /// their own list `"spec.foo" is not a known field selector: only "metadata.name",
    /// "metadata.namespace"`.
    pub fn validate_for(&self, group: &str, kind: &str) -> Result<(), SelectorError> {
        for term in &self.terms {
            canonical_field(group, kind, &term.field)?;
        }
        Ok(())
    }

    /// Whether the object satisfies every term. Fields the kind does not support read as the
    /// empty string, as in upstream's field sets; call [`FieldSelector::validate_for`] first to
    /// reject them instead.
    pub fn matches(&self, obj: &Value, group: &str, kind: &str) -> bool {
        self.terms.iter().all(|t| {
            let actual = field_value(obj, group, kind, &t.field).unwrap_or_default();
            t.matches(&actual)
        })
    }

    /// The value `field` must equal, if some `field=value` term pins it (upstream
    /// `RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.op == FieldOp::Equals)
            .map(|t| t.value.as_str())
    }

    /// The one object name the selector allows (`metadata.name=x`), so a list or watch can read
    /// a single key instead of scanning; kubectl's `rollout status`, `wait` and `delete` all
    /// select this way.
    pub fn single_name(&self) -> Option<&str> {
        self.requires_exact_match("metadata.name")
    }
}

/// Upstream `andTerm.String()`: the terms joined with `,`.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Upstream `fields.EscapeValue`: prefixes `\`, `,` and `=` with a backslash.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `splitTerms`: splits on commas not preceded by a backslash, keeping escapes.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Upstream `splitTerm`: the first position where `!=`, `==` or `=` starts (in that order of
/// preference at each position) splits the term.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, parsed) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], parsed, rhs));
            }
        }
    }
    None
}

/// Upstream `UnescapeValue`.
fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream formats the rune with %v, which prints its code point.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    u32::from(c)
                ))
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// How a kind's conversion function words a rejected field.
#[derive(Clone, Copy)]
enum Wording {
    /// `field label not supported: <label>` (core kinds, events.k8s.io, certificates).
    NotSupported,
    /// `field label "<label>" not supported for batchv1.Job`.
    Job,
}

/// A kind with its own field label conversion function upstream.
struct KindFields {
    group: &'static str,
    kind: &'static str,
    /// Every accepted label, in upstream's order.
    fields: &'static [&'static str],
    /// Labels accepted as another name, e.g. pods' legacy `spec.host`.
    aliases: &'static [(&'static str, &'static str)],
    wording: Wording,
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

const CORE_EVENT_FIELDS: &[&str] = &[
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
    "metadata.namespace",
    "metadata.name",
];

const EVENTS_K8S_IO_FIELDS: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// Kinds whose selectable fields differ from the default. Upstream apps/v1 registers no
/// conversion for ReplicaSet, so `status.replicas` (selectable on ReplicationControllers) is
/// rejected for ReplicaSets by kube-apiserver 1.32 too (kubernetes/kubernetes#135136).
static KIND_FIELDS: &[KindFields] = &[
    KindFields {
        group: "",
        kind: "Pod",
        fields: POD_FIELDS,
        aliases: &[("spec.host", "spec.nodeName")],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "Node",
        fields: &["metadata.name", "spec.unschedulable"],
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "ReplicationController",
        fields: &["metadata.name", "metadata.namespace", "status.replicas"],
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "Event",
        fields: CORE_EVENT_FIELDS,
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "Namespace",
        fields: &["status.phase", "metadata.name"],
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "Secret",
        fields: &["type", "metadata.namespace", "metadata.name"],
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "",
        kind: "Service",
        fields: &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "batch",
        kind: "Job",
        fields: &["metadata.name", "metadata.namespace", "status.successful"],
        aliases: &[],
        wording: Wording::Job,
    },
    KindFields {
        group: "events.k8s.io",
        kind: "Event",
        fields: EVENTS_K8S_IO_FIELDS,
        aliases: &[],
        wording: Wording::NotSupported,
    },
    KindFields {
        group: "certificates.k8s.io",
        kind: "CertificateSigningRequest",
        fields: &["metadata.name", "spec.signerName"],
        aliases: &[],
        wording: Wording::NotSupported,
    },
];

const DEFAULT_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

fn kind_fields(group: &str, kind: &str) -> Option<&'static KindFields> {
    KIND_FIELDS
        .iter()
        .find(|k| k.group == group && k.kind == kind)
}

/// The field labels kube-apiserver accepts in a field selector for `group`/`kind`.
pub fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    kind_fields(group, kind).map_or(DEFAULT_FIELDS, |k| k.fields)
}

/// Resolves a label to the name its value is read under, or the upstream rejection.
fn canonical_field<'a>(group: &str, kind: &str, field: &'a str) -> Result<&'a str, SelectorError> {
    let unsupported = |message: String| SelectorError::UnsupportedField {
        field: field.to_string(),
        message,
    };
    match kind_fields(group, kind) {
        Some(k) => {
            if k.fields.contains(&field) {
                return Ok(field);
            }
            if let Some((_, to)) = k.aliases.iter().find(|(from, _)| *from == field) {
                return Ok(to);
            }
            Err(unsupported(match k.wording {
                Wording::NotSupported => format!("field label not supported: {field}"),
                Wording::Job => format!(
                    "field label {} not supported for batchv1.Job",
                    go_quote(field)
                ),
            }))
        }
        None => {
            if DEFAULT_FIELDS.contains(&field) {
                Ok(field)
            } else {
                Err(unsupported(format!(
                    "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    go_quote(field)
                )))
            }
        }
    }
}

fn str_at<'v>(obj: &'v Value, pointer: &str) -> &'v str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// The value a field selector compares for `field` of `obj` (a `group`/`kind` object as
/// stored, i.e. external JSON), or `None` when the kind does not support the field.
///
/// Values are rendered as upstream's `ToSelectableFields`: booleans as `true`/`false`, counts
/// in decimal, unset strings as `""`, unset booleans as `false` and unset counts as `0`.
/// `status.podIPs` is accepted for pods but, as upstream, never populated, so it reads `""`.
pub fn field_value(obj: &Value, group: &str, kind: &str, field: &str) -> Option<String> {
    let field = canonical_field(group, kind, field).ok()?;
    let s = |p: &str| Some(str_at(obj, p).to_string());
    match field {
        "metadata.name" => return s("/metadata/name"),
        "metadata.namespace" => return s("/metadata/namespace"),
        _ => {}
    }
    match (group, kind, field) {
        ("", "Pod", "spec.nodeName") => s("/spec/nodeName"),
        ("", "Pod", "spec.restartPolicy") => s("/spec/restartPolicy"),
        ("", "Pod", "spec.schedulerName") => s("/spec/schedulerName"),
        ("", "Pod", "spec.serviceAccountName") => {
            // v1's deprecated `serviceAccount` is an alias the internal type folds in.
            let name = str_at(obj, "/spec/serviceAccountName");
            if name.is_empty() {
                s("/spec/serviceAccount")
            } else {
                Some(name.to_string())
            }
        }
        ("", "Pod", "spec.hostNetwork") => Some(bool_at(obj, "/spec/hostNetwork")),
        ("", "Pod", "status.phase") => s("/status/phase"),
        ("", "Pod", "status.podIP") => {
            let first = str_at(obj, "/status/podIPs/0/ip");
            if first.is_empty() {
                s("/status/podIP")
            } else {
                Some(first.to_string())
            }
        }
        ("", "Pod", "status.nominatedNodeName") => s("/status/nominatedNodeName"),
        ("", "Node", "spec.unschedulable") => Some(bool_at(obj, "/spec/unschedulable")),
        ("", "ReplicationController", "status.replicas") => Some(int_at(obj, "/status/replicas")),
        ("", "Event", f) => Some(core_event_field(obj, f)),
        ("events.k8s.io", "Event", f) => Some(events_k8s_io_field(obj, f)),
        ("", "Namespace", "status.phase") => s("/status/phase"),
        ("", "Secret", "type") => s("/type"),
        ("", "Service", "spec.clusterIP") => s("/spec/clusterIP"),
        ("", "Service", "spec.type") => s("/spec/type"),
        ("batch", "Job", "status.successful") => Some(int_at(obj, "/status/succeeded")),
        ("certificates.k8s.io", "CertificateSigningRequest", "spec.signerName") => {
            s("/spec/signerName")
        }
        _ => Some(String::new()),
    }
}

fn core_event_field(obj: &Value, field: &str) -> String {
    if let Some(sub) = field.strip_prefix("involvedObject.") {
        return str_at(obj, &format!("/involvedObject/{sub}")).to_string();
    }
    match field {
        "reason" => str_at(obj, "/reason"),
        "type" => str_at(obj, "/type"),
        "reportingComponent" => str_at(obj, "/reportingComponent"),
        "source" => {
            let component = str_at(obj, "/source/component");
            if component.is_empty() {
                str_at(obj, "/reportingComponent")
            } else {
                component
            }
        }
        _ => "",
    }
    .to_string()
}

fn events_k8s_io_field(obj: &Value, field: &str) -> String {
    if let Some(sub) = field.strip_prefix("regarding.") {
        return str_at(obj, &format!("/regarding/{sub}")).to_string();
    }
    match field {
        "reason" => str_at(obj, "/reason"),
        "type" => str_at(obj, "/type"),
        "reportingController" => str_at(obj, "/reportingController"),
        "source" => {
            let component = str_at(obj, "/deprecatedSource/component");
            if component.is_empty() {
                str_at(obj, "/reportingController")
            } else {
                component
            }
        }
        _ => "",
    }
    .to_string()
}
