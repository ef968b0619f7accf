//! The build directory: the user's (`-d`, kept), or a temp dir removed on every exit path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub enum Scratch {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Scratch {
    pub fn new(dir: Option<&Path>) -> Result<Self> {
        Ok(match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating build dir {}", dir.display()))?;
                Scratch::Kept(dir.to_owned())
            }
            None => Scratch::Temp(
                tempfile::Builder::new()
                    .prefix("nodeimg-build-")
                    .tempdir()
                    .context("creating a scratch dir")?,
            ),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Scratch::Kept(p) => p,
            Scratch::Temp(t) => t.path(),
        }
    }
}
