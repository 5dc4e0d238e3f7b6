//! The embedded store: Coxswain's zero-setup default, a durable file in the API server's own
//! process (the role SQLite plays for k3s).
//!
//! # Design
//! The data model is etcd's, laid on [redb](https://docs.rs/redb) (copy-on-write B-trees,
//! MVCC readers, crash-safe commits, pure Rust). Three tables:
//!
//! - `log`: revision → record (key, value, create revision, the key's previous revision,
//!   deleted flag). Every write appends one record; values live only here.
//! - `index`: key → (create revision, mod revision) for every live key.
//! - `meta`: the head revision and the compacted revision.
//!
//! A read of a key is `index` then `log`. A list at an older revision R starts from the
//! current index and undoes the changes logged after R: for each key changed after R, its
//! first later record names the revision of its state at R (`prev`). Compaction to C removes
//! every record superseded by a record at or before C, and tombstones at or before C, which is
//! exactly what keeps every state at a revision ≥ C readable and every change after C
//! replayable, while bounding the file under heartbeat churn.
//!
//! # Writes and durability
//! One writer thread owns all writes. It takes every request waiting in its queue (group
//! commit), applies them in order in one transaction, commits with an fsync, and only then
//! publishes the watch events and acknowledges the callers. A `kill -9` at any moment therefore
//! loses no acknowledged write. Compaction runs on the same thread, automatically once the log
//! holds a quarter more than [`EmbeddedConfig::retain_revisions`], so it never races a write.
//!
//! # Watches
//! A watch registers with the writer's fan-out under the lock the writer publishes under, then
//! replays the log from its start revision up to the revision it registered at, then serves
//! live events, skipping those the replay covered. Each watcher has a bounded queue; the writer
//! never waits on one: a full queue cuts that watcher off.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::{
    continue_token, prefix_end, Error, KeyValue, ListOptions, ListResult, Result, Revision,
    Storage, WatchEvent, WatchOptions, WatchStream,
};

const INDEX: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("index");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// How many log records one replay read or one compaction transaction handles, so neither
/// holds a transaction (and the pages it pins) for long.
const CHUNK: u64 = 2_000;

/// Settings of an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The database file; created if missing.
    pub path: PathBuf,
    /// How much history automatic compaction keeps, in revisions. Watches and paged lists
    /// can resume from anywhere in this window; older ones get [`Error::Expired`] and re-list.
    /// Together with value sizes this bounds the file: at most 1.25 × this many records of
    /// history besides the live keys.
    pub retain_revisions: u64,
    /// The most writes committed together in one transaction (one fsync).
    pub max_batch: usize,
}

impl EmbeddedConfig {
    /// Defaults: 10,000 revisions of history (minutes of an ordinary cluster's writes, and
    /// under a megabyte per thousand small Lease updates), batches of up to 1,024 writes.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            path: path.into(),
            retain_revisions: 10_000,
            max_batch: 1_024,
        }
    }
}

/// A durable key-value store in this process with etcd's semantics. Cheap to share behind an
/// `Arc`; dropping the last handle stops its writer thread after it drains queued writes.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for EmbeddedStore {
    /// Lets the writer finish what is queued and waits for it, so the file is released and can
    /// be opened again as soon as this returns (once no watch stream holds it either).
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Shared {
    db: Database,
    fanout: Mutex<Fanout>,
}

struct Fanout {
    /// The latest committed revision: what readers and new watchers start from.
    committed: Revision,
    watchers: Vec<Slot>,
}

struct Slot {
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
    cut: Arc<AtomicBool>,
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

enum Written {
    Revision(Revision),
    Deleted(KeyValue),
    Compacted,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Written>>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `config.path` and starts its writer thread. Recovers
    /// from a crash on its own: what was acknowledged is there.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        let db = Database::create(&config.path).map_err(internal)?;
        let txn = db.begin_write().map_err(internal)?;
        let (committed, compacted) = {
            txn.open_table(INDEX).map_err(internal)?;
            txn.open_table(LOG).map_err(internal)?;
            let meta = txn.open_table(META).map_err(internal)?;
            let read = |k| -> Result<u64> {
                Ok(meta
                    .get(k)
                    .map_err(internal)?
                    .map(|v| v.value())
                    .unwrap_or(0))
            };
            (read(META_REVISION)?, read(META_COMPACTED)?)
        };
        txn.commit().map_err(internal)?;
        let shared = Arc::new(Shared {
            db,
            fanout: Mutex::new(Fanout {
                committed,
                watchers: Vec::new(),
            }),
        });
        let (requests, rx) = std_mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            head: committed,
            compacted,
            config,
        };
        let writer = thread::Builder::new()
            .name("cox-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(internal)?;
        Ok(EmbeddedStore {
            shared,
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    async fn submit(&self, op: Op) -> Result<Written> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is closed".into()))?
            .send(Request { op, reply })
            .map_err(|_| Error::Unavailable("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store's writer has stopped".into()))?
    }

    /// Runs a read on the blocking pool: redb reads may touch the disk.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(internal)?
    }
}

/// Record layout in `log`: flags (1 = deleted), create revision, previous revision of the same
/// key (0 = none), key length, key, value.
struct Record<'a> {
    deleted: bool,
    create_revision: Revision,
    prev: Revision,
    key: &'a str,
    value: &'a [u8],
}

impl<'a> Record<'a> {
    const HEADER: usize = 1 + 8 + 8 + 4;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + self.key.len() + self.value.len());
        out.push(u8::from(self.deleted));
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.prev.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(self.value);
        out
    }

    fn decode(bytes: &'a [u8]) -> Result<Self> {
        let corrupt = || Error::Internal("corrupt log record".into());
        if bytes.len() < Self::HEADER {
            return Err(corrupt());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[17..21]);
        let key_end = Self::HEADER + u32::from_le_bytes(len) as usize;
        let key = bytes
            .get(Self::HEADER..key_end)
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(corrupt)?;
        Ok(Record {
            deleted: bytes[0] & 1 == 1,
            create_revision: u64_at(1),
            prev: u64_at(9),
            key,
            value: &bytes[key_end..],
        })
    }
}

fn log_value(log: &impl ReadableTable<u64, &'static [u8]>, revision: Revision) -> Result<Bytes> {
    let guard = log
        .get(revision)
        .map_err(internal)?
        .ok_or_else(|| Error::Internal(format!("log record {revision} is missing")))?;
    Ok(Bytes::copy_from_slice(Record::decode(guard.value())?.value))
}

struct Writer {
    shared: Arc<Shared>,
    head: Revision,
    compacted: Revision,
    config: EmbeddedConfig,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut writes = Vec::new();
            let mut compactions = Vec::new();
            let mut next = Some(first);
            while let Some(req) = next {
                match req.op {
                    Op::Compact { .. } => compactions.push(req),
                    _ => writes.push(req),
                }
                next = if writes.len() < self.config.max_batch {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !writes.is_empty() {
                self.apply(writes);
            }
            for req in compactions {
                let Op::Compact { revision } = req.op else {
                    continue;
                };
                let result = self.compact(revision).map(|()| Written::Compacted);
                let _ = req.reply.send(result);
            }
            // Compacting a quarter of the window at a time keeps the log within 1.25 × the
            // window while making each compaction a small, cheap transaction.
            let retain = self.config.retain_revisions.max(4);
            if self.head.saturating_sub(self.compacted) >= retain + retain / 4 {
                if let Err(e) = self.compact(self.head - retain) {
                    tracing::warn!(error = %e, "automatic compaction failed");
                }
            }
        }
    }

    /// Applies a batch in one durable transaction; on any storage failure the whole batch
    /// fails and nothing of it is published.
    fn apply(&mut self, batch: Vec<Request>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let result = (|| -> Result<Revision> {
            let mut txn = self.shared.db.begin_write().map_err(internal)?;
            txn.set_durability(Durability::Immediate)
                .map_err(internal)?;
            let mut rev = self.head;
            {
                let mut index = txn.open_table(INDEX).map_err(internal)?;
                let mut log = txn.open_table(LOG).map_err(internal)?;
                for req in &batch {
                    let outcome = apply_op(&mut index, &mut log, &mut rev, &req.op)?;
                    if let Ok((_, Some(event))) = &outcome {
                        events.push(event.clone());
                    }
                    outcomes.push(outcome.map(|(written, _)| written));
                }
                let mut meta = txn.open_table(META).map_err(internal)?;
                meta.insert(META_REVISION, rev).map_err(internal)?;
            }
            txn.commit().map_err(internal)?;
            Ok(rev)
        })();
        match result {
            Ok(rev) => {
                self.head = rev;
                self.publish(rev, events);
                for (req, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write batch failed");
                for req in batch {
                    let _ = req.reply.send(Err(Error::Internal(e.to_string())));
                }
            }
        }
    }

    fn publish(&self, rev: Revision, events: Vec<WatchEvent>) {
        let mut fanout = self.shared.fanout.lock();
        fanout.committed = rev;
        fanout.watchers.retain(|slot| {
            for event in &events {
                let matches = event.key().is_some_and(|k| k.starts_with(&slot.prefix));
                if !matches {
                    continue;
                }
                match slot.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.cut.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !slot.tx.is_closed()
        });
    }

    /// Compacts history up to `target` in chunks, each its own transaction. Chunks are not
    /// fsynced on their own: losing one to a crash only means compacting it again, and the next
    /// durable write commits it.
    fn compact(&mut self, target: Revision) -> Result<()> {
        if target > self.head {
            return Err(Error::FutureRevision {
                requested: target,
                current: self.head,
            });
        }
        while self.compacted < target {
            let end = target.min(self.compacted + CHUNK);
            let mut txn = self.shared.db.begin_write().map_err(internal)?;
            txn.set_durability(Durability::None).map_err(internal)?;
            {
                let mut log = txn.open_table(LOG).map_err(internal)?;
                let mut doomed = Vec::new();
                for entry in log.range(self.compacted + 1..=end).map_err(internal)? {
                    let (rev, bytes) = entry.map_err(internal)?;
                    let record = Record::decode(bytes.value())?;
                    if record.prev > 0 {
                        doomed.push(record.prev);
                    }
                    if record.deleted {
                        doomed.push(rev.value());
                    }
                }
                for rev in doomed {
                    log.remove(rev).map_err(internal)?;
                }
                let mut meta = txn.open_table(META).map_err(internal)?;
                meta.insert(META_COMPACTED, end).map_err(internal)?;
            }
            txn.commit().map_err(internal)?;
            self.compacted = end;
        }
        Ok(())
    }
}

type OpOutcome = Result<(Written, Option<WatchEvent>)>;

/// Applies one write inside the batch's transaction. The outer `Result` is a storage failure
/// (fails the batch); the inner one is this request's own answer (a failed precondition).
fn apply_op(
    index: &mut redb::Table<'_, &'static str, (u64, u64)>,
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    rev: &mut Revision,
    op: &Op,
) -> Result<OpOutcome> {
    let key = match op {
        Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key.as_str(),
        Op::Compact { .. } => return Ok(Err(internal("compaction in a write batch"))),
    };
    let current = index.get(key).map_err(internal)?.map(|g| g.value());
    match (op, current) {
        (Op::Create { .. }, Some(_)) => Ok(Err(Error::AlreadyExists { key: key.into() })),
        (Op::Create { value, .. }, None) => {
            *rev += 1;
            append(log, *rev, false, *rev, 0, key, value)?;
            index.insert(key, (*rev, *rev)).map_err(internal)?;
            let kv = kv(key, value.clone(), *rev, *rev);
            Ok(Ok((Written::Revision(*rev), Some(WatchEvent::Created(kv)))))
        }
        (Op::Update { .. } | Op::Delete { .. }, None) => {
            Ok(Err(Error::NotFound { key: key.into() }))
        }
        (Op::Update { expected, .. }, Some((_, m))) if *expected != m => Ok(Err(Error::Conflict {
            key: key.into(),
            expected: *expected,
            current: m,
        })),
        (
            Op::Delete {
                expected: Some(expected),
                ..
            },
            Some((_, m)),
        ) if *expected != m => Ok(Err(Error::Conflict {
            key: key.into(),
            expected: *expected,
            current: m,
        })),
        (Op::Update { value, .. }, Some((c, m))) => {
            let prev = log_value(log, m)?;
            *rev += 1;
            append(log, *rev, false, c, m, key, value)?;
            index.insert(key, (c, *rev)).map_err(internal)?;
            let event = WatchEvent::Modified {
                kv: kv(key, value.clone(), c, *rev),
                prev,
            };
            Ok(Ok((Written::Revision(*rev), Some(event))))
        }
        (Op::Delete { .. }, Some((c, m))) => {
            let prev = log_value(log, m)?;
            *rev += 1;
            append(log, *rev, true, c, m, key, &[])?;
            index.remove(key).map_err(internal)?;
            let deleted = kv(key, prev, c, *rev);
            Ok(Ok((
                Written::Deleted(deleted.clone()),
                Some(WatchEvent::Deleted(deleted)),
            )))
        }
        (Op::Compact { .. }, _) => Ok(Err(internal("compaction in a write batch"))),
    }
}

fn append(
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    rev: Revision,
    deleted: bool,
    create_revision: Revision,
    prev: Revision,
    key: &str,
    value: &[u8],
) -> Result<()> {
    let record = Record {
        deleted,
        create_revision,
        prev,
        key,
        value,
    };
    log.insert(rev, record.encode().as_slice())
        .map_err(internal)?;
    Ok(())
}

fn kv(key: &str, value: Bytes, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        create_revision,
        mod_revision,
        stale: false,
    }
}

fn read_meta(txn: &redb::ReadTransaction) -> Result<(Revision, Revision)> {
    let meta = txn.open_table(META).map_err(internal)?;
    let read = |k| -> Result<u64> {
        Ok(meta
            .get(k)
            .map_err(internal)?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    Ok((read(META_REVISION)?, read(META_COMPACTED)?))
}

impl Shared {
    fn get(&self, key: &str) -> Result<KeyValue> {
        let txn = self.db.begin_read().map_err(internal)?;
        let index = txn.open_table(INDEX).map_err(internal)?;
        let (c, m) = index
            .get(key)
            .map_err(internal)?
            .map(|g| g.value())
            .ok_or_else(|| Error::NotFound { key: key.into() })?;
        let log = txn.open_table(LOG).map_err(internal)?;
        Ok(kv(key, log_value(&log, m)?, c, m))
    }

    fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let (start, requested) = match &opts.continue_token {
            Some(token) => {
                let (start, rev) = continue_token::decode(prefix, token)?;
                (start, Some(rev))
            }
            None => (prefix.to_owned(), opts.revision.filter(|r| *r > 0)),
        };
        let end = prefix_end(prefix);
        let txn = self.db.begin_read().map_err(internal)?;
        let (head, compacted) = read_meta(&txn)?;
        let rev = requested.unwrap_or(head);
        if rev < compacted {
            return Err(Error::Expired {
                requested: rev,
                compacted,
            });
        }
        if rev > head {
            return Err(Error::FutureRevision {
                requested: rev,
                current: head,
            });
        }
        let index = txn.open_table(INDEX).map_err(internal)?;
        let log = txn.open_table(LOG).map_err(internal)?;
        let in_range = |k: &str| k.as_bytes() >= start.as_bytes() && k.as_bytes() < &end[..];

        // Keys changed after `rev`, with their state at `rev` (None: absent then).
        let mut changed: BTreeMap<String, Option<(Revision, Revision)>> = BTreeMap::new();
        if rev < head {
            for entry in log.range(rev + 1..=head).map_err(internal)? {
                let (_, bytes) = entry.map_err(internal)?;
                let record = Record::decode(bytes.value())?;
                if in_range(record.key) && !changed.contains_key(record.key) {
                    let then = (record.prev > 0).then_some((record.create_revision, record.prev));
                    changed.insert(record.key.to_owned(), then);
                }
            }
        }
        let mut keys: Vec<(String, Revision, Revision)> = Vec::new();
        let range = index.range::<&str>(start.as_str()..).map_err(internal)?;
        for entry in range {
            let (k, v) = entry.map_err(internal)?;
            let k = k.value();
            if k.as_bytes() >= &end[..] {
                break;
            }
            if !changed.contains_key(k) {
                let (c, m) = v.value();
                keys.push((k.to_owned(), c, m));
            }
        }
        keys.extend(
            changed
                .into_iter()
                .filter_map(|(k, then)| then.map(|(c, m)| (k, c, m))),
        );
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        let limit = opts
            .limit
            .filter(|l| *l > 0)
            .map_or(usize::MAX, |l| l as usize);
        let total = keys.len();
        let mut items = Vec::with_capacity(total.min(limit));
        for (k, c, m) in keys.into_iter().take(limit) {
            let value = log_value(&log, m)?;
            items.push(kv(&k, value, c, m));
        }
        let more = total > items.len();
        let continue_token = match items.last() {
            Some(last) if more => Some(continue_token::encode(
                prefix,
                &format!("{}\0", last.key),
                rev,
            )),
            _ => None,
        };
        Ok(ListResult {
            remaining: more.then(|| (total - items.len()) as u64),
            items,
            revision: rev,
            continue_token,
        })
    }

    fn count(&self, prefix: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(internal)?;
        let index = txn.open_table(INDEX).map_err(internal)?;
        let end = prefix_end(prefix);
        let mut n = 0;
        for entry in index.range::<&str>(prefix..).map_err(internal)? {
            let (k, _) = entry.map_err(internal)?;
            if k.value().as_bytes() >= &end[..] {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Reads the next chunk of a watch's replay: events after `pos` up to `end` under `prefix`.
    fn replay_chunk(&self, prefix: &str, pos: Revision, end: Revision) -> Result<Vec<WatchEvent>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let (_, compacted) = read_meta(&txn)?;
        if pos < compacted {
            return Err(Error::Expired {
                requested: pos,
                compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(internal)?;
        let mut events = Vec::new();
        for entry in log.range(pos + 1..=end).map_err(internal)? {
            let (rev, bytes) = entry.map_err(internal)?;
            let (rev, record) = (rev.value(), Record::decode(bytes.value())?);
            if !record.key.starts_with(prefix) {
                continue;
            }
            let c = record.create_revision;
            let value = Bytes::copy_from_slice(record.value);
            events.push(match (record.deleted, record.prev) {
                (true, prev) => WatchEvent::Deleted(kv(record.key, log_value(&log, prev)?, c, rev)),
                (false, 0) => WatchEvent::Created(kv(record.key, value, c, rev)),
                (false, prev) => WatchEvent::Modified {
                    kv: kv(record.key, value, c, rev),
                    prev: log_value(&log, prev)?,
                },
            });
        }
        Ok(events)
    }
}

/// The state behind one embedded watch stream.
struct Watch {
    shared: Arc<Shared>,
    prefix: String,
    /// The replay has delivered everything up to here.
    replay_pos: Revision,
    /// The replay ends here; live events at or below this are duplicates and skipped.
    replay_end: Revision,
    skip_through: Revision,
    pending: VecDeque<WatchEvent>,
    live: mpsc::Receiver<WatchEvent>,
    cut: Arc<AtomicBool>,
    progress: Option<tokio::time::Interval>,
    done: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.replay_pos < self.replay_end {
                let (shared, prefix) = (self.shared.clone(), self.prefix.clone());
                let (pos, end) = (
                    self.replay_pos,
                    self.replay_end.min(self.replay_pos + CHUNK),
                );
                let chunk =
                    tokio::task::spawn_blocking(move || shared.replay_chunk(&prefix, pos, end))
                        .await
                        .map_err(internal)
                        .and_then(|r| r);
                match chunk {
                    Ok(events) => {
                        self.pending.extend(events);
                        self.replay_pos = end;
                        continue;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            let received = match &mut self.progress {
                Some(interval) => tokio::select! {
                    event = self.live.recv() => Some(event),
                    _ = interval.tick() => None,
                },
                None => Some(self.live.recv().await),
            };
            match received {
                Some(Some(event)) if event.revision() <= self.skip_through => continue,
                Some(Some(event)) => return Some(Ok(event)),
                Some(None) if self.cut.load(Ordering::Acquire) => {
                    return self.fail(Error::WatcherTooSlow)
                }
                Some(None) => {
                    return self.fail(Error::Unavailable("the store was closed".into()));
                }
                None => {
                    // Under the fan-out lock, an empty queue means every committed event for
                    // this watcher has been delivered, so the committed revision is reached.
                    let fanout = self.shared.fanout.lock();
                    if self.live.is_empty() {
                        return Some(Ok(WatchEvent::Progress(fanout.committed)));
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<WatchEvent>> {
        self.done = true;
        Some(Err(e))
    }
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        match self
            .submit(Op::Create {
                key: key.into(),
                value,
            })
            .await?
        {
            Written::Revision(rev) => Ok(rev),
            _ => Err(internal("unexpected reply to create")),
        }
    }

    async fn get(&self, key: &str) -> Result<KeyValue> {
        let key = key.to_owned();
        self.read(move |s| s.get(&key)).await
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let (prefix, opts) = (prefix.to_owned(), opts.clone());
        self.read(move |s| s.list(&prefix, &opts)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        match self
            .submit(Op::Update {
                key: key.into(),
                value,
                expected,
            })
            .await?
        {
            Written::Revision(rev) => Ok(rev),
            _ => Err(internal("unexpected reply to update")),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        match self
            .submit(Op::Delete {
                key: key.into(),
                expected,
            })
            .await?
        {
            Written::Deleted(kv) => Ok(kv),
            _ => Err(internal("unexpected reply to delete")),
        }
    }

    async fn watch(&self, opts: WatchOptions) -> Result<WatchStream> {
        let (tx, live) = mpsc::channel(opts.buffer.max(1));
        let cut = Arc::new(AtomicBool::new(false));
        let committed = {
            let mut fanout = self.shared.fanout.lock();
            fanout.watchers.push(Slot {
                prefix: opts.prefix.clone(),
                tx,
                cut: cut.clone(),
            });
            fanout.committed
        };
        let from = if opts.from_revision == 0 {
            committed
        } else {
            opts.from_revision
        };
        let progress = opts.progress_interval.map(|period| {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let watch = Watch {
            shared: self.shared.clone(),
            prefix: opts.prefix,
            replay_pos: from,
            replay_end: committed.max(from),
            skip_through: committed.max(from),
            pending: VecDeque::new(),
            live,
            cut,
            progress,
            done: false,
        };
        // Fail fast on a compacted start, so callers see Expired from `watch` itself.
        if from < committed {
            let txn = self.shared.db.begin_read().map_err(internal)?;
            let (_, compacted) = read_meta(&txn)?;
            if from < compacted {
                return Err(Error::Expired {
                    requested: from,
                    compacted,
                });
            }
        }
        Ok(Box::pin(futures::stream::unfold(
            watch,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        )))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.fanout.lock().committed)
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |s| s.count(&prefix)).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}
