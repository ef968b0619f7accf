//! Compressed archives (gzip, zstd): told by name when writing, by magic bytes when reading,
//! and decompressed as a stream by a blocking thread, so nothing is held whole.

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;

use crate::progress::ByteCounter;

const CHUNK: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// By the file name: `.tar`, `.tar.gz` or `.tar.zst`. Anything else is refused, so a
    /// typo never silently writes an uncompressed (or mislabelled) archive.
    pub fn from_name(path: &Path) -> Option<Self> {
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return None; // a directory
        }
        let name = path.file_name()?.to_str()?;
        [(".tar.gz", Compression::Gzip), (".tar.zst", Compression::Zstd), (".tar", Compression::None)]
            .into_iter()
            .find(|(ext, _)| name.len() > ext.len() && name.ends_with(ext))
            .map(|(_, c)| c)
    }

    /// By the first bytes: an archive that travelled may have been renamed on the way.
    pub fn from_magic(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A decompressing reader over `file`, by its first bytes (for indexing an archive).
pub fn reader(mut file: impl BufRead + Send + 'static) -> std::io::Result<Box<dyn Read + Send>> {
    let compression = Compression::from_magic(file.fill_buf()?);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// The tar inside the file, as a stream read by a blocking thread. A decompression error
/// is recorded in `failure` and ends the stream with an error. Each chunk is held back
/// until the next one has decompressed cleanly: a bad gzip CRC or zstd checksum shows only
/// at the very end, and Docker must not have seen the end of the tar by then, or it would
/// load it. The thread stops when the stream is dropped (Docker failed, or Ctrl-C).
pub fn decompressed(
    file: impl BufRead + Send + 'static,
    compression: Compression,
    counter: ByteCounter,
    failure: Arc<Mutex<Option<String>>>,
) -> ReceiverStream<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<()> {
            let counted = Counted { inner: file, counter };
            let mut reader: Box<dyn Read> = match compression {
                Compression::None => Box::new(counted),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counted)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(counted)?),
            };
            let mut held: Option<Bytes> = None;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = read_full(&mut reader, &mut buf)?;
                if let Some(chunk) = held.take()
                    && tx.blocking_send(Ok(chunk)).is_err()
                {
                    return Ok(());
                }
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                held = Some(Bytes::from(buf));
            }
        })();
        if let Err(e) = result {
            *failure.lock().expect("not poisoned") = Some(format!("{} data: {e}", compression.name()));
            let _ = tx.blocking_send(Err(e));
        }
    });
    ReceiverStream::new(rx)
}

/// Fills `buf` unless the input ends first: decoders return small pieces, Docker is
/// happier with large ones.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Counts the file's bytes (not the decompressed ones) for the progress bar.
struct Counted<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.inc(n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.counter.inc(amt as u64);
        self.inner.consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_follows_the_extension() {
        let c = |name: &str| Compression::from_name(Path::new(name));
        assert_eq!(c("out/node.tar"), Some(Compression::None));
        assert_eq!(c("node.tar.gz"), Some(Compression::Gzip));
        assert_eq!(c("/tmp/node-v1.30.tar.zst"), Some(Compression::Zstd));
        for bad in ["node.tgz", "node.tar.xz", "node.gz", "node", ".tar", ".tar.gz", "node.tar/", "node.TAR"]
        {
            assert_eq!(c(bad), None, "{bad}");
        }
    }

    #[test]
    fn compression_is_read_from_magic_bytes() {
        assert_eq!(Compression::from_magic(&[0x1f, 0x8b, 0x08, 0]), Compression::Gzip);
        assert_eq!(Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd, 0x04]), Compression::Zstd);
        assert_eq!(Compression::from_magic(b"manifest.json\0\0"), Compression::None);
        assert_eq!(Compression::from_magic(&[0x1f]), Compression::None);
        assert_eq!(Compression::from_magic(&[]), Compression::None);
    }
}
