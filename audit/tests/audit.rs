//! The audit policy's matching, the event's wire shape and the log file.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use audit::{Error, Event, FileSink, Level, Policy, RequestInfo, Stage};
use authz::UserInfo;
use serde_json::{json, Value};

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        extra: BTreeMap::new(),
    }
}

/// A resource request: `verb` on `group/resource[/subresource]` `namespace/name`.
fn resource<'a>(
    user: &'a UserInfo,
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
) -> RequestInfo<'a> {
    RequestInfo {
        user,
        verb,
        resource_request: true,
        api_group: group,
        api_version: "v1",
        resource,
        subresource,
        namespace,
        name,
        path: "/api/v1/...",
    }
}

fn non_resource<'a>(user: &'a UserInfo, path: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        user,
        verb: "get",
        resource_request: false,
        api_group: "",
        api_version: "",
        resource: "",
        subresource: "",
        namespace: "",
        name: "",
        path,
    }
}

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Nothing about the kube-proxy's endpoint watches.
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
      - group: ""
        resources: ["endpoints", "services"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["nodes/status"]
  - level: None
    nonResourceURLs: ["/healthz*", "/version"]
  - level: Request
    resources:
      - group: ""
        resources: ["configmaps"]
        resourceNames: ["controller-leader"]
    omitStages: [ResponseStarted]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps", "pods/log", "*/exec"]
  - level: RequestResponse
    resources:
      - group: "apps"
        resources: ["deployments/*"]
  - level: Request
    namespaces: ["kube-system"]
  - level: Metadata
    resources:
      - group: "batch"
  - level: RequestResponse
    verbs: ["create", "update", "patch", "delete"]
    resources:
      - group: ""
        resources: ["*"]
  - level: Metadata
    nonResourceURLs: ["*"]
"#;

#[test]
fn first_matching_rule_wins() {
    let policy = Policy::parse(POLICY).expect("valid policy");
    let proxy = user("system:kube-proxy", &["system:authenticated"]);
    let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
    let alice = user("alice", &["devs"]);

    let cases: Vec<(&str, RequestInfo<'_>, Level)> = vec![
        (
            "users+verbs",
            resource(&proxy, "watch", "", "endpoints", "", "", ""),
            Level::None,
        ),
        // The same user with another verb falls through to later rules.
        (
            "users, other verb",
            resource(&proxy, "create", "", "endpoints", "", "ns", "e"),
            Level::RequestResponse,
        ),
        (
            "userGroups+subresource",
            resource(&node, "get", "", "nodes", "status", "", "n1"),
            Level::None,
        ),
        (
            "not the subresource",
            resource(&node, "get", "", "nodes", "", "", "n1"),
            Level::None,
        ),
        (
            "nonResourceURL prefix",
            non_resource(&alice, "/healthz/ready"),
            Level::None,
        ),
        (
            "nonResourceURL exact",
            non_resource(&alice, "/version"),
            Level::None,
        ),
        (
            "nonResourceURL exact only",
            non_resource(&alice, "/version/extra"),
            Level::Metadata,
        ),
        (
            "resourceNames match",
            resource(
                &alice,
                "update",
                "",
                "configmaps",
                "",
                "ns",
                "controller-leader",
            ),
            Level::Request,
        ),
        (
            "resourceNames miss",
            resource(&alice, "update", "", "configmaps", "", "ns", "other"),
            Level::Metadata,
        ),
        (
            "secrets",
            resource(&alice, "create", "", "secrets", "", "ns", "s"),
            Level::Metadata,
        ),
        (
            "pods/log",
            resource(&alice, "get", "", "pods", "log", "ns", "p"),
            Level::Metadata,
        ),
        (
            "*/exec",
            resource(&alice, "create", "", "pods", "exec", "ns", "p"),
            Level::Metadata,
        ),
        (
            "deployments/* covers the resource",
            resource(&alice, "get", "apps", "deployments", "", "ns", "d"),
            Level::RequestResponse,
        ),
        (
            "deployments/* covers subresources",
            resource(&alice, "update", "apps", "deployments", "scale", "ns", "d"),
            Level::RequestResponse,
        ),
        (
            "group must match",
            resource(&alice, "get", "extensions", "deployments", "", "ns", "d"),
            Level::None,
        ),
        (
            "namespaces",
            resource(&alice, "get", "apps", "replicasets", "", "kube-system", "r"),
            Level::Request,
        ),
        (
            "group without resources",
            resource(&alice, "get", "batch", "jobs", "", "ns", "j"),
            Level::Metadata,
        ),
        (
            "* includes subresources",
            resource(&alice, "update", "", "pods", "status", "ns", "p"),
            Level::RequestResponse,
        ),
        (
            "no rule matches",
            resource(&alice, "get", "", "pods", "", "ns", "p"),
            Level::None,
        ),
        (
            "catch-all non-resource",
            non_resource(&alice, "/metrics"),
            Level::Metadata,
        ),
    ];
    for (what, req, want) in cases {
        assert_eq!(policy.level_for(&req).0, want, "{what}");
    }
}

#[test]
fn omitted_stages_are_the_policy_s_and_the_rule_s() {
    let policy = Policy::parse(POLICY).expect("valid policy");
    let alice = user("alice", &[]);
    let (level, mut stages) = policy.level_for(&resource(
        &alice,
        "update",
        "",
        "configmaps",
        "",
        "ns",
        "controller-leader",
    ));
    stages.sort();
    assert_eq!(level, Level::Request);
    assert_eq!(stages, vec![Stage::RequestReceived, Stage::ResponseStarted]);
    // No match: level None with the policy's omitted stages.
    let (level, stages) = policy.level_for(&resource(&alice, "get", "", "pods", "", "ns", "p"));
    assert_eq!(level, Level::None);
    assert_eq!(stages, vec![Stage::RequestReceived]);
}

#[test]
fn namespaces_rule_does_not_match_non_resource_requests_and_vice_versa() {
    let policy = Policy::parse(
        r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","rules":[
            {"level":"Request","namespaces":[""]},
            {"level":"Metadata","nonResourceURLs":["/api*"]}]}"#,
    )
    .expect("JSON policy");
    let alice = user("alice", &[]);
    // "" matches cluster-scoped resources...
    assert_eq!(
        policy
            .level_for(&resource(&alice, "get", "", "nodes", "", "", "n"))
            .0,
        Level::Request
    );
    // ...not non-resource requests, and the URL rule does not match resource requests.
    assert_eq!(
        policy.level_for(&non_resource(&alice, "/apis")).0,
        Level::Metadata
    );
    assert_eq!(
        policy
            .level_for(&resource(&alice, "get", "", "pods", "", "ns", "p"))
            .0,
        Level::None
    );
}

#[test]
fn omit_managed_fields_rule_overrides_policy() {
    let policy = Policy::parse(
        r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
  - level: RequestResponse
    resources: [{group: "", resources: [pods]}]
    omitManagedFields: false
  - level: RequestResponse
"#,
    )
    .expect("valid");
    let alice = user("alice", &[]);
    assert!(
        !policy
            .evaluate(&resource(&alice, "get", "", "pods", "", "ns", "p"))
            .omit_managed_fields
    );
    assert!(
        policy
            .evaluate(&resource(&alice, "get", "", "services", "", "ns", "s"))
            .omit_managed_fields
    );
}

#[test]
fn default_policy_keeps_secret_bodies_out_of_the_log() {
    let policy = Policy::default_policy();
    let alice = user("alice", &[]);
    for req in [
        resource(&alice, "create", "", "secrets", "", "ns", "s"),
        resource(&alice, "get", "", "secrets", "", "ns", "s"),
        resource(&alice, "update", "", "configmaps", "", "ns", "c"),
        resource(
            &alice,
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            "",
            "",
            "",
        ),
        resource(&alice, "create", "", "pods", "", "ns", "p"),
        non_resource(&alice, "/healthz"),
    ] {
        let (level, stages) = policy.level_for(&req);
        assert_eq!(level, Level::Metadata, "{req:?}");
        assert!(stages.is_empty());
    }
    // At Metadata the event refuses bodies, so a Secret's data cannot reach the log even if a
    // handler offers it.
    let req = resource(&alice, "create", "", "secrets", "", "ns", "s");
    let mut event = Event::new(
        &req,
        policy.level_for(&req).0,
        "/api/v1/namespaces/ns/secrets",
    );
    event.set_request_object(json!({"data": {"password": "aHVudGVyMg=="}}), false);
    event.set_response_object(json!({"data": {"password": "aHVudGVyMg=="}}), false);
    let line = event.to_json().expect("encode");
    assert!(!line.contains("aHVudGVyMg=="), "{line}");
}

#[test]
fn invalid_policies_are_rejected() {
    let cases = [
        ("kind: Policy\nrules: [{level: Metadata}]", "apiVersion"),
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []", "no rules"),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, nonResourceURLs: ['/x'], namespaces: [a]}]",
            "both",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, nonResourceURLs: ['healthz']}]",
            "must begin with '/'",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, nonResourceURLs: ['/a*b']}]",
            "last character",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, resources: [{group: '', resourceNames: [x]}]}]",
            "resourceNames",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata, resources: [{group: apps/v1}]}]",
            "DNS subdomain",
        ),
    ];
    for (text, want) in cases {
        let err = Policy::parse(text).expect_err(text);
        assert!(matches!(err, Error::InvalidPolicy(_)), "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let err =
        Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]")
            .expect_err("unknown level");
    assert!(matches!(err, Error::Parse(_)), "{err}");
    let err = Policy::from_file(std::path::Path::new("/nonexistent/policy.yaml"))
        .expect_err("missing file");
    assert!(
        err.to_string().contains("/nonexistent/policy.yaml"),
        "{err}"
    );
}

#[test]
fn policy_from_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, POLICY).expect("write");
    assert_eq!(
        Policy::from_file(&path).expect("load"),
        Policy::parse(POLICY).expect("parse")
    );
}

#[test]
fn event_json_has_upstream_field_names_and_omits_empties() {
    let alice = UserInfo {
        username: "alice".into(),
        uid: "u-1".into(),
        groups: vec!["devs".into(), "system:authenticated".into()],
        extra: BTreeMap::from([("scopes".to_string(), vec!["a".to_string()])]),
    };
    let req = resource(
        &alice,
        "update",
        "apps",
        "deployments",
        "scale",
        "ns",
        "web",
    );
    let mut event = Event::new(
        &req,
        Level::RequestResponse,
        "/apis/apps/v1/namespaces/ns/deployments/web/scale",
    );
    event.source_ips = vec!["10.0.0.1".into()];
    event.user_agent = "kubectl/v1.32.0".into();
    event.annotate(audit::ANNOTATION_DECISION, "allow");
    event.annotate(
        audit::ANNOTATION_REASON,
        "RBAC: allowed by ClusterRoleBinding \"x\"",
    );
    event.annotate(audit::ANNOTATION_DECISION, "forbid");
    event.set_request_object(
        json!({"kind": "Scale", "metadata": {"name": "web", "managedFields": [{"manager": "kubectl"}]}}),
        true,
    );
    event.set_response_object(json!({"kind": "Scale", "spec": {"replicas": 3}}), true);
    let done = event.at_stage(Stage::ResponseComplete);
    let mut done = done;
    done.set_response_status(200, "", "");

    let v: Value = serde_json::from_str(&done.to_json().expect("encode")).expect("JSON");
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "annotations",
            "apiVersion",
            "auditID",
            "kind",
            "level",
            "objectRef",
            "requestObject",
            "requestReceivedTimestamp",
            "requestURI",
            "responseObject",
            "responseStatus",
            "sourceIPs",
            "stage",
            "stageTimestamp",
            "user",
            "userAgent",
            "verb",
        ]
    );
    assert_eq!(v["kind"], "Event");
    assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(v["level"], "RequestResponse");
    assert_eq!(v["stage"], "ResponseComplete");
    assert_eq!(v["verb"], "update");
    assert_eq!(
        v["user"],
        json!({"username": "alice", "uid": "u-1", "groups": ["devs", "system:authenticated"], "extra": {"scopes": ["a"]}})
    );
    assert_eq!(
        v["objectRef"],
        json!({"resource": "deployments", "namespace": "ns", "name": "web", "apiGroup": "apps", "apiVersion": "v1", "subresource": "scale"})
    );
    assert_eq!(v["responseStatus"], json!({"metadata": {}, "code": 200}));
    assert_eq!(
        v["requestObject"],
        json!({"kind": "Scale", "metadata": {"name": "web"}})
    );
    assert_eq!(
        v["annotations"][audit::ANNOTATION_DECISION],
        "allow",
        "first value wins"
    );
    assert_eq!(
        v["auditID"],
        json!(event.audit_id),
        "stages share the audit ID"
    );

    let id = v["auditID"].as_str().expect("string");
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, vec![8, 4, 4, 4, 12], "{id}");
    assert!(
        id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_ne!(audit::new_audit_id(), audit::new_audit_id());

    for field in ["requestReceivedTimestamp", "stageTimestamp"] {
        let ts = v[field].as_str().expect("timestamp");
        // 2026-11-29T12:00:00.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert!(audit::parse_micro_time(ts).is_some(), "{ts}");
    }

    // Round trip.
    let back: Event = serde_json::from_value(v).expect("decode");
    assert_eq!(back.audit_id, done.audit_id);
    assert_eq!(back.level, Level::RequestResponse);
}

#[test]
fn metadata_event_of_a_non_resource_request_is_minimal() {
    let bob = user("bob", &[]);
    let mut event = Event::new(
        &non_resource(&bob, "/healthz"),
        Level::Metadata,
        "/healthz?verbose",
    );
    event.set_request_object(json!({"x": 1}), false);
    event.set_response_status(
        403,
        "Forbidden",
        "forbidden: User \"bob\" cannot get path \"/healthz\"",
    );
    let v: Value = serde_json::from_str(&event.to_json().expect("encode")).expect("JSON");
    assert!(v.get("objectRef").is_none());
    assert!(v.get("requestObject").is_none());
    assert!(v.get("responseObject").is_none());
    assert!(v.get("annotations").is_none());
    assert!(v.get("sourceIPs").is_none());
    assert!(v.get("userAgent").is_none());
    assert!(v.get("impersonatedUser").is_none());
    assert_eq!(v["user"], json!({"username": "bob"}));
    assert_eq!(v["stage"], "RequestReceived");
    assert_eq!(v["requestURI"], "/healthz?verbose");
    assert_eq!(
        v["responseStatus"],
        json!({"metadata": {}, "status": "Failure", "reason": "Forbidden", "message": "forbidden: User \"bob\" cannot get path \"/healthz\"", "code": 403})
    );
}

#[test]
fn request_level_keeps_the_request_but_not_the_response() {
    let bob = user("bob", &[]);
    let mut event = Event::new(
        &resource(&bob, "create", "", "pods", "", "ns", ""),
        Level::Request,
        "/api/v1/namespaces/ns/pods",
    );
    event.set_request_object(json!({"kind": "Pod"}), false);
    event.set_response_object(json!({"kind": "Pod"}), false);
    assert_eq!(event.request_object, Some(json!({"kind": "Pod"})));
    assert_eq!(event.response_object, None);
}

#[test]
fn file_sink_writes_one_line_per_event_with_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let sink = Arc::new(FileSink::open(&path).expect("open"));
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let who = user(&format!("user-{t}"), &[]);
                for i in 0..50 {
                    let uri = format!("/api/v1/namespaces/ns/pods/p{i}");
                    let req = resource(&who, "get", "", "pods", "", "ns", "p");
                    let mut event = Event::new(&req, Level::Metadata, uri);
                    event.set_response_status(200, "", "");
                    sink.write(&event.at_stage(Stage::ResponseComplete))
                        .expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }

    let file = std::fs::File::open(&path).expect("open for reading");
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .map(|l| l.expect("line"))
        .collect();
    assert_eq!(lines.len(), 200);
    for line in &lines {
        let v: Value = serde_json::from_str(line).expect("each line is one JSON event");
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["stage"], "ResponseComplete");
    }

    // Reopening appends rather than truncating.
    drop(sink);
    let sink = FileSink::open(&path).expect("reopen");
    let z = user("z", &[]);
    let req = resource(&z, "get", "", "pods", "", "ns", "p");
    sink.write(&Event::new(&req, Level::Metadata, "/x"))
        .expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 201);
    assert!(text.ends_with('\n'));
}

#[test]
fn file_sink_rotates_and_keeps_max_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let sink = FileSink::open_with_rotation(&path, 1, 2).expect("open");
    let who = user("rotator", &[]);
    let req = resource(&who, "create", "", "configmaps", "", "ns", "big");
    let mut event = Event::new(&req, Level::Request, "/api/v1/namespaces/ns/configmaps");
    // ~200 KiB per line: a 1 MiB file holds five lines.
    event.set_request_object(json!({"data": {"blob": "x".repeat(200 * 1024)}}), false);
    for _ in 0..20 {
        sink.write(&event).expect("write");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "the log and two backups: {names:?}");
    assert!(names.contains(&"audit.log".to_string()));
    for name in &names {
        let p = dir.path().join(name);
        assert!(
            std::fs::metadata(&p).expect("stat").len() <= 1024 * 1024,
            "{name}"
        );
        assert_eq!(
            std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
        assert!(
            name == "audit.log" || (name.starts_with("audit-") && name.ends_with(".log")),
            "{name}"
        );
    }
}
