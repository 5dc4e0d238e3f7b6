//! Admission a user notices: LimitRange defaults and limits, ResourceQuota counts that stay
//! exact under concurrent creates and refuse the create past the limit with upstream's
//! message.

use std::time::{Duration, Instant};

use e2e::{Backend, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use kube::api::{Api, DeleteParams, PostParams};

fn write(cluster: &Cluster, name: &str, yaml: &str) -> String {
    let path = cluster.dir().join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    path.to_str().expect("utf-8").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_ranges_default_and_limit_pods() {
    let cluster = Cluster::start(Backend::Embedded).await;
    tokio::task::spawn_blocking(move || {
        let ranges = write(
            &cluster,
            "limits.yaml",
            "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 200m, memory: 64Mi}\n    defaultRequest: {cpu: 100m, memory: 32Mi}\n    max: {cpu: \"1\"}\n",
        );
        cluster.must(&["create", "-f", &ranges]);
        let pod = write(
            &cluster,
            "plain.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        );
        cluster.must(&["create", "-f", &pod]);
        let got = cluster.must(&["get", "pod", "plain", "-o", "jsonpath={.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.requests.memory} {.metadata.annotations.kubernetes\\.io/limit-ranger}"]);
        assert!(got.starts_with("200m 32Mi LimitRanger plugin set: "), "{got}");
        let greedy = write(
            &cluster,
            "greedy.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: greedy\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      limits: {cpu: \"2\"}\n",
        );
        let refused = cluster.kubectl(&["create", "-f", &greedy]);
        assert!(!refused.ok);
        assert!(
            refused.stderr.contains(r#"pods "greedy" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#),
            "{refused:?}"
        );
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_counts_stay_exact_under_concurrent_creates() {
    let cluster = Cluster::start(Backend::Embedded).await;
    let client = kube::Client::try_from(kube::Config::new(cluster.url().parse().expect("url")))
        .expect("client");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "small"},
        "spec": {"hard": {"configmaps": "30", "pods": "1", "requests.cpu": "1"}},
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");

    // 50 creates at once against a limit of 30: exactly 30 succeed.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let creates = (0..50).map(|i| {
        let api = configmaps.clone();
        tokio::spawn(async move {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()},
            }))
            .expect("configmap");
            api.create(&PostParams::default(), &cm).await
        })
    });
    let results = futures::future::join_all(creates).await;
    let mut created = 0;
    for r in results {
        match r.expect("task") {
            Ok(_) => created += 1,
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(
                    status.message.contains("exceeded quota: small, requested: configmaps=1, used: configmaps=30, limited: configmaps=30"),
                    "{status:?}"
                );
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(created, 30);
    let used = |q: &ResourceQuota, k: &str| {
        q.status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .and_then(|u| u.get(k))
            .map(|v| v.0.clone())
    };
    let q = quotas.get("small").await.expect("quota");
    assert_eq!(used(&q, "configmaps").as_deref(), Some("30"));
    assert_eq!(
        configmaps
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        30
    );

    // Deleting gives the usage back.
    for i in 0..5 {
        let name = format!("cm-{i}");
        let _ = configmaps.delete(&name, &DeleteParams::default()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = quotas.get("small").await.expect("quota");
        let listed = configmaps
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len();
        if used(&q, "configmaps") == Some(listed.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "used {:?} vs {listed} listed",
            used(&q, "configmaps")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Compute quotas need pods to declare what they use.
    let c = std::sync::Arc::new(cluster);
    let cluster = c.clone();
    tokio::task::spawn_blocking(move || {
        let pod = write(
            &cluster,
            "undeclared.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: undeclared\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        );
        let refused = cluster.kubectl(&["create", "-f", &pod]);
        assert!(
            refused.stderr.contains(r#"pods "undeclared" is forbidden: failed quota: small: must specify requests.cpu for: c"#),
            "{refused:?}"
        );
        let declared = |name: &str| {
            write(
                &cluster,
                &format!("{name}.yaml"),
                &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {{cpu: 500m}}\n"),
            )
        };
        cluster.must(&["create", "-f", &declared("first")]);
        let second = cluster.kubectl(&["create", "-f", &declared("second")]);
        assert!(
            second.stderr.contains("exceeded quota: small, requested: pods=1, used: pods=1, limited: pods=1"),
            "{second:?}"
        );
        let described = cluster.must(&["describe", "resourcequota", "small"]);
        assert!(described.contains("requests.cpu") && described.contains("500m"), "{described}");
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_classes() {
    let cluster = Cluster::start(Backend::Embedded).await;
    tokio::task::spawn_blocking(move || {
        // The system classes exist in every cluster.
        let classes = cluster.must(&["get", "priorityclasses", "-o", "name"]);
        assert!(
            classes.contains("priorityclass.scheduling.k8s.io/system-node-critical")
                && classes.contains("priorityclass.scheduling.k8s.io/system-cluster-critical"),
            "{classes}"
        );
        cluster.must(&["create", "priorityclass", "batch-low", "--value=10", "--preemption-policy=Never"]);
        let pod = |name: &str, extra: &str| {
            write(
                &cluster,
                &format!("{name}.yaml"),
                &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra}  containers:\n  - name: c\n    image: busybox\n"),
            )
        };
        cluster.must(&["create", "-f", &pod("plain", "")]);
        let got = cluster.must(&["get", "pod", "plain", "-o", "jsonpath={.spec.priority}"]);
        assert_eq!(got, "0");
        cluster.must(&["create", "-f", &pod("low", "  priorityClassName: batch-low\n")]);
        let got = cluster.must(&["get", "pod", "low", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"]);
        assert_eq!(got, "10 Never");
        let missing = cluster.kubectl(&["create", "-f", &pod("lost", "  priorityClassName: nope\n")]);
        assert!(
            missing.stderr.contains(r#"pods "lost" is forbidden: no PriorityClass with name nope was found"#),
            "{missing:?}"
        );
        // A class marked globalDefault applies to pods that name none.
        cluster.must(&["create", "priorityclass", "everyday", "--value=7", "--global-default=true"]);
        cluster.must(&["create", "-f", &pod("defaulted", "")]);
        let got = cluster.must(&["get", "pod", "defaulted", "-o", "jsonpath={.spec.priority} {.spec.priorityClassName}"]);
        assert_eq!(got, "7 everyday");
    })
    .await
    .expect("test body");
}
