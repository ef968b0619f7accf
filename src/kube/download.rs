//! Downloads into `~/.cache/nodeimg/downloads`, resume-safe (a temp name, renamed when
//! complete and verified), with a byte progress bar, honouring HTTP(S)_PROXY / NO_PROXY.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::AsyncWriteExt;

use crate::progress::Reporter;

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
        let response = client
            .get(&sum_url)
            .send()
            .await
            .map_err(|e| anyhow!("{sum_url}: {}", crate::error::root_cause(&e)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        let response = response.error_for_status().map_err(|e| anyhow!("{sum_url}: {e}"))?;
        let text = response.text().await?;
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
    let (sha512, sha256) = download(&client, url, &dest, reporter).await?;
    if let Some(sum) = &checksum
        && !sum.matches(&sha512, &sha256)
    {
        std::fs::remove_file(&dest).ok();
        bail!(
            "checksum mismatch for {url}: published {}, downloaded file has {}",
            sum.hex(),
            match sum {
                Checksum::Sha512(_) => &sha512,
                Checksum::Sha256(_) => &sha256,
            }
        );
    }
    Ok(dest)
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    reporter: &Reporter,
) -> Result<(String, String)> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow!("downloading {url}: {}", crate::error::root_cause(&e)))?;
    let response = response.error_for_status().map_err(|e| anyhow!("downloading {url}: {e}"))?;
    let step = reporter.bytes(format!("downloading {url}"), response.content_length());
    let part = dest.with_extension(format!("part-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&part).await?;
    let (mut sha512, mut sha256) = (Sha512::new(), Sha256::new());
    let mut body = response.bytes_stream();
    let result: Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| anyhow!("downloading {url}: {}", crate::error::root_cause(&e)))?;
            sha512.update(&chunk);
            sha256.update(&chunk);
            file.write_all(&chunk).await?;
            step.inc(chunk.len() as u64);
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tokio::fs::remove_file(&part).await.ok();
        return Err(e);
    }
    tokio::fs::rename(&part, dest).await?;
    step.finish("done");
    Ok((hex::encode(sha512.finalize()), hex::encode(sha256.finalize())))
}

async fn hash_file(path: &Path) -> Result<(String, String)> {
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
    let response =
        client()?.get(url).send().await.map_err(|e| anyhow!("{url}: {}", crate::error::root_cause(&e)))?;
    let response = response.error_for_status().map_err(|e| anyhow!("{url}: {e}"))?;
    Ok(response.text().await?.trim().to_owned())
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

    #[test]
    fn cache_names_depend_on_url_and_checksum() {
        let a = cache_path("http://x/v1/k.tar.gz", None);
        let b = cache_path("http://x/v1/k.tar.gz", Some(&Checksum::Sha256("00".into())));
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().ends_with("-k.tar.gz"));
    }
}
