//! nodeimg: builds node images for kind. `main.rs` is a thin shell over [`run`].
//!
//! Arrows point one way: `cli` (clap only) → `config` (validated configs) → `commands` (one
//! per subcommand) → pipelines (`nodeimage`, `variant`, `baseimage`, `verify`, `transfer`, `kube`) →
//! shared pieces (`node`, `platform`, `registry`, `reference`, `archive`, `docker`, `progress`, `error`);
//! `report` (the build report's shape) stands apart and uses none of them.

#![warn(clippy::unwrap_used, clippy::dbg_macro, clippy::todo, clippy::unimplemented)]

pub mod archive;
pub mod baseimage;
pub mod blocking;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docker;
pub mod error;
pub mod guard;
pub mod kube;
pub mod node;
pub mod nodeimage;
pub mod platform;
pub mod process;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod report;
pub mod templates;
pub mod transfer;
pub mod variant;
pub mod verify;

pub use commands::run;
pub use error::{exit_code, one_line};
