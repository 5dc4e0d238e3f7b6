//! Pod cgroup parents. runc (cgroupfs driver) creates `<parent>/<container>` leaves and
//! removes them, but never the pod-level parent it was handed: the agent removes those, as
//! kubelet's pod container manager does, or every pod leaves an empty directory in each
//! hierarchy.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every hierarchy a cgroupfs path exists in: each v1 controller mount plus the v2 tree
/// (`unified` in hybrid mode, the root itself on a v2-only host).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Removes the pod cgroup `parent` (e.g. `/kubepods/pod<uid>`) from every hierarchy. Leaves
/// that runc has not removed yet (a container still exiting) are removed first: rmdir of an
/// empty cgroup is how cgroupfs deletes, and it fails harmlessly while tasks remain.
pub fn remove_pod(parent: &str) {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for h in hierarchies() {
        let dir = h.join(rel);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for c in children.filter_map(Result::ok) {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(path = %dir.display(), error = %e, "pod cgroup not removed"),
        }
    }
}

/// Removes the agent's cgroup root (`/kubepods`) when it is empty: for tests and uninstall.
pub fn remove_root(root: &str) {
    remove_pod(root);
}

/// Pod cgroups still present under `root` in any hierarchy (tests assert none are left).
pub fn leftovers(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    let mut out = Vec::new();
    for h in hierarchies() {
        if let Ok(d) = std::fs::read_dir(h.join(rel)) {
            out.extend(
                d.filter_map(Result::ok)
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    out
}
