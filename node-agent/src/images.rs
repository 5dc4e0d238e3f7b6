//! Local container images: building them without a registry and importing them into containerd.
//!
//! Coxswain's machines cannot reach a registry, and CRI has no import RPC (`PullImage` always
//! resolves against the registry, even for an image that is present). So the two images a node
//! needs — the pause image CRI uses for every sandbox and a busybox for workloads — are built
//! from Debian's busybox-static by `deploy/images/build.sh` and loaded with
//! `ctr -n k8s.io images import`. Images imported into the `k8s.io` namespace are visible to the
//! CRI plugin at once; see `../shared/design/containerd-on-these-machines.md`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::Error;

/// The workload image `deploy/images/build.sh` builds (Debian bookworm's busybox is 1.35).
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35";

/// The sandbox ("pause") image: kubelet 1.32's default, which the containerd config names as
/// `sandbox_image` so CRI never tries to pull it.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The containerd namespace the CRI plugin keeps its images and containers in.
const CRI_NAMESPACE: &str = "k8s.io";

/// The snapshotter `ctr` unpacks into. It must be the CRI plugin's snapshotter, or CRI finds the
/// image but no unpacked rootfs; naming it here keeps a stray `CONTAINERD_SNAPSHOTTER` in the
/// environment from choosing another one.
const SNAPSHOTTER: &str = "overlayfs";

/// Imports the OCI or Docker image tarball `tarball` into the containerd at `socket` (namespace
/// `k8s.io`, unpacked for CRI) and returns the names of the images it contained.
///
/// This shells out to `ctr` (shipped with containerd) rather than speaking containerd's native
/// API: an import is content writes, an image record and a client-side unpack (snapshot
/// prepare, diff apply, commit per layer), which `ctr` already does correctly for the
/// containerd it comes with. Importing an image that is already present is cheap and harmless.
pub async fn import(socket: &Path, tarball: &Path) -> Result<Vec<String>, Error> {
    let fail = |message: String| Error::ImageImport {
        path: tarball.display().to_string(),
        message,
    };
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", CRI_NAMESPACE, "images", "import"])
        .args(["--snapshotter", SNAPSHOTTER])
        .arg(tarball)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            fail(format!(
                "cannot run `ctr` ({e}); install Debian's containerd"
            ))
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        return Err(fail(format!("ctr exited with {}: {said}", output.status)));
    }
    let names = imported_names(&stdout);
    if names.is_empty() {
        // ctr names images after the `io.containerd.image.name` annotation (OCI layouts) or the
        // RepoTags (docker save); without either it imports content nobody can refer to.
        return Err(fail(format!(
            "ctr imported no named image (does the index carry io.containerd.image.name?): {}",
            stdout.trim()
        )));
    }
    Ok(names)
}

/// The image names in `ctr images import` output, which has one line per image:
/// `unpacking docker.io/library/busybox:1.35 (sha256:…)...done`.
fn imported_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("unpacking "))
        .filter_map(|rest| rest.split(" (sha256:").next())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Where `deploy/images/build.sh` is in this source tree. Binaries built elsewhere and moved
/// (a release tarball) cannot rely on it; they take the script's path explicitly.
pub fn default_build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/images/build.sh")
}

/// Builds `busybox.tar` and `pause.tar` ([`BUSYBOX_IMAGE`], [`PAUSE_IMAGE`]) into `out` with the
/// source tree's `deploy/images/build.sh`. For tests and the quickstart.
///
/// The script is deterministic and skips the work when its outputs are up to date, so calling
/// this every time is cheap; it renames finished tarballs into place, so processes building
/// into the same `out` at once do not corrupt each other's result.
pub fn build_local_images(out: &Path) -> Result<(), Error> {
    build_local_images_with(&default_build_script(), out)
}

/// [`build_local_images`] with an explicit path to `build.sh`.
pub fn build_local_images_with(script: &Path, out: &Path) -> Result<(), Error> {
    let fail = |message: String| Error::ImageBuild {
        script: script.display().to_string(),
        message,
    };
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run bash: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(format!(
            "exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    for name in ["busybox.tar", "pause.tar"] {
        if !out.join(name).is_file() {
            return Err(fail(format!(
                "succeeded but {} is missing",
                out.join(name).display()
            )));
        }
    }
    Ok(())
}

/// The tarball in a [`build_local_images`] output directory that holds `image`
/// ([`BUSYBOX_IMAGE`] or [`PAUSE_IMAGE`]).
pub fn tarball_for(out: &Path, image: &str) -> Option<PathBuf> {
    match image {
        BUSYBOX_IMAGE => Some(out.join("busybox.tar")),
        PAUSE_IMAGE => Some(out.join("pause.tar")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_import_output() {
        let out = "unpacking docker.io/library/busybox:1.35 (sha256:2d1bddc96afed904bebe849880e57adb6fda60d8f13c53d6ee4bdbd0b3ede2fe)...done\n\
                   unpacking registry.k8s.io/pause:3.10 (sha256:db40a933a35552b634879483e523d7bb53005044af75c11cf1d3d1189e1b45ad)...done\n";
        assert_eq!(imported_names(out), [BUSYBOX_IMAGE, PAUSE_IMAGE]);
        assert!(imported_names("").is_empty());
    }
}
