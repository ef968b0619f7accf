#!/usr/bin/env bash
# Benchmarks the developer loop into a running cluster: `nodeimg cluster update
# --with-kubelet` on a two-node cluster of IMAGE (kept by `nodeimg verify --keep`), the kubelet
# swapped RUNS times between KUBELET and the image's own, each update timed end to end (all
# nodes Ready with the new kubelet). With KIND=/path/to/kind it also times what kind users do
# instead, `kind delete cluster` + `kind create cluster` with two nodes of the same image.
# Prints the numbers; asserts nothing. Run from the repository root:
#   bench/cluster-update.sh IMAGE KUBELET [RUNS]
set -euo pipefail
image=${1:?usage: bench/cluster-update.sh IMAGE KUBELET [RUNS]}
kubelet=$(realpath "${2:?usage: bench/cluster-update.sh IMAGE KUBELET [RUNS]}")
runs=${3:-3}
cargo build --release --quiet
bin=$PWD/target/release/nodeimg
work=$(mktemp -d /var/tmp/nodeimg-bench-XXXXXX)
cluster=
cleanup() {
  if [[ -n $cluster ]]; then "$bin" -q clean >/dev/null 2>&1 || true; fi
  if [[ -n ${KIND:-} ]]; then "$KIND" delete cluster --name nodeimg-bench >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

echo "== a two-node cluster of $image (nodeimg verify --nodes 2 --keep)"
"$bin" verify "$image" --nodes 2 --keep --cni bridge >"$work/verify.out" 2>"$work/verify.err" || { cat "$work/verify.err"; exit 1; }
cluster=$(grep -o 'kept cluster [^ ]*' "$work/verify.err" | awk '{print $3}')
docker exec "$cluster-control-plane" cat /usr/bin/kubelet > "$work/kubelet.original"
chmod 755 "$work/kubelet.original"

echo "== nodeimg cluster update --with-kubelet, $runs runs"
for i in $(seq 1 "$runs"); do
  for k in "$kubelet" "$work/kubelet.original"; do
    start=$(now)
    "$bin" -q cluster update --name "$cluster" --with-kubelet "$k" >"$work/update.out"
    end=$(now)
    printf 'run %s %-9s %6.1f s  (%s)\n' "$i" "$( [[ $k == "$kubelet" ]] && echo new || echo original)" \
      "$(echo "$end - $start" | bc)" "$(grep -v '^ ' "$work/update.out" | tr '\n' ';')"
  done
done

if [[ -n ${KIND:-} ]]; then
  echo "== kind delete cluster + kind create cluster (2 nodes), $runs runs"
  printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n- role: worker\n' > "$work/kind.yaml"
  "$KIND" create cluster --name nodeimg-bench --image "$image" --config "$work/kind.yaml" --wait 5m >/dev/null 2>&1 \
    || { echo "kind create cluster failed (no --privileged here?): not measured"; exit 0; }
  for i in $(seq 1 "$runs"); do
    start=$(now)
    "$KIND" delete cluster --name nodeimg-bench >/dev/null 2>&1
    "$KIND" create cluster --name nodeimg-bench --image "$image" --config "$work/kind.yaml" --wait 5m >/dev/null 2>&1
    end=$(now)
    printf 'run %s kind delete+create %6.1f s\n' "$i" "$(echo "$end - $start" | bc)"
  done
fi
