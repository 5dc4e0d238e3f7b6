//! The multi-node suite: one [`LocalCluster`] (3 etcd members, 2 API servers, 2 schedulers and
//! 2 controller managers leader-elected, 3 nodes each in its own network namespace with its own
//! containerd and pod CIDR) driven with the real kubectl 1.32 as admin.
//!
//! One test function shares the cluster across scenarios (bringing it up costs ~20 s); the
//! scenarios run in an order where the ones that break something come last, and each states
//! what it proves. Needs root, etcd, containerd, runc, the CNI plugins and busybox-static
//! (scripts/test.sh installs them) and the cox-* binaries: the test builds them with cargo
//! when `target/<profile>` lacks them. Never skips. Whatever happens, the cluster is torn down
//! (`Drop`), and the test asserts that a clean teardown leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use e2e::multinode::{self, LocalCluster, Options};
use node_agent::images::BUSYBOX_IMAGE;

const NS: &str = "mn";

/// A pod as the scenarios see it.
#[derive(Clone, Debug)]
struct Pod {
    name: String,
    node: String,
    ip: String,
    phase: String,
    deleting: bool,
    /// `pod-template-hash` (Deployment pods).
    hash: String,
}

fn must(c: &LocalCluster, args: &[&str]) -> String {
    let r = c.kubectl(args);
    assert!(
        r.ok,
        "kubectl {} failed:\n{}\n{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r.stdout
}

fn apply(c: &LocalCluster, yaml: &str) {
    let r = c.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(r.ok, "kubectl apply failed:\n{}\n{}", r.stdout, r.stderr);
}

fn wait_for<T>(limit: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    multinode::poll(Duration::from_secs(limit), what, f).unwrap_or_else(|e| panic!("{e}"))
}

/// Pods in `ns` matching `selector` (`app=web`).
fn pods(c: &LocalCluster, ns: &str, selector: &str) -> Vec<Pod> {
    let r = c.kubectl(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}|{.spec.nodeName}|{.status.podIP}|{.status.phase}|{.metadata.deletionTimestamp}|{.metadata.labels.pod-template-hash}{\"\\n\"}{end}",
    ]);
    if !r.ok {
        return Vec::new();
    }
    r.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Pod {
                name: f[0].to_string(),
                node: f.get(1).unwrap_or(&"").to_string(),
                ip: f.get(2).unwrap_or(&"").to_string(),
                phase: f.get(3).unwrap_or(&"").to_string(),
                deleting: !f.get(4).unwrap_or(&"").is_empty(),
                hash: f.get(5).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

/// Waits until exactly `n` pods that are not terminating match, all Running with an IP, and
/// every one passes `ok`; returns them. (Pods evicted from a dead node stay terminating: no
/// agent confirms their deletion.)
fn wait_running(
    c: &LocalCluster,
    ns: &str,
    selector: &str,
    n: usize,
    limit: u64,
    ok: impl Fn(&Pod) -> bool,
) -> Vec<Pod> {
    let mut last = Vec::new();
    let found = multinode::poll(
        Duration::from_secs(limit),
        &format!("{n} Running pods {selector}"),
        || {
            let p: Vec<Pod> = pods(c, ns, selector)
                .into_iter()
                .filter(|p| !p.deleting)
                .collect();
            let done = p.len() == n
                && p.iter()
                    .all(|p| p.phase == "Running" && !p.ip.is_empty() && ok(p));
            last = p.clone();
            done.then_some(p)
        },
    );
    found.unwrap_or_else(|e| panic!("{e}; last seen: {last:#?}"))
}

fn nodes_of(p: &[Pod]) -> BTreeSet<String> {
    p.iter().map(|p| p.node.clone()).collect()
}

fn node_ready(c: &LocalCluster, node: &str) -> String {
    c.kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .stdout
    .trim()
    .to_string()
}

fn wait_nodes_ready(c: &LocalCluster) {
    for i in 1..=c.nodes() {
        let name = c.node_name(i);
        wait_for(60, &format!("{name} Ready"), || {
            (node_ready(c, &name) == "True").then_some(())
        });
    }
}

fn web_yaml(replicas: u32, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - name: web
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving $(hostname) && exec httpd -f -p 8080 -h /www"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

/// The cox-* binaries of this test's profile (`target/debug` next to the test executable),
/// brought up to date with `cargo build` (a no-op when they are: `cargo test --workspace`
/// already built them; `cargo test -p e2e` does not).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/multinode-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "apiserver", "-p", "scheduler"])
        .args(["-p", "controller-manager", "-p", "node-agent", "--bins"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the cox-* binaries failed");
    for b in multinode::BINARIES {
        assert!(dir.join(b).is_file(), "{} missing", dir.join(b).display());
    }
    dir
}

#[test]
fn multinode_cluster() {
    let dir = tempfile::Builder::new()
        .prefix("cxm-")
        .tempdir_in("/tmp")
        .expect("temp dir")
        .keep();
    let (subnet, claim) = multinode::claim_subnet().expect("a free 10.99.X.0/24");
    let prefix = format!("cxm{}", base36(std::process::id()));
    let opts = Options::new(dir.clone(), bin_dir(), &prefix, subnet);
    let mut cluster = match LocalCluster::up(opts) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&claim);
            panic!("bringing the cluster up failed: {e}");
        }
    };
    cluster.set_claim(claim);

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenarios(&mut cluster);
    }));
    if let Err(panic) = outcome {
        for name in [
            "apiserver-0",
            "apiserver-1",
            "scheduler-0",
            "scheduler-1",
            "controller-manager-0",
            "controller-manager-1",
            "node-agent-1",
            "node-agent-2",
            "node-agent-3",
        ] {
            eprintln!("--- {name} ---\n{}", cluster.log_tail(name));
        }
        // Dropping the cluster tears it down.
        drop(cluster);
        std::panic::resume_unwind(panic);
    }
    let left = cluster.down();
    assert!(left.is_empty(), "teardown left: {left:#?}");
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn scenarios(c: &mut LocalCluster) {
    must(c, &["create", "namespace", NS]);
    let nodes: BTreeSet<String> = (1..=c.nodes()).map(|i| c.node_name(i)).collect();

    // 0. Proves: every node joined with the bootstrap token over TLS: one CSR per node, made
    //    by the token's `system:bootstrap:<id>` user, approved and issued by the controller
    //    manager, for that node's `system:node:<name>`; the token is gone afterwards.
    let csrs = must(
        c,
        &[
            "get",
            "csr",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}|{.spec.username}|{.status.conditions[0].type}|{.status.certificate}{\"\\n\"}{end}",
        ],
    );
    for node in &nodes {
        let line = csrs
            .lines()
            .find(|l| l.starts_with(&format!("node-csr-{node}-")))
            .unwrap_or_else(|| panic!("no CSR for {node}: {csrs}"));
        let f: Vec<&str> = line.split('|').collect();
        assert!(f[1].starts_with("system:bootstrap:"), "{line}");
        assert_eq!(f[2], "Approved", "{line}");
        assert!(!f[3].is_empty(), "not issued: {line}");
    }
    let tokens = must(c, &["get", "secret", "-n", "kube-system", "-o", "name"]);
    assert!(!tokens.contains("bootstrap-token-"), "{tokens}");

    // 1. Proves: a Deployment rolls out over all three nodes (scheduler spreading across real
    //    nodes, three containerds, each node's CNI in its own namespace).
    apply(c, &web_yaml(6, "1"));
    must(
        c,
        &[
            "rollout",
            "status",
            "-n",
            NS,
            "deploy/web",
            "--timeout=120s",
        ],
    );
    let web = wait_running(c, NS, "app=web", 6, 60, |_| true);
    assert_eq!(nodes_of(&web), nodes, "pods not on every node: {web:#?}");
    for p in &web {
        let i: usize = p.node.trim_start_matches("node-").parse().unwrap();
        assert!(
            p.ip.starts_with(&format!("10.244.{i}.")),
            "{} on {} has IP {} outside the node's pod CIDR",
            p.name,
            p.node,
            p.ip
        );
    }

    // 2. Proves: pods on different nodes reach each other by pod IP (the routes between the
    //    node namespaces), in every direction around the ring of nodes.
    let by_node: BTreeMap<String, Pod> = web.iter().map(|p| (p.node.clone(), p.clone())).collect();
    let ring: Vec<&Pod> = by_node.values().collect();
    for k in 0..ring.len() {
        let (from, to) = (ring[k], ring[(k + 1) % ring.len()]);
        let url = format!("http://{}:8080/index.html", to.ip);
        // Not `wget -T`: Debian's busybox-static 1.35 wget segfaults with it.
        let got = must(
            c,
            &[
                "exec", "-n", NS, &from.name, "--", "timeout", "15", "wget", "-qO-", &url,
            ],
        );
        assert_eq!(
            got.trim(),
            to.name,
            "{} ({}) fetching from {} ({})",
            from.name,
            from.node,
            to.name,
            to.node
        );
    }

    // 3. Proves: logs and exec reach a pod on every node (API server → that node's agent over
    //    TLS at its address inside its namespace), through either API server.
    for (k, p) in ring.iter().enumerate() {
        let logs = must(c, &["logs", "-n", NS, &p.name]);
        assert!(
            logs.contains(&format!("serving {}", p.name)),
            "logs: {logs}"
        );
        let r = c.kubectl_on(
            k % 2,
            &["exec", "-n", NS, &p.name, "--", "cat", "/www/index.html"],
        );
        assert!(r.ok, "exec on {}: {}", p.node, r.stderr);
        assert_eq!(r.stdout.trim(), p.name);
    }

    // 4. Proves: scale up and down converge to exactly the requested number of Running pods.
    must(c, &["scale", "-n", NS, "deploy/web", "--replicas=9"]);
    wait_running(c, NS, "app=web", 9, 120, |_| true);
    must(c, &["scale", "-n", NS, "deploy/web", "--replicas=4"]);
    wait_running(c, NS, "app=web", 4, 120, |_| true);

    // 5. Proves: a template change rolls out a new ReplicaSet and `rollout undo` brings the
    //    previous template back (pods of the first revision's hash again).
    // The template hashes of the web pods that are not terminating.
    let hash_of = |c: &LocalCluster| -> BTreeSet<String> {
        pods(c, NS, "app=web")
            .into_iter()
            .filter(|p| !p.deleting)
            .map(|p| p.hash)
            .collect()
    };
    let first_hash = hash_of(c);
    assert_eq!(first_hash.len(), 1, "{first_hash:?}");
    must(c, &["set", "env", "-n", NS, "deploy/web", "VERSION=2"]);
    must(
        c,
        &[
            "rollout",
            "status",
            "-n",
            NS,
            "deploy/web",
            "--timeout=120s",
        ],
    );
    let second = wait_running(c, NS, "app=web", 4, 120, |p| !first_hash.contains(&p.hash));
    let second_hash = hash_of(c);
    assert!(
        second_hash.is_disjoint(&first_hash),
        "{second_hash:?} {second:#?}"
    );
    let history = must(c, &["rollout", "history", "-n", NS, "deploy/web"]);
    assert!(history.contains('2'), "history: {history}");
    must(c, &["rollout", "undo", "-n", NS, "deploy/web"]);
    must(
        c,
        &[
            "rollout",
            "status",
            "-n",
            NS,
            "deploy/web",
            "--timeout=120s",
        ],
    );
    // Pods of the first revision again.
    wait_running(c, NS, "app=web", 4, 120, |p| first_hash.contains(&p.hash));
    let env = must(
        c,
        &[
            "get",
            "deploy",
            "-n",
            NS,
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ],
    );
    assert_eq!(env.trim(), "1");

    // 6. Proves: a Job's pods run to completion on the nodes and the Job is marked Complete.
    apply(
        c,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: count, namespace: {NS}}}
spec:
  completions: 3
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "echo counted on $(hostname)"]
"#
        ),
    );
    must(
        c,
        &[
            "wait",
            "-n",
            NS,
            "--for=condition=complete",
            "job/count",
            "--timeout=120s",
        ],
    );
    let succeeded = must(
        c,
        &[
            "get",
            "job",
            "-n",
            NS,
            "count",
            "-o",
            "jsonpath={.status.succeeded}",
        ],
    );
    assert_eq!(succeeded.trim(), "3");
    let logs = must(c, &["logs", "-n", NS, "job/count"]);
    assert!(logs.contains("counted on count-"), "job logs: {logs}");

    // 7. Proves: deleting a namespace with mixed content (a Deployment's pods on several nodes,
    //    a bare pod, a Job, a Service, ConfigMap, Secret, ServiceAccount, Role, RoleBinding)
    //    removes everything, pods stopped on their nodes, and the namespace itself goes.
    must(c, &["create", "namespace", "mixed"]);
    apply(
        c,
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: d, namespace: mixed}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: d}}}}
  template:
    metadata: {{labels: {{app: d}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {BUSYBOX_IMAGE}, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bare, namespace: mixed, labels: {{app: bare}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {BUSYBOX_IMAGE}, command: ["sleep", "3600"]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: j, namespace: mixed}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: c, image: {BUSYBOX_IMAGE}, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: mixed}}
spec:
  selector: {{app: d}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm, namespace: mixed}}
data: {{k: v}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec, namespace: mixed}}
stringData: {{k: v}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: sa, namespace: mixed}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: r, namespace: mixed}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: rb, namespace: mixed}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}}
subjects: [{{kind: ServiceAccount, name: sa, namespace: mixed}}]
"#
        ),
    );
    wait_running(c, "mixed", "app=d", 3, 120, |_| true);
    wait_running(c, "mixed", "app=bare", 1, 60, |_| true);
    wait_running(c, "mixed", "job-name=j", 1, 60, |_| true);
    must(c, &["delete", "namespace", "mixed", "--wait=false"]);
    wait_for(180, "namespace mixed gone", || {
        let r = c.kubectl(&["get", "namespace", "mixed"]);
        (!r.ok && r.stderr.contains("NotFound")).then_some(())
    });
    let r = c.kubectl(&[
        "get",
        "all,cm,secret,sa,role,rolebinding",
        "-n",
        "mixed",
        "-o",
        "name",
    ]);
    assert!(r.stdout.trim().is_empty(), "left in mixed: {}", r.stdout);

    // 8. Proves: draining a node evicts its pods and the Deployment recreates them on the other
    //    nodes; the cordoned node gets nothing new; uncordon makes it schedulable again.
    let drained = "node-3";
    must(
        c,
        &[
            "drain",
            drained,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
    );
    let after = wait_running(c, NS, "app=web", 4, 120, |p| p.node != drained);
    assert!(!nodes_of(&after).contains(drained));
    must(c, &["uncordon", drained]);

    // ---- From here on, something breaks. ----

    // 9. Proves: with one API server killed, kubectl on the other keeps working (reads and
    //    writes, and the controllers behind it act on them); the killed one comes back on the
    //    same port and the nodes never lost Ready.
    c.kill("apiserver-1").unwrap();
    let r = c.kubectl_on(1, &["get", "--raw", "/readyz"]);
    assert!(!r.ok, "apiserver-1 still answers");
    let r = c.kubectl_on(0, &["create", "configmap", "-n", NS, "while-one-down"]);
    assert!(r.ok, "{}", r.stderr);
    let r = c.kubectl_on(0, &["scale", "-n", NS, "deploy/web", "--replicas=5"]);
    assert!(r.ok, "{}", r.stderr);
    c.restart("apiserver-1").unwrap();
    wait_running(c, NS, "app=web", 5, 120, |_| true);
    // A controller manager or scheduler behind the killed server may have lost its lease and
    // exited (by design); bring such processes back as standbys.
    c.restart_exited(&[]).unwrap();
    wait_nodes_ready(c);
    let r = c.kubectl_on(1, &["get", "configmap", "-n", NS, "while-one-down"]);
    assert!(
        r.ok,
        "the other server does not see the write: {}",
        r.stderr
    );

    // 10. Proves: with one of three etcd members stopped, writes continue (quorum 2 of 3), and
    //     the member rejoins.
    c.stop("etcd-2").unwrap();
    wait_for(60, "a write with etcd-2 down", || {
        c.kubectl(&["create", "configmap", "-n", NS, "etcd-one-down"])
            .ok
            .then_some(())
    });
    for k in 0..5 {
        let name = format!("etcd-down-{k}");
        must(c, &["create", "configmap", "-n", NS, &name]);
    }
    must(c, &["scale", "-n", NS, "deploy/web", "--replicas=6"]);
    wait_running(c, NS, "app=web", 6, 120, |_| true);
    c.restart("etcd-2").unwrap();
    wait_for(60, "etcd-2 healthy again", || {
        c.etcd_healthy(2).then_some(())
    });

    // 11. Proves: killing the leading scheduler hands scheduling to the standby (it takes the
    //     Lease and binds new pods); each pod is bound once (exactly the replicas exist).
    let leader = wait_for(60, "a scheduler leader", || c.leader("kube-scheduler"));
    c.kill(&leader).unwrap();
    apply(
        c,
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: after-scheduler, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: after-scheduler}}}}
  template:
    metadata: {{labels: {{app: after-scheduler}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {BUSYBOX_IMAGE}, command: ["sleep", "3600"]}}
"#
        ),
    );
    wait_running(c, NS, "app=after-scheduler", 3, 120, |_| true);
    let new_leader = wait_for(30, "a new scheduler leader", || c.leader("kube-scheduler"));
    assert_ne!(new_leader, leader);
    c.restart(&leader).unwrap();

    // 12. Proves: killing the leading controller manager hands the controllers to the standby
    //     (it takes the Lease and reconciles a scale-up), and the takeover creates no duplicate
    //     pods (exactly the replicas, still so after the standby's first full resync).
    let leader = wait_for(60, "a controller-manager leader", || {
        c.leader("kube-controller-manager")
    });
    c.kill(&leader).unwrap();
    must(c, &["scale", "-n", NS, "deploy/web", "--replicas=7"]);
    wait_running(c, NS, "app=web", 7, 120, |_| true);
    let new_leader = wait_for(30, "a new controller-manager leader", || {
        c.leader("kube-controller-manager")
    });
    assert_ne!(new_leader, leader);
    wait_running(c, NS, "app=after-scheduler", 3, 30, |_| true);
    wait_for(60, "the ReplicaSets' status to count 7 replicas", || {
        let rs = c.kubectl(&[
            "get",
            "rs",
            "-n",
            NS,
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.replicas}",
        ]);
        let total: u32 = rs
            .stdout
            .split_whitespace()
            .filter_map(|s| s.parse::<u32>().ok())
            .sum();
        (total == 7).then_some(())
    });
    // Nothing was scaled down here, so a duplicate would still exist (or be terminating).
    let all = pods(c, NS, "app=web");
    assert_eq!(all.len(), 7, "duplicate pods after the takeover: {all:#?}");
    c.restart(&leader).unwrap();

    // 13. Proves: a node whose agent dies goes NotReady (Unknown) after the grace period, its
    //     pods are evicted after the unreachable toleration and the Deployment's replacements
    //     run on the remaining nodes.
    let before = pods(c, NS, "app=web");
    // The node with the most web pods.
    let i = (1..=c.nodes())
        .max_by_key(|i| {
            let name = c.node_name(*i);
            before.iter().filter(|p| p.node == name).count()
        })
        .unwrap();
    let victim = c.node_name(i);
    let victim = victim.as_str();
    assert!(
        before.iter().any(|p| p.node == victim),
        "no web pod on {victim} to evict: {before:#?}"
    );
    c.kill(&format!("node-agent-{i}")).unwrap();
    wait_for(90, &format!("{victim} not Ready"), || {
        let s = node_ready(c, victim);
        (s == "Unknown" || s == "False").then_some(())
    });
    wait_running(c, NS, "app=web", 7, 120, |p| p.node != victim);
    let gone = before.iter().filter(|p| p.node == victim);
    let now: BTreeSet<String> = pods(c, NS, "app=web")
        .into_iter()
        .filter(|p| !p.deleting)
        .map(|p| p.name)
        .collect();
    for p in gone {
        assert!(!now.contains(&p.name), "{} was not evicted", p.name);
    }
}
