#!/usr/bin/env bash
# Builds the two container images Coxswain needs on a machine with no registry, as OCI
# image-layout tarballs that `ctr -n k8s.io images import` loads:
#
#   OUTDIR/busybox.tar  docker.io/library/busybox:1.35  (the workload image: sh, httpd, nc, tar…)
#   OUTDIR/pause.tar    registry.k8s.io/pause:3.10      (CRI's sandbox image, kubelet 1.32's tag)
#
# Both come from Debian's busybox-static (/usr/bin/busybox, 1.35 on bookworm, hence the tag),
# so building needs only coreutils, tar, gzip and sha256sum, and no network.
#
# The output is deterministic (fixed mtimes and owners, sorted entries, `gzip -n`), so a rebuild
# gives the same digests and an import of a rebuilt tarball is a no-op for containerd. Nothing is
# rebuilt when both tarballs are newer than /usr/bin/busybox and this script. Tarballs are built
# in a private directory and renamed into place, so concurrent builders (parallel test
# processes) never see or produce a half-written file.
#
# Usage: deploy/images/build.sh OUTDIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out="$1"
script="${BASH_SOURCE[0]}"
busybox=/usr/bin/busybox
[ -x "$busybox" ] || { echo "$busybox is missing: install Debian's busybox-static" >&2; exit 1; }
"$busybox" --list >/dev/null 2>&1 \
  || { echo "$busybox has no --list: it is not busybox-static" >&2; exit 1; }

mkdir -p "$out"
fresh() { [ -f "$1" ] && [ "$1" -nt "$busybox" ] && [ "$1" -nt "$script" ]; }
if fresh "$out/busybox.tar" && fresh "$out/pause.tar"; then
  exit 0
fi

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  armv7l | armv6l) arch=arm ;;
  i?86) arch=386 ;;
  ppc64le) arch=ppc64le ;;
  s390x) arch=s390x ;;
  riscv64) arch=riscv64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

work="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Same flags for every tar written here: what makes the digests reproducible.
det_tar() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "$@"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# build_image NAME TAG ROOTFS CONFIG_JSON_FRAGMENT OUTPUT
#   CONFIG_JSON_FRAGMENT is the body of the image config's "config" object.
build_image() {
  local name="$1" tag="$2" rootfs="$3" runconfig="$4" output="$5"
  local layout="$work/layout-$tag"
  local blobs="$layout/blobs/sha256"
  mkdir -p "$blobs"
  chmod 0755 "$layout" "$layout/blobs" "$blobs"

  # Top-level names rather than "." so entries read bin/sh, not ./bin/sh, as in registry images.
  (cd "$rootfs" && det_tar -cf "$work/layer.tar" -- *)
  local diff_id
  diff_id="$(sha "$work/layer.tar")"
  gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
  local layer_digest layer_size
  layer_digest="$(sha "$work/layer.tar.gz")"
  layer_size="$(size "$work/layer.tar.gz")"
  mv "$work/layer.tar.gz" "$blobs/$layer_digest"
  rm -f "$work/layer.tar"

  # The diff_id is the digest of the *uncompressed* layer: containerd checks it after unpacking.
  printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"deploy/images/build.sh from Debian busybox-static"}]}' \
    "$arch" "$runconfig" "$diff_id" >"$work/config.json"
  local config_digest config_size
  config_digest="$(sha "$work/config.json")"
  config_size="$(size "$work/config.json")"
  mv "$work/config.json" "$blobs/$config_digest"

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
  local manifest_digest manifest_size
  manifest_digest="$(sha "$work/manifest.json")"
  manifest_size="$(size "$work/manifest.json")"
  mv "$work/manifest.json" "$blobs/$manifest_digest"

  # ctr names the image after io.containerd.image.name; ref.name is the OCI-standard tag.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s:%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$name" "$tag" "$tag" >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  chmod 0644 "$layout/index.json" "$layout/oci-layout" "$blobs"/*

  det_tar -C "$layout" -cf "$work/image.tar" oci-layout index.json blobs
  mv "$work/image.tar" "$output"
}

# The busybox rootfs: every applet as a symlink in /bin, plus the few files programs expect
# (a passwd/group for `id` and httpd's user lookup, a sticky /tmp, an empty docroot).
bb="$work/rootfs-busybox"
mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/root" "$bb/var/www"
install -m 0755 "$busybox" "$bb/bin/busybox"
"$busybox" --list | while read -r applet; do
  if [ -n "$applet" ] && [ "$applet" != busybox ]; then ln -s busybox "$bb/bin/$applet"; fi
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$bb/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$bb/etc/group"
chmod 0755 "$bb" "$bb/bin" "$bb/etc" "$bb/var" "$bb/var/www"
chmod 0644 "$bb/etc/passwd" "$bb/etc/group"
chmod 1777 "$bb/tmp"
chmod 0700 "$bb/root"

# The pause rootfs: only what `sleep infinity` needs (sh for debugging with ctr).
pause="$work/rootfs-pause"
mkdir -p "$pause/bin"
install -m 0755 "$busybox" "$pause/bin/busybox"
ln -s busybox "$pause/bin/sh"
ln -s busybox "$pause/bin/sleep"
chmod 0755 "$pause" "$pause/bin"

path_env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
build_image docker.io/library/busybox 1.35 "$bb" "$path_env,\"Cmd\":[\"sh\"]" "$work/busybox.tar"
build_image registry.k8s.io/pause 3.10 "$pause" "$path_env,\"Entrypoint\":[\"/bin/sleep\",\"infinity\"]" "$work/pause.tar"

# Renames are atomic within one file system: readers see the old tarball or the new one.
mv -f "$work/busybox.tar" "$out/busybox.tar"
mv -f "$work/pause.tar" "$out/pause.tar"
