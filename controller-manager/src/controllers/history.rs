//! ControllerRevisions: the template history the DaemonSet and StatefulSet controllers keep
//! (upstream's `controller/history`), so `kubectl rollout history`/`undo` work and pods can
//! be told apart by the `controller-revision-hash` label.
//!
//! A revision holds upstream's patch shape, `{"spec":{"template":{…,"$patch":"replace"}}}`,
//! is named `<owner>-<hash>` and is owned (controller) by its DaemonSet or StatefulSet. When
//! the owner's template equals an older revision's (a rollback), that revision is reused
//! and renumbered as the newest, as upstream does, instead of creating a duplicate.
//!
//! Revisions are listed from the API server on every pass rather than from an informer: a
//! revision this controller just created must be visible to its very next pass, or it would
//! try to create it again and misread the conflict as a hash collision.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::controllers::deployment::compute_hash;
use crate::controllers::replicaset::controller_ref;
use crate::informers::to_value;
use crate::util;
use crate::Error;

/// The label on revisions and pods naming the revision (upstream's
/// `ControllerRevisionHashLabelKey`).
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// The revision data for `template`: upstream's `getPatch` shape.
pub fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut t = to_value(template);
    if let Some(obj) = t.as_object_mut() {
        obj.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": t } })
}

/// The pod template a revision recorded, if its data has the expected shape.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The owner's revisions, oldest first, and the one matching its current template.
pub struct Revisions {
    /// Every revision the owner controls, by ascending `revision`.
    pub all: Vec<ControllerRevision>,
    /// The revision of the owner's current template (the update revision).
    pub current: ControllerRevision,
}

impl Revisions {
    /// The revision named `name`, if it still exists.
    pub fn named(&self, name: &str) -> Option<&ControllerRevision> {
        self.all
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    }
}

/// The hash label of a revision (its name suffix).
pub fn hash_of(rev: &ControllerRevision) -> String {
    rev.labels()
        .get(CONTROLLER_REVISION_HASH)
        .cloned()
        .unwrap_or_default()
}

/// Finds or creates the revision of `template` for `owner`, first adopting orphaned
/// revisions its `selector` matches (left by `kubectl delete --cascade=orphan`; upstream's
/// `ClaimControllerRevisions`), so a re-created owner keeps its history and its pods' hashes.
/// Returns `None` on a hash collision with a revision that is not the owner's (or holds
/// another template): the caller bumps `status.collisionCount` and retries, as upstream.
pub async fn sync<K>(
    client: &Client,
    owner: &K,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    collision_count: i32,
) -> Result<Option<Revisions>, Error>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut all: Vec<ControllerRevision> = Vec::new();
    // Revisions carry the template's labels, which the selector's matchLabels must match:
    // listing by them keeps the server from sending every revision of the namespace.
    let labels: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let lp = ListParams::default().labels(&labels.join(","));
    for rev in api.list(&lp).await?.items {
        match util::controller_of(&rev) {
            Some(o) if o.uid == uid => all.push(rev),
            Some(_) => {}
            None if owner.meta().deletion_timestamp.is_none()
                && !util::selector_is_empty(selector)
                && util::selector_matches(selector, rev.labels()) =>
            {
                let mut refs = rev.owner_references().to_vec();
                refs.push(controller_ref(owner));
                let patch = json!({"metadata": {
                    "ownerReferences": to_value(&refs),
                    "resourceVersion": rev.resource_version(),
                }});
                match api
                    .patch(
                        &rev.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(adopted) => {
                        tracing::info!(revision = %adopted.name_any(), "adopted controller revision");
                        all.push(adopted);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => {}
        }
    }
    all.sort_by_key(|r| r.revision);
    let data = patch_of(template);
    let max = all.last().map_or(0, |r| r.revision);
    if let Some(i) = all
        .iter()
        .rposition(|r| r.data.as_ref().is_some_and(|d| d.0 == data))
    {
        if all[i].revision != max {
            // A rollback to an earlier template: renumber that revision as the newest.
            let patched = api
                .patch(
                    &all[i].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "revision": max + 1 })),
                )
                .await?;
            all.remove(i);
            all.push(patched);
        }
        let current = all.last().cloned().unwrap_or_default();
        return Ok(Some(Revisions { all, current }));
    }
    let hash = compute_hash(&data, Some(collision_count));
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                owner.meta().name.clone().unwrap_or_default()
            )),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: max + 1,
    };
    let created = match api.create(&PostParams::default(), &rev).await {
        Ok(created) => created,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&rev.name_any()).await?;
            let ours = util::controller_of(&existing).is_some_and(|o| o.uid == uid);
            if !(ours && existing.data.as_ref().is_some_and(|d| d.0 == data)) {
                tracing::info!(revision = %rev.name_any(), "controller revision hash collision");
                return Ok(None);
            }
            existing
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(revision = %created.name_any(), "created controller revision");
    all.push(created.clone());
    Ok(Some(Revisions {
        all,
        current: created,
    }))
}

/// Deletes the oldest revisions that are not `live` beyond `limit` (upstream's
/// `revisionHistoryLimit`; live ones are in use by pods or the status and never count).
pub async fn truncate(
    client: &Client,
    revisions: &Revisions,
    live: &HashSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let dead: Vec<&ControllerRevision> = revisions
        .all
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    let excess = dead
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    for rev in dead.into_iter().take(excess) {
        let ns = rev.namespace().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
        match api.delete(&rev.name_any(), &DeleteParams::default()).await {
            Ok(_) => tracing::info!(revision = %rev.name_any(), "deleted old controller revision"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_round_trips_through_the_patch() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .expect("template");
        let data = patch_of(&t);
        assert_eq!(
            data.pointer("/spec/template/$patch"),
            Some(&json!("replace"))
        );
        let rev = ControllerRevision {
            data: Some(RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
    }
}
