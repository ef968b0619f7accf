#!/usr/bin/env bash
# Measures `nodeimg save` and `nodeimg load` (checksum pass included) with each compression
# against `docker save [| gzip]` and `docker load`: wall time, nodeimg's peak RSS (the tar is
# streamed, never held in memory) and the archive size. Run from the repository root:
#   bench/save-load.sh [IMAGE]     (default: the base image `nodeimg build base-image` makes)
# IMAGE is only read: the measurements use a copy with a layer of its own (so each load
# really writes the layer) under nodeimg-bench/saveload-<pid>, removed at the end.
set -euo pipefail
cargo build --release --quiet
bin=$PWD/target/release/nodeimg
src=${1:-$("$bin" -q build base-image)}
img=nodeimg-bench/saveload-$$:v1
dir=$(mktemp -d)
cid=
cleanup() {
  [[ -n "$cid" ]] && docker rm -f "$cid" >/dev/null 2>&1
  docker rmi -f "$img" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

cid=$(docker create "$src" /bin/true)
docker export "$cid" | docker import --change 'LABEL io.nodeimg.bench=save-load' - "$img" >/dev/null
docker rm "$cid" >/dev/null
cid=
id=$(docker image inspect --format '{{.Id}}' "$img")

# "seconds peak-RSS-KiB" of one command (no shell, so the RSS is the command's own).
measure() {
  /usr/bin/time -f '%e %M' -o "$dir/time" "$@" >/dev/null 2>"$dir/stderr" || {
    cat "$dir/stderr" >&2
    return 1
  }
  cat "$dir/time"
}
# Seconds of a shell pipeline.
measure_sh() {
  local start end
  start=$(date +%s.%N)
  bash -c "$1" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
same_id() {
  [[ $(docker image inspect --format '{{.Id}}' "$img") == "$id" ]] || {
    echo "image ID changed after $1" >&2
    exit 1
  }
}
mb() { echo $(($(stat -c %s "$1") / 1000000)); }

printf 'image %s (a copy of %s), %d MB\n\n' "$img" "$src" \
  $(($(docker image inspect --format '{{.Size}}' "$img") / 1000000))
printf '%-28s %8s %10s %10s %8s %10s\n' "" "save s" "save RSS" "archive" "load s" "load RSS"
for ext in tar tar.gz tar.zst; do
  read -r save_s save_kb < <(measure "$bin" -q save "$img" -o "$dir/img.$ext")
  docker rmi "$img" >/dev/null
  read -r load_s load_kb < <(measure "$bin" -q load --input "$dir/img.$ext")
  same_id "nodeimg load of .$ext"
  printf '%-28s %8.1f %7d KiB %7d MB %8.1f %7d KiB\n' "nodeimg .$ext" "$save_s" "$save_kb" \
    "$(mb "$dir/img.$ext")" "$load_s" "$load_kb"
  rm -f "$dir/img.$ext"*
done
for ext in tar tar.gz; do
  case $ext in
  tar) save="docker save $img -o $dir/docker.tar" label="docker save / load" ;;
  tar.gz) save="docker save $img | gzip > $dir/docker.tar.gz" label="docker save | gzip / load" ;;
  esac
  save_s=$(measure_sh "$save")
  docker rmi "$img" >/dev/null
  load_s=$(measure_sh "docker load -q -i $dir/docker.$ext")
  same_id "docker load of .$ext"
  printf '%-28s %8.1f %10s %7d MB %8.1f %10s\n' "$label" "$save_s" "-" "$(mb "$dir/docker.$ext")" "$load_s" "-"
  rm -f "$dir/docker.$ext"
done
