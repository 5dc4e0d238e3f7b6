//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`.
//!
//! Shared by the scheduler and the controller manager: [`LeaderElector`] only knows a Lease
//! and an identity. Safety ("never two leaders") rests on two rules:
//! - a candidate takes over only after the lease record it *observed* stayed unchanged for a
//!   whole `lease_duration` on its own clock (no trust in other machines' clocks), and every
//!   write carries the resourceVersion read, so concurrent takeovers conflict;
//! - the leader stops leading when it has not renewed for `renew_deadline`, which is shorter
//!   than `lease_duration`, so it has stopped before anyone else may start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Lease reads and writes fail as the API client does.
pub type Error = kube::Error;

/// Timing and identity, with upstream kube-scheduler's defaults.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// `kube-system/<name>` with 15 s / 10 s / 2 s.
    pub fn new(name: &str, identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The last lease record seen and when this process first saw it.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    observed: Option<Observed>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaderElectionConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.cfg
    }

    /// One attempt: creates the lease, renews it if ours, or takes it over if it expired.
    /// `Ok(true)` means we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let existing = self.api.get_opt(&self.cfg.name).await?;
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renew: spec.renew_time.clone(),
                at: Instant::now(),
            });
        }
        let ours = holder.as_deref() == Some(self.cfg.identity.as_str());
        // The holder's own declared duration counts, as in client-go.
        let duration = spec
            .lease_duration_seconds
            .and_then(|d| u64::try_from(d).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.lease_duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at + duration <= Instant::now());
        if !ours && holder.is_some() && !expired {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        if !ours {
            new_spec.holder_identity = Some(self.cfg.identity.clone());
            new_spec.acquire_time = Some(now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.lease_duration_seconds = Some(secs);
        new_spec.renew_time = Some(now());
        lease.spec = Some(new_spec);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it (client-go's `ReleaseOnCancel`): clears the holder
    /// and shortens the duration to 1 s so a standby takes over at its next retry instead
    /// of waiting out a full lease duration.
    pub async fn release(client: kube::Client, cfg: &LeaderElectionConfig) -> Result<(), Error> {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let Some(mut lease) = api.get_opt(&cfg.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match api.replace(&cfg.name, &PostParams::default(), &lease).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease, retrying every `retry_period`.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews every `retry_period` and returns when leadership is lost: no successful renewal
    /// within `renew_deadline`, or someone else holds the lease.
    pub async fn renew_until_lost(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let attempt = tokio::time::timeout(
                self.cfg.renew_deadline.saturating_sub(last_ok.elapsed()),
                self.try_acquire_or_renew(),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => last_ok = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.cfg.name, "lease taken by another holder");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => {}
            }
            if last_ok.elapsed() >= self.cfg.renew_deadline {
                tracing::warn!(lease = %self.cfg.name, "renew deadline passed; stepping down");
                return;
            }
        }
    }

    /// Runs `work` only while leading: acquires, starts it, and drops it (cancelling it) the
    /// moment leadership is lost. Returns after losing the lease, as kube-scheduler exits.
    pub async fn run<F: std::future::Future<Output = ()>>(mut self, work: F) {
        self.acquire().await;
        tokio::select! {
            () = work => {}
            () = self.renew_until_lost() => {}
        }
    }
}
