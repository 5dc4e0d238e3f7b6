//! `kubectl logs` end to end: the real kubectl 1.32 → the API server's `pods/log` proxy → a
//! node agent's streaming server (`node_agent::server`) reading CRI-format log files through a
//! fixed-table pod lookup. Everything on 127.0.0.1, free ports.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::Cluster;
use node_agent::lookup::{ContainerRef, PodLookup};

/// (namespace, pod, container) → what the runtime would report; counts lookups (a log
/// follower makes one per poll).
struct Table(HashMap<(String, String, String), ContainerRef>, AtomicUsize);

impl PodLookup for Table {
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
    }
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        self.0
            .keys()
            .any(|(n, p, _)| n == namespace && p == pod)
            .then(|| format!("sandbox-{pod}"))
    }
}

/// A CRI log file with `lines` (one record each, the first split into two partial records).
fn cri_log(path: &Path, lines: &[&str]) {
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        let ts = format!("2026-11-29T03:40:{:02}.000000001Z", i + 1);
        if i == 0 && l.len() > 2 {
            let (a, b) = l.split_at(2);
            text.push_str(&format!("{ts} stdout P {a}\n{ts} stdout F {b}\n"));
        } else {
            text.push_str(&format!("{ts} stderr F {l}\n"));
        }
    }
    std::fs::write(path, text).expect("write log");
}

fn container(dir: &Path, file: &str, previous: Option<&str>) -> ContainerRef {
    ContainerRef {
        pod_uid: "uid".into(),
        sandbox_id: Some("sandbox".into()),
        container_id: Some(format!("id-{file}")),
        log_path: Some(dir.join(file)),
        previous_log_path: previous.map(|p| dir.join(p)),
    }
}

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: logs-node
";

const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p1
spec:
  nodeName: logs-node
  containers:
  - {name: main, image: busybox}
---
apiVersion: v1
kind: Pod
metadata:
  name: p2
spec:
  nodeName: logs-node
  containers:
  - {name: a, image: busybox}
  - {name: b, image: busybox}
---
apiVersion: v1
kind: Pod
metadata:
  name: pending
spec:
  containers:
  - {name: main, image: busybox}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_through_the_node_agent() {
    let c = Cluster::start(e2e::Backend::Embedded).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let dir = logs.path();
    cri_log(
        &dir.join("main.log"),
        &["line 1", "line 2", "line 3", "line 4", "line 5"],
    );
    cri_log(&dir.join("a.log"), &["from a"]);
    cri_log(&dir.join("b.log"), &["b one", "b two", "b three"]);
    cri_log(&dir.join("b-prev.log"), &["b before the restart"]);
    let mut table = HashMap::new();
    let key = |p: &str, c: &str| ("default".to_string(), p.to_string(), c.to_string());
    table.insert(key("p1", "main"), container(dir, "main.log", None));
    table.insert(key("p2", "a"), container(dir, "a.log", None));
    table.insert(key("p2", "b"), container(dir, "b.log", Some("b-prev.log")));
    let table = Arc::new(Table(table, AtomicUsize::new(0)));
    let (agent, _server) =
        node_agent::server::serve("127.0.0.1:0".parse().expect("addr"), table.clone(), None)
            .await
            .expect("node agent streaming server");

    c.apply(NODE, &[]);
    // Before the node publishes its endpoint there is nothing to proxy to.
    c.apply(PODS, &[]);
    let run = c.kubectl(&["logs", "p1"]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("has not published a kubelet endpoint port"),
        "{}",
        run.stderr
    );
    let status = format!(
        "{{\"status\":{{\"addresses\":[{{\"type\":\"Hostname\",\"address\":\"logs-node\"}},\
         {{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"}}],\
         \"daemonEndpoints\":{{\"kubeletEndpoint\":{{\"Port\":{}}}}}}}}}",
        agent.port()
    );
    c.must(&[
        "patch",
        "node",
        "logs-node",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);

    assert_eq!(
        c.must(&["logs", "p1"]),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );
    assert_eq!(
        c.must(&["logs", "p2", "-c", "b", "--tail=2"]),
        "b two\nb three\n"
    );
    let stamped = c.must(&["logs", "p1", "--tail=1", "--timestamps"]);
    assert_eq!(stamped, "2026-11-29T03:40:05.000000001Z line 5\n");
    assert_eq!(
        c.must(&["logs", "p2", "-c", "b", "--previous"]),
        "b before the restart\n"
    );
    assert_eq!(c.must(&["logs", "p1", "--limit-bytes=9"]), "line 1\nli");

    // kubectl picks the first container itself and says so.
    let run = c.kubectl(&["logs", "p2"]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "from a\n");
    assert!(
        run.stderr
            .contains("Defaulted container \"a\" out of: a, b"),
        "{}",
        run.stderr
    );
    // Without kubectl's defaulting, the API server's own rule applies.
    let run = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/p2/log"]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("a container name must be specified for pod p2, choose one of: [a b]"),
        "{}",
        run.stderr
    );
    let run = c.kubectl(&["logs", "p2", "-c", "nope"]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("container nope is not valid for pod p2"),
        "{}",
        run.stderr
    );
    let run = c.kubectl(&["logs", "p1", "--previous"]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains(
            "Error from server (BadRequest): previous terminated container \"main\" in pod \"p1\" not found"
        ),
        "{}",
        run.stderr
    );
    // Upstream streams nothing for a pod that is not on a node yet.
    assert_eq!(c.must(&["logs", "pending"]), "");

    // `kubectl logs -f`: lines appended after it started arrive while it runs.
    let mut child = Command::new(e2e::kubectl_path())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["logs", "-f", "p1", "--tail=1"])
        .env_remove("KUBECONFIG")
        .env("HOME", c.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a line from kubectl logs -f within 30 s")
    };
    assert_eq!(next(), "line 5");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("main.log"))
        .expect("open log");
    f.write_all(b"2026-11-29T03:41:00Z stdout F live 1\n")
        .expect("append");
    assert_eq!(next(), "live 1");
    f.write_all(b"2026-11-29T03:41:01Z stdout P live \n2026-11-29T03:41:01Z stdout F 2\n")
        .expect("append");
    assert_eq!(next(), "live 2");
    let _ = child.kill();
    let _ = child.wait();

    // With kubectl gone, the API server drops its connection to the node agent, whose
    // follower then stops: lookups (one per poll) cease.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = table.1.load(Ordering::SeqCst);
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the node agent kept following after kubectl logs -f was killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = table.1.load(Ordering::SeqCst);
        if now != last {
            last = now;
            quiet_since = std::time::Instant::now();
        }
    }
}
