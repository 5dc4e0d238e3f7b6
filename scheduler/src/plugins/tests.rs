//! Table-driven tests of the plugins and the scheduling algorithm on hand-made snapshots.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};
use serde_json::json;

use super::node_affinity::requirement_matches;
use super::node_basic::ports_conflict;
use super::node_resources::{least_allocated, most_allocated};
use super::taint_toleration::tolerates;
use crate::config::ProfileConfig;
use crate::framework::{pod_requests, CycleState, Framework, HostPort, NodeInfo, Resources};
use crate::scheduler::{schedule_pod, Failure};

fn pod(v: serde_json::Value) -> Pod {
    let mut base = json!({"metadata": {"name": "p", "namespace": "ns"},
                          "spec": {"containers": []}});
    crate::plugins::tests::merge(&mut base, v);
    serde_json::from_value(base).expect("pod")
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn cpu_pod(name: &str, cpu: &str, priority: i32) -> Pod {
    pod(json!({"metadata": {"name": name},
               "spec": {"priority": priority, "containers": [
                   {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
}

fn node(name: &str, cpu: &str, extra: serde_json::Value) -> NodeInfo {
    let mut base = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "10"}}});
    merge(&mut base, extra);
    NodeInfo::new(serde_json::from_value::<Node>(base).expect("node"))
}

fn default_framework() -> Framework {
    ProfileConfig::default()
        .build(None)
        .expect("default profile")
}

#[test]
fn toleration_matching() {
    let taint = |k: &str, v: &str, e: &str| Taint {
        key: k.into(),
        value: Some(v.into()),
        effect: e.into(),
        ..Default::default()
    };
    let tol = |k: Option<&str>, op: Option<&str>, v: Option<&str>, e: Option<&str>| Toleration {
        key: k.map(Into::into),
        operator: op.map(Into::into),
        value: v.map(Into::into),
        effect: e.map(Into::into),
        ..Default::default()
    };
    let t = taint("dedicated", "gpu", "NoSchedule");
    let table = [
        (
            tol(Some("dedicated"), None, Some("gpu"), Some("NoSchedule")),
            true,
        ),
        (
            tol(Some("dedicated"), Some("Equal"), Some("cpu"), None),
            false,
        ),
        (tol(Some("dedicated"), Some("Exists"), None, None), true),
        (tol(None, Some("Exists"), None, None), true),
        (tol(None, Some("Exists"), None, Some("NoExecute")), false),
        (tol(Some("other"), Some("Exists"), None, None), false),
        (tol(None, None, Some("gpu"), None), false),
    ];
    for (i, (tl, want)) in table.iter().enumerate() {
        assert_eq!(tolerates(tl, &t), *want, "case {i}: {tl:?}");
    }
}

#[test]
fn node_selector_operators() {
    let labels = [("zone", "a"), ("cores", "8")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    };
    let table = [
        (req("zone", "In", &["a", "b"]), true),
        (req("zone", "In", &["b"]), false),
        (req("zone", "NotIn", &["b"]), true),
        (req("missing", "NotIn", &["b"]), true),
        (req("zone", "Exists", &[]), true),
        (req("zone", "DoesNotExist", &[]), false),
        (req("missing", "DoesNotExist", &[]), true),
        (req("cores", "Gt", &["4"]), true),
        (req("cores", "Gt", &["8"]), false),
        (req("cores", "Lt", &["16"]), true),
        (req("zone", "Gt", &["1"]), false),
        (req("cores", "Gt", &["1", "2"]), false),
        (req("zone", "Bogus", &[]), false),
    ];
    for (r, want) in table {
        assert_eq!(requirement_matches(&r, &labels), want, "{r:?}");
    }
}

#[test]
fn pod_requests_follow_upstream() {
    let table = [
        // sum(containers) beats the largest init container
        (
            json!({"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m", "memory": "1Ki"}}}],
              "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "400m"}}}]}),
            500,
            1024,
        ),
        // a large init container wins
        (
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
              "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "2Ki"}}}]}),
            2000,
            2048,
        ),
        // overhead is added on top
        (
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
              "overhead": {"cpu": "50m"}}),
            150,
            0,
        ),
        // a sidecar (restartable init container) adds to the containers
        (
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
              "initContainers": [{"name": "s", "restartPolicy": "Always",
                                  "resources": {"requests": {"cpu": "100m"}}}]}),
            200,
            0,
        ),
    ];
    for (spec, cpu, mem) in table {
        let r = pod_requests(&pod(json!({ "spec": spec })));
        assert_eq!((r.milli_cpu, r.memory), (cpu, mem), "{spec}");
    }
}

#[test]
fn fit_filter_reasons() {
    let fw = default_framework();
    let mut busy = node("busy", "2", json!({}));
    busy.add_pod(cpu_pod("old", "1500m", 0));
    let gpu = node(
        "gpu",
        "2",
        json!({"status": {"allocatable": {"example.com/gpu": "1"}}}),
    );
    let full = node(
        "full",
        "2",
        json!({"status": {"allocatable": {"pods": "0"}}}),
    );
    let gpu_pod = pod(
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests":
        {"example.com/gpu": "1", "memory": "8Gi"}}}]}}),
    );
    let table: [(&Pod, &NodeInfo, Vec<&str>); 5] = [
        (&cpu_pod("p", "500m", 0), &busy, vec![]),
        (&cpu_pod("p", "600m", 0), &busy, vec!["Insufficient cpu"]),
        (&gpu_pod, &gpu, vec!["Insufficient memory"]),
        (
            &gpu_pod,
            &busy,
            vec!["Insufficient memory", "Insufficient example.com/gpu"],
        ),
        (&cpu_pod("p", "1m", 0), &full, vec!["Too many pods"]),
    ];
    for (p, n, want) in table {
        let mut state = CycleState::default();
        assert!(fw.run_pre_filter(&mut state, p, &[]).is_success());
        let s = fw.run_filters(&state, p, n);
        assert_eq!(
            s.reasons,
            want,
            "{} on {}",
            crate::framework::pod_key(p),
            n.name()
        );
    }
}

#[test]
fn host_ports_conflict() {
    let hp = |proto: &str, ip: &str, port| HostPort {
        protocol: proto.into(),
        ip: ip.into(),
        port,
    };
    let table = [
        (hp("TCP", "0.0.0.0", 80), hp("TCP", "10.0.0.1", 80), true),
        (hp("TCP", "10.0.0.2", 80), hp("TCP", "10.0.0.1", 80), false),
        (hp("UDP", "0.0.0.0", 80), hp("TCP", "0.0.0.0", 80), false),
        (hp("TCP", "0.0.0.0", 81), hp("TCP", "0.0.0.0", 80), false),
    ];
    for (a, b, want) in table {
        assert_eq!(ports_conflict(&a, &b), want, "{a:?} {b:?}");
    }
    let fw = default_framework();
    let web = pod(json!({"spec": {"containers": [{"name": "c", "ports": [
        {"containerPort": 80, "hostPort": 8080}]}]}}));
    let mut n = node("n", "4", json!({}));
    let mut state = CycleState::default();
    fw.run_pre_filter(&mut state, &web, &[]);
    assert!(fw.run_filters(&state, &web, &n).is_success());
    n.add_pod(web.clone());
    assert_eq!(
        fw.run_filters(&state, &web, &n).reasons,
        ["node(s) didn't have free ports for the requested pod ports"]
    );
}

#[test]
fn allocation_scores() {
    for (req, cap, least, most) in [
        (0, 100, 100, 0),
        (25, 100, 75, 25),
        (100, 100, 0, 100),
        (5, 0, 0, 0),
        (150, 100, 0, 100),
    ] {
        assert_eq!(least_allocated(req, cap), least, "least {req}/{cap}");
        assert_eq!(most_allocated(req, cap), most, "most {req}/{cap}");
    }
}

#[test]
fn feasible_node_count_is_adaptive() {
    let mut fw = default_framework();
    for (nodes, want) in [
        (0, 0),
        (50, 50),
        (100, 100),
        (1000, 420),
        (5000, 500),
        (100_000, 5000),
    ] {
        assert_eq!(fw.num_feasible_nodes_to_find(nodes), want, "{nodes} nodes");
    }
    fw.percentage_of_nodes_to_score = 10;
    assert_eq!(fw.num_feasible_nodes_to_find(500), 100);
    assert_eq!(fw.num_feasible_nodes_to_find(5000), 500);
    fw.percentage_of_nodes_to_score = 100;
    assert_eq!(fw.num_feasible_nodes_to_find(5000), 5000);
}

#[test]
fn filtering_stops_after_enough_feasible_nodes() {
    let mut fw = default_framework();
    fw.percentage_of_nodes_to_score = 10;
    let nodes: Vec<NodeInfo> = (0..300)
        .map(|i| node(&format!("n{i:03}"), "4", json!({})))
        .collect();
    let p = cpu_pod("p", "1", 0);
    let mut state = CycleState::default();
    fw.run_pre_filter(&mut state, &p, &[]);
    let (feasible, failed) = fw.find_feasible(&state, &p, &nodes, 250);
    assert_eq!(feasible.len(), 100);
    assert!(failed.is_empty());
    assert_eq!(feasible[0], 250, "starts where the last cycle stopped");
}

#[test]
fn scoring_prefers_least_allocated_and_preferred_affinity() {
    let fw = default_framework();
    let mut busy = node("busy", "4", json!({}));
    busy.add_pod(cpu_pod("old", "3", 0));
    let idle = node("idle", "4", json!({}));
    let nodes = vec![busy, idle];
    let mut state = CycleState::default();
    let chosen = schedule_pod(&fw, &mut state, &cpu_pod("p", "100m", 0), &nodes, 0, 0);
    assert_eq!(chosen.expect("fits"), "idle");
    // A preferred term (weight 100, x2 for the plugin) outweighs the allocation difference.
    let pref = pod(
        json!({"spec": {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference":
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                               "values": ["busy"]}]}}]}}}}),
    );
    let mut state = CycleState::default();
    assert_eq!(
        schedule_pod(&fw, &mut state, &pref, &nodes, 0, 0).expect("fits"),
        "busy"
    );
}

#[test]
fn fit_error_summarises_reasons_as_upstream() {
    let fw = default_framework();
    let taint = json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}});
    let nodes = vec![
        node("a", "1", json!({})),
        node("b", "1", json!({})),
        node("c", "1", json!({})),
        node("d", "8", taint.clone()),
        node("e", "8", taint),
    ];
    let mut state = CycleState::default();
    match schedule_pod(&fw, &mut state, &cpu_pod("p", "2", 0), &nodes, 0, 0) {
        Err(Failure::Unschedulable {
            message,
            preemption,
        }) => {
            assert_eq!(
                message,
                "0/5 nodes are available: 2 node(s) had untolerated taint {k: v}, 3 Insufficient \
                 cpu. preemption: 0/5 nodes are available: 2 Preemption is not helpful for \
                 scheduling, 3 No preemption victims found for incoming pod."
            );
            // Preemption found no node: a nomination the pod had would be cleared.
            let cleared = preemption.expect("preemption's verdict");
            assert_eq!(cleared.nominated_node, "");
            assert!(cleared.victims.is_empty());
        }
        other => panic!("expected a fit error, got {other:?}"),
    }
    let mut state = CycleState::default();
    match schedule_pod(&fw, &mut state, &cpu_pod("p", "1", 0), &[], 0, 0) {
        Err(Failure::Unschedulable { message, .. }) => {
            assert_eq!(message, "no nodes available to schedule pods")
        }
        other => panic!("expected no nodes, got {other:?}"),
    }
}

#[test]
fn preemption_picks_fewest_lowest_priority_victims() {
    let fw = default_framework();
    // n1: two low-priority pods, either one frees enough. n2: one mid-priority pod.
    let mut n1 = node("n1", "2", json!({}));
    n1.add_pod(cpu_pod("low-a", "1", 1));
    n1.add_pod(cpu_pod("low-b", "1", 2));
    let mut n2 = node("n2", "2", json!({}));
    n2.add_pod(cpu_pod("mid", "2", 5));
    let mut n3 = node("n3", "2", json!({}));
    n3.add_pod(cpu_pod("vip", "2", 100));
    let nodes = vec![n1, n2, n3];
    let mut state = CycleState::default();
    match schedule_pod(&fw, &mut state, &cpu_pod("urgent", "1", 10), &nodes, 0, 0) {
        Err(Failure::Unschedulable {
            preemption: Some(p),
            ..
        }) => {
            assert_eq!(p.nominated_node, "n1");
            let victims: Vec<_> = p.victims.iter().map(crate::framework::pod_key).collect();
            assert_eq!(victims, ["ns/low-a"], "the higher of the two is reprieved");
        }
        other => panic!("expected preemption, got {other:?}"),
    }
    // preemptionPolicy Never: no victims, upstream's message.
    let never = pod(
        json!({"spec": {"priority": 10, "preemptionPolicy": "Never", "containers":
        [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
    );
    let mut state = CycleState::default();
    match schedule_pod(&fw, &mut state, &never, &nodes, 0, 0) {
        Err(Failure::Unschedulable {
            message,
            preemption,
        }) => {
            assert!(preemption.is_none());
            assert!(
                message.ends_with("preemption: not eligible due to preemptionPolicy=Never."),
                "{message}"
            );
        }
        other => panic!("expected a fit error, got {other:?}"),
    }
}

#[test]
fn unschedulable_node_and_resources_default() {
    let fw = default_framework();
    let cordoned = node("c", "4", json!({"spec": {"unschedulable": true}}));
    let p = cpu_pod("p", "1", 0);
    let mut state = CycleState::default();
    fw.run_pre_filter(&mut state, &p, &[]);
    assert_eq!(
        fw.run_filters(&state, &p, &cordoned).reasons,
        ["node(s) were unschedulable"]
    );
    let tolerant = pod(
        json!({"spec": {"containers": [{"name": "c"}], "tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert!(fw.run_filters(&state, &tolerant, &cordoned).is_success());
    assert_eq!(Resources::default().milli_cpu, 0);
}

fn labelled_pod(name: &str, app: &str, spec: serde_json::Value) -> Pod {
    let mut s = json!({"containers": [{"name": "c"}]});
    merge(&mut s, spec);
    pod(json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": s}))
}

fn zoned(name: &str, zone: &str) -> NodeInfo {
    node(
        name,
        "8",
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
    )
}

fn filter_all(fw: &Framework, p: &Pod, nodes: &[NodeInfo]) -> Vec<(String, Vec<String>)> {
    let mut state = CycleState::default();
    assert!(fw.run_pre_filter(&mut state, p, nodes).is_success());
    nodes
        .iter()
        .map(|n| (n.name().to_string(), fw.run_filters(&state, p, n).reasons))
        .collect()
}

#[test]
fn topology_spread_enforces_max_skew() {
    let fw = default_framework();
    let mut a = zoned("a", "z1");
    a.add_pod(labelled_pod("w1", "web", json!({})));
    a.add_pod(labelled_pod("w2", "web", json!({})));
    let mut b = zoned("b", "z2");
    b.add_pod(labelled_pod("w3", "web", json!({})));
    b.add_pod(labelled_pod("other", "db", json!({})));
    let bare = node("bare", "8", json!({}));
    let nodes = vec![a, b, bare];
    let spread = labelled_pod(
        "new",
        "web",
        json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}),
    );
    let none: Vec<String> = vec![];
    assert_eq!(
        filter_all(&fw, &spread, &nodes),
        [
            (
                "a".to_string(),
                vec![super::topology_spread::ERR_CONSTRAINTS.to_string()]
            ),
            ("b".to_string(), none),
            (
                "bare".to_string(),
                vec![super::topology_spread::ERR_MISSING_LABEL.to_string()]
            ),
        ]
    );
}

#[test]
fn inter_pod_affinity_and_anti_affinity() {
    let fw = default_framework();
    let mut a = zoned("a", "z1");
    a.add_pod(labelled_pod("db", "db", json!({})));
    let mut b = zoned("b", "z2");
    b.add_pod(labelled_pod(
        "loner",
        "loner",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "topology.kubernetes.io/zone",
             "labelSelector": {"matchLabels": {"app": "web"}}}]}}}),
    ));
    let c = zoned("c", "z3");
    let nodes = vec![a, b, c];
    let term = |kind: &str, app: &str| {
        json!({"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "topology.kubernetes.io/zone",
             "labelSelector": {"matchLabels": {"app": app}}}]}}})
    };
    let ok: Vec<String> = vec![];
    let r = |s: &str| vec![s.to_string()];
    use super::inter_pod_affinity::*;
    let table = [
        // near the db: only zone z1; b is also barred by loner's anti-affinity
        (
            labelled_pod("p1", "web", term("podAffinity", "db")),
            [ok.clone(), r(ERR_EXISTING_ANTI_AFFINITY), r(ERR_AFFINITY)],
        ),
        // away from the db
        (
            labelled_pod("p2", "api", term("podAntiAffinity", "db")),
            [r(ERR_ANTI_AFFINITY), ok.clone(), ok.clone()],
        ),
        // first of its group: affinity to itself is satisfiable anywhere
        (
            labelled_pod("p3", "cache", term("podAffinity", "cache")),
            [ok.clone(), ok.clone(), ok.clone()],
        ),
    ];
    for (p, want) in table {
        let got: Vec<Vec<String>> = filter_all(&fw, &p, &nodes)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(got, want, "{}", crate::framework::pod_key(&p));
    }
}

fn framework_with(listers: std::sync::Arc<crate::listers::Listers>) -> Framework {
    ProfileConfig::default()
        .build_with(None, &[], listers)
        .expect("default profile")
}

fn pdb(allowed: i32, disrupted: &[&str]) -> k8s_openapi::api::policy::v1::PodDisruptionBudget {
    let disrupted: serde_json::Map<String, serde_json::Value> = disrupted
        .iter()
        .map(|n| (n.to_string(), json!("2024-01-01T00:00:00Z")))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                   "expectedPods": 1, "disruptedPods": disrupted}}))
    .expect("pdb")
}

fn db_pod(name: &str, cpu: &str, priority: i32) -> Pod {
    let mut p = cpu_pod(name, cpu, priority);
    p.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    p
}

/// (nominated node, victims) of a preemption, or a panic.
fn preempt(fw: &Framework, preemptor: &Pod, nodes: &[NodeInfo]) -> (String, Vec<String>) {
    let mut state = CycleState::default();
    match schedule_pod(fw, &mut state, preemptor, nodes, 0, 0) {
        Err(Failure::Unschedulable {
            preemption: Some(p),
            ..
        }) => (
            p.nominated_node,
            p.victims.iter().map(crate::framework::pod_key).collect(),
        ),
        other => panic!("expected preemption, got {other:?}"),
    }
}

#[test]
fn preemption_respects_pod_disruption_budgets() {
    // n1 holds a low-priority pod guarded by the PDB; n2 a higher-priority unguarded one.
    let mut n1 = node("n1", "2", json!({}));
    n1.add_pod(db_pod("guarded", "2", 1));
    let mut n2 = node("n2", "2", json!({}));
    n2.add_pod(cpu_pod("free", "2", 5));
    let nodes = vec![n1, n2];
    let urgent = cpu_pod("urgent", "1", 10);
    // (PDB, node chosen): no PDB or budget left → the lower victim; no budget → the node
    // without violations; a pod already in disruptedPods spends no budget.
    let table = [
        (None, "n1"),
        (Some(pdb(1, &[])), "n1"),
        (Some(pdb(0, &[])), "n2"),
        (Some(pdb(0, &["guarded"])), "n1"),
    ];
    for (budget, want) in table {
        let listers = std::sync::Arc::new(crate::listers::Listers::default());
        if let Some(b) = budget.clone() {
            listers.pdbs.apply(b);
        }
        let fw = framework_with(listers);
        assert_eq!(preempt(&fw, &urgent, &nodes).0, want, "{budget:?}");
    }
    // Only violating nodes: the fewest violations wins even over lower priorities.
    let mut n3 = node("n3", "2", json!({}));
    n3.add_pod(db_pod("g1", "1", 1));
    n3.add_pod(db_pod("g2", "1", 1));
    let mut n4 = node("n4", "2", json!({}));
    n4.add_pod(db_pod("g3", "2", 3));
    let listers = std::sync::Arc::new(crate::listers::Listers::default());
    listers.pdbs.apply(pdb(0, &[]));
    let fw = framework_with(listers);
    let (node, victims) = preempt(&fw, &cpu_pod("big", "2", 10), &[n3, n4]);
    assert_eq!((node.as_str(), victims), ("n4", vec!["ns/g3".to_string()]));
}

#[test]
fn pdb_violating_victims_are_reprieved_first() {
    // Either pod frees enough. Without a PDB the more important `b` is reprieved, so `a`
    // is the victim; with a budget of one, `a` (visited second) would violate it, so it is
    // reprieved first and `b` is evicted within budget.
    let mut n = node("n", "2", json!({}));
    n.add_pod(db_pod("a", "1", 1));
    n.add_pod(db_pod("b", "1", 2));
    let nodes = vec![n];
    let urgent = cpu_pod("urgent", "1", 10);
    for (budget, want) in [(None, "ns/a"), (Some(pdb(1, &[])), "ns/b")] {
        let listers = std::sync::Arc::new(crate::listers::Listers::default());
        if let Some(b) = budget.clone() {
            listers.pdbs.apply(b);
        }
        let (_, victims) = preempt(&framework_with(listers), &urgent, &nodes);
        assert_eq!(victims, [want], "{budget:?}");
    }
}

#[test]
fn preemption_tie_breaks_follow_upstream() {
    use super::preemption::{pick_one_node, Candidate};
    let started = |name: &str, prio: i32, at: &str| {
        let mut p = cpu_pod(name, "1", prio);
        p.status = Some(serde_json::from_value(json!({"startTime": at})).expect("status"));
        p
    };
    let cand = |node: &str, victims: Vec<Pod>, pdb: usize| Candidate {
        node: node.into(),
        victims,
        num_pdb_violations: pdb,
    };
    let t1 = "2024-01-01T00:00:01Z";
    let t2 = "2024-01-01T00:00:02Z";
    let table = [
        // fewer PDB violations beats everything else
        (
            vec![
                cand("a", vec![started("x", 1, t1)], 1),
                cand("b", vec![started("y", 9, t1), started("z", 9, t1)], 0),
            ],
            "b",
        ),
        // lowest highest-priority victim
        (
            vec![
                cand("a", vec![started("x", 5, t1)], 0),
                cand("b", vec![started("y", 4, t1), started("z", 4, t1)], 0),
            ],
            "b",
        ),
        // smallest sum of (shifted) priorities, i.e. fewer victims at equal top priority
        (
            vec![
                cand("a", vec![started("x", 4, t1), started("w", 1, t1)], 0),
                cand("b", vec![started("y", 4, t1)], 0),
            ],
            "b",
        ),
        // latest start of the highest-priority victims
        (
            vec![
                cand("a", vec![started("x", 4, t1)], 0),
                cand("b", vec![started("y", 4, t2)], 0),
            ],
            "b",
        ),
        // all equal: the first node
        (
            vec![
                cand("a", vec![started("x", 4, t1)], 0),
                cand("b", vec![started("y", 4, t1)], 0),
            ],
            "a",
        ),
    ];
    for (i, (cands, want)) in table.into_iter().enumerate() {
        let got = pick_one_node(cands).map(|c| c.node);
        assert_eq!(got.as_deref(), Some(want), "case {i}");
    }
}

/// Listers holding a ReplicaSet and a StatefulSet selecting `app=web`, and a Service
/// selecting `tier=front`, all in namespace `ns`.
fn workload_listers() -> std::sync::Arc<crate::listers::Listers> {
    let l = crate::listers::Listers::default();
    l.replica_sets.apply(
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}}))
        .expect("rs"),
    );
    l.stateful_sets.apply(
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "template": {},
                     "serviceName": "db"}}))
        .expect("sts"),
    );
    l.services.apply(
        serde_json::from_value(json!({"metadata": {"name": "front", "namespace": "ns"},
            "spec": {"selector": {"tier": "front"}}}))
        .expect("svc"),
    );
    // A Service without a selector selects nothing.
    l.services.apply(
        serde_json::from_value(json!({"metadata": {"name": "headless", "namespace": "ns"},
            "spec": {}}))
        .expect("svc"),
    );
    std::sync::Arc::new(l)
}

fn owned(name: &str, labels: serde_json::Value, kind: &str, owner: &str) -> Pod {
    pod(
        json!({"metadata": {"name": name, "labels": labels, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "c"}]}}),
    )
}

#[test]
fn default_spread_constraints_follow_the_profile_args() {
    use super::topology_spread::PodTopologySpread;
    let listers = workload_listers();
    let in_ = |k: &str, v: &str| json!({"key": k, "operator": "In", "values": [v]});
    let sys = json!({});
    let list = json!({"defaultingType": "List", "defaultConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "DoNotSchedule"}]});
    let own = pod(json!({"metadata": {"labels": {"app": "web"}}, "spec": {
        "containers": [{"name": "c"}], "topologySpreadConstraints": [{"maxSkew": 2,
        "topologyKey": "rack", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["app"]}]}}));
    // (args, pod, mode, [(key, maxSkew, selector)])
    let table = [
        (
            &sys,
            owned("r", json!({"app": "web"}), "ReplicaSet", "web"),
            "ScheduleAnyway",
            vec![
                (
                    "topology.kubernetes.io/zone",
                    5,
                    json!({"matchExpressions": [in_("app", "web")]}),
                ),
                (
                    "kubernetes.io/hostname",
                    3,
                    json!({"matchExpressions": [in_("app", "web")]}),
                ),
            ],
        ),
        // DoNotSchedule is never part of the system defaults.
        (
            &sys,
            owned("r", json!({"app": "web"}), "ReplicaSet", "web"),
            "DoNotSchedule",
            vec![],
        ),
        // Services and the StatefulSet combine.
        (
            &sys,
            owned(
                "s",
                json!({"app": "db", "tier": "front"}),
                "StatefulSet",
                "db",
            ),
            "ScheduleAnyway",
            vec![
                (
                    "topology.kubernetes.io/zone",
                    5,
                    json!({"matchLabels": {"tier": "front"}, "matchExpressions": [in_("app", "db")]}),
                ),
                (
                    "kubernetes.io/hostname",
                    3,
                    json!({"matchLabels": {"tier": "front"}, "matchExpressions": [in_("app", "db")]}),
                ),
            ],
        ),
        // Owned by nothing known and selected by no Service: no default spreading.
        (
            &sys,
            owned("x", json!({"app": "x"}), "ReplicaSet", "gone"),
            "ScheduleAnyway",
            vec![],
        ),
        // The pod's own constraints win, with matchLabelKeys folded into the selector.
        (
            &sys,
            own,
            "ScheduleAnyway",
            vec![(
                "rack",
                2,
                json!({"matchLabels": {"app": "web"},
                                    "matchExpressions": [in_("app", "web")]}),
            )],
        ),
        // List: exactly the configured constraints, hard ones included.
        (
            &list,
            owned("r", json!({"app": "web"}), "ReplicaSet", "web"),
            "DoNotSchedule",
            vec![(
                "topology.kubernetes.io/zone",
                1,
                json!({"matchExpressions": [in_("app", "web")]}),
            )],
        ),
        (
            &list,
            owned("r", json!({"app": "web"}), "ReplicaSet", "web"),
            "ScheduleAnyway",
            vec![],
        ),
    ];
    for (i, (args, p, mode, want)) in table.into_iter().enumerate() {
        let plugin = PodTopologySpread::new(args, listers.clone());
        let got: Vec<(String, i32, serde_json::Value)> = plugin
            .constraints(&p, mode)
            .into_iter()
            .map(|c| {
                (
                    c.topology_key,
                    c.max_skew,
                    serde_json::to_value(c.label_selector).expect("json"),
                )
            })
            .collect();
        let want: Vec<(String, i32, serde_json::Value)> = want
            .into_iter()
            .map(|(k, s, v)| (k.to_string(), s, v))
            .collect();
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn topology_spread_args_are_validated() {
    use super::topology_spread::Args;
    let table = [
        (json!(null), true),
        (json!({"defaultingType": "System"}), true),
        (json!({"defaultingType": "List"}), true),
        (
            json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1,
            "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]}),
            true,
        ),
        (
            json!({"defaultConstraints": [{"maxSkew": 1,
            "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]}),
            false,
        ),
        (
            json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1,
            "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {}}]}),
            false,
        ),
        (json!({"defaultingType": "Nope"}), false),
    ];
    for (args, ok) in table {
        assert_eq!(Args::parse(&args).is_ok(), ok, "{args}");
    }
    let cfg = crate::config::SchedulerConfiguration::parse(
        "profiles: [{pluginConfig: [{name: PodTopologySpread, args: {defaultingType: Nope}}]}]",
    )
    .expect("parses");
    assert!(cfg.profiles("x")[0].build(None).is_err());
}

#[test]
fn default_spread_scores_the_least_crowded_node_highest() {
    let fw = framework_with(workload_listers());
    let replica = |name: &str| owned(name, json!({"app": "web"}), "ReplicaSet", "web");
    // Per node: how many replicas are there already → the node the next one goes to.
    let table = [
        ([2, 1, 0], "c"),
        ([1, 0, 1], "b"),
        ([0, 3, 3], "a"),
        ([2, 2, 1], "c"),
    ];
    for (counts, want) in table {
        let nodes: Vec<NodeInfo> = ["a", "b", "c"]
            .iter()
            .zip(counts)
            .map(|(name, n)| {
                let mut info = node(name, "4", json!({}));
                for i in 0..n {
                    info.add_pod(replica(&format!("{name}-{i}")));
                }
                // An unrelated pod does not count.
                info.add_pod(labelled_pod(&format!("{name}-other"), "other", json!({})));
                info
            })
            .collect();
        for tie in 0..3 {
            let mut state = CycleState::default();
            let got = schedule_pod(&fw, &mut state, &replica("new"), &nodes, 0, tie);
            assert_eq!(got.expect("fits"), want, "{counts:?}");
        }
    }
}

/// A Permit plugin answering a fixed status.
struct FixedPermit(&'static str, crate::framework::Status);

impl crate::framework::Plugin for FixedPermit {
    fn name(&self) -> &'static str {
        self.0
    }
}

impl crate::framework::PermitPlugin for FixedPermit {
    fn permit(
        &self,
        _: &CycleState,
        _: &Pod,
        _: &str,
    ) -> (crate::framework::Status, std::time::Duration) {
        (self.1.clone(), std::time::Duration::from_secs(3600))
    }
}

#[test]
fn permit_outcomes() {
    use crate::framework::{Code, Status};
    let run = |answers: Vec<(&'static str, Status)>| {
        let mut fw = Framework::default();
        for (name, s) in answers {
            fw.permit.push(std::sync::Arc::new(FixedPermit(name, s)));
        }
        let p = cpu_pod("p", "1", 0);
        let s = fw.run_permit(&CycleState::default(), &p, "n");
        let waiting: Vec<Vec<String>> = fw
            .waiting_pods
            .list()
            .into_iter()
            .map(|w| w.pending_plugins)
            .collect();
        (s.code, s.message(), s.plugin, waiting)
    };
    let none: Vec<Vec<String>> = vec![];
    let table = [
        (
            vec![("A", Status::success())],
            (Code::Success, String::new(), String::new(), none.clone()),
        ),
        (
            vec![("A", Status::success()), ("W", Status::wait())],
            (
                Code::Wait,
                String::new(),
                String::new(),
                vec![vec!["W".to_string()]],
            ),
        ),
        // A rejection wins over an earlier Wait, and nothing waits.
        (
            vec![("W", Status::wait()), ("R", Status::unschedulable("no"))],
            (Code::Unschedulable, "no".into(), "R".into(), none.clone()),
        ),
        (
            vec![("E", Status::error("boom"))],
            (
                Code::Error,
                "running Permit plugin \"E\": boom".into(),
                "E".into(),
                none,
            ),
        ),
    ];
    for (answers, want) in table {
        assert_eq!(run(answers), want);
    }
}

#[test]
fn default_spread_counts_replicas_on_nodes_that_do_not_fit() {
    let fw = framework_with(workload_listers());
    let replica = |name: &str, cpu: &str| {
        let mut p = owned(name, json!({"app": "web"}), "ReplicaSet", "web");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].resources =
                serde_json::from_value(json!({"requests": {"cpu": cpu}})).ok();
        }
        p
    };
    let in_zone = |name: &str, zone: &str| {
        node(
            name,
            "4",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
    };
    // Zone z1 already runs two replicas, on a node now full: the new one goes to z2.
    let mut full = in_zone("full", "z1");
    full.add_pod(replica("r1", "2"));
    full.add_pod(replica("r2", "2"));
    let nodes = vec![full, in_zone("b", "z1"), in_zone("c", "z2")];
    for tie in 0..3 {
        let mut state = CycleState::default();
        let got = schedule_pod(&fw, &mut state, &replica("new", "1"), &nodes, 0, tie);
        assert_eq!(got.expect("fits"), "c");
    }
}
