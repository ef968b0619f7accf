//! `nodeimg images add`: a thin front over `build node-variant --with-image`.

use anyhow::Result;

use crate::cli::ImagesAddArgs;
use crate::config;
use crate::progress::Reporter;

pub async fn run(args: ImagesAddArgs, reporter: &Reporter) -> Result<()> {
    super::build_node_variant::make(config::images_add(args)?, reporter).await
}
