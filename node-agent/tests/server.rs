//! The streaming server's `/containerLogs` over real files and a real socket, against a
//! fixed-table [`PodLookup`]: what the API server's log proxy (and so `kubectl logs`) gets.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use node_agent::lookup::{ContainerRef, PodLookup};
use parking_lot::Mutex;

/// Pods by (namespace, pod) → containers by name. Tests change it while the server runs.
#[derive(Default)]
struct Table {
    pods: Mutex<HashMap<(String, String), HashMap<String, ContainerRef>>>,
    /// How many container lookups were made: a follower asks on every poll.
    lookups: AtomicUsize,
}

impl Table {
    fn set(&self, ns: &str, pod: &str, container: &str, c: ContainerRef) {
        self.pods
            .lock()
            .entry((ns.into(), pod.into()))
            .or_default()
            .insert(container.into(), c);
    }
}

impl PodLookup for Table {
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.pods
            .lock()
            .get(&(namespace.into(), pod.into()))?
            .get(container)
            .cloned()
    }
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        self.pods
            .lock()
            .contains_key(&(namespace.into(), pod.into()))
            .then(|| format!("sandbox-{pod}"))
    }
}

fn record(ts: &str, tag: &str, msg: &str) -> String {
    format!("2026-11-29T03:40:{ts}Z stdout {tag} {msg}\n")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write log");
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append log");
}

struct Server {
    addr: SocketAddr,
    table: Arc<Table>,
    dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server with pod `default/p1`: container `main` (log `0.log` with five lines, the
    /// second one written in two partial records; previous instance `prev.log`) and container
    /// `side` with no previous instance.
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let table = Arc::new(Table::default());
        let main = dir.path().join("0.log");
        write(
            &main,
            &[
                record("01", "F", "line 1"),
                record("02", "P", "line "),
                record("02", "F", "2"),
                record("03", "F", "line 3"),
                "2026-11-29T03:40:04Z stderr F line 4\n".to_string(),
                record("05", "F", "line 5"),
            ]
            .concat(),
        );
        let prev = dir.path().join("prev.log");
        write(&prev, &record("00", "F", "previous instance"));
        table.set(
            "default",
            "p1",
            "main",
            ContainerRef {
                pod_uid: "uid-1".into(),
                sandbox_id: Some("sandbox-p1".into()),
                container_id: Some("c-main".into()),
                log_path: Some(main),
                previous_log_path: Some(prev),
            },
        );
        let side = dir.path().join("side.log");
        write(&side, &record("01", "F", "side"));
        table.set(
            "default",
            "p1",
            "side",
            ContainerRef {
                log_path: Some(side),
                ..ContainerRef::default()
            },
        );
        let (addr, task) =
            node_agent::server::serve("127.0.0.1:0".parse().expect("addr"), table.clone(), None)
                .await
                .expect("serve");
        Server {
            addr,
            table,
            dir,
            _task: task,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/containerLogs/{rest}", self.addr)
    }

    async fn get(&self, rest: &str) -> (u16, String) {
        let resp = reqwest::get(self.url(rest)).await.expect("GET");
        let code = resp.status().as_u16();
        (code, resp.text().await.expect("body"))
    }
}

#[tokio::test]
async fn reads_joins_and_filters() {
    let s = Server::start().await;
    let all = "line 1\nline 2\nline 3\nline 4\nline 5\n";
    assert_eq!(s.get("default/p1/main").await, (200, all.to_string()));
    assert_eq!(
        s.get("default/p1/main?tailLines=2").await,
        (200, "line 4\nline 5\n".into())
    );
    // The joined line counts once.
    assert_eq!(
        s.get("default/p1/main?tailLines=4").await.1,
        "line 2\nline 3\nline 4\nline 5\n"
    );
    assert_eq!(s.get("default/p1/main?tailLines=0").await.1, "");
    assert_eq!(
        s.get("default/p1/main?tailLines=2&timestamps=true").await.1,
        "2026-11-29T03:40:04Z line 4\n2026-11-29T03:40:05Z line 5\n"
    );
    assert_eq!(
        s.get("default/p1/main?timestamps=true&tailLines=4")
            .await
            .1
            .lines()
            .next(),
        Some("2026-11-29T03:40:02Z line 2")
    );
    assert_eq!(
        s.get("default/p1/main?sinceTime=2026-11-29T03:40:03Z")
            .await
            .1,
        "line 3\nline 4\nline 5\n"
    );
    // Every record is older than an hour before now.
    assert_eq!(s.get("default/p1/main?sinceSeconds=3600").await.1, "");
    assert_eq!(
        s.get("default/p1/main?limitBytes=10").await.1,
        "line 1\nlin"
    );
    assert_eq!(
        s.get("default/p1/main?previous=true").await,
        (200, "previous instance\n".into())
    );
}

#[tokio::test]
async fn errors_are_kubelets() {
    let s = Server::start().await;
    assert_eq!(
        s.get("default/nope/main").await,
        (404, "pod \"nope\" does not exist".into())
    );
    assert_eq!(
        s.get("default/p1/nope").await,
        (404, "container \"nope\" not found in pod \"p1\"".into())
    );
    assert_eq!(
        s.get("default/p1/side?previous=true").await,
        (
            400,
            "previous terminated container \"side\" in pod \"p1\" not found".into()
        )
    );
    let (code, body) = s.get("default/p1/main?tailLines=-1").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("tailLines"), "{body}");
    let (code, _) = s
        .get("default/p1/main?sinceSeconds=5&sinceTime=2026-11-29T03:40:03Z")
        .await;
    assert_eq!(code, 400);
    s.table.set(
        "default",
        "p1",
        "starting",
        ContainerRef {
            pod_uid: "uid-1".into(),
            ..ContainerRef::default()
        },
    );
    assert_eq!(
        s.get("default/p1/starting").await,
        (
            400,
            "container \"starting\" in pod \"p1\" is waiting to start: ContainerCreating".into()
        )
    );
}

/// Reads from `body` until `buf` contains `want` (or fails after 20 s).
async fn read_until<S>(body: &mut S, buf: &mut String, want: &str)
where
    S: futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !buf.contains(want) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within 20 s; got {buf:?}"))
            .unwrap_or_else(|| panic!("stream ended before {want:?}; got {buf:?}"))
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn follow_streams_appends_and_ends_with_the_container() {
    let s = Server::start().await;
    let log = s.path("0.log");
    let resp = reqwest::get(s.url("default/p1/main?follow=true&tailLines=1&timestamps=true"))
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut got = String::new();
    read_until(&mut body, &mut got, "line 5\n").await;
    assert_eq!(got, "2026-11-29T03:40:05Z line 5\n");

    // A line written in two pieces, the second after the reader has seen the first.
    append(&log, &record("06", "P", "follow "));
    append(&log, "2026-11-29T03:40:07Z stdout F li");
    append(&log, "ne 6\n");
    read_until(&mut body, &mut got, "line 6\n").await;
    assert!(
        got.ends_with("2026-11-29T03:40:06Z follow line 6\n"),
        "{got:?}"
    );

    // The container restarts: its log moves to a new file; the follower finishes the old one
    // and ends.
    append(&log, &record("08", "F", "last words"));
    let mut next = s.table.container("default", "p1", "main").expect("main");
    next.previous_log_path = next.log_path.take();
    next.log_path = Some(s.path("1.log"));
    s.table.set("default", "p1", "main", next);
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        let mut rest = String::new();
        while let Some(chunk) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
        rest
    })
    .await
    .expect("the follower ends once the log path changes");
    assert!(
        (got.clone() + &rest).ends_with("2026-11-29T03:40:08Z last words\n"),
        "{got:?} {rest:?}"
    );
}

#[tokio::test]
async fn follow_ends_when_the_client_leaves() {
    let s = Server::start().await;
    let resp = reqwest::get(s.url("default/p1/main?follow=true"))
        .await
        .expect("GET");
    let mut body = resp.bytes_stream();
    let mut got = String::new();
    read_until(&mut body, &mut got, "line 5\n").await;
    drop(body);
    // The follower polls the lookup while it waits; once the client has gone it stops.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = s.table.lookups.load(Ordering::SeqCst);
    let mut stable_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = s.table.lookups.load(Ordering::SeqCst);
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower kept polling after the client disconnected"
        );
    }
}

/// exec, attach and port-forward fail before any upgrade when the request cannot be served;
/// the upgrades themselves are tested against containerd in `e2e/tests/exec.rs`.
#[tokio::test]
async fn stream_errors_before_the_runtime() {
    let s = Server::start().await;
    let base = format!("http://{}", s.addr);
    let get = |path: String| async move {
        let resp = reqwest::get(path).await.expect("GET");
        let code = resp.status().as_u16();
        (code, resp.text().await.expect("body"))
    };
    assert_eq!(
        get(format!("{base}/exec/default/nope/main?command=ls&output=1")).await,
        (404, "pod \"nope\" does not exist".into())
    );
    assert_eq!(
        get(format!("{base}/attach/default/p1/nope?output=1")).await,
        (404, "container \"nope\" not found in pod \"p1\"".into())
    );
    assert_eq!(
        get(format!("{base}/exec/default/p1/main?command=ls")).await,
        (
            400,
            "you must specify at least 1 of stdin, stdout, stderr".into()
        )
    );
    assert_eq!(
        get(format!("{base}/portForward/default/p1?ports=http"))
            .await
            .0,
        400
    );
    assert_eq!(
        get(format!("{base}/portForward/default/nope")).await,
        (404, "pod \"nope\" does not exist".into())
    );
    // This server has no runtime.
    assert_eq!(
        get(format!(
            "{base}/exec/default/p1/main?command=ls&stdout=true"
        ))
        .await
        .0,
        503
    );
}

/// A large log (tens of MB) streams whole and in order, and a tail of it is cheap.
#[tokio::test]
async fn large_logs() {
    let s = Server::start().await;
    let big = s.path("big.log");
    let mut text = String::new();
    let mut expected = 0usize;
    for i in 0..300_000 {
        let msg = format!("line {i:06} {}", "y".repeat(40));
        expected += msg.len() + 1;
        text.push_str(&record("09", "F", &msg));
    }
    write(&big, &text);
    s.table.set(
        "default",
        "big",
        "main",
        ContainerRef {
            log_path: Some(big),
            ..ContainerRef::default()
        },
    );
    let started = std::time::Instant::now();
    let (code, body) = s.get("default/big/main").await;
    let whole = started.elapsed();
    assert_eq!(code, 200);
    assert_eq!(body.len(), expected);
    assert!(body.starts_with("line 000000 "));
    assert!(body.ends_with(&format!("line 299999 {}\n", "y".repeat(40))));
    let started = std::time::Instant::now();
    let (_, tail) = s.get("default/big/main?tailLines=2").await;
    let tailed = started.elapsed();
    assert_eq!(tail.lines().count(), 2);
    eprintln!(
        "{} MB in {whole:?}; tail in {tailed:?}",
        text.len() / 1_000_000
    );
}

/// Log rotation (the file at the container's log path replaced by a new one): the follower
/// finishes the old file and continues with the new one from its start.
#[tokio::test]
async fn follow_continues_across_rotation() {
    let s = Server::start().await;
    let log = s.path("0.log");
    let resp = reqwest::get(s.url("default/p1/main?follow=true&tailLines=1"))
        .await
        .expect("GET");
    let mut body = resp.bytes_stream();
    let mut got = String::new();
    read_until(&mut body, &mut got, "line 5\n").await;
    // What rotation does: rename the file, then the runtime reopens a fresh one at the path.
    append(&log, &record("06", "F", "before rotation"));
    std::fs::rename(&log, s.path("0.log.20261129-034006")).expect("rotate");
    write(&log, &record("07", "F", "after rotation"));
    read_until(&mut body, &mut got, "after rotation\n").await;
    assert_eq!(got, "line 5\nbefore rotation\nafter rotation\n");
}
