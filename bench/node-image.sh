#!/usr/bin/env bash
# Benchmarks `nodeimg build node-image` against a plain shell script doing the same steps with
# the docker CLI, on one fixture: an extracted release whose four image tars hold MB_PER_IMAGE
# of random data each (default 130, so 520 MB). Prints total and per-step times, nodeimg's
# peak RSS, and how much larger the node image is than the base image plus what was put in.
# Run as root from the repository root, after `nodeimg build base-image`:
#   bench/node-image.sh [MB_PER_IMAGE]
set -euo pipefail
mb=${1:-130}
version=v1.30.0
cargo build --release --quiet
bin=$PWD/target/release/nodeimg
base=$("$bin" -q build base-image)
work=$(mktemp -d /var/tmp/nodeimg-bench-XXXXXX)
trap 'rm -rf "$work"; docker rm -f nodeimg-bench-shell >/dev/null 2>&1 || true; docker rmi -f nodeimg-bench/node:nodeimg nodeimg-bench/node:shell >/dev/null 2>&1 || true' EXIT

echo "== fixture: 4 image tars of ${mb} MB random data each, in $work"
rel=$work/kubernetes
mkdir -p "$rel/server/bin" "$work/rootfs/bin"
echo "$version" > "$rel/version"
cp /bin/busybox "$work/rootfs/bin/busybox"; ln -s busybox "$work/rootfs/bin/sh"
cat > "$rel/server/bin/kubeadm" <<SCRIPT
#!/bin/sh
cat <<LIST
registry.k8s.io/kube-apiserver:$version
registry.k8s.io/kube-controller-manager:$version
registry.k8s.io/kube-scheduler:$version
registry.k8s.io/kube-proxy:$version
registry.k8s.io/pause:3.9
registry.k8s.io/etcd:3.5.12-0
registry.k8s.io/coredns/coredns:v1.11.1
LIST
SCRIPT
printf '#!/bin/sh\necho Kubernetes %s\n' "$version" > "$rel/server/bin/kubelet"
cp "$rel/server/bin/kubelet" "$rel/server/bin/kubectl"
chmod 755 "$rel/server/bin/"*
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  head -c "${mb}M" /dev/urandom > "$work/rootfs/payload"
  tar -C "$work/rootfs" -c . | docker import - "registry.k8s.io/$c-amd64:$version" >/dev/null
  docker save -o "$rel/server/bin/$c.tar" "registry.k8s.io/$c-amd64:$version"
  docker rmi -f "registry.k8s.io/$c-amd64:$version" >/dev/null
done
rm -f "$work/rootfs/payload"
required=(registry.k8s.io/pause:3.9 registry.k8s.io/etcd:3.5.12-0 registry.k8s.io/coredns/coredns:v1.11.1
  kindest/kindnetd:v20240513-cd2ac642 kindest/local-path-provisioner:v20240513-b9bba138 kindest/local-path-helper:v20230510-486859a6)
for img in "${required[@]}"; do
  docker image inspect "$img" >/dev/null 2>&1 || tar -C "$work/rootfs" -c . | docker import - "$img" >/dev/null
done
put_in=0
for f in "$rel"/server/bin/*; do put_in=$((put_in + $(stat -c %s "$f"))); done
for img in "${required[@]}"; do put_in=$((put_in + $(docker image inspect -f '{{.Size}}' "$img"))); done

run_nodeimg() {
  docker rmi -f nodeimg-bench/node:nodeimg >/dev/null 2>&1 || true
  local start pid h hwm=0
  start=$(date +%s.%N)
  "$bin" build node-image "$rel" -b "$base" -i nodeimg-bench/node:nodeimg 2>"$work/nodeimg.log" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n "$h" ]] && ((h > hwm)) && hwm=$h
    sleep 0.1
  done
  wait "$pid"
  # Runs in a subshell ($(...)): keep the peak in a file.
  if ((hwm > $(cat "$work/hwm" 2>/dev/null || echo 0))); then echo "$hwm" > "$work/hwm"; fi
  echo "$(date +%s.%N) - $start" | bc
}

run_shell() {
  docker rmi -f nodeimg-bench/node:shell >/dev/null 2>&1 || true
  local start cid img c b
  start=$(date +%s.%N)
  cid=$(docker run -d --name nodeimg-bench-shell --security-opt seccomp=unconfined --entrypoint sleep "$base" infinity)
  for b in kubeadm kubelet kubectl; do docker cp "$rel/server/bin/$b" "$cid:/usr/bin/$b"; done
  docker exec "$cid" mkdir -p /kind
  echo "$version" | docker exec -i "$cid" sh -c 'cat > /kind/version'
  docker exec "$cid" sh -c 'containerd >/dev/null 2>&1 &'
  until docker exec "$cid" ctr version >/dev/null 2>&1; do sleep 0.2; done
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    docker exec -i "$cid" "${import[@]}" < "$rel/server/bin/$c.tar" >/dev/null
  done
  for img in "${required[@]}"; do docker save "$img" | docker exec -i "$cid" "${import[@]}" >/dev/null; done
  docker exec "$cid" sh -c 'pkill containerd; sleep 1'
  docker commit "$cid" nodeimg-bench/node:shell >/dev/null
  docker rm -f "$cid" >/dev/null
  echo "$(date +%s.%N) - $start" | bc
}

# Two rounds in alternating order, so neither side always runs on a warmer page cache;
# each side's best time is compared.
import=(ctr -n k8s.io images import --all-platforms --no-unpack --digests -)
times_n=(); times_s=()
times_n+=("$(run_nodeimg)"); times_s+=("$(run_shell)")
times_s+=("$(run_shell)"); times_n+=("$(run_nodeimg)")
echo "== nodeimg steps (last run)"
grep '✓' "$work/nodeimg.log" | sed 's/^\[[0-9:]*\] ✓ /  /'
echo "== runs: nodeimg ${times_n[*]} s; shell ${times_s[*]} s"
nodeimg_s=$(printf '%s\n' "${times_n[@]}" | sort -n | head -1)
shell_s=$(printf '%s\n' "${times_s[@]}" | sort -n | head -1)
base_size=$(docker image inspect -f '{{.Size}}' "$base")
node_size=$(docker image inspect -f '{{.Size}}' nodeimg-bench/node:nodeimg)
added=$((node_size - base_size))
echo "== results"
printf 'artifacts put in      %8.1f MB (binaries, 4 image tars, %d required images)\n' "$(echo "$put_in/1000000" | bc -l)" "${#required[@]}"
printf 'nodeimg best          %8.1f s\n' "$nodeimg_s"
printf 'shell baseline best   %8.1f s\n' "$shell_s"
printf 'nodeimg / baseline    %8.2f\n' "$(echo "$nodeimg_s / $shell_s" | bc -l)"
printf 'nodeimg peak RSS      %8d KiB\n' "$(cat "$work/hwm")"
printf 'node image - base     %8.1f MB (%.2f%% over what was put in)\n' "$(echo "$added/1000000" | bc -l)" "$(echo "($added - $put_in) * 100 / $put_in" | bc -l)"
