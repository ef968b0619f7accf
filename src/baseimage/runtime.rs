//! Runtime lines of the base image (containerd, runc, CNI plugins), which Kubernetes versions
//! each serves, and the labels that record what a base image holds.

use std::collections::HashMap;
use std::fmt;

use crate::kube::KubeVersion;

pub const LABEL_SUITE: &str = "io.nodeimg.base.suite";
pub const LABEL_RUNTIME: &str = "io.nodeimg.runtime";
pub const LABEL_CONTAINERD: &str = "io.nodeimg.containerd.version";
pub const LABEL_RUNC: &str = "io.nodeimg.runc.version";
pub const LABEL_CNI: &str = "io.nodeimg.cni-plugins.version";
pub const LABEL_CRI: &str = "io.nodeimg.cri.versions";

/// The Debian packages whose installed versions become labels, with their label.
pub const LABELLED_PACKAGES: [(&str, &str); 3] =
    [("containerd", LABEL_CONTAINERD), ("runc", LABEL_RUNC), ("containernetworking-plugins", LABEL_CNI)];

/// What the node reports as its OS (`PRETTY_NAME` of /etc/os-release): with the 1.7 and 2
/// lines, trixie's base-files comes with its glibc, so a bookworm root filesystem says
/// "Debian GNU/Linux 13 (trixie)"; the label says what the node says, beside the suite.
pub const LABEL_OS_RELEASE: &str = "io.nodeimg.base.os-release";

/// The shell command, run in the image's filesystem, whose output [`labels_from_dpkg`] reads:
/// `Package Version` of the labelled packages, then `os-release PRETTY_NAME`.
pub fn installed_script() -> String {
    let packages = LABELLED_PACKAGES.map(|(p, _)| p).join(" ");
    format!(
        "dpkg-query -W -f '${{Package}} ${{Version}}\\n' {packages} && \
         . /etc/os-release && echo \"os-release $PRETTY_NAME\""
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeLine {
    /// Debian bookworm's own containerd 1.6 (end of life): kept for reproducing old images.
    V1_6,
    /// containerd 1.7: CRI v1 and v1alpha2.
    V1_7,
    /// containerd 2: CRI v1 only.
    V2,
}

impl RuntimeLine {
    pub const DEFAULT: RuntimeLine = RuntimeLine::V1_7;

    pub fn name(self) -> &'static str {
        match self {
            RuntimeLine::V1_6 => "1.6",
            RuntimeLine::V1_7 => "1.7",
            RuntimeLine::V2 => "2",
        }
    }

    /// The newest line for a Kubernetes version: containerd 2 from 1.30 (its CRI v1 is what
    /// those kubelets test against), containerd 1.7 below (1.25 and older need v1alpha2).
    pub fn for_kubernetes(version: &KubeVersion) -> RuntimeLine {
        if version.at_least(1, 30) { RuntimeLine::V2 } else { RuntimeLine::V1_7 }
    }

    /// `package=version` of the line from `base-image/runtimes`, with the suite of each;
    /// empty for a line that keeps the base suite's packages.
    pub fn pins(self, runtimes: &str) -> Vec<Pin> {
        runtimes
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                (words.next()? == self.name()).then(|| {
                    let suite = words.next().unwrap_or_default().to_owned();
                    words
                        .filter_map(|w| w.split_once('='))
                        .map(|(p, v)| Pin { suite: suite.clone(), package: p.into(), version: v.into() })
                        .collect::<Vec<_>>()
                })
            })
            .flatten()
            .collect()
    }
}

impl fmt::Display for RuntimeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub suite: String,
    pub package: String,
    pub version: String,
}

/// A containerd version as a base image records it: Debian's (`2.1.9~ds1-5`) or upstream's
/// (`v2.1.9`, `1.7.24`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl ContainerdVersion {
    pub fn parse(text: &str) -> Option<Self> {
        let bare = text.trim().trim_start_matches('v');
        let end = bare.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(bare.len());
        let mut parts = bare[..end].split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self { major, minor, patch })
    }

    /// From `containerd --version`: `containerd github.com/containerd/containerd/v2 2.1.9~ds1 2.1.9~ds1-5`.
    pub fn from_version_output(output: &str) -> Option<Self> {
        output.split_whitespace().skip(1).find_map(Self::parse)
    }

    /// The CRI API versions it serves: containerd 2.0 removed v1alpha2.
    pub fn cri_versions(&self) -> &'static str {
        if self.major >= 2 { "v1" } else { "v1,v1alpha2" }
    }

    /// The line it belongs to (1.6 and older count as 1.6).
    pub fn line(&self) -> RuntimeLine {
        match (self.major, self.minor) {
            (0..=1, 0..=6) => RuntimeLine::V1_6,
            (1, _) => RuntimeLine::V1_7,
            _ => RuntimeLine::V2,
        }
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The runtime labels from `dpkg-query -W -f '${Package} ${Version}\n'` output.
pub fn labels_from_dpkg(suite: &str, line: RuntimeLine, dpkg: &str) -> Vec<(&'static str, String)> {
    let installed: HashMap<&str, &str> = dpkg.lines().filter_map(|l| l.trim().split_once(' ')).collect();
    let mut labels = vec![(LABEL_SUITE, suite.to_owned()), (LABEL_RUNTIME, line.name().to_owned())];
    for (package, label) in LABELLED_PACKAGES {
        if let Some(version) = installed.get(package) {
            labels.push((label, (*version).to_owned()));
        }
    }
    if let Some(v) = installed.get("containerd").and_then(|v| ContainerdVersion::parse(v)) {
        labels.push((LABEL_CRI, v.cri_versions().to_owned()));
    }
    if let Some(name) = installed.get("os-release") {
        labels.push((LABEL_OS_RELEASE, (*name).to_owned()));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube(v: &str) -> KubeVersion {
        KubeVersion::parse(v).unwrap()
    }

    #[test]
    fn kubernetes_version_picks_the_newest_line_that_serves_it() {
        assert_eq!(RuntimeLine::for_kubernetes(&kube("v1.20.2")), RuntimeLine::V1_7);
        assert_eq!(RuntimeLine::for_kubernetes(&kube("v1.29.9")), RuntimeLine::V1_7);
        assert_eq!(RuntimeLine::for_kubernetes(&kube("v1.30.0")), RuntimeLine::V2);
        assert_eq!(RuntimeLine::for_kubernetes(&kube("v1.37.0-alpha.1")), RuntimeLine::V2);
    }

    #[test]
    fn pins_come_from_the_runtimes_file() {
        let file = std::str::from_utf8(super::super::assets::get("runtimes").contents).unwrap();
        let two = RuntimeLine::V2.pins(file);
        let find = |p: &str| two.iter().find(|pin| pin.package == p).cloned();
        assert_eq!(
            find("containerd").map(|p| (p.suite, p.version)),
            Some(("sid".into(), "2.1.9+ds1-5".into()))
        );
        assert_eq!(find("runc").map(|p| p.version), Some("1.3.6+ds1-1".into()));
        assert!(find("libc6").is_some_and(|p| p.suite == "trixie"));
        let seven = RuntimeLine::V1_7.pins(file);
        assert!(seven.iter().any(|p| p.package == "containerd" && p.version.starts_with("1.7.24")));
        assert!(RuntimeLine::V1_6.pins(file).is_empty(), "1.6 keeps bookworm's packages");
        assert!(RuntimeLine::V2.pins("2 sid a=1 # b=2\n20 sid c=3").iter().map(|p| &p.package).eq(["a"]));
    }

    #[test]
    fn containerd_versions_parse_from_debian_upstream_and_the_binary() {
        let v = ContainerdVersion::parse("2.1.9~ds1-5").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (2, 1, 9));
        assert_eq!(v.to_string(), "2.1.9");
        assert_eq!(ContainerdVersion::parse("v1.7.24").unwrap().line(), RuntimeLine::V1_7);
        assert_eq!(ContainerdVersion::parse("1.6.20~ds1-1+deb12u3").unwrap().line(), RuntimeLine::V1_6);
        assert_eq!(ContainerdVersion::parse("garbage"), None);
        let out = "containerd github.com/containerd/containerd/v2 2.1.9~ds1 2.1.9~ds1-5\n";
        assert_eq!(ContainerdVersion::from_version_output(out), ContainerdVersion::parse("2.1.9"));
        let upstream = "containerd containerd.io v1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182";
        assert_eq!(ContainerdVersion::from_version_output(upstream).unwrap().to_string(), "1.7.24");
    }

    #[test]
    fn labels_read_the_installed_versions() {
        let dpkg = "containerd 2.1.9~ds1-5\nrunc 1.3.6+ds1-1\ncontainernetworking-plugins 1.9.1+ds1-1\n\
                    os-release Debian GNU/Linux 13 (trixie)\n";
        let labels = labels_from_dpkg("bookworm", RuntimeLine::V2, dpkg);
        for expected in [
            (LABEL_SUITE, "bookworm"),
            (LABEL_RUNTIME, "2"),
            (LABEL_CONTAINERD, "2.1.9~ds1-5"),
            (LABEL_RUNC, "1.3.6+ds1-1"),
            (LABEL_CNI, "1.9.1+ds1-1"),
            (LABEL_CRI, "v1"),
            (LABEL_OS_RELEASE, "Debian GNU/Linux 13 (trixie)"),
        ] {
            assert!(labels.contains(&(expected.0, expected.1.to_owned())), "{expected:?} in {labels:?}");
        }
        let old = labels_from_dpkg("bookworm", RuntimeLine::V1_6, "containerd 1.6.20~ds1-1+deb12u3\n");
        assert!(old.contains(&(LABEL_CRI, "v1,v1alpha2".to_owned())));
    }
}
