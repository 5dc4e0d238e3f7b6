//! The etcd v3 backend, for production and HA: several API servers share one etcd cluster.
//!
//! Every operation is one etcd request; preconditions are transactions comparing the key's
//! `mod_revision`, so this layer adds a round trip to nothing. Revisions are etcd's own.
//!
//! Watches run on a task per watch that reads etcd's stream eagerly into a bounded queue:
//! a consumer that stops reading is cut off ([`Error::WatcherTooSlow`]) instead of stalling the
//! gRPC stream, and a dropped connection is resumed from the last revision seen (events or
//! confirmed progress), so no event is lost or repeated across reconnects.
//!
//! A requested progress notification is not taken at its word. etcd before 3.4.24 / 3.5.8
//! (Debian's 3.4.23 among them) answers `RequestProgress` with the store's current revision
//! even while the watcher still has older events queued (etcd-io/etcd#15220), so the answer
//! can overtake events. Trusting it lost those events for good: they were skipped as already
//! seen, and a watch cache following this stream never learnt of them (seen as pods that no
//! controller or scheduler ever heard of, under a 5,000-pod burst). A progress revision is
//! therefore held until the next progress answer confirms it with no older event in between
//! ([`Progress`]).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::mpsc;

use crate::{
    continue_token, prefix_end, Error, KeyValue, ListOptions, ListResult, Result, Revision,
    Storage, WatchEvent, WatchOptions, WatchStream,
};

/// How long a watch waits before reconnecting after its stream broke; doubled up to
/// [`RECONNECT_MAX`] while etcd stays unreachable.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

/// How often a request that reached no etcd member is tried again, and the pause between tries.
const UNREACHED_RETRIES: u32 = 10;
const UNREACHED_BACKOFF: Duration = Duration::from_millis(50);

/// gRPC's UNAVAILABLE (tonic is not a dependency of this crate).
const UNAVAILABLE: i32 = 14;

/// Whether `e` says the request never reached an etcd member: the balanced channel picked the
/// endpoint of a member that is down and the TCP connect failed. Such a request had no effect,
/// so sending it again (to whichever endpoint the balancer picks next) is safe even for a write.
fn never_reached(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if status.code() as i32 == UNAVAILABLE && status.message().contains("connect error"))
}

/// Evaluates `$call` (one etcd request, built afresh on each attempt) again while it fails
/// without having reached any member ([`never_reached`]): with one member of three stopped,
/// etcd-client's balanced channel still sends a share of the requests to it, and those fail
/// at connect time, although the cluster has quorum and the other members would answer.
macro_rules! reach {
    ($call:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $call {
                Err(e) if attempt < UNREACHED_RETRIES && never_reached(&e) => {
                    attempt += 1;
                    tokio::time::sleep(UNREACHED_BACKOFF).await;
                }
                r => break r,
            }
        }
    }};
}

fn unavailable(e: etcd_client::Error) -> Error {
    match &e {
        etcd_client::Error::GRpcStatus(status)
            if status
                .message()
                .contains("required revision has been compacted") =>
        {
            Error::Expired {
                requested: 0,
                compacted: 0,
            }
        }
        etcd_client::Error::GRpcStatus(status)
            if status
                .message()
                .contains("required revision is a future revision") =>
        {
            Error::FutureRevision {
                requested: 0,
                current: 0,
            }
        }
        _ => Error::Unavailable(e.to_string()),
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| Error::Internal(e.to_string()))?
            .to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision() as Revision,
        mod_revision: kv.mod_revision() as Revision,
        stale: false,
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision() as Revision)
}

impl EtcdStore {
    /// Connects to the given endpoints (`http://127.0.0.1:2379`, …).
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(unavailable)?;
        Ok(EtcdStore { client })
    }

    /// Reads `key` inside a failed transaction's else-branch answer, to tell a conflict from a
    /// missing key.
    fn conflict_or_missing(key: &str, expected: Revision, responses: Vec<TxnOpResponse>) -> Error {
        let current = responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision() as Revision),
            _ => None,
        });
        match current {
            Some(current) => Error::Conflict {
                key: key.into(),
                expected,
                current,
            },
            None => Error::NotFound { key: key.into() },
        }
    }
}

#[async_trait]
impl Storage for EtcdStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = reach!(self.client.kv_client().txn(txn.clone()).await).map_err(unavailable)?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        Ok(header_revision(resp.header()))
    }

    async fn get(&self, key: &str) -> Result<KeyValue> {
        let resp = reach!(self.client.kv_client().get(key, None).await).map_err(unavailable)?;
        match resp.kvs().first() {
            Some(kv) => to_kv(kv),
            None => Err(Error::NotFound { key: key.into() }),
        }
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let (start, revision) = match &opts.continue_token {
            Some(token) => {
                let (start, rev) = continue_token::decode(prefix, token)?;
                (start, rev)
            }
            None => (prefix.to_owned(), opts.revision.unwrap_or(0)),
        };
        let mut get = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_revision(revision as i64);
        if let Some(limit) = opts.limit.filter(|l| *l > 0) {
            get = get.with_limit(limit as i64);
        }
        let resp = match reach!(
            self.client
                .kv_client()
                .get(start.as_str(), Some(get.clone()))
                .await
        ) {
            Ok(resp) => resp,
            Err(e) => {
                return Err(match unavailable(e) {
                    Error::Expired { .. } => Error::Expired {
                        requested: revision,
                        compacted: 0,
                    },
                    Error::FutureRevision { .. } => Error::FutureRevision {
                        requested: revision,
                        current: self.current_revision().await.unwrap_or(0),
                    },
                    other => other,
                })
            }
        };
        let read_at = if revision > 0 {
            revision
        } else {
            header_revision(resp.header())
        };
        let items = resp.kvs().iter().map(to_kv).collect::<Result<Vec<_>>>()?;
        let remaining = (resp.count() as u64).saturating_sub(items.len() as u64);
        let continue_token = match items.last() {
            Some(last) if resp.more() => Some(continue_token::encode(
                prefix,
                &format!("{}\0", last.key),
                read_at,
            )),
            _ => None,
        };
        Ok(ListResult {
            remaining: resp.more().then_some(remaining),
            items,
            revision: read_at,
            continue_token,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                expected as i64,
            )])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = reach!(self.client.kv_client().txn(txn.clone()).await).map_err(unavailable)?;
        if !resp.succeeded() {
            return Err(Self::conflict_or_missing(
                key,
                expected,
                resp.op_responses(),
            ));
        }
        Ok(header_revision(resp.header()))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        // An absent key has mod_revision 0, so "exists" is `mod_revision > 0`.
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev as i64),
            None => Compare::mod_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = reach!(self.client.kv_client().txn(txn.clone()).await).map_err(unavailable)?;
        let revision = header_revision(resp.header());
        if !resp.succeeded() {
            return Err(Self::conflict_or_missing(
                key,
                expected.unwrap_or(0),
                resp.op_responses(),
            ));
        }
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().cloned(),
            _ => None,
        });
        let prev = prev.ok_or_else(|| Error::NotFound { key: key.into() })?;
        let mut kv = to_kv(&prev)?;
        kv.mod_revision = revision;
        Ok(kv)
    }

    async fn watch(&self, opts: WatchOptions) -> Result<WatchStream> {
        let from = if opts.from_revision == 0 {
            self.current_revision().await?
        } else {
            opts.from_revision
        };
        let (tx, rx) = mpsc::channel(opts.buffer.max(1));
        let mut pump = Pump {
            client: self.client.clone(),
            prefix: opts.prefix,
            last: from,
            progress: Progress::default(),
            progress_interval: opts.progress_interval,
            tx,
        };
        // Open the first stream before returning, so a compacted start fails here.
        let stream = pump.open().await?;
        tokio::spawn(async move { pump.run(stream).await });
        Ok(Box::pin(tokio_stream_from(rx)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = reach!(
            self.client
                .kv_client()
                .get("\0", Some(GetOptions::new().with_count_only()))
                .await
        )
        .map_err(unavailable)?;
        Ok(header_revision(resp.header()))
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let resp = reach!(
            self.client
                .kv_client()
                .get(
                    prefix,
                    Some(
                        GetOptions::new()
                            .with_range(prefix_end(prefix))
                            .with_count_only(),
                    ),
                )
                .await
        )
        .map_err(unavailable)?;
        Ok(resp.count() as u64)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self
            .client
            .kv_client()
            .compact(
                revision as i64,
                Some(CompactionOptions::new().with_physical()),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Compacting to where etcd already is means the work is done.
            Err(e) => match unavailable(e) {
                Error::Expired { .. } => Ok(()),
                Error::FutureRevision { .. } => Err(Error::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await.unwrap_or(0),
                }),
                other => Err(other),
            },
        }
    }
}

fn tokio_stream_from(
    rx: mpsc::Receiver<Result<WatchEvent>>,
) -> impl futures::Stream<Item = Result<WatchEvent>> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}

/// Moves one etcd watch into a bounded queue, reconnecting from the last revision seen.
struct Pump {
    client: Client,
    prefix: String,
    /// Every event up to this revision has been queued.
    last: Revision,
    progress: Progress,
    progress_interval: Option<Duration>,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

/// Requested progress answers, held until confirmed (see the module docs): an answer is
/// passed on only when the next answer arrives and no event at or below its revision came in
/// between, which would have shown that it ran ahead of the stream.
#[derive(Debug, Default)]
struct Progress {
    held: Option<Revision>,
}

impl Progress {
    /// A progress answer at `rev` with every event up to `last` delivered; returns what to
    /// pass on: the earlier answer, now confirmed, or this one if it claims nothing past
    /// `last` (it cannot have overtaken an event then).
    fn answer(&mut self, rev: Revision, last: Revision) -> Option<Revision> {
        let confirmed = self.held.take().filter(|h| *h > last);
        self.held = (rev > last).then_some(rev);
        confirmed.or((rev == last).then_some(rev))
    }

    /// An event at `rev` arrived: a held answer at or above it ran ahead and is dropped.
    fn event(&mut self, rev: Revision) {
        if self.held.is_some_and(|h| rev <= h) {
            self.held = None;
        }
    }
}

enum Stop {
    /// The consumer is gone or cut off: end quietly.
    Done,
    /// The stream broke: reconnect.
    Broken(String),
}

impl Pump {
    async fn open(&mut self) -> Result<etcd_client::WatchStream> {
        // An answer held from the previous stream is confirmed by nothing on this one.
        self.progress = Progress::default();
        let options = etcd_client::WatchOptions::new()
            .with_range(prefix_end(&self.prefix))
            .with_start_revision(self.last as i64 + 1)
            .with_prev_key()
            .with_progress_notify();
        let mut stream = self
            .client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(unavailable)?;
        // The first response confirms the watch, or says its start was compacted.
        match stream.message().await.map_err(unavailable)? {
            Some(resp) if resp.compact_revision() > 0 => Err(Error::Expired {
                requested: self.last,
                compacted: resp.compact_revision() as Revision,
            }),
            Some(resp) if resp.canceled() => Err(Error::Unavailable(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            ))),
            Some(_) => Ok(stream),
            None => Err(Error::Unavailable("watch stream closed".into())),
        }
    }

    async fn run(&mut self, mut stream: etcd_client::WatchStream) {
        let mut backoff = RECONNECT_MIN;
        loop {
            match self.forward(&mut stream).await {
                Stop::Done => return,
                Stop::Broken(why) => {
                    tracing::debug!(prefix = %self.prefix, %why, "etcd watch broke; resuming")
                }
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.tx.closed() => return,
                }
                match self.open().await {
                    Ok(s) => {
                        stream = s;
                        backoff = RECONNECT_MIN;
                        break;
                    }
                    Err(e @ Error::Expired { .. }) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                    Err(_) => backoff = (backoff * 2).min(RECONNECT_MAX),
                }
            }
        }
    }

    async fn forward(&mut self, stream: &mut etcd_client::WatchStream) -> Stop {
        let mut ticker = self.progress_interval.map(|period| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let message = match &mut ticker {
                Some(t) => tokio::select! {
                    m = stream.message() => m,
                    _ = t.tick() => {
                        if let Err(e) = stream.request_progress().await {
                            return Stop::Broken(e.to_string());
                        }
                        continue;
                    }
                    _ = self.tx.closed() => return Stop::Done,
                },
                None => tokio::select! {
                    m = stream.message() => m,
                    _ = self.tx.closed() => return Stop::Done,
                },
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Stop::Broken("stream ended".into()),
                Err(e) => return Stop::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                let _ = self.tx.try_send(Err(Error::Expired {
                    requested: self.last,
                    compacted: resp.compact_revision() as Revision,
                }));
                return Stop::Done;
            }
            if resp.canceled() {
                return Stop::Broken(format!("watch canceled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                // A progress answer: everything up to the header's revision is delivered, once
                // the next answer confirms it.
                let rev = header_revision(resp.header());
                if let Some(confirmed) = self.progress.answer(rev, self.last) {
                    self.last = confirmed;
                    if !self.offer(Ok(WatchEvent::Progress(confirmed))) {
                        return Stop::Done;
                    }
                }
                continue;
            }
            for event in resp.events() {
                let item = convert(event);
                let rev = match &item {
                    Ok(e) => e.revision(),
                    Err(_) => self.last,
                };
                self.progress.event(rev);
                if rev <= self.last && item.is_ok() {
                    continue;
                }
                let failed = item.is_err();
                if !self.offer(item) || failed {
                    return Stop::Done;
                }
                self.last = rev;
            }
        }
    }

    /// Queues an item without waiting; a full queue cuts the watcher off.
    fn offer(&self, item: Result<WatchEvent>) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The queue is full, so the consumer learns why when it drains to this point:
                // a second, reserved slot is not available, hence the spawned send.
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Err(Error::WatcherTooSlow)).await;
                });
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn convert(event: &etcd_client::Event) -> Result<WatchEvent> {
    let kv = event
        .kv()
        .ok_or_else(|| Error::Internal("watch event without a key".into()))?;
    let kv = to_kv(kv)?;
    match event.event_type() {
        EventType::Put if kv.create_revision == kv.mod_revision => Ok(WatchEvent::Created(kv)),
        EventType::Put => {
            let prev = event
                .prev_kv()
                .map(|p| Bytes::copy_from_slice(p.value()))
                .unwrap_or_default();
            Ok(WatchEvent::Modified { kv, prev })
        }
        EventType::Delete => {
            let prev = event
                .prev_kv()
                .ok_or_else(|| Error::Internal("delete event without the previous value".into()))?;
            let mut deleted = to_kv(prev)?;
            deleted.mod_revision = kv.mod_revision;
            Ok(WatchEvent::Deleted(deleted))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    /// etcd 3.4.23 can answer a progress request with a revision whose events are still
    /// queued: that answer is dropped when an older event follows, and passed on only once
    /// the next answer confirms it.
    #[test]
    fn a_progress_answer_is_passed_on_only_once_confirmed() {
        let mut p = Progress::default();
        // Ran ahead: events 11 and 12 were still queued behind the answer at 12.
        assert_eq!(p.answer(12, 10), None);
        p.event(11);
        p.event(12);
        assert_eq!(
            p.answer(12, 12),
            Some(12),
            "nothing past the events: passed on at once"
        );
        // Confirmed: nothing at or below 20 arrived before the next answer.
        assert_eq!(p.answer(20, 12), None);
        assert_eq!(p.answer(25, 12), Some(20));
        // A newer event does not invalidate an answer below it.
        p.event(30);
        assert_eq!(p.answer(40, 30), None, "25 is behind the events already");
        assert_eq!(p.answer(41, 30), Some(40));
    }
}
