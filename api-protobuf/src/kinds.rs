//! Which protobuf message carries a given `apiVersion`/`kind`, and which k8s-openapi type
//! gives its JSON the canonical shape.
//!
//! The message is found by naming convention (`k8s.io.api.<package>.<version>.<Kind>`), so
//! every kind Kubernetes 1.32 defines decodes. The k8s-openapi round trip is listed per type,
//! because Rust has no registry of types; kinds without one still decode, only without the
//! final normalisation (see [`crate::decode`]).

use api_types::k8s_openapi::{self, Resource};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::schema::Schema;

/// API group → protobuf package prefix. The version is appended to get the package.
const GROUP_PACKAGES: &[(&str, &str)] = &[
    ("", "k8s.io.api.core"),
    ("admission.k8s.io", "k8s.io.api.admission"),
    (
        "admissionregistration.k8s.io",
        "k8s.io.api.admissionregistration",
    ),
    ("apidiscovery.k8s.io", "k8s.io.api.apidiscovery"),
    ("apps", "k8s.io.api.apps"),
    ("authentication.k8s.io", "k8s.io.api.authentication"),
    ("authorization.k8s.io", "k8s.io.api.authorization"),
    ("autoscaling", "k8s.io.api.autoscaling"),
    ("batch", "k8s.io.api.batch"),
    ("certificates.k8s.io", "k8s.io.api.certificates"),
    ("coordination.k8s.io", "k8s.io.api.coordination"),
    ("discovery.k8s.io", "k8s.io.api.discovery"),
    ("events.k8s.io", "k8s.io.api.events"),
    ("extensions", "k8s.io.api.extensions"),
    ("flowcontrol.apiserver.k8s.io", "k8s.io.api.flowcontrol"),
    ("imagepolicy.k8s.io", "k8s.io.api.imagepolicy"),
    ("internal.apiserver.k8s.io", "k8s.io.api.apiserverinternal"),
    ("meta.k8s.io", "k8s.io.apimachinery.pkg.apis.meta"),
    ("metrics.k8s.io", "k8s.io.metrics.pkg.apis.metrics"),
    ("networking.k8s.io", "k8s.io.api.networking"),
    ("node.k8s.io", "k8s.io.api.node"),
    ("policy", "k8s.io.api.policy"),
    ("rbac.authorization.k8s.io", "k8s.io.api.rbac"),
    ("resource.k8s.io", "k8s.io.api.resource"),
    ("scheduling.k8s.io", "k8s.io.api.scheduling"),
    ("storage.k8s.io", "k8s.io.api.storage"),
    ("storagemigration.k8s.io", "k8s.io.api.storagemigration"),
];

/// `meta/v1` kinds that apimachinery registers in every group version
/// (`metav1.AddToGroupVersion`): a typed client sends `DeleteOptions` as `apps/v1`, `v1`, ...
const META_KINDS: &[&str] = &[
    "DeleteOptions",
    "CreateOptions",
    "UpdateOptions",
    "PatchOptions",
    "GetOptions",
    "ListOptions",
    "Status",
    "WatchEvent",
];

use crate::schema::META_PACKAGE;

/// Re-shapes decoded JSON into exactly what the k8s-openapi type serializes.
pub type Normalizer = fn(Value) -> Result<Value, serde_json::Error>;

/// Parses into `T` and serializes back: required fields missing on the wire get their
/// defaults, and the result is byte-for-byte what the rest of Coxswain produces for `T`.
fn via<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(value)?)
}

macro_rules! typed {
    ($($ty:path),* $(,)?) => {
        &[$((
            <$ty as Resource>::API_VERSION,
            <$ty as Resource>::KIND,
            via::<$ty> as Normalizer,
        )),*]
    };
}

/// k8s-openapi types of the kinds clients send; covers every kind of
/// [`api_types::RESOURCES`] (a test checks it) plus the request-only kinds.
static TYPED: &[(&str, &str, Normalizer)] = typed![
    k8s_openapi::api::core::v1::Binding,
    k8s_openapi::api::core::v1::ComponentStatus,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::core::v1::Event,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::PersistentVolume,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::PodTemplate,
    k8s_openapi::api::core::v1::ReplicationController,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    k8s_openapi::api::apps::v1::ControllerRevision,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::authentication::v1::SelfSubjectReview,
    k8s_openapi::api::authentication::v1::TokenRequest,
    k8s_openapi::api::authentication::v1::TokenReview,
    k8s_openapi::api::authorization::v1::LocalSubjectAccessReview,
    k8s_openapi::api::authorization::v1::SelfSubjectAccessReview,
    k8s_openapi::api::authorization::v1::SelfSubjectRulesReview,
    k8s_openapi::api::authorization::v1::SubjectAccessReview,
    k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
    k8s_openapi::api::autoscaling::v1::Scale,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    k8s_openapi::api::batch::v1::CronJob,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    k8s_openapi::api::coordination::v1::Lease,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::events::v1::Event,
    k8s_openapi::api::flowcontrol::v1::FlowSchema,
    k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration,
    k8s_openapi::api::networking::v1::Ingress,
    k8s_openapi::api::networking::v1::IngressClass,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::node::v1::RuntimeClass,
    k8s_openapi::api::policy::v1::Eviction,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::scheduling::v1::PriorityClass,
    k8s_openapi::api::storage::v1::CSIDriver,
    k8s_openapi::api::storage::v1::CSINode,
    k8s_openapi::api::storage::v1::CSIStorageCapacity,
    k8s_openapi::api::storage::v1::StorageClass,
    k8s_openapi::api::storage::v1::VolumeAttachment,
];

/// Normalizers of the [`META_KINDS`] that k8s-openapi models; they carry `apiVersion` and
/// `kind` as plain optional fields, so one type serves every group version.
static TYPED_META: &[(&str, Normalizer)] = &[
    (
        "DeleteOptions",
        via::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>,
    ),
    (
        "Status",
        via::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    ),
];

/// What a decoded or encoded object is, as far as this crate is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The message index in the [`Schema`].
    pub message: usize,
    /// The k8s-openapi round trip, when one is listed.
    pub normalize: Option<Normalizer>,
}

/// Finds the message of `apiVersion`/`kind`. Only top-level objects qualify (messages with
/// `metadata`, and the meta kinds), so `kind: PodSpec` is refused like upstream refuses it.
pub fn resolve(schema: &Schema, api_version: &str, kind: &str) -> Option<Target> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if version.is_empty() || kind.is_empty() || kind.contains('.') {
        return None;
    }
    let prefix = GROUP_PACKAGES
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(_, p)| *p)?;
    if META_KINDS.contains(&kind) {
        let message = schema.index(&format!("{META_PACKAGE}.{kind}"))?;
        let normalize = TYPED_META.iter().find(|(k, _)| *k == kind).map(|(_, n)| *n);
        return Some(Target { message, normalize });
    }
    let message = schema.index(&format!("{prefix}.{version}.{kind}"))?;
    if !schema.is_object(message) {
        return None;
    }
    let normalize = TYPED
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, n)| *n);
    Some(Target { message, normalize })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_resource_has_a_message_and_a_normalizer() {
        let schema = Schema::get().expect("schema loads");
        for r in api_types::RESOURCES {
            let target = resolve(schema, &r.api_version(), r.kind)
                .unwrap_or_else(|| panic!("no message for {} {}", r.api_version(), r.kind));
            assert!(
                target.normalize.is_some(),
                "no k8s-openapi type for {} {}",
                r.api_version(),
                r.kind
            );
            for sub in r.subresources {
                let group = sub.group.unwrap_or(r.group);
                let version = sub.version.unwrap_or(r.version);
                let api_version = if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                };
                // Options kinds (PodExecOptions, ...) travel as query parameters, never as
                // bodies; everything else a subresource accepts must decode.
                if !sub.kind.ends_with("Options") {
                    assert!(
                        resolve(schema, &api_version, sub.kind).is_some(),
                        "no message for subresource {}/{} kind {api_version} {}",
                        r.plural,
                        sub.name,
                        sub.kind
                    );
                }
            }
        }
    }

    #[test]
    fn request_only_kinds_resolve() {
        let schema = Schema::get().expect("schema loads");
        for (api_version, kind) in [
            ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
            ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
            ("authorization.k8s.io/v1", "SubjectAccessReview"),
            ("authorization.k8s.io/v1", "LocalSubjectAccessReview"),
            ("authentication.k8s.io/v1", "SelfSubjectReview"),
            ("authentication.k8s.io/v1", "TokenReview"),
            ("authentication.k8s.io/v1", "TokenRequest"),
            ("policy/v1", "Eviction"),
            ("v1", "Binding"),
            ("autoscaling/v1", "Scale"),
            ("autoscaling/v1", "HorizontalPodAutoscaler"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("meta.k8s.io/v1", "DeleteOptions"),
            ("v1", "DeleteOptions"),
            ("apps/v1", "DeleteOptions"),
        ] {
            let target = resolve(schema, api_version, kind)
                .unwrap_or_else(|| panic!("{api_version} {kind}"));
            assert!(target.normalize.is_some(), "{api_version} {kind}");
        }
    }

    #[test]
    fn non_objects_and_strangers_do_not_resolve() {
        let schema = Schema::get().expect("schema loads");
        for (api_version, kind) in [
            ("v1", "PodSpec"),
            ("v1", "Widget"),
            ("example.com/v1", "Widget"),
            ("", "Pod"),
            ("v1", ""),
            ("apps/v1", "Pod"),
            ("v1", "v1.Pod"),
        ] {
            assert!(
                resolve(schema, api_version, kind).is_none(),
                "{api_version} {kind}"
            );
        }
    }
}
