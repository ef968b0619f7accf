//! Writing tar archives as streams. A tar is produced on a blocking thread and handed to the
//! consumer (the Docker API) in bounded chunks, so a 400 MB root filesystem never sits in
//! memory.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use tar::{Builder, EntryType, Header, HeaderMode};
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 8;

/// Streams the tar that `fill` writes. Memory stays at a few chunks whatever the size; an
/// error in `fill` ends the stream with that error, so the upload fails instead of
/// silently delivering a truncated archive.
pub fn tar_stream<F>(fill: F) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    F: FnOnce(&mut Builder<ChannelWriter>) -> io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        let mut builder = Builder::new(writer);
        let result = fill(&mut builder).and_then(|()| builder.into_inner()).and_then(|mut w| w.flush());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A `Write` that hands full chunks to an async consumer, waiting when it falls behind.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tar stream's reader went away"))
    }
}

/// Appends a file from memory (a small generated or embedded file) as `path`, owned by root.
pub fn append_bytes<W: Write>(
    builder: &mut Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data)
}

/// Appends the directory tree at `root` as the archive's root, keeping owners, modes,
/// symlinks (never followed) and hard links. The contents of `/dev`, `/proc` and `/sys` are
/// left out: the container runtime provides them, and device nodes from the build host do
/// not belong in an image. Entries are sorted so equal trees give equal archives.
pub fn append_rootfs<W: Write>(builder: &mut Builder<W>, root: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    builder.follow_symlinks(false);
    append_dir_contents(builder, root, Path::new(""), &mut links)
}

fn append_dir_contents<W: Write>(
    builder: &mut Builder<W>,
    dir: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        if kind.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &name, io::empty())?;
            if !(rel.as_os_str().is_empty() && ["dev", "proc", "sys"].iter().any(|d| name == Path::new(d))) {
                append_dir_contents(builder, &path, &name, links)?;
            }
        } else if kind.is_symlink() {
            header.set_size(0);
            builder.append_link(&mut header, &name, fs::read_link(&path)?)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, &name, first)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), name.clone());
            }
            builder.append_data(&mut header, &name, fs::File::open(&path)?)?;
        }
        // Sockets, fifos and device nodes outside /dev are runtime state: skipped.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::os::unix::fs::symlink;

    async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    fn entries(tar: &[u8]) -> Vec<(String, EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                (e.path().unwrap().display().to_string(), e.header().entry_type(), link)
            })
            .collect()
    }

    #[tokio::test]
    async fn rootfs_keeps_links_and_skips_runtime_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join("dev/null-copy"), b"x").unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
        symlink("/etc/passwd", root.join("usr/bin/outside")).unwrap();
        let root = root.to_path_buf();
        let tar = collect(tar_stream(move |b| append_rootfs(b, &root))).await.unwrap();
        let entries = entries(&tar);
        let names: Vec<&str> = entries.iter().map(|e| e.0.trim_end_matches('/')).collect();
        assert!(names.contains(&"dev"), "the /dev directory itself is kept: {names:?}");
        assert!(!names.contains(&"dev/null-copy"), "/dev contents are left out: {names:?}");
        let link = entries.iter().find(|e| e.0 == "usr/bin/outside").unwrap();
        assert_eq!(link.1, EntryType::Symlink);
        assert_eq!(link.2.as_deref(), Some("/etc/passwd"), "symlinks are stored, not followed");
        let hard = entries.iter().find(|e| e.0 == "usr/bin/tool2").unwrap();
        assert_eq!(hard.1, EntryType::Link);
        assert_eq!(hard.2.as_deref(), Some("usr/bin/tool"));
    }

    #[tokio::test]
    async fn large_archives_arrive_in_bounded_chunks() {
        let data = vec![7u8; 3 * CHUNK];
        let stream = tar_stream(move |b| append_bytes(b, "big", 0o644, &data));
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= 2 * CHUNK));
        let tar = chunks.concat();
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().size().unwrap(), 3 * CHUNK as u64);
        assert_eq!(entry.header().mode().unwrap(), 0o644);
        assert_eq!(entry.header().uid().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_failing_writer_fails_the_stream() {
        let stream = tar_stream(|b| append_rootfs(b, Path::new("/nonexistent/nodeimg")));
        assert!(collect(stream).await.is_err());
    }
}

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
    #[error(transparent)]
    Io(#[from] io::Error),
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
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = checked_path(&entry.path()?)?;
        let kind = entry.header().entry_type();
        if let Some(target) = entry.link_name()? {
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
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&out)?;
        io::copy(&mut entry, &mut file)?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod extract_tests {
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
