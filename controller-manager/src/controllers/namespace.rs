//! The namespace controller: empties a Terminating namespace (every namespaced kind in the
//! resource table), then removes the `kubernetes` finalizer through `/finalize` so the API
//! server can delete the namespace.
//!
//! Contents are listed live rather than from stores: the namespace must be really empty
//! before it goes, and an informer lagging behind would let it go too early.

use std::sync::Arc;
use std::time::Duration;

use api_types::resources::{self, Verb};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::{Api, Client, ResourceExt};

use crate::controllers::garbagecollector::dynamic_api;
use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "namespace";

/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// How soon to look again while objects are still terminating (pods wait for their node).
const RECHECK: Duration = Duration::from_secs(1);

/// What the namespace controller's reconciles share.
pub struct Context {
    client: Client,
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
    let ctx = Arc::new(Context {
        client,
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.namespaces.store())
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, ns.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ns.name_any();
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&ns, &ctx)).await
}

async fn sync(ns: &Namespace, ctx: &Context) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let mut remaining = 0usize;
    for info in resources::RESOURCES {
        if !info.namespaced || !info.has_verb(Verb::List) || !info.has_verb(Verb::Delete) {
            continue;
        }
        let api = dynamic_api(&ctx.client, info, Some(&name));
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in &list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(kind = info.kind, object = %obj.name_any(), "deleting namespace content");
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: obj.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&obj.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(RECHECK));
    }
    let mut finalized = ns.clone();
    finalized
        .spec
        .get_or_insert_with(Default::default)
        .finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    tracing::info!("namespace empty; removing the kubernetes finalizer");
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
