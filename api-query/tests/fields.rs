//! Field selector grammar and errors, per-kind field support, values and matching.

use api_query::{field_value, supported_fields, FieldOp, FieldSelector, SelectorError};
use serde_json::{json, Value};

#[test]
fn parse_terms() {
    // (input, terms as (field, op, value), String())
    type Case<'a> = (&'a str, &'a [(&'a str, FieldOp, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("", &[], ""),
        (",", &[], ""),
        (
            "metadata.name=web",
            &[("metadata.name", FieldOp::Equals, "web")],
            "metadata.name=web",
        ),
        ("a==b", &[("a", FieldOp::Equals, "b")], "a=b"),
        ("a!=b", &[("a", FieldOp::NotEquals, "b")], "a!=b"),
        ("a=", &[("a", FieldOp::Equals, "")], "a="),
        (
            "involvedObject.namespace=",
            &[("involvedObject.namespace", FieldOp::Equals, "")],
            "involvedObject.namespace=",
        ),
        (
            "b=1,a=2",
            &[("a", FieldOp::Equals, "2"), ("b", FieldOp::Equals, "1")],
            "a=2,b=1",
        ),
        (
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            &[
                ("spec.nodeName", FieldOp::Equals, "n1"),
                ("status.phase", FieldOp::NotEquals, "Failed"),
                ("status.phase", FieldOp::NotEquals, "Succeeded"),
            ],
            "spec.nodeName=n1,status.phase!=Failed,status.phase!=Succeeded",
        ),
        ("a=b\\,c", &[("a", FieldOp::Equals, "b,c")], "a=b\\,c"),
        ("a=b\\=c", &[("a", FieldOp::Equals, "b=c")], "a=b\\=c"),
        ("a=b\\\\c", &[("a", FieldOp::Equals, "b\\c")], "a=b\\\\c"),
        ("a=b!c", &[("a", FieldOp::Equals, "b!c")], "a=b!c"),
        (" a = b ", &[(" a ", FieldOp::Equals, " b ")], " a = b "),
        (
            "a=b,,c=d",
            &[("a", FieldOp::Equals, "b"), ("c", FieldOp::Equals, "d")],
            "a=b,c=d",
        ),
    ];
    for (input, terms, printed) in cases {
        let sel = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let got: Vec<(&str, FieldOp, &str)> = sel
            .terms()
            .iter()
            .map(|t| (t.field(), t.op(), t.value()))
            .collect();
        assert_eq!(got, *terms, "{input:?}");
        assert_eq!(sel.to_string(), *printed, "{input:?}");
        assert_eq!(sel.is_empty(), terms.is_empty());
    }
}

#[test]
fn parse_errors() {
    let cases: &[(&str, &str)] = &[
        ("a", "invalid selector: 'a'; can't understand 'a'"),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
        (
            "a=b=c",
            "invalid field selector: unescaped character in value: 61",
        ),
        (
            "a=b\\x",
            "invalid field selector: invalid escape sequence: \\x",
        ),
        (
            "a=b\\",
            "invalid field selector: invalid escape sequence: \\",
        ),
        (
            "a=b\\!",
            "invalid field selector: invalid escape sequence: \\!",
        ),
    ];
    for (input, want) in cases {
        match FieldSelector::parse(input) {
            Err(SelectorError::Field(msg)) => assert_eq!(msg, *want, "{input:?}"),
            other => panic!("{input:?}: {other:?}"),
        }
    }
}

#[test]
fn single_name() {
    let sel = FieldSelector::parse("metadata.name=web").unwrap();
    assert_eq!(sel.single_name(), Some("web"));
    let sel = FieldSelector::parse("metadata.name==web,metadata.namespace=default").unwrap();
    assert_eq!(sel.single_name(), Some("web"));
    assert_eq!(
        sel.requires_exact_match("metadata.namespace"),
        Some("default")
    );
    assert_eq!(
        FieldSelector::parse("metadata.name!=web")
            .unwrap()
            .single_name(),
        None
    );
    assert_eq!(FieldSelector::parse("").unwrap().single_name(), None);
    assert_eq!(
        FieldSelector::one_term_equal("metadata.name", "x").single_name(),
        Some("x")
    );
}

#[test]
fn validation_per_kind() {
    // (group, kind, selector, Ok or the upstream message)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("", "Pod", "metadata.name=a,metadata.namespace=b", None),
        (
            "",
            "Pod",
            "spec.nodeName=n,spec.restartPolicy=Always,spec.schedulerName=s,spec.serviceAccountName=sa,spec.hostNetwork=true",
            None,
        ),
        (
            "",
            "Pod",
            "status.phase=Running,status.podIP=1.2.3.4,status.podIPs=1.2.3.4,status.nominatedNodeName=n",
            None,
        ),
        ("", "Pod", "spec.host=n", None),
        ("", "Pod", "spec.foo=x", Some("field label not supported: spec.foo")),
        ("", "Node", "metadata.name=n,spec.unschedulable=true", None),
        (
            "",
            "Node",
            "metadata.namespace=x",
            Some("field label not supported: metadata.namespace"),
        ),
        (
            "",
            "Event",
            "involvedObject.kind=Pod,involvedObject.namespace=,involvedObject.name=a,involvedObject.uid=u,involvedObject.apiVersion=v1,involvedObject.resourceVersion=1,involvedObject.fieldPath=f,reason=r,reportingComponent=c,source=s,type=Normal",
            None,
        ),
        (
            "",
            "Event",
            "regarding.name=a",
            Some("field label not supported: regarding.name"),
        ),
        (
            "events.k8s.io",
            "Event",
            "regarding.kind=Pod,regarding.name=a,reportingController=c,source=s,type=Normal,reason=r",
            None,
        ),
        (
            "events.k8s.io",
            "Event",
            "involvedObject.name=a",
            Some("field label not supported: involvedObject.name"),
        ),
        ("", "Secret", "type=Opaque", None),
        ("", "Secret", "data=x", Some("field label not supported: data")),
        ("", "Namespace", "status.phase=Active,metadata.name=x", None),
        (
            "",
            "Namespace",
            "metadata.namespace=x",
            Some("field label not supported: metadata.namespace"),
        ),
        ("", "Service", "spec.clusterIP=None,spec.type=ClusterIP", None),
        ("", "ReplicationController", "status.replicas=1", None),
        ("batch", "Job", "status.successful=1,metadata.name=j", None),
        (
            "batch",
            "Job",
            "status.failed=1",
            Some("field label \"status.failed\" not supported for batchv1.Job"),
        ),
        ("apps", "Deployment", "metadata.name=a,metadata.namespace=b", None),
        (
            "apps",
            "Deployment",
            "spec.replicas=1",
            Some("\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
        ),
        (
            "apps",
            "ReplicaSet",
            "status.replicas=0",
            Some("\"status.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
        ),
        ("", "ConfigMap", "metadata.name=a", None),
        ("", "PersistentVolume", "metadata.namespace=", None),
        (
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "spec.signerName=kubernetes.io/kubelet-serving",
            None,
        ),
    ];
    for (group, kind, selector, want) in cases {
        let sel = FieldSelector::parse(selector).unwrap();
        let got = sel.validate_for(group, kind);
        match (got, want) {
            (Ok(()), None) => {}
            (Err(SelectorError::UnsupportedField { message, .. }), Some(want)) => {
                assert_eq!(message, *want, "{group}/{kind} {selector}")
            }
            (got, want) => panic!("{group}/{kind} {selector}: got {got:?}, want {want:?}"),
        }
    }
    assert!(supported_fields("", "Pod").contains(&"spec.nodeName"));
    assert_eq!(
        supported_fields("apps", "Deployment"),
        ["metadata.name", "metadata.namespace"]
    );
}

fn pod() -> Value {
    json!({
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "builder",
            "containers": [{"name": "c", "image": "nginx"}]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
            "nominatedNodeName": "node-2"
        }
    })
}

#[test]
fn pod_field_values() {
    let p = pod();
    let cases: &[(&str, Option<&str>)] = &[
        ("metadata.name", Some("web-1")),
        ("metadata.namespace", Some("default")),
        ("spec.nodeName", Some("node-1")),
        ("spec.host", Some("node-1")),
        ("spec.restartPolicy", Some("Always")),
        ("spec.schedulerName", Some("default-scheduler")),
        ("spec.serviceAccountName", Some("builder")),
        ("spec.hostNetwork", Some("false")),
        ("status.phase", Some("Running")),
        ("status.podIP", Some("10.0.0.5")),
        ("status.podIPs", Some("")),
        ("status.nominatedNodeName", Some("node-2")),
        ("spec.foo", None),
    ];
    for (field, want) in cases {
        assert_eq!(
            field_value(&p, "", "Pod", field).as_deref(),
            *want,
            "{field}"
        );
    }
    let bare = json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": true, "serviceAccount": "legacy"}});
    assert_eq!(
        field_value(&bare, "", "Pod", "spec.nodeName").as_deref(),
        Some("")
    );
    assert_eq!(
        field_value(&bare, "", "Pod", "spec.hostNetwork").as_deref(),
        Some("true")
    );
    assert_eq!(
        field_value(&bare, "", "Pod", "spec.serviceAccountName").as_deref(),
        Some("legacy")
    );
    assert_eq!(
        field_value(&bare, "", "Pod", "metadata.namespace").as_deref(),
        Some("")
    );
}

#[test]
fn pod_matching() {
    let p = pod();
    let unscheduled =
        json!({"metadata": {"name": "u", "namespace": "default"}, "status": {"phase": "Pending"}});
    let cases: &[(&str, bool, bool)] = &[
        // (selector, matches scheduled pod, matches unscheduled pod)
        ("", true, true),
        ("spec.nodeName=node-1", true, false),
        ("spec.nodeName=", false, true),
        ("spec.nodeName!=", true, false),
        ("spec.host=node-1", true, false),
        (
            "spec.nodeName=node-1,status.phase!=Succeeded,status.phase!=Failed",
            true,
            false,
        ),
        ("status.phase!=Succeeded,status.phase!=Failed", true, true),
        ("status.phase=Pending", false, true),
        ("spec.hostNetwork=false", true, true),
        ("spec.hostNetwork=true", false, false),
        ("metadata.name=web-1", true, false),
        (
            "metadata.name=web-1,metadata.namespace=default",
            true,
            false,
        ),
        ("metadata.namespace=kube-system", false, false),
        ("status.podIP=10.0.0.5", true, false),
        ("status.podIPs=10.0.0.5", false, false),
        ("status.nominatedNodeName=node-2", true, false),
    ];
    for (selector, scheduled, pending) in cases {
        let sel = FieldSelector::parse(selector).unwrap();
        sel.validate_for("", "Pod").unwrap();
        assert_eq!(
            sel.matches(&p, "", "Pod"),
            *scheduled,
            "{selector} on scheduled"
        );
        assert_eq!(
            sel.matches(&unscheduled, "", "Pod"),
            *pending,
            "{selector} on unscheduled"
        );
    }
}

#[test]
fn other_kinds_matching() {
    // (object, group, kind, selector, matches)
    let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
    let fresh_node = json!({"metadata": {"name": "n2"}});
    let event = json!({
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u-1", "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{c}"},
        "reason": "Pulled",
        "type": "Normal",
        "reportingComponent": "kubelet",
        "source": {}
    });
    let cluster_event = json!({
        "metadata": {"name": "e2", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "n1", "uid": "n-uid"},
        "source": {"component": "node-controller"},
        "type": "Warning"
    });
    let new_event = json!({
        "metadata": {"name": "e3", "namespace": "default"},
        "regarding": {"kind": "Pod", "namespace": "default", "name": "web-1"},
        "reason": "Scheduled",
        "type": "Normal",
        "reportingController": "default-scheduler",
        "note": "Successfully assigned"
    });
    let secret = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls"});
    let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
    let svc = json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"clusterIP": "None", "type": "ClusterIP"}});
    let job = json!({"metadata": {"name": "j", "namespace": "d"}, "status": {"succeeded": 1}});
    let rc = json!({"metadata": {"name": "rc", "namespace": "d"}, "status": {}});
    let deploy = json!({"metadata": {"name": "web", "namespace": "d"}});
    let pv = json!({"metadata": {"name": "pv1"}});

    let cases: &[(&Value, &str, &str, &str, bool)] = &[
        (&node, "", "Node", "spec.unschedulable=true", true),
        (&fresh_node, "", "Node", "spec.unschedulable=false", true),
        (&fresh_node, "", "Node", "metadata.name=n2", true),
        (&event, "", "Event", "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u-1", true),
        (&event, "", "Event", "involvedObject.apiVersion=v1,involvedObject.resourceVersion=7,involvedObject.fieldPath=spec.containers{c}", true),
        (&event, "", "Event", "involvedObject.name=web-2", false),
        (&event, "", "Event", "reason=Pulled,type=Normal,reportingComponent=kubelet", true),
        // `source` falls back to the reporting component.
        (&event, "", "Event", "source=kubelet", true),
        (&cluster_event, "", "Event", "involvedObject.namespace=,involvedObject.kind=Node,involvedObject.uid=n-uid", true),
        (&cluster_event, "", "Event", "source=node-controller,type=Warning", true),
        (&new_event, "events.k8s.io", "Event", "regarding.name=web-1,regarding.kind=Pod", true),
        (&new_event, "events.k8s.io", "Event", "reportingController=default-scheduler,source=default-scheduler", true),
        (&new_event, "events.k8s.io", "Event", "reason=Scheduled,type=Normal,metadata.name=e3", true),
        (&new_event, "events.k8s.io", "Event", "regarding.namespace=other", false),
        (&secret, "", "Secret", "type=kubernetes.io/tls", true),
        (&secret, "", "Secret", "type!=kubernetes.io/tls", false),
        (&ns, "", "Namespace", "status.phase=Active,metadata.name=kube-system", true),
        (&svc, "", "Service", "spec.clusterIP!=None", false),
        (&svc, "", "Service", "spec.type=ClusterIP", true),
        (&job, "batch", "Job", "status.successful=1", true),
        (&job, "batch", "Job", "status.successful=0", false),
        (&rc, "", "ReplicationController", "status.replicas=0", true),
        (&deploy, "apps", "Deployment", "metadata.name=web,metadata.namespace=d", true),
        (&deploy, "apps", "Deployment", "metadata.name=api", false),
        // Cluster-scoped objects have no namespace field: it reads empty.
        (&pv, "", "PersistentVolume", "metadata.namespace=", true),
        (&pv, "", "PersistentVolume", "metadata.namespace=default", false),
        // Unvalidated unknown fields read empty, as in upstream field sets.
        (&deploy, "apps", "Deployment", "spec.replicas=", true),
        (&deploy, "apps", "Deployment", "spec.replicas=3", false),
    ];
    for (obj, group, kind, selector, want) in cases {
        let sel = FieldSelector::parse(selector).unwrap();
        assert_eq!(
            sel.matches(obj, group, kind),
            *want,
            "{group}/{kind} {selector}"
        );
    }
}
