//! Writing tar archives as streams. A tar is produced on a blocking thread and handed to the
//! consumer (the Docker API) in bounded chunks, so a 400 MB root filesystem never sits in
//! memory. `extract` reads them back safely; `image` writes the docker-save format.

mod compression;
mod extract;
pub mod image;

pub use compression::{Compression, decompressed, reader};
pub use extract::{Cursor, ExtractError, check_link, checked_path, extract_selected, plain_words};

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
/// The sha256 of a file's content, in hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let (mut hash, mut buf) = (sha2::Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        match io::Read::read(&mut file, &mut buf)? {
            0 => return Ok(hex::encode(hash.finalize())),
            n => hash.update(&buf[..n]),
        }
    }
}

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

/// Appends a symlink `path` -> `target`, owned by root.
pub fn append_symlink<W: Write>(builder: &mut Builder<W>, path: &str, target: &str) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Symlink);
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    builder.append_link(&mut header, path, target)
}

/// Appends the regular file at `path` as `name`, owned by root with `mode`, streamed from
/// disk.
pub fn append_file<W: Write>(
    builder: &mut Builder<W>,
    path: &Path,
    name: &Path,
    mode: u32,
) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    let mut header = Header::new_gnu();
    header.set_size(file.metadata()?.len());
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, name, &mut file)
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
