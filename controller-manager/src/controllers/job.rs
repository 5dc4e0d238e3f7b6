//! The Job controller (basics): runs pods from the template until `completions` of them
//! succeed, at most `parallelism` at a time, and fails the Job once more than `backoffLimit`
//! pods have failed. Status (`active`, `ready`, `succeeded`, `failed`, `startTime`,
//! `completionTime`, the `Complete` / `Failed` conditions) goes through `/status`.
//!
//! Counting is from the pods that still exist (no `batch.kubernetes.io/job-tracking`
//! finalizer yet), so a finished pod deleted by hand is forgotten.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controllers::replicaset::{controller_ref, Expectations};
use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff, Recorder};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "job";

/// What the Job controller's reconciles share.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    concurrency: u16,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.jobs.subscribe()?;
    let pod_trigger = informers.pods.subscribe()?;
    let ctx = Arc::new(Context {
        recorder: Recorder::new(&client, "job-controller"),
        client,
        pods: informers.pods.store(),
        expectations: Expectations::default(),
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.jobs.store())
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .owns_shared_stream(pod_trigger)
            .owns_shared_stream(informers.pods.deletions())
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
    util::reconciled(
        NAME,
        &key,
        &ctx.metrics,
        &ctx.backoff,
        sync(&job, &ctx, &key),
    )
    .await
}

fn finished(status: Option<&JobStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let now = util::now();
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

async fn sync(job: &Job, ctx: &Context, key: &str) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    let ns = job.namespace().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() || finished(job.status.as_ref()) {
        return Ok(Action::await_change());
    }
    if !ctx.expectations.satisfied(key, &ctx.pods, &ns) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let uid = job.uid().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| util::controller_of(p.as_ref()).is_some_and(|r| r.uid == uid))
        .collect();
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    let succeeded = pods
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Succeeded"))
        .count();
    let failed = pods
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Failed"))
        .count();
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::pod_is_active(p)).collect();
    let ready = active.iter().filter(|p| util::pod_is_ready(p)).count();
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
    let completions = spec
        .completions
        .map(|c| usize::try_from(c.max(0)).unwrap_or(0));
    let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6).max(0)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    let mut conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut completion_time = None;
    let done = match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    let mut wanted_active = match completions {
        Some(c) => parallelism.min(c.saturating_sub(succeeded)),
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    if done {
        wanted_active = 0;
        completion_time = Some(util::now());
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        conditions.push(condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        ctx.recorder
            .normal(job, "Completed", "Job completed".into())
            .await;
    } else if failed > backoff_limit {
        wanted_active = 0;
        conditions.push(condition(
            "FailureTarget",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
        conditions.push(condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
        ctx.recorder
            .normal(
                job,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            )
            .await;
    }
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    if active.len() < wanted_active {
        let template = spec.template.clone();
        let tmeta = template.metadata.unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", job.name_any())),
                namespace: Some(ns.clone()),
                labels: tmeta.labels,
                annotations: tmeta.annotations,
                owner_references: Some(vec![controller_ref(job)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        for _ in active.len()..wanted_active {
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    ctx.recorder
                        .normal(
                            job,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        )
                        .await;
                    adds.push(p.name_any());
                }
                Err(e) => {
                    ctx.expectations.expect(key, adds, dels);
                    return Err(e.into());
                }
            }
        }
    } else if active.len() > wanted_active {
        for p in active.iter().skip(wanted_active) {
            match pods_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => dels.push(p.uid().unwrap_or_default()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let now_active = (active.len() + adds.len()).saturating_sub(dels.len());
    ctx.expectations.expect(key, adds, dels);
    let old = job.status.clone().unwrap_or_default();
    let status = JobStatus {
        active: Some(count(now_active)),
        ready: Some(count(ready)),
        succeeded: Some(count(succeeded)),
        failed: Some(count(failed)),
        start_time: old.start_time.clone().or_else(|| Some(util::now())),
        completion_time: completion_time.or(old.completion_time.clone()),
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..old.clone()
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    let same = z(old.active) == z(status.active)
        && z(old.ready) == z(status.ready)
        && z(old.succeeded) == z(status.succeeded)
        && z(old.failed) == z(status.failed)
        && old.start_time.is_some()
        && old.conditions == status.conditions;
    if !same {
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": to_value(&status) })),
        )
        .await?;
    }
    Ok(Action::await_change())
}
