//! The `leader` module against a real API server: one holder at a time, renewal keeps the
//! lease, and a candidate takes over only after the holder stops renewing.

use std::time::Duration;

use e2e::{Backend, Cluster};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use scheduler::{LeaderElectionConfig, LeaderElector};

fn elector(c: &Cluster, identity: &str) -> LeaderElector {
    let client =
        kube::Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    LeaderElector::new(
        client,
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
            ..LeaderElectionConfig::new("test-lease", identity)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_takeover_after_expiry() {
    let c = Cluster::start(Backend::Embedded).await;
    let mut a = elector(&c, "a");
    let mut b = elector(&c, "b");
    assert!(a.try_acquire_or_renew().await.expect("a acquires"));
    // While a keeps renewing, b never gets it, even across several lease durations.
    for _ in 0..15 {
        assert!(a.try_acquire_or_renew().await.expect("a renews"));
        assert!(!b.try_acquire_or_renew().await.expect("b tries"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // a stops renewing (dies): b takes over once the lease it observed has expired.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !b.try_acquire_or_renew().await.expect("b tries") {
        assert!(tokio::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Now a, coming back, must not think it still leads.
    assert!(!a.try_acquire_or_renew().await.expect("a tries"));
    let client =
        kube::Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    let lease = Api::<Lease>::namespaced(client, "kube-system")
        .get("test-lease")
        .await
        .expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_the_next_attempt() {
    let c = Cluster::start(Backend::Embedded).await;
    let mut a = elector(&c, "a");
    let mut b = elector(&c, "b");
    assert!(a.try_acquire_or_renew().await.expect("a acquires"));
    assert!(!b.try_acquire_or_renew().await.expect("b tries"));
    let client =
        kube::Client::try_from(kube::Config::new(c.url().parse().expect("url"))).expect("client");
    LeaderElector::release(client, a.config())
        .await
        .expect("release");
    // No holder: the very next attempt wins, without waiting for expiry.
    assert!(b.try_acquire_or_renew().await.expect("b takes over"));
    assert!(!a.try_acquire_or_renew().await.expect("a tries"));
}
