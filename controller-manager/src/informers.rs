//! One shared informer per resource: a single watcher feeding a kube-runtime reflector store,
//! fanned out to every controller that subscribes (client-go's `SharedInformerFactory`).
//!
//! Controllers read the stores (the listers) and get their triggers from
//! [`Informer::subscribe`]; nobody else opens a watch on these kinds. Subscriptions must be
//! taken before [`Informers::tasks`] starts the watchers, so each subscriber also sees the
//! initial list.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::runtime::reflector::{self, store::Writer, ReflectHandle, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use serde_json::Value;

/// How many events a subscriber may lag behind before the watcher waits for it. Controllers
/// drain their subscriptions continuously; the buffer only absorbs bursts like an initial list.
const SUBSCRIBER_BUFFER: usize = 4096;

/// A shared informer for one kind: the store every controller reads, and the writer that the
/// watcher task owns once started.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    api: Api<K>,
    deleted: tokio::sync::broadcast::Sender<Arc<K>>,
    /// Whether any controller asked for this kind; unused kinds are never watched.
    used: AtomicBool,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new(client: &Client) -> Self {
        let (store, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        Informer {
            store,
            writer: Mutex::new(Some(writer)),
            api: Api::all(client.clone()),
            deleted: tokio::sync::broadcast::channel(SUBSCRIBER_BUFFER).0,
            used: AtomicBool::new(false),
        }
    }

    /// A trigger stream of deleted objects. kube-runtime's shared subscriptions carry only
    /// applied objects, but a controller must also act when something it counts disappears
    /// (a pod deleted without grace, a `default` ServiceAccount removed). A subscriber that
    /// lags drops deletions; the resync of the owner covers that.
    pub fn deletions(&self) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
        self.used.store(true, Ordering::Relaxed);
        let rx = self.deleted.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((obj, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The reflector store (lister) for this kind.
    pub fn store(&self) -> Store<K> {
        self.used.store(true, Ordering::Relaxed);
        self.store.clone()
    }

    /// A trigger stream of applied objects for one controller. Returns `None` once the
    /// watcher has started, because a late subscriber would miss the initial list.
    pub fn subscribe(&self) -> Option<ReflectHandle<K>> {
        self.used.store(true, Ordering::Relaxed);
        self.writer.lock().as_ref().and_then(Writer::subscribe)
    }

    /// The watcher task, or `None` if already taken.
    fn task(&self) -> Option<BoxFuture<'static, ()>> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let writer = self.writer.lock().take()?;
        let stream = watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect_shared(writer);
        let deleted = self.deleted.clone();
        Some(
            stream
                .for_each(move |ev| {
                    match ev {
                        Ok(watcher::Event::Delete(obj)) => {
                            // No receiver is not an error: nobody asked for deletions.
                            let _ = deleted.send(Arc::new(obj));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying");
                        }
                    }
                    futures::future::ready(())
                })
                .boxed(),
        )
    }
}

/// The shared informers of the kinds the typed controllers use.
pub struct Informers {
    /// Pods.
    pub pods: Informer<Pod>,
    /// ReplicaSets.
    pub replicasets: Informer<ReplicaSet>,
    /// Deployments.
    pub deployments: Informer<Deployment>,
    /// Namespaces.
    pub namespaces: Informer<Namespace>,
    /// ServiceAccounts.
    pub serviceaccounts: Informer<ServiceAccount>,
    /// Services.
    pub services: Informer<Service>,
    /// Jobs.
    pub jobs: Informer<Job>,
}

impl Informers {
    /// Informers for every typed kind; nothing watches until [`Informers::tasks`].
    pub fn new(client: &Client) -> Self {
        Informers {
            pods: Informer::new(client),
            replicasets: Informer::new(client),
            deployments: Informer::new(client),
            namespaces: Informer::new(client),
            serviceaccounts: Informer::new(client),
            services: Informer::new(client),
            jobs: Informer::new(client),
        }
    }

    /// The watcher tasks, one per kind some controller uses; each runs until dropped.
    pub fn tasks(&self) -> Vec<BoxFuture<'static, ()>> {
        [
            self.pods.task(),
            self.replicasets.task(),
            self.deployments.task(),
            self.namespaces.task(),
            self.serviceaccounts.task(),
            self.services.task(),
            self.jobs.task(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Converts a typed object to JSON for patches that replace whole lists.
pub fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
