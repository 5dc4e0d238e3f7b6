//! The CNI configuration the agent hands containerd: a bridge with host-local IPAM over this
//! node's podCIDR, plus portmap (hostPort) and loopback. containerd reads the first conflist
//! in its `conf_dir`; the agent writes it once it knows the podCIDR, and CRI `Status` reports
//! NetworkReady only after that, which is what the node's Ready condition waits for.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::Error;

/// The network's name in the conflist and its file name.
pub const NETWORK: &str = "coxswain";

/// Where the bridge and IPAM state live.
#[derive(Clone, Debug)]
pub struct CniConfig {
    /// containerd's CRI `conf_dir`.
    pub conf_dir: PathBuf,
    /// The Linux bridge pods attach to (≤ 15 characters).
    pub bridge: String,
    /// host-local's lease directory.
    pub ipam_dir: PathBuf,
}

/// Writes (atomically) the conflist for `pod_cidr`; returns its path. Rewriting the same
/// content is a no-op, so the agent can call it on every podCIDR observation.
pub fn write_conflist(cfg: &CniConfig, pod_cidr: &str) -> Result<PathBuf, Error> {
    if cfg.bridge.is_empty() || cfg.bridge.len() > 15 {
        return Err(Error::Config(format!(
            "CNI bridge name {:?} must be 1 to 15 characters",
            cfg.bridge
        )));
    }
    if pod_cidr.parse::<ipnet_lite::Cidr>().is_err() {
        return Err(Error::Config(format!("podCIDR {pod_cidr:?} is not a CIDR")));
    }
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": cfg.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": cfg.ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    });
    std::fs::create_dir_all(&cfg.conf_dir)?;
    let path = cfg.conf_dir.join(format!("10-{NETWORK}.conflist"));
    let text = serde_json::to_string_pretty(&conf).map_err(|e| Error::Config(e.to_string()))?;
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Deletes the bridge interface (the bridge plugin never does): for uninstall and tests.
pub async fn remove_bridge(bridge: &str) {
    let _ = tokio::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output()
        .await;
}

/// Whether `dir` already holds a conflist (NetworkReady depends on it).
pub fn has_conflist(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "conflist"))
        })
        .unwrap_or(false)
}

/// Just enough CIDR parsing to refuse garbage before containerd does, without a crate.
mod ipnet_lite {
    use std::net::IpAddr;
    use std::str::FromStr;

    pub struct Cidr;

    impl FromStr for Cidr {
        type Err = ();
        fn from_str(s: &str) -> Result<Cidr, ()> {
            let (ip, len) = s.split_once('/').ok_or(())?;
            let ip: IpAddr = ip.parse().map_err(|_| ())?;
            let len: u8 = len.parse().map_err(|_| ())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(Cidr).ok_or(())
        }
    }
}
