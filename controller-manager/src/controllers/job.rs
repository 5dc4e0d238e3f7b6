//! The Job controller (upstream `job-controller`, 1.32 rules): runs pods from the template
//! until `completions` of them succeed, at most `parallelism` at a time, and fails the Job
//! once more than `backoffLimit` pods have failed. Status (`active`, `ready`, `terminating`,
//! `succeeded`, `failed`, `completedIndexes`, `startTime`, `completionTime`, conditions)
//! goes through `/status`.
//!
//! Beyond the basics:
//! - `activeDeadlineSeconds`: counted from `status.startTime`; when it passes, the active pods
//!   are deleted and the Job fails with `DeadlineExceeded`. Nothing else happens at that
//!   moment (no pod changes), so each pass requeues the Job for exactly the time left.
//! - `completionMode: Indexed`: one pod per pending index, carrying the index as the
//!   `batch.kubernetes.io/job-completion-index` annotation and label, hostname
//!   `<job>-<index>` and `JOB_COMPLETION_INDEX` in every (init) container (a fieldRef to the
//!   label, as upstream with PodIndexLabel, GA in 1.32). The Job is done when every index has
//!   a succeeded pod; `completedIndexes` uses upstream's interval text ("0-2,4").
//! - `podFailurePolicy`: a failed pod's first matching rule decides: `FailJob` fails the Job
//!   (reason `PodFailurePolicy`), `Ignore` leaves it out of `failed` and the backoff limit,
//!   `Count` is the default.
//! - `suspend`: active pods are deleted and `Suspended=True`; resuming sets
//!   `Suspended=False` and restarts `startTime`, so the deadline counts active time only.
//!
//! A finishing Job first gets the interim `SuccessCriteriaMet` / `FailureTarget` condition
//! and its active pods are deleted; `Complete` / `Failed` follow once no pod of it is still
//! terminating (upstream's behaviour with JobPodReplacementPolicy/JobManagedBy, both on in
//! 1.32), so a finished Job never has running pods.
//!
//! Counting is from the pods that still exist (no `batch.kubernetes.io/job-tracking`
//! finalizer yet), so a finished pod deleted by hand is forgotten — except completed indexes,
//! which are kept from the previous `completedIndexes`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
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

/// The annotation and label naming an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The environment variable every container of an Indexed Job pod reads its index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Upstream's message for `DeadlineExceeded`.
pub const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";

/// Upstream's `names.MaxGeneratedNameLength`: a generateName prefix longer than this is cut.
const MAX_GENERATED_NAME_LENGTH: usize = 58;

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

/// Whether the Job has its terminal `Complete` or `Failed` condition (upstream
/// `IsJobFinished`). The TTL-after-finished controller uses the same test.
pub fn finished(status: Option<&JobStatus>) -> bool {
    finish_condition(status).is_some()
}

/// The Job's true `Complete` or `Failed` condition, if it has finished.
pub fn finish_condition(status: Option<&JobStatus>) -> Option<&JobCondition> {
    status
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> JobCondition {
    let now = util::now();
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn find_condition<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Upstream's `ensureJobConditionStatus`: sets the condition of `type_` to `status` (with a
/// new transition time) if it differs; adds it only when it is not `False`, so a Job that was
/// never suspended gets no `Suspended=False`. Returns whether anything changed.
fn ensure_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status
            || c.reason.as_deref() != Some(reason)
            || c.message.as_deref() != Some(message)
        {
            *c = condition(type_, status, reason, message);
            return true;
        }
        return false;
    }
    if status != "False" {
        conditions.push(condition(type_, status, reason, message));
        return true;
    }
    false
}

/// What a pod failure policy says about one failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched, or a `Count` rule did: the failure counts towards `backoffLimit`.
    Count,
    /// An `Ignore` rule matched: the failure is not counted and the pod is replaced.
    Ignore,
    /// A `FailJob` rule matched: the Job fails with this message.
    FailJob(String),
}

/// Matches a failed pod against the policy's rules in order (upstream
/// `matchPodFailurePolicy`); rules with an action this controller does not know (e.g.
/// `FailIndex` without per-index backoff) are skipped, as the API documents.
pub fn policy_verdict(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    let status = pod.status.as_ref();
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            let matches = |cs: &ContainerStatus| -> Option<i32> {
                let code = cs.state.as_ref()?.terminated.as_ref()?.exit_code;
                let named = req.container_name.as_ref().is_none_or(|n| *n == cs.name);
                let listed = req.values.contains(&code);
                let op = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                (named && code != 0 && op).then_some(code)
            };
            let statuses = status.into_iter().flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            });
            statuses
                .filter_map(|cs| matches(cs).map(|code| (cs.name.clone(), code)))
                .next()
                .map(|(container, code)| {
                    format!(
                        "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                        rule.action
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| {
                    patterns
                        .iter()
                        .any(|p| p.type_ == c.type_ && p.status == c.status)
                })
                .map(|c| {
                    format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                        c.type_, rule.action
                    )
                })
        } else {
            None
        };
        let Some(message) = matched else { continue };
        match rule.action.as_str() {
            "Ignore" => return Verdict::Ignore,
            "Count" => return Verdict::Count,
            "FailJob" => return Verdict::FailJob(message),
            _ => continue,
        }
    }
    Verdict::Count
}

/// Upstream's text form of a set of indexes: increasing, comma-separated, runs of three or
/// more as `first-last` ("1,3-5,7"); two neighbours stay separate ("0,1").
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &i in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`format_indexes`]' text, keeping the indexes below `completions` and ignoring
/// anything malformed (upstream's `parseIndexesFromString`).
pub fn parse_indexes(text: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            continue;
        };
        out.extend((first.max(0)..=last.min(completions - 1)).filter(|&i| i >= 0));
    }
    out
}

/// A pod's completion index from its annotation, if it has a valid one.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)?
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0)
}

/// Upstream's `podGenerateNameWithIndex`: `<job>-<index>-`, the job name cut so the prefix
/// stays within the generated-name limit.
fn generate_name_with_index(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let mut prefix = format!("{job}{suffix}");
    if prefix.len() > MAX_GENERATED_NAME_LENGTH {
        let keep = MAX_GENERATED_NAME_LENGTH.saturating_sub(suffix.len());
        let cut = (0..=keep.min(job.len()))
            .rev()
            .find(|&i| job.is_char_boundary(i))
            .unwrap_or(0);
        prefix = format!("{}{suffix}", &job[..cut]);
    }
    prefix
}

/// Adds `JOB_COMPLETION_INDEX` (a fieldRef to the index label) unless the container sets it.
fn add_index_env(container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: COMPLETION_INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
            }),
            ..Default::default()
        }),
    });
}

/// The pod to create from the Job's template, for `index` if the Job is Indexed.
fn pod_for(job: &Job, spec: &JobSpec, ns: &str, index: Option<i32>) -> Pod {
    let template = spec.template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels;
    let mut annotations = tmeta.annotations;
    let mut pod_spec = template.spec;
    let mut generate_name = format!("{}-", job.name_any());
    if let Some(i) = index {
        let value = i.to_string();
        annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX.into(), value.clone());
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX.into(), value);
        generate_name = generate_name_with_index(&job.name_any(), i);
        if let Some(ps) = pod_spec.as_mut() {
            ps.hostname = Some(format!("{}-{i}", job.name_any()));
            ps.init_containers
                .iter_mut()
                .flatten()
                .for_each(add_index_env);
            ps.containers.iter_mut().for_each(add_index_env);
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(ns.to_string()),
            labels,
            annotations,
            owner_references: Some(vec![controller_ref(job)]),
            ..Default::default()
        },
        spec: pod_spec,
        status: None,
    }
}

/// How the Job is ending, once decided: the interim condition's reason and message, copied
/// to the terminal condition when no pod is left terminating.
struct Finish {
    success: bool,
    reason: String,
    message: String,
}

/// How long until `start + deadline_seconds`, or `None` if that moment has passed.
fn deadline_left(start: &Time, deadline_seconds: i64, now: &Time) -> Option<Duration> {
    let end = start
        .0
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            deadline_seconds,
        ))
        .ok()?;
    let left = now.0.duration_until(end);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

/// Deletes an active pod, recording its uid for the expectations; `false` if it was gone.
async fn delete_pod(api: &Api<Pod>, pod: &Pod, dels: &mut Vec<String>) -> Result<bool, Error> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => {
            dels.push(pod.uid().unwrap_or_default());
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
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
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| util::controller_of(p.as_ref()).is_some_and(|r| r.uid == uid))
        .collect();
    pods.sort_by(|a, b| {
        (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
    });
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let suspended = spec.suspend == Some(true);
    let completions = spec.completions;
    let old = job.status.clone().unwrap_or_default();
    let now = util::now();

    // Failed pods through the pod failure policy: ignored ones do not count, and the first
    // FailJob match decides the Job's failure message.
    let mut failed = 0usize;
    let mut fail_job = None;
    for p in pods
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Failed"))
    {
        match policy_verdict(spec.pod_failure_policy.as_ref(), p) {
            Verdict::Count => failed += 1,
            Verdict::Ignore => {}
            Verdict::FailJob(message) => {
                failed += 1;
                fail_job.get_or_insert(message);
            }
        }
    }
    let succeeded_pods: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Succeeded"))
        .collect();
    let mut completed_indexes = BTreeSet::new();
    let succeeded = if indexed {
        let c = completions.unwrap_or(0);
        completed_indexes = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""), c);
        completed_indexes.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| completion_index(p))
                .filter(|i| *i < c),
        );
        completed_indexes.len()
    } else {
        succeeded_pods.len()
    };
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::pod_is_active(p)).collect();
    let mut terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| !matches!(phase(p).as_deref(), Some("Succeeded" | "Failed")))
        .count();
    let mut ready = active.iter().filter(|p| util::pod_is_ready(p)).count();
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
    let completions_n = completions.map(|c| usize::try_from(c.max(0)).unwrap_or(0));
    let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6).max(0)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    let mut conditions = old.conditions.clone().unwrap_or_default();
    // A Job being resumed counts its deadline from now, so it must not be failed for the
    // time before it was suspended.
    let was_suspended =
        find_condition(&conditions, "Suspended").is_some_and(|c| c.status == "True");
    let mut start_time = if was_suspended && !suspended {
        Some(now.clone())
    } else {
        old.start_time.clone()
    };
    if start_time.is_none() && !suspended {
        start_time = Some(now.clone());
    }

    let mut requeue = None;
    let interim = |type_: &str| {
        find_condition(&conditions, type_)
            .filter(|c| c.status == "True")
            .map(|c| Finish {
                success: type_ == "SuccessCriteriaMet",
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            })
    };
    let mut finish = interim("SuccessCriteriaMet").or_else(|| interim("FailureTarget"));
    if finish.is_none() {
        let failure = |reason: &str, message: &str| {
            Some(Finish {
                success: false,
                reason: reason.into(),
                message: message.into(),
            })
        };
        let deadline = spec.active_deadline_seconds.filter(|_| !suspended);
        let left = match (deadline, start_time.as_ref()) {
            (Some(d), Some(start)) => Some(deadline_left(start, d, &now)),
            _ => None,
        };
        if let Some(message) = fail_job.as_deref() {
            finish = failure("PodFailurePolicy", message);
        } else if failed > backoff_limit {
            finish = failure(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            );
        } else if left == Some(None) {
            finish = failure("DeadlineExceeded", DEADLINE_MESSAGE);
        } else if let Some(Some(left)) = left {
            // Nothing else would wake the Job when its deadline passes.
            requeue = Some(left);
        }
    }

    let mut adds = Vec::new();
    let mut dels = Vec::new();
    let mut completion_time = None;
    let now_active;
    if let Some(f) = &finish {
        // Ending: no pod of the Job may keep running.
        for p in &active {
            if delete_pod(&pods_api, p, &mut dels).await? {
                terminating += 1;
            }
        }
        ready = 0;
        now_active = 0;
        let interim_type = if f.success {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        if find_condition(&conditions, interim_type).is_none() {
            conditions.push(condition(interim_type, "True", &f.reason, &f.message));
        }
        if terminating == 0 {
            let terminal = if f.success { "Complete" } else { "Failed" };
            conditions.push(condition(terminal, "True", &f.reason, &f.message));
            if f.success {
                completion_time = Some(now.clone());
                ctx.recorder
                    .normal(job, "Completed", "Job completed".into());
            } else {
                ctx.recorder.normal(job, &f.reason, f.message.clone());
            }
        }
    } else {
        // Which active pods to keep, and which indexes (or how many pods) to add.
        let mut keep: Vec<&Arc<Pod>> = Vec::new();
        let mut remove: Vec<&Arc<Pod>> = Vec::new();
        if indexed {
            let c = completions.unwrap_or(0);
            let mut seen = BTreeSet::new();
            // Oldest first, so of duplicates the longest running is kept.
            for p in active.iter() {
                match completion_index(p) {
                    Some(i) if i < c && seen.insert(i) => keep.push(p),
                    _ => remove.push(p),
                }
            }
            keep.sort_by_key(|p| completion_index(p));
        } else {
            keep = active.clone();
        }
        let wanted = if suspended {
            0
        } else {
            match completions_n {
                Some(c) => parallelism.min(c.saturating_sub(succeeded)),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        };
        if keep.len() > wanted {
            remove.extend(keep.split_off(wanted));
        }
        for p in &remove {
            if delete_pod(&pods_api, p, &mut dels).await? {
                terminating += 1;
                if util::pod_is_ready(p) {
                    ready = ready.saturating_sub(1);
                }
            }
        }
        let missing = wanted.saturating_sub(keep.len());
        let new_pods: Vec<Pod> = if indexed {
            let taken: BTreeSet<i32> = keep.iter().filter_map(|p| completion_index(p)).collect();
            (0..completions.unwrap_or(0))
                .filter(|i| !completed_indexes.contains(i) && !taken.contains(i))
                .take(missing)
                .map(|i| pod_for(job, spec, &ns, Some(i)))
                .collect()
        } else {
            (0..missing)
                .map(|_| pod_for(job, spec, &ns, None))
                .collect()
        };
        for pod in &new_pods {
            match pods_api.create(&PostParams::default(), pod).await {
                Ok(p) => {
                    ctx.recorder.normal(
                        job,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                    adds.push(p.name_any());
                }
                Err(e) => {
                    ctx.expectations.expect(key, adds, dels);
                    return Err(e.into());
                }
            }
        }
        now_active = keep.len() + adds.len();
        let complete = now_active == 0
            && match completions_n {
                Some(c) => succeeded >= c,
                None => succeeded > 0,
            };
        if complete {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            if terminating == 0 {
                completion_time = Some(now.clone());
                conditions.push(condition(
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
                ctx.recorder
                    .normal(job, "Completed", "Job completed".into());
            }
            requeue = None;
        } else if suspended {
            if ensure_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            ) {
                ctx.recorder
                    .normal(job, "Suspended", "Job suspended".into());
            }
        } else if ensure_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
        ) {
            ctx.recorder.normal(job, "Resumed", "Job resumed".into());
        }
    }
    if finish.is_some() {
        requeue = None;
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    ctx.expectations.expect(key, adds, dels);
    let completed_indexes =
        (indexed && !completed_indexes.is_empty()).then(|| format_indexes(&completed_indexes));
    let status = JobStatus {
        active: Some(count(now_active)),
        ready: Some(count(ready)),
        terminating: Some(count(terminating)),
        succeeded: Some(count(succeeded)),
        failed: Some(count(failed)),
        start_time,
        completion_time: completion_time.or(old.completion_time.clone()),
        completed_indexes,
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..old.clone()
    };
    let z = |v: Option<i32>| v.unwrap_or(0);
    let same = z(old.active) == z(status.active)
        && z(old.ready) == z(status.ready)
        && z(old.terminating) == z(status.terminating)
        && z(old.succeeded) == z(status.succeeded)
        && z(old.failed) == z(status.failed)
        && old.start_time == status.start_time
        && old.completed_indexes == status.completed_indexes
        && old.conditions == status.conditions;
    if !same {
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        // Merge patch: a field that is now unset (startTime of a Job created suspended,
        // completedIndexes) is sent as null so it is removed, not left behind.
        let mut body = to_value(&status);
        for field in ["startTime", "completedIndexes", "completionTime"] {
            if let Some(obj) = body.as_object_mut() {
                obj.entry(field).or_insert(serde_json::Value::Null);
            }
        }
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
        PodFailurePolicyRule,
    };

    #[test]
    fn indexes_use_upstreams_interval_text() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(format_indexes(&set(&[0, 1, 2, 4])), "0-2,4");
        assert_eq!(format_indexes(&set(&[1, 3, 4, 5, 7])), "1,3-5,7");
        assert_eq!(format_indexes(&set(&[0, 1])), "0,1");
        assert_eq!(format_indexes(&set(&[])), "");
        assert_eq!(parse_indexes("1,3-5,7", 6), set(&[1, 3, 4, 5]));
        assert_eq!(parse_indexes("x,2", 6), set(&[2]));
    }

    #[test]
    fn long_job_names_are_cut_before_the_index() {
        let name = "a".repeat(70);
        let g = generate_name_with_index(&name, 12);
        assert_eq!(g.len(), MAX_GENERATED_NAME_LENGTH);
        assert!(g.ends_with("a-12-"));
        assert_eq!(generate_name_with_index("pi", 3), "pi-3-");
    }

    fn failed_pod(exit: i32, conditions: &[(&str, &str)]) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {
                "phase": "Failed",
                "conditions": conditions.iter()
                    .map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>(),
                "containerStatuses": [{
                    "name": "main", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": exit}},
                }],
            },
        }))
        .expect("pod")
    }

    fn exit_rule(
        action: &str,
        op: &str,
        values: &[i32],
        container: Option<&str>,
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn pod_failure_policy_first_matching_rule_wins() {
        let policy = PodFailurePolicy {
            rules: vec![
                exit_rule("FailIndex", "In", &[42], None),
                exit_rule("FailJob", "In", &[42], Some("main")),
                exit_rule("Count", "In", &[1], None),
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                },
                exit_rule("Ignore", "NotIn", &[5], None),
            ],
        };
        let p = Some(&policy);
        assert_eq!(
            policy_verdict(p, &failed_pod(42, &[])),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        assert_eq!(
            policy_verdict(p, &failed_pod(1, &[("DisruptionTarget", "True")])),
            Verdict::Count
        );
        assert_eq!(
            policy_verdict(p, &failed_pod(5, &[("DisruptionTarget", "True")])),
            Verdict::Ignore
        );
        assert_eq!(
            policy_verdict(p, &failed_pod(5, &[("DisruptionTarget", "False")])),
            Verdict::Count
        );
        assert_eq!(policy_verdict(p, &failed_pod(7, &[])), Verdict::Ignore);
        // Exit code 0 never matches, not even NotIn.
        assert_eq!(policy_verdict(p, &failed_pod(0, &[])), Verdict::Count);
        assert_eq!(policy_verdict(None, &failed_pod(42, &[])), Verdict::Count);
    }
}
