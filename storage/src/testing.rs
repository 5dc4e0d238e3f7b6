//! The storage conformance suite, and the fixtures it runs on.
//!
//! Every backend must pass every check here; [`conformance_tests!`](crate::conformance_tests)
//! turns the suite into one `#[tokio::test]` per check for a backend. Checks assert what the
//! API server (and through it, kubectl) relies on, never how a backend does it.
//!
//! [`EtcdServer`] starts a real etcd (Debian's `etcd-server`) on free loopback ports with a
//! temporary data directory, so tests run side by side without sharing state, and kills it and
//! removes its directory when dropped. A missing `etcd` binary fails the test loudly: these
//! tests never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::etcd::EtcdStore;
use crate::{
    guaranteed_update, Error, KeyValue, ListOptions, Revision, Storage, UpdateError, WatchEvent,
    WatchOptions, WatchStream,
};

/// A real etcd process for one test (or one benchmark run).
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

/// Picks a loopback port nobody listens on. Racy by nature (the port is free only when asked),
/// which [`EtcdServer::start`] covers by retrying with new ports.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on any machine with loopback")
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub fn start() -> EtcdServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = EtcdServer {
                child: None,
                client_port: free_port(),
                peer_port: free_port(),
                dir: tempfile::Builder::new()
                    .prefix("cox-etcd-")
                    .tempdir()
                    .expect("create a temporary directory for etcd"),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills etcd (SIGKILL) without removing its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("etcd did not restart: {e}");
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))
            .map_err(|e| format!("create etcd.log: {e}"))?;
        let child = Command::new("etcd")
            .args(["--name", "cox-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("cox-test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("cannot run `etcd` ({e}); install Debian's etcd-server (.ci/run does)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(self.dir.path().join("etcd.log"))
                        .unwrap_or_default();
                    return Err(format!("etcd exited with {status}: {log}"));
                }
            }
            if etcd_answers(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err("etcd did not answer within 20 s".into())
    }
}

/// etcd answers `/health` with `{"health":"true"}` once it can serve.
fn etcd_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store under test with whatever keeps it alive (an etcd process, a temporary directory).
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Storage>,
    /// Kept for its `Drop`.
    pub guard: Guard,
}

/// What a [`Fixture`] owns besides the store.
pub enum Guard {
    /// An etcd process.
    Etcd(EtcdServer),
    /// The embedded store's directory.
    Dir(tempfile::TempDir),
}

impl Guard {
    /// The etcd server, for backend-specific tests.
    pub fn etcd(&mut self) -> Option<&mut EtcdServer> {
        match self {
            Guard::Etcd(e) => Some(e),
            Guard::Dir(_) => None,
        }
    }
}

/// A fresh etcd and a store on it.
pub async fn etcd_fixture() -> Fixture {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("etcd start task");
    let store = EtcdStore::connect(&[server.endpoint()])
        .await
        .expect("connect to the test etcd");
    Fixture {
        store: Arc::new(store),
        guard: Guard::Etcd(server),
    }
}

/// A fresh embedded store in a temporary directory.
pub async fn embedded_fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("cox-store-")
        .tempdir()
        .expect("create a temporary directory");
    let store = EmbeddedStore::open(EmbeddedConfig::new(embedded_path(dir.path())))
        .expect("open the embedded store");
    Fixture {
        store: Arc::new(store),
        guard: Guard::Dir(dir),
    }
}

/// Where fixtures keep the embedded store's file inside `dir`.
pub fn embedded_path(dir: &Path) -> PathBuf {
    dir.join("state.redb")
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh store made by
/// `$fixture` (an async fn returning a [`Fixture`]).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::conformance_tests!(@each $fixture;
            crud_and_preconditions,
            revisions_increase,
            guaranteed_update_retries_conflicts,
            guaranteed_update_skips_noop_and_aborts,
            list_is_sorted_and_prefix_bounded,
            list_at_past_revisions,
            paging_is_a_consistent_snapshot_under_writes,
            invalid_continue_token_rejected,
            count_keys,
            watch_replays_from_revision_in_order,
            watch_from_now_and_prefix_isolation,
            watch_delivers_exactly_once_to_many_watchers,
            slow_watcher_is_cut_off_without_slowing_writers,
            watch_progress_notifications,
            compacted_revision_expires,
        );
    };
    (@each $fixture:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $fixture().await;
                $crate::testing::$check(fixture.store.as_ref()).await;
            }
        )*
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A key namespace per check, so a failure names its check in the keys it left.
fn prefix(check: &str) -> String {
    format!("/registry/test/{check}/")
}

/// Waits for the next item of a watch, failing the test after 30 s: a hang detector, not a
/// timing assertion.
pub async fn next_event(w: &mut WatchStream) -> Result<WatchEvent, Error> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress(_)))) => continue,
            Ok(Some(item)) => return item,
            Ok(None) => panic!("watch ended unexpectedly"),
            Err(_) => panic!("no watch event within 30 s"),
        }
    }
}

/// Create, get, update and delete, with every precondition failure.
pub async fn crud_and_preconditions(s: &dyn Storage) {
    let k = format!("{}a", prefix("crud"));
    let r1 = s.create(&k, b("v1")).await.unwrap();
    assert!(matches!(
        s.create(&k, b("again")).await,
        Err(Error::AlreadyExists { .. })
    ));
    let got = s.get(&k).await.unwrap();
    assert_eq!(
        got,
        KeyValue {
            key: k.clone(),
            value: b("v1"),
            create_revision: r1,
            mod_revision: r1,
            stale: false
        }
    );

    let r2 = s.update(&k, b("v2"), r1).await.unwrap();
    assert!(r2 > r1);
    match s.update(&k, b("stale"), r1).await {
        Err(Error::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (r1, r2)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let got = s.get(&k).await.unwrap();
    assert_eq!(
        (got.value, got.create_revision, got.mod_revision),
        (b("v2"), r1, r2)
    );
    assert!(matches!(
        s.update(&format!("{k}-missing"), b("x"), r1).await,
        Err(Error::NotFound { .. })
    ));

    assert!(matches!(
        s.delete(&k, Some(r1)).await,
        Err(Error::Conflict { .. })
    ));
    let deleted = s.delete(&k, Some(r2)).await.unwrap();
    assert_eq!(deleted.value, b("v2"), "delete returns the last value");
    assert!(deleted.mod_revision > r2, "delete reports its own revision");
    assert!(matches!(s.get(&k).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.delete(&k, None).await,
        Err(Error::NotFound { .. })
    ));

    // Re-created keys start a new life: a new create revision.
    let r3 = s.create(&k, b("v3")).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap().create_revision, r3);
    let gone = s.delete(&k, None).await.unwrap();
    assert_eq!(gone.value, b("v3"));
}

/// Every write gets a strictly greater revision, and the store reports it as current.
pub async fn revisions_increase(s: &dyn Storage) {
    let p = prefix("revisions");
    let mut last = s.current_revision().await.unwrap();
    for i in 0..20 {
        let rev = s.create(&format!("{p}{i}"), b("x")).await.unwrap();
        assert!(rev > last, "revision {rev} after {last}");
        assert!(s.current_revision().await.unwrap() >= rev);
        last = rev;
    }
}

/// Concurrent read-modify-write loops lose no increment.
pub async fn guaranteed_update_retries_conflicts(s: &dyn Storage) {
    let k = format!("{}counter", prefix("gu"));
    let increment = |cur: Option<&KeyValue>| -> Result<Bytes, std::convert::Infallible> {
        let n: u64 = cur
            .map(|kv| std::str::from_utf8(&kv.value).unwrap().parse().unwrap())
            .unwrap_or(0);
        Ok(Bytes::from((n + 1).to_string()))
    };
    let tasks = (0..10).map(|_| async {
        for _ in 0..20 {
            guaranteed_update(s, &k, increment).await.unwrap();
        }
    });
    futures::future::join_all(tasks).await;
    assert_eq!(s.get(&k).await.unwrap().value, b("200"));
}

/// An update that changes nothing writes nothing; a closure's error aborts the update.
pub async fn guaranteed_update_skips_noop_and_aborts(s: &dyn Storage) {
    let k = format!("{}obj", prefix("gu-noop"));
    let created = guaranteed_update(s, &k, |cur| {
        assert!(cur.is_none());
        Ok::<_, ()>(b("v"))
    })
    .await
    .unwrap();
    let same = guaranteed_update(s, &k, |cur| Ok::<_, ()>(cur.unwrap().value.clone()))
        .await
        .unwrap();
    assert_eq!(
        same.mod_revision, created.mod_revision,
        "no-op must not write"
    );
    let aborted = guaranteed_update(s, &k, |_| Err::<Bytes, _>("precondition failed")).await;
    assert!(matches!(
        aborted,
        Err(UpdateError::Aborted("precondition failed"))
    ));
    assert_eq!(s.get(&k).await.unwrap().mod_revision, created.mod_revision);
}

/// Lists come back in key order and never cross their prefix (`a/` does not include `ab/`).
pub async fn list_is_sorted_and_prefix_bounded(s: &dyn Storage) {
    let p = prefix("list");
    for name in ["ns/c", "ns/a", "ns/b", "ns2/a", "nt/a"] {
        s.create(&format!("{p}{name}"), b(name)).await.unwrap();
    }
    let all = s.list(&format!("{p}ns/"), &ListOptions::default()).await;
    let all = all.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        ["ns/a", "ns/b", "ns/c"].map(|n| format!("{p}{n}")).to_vec()
    );
    assert_eq!(all.revision, s.current_revision().await.unwrap());
    assert!(all.continue_token.is_none());
    assert_eq!(
        s.list(&p, &ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let empty = s
        .list(&format!("{p}none/"), &ListOptions::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty());
}

async fn snapshot(s: &dyn Storage, p: &str, revision: Revision) -> BTreeMap<String, Bytes> {
    let opts = ListOptions {
        revision: Some(revision),
        ..Default::default()
    };
    let list = s.list(p, &opts).await.unwrap();
    assert_eq!(list.revision, revision);
    list.items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// A list at an older revision shows the state as it was then: created, updated and deleted
/// keys included.
pub async fn list_at_past_revisions(s: &dyn Storage) {
    let p = prefix("past");
    let (a, bk, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let r1 = s.create(&a, b("a1")).await.unwrap();
    let r2 = s.create(&bk, b("b1")).await.unwrap();
    let r3 = s.update(&a, b("a2"), r1).await.unwrap();
    let r4 = s.delete(&bk, None).await.unwrap().mod_revision;
    let r5 = s.create(&c, b("c1")).await.unwrap();
    let r6 = s.create(&bk, b("b2")).await.unwrap();

    let expect = |pairs: &[(&String, &str)]| -> BTreeMap<String, Bytes> {
        pairs.iter().map(|(k, v)| ((*k).clone(), b(v))).collect()
    };
    assert_eq!(snapshot(s, &p, r1).await, expect(&[(&a, "a1")]));
    assert_eq!(
        snapshot(s, &p, r2).await,
        expect(&[(&a, "a1"), (&bk, "b1")])
    );
    assert_eq!(
        snapshot(s, &p, r3).await,
        expect(&[(&a, "a2"), (&bk, "b1")])
    );
    assert_eq!(snapshot(s, &p, r4).await, expect(&[(&a, "a2")]));
    assert_eq!(snapshot(s, &p, r5).await, expect(&[(&a, "a2"), (&c, "c1")]));
    assert_eq!(
        snapshot(s, &p, r6).await,
        expect(&[(&a, "a2"), (&bk, "b2"), (&c, "c1")])
    );
    // Revisions are carried per item too.
    let opts = ListOptions {
        revision: Some(r3),
        ..Default::default()
    };
    let items = s.list(&p, &opts).await.unwrap().items;
    assert_eq!((items[0].create_revision, items[0].mod_revision), (r1, r3));
    let future = ListOptions {
        revision: Some(r6 + 1000),
        ..Default::default()
    };
    assert!(matches!(
        s.list(&p, &future).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// Paging with limit + continue returns every key of the first page's revision exactly once,
/// with its value at that revision, while writers create, update and delete under the prefix.
pub async fn paging_is_a_consistent_snapshot_under_writes(s: &dyn Storage) {
    let p = prefix("paging");
    for i in 0..100 {
        s.create(&format!("{p}{i:03}"), b(&format!("v{i}")))
            .await
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = async {
        let mut i = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let k = format!("{p}{:03}", i % 100);
            match i % 3 {
                0 => {
                    let _ = s.delete(&k, None).await;
                }
                1 => {
                    let _ = s.create(&k, b("recreated")).await;
                }
                _ => {
                    let _ = s.create(&format!("{p}new{i}"), b("new")).await;
                }
            }
            i += 1;
            tokio::task::yield_now().await;
        }
    };
    let reader = async {
        let mut seen = BTreeMap::new();
        let mut opts = ListOptions {
            limit: Some(7),
            ..Default::default()
        };
        let mut revision = None;
        let mut pages = 0;
        loop {
            let page = s.list(&p, &opts).await.unwrap();
            pages += 1;
            assert_eq!(*revision.get_or_insert(page.revision), page.revision);
            assert!(page.items.len() <= 7);
            for kv in page.items {
                assert!(
                    seen.insert(kv.key.clone(), kv.value).is_none(),
                    "{} listed twice",
                    kv.key
                );
            }
            match page.continue_token {
                Some(t) => {
                    assert!(page.remaining.is_none_or(|r| r > 0));
                    opts.continue_token = Some(t)
                }
                None => break,
            }
            // Give the writer time to change what later pages would see.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (seen, revision.unwrap(), pages)
    };
    let ((seen, revision, pages), ()) = tokio::join!(reader, writer);
    assert!(pages >= 15, "100 keys in pages of 7 take at least 15 pages");
    assert_eq!(seen, snapshot(s, &p, revision).await);
    assert!(
        s.current_revision().await.unwrap() > revision,
        "writes happened meanwhile"
    );
}

/// A continue token that the store did not issue is refused, not misread.
pub async fn invalid_continue_token_rejected(s: &dyn Storage) {
    let opts = ListOptions {
        continue_token: Some("bm90LWEtdG9rZW4=".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.list(&prefix("token"), &opts).await,
        Err(Error::InvalidContinue(_))
    ));
}

/// Count sees exactly the live keys under the prefix.
pub async fn count_keys(s: &dyn Storage) {
    let p = prefix("count");
    for i in 0..12 {
        s.create(&format!("{p}{i}"), b("x")).await.unwrap();
    }
    s.create(&format!("{p}x/../../other"), b("x"))
        .await
        .unwrap();
    s.delete(&format!("{p}3"), None).await.unwrap();
    assert_eq!(s.count(&p).await.unwrap(), 12);
    assert_eq!(s.count(&format!("{p}nothing/")).await.unwrap(), 0);
}

/// A watch from revision R delivers every later change exactly once, in order, with the right
/// kind and previous values, then goes on with live changes.
pub async fn watch_replays_from_revision_in_order(s: &dyn Storage) {
    let p = prefix("replay");
    let k = format!("{p}k");
    let before = s.create(&format!("{p}before"), b("x")).await.unwrap();
    let r1 = s.create(&k, b("1")).await.unwrap();
    let r2 = s.update(&k, b("2"), r1).await.unwrap();
    let r3 = s.delete(&k, None).await.unwrap().mod_revision;

    let mut w = s.watch(WatchOptions::new(p.clone(), before)).await.unwrap();
    assert_eq!(
        next_event(&mut w).await.unwrap(),
        WatchEvent::Created(KeyValue {
            key: k.clone(),
            value: b("1"),
            create_revision: r1,
            mod_revision: r1,
            stale: false
        })
    );
    assert_eq!(
        next_event(&mut w).await.unwrap(),
        WatchEvent::Modified {
            kv: KeyValue {
                key: k.clone(),
                value: b("2"),
                create_revision: r1,
                mod_revision: r2,
                stale: false
            },
            prev: b("1"),
        }
    );
    assert_eq!(
        next_event(&mut w).await.unwrap(),
        WatchEvent::Deleted(KeyValue {
            key: k.clone(),
            value: b("2"),
            create_revision: r1,
            mod_revision: r3,
            stale: false
        })
    );
    let r4 = s.create(&k, b("live")).await.unwrap();
    let live = next_event(&mut w).await.unwrap();
    assert_eq!((live.key(), live.revision()), (Some(k.as_str()), r4));
}

/// A watch from 0 starts now; other prefixes' events never arrive.
pub async fn watch_from_now_and_prefix_isolation(s: &dyn Storage) {
    let p = prefix("now");
    s.create(&format!("{p}a/old"), b("x")).await.unwrap();
    let mut w = s
        .watch(WatchOptions::new(format!("{p}a/"), 0))
        .await
        .unwrap();
    s.create(&format!("{p}ab/x"), b("other prefix"))
        .await
        .unwrap();
    s.create(&format!("{p}b/x"), b("other prefix"))
        .await
        .unwrap();
    let rev = s.create(&format!("{p}a/new"), b("mine")).await.unwrap();
    let event = next_event(&mut w).await.unwrap();
    assert_eq!(event.key(), Some(format!("{p}a/new").as_str()));
    assert_eq!(event.revision(), rev);
}

/// 50 watchers, 10 writers: every watcher sees every write, once, in revision order.
pub async fn watch_delivers_exactly_once_to_many_watchers(s: &dyn Storage) {
    let p = prefix("fanout");
    let start = s.current_revision().await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(s.watch(WatchOptions::new(p.clone(), start)).await.unwrap());
    }
    let writers = (0..10).map(|w| {
        let p = p.clone();
        async move {
            let k = format!("{p}w{w}");
            let mut revs = vec![s.create(&k, b("0")).await.unwrap()];
            for i in 1..50 {
                let last = *revs.last().unwrap();
                revs.push(s.update(&k, b(&i.to_string()), last).await.unwrap());
            }
            revs
        }
    });
    let written: BTreeSet<Revision> = futures::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(written.len(), 500);
    let expected: Vec<Revision> = written.into_iter().collect();
    let reads = watchers.into_iter().map(|mut w| {
        let expected = expected.clone();
        async move {
            let mut got = Vec::with_capacity(expected.len());
            while got.len() < expected.len() {
                got.push(next_event(&mut w).await.unwrap().revision());
            }
            assert_eq!(got, expected, "every event once, in order");
        }
    });
    futures::future::join_all(reads).await;
}

/// A watcher that never reads is cut off once its buffer is full; writers are not slowed and
/// a reading watcher still gets everything.
pub async fn slow_watcher_is_cut_off_without_slowing_writers(s: &dyn Storage) {
    let p = prefix("slow");
    let start = s.current_revision().await.unwrap();
    let mut stuck = s
        .watch(WatchOptions {
            buffer: 50,
            ..WatchOptions::new(p.clone(), start)
        })
        .await
        .unwrap();
    let mut reader = s.watch(WatchOptions::new(p.clone(), start)).await.unwrap();
    let writes = 500;
    let write_all = async {
        for i in 0..writes {
            s.create(&format!("{p}{i}"), b("x")).await.unwrap();
        }
    };
    let read_all = async {
        for _ in 0..writes {
            next_event(&mut reader).await.unwrap();
        }
    };
    // A writer blocked by the stuck watcher would hang here; the 60 s bound only turns such a
    // hang into a failure.
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write_all, read_all)
    })
    .await
    .expect("writers and the reading watcher finish while another watcher is stuck");
    let mut delivered = 0;
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(30), stuck.next()).await {
            Ok(Some(Ok(WatchEvent::Progress(_)))) => {}
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stuck watcher ended without saying why"),
            Err(_) => panic!("the stuck watcher was not cut off"),
        }
    };
    assert!(matches!(outcome, Error::WatcherTooSlow), "got {outcome:?}");
    assert!(delivered < writes, "it was cut off before the end");
}

/// An idle watch with a progress interval reports the store's revision.
pub async fn watch_progress_notifications(s: &dyn Storage) {
    let p = prefix("progress");
    let rev = s.create(&format!("{p}x"), b("x")).await.unwrap();
    let mut w = s
        .watch(WatchOptions {
            progress_interval: Some(Duration::from_millis(100)),
            ..WatchOptions::new(p.clone(), rev)
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("a progress notification within 30 s")
        .expect("stream open")
        .unwrap();
    match got {
        WatchEvent::Progress(at) => assert!(at >= rev, "progress {at} < {rev}"),
        other => panic!("expected progress, got {other:?}"),
    }
    // Progress never overtakes an event: after a write, the event comes before any progress
    // at or past its revision.
    let written = s.create(&format!("{p}y"), b("y")).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress(at)))) => {
                assert!(at < written, "progress {at} before event {written}")
            }
            Ok(Some(Ok(e))) => {
                assert_eq!(e.revision(), written);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// After compaction, lists and watches from before it fail with Expired; from after it they
/// work.
pub async fn compacted_revision_expires(s: &dyn Storage) {
    let p = prefix("compact");
    let k = format!("{p}k");
    let first = s.create(&k, b("0")).await.unwrap();
    let mut rev = first;
    for i in 1..20 {
        rev = s.update(&k, b(&i.to_string()), rev).await.unwrap();
    }
    let compact_at = rev - 5;
    s.compact(compact_at).await.unwrap();
    let old = ListOptions {
        revision: Some(first),
        ..Default::default()
    };
    assert!(matches!(s.list(&p, &old).await, Err(Error::Expired { .. })));
    let watched = match s.watch(WatchOptions::new(p.clone(), first)).await {
        Err(e) => Err(e),
        Ok(mut w) => next_event(&mut w).await,
    };
    assert!(
        matches!(watched, Err(Error::Expired { .. })),
        "watch from a compacted revision: {watched:?}"
    );
    // History after the compaction point is intact.
    let after = snapshot(s, &p, compact_at).await;
    assert_eq!(after.get(&k), Some(&b("14")));
    let mut w = s
        .watch(WatchOptions::new(p.clone(), compact_at))
        .await
        .unwrap();
    let mut revs = Vec::new();
    for _ in 0..5 {
        revs.push(next_event(&mut w).await.unwrap().revision());
    }
    assert_eq!(revs, ((compact_at + 1)..=rev).collect::<Vec<_>>());
    // And the key's current state survives compaction.
    assert_eq!(s.get(&k).await.unwrap().value, b("19"));
}
