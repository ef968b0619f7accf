//! `--crictl`, `--crictl-version` and `--crictl-sha256` of `build base-image`: where the
//! base image's crictl comes from. With `--from dockerfile` only a release version works,
//! since the Dockerfile fetches upstream's tarball itself (a plain `docker build` can too).

use std::path::PathBuf;

use crate::baseimage::crictl::{Crictl, Input, is_version};
use crate::cli::{BaseImageArgs, From};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrictlConfigError {
    #[error("{0} needs --crictl-sha256 HEX: the sha256 of the crictl it names")]
    NoSha256(&'static str),
    #[error("--crictl-sha256 applies only with --crictl or --crictl-version")]
    Sha256Alone,
    #[error("invalid --crictl-sha256 {0:?}: expected 64 hex digits")]
    Sha256(String),
    #[error("--crictl and --crictl-version exclude each other")]
    Both,
    #[error("--crictl {0:?}: no such file")]
    NoFile(String),
    #[error("invalid --crictl {0:?}: expected a file or an http:// or https:// URL")]
    Url(String),
    #[error("invalid --crictl-version {0:?}: expected a release tag like v1.30.0")]
    Version(String),
    #[error(
        "--crictl applies only to --from debootstrap; the Dockerfile fetches upstream's release: use --crictl-version"
    )]
    NotForDockerfile,
}

/// The validated crictl, or none when no crictl flag was given.
pub fn crictl(args: &BaseImageArgs) -> Result<Option<Crictl>, CrictlConfigError> {
    let sha256 = args.crictl_sha256.as_deref();
    let (input, version) = match (&args.crictl, &args.crictl_version) {
        (Some(_), Some(_)) => return Err(CrictlConfigError::Both),
        (None, None) if sha256.is_some() => return Err(CrictlConfigError::Sha256Alone),
        (None, None) => return Ok(None),
        (Some(_), None) if args.from == From::Dockerfile => return Err(CrictlConfigError::NotForDockerfile),
        (Some(given), None) => (input(given)?, Crictl::version_in_name(given)),
        (None, Some(version)) => {
            if !is_version(version) {
                return Err(CrictlConfigError::Version(version.clone()));
            }
            let arch = crate::platform::host_architecture();
            (Input::Url(Crictl::release_url(version, arch)), Some(version.clone()))
        }
    };
    let flag = if args.crictl.is_some() { "--crictl" } else { "--crictl-version" };
    let sha256 = sha256.ok_or(CrictlConfigError::NoSha256(flag))?;
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CrictlConfigError::Sha256(sha256.to_owned()));
    }
    Ok(Some(Crictl { input, sha256: sha256.to_ascii_lowercase(), version }))
}

fn input(given: &str) -> Result<Input, CrictlConfigError> {
    if let Some(rest) = given.strip_prefix("http://").or_else(|| given.strip_prefix("https://")) {
        if rest.is_empty() || rest.starts_with('/') || given.contains(char::is_whitespace) {
            return Err(CrictlConfigError::Url(given.to_owned()));
        }
        return Ok(Input::Url(given.to_owned()));
    }
    if given.contains("://") {
        return Err(CrictlConfigError::Url(given.to_owned()));
    }
    let path = PathBuf::from(given);
    if !path.is_file() {
        return Err(CrictlConfigError::NoFile(given.to_owned()));
    }
    // Absolute, so the path still means the same file wherever the build reads it.
    Ok(Input::File(std::path::absolute(&path).unwrap_or(path)))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::baseimage::BaseImageConfig;
    use crate::cli::{BuildCommand, Cli, Command};
    use crate::config::ConfigError;

    fn parse(args: &[&str]) -> Result<BaseImageConfig, ConfigError> {
        let cli = Cli::try_parse_from([&["nodeimg", "build", "base-image"], args].concat()).unwrap();
        let Command::Build(BuildCommand::BaseImage(args)) = cli.command else { unreachable!() };
        super::super::base_image(args)
    }

    fn err(args: &[&str]) -> CrictlConfigError {
        match parse(args) {
            Err(ConfigError::Crictl(e)) => e,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn a_file_or_url_needs_a_valid_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crictl-v1.30.0-linux-amd64.tar.gz");
        std::fs::write(&file, b"x").unwrap();
        let file = file.to_str().unwrap();
        let sha = "AB".repeat(32);
        let cfg = parse(&["--crictl", file, "--crictl-sha256", &sha]).unwrap();
        let crictl = cfg.crictl.unwrap();
        assert_eq!(crictl.input, Input::File(file.into()));
        assert_eq!(crictl.sha256, "ab".repeat(32), "lowercased");
        assert_eq!(crictl.version.as_deref(), Some("v1.30.0"));

        let url = "https://files.internal/crictl";
        let crictl = parse(&["--crictl", url, "--crictl-sha256", &sha]).unwrap().crictl.unwrap();
        assert_eq!((crictl.input, crictl.version), (Input::Url(url.into()), None));

        assert_eq!(err(&["--crictl", file]), CrictlConfigError::NoSha256("--crictl"));
        assert_eq!(
            err(&["--crictl", file, "--crictl-sha256", "abc"]),
            CrictlConfigError::Sha256("abc".into())
        );
        assert_eq!(err(&["--crictl-sha256", &sha]), CrictlConfigError::Sha256Alone);
        assert_eq!(
            err(&["--crictl", "/no/such/crictl", "--crictl-sha256", &sha]),
            CrictlConfigError::NoFile("/no/such/crictl".into())
        );
        assert_eq!(
            err(&["--crictl", "ftp://x/crictl", "--crictl-sha256", &sha]),
            CrictlConfigError::Url("ftp://x/crictl".into())
        );
        assert_eq!(
            err(&["--crictl", "http://", "--crictl-sha256", &sha]),
            CrictlConfigError::Url("http://".into())
        );
        assert_eq!(parse(&[]).unwrap().crictl, None);
    }

    #[test]
    fn a_version_means_upstreams_release() {
        let sha = "0".repeat(64);
        let crictl =
            parse(&["--crictl-version", "v1.30.0", "--crictl-sha256", &sha]).unwrap().crictl.unwrap();
        let Input::Url(url) = crictl.input else { panic!("a URL") };
        assert!(url.starts_with("https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.30.0/"));
        assert_eq!(crictl.version.as_deref(), Some("v1.30.0"));
        let dockerfile =
            parse(&["--from", "dockerfile", "--crictl-version", "v1.30.0", "--crictl-sha256", &sha]);
        assert_eq!(dockerfile.unwrap().crictl.unwrap().version.as_deref(), Some("v1.30.0"));
        assert_eq!(err(&["--crictl-version", "1.30"]), CrictlConfigError::Version("1.30".into()));
        assert_eq!(err(&["--crictl-version", "v1.30.0"]), CrictlConfigError::NoSha256("--crictl-version"));
        assert_eq!(
            err(&["--crictl", "/bin/sh", "--crictl-version", "v1.30.0", "--crictl-sha256", &sha]),
            CrictlConfigError::Both
        );
        assert_eq!(
            err(&["--from", "dockerfile", "--crictl", "/bin/sh", "--crictl-sha256", &sha]),
            CrictlConfigError::NotForDockerfile
        );
    }
}
