//! Under a burst of writes far faster than some watchers read, every kube-rs reflector still
//! converges on the API server's state: no watch event is lost between the watch cache and a
//! client, whether the client keeps up, falls behind and is cut off, or re-lists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Backend, Cluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

const OBJECTS: usize = 4_000;
const WRITERS: usize = 48;

fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// A reflector; with `pause`, it waits that long after each event, so that
/// it falls far behind the burst (and is cut off by the server's fan-out).
fn reflector_for(api: Api<ConfigMap>, pause: Option<Duration>) -> Store<ConfigMap> {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
    });
    store
}

fn wanted(store: &Store<ConfigMap>) -> (usize, usize) {
    let state = store.state();
    let updated = state
        .iter()
        .filter(|c| c.data.as_ref().and_then(|d| d.get("v")).map(String::as_str) == Some("2"))
        .count();
    (state.len(), updated)
}

async fn burst(backend: Backend) {
    let c = Cluster::start(backend).await;
    let kc = client(&c);
    let api: Api<ConfigMap> = Api::namespaced(kc.clone(), "default");
    let fast = reflector_for(api.clone(), None);
    let slow = reflector_for(api.clone(), Some(Duration::from_millis(3)));
    fast.wait_until_ready().await.expect("fast ready");
    slow.wait_until_ready().await.expect("slow ready");
    // Every object is created, then changed once, by many writers at once.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= OBJECTS {
                        return;
                    }
                    let name = format!("burst-{i}");
                    let cm = ConfigMap {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            ..Default::default()
                        },
                        data: Some(BTreeMap::from([("v".into(), "1".into())])),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &cm)
                        .await
                        .expect("create");
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"data": {"v": "2"}})),
                    )
                    .await
                    .expect("patch");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    // A late reflector lists what the burst left.
    let late = reflector_for(api.clone(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let got = [wanted(&fast), wanted(&slow), wanted(&late)];
        let want = OBJECTS;
        if got.iter().all(|&(n, u)| n >= want && u >= want) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflectors did not converge on {OBJECTS} updated objects: (objects, updated) fast {:?}, slow {:?}, late {:?}",
            got[0],
            got[1],
            got[2]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_converge_after_a_burst_on_etcd() {
    burst(Backend::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_converge_after_a_burst_embedded() {
    burst(Backend::Embedded).await;
}
