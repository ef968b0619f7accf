#!/usr/bin/env bash
# Measures `nodeimg build base-image`: a full debootstrap build and a cached second run,
# with wall time, peak memory of nodeimg (the root filesystem is streamed, never held in
# memory) and the image size. Run as root from the repository root:
#   bench/base-image.sh [extra build flags]
set -euo pipefail
cargo build --release --quiet
bin=target/release/nodeimg
# Wall time, and nodeimg's own peak RSS (VmHWM, sampled until it exits). /usr/bin/time
# would report the largest of nodeimg and its waited-for children (dpkg under debootstrap).
measure() {
  local start end pid hwm=0 h
  start=$(date +%s.%N)
  "$bin" -q build base-image "$@" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n "$h" ]] && ((h > hwm)) && hwm=$h
    sleep 0.2
  done
  wait "$pid"
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $hwm"
}
read -r full_s full_kb < <(measure --rebuild "$@")
read -r cached_s cached_kb < <(measure "$@")
image=$("$bin" -q build base-image "$@")
size=$(docker image inspect --format '{{.Size}}' "$image")
printf 'image            %s\n' "$image"
printf 'size             %d MB\n' $((size / 1000000))
printf 'full build       %6.1f s   peak RSS %6d KiB\n' "$full_s" "$full_kb"
printf 'cached build     %6.1f s   peak RSS %6d KiB\n' "$cached_s" "$cached_kb"
