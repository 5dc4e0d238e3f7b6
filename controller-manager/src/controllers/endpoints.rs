//! The endpoints controllers: for every Service with a selector, the addresses of the pods it
//! selects, as a core/v1 `Endpoints` object (`endpoint` controller) and as
//! `discovery.k8s.io/v1` EndpointSlices (`endpointslice` controller).
//!
//! Both are computed by one reconcile per Service from the shared Service and pod stores. Any
//! pod change re-checks every Service of its namespace: a pod's old labels are not known, so
//! this is how a pod that stops matching leaves a Service's endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::controllers::deployment::compute_hash;
use crate::controllers::replicaset::controller_ref;
use crate::informers::{to_value, Informers};
use crate::metrics::Metrics;
use crate::util::{self, Backoff};
use crate::Error;

/// The `Endpoints` controller's name in `--controllers`.
pub const NAME: &str = "endpoint";
/// The EndpointSlice controller's name in `--controllers`.
pub const SLICE_NAME: &str = "endpointslice";

/// The label tying a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label saying who manages a slice, and its value for this controller.
pub const MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);

/// What the reconciles share.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    endpoints: bool,
    slices: bool,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// The controller as a future; `endpoints` / `slices` say which objects to maintain.
pub fn controller(
    client: Client,
    informers: &Informers,
    metrics: Arc<Metrics>,
    endpoints: bool,
    slices: bool,
) -> Option<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    let trigger = informers.services.subscribe()?;
    let pod_trigger = informers.pods.subscribe()?;
    let services = informers.services.store();
    let ctx = Arc::new(Context {
        client,
        pods: informers.pods.store(),
        endpoints,
        slices,
        backoff: Backoff::default(),
        metrics,
    });
    let svc_store = services.clone();
    let services_of = move |pod: Arc<Pod>| {
        let ns = pod.namespace();
        svc_store
            .state()
            .iter()
            .filter(|s| s.namespace() == ns)
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    };
    Some(
        Controller::for_shared_stream(trigger, services)
            .with_config(ControllerConfig::default().concurrency(5))
            .watches_shared_stream(pod_trigger, services_of.clone())
            .watches_shared_stream(informers.pods.deletions(), services_of)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed(),
    )
}

fn error_policy(svc: Arc<Service>, error: &Error, ctx: Arc<Context>) -> Action {
    util::retry_after_error(NAME, svc.as_ref(), error, &ctx.metrics, &ctx.backoff)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = util::key_of(svc.as_ref());
    util::reconciled(NAME, &key, &ctx.metrics, &ctx.backoff, sync(&svc, &ctx)).await
}

/// A resolved port: (name, port, protocol).
type PortKey = Vec<(String, i32, String)>;

/// One pod's address.
struct Addr {
    ip: String,
    ready: bool,
    node: Option<String>,
    target: ObjectReference,
}

/// The Service port's target on `pod`: a number, or a named container port.
fn resolve_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP")
                        == sp.protocol.as_deref().unwrap_or("TCP")
            })
            .map(|p| p.container_port),
    }
}

/// The selected pods grouped by the ports they resolve to.
fn groups(svc: &Service, pods: &Store<Pod>) -> BTreeMap<PortKey, Vec<Addr>> {
    let mut out: BTreeMap<PortKey, Vec<Addr>> = BTreeMap::new();
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return out;
    };
    let ns = svc.namespace();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    for pod in pods.state() {
        if pod.namespace() != ns
            || !util::pod_is_active(&pod)
            || selector.iter().any(|(k, v)| pod.labels().get(k) != Some(v))
        {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: PortKey = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    resolve_port(sp, &pod)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        out.entry(ports).or_default().push(Addr {
            ip,
            ready: publish_not_ready || util::pod_is_ready(&pod),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
        });
    }
    for addrs in out.values_mut() {
        addrs.sort_by(|a, b| a.ip.cmp(&b.ip));
    }
    out
}

async fn sync(svc: &Service, ctx: &Context) -> Result<Action, Error> {
    ctx.pods.wait_until_ready().await?;
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if !has_selector || svc.metadata.deletion_timestamp.is_some() {
        // Endpoints of selector-less Services are the user's to write.
        return Ok(Action::await_change());
    }
    let groups = groups(svc, &ctx.pods);
    if ctx.endpoints {
        sync_endpoints(svc, ctx, &groups).await?;
    }
    if ctx.slices {
        sync_slices(svc, ctx, &groups).await?;
    }
    Ok(Action::await_change())
}

async fn sync_endpoints(
    svc: &Service,
    ctx: &Context,
    groups: &BTreeMap<PortKey, Vec<Addr>>,
) -> Result<(), Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .map(|(ports, addrs)| {
            let addr = |a: &Addr| EndpointAddress {
                ip: a.ip.clone(),
                node_name: a.node.clone(),
                target_ref: Some(a.target.clone()),
                hostname: None,
            };
            let ready: Vec<_> = addrs.iter().filter(|a| a.ready).map(addr).collect();
            let not_ready: Vec<_> = addrs.iter().filter(|a| !a.ready).map(addr).collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| EndpointPort {
                            name: (!n.is_empty()).then(|| n.clone()),
                            port: *p,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![controller_ref(svc)]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &desired).await?;
        }
        Some(existing) => {
            let same = to_value(&existing.subsets) == to_value(&desired.subsets)
                && existing.metadata.labels == desired.metadata.labels;
            if !same {
                let mut updated = desired;
                updated.metadata.resource_version = existing.resource_version();
                api.replace(&name, &PostParams::default(), &updated).await?;
            }
        }
    }
    Ok(())
}

async fn sync_slices(
    svc: &Service,
    ctx: &Context,
    groups: &BTreeMap<PortKey, Vec<Addr>>,
) -> Result<(), Error> {
    let ns = svc.namespace().unwrap_or_default();
    let svc_name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={svc_name},{}={}",
            MANAGED_BY.0, MANAGED_BY.1
        )))
        .await?
        .items;
    // Deterministic names make the reconcile idempotent without a slice store.
    let stem: String = svc_name.chars().take(57).collect();
    let hash = compute_hash(&serde_json::json!(svc.uid()), None);
    let base = format!("{stem}-{}", hash.chars().take(5).collect::<String>());
    let mut desired: Vec<EndpointSlice> = Vec::new();
    let empty: Vec<Addr> = Vec::new();
    let mut list: Vec<(Option<&PortKey>, &Vec<Addr>)> =
        groups.iter().map(|(k, v)| (Some(k), v)).collect();
    if list.is_empty() {
        list.push((None, &empty));
    }
    for (i, (ports, addrs)) in list.into_iter().enumerate() {
        let name = if i == 0 {
            base.clone()
        } else {
            format!("{base}-{i}")
        };
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), svc_name.clone());
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        desired.push(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![controller_ref(svc)]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(a.ready),
                        serving: Some(a.ready),
                        terminating: Some(false),
                    }),
                    node_name: a.node.clone(),
                    target_ref: Some(a.target.clone()),
                    ..Default::default()
                })
                .collect(),
            ports: ports.map(|ps| {
                ps.iter()
                    .map(|(n, p, proto)| SlicePort {
                        name: Some(n.clone()),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect()
            }),
        });
    }
    for want in &desired {
        let name = want.name_any();
        match existing.iter().find(|e| e.name_any() == name) {
            None => {
                api.create(&PostParams::default(), want).await?;
            }
            Some(have) => {
                let same = to_value(&have.endpoints) == to_value(&want.endpoints)
                    && to_value(&have.ports) == to_value(&want.ports)
                    && have.metadata.labels == want.metadata.labels;
                if !same {
                    let mut updated = want.clone();
                    updated.metadata.resource_version = have.resource_version();
                    api.replace(&name, &PostParams::default(), &updated).await?;
                }
            }
        }
    }
    for stale in existing
        .iter()
        .filter(|e| !desired.iter().any(|d| d.name_any() == e.name_any()))
    {
        match api
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
