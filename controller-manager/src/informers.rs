//! One shared informer per resource: a single watcher feeding a kube-runtime reflector store,
//! fanned out to every controller that subscribes (client-go's `SharedInformerFactory`).
//!
//! Controllers read the stores (the listers) and get their triggers from
//! [`Informer::subscribe`]; nobody else opens a watch on these kinds. Subscriptions must be
//! taken before [`Informers::tasks`] starts the watchers, so each subscriber also sees the
//! initial list.
//!
//! The fan-out is ours rather than kube-runtime's `reflect_shared` + `ReflectHandle`: a
//! `ReflectHandle` carries only object references and looks each one up in the store when
//! polled; if the object was deleted in between (a pod deleted with grace period 0 right
//! after its update), it returns `Pending` without registering a waker. Inside a
//! `Controller` (whose triggers are a `SelectAll`) that stream is then never polled again:
//! the controller silently stops hearing about that kind, e.g. a ReplicaSet no longer sees
//! its pods become ready, and a rollout stalls. Subscribers here receive the object carried
//! by the watch event itself, so there is nothing to look up and nothing to lose.
//!
//! A subscription never makes the watcher wait: each one is a queue that keeps only the
//! newest version of each object not yet taken (client-go's listeners never block the
//! informer either; their buffers grow instead). A kube-runtime `Controller` stops polling its
//! triggers while all its reconcile slots are busy, so with a bounded channel one busy
//! controller held back the watcher, and with it the store every other controller reads:
//! under a 5,000-pod burst the pod store lagged the API server by tens of seconds. Keeping
//! only the newest version is safe because every controller is level-based (it reads the
//! store; the trigger only says which key to look at), and it bounds a queue by the number
//! of objects, not events.
//!
//! [`Informers::synced`] waits for every started informer's initial list, and
//! [`crate::run`] polls no controller before it returns (client-go's `WaitForCacheSync`).
//! Besides keeping the first passes from acting on empty caches, this is what makes the
//! controllers' own `Store::wait_until_ready` calls safe: kube-runtime's readiness signal keeps
//! a single waker, so of several reconciles waiting on one store concurrently only the last to
//! poll is woken and the others hang forever, holding back every later trigger of their key.
//! Once [`Informers::synced`] has seen a store ready, the store remembers it and every later
//! wait returns at once.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

/// How many deletions a deletion subscriber may lag behind before it misses some.
const DELETION_BUFFER: usize = 4096;

/// A shared informer for one kind: the store every controller reads, and the writer that the
/// watcher task owns once started.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    /// The senders of every subscription, handed to the watcher task when it starts.
    subscribers: Mutex<Vec<Publisher<K>>>,
    api: Api<K>,
    /// What the watcher asks for (everything, or a field selector).
    watch: watcher::Config,
    deleted: broadcast::Sender<Arc<K>>,
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
        Self::with_watch(client, watcher::Config::default())
    }

    /// An informer for only the objects `watch` selects (e.g. one name in every namespace).
    fn with_watch(client: &Client, watch: watcher::Config) -> Self {
        let writer = Writer::new(());
        Informer {
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            subscribers: Mutex::new(Vec::new()),
            api: Api::all(client.clone()),
            watch,
            deleted: broadcast::channel(DELETION_BUFFER).0,
            used: AtomicBool::new(false),
        }
    }

    /// A trigger stream of deleted objects. Subscriptions carry only applied objects, but a
    /// controller must also act when something it counts disappears (a pod deleted without
    /// grace, a `default` ServiceAccount removed). A subscriber that lags drops deletions.
    pub fn deletions(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.used.store(true, Ordering::Relaxed);
        let rx = self.deleted.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((obj, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The reflector store (lister) for this kind.
    pub fn store(&self) -> Store<K> {
        self.used.store(true, Ordering::Relaxed);
        self.store.clone()
    }

    /// A trigger stream of applied objects for one controller: every added or modified
    /// object as the watch event carried it, and every object of each (re)list once it is
    /// complete. Returns `None` once the watcher has started, because a late subscriber
    /// would miss the initial list.
    pub fn subscribe(&self) -> Option<BoxStream<'static, Arc<K>>> {
        self.used.store(true, Ordering::Relaxed);
        // Held while registering, so the watcher task cannot start in between.
        let writer = self.writer.lock();
        writer.as_ref()?;
        let (tx, rx) = latest_channel();
        self.subscribers.lock().push(tx);
        Some(subscription(rx))
    }

    /// Waits until this informer's store holds its initial list; returns at once if its
    /// watcher was never started (nobody uses the kind). Must be the only waiter on the
    /// store meanwhile (see the module docs).
    async fn synced(&self) -> Result<(), crate::Error> {
        if self.writer.lock().is_some() {
            return Ok(());
        }
        self.store.wait_until_ready().await?;
        Ok(())
    }

    /// The watcher task (named by kind), or `None` if already taken.
    fn task(&self) -> Option<(String, BoxFuture<'static, ()>)> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let writer = self.writer.lock().take()?;
        let subscribers = std::mem::take(&mut *self.subscribers.lock());
        // managedFields are nobody's business here and a large share of every object
        // (kube-controller-manager's informers strip them too).
        let events = watcher(self.api.clone(), self.watch.clone())
            .modify(|o| o.meta_mut().managed_fields = None)
            .default_backoff();
        let task = fan_out(events, writer, subscribers, self.deleted.clone()).boxed();
        Some((K::kind(&()).into_owned(), task))
    }
}

/// What a subscription holds between the watcher and its controller: the objects not yet
/// taken, each at its newest version, in the order they first arrived.
struct Pending<K: Resource> {
    order: VecDeque<ObjectRef<K>>,
    newest: HashMap<ObjectRef<K>, Arc<K>>,
    /// The watcher is gone: nothing more will arrive.
    closed: bool,
}

struct Queue<K: Resource> {
    pending: Mutex<Pending<K>>,
    ready: Notify,
}

/// The watcher's end of a subscription. It holds the queue weakly, so a dropped
/// subscription stops collecting objects; dropping the publisher closes the queue.
struct Publisher<K: Resource>(Weak<Queue<K>>);

/// The controller's end of a subscription.
struct Subscriber<K: Resource>(Arc<Queue<K>>);

fn latest_channel<K>() -> (Publisher<K>, Subscriber<K>)
where
    K: Resource,
    K::DynamicType: Eq + Hash + Clone,
{
    let queue = Arc::new(Queue {
        pending: Mutex::new(Pending {
            order: VecDeque::new(),
            newest: HashMap::new(),
            closed: false,
        }),
        ready: Notify::new(),
    });
    (Publisher(Arc::downgrade(&queue)), Subscriber(queue))
}

impl<K> Publisher<K>
where
    K: Resource<DynamicType = ()>,
{
    /// Queues `obj`, replacing an older version of it still waiting; never waits. Returns
    /// false once the subscriber is gone.
    fn publish(&self, obj: Arc<K>) -> bool {
        let Some(queue) = self.0.upgrade() else {
            return false;
        };
        let key = ObjectRef::from_obj(&*obj);
        let mut pending = queue.pending.lock();
        if let Some(waiting) = pending.newest.get_mut(&key) {
            *waiting = obj;
        } else {
            pending.order.push_back(key.clone());
            pending.newest.insert(key, obj);
        }
        drop(pending);
        queue.ready.notify_one();
        true
    }
}

impl<K: Resource> Drop for Publisher<K> {
    fn drop(&mut self) {
        if let Some(queue) = self.0.upgrade() {
            queue.pending.lock().closed = true;
            queue.ready.notify_one();
        }
    }
}

impl<K> Subscriber<K>
where
    K: Resource,
    K::DynamicType: Eq + Hash + Clone,
{
    /// The oldest waiting object, or `None` once the queue is empty and closed.
    async fn next(&self) -> Option<Arc<K>> {
        loop {
            {
                let mut pending = self.0.pending.lock();
                if let Some(key) = pending.order.pop_front() {
                    if let Some(obj) = pending.newest.remove(&key) {
                        return Some(obj);
                    }
                    continue;
                }
                if pending.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a publish between the check
            // above and this wait is not missed.
            self.0.ready.notified().await;
        }
    }
}

/// The receiving end of a subscription as a trigger stream.
fn subscription<K>(rx: Subscriber<K>) -> BoxStream<'static, Arc<K>>
where
    K: Resource + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    futures::stream::unfold(rx, |rx| async move { rx.next().await.map(|obj| (obj, rx)) }).boxed()
}

/// Applies watch events to the store, then hands each applied object to every subscriber
/// (never waiting: see the module docs) and each deleted one to the deletion subscribers.
async fn fan_out<K, S>(
    events: S,
    writer: Writer<K>,
    mut subscribers: Vec<Publisher<K>>,
    deleted: broadcast::Sender<Arc<K>>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let store = writer.as_reader();
    let mut events = std::pin::pin!(events.reflect(writer));
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(obj)) => notify(&mut subscribers, Arc::new(obj)),
            // A (re)list is complete and now in the store: everything in it may have changed.
            Ok(watcher::Event::InitDone) => {
                for obj in store.state() {
                    notify(&mut subscribers, obj);
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                // No receiver is not an error: nobody asked for deletions.
                let _ = deleted.send(Arc::new(obj));
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(error) => {
                tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying");
            }
        }
    }
}

/// Queues `obj` for every subscriber; forgets subscribers that are gone.
fn notify<K: Resource<DynamicType = ()>>(subscribers: &mut Vec<Publisher<K>>, obj: Arc<K>) {
    subscribers.retain(|tx| tx.publish(obj.clone()));
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
    /// CronJobs.
    pub cronjobs: Informer<CronJob>,
    /// Leases (the node lifecycle controller reads the `kube-node-lease` ones).
    pub leases: Informer<Lease>,
    /// Nodes.
    pub nodes: Informer<Node>,
    /// DaemonSets.
    pub daemonsets: Informer<DaemonSet>,
    /// StatefulSets.
    pub statefulsets: Informer<StatefulSet>,
    /// The `kube-root-ca.crt` ConfigMap of every namespace (a field selector on the name:
    /// the root-ca-cert-publisher needs no other ConfigMaps).
    pub root_ca_configmaps: Informer<ConfigMap>,
    /// CertificateSigningRequests (csrapproving, csrsigning).
    pub csrs: Informer<CertificateSigningRequest>,
    /// PodDisruptionBudgets (disruption).
    pub pdbs: Informer<PodDisruptionBudget>,
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
            cronjobs: Informer::new(client),
            leases: Informer::new(client),
            nodes: Informer::new(client),
            daemonsets: Informer::new(client),
            statefulsets: Informer::new(client),
            root_ca_configmaps: Informer::with_watch(
                client,
                watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    crate::controllers::rootcacertpublisher::CONFIG_MAP
                )),
            ),
            csrs: Informer::new(client),
            pdbs: Informer::new(client),
        }
    }

    /// Waits until the store of every started informer holds its initial list (client-go's
    /// `WaitForCacheSync`). The watcher tasks must be running meanwhile, and nothing else may
    /// wait on these stores until this returns: it waits on one store at a time, so each
    /// store's single-waker readiness signal has exactly one waiter.
    pub async fn synced(&self) -> Result<(), crate::Error> {
        self.pods.synced().await?;
        self.replicasets.synced().await?;
        self.deployments.synced().await?;
        self.namespaces.synced().await?;
        self.serviceaccounts.synced().await?;
        self.services.synced().await?;
        self.jobs.synced().await?;
        self.cronjobs.synced().await?;
        self.leases.synced().await?;
        self.nodes.synced().await?;
        self.daemonsets.synced().await?;
        self.statefulsets.synced().await?;
        self.root_ca_configmaps.synced().await?;
        self.csrs.synced().await?;
        self.pdbs.synced().await?;
        Ok(())
    }

    /// The watcher tasks, one per kind some controller uses, each with its kind's name; each
    /// runs until dropped.
    pub fn tasks(&self) -> Vec<(String, BoxFuture<'static, ()>)> {
        [
            self.pods.task(),
            self.replicasets.task(),
            self.deployments.task(),
            self.namespaces.task(),
            self.serviceaccounts.task(),
            self.services.task(),
            self.jobs.task(),
            self.cronjobs.task(),
            self.leases.task(),
            self.nodes.task(),
            self.daemonsets.task(),
            self.statefulsets.task(),
            self.root_ca_configmaps.task(),
            self.csrs.task(),
            self.pdbs.task(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::{self, SelectAll};
    use std::time::Duration;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    /// Every subscription sees the initial list, then each update in order, even an update
    /// of an object deleted before the subscriber got to it, and keeps delivering after
    /// that. (kube-runtime's `ReflectHandle` stalls for good inside a `Controller`'s
    /// `SelectAll` there, which is why the fan-out is ours.)
    #[tokio::test]
    async fn subscribers_get_every_update_even_of_objects_already_deleted() {
        let (tx, rx) = latest_channel();
        let deleted = broadcast::channel(16).0;
        let mut deletions = deleted.subscribe();
        let events = stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("listed"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(pod("a"))),
            Ok(watcher::Event::Delete(pod("a"))),
            Ok(watcher::Event::Apply(pod("b"))),
        ]);
        let writer = Writer::new(());
        let store = writer.as_reader();
        // The whole stream is applied before the subscriber reads anything: by then `a` is
        // gone from the store.
        fan_out(events, writer, vec![tx], deleted).await;
        let mut stored = names(&store.state());
        stored.sort();
        assert_eq!(stored, ["b", "listed"]);
        let mut triggers = SelectAll::new();
        triggers.push(subscription(rx));
        let got = tokio::time::timeout(Duration::from_secs(5), triggers.collect::<Vec<_>>())
            .await
            .expect("the subscription ends once the watcher is gone, without stalling");
        assert_eq!(names(&got), ["listed", "a", "b"]);
        let gone = deletions.recv().await.expect("deletion");
        assert_eq!(gone.metadata.name.as_deref(), Some("a"));
    }

    /// A subscriber that does not read never holds the watcher back (a kube-runtime
    /// `Controller` stops reading its triggers while its reconcile slots are full): the
    /// store takes a burst far larger than any buffer at once, and the subscriber later gets
    /// each object once, at its newest version, in first-arrival order.
    #[tokio::test]
    async fn an_idle_subscriber_never_holds_the_store_back() {
        let (tx, rx) = latest_channel();
        let deleted = broadcast::channel(16).0;
        let version = |name: &str, v: &str| {
            let mut p = pod(name);
            p.metadata.resource_version = Some(v.into());
            p
        };
        let burst = (0..20_000).map(|i| {
            Ok(watcher::Event::Apply(version(
                &format!("p{}", i % 100),
                &i.to_string(),
            )))
        });
        let events = stream::iter(
            [Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)]
                .into_iter()
                .chain(burst),
        );
        let writer = Writer::new(());
        let store = writer.as_reader();
        tokio::time::timeout(
            Duration::from_secs(10),
            fan_out(events, writer, vec![tx], deleted),
        )
        .await
        .expect("the watcher never waits for the subscriber");
        assert_eq!(store.state().len(), 100);
        let got: Vec<Arc<Pod>> = subscription(rx).collect().await;
        assert_eq!(got.len(), 100, "one trigger per object");
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.metadata.name.as_deref(), Some(format!("p{i}").as_str()));
            let newest = 19_900 + i;
            assert_eq!(
                p.metadata.resource_version.as_deref(),
                Some(newest.to_string().as_str())
            );
        }
    }

    /// A dropped subscription is forgotten: nothing more is queued for it.
    #[test]
    fn a_dropped_subscriber_is_forgotten() {
        let (tx, rx) = latest_channel::<Pod>();
        let mut subscribers = vec![tx];
        notify(&mut subscribers, Arc::new(pod("a")));
        assert_eq!(subscribers.len(), 1);
        drop(rx);
        notify(&mut subscribers, Arc::new(pod("b")));
        assert!(subscribers.is_empty());
    }

    /// [`Informer::synced`] returns once the initial list is in the store; from then on the
    /// store's readiness is settled, so any number of reconciles may wait on it at once
    /// (before that, kube-runtime would wake only the last of them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_synced_every_concurrent_waiter_proceeds() {
        let url = "http://127.0.0.1:9".parse().expect("url");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        let informer: Informer<Pod> = Informer::new(&client);
        let store = informer.store();
        let writer = informer.writer.lock().take().expect("writer");
        let events = stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("x"))),
            Ok(watcher::Event::InitDone),
        ])
        .chain(stream::pending());
        let watch = tokio::spawn(fan_out(
            events,
            writer,
            Vec::new(),
            informer.deleted.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(5), informer.synced())
            .await
            .expect("synced in time")
            .expect("store ready");
        assert_eq!(names(&store.state()), ["x"]);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.wait_until_ready().await.is_ok() })
            })
            .collect();
        for w in waiters {
            let ready = tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("woken")
                .expect("joined");
            assert!(ready);
        }
        watch.abort();
    }
}
