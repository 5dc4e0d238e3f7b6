//! Event expiry. Upstream stores Events with an etcd lease so they vanish after `--event-ttl`
//! (1 h); without it, every controller's and scheduler's events would grow the store forever.
//! Here a sweeper finds expired Events in the watch cache and deletes them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use storage::Storage;

use crate::cache::WatchCache;

const PREFIXES: [&str; 2] = ["/registry/core/events/", "/registry/events.k8s.io/events/"];

/// The last time an Event was written to: the newest of its timestamps.
fn last_written(event: &Value) -> Option<jiff::Timestamp> {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p)?.as_str()?.parse::<jiff::Timestamp>().ok())
    .max()
}

/// Deletes every Event last written more than `ttl` before `now`; returns how many went.
pub async fn sweep(
    cache: &WatchCache,
    storage: &dyn Storage,
    ttl: Duration,
    now: jiff::Timestamp,
) -> usize {
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return 0;
    };
    let mut deleted = 0;
    for prefix in PREFIXES {
        let (objects, _) = cache.list(prefix);
        for obj in objects {
            let Ok(event) = serde_json::from_slice::<Value>(&obj.json) else {
                continue;
            };
            let expired = last_written(&event)
                .and_then(|t| t.checked_add(ttl).ok())
                .is_some_and(|deadline| deadline < now);
            if !expired {
                continue;
            }
            let rev = crate::object::resource_version(&event).and_then(Result::ok);
            // The revision precondition keeps an Event that was just updated.
            if storage.delete(&obj.key, rev).await.is_ok() {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Sweeps every `min(ttl, 1 min)` until the cache is dropped (holding only a weak reference,
/// so a stopped server releases its storage).
pub fn spawn_sweeper(cache: &Arc<WatchCache>, ttl: Duration) {
    let cache = Arc::downgrade(cache);
    let period = ttl
        .min(Duration::from_secs(60))
        .max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            let n = sweep(&cache, cache.storage(), ttl, jiff::Timestamp::now()).await;
            if n > 0 {
                tracing::debug!(deleted = n, "expired events removed");
            }
        }
    });
}
