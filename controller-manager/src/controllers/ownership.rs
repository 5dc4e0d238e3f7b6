//! Adoption and release of pods by DaemonSets and StatefulSets (upstream's
//! `PodControllerRefManager.ClaimPods`): a workload controls the pods its selector matches,
//! takes over matching pods nobody controls (e.g. after `kubectl delete --cascade=orphan`
//! and a re-create) and lets go of pods whose labels stopped matching.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::controllers::replicaset::controller_ref;
use crate::informers::to_value;
use crate::util;
use crate::Error;

/// The pods `owner` controls after adopting and releasing: of `pods` (its namespace), those
/// controlled by it whose labels match `selector` and pass `member`, plus orphans that do.
pub async fn claim_pods<K>(
    client: &Client,
    owner: &K,
    selector: &LabelSelector,
    pods: Vec<Arc<Pod>>,
    member: impl Fn(&Pod) -> bool,
) -> Result<Vec<Arc<Pod>>, Error>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut claimed = Vec::new();
    for pod in pods {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(selector, pod.labels()) && member(&pod);
        match util::controller_of(pod.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches {
                    claimed.push(pod);
                } else if !deleting {
                    let refs: Vec<_> = pod
                        .owner_references()
                        .iter()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    tracing::info!(pod = %pod.name_any(), "releasing pod that no longer matches");
                    patch_refs(&api, &pod, refs).await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                let mut refs = pod.owner_references().to_vec();
                refs.push(controller_ref(owner));
                tracing::info!(pod = %pod.name_any(), "adopting orphan pod");
                match patch_refs(&api, &pod, refs).await {
                    Ok(adopted) => claimed.push(Arc::new(adopted)),
                    // Gone or changed meanwhile: the next pass sees its new state.
                    Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
    }
    Ok(claimed)
}

/// Sets the pod's ownerReferences, preconditioned on the version that was decided on.
async fn patch_refs(api: &Api<Pod>, pod: &Pod, refs: Vec<OwnerReference>) -> Result<Pod, Error> {
    let patch = json!({
        "metadata": {
            "ownerReferences": to_value(&refs),
            "resourceVersion": pod.resource_version(),
        }
    });
    Ok(api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?)
}

/// A trigger mapper: an orphan pod concerns every owner in its namespace whose selector
/// matches it (workloads with empty selectors adopt nothing).
pub fn orphan_owners<K>(
    owners: Store<K>,
    selector: impl Fn(&K) -> Option<&LabelSelector> + Send + Sync + 'static,
) -> impl Fn(Arc<Pod>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |pod: Arc<Pod>| {
        if util::controller_of(pod.as_ref()).is_some() {
            return Vec::new();
        }
        let labels: BTreeMap<String, String> = pod.labels().clone();
        let ns = pod.namespace();
        owners
            .state()
            .iter()
            .filter(|o| o.meta().namespace == ns)
            .filter(|o| {
                selector(o).is_some_and(|s| {
                    !util::selector_is_empty(s) && util::selector_matches(s, &labels)
                })
            })
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}
