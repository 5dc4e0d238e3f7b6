#!/usr/bin/env bash
# Runs the whole Coxswain test suite on a fresh Debian machine: installs what the tests need
# (as root, or through sudo), checks formatting and lints, then runs every test.
#
# Tests that need etcd start their own etcd (Debian's etcd-server) on free loopback ports with
# temporary data directories and stop it when they finish, so nothing here starts a service
# that could outlive the run, and several runs can share a machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# containerd, runc, the CNI plugins, busybox-static (the source of the local busybox and pause
# images, deploy/images/build.sh), iproute2 and iptables are for the node agent's tests, which run
# real pods through their own private containerd (node_agent::testing::Containerd).
packages=(etcd-server protobuf-compiler containerd runc containernetworking-plugins busybox-static iproute2 iptables)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's etcd-server package may start a system etcd on 2379; the tests never use it.
command -v etcd >/dev/null || { echo "etcd is still missing after installing etcd-server" >&2; exit 1; }
command -v protoc >/dev/null || { echo "protoc is still missing after installing protobuf-compiler" >&2; exit 1; }
# Debian's containerd package may start a system containerd (where systemd runs); the tests never
# use or stop it: each starts its own on a socket in a temporary directory.
for tool in containerd ctr; do
  command -v "$tool" >/dev/null || { echo "$tool is still missing after installing containerd" >&2; exit 1; }
done
command -v runc >/dev/null || [ -x /usr/sbin/runc ] \
  || { echo "runc is still missing after installing runc" >&2; exit 1; }
[ -x /usr/lib/cni/bridge ] \
  || { echo "/usr/lib/cni/bridge is missing after installing containernetworking-plugins" >&2; exit 1; }
[ -x /usr/bin/busybox ] \
  || { echo "/usr/bin/busybox is missing after installing busybox-static" >&2; exit 1; }
# The e2e suite drives the real kubectl 1.32; a missing kubectl is a failure, never a skip.
[ -x /usr/bin/kubectl ] || { echo "kubectl is missing at /usr/bin/kubectl (the e2e tests need kubectl 1.32)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }

# The Python client e2e test uses the official client, as users do.
if ! python3 -c "import kubernetes" 2>/dev/null; then
  echo "==> installing the Python kubernetes client"
  python3 -m pip --version >/dev/null 2>&1 || { $sudo apt-get install -y -qq python3-pip >/dev/null; }
  python3 -m pip install --quiet "kubernetes==32.0.1" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "kubernetes==32.0.1"
fi

# Incremental artefacts only help repeated local builds; a one-shot run saves gigabytes without them.
export CARGO_INCREMENTAL=0

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
