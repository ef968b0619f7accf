//! Safe extraction: hostile entries (absolute paths, `..`, escaping links) are refused, and a
//! failure to read the archive is told apart from a failure to write the files out (a full
//! disk is not a corrupt tarball).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tar::EntryType;

/// Why an archive entry was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe entry {0:?}: absolute path")]
    Absolute(PathBuf),
    #[error("unsafe entry {0:?}: `..` in its path")]
    Parent(PathBuf),
    #[error("unsafe entry {path:?}: link to {target:?} points outside the archive")]
    LinkEscapes { path: PathBuf, target: PathBuf },
    #[error("entry {0:?} is not a regular file")]
    NotAFile(PathBuf),
    /// The archive could not be read: cut short, not a tar, bad compression.
    #[error(transparent)]
    Read(#[from] io::Error),
    /// An entry could not be read: where, and what was wrong in plain words (never the
    /// input's bytes, which the tar crate quotes in its messages).
    #[error("entry {entry} (at byte {offset} of the tar stream): {what}")]
    Corrupt { entry: usize, offset: u64, what: &'static str },
    /// A file could not be written out: a full disk, a read-only directory.
    #[error("writing {path}: {source}", path = .path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// `err` of reading entry `entry` (1-based) at `offset`, in plain words. The reader beneath
/// (gzip, zstd) fails through the same error, so damaged compression is told here too.
fn corrupt(entry: usize, offset: u64, err: &io::Error) -> ExtractError {
    ExtractError::Corrupt { entry, offset, what: plain_words(err) }
}

/// Where each entry of a tar stream starts, so that an entry that cannot be read is named
/// by its index and offset, in plain words, wherever nodeimg reads a tar.
#[derive(Default)]
pub struct Cursor {
    index: usize,
    current: u64,
    next: u64,
}

impl Cursor {
    /// The next entry, or what was wrong with it.
    pub fn next<'a, R: io::Read>(
        &mut self,
        entry: io::Result<tar::Entry<'a, R>>,
    ) -> Result<tar::Entry<'a, R>, ExtractError> {
        self.index += 1;
        let entry = entry.map_err(|e| corrupt(self.index, self.next, &e))?;
        self.current = entry.raw_header_position();
        self.next = self.current + 512 + entry.size().div_ceil(512) * 512;
        Ok(entry)
    }

    /// `err` of reading the current entry's path or data.
    pub fn at(&self, err: &io::Error) -> ExtractError {
        corrupt(self.index.max(1), self.current, err)
    }
}

pub fn plain_words(err: &io::Error) -> &'static str {
    let text = err.to_string().to_ascii_lowercase();
    if text.contains("numeric field") || text.contains("invalid octal") {
        "a header field that must be a number is not: a damaged header, or not a tar archive"
    } else if text.contains("checksum") {
        "the header's checksum does not match: a damaged header, or not a tar archive"
    } else if err.kind() == io::ErrorKind::UnexpectedEof || text.contains("unexpected eof") {
        "the archive ends in the middle of an entry: it is cut short"
    } else if ["gzip", "deflate", "frame", "zstd", "compress"].iter().any(|w| text.contains(w)) {
        "the compressed data is damaged, or not in the compression its name or first bytes say"
    } else if err.kind() == io::ErrorKind::InvalidData || err.kind() == io::ErrorKind::Other {
        "the data is not a valid tar archive"
    } else {
        "the archive could not be read"
    }
}

/// An entry's path, refused if it is absolute or climbs with `..`.
pub fn checked_path(path: &Path) -> Result<PathBuf, ExtractError> {
    use std::path::Component;
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::Absolute(path.to_owned()));
            }
            Component::ParentDir => return Err(ExtractError::Parent(path.to_owned())),
        }
    }
    Ok(clean)
}

/// A link at `path` pointing to `target` must resolve inside the archive's root.
pub fn check_link(path: &Path, target: &Path, hard: bool) -> Result<(), ExtractError> {
    use std::path::Component;
    let escapes = || ExtractError::LinkEscapes { path: path.to_owned(), target: target.to_owned() };
    if target.is_absolute() {
        return Err(escapes());
    }
    // Hard link targets are relative to the archive root, symlinks to the link's directory.
    let mut depth: i64 = if hard { 0 } else { path.components().count() as i64 - 1 };
    for part in target.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return Err(escapes()),
        }
        if depth < 0 {
            return Err(escapes());
        }
    }
    Ok(())
}

/// Reads a tar stream to its end, refusing absolute paths, `..` and escaping links in any
/// entry, and writes the regular files that `select` maps to a relative destination under
/// `dest`, streaming each (nothing is held in memory). Returns the destinations written.
/// Reading to the end also catches a truncated archive.
pub fn extract_selected<R: io::Read>(
    reader: R,
    dest: &Path,
    select: impl Fn(&Path) -> Option<(PathBuf, u32)>,
) -> Result<Vec<PathBuf>, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut written = Vec::new();
    // Where the next header starts: an entry that cannot be read is named by it.
    let mut next_offset = 0u64;
    for (index, entry) in archive.entries().map_err(|e| corrupt(1, 0, &e))?.enumerate() {
        let mut entry = entry.map_err(|e| corrupt(index + 1, next_offset, &e))?;
        let offset = entry.raw_header_position();
        let at = |e: io::Error| corrupt(index + 1, offset, &e);
        next_offset = offset + 512 + entry.size().div_ceil(512) * 512;
        let path = checked_path(&entry.path().map_err(at)?)?;
        let kind = entry.header().entry_type();
        if let Some(target) = entry.link_name().map_err(at)? {
            check_link(&path, &target, kind == EntryType::Link)?;
        }
        let Some((rel, mode)) = select(&path) else {
            continue;
        };
        if kind != EntryType::Regular && kind != EntryType::Continuous {
            return Err(ExtractError::NotAFile(path));
        }
        let rel = checked_path(&rel)?;
        let out = dest.join(&rel);
        write_entry(&mut entry, &out, mode).map_err(|e| match e {
            ExtractError::Read(e) => corrupt(index + 1, offset, &e),
            other => other,
        })?;
        written.push(rel);
    }
    Ok(written)
}

/// Copies one entry to `out`. Read errors stay `Read`; only the writing side is `Write`.
fn write_entry(entry: &mut impl io::Read, out: &Path, mode: u32) -> Result<(), ExtractError> {
    use std::os::unix::fs::PermissionsExt;
    let write_err = |source: io::Error| ExtractError::Write { path: out.to_owned(), source };
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(write_err)?;
    }
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).open(out).map_err(write_err)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExtractError::Read(e)),
        };
        io::Write::write_all(&mut file, &buf[..n]).map_err(write_err)?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tar::{Builder, Header};

    use super::*;

    fn tar_with(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut builder = Builder::new(Vec::new());
        for (path, kind, data_or_target) in entries {
            let mut header = Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            // Write the raw name so hostile paths reach the archive as they would from an attacker.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            if *kind == EntryType::Regular {
                header.set_size(data_or_target.len() as u64);
                header.set_cksum();
                builder.append(&header, data_or_target.as_bytes()).unwrap();
            } else {
                header.set_size(0);
                header.as_old_mut().linkname[..data_or_target.len()]
                    .copy_from_slice(data_or_target.as_bytes());
                header.set_cksum();
                builder.append(&header, io::empty()).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn select_all(p: &Path) -> Option<(PathBuf, u32)> {
        Some((p.to_owned(), 0o644))
    }

    #[test]
    fn extracts_selected_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("k/a", EntryType::Regular, "A"), ("k/b", EntryType::Regular, "B")]);
        let written =
            extract_selected(&tar[..], dir.path(), |p| (p == Path::new("k/b")).then(|| ("b".into(), 0o755)))
                .unwrap();
        assert_eq!(written, vec![PathBuf::from("b")]);
        assert_eq!(fs::read_to_string(dir.path().join("b")).unwrap(), "B");
        assert!(!dir.path().join("k").exists());
    }

    /// A write that fails (here: /dev/full, as on a full disk) is a write error naming the
    /// file, not a damaged archive; a cut-off archive is a read error.
    #[test]
    fn a_full_disk_is_not_a_corrupt_archive() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("a")).unwrap();
        let tar = tar_with(&[("a", EntryType::Regular, "some data")]);
        let err = extract_selected(&tar[..], dir.path(), select_all).unwrap_err();
        let ExtractError::Write { path, source } = &err else { panic!("not a write error: {err:?}") };
        assert_eq!(path, &dir.path().join("a"));
        assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        assert!(err.to_string().contains("No space left on device"), "{err}");
        let cut = &tar[..600];
        let err = extract_selected(cut, tempfile::tempdir().unwrap().path(), select_all).unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    #[test]
    fn refuses_parent_components_and_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        let tar = tar_with(&[("k/../../evil", EntryType::Regular, "x")]);
        assert!(matches!(extract_selected(&tar[..], &inner, select_all), Err(ExtractError::Parent(_))));
        let tar = tar_with(&[("/etc/evil", EntryType::Regular, "x")]);
        assert!(matches!(extract_selected(&tar[..], &inner, select_all), Err(ExtractError::Absolute(_))));
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn refuses_links_that_escape_even_when_not_selected() {
        let dir = tempfile::tempdir().unwrap();
        for (target, kind) in [
            ("../../etc/passwd", EntryType::Symlink),
            ("/etc/passwd", EntryType::Symlink),
            ("../x", EntryType::Link),
        ] {
            let tar = tar_with(&[("k/link", kind, target)]);
            let err = extract_selected(&tar[..], dir.path(), |_| None).unwrap_err();
            assert!(matches!(err, ExtractError::LinkEscapes { .. }), "{target}: {err}");
        }
        let inside = tar_with(&[("k/bin/link", EntryType::Symlink, "../version")]);
        extract_selected(&inside[..], dir.path(), |_| None).unwrap();
    }

    #[test]
    fn truncated_archives_fail() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("k/a", EntryType::Regular, &"x".repeat(5000))]);
        let cut = &tar[..1024];
        assert!(extract_selected(cut, dir.path(), select_all).is_err());
    }
}
