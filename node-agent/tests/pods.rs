//! Real pods: an in-process API server, a private containerd (the `testing::Containerd`
//! fixture) and the node agent's pod sync in this process. Each test creates pods bound to
//! its node and checks what a user would see in the pod status and inside the containers.
//! Waits are bounded only to detect hangs; nothing asserts on timing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Backend, Cluster};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use node_agent::agent::{Agent, AgentConfig};
use node_agent::cri::api;
use node_agent::node::Timing;
use node_agent::testing::Containerd;
use node_agent::Metrics;
use serde_json::json;

const HANG: u64 = 90;

fn client(c: &Cluster) -> Client {
    Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client")
}

struct TestNode {
    cluster: Cluster,
    containerd: Containerd,
    agent: Option<Agent>,
    name: String,
}

fn agent_config(cd: &Containerd, name: &str) -> AgentConfig {
    let mut cfg = cd.agent_config(name);
    cfg.timing = Timing {
        lease_duration_seconds: 40,
        renew_interval: Duration::from_secs(2),
        status_interval: Duration::from_secs(10),
    };
    cfg.sync_period = Duration::from_millis(300);
    cfg.initial_backoff = Duration::from_secs(2);
    cfg
}

async fn start_agent(cluster: &Cluster, cd: &Containerd, name: &str) -> Agent {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    node_agent::agent::start(client(cluster), agent_config(cd, name), metrics)
        .await
        .expect("agent starts")
}

impl TestNode {
    async fn start(name: &str) -> TestNode {
        let cluster = Cluster::start(Backend::Embedded).await;
        let containerd = Containerd::start().await.expect("containerd starts");
        let agent = start_agent(&cluster, &containerd, name).await;
        let n = TestNode {
            cluster,
            containerd,
            agent: Some(agent),
            name: name.to_string(),
        };
        n.wait_ready().await;
        n
    }

    fn client(&self) -> Client {
        client(&self.cluster)
    }

    async fn wait_ready(&self) {
        let nodes: Api<Node> = Api::all(self.client());
        let name = self.name.clone();
        eventually("the node to be Ready", || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move {
                let n = nodes.get(&name).await.ok()?;
                let ready = n
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            }
        })
        .await;
    }

    async fn create(&self, pod: serde_json::Value) -> Pod {
        let mut pod = pod;
        pod["spec"]["nodeName"] = json!(self.name);
        let pod: Pod = serde_json::from_value(pod).expect("pod json");
        let api: Api<Pod> = Api::namespaced(self.client(), "default");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    async fn pod_until<T>(&self, name: &str, what: &str, f: impl Fn(&Pod) -> Option<T>) -> T {
        let api: Api<Pod> = Api::namespaced(self.client(), "default");
        let mut last = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(HANG);
        loop {
            if let Ok(p) = api.get(name).await {
                if let Some(v) = f(&p) {
                    return v;
                }
                last = Some(p);
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} of pod {name}; last status: {}\ncontainerd log tail: {}",
                    serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap_or_default(),
                    tail(&self.containerd.containerd_log(), 2000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn running(&self, name: &str) -> Pod {
        self.pod_until(name, "phase Running and Ready", |p| {
            let st = p.status.as_ref()?;
            let ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (st.phase.as_deref() == Some("Running") && ready).then(|| p.clone())
        })
        .await
    }

    /// Runs a command in the pod's (only or named) container through CRI ExecSync.
    async fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> (i32, String, String) {
        let id = self.container_id(pod, container).await;
        let r = self
            .containerd
            .cri()
            .runtime
            .exec_sync(api::ExecSyncRequest {
                container_id: id,
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .expect("exec")
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    async fn container_id(&self, pod: &str, container: &str) -> String {
        self.pod_until(pod, "a container id", |p| {
            p.status
                .as_ref()?
                .container_statuses
                .iter()
                .flatten()
                .find(|c| {
                    c.name == container && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })?
                .container_id
                .as_ref()
                .map(|id| id.trim_start_matches("containerd://").to_string())
        })
        .await
    }

    async fn delete(&self, name: &str, grace: i64) {
        let api: Api<Pod> = Api::namespaced(self.client(), "default");
        api.delete(name, &DeleteParams::default().grace_period(grace as u32))
            .await
            .expect("delete");
        eventually("the pod to be gone from the API", || {
            let api = api.clone();
            let name = name.to_string();
            async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }

    /// Deletes every pod, stops the agent and containerd, and returns what was left behind.
    async fn finish(mut self) -> Vec<String> {
        let api: Api<Pod> = Api::namespaced(self.client(), "default");
        for p in api.list(&Default::default()).await.expect("list").items {
            let name = p.metadata.name.clone().unwrap_or_default();
            self.delete(&name, 0).await;
        }
        // Everything is torn down once CRI lists no sandbox of this node.
        let cri = self.containerd.cri();
        eventually("every sandbox removed", || {
            let mut cri = cri.clone();
            async move {
                let items = cri
                    .runtime
                    .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
                    .await
                    .ok()?
                    .into_inner()
                    .items;
                items.is_empty().then_some(())
            }
        })
        .await;
        let mut left = Vec::new();
        let logs = self.containerd.dir().join("pod-logs");
        if let Ok(d) = std::fs::read_dir(&logs) {
            left.extend(
                d.filter_map(Result::ok)
                    .map(|e| format!("log dir {}", e.path().display())),
            );
        }
        let pods_dir = self.containerd.dir().join("agent/pods");
        if let Ok(d) = std::fs::read_dir(&pods_dir) {
            left.extend(
                d.filter_map(Result::ok)
                    .map(|e| format!("pod dir {}", e.path().display())),
            );
        }
        let cg = self.containerd.cgroup_root().to_string();
        left.extend(
            node_agent::cgroups::leftovers(&cg)
                .into_iter()
                .map(|p| format!("cgroup {}", p.display())),
        );
        self.agent.take();
        left.extend(self.containerd.shutdown().await);
        left
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(HANG);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn busybox() -> &'static str {
    node_agent::images::BUSYBOX_IMAGE
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    // The fixtures hand out /24s: compare the first three octets.
    let net = cidr.split('/').next().unwrap_or("");
    let prefix = |s: &str| s.rsplit_once('.').map(|x| x.0.to_string());
    prefix(ip) == prefix(net)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_pod_runs_with_env_volumes_and_a_pod_ip() {
    let n = TestNode::start("cri-node-a").await;
    let client = n.client();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "settings"},
            "data": {"color": "blue", "app.conf": "port=8080\n"}
        }))
        .expect("cm"),
    )
    .await
    .expect("create cm");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "creds"},
                "stringData": {"password": "s3cret"}
            }))
            .expect("secret"),
        )
        .await
        .expect("create secret");
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "main",
                "image": busybox(),
                "command": ["sh", "-c", "echo started as $(MY_NAME); exec sleep 3600"],
                "env": [
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "GREETING", "value": "hello-$(MY_NAME)"},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
                ],
                "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "settings"}}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app"},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "info", "mountPath": "/etc/podinfo"},
                    {"name": "secret", "mountPath": "/etc/secret"}
                ]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "secret", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}}
            ]
        }
    }))
    .await;
    let pod = n.running("web").await;
    let st = pod.status.expect("status");
    let ip = st.pod_ip.clone().expect("podIP");
    assert!(
        in_cidr(&ip, n.containerd.pod_cidr()),
        "pod IP {ip} outside {}",
        n.containerd.pod_cidr()
    );
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        st.qos_class.as_deref(),
        Some("Guaranteed"),
        "limits alone default the requests"
    );
    let cs = &st.container_statuses.expect("container statuses")[0];
    assert!(cs.ready && cs.started == Some(true));
    assert_eq!(cs.restart_count, 0);
    assert!(cs.image_id.starts_with("sha256:"), "{}", cs.image_id);
    for ty in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        assert!(
            st.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == ty && c.status == "True"),
            "{ty} should be True"
        );
    }

    // The node lists its images for the scheduler's ImageLocality.
    let node: Node = Api::all(client.clone())
        .get("cri-node-a")
        .await
        .expect("node");
    let images = node.status.and_then(|s| s.images).unwrap_or_default();
    assert!(
        images
            .iter()
            .any(|i| i.names.iter().flatten().any(|n| n == busybox())),
        "{images:?}"
    );

    let (code, env, _) = n.exec("web", "main", &["env"]).await;
    assert_eq!(code, 0);
    let env: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env.get("MY_NAME"), Some(&"web"));
    assert_eq!(env.get("COLOR"), Some(&"blue"));
    assert_eq!(env.get("PASSWORD"), Some(&"s3cret"));
    assert_eq!(env.get("GREETING"), Some(&"hello-web"));
    assert_eq!(env.get("CM_color"), Some(&"blue"));
    assert_eq!(env.get("MEM"), Some(&"64"));
    let (_, files, _) = n
        .exec("web", "main", &["sh", "-c", "cat /etc/app/app.conf /etc/secret/pw; echo; cat /etc/podinfo/labels; echo; touch /scratch/ok && echo writable; touch /etc/app/x 2>/dev/null || echo read-only"])
        .await;
    assert!(files.contains("port=8080"), "{files}");
    assert!(files.contains("s3cret"), "{files}");
    assert!(files.contains("app=\"web\""), "{files}");
    assert!(files.contains("writable"), "{files}");
    assert!(
        files.contains("read-only"),
        "configMap volumes are read-only: {files}"
    );
    let (_, ip_out, _) = n
        .exec("web", "main", &["ip", "-4", "addr", "show", "eth0"])
        .await;
    assert!(
        ip_out.contains(&ip),
        "eth0 has the reported pod IP: {ip_out}"
    );
    // The memory limit reached the container's cgroup.
    let (_, limit, _) = n
        .exec(
            "web",
            "main",
            &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
        )
        .await;
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    // The log file has the container's output in CRI format.
    let logs = n.containerd.dir().join("pod-logs");
    let log = std::fs::read_dir(&logs)
        .expect("log dir")
        .filter_map(Result::ok)
        .map(|e| e.path().join("main/0.log"))
        .find(|p| p.exists())
        .expect("main/0.log");
    let text = std::fs::read_to_string(log).expect("read log");
    assert!(text.contains(" stdout F started as web"), "{text}");

    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_completion_and_missing_images() {
    let n = TestNode::start("cri-node-b").await;
    // Exits at once: restarted (the first restart immediately), then CrashLoopBackOff.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"containers": [{"name": "c", "image": busybox(), "command": ["sh", "-c", "echo try; exit 3"]}]}
    }))
    .await;
    // Run to completion.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"},
        "spec": {"restartPolicy": "Never", "initContainers": [{"name": "init", "image": busybox(), "command": ["true"]}],
                 "containers": [{"name": "c", "image": busybox(), "command": ["true"]}]}
    }))
    .await;
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": busybox(), "command": ["false"]}]}
    }))
    .await;
    // Not present and no registry: ErrImagePull, then ImagePullBackOff.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noimage"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/nothing:1.0"}]}
    }))
    .await;

    // Stopped and Failed once activeDeadlineSeconds runs out.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deadline"},
        "spec": {"activeDeadlineSeconds": 2, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": busybox(), "command": ["sleep", "3600"]}]}
    }))
    .await;

    n.pod_until("crasher", "CrashLoopBackOff after a restart", |p| {
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let waiting = cs.state.as_ref()?.waiting.as_ref()?;
        let last = cs.last_state.as_ref()?.terminated.as_ref()?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff")
            && cs.restart_count >= 1
            && last.exit_code == 3
            && waiting
                .message
                .as_deref()
                .is_some_and(|m| m.contains("back-off")))
        .then_some(())
    })
    .await;
    n.pod_until("crasher", "a second restart after the back-off", |p| {
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        (cs.restart_count >= 2).then_some(())
    })
    .await;
    n.pod_until("done", "phase Succeeded", |p| {
        let st = p.status.as_ref()?;
        let init = st.init_container_statuses.as_ref()?.first()?;
        let term = init.state.as_ref()?.terminated.as_ref()?;
        (st.phase.as_deref() == Some("Succeeded") && term.reason.as_deref() == Some("Completed"))
            .then_some(())
    })
    .await;
    n.pod_until("fails", "phase Failed", |p| {
        let st = p.status.as_ref()?;
        let cs = st.container_statuses.as_ref()?.first()?;
        let term = cs.state.as_ref()?.terminated.as_ref()?;
        (st.phase.as_deref() == Some("Failed") && term.exit_code == 1 && cs.restart_count == 0)
            .then_some(())
    })
    .await;
    n.pod_until("deadline", "phase Failed with DeadlineExceeded", |p| {
        let st = p.status.as_ref()?;
        let cs = st.container_statuses.as_ref()?.first()?;
        (st.phase.as_deref() == Some("Failed")
            && st.reason.as_deref() == Some("DeadlineExceeded")
            && cs.state.as_ref()?.terminated.is_some())
        .then_some(())
    })
    .await;
    let msg = n
        .pod_until("noimage", "ImagePullBackOff", |p| {
            let st = p.status.as_ref()?;
            let w = st
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .waiting
                .clone()?;
            (w.reason.as_deref() == Some("ImagePullBackOff")
                && st.phase.as_deref() == Some("Pending"))
            .then(|| w.message.unwrap_or_default())
        })
        .await;
    assert!(msg.contains("registry.invalid/nothing:1.0"), "{msg}");
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_sends_sigterm_and_agent_restart_readopts() {
    let mut n = TestNode::start("cri-node-c").await;
    let marker_dir = n.containerd.dir().join("marker");
    std::fs::create_dir_all(&marker_dir).expect("marker dir");
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "c", "image": busybox(),
                "command": ["sh", "-c", "trap 'echo got-term > /marker/term; exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "m", "mountPath": "/marker"}]
            }],
            "volumes": [{"name": "m", "hostPath": {"path": marker_dir.display().to_string(), "type": "Directory"}}]
        }
    }))
    .await;
    let before = n.container_id("graceful", "c").await;

    // The agent restarts: the container keeps running and is adopted, not restarted.
    n.agent.take();
    n.agent = Some(start_agent(&n.cluster, &n.containerd, &n.name).await);
    n.wait_ready().await;
    let api: Api<Pod> = Api::namespaced(n.client(), "default");
    let cid = n.container_id("graceful", "c").await;
    assert_eq!(cid, before, "the running container was re-adopted");
    let pod = api.get("graceful").await.expect("pod");
    assert_eq!(
        pod.status.and_then(|s| s.container_statuses).expect("cs")[0].restart_count,
        0
    );

    // containerd restarts: nothing is lost, the agent carries on with the same container.
    n.containerd.restart().await.expect("containerd restarts");
    n.running("graceful").await;
    assert_eq!(n.container_id("graceful", "c").await, before);

    n.delete("graceful", 30).await;
    let term = std::fs::read_to_string(marker_dir.join("term")).expect("the container saw SIGTERM");
    assert_eq!(term.trim(), "got-term");
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let n = TestNode::start("cri-node-d").await;
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web", "image": busybox(),
                    "command": ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                },
                {
                    "name": "live", "image": busybox(),
                    "command": ["sh", "-c", "touch /tmp/alive; exec sleep 3600"],
                    "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
                }
            ]
        }
    }))
    .await;
    let statuses = |p: &Pod| -> Option<HashMap<String, (bool, i32, bool)>> {
        Some(
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .map(|c| {
                    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                    (c.name.clone(), (c.ready, c.restart_count, running))
                })
                .collect(),
        )
    };
    // Both run, but `web` is not ready until /ready exists: the pod is Running, not Ready.
    n.pod_until("probed", "both containers running, web not ready", |p| {
        let s = statuses(p)?;
        let ready_cond = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False");
        (s.get("web")? == &(false, 0, true) && s.get("live")?.2 && ready_cond).then_some(())
    })
    .await;
    let (code, _, err) = n.exec("probed", "web", &["touch", "/www/ready"]).await;
    assert_eq!(code, 0, "{err}");
    n.running("probed").await;

    // The exec liveness probe fails once the file is gone: `live` is restarted.
    let (code, _, _) = n.exec("probed", "live", &["rm", "/tmp/alive"]).await;
    assert_eq!(code, 0);
    n.pod_until(
        "probed",
        "live restarted after its liveness probe failed",
        |p| {
            let s = statuses(p)?;
            let (_, restarts, running) = *s.get("live")?;
            (restarts >= 1 && running).then_some(())
        },
    )
    .await;
    // `web` was untouched.
    let pod: Pod = Api::namespaced(n.client(), "default")
        .get("probed")
        .await
        .expect("pod");
    assert_eq!(statuses(&pod).expect("statuses")["web"].1, 0);

    // Readiness falls when the check fails again.
    let (code, _, _) = n.exec("probed", "web", &["rm", "/www/ready"]).await;
    assert_eq!(code, 0);
    n.pod_until("probed", "web not ready again", |p| {
        let s = statuses(p)?;
        (!s.get("web")?.0).then_some(())
    })
    .await;
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A small HTTP(S) server on a free loopback port for probes and hooks to call. It records
/// one line per connection — the request line, or `TLS-ClientHello` when a client opened a
/// plain listener with a TLS handshake — plus whatever `note` adds, and answers what `reply`
/// returns for the request line.
struct Listener {
    port: u16,
    seen: Arc<parking_lot::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reply = Arc<dyn Fn(&str) -> (String, String) + Send + Sync>;

impl Listener {
    async fn start(tls: bool, reply: Reply) -> Listener {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let acceptor = tls.then(|| {
            let ca = pki::Ca::generate("probe-test-ca").expect("ca");
            let cert = ca
                .issue_serving(
                    "probe-test",
                    &[],
                    &["127.0.0.1".parse().expect("ip")],
                    Duration::from_secs(3600),
                )
                .expect("serving cert");
            tokio_rustls::TlsAcceptor::from(
                pki::server_config(&cert.cert_pem, &cert.key_pem).expect("tls config"),
            )
        });
        let seen: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            /// Records the request before answering it, so a client that has its answer
            /// always finds the request recorded.
            async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                mut s: S,
                reply: &Reply,
                record: &parking_lot::Mutex<Vec<String>>,
            ) {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.first() == Some(&0x16) {
                        // A TLS handshake record: answer in plain HTTP, as a plain server does.
                        record.lock().push("TLS-ClientHello".into());
                        let _ = s
                            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let line = text.lines().next().unwrap_or("").to_string();
                let (response, note) = reply(&line);
                record.lock().push(format!("{line}{note}"));
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            }
            loop {
                let Ok((conn, _)) = tcp.accept().await else {
                    return;
                };
                let (acceptor, reply, record) = (acceptor.clone(), reply.clone(), record.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => match a.accept(conn).await {
                            Ok(s) => serve(s, &reply, &record).await,
                            Err(e) => record.lock().push(format!("TLS handshake failed: {e}")),
                        },
                        None => serve(conn, &reply, &record).await,
                    }
                });
            }
        });
        Listener { port, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

fn http_response(status: &str, extra_headers: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{extra_headers}Content-Length: 0\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_skip_verification_and_need_tls() {
    let n = TestNode::start("cri-node-e").await;
    // A self-signed HTTPS server whose `/` redirects to `/healthz` on the same host.
    let tls = Listener::start(
        true,
        Arc::new(|line: &str| {
            let r = if line.starts_with("GET /healthz ") {
                http_response("200 OK", "")
            } else {
                http_response("302 Found", "Location: /healthz\r\n")
            };
            (r, String::new())
        }),
    )
    .await;
    // A plain HTTP server that would say 200 to any HTTP request.
    let plain = Listener::start(
        false,
        Arc::new(|_: &str| (http_response("200 OK", ""), String::new())),
    )
    .await;
    let probe = |port: u16| {
        json!({"httpGet": {"scheme": "HTTPS", "path": "/", "port": port},
               "periodSeconds": 1, "failureThreshold": 1})
    };
    // hostNetwork: the pod IP is the node's 127.0.0.1, where both listeners are.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tls-probed"},
        "spec": {
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "tls", "image": busybox(), "command": ["sleep", "3600"],
                 "readinessProbe": probe(tls.port)},
                {"name": "plain", "image": busybox(), "command": ["sleep", "3600"],
                 "readinessProbe": probe(plain.port)}
            ]
        }
    }))
    .await;
    let ready = |p: &Pod, name: &str| -> Option<bool> {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.ready)
    };
    n.pod_until("tls-probed", "the HTTPS-probed container ready", |p| {
        ready(p, "tls")?.then_some(())
    })
    .await;
    let seen = tls.seen();
    assert!(
        seen.iter().any(|l| l.starts_with("GET / HTTP/1.1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("GET /healthz HTTP/1.1")),
        "the same-host redirect was followed over TLS: {seen:?}"
    );
    // The probe of `plain` spoke TLS to the plain server, several times, and never got ready.
    eventually("three TLS handshakes at the plain listener", || {
        let hellos = plain
            .seen()
            .iter()
            .filter(|l| *l == "TLS-ClientHello")
            .count();
        async move { (hellos >= 3).then_some(()) }
    })
    .await;
    let pod: Pod = Api::namespaced(n.client(), "default")
        .get("tls-probed")
        .await
        .expect("pod");
    assert_eq!(ready(&pod, "plain"), Some(false), "{:?}", plain.seen());
    assert!(
        !plain.seen().iter().any(|l| l.starts_with("GET ")),
        "no plain HTTP request: {:?}",
        plain.seen()
    );
    let cond = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(cond.as_deref(), Some("False"));
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_over_http() {
    let n = TestNode::start("cri-node-f").await;
    let marker_dir = n.containerd.dir().join("hook-marker");
    std::fs::create_dir_all(&marker_dir).expect("marker dir");
    let term = marker_dir.join("term");
    // The preStop target notes whether the container had seen SIGTERM when the hook came.
    let hook = {
        let term = term.clone();
        Listener::start(
            false,
            Arc::new(move |_: &str| {
                (
                    http_response("200 OK", ""),
                    format!(" term-before-hook={}", term.exists()),
                )
            }),
        )
        .await
    };
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooked"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "c", "image": busybox(),
                "command": ["sh", "-c", "trap 'echo got-term > /marker/term; exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "m", "mountPath": "/marker"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo post > /tmp/post-started"]}},
                    "preStop": {"httpGet": {"host": "127.0.0.1", "port": hook.port, "path": "/shutdown?from=prestop"}}
                }
            }, {
                // An HTTPS hook whose server speaks plain HTTP: retried over HTTP, as kubelet.
                "name": "fallback", "image": busybox(),
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                "lifecycle": {
                    "postStart": {"httpGet": {"scheme": "HTTPS", "host": "127.0.0.1", "port": hook.port, "path": "/poststart"}},
                    "preStop": {"sleep": {"seconds": 1}}
                }
            }],
            "volumes": [{"name": "m", "hostPath": {"path": marker_dir.display().to_string(), "type": "Directory"}}]
        }
    }))
    .await;
    // postStart ran before the container counted as started.
    n.running("hooked").await;
    let (code, out, _) = n.exec("hooked", "c", &["cat", "/tmp/post-started"]).await;
    assert_eq!((code, out.trim()), (0, "post"));
    let seen: Vec<String> = hook
        .seen()
        .into_iter()
        .filter(|l| !l.contains("/shutdown"))
        .collect();
    assert_eq!(
        seen,
        [
            "TLS-ClientHello",
            "GET /poststart HTTP/1.1 term-before-hook=false"
        ],
        "TLS first, then plain HTTP"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(n.client(), "default");
    let reasons = |name: &'static str, reason: &'static str| {
        let events = events.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
        }
    };
    let fallback = eventually("a LifecycleHTTPFallback event", || {
        reasons("hooked", "LifecycleHTTPFallback")
    })
    .await;
    assert_eq!(
        fallback.message.as_deref(),
        Some(format!("request to HTTPS lifecycle hook 127.0.0.1:{} got HTTP response, retry with HTTP succeeded", hook.port).as_str())
    );

    // A postStart hook that cannot connect (nothing listens on port 1 of the pod IP) kills
    // the container, which restarts, and says why in a FailedPostStartHook Event.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-hook"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": busybox(), "command": ["sleep", "3600"],
                "lifecycle": {"postStart": {"httpGet": {"port": 1, "path": "/never"}}}
            }]
        }
    }))
    .await;
    n.pod_until(
        "bad-hook",
        "a restart after the failed postStart hook",
        |p| {
            let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            (cs.restart_count >= 1).then_some(())
        },
    )
    .await;
    let event = eventually("a FailedPostStartHook event", || {
        reasons("bad-hook", "FailedPostStartHook")
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let pod: Pod = Api::namespaced(n.client(), "default")
        .get("bad-hook")
        .await
        .expect("pod");
    let ready = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.first().map(|c| c.ready));
    assert_eq!(ready, Some(false));

    // A postStart hook that never returns does not keep the pod from being deleted.
    n.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stuck-hook"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": busybox(),
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "m", "mountPath": "/marker"}],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "touch /marker/stuck; exec sleep 3600"]}}}
            }],
            "volumes": [{"name": "m", "hostPath": {"path": marker_dir.display().to_string(), "type": "Directory"}}]
        }
    }))
    .await;
    let stuck = marker_dir.join("stuck");
    eventually("the endless postStart hook running", || {
        let there = stuck.exists();
        async move { there.then_some(()) }
    })
    .await;
    n.delete("stuck-hook", 1).await;

    // Deleting `hooked` calls its preStop hook first, then sends SIGTERM.
    n.delete("hooked", 30).await;
    let seen: Vec<String> = hook
        .seen()
        .into_iter()
        .filter(|l| l.contains("/shutdown"))
        .collect();
    assert_eq!(
        seen,
        ["GET /shutdown?from=prestop HTTP/1.1 term-before-hook=false"],
        "one preStop call, before the container was stopped"
    );
    let got = std::fs::read_to_string(&term).expect("the container saw SIGTERM after the hook");
    assert_eq!(got.trim(), "got-term");
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A copy of the busybox OCI tarball under another name and with its own image config (a
/// label), so containerd sees a distinct image id that shares busybox's layer.
fn derive_image(
    busybox_tar: &std::path::Path,
    name: &str,
    work: &std::path::Path,
) -> std::path::PathBuf {
    use std::process::Command;
    let dir = work.join(name.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&dir).expect("layout dir");
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(ok.success());
    let blobs = dir.join("blobs/sha256");
    let read = |digest: &str| -> serde_json::Value {
        let file = blobs.join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(file).expect("blob")).expect("blob json")
    };
    let write = |value: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).expect("json");
        let tmp = dir.join("blob.tmp");
        std::fs::write(&tmp, &bytes).expect("write blob");
        let out = Command::new("sha256sum")
            .arg(&tmp)
            .output()
            .expect("sha256sum");
        let digest = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("digest")
            .to_string();
        std::fs::rename(&tmp, blobs.join(&digest)).expect("rename blob");
        (format!("sha256:{digest}"), bytes.len())
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
            .expect("index json");
    let mut manifest = read(
        index["manifests"][0]["digest"]
            .as_str()
            .expect("manifest digest"),
    );
    let mut config = read(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    config["config"]["Labels"] = json!({"coxswain.test/variant": name});
    let (digest, size) = write(&config);
    manifest["config"]["digest"] = json!(digest);
    manifest["config"]["size"] = json!(size);
    let (digest, size) = write(&manifest);
    let entry = &mut index["manifests"][0];
    entry["digest"] = json!(digest);
    entry["size"] = json!(size);
    entry["annotations"]["io.containerd.image.name"] = json!(name);
    entry["annotations"]["org.opencontainers.image.ref.name"] = json!(name
        .rsplit_once(':')
        .map(|(_, tag)| tag)
        .unwrap_or("latest"));
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index");
    let tarball = work.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .expect("tar");
    assert!(ok.success());
    tarball
}

/// Image filesystem numbers a test sets.
struct FakeFs(Arc<parking_lot::Mutex<node_agent::image_gc::FsStats>>);

impl node_agent::image_gc::FsUsage for FakeFs {
    fn image_fs(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<node_agent::image_gc::FsStats, node_agent::Error>>
    {
        let stats = *self.0.lock();
        Box::pin(async move { Ok(stats) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_removes_unused_images_least_recently_used_first() {
    use node_agent::image_gc::{FsStats, ImageGc, ImageGcPolicy};
    let n = TestNode::start("cri-node-g").await;
    let work = tempfile::tempdir().expect("tempdir");
    node_agent::images::build_local_images(work.path()).expect("images");
    let busybox_tar = work.path().join("busybox.tar");
    for name in ["docker.io/library/gc-a:1", "docker.io/library/gc-b:1"] {
        let tarball = derive_image(&busybox_tar, name, work.path());
        let names = node_agent::images::import(n.containerd.socket(), &tarball)
            .await
            .expect("import");
        assert_eq!(names, [name]);
    }
    let sleeper = |name: &str, image: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "3600"]
            }]}
        })
    };
    n.create(sleeper("web", busybox())).await;
    n.create(sleeper("user-b", "docker.io/library/gc-b:1"))
        .await;
    n.running("web").await;
    n.running("user-b").await;

    let cri = n.containerd.cri();
    let images = || {
        let mut cri = cri.clone();
        async move {
            cri.images
                .list_images(api::ListImagesRequest { filter: None })
                .await
                .expect("list images")
                .into_inner()
                .images
        }
    };
    let tags = |list: &[api::Image]| -> Vec<String> {
        let mut t: Vec<String> = list.iter().flat_map(|i| i.repo_tags.clone()).collect();
        t.sort();
        t
    };
    // The real source measures containerd's image filesystem.
    let real = node_agent::image_gc::FsUsage::image_fs(&node_agent::image_gc::CriFsUsage::new(
        cri.clone(),
    ))
    .await
    .expect("image fs usage");
    assert!(
        real.capacity_bytes > 0 && real.available_bytes <= real.capacity_bytes,
        "{real:?}"
    );
    let stats = Arc::new(parking_lot::Mutex::new(FsStats {
        capacity_bytes: 1000,
        available_bytes: 500,
    }));
    let policy = ImageGcPolicy {
        min_age: Duration::ZERO,
        ..ImageGcPolicy::default()
    };
    let gc =
        ImageGc::new(cri.clone(), policy.clone(), Arc::new(FakeFs(stats.clone()))).expect("gc");
    // Below the high threshold (50 %) nothing goes; gc-b is noted as in use.
    gc.detect().await.expect("detect");
    let done = gc.collect().await.expect("collect");
    assert_eq!((done.usage_percent, done.removed.len()), (50, 0));

    // gc-b's pod goes: both gc images are unused now, gc-a never was.
    n.delete("user-b", 1).await;
    let size_a = images()
        .await
        .iter()
        .find(|i| i.repo_tags.iter().any(|t| t == "docker.io/library/gc-a:1"))
        .expect("gc-a listed")
        .size;
    // 85 % used, and exactly gc-a's size to free to get down to 80 %.
    *stats.lock() = FsStats {
        capacity_bytes: 20 * size_a,
        available_bytes: 3 * size_a,
    };
    let done = gc.collect().await.expect("collect");
    assert_eq!(done.usage_percent, 85);
    assert_eq!(done.removed, ["docker.io/library/gc-a:1"], "{done:?}");
    let now = tags(&images().await);
    assert!(!now.iter().any(|t| t.contains("gc-a")), "{now:?}");
    assert!(now.iter().any(|t| t.contains("gc-b")), "{now:?}");

    // --image-gc-high-threshold=100: nothing is removed even at 99 %.
    *stats.lock() = FsStats {
        capacity_bytes: 1000 * size_a,
        available_bytes: 10 * size_a,
    };
    let off = ImageGc::new(
        cri.clone(),
        ImageGcPolicy {
            high_threshold_percent: 100,
            ..policy
        },
        Arc::new(FakeFs(stats.clone())),
    )
    .expect("gc");
    assert!(off.collect().await.expect("collect").removed.is_empty());

    // Far over the threshold: every unused image goes, but not busybox (web runs it) and not
    // the sandbox image (no container lists it).
    let done = gc.collect().await.expect("collect");
    assert_eq!(done.removed, ["docker.io/library/gc-b:1"], "{done:?}");
    assert!(done.bytes_freed < done.bytes_to_free);
    assert_eq!(
        tags(&images().await),
        [busybox(), node_agent::images::PAUSE_IMAGE],
        "the in-use and sandbox images stay"
    );
    // The node still starts pods after the collection.
    n.create(sleeper("after", busybox())).await;
    n.running("after").await;
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The pod cgroup's limit files: (memory limit, CPU quota, the pod cgroup's directories in the
/// hierarchies they live in). cgroup v1: `memory.limit_in_bytes`, `cpu.cfs_quota_us`; v2-only
/// host: `memory.max`, `cpu.max`.
fn pod_cgroup_limits(rel: &str) -> (String, String, Vec<std::path::PathBuf>) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .trim()
            .to_string()
    };
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        (
            read(dir.join("memory.max")),
            read(dir.join("cpu.max")),
            vec![dir],
        )
    } else {
        let (mem, cpu) = (root.join("memory").join(rel), root.join("cpu").join(rel));
        (
            read(mem.join("memory.limit_in_bytes")),
            read(cpu.join("cpu.cfs_quota_us")),
            vec![mem, cpu],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_cgroup_carries_pod_level_limits_and_goes_with_the_pod() {
    let n = TestNode::start("cri-node-h").await;
    let container = |name: &str, cpu: &str, memory: &str| {
        json!({
            "name": name, "image": busybox(), "command": ["sleep", "3600"],
            "resources": {"limits": {"cpu": cpu, "memory": memory}}
        })
    };
    let pod = n
        .create(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "limited"},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [container("a", "100m", "64Mi"), container("b", "200m", "32Mi")]
            }
        }))
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    n.running("limited").await;
    let rel = format!(
        "{}/pod{uid}",
        n.containerd.cgroup_root().trim_start_matches('/')
    );
    let (memory, quota, dirs) = pod_cgroup_limits(&rel);
    assert_eq!(memory, "100663296", "64Mi + 32Mi");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(
        quota,
        if v2 { "30000 100000" } else { "30000" },
        "100m + 200m over a 100 ms period"
    );

    n.delete("limited", 0).await;
    eventually("the pod cgroup removed", || {
        let dirs = dirs.clone();
        async move { dirs.iter().all(|d| !d.exists()).then_some(()) }
    })
    .await;
    let left = n.finish().await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
