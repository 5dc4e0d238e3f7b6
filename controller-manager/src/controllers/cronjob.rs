//! The CronJob controller (upstream `cronjob-controller`, alias `cronjob`; the v2 controller's
//! rules): creates a Job from `spec.jobTemplate` at each time `spec.schedule` names.
//!
//! One reconcile per CronJob, level-based: adopt the owned unfinished Jobs into
//! `status.active` and drop finished or vanished ones (recording `lastSuccessfulTime`), then,
//! unless suspended, find the most recent scheduled time after `status.lastScheduleTime` (or
//! creation) that is not past `startingDeadlineSeconds`, honour `concurrencyPolicy`
//! (`Forbid` skips with `JobAlreadyActive`, leaving the run due so it starts when the active
//! Job finishes if still within the deadline; `Replace` deletes the active Jobs first), and
//! create `<cronjob>-<scheduled time in minutes since the epoch>`: the name is
//! deterministic, so a retry or a second manager can never start one run twice. Finished
//! Jobs beyond `successfulJobsHistoryLimit` (3) / `failedJobsHistoryLimit` (1) are deleted
//! oldest first. The reconcile requeues itself for the next scheduled time.
//!
//! Schedules are standard 5-field cron with the `@hourly`-style macros, parsed by `croner`
//! (seconds and years refused). The time zone is `spec.timeZone`, else a `CRON_TZ=` / `TZ=`
//! prefix of the schedule, else the manager's own (upstream's rules), from jiff's tz database.
//!
//! Time comes from a [`Clock`] so tests can move it (see [`ManualClock`]); moving a manual
//! clock re-triggers every CronJob.

use std::sync::Arc;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{tz::TimeZone, SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use crate::controllers::replicaset::controller_ref;
use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff, Recorder};
use crate::Error;

/// The controller's name in `--controllers` and metrics.
pub const NAME: &str = "cronjob";

/// The annotation upstream puts on each Job: the scheduled time it runs for (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A stream of clock jumps (`Sync` because `Controller::reconcile_all_on` asks for it).
pub type Jumps = std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send + Sync>>;

/// Where the controller gets the time from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Ticks whenever the time jumps (a test moved a [`ManualClock`]); the real clock never
    /// jumps, so its stream never yields.
    fn jumps(&self) -> Jumps {
        Box::pin(futures::stream::pending())
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to: lets a test run a `* * * * *` schedule without
/// waiting a real minute.
pub struct ManualClock {
    now: Mutex<Timestamp>,
    jumped: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(now),
            jumped: watch::channel(0).0,
        }
    }

    /// Moves the clock forward by `by`, waking every CronJob.
    pub fn advance(&self, by: SignedDuration) {
        {
            let mut now = self.now.lock();
            *now = now.checked_add(by).unwrap_or(*now);
        }
        self.jumped.send_modify(|n| *n += 1);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock()
    }

    fn jumps(&self) -> Jumps {
        let rx = self.jumped.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        }))
    }
}

/// Problems with a CronJob's spec that no retry fixes (reported as events).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// `spec.timeZone` or a `CRON_TZ=` prefix names no known zone.
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
    /// The schedule is not valid 5-field cron.
    #[error("unparseable schedule {schedule:?}: {reason}")]
    Unparseable {
        /// The schedule as written.
        schedule: String,
        /// What the parser said.
        reason: String,
    },
}

/// A parsed schedule in its time zone.
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Parses `schedule` (with an optional `CRON_TZ=`/`TZ=` prefix) in `time_zone`
    /// (`spec.timeZone`, which wins over a prefix).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let mut expr = schedule.trim();
        let mut zone = None;
        if let Some((first, rest)) = expr.split_once(char::is_whitespace) {
            if let Some(z) = first
                .strip_prefix("CRON_TZ=")
                .or_else(|| first.strip_prefix("TZ="))
            {
                zone = Some(z);
                expr = rest.trim();
            }
        }
        let zone = time_zone.or(zone);
        let tz = match zone {
            Some(z) => {
                TimeZone::get(z).map_err(|_| ScheduleError::UnknownTimeZone(z.to_string()))?
            }
            None => TimeZone::system(),
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Unparseable {
                schedule: schedule.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Schedule { cron, tz })
    }

    /// The latest scheduled time in `(after, now]`, if any.
    pub fn most_recent(&self, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let t = self
            .cron
            .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
            .ok()?
            .timestamp();
        (t > after).then_some(t)
    }

    /// The first scheduled time after `now`.
    pub fn next(&self, now: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&now.to_zoned(self.tz.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// `t` in the schedule's zone, as the scheduled-timestamp annotation spells it.
    fn rfc3339(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
}

/// What the CronJob controller's reconciles share.
pub struct Context {
    client: Client,
    jobs: Store<Job>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

/// The controller as a future that runs until dropped.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    concurrency: u16,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.cronjobs.subscribe()?;
    let job_trigger = informers.jobs.subscribe()?;
    let jumps = clock.jumps();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(&client, "cronjob-controller"),
        client,
        jobs: informers.jobs.store(),
        clock,
        backoff: Backoff::default(),
        metrics,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.cronjobs.store())
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .owns_shared_stream(job_trigger)
            .owns_shared_stream(informers.jobs.deletions())
            .reconcile_all_on(jumps)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(cj: Arc<CronJob>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, cj.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(cj.as_ref());
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&cj, &ctx)).await
}

/// `Complete` or `Failed`, if the Job has finished.
fn finished(status: Option<&JobStatus>) -> Option<&'static str> {
    let conditions = status.and_then(|s| s.conditions.as_ref())?;
    conditions
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => Some("Complete"),
            ("Failed", "True") => Some("Failed"),
            _ => None,
        })
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The Job name for a scheduled time (upstream `getJobName`): minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

async fn sync(cj: &CronJob, ctx: &Context) -> Result<Action, Error> {
    ctx.jobs.wait_until_ready().await?;
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| util::controller_of(j.as_ref()).is_some_and(|r| r.uid == uid))
        .collect();
    let old = cj.status.clone().unwrap_or_default();
    let mut active = old.active.clone().unwrap_or_default();
    let mut last_successful = old.last_successful_time.clone();
    let mut last_schedule = old.last_schedule_time.clone();

    // 1. The active list from the Jobs that exist.
    for job in &owned {
        let in_active = active.iter().any(|r| r.uid == job.metadata.uid);
        match finished(job.status.as_ref()) {
            None if !in_active => active.push(job_ref(job)),
            None => {}
            Some(outcome) => {
                if in_active {
                    active.retain(|r| r.uid != job.metadata.uid);
                    ctx.recorder.normal(
                        cj,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {outcome}",
                            job.name_any()
                        ),
                    );
                }
                if outcome == "Complete" {
                    let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0) > last_successful.as_ref().map(|t| t.0) {
                        last_successful = done;
                    }
                }
            }
        }
    }
    // Refs the store does not know: gone, unless a live GET finds them (the store lags
    // behind a Job this controller just created).
    let mut kept = Vec::new();
    for r in active {
        if owned.iter().any(|j| j.metadata.uid == r.uid) {
            kept.push(r);
            continue;
        }
        let Some(job_name) = r.name.as_deref() else {
            continue;
        };
        if let Some(j) = jobs_api.get_opt(job_name).await? {
            if j.metadata.uid == r.uid && finished(j.status.as_ref()).is_none() {
                kept.push(r);
            }
        }
    }
    let mut active = kept;

    if cj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut action = Action::await_change();
    if !spec.suspend.unwrap_or(false) {
        match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
            Err(e) => {
                let reason = match e {
                    ScheduleError::UnknownTimeZone(_) => "UnknownTimeZone",
                    ScheduleError::Unparseable { .. } => "UnparseableSchedule",
                };
                tracing::warn!(controller = NAME, error = %e, "invalid CronJob schedule");
                ctx.recorder.normal(cj, reason, e.to_string());
            }
            Ok(schedule) => {
                action = run_schedule(
                    cj,
                    ctx,
                    &schedule,
                    &jobs_api,
                    &owned,
                    &mut active,
                    &mut last_schedule,
                )
                .await?;
            }
        }
    }

    // History limits.
    let mut done: Vec<(&Arc<Job>, &str)> = owned
        .iter()
        .filter_map(|j| finished(j.status.as_ref()).map(|o| (j, o)))
        .filter(|(j, _)| j.metadata.deletion_timestamp.is_none())
        .collect();
    // Oldest first, as upstream's `byJobStartTime`: start times have whole-second
    // precision, so ties (common) go by name, which ends in the scheduled minute; Jobs that
    // never started sort last.
    done.sort_by_key(|(j, _)| {
        let start = j.status.as_ref().and_then(|s| s.start_time.as_ref());
        (start.is_none(), start.map(|t| t.0), j.name_any())
    });
    for (outcome, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let of: Vec<&Arc<Job>> = done
            .iter()
            .filter(|(_, o)| *o == outcome)
            .map(|(j, _)| *j)
            .collect();
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        for job in of.iter().take(of.len().saturating_sub(keep)) {
            delete_job(cj, ctx, &jobs_api, &job.name_any()).await?;
        }
    }

    // Status.
    let active_value = if active.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&active).unwrap_or(serde_json::Value::Null)
    };
    let same_active = old
        .active
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|r| &r.uid)
        .eq(active.iter().map(|r| &r.uid));
    if !same_active
        || old.last_schedule_time != last_schedule
        || old.last_successful_time != last_successful
    {
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "active": active_value,
                "lastScheduleTime": last_schedule,
                "lastSuccessfulTime": last_successful,
            }})),
        )
        .await?;
    }
    Ok(action)
}

/// Starts the run that is due, if any; returns when to look again.
async fn run_schedule(
    cj: &CronJob,
    ctx: &Context,
    schedule: &Schedule,
    jobs_api: &Api<Job>,
    owned: &[Arc<Job>],
    active: &mut Vec<ObjectReference>,
    last_schedule: &mut Option<Time>,
) -> Result<Action, Error> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let now = ctx.clock.now();
    let requeue = |now: Timestamp| match schedule.next(now) {
        Some(next) => {
            let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
            Action::requeue(wait + Duration::from_millis(100))
        }
        None => Action::await_change(),
    };
    let mut earliest = last_schedule
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let cutoff = now
            .checked_sub(SignedDuration::from_secs(deadline.max(0)))
            .unwrap_or(now);
        earliest = earliest.max(cutoff);
    }
    let Some(scheduled) = schedule.most_recent(earliest, now) else {
        return Ok(requeue(now));
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if scheduled + SignedDuration::from_secs(deadline.max(0)) < now {
            ctx.recorder.normal(
                cj,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    schedule.rfc3339(scheduled)
                ),
            );
            return Ok(requeue(now));
        }
    }
    let job_name = job_name(&cj.name_any(), scheduled);
    if owned.iter().any(|j| j.name_any() == job_name) {
        // Already started (the status write that records it may be what is lagging).
        *last_schedule = Some(Time(scheduled));
        return Ok(requeue(now));
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            ctx.recorder.normal(
                cj,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency \
                     policy is Forbid"
                    .into(),
            );
            return Ok(requeue(now));
        }
        "Replace" => {
            for r in std::mem::take(active) {
                if let Some(n) = r.name.as_deref() {
                    delete_job(cj, ctx, jobs_api, n).await?;
                }
            }
        }
        _ => {}
    }
    let template = spec.job_template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), schedule.rfc3339(scheduled));
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let created = match jobs_api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            tracing::info!(controller = NAME, job = %job_name, "created job");
            ctx.recorder
                .normal(cj, "SuccessfulCreate", format!("Created job {job_name}"));
            j
        }
        // Created by an earlier reconcile that this one's (stale) CronJob and Job stores do
        // not show yet: the deterministic name is what makes this safe.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = jobs_api.get(&job_name).await?;
            let ours = util::controller_of(&existing)
                .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
            if !ours {
                return Err(Error::Invalid(format!(
                    "Job {job_name} exists and is not owned by this CronJob"
                )));
            }
            existing
        }
        Err(e) => return Err(e.into()),
    };
    if finished(created.status.as_ref()).is_none()
        && !active.iter().any(|r| r.uid == created.metadata.uid)
    {
        active.push(job_ref(&created));
    }
    *last_schedule = Some(Time(scheduled));
    Ok(requeue(now))
}

async fn delete_job(cj: &CronJob, ctx: &Context, api: &Api<Job>, name: &str) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {
            ctx.recorder
                .normal(cj, "SuccessfulDelete", format!("Deleted job {name}"));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn schedules_macros_and_time_zones() {
        let every = Schedule::parse("* * * * *", Some("UTC")).expect("parse");
        let now = at("2026-01-01T10:05:30Z");
        assert_eq!(
            every.most_recent(at("2026-01-01T10:00:00Z"), now),
            Some(at("2026-01-01T10:05:00Z"))
        );
        assert_eq!(every.most_recent(at("2026-01-01T10:05:00Z"), now), None);
        assert_eq!(every.next(now), Some(at("2026-01-01T10:06:00Z")));
        let hourly = Schedule::parse("@hourly", Some("UTC")).expect("parse");
        assert_eq!(hourly.next(now), Some(at("2026-01-01T11:00:00Z")));
        let ny = Schedule::parse("CRON_TZ=America/New_York 0 9 * * *", None).expect("parse");
        assert_eq!(ny.next(now), Some(at("2026-01-01T14:00:00Z")));
        let tz = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parse");
        assert_eq!(tz.next(now), Some(at("2026-01-02T08:00:00Z")));
        assert!(matches!(
            Schedule::parse("0 9 * * *", Some("Mars/Olympus")),
            Err(ScheduleError::UnknownTimeZone(_))
        ));
        assert!(
            Schedule::parse("0 0 9 * * *", Some("UTC")).is_err(),
            "seconds refused"
        );
        assert!(Schedule::parse("61 * * * *", Some("UTC")).is_err());
        assert_eq!(
            job_name("hello", at("2026-01-01T10:05:00Z")),
            "hello-29454365"
        );
    }
}
