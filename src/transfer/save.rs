//! `docker save`, streamed through a compressor into `FILE.part-<pid>`, hashed as written.

use std::io::Write;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Compression, SaveTarget, checksum_line, checksum_path};
use crate::docker::{Docker, ImageGuard};
use crate::part_file::PartFile;
use crate::progress::Reporter;

/// Compressed bytes are collected up to this much before a file write: few, large writes,
/// and memory stays bounded whatever the image size.
const FLUSH_AT: usize = 1 << 20;

/// Levels as `gzip` and `zstd` use by default, so archives match what the tools would make.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug)]
pub struct Saved {
    pub sha256: String,
    pub bytes: u64,
}

/// Saves `image` (a reference, so the archive carries its tag) to `target`, with
/// `target.sha256` beside it. On any failure neither file is left behind.
pub async fn save(docker: &Docker, image: &str, target: &SaveTarget, reporter: &Reporter) -> Result<Saved> {
    let info = docker.inspect_image(image).await?.ok_or_else(|| anyhow!("no such image {image}"))?;
    // Podman: a `localhost/` image is saved under a temporary Docker-style name (see
    // `portable_name`), removed after the save, or by its guard when the save fails.
    let (name, alias) = docker.portable_name(image, &info).await?;
    let alias = alias.map(|a| ImageGuard::new(docker, &a));
    let step = reporter.bytes(
        format!("saving {image} ({}) to {}", target.compression.name(), target.path.display()),
        Some(info.size),
    );
    let data = PartFile::new(&target.path);
    let mut file = tokio::fs::File::create(data.path())
        .await
        .with_context(|| format!("creating {}", data.path().display()))?;
    let mut encoder = Encoder::new(target.compression)?;
    let mut hash = Sha256::new();
    let mut written = 0u64;
    let mut write = async |bytes: Vec<u8>| -> Result<()> {
        hash.update(&bytes);
        written += bytes.len() as u64;
        file.write_all(&bytes).await.with_context(|| format!("writing {}", data.path().display()))
    };

    let mut tar = docker.save_image(&name);
    while let Some(chunk) = tar.next().await {
        let chunk = chunk?;
        step.inc(chunk.len() as u64);
        // Compression is CPU work: keep it off the thread that drives the other tasks.
        blocking(|| encoder.push(&chunk))?;
        if encoder.buffered() >= FLUSH_AT {
            write(encoder.take()).await?;
        }
    }
    write(encoder.finish()?).await?;
    if let Some(alias) = alias {
        alias.remove().await?;
    }
    file.sync_all().await.with_context(|| format!("writing {}", data.path().display()))?;
    drop(file);

    let sha256 = hex::encode(hash.finalize());
    let sums = PartFile::new(&checksum_path(&target.path));
    std::fs::write(sums.path(), checksum_line(&sha256, &target.path))
        .with_context(|| format!("writing {}", sums.path().display()))?;
    // The checksum goes first: if FILE then fails to move into place, an old FILE next to a
    // new checksum is caught by `load`, whereas a new FILE without its checksum would not be.
    let sums_path = checksum_path(&target.path);
    sums.commit().with_context(|| format!("renaming to {}", sums_path.display()))?;
    if let Err(err) = data.commit() {
        std::fs::remove_file(&sums_path).ok();
        return Err(err).with_context(|| format!("renaming to {}", target.path.display()));
    }
    step.finish(format!("{:.1} MB", written as f64 / 1e6));
    Ok(Saved { sha256, bytes: written })
}

/// Runs `work` where blocking is allowed: in place on a multi-threaded runtime (other tasks
/// move to other threads meanwhile), directly elsewhere.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A compressor writing into memory, emptied by [`Encoder::take`] as it fills.
enum Encoder {
    Plain(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(compression: Compression) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(Vec::new()),
            Compression::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL)))
            }
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
                // As the zstd tool does: damage is then caught even without the .sha256.
                encoder.include_checksum(true)?;
                Encoder::Zstd(encoder)
            }
        })
    }

    fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Plain(out) => {
                out.extend_from_slice(data);
                Ok(())
            }
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Plain(out) => out,
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn buffered(&mut self) -> usize {
        self.output().len()
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.output())
    }

    /// The rest of the output, with the format's trailer.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Plain(out) => Ok(out),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Output taken in pieces, as `save` does, decompresses to the input.
    #[test]
    fn encoders_round_trip_when_drained_in_pieces() {
        let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut encoder = Encoder::new(compression).unwrap();
            let mut out = Vec::new();
            for chunk in input.chunks(70_000) {
                encoder.push(chunk).unwrap();
                if encoder.buffered() >= 10_000 {
                    out.extend(encoder.take());
                }
            }
            out.extend(encoder.finish().unwrap());
            assert_eq!(Compression::from_magic(&out), compression);
            let mut back = Vec::new();
            match compression {
                Compression::None => back = out,
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back).unwrap();
                }
                Compression::Zstd => {
                    zstd::stream::read::Decoder::new(&out[..]).unwrap().read_to_end(&mut back).unwrap();
                }
            }
            assert!(back == input, "{compression:?} round trip");
        }
    }
}
