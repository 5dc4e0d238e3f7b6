//! Container lifecycle hooks (`postStart`, `preStop`) with kubelet 1.32's handlers: `exec`
//! (CRI ExecSync in the container), `httpGet` (the probes' client, so `HTTPS` skips
//! certificate verification there too) and `sleep`.
//!
//! As upstream, an httpGet hook fails only on a transport error (connection refused, TLS
//! failure, timeout): the status code is not looked at. A hook's budget is the caller's:
//! postStart runs unbounded (kubelet blocks the container start on it), preStop gets what is
//! left of the grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::spec;
use crate::cri::{api, Cri};

/// kubelet 1.32's lifecycle hook User-Agent.
const HOOK_USER_AGENT: &str = "kube-lifecycle/1.32";

/// Upstream's `format.Pod`: `name_namespace(uid)`, as hook failure messages name the pod.
fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        spec::name(pod),
        spec::namespace(pod),
        spec::uid(pod)
    )
}

/// Runs one handler against the container instance `container_id`. `Err` is kubelet's message
/// for the failure (the container's status message and, for preStop, the Event's);
/// `Ok(Some(message))` is a success worth a `LifecycleHTTPFallback` Warning Event. `budget`
/// bounds the hook (`None`: no bound).
pub(crate) async fn run(
    cri: &Cri,
    pod: &Pod,
    pod_ip: &str,
    c: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    budget: Option<Duration>,
) -> Result<Option<String>, String> {
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let fail = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {:?} failed - error: {error}, message: {output:?}",
                c.name,
                pod_ref(pod)
            )
        };
        let r = cri
            .runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: cmd.clone(),
                timeout: budget.map_or(0, |b| b.as_secs().max(1) as i64),
            })
            .await
            .map_err(|e| fail(e.message().to_string(), ""))?
            .into_inner();
        if r.exit_code != 0 {
            let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&r.stderr));
            return Err(fail(
                format!("command '{}' exited with {}: ", cmd.join(" "), r.exit_code),
                &output,
            ));
        }
        return Ok(None);
    }
    if let Some(h) = &handler.http_get {
        let fail = |error: String| {
            format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {error}",
                h.path.as_deref().unwrap_or(""),
                c.name,
                pod_ref(pod)
            )
        };
        let target = super::http::Target {
            https: h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
            host: h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: super::probe::port(c, &h.port).map_err(fail)?,
            path: super::probe::http_path(h.path.as_deref()),
        };
        if target.host.is_empty() {
            return Err(fail("the pod has no IP yet".into()));
        }
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|hh| (hh.name.clone(), hh.value.clone()))
            .collect();
        let authority = target.authority();
        let bounded = |target: super::http::Target, headers: Vec<(String, String)>| async move {
            let url = target.url();
            let got = super::http::get(target, &headers, HOOK_USER_AGENT);
            match budget {
                Some(b) => tokio::time::timeout(b, got).await.unwrap_or_else(|_| {
                    Err(format!("Get \"{url}\": context deadline exceeded").into())
                }),
                None => got.await,
            }
        };
        return match bounded(target.clone(), headers.clone()).await {
            Ok(_status) => Ok(None),
            Err(e) if e.plain_http => {
                // As kubelet since ConsistentHTTPGetHandlers: an HTTPS hook whose server
                // speaks plain HTTP is retried over HTTP, without credentials.
                let plain = super::http::Target {
                    https: false,
                    ..target
                };
                let headers = headers
                    .into_iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
                    .collect();
                bounded(plain, headers)
                    .await
                    .map(|_| {
                        Some(format!(
                            "request to HTTPS lifecycle hook {authority} got HTTP response, retry with HTTP succeeded"
                        ))
                    })
                    .map_err(|_| fail(e.message))
            }
            Err(e) => Err(fail(e.message)),
        };
    }
    if let Some(s) = &handler.sleep {
        let want = Duration::from_secs(s.seconds.max(0) as u64);
        tokio::time::sleep(budget.map_or(want, |b| want.min(b))).await;
        return Ok(None);
    }
    Err("Cannot run handler: invalid handler".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_pod_as_upstream() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1"}
        }))
        .expect("pod");
        assert_eq!(pod_ref(&pod), "web_prod(u-1)");
    }
}
