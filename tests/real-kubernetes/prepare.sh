#!/usr/bin/env bash
# Prepares Debian's complete upstream Kubernetes v1.20.2 tree (source package `kubernetes`)
# as a git repository tagged v1.20.2, buildable offline with Debian's Go 1.19:
# the vendored modern-go/reflect2 v1.0.1 crashes under Go >= 1.18, so this copy gets
# Debian's 1.0.2 instead (see ../shared/ENVIRONMENT.md). Idempotent. Run as root:
#   tests/real-kubernetes/prepare.sh DIR
set -euo pipefail
dir=${1:?usage: prepare.sh DIR}
tree=$dir/tree
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$dir"
# etcd for the control plane: Debian's etcd-server (3.4.23; kubeadm 1.20 asks for 3.4.13).
if [[ ! -x $dir/etcd/usr/bin/etcd ]]; then
  (cd "$dir" && rm -f etcd-server_*.deb && apt-get download -qq etcd-server 2>/dev/null && dpkg -x etcd-server_*.deb etcd)
fi
if [[ -f $dir/.prepared ]]; then
  # pause from the tree itself, as upstream builds it (static, no libc needed).
  [[ -x $dir/pause/pause ]] || { mkdir -p "$dir/pause" && gcc -static -O2 -o "$dir/pause/pause" "$tree/build/pause/linux/pause.c"; }
  echo "$tree"; exit 0
fi
if ! ls /etc/apt/sources.list.d/*.sources 2>/dev/null | xargs grep -qs '^Types: deb-src'; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/nodeimg-deb-src.sources
fi
apt-get update -qq
apt-get install -y -qq golang-go golang-github-modern-go-reflect2-dev rsync git >/dev/null
mkdir -p "$dir"
cd "$dir"
ls kubernetes_*.orig.tar.gz >/dev/null 2>&1 || apt-get source --download-only kubernetes >/dev/null
rm -rf "$tree"; mkdir -p "$tree"
tar xzf kubernetes_*.orig.tar.gz -C "$tree" --strip-components=1
vendored=$tree/vendor/github.com/modern-go/reflect2
fixed=/usr/share/gocode/src/github.com/modern-go/reflect2
rm -f "$vendored"/*.go "$vendored"/*.s
cp "$fixed"/*.go "$fixed"/*.s "$vendored"/
rm -f "$vendored"/*_test.go
cd "$tree"
git init -q
git -c user.name=nodeimg -c user.email=nodeimg@localhost add -A
git -c user.name=nodeimg -c user.email=nodeimg@localhost commit -qm "Kubernetes v1.20.2 (Debian orig tarball, reflect2 1.0.2)"
git tag v1.20.2
mkdir -p "$dir/pause" && gcc -static -O2 -o "$dir/pause/pause" "$tree/build/pause/linux/pause.c"
# The marker lives outside the tree: an untracked file would make the version "-dirty".
touch "$dir/.prepared"
echo "$tree"
