//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket, grpc), one task per
//! running container instance, as kubelet's prober workers: results are published for the
//! pod worker, which turns them into `ready`/`started` and kills containers whose liveness
//! or startup probe failed. A result change nudges the worker so Ready flips without waiting
//! for the next relist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cri::{api, Cri};

/// What the probes say about one container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Results {
    pub ready: bool,
    pub started: bool,
    /// Set when liveness (or startup) failed `failureThreshold` times: the message for the
    /// restart.
    pub failed: Option<String>,
}

/// The probe tasks of one pod, keyed by container id.
pub struct Prober {
    results: Arc<Mutex<HashMap<String, Results>>>,
    tasks: HashMap<String, JoinHandle<()>>,
    pub nudge: Arc<Notify>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

impl Default for Prober {
    fn default() -> Self {
        Prober {
            results: Arc::new(Mutex::new(HashMap::new())),
            tasks: HashMap::new(),
            nudge: Arc::new(Notify::new()),
        }
    }
}

fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

impl Prober {
    /// Probe results for a running instance, starting its probe task on first sight.
    /// Containers without probes are ready and started as soon as they run.
    pub fn observe(
        &mut self,
        cri: &Cri,
        pod: &Pod,
        pod_ip: &str,
        c: &Container,
        container_id: &str,
    ) -> Results {
        if !has_probes(c) {
            return Results {
                ready: true,
                started: true,
                failed: None,
            };
        }
        if !self.tasks.contains_key(container_id) {
            let initial = Results {
                ready: c.readiness_probe.is_none() && c.startup_probe.is_none(),
                started: c.startup_probe.is_none(),
                failed: None,
            };
            self.results
                .lock()
                .insert(container_id.to_string(), initial);
            let target = Target {
                cri: cri.clone(),
                container_id: container_id.to_string(),
                pod_ip: pod_ip.to_string(),
                container: c.clone(),
                pod_name: super::spec::name(pod).to_string(),
            };
            let task = tokio::spawn(run(target, self.results.clone(), self.nudge.clone()));
            self.tasks.insert(container_id.to_string(), task);
        }
        self.results
            .lock()
            .get(container_id)
            .cloned()
            .unwrap_or(Results {
                ready: false,
                started: false,
                failed: None,
            })
    }

    /// Stops probing instances that are no longer running.
    pub fn retain(&mut self, running: &[String]) {
        self.tasks.retain(|id, task| {
            let keep = running.contains(id);
            if !keep {
                task.abort();
            }
            keep
        });
        self.results.lock().retain(|id, _| running.contains(id));
    }
}

struct Target {
    cri: Cri,
    container_id: String,
    pod_ip: String,
    container: Container,
    pod_name: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

struct Schedule {
    kind: Kind,
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

async fn run(target: Target, results: Arc<Mutex<HashMap<String, Results>>>, nudge: Arc<Notify>) {
    let start = Instant::now();
    let c = &target.container;
    let mut schedules: Vec<Schedule> = [
        (Kind::Startup, &c.startup_probe),
        (Kind::Liveness, &c.liveness_probe),
        (Kind::Readiness, &c.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| {
        p.clone().map(|probe| Schedule {
            kind,
            next: start + secs(probe.initial_delay_seconds, 0),
            probe,
            successes: 0,
            failures: 0,
        })
    })
    .collect();
    loop {
        let started = results
            .lock()
            .get(&target.container_id)
            .is_some_and(|r| r.started);
        // Liveness and readiness wait for the startup probe, as upstream.
        let due = schedules
            .iter()
            .filter(|s| (s.kind == Kind::Startup) != started)
            .map(|s| s.next)
            .min();
        let Some(due) = due else {
            return;
        };
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        let mut changed = false;
        for s in schedules
            .iter_mut()
            .filter(|s| s.next <= now && ((s.kind == Kind::Startup) != started))
        {
            s.next = now + secs(s.probe.period_seconds, 10);
            let timeout = secs(s.probe.timeout_seconds, 1).max(Duration::from_secs(1));
            let outcome = probe_once(&target, &s.probe, timeout).await;
            let (ok, detail) = match outcome {
                Ok(()) => (true, String::new()),
                Err(d) => (false, d),
            };
            if ok {
                s.successes += 1;
                s.failures = 0;
            } else {
                s.failures += 1;
                s.successes = 0;
            }
            let success_threshold = s.probe.success_threshold.unwrap_or(1).max(1);
            let failure_threshold = s.probe.failure_threshold.unwrap_or(3).max(1);
            let mut all = results.lock();
            let Some(r) = all.get_mut(&target.container_id) else {
                return;
            };
            let before = r.clone();
            match s.kind {
                Kind::Startup => {
                    if ok {
                        r.started = true;
                        if c.readiness_probe.is_none() {
                            r.ready = true;
                        }
                    } else if s.failures >= failure_threshold {
                        r.failed = Some(format!(
                            "Container {} failed startup probe, will be restarted: {detail}",
                            c.name
                        ));
                    }
                }
                Kind::Liveness => {
                    if !ok && s.failures >= failure_threshold {
                        r.failed = Some(format!(
                            "Container {} failed liveness probe, will be restarted: {detail}",
                            c.name
                        ));
                    }
                }
                Kind::Readiness => {
                    if ok && s.successes >= success_threshold {
                        r.ready = true;
                    } else if !ok && s.failures >= failure_threshold {
                        r.ready = false;
                    }
                }
            }
            if !ok {
                tracing::debug!(pod = %target.pod_name, container = %c.name, kind = ?s.kind, %detail, "probe failed");
            }
            changed |= *r != before;
        }
        if changed {
            nudge.notify_one();
        }
        if results
            .lock()
            .get(&target.container_id)
            .is_some_and(|r| r.failed.is_some())
        {
            return;
        }
    }
}

/// The numeric port of a probe: a number, or a container port name.
pub(crate) fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("port {name:?} not found in the container's ports")),
    }
}

async fn probe_once(t: &Target, p: &Probe, timeout: Duration) -> Result<(), String> {
    if let Some(exec) = &p.exec {
        let r = t
            .cri
            .runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: t.container_id.clone(),
                cmd: exec.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|e| format!("command timed out or failed: {}", e.message()))?
            .into_inner();
        return if r.exit_code == 0 {
            Ok(())
        } else {
            Err(format!(
                "command exited with {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).trim()
            ))
        };
    }
    if let Some(h) = &p.http_get {
        let target = super::http::Target {
            https: h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
            host: h.host.clone().unwrap_or_else(|| t.pod_ip.clone()),
            port: port(&t.container, &h.port)?,
            path: http_path(h.path.as_deref()),
        };
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|hh| (hh.name.clone(), hh.value.clone()))
            .collect();
        let url = target.url();
        let status = tokio::time::timeout(
            timeout,
            super::http::get(target, &headers, PROBE_USER_AGENT),
        )
        .await
        .map_err(|_| format!("Get \"{url}\": context deadline exceeded"))??;
        // Success is 200..400, a redirect to another host included, as upstream.
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(tcp) = &p.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| t.pod_ip.clone());
        let port = port(&t.container, &tcp.port)?;
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(g) = &p.grpc {
        let addr = format!("http://{}:{}", t.pod_ip, g.port);
        let fut = async {
            let channel = tonic::transport::Endpoint::from_shared(addr.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("failed to connect service {addr}: {e}"))?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let resp = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: g.service.clone().unwrap_or_default(),
                })
                .await
                .map_err(|e| format!("health rpc failed: {}", e.message()))?
                .into_inner();
            if resp.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                Ok(())
            } else {
                Err(format!(
                    "service unhealthy (responded with {})",
                    resp.status
                ))
            }
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("timeout: health rpc did not complete within {timeout:?}"))?;
    }
    Err("probe has no handler".into())
}

/// kubelet 1.32's probe User-Agent.
const PROBE_USER_AGENT: &str = "kube-probe/1.32";

/// A probe or hook path as kubelet builds the URL: `/` when empty, a leading `/` added.
pub(crate) fn http_path(path: Option<&str>) -> String {
    match path {
        None | Some("") => "/".into(),
        Some(p) if p.starts_with('/') => p.into(),
        Some(p) => format!("/{p}"),
    }
}
