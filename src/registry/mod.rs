//! The registry side of `--push` (see `publish`): reading back what the engine pushed
//! (digest, size, platform) and writing the multi-architecture index, which the engine's
//! API cannot; and artifacts that refer to a pushed image (the SBOM).
//! The protocol (token flow, manifests, indexes) is `oci-client`'s, the credentials are the
//! docker CLI's through `docker_credential`; loopback registries are plain HTTP, as the
//! engine treats them.

mod auth;
mod client;
mod error;
mod manifest;
mod referrers;

pub use auth::DockerConfig;
pub use client::{Client, is_insecure};
pub use error::Error;
pub use manifest::{ManifestInfo, OCI_INDEX, Platform, digest, index_json};
pub use referrers::{Attached, Listed, Referrer};
