//! `kubectl apply --server-side` (kubectl 1.32) against the API server: field ownership,
//! conflicts and `--force-conflicts`, and managedFields as kubectl shows them.

use e2e::{Backend, Cluster};

fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
"
    )
}

fn ssa(c: &Cluster, yaml: &str, extra: &[&str]) -> e2e::Run {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    c.kubectl_stdin(&args, Some(yaml))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_apply_owns_conflicts_and_forces() {
    let c = Cluster::start(Backend::Embedded).await;

    let first = ssa(&c, &deployment(2), &[]);
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(
        first.stdout.trim(),
        "deployment.apps/web serverside-applied"
    );
    let rv = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let again = ssa(&c, &deployment(2), &[]);
    assert!(again.ok, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(
        again.stdout.trim(),
        "deployment.apps/web serverside-applied"
    );
    let rv_again = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(rv, rv_again, "an unchanged apply writes nothing");

    // `kubectl scale` takes replicas over; applying another value then conflicts. kubectl
    // 1.32 sends no fieldManager for scale, so the manager is its user agent's program name:
    // the binary's file name.
    c.must(&["scale", "deploy", "web", "--replicas=5"]);
    let scaler = e2e::kubectl_path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kubectl")
        .to_string();
    let shown = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(shown.contains("manager: kubectl\n"), "{shown}");
    assert!(shown.contains("operation: Apply"), "{shown}");
    assert!(
        shown.contains(&format!("manager: {scaler}\n")),
        "{scaler}: {shown}"
    );
    assert!(shown.contains("operation: Update"), "{shown}");
    assert!(shown.contains("f:replicas: {}"), "{shown}");
    let hidden = c.must(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!hidden.contains("managedFields"), "{hidden}");

    let conflict = ssa(&c, &deployment(3), &[]);
    assert!(!conflict.ok, "{}", conflict.stdout);
    assert!(
        conflict.stderr.contains(&format!(
            "Apply failed with 1 conflict: conflict with \"{scaler}\" using apps/v1: .spec.replicas"
        )),
        "{}",
        conflict.stderr
    );
    let replicas = c.must(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "5");

    let forced = ssa(&c, &deployment(3), &["--force-conflicts"]);
    assert!(forced.ok, "{}\n{}", forced.stdout, forced.stderr);
    let replicas = c.must(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "3");
    let managers = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert_eq!(managers, "kubectl", "the scaler owned nothing else");

    // A second applier adds a container; the first one's stays.
    let sidecar = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: sidecar
        image: busybox
";
    let run = ssa(&c, sidecar, &["--field-manager=sidecar-injector"]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let names = c.must(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert_eq!(names, "nginx sidecar");
}

/// A client-side-applied object moves to server-side apply: kubectl migrates the
/// `kubectl-client-side-apply` ownership to its apply manager (a JSON patch of
/// managedFields), so a key later left out of the manifest is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_side_apply_upgrades_to_server_side() {
    let c = Cluster::start(Backend::Embedded).await;
    let cm = "apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: \"1\"
  b: \"2\"
";
    let out = c.apply(cm, &[]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let managers = c.must(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert_eq!(managers, "kubectl-client-side-apply");

    let run = ssa(&c, cm, &[]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let managers = c.must(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    // kubectl keeps the last-applied annotation current under `kubectl-last-applied`.
    assert_eq!(
        managers, "kubectl kubectl-last-applied",
        "ownership migrated"
    );

    let run = ssa(&c, &cm.replace("  b: \"2\"\n", ""), &[]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let data = c.must(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"1"}"#);
}
