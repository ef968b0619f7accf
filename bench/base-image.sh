#!/usr/bin/env bash
# Measures `nodeimg build base-image`: a full debootstrap build and a cached second run,
# with wall time, peak memory of nodeimg (the root filesystem is streamed, never held in
# memory) and the image size. Run as root from the repository root:
#   bench/base-image.sh [extra build flags]
set -euo pipefail
cargo build --release --quiet
bin=target/release/nodeimg
measure() {
  local log
  log=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$log" "$bin" -q build base-image "$@" >/dev/null
  read -r secs kb < "$log"
  rm -f "$log"
  echo "$secs $kb"
}
read -r full_s full_kb < <(measure --rebuild "$@")
read -r cached_s cached_kb < <(measure "$@")
image=$("$bin" -q build base-image "$@")
size=$(docker image inspect --format '{{.Size}}' "$image")
printf 'image            %s\n' "$image"
printf 'size             %d MB\n' $((size / 1000000))
printf 'full build       %6.1f s   peak RSS %6d KiB\n' "$full_s" "$full_kb"
printf 'cached build     %6.1f s   peak RSS %6d KiB\n' "$cached_s" "$cached_kb"
