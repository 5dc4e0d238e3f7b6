#!/usr/bin/env bash
# Runs the whole Coxswain test suite on a fresh Debian machine: installs what the tests need
# (as root, or through sudo), checks formatting and lints, then runs every test.
#
# Tests that need etcd start their own etcd (Debian's etcd-server) on free loopback ports with
# temporary data directories and stop it when they finish, so nothing here starts a service
# that could outlive the run, and several runs can share a machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server protobuf-compiler)
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
