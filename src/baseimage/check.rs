//! A quick check that an image has what a node needs, run in a throwaway container before
//! the image gets its tag.

use anyhow::{Result, bail};

use crate::docker::{ContainerSpec, Docker};
use crate::progress::Reporter;

/// Commands and files a kind node uses; a missing one fails the check with its name.
const CHECK: &str = r#"
missing=""
for cmd in bash systemctl containerd ctr runc iptables ip6tables ip conntrack socat ethtool \
           mount nsenter ps update-alternatives; do
  command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
for file in /sbin/init /usr/local/bin/entrypoint /usr/local/bin/kubelet-cgroup-root /opt/cni/bin/bridge /opt/cni/bin/host-local \
            /opt/cni/bin/loopback /opt/cni/bin/portmap /etc/containerd/config.toml \
            /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d/10-kubeadm.conf \
            /etc/crictl.yaml; do
  [ -e "$file" ] || missing="$missing $file"
done
[ -d /kind ] || missing="$missing /kind"
[ -z "$missing" ] || { echo "missing:$missing" >&2; exit 1; }
crictl="no crictl"; [ ! -x /usr/local/bin/crictl ] || crictl="crictl installed"
echo "containerd $(containerd --version | cut -d' ' -f3), $(runc --version | head -n1), $crictl"
"#;

pub async fn run(docker: &Docker, image: &str, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("checking the image");
    let id = docker.create_container(&ContainerSpec::idle(image)).await?;
    let outcome = async {
        docker.start_container(&id).await?;
        Ok::<_, anyhow::Error>(docker.exec(&id, &["sh", "-c", CHECK]).await?)
    }
    .await;
    docker.remove_container(&id).await?;
    let out = outcome?;
    if !out.success() {
        bail!("image check failed: {}", out.last_line());
    }
    step.finish(out.stdout.trim());
    Ok(())
}
