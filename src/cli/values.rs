//! The closed sets of values some flags take. Defined here so clap stays in `cli`; `config`
//! turns each into the pipeline's own type.

use clap::ValueEnum;

/// What SOURCE is (`--type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceType {
    /// A local kubernetes-server-linux-<arch>.tar.gz, or an extracted kubernetes/ directory.
    File,
    /// An http(s) URL of such a tarball.
    Url,
    /// A release version such as v1.30.0, fetched from the release base URL.
    Release,
    /// A CI marker such as ci/latest or ci/latest-1.36.
    Ci,
    /// A Kubernetes source tree, built with upstream's build.
    Source,
}

/// How a source tree is built (`--build-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BuildMode {
    /// Upstream's dockerized build (`make quick-release-images`), as kind does.
    #[default]
    Docker,
    /// The host's Go (`make all`), offline; nodeimg makes the control-plane images.
    Host,
}

/// The pod network of a check (`--cni`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cni {
    /// The image's default CNI if all its images are in the node, else bridge.
    Auto,
    /// `/kind/manifests/default-cni.yaml`, applied like kind does.
    Default,
    /// A bridge + host-local conflist, no pods needed.
    Bridge,
}
