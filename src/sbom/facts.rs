//! What the SBOM reads from the node image itself, in one container of it that is never
//! booted: the installed Debian packages as dpkg-query prints them (dpkg's own reader of its
//! database, so no parser of ours), the sha256 of the Kubernetes binaries, and crictl's
//! version and sha256 from the base image's labels.

use anyhow::{Context, Result, bail};

use crate::docker::{ContainerGuard, ContainerSpec, Docker};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub packages: Vec<Deb>,
    /// `(kubeadm|kubelet|kubectl, sha256 hex)`.
    pub binaries: Vec<(String, String)>,
    /// `(version, the release tarball's sha256)`, when the base has crictl from upstream.
    pub crictl: Option<(String, Option<String>)>,
}

const DPKG: &str = "dpkg-query -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'";

pub async fn read(docker: &Docker, image_id: &str) -> Result<Facts> {
    let info = docker.inspect_image(image_id).await?.with_context(|| format!("{image_id} is gone"))?;
    let container =
        ContainerGuard::new(docker, docker.create_container(&ContainerSpec::idle(image_id)).await?);
    let id = container.id().to_owned();
    docker.start_container(&id).await?;
    let run = |script: &'static str| {
        let id = id.clone();
        async move {
            let out = docker.exec(&id, &["sh", "-c", script]).await?;
            if !out.success() {
                bail!("`{script}` in the node image: {}", out.last_line());
            }
            Ok(out.stdout)
        }
    };
    let packages = parse_dpkg(&run(DPKG).await?);
    let sums = run("sha256sum /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl").await?;
    container.remove().await?;
    let binaries = sums
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, path)| (path.trim_start_matches("/usr/bin/").to_owned(), sum.to_owned()))
        .collect();
    let label = |key: &str| info.labels.get(key).filter(|v| !v.is_empty()).cloned();
    let crictl = label(crate::baseimage::crictl::LABEL_VERSION)
        .map(|v| (v, label(crate::baseimage::crictl::LABEL_SHA256)));
    Ok(Facts { packages, binaries, crictl })
}

/// The installed (`ii`) packages of dpkg-query's lines, sorted by name.
fn parse_dpkg(listing: &str) -> Vec<Deb> {
    let mut packages: Vec<Deb> = listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let status = fields.next()?;
            let (name, version, arch) = (fields.next()?, fields.next()?, fields.next()?);
            status.starts_with("ii").then(|| Deb {
                name: name.into(),
                version: version.into(),
                arch: arch.into(),
            })
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_are_listed() {
        let listing = "ii \tsystemd\t252.39-1~deb12u1\tamd64\nrc \told\t1.0\tamd64\nii \tbase-files\t12.4+deb12u11\tamd64\n";
        let packages = parse_dpkg(listing);
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "systemd"]);
        assert_eq!(packages[1].version, "252.39-1~deb12u1");
    }
}
