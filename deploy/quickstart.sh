#!/usr/bin/env bash
# Brings up Coxswain on this machine: builds the release binaries and runs the API server on
# 127.0.0.1:6443 with the embedded store under ${COX_DATA_DIR:-/var/lib/coxswain}, writing an
# admin kubeconfig next to it. Runs in the foreground; Ctrl-C stops it, data survives.
#
# Today this is the API server only (kubectl get/apply/create/watch work against it); the
# scheduler, controllers and node agent join it as their issues land, and this script becomes
# `coxswain up` (issue 8).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${COX_DATA_DIR:-/var/lib/coxswain}"
port="${COX_PORT:-6443}"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
if ! command -v protoc >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi
echo "==> building (release)"
cargo build --release -p apiserver --bin cox-apiserver
mkdir -p "$data"
echo "==> starting cox-apiserver on 127.0.0.1:$port, data in $data"
echo "    export KUBECONFIG=$data/kubeconfig"
exec ./target/release/cox-apiserver --data-dir "$data" --port "$port" \
  --write-kubeconfig "$data/kubeconfig"
