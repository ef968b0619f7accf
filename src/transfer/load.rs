//! An archive from `save` (or `docker save`, compressed or not) into Docker's image store.
//!
//! The checksum is checked in a pass of its own, before Docker sees a byte: `docker load`
//! is not transactional (a tag moves to the loaded image as soon as the archive has been
//! read), so hashing while loading would find a mismatch only after the damage. Reading
//! the file twice costs I/O, not memory; the second read usually comes from the page cache.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::{Compression, checksum_path, expected_checksum};
use crate::archive::decompressed;
use crate::docker::Docker;
use crate::progress::{ByteCounter, Reporter};

const CHUNK: usize = 1 << 20;

/// Checks `path` against `path.sha256`. A missing checksum file is a warning: archives
/// made by `docker save` have none.
pub async fn verify(path: &Path, reporter: &Reporter) -> Result<()> {
    let sums = checksum_path(path);
    let text = match std::fs::read_to_string(&sums) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            reporter.warn(format!("{} not found: loading without a checksum check", sums.display()));
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", sums.display())),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let want = expected_checksum(&text, &name)
        .ok_or_else(|| anyhow!("{} holds no sha256 checksum for {name}", sums.display()))?;
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    let step = reporter.bytes(format!("verifying {}", path.display()), Some(size));
    let counter = step.counter();
    let file = path.to_owned();
    let have = tokio::task::spawn_blocking(move || sha256_file(&file, &counter)).await??;
    if have != want {
        bail!(
            "checksum mismatch: {} says {want}, {} has {have} (the file is damaged or not the one saved)",
            sums.display(),
            path.display()
        );
    }
    step.finish("checksum matches");
    Ok(())
}

fn sha256_file(path: &Path, counter: &ByteCounter) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
        counter.inc(n as u64);
    }
}

/// An archive opened (and its compression read) before Docker is touched.
pub struct Archive {
    path: PathBuf,
    file: BufReader<std::fs::File>,
    compression: Compression,
}

impl Archive {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut file = BufReader::with_capacity(CHUNK, file);
        let head = file.fill_buf().with_context(|| format!("reading {}", path.display()))?;
        if head.is_empty() {
            bail!("archive is truncated or corrupt (the file is empty)");
        }
        let compression = Compression::from_magic(head);
        Ok(Archive { path: path.to_owned(), file, compression })
    }
}

/// Loads the archive, decompressing it on the way; returns what Docker loaded (`name:tag`,
/// or the image ID for an untagged image).
pub async fn load(docker: &Docker, archive: Archive, reporter: &Reporter) -> Result<Vec<String>> {
    let Archive { path, file, compression } = archive;
    let size = file.get_ref().metadata().map(|m| m.len()).ok();
    let step = reporter.bytes(format!("loading {} ({})", path.display(), compression.name()), size);
    let failure = Arc::new(Mutex::new(None));
    let tar = decompressed(file, compression, step.counter(), failure.clone());
    let loaded = match docker.load_image(tar).await {
        Ok(loaded) => loaded,
        Err(e) => {
            // The decompressor's complaint is the real cause; Docker only saw the stream end.
            if let Some(reason) = failure.lock().expect("not poisoned").take() {
                bail!("archive is truncated or corrupt ({reason})");
            }
            if e.is_bad_archive() {
                bail!("archive is truncated or corrupt ({})", crate::error::root_cause(&e));
            }
            return Err(e.into());
        }
    };
    if loaded.is_empty() {
        bail!("Docker loaded nothing from it (is it a docker-save archive?)");
    }
    let mut shown = Vec::new();
    for name in &loaded {
        let id = docker.inspect_image(name).await?.map(|i| i.id).unwrap_or_default();
        shown.push(format!("{name} ({})", crate::docker::short_id(&id)));
    }
    step.finish(shown.join(", "));
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(path: &Path) -> (Vec<std::io::Result<bytes::Bytes>>, Option<String>) {
        let Archive { file, compression, .. } = Archive::open(path).unwrap();
        let failure = Arc::new(Mutex::new(None));
        let items = tokio::runtime::Runtime::new().unwrap().block_on(async {
            use futures_util::StreamExt;
            decompressed(file, compression, ByteCounter::default(), failure.clone()).collect().await
        });
        let failure = failure.lock().unwrap().clone();
        (items, failure)
    }

    /// A bad gzip trailer shows only after all the data; the end of the data must not have
    /// been passed on by then, even when it fills whole chunks.
    #[test]
    fn a_bad_trailer_withholds_the_end_of_the_data() {
        use std::io::Write;
        let data = vec![7u8; 2 * CHUNK];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let mut gz = gz.finish().unwrap();
        let crc = gz.len() - 8;
        gz[crc] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.tar.gz");
        std::fs::write(&path, &gz).unwrap();
        let (items, failure) = stream(&path);
        let passed: usize = items.iter().filter_map(|i| i.as_ref().ok()).map(|b| b.len()).sum();
        assert!(passed < data.len(), "all {passed} bytes were passed on before the error");
        assert!(items.last().unwrap().is_err());
        assert!(failure.unwrap().starts_with("gzip data: "));
    }

    /// A cut-off compressed file fails in the decompressor, which is what `load` reports.
    #[test]
    fn truncated_archives_fail_to_decompress() {
        use std::io::Write;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (compression, bytes) in [(Compression::Gzip, gz), (Compression::Zstd, zst)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cut.tar");
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            let (items, failure) = stream(&path);
            assert!(items.last().unwrap().is_err(), "{compression:?}: the stream ends in an error");
            let reason = failure.unwrap();
            assert!(reason.starts_with(compression.name()), "{reason}");
        }
    }
}
