//! The service-account controller: every active namespace has a `default` ServiceAccount
//! (recreated if deleted).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "serviceaccount";

/// The ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

/// What the controller's reconciles share.
pub struct Context {
    client: Client,
    serviceaccounts: Store<ServiceAccount>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    concurrency: u16,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.namespaces.subscribe()?;
    let sa_trigger = informers.serviceaccounts.subscribe()?;
    let ctx = Arc::new(Context {
        client,
        serviceaccounts: informers.serviceaccounts.store(),
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.namespaces.store())
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .watches_shared_stream(sa_trigger, namespace_of_default)
            .watches_shared_stream(informers.serviceaccounts.deletions(), namespace_of_default)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

/// The namespace to re-check when its `default` ServiceAccount changes or goes away.
fn namespace_of_default(sa: Arc<ServiceAccount>) -> Option<ObjectRef<Namespace>> {
    (sa.name_any() == DEFAULT)
        .then(|| ObjectRef::<Namespace>::new(&sa.namespace().unwrap_or_default()))
}

fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, ns.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ns.name_any();
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&ns, &ctx)).await
}

async fn sync(ns: &Namespace, ctx: &Context) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    ctx.serviceaccounts.wait_until_ready().await?;
    let name = ns.name_any();
    if ctx
        .serviceaccounts
        .get(&ObjectRef::new(DEFAULT).within(&name))
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::info!("created the default ServiceAccount"),
        // Already there (the store lags), or the namespace started terminating.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
