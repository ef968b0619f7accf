//! crictl in the base image. kind runs it in the node (`kind load docker-image` asks
//! `crictl inspecti` whether an image is already there, `kind export logs` lists images), and
//! Debian has no package of it, so the user gives one: a file or a URL (upstream's release
//! `.tar.gz`, or a bare binary), pinned by its sha256.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::progress::Reporter;

pub const LABEL_SHA256: &str = "io.nodeimg.crictl.sha256";
pub const LABEL_VERSION: &str = "io.nodeimg.crictl.version";
/// Where kind's base image has it, relative to the root.
pub const INSTALL_PATH: &str = "usr/local/bin/crictl";
/// Upstream's releases: `<base>/<version>/crictl-<version>-linux-<arch>.tar.gz`.
pub const RELEASE_BASE: &str = "https://github.com/kubernetes-sigs/cri-tools/releases/download";
/// A mirror of upstream's release layout to fetch the default crictl from instead.
pub const RELEASE_BASE_ENV: &str = "NODEIMG_CRICTL_RELEASE_BASE";
/// A pin table of one's own (the format of `base-image/crictl-releases`) instead of ours.
pub const RELEASES_ENV: &str = "NODEIMG_CRICTL_RELEASES";

/// Where the crictl comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Url(String),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::File(path) => write!(f, "{}", path.display()),
            Input::Url(url) => f.write_str(url),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crictl {
    pub input: Input,
    /// Lowercase hex of what `input` names (the tarball, or the binary itself).
    pub sha256: String,
    /// Upstream's release tag, when known (`--crictl-version`, or the input's file name).
    pub version: Option<String>,
}

impl Crictl {
    /// Upstream's release tarball of `version` for `arch` (Docker's names: amd64, arm64...).
    pub fn release_url(version: &str, arch: &str) -> String {
        let base = std::env::var(RELEASE_BASE_ENV).ok().filter(|b| !b.is_empty());
        let base = base.as_deref().unwrap_or(RELEASE_BASE).trim_end_matches('/');
        format!("{base}/{version}/crictl-{version}-linux-{arch}.tar.gz")
    }

    /// The pinned release for `arch` (`base-image/crictl-releases`, or the table
    /// `NODEIMG_CRICTL_RELEASES` names): what a base image gets when no crictl flag is given.
    pub fn pinned(arch: &str) -> Result<Option<Self>> {
        let table = match std::env::var(RELEASES_ENV).ok().filter(|p| !p.is_empty()) {
            Some(path) => {
                std::fs::read_to_string(&path).with_context(|| format!("reading {RELEASES_ENV}={path}"))?
            }
            None => String::from_utf8_lossy(super::assets::get("crictl-releases").contents).into_owned(),
        };
        Ok(pinned_in(&table, arch).map(|(version, sha256)| Crictl {
            input: Input::Url(Self::release_url(&version, arch)),
            sha256,
            version: Some(version),
        }))
    }

    /// The version in an upstream file name, `.../crictl-v1.30.0-linux-amd64.tar.gz`.
    pub fn version_in_name(input: &str) -> Option<String> {
        let name = input.rsplit('/').next()?;
        let (version, _) = name.strip_prefix("crictl-")?.split_once("-linux-")?;
        is_version(version).then(|| version.to_owned())
    }
}

/// `VERSION SHA256` of `arch` in a pin table (`VERSION ARCH SHA256` lines, `#` comments).
fn pinned_in(table: &str, arch: &str) -> Option<(String, String)> {
    table.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (version, of, sha256) = (fields.next()?, fields.next()?, fields.next()?);
        let pinned = of == arch && is_version(version) && sha256.len() == 64;
        pinned.then(|| (version.to_owned(), sha256.to_ascii_lowercase()))
    })
}

/// A release tag as upstream spells them: `v1.30.0`, `v1.31.0-rc.1`.
pub fn is_version(version: &str) -> bool {
    version.strip_prefix('v').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CrictlError {
    #[error("sha256 mismatch for crictl {input}: --crictl-sha256 is {expected}, the file has {actual}")]
    Mismatch { input: String, expected: String, actual: String },
    #[error("crictl {0} is not an ELF executable")]
    NotElf(String),
    #[error("crictl {input} is an ELF executable for {found}, this machine is {host}")]
    WrongMachine { input: String, found: String, host: &'static str },
    #[error("crictl {0} is a gzip archive without a file named crictl in it")]
    NotInArchive(String),
}

/// Checks the crictl against its sha256 and returns the path of the binary: the file
/// itself, the cached download, or what the tarball held, extracted into `scratch`.
pub async fn prepare(crictl: &Crictl, scratch: &Path, reporter: &Reporter) -> Result<PathBuf> {
    let input = crictl.input.to_string();
    let fetched = match &crictl.input {
        // The download checks the sha256 itself, and keeps a mismatch out of the cache.
        Input::Url(url) => crate::kube::download::fetch_sha256(url, &crictl.sha256, reporter).await?,
        Input::File(path) => {
            let step = reporter.step(format!("checking crictl {input}"));
            let (path2, expected) = (path.clone(), crictl.sha256.clone());
            let actual = tokio::task::spawn_blocking(move || crate::archive::sha256_file(&path2))
                .await?
                .with_context(|| format!("reading {input}"))?;
            if actual != expected {
                step.fail("sha256 mismatch");
                return Err(CrictlError::Mismatch { input, expected, actual }.into());
            }
            step.finish("sha256 matches");
            path.clone()
        }
    };
    let dest = scratch.join("crictl");
    let (input2, dest2) = (input.clone(), dest.clone());
    tokio::task::spawn_blocking(move || binary_from(&fetched, &dest2, &input2))
        .await?
        .with_context(|| format!("reading crictl {input}"))
}

/// The binary in `fetched`: a gzip file is taken for upstream's tarball and its `crictl`
/// extracted to `dest`; anything else must be the binary. Either way it must be ELF.
fn binary_from(fetched: &Path, dest: &Path, input: &str) -> Result<PathBuf> {
    let mut head = [0u8; 2];
    let is_gzip = read_head(fetched, &mut head)? == 2 && head == [0x1f, 0x8b];
    let binary = if is_gzip {
        let file = std::fs::File::open(fetched)?;
        if !extract_crictl(file, dest)? {
            return Err(CrictlError::NotInArchive(input.to_owned()).into());
        }
        dest.to_owned()
    } else {
        fetched.to_owned()
    };
    check_elf(&binary, input)?;
    Ok(binary)
}

/// Streams the entry `crictl` (or `./crictl`) of a tar.gz to `dest`; false if there is none.
pub fn extract_crictl(tar_gz: impl Read, dest: &Path) -> io::Result<bool> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    // In plain words, never the tar crate's (which quotes the input's bytes).
    let mut cursor = crate::archive::Cursor::default();
    let plain = |e: crate::archive::ExtractError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    for entry in archive.entries()? {
        let mut entry = cursor.next(entry).map_err(plain)?;
        let path = entry.path().map_err(|e| plain(cursor.at(&e)))?.into_owned();
        let is_crictl = path
            .components()
            .filter(|c| c.as_os_str() != ".")
            .eq([std::path::Component::Normal("crictl".as_ref())]);
        if is_crictl && entry.header().entry_type().is_file() {
            let mut out = std::fs::File::create(dest)?;
            io::copy(&mut entry, &mut out).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => plain(cursor.at(&e)),
                _ => e,
            })?;
            out.sync_all()?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_head(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// An ELF executable (or position-independent executable) for this machine.
fn check_elf(binary: &Path, input: &str) -> Result<()> {
    let mut head = [0u8; 20];
    let len = read_head(binary, &mut head)?;
    let not_elf = || CrictlError::NotElf(input.to_owned());
    if len < head.len() || &head[..4] != b"\x7fELF" {
        return Err(not_elf().into());
    }
    let read_u16 = |at: usize| match head[5] {
        2 => u16::from_be_bytes([head[at], head[at + 1]]),
        _ => u16::from_le_bytes([head[at], head[at + 1]]),
    };
    // e_type: 2 an executable, 3 a PIE (or a shared library, which we cannot tell apart).
    if !matches!(read_u16(16), 2 | 3) {
        return Err(not_elf().into());
    }
    let host = crate::platform::host_architecture();
    match (elf_machine(read_u16(18)), expected_machine(host)) {
        (found, Some(want)) if found != Some(want) => Err(CrictlError::WrongMachine {
            input: input.to_owned(),
            found: found.map_or_else(|| format!("machine {}", read_u16(18)), str::to_owned),
            host,
        }
        .into()),
        _ => Ok(()),
    }
}

fn elf_machine(e_machine: u16) -> Option<&'static str> {
    Some(match e_machine {
        3 => "386",
        40 => "arm",
        62 => "amd64",
        183 => "arm64",
        21 => "ppc64le",
        22 => "s390x",
        _ => return None,
    })
}

fn expected_machine(host: &str) -> Option<&'static str> {
    ["386", "arm", "amd64", "arm64", "ppc64le", "s390x"].into_iter().find(|m| *m == host)
}

/// Copies the binary into the root filesystem as `/usr/local/bin/crictl`, mode 0755.
pub fn install(binary: &Path, root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = root.join(INSTALL_PATH);
    std::fs::create_dir_all(dest.parent().unwrap_or(root))?;
    if dest.symlink_metadata().is_ok() {
        std::fs::remove_file(&dest)?;
    }
    std::fs::copy(binary, &dest)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests;
