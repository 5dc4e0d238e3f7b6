//! One pod's worker: level-based convergence of CRI state to the pod spec.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;

use super::inputs::{self, PodIps, Sources};
use super::spec::{self, ContainerInputs};
use super::status::{self, Instance, Observed};
use super::{Ctx, PodEntry};
use crate::cri::{api, cri_err};
use crate::Error;

/// How soon a step that failed for a reason outside the runtime's state (a missing
/// ConfigMap, a sandbox that could not start) is retried; the relist would not notice.
const RETRY: Duration = Duration::from_secs(2);

/// Per-container memory of the worker (what CRI does not keep).
#[derive(Default)]
struct Track {
    /// Restarts done so far (also kept in each instance's annotations for re-adoption).
    restart_count: i32,
    /// Current back-off and when it ends; reset after 10 minutes of running.
    backoff: Option<(Duration, Instant)>,
    /// Image pull failures: the error and the back-off before the next attempt.
    pull: Option<(String, Duration, Instant)>,
    /// A config/create/start error to show until the next attempt succeeds.
    error: Option<(String, String)>,
}

#[derive(Default)]
struct WorkerState {
    tracks: HashMap<String, Track>,
    last_status: Option<Value>,
    start_time: Option<String>,
    terminal: bool,
    prober: super::probe::Prober,
    /// `activeDeadlineSeconds` ran out: the pod was stopped and is Failed for good.
    deadline_exceeded: bool,
    /// The pod start latency was recorded (once, at the first Running status).
    start_recorded: bool,
    /// Instances being stopped after a failed liveness/startup probe.
    killing: std::collections::HashSet<String>,
    /// The pod's projected ServiceAccount tokens, reused until due for refresh.
    tokens: super::token::Tokens,
    /// The volume failure last reported as a `FailedMount` Event (one Event per distinct
    /// message, not one per retry).
    mount_error: Option<String>,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    uid: String,
    mut rx: watch::Receiver<Option<Pod>>,
    relisted: Arc<tokio::sync::Notify>,
) {
    let mut st = WorkerState::default();
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            let span = tracing::info_span!("pod", uid = %uid);
            teardown_uid(&ctx, &uid, 0).instrument(span).await;
            return;
        };
        let key = format!("{}/{}", spec::namespace(&pod), spec::name(&pod));
        let span = tracing::info_span!("pod", pod = %key);
        if pod.metadata.deletion_timestamp.is_some() {
            terminate(&ctx, &pod).instrument(span).await;
            return;
        }
        let synced = POD_UPDATES
            .scope(rx.clone(), sync(&ctx, &pod, &mut st))
            .instrument(span.clone())
            .await;
        let next = match synced {
            Ok(next) => next,
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "pod sync failed; retrying"));
                ctx.config.sync_period
            }
        };
        let nudge = st.prober.nudge.clone();
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(next) => {}
            _ = nudge.notified() => {}
            _ = relisted.notified() => {}
        }
    }
}

tokio::task_local! {
    /// The worker's pod updates during a sync, for the one wait a deletion must cut short: a
    /// postStart hook (it can run for ever; kubelet cancels its pod worker's context). CRI calls
    /// in flight are never cancelled: containerd would finish them after the teardown.
    static POD_UPDATES: watch::Receiver<Option<Pod>>;
}

/// Resolves once the pod is deleted (or marked for deletion); never if the watch ends.
async fn leaving(mut rx: watch::Receiver<Option<Pod>>) {
    while rx.changed().await.is_ok() {
        let gone = match rx.borrow_and_update().as_ref() {
            None => true,
            Some(p) => p.metadata.deletion_timestamp.is_some(),
        };
        if gone {
            return;
        }
    }
    std::future::pending().await
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The pod's sandboxes, newest first.
async fn sandboxes(ctx: &Ctx, uid: &str) -> Result<Vec<api::PodSandbox>, Error> {
    let mut items = ctx
        .cri
        .runtime
        .clone()
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: HashMap::from([(spec::LABEL_POD_UID.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_err("ListPodSandbox"))?
        .into_inner()
        .items;
    items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(items)
}

/// All containers of the pod (every sandbox), newest first.
async fn containers(ctx: &Ctx, uid: &str) -> Result<Vec<api::Container>, Error> {
    let mut items = ctx
        .cri
        .runtime
        .clone()
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: HashMap::from([(spec::LABEL_POD_UID.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_err("ListContainers"))?
        .into_inner()
        .containers;
    items.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(items)
}

async fn instance(ctx: &Ctx, id: &str) -> Result<Option<(Instance, i32)>, Error> {
    let resp = ctx
        .cri
        .runtime
        .clone()
        .container_status(api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await;
    let s = match resp {
        Ok(r) => match r.into_inner().status {
            Some(s) => s,
            None => return Ok(None),
        },
        Err(e) if e.code() == tonic::Code::NotFound => return Ok(None),
        Err(e) => return Err(cri_err("ContainerStatus")(e)),
    };
    let restarts = s
        .annotations
        .get(spec::ANNOTATION_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let state = s.state;
    Ok(Some((
        Instance {
            id: s.id,
            running: state == api::ContainerState::ContainerRunning as i32,
            exited: state == api::ContainerState::ContainerExited as i32,
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            started_at: s.started_at,
            finished_at: s.finished_at,
            image_ref: s.image_ref,
            log_path: s.log_path,
        },
        restarts,
    )))
}

/// Ensures the image is present per the pull policy. `Err((reason, message))` is the
/// container's waiting state.
async fn ensure_image(
    ctx: &Ctx,
    c: &Container,
    track: &mut Track,
    image: &str,
) -> Result<(), (String, String)> {
    let policy = spec::pull_policy(c);
    let present = ctx
        .cri
        .images
        .clone()
        .image_status(api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map(|r| r.into_inner().image.is_some())
        .map_err(|e| ("ErrImagePull".to_string(), e.message().to_string()))?;
    if present && policy != "Always" {
        track.pull = None;
        return Ok(());
    }
    if policy == "Never" {
        return Err((
            "ErrImageNeverPull".into(),
            format!(
                "Container image \"{}\" is not present with pull policy of Never",
                c.image.as_deref().unwrap_or("")
            ),
        ));
    }
    if let Some((msg, _, until)) = &track.pull {
        if Instant::now() < *until {
            return Err((
                "ImagePullBackOff".into(),
                format!(
                    "Back-off pulling image \"{}\": {msg}",
                    c.image.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    let pulled = ctx
        .cri
        .images
        .clone()
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    match pulled {
        Ok(_) => {
            track.pull = None;
            Ok(())
        }
        Err(e) => {
            let delay = match &track.pull {
                Some((_, d, _)) => (*d * 2).min(ctx.config.max_backoff),
                None => ctx.config.initial_backoff,
            };
            let msg = format!(
                "Failed to pull image \"{}\": {}",
                c.image.as_deref().unwrap_or(""),
                e.message()
            );
            track.pull = Some((msg.clone(), delay, Instant::now() + delay));
            Err(("ErrImagePull".into(), msg))
        }
    }
}

/// Creates and starts one container instance.
#[allow(clippy::too_many_arguments)]
async fn start_container(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    init: bool,
    sandbox_id: &str,
    sandbox_config: &api::PodSandboxConfig,
    restart_count: i32,
    volumes: &HashMap<String, inputs::Prepared>,
    sources: &mut Sources,
    ips: &PodIps,
) -> Result<String, (String, String)> {
    let image = spec::normalize_image(c.image.as_deref().unwrap_or(""));
    let envs = inputs::resolve_env(pod, c, sources, ips, &ctx.config.node_allocatable)
        .await
        .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
    let mounts =
        inputs::mounts(c, volumes).map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
    let config = spec::container_config(
        pod,
        c,
        ContainerInputs {
            envs,
            mounts,
            image,
            restart_count,
            init,
        },
        ctx.config.allow_privileged,
    )
    .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
    let log_dir = ctx.config.layout.pod_log_dir(pod).join(&c.name);
    std::fs::create_dir_all(&log_dir).map_err(|e| {
        (
            "CreateContainerError".to_string(),
            format!("{}: {e}", log_dir.display()),
        )
    })?;
    let created = ctx
        .cri
        .runtime
        .clone()
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .map_err(|e| ("CreateContainerError".to_string(), e.message().to_string()))?
        .into_inner()
        .container_id;
    ctx.cri
        .runtime
        .clone()
        .start_container(api::StartContainerRequest {
            container_id: created.clone(),
        })
        .await
        .map_err(|e| ("RunContainerError".to_string(), e.message().to_string()))?;
    tracing::info!(container = %c.name, id = %created, restart_count, "container started");
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        // As kubelet: the start is not done until postStart returns; a failed hook kills the
        // instance (preStop and grace period included), which then restarts per policy.
        let hook_run = super::lifecycle::run(&ctx.cri, pod, &ips.pod_ip, c, &created, hook, None);
        let ran = match POD_UPDATES.try_with(|rx| rx.clone()) {
            Ok(rx) => tokio::select! {
                r = hook_run => Some(r),
                () = leaving(rx) => None,
            },
            Err(_) => Some(hook_run.await),
        };
        let Some(ran) = ran else {
            // The termination that follows stops the container.
            tracing::info!(container = %c.name, "pod deleted during its postStart hook; hook abandoned");
            return Err((
                "ContainerCreating".into(),
                "the pod is being deleted".into(),
            ));
        };
        if let Ok(Some(fallback)) = &ran {
            record_event(ctx, pod, "Warning", "LifecycleHTTPFallback", fallback).await;
        }
        if let Err(msg) = ran {
            tracing::warn!(container = %c.name, id = %created, %msg, "postStart hook failed; killing the container");
            // Not the message: it may carry what the hook printed (secrets), as upstream.
            record_event(
                ctx,
                pod,
                "Warning",
                "FailedPostStartHook",
                "PostStartHook failed",
            )
            .await;
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            kill_container(ctx, pod, c, &created, &ips.pod_ip, grace).await;
            return Err(("PostStartHookError".to_string(), msg));
        }
    }
    Ok(created)
}

/// The least grace StopContainer gets after a preStop hook ran (kubelet's
/// `minimumGracePeriodInSeconds`), so a hook that used up the period still leaves the
/// container a moment to handle SIGTERM.
const MIN_GRACE_AFTER_HOOK: i64 = 2;

/// Stops one container instance as kubelet's `killContainer`: its preStop hook first (within
/// `grace` seconds; a failure is a `FailedPreStopHook` Event, and the stop goes on), then
/// StopContainer with what is left of the grace period (SIGTERM, SIGKILL when it runs out).
async fn kill_container(ctx: &Ctx, pod: &Pod, c: &Container, id: &str, pod_ip: &str, grace: i64) {
    let grace = grace.max(0);
    let mut timeout = grace;
    if let (Some(hook), true) = (
        c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()),
        grace > 0,
    ) {
        let budget = Duration::from_secs(grace as u64);
        let started = Instant::now();
        let ran = tokio::time::timeout(
            budget,
            super::lifecycle::run(&ctx.cri, pod, pod_ip, c, id, hook, Some(budget)),
        )
        .await;
        match ran {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(fallback))) => {
                record_event(ctx, pod, "Warning", "LifecycleHTTPFallback", &fallback).await;
            }
            Ok(Err(msg)) => {
                tracing::warn!(container = %c.name, %id, %msg, "preStop hook failed");
                record_event(ctx, pod, "Warning", "FailedPreStopHook", &msg).await;
            }
            Err(_) => {
                tracing::info!(container = %c.name, %id, grace, "preStop hook did not finish within the grace period");
            }
        }
        let used = started.elapsed().as_secs() as i64;
        timeout = (grace - used).max(MIN_GRACE_AFTER_HOOK);
    }
    if let Err(e) = ctx
        .cri
        .runtime
        .clone()
        .stop_container(api::StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        })
        .await
    {
        tracing::debug!(container = %c.name, %id, error = %e.message(), "StopContainer failed");
    }
}

/// The decision for an exited container: restart now, wait (back-off), or leave it.
enum Restart {
    Now,
    Wait(Duration, String),
    No,
}

fn should_restart(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    track: &mut Track,
    last: &Instance,
    policy: &str,
) -> Restart {
    let wanted = match policy {
        "Never" => false,
        "OnFailure" => last.exit_code != 0,
        _ => true,
    };
    if !wanted {
        return Restart::No;
    }
    let now = Instant::now();
    let ran_for = Duration::from_nanos((last.finished_at - last.started_at).max(0) as u64);
    if ran_for >= Duration::from_secs(600) {
        track.backoff = None;
    }
    match track.backoff {
        Some((delay, until)) if now < until => Restart::Wait(
            until - now,
            format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                humantime(delay),
                c.name,
                spec::name(pod),
                spec::namespace(pod),
                spec::uid(pod)
            ),
        ),
        Some((delay, _)) => {
            let next = (delay * 2).min(ctx.config.max_backoff);
            track.backoff = Some((next, now + next));
            Restart::Now
        }
        None => {
            // The first restart is immediate; the next one waits `initial_backoff`.
            let d = ctx.config.initial_backoff;
            track.backoff = Some((d, now + d));
            Restart::Now
        }
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One sync; returns when to sync again at the latest.
async fn sync(ctx: &Arc<Ctx>, pod: &Pod, st: &mut WorkerState) -> Result<Duration, Error> {
    let uid = spec::uid(pod).to_string();
    let Some(pspec) = pod.spec.as_ref() else {
        return Ok(ctx.config.sync_period);
    };
    let policy = pspec
        .restart_policy
        .as_deref()
        .unwrap_or("Always")
        .to_string();
    if st.start_time.is_none() {
        st.start_time = Some(
            pod.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(now_rfc3339),
        );
    }
    let mut next = ctx.config.resync_period;
    if let (Some(limit), false) = (pspec.active_deadline_seconds, st.terminal) {
        let started = st
            .start_time
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let Some(started) = started {
            let active = k8s_openapi::jiff::Timestamp::now().duration_since(started);
            let left = limit as f64 - active.as_secs_f64();
            if left <= 0.0 {
                tracing::info!(limit, "activeDeadlineSeconds exceeded; stopping the pod");
                stop_all(
                    ctx,
                    &uid,
                    pspec.termination_grace_period_seconds.unwrap_or(30),
                )
                .await;
                st.deadline_exceeded = true;
                st.terminal = true;
            } else {
                next = next.min(Duration::from_secs_f64(left));
            }
        }
    }
    let mut ips = PodIps {
        host_ip: ctx.config.node_ip.clone(),
        pod_ip: String::new(),
    };

    // Sandbox: the newest ready one, or a new attempt.
    let boxes = sandboxes(ctx, &uid).await?;
    let ready = boxes
        .iter()
        .find(|s| s.state == api::PodSandboxState::SandboxReady as i32);
    let sandbox_config = spec::sandbox_config(pod, &ctx.config.layout, boxes.len() as u32);
    let mut sandbox_message: Option<String> = None;
    let sandbox_id = match (ready, st.terminal) {
        (Some(s), _) => Some(s.id.clone()),
        (None, true) => None,
        (None, false) => {
            for old in &boxes {
                // A dead sandbox: its containers cannot run again; a new attempt replaces it.
                let _ = ctx
                    .cri
                    .runtime
                    .clone()
                    .stop_pod_sandbox(api::StopPodSandboxRequest {
                        pod_sandbox_id: old.id.clone(),
                    })
                    .await;
            }
            let log_dir = ctx.config.layout.pod_log_dir(pod);
            std::fs::create_dir_all(&log_dir)?;
            ensure_pod_cgroup(ctx, pod).await?;
            let started = Instant::now();
            match ctx
                .cri
                .runtime
                .clone()
                .run_pod_sandbox(api::RunPodSandboxRequest {
                    config: Some(sandbox_config.clone()),
                    runtime_handler: String::new(),
                })
                .await
            {
                Ok(r) => {
                    let id = r.into_inner().pod_sandbox_id;
                    ctx.writer
                        .metrics
                        .cri_duration("RunPodSandbox", started.elapsed());
                    tracing::info!(sandbox = %id, "pod sandbox started");
                    Some(id)
                }
                Err(e) => {
                    sandbox_message =
                        Some(format!("Failed to create pod sandbox: {}", e.message()));
                    tracing::warn!(error = %e.message(), "RunPodSandbox failed");
                    None
                }
            }
        }
    };
    if let Some(id) = &sandbox_id {
        if let Ok(r) = ctx
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
        {
            if let Some(net) = r.into_inner().status.and_then(|s| s.network) {
                ips.pod_ip = net.ip;
            }
        }
        if pspec.host_network == Some(true) {
            ips.pod_ip = ctx.config.node_ip.clone();
        }
    }

    let mut sources = Sources::new(&ctx.writer, spec::namespace(pod), st.tokens.clone());
    let volumes = if st.terminal {
        Ok(HashMap::new())
    } else {
        inputs::prepare_volumes(
            pod,
            &ctx.config.layout,
            &mut sources,
            &ips,
            &ctx.config.node_allocatable,
        )
        .await
    };
    match &volumes {
        Err(m) if st.mount_error.as_ref() != Some(m) => {
            record_event(ctx, pod, "Warning", "FailedMount", m).await;
            st.mount_error = Some(m.clone());
        }
        Ok(_) => st.mount_error = None,
        Err(_) => {}
    }
    // A projected token due for refresh is rewritten by the sync at that time.
    if let Some(at) = st.tokens.next_refresh() {
        next = next.min(at.saturating_duration_since(Instant::now()).max(RETRY));
    }

    // What runs now, per container name: newest and previous instance.
    let all = containers(ctx, &uid).await?;
    let mut by_name: HashMap<String, Vec<&api::Container>> = HashMap::new();
    for c in &all {
        if let Some(name) = c.labels.get(spec::LABEL_CONTAINER_NAME) {
            by_name.entry(name.clone()).or_default().push(c);
        }
    }
    let observe = |name: &str| {
        let ids: Vec<String> = by_name
            .get(name)
            .map(|v| v.iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default();
        ids
    };
    let mut entry = PodEntry {
        uid: uid.clone(),
        sandbox_id: sandbox_id.clone(),
        containers: HashMap::new(),
    };

    let init_containers = pspec.init_containers.clone().unwrap_or_default();
    let mut init_observed = Vec::new();
    let mut init_done = true;
    let mut init_failed = false;
    let mut pending_action = false;
    for c in &init_containers {
        let ids = observe(&c.name);
        let mut o = observe_container(ctx, &ids).await?;
        let track = st.tracks.entry(c.name.clone()).or_default();
        track.restart_count = track.restart_count.max(o.restart_count);
        o.restart_count = track.restart_count;
        o.ready = false;
        o.started = false;
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let done = match &o.current {
            Some(i) if sidecar && i.running => true,
            Some(i) if i.exited && i.exit_code == 0 && !sidecar => true,
            _ => false,
        };
        if sidecar {
            o.ready = o.current.as_ref().is_some_and(|i| i.running);
            o.started = o.ready;
        }
        if !done && init_done && !pending_action {
            pending_action = true;
            let step = step_container(
                ctx,
                pod,
                c,
                true,
                &mut o,
                track,
                &sandbox_id,
                &sandbox_config,
                &volumes,
                &mut sources,
                &ips,
                if sidecar {
                    "Always"
                } else {
                    policy_for_init(&policy)
                },
                st.terminal,
            )
            .await;
            match step {
                Step::Failed => init_failed = true,
                Step::Wait(d) => next = next.min(d),
                Step::Ok => {}
            }
            init_done = false;
        } else if !done {
            init_done = false;
        }
        publish(&mut entry, &c.name, &o);
        init_observed.push((c.clone(), o));
    }

    let mut observed = Vec::new();
    let mut running_ids = Vec::new();
    for c in &pspec.containers {
        let ids = observe(&c.name);
        let mut o = observe_container(ctx, &ids).await?;
        let track = st.tracks.entry(c.name.clone()).or_default();
        track.restart_count = track.restart_count.max(o.restart_count);
        o.restart_count = track.restart_count;
        if init_done && !init_failed {
            let step = step_container(
                ctx,
                pod,
                c,
                false,
                &mut o,
                track,
                &sandbox_id,
                &sandbox_config,
                &volumes,
                &mut sources,
                &ips,
                &policy,
                st.terminal,
            )
            .await;
            if let Step::Wait(d) = step {
                next = next.min(d);
            }
        } else {
            o.waiting = Some(("PodInitializing".into(), String::new()));
        }
        let running = o.waiting.is_none() && o.current.as_ref().is_some_and(|i| i.running);
        o.ready = false;
        o.started = false;
        if let (true, Some(i)) = (running, &o.current) {
            let r = st.prober.observe(&ctx.cri, pod, &ips.pod_ip, c, &i.id);
            o.ready = r.ready;
            o.started = r.started;
            running_ids.push(i.id.clone());
            if let Some(msg) = r.failed {
                if st.killing.insert(i.id.clone()) {
                    tracing::info!(container = %c.name, %msg, "killing the container");
                    let grace = c
                        .liveness_probe
                        .as_ref()
                        .and_then(|p| p.termination_grace_period_seconds)
                        .or(pspec.termination_grace_period_seconds)
                        .unwrap_or(30);
                    let (ctx, pod, c) = (ctx.clone(), pod.clone(), c.clone());
                    let (id, pod_ip) = (i.id.clone(), ips.pod_ip.clone());
                    // Off the worker: the preStop hook and a container ignoring SIGTERM
                    // can hold the kill for the whole grace period.
                    tokio::spawn(async move {
                        kill_container(&ctx, &pod, &c, &id, &pod_ip, grace).await;
                    });
                }
            }
        }
        publish(&mut entry, &c.name, &o);
        observed.push((c.clone(), o));
    }
    st.prober.retain(&running_ids);
    st.killing.retain(|id| running_ids.contains(id));
    if sandbox_message.is_some() {
        for (_, o) in observed.iter_mut().chain(init_observed.iter_mut()) {
            if o.current.is_none() {
                o.waiting = Some(("ContainerCreating".into(), String::new()));
            }
        }
    }
    if let Err(m) = &volumes {
        tracing::warn!(error = %m, "volumes are not ready");
    }
    ctx.state
        .publish(spec::namespace(pod), spec::name(pod), entry);
    remove_old_instances(ctx, &by_name).await;

    // Status.
    let only: Vec<Observed> = observed.iter().map(|(_, o)| o.clone()).collect();
    let phase = if st.deadline_exceeded {
        "Failed"
    } else {
        status::phase(pod, init_done, init_failed, &only)
    };
    let statuses: Vec<Value> = observed
        .iter()
        .map(|(c, o)| status::container_status(c, o, ""))
        .collect();
    let init_statuses: Vec<Value> = init_observed
        .iter()
        .map(|(c, o)| status::container_status(c, o, ""))
        .collect();
    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    let now = now_rfc3339();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let not_ready = if terminal {
        Some("PodCompleted".to_string())
    } else {
        status::not_ready_reason(pod, &only, &statuses)
    };
    let conditions = status::conditions(
        pod,
        &[
            ("PodReadyToStartContainers", sandbox_id.is_some(), None),
            (
                "Initialized",
                init_done && !init_failed,
                Some("ContainersNotInitialized".into()),
            ),
            (
                "ContainersReady",
                containers_ready && !terminal,
                not_ready.clone(),
            ),
            ("Ready", containers_ready && !terminal, not_ready),
        ],
        &now,
    );
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": ctx.config.node_ip,
        "hostIPs": [{"ip": ctx.config.node_ip}],
        "startTime": st.start_time,
        "qosClass": status::qos(pod),
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !ips.pod_ip.is_empty() {
        status["podIP"] = json!(ips.pod_ip);
        status["podIPs"] = json!([{"ip": ips.pod_ip}]);
    } else if let Some(prev) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
        // A terminal pod keeps the IP it had, as upstream.
        status["podIP"] = json!(prev);
        status["podIPs"] = json!([{"ip": prev}]);
    }
    if st.deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    } else if let Some(m) = &sandbox_message {
        status["message"] = json!(m);
    } else if let Err(m) = &volumes {
        status["message"] = json!(m);
    }
    write_status(ctx, pod, st, status).await?;
    if phase == "Running" && !st.start_recorded {
        st.start_recorded = true;
        if let Some(created) = &pod.metadata.creation_timestamp {
            let waited = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
            ctx.writer
                .metrics
                .pod_start_seconds
                .observe(waited.as_secs_f64().max(0.0));
        }
    }

    if terminal && !st.terminal {
        // Upstream stops the sandbox of a finished pod (network and pause container go) and
        // keeps its containers for logs until the pod is deleted.
        st.terminal = true;
        if let Some(id) = &sandbox_id {
            let _ = ctx
                .cri
                .runtime
                .clone()
                .stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
        }
    }
    if st.terminal {
        // Nothing changes any more until the pod is updated or deleted.
        next = Duration::from_secs(60);
    }
    Ok(next)
}

fn policy_for_init(pod_policy: &str) -> &'static str {
    // Init containers restart on failure unless the pod's policy is Never.
    if pod_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    }
}

fn publish(entry: &mut PodEntry, name: &str, o: &Observed) {
    entry.containers.insert(
        name.to_string(),
        super::ContainerIds {
            id: o.current.as_ref().map(|i| i.id.clone()),
            log: o.current.as_ref().map(|i| i.log_path.clone()),
            previous_log: o.previous.as_ref().map(|i| i.log_path.clone()),
        },
    );
}

async fn observe_container(ctx: &Ctx, ids: &[String]) -> Result<Observed, Error> {
    let mut o = Observed::default();
    if let Some(id) = ids.first() {
        if let Some((i, restarts)) = instance(ctx, id).await? {
            o.current = Some(i);
            o.restart_count = restarts;
        }
    }
    if let Some(id) = ids.get(1) {
        o.previous = instance(ctx, id).await?.map(|(i, _)| i);
    }
    Ok(o)
}

enum Step {
    Ok,
    Wait(Duration),
    Failed,
}

/// Moves one container one step: start it, restart it (with back-off), or report why not.
#[allow(clippy::too_many_arguments)]
async fn step_container(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    init: bool,
    o: &mut Observed,
    track: &mut Track,
    sandbox_id: &Option<String>,
    sandbox_config: &api::PodSandboxConfig,
    volumes: &Result<HashMap<String, inputs::Prepared>, String>,
    sources: &mut Sources,
    ips: &PodIps,
    policy: &str,
    terminal: bool,
) -> Step {
    let mut restart_count = o.restart_count;
    match &o.current {
        Some(i) if i.running => {
            track.error = None;
            return Step::Ok;
        }
        Some(i) if i.exited => {
            if terminal {
                return Step::Ok;
            }
            match should_restart(ctx, pod, c, track, i, policy) {
                Restart::No => {
                    return if i.exit_code != 0 && init {
                        Step::Failed
                    } else {
                        Step::Ok
                    }
                }
                Restart::Wait(d, msg) => {
                    o.waiting = Some(("CrashLoopBackOff".into(), msg));
                    return Step::Wait(d);
                }
                Restart::Now => restart_count += 1,
            }
        }
        Some(_) => {
            // Created but not started (e.g. the agent stopped between create and start).
            if let Some(i) = &o.current {
                let _ = ctx
                    .cri
                    .runtime
                    .clone()
                    .start_container(api::StartContainerRequest {
                        container_id: i.id.clone(),
                    })
                    .await;
            }
            return Step::Ok;
        }
        None => {}
    }
    if terminal {
        return Step::Ok;
    }
    let Some(sandbox_id) = sandbox_id else {
        o.waiting = Some(("ContainerCreating".into(), String::new()));
        return Step::Wait(RETRY);
    };
    let volumes = match volumes {
        Ok(v) => v,
        Err(_) => {
            o.waiting = Some(("ContainerCreating".into(), String::new()));
            return Step::Wait(RETRY);
        }
    };
    let image = spec::normalize_image(c.image.as_deref().unwrap_or(""));
    if let Err((reason, message)) = ensure_image(ctx, c, track, &image).await {
        o.waiting = Some((reason, message));
        let wait = track
            .pull
            .as_ref()
            .map(|(_, _, until)| until.saturating_duration_since(Instant::now()))
            .unwrap_or(ctx.config.sync_period);
        return Step::Wait(wait.max(Duration::from_millis(100)));
    }
    let started = Instant::now();
    match start_container(
        ctx,
        pod,
        c,
        init,
        sandbox_id,
        sandbox_config,
        restart_count,
        volumes,
        sources,
        ips,
    )
    .await
    {
        Ok(id) => {
            ctx.writer
                .metrics
                .cri_duration("CreateAndStartContainer", started.elapsed());
            track.error = None;
            track.restart_count = restart_count;
            o.restart_count = restart_count;
            // Observe the new instance at once, so this sync's status already says Running
            // (pod start latency is one status write after StartContainer, not a relist).
            if let Ok(Some((i, _))) = instance(ctx, &id).await {
                if o.current.as_ref().is_some_and(|c| c.exited) {
                    o.previous = o.current.take();
                }
                o.current = Some(i);
            }
            Step::Ok
        }
        Err((reason, message)) => {
            tracing::warn!(container = %c.name, %reason, %message, "container did not start");
            track.error = Some((reason.clone(), message.clone()));
            o.waiting = Some((reason, message));
            Step::Wait(RETRY)
        }
    }
}

/// Keeps the newest two instances per container (current + previous for `logs --previous`);
/// removes older ones and their log files (CRI leaves logs behind).
async fn remove_old_instances(ctx: &Ctx, by_name: &HashMap<String, Vec<&api::Container>>) {
    for list in by_name.values() {
        for old in list.iter().skip(2) {
            if old.state == api::ContainerState::ContainerRunning as i32 {
                continue;
            }
            remove_container(ctx, &old.id).await;
        }
    }
}

async fn remove_container(ctx: &Ctx, id: &str) {
    let log = instance(ctx, id)
        .await
        .ok()
        .flatten()
        .map(|(i, _)| i.log_path);
    if let Err(e) = ctx
        .cri
        .runtime
        .clone()
        .remove_container(api::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
    {
        tracing::warn!(container = %id, error = %e.message(), "RemoveContainer failed");
        return;
    }
    if let Some(log) = log.filter(|l| !l.is_empty()) {
        let _ = std::fs::remove_file(log);
    }
}

/// Kubelet's pod container manager before a sandbox: the pod cgroup exists in every hierarchy
/// (else the sync fails and retries, with kubelet's `FailedCreatePodContainer` Event) and
/// carries the pod-level limits (a limit that cannot be written is a Warning; the pod runs).
async fn ensure_pod_cgroup(ctx: &Ctx, pod: &Pod) -> Result<(), Error> {
    let cgroup = ctx.config.layout.pod_cgroup(spec::uid(pod));
    if let Err(e) = crate::cgroups::create_pod(&cgroup) {
        let msg = format!("unable to ensure pod container exists: {e}");
        record_event(ctx, pod, "Warning", "FailedCreatePodContainer", &msg).await;
        return Err(e.into());
    }
    let resources = crate::cgroups::pod_resources(pod);
    let failures = crate::cgroups::set_pod_resources(&cgroup, &resources);
    if !failures.is_empty() {
        let msg = format!("pod cgroup limits not set: {}", failures.join("; "));
        tracing::warn!(%cgroup, %msg, "pod-level cgroup limits not written");
        record_event(ctx, pod, "Warning", "FailedPodCgroupLimits", &msg).await;
    }
    Ok(())
}

/// Writes a core/v1 Event about the pod as kubelet does (source `kubelet` on this node), so
/// `kubectl describe pod` shows it. Best effort: a failure is logged only.
async fn record_event(ctx: &Ctx, pod: &Pod, type_: &str, reason: &str, message: &str) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
    let now = k8s_openapi::jiff::Timestamp::now();
    let node = ctx.config.layout.node_name.clone();
    let ns = spec::namespace(pod).to_string();
    let event = Event {
        metadata: ObjectMeta {
            // Upstream's `<object>.<unix nanos in hex>`.
            name: Some(format!("{}.{:x}", spec::name(pod), now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(spec::name(pod).to_string()),
            namespace: Some(ns.clone()),
            uid: Some(spec::uid(pod).to_string()),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.clone()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.writer.client.clone(), &ns);
    if let Err(error) = ctx
        .writer
        .write(
            "event",
            api.create(&kube::api::PostParams::default(), &event),
        )
        .await
    {
        tracing::debug!(%error, reason, "could not record the event");
    }
}

async fn write_status(
    ctx: &Ctx,
    pod: &Pod,
    st: &mut WorkerState,
    status: Value,
) -> Result<(), Error> {
    if st.last_status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(ctx.writer.client.clone(), spec::namespace(pod));
    let patch = json!({ "status": status });
    let written = ctx
        .writer
        .write(
            "pod_status",
            api.patch_status(
                spec::name(pod),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await;
    match written {
        Ok(_) => {
            st.last_status = Some(status);
            Ok(())
        }
        // The pod went away meanwhile: the watch will tell the worker.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stops every running container of the pod and its sandbox (containers stay for logs).
async fn stop_all(ctx: &Ctx, uid: &str, grace: i64) {
    let all = containers(ctx, uid).await.unwrap_or_default();
    let stops = all
        .iter()
        .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .map(|c| {
            let mut runtime = ctx.cri.runtime.clone();
            let id = c.id.clone();
            async move {
                let _ = runtime
                    .stop_container(api::StopContainerRequest {
                        container_id: id,
                        timeout: grace,
                    })
                    .await;
            }
        });
    futures::future::join_all(stops).await;
    for sb in sandboxes(ctx, uid).await.unwrap_or_default() {
        let _ = ctx
            .cri
            .runtime
            .clone()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sb.id,
            })
            .await;
    }
}

/// Graceful termination after `deletionTimestamp`: preStop hooks, then StopContainer with the
/// grace period (SIGTERM, SIGKILL when it runs out), then the sandbox and the pod's files; finally
/// the grace-0 delete that removes the object.
async fn terminate(ctx: &Ctx, pod: &Pod) {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0);
    let uid = spec::uid(pod).to_string();
    tracing::info!(grace, "terminating pod");
    let all = containers(ctx, &uid).await.unwrap_or_default();
    let running: Vec<&api::Container> = all
        .iter()
        .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .collect();
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let stops = running.iter().map(|rc| {
        let name = rc
            .labels
            .get(spec::LABEL_CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        let container = pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|x| x.name == name)
                .cloned()
        });
        let id = rc.id.clone();
        let pod_ip = pod_ip.clone();
        async move {
            match container {
                Some(c) => kill_container(ctx, pod, &c, &id, &pod_ip, grace).await,
                None => {
                    let _ = ctx
                        .cri
                        .runtime
                        .clone()
                        .stop_container(api::StopContainerRequest {
                            container_id: id,
                            timeout: grace,
                        })
                        .await;
                }
            }
        }
    });
    futures::future::join_all(stops).await;
    teardown_uid(ctx, &uid, 0).await;
    ctx.state
        .forget(spec::namespace(pod), spec::name(pod), &uid);
    let api: Api<Pod> = Api::namespaced(ctx.writer.client.clone(), spec::namespace(pod));
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx
        .writer
        .write("pod_delete", api.delete(spec::name(pod), &dp))
        .await
    {
        Ok(_) => tracing::info!("pod deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(error = %e, "final pod delete failed"),
    }
}

/// Removes everything the agent created for a pod uid: containers (stopped with `grace`),
/// sandboxes, log files, volumes, the pod cgroup. Safe to repeat.
pub(crate) async fn teardown_uid(ctx: &Ctx, uid: &str, grace: i64) {
    let all = containers(ctx, uid).await.unwrap_or_default();
    let mut log_dirs = Vec::new();
    for c in &all {
        if c.state == api::ContainerState::ContainerRunning as i32 {
            let _ = ctx
                .cri
                .runtime
                .clone()
                .stop_container(api::StopContainerRequest {
                    container_id: c.id.clone(),
                    timeout: grace,
                })
                .await;
        }
        remove_container(ctx, &c.id).await;
    }
    for sb in sandboxes(ctx, uid).await.unwrap_or_default() {
        if let Some(m) = &sb.metadata {
            log_dirs.push(
                ctx.config
                    .layout
                    .log_dir
                    .join(format!("{}_{}_{}", m.namespace, m.name, m.uid)),
            );
            ctx.state.forget(&m.namespace, &m.name, uid);
        }
        let _ = ctx
            .cri
            .runtime
            .clone()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await;
        if let Err(e) = ctx
            .cri
            .runtime
            .clone()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await
        {
            tracing::warn!(sandbox = %sb.id, error = %e.message(), "RemovePodSandbox failed");
        }
    }
    for dir in log_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(ctx.config.layout.pod_dir(uid));
    crate::cgroups::remove_pod(&ctx.config.layout.pod_cgroup(uid));
    tracing::info!(pod_uid = %uid, "pod torn down");
}
