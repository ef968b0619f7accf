#!/bin/sh
# Finishes the base image after the packages and files/ are in place. Runs as root inside
# the image's filesystem: under chroot for debootstrap builds, as a RUN step in the Dockerfile.
set -eu

# A node boots systemd inside a container: drop units that expect real hardware, a console
# or udev, as kind's base image does, then enable only what a node needs.
rm -f /lib/systemd/system/multi-user.target.wants/* \
      /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* \
      /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* \
      /lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup* \
      /lib/systemd/system/basic.target.wants/*
systemctl mask --quiet \
  systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
  systemd-remount-fs.service systemd-firstboot.service getty@.service \
  serial-getty@.service console-getty.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount
systemctl set-default --quiet multi-user.target
systemctl enable --quiet containerd.service kubelet.service
[ -e /sbin/init ] || ln -s /lib/systemd/systemd /sbin/init

# kind and CNI plugins (kindnetd) look in /opt/cni/bin; Debian installs to /usr/lib/cni.
mkdir -p /kind /opt/cni/bin /etc/cni/net.d /var/lib/kubelet /etc/kubernetes/manifests
for plugin in /usr/lib/cni/*; do ln -sf "$plugin" /opt/cni/bin/; done

# The entrypoint picks legacy or nft at boot; start from a definite choice.
for t in iptables ip6tables; do
  update-alternatives --quiet --set "$t" "/usr/sbin/$t-legacy" 2>/dev/null || true
done

# Every node must get its own machine-id at first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# Nothing downloaded belongs in the image.
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
       /var/log/apt/* /var/log/dpkg.log /var/log/bootstrap.log /var/log/alternatives.log /tmp/*

# What a node never reads: documentation, manual pages and translations, as in Debian's slim
# images (dpkg keeps them out of later installs too). Copyright files stay, as Debian's
# licenses ask.
cat > /etc/dpkg/dpkg.cfg.d/nodeimg-slim <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
SLIM
find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
find /usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/*
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
