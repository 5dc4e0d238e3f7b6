//! CertificateSigningRequest controllers (upstream's `pkg/controller/certificates`):
//!
//! - `csrapproving` auto-approves node client certificates, as kubelet TLS bootstrap needs:
//!   a request for signer `kubernetes.io/kube-apiserver-client-kubelet` whose subject is
//!   `CN=system:node:<name>, O=system:nodes`, without SANs, with usages digital signature +
//!   client auth (key encipherment optional), is approved if a SubjectAccessReview says the
//!   requestor may `create` `certificatesigningrequests/nodeclient` (or `/selfnodeclient`
//!   when the requestor is that node itself). The default policy grants `nodeclient` to
//!   `system:bootstrappers` and `selfnodeclient` to `system:nodes`.
//! - `csrsigning` issues the certificate of every approved request for the
//!   `kubernetes.io/kube-apiserver-client` and `…-client-kubelet` signers with the cluster
//!   CA (`--cluster-signing-cert-file`/`--cluster-signing-key-file`), valid for
//!   `--cluster-signing-duration` or the request's shorter `expirationSeconds`. A kubelet
//!   request that is not a node client certificate gets a `Failed` condition instead.
//!   Without a CA it is idle and watches nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informers;
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// `--controllers` name of the approver (upstream's).
pub const APPROVING_NAME: &str = "csrapproving";
/// `--controllers` name of the signer (upstream's).
pub const SIGNING_NAME: &str = "csrsigning";

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other API server client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Upstream's `--cluster-signing-duration` default: one year.
pub const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The CA csrsigning signs with.
#[derive(Clone)]
pub struct ClusterSigning {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The CA private key (PEM).
    pub key_pem: String,
    /// `--cluster-signing-duration`: the longest validity issued.
    pub duration: Duration,
}

impl std::fmt::Debug for ClusterSigning {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSigning")
            .field("cert_pem", &self.cert_pem)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

fn request_pem(csr: &CertificateSigningRequest) -> Option<&str> {
    std::str::from_utf8(&csr.spec.request.0).ok()
}

/// Upstream's `ValidateKubeletClientCSR`: why the request is not a node client certificate,
/// or `None` if it is one.
pub fn node_client_problem(csr: &CertificateSigningRequest) -> Option<String> {
    let Some(info) = request_pem(csr).and_then(|p| pki::parse_csr(p).ok()) else {
        return Some("unable to parse csr".into());
    };
    if info.organizations != ["system:nodes"] {
        return Some("subject organization is not system:nodes".into());
    }
    let has_sans = !info.dns_names.is_empty()
        || !info.email_addresses.is_empty()
        || !info.ip_addresses.is_empty()
        || !info.uris.is_empty();
    if has_sans {
        return Some("DNS, URI, Email, and IP subjectAltNames are not allowed".into());
    }
    if info
        .common_name
        .strip_prefix("system:node:")
        .is_none_or(str::is_empty)
    {
        return Some("subject common name does not begin with system:node:".into());
    }
    let mut usages: Vec<&str> = csr
        .spec
        .usages
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    usages.sort_unstable();
    usages.dedup();
    let allowed = [
        vec!["client auth", "digital signature"],
        vec!["client auth", "digital signature", "key encipherment"],
    ];
    if !allowed.contains(&usages) {
        return Some(format!(
            "usages did not match [\"digital signature\" \"client auth\"]: {usages:?}"
        ));
    }
    None
}

struct Context {
    client: Client,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    ca: Option<(pki::Ca, Duration)>,
    name: &'static str,
}

fn error_policy(csr: Arc<CertificateSigningRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(ctx.name, csr.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

/// The approver as a future that runs until dropped.
pub fn approving(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
) -> Option<BoxFuture<'static, ()>> {
    let trigger = informers.csrs.subscribe()?;
    let ctx = Arc::new(Context {
        client,
        backoff: Backoff::default(),
        metrics,
        ca: None,
        name: APPROVING_NAME,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.csrs.store())
            .run(
                |csr, ctx: Arc<Context>| async move {
                    let key = csr.name_any();
                    util::reconciled(
                        APPROVING_NAME,
                        &key,
                        &ctx.metrics,
                        &ctx.backoff,
                        approve(&csr, &ctx),
                    )
                    .await
                },
                error_policy,
                ctx,
            )
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

/// Whether the requestor may have this kind of certificate auto-approved (upstream's
/// `authorize` with a SubjectAccessReview for `certificatesigningrequests/<subresource>`).
async fn requestor_may(
    client: &Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, Error> {
    let spec = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                verb: Some("create".into()),
                subresource: Some(subresource.into()),
                version: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn approve(csr: &CertificateSigningRequest, ctx: &Context) -> Result<Action, Error> {
    if csr.spec.signer_name != KUBELET_CLIENT_SIGNER
        || has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || has_certificate(csr)
        || node_client_problem(csr).is_some()
    {
        return Ok(Action::await_change());
    }
    let own_node = request_pem(csr)
        .and_then(|p| pki::parse_csr(p).ok())
        .is_some_and(|i| Some(&i.common_name) == csr.spec.username.as_ref());
    let message = if own_node && requestor_may(&ctx.client, csr, "selfnodeclient").await? {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    } else if requestor_may(&ctx.client, csr, "nodeclient").await? {
        "Auto approving kubelet client certificate after SubjectAccessReview."
    } else {
        return Ok(Action::await_change());
    };
    let mut approved = csr.clone();
    let status = approved
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(message.into()),
            last_update_time: Some(util::now()),
            last_transition_time: None,
        });
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    match api
        .replace_subresource(
            "approval",
            &csr.name_any(),
            &PostParams::default(),
            &approved,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(csr = %csr.name_any(), "{message}");
            Ok(Action::await_change())
        }
        // A newer version is on its way through the watch.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// The signer as a future that runs until dropped; idle without a CA. An unusable CA is
/// logged and leaves it idle too.
pub fn signing(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    signing: Option<ClusterSigning>,
) -> Option<BoxFuture<'static, ()>> {
    let Some(signing) = signing else {
        tracing::info!("no cluster signing CA configured (--cluster-signing-cert-file); {SIGNING_NAME} is idle");
        return Some(futures::future::pending().boxed());
    };
    let ca = match pki::Ca::from_pem(&signing.cert_pem, &signing.key_pem) {
        Ok(ca) => ca,
        Err(error) => {
            tracing::error!(%error, "cluster signing CA unusable; {SIGNING_NAME} is idle");
            return Some(futures::future::pending().boxed());
        }
    };
    let trigger = informers.csrs.subscribe()?;
    let ctx = Arc::new(Context {
        client,
        backoff: Backoff::default(),
        metrics,
        ca: Some((ca, signing.duration)),
        name: SIGNING_NAME,
    });
    Some(
        Controller::for_shared_stream(trigger, informers.csrs.store())
            .run(
                |csr, ctx: Arc<Context>| async move {
                    let key = csr.name_any();
                    util::reconciled(
                        SIGNING_NAME,
                        &key,
                        &ctx.metrics,
                        &ctx.backoff,
                        sign(&csr, &ctx),
                    )
                    .await
                },
                error_policy,
                ctx,
            )
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

/// The validity of a certificate for `csr`: the signing duration, or the request's shorter
/// `expirationSeconds` (at least ten minutes, as validation enforces).
pub fn validity(csr: &CertificateSigningRequest, max: Duration) -> Duration {
    match csr.spec.expiration_seconds {
        Some(s) if s > 0 => max.min(Duration::from_secs(s.max(600) as u64)),
        _ => max,
    }
}

async fn sign(csr: &CertificateSigningRequest, ctx: &Context) -> Result<Action, Error> {
    let Some((ca, max)) = &ctx.ca else {
        return Ok(Action::await_change());
    };
    let signer = csr.spec.signer_name.as_str();
    if !matches!(signer, KUBELET_CLIENT_SIGNER | CLIENT_SIGNER)
        || !has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || has_condition(csr, "Failed")
        || has_certificate(csr)
    {
        return Ok(Action::await_change());
    }
    let problem = if signer == KUBELET_CLIENT_SIGNER {
        node_client_problem(csr)
    } else {
        let usages = csr.spec.usages.as_deref().unwrap_or_default();
        (!usages.iter().any(|u| u == "client auth")
            || usages.iter().any(|u| {
                !matches!(
                    u.as_str(),
                    "client auth" | "digital signature" | "key encipherment"
                )
            }))
        .then(|| format!("invalid usages for a client certificate: {usages:?}"))
    };
    let signed = match problem {
        Some(p) => Err(p),
        None => request_pem(csr)
            .ok_or_else(|| "unable to parse csr".to_string())
            .and_then(|pem| {
                ca.sign_csr(pem, validity(csr, *max))
                    .map_err(|e| e.to_string())
            }),
    };
    let status = match signed {
        Ok(cert) => serde_json::json!({"status": {"certificate": ByteString(cert.into_bytes())}}),
        Err(why) => {
            tracing::info!(csr = %csr.name_any(), %why, "not signing");
            let mut conditions = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let now = util::now();
            conditions.push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(why),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            });
            serde_json::json!({"status": {"conditions": conditions}})
        }
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    api.patch_status(
        &csr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    tracing::info!(csr = %csr.name_any(), signer, "signed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(cn: &str, org: Option<&str>, usages: &[&str]) -> CertificateSigningRequest {
        let (pem, _) = pki::generate_csr(cn, org).unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: KUBELET_CLIENT_SIGNER.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn recognizes_node_client_requests() {
        let good = ["digital signature", "client auth"];
        assert_eq!(
            node_client_problem(&csr("system:node:n1", Some("system:nodes"), &good)),
            None
        );
        let with_ke = ["key encipherment", "digital signature", "client auth"];
        assert_eq!(
            node_client_problem(&csr("system:node:n1", Some("system:nodes"), &with_ke)),
            None
        );
        assert!(node_client_problem(&csr("alice", Some("system:nodes"), &good)).is_some());
        assert!(node_client_problem(&csr("system:node:", Some("system:nodes"), &good)).is_some());
        assert!(
            node_client_problem(&csr("system:node:n1", Some("system:masters"), &good)).is_some()
        );
        assert!(node_client_problem(&csr("system:node:n1", None, &good)).is_some());
        let serving = ["digital signature", "server auth"];
        assert!(
            node_client_problem(&csr("system:node:n1", Some("system:nodes"), &serving)).is_some()
        );
        let mut garbage = csr("system:node:n1", Some("system:nodes"), &good);
        garbage.spec.request = ByteString(b"nope".to_vec());
        assert!(node_client_problem(&garbage).is_some());
    }

    #[test]
    fn validity_is_capped() {
        let mut c = csr("system:node:n1", Some("system:nodes"), &["client auth"]);
        assert_eq!(
            validity(&c, DEFAULT_SIGNING_DURATION),
            DEFAULT_SIGNING_DURATION
        );
        c.spec.expiration_seconds = Some(3600);
        assert_eq!(
            validity(&c, DEFAULT_SIGNING_DURATION),
            Duration::from_secs(3600)
        );
        c.spec.expiration_seconds = Some(60);
        assert_eq!(
            validity(&c, DEFAULT_SIGNING_DURATION),
            Duration::from_secs(600)
        );
        assert_eq!(
            validity(&c, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }
}
