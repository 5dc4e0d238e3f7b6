//! What a container needs from the API and the disk before it can be created: environment
//! variables (literal, `valueFrom`, `envFrom`) and volumes written under the pod directory.
//!
//! Failures are returned as messages: they become the container's `CreateContainerConfigError`
//! (env) or the pod's `FailedMount`-style waiting message (volumes), and the worker retries.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, ObjectFieldSelector, Pod, ResourceFieldSelector,
    Secret, Volume,
};
use k8s_openapi::ByteString;
use kube::{Api, Client};

use super::spec::{self, milli, Layout};
use super::token::Tokens;
use crate::cri::api;
use crate::node::Writer;

/// ConfigMaps and Secrets read during one sync, so a pod with ten references reads each once,
/// and the pod's ServiceAccount tokens (cached across syncs).
pub struct Sources {
    client: Client,
    writer: Writer,
    tokens: Tokens,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Sources {
    pub fn new(writer: &Writer, namespace: &str, tokens: Tokens) -> Sources {
        Sources {
            client: writer.client.clone(),
            writer: writer.clone(),
            tokens,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, String> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| format!("configmap \"{name}\": {e}"))?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, String> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api
                .get_opt(name)
                .await
                .map_err(|e| format!("secret \"{name}\": {e}"))?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, ByteString(v)) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, ByteString(v))| (k.clone(), v.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Addresses the downward API can expose, known only at sync time.
#[derive(Clone, Debug, Default)]
pub struct PodIps {
    pub pod_ip: String,
    pub host_ip: String,
}

/// The value of a `fieldRef`, as kubelet resolves it.
pub fn field_value(pod: &Pod, sel: &ObjectFieldSelector, ips: &PodIps) -> Result<String, String> {
    let path = sel.field_path.as_str();
    let meta = &pod.metadata;
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => spec::name(pod).to_string(),
        "metadata.namespace" => spec::namespace(pod).to_string(),
        "metadata.uid" => spec::uid(pod).to_string(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ips.host_ip.clone(),
        "status.podIP" | "status.podIPs" => ips.pod_ip.clone(),
        _ => {
            if let Some(key) = subscript("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

/// `key="value"` lines, sorted, as the downward API writes label and annotation maps.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a `resourceFieldRef`: the container's limit (or request), divided by the
/// divisor and rounded up; an unset limit reports the node's allocatable, like kubelet.
pub fn resource_value(
    pod: &Pod,
    default_container: Option<&Container>,
    sel: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, i128>,
) -> Result<String, String> {
    let container = match sel.container_name.as_deref() {
        Some(n) if !n.is_empty() => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == n)),
        _ => default_container,
    }
    .ok_or_else(|| format!("resourceFieldRef: container not found for {}", sel.resource))?;
    let (which, res) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", sel.resource))?;
    let r = container.resources.as_ref();
    let map = match which {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let value = map
        .and_then(|m| m.get(res))
        .and_then(milli)
        .or_else(|| {
            (which == "limits")
                .then(|| node_allocatable.get(res).copied())
                .flatten()
        })
        .unwrap_or(0);
    let divisor = sel
        .divisor
        .as_ref()
        .and_then(milli)
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// The container's environment in upstream order: `envFrom` sources first, then `env`
/// (later entries win), with `$(VAR)` references to earlier variables expanded.
pub async fn resolve_env(
    pod: &Pod,
    c: &Container,
    sources: &mut Sources,
    ips: &PodIps,
    node_allocatable: &BTreeMap<String, i128>,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = vars.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in config_map_data(cm) {
                        set(&mut vars, format!("{prefix}{k}"), lossy(v));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(s) => {
                    for (k, v) in secret_data(s) {
                        set(&mut vars, format!("{prefix}{k}"), lossy(v));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let known: HashMap<String, String> = vars.iter().cloned().collect();
                spec::expand(e.value.as_deref().unwrap_or(""), &|k| known.get(k).cloned())
            }
            Some(from) => {
                if let Some(sel) = &from.field_ref {
                    field_value(pod, sel, ips)?
                } else if let Some(sel) = &from.resource_field_ref {
                    resource_value(pod, Some(c), sel, node_allocatable)?
                } else if let Some(sel) = &from.config_map_key_ref {
                    let optional = sel.optional == Some(true);
                    match sources.config_map(&sel.name).await? {
                        Some(cm) => match config_map_data(cm).remove(&sel.key) {
                            Some(v) => lossy(v),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    sel.key,
                                    spec::namespace(pod),
                                    sel.name
                                ))
                            }
                        },
                        None if optional => continue,
                        None => return Err(format!("configmap \"{}\" not found", sel.name)),
                    }
                } else if let Some(sel) = &from.secret_key_ref {
                    let optional = sel.optional == Some(true);
                    match sources.secret(&sel.name).await? {
                        Some(s) => match secret_data(s).remove(&sel.key) {
                            Some(v) => lossy(v),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {}/{}",
                                    sel.key,
                                    spec::namespace(pod),
                                    sel.name
                                ))
                            }
                        },
                        None if optional => continue,
                        None => return Err(format!("secret \"{}\" not found", sel.name)),
                    }
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A volume made ready on disk: where it is, and whether mounts default to read-only.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Writes one file of a configMap/secret/downwardAPI volume (atomically: a temp file renamed
/// over the old one, so a container never reads half a file) with its mode.
fn write_file(dir: &Path, rel: &str, data: &[u8], mode: i32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("invalid volume item path {rel:?}"));
    }
    let path = dir.join(rel_path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let tmp = path.with_extension("cox-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode((mode & 0o777) as u32))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Key → bytes after applying `items` (only the listed keys, at their paths).
fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    default_mode: i32,
    what: &str,
) -> Result<Vec<(String, Vec<u8>, i32)>, String> {
    match items {
        None => Ok(data
            .into_iter()
            .map(|(k, v)| (k, v, default_mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|it| {
                data.get(&it.key)
                    .map(|v| (it.path.clone(), v.clone(), it.mode.unwrap_or(default_mode)))
                    .ok_or_else(|| format!("configured key {} not found in {what}", it.key))
            })
            .collect(),
    }
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    ips: &PodIps,
    node_allocatable: &BTreeMap<String, i128>,
) -> Result<Vec<(String, Vec<u8>, i32)>, String> {
    items
        .iter()
        .map(|f| {
            let value = if let Some(sel) = &f.field_ref {
                field_value(pod, sel, ips)?
            } else if let Some(sel) = &f.resource_field_ref {
                resource_value(pod, None, sel, node_allocatable)?
            } else {
                String::new()
            };
            Ok((
                f.path.clone(),
                value.into_bytes(),
                f.mode.unwrap_or(default_mode),
            ))
        })
        .collect()
}

/// Materialises every volume of the pod under its pod directory. Idempotent: rewriting a
/// configMap volume picks up changes (at the next sync, as kubelet's periodic refresh does),
/// and a projected ServiceAccount token is replaced once its cache entry is due. A failure
/// reads as kubelet's `MountVolume.SetUp failed for volume "<name>" : <why>`.
pub async fn prepare_volumes(
    pod: &Pod,
    layout: &Layout,
    sources: &mut Sources,
    ips: &PodIps,
    node_allocatable: &BTreeMap<String, i128>,
) -> Result<HashMap<String, Prepared>, String> {
    let mut out = HashMap::new();
    let base = layout.pod_dir(spec::uid(pod)).join("volumes");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let prepared = prepare_volume(pod, v, &base, sources, ips, node_allocatable)
            .await
            .map_err(|e| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name))?;
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

async fn prepare_volume(
    pod: &Pod,
    v: &Volume,
    base: &Path,
    sources: &mut Sources,
    ips: &PodIps,
    node_allocatable: &BTreeMap<String, i128>,
) -> Result<Prepared, String> {
    let mkdir = |dir: &Path| -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
    };
    if v.empty_dir.is_some() {
        let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
        mkdir(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        return Ok(Prepared {
            host_path: dir,
            read_only: false,
        });
    }
    if let Some(hp) = &v.host_path {
        let path = PathBuf::from(&hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => mkdir(&path)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(p) = path.parent() {
                    mkdir(p)?;
                }
                std::fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    hp.path
                ))
            }
            "File" if !path.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    hp.path
                ))
            }
            _ => {}
        }
        return Ok(Prepared {
            host_path: path,
            read_only: false,
        });
    }
    // The file-projecting kinds share one writer; each gets its own directory.
    let (plugin, files) = if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644);
        let files = match sources.config_map(&cm.name).await? {
            Some(obj) => select_items(
                config_map_data(obj),
                cm.items.as_ref(),
                mode,
                &format!("ConfigMap {}", cm.name),
            )?,
            None if cm.optional == Some(true) => Vec::new(),
            None => return Err(format!("configmap \"{}\" not found", cm.name)),
        };
        ("kubernetes.io~configmap", files)
    } else if let Some(sec) = &v.secret {
        let mode = sec.default_mode.unwrap_or(0o644);
        let name = sec.secret_name.clone().unwrap_or_default();
        let files = match sources.secret(&name).await? {
            Some(obj) => select_items(
                secret_data(obj),
                sec.items.as_ref(),
                mode,
                &format!("Secret {name}"),
            )?,
            None if sec.optional == Some(true) => Vec::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        };
        ("kubernetes.io~secret", files)
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644);
        let items = d.items.clone().unwrap_or_default();
        (
            "kubernetes.io~downward-api",
            downward_files(pod, &items, mode, ips, node_allocatable)?,
        )
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644);
        let mut files = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                match sources.config_map(&cm.name).await? {
                    Some(obj) => files.extend(select_items(
                        config_map_data(obj),
                        cm.items.as_ref(),
                        mode,
                        &format!("ConfigMap {}", cm.name),
                    )?),
                    None if cm.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            }
            if let Some(sec) = &src.secret {
                match sources.secret(&sec.name).await? {
                    Some(obj) => files.extend(select_items(
                        secret_data(obj),
                        sec.items.as_ref(),
                        mode,
                        &format!("Secret {}", sec.name),
                    )?),
                    None if sec.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", sec.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                let items = d.items.clone().unwrap_or_default();
                files.extend(downward_files(pod, &items, mode, ips, node_allocatable)?);
            }
            if let Some(t) = &src.service_account_token {
                let token = sources
                    .tokens
                    .get(
                        &sources.writer,
                        pod,
                        t.audience.as_deref(),
                        t.expiration_seconds,
                    )
                    .await?;
                files.push((t.path.clone(), token.into_bytes(), mode));
            }
        }
        ("kubernetes.io~projected", files)
    } else {
        return Err(format!(
            "volume {:?}: this node supports emptyDir, hostPath, configMap, secret, downwardAPI \
             and projected volumes",
            v.name
        ));
    };
    let dir = base.join(plugin).join(&v.name);
    mkdir(&dir)?;
    for (rel, data, mode) in &files {
        write_file(&dir, rel, data, *mode)?;
    }
    Ok(Prepared {
        host_path: dir,
        read_only: true,
    })
}

/// The container's CRI mounts from its `volumeMounts` (subPath creates the sub-directory as
/// kubelet does).
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, Prepared>,
) -> Result<Vec<api::Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?} refers to no volume of the pod", m.name))?;
        let mut host = v.host_path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let sub_path = Path::new(sub);
            if sub_path.is_absolute()
                || sub_path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!("invalid subPath {sub:?}"));
            }
            host = host.join(sub_path);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            }
        }
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false) || v.read_only,
            ..Default::default()
        });
    }
    Ok(out)
}
