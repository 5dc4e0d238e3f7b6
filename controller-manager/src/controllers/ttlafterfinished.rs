//! The TTL-after-finished controller (upstream `ttl-after-finished-controller`, named
//! `ttl-after-finished` in `--controllers`): deletes a finished Job whose
//! `spec.ttlSecondsAfterFinished` has elapsed since it finished.
//!
//! The finish time is the `lastTransitionTime` of the Job's true `Complete` or `Failed`
//! condition, as upstream's `jobFinishTime`. A Job not yet due is requeued for exactly the
//! time left: nothing else would wake it, since a finished Job no longer changes. Before
//! deleting, the Job is read again from the API server and the TTL checked on that copy (the
//! TTL may have been changed or removed since the cached copy), and the delete carries the
//! read Job's uid as a precondition, so a new Job of the same name is never removed. The
//! deletion is `Foreground`, as upstream's: the Job stays (with a deletion timestamp) until
//! the garbage collector has removed its pods.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::controllers::job::finish_condition;
use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The controller's name in `--controllers` and metrics (upstream's).
pub const NAME: &str = "ttl-after-finished";

/// What the controller's reconciles share.
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
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.jobs.subscribe()?;
    let ctx = Arc::new(Context {
        client,
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.jobs.store())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(job: Arc<Job>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, job.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(job.as_ref());
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&job, &ctx)).await
}

/// When the TTL of `job` runs out: `None` if it needs no cleanup (no TTL, not finished, being
/// deleted); `Some(Err)` if it finished without a transition time, which no retry fixes.
fn expires_at(job: &Job) -> Option<Result<Time, String>> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_condition(job.status.as_ref())?;
    let Some(at) = finished.last_transition_time.as_ref() else {
        return Some(Err(format!(
            "unable to find the time when the Job {} finished",
            util::key_of(job)
        )));
    };
    let ttl = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl));
    Some(
        at.0.checked_add(ttl)
            .map(Time)
            .map_err(|e| format!("TTL of Job {} out of range: {e}", util::key_of(job))),
    )
}

/// How long until `at`, or `None` if it has come.
fn until(at: &Time) -> Option<Duration> {
    let left = util::now().0.duration_until(at.0);
    left.is_positive()
        .then(|| Duration::try_from(left).ok())
        .flatten()
}

async fn sync(job: &Job, ctx: &Context) -> Result<Action, Error> {
    let expiry = match expires_at(job) {
        None => return Ok(Action::await_change()),
        Some(Err(problem)) => {
            tracing::warn!(%problem, "cannot clean up finished Job");
            return Ok(Action::await_change());
        }
        Some(Ok(at)) => at,
    };
    if let Some(left) = until(&expiry) {
        return Ok(Action::requeue(left));
    }
    // The cached Job may be stale: decide again on a fresh read.
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let fresh = match api.get_opt(&job.name_any()).await? {
        Some(fresh) => fresh,
        None => return Ok(Action::await_change()),
    };
    match expires_at(&fresh) {
        Some(Ok(at)) => {
            if let Some(left) = until(&at) {
                return Ok(Action::requeue(left));
            }
        }
        _ => return Ok(Action::await_change()),
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    tracing::info!("deleting Job whose TTL after finishing has passed");
    match api.delete(&fresh.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        // Gone already, or replaced by a Job of the same name (the uid precondition).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
