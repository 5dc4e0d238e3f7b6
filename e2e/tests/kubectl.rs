//! The real kubectl 1.32 against the API server, on both storage backends.

use e2e::Cluster;

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels: {app: web}
data:
  a: \"1\"
  b: \"2\"
";

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(e2e::Cluster::start(e2e::Backend::Embedded).await)
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(e2e::Cluster::start(e2e::Backend::Etcd).await)
                }
            )*
        }
    };
}

both_backends!(
    discovery_and_version,
    namespaces,
    apply_and_reapply,
    output_formats,
    labels_annotations_and_patches,
    selectors,
    delete_waits,
    dry_run_and_conflicts,
    watch_events,
    wait_for_jsonpath,
    secrets_round_trip,
    invalid_objects,
    protobuf_creates_and_tables,
    explain_and_strategic_apply,
);

fn discovery_and_version(c: Cluster) {
    let version = c.must(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"32\""), "{version}");
    let resources = c.must(&["api-resources"]);
    for line in [
        "pods                     po           v1",
        "deployments              deploy       apps/v1",
    ] {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().take(3).eq(cols.iter().copied())),
            "{line} missing from:\n{resources}"
        );
    }
    let versions = c.must(&["api-versions"]);
    for gv in ["apps/v1", "batch/v1", "v1", "rbac.authorization.k8s.io/v1"] {
        assert!(versions.lines().any(|l| l == gv), "{gv} in {versions}");
    }
}

fn namespaces(c: Cluster) {
    c.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
        &[],
    );
    let out = c.must(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(out, "Active");
    let all = c.must(&["get", "namespaces"]);
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "team-a",
    ] {
        assert!(all.contains(ns), "{ns} in {all}");
    }
    c.must(&["delete", "ns", "team-a", "--wait=false"]);
    let phase = c.must(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(
        phase, "Terminating",
        "content removal is the namespace controller's"
    );
    let denied = c.kubectl_stdin(&["apply", "-n", "team-a", "-f", "-"], Some(CONFIGMAP));
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains("because it is being terminated"),
        "{}",
        denied.stderr
    );
}

fn apply_and_reapply(c: Cluster) {
    let out = c.apply(CONFIGMAP, &[]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let data = c.must(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"1","b":"2"}"#);
    let changed = CONFIGMAP
        .replace("  b: \"2\"\n", "")
        .replace("\"1\"", "\"3\"");
    let out = c.apply(&changed, &[]);
    assert_eq!(out.trim(), "configmap/cfg configured");
    let data = c.must(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]);
    assert_eq!(
        data, r#"{"a":"3"}"#,
        "a key removed from the manifest disappears"
    );
    let out = c.apply(&changed, &[]);
    assert_eq!(out.trim(), "configmap/cfg unchanged");
}

fn output_formats(c: Cluster) {
    c.apply(CONFIGMAP, &[]);
    let json: serde_json::Value =
        serde_json::from_str(&c.must(&["get", "cm", "cfg", "-o", "json"])).expect("json");
    assert_eq!(json["kind"], "ConfigMap");
    assert_eq!(json["metadata"]["namespace"], "default");
    let yaml = c.must(&["get", "cm", "cfg", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("  a: \"1\""),
        "{yaml}"
    );
    let cols = c.must(&[
        "get",
        "cm",
        "-o",
        "custom-columns=NAME:.metadata.name,APP:.metadata.labels.app",
    ]);
    let rows: Vec<Vec<&str>> = cols
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, vec![vec!["NAME", "APP"], vec!["cfg", "web"]]);
    let wide = c.must(&["get", "cm", "-o", "wide"]);
    assert!(wide.starts_with("NAME"), "{wide}");
    assert!(wide.contains("cfg"));
    let name = c.must(&["get", "cm", "-o", "name"]);
    assert_eq!(name.trim(), "configmap/cfg");
}

fn labels_annotations_and_patches(c: Cluster) {
    c.apply(CONFIGMAP, &[]);
    c.must(&["label", "cm", "cfg", "tier=fe"]);
    c.must(&["annotate", "cm", "cfg", "note=hello"]);
    let meta = c.must(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}",
    ]);
    assert_eq!(meta, "fe hello");
    c.must(&["label", "cm", "cfg", "tier-"]);
    let labels = c.must(&["get", "cm", "cfg", "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(labels, r#"{"app":"web"}"#);
    c.must(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"m":"merge"}}"#,
    ]);
    c.must(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/j","value":"json"}]"#,
    ]);
    c.must(&["patch", "cm", "cfg", "-p", r#"{"data":{"s":"strategic"}}"#]);
    let data = c.must(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.data.m} {.data.j} {.data.s}",
    ]);
    assert_eq!(data, "merge json strategic");
}

fn selectors(c: Cluster) {
    for (name, tier) in [("a", "fe"), ("b", "be"), ("c", "fe")] {
        c.apply(
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\n"),
            &[],
        );
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"];
        full.extend_from_slice(args);
        c.must(&full)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&["-l", "tier=fe"]), ["a", "c"]);
    assert_eq!(names(&["-l", "tier!=fe"]), ["b"]);
    assert_eq!(names(&["-l", "tier in (be,fe)"]), ["a", "b", "c"]);
    assert_eq!(names(&["--field-selector", "metadata.name=b"]), ["b"]);
    assert_eq!(
        names(&["--field-selector", "metadata.name!=b", "-l", "tier"]),
        ["a", "c"]
    );
    let chunked = c.must(&["get", "cm", "--chunk-size=1", "-o", "name", "-l", "tier"]);
    assert_eq!(chunked.lines().count(), 3);
}

fn delete_waits(c: Cluster) {
    c.apply(CONFIGMAP, &[]);
    let out = c.must(&["delete", "cm", "cfg", "--wait=true"]);
    assert_eq!(out.trim(), "configmap \"cfg\" deleted");
    let gone = c.kubectl(&["get", "cm", "cfg"]);
    assert!(!gone.ok);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): configmaps \"cfg\" not found"
    );
    let ignored = c.must(&["delete", "cm", "cfg", "--ignore-not-found"]);
    assert_eq!(ignored.trim(), "");
}

fn dry_run_and_conflicts(c: Cluster) {
    let out = c.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], Some(CONFIGMAP));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("(server dry run)"), "{}", out.stdout);
    assert!(!c.kubectl(&["get", "cm", "cfg"]).ok, "nothing stored");
    c.apply(CONFIGMAP, &[]);
    let current = c.must(&["get", "cm", "cfg", "-o", "json"]);
    c.must(&["label", "cm", "cfg", "moved=yes"]);
    // Replacing with the resourceVersion read before the label change must fail.
    let stale = current.replace("\"a\": \"1\"", "\"a\": \"stale\"");
    let out = c.kubectl_stdin(&["replace", "-f", "-"], Some(&stale));
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error from server (Conflict)")
            && out.stderr.contains("the object has been modified"),
        "{}",
        out.stderr
    );
}

fn watch_events(c: Cluster) {
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            c.kubectl(&[
                "get",
                "cm",
                "-w",
                "--output-watch-events",
                "--request-timeout=8s",
                "-l",
                "app=web",
            ])
        });
        // The watch starts with a list; write only once kubectl is watching.
        c.wait_for_watchers("ConfigMap", 1);
        c.apply(CONFIGMAP, &[]);
        c.must(&["label", "cm", "cfg", "x=y"]);
        c.must(&["delete", "cm", "cfg"]);
        let run = watcher.join().expect("watcher thread");
        let events: Vec<(String, String)> = run
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                Some((cols.next()?.to_string(), cols.next()?.to_string()))
            })
            .collect();
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["ADDED", "MODIFIED", "DELETED"],
            "{}\n{}",
            run.stdout,
            run.stderr
        );
    });
}

fn wait_for_jsonpath(c: Cluster) {
    c.apply(CONFIGMAP, &[]);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            c.kubectl(&[
                "wait",
                "cm/cfg",
                "--for=jsonpath={.data.ready}=yes",
                "--timeout=30s",
            ])
        });
        c.wait_for_watchers("ConfigMap", 1);
        c.must(&[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"ready":"yes"}}"#,
        ]);
        let run = waiter.join().expect("waiter");
        assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.stdout.trim(), "configmap/cfg condition met");
    });
}

fn secrets_round_trip(c: Cluster) {
    c.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: hunter2\ndata:\n  user: YWRtaW4=\n",
        &[],
    );
    let out = c.must(&[
        "get",
        "secret",
        "s",
        "-o",
        "jsonpath={.data.password} {.data.user} {.type}",
    ]);
    assert_eq!(out, "aHVudGVyMg== YWRtaW4= Opaque");
    let string_data = c.must(&["get", "secret", "s", "-o", "jsonpath={.stringData}"]);
    assert_eq!(
        string_data, "",
        "stringData is merged into data, never stored"
    );
}

fn invalid_objects(c: Cluster) {
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n"),
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("is invalid")
            && out
                .stderr
                .contains("spec.containers[0].image: Required value"),
        "{}",
        out.stderr
    );
}

/// kubectl's `create <kind>` commands send protobuf bodies; `get` asks for server-side Tables.
fn protobuf_creates_and_tables(c: Cluster) {
    c.must(&["create", "configmap", "pb", "--from-literal=k=v"]);
    c.must(&[
        "create",
        "secret",
        "generic",
        "pbs",
        "--from-literal=password=s3cret",
    ]);
    c.must(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=2",
    ]);
    c.must(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    c.must(&["create", "job", "once", "--image=busybox:1.36"]);
    let data = c.must(&["get", "cm", "pb", "-o", "jsonpath={.data.k}"]);
    assert_eq!(data, "v");
    let secret = c.must(&["get", "secret", "pbs", "-o", "jsonpath={.data.password}"]);
    assert_eq!(secret, "czNjcmV0");

    let deploy = c.must(&["get", "deployments"]);
    let header: Vec<&str> = deploy
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploy}"
    );
    assert!(
        deploy.lines().nth(1).unwrap_or("").starts_with("web "),
        "{deploy}"
    );
    let wide = c.must(&["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert!(
        wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    let svc = c.must(&["get", "svc", "web"]);
    let header: Vec<&str> = svc
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    assert!(svc.contains("ClusterIP") && svc.contains("80/TCP"), "{svc}");
    let ns = c.must(&["get", "ns", "default"]);
    assert!(ns.lines().nth(1).unwrap_or("").contains("Active"), "{ns}");
    let labels = c.must(&["get", "deploy", "--show-labels"]);
    assert!(labels.contains("app=web"), "{labels}");
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        env:
        - {name: A, value: \"1\"}
        - {name: B, value: \"2\"}
      - name: sidecar
        image: busybox:1.36
";

/// `kubectl explain` reads the OpenAPI schemas; re-applying a changed Deployment sends a
/// strategic merge patch (merge by container name, `$setElementOrder`, deletions); a
/// `kind: List` manifest is validated against the protobuf `/openapi/v2`.
fn explain_and_strategic_apply(c: Cluster) {
    let explain = c.must(&["explain", "deployment.spec.replicas"]);
    assert!(explain.contains("FIELD: replicas <integer>"), "{explain}");
    assert!(explain.contains("Number of desired pods"), "{explain}");

    c.apply(DEPLOYMENT, &[]);
    let changed = DEPLOYMENT
        .replace(
            "image: busybox:1.36\n        env",
            "image: busybox:1.37\n        env",
        )
        .replace("        - {name: B, value: \"2\"}\n", "")
        .replace("      - name: sidecar\n        image: busybox:1.36\n", "");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "deployment.apps/web configured");
    assert!(!out.stderr.contains("Warning"), "{}", out.stderr);
    let got = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(
        got, "web busybox:1.37 A",
        "the sidecar and env B are gone, the image changed"
    );
    // `kubectl set env` and `rollout restart` are strategic merge patches too.
    c.must(&["set", "env", "deployment/web", "C=3"]);
    c.must(&["rollout", "restart", "deployment/web"]);
    let env = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(env, "A C");
    let restarted = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.metadata.annotations}",
    ]);
    assert!(
        restarted.contains("kubectl.kubernetes.io/restartedAt"),
        "{restarted}"
    );

    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l1}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: l2}\n";
    let out = c.apply(list, &[]);
    assert!(
        out.contains("configmap/l1 created") && out.contains("configmap/l2 created"),
        "{out}"
    );
}
