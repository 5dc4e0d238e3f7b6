//! Storage for Coxswain's API server: one trait, two backends.
//!
//! The API server persists every object as JSON bytes under a key
//! `/registry/<group>/<resource>/[<namespace>/]<name>`. This crate knows nothing about objects;
//! it stores bytes under keys with etcd's semantics, because those semantics are what the
//! Kubernetes API is built on:
//!
//! - one global, strictly increasing [`Revision`]; an object's `resourceVersion` is the revision
//!   of its last write and a list's is the revision it was read at;
//! - create fails if the key exists; update and delete take an expected revision and fail with
//!   [`Error::Conflict`] if it moved; [`guaranteed_update`] retries a read-modify-write closure;
//! - lists read a consistent snapshot, paged with a limit and an opaque continue token that
//!   keeps reading the same revision;
//! - a watch from revision R delivers every later change under a prefix exactly once, in order,
//!   or fails with [`Error::Expired`] once R has been compacted away; a watcher that cannot keep
//!   up is cut off ([`Error::WatcherTooSlow`]) rather than allowed to slow writers;
//! - progress notifications ([`WatchEvent::Progress`]) let the API server send bookmarks.
//!
//! Backends: [`etcd::EtcdStore`] (production, HA) and [`embedded::EmbeddedStore`] (the
//! zero-setup default, a durable file in the same process). Both pass one conformance suite,
//! [`testing`], which is the executable form of the contract above.
//!
//! **Invariant:** nothing outside this crate names an `etcd_client` or `redb` type.

#![deny(missing_docs)]

mod continue_token;
pub mod embedded;
pub mod encryption;
pub mod etcd;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A position in the store's history: every write gets the next one.
pub type Revision = u64;

/// A key as stored, with the revisions the API server turns into metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value: JSON bytes, never parsed here.
    pub value: Bytes,
    /// The revision that created the key (kept across updates).
    pub create_revision: Revision,
    /// The revision of the last write to the key: the object's `resourceVersion`.
    pub mod_revision: Revision,
    /// The stored form is out of date (upstream's "stale": written under an older encryption
    /// key or provider), so an update should write it even when the content is unchanged —
    /// that is how `kubectl replace` of every Secret finishes a key rotation.
    pub stale: bool,
}

/// How to read a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision instead of the latest. Ignored when `continue_token` is set (the
    /// token carries the revision of the first page).
    pub revision: Option<Revision>,
    /// At most this many items; `None` or `Some(0)` means all.
    pub limit: Option<u64>,
    /// The token of the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at (the same on every page of one list).
    pub revision: Revision,
    /// Set when more items follow: pass it back to read the next page.
    pub continue_token: Option<String>,
    /// How many items follow this page, when the backend knows.
    pub remaining: Option<u64>,
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created.
    Created(KeyValue),
    /// A key was updated; `prev` is its value before the update.
    Modified {
        /// The key after the update.
        kv: KeyValue,
        /// The value before the update.
        prev: Bytes,
    },
    /// A key was deleted. `kv.value` is its last value and `kv.mod_revision` the revision of the
    /// delete, so the API server can send the deleted object with the right resourceVersion.
    Deleted(KeyValue),
    /// Every change up to this revision has been delivered: the basis of BOOKMARK events.
    Progress(Revision),
}

impl WatchEvent {
    /// The revision this event happened at (or, for progress, has been reached).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Created(kv) | WatchEvent::Modified { kv, .. } | WatchEvent::Deleted(kv) => {
                kv.mod_revision
            }
            WatchEvent::Progress(rev) => *rev,
        }
    }

    /// The key the event is about; `None` for progress.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Created(kv) | WatchEvent::Modified { kv, .. } | WatchEvent::Deleted(kv) => {
                Some(&kv.key)
            }
            WatchEvent::Progress(_) => None,
        }
    }
}

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Every key starting with this.
    pub prefix: String,
    /// Deliver changes with a revision greater than this; `0` means "from now".
    pub from_revision: Revision,
    /// Emit [`WatchEvent::Progress`] about this often; `None` for never.
    pub progress_interval: Option<Duration>,
    /// How many undelivered events the watcher may fall behind before it is cut off.
    pub buffer: usize,
}

impl WatchOptions {
    /// The default for [`WatchOptions::buffer`]: big enough to absorb a burst of writes while a
    /// consumer is busy, small enough that a stuck consumer costs bounded memory.
    pub const DEFAULT_BUFFER: usize = 10_000;

    /// Watch `prefix` for changes after `from_revision`, with the default buffer and no progress
    /// notifications.
    pub fn new(prefix: impl Into<String>, from_revision: Revision) -> Self {
        WatchOptions {
            prefix: prefix.into(),
            from_revision,
            progress_interval: None,
            buffer: Self::DEFAULT_BUFFER,
        }
    }
}

/// A stream of watch events. It ends with an error (expired, too slow, storage gone), or when
/// dropped; it never ends silently while the store is healthy.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Errors of the storage layer. The API server maps each to a `metav1.Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Create found the key already there.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key moved since the expected revision (the API answers 409 Conflict).
    #[error("key {key:?} was modified: expected revision {expected}, current {current}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's current revision.
        current: Revision,
    },
    /// The requested revision has been compacted away (the API answers 410 Gone / Expired).
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Expired {
        /// The revision asked for.
        requested: Revision,
        /// The compacted revision.
        compacted: Revision,
    },
    /// The requested revision has not happened yet.
    #[error("revision {requested} is newer than the store's current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A continue token that this store did not issue, or one for another prefix.
    #[error("invalid continue token: {0}")]
    InvalidContinue(String),
    /// The watcher's buffer filled up; it must re-list and watch again.
    #[error("the watcher fell too far behind and was cut off")]
    WatcherTooSlow,
    /// The backend cannot be reached (etcd down, store closed); retrying may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend failed in a way retrying will not fix.
    #[error("storage backend failed: {0}")]
    Internal(String),
}

/// Results of storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The contract both backends implement; see the crate docs for the semantics.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Stores a new key. Fails with [`Error::AlreadyExists`]; returns the write's revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Reads the latest value of a key.
    async fn get(&self, key: &str) -> Result<KeyValue>;

    /// Reads the keys under `prefix`, in key order, from one consistent snapshot.
    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult>;

    /// Replaces a key's value if its `mod_revision` is still `expected`; returns the new
    /// revision. Fails with [`Error::Conflict`] if it moved, [`Error::NotFound`] if it is gone.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes a key, if `expected` is given only at that revision. Returns the deleted key
    /// (its last value) with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Watches a prefix; see [`WatchOptions`].
    async fn watch(&self, opts: WatchOptions) -> Result<WatchStream>;

    /// The store's latest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// How many keys live under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Forgets history before `revision`: lists and watches from older revisions then fail
    /// with [`Error::Expired`]. Backends also compact on their own; this forces it.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// How many times [`guaranteed_update`] re-reads after a conflict before giving up. Conflicts
/// only repeat while other writers keep winning the same key, so this bounds a live-lock, not
/// normal operation.
pub const MAX_UPDATE_ATTEMPTS: u32 = 1_000;

/// Why [`guaranteed_update`] did not write.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The closure refused (a failed precondition, invalid object, …).
    #[error(transparent)]
    Aborted(E),
    /// The store failed, or conflicts kept happening past [`MAX_UPDATE_ATTEMPTS`].
    #[error(transparent)]
    Storage(#[from] Error),
}

/// Read-modify-write with retry: reads `key` (`None` if absent), asks `try_update` for the new
/// value, and writes it if the key has not moved meanwhile; on a conflict it reads again and
/// calls `try_update` again, so the closure must be a pure function of what it is given.
///
/// A closure that returns the bytes it was given writes nothing and returns the current key:
/// no-op updates do not bump the revision (as upstream's `GuaranteedUpdate`). Returning a value
/// for an absent key creates it.
pub async fn guaranteed_update<S, F, E>(
    store: &S,
    key: &str,
    mut try_update: F,
) -> Result<KeyValue, UpdateError<E>>
where
    S: Storage + ?Sized,
    F: FnMut(Option<&KeyValue>) -> Result<Bytes, E>,
{
    let mut last_err = None;
    for attempt in 0..MAX_UPDATE_ATTEMPTS {
        if attempt >= 4 {
            // Many writers on one key: a short jittered pause lets one of them through instead
            // of all re-reading in lock step.
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() % 1_000);
            let pause = u64::from(attempt.min(20)) * 50 + u64::from(jitter);
            tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
        }
        let current = match store.get(key).await {
            Ok(kv) => Some(kv),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let value = try_update(current.as_ref()).map_err(UpdateError::Aborted)?;
        let written = match &current {
            Some(kv) if kv.value == value && !kv.stale => return Ok(kv.clone()),
            Some(kv) => store
                .update(key, value.clone(), kv.mod_revision)
                .await
                .map(|rev| (kv.create_revision, rev)),
            None => store.create(key, value.clone()).await.map(|rev| (rev, rev)),
        };
        match written {
            Ok((create_revision, mod_revision)) => {
                return Ok(KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision,
                    mod_revision,
                    stale: false,
                })
            }
            Err(
                e @ (Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }),
            ) => last_err = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err
        .unwrap_or_else(|| Error::Internal("guaranteed_update made no attempt".into()))
        .into())
}

/// A continue token that resumes a list of `prefix` at `revision` right after `last_key`: for
/// callers that filter a page and stop before its end (the API server's selectors).
pub fn continue_after(prefix: &str, last_key: &str, revision: Revision) -> String {
    continue_token::encode(prefix, &format!("{last_key}\0"), revision)
}

/// The first key after every key that starts with `prefix`: the exclusive end of a prefix range.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only an all-0xff (or empty) prefix gets here: it means "to the end of the keyspace".
    vec![0]
}
