//! Storage benchmark: write throughput of both backends against raw etcd puts, and watch
//! delivery latency, measured in one run on one machine so the ratios mean something.
//!
//! `cargo bench -p storage --bench storage [-- --seconds N]`
//!
//! - Writes: N concurrent writers create distinct keys with a 2.5 KB value (a typical Pod's
//!   JSON) for a fixed time. "raw etcd" is `etcd-client` puts on the same etcd; "etcd backend" is
//!   `EtcdStore::create` (a compare-and-put transaction); "embedded" is `EmbeddedStore::create`
//!   on a file in the temp directory (same disk as etcd's data dir). Each figure is the median
//!   of three rounds run in rotating order.
//! - Watch: 100 watchers on one prefix while one writer creates 100 keys/s; latency is from
//!   the moment the create was issued to the moment each watcher receives the event
//!   (commit + fan-out), reported as p50/p99 over every (event, watcher) pair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use storage::etcd::EtcdStore;
use storage::testing::{embedded_path, EtcdServer};
use storage::{Storage, WatchOptions};

const VALUE_SIZE: usize = 2_500;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const WATCHERS: usize = 100;
const WATCH_RATE: u64 = 100;
const ROUNDS: usize = 3;

fn value() -> Bytes {
    Bytes::from(vec![b'x'; VALUE_SIZE])
}

/// Runs `writers` loops of `op(writer, i)` for `secs` seconds; returns completed ops per second.
async fn rate<F, Fut>(writers: usize, secs: f64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks = (0..writers).map(|w| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                op(w, n).await;
                n += 1;
            }
            n
        })
    });
    let total: u64 = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("writer task"))
        .sum();
    total as f64 / start.elapsed().as_secs_f64()
}

async fn store_rate(store: Arc<dyn Storage>, tag: &str, writers: usize, secs: f64) -> f64 {
    let prefix = format!("/bench/{tag}/{writers}/");
    rate(writers, secs, move |w, i| {
        let store = store.clone();
        let key = format!("{prefix}{w}/{i}");
        async move {
            store.create(&key, value()).await.expect("create");
        }
    })
    .await
}

async fn raw_etcd_rate(client: etcd_client::Client, writers: usize, secs: f64) -> f64 {
    rate(writers, secs, move |w, i| {
        let mut kv = client.kv_client();
        let key = format!("/bench/raw/{writers}/{w}/{i}");
        async move {
            kv.put(key, value().to_vec(), None).await.expect("put");
        }
    })
    .await
}

/// The request a create needs, sent raw: put only if the key does not exist. Upstream's
/// kube-apiserver sends the same transaction, so this separates etcd's cost of the
/// conditional write from the cost of this crate.
async fn raw_etcd_txn_rate(client: etcd_client::Client, writers: usize, secs: f64) -> f64 {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    rate(writers, secs, move |w, i| {
        let mut kv = client.kv_client();
        let key = format!("/bench/rawtxn/{writers}/{w}/{i}");
        async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value().to_vec(), None)]);
            kv.txn(txn).await.expect("txn");
        }
    })
    .await
}

/// Deletes what a measurement wrote to etcd and compacts, so every measurement starts from a
/// small database (etcd's default 2 GiB quota would otherwise fill up during the run).
async fn reset_etcd(client: &etcd_client::Client) {
    let mut kv = client.kv_client();
    let resp = kv
        .delete(
            "/bench/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("delete benchmark keys");
    let rev = resp.header().map_or(0, |h| h.revision());
    kv.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .expect("compact");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// p50 and p99 delivery latency with [`WATCHERS`] watchers at [`WATCH_RATE`] writes/s.
async fn watch_latency(store: Arc<dyn Storage>, tag: &str, secs: f64) -> (Duration, Duration) {
    let prefix = format!("/bench/watch/{tag}/");
    let start_rev = store.current_revision().await.expect("revision");
    let writes = (secs * WATCH_RATE as f64) as usize;
    let issued: Arc<parking_lot::Mutex<std::collections::HashMap<String, Instant>>> =
        Arc::default();
    let mut readers = Vec::new();
    for _ in 0..WATCHERS {
        let mut w = store
            .watch(WatchOptions::new(prefix.clone(), start_rev))
            .await
            .expect("watch");
        let issued = issued.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(writes);
            while lat.len() < writes {
                match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
                    Ok(Some(Ok(ev))) => {
                        let now = Instant::now();
                        if let Some(key) = ev.key() {
                            if let Some(t) = issued.lock().get(key) {
                                lat.push(now.duration_since(*t));
                            }
                        }
                    }
                    other => panic!("watcher failed: {other:?}"),
                }
            }
            lat
        }));
    }
    let period = Duration::from_secs(1) / WATCH_RATE as u32;
    let mut tick = tokio::time::interval(period);
    for i in 0..writes {
        tick.tick().await;
        let key = format!("{prefix}{i}");
        issued.lock().insert(key.clone(), Instant::now());
        store.create(&key, value()).await.expect("create");
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.expect("reader"));
    }
    all.sort_unstable();
    (percentile(&all, 0.5), percentile(&all, 0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut secs = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            secs = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seconds takes a number");
        }
    }
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("start etcd");
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect raw client");
    let etcd_store: Arc<dyn Storage> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()])
            .await
            .expect("connect etcd store"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Arc<dyn Storage> = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(embedded_path(dir.path()))).expect("open embedded"),
    );

    println!(
        "value size {VALUE_SIZE} B, {secs} s per measurement, median of {ROUNDS} rounds, etcd {}",
        etcd.endpoint()
    );
    println!();
    println!("| writers | raw etcd put/s | raw etcd create-txn/s | etcd backend create/s | embedded create/s | etcd backend ÷ raw put | etcd backend ÷ raw txn | embedded ÷ raw put |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for writers in CONCURRENCY {
        // Each subject runs ROUNDS times in rotating order and reports its median, so neither
        // etcd's growing database nor a noisy neighbour favours whoever runs first.
        let mut samples = [const { Vec::new() }; 4];
        for round in 0..ROUNDS {
            for turn in 0..4 {
                let subject = (round + turn) % 4;
                let tag = format!("r{round}");
                let r = match subject {
                    0 => raw_etcd_rate(client.clone(), writers, secs).await,
                    1 => raw_etcd_txn_rate(client.clone(), writers, secs).await,
                    2 => store_rate(etcd_store.clone(), &format!("etcd{tag}"), writers, secs).await,
                    _ => store_rate(embedded.clone(), &format!("emb{tag}"), writers, secs).await,
                };
                samples[subject].push(r);
                if subject < 3 {
                    reset_etcd(&client).await;
                }
            }
        }
        let [raw, txn, backend, emb] = samples.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        println!(
            "| {writers} | {raw:.0} | {txn:.0} | {backend:.0} | {emb:.0} | {:.2} | {:.2} | {:.2} |",
            backend / raw,
            backend / txn,
            emb / raw
        );
    }
    println!();
    println!("| backend | watchers | writes/s | p50 delivery | p99 delivery |");
    println!("|---|---:|---:|---:|---:|");
    for (tag, store) in [("etcd backend", etcd_store), ("embedded", embedded)] {
        let (p50, p99) = watch_latency(store, tag.split(' ').next().unwrap_or(tag), secs).await;
        println!(
            "| {tag} | {WATCHERS} | {WATCH_RATE} | {} | {} |",
            ms(p50),
            ms(p99)
        );
    }
    drop(etcd);
}
