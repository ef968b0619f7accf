//! A small client of the registry HTTP API v2 for `--push`: reading back what the engine
//! pushed (digest, size, platform) and writing the multi-architecture index, which the
//! engine's API cannot. Uses the docker CLI's credentials; loopback registries are plain
//! HTTP, as the engine treats them.

mod auth;
mod client;
mod error;
mod manifest;
mod push;
mod target;

pub use auth::{Credentials, DockerConfig};
pub use client::Client;
pub use error::Error;
pub use manifest::{ManifestInfo, OCI_INDEX, Platform, digest, index_json};
pub use push::{PushResult, PushedImage, push_all, push_all_with, push_each};
pub use target::{Target, is_insecure};
