//! What only the etcd backend has to survive: etcd itself going away and coming back.

use std::time::Duration;

use bytes::Bytes;
use storage::etcd::EtcdStore;
use storage::testing::{next_event, EtcdServer};
use storage::{Storage, WatchOptions};

/// A watch resumes from the last revision it delivered after etcd is killed and restarted:
/// events written before and after come through exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restart() {
    let mut etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let mut w = store
        .watch(WatchOptions::new("/resume/", start))
        .await
        .unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(
            store
                .create(&format!("/resume/a{i}"), Bytes::from("x"))
                .await
                .unwrap(),
        );
    }
    for rev in &written[..5] {
        assert_eq!(next_event(&mut w).await.unwrap().revision(), *rev);
    }
    // Half of the events are still unread when etcd dies.
    let mut etcd = tokio::task::spawn_blocking(move || {
        etcd.restart();
        etcd
    })
    .await
    .unwrap();
    // The client reconnects on its own; retry while etcd finishes starting.
    for i in 10..20 {
        let key = format!("/resume/a{i}");
        let rev = loop {
            match store.create(&key, Bytes::from("x")).await {
                Ok(rev) => break rev,
                Err(storage::Error::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("write after restart: {e}"),
            }
        };
        written.push(rev);
    }
    for rev in &written[5..] {
        assert_eq!(next_event(&mut w).await.unwrap().revision(), *rev);
    }
    etcd.kill();
}
