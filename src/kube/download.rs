//! Downloads into `~/.cache/nodeimg/downloads`, resume-safe (a temp name, renamed when
//! complete and verified), with a byte progress bar, honouring HTTP(S)_PROXY / NO_PROXY.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, LAST_MODIFIED, RANGE};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::retry::{self, Interruption, Resume};
use crate::part_file::PartFile;
use crate::progress::{Reporter, Step};

/// Checksums and CI markers are a few bytes: a server still sending after this is stuck.
const SMALL_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A published checksum: `.sha512` first, as Kubernetes releases have, then `.sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    Sha512(String),
    Sha256(String),
}

impl Checksum {
    fn matches(&self, sha512: &str, sha256: &str) -> bool {
        match self {
            Checksum::Sha512(want) => want.eq_ignore_ascii_case(sha512),
            Checksum::Sha256(want) => want.eq_ignore_ascii_case(sha256),
        }
    }

    fn hex(&self) -> &str {
        match self {
            Checksum::Sha512(h) | Checksum::Sha256(h) => h,
        }
    }
}

/// The first word of a checksum file, if it is hex of the expected length.
pub fn parse_checksum_file(text: &str, hex_len: usize) -> Option<String> {
    let word = text.split_whitespace().next()?;
    (word.len() == hex_len && word.chars().all(|c| c.is_ascii_hexdigit())).then(|| word.to_ascii_lowercase())
}

pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(20)).build()?)
}

/// Fetches the published checksum of `url`, or fails naming what was tried.
pub async fn published_checksum(client: &reqwest::Client, url: &str) -> Result<Checksum> {
    for (suffix, len) in [(".sha512", 128), (".sha256", 64)] {
        let sum_url = format!("{url}{suffix}");
        let failed = |e: reqwest::Error| anyhow!("{sum_url}: {}", small_fetch_error(&e));
        let response = client.get(&sum_url).timeout(SMALL_FETCH_TIMEOUT).send().await.map_err(failed)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        let response = response.error_for_status().map_err(|e| anyhow!("{sum_url}: {e}"))?;
        let text = response.text().await.map_err(failed)?;
        let hex = parse_checksum_file(&text, len).ok_or_else(|| anyhow!("{sum_url} holds no checksum"))?;
        return Ok(if len == 128 { Checksum::Sha512(hex) } else { Checksum::Sha256(hex) });
    }
    bail!("no checksum published for {url} (tried .sha512 and .sha256; --no-verify skips the check)")
}

/// `~/.cache/nodeimg` (`NODEIMG_CACHE_DIR`, else `$XDG_CACHE_HOME/nodeimg`).
pub fn cache_root() -> PathBuf {
    std::env::var_os("NODEIMG_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("nodeimg")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nodeimg")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/nodeimg"))
}

fn cache_dir() -> PathBuf {
    cache_root().join("downloads")
}

/// Where `url` is cached: named by a hash of the URL and, when known, of its checksum,
/// so a republished file under the same URL is not mistaken for the old one.
fn cache_path(url: &str, checksum: Option<&Checksum>) -> PathBuf {
    let mut key = Sha256::new();
    key.update(url);
    if let Some(sum) = checksum {
        key.update(sum.hex());
    }
    let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("download");
    cache_dir().join(format!("{}-{name}", &hex::encode(key.finalize())[..16]))
}

/// Downloads `url` (or reuses the cached copy) and returns its path. With `verify`, the
/// published checksum must match, for a cached copy too.
pub async fn fetch(url: &str, verify: bool, reporter: &Reporter) -> Result<PathBuf> {
    let client = client()?;
    let checksum = if verify { Some(published_checksum(&client, url).await?) } else { None };
    fetch_checked(&client, url, checksum, "published", reporter).await
}

/// What was downloaded is not what its checksum says: never a reason to go on without it.
#[derive(Debug, thiserror::Error)]
#[error("checksum mismatch for {url}: {origin} {expected}, downloaded file has {actual}")]
pub struct ChecksumMismatch {
    pub url: String,
    pub origin: String,
    pub expected: String,
    pub actual: String,
}

/// Downloads `url` (or reuses the cached copy), which must have the sha256 the user gave.
pub async fn fetch_sha256(url: &str, sha256: &str, reporter: &Reporter) -> Result<PathBuf> {
    fetch_checked(&client()?, url, Some(Checksum::Sha256(sha256.to_owned())), "expected", reporter).await
}

/// `fetch` against a known checksum; `origin` says where it came from, for the error.
async fn fetch_checked(
    client: &reqwest::Client,
    url: &str,
    checksum: Option<Checksum>,
    origin: &str,
    reporter: &Reporter,
) -> Result<PathBuf> {
    let dest = cache_path(url, checksum.as_ref());
    if dest.is_file() {
        if let Some(sum) = &checksum {
            let (sha512, sha256) = hash_file(&dest).await?;
            if sum.matches(&sha512, &sha256) {
                reporter.info(format!("using cached {url}"));
                return Ok(dest);
            }
        } else {
            reporter.info(format!("using cached {url} (not verified)"));
            return Ok(dest);
        }
    }
    std::fs::create_dir_all(dest.parent().expect("cache path has a parent"))
        .with_context(|| format!("creating {}", cache_dir().display()))?;
    let (sha512, sha256) = download(client, url, &dest, reporter).await?;
    if let Some(sum) = &checksum
        && !sum.matches(&sha512, &sha256)
    {
        std::fs::remove_file(&dest).ok();
        let actual = match sum {
            Checksum::Sha512(_) => sha512,
            Checksum::Sha256(_) => sha256,
        };
        return Err(ChecksumMismatch {
            url: url.to_owned(),
            origin: origin.to_owned(),
            expected: sum.hex().to_owned(),
            actual,
        }
        .into());
    }
    Ok(dest)
}

/// A download in progress: the part file (removed on every way out but the rename into
/// place, Ctrl-C dropping this future included) and the hashes of what it holds so far,
/// kept across tries so a resumed file needs no second read.
struct Partial {
    part: PartFile,
    file: tokio::fs::File,
    written: u64,
    /// The size announced by the answer the part file started with.
    total: Option<u64>,
    /// `ETag` (strong only) or `Last-Modified` of that answer: sent as `If-Range`, so a
    /// file replaced meanwhile comes whole instead of spliced onto the old one's start.
    validator: Option<String>,
    sha512: Sha512,
    sha256: Sha256,
}

impl Partial {
    async fn create(dest: &Path) -> Result<Self> {
        let part = PartFile::new(dest);
        let file = tokio::fs::File::create(part.path())
            .await
            .with_context(|| format!("creating {}", part.path().display()))?;
        Ok(Partial {
            part,
            file,
            written: 0,
            total: None,
            validator: None,
            sha512: Sha512::new(),
            sha256: Sha256::new(),
        })
    }

    async fn append(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.file.write_all(chunk).await?;
        self.sha512.update(chunk);
        self.sha256.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Back to zero bytes, for an answer carrying the whole file.
    async fn restart(&mut self, total: Option<u64>, headers: &HeaderMap) -> std::io::Result<()> {
        if self.written > 0 {
            // flush waits for writes still in flight, which would land after the truncation.
            self.file.flush().await?;
            self.file.set_len(0).await?;
            self.file.seek(std::io::SeekFrom::Start(0)).await?;
            (self.written, self.sha512, self.sha256) = (0, Sha512::new(), Sha256::new());
        }
        self.total = total;
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        self.validator = header(ETAG)
            .filter(|etag| !etag.starts_with("W/"))
            .or_else(|| header(LAST_MODIFIED))
            .map(str::to_owned);
        Ok(())
    }
}

enum Failure {
    /// Another try would fail the same way (a 404, a full disk, a nonsensical 206).
    Fatal(anyhow::Error),
    Interrupted(Interruption),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure::Fatal(err.into())
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    reporter: &Reporter,
) -> Result<(String, String)> {
    let stall = retry::stall_timeout(std::env::var(retry::STALL_ENV).ok().as_deref())?;
    let mut partial = Partial::create(dest).await?;
    let mut step = None;
    for try_no in 1..=retry::MAX_TRIES {
        let cause = match attempt(client, url, &mut partial, &mut step, stall, try_no > 1, reporter).await {
            Ok(()) => break,
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Interrupted(cause)) => cause,
        };
        if try_no == retry::MAX_TRIES {
            bail!("downloading {url}: {cause} (gave up after {try_no} tries)");
        }
        reporter.warn(format!(
            "download of {url} interrupted at {:.1} MB ({cause}); resuming (try {}/{})",
            partial.written as f64 / 1e6,
            try_no + 1,
            retry::MAX_TRIES
        ));
        tokio::time::sleep(cause.backoff(try_no)).await;
    }
    partial.file.sync_all().await?;
    let Partial { part, sha512, sha256, .. } = partial;
    part.commit().with_context(|| format!("moving the download into place as {}", dest.display()))?;
    if let Some(step) = step {
        step.finish("done");
    }
    Ok((hex::encode(sha512.finalize()), hex::encode(sha256.finalize())))
}

/// One request, continuing the part file when it holds bytes. Silence longer than `stall`
/// (before the headers or between chunks) ends the try.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    partial: &mut Partial,
    step: &mut Option<Step>,
    stall: Duration,
    resuming: bool,
    reporter: &Reporter,
) -> Result<(), Failure> {
    let mut request = client.get(url);
    if let Some(range) = retry::range_header(partial.written) {
        request = request.header(RANGE, range);
        if let Some(validator) = &partial.validator {
            request = request.header(IF_RANGE, validator);
        }
    }
    let response = match tokio::time::timeout(stall, request.send()).await {
        Err(_) => return Err(Failure::Interrupted(Interruption::Stalled(stall))),
        // An unreachable server fails at once; one that served this file a moment ago
        // may be restarting.
        Ok(Err(e)) if e.is_connect() && !resuming => {
            return Err(anyhow!("downloading {url}: {}", crate::error::root_cause(&e)).into());
        }
        Ok(Err(e)) => return Err(Failure::Interrupted(Interruption::Broken(crate::error::root_cause(&e)))),
        Ok(Ok(response)) => response,
    };
    if resuming && response.status().is_server_error() {
        let status = response.status().to_string();
        return Err(Failure::Interrupted(Interruption::ServerError(status)));
    }
    let response = response.error_for_status().map_err(|e| anyhow!("downloading {url}: {e}"))?;
    let content_range = response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
    let resume =
        retry::on_response(partial.written, response.status().as_u16(), content_range, partial.total)
            .map_err(|e| anyhow!("downloading {url}: {e}"))?;
    if resume == Resume::Restart {
        if partial.written > 0
            && let Some(old) = step.take()
        {
            old.fail("restarting from zero: the server ignored the range request");
        }
        partial.restart(response.content_length(), response.headers()).await?;
    }
    let step = step.get_or_insert_with(|| reporter.bytes(format!("downloading {url}"), partial.total));
    let mut body = response.bytes_stream();
    loop {
        match tokio::time::timeout(stall, body.next()).await {
            Err(_) => return Err(Failure::Interrupted(Interruption::Stalled(stall))),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Failure::Interrupted(Interruption::Broken(crate::error::root_cause(&e))));
            }
            Ok(Some(Ok(chunk))) => {
                partial
                    .append(&chunk)
                    .await
                    .with_context(|| format!("writing {}", partial.part.path().display()))?;
                step.inc(chunk.len() as u64);
            }
        }
    }
    match partial.total {
        // A 206 may end short of the file's end; the next try asks for the rest.
        Some(total) if partial.written < total => Err(Failure::Interrupted(Interruption::Broken(format!(
            "connection closed after {} of {total} bytes",
            partial.written
        )))),
        Some(total) if partial.written > total => {
            Err(anyhow!("downloading {url}: received {} bytes, {total} were announced", partial.written)
                .into())
        }
        _ => Ok(()),
    }
}

/// The sha512 and sha256 of a file, in hex.
pub async fn hash_file(path: &Path) -> Result<(String, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut sha512, mut sha256) = (Sha512::new(), Sha256::new());
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            sha512.update(&buf[..n]);
            sha256.update(&buf[..n]);
        }
        Ok((hex::encode(sha512.finalize()), hex::encode(sha256.finalize())))
    })
    .await?
}

/// Fetches a short text document (a CI version marker).
pub async fn fetch_text(url: &str) -> Result<String> {
    let failed = |e: reqwest::Error| anyhow!("{url}: {}", small_fetch_error(&e));
    let response = client()?.get(url).timeout(SMALL_FETCH_TIMEOUT).send().await.map_err(failed)?;
    let response = response.error_for_status().map_err(|e| anyhow!("{url}: {e}"))?;
    Ok(response.text().await.map_err(failed)?.trim().to_owned())
}

fn small_fetch_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        format!("no complete answer within {} s", SMALL_FETCH_TIMEOUT.as_secs())
    } else {
        crate::error::root_cause(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files_hold_hex_and_maybe_a_name() {
        let hex = "ab".repeat(64);
        assert_eq!(parse_checksum_file(&format!("{hex}  kubernetes.tar.gz\n"), 128), Some(hex.clone()));
        assert_eq!(parse_checksum_file(&hex.to_uppercase(), 128), Some(hex));
        assert_eq!(parse_checksum_file("not-hex", 128), None);
        assert_eq!(parse_checksum_file(&"ab".repeat(32), 128), None);
    }

    #[tokio::test]
    async fn part_files_sit_beside_the_download_and_hash_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("abc-k.tar.gz");
        let mut partial = Partial::create(&dest).await.unwrap();
        let part = dir.path().join(format!("abc-k.tar.gz.part-{}", std::process::id()));
        assert_eq!(partial.part.path(), part);
        let sha512 = |p: &Partial| hex::encode(p.sha512.clone().finalize());
        partial.append(b"first try").await.unwrap();
        partial.append(b", resumed").await.unwrap();
        assert_eq!(sha512(&partial), hex::encode(Sha512::digest("first try, resumed")));
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, "W/\"weak\"".parse().unwrap());
        headers.insert(LAST_MODIFIED, "Tue, 01 Jul 2025 00:00:00 GMT".parse().unwrap());
        partial.restart(Some(5), &headers).await.unwrap();
        partial.append(b"whole").await.unwrap();
        partial.file.flush().await.unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), b"whole");
        assert_eq!(sha512(&partial), hex::encode(Sha512::digest("whole")));
        assert_eq!((partial.written, partial.total), (5, Some(5)));
        assert_eq!(partial.validator.as_deref(), Some("Tue, 01 Jul 2025 00:00:00 GMT"), "weak ETags cannot");
        drop(partial);
        assert!(!part.exists(), "dropped unfinished, the part file goes");
    }

    #[test]
    fn cache_names_depend_on_url_and_checksum() {
        let a = cache_path("http://x/v1/k.tar.gz", None);
        let b = cache_path("http://x/v1/k.tar.gz", Some(&Checksum::Sha256("00".into())));
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().ends_with("-k.tar.gz"));
    }
}
