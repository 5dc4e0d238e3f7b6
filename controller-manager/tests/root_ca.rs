//! The root-ca-cert-publisher against a real in-process API server: every namespace, the
//! ones that exist at start and one created later, gets `kube-root-ca.crt` with the CA; a
//! deleted or edited one is put back, other ConfigMaps are left alone, and a namespace being
//! deleted is not refilled (its deletion completes).

use std::future::Future;
use std::time::Duration;

use controller_manager::controllers::rootcacertpublisher::{
    CONFIG_MAP, DESCRIPTION, DESCRIPTION_ANNOTATION,
};
use e2e::{Backend, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::task::JoinHandle;

/// How long any wait may take before the test is declared hung.
const HANG: Duration = Duration::from_secs(90);

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn client(c: &Cluster) -> Client {
    let config = kube::Config::new(c.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// Aborts a background task when dropped, so a failing test leaves nothing running.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_publisher(c: &Cluster, root_ca: Option<&str>) -> Task {
    let mut config = controller_manager::Config::new(client(c));
    config.controllers = vec!["root-ca-cert-publisher".into(), "namespace".into()];
    config.root_ca_pem = root_ca.map(str::to_string);
    Task(tokio::spawn(async move {
        if let Err(e) = controller_manager::run(config, std::future::pending(), |_| {}).await {
            panic!("controller manager failed: {e}");
        }
    }))
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG;
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

/// The namespace's `kube-root-ca.crt`, once it holds exactly the CA and the annotation.
async fn published(client: &Client, ns: &str) -> ConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{CONFIG_MAP} in {ns}"), || async {
        let cm = api.get_opt(CONFIG_MAP).await.ok()??;
        let data = cm.data.clone()?;
        let described = cm
            .metadata
            .annotations
            .as_ref()?
            .get(DESCRIPTION_ANNOTATION)
            .is_some_and(|d| d == DESCRIPTION);
        (data.len() == 1 && data.get("ca.crt").map(String::as_str) == Some(CA) && described)
            .then_some(cm)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_the_root_ca_and_keeps_it() {
    let c = Cluster::start(Backend::Embedded).await;
    let client = client(&c);
    let _manager = start_publisher(&c, Some(CA));

    for ns in ["default", "kube-system", "kube-public"] {
        published(&client, ns).await;
    }

    // A namespace created later.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "later"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let first = published(&client, "later").await;

    // Deleted: recreated.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "later");
    api.delete(CONFIG_MAP, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("a recreated ConfigMap", || async {
        let cm = api.get_opt(CONFIG_MAP).await.ok()??;
        (cm.metadata.uid != first.metadata.uid).then_some(())
    })
    .await;
    published(&client, "later").await;

    // Edited (data replaced, a key added, the annotation dropped): restored.
    let patch = json!({
        "metadata": {"annotations": {DESCRIPTION_ANNOTATION: null}},
        "data": {"ca.crt": "not the CA", "extra": "x"},
    });
    let edited = api
        .patch(CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit");
    assert_eq!(
        edited
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(String::as_str),
        Some("not the CA")
    );
    let restored = published(&client, "later").await;
    assert_eq!(
        restored.metadata.uid, edited.metadata.uid,
        "updated in place"
    );

    // Another ConfigMap in the namespace is none of its business.
    let other: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "mine"}, "data": {"a": "b"}}))
            .expect("cm");
    api.create(&PostParams::default(), &other)
        .await
        .expect("create another ConfigMap");
    published(&client, "later").await;
    let mine = api.get("mine").await.expect("get mine");
    assert_eq!(
        mine.data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("b")
    );

    // A namespace being deleted is left alone, so its deletion completes.
    namespaces
        .delete("later", &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("namespace later to be gone", || async {
        matches!(namespaces.get("later").await, Err(kube::Error::Api(s)) if s.code == 404)
            .then_some(())
    })
    .await;
}
