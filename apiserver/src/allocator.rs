//! Service ClusterIPs and node ports, shared by every API server on one store.
//!
//! Each allocated address or port is a **claim**: a key of its own (`/coxswain/allocations/…`,
//! outside `/registry/` so no watch or list of objects sees it) created with
//! create-if-absent before the Service is written. Two API servers on the same etcd therefore
//! never hand out the same ClusterIP or node port: the second create of a claim fails and that
//! server picks again. This is the shape of upstream's newer allocator (one `IPAddress` object
//! per address) rather than its bitmap (`RangeAllocation`), because a per-key create needs no
//! read-modify-write of a shared blob.
//!
//! Each server also keeps the taken values in memory, only as a hint for picking a free one
//! quickly; the claims are the truth. [`Allocators::repair`] (at start and every few minutes)
//! claims what stored Services hold without a claim (data written before claims existed),
//! removes claims whose Service never appeared (a server died between claim and create) and
//! rebuilds the hint from both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage::Storage;

use crate::object;
use crate::strategy::Cause;

const IP_CLAIMS: &str = "/coxswain/allocations/serviceips/";
const PORT_CLAIMS: &str = "/coxswain/allocations/servicenodeports/";
/// A claim without its Service is left alone this long: the Service may still be on its way.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// How often [`Allocators::repair`] runs after start (upstream's repair loops: 3 minutes).
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(180);
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Who holds a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    namespace: String,
    name: String,
    /// Unix seconds; orphans are removed only after [`ORPHAN_GRACE`].
    #[serde(rename = "claimedAt")]
    claimed_at: i64,
}

/// Why an allocation failed.
#[derive(Debug)]
pub enum AllocError {
    /// The request asked for something taken or impossible (422 with this cause).
    Invalid(Cause),
    /// The store did not answer (500).
    Storage(storage::Error),
}

impl From<Cause> for AllocError {
    fn from(c: Cause) -> Self {
        AllocError::Invalid(c)
    }
}

impl From<storage::Error> for AllocError {
    fn from(e: storage::Error) -> Self {
        AllocError::Storage(e)
    }
}

/// One value a Service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Ip(u32),
    Port(u16),
}

impl Item {
    fn key(self) -> String {
        match self {
            Item::Ip(n) => format!("{IP_CLAIMS}{}", Ipv4Addr::from(n)),
            Item::Port(p) => format!("{PORT_CLAIMS}{p}"),
        }
    }
}

/// ClusterIPs from the service range and node ports from 30000–32767.
pub struct Allocators {
    cidr_base: u32,
    cidr_size: u32,
    ips: Mutex<BTreeSet<u32>>,
    node_ports: Mutex<BTreeSet<u16>>,
}

/// What [`Allocators::pick`] marked, and which of those it chose itself (as opposed to what
/// the client asked for).
#[derive(Default)]
struct Picked {
    marked: Vec<Item>,
    auto: BTreeSet<Item>,
}

impl Allocators {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Self {
        let size = 1u32 << (32 - u32::from(prefix.clamp(8, 30)));
        Allocators {
            cidr_base: u32::from(network),
            cidr_size: size,
            ips: Mutex::new(BTreeSet::new()),
            node_ports: Mutex::new(BTreeSet::new()),
        }
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cidr_base + 1)
    }

    /// The cluster IP and node ports a Service holds.
    fn held(svc: &Value) -> Vec<Item> {
        let ip = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .map(|ip| Item::Ip(u32::from(ip)));
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
            .filter_map(|np| u16::try_from(np).ok())
            .map(Item::Port);
        ip.into_iter().chain(ports).collect()
    }

    fn unmark(&self, item: Item) {
        match item {
            Item::Ip(n) => {
                self.ips.lock().remove(&n);
            }
            Item::Port(p) => {
                self.node_ports.lock().remove(&p);
            }
        }
    }

    /// Fills in `clusterIP(s)` and node ports from this server's view, marking them taken in
    /// memory only; `Err` (with nothing left marked) if a requested one is taken or invalid or
    /// the range is exhausted.
    fn pick(&self, svc: &mut Value, is_default_kubernetes: bool) -> Result<Picked, Cause> {
        let mut picked = Picked::default();
        match self.pick_into(svc, is_default_kubernetes, &mut picked) {
            Ok(()) => Ok(picked),
            Err(cause) => {
                for &item in &picked.marked {
                    self.unmark(item);
                }
                Err(cause)
            }
        }
    }

    fn pick_into(
        &self,
        svc: &mut Value,
        is_default_kubernetes: bool,
        picked: &mut Picked,
    ) -> Result<(), Cause> {
        let ty = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = if requested == "None" {
            "None".to_string()
        } else {
            let mut ips = self.ips.lock();
            let n = if requested.is_empty() {
                // .0 is the network, .1 belongs to the `kubernetes` Service.
                let start = if is_default_kubernetes { 1 } else { 2 };
                let free = (start..self.cidr_size - 1)
                    .map(|o| self.cidr_base + o)
                    .find(|n| !ips.contains(n));
                let n = free.ok_or_else(|| {
                    (
                        "spec.clusterIPs".to_string(),
                        "Internal error: failed to allocate a serviceIP: range is full".to_string(),
                        "FieldValueInvalid".to_string(),
                    )
                })?;
                picked.auto.insert(Item::Ip(n));
                n
            } else {
                let ip: Ipv4Addr = requested.parse().map_err(|_| {
                    (
                        "spec.clusterIPs[0]".to_string(),
                        format!("Invalid value: \"{requested}\": must be a valid IP address"),
                        "FieldValueInvalid".to_string(),
                    )
                })?;
                let n = u32::from(ip);
                if n < self.cidr_base || n >= self.cidr_base + self.cidr_size {
                    return Err((
                        "spec.clusterIPs".to_string(),
                        format!("Invalid value: \"{requested}\": failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range"),
                        "FieldValueInvalid".to_string(),
                    ));
                }
                // Whether it is free is the claim's to say: this server's view may be stale.
                n
            };
            ips.insert(n);
            picked.marked.push(Item::Ip(n));
            Ipv4Addr::from(n).to_string()
        };
        let spec = object::ensure_object(svc, &["spec"]).ok_or_else(|| {
            (
                "spec".to_string(),
                "Required value".to_string(),
                "FieldValueRequired".to_string(),
            )
        })?;
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        if ip != "None" {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
            spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let mut used = self.node_ports.lock();
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for (i, p) in ports.iter_mut().enumerate() {
                    let Some(p) = p.as_object_mut() else {
                        continue;
                    };
                    let port = match p.get("nodePort").and_then(Value::as_u64) {
                        Some(np) => {
                            let field = format!("spec.ports[{i}].nodePort");
                            let np = u16::try_from(np)
                                .ok()
                                .filter(|np| NODE_PORTS.contains(np))
                                .ok_or_else(|| {
                                    (
                                        field.clone(),
                                        format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORTS.start(), NODE_PORTS.end()),
                                        "FieldValueInvalid".to_string(),
                                    )
                                })?;
                            np
                        }
                        None => {
                            let free = NODE_PORTS.clone().find(|n| !used.contains(n));
                            let np = free.ok_or_else(|| {
                                (
                                    format!("spec.ports[{i}].nodePort"),
                                    "Internal error: failed to allocate a nodePort: range is full"
                                        .to_string(),
                                    "FieldValueInvalid".to_string(),
                                )
                            })?;
                            picked.auto.insert(Item::Port(np));
                            np
                        }
                    };
                    used.insert(port);
                    picked.marked.push(Item::Port(port));
                    p.insert("nodePort".into(), json!(port));
                }
            }
        }
        Ok(())
    }

    /// What a dry run would get: picked from memory and given back at once.
    pub fn preview(&self, svc: &mut Value, is_default_kubernetes: bool) -> Result<(), Cause> {
        self.pick(svc, is_default_kubernetes)?;
        for item in Self::held(svc) {
            self.unmark(item);
        }
        Ok(())
    }

    /// Allocates a new Service's ClusterIP and node ports and claims them in `storage`, so no
    /// other API server on the same store hands them out. A value another server claimed first
    /// is picked again if this server chose it, and refused if the client asked for it.
    pub async fn allocate(
        &self,
        storage: &dyn Storage,
        svc: &mut Value,
        namespace: &str,
        name: &str,
        is_default_kubernetes: bool,
    ) -> Result<(), AllocError> {
        self.allocate_beside(storage, svc, namespace, name, is_default_kubernetes, &[])
            .await
    }

    /// An update of `old` to `new`: first what the client left out is kept from `old`
    /// (upstream's `patchAllocatedValues`: a `kubectl replace` of a manifest without
    /// `clusterIP` or `nodePort` keeps them), then what `new` needs beyond that is allocated
    /// and claimed as on create. What `old` held and `new` does not is given back by
    /// [`Allocators::release`] once the update is written.
    pub async fn allocate_update(
        &self,
        storage: &dyn Storage,
        new: &mut Value,
        old: &Value,
        namespace: &str,
        name: &str,
    ) -> Result<(), AllocError> {
        carry_allocated(old, new);
        let held = Self::held(old);
        let is_default = namespace == "default" && name == "kubernetes";
        self.allocate_beside(storage, new, namespace, name, is_default, &held)
            .await
    }

    /// [`Allocators::allocate`], where the values in `held` already belong to this Service
    /// (claimed, nothing to do for them).
    async fn allocate_beside(
        &self,
        storage: &dyn Storage,
        svc: &mut Value,
        namespace: &str,
        name: &str,
        is_default_kubernetes: bool,
        held: &[Item],
    ) -> Result<(), AllocError> {
        let original = svc.clone();
        // Each round marks at least one more value taken, so this ends; the bound only keeps a
        // store that answers strangely from spinning.
        for _ in 0..64 {
            let mut candidate = original.clone();
            let picked = self.pick(&mut candidate, is_default_kubernetes)?;
            let items: Vec<Item> = Self::held(&candidate)
                .into_iter()
                .filter(|i| !held.contains(i))
                .collect();
            let mut claimed = Vec::new();
            let mut taken = None;
            for &item in &items {
                match claim(storage, item, namespace, name).await {
                    Ok(true) => claimed.push(item),
                    Ok(false) => {
                        taken = Some(item);
                        break;
                    }
                    Err(e) => {
                        self.give_back(storage, &claimed, namespace, name).await;
                        for &i in &items {
                            self.unmark(i);
                        }
                        return Err(e.into());
                    }
                }
            }
            let Some(taken) = taken else {
                *svc = candidate;
                return Ok(());
            };
            // Another server holds `taken`: it stays marked here; everything else from this
            // round is given back.
            self.give_back(storage, &claimed, namespace, name).await;
            for &i in items.iter().filter(|&&i| i != taken) {
                self.unmark(i);
            }
            if !picked.auto.contains(&taken) {
                return Err(AllocError::Invalid(match taken {
                    Item::Ip(n) => ip_taken(&Ipv4Addr::from(n).to_string()),
                    Item::Port(p) => {
                        let i = original
                            .pointer("/spec/ports")
                            .and_then(Value::as_array)
                            .and_then(|ports| {
                                ports.iter().position(|x| {
                                    x.get("nodePort").and_then(Value::as_u64) == Some(p.into())
                                })
                            })
                            .unwrap_or(0);
                        port_taken(i, p)
                    }
                }));
            }
        }
        Err(AllocError::Invalid((
            "spec.clusterIPs".to_string(),
            "Internal error: failed to allocate a serviceIP: too many conflicts with other API servers".to_string(),
            "FieldValueInvalid".to_string(),
        )))
    }

    /// Gives back what `svc` (`namespace/name`) held: its claims and this server's marks.
    /// Values that `keep` (the Service now stored under that name, if a create lost a race to
    /// another one) also holds stay claimed.
    pub async fn release(
        &self,
        storage: &dyn Storage,
        svc: &Value,
        namespace: &str,
        name: &str,
        keep: Option<&Value>,
    ) {
        let kept: Vec<Item> = keep.map(Self::held).unwrap_or_default();
        let items: Vec<Item> = Self::held(svc)
            .into_iter()
            .filter(|i| !kept.contains(i))
            .collect();
        self.give_back(storage, &items, namespace, name).await;
        for i in items {
            self.unmark(i);
        }
    }

    /// Deletes the claims among `items` that `namespace/name` holds.
    async fn give_back(&self, storage: &dyn Storage, items: &[Item], namespace: &str, name: &str) {
        for &item in items {
            let key = item.key();
            let Ok(kv) = storage.get(&key).await else {
                continue;
            };
            let owned = serde_json::from_slice::<Claim>(&kv.value)
                .is_ok_and(|c| c.namespace == namespace && c.name == name);
            if owned {
                if let Err(e) = storage.delete(&key, Some(kv.mod_revision)).await {
                    tracing::warn!(%key, error = %e, "could not give back a Service allocation; the repair pass will");
                }
            }
        }
    }

    /// Reconciles claims with the stored Services and rebuilds the in-memory hint: claims
    /// what Services hold unclaimed, deletes claims older than [`ORPHAN_GRACE`] that no
    /// Service holds.
    pub async fn repair(&self, storage: &dyn Storage) -> Result<(), storage::Error> {
        let info = api_types::resources::find("", "v1", "services").ok_or_else(|| {
            storage::Error::Internal("services missing from the resource table".into())
        })?;
        let opts = storage::ListOptions::default();
        let claims: Vec<_> = storage
            .list(IP_CLAIMS, &opts)
            .await?
            .items
            .into_iter()
            .chain(storage.list(PORT_CLAIMS, &opts).await?.items)
            .collect();
        let services = storage.list(&info.storage_prefix(), &opts).await?;
        let mut holders: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut hint = BTreeSet::new();
        for kv in &services.items {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let ns = object::meta_str(&svc, "namespace").unwrap_or_default();
            let name = object::meta_str(&svc, "name").unwrap_or_default();
            for item in Self::held(&svc) {
                hint.insert(item);
                holders.insert(item.key(), (ns.to_string(), name.to_string()));
            }
        }
        let claimed: BTreeSet<&str> = claims.iter().map(|kv| kv.key.as_str()).collect();
        for (key, (ns, name)) in &holders {
            if !claimed.contains(key.as_str()) {
                match storage.create(key, claim_value(ns, name)).await {
                    Ok(_) | Err(storage::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let now = unix_now();
        for kv in &claims {
            let Some(item) = parse_key(&kv.key) else {
                continue;
            };
            let claim = serde_json::from_slice::<Claim>(&kv.value).ok();
            let held = claim.as_ref().is_some_and(|c| {
                holders.get(&kv.key) == Some(&(c.namespace.clone(), c.name.clone()))
            });
            let old = claim
                .as_ref()
                .is_none_or(|c| now - c.claimed_at > ORPHAN_GRACE.as_secs() as i64);
            if !held && old {
                match storage.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        tracing::info!(key = %kv.key, owner = ?claim, "removed a Service allocation no Service holds");
                        continue;
                    }
                    Err(storage::Error::NotFound { .. } | storage::Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            hint.insert(item);
        }
        let mut ips = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for item in hint {
            match item {
                Item::Ip(n) => ips.insert(n),
                Item::Port(p) => ports.insert(p),
            };
        }
        *self.ips.lock() = ips;
        *self.node_ports.lock() = ports;
        Ok(())
    }
}

fn ip_taken(ip: &str) -> Cause {
    (
        "spec.clusterIPs".to_string(),
        format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"),
        "FieldValueInvalid".to_string(),
    )
}

fn port_taken(i: usize, port: u16) -> Cause {
    (
        format!("spec.ports[{i}].nodePort"),
        format!("Invalid value: {port}: provided port is already allocated"),
        "FieldValueInvalid".to_string(),
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn claim_value(namespace: &str, name: &str) -> Bytes {
    let claim = Claim {
        namespace: namespace.to_string(),
        name: name.to_string(),
        claimed_at: unix_now(),
    };
    Bytes::from(serde_json::to_vec(&claim).unwrap_or_default())
}

fn parse_key(key: &str) -> Option<Item> {
    if let Some(ip) = key.strip_prefix(IP_CLAIMS) {
        return ip.parse::<Ipv4Addr>().ok().map(|ip| Item::Ip(ip.into()));
    }
    key.strip_prefix(PORT_CLAIMS)?.parse().ok().map(Item::Port)
}

/// Copies into `new` the ClusterIP and the node ports (per port number and protocol) that
/// `old` holds and `new` leaves out, where `new`'s type still uses them.
fn carry_allocated(old: &Value, new: &mut Value) {
    let ty = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return;
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let missing_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if missing_ip {
        if let Some(ip) = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
        {
            spec.insert("clusterIP".into(), json!(ip));
            let ips = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or_else(|| json!([ip]));
            spec.insert("clusterIPs".into(), ips);
        }
    }
    if ty != "NodePort" && ty != "LoadBalancer" {
        return;
    }
    let old_ports: Vec<&Value> = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let key = |p: &Value| {
        (
            p.get("port").and_then(Value::as_i64),
            p.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string(),
        )
    };
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut() {
            if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                continue;
            }
            let np = old_ports
                .iter()
                .find(|o| key(o) == key(p))
                .and_then(|o| o.get("nodePort"))
                .cloned();
            if let (Some(np), Some(m)) = (np, p.as_object_mut()) {
                m.insert("nodePort".into(), np);
            }
        }
    }
}

/// Creates the claim of `item` for `namespace/name`: `Ok(true)` if it is now theirs (also when
/// it already was: a second create of the same Service name, e.g. the `kubernetes` Service
/// seeded by two servers), `Ok(false)` if someone else holds it.
async fn claim(
    storage: &dyn Storage,
    item: Item,
    namespace: &str,
    name: &str,
) -> Result<bool, storage::Error> {
    let key = item.key();
    match storage.create(&key, claim_value(namespace, name)).await {
        Ok(_) => Ok(true),
        Err(storage::Error::AlreadyExists { .. }) => {
            let holder = match storage.get(&key).await {
                Ok(kv) => serde_json::from_slice::<Claim>(&kv.value).ok(),
                // Given back in between: the next round may take it.
                Err(storage::Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            Ok(holder.is_some_and(|c| c.namespace == namespace && c.name == name))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_round_trip() {
        for item in [
            Item::Ip(u32::from(Ipv4Addr::new(10, 0, 0, 7))),
            Item::Port(30080),
        ] {
            assert_eq!(parse_key(&item.key()), Some(item));
        }
        assert_eq!(parse_key("/registry/core/services/default/x"), None);
    }

    #[test]
    fn refused_requests_leave_nothing_marked() {
        let a = Allocators::new(Ipv4Addr::new(10, 0, 0, 0), 24);
        let mut out_of_range =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        let err = a
            .pick(&mut out_of_range, false)
            .err()
            .expect("port 80 refused");
        assert_eq!(err.0, "spec.ports[0].nodePort");
        assert!(err.1.contains("not in the valid range"), "{}", err.1);
        // The refused Service's address was given back: the next one gets .2 again.
        let mut next = json!({"spec": {}});
        assert!(a.pick(&mut next, false).is_ok());
        assert_eq!(next.pointer("/spec/clusterIP"), Some(&json!("10.0.0.2")));
    }
}
