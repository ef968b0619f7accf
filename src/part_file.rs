//! A file written beside its destination and renamed into place when complete, so a reader
//! never sees half of it: downloads (`kube`) and saved archives (`transfer`) both write so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// A file written under `DEST.part-<pid>` and renamed to DEST when complete; removed when
/// dropped before that (an error, or Ctrl-C dropping the future that owns it).
pub struct PartFile {
    part: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl PartFile {
    pub fn new(dest: &Path) -> Self {
        let part = with_suffix(dest, &format!(".part-{}", std::process::id()));
        PartFile { part, dest: dest.to_owned(), done: false }
    }

    pub fn path(&self) -> &Path {
        &self.part
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.part, &self.dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.done {
            std::fs::remove_file(&self.part).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_files_vanish_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("node.tar");
        let part = PartFile::new(&dest);
        assert_eq!(part.path(), dir.path().join(format!("node.tar.part-{}", std::process::id())));
        std::fs::write(part.path(), "x").unwrap();
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let part = PartFile::new(&dest);
        std::fs::write(part.path(), "y").unwrap();
        part.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "y");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
