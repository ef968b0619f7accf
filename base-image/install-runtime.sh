#!/bin/sh
# Installs the pinned packages of one runtime line (base-image/runtimes) on top of the base
# suite: sources for the suites it names are added at priority 1 (nothing else follows
# them), the exact versions installed, and the sources removed again.
# Usage: install-runtime.sh LINE MIRROR RUNTIMES_FILE. Runs as root in the image's
# filesystem (chroot for debootstrap builds, a RUN step in the Dockerfile).
set -eu
line="$1" mirror="$2" runtimes="$3"

packages=$(awk -v l="$line" '$1 == l { for (i = 3; i <= NF; i++) print $i }' "$runtimes")
suites=$(awk -v l="$line" '$1 == l { print $2 }' "$runtimes" | sort -u)
[ -n "$packages" ] || { echo "runtime $line: the base suite's own packages"; exit 0; }

list=/etc/apt/sources.list.d/nodeimg-runtime.list
prefs=/etc/apt/preferences.d/nodeimg-runtime
trap 'rm -f "$list" "$prefs"' EXIT
: > "$list"
: > "$prefs"
for suite in $suites; do
  # A moving suite's Release (sid's) on a snapshot mirror outlives its Valid-Until; the
  # signature is still checked, and the exact versions below pin the content.
  echo "deb [check-valid-until=no] $mirror $suite main" >> "$list"
  printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n\n' "$suite" >> "$prefs"
done
apt-get update -q
# shellcheck disable=SC2086 # one word per package=version
apt-get install -y -q --no-install-recommends $packages
rm -rf /var/lib/apt/lists/*
