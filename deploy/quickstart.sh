#!/usr/bin/env bash
# Brings up a one-node Coxswain cluster on this machine, as root:
#   - installs what it needs from Debian if missing (containerd, runc, CNI plugins,
#     busybox-static, protoc, iproute2, iptables);
#   - builds the release binaries and the local busybox/pause images (no registry needed);
#   - starts a private containerd (deploy/containerd/config.toml) and `coxswain up`: the API
#     server (embedded store under $COX_DATA_DIR), scheduler, controller manager and node agent
#     in one process;
#   - waits for the node to be Ready, applies deploy/examples/ and prints what to try.
# It stays in the foreground; Ctrl-C stops every component (containers keep their state and a
# second run re-adopts them; objects survive in the data directory). Running it twice is safe:
# a previous instance started by this script is stopped first.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
data="${COX_DATA_DIR:-/var/lib/coxswain}"
port="${COX_PORT:-6443}"
logs="${COX_LOG_DIR:-/var/log/coxswain}"
run="/run/coxswain"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need=()
for p in containerd runc containernetworking-plugins busybox-static protobuf-compiler iproute2 iptables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }

echo "==> building (release)"
cargo build --release -q -p coxswain
# Where cargo put them (CARGO_TARGET_DIR when set, as cargo itself honours it).
bin="${CARGO_TARGET_DIR:-$root_dir/target}/release"

$sudo mkdir -p "$data" "$logs" "$run" /etc/coxswain/containerd /etc/coxswain/cni/net.d
# Stop what an earlier run of this script left behind (its pids are in $run).
for f in "$run"/*.pid; do
  [ -e "$f" ] || continue
  kill "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
done

echo "==> building the local images"
"$root_dir/deploy/images/build.sh" "$data/images"

pids=()
stop() {
  echo
  echo "==> stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$run"/*.pid
}
trap stop EXIT
# Ctrl-C and kill end the script, which runs `stop` on the way out.
trap 'exit 130' INT TERM

echo "==> starting containerd"
cp "$root_dir/deploy/containerd/config.toml" /etc/coxswain/containerd/config.toml
sock="$run/containerd/containerd.sock"
if ! ctr -a "$sock" version >/dev/null 2>&1; then
  containerd --config /etc/coxswain/containerd/config.toml >"$logs/containerd.log" 2>&1 &
  pids+=("$!"); echo "$!" >"$run/containerd.pid"
  for _ in $(seq 100); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
fi

# The whole cluster in one process: API server (embedded store), scheduler, controller
# manager and the node agent on that containerd.
kubeconfig="$data/kubeconfig"
rm -f "$kubeconfig"
"$bin/coxswain" up --data-dir "$data" --port "$port" --container-runtime-endpoint "$sock" \
  --import-image "$data/images/pause.tar" --import-image "$data/images/busybox.tar" \
  2> >(tee "$logs/coxswain.log" >&2) &
pids+=("$!"); echo "$!" >"$run/coxswain.pid"
for _ in $(seq 600); do
  [ -s "$kubeconfig" ] && kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
export KUBECONFIG="$kubeconfig"

node="$(hostname)"
echo "==> waiting for node $node to be Ready"
for _ in $(seq 600); do
  kubectl get node "$node" >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl wait --for=condition=Ready "node/$node" --timeout=120s
kubectl apply -f "$root_dir/deploy/examples/"
kubectl rollout status deployment/web --timeout=180s

cat <<MSG

Coxswain is running. In another shell:
    export KUBECONFIG=$kubeconfig
    kubectl get nodes,pods -o wide
    kubectl logs deploy/web
    kubectl exec deploy/web -- wget -qO- localhost:8080
    kubectl port-forward deploy/web 8080:8080   # then: curl localhost:8080
Logs are in $logs. Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "a component exited; see $logs" >&2
