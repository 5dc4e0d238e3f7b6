//! The official Python client (PyPI `kubernetes`, installed by scripts/test.sh), unmodified.

use e2e::{Backend, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_flows() {
    let c = Cluster::start(Backend::Embedded).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/client_flows.py");
    let kubeconfig = c.kubeconfig().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(kubeconfig)
            .output()
            .expect("python3 runs (scripts/test.sh installs the kubernetes package)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "version 32",
            "read v",
            "list ['py']",
            "watch ['MODIFIED', 'DELETED']",
            "deployment 1 RollingUpdate",
            "gone 404",
        ],
        "{stderr}"
    );
}
