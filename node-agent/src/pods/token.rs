//! ServiceAccount tokens for projected `serviceAccountToken` volume sources: kubelet's token
//! manager, one cache per pod.
//!
//! A token is requested through TokenRequest (`serviceaccounts/<sa>/token`) bound to the pod
//! (name and uid), so it stops working when the pod is deleted; the node may only ask for
//! tokens of pods bound to it (NodeRestriction). The worker rewrites the pod's volumes on
//! every sync; a cached token is reused until upstream's refresh rule says otherwise — 80 % of
//! its TTL has passed, or 24 hours, whichever comes first — and [`Tokens::next_refresh`] tells
//! the worker when to sync at the latest so the rewrite happens on time. A failed refresh
//! keeps the cached token while it is still valid (and retries at the next sync), as upstream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::Api;
use parking_lot::Mutex;

use super::spec;
use crate::node::Writer;

/// What a projected source asks for when it gives no `expirationSeconds` (the API's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Upstream's `maxTTL`: a token is refreshed after a day even if it lives longer.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// One cached token per (service account, audience, expiration) of the pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service_account: String,
    audience: Option<String>,
    expiration_seconds: i64,
}

#[derive(Clone, Debug)]
struct Cached {
    token: String,
    /// When the token must be replaced (upstream's `requiresRefresh`).
    refresh_at: Instant,
    /// When it stops being valid.
    expires_at: Instant,
}

/// A pod's token cache; clones share it (the worker keeps one across syncs, each sync's
/// [`super::inputs::Sources`] holds a clone).
#[derive(Clone, Default)]
pub struct Tokens {
    cache: Arc<Mutex<HashMap<Key, Cached>>>,
}

/// When a token issued for `ttl` with `remaining` of it left (as the API server's
/// `expirationTimestamp` says) must be refreshed, counted from now: once less than 20 % of
/// the TTL is left, or once it is 24 hours old.
pub fn refresh_after(ttl: Duration, remaining: Duration) -> Duration {
    let age = ttl.saturating_sub(remaining);
    let by_ttl = remaining.saturating_sub(ttl / 5);
    let by_age = MAX_TTL.saturating_sub(age);
    by_ttl.min(by_age)
}

/// An API error as its `Status` message says it (what kubelet's error shows), anything else
/// as it displays.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

impl Tokens {
    /// The token for the pod's service account with this audience (`None`: the API server's
    /// own) and expiration, from the cache or a new TokenRequest bound to the pod.
    pub async fn get(
        &self,
        writer: &Writer,
        pod: &Pod,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
    ) -> Result<String, String> {
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let key = Key {
            service_account,
            audience: audience.filter(|a| !a.is_empty()).map(str::to_string),
            expiration_seconds: expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        };
        let cached = self.cache.lock().get(&key).cloned();
        let now = Instant::now();
        if let Some(c) = &cached {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        match request(writer, pod, &key).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                self.cache.lock().insert(key, fresh);
                Ok(token)
            }
            Err(e) => match cached {
                Some(c) if now < c.expires_at => {
                    tracing::warn!(error = %e, service_account = %key.service_account,
                        "refreshing the ServiceAccount token failed; the cached one is still valid");
                    Ok(c.token)
                }
                _ => Err(format!("failed to fetch token: {e}")),
            },
        }
    }

    /// Makes every cached token due, so the next [`Tokens::get`] asks for a new one (as the
    /// passing of 80 % of its TTL would; tests cannot wait that long).
    pub fn mark_due(&self) {
        let now = Instant::now();
        for c in self.cache.lock().values_mut() {
            c.refresh_at = now;
        }
    }

    /// The earliest time a cached token is due for refresh (the worker syncs by then).
    pub fn next_refresh(&self) -> Option<Instant> {
        self.cache.lock().values().map(|c| c.refresh_at).min()
    }
}

async fn request(writer: &Writer, pod: &Pod, key: &Key) -> Result<Cached, String> {
    let api: Api<ServiceAccount> = Api::namespaced(writer.client.clone(), spec::namespace(pod));
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: key.audience.iter().cloned().collect(),
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(spec::name(pod).to_string()),
                uid: Some(spec::uid(pod).to_string()),
            }),
        },
        ..Default::default()
    };
    let sent = Instant::now();
    let got = writer
        .write(
            "token_request",
            api.create_token_request(&key.service_account, &PostParams::default(), &tr),
        )
        .await
        .map_err(|e| api_message(&e))?;
    let status = got
        .status
        .ok_or_else(|| "the TokenRequest response has no status".to_string())?;
    if status.token.is_empty() {
        return Err("the TokenRequest response has no token".into());
    }
    // The TTL the server granted (it may differ from the one asked for) and what is left of
    // it by the server's clock.
    let ttl = got
        .spec
        .expiration_seconds
        .filter(|s| *s > 0)
        .unwrap_or(key.expiration_seconds)
        .max(0) as u64;
    let ttl = Duration::from_secs(ttl);
    let left = status
        .expiration_timestamp
        .0
        .duration_since(k8s_openapi::jiff::Timestamp::now())
        .as_secs_f64();
    let remaining = if left.is_finite() && left > 0.0 {
        Duration::from_secs_f64(left).min(ttl)
    } else {
        Duration::ZERO
    };
    tracing::debug!(service_account = %key.service_account, ttl = ttl.as_secs(), "ServiceAccount token issued");
    Ok(Cached {
        token: status.token,
        refresh_at: sent + refresh_after(ttl, remaining),
        expires_at: sent + remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_eighty_percent_or_after_a_day() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        // A fresh one-hour token: refreshed after 48 minutes.
        assert_eq!(
            refresh_after(h(1), h(1)),
            Duration::from_secs(48 * 60),
            "80 % of the TTL"
        );
        // Half of it already gone: 18 minutes left before the 20 % mark.
        assert_eq!(
            refresh_after(h(1), Duration::from_secs(1800)),
            Duration::from_secs(18 * 60)
        );
        // Past the mark: at once.
        assert_eq!(
            refresh_after(h(1), Duration::from_secs(600)),
            Duration::ZERO
        );
        // A week-long token is replaced after a day, not after 80 % of a week.
        assert_eq!(refresh_after(h(7 * 24), h(7 * 24)), h(24));
        // The minimum (10 minutes) still gets two minutes of slack.
        assert_eq!(
            refresh_after(Duration::from_secs(600), Duration::from_secs(600)),
            Duration::from_secs(480)
        );
    }
}
