//! The root-ca-cert-publisher (upstream's `pkg/controller/certificates/rootcacertpublisher`):
//! every active namespace has a `kube-root-ca.crt` ConfigMap whose `ca.crt` is the cluster
//! CA, so pods can verify the API server (the `kube-api-access-*` projected volume mounts it).
//! A deleted or edited ConfigMap is put back.
//!
//! Without a CA (`--root-ca-file` unset) the controller stays idle and watches nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics (upstream's).
pub const NAME: &str = "root-ca-cert-publisher";

/// The ConfigMap every namespace gets.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";

/// The key holding the CA bundle (PEM).
pub const KEY: &str = "ca.crt";

/// The annotation upstream sets on the ConfigMap, and its text.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the \
kube-apiserver when using internal endpoints such as the internal service IP or \
kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes \
clusters.";

/// What the controller's reconciles share.
pub struct Context {
    client: Client,
    root_ca: String,
    configmaps: Store<ConfigMap>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// The controller as a future that runs until dropped; idle (and watching nothing) without a
/// CA.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    root_ca: Option<String>,
) -> Option<BoxFuture<'static, ()>> {
    let Some(root_ca) = root_ca.filter(|ca| !ca.is_empty()) else {
        tracing::info!("no root CA configured (--root-ca-file); {NAME} is idle");
        return Some(futures::future::pending().boxed());
    };
    let trigger = informers.namespaces.subscribe()?;
    let cm_trigger = informers.root_ca_configmaps.subscribe()?;
    let ctx = Arc::new(Context {
        client,
        root_ca,
        configmaps: informers.root_ca_configmaps.store(),
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.namespaces.store())
            .watches_shared_stream(cm_trigger, namespace_of)
            .watches_shared_stream(informers.root_ca_configmaps.deletions(), namespace_of)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

/// The namespace to re-check when its `kube-root-ca.crt` changes or goes away.
fn namespace_of(cm: Arc<ConfigMap>) -> Option<ObjectRef<Namespace>> {
    cm.namespace()
        .filter(|_| cm.name_any() == CONFIG_MAP)
        .map(|ns| ObjectRef::<Namespace>::new(&ns))
}

fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, ns.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ns.name_any();
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&ns, &ctx)).await
}

/// The ConfigMap's wanted data.
fn wanted(root_ca: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), root_ca.to_string())])
}

/// Whether `cm` already says what it should: exactly the CA as its data, and the annotation.
pub fn up_to_date(cm: &ConfigMap, root_ca: &str) -> bool {
    cm.data.as_ref() == Some(&wanted(root_ca))
        && cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .is_some_and(|d| !d.is_empty())
}

async fn sync(ns: &Namespace, ctx: &Context) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    ctx.configmaps.wait_until_ready().await?;
    let name = ns.name_any();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    match ctx
        .configmaps
        .get(&ObjectRef::new(CONFIG_MAP).within(&name))
    {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.into()),
                    namespace: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(wanted(&ctx.root_ca)),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => tracing::info!(namespace = %name, "published {CONFIG_MAP}"),
                // Already there (the store lags: its watch event re-triggers this namespace),
                // or the namespace is gone or terminating: upstream does not retry either.
                Err(kube::Error::Api(s)) if matches!(s.code, 409 | 404 | 403) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(existing) if up_to_date(&existing, &ctx.root_ca) => {}
        Some(existing) => {
            let mut cm = (*existing).clone();
            cm.data = Some(wanted(&ctx.root_ca));
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            // `resourceVersion` from the store: a concurrent write makes this a 409, retried
            // with back-off against the newer object.
            api.replace(CONFIG_MAP, &PostParams::default(), &cm).await?;
            tracing::info!(namespace = %name, "restored {CONFIG_MAP}");
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a CA the controller is a future that never finishes (so a manager running
    /// only it keeps running) and subscribes to nothing, so nothing is watched.
    #[tokio::test]
    async fn idle_without_a_ca() {
        let url = "http://127.0.0.1:9".parse().expect("url");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        let informers = Informers::new(&client);
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let mut idle = controller(client, &informers, metrics, None).expect("a controller");
        assert!(
            informers.tasks().is_empty(),
            "an idle publisher watches nothing"
        );
        assert!(futures::poll!(&mut idle).is_pending());
    }

    #[test]
    fn up_to_date_needs_exact_data_and_the_annotation() {
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let mut cm = ConfigMap {
            data: Some(wanted(ca)),
            ..Default::default()
        };
        assert!(!up_to_date(&cm, ca), "no annotation");
        cm.metadata.annotations = Some(BTreeMap::from([(
            DESCRIPTION_ANNOTATION.to_string(),
            DESCRIPTION.to_string(),
        )]));
        assert!(up_to_date(&cm, ca));
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert("extra".into(), "x".into());
        assert!(!up_to_date(&cm, ca), "an extra key");
        cm.data = Some(wanted("other"));
        assert!(!up_to_date(&cm, ca), "another CA");
    }
}
