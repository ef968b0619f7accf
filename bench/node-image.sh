#!/usr/bin/env bash
# Benchmarks `nodeimg build node-image` from a server tarball, and with KIND=/path/to/kind
# `kind build node-image` on the same tarball and base, interleaved. Prints each run's wall
# time, nodeimg's peak RSS, the node image's size and its step times; asserts nothing.
#
#   TARBALL=realistic|tiny  realistic (default): kubelet 110 MB, kubeadm 45 MB, kubectl 50 MB,
#                           image tars of 50-110 MB (~535 MB in all); tiny: ~5 MB in all.
#   IMAGES=registry|cache   where the 6 required images (pause, etcd, coredns, kindnetd,
#                           local-path-*; 0.3-60 MB of compressible data each) come from:
#                           a docker-registry on 127.0.0.1 given as --registry-mirror
#                           (default), or the host's Docker cache under their real names
#                           (made for the run only when absent, and removed again).
#   ROUNDS=3                rounds; nodeimg and kind alternate who goes first.
#   NODEIMG=/path           another nodeimg binary (an older build, to compare); default:
#                           this tree's, built with --release.
# Run as root from the repository root:  TARBALL=tiny IMAGES=cache bench/node-image.sh
set -euo pipefail
tarball_kind=${TARBALL:-realistic}
images_from=${IMAGES:-registry}
rounds=${ROUNDS:-3}
version=v1.30.0
bin=${NODEIMG:-}
[[ -n $bin ]] || { cargo build --release --quiet; bin=$PWD/target/release/nodeimg; }
base=$("$bin" -q build base-image)
work=$(mktemp -d /var/tmp/nodeimg-bench-XXXXXX)
made=()
registry_pid=
cleanup() {
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null || true
  docker rmi -f nodeimg-bench/node:nodeimg nodeimg-bench/node:kind "${made[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Compressible bytes (shared libraries), like the binaries real images hold.
payload() {
  (find /usr/lib/x86_64-linux-gnu -type f -size +100k -print0 | sort -z | xargs -0 cat 2>/dev/null || true) | head -c "$1"
}
# A script that answers like the binary, padded to the real binary's size.
binary() {
  printf '#!/bin/sh\n%s\nexit 0\n' "$2" > "$1"
  head -c "$3" /dev/urandom >> "$1"
  chmod 755 "$1"
}
# An image of busybox plus SIZE of payload under NAME, in the host's Docker.
image() {
  rm -rf "$work/rootfs"; mkdir -p "$work/rootfs/bin"
  cp /bin/busybox "$work/rootfs/bin/busybox"; ln -s busybox "$work/rootfs/bin/sh"
  payload "$2" > "$work/rootfs/payload"
  tar -C "$work/rootfs" -c . | docker import - "$1" >/dev/null
}

echo "== fixture: $tarball_kind tarball, required images from the $images_from, in $work"
rel=$work/kubernetes
mkdir -p "$rel/server/bin"
echo "$version" > "$rel/version"
case $tarball_kind in
  realistic) sizes=(110M 45M 50M); tars=(110M 100M 50M 70M) ;;
  tiny) sizes=(1M 1M 1M); tars=(512K 512K 512K 512K) ;;
  *) echo "TARBALL must be realistic or tiny" >&2; exit 2 ;;
esac
list="registry.k8s.io/kube-apiserver:$version
registry.k8s.io/kube-controller-manager:$version
registry.k8s.io/kube-scheduler:$version
registry.k8s.io/kube-proxy:$version
registry.k8s.io/pause:3.9
registry.k8s.io/etcd:3.5.12-0
registry.k8s.io/coredns/coredns:v1.11.1"
binary "$rel/server/bin/kubelet" "echo Kubernetes $version" "${sizes[0]}"
binary "$rel/server/bin/kubeadm" "case \$1 in version) echo $version ;; *) echo '$list' ;; esac" "${sizes[1]}"
binary "$rel/server/bin/kubectl" "echo Client Version: $version" "${sizes[2]}"
i=0
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  name=nodeimg-bench/$c-amd64:$version-$$
  image "$name" "${tars[$i]}"; i=$((i + 1))
  # docker save names the image as it is tagged: saved under the upstream name from a tag
  # made for the moment (and removed on any exit), so no stand-in stays in Docker under it.
  made+=("$name" "registry.k8s.io/$c-amd64:$version")
  docker tag "$name" "registry.k8s.io/$c-amd64:$version"
  docker save -o "$rel/server/bin/$c.tar" "registry.k8s.io/$c-amd64:$version"
  docker rmi "registry.k8s.io/$c-amd64:$version" "$name" >/dev/null
  echo "$version" > "$rel/server/bin/$c.docker_tag"
done
tarball=$work/kubernetes-server-linux-amd64.tar.gz
tar -C "$work" -c kubernetes | gzip -1 > "$tarball"
printf 'tarball %.1f MB gz\n' "$(echo "$(stat -c %s "$tarball")/1000000" | bc -l)"

required=(registry.k8s.io/pause:3.9=300K registry.k8s.io/etcd:3.5.12-0=60M
  registry.k8s.io/coredns/coredns:v1.11.1=15M docker.io/kindest/kindnetd:v20240513-cd2ac642=40M
  docker.io/kindest/local-path-provisioner:v20240513-b9bba138=20M
  docker.io/kindest/local-path-helper:v20230510-486859a6=3M)
mirror_args=()
if [[ $images_from == registry ]]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
    "$work/registry" "$port" > "$work/registry.yml"
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
  reg=127.0.0.1:$port
  for entry in "${required[@]}"; do
    ref=${entry%=*}; path=${ref#registry.k8s.io/}; path=${path/#docker.io\//hub/}
    made+=("nodeimg-bench/seed:$$" "$reg/$path")
    image "nodeimg-bench/seed:$$" "${entry#*=}"
    docker tag "nodeimg-bench/seed:$$" "$reg/$path"
    docker push -q "$reg/$path" >/dev/null
    docker rmi "$reg/$path" "nodeimg-bench/seed:$$" >/dev/null
  done
  mirror_args=(--registry-mirror "registry.k8s.io=$reg" --registry-mirror "docker.io=http://$reg/hub")
elif [[ $images_from == cache ]]; then
  for entry in "${required[@]}"; do
    ref=${entry%=*}
    docker image inspect "$ref" >/dev/null 2>&1 && continue
    image "$ref" "${entry#*=}"; made+=("$ref")
  done
else
  echo "IMAGES must be registry or cache" >&2; exit 2
fi

# Wall time of a command; its peak RSS (KiB) to $work/rss.
timed() {
  local start; start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$@" >"$work/out.log" 2>"$work/err.log" || { cat "$work/err.log" >&2; return 1; }
  echo "$(date +%s.%N) - $start" | bc
}
run_nodeimg() {
  docker rmi -f nodeimg-bench/node:nodeimg >/dev/null 2>&1 || true
  timed "$bin" build node-image "$tarball" -b "$base" -i nodeimg-bench/node:nodeimg --full "${mirror_args[@]}"
  cp "$work/err.log" "$work/nodeimg.log"; cp "$work/rss" "$work/nodeimg.rss"
}
run_kind() {
  docker rmi -f nodeimg-bench/node:kind >/dev/null 2>&1 || true
  timed "$KIND" build node-image --type file "$tarball" --base-image "$base" --image nodeimg-bench/node:kind
  cp "$work/rss" "$work/kind.rss"
}
if [[ -n ${KIND:-} && $images_from == registry ]]; then
  echo "note: kind has no registry mirror flag; kind runs only with IMAGES=cache"
  KIND=
fi
times_n=(); times_k=()
for r in $(seq 1 "$rounds"); do
  if [[ -n ${KIND:-} && $((r % 2)) == 0 ]]; then times_k+=("$(run_kind)"); fi
  times_n+=("$(run_nodeimg)")
  if [[ -n ${KIND:-} && $((r % 2)) == 1 ]]; then times_k+=("$(run_kind)"); fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size_mb() { echo "$(docker image inspect -f '{{.Size}}' "$1")/1000000" | bc -l; }
echo "== nodeimg steps (last run)"
grep '✓' "$work/nodeimg.log" | sed 's/^\[[0-9:]*\] ✓ /  /' || true
echo "== results ($tarball_kind tarball, images from the $images_from, $rounds rounds)"
echo "nodeimg runs: ${times_n[*]} s"
n=$(median "${times_n[@]}")
printf 'nodeimg median wall   %8.1f s\n' "$n"
printf 'nodeimg peak RSS      %8.1f MiB\n' "$(echo "$(cat "$work/nodeimg.rss")/1024" | bc -l)"
printf 'nodeimg image size    %8.1f MB\n' "$(size_mb nodeimg-bench/node:nodeimg)"
if [[ -n ${KIND:-} ]]; then
  echo "kind runs: ${times_k[*]} s"
  k=$(median "${times_k[@]}")
  printf 'kind median wall      %8.1f s\n' "$k"
  printf 'kind peak RSS         %8.1f MiB\n' "$(echo "$(cat "$work/kind.rss")/1024" | bc -l)"
  printf 'kind image size       %8.1f MB\n' "$(size_mb nodeimg-bench/node:kind)"
  printf 'nodeimg / kind wall   %8.2f\n' "$(echo "$n / $k" | bc -l)"
  printf 'nodeimg / kind size   %8.2f\n' "$(echo "$(size_mb nodeimg-bench/node:nodeimg) / $(size_mb nodeimg-bench/node:kind)" | bc -l)"
fi
