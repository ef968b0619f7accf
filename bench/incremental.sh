#!/usr/bin/env bash
# Full build vs incremental rebuild of `nodeimg build node-image` with one changed binary,
# same inputs: an extracted release (kubelet 110 MB, kubectl and kubeadm 50 MB each, four
# control-plane image tars of MB_PER_IMAGE random data, default 130) and an image archive of
# the other required images. Full and incremental runs alternate, twice; each side's best
# time is compared. Before each incremental run (outside the timing) the kubelet is rebuilt:
# new content, same size, as a Go rebuild of a one-line change gives. Prints both times, the
# ratio, and the size of the layer each adds. Run as root from the repository root:
#   bench/incremental.sh [MB_PER_IMAGE]
set -euo pipefail
mb=${1:-130}
version=v1.30.0
cargo build --release --quiet
bin=$PWD/target/release/nodeimg
base=$("$bin" -q build base-image)
work=$(mktemp -d /var/tmp/nodeimg-bench-XXXXXX)
required=(registry.k8s.io/pause:3.9 registry.k8s.io/etcd:3.5.12-0 registry.k8s.io/coredns/coredns:v1.11.1
  docker.io/kindest/kindnetd:v20240513-cd2ac642 docker.io/kindest/local-path-provisioner:v20240513-b9bba138
  docker.io/kindest/local-path-helper:v20230510-486859a6)
cleanup() {
  # Real names only ever live for the moment it takes to save them; gone here whatever happened.
  docker rmi -f "${required[@]}" >/dev/null 2>&1 || true
  docker rmi -f nodeimg-bench/inc:full nodeimg-bench/inc:dev >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== fixture in $work: binaries 110+50+50 MB, 4 image tars of ${mb} MB, ${#required[@]} required images"
rel=$work/kubernetes
mkdir -p "$rel/server/bin" "$work/rootfs/bin"
echo "$version" > "$rel/version"
cp /bin/busybox "$work/rootfs/bin/busybox"; ln -s busybox "$work/rootfs/bin/sh"
# A script that exits before its payload: runs like a stand-in, weighs like the real binary.
binary() { # NAME MB SCRIPT
  { printf '#!/bin/sh\n%s\nexit 0\n' "$3"; head -c "${2}M" /dev/urandom; } > "$rel/server/bin/$1"
  chmod 755 "$rel/server/bin/$1"
}
list=$(printf '%s\n' "registry.k8s.io/kube-apiserver:$version" "registry.k8s.io/kube-controller-manager:$version" \
  "registry.k8s.io/kube-scheduler:$version" "registry.k8s.io/kube-proxy:$version" "${required[@]:0:3}")
binary kubeadm 50 "cat <<'LIST'
$list
LIST"
binary kubelet 110 "echo Kubernetes $version"
binary kubectl 50 "echo Kubernetes $version"
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  head -c "${mb}M" /dev/urandom > "$work/rootfs/payload"
  tar -C "$work/rootfs" -c . | docker import - "nodeimg-bench/$c-amd64:$version" >/dev/null
  docker tag "nodeimg-bench/$c-amd64:$version" "registry.k8s.io/$c-amd64:$version"
  docker save -o "$rel/server/bin/$c.tar" "registry.k8s.io/$c-amd64:$version"
  docker rmi -f "registry.k8s.io/$c-amd64:$version" "nodeimg-bench/$c-amd64:$version" >/dev/null
done
rm -f "$work/rootfs/payload"
for img in "${required[@]}"; do tar -C "$work/rootfs" -c . | docker import - "$img" >/dev/null; done
docker save -o "$work/required.tar" "${required[@]}"
docker rmi -f "${required[@]}" >/dev/null

build() { # TARGET [FLAGS...]: prints the seconds taken
  local target=$1 start
  shift
  start=$(date +%s.%N)
  "$bin" build node-image "$rel" -b "$base" -i "$target" --image-archive "$work/required.tar" "$@" \
    2>"$work/last.log" >/dev/null || { cat "$work/last.log" >&2; return 1; }
  echo "$(date +%s.%N) - $start" | bc
}
top_layer() { docker history --no-trunc --human=false --format '{{.Size}}' "$1" | head -1; }

build nodeimg-bench/inc:dev --full >/dev/null
full=(); inc=()
for round in 1 2; do
  full+=("$(build nodeimg-bench/inc:full --full)")
  binary kubelet 110 "echo Kubernetes $version round $round"
  inc+=("$(build nodeimg-bench/inc:dev)")
  grep -q "incremental build on" "$work/last.log" || { echo "not an incremental build:" >&2; cat "$work/last.log" >&2; exit 1; }
done
full_s=$(printf '%s\n' "${full[@]}" | sort -n | head -1)
inc_s=$(printf '%s\n' "${inc[@]}" | sort -n | head -1)
echo "== runs: full ${full[*]} s; incremental ${inc[*]} s"
echo "== incremental steps (last run)"
grep '✓' "$work/last.log" | sed 's/^\[[0-9:]*\] ✓ /  /' || true
echo "== results"
printf 'full build best           %8.1f s\n' "$full_s"
printf 'incremental rebuild best  %8.1f s\n' "$inc_s"
printf 'incremental / full        %8.1f %%\n' "$(echo "$inc_s * 100 / $full_s" | bc -l)"
printf 'layer added, full         %8.1f MB\n' "$(echo "$(top_layer nodeimg-bench/inc:full)/1000000" | bc -l)"
printf 'layer added, incremental  %8.1f MB\n' "$(echo "$(top_layer nodeimg-bench/inc:dev)/1000000" | bc -l)"
printf 'image size, full          %8.1f MB\n' "$(echo "$(docker image inspect -f '{{.Size}}' nodeimg-bench/inc:full)/1000000" | bc -l)"
printf 'image size, incremental   %8.1f MB (%s incremental layers)\n' \
  "$(echo "$(docker image inspect -f '{{.Size}}' nodeimg-bench/inc:dev)/1000000" | bc -l)" \
  "$(docker image inspect -f '{{index .Config.Labels "io.nodeimg.incremental.layers"}}' nodeimg-bench/inc:dev)"
