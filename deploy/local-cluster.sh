#!/usr/bin/env bash
# A multi-node Coxswain cluster on this machine (as root): 3 etcd members, 2 API servers,
# 2 schedulers and 2 controller managers (leader-elected), and 3 nodes, each in its own network
# namespace with its own containerd and pod CIDR, joining with a bootstrap token over TLS.
# See deploy/multinode/README.md.
#
#   deploy/local-cluster.sh up       # builds what is missing, starts it, prints the KUBECONFIG line
#   deploy/local-cluster.sh down     # removes every process, namespace, interface, mount, cgroup, file
#   deploy/local-cluster.sh status   # what of it exists
#
# Extra flags go to the `local-cluster` binary: --dir DIR (default /var/lib/coxswain-local),
# --nodes N, --bin-dir DIR. COX_PROFILE=debug builds debug binaries instead of release.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "local-cluster.sh must run as root (network namespaces, cgroups)" >&2; exit 1; }
cmd="${1:-}"
[ -n "$cmd" ] || { echo "usage: $0 up|down|status [--dir DIR] [--nodes N]" >&2; exit 2; }
shift
profile="${COX_PROFILE:-release}"
flag=""; [ "$profile" = release ] && flag="--release"
if [ "$cmd" = up ]; then
  for tool in etcd containerd ctr runc nsenter ip; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
      || { echo "$tool is missing (apt-get install etcd-server containerd runc containernetworking-plugins busybox-static iproute2 util-linux)" >&2; exit 1; }
  done
  cargo build $flag -p apiserver -p scheduler -p controller-manager -p node-agent --bins
fi
cargo build $flag -p e2e --bin local-cluster
exec "target/$profile/local-cluster" "$cmd" --bin-dir "target/$profile" "$@"
