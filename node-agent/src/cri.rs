//! The CRI v1 client: containerd's runtime and image services over its unix socket.
//!
//! CRI (not containerd's native API) runs pods because it gives sandbox networking (CNI),
//! OCI spec generation, CRI-format logs, exec and restart recovery for free; see
//! `../shared/design/containerd-on-these-machines.md` for the measurements behind that choice.
//! Image import, which CRI lacks, goes through `ctr` in [`crate::images`].

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

pub use k8s_cri::v1 as api;

/// Both CRI services on one HTTP/2 connection. Cloning is cheap (the channel multiplexes),
/// so every pod worker holds its own clone.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub socket: PathBuf,
}

impl Cri {
    /// Connects to the runtime at `socket` (a path, or `unix://` + path as kubelet's
    /// `--container-runtime-endpoint` takes it).
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Cri, Error> {
        let raw = socket.as_ref().to_string_lossy();
        let path = PathBuf::from(raw.strip_prefix("unix://").unwrap_or(&raw));
        let dial = path.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let dial = dial.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(dial).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| Error::RuntimeConnect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: path,
        })
    }

    /// `Version`: the runtime's name and version, as `nodeInfo.containerRuntimeVersion`
    /// reports it (`containerd://1.6.20~ds1`).
    pub async fn version(&self) -> Result<String, Error> {
        let v = self
            .runtime
            .clone()
            .version(api::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|status| Error::Cri {
                op: "Version",
                status,
            })?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    /// `Status`: `Ok(())` when RuntimeReady and NetworkReady are both true, otherwise the
    /// reason the node is not ready, worded for the Node's Ready condition.
    pub async fn ready(&self) -> Result<Result<(), String>, Error> {
        let status = self
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await
            .map_err(|status| Error::Cri {
                op: "Status",
                status,
            })?
            .into_inner();
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        let mut problems = Vec::new();
        for wanted in ["RuntimeReady", "NetworkReady"] {
            match conditions.iter().find(|c| c.r#type == wanted) {
                Some(c) if c.status => {}
                Some(c) => problems.push(format!(
                    "container runtime {wanted}=false reason:{} message:{}",
                    c.reason, c.message
                )),
                None => problems.push(format!("container runtime did not report {wanted}")),
            }
        }
        Ok(if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join(", "))
        })
    }
}

/// Maps a failed CRI call to [`Error::Cri`]; used as `.map_err(cri_err("RunPodSandbox"))`.
pub fn cri_err(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Cri { op, status }
}
