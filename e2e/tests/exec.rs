//! `kubectl exec`, `attach` and `port-forward` end to end: the real kubectl 1.32 → the API
//! server's pods/exec|attach|portforward → the node agent's streaming server → containerd's
//! CRI streaming server, with a real pod in a private containerd
//! (`node_agent::testing::Containerd`). Everything on 127.0.0.1, free ports.
//!
//! kubectl 1.32 first asks for WebSocket `v5.channel.k8s.io` (exec/attach) and the KEP-4006
//! tunnel `SPDY/3.1+portforward.k8s.io` (port-forward). containerd 1.6 speaks neither; the node
//! agent serves both itself on top of containerd's SPDY, and these tests check kubectl uses them
//! without falling back, that forcing kubectl onto SPDY still works, and that the Python
//! client's WebSocket v4 (relayed to containerd as is) still works.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::Cluster;
use node_agent::cri::{api, Cri};
use node_agent::images::BUSYBOX_IMAGE;
use node_agent::lookup::{ContainerRef, PodLookup};
use node_agent::testing::Containerd;

/// container name → CRI id, for the one pod `default/p1`, whose logs are in `log_dir`.
struct Table {
    sandbox: String,
    containers: HashMap<String, String>,
    log_dir: std::path::PathBuf,
}

impl PodLookup for Table {
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        if (namespace, pod) != ("default", "p1") {
            return None;
        }
        Some(ContainerRef {
            pod_uid: "uid-p1".into(),
            sandbox_id: Some(self.sandbox.clone()),
            container_id: Some(self.containers.get(container)?.clone()),
            log_path: Some(self.log_dir.join(format!("{container}.log"))),
            previous_log_path: None,
        })
    }
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        ((namespace, pod) == ("default", "p1")).then(|| self.sandbox.clone())
    }
}

/// Polls `cond` every 50 ms until it returns `Some` or `limit` passes.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bridge network on the fixture's own bridge and CIDR; waits for NetworkReady.
async fn network(cxd: &Containerd) {
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cxexec",
        "plugins": [
            {
                "type": "bridge", "bridge": cxd.bridge(), "isGateway": true, "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cxd.pod_cidr()}]],
                    "dataDir": cxd.dir().join("cni/ipam"),
                }
            },
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        cxd.cni_conf_dir().join("10-cxexec.conflist"),
        serde_json::to_vec_pretty(&conflist).expect("json"),
    )
    .expect("write conflist");
    let cri = cxd.cri();
    eventually(Duration::from_secs(20), "NetworkReady", || {
        let cri = cri.clone();
        async move { cri.ready().await.ok()?.ok() }
    })
    .await;
}

/// Runs pod `default/p1` with `main` (busybox httpd on :8080 serving `hello-pf`) and `ticker`
/// (prints `tick N` every second); returns the lookup table.
async fn run_pod(cxd: &Containerd) -> Table {
    let cri: Cri = cxd.cri();
    let mut rt = cri.runtime.clone();
    let log_dir = cxd.dir().join("logs/p1");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let sandbox_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "p1".into(),
            uid: "uid-p1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "p1".into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod-p1", cxd.cgroup_root()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e:?}\n{}", cxd.containerd_log()))
        .into_inner()
        .pod_sandbox_id;
    let mut containers = HashMap::new();
    for (name, script) in [
        (
            "main",
            "echo hello-pf > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
        ),
        (
            "ticker",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ),
    ] {
        let id = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(api::ImageSpec {
                        image: BUSYBOX_IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into(), script.into()],
                    log_path: format!("{name}.log"),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e:?}\n{}", cxd.containerd_log()))
            .into_inner()
            .container_id;
        rt.start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e:?}\n{}", cxd.containerd_log()));
        containers.insert(name.to_string(), id);
    }
    Table {
        sandbox,
        containers,
        log_dir,
    }
}

/// exec and port-forward with the official Python client (WebSocket v4 for both).
const PYTHON_STREAMS: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
out = stream(api.connect_get_namespaced_pod_exec, "p1", "default", container="main",
             command=["echo", "py-ws"], stderr=False, stdin=False, stdout=True, tty=False)
print("exec", repr(out))
pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports="8080")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: p1\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
print("portforward", b"hello-pf" in data)
"#;

/// kubectl's switches for its WebSocket streaming clients; `false` makes it go straight to SPDY.
const SPDY_ONLY: &[(&str, &str)] = &[
    ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
];

fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_env(c, args, stdin, &[])
}

fn kubectl_env(c: &Cluster, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(e2e::kubectl_path())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", c.dir())
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kubectl -v=4 port-forward pod/p1 :8080` with `env`: checks a GET of httpd through it and
/// returns kubectl's log (stderr) once it has been stopped.
async fn port_forward_get(c: &Cluster, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(e2e::kubectl_path())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["-v=4", "port-forward", "pod/p1", ":8080"])
        .env_remove("KUBECONFIG")
        .env("HOME", c.dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl port-forward");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("kubectl port-forward prints where it listens");
    // "Forwarding from 127.0.0.1:40123 -> 8080"
    let port: u16 = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let body = eventually(
        Duration::from_secs(30),
        "httpd through port-forward",
        || async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                conn.write_all(b"GET /index.html HTTP/1.0\r\nHost: p1\r\n\r\n")
                    .ok()?;
                let mut answer = String::new();
                conn.read_to_string(&mut answer).ok()?;
                answer.contains("hello-pf").then_some(answer)
            })
            .await
            .ok()
            .flatten()
        },
    )
    .await;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    log.join().expect("stderr reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec_attach_port_forward_through_containerd() {
    let cxd = Containerd::start().await.expect("containerd fixture");
    network(&cxd).await;
    let table = run_pod(&cxd).await;
    let ticker = table.containers["ticker"].clone();
    let (agent, _server) = node_agent::server::serve(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(table),
        Some(cxd.cri()),
    )
    .await
    .expect("node agent streaming server");

    let c = Cluster::start(e2e::Backend::Embedded).await;
    c.apply(
        "apiVersion: v1
kind: Node
metadata:
  name: exec-node
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
spec:
  nodeName: exec-node
  containers:
  - {name: main, image: busybox}
  - {name: ticker, image: busybox}
---
apiVersion: v1
kind: Pod
metadata:
  name: pending
spec:
  containers:
  - {name: main, image: busybox}
",
        &[],
    );
    let status = format!(
        "{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"}}],\
         \"daemonEndpoints\":{{\"kubeletEndpoint\":{{\"Port\":{}}}}}}}}}",
        agent.port()
    );
    c.must(&[
        "patch",
        "node",
        "exec-node",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    // kubectl port-forward refuses pods that are not Running.
    c.must(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        "{\"status\":{\"phase\":\"Running\"}}",
    ]);

    // exec over WebSocket v5, served by the node agent: kubectl must not fall back to SPDY.
    let out = kubectl(
        &c,
        &["-v=4", "exec", "p1", "-c", "main", "--", "echo", "hi"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(
        !text(&out.stderr).contains("fallback"),
        "kubectl fell back from WebSocket to SPDY:\n{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("The subprotocol is v5.channel.k8s.io"),
        "kubectl did not negotiate WebSocket v5:\n{}",
        text(&out.stderr)
    );
    // The same with kubectl forced onto SPDY (relayed to containerd unchanged), and then over
    // WebSocket v5: stdout, stderr, the exit code (channel 3's status), and stdin ending in EOF
    // (v5's close of stdin, which `cat` must see to exit, while its output still comes back).
    for (env, how) in [(SPDY_ONLY, "SPDY"), (&[][..], "WebSocket v5")] {
        let out = kubectl_env(
            &c,
            &[
                "-v=4",
                "exec",
                "p1",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; echo oops >&2; exit 3",
            ],
            None,
            env,
        );
        let log = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{how}: {log}");
        assert_eq!(text(&out.stdout), "out\n", "{how}: {log}");
        assert!(log.contains("oops"), "{how}: {log}");
        assert!(!log.contains("RemoteCommand fallback"), "{how}: {log}");
        // kubectl logs the WebSocket subprotocol only when it speaks WebSocket.
        assert_eq!(
            log.contains("The subprotocol is v5.channel.k8s.io"),
            env.is_empty(),
            "{how}: {log}"
        );
        let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let out = kubectl_env(
            &c,
            &[
                "exec",
                "-i",
                "p1",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "cat; echo after-eof",
            ],
            Some(&input),
            env,
        );
        assert!(out.status.success(), "{how}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("{input}after-eof\n"),
            "{how}: {}",
            text(&out.stderr)
        );
    }
    // kubectl defaults to the first container itself.
    let out = kubectl(&c, &["exec", "p1", "--", "hostname"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "p1\n");
    // kubectl cp: tar through exec's stdin and stdout, binary-safe.
    let local = c.dir().join("upload.bin");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).expect("write upload");
    let out = kubectl(
        &c,
        &[
            "cp",
            local.to_str().expect("utf-8 path"),
            "p1:/tmp/upload.bin",
            "-c",
            "main",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = c.dir().join("download.bin");
    let out = kubectl(
        &c,
        &[
            "cp",
            "p1:/tmp/upload.bin",
            back.to_str().expect("utf-8 path"),
            "-c",
            "main",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read(&back).expect("downloaded") == payload,
        "kubectl cp round trip"
    );

    // A container the pod does not have is the API server's 400.
    let out = kubectl(&c, &["exec", "p1", "-c", "nope", "--", "true"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod p1"),
        "{}",
        text(&out.stderr)
    );

    let out = kubectl(&c, &["exec", "pending", "--", "true"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pod pending does not have a host assigned"),
        "{}",
        text(&out.stderr)
    );

    // attach (WebSocket v5, served by the node agent): the running ticker's output.
    let (mut child, lines) = c.kubectl_lines(&["attach", "p1", "-c", "ticker"]);
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a line from kubectl attach within 30 s");
    assert!(line.starts_with("tick "), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();

    // port-forward through the KEP-4006 tunnel the node agent serves: kubectl negotiates it and
    // does not fall back to plain SPDY.
    let log = port_forward_get(&c, &[]).await;
    assert!(
        log.contains("negotiated protocol: portforward.k8s.io"),
        "kubectl did not use the WebSocket tunnel:\n{log}"
    );
    assert!(
        !log.contains("fallback"),
        "kubectl fell back to SPDY:\n{log}"
    );
    // And plain SPDY, relayed to containerd unchanged.
    let log = port_forward_get(&c, SPDY_ONLY).await;
    assert!(!log.contains("negotiated protocol"), "{log}");

    // The Python client speaks pure WebSocket (`v4.channel.k8s.io`), which containerd accepts:
    // the relays splice a WebSocket session, not only SPDY.
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_STREAMS)
        .arg(c.kubeconfig())
        .output()
        .expect("python3 runs (scripts/test.sh installs the kubernetes package)");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        "exec 'py-ws\\n'\nportforward True\n",
        "{}",
        text(&out.stderr)
    );

    // `kubectl logs -f` of a container containerd runs follows it until it stops.
    let (mut child, lines) = c.kubectl_lines(&["logs", "-f", "p1", "-c", "ticker", "--tail=1"]);
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a line from kubectl logs -f within 30 s");
    assert!(line.starts_with("tick "), "{line:?}");
    let first: u32 = line[5..].parse().expect("tick number");
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a new line from kubectl logs -f within 30 s");
    assert_eq!(line, format!("tick {}", first + 1));
    cxd.cri()
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: ticker,
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("kubectl logs -f") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl logs -f still running 30 s after its container stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    drop(c);
    let problems = cxd.shutdown().await;
    assert!(
        problems.is_empty(),
        "containerd teardown left: {problems:#?}"
    );
}
