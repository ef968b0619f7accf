#!/usr/bin/env bash
# Times `nodeimg verify` on a node image that really runs Kubernetes: each stage (boot,
# kubeadm init, API ready, node Ready, pod Running) over RUNS runs, and nodeimg's peak RSS.
# Run as root from the repository root:
#   bench/verify.sh IMAGE [RUNS] [CNI]
# A suitable IMAGE on this machine: the one the real-Kubernetes test builds, e.g.
#   nodeimg build node-image --kube-root /var/tmp/nodeimg-kubernetes-v1.20.2/tree \
#     --build-mode host --component-base-image nodeimg/base:<hash> -i bench/node:v1.20.2
set -euo pipefail
image=${1:?usage: bench/verify.sh IMAGE [RUNS] [CNI]}
runs=${2:-3}
cni=${3:-bridge}
cargo build --release --quiet
bin=$PWD/target/release/nodeimg
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f '%M' -o "$out/rss-$i" "$bin" -q verify "$image" --cni "$cni" --output json > "$out/run-$i.json"
done
python3 - "$out" "$runs" <<'PY'
import json, sys, statistics
out, runs = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(f"{out}/run-{i}.json")) for i in range(1, runs + 1)]
rss = [int(open(f"{out}/rss-{i}").read().split()[-1]) for i in range(1, runs + 1)]
names = [s["name"] for s in reports[0]["stages"]]
print(f"nodeimg verify {reports[0]['image']} (Kubernetes {reports[0]['kubernetes_version']}, "
      f"{reports[0]['privilege']}, CNI {reports[0]['cni']}), {runs} runs, all passed: "
      f"{all(r['passed'] for r in reports)}")
print(f"{'stage':<14}{'min':>8}{'median':>8}{'max':>8}  (seconds)")
for n in names + ["total"]:
    xs = [r["total_seconds"] if n == "total" else next(s["seconds"] for s in r["stages"] if s["name"] == n)
          for r in reports]
    print(f"{n:<14}{min(xs):>8.1f}{statistics.median(xs):>8.1f}{max(xs):>8.1f}")
print(f"nodeimg peak RSS: {max(rss) / 1024:.1f} MB")
PY
