//! The other objects plugins read, kept current by one watch each (upstream's shared
//! informer listers): PodDisruptionBudgets for preemption; Services, ReplicaSets and
//! StatefulSets for PodTopologySpread's default selector. (ReplicationControllers are not
//! served by this API server, so they are not watched.)

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use parking_lot::RwLock;

/// One resource's objects by `namespace/name`, shared (not copied) with readers.
pub struct Store<K> {
    objects: RwLock<HashMap<String, Arc<K>>>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            objects: RwLock::new(HashMap::new()),
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

impl<K: kube::Resource> Store<K> {
    pub fn apply(&self, obj: K) {
        let key = key_of(obj.meta());
        self.objects.write().insert(key, Arc::new(obj));
    }
    pub fn delete(&self, obj: &K) {
        self.objects.write().remove(&key_of(obj.meta()));
    }
    /// Replaces everything (a watch relist).
    pub fn replace(&self, objs: Vec<K>) {
        let map = objs
            .into_iter()
            .map(|o| (key_of(o.meta()), Arc::new(o)))
            .collect();
        *self.objects.write() = map;
    }
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects
            .read()
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }
    /// Every object in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.objects
            .read()
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }
    pub fn list(&self) -> Vec<Arc<K>> {
        self.objects.read().values().cloned().collect()
    }
}

/// Every store a plugin may read, shared by all profiles of one scheduler.
#[derive(Default)]
pub struct Listers {
    pub pdbs: Store<PodDisruptionBudget>,
    pub services: Store<Service>,
    pub replica_sets: Store<ReplicaSet>,
    pub stateful_sets: Store<StatefulSet>,
}
