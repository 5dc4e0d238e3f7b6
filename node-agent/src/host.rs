//! Facts about the machine a real node agent runs on: capacity from `/proc`, identity from
//! `/etc/os-release` and the kernel. No `statvfs` (it would need `unsafe` or a C binding), so
//! ephemeral storage comes from `df`; a missing fact is left out rather than guessed.

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::NodeSystemInfo;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::node::{NodeConfig, KUBELET_VERSION};

/// Upstream's default `--max-pods`.
pub const MAX_PODS: u32 = 110;

/// Go's `GOARCH` spelling of this machine's architecture, as `nodeInfo.architecture` and the
/// `kubernetes.io/arch` label use it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Logical CPUs: the `processor` lines of `/proc/cpuinfo`, else what std reports.
pub fn cpu_count() -> u32 {
    let from_proc = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
                .count() as u32
        })
        .unwrap_or(0);
    if from_proc > 0 {
        return from_proc;
    }
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// `MemTotal` from `/proc/meminfo`, in KiB.
pub fn memory_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&info)
}

fn parse_meminfo_total(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Size of the root filesystem in KiB, from `df -kP /`.
pub fn root_fs_kib() -> Option<u64> {
    let out = Command::new("df").args(["-kP", "/"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_df(&String::from_utf8_lossy(&out.stdout))
}

fn parse_df(out: &str) -> Option<u64> {
    out.lines().nth(1)?.split_whitespace().nth(1)?.parse().ok()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Unknown".to_string())
}

/// The address other machines reach this one at: the source address of the default route
/// (a UDP `connect` sends nothing), else loopback.
pub fn primary_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".to_string())
}

/// This machine's hostname, lower-cased as a Node name must be.
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .unwrap_or_else(|| "localhost".to_string())
        .to_lowercase()
}

/// The Node a real agent registers for this machine. `node_ip` overrides the detected
/// address. Allocatable equals capacity: nothing is reserved for system daemons yet.
pub fn host_node_config(name: &str, node_ip: Option<String>) -> NodeConfig {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(cpu_count().to_string()));
    if let Some(kib) = memory_kib() {
        capacity.insert("memory".to_string(), Quantity(format!("{kib}Ki")));
    }
    if let Some(kib) = root_fs_kib() {
        capacity.insert(
            "ephemeral-storage".to_string(),
            Quantity(format!("{kib}Ki")),
        );
    }
    capacity.insert("pods".to_string(), Quantity(MAX_PODS.to_string()));
    NodeConfig {
        name: name.to_string(),
        internal_ip: node_ip.unwrap_or_else(primary_ip),
        hostname: hostname(),
        labels: NodeConfig::default_labels(name, std::env::consts::OS, go_arch()),
        allocatable: capacity.clone(),
        capacity,
        node_info: NodeSystemInfo {
            architecture: go_arch().to_string(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            // Filled in from CRI `Version` once the runtime answers.
            container_runtime_version: "containerd://unknown".to_string(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_default(),
            operating_system: std::env::consts::OS.to_string(),
            os_image: os_image(),
            system_uuid: String::new(),
        },
        pod_cidr: None,
        kubelet_port: None,
        images: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_df() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       16303548 kB\nMemFree: 1 kB\n"),
            Some(16303548)
        );
        let df = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                  /dev/root        101430960  20000000  81430960      20% /\n";
        assert_eq!(parse_df(df), Some(101430960));
    }

    #[test]
    fn host_config_has_the_four_capacities() {
        let c = host_node_config("n1", Some("10.1.2.3".into()));
        assert!(c.capacity.contains_key("cpu"));
        assert!(c.capacity.contains_key("pods"));
        assert_eq!(c.internal_ip, "10.1.2.3");
        assert_eq!(c.node_info.kubelet_version, KUBELET_VERSION);
    }
}
