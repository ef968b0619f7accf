//! nodeimg: builds node images for kind. `main.rs` is a thin shell over [`run`].
//!
//! The module map, in layers from the top: a module uses only modules of lower layers
//! (`scripts/module-graph.py` reads this list and fails CI on an arrow that points sideways or
//! up). `cli` is clap only and uses nothing of the crate; `config` turns its structs into the
//! pipelines' validated configs before anything touches Docker.
//!
//! 1. `commands` — one file per subcommand: validate, run under the sweep, print the result
//! 2. `config` — clap structs → validated configs
//! 3. `cli`, `variant`, `cluster`, `diff` — the command line (clap only); node-image variants; `cluster update` into a running kind cluster; what differs between two node images
//! 4. `nodeimage`, `sbom` — the node-image pipeline; the SPDX document of what a node image holds
//! 5. `baseimage`, `verify` — the base-image pipeline; booting a node image as kind does
//! 6. `kube`, `transfer`, `publish` — getting Kubernetes (release, tree, build); save and load; `--push` by the engine plus the index
//! 7. `sweep`, `registry` — the command-level cleanup on Ctrl-C/SIGTERM; the registry client
//! 8. `node` — what runs inside a node container (containerd config, files, cgroups)
//! 9. `docker`, `archive`, `blocking` — the one Docker wrapper; tar and image archives; blocking work
//! 10. `reference`, `elf`, `platform`, `part_file`, `process`, `progress`, `error`, `templates`, `provenance` — image references, the architecture of a binary, architectures, files renamed into place, child processes, progress output, error lines, templates, the build report's shape

#![warn(clippy::unwrap_used, clippy::dbg_macro, clippy::todo, clippy::unimplemented)]

pub mod archive;
pub mod baseimage;
pub mod blocking;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod diff;
pub mod docker;
pub mod elf;
pub mod error;
pub mod kube;
pub mod node;
pub mod nodeimage;
pub mod part_file;
pub mod platform;
pub mod process;
pub mod progress;
pub mod provenance;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod sbom;
pub mod sweep;
pub mod templates;
pub mod transfer;
pub mod variant;
pub mod verify;

pub use commands::run;
pub use error::{exit_code, one_line};
