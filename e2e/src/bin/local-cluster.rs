//! `local-cluster up|down|status`: the multi-node cluster of [`e2e::multinode`] on this machine,
//! for humans (`deploy/local-cluster.sh`). Needs root, etcd, containerd, runc, the CNI plugins
//! and busybox-static, and the cox-* binaries built (release preferred, else debug).
//!
//! `up` returns once every node is Ready and leaves the cluster running; `down` removes every
//! process, namespace, interface, mount, cgroup and file it made (and works on a cluster whose
//! `up` crashed half-way).

use std::path::PathBuf;
use std::process::ExitCode;

use e2e::multinode::{self, LocalCluster, Options};

const USAGE: &str = "usage: local-cluster up|down|status [--dir DIR] [--bin-dir DIR] [--nodes N]
  --dir      the cluster's directory (default /var/lib/coxswain-local)
  --bin-dir  where the cox-* binaries are (default target/release, else target/debug)
  --nodes    number of nodes, 1 to 9 (default 3)
Names: bridge coxnet0 (10.99.0.1/24), namespaces coxnet-n<i> (10.99.0.1<i>), pod CIDRs 10.244.<i>.0/24.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut dir = PathBuf::from("/var/lib/coxswain-local");
    let mut bin_dir = multinode::default_bin_dir();
    let mut nodes = 3usize;
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--bin-dir" => bin_dir = PathBuf::from(value),
            "--nodes" => match value.parse() {
                Ok(n) => nodes = n,
                Err(_) => {
                    eprintln!("--nodes: not a number: {value}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("unknown flag {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match cmd.as_str() {
        "up" => {
            let mut opts = Options::new(dir.clone(), bin_dir, "coxnet", 0);
            opts.nodes = nodes;
            // Human timescales: upstream's defaults for node failure handling.
            opts.node_monitor_grace_period = std::time::Duration::from_secs(40);
            opts.eviction_toleration_seconds = 300;
            opts.node_lease_renew_interval = std::time::Duration::from_secs(10);
            eprintln!(
                "==> starting 3 etcd members, 2 API servers, 2 schedulers, 2 controller managers and {nodes} nodes in {}",
                dir.display()
            );
            match LocalCluster::up(opts) {
                Ok(cluster) => {
                    let out = cluster.kubectl(&["get", "nodes", "-o", "wide"]);
                    print!("{}", out.stdout);
                    println!(
                        "API servers: {} and {}",
                        cluster.apiserver_url(0),
                        cluster.apiserver_url(1)
                    );
                    println!("logs: {}/logs", dir.display());
                    println!("export KUBECONFIG={}", cluster.kubeconfig().display());
                    println!(
                        "stop with: deploy/local-cluster.sh down --dir {}",
                        dir.display()
                    );
                    cluster.detach();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("local-cluster up failed: {e}");
                    eprintln!("(everything it started has been removed)");
                    ExitCode::FAILURE
                }
            }
        }
        "down" => {
            let left = multinode::down(&dir);
            if left.is_empty() {
                println!("removed the cluster in {}", dir.display());
                ExitCode::SUCCESS
            } else {
                eprintln!("left over:\n  {}", left.join("\n  "));
                ExitCode::FAILURE
            }
        }
        "status" => {
            let left = multinode::leftovers(&dir);
            if left.is_empty() {
                println!("no cluster in {}", dir.display());
            } else {
                println!("{}", left.join("\n"));
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
