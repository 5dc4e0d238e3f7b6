//! What only the embedded store promises: durability across `kill -9`, persistence across a
//! restart, and a bounded file under heartbeat churn.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use storage::testing::{embedded_path, next_event};
use storage::{ListOptions, Storage, WatchEvent, WatchOptions};

const CHILD_ENV: &str = "COX_STORAGE_CRASH_CHILD_PATH";

fn open(path: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(path)).expect("open the embedded store")
}

/// The writer process of [`kill_9_loses_no_acknowledged_write`]. Run normally it has nothing
/// to do; the parent test runs this test binary again with the store path in the environment.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Arc::new(open(std::path::Path::new(&path)));
        let generation = std::process::id();
        let writers = (0..8).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let counter = format!("/crash/counter/{w}");
                let mut rev = match store.get(&counter).await {
                    Ok(kv) => kv.mod_revision,
                    Err(_) => store.create(&counter, Bytes::from("0")).await.unwrap(),
                };
                for i in 1u64.. {
                    let key = format!("/crash/keys/{generation}-{w}-{i}");
                    store.create(&key, Bytes::from(key.clone())).await.unwrap();
                    println!("ack create {key}");
                    rev = store
                        .update(&counter, Bytes::from(i.to_string()), rev)
                        .await
                        .unwrap();
                    println!("ack counter {w} {i}");
                }
            })
        });
        futures::future::join_all(writers).await;
    });
}

/// Kills a writing process with SIGKILL three times at arbitrary moments; after each, every
/// write it had acknowledged is in the reopened store.
#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_path(dir.path());
    let mut acked_keys = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the crash child");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut counters = [0u64; 8];
        let mut lines = stdout.lines();
        let kill_after = 1_500 + round * 700;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with("ack ") {
                seen += 1;
                record(&line, &mut acked_keys, &mut counters);
            }
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        // Acknowledgements already written to the pipe before the kill count too.
        for line in lines {
            let line = line.unwrap();
            if line.starts_with("ack ") {
                record(&line, &mut acked_keys, &mut counters);
            }
        }
        child.wait().unwrap();

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = open(&path);
            for key in &acked_keys {
                let kv = store.get(key).await.unwrap_or_else(|e| {
                    panic!("round {round}: acknowledged {key} lost after kill -9: {e}")
                });
                assert_eq!(kv.value, Bytes::from(key.clone()));
            }
            for (w, acked) in counters.iter().enumerate() {
                let kv = store.get(&format!("/crash/counter/{w}")).await.unwrap();
                let stored: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                assert!(
                    stored >= *acked,
                    "round {round}: counter {w} acknowledged {acked}, stored {stored}"
                );
            }
        });
    }
    assert!(acked_keys.len() > 1_000);
}

fn record(line: &str, keys: &mut Vec<String>, counters: &mut [u64; 8]) {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["ack", "create", key] => keys.push((*key).to_owned()),
        ["ack", "counter", w, i] => {
            let w: usize = w.parse().unwrap();
            counters[w] = counters[w].max(i.parse().unwrap());
        }
        _ => panic!("unexpected line from the crash child: {line}"),
    }
}

/// Data, revisions, compaction state and history survive closing and reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revisions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_path(dir.path());
    let (first, last) = {
        let store = open(&path);
        let first = store.create("/r/a", Bytes::from("1")).await.unwrap();
        let mut rev = first;
        for i in 2..=10 {
            rev = store
                .update("/r/a", Bytes::from(i.to_string()), rev)
                .await
                .unwrap();
        }
        store.create("/r/b", Bytes::from("b")).await.unwrap();
        store.delete("/r/b", None).await.unwrap();
        store.compact(first + 2).await.unwrap();
        (first, store.current_revision().await.unwrap())
    };
    let store = open(&path);
    assert_eq!(store.current_revision().await.unwrap(), last);
    assert_eq!(store.get("/r/a").await.unwrap().value, Bytes::from("10"));
    assert!(store.get("/r/b").await.is_err());
    let next = store.create("/r/c", Bytes::from("c")).await.unwrap();
    assert_eq!(next, last + 1, "revisions continue where they stopped");
    let old = ListOptions {
        revision: Some(first),
        ..Default::default()
    };
    assert!(matches!(
        store.list("/r/", &old).await,
        Err(storage::Error::Expired { .. })
    ));
    let mut w = store
        .watch(WatchOptions::new("/r/", first + 2))
        .await
        .unwrap();
    let replayed = next_event(&mut w).await.unwrap();
    assert_eq!(replayed.revision(), first + 3);
    assert!(matches!(replayed, WatchEvent::Modified { .. }));
}

/// Heartbeat churn (100 Lease-sized objects updated 100,000 times) leaves the file under
/// 20 MB thanks to automatic compaction, and every key with its last value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_stays_bounded_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_path(dir.path());
    let store = Arc::new(open(&path));
    // A Lease as the node agent renews it: ~350 bytes of JSON.
    let lease = |i: usize, n: u64| {
        Bytes::from(format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"node-{i:04}","namespace":"kube-node-lease","uid":"0b8c2e0e-6f6d-4a57-9a8e-{i:012}","ownerReferences":[{{"apiVersion":"v1","kind":"Node","name":"node-{i:04}"}}]}},"spec":{{"holderIdentity":"node-{i:04}","leaseDurationSeconds":40,"renewTime":"2026-11-29T06:00:00.{n:06}Z"}}}}"#
        ))
    };
    let keys = 100;
    let per_key = 1_000u64;
    let tasks = (0..keys).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = format!("/registry/coordination.k8s.io/leases/kube-node-lease/node-{i:04}");
            let mut rev = store.create(&key, lease(i, 0)).await.unwrap();
            for n in 1..per_key {
                rev = store.update(&key, lease(i, n), rev).await.unwrap();
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let listed = store
        .list(
            "/registry/coordination.k8s.io/leases/",
            &ListOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), keys);
    for (i, kv) in listed.items.iter().enumerate() {
        assert_eq!(kv.value, lease(i, per_key - 1));
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "churn: {} updates, file size {} bytes",
        keys as u64 * per_key,
        size
    );
    assert!(
        size < 20 * 1024 * 1024,
        "store file is {size} bytes after churn"
    );
    // Compaction kept recent history: a watch from a few thousand revisions back still works.
    let head = store.current_revision().await.unwrap();
    let mut w = store
        .watch(WatchOptions::new("/registry/", head - 5_000))
        .await
        .unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.revision(), head - 4_999);
}
