//! kube-rs, unmodified, against the API server: typed CRUD, a watcher that survives an API
//! server restart, and a reflector that converges.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Backend, Cluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;

async fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".into(), "kube-rs".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".into(), value.into())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let mut got = api.get("a").await.unwrap();
    got.data = Some(BTreeMap::from([("v".into(), "2".into())]));
    let replaced = api
        .replace("a", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let stale = api.replace("a", &PostParams::default(), &got).await;
    match stale {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("stale replace must conflict: {other:?}"),
    }
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"w": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["w"], "3");
    let list = api
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    api.delete("a", &DeleteParams::default()).await.unwrap();
    match api.get("a").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("deleted object must be gone: {other:?}"),
    }

    // A workload round-trips through typed decoding with its defaults.
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "busybox"}]}}}
    }))
    .unwrap();
    let d = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_api_server_restart() {
    let mut c = Cluster::start(Backend::Embedded).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = api.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(item) = stream.next().await {
            if let Ok(cm) = item {
                let _ = tx.send(cm.metadata.name.unwrap_or_default());
            }
        }
    });
    api.create(&PostParams::default(), &cm("before", "1"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("before"));

    c.restart().await;
    // Writes after the restart reach the same watcher once it has re-listed and re-watched.
    let mut created = false;
    for _ in 0..100 {
        if api
            .create(&PostParams::default(), &cm("after", "2"))
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the restarted server accepts writes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let name = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the watcher sees writes after the restart")
            .expect("watcher running");
        if name == "after" {
            break;
        }
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_converges() {
    let c = Cluster::start(Backend::Etcd).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "0"))
            .await
            .unwrap();
    }
    for i in 0..20 {
        if i % 3 == 0 {
            api.delete(&format!("c{i}"), &DeleteParams::default())
                .await
                .unwrap();
        } else if i % 3 == 1 {
            api.patch(
                &format!("c{i}"),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"v": "updated"}})),
            )
            .await
            .unwrap();
        }
    }
    let want: BTreeMap<String, String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| (cm.metadata.name.unwrap(), cm.data.unwrap()["v"].clone()))
        .collect();
    assert_eq!(want.len(), 13);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let have: BTreeMap<String, String> = reader
            .state()
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap_or_default(),
                    cm.data.as_ref().map(|d| d["v"].clone()).unwrap_or_default(),
                )
            })
            .collect();
        if have == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector did not converge: {have:?} vs {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}

/// A watcher using streaming lists (watch-list: `sendInitialEvents=true` with
/// `resourceVersionMatch=NotOlderThan`) gets the initial state from the watch itself, ended by
/// the `k8s.io/initial-events-end` bookmark, then live changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_converges() {
    let c = Cluster::start(Backend::Embedded).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("s{i}"), "0"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .default_backoff()
    .touched_objects();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready())
        .await
        .expect("initial state within 30 s")
        .expect("store ready");
    assert_eq!(reader.state().len(), 5, "the initial events fill the store");
    api.create(&PostParams::default(), &cm("live", "1"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reader.state().len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live event not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}
