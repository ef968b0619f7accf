#!/usr/bin/env bash
# Prepares a fresh Debian machine for nodeimg: the packages it and its tests use, and a
# Docker engine that answers. Safe to run again; does nothing that is already done.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
  echo "setup.sh: run as root (it installs packages and may start dockerd)" >&2
  exit 1
fi

# debootstrap: the registry-free base image; libssl-dev, pkg-config: git2 (https clones);
# busybox-static and docker-registry: test
# fixtures (tiny images, a registry on loopback); iptables etc. for dockerd; podman: the
# tests that build through Podman's Docker-compatible API (tests/podman.rs);
# qemu-user-static, binfmt-support: builds for another architecture (tests/multiarch.rs);
# openssl and git (its http-backend): the HTTPS git server of tests/https_clone.rs.
packages=(debootstrap busybox-static docker-registry ca-certificates git bc libssl-dev pkg-config podman
  qemu-user-static binfmt-support openssl)
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Another architecture's programs run through qemu's binfmt_misc handlers; their F flag
# (qemu-user-static's) lets containers use them. Mounted and enabled here when the init
# system has not done it (containers, CI machines without systemd).
binfmt=/proc/sys/fs/binfmt_misc
if [[ ! -e $binfmt/status ]]; then
  echo "setup.sh: mounting binfmt_misc at $binfmt"
  mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [[ ! -e $binfmt/qemu-aarch64 ]] || ! head -n1 "$binfmt/qemu-aarch64" | grep -qx enabled; then
  echo "setup.sh: enabling the qemu binfmt_misc handlers"
  update-binfmts --enable
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup.sh: no Docker daemon answers; starting dockerd (log: /var/log/nodeimg-dockerd.log)"
  (setsid dockerd >/var/log/nodeimg-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup.sh: dockerd did not come up; see /var/log/nodeimg-dockerd.log" >&2; exit 1; }
fi

# The SPDX validator the SBOM test runs (tests/sbom.rs): PyPI's spdx-tools, pinned.
if ! command -v pyspdxtools >/dev/null 2>&1; then
  echo "setup.sh: installing spdx-tools (pyspdxtools) from PyPI"
  python3 -m pip install -q --root-user-action=ignore spdx-tools==0.8.5
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup.sh: cargo not found: install a Rust toolchain (rustup, Rust >= 1.85)" >&2
  exit 1
fi
echo "setup.sh: ready (docker $(docker version --format '{{.Server.Version}}'), $(cargo --version))"
