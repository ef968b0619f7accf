use clap::Parser;

use super::*;
use crate::cli::{BuildCommand, Cli, Command};

fn node(args: &[&str]) -> Result<NodeImageConfig, ConfigError> {
    multi(args).map(|m| m.cfg)
}

fn multi(args: &[&str]) -> Result<MultiArch, ConfigError> {
    let cli = Cli::try_parse_from([&["nodeimg", "build", "node-image", "v1.30.0"], args].concat()).unwrap();
    let Command::Build(BuildCommand::NodeImage(args)) = cli.command else { unreachable!() };
    node_image(*args).map(|(multi, _)| multi)
}

#[test]
fn arch_lists_make_one_config_per_arch() {
    let m = multi(&["--arch", "amd64,arm64", "-i", "kindest/node:v1.30.0", "-b", "my/base:{arch}"]).unwrap();
    assert_eq!(m.arches, ["amd64", "arm64"]);
    let m = MultiArch {
        cfg: NodeImageConfig {
            images: ImageSources { archive_dirs: vec!["imgs/{arch}".into()], ..m.cfg.images.clone() },
            ..m.cfg.clone()
        },
        ..m
    };
    let arm = m.config_for("arm64");
    assert_eq!(arm.images.archive_dirs, [std::path::PathBuf::from("imgs/arm64")]);
    assert_eq!((arm.arch.as_str(), arm.image.as_str()), ("arm64", "kindest/node:v1.30.0-arm64"));
    assert_eq!(arm.base_image.as_deref(), Some("my/base:arm64"));
    let one = multi(&["--arch", "arm64", "-i", "kindest/node:v1"]).unwrap();
    assert_eq!(one.config_for("arm64").image, "kindest/node:v1", "one arch: the name as given");
    assert!(!multi(&[]).unwrap().cfg.allow_foreign_images);
    assert!(multi(&["--allow-foreign-images"]).unwrap().cfg.allow_foreign_images);
}

#[test]
fn arch_lists_are_checked_before_anything_runs() {
    assert_eq!(multi(&["--arch", "amd64,mips"]).err(), Some(ConfigError::Arch("mips".into())));
    assert!(matches!(multi(&["--arch", "arm64,arm64"]), Err(ConfigError::Arch(_))));
    let shared = multi(&["--arch", "amd64,arm64", "-b", "my/base:1"]).err();
    assert_eq!(shared, Some(ConfigError::BaseForArches("my/base:1".into(), 2)));
    let save = multi(&["--arch", "amd64,arm64", "--save", "node.tar"]).err();
    assert_eq!(save, Some(ConfigError::SaveArches("amd64,arm64".into())));
    assert!(matches!(multi(&["--arch", "arm64", "-i", "Bad:{arch}"]), Err(ConfigError::Image(_))));
    let cli = Cli::try_parse_from([
        "nodeimg",
        "build",
        "node-image",
        "https://x/k.tar.gz",
        "--arch",
        "amd64,arm64",
    ]);
    let Command::Build(BuildCommand::NodeImage(args)) = cli.unwrap().command else { unreachable!() };
    assert_eq!(node_image(*args).err(), Some(ConfigError::SourceForArches("amd64,arm64".into())));
}

#[test]
fn image_source_flags_add_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeimg.toml");
    std::fs::write(
        &config,
        "registry_mirrors = [\"docker.io=m:5000/hub\"]\nextra_images = [\"busybox:1\"]\n",
    )
    .unwrap();
    let list = dir.path().join("extra.txt");
    std::fs::write(&list, "quay.io/x/y:2\n").unwrap();
    let cfg = node(&[
        "--config",
        config.to_str().unwrap(),
        "--registry-mirror",
        "registry.k8s.io=http://127.0.0.1:5000",
        "--extra-image",
        "docker.io/library/busybox:1",
        "--extra-images-file",
        list.to_str().unwrap(),
        "--node-registry-mirror",
        "docker.io=http://127.0.0.1:5000",
        "--offline",
    ])
    .unwrap();
    let srcs: Vec<_> = cfg.images.mirrors.iter().map(|m| m.src.as_str()).collect();
    assert_eq!(srcs, ["docker.io", "registry.k8s.io"]);
    assert_eq!(cfg.images.extra, ["quay.io/x/y:2", "docker.io/library/busybox:1"], "deduplicated");
    assert!(cfg.images.offline);
    assert_eq!(cfg.node_mirrors.len(), 1);
}

#[test]
fn bad_image_source_flags_fail_naming_the_input() {
    let err = node(&["--registry-mirror", "registry.k8s.io"]).unwrap_err().to_string();
    assert!(err.contains("--registry-mirror \"registry.k8s.io\"") && err.contains("SRC=DEST"), "{err}");
    let err = node(&["--extra-image", "Bad:tag"]).unwrap_err().to_string();
    assert!(err.contains("--extra-image \"Bad:tag\""), "{err}");
    let err = node(&["--config", "/nonexistent/nodeimg.toml"]).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/nodeimg.toml"), "{err}");
    let err = node(&["--node-registry-mirror", "docker.io=mirror:5000"]).unwrap_err().to_string();
    assert!(err.contains("--node-registry-mirror") && err.contains("http://"), "{err}");
}

#[test]
fn bad_config_file_entries_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeimg.toml");
    std::fs::write(&config, "registry_mirrors = [\"registry.k8s.io\"]\n").unwrap();
    let err = node(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("--config {}: registry_mirrors: ", config.display())), "{err}");
    std::fs::write(&config, "node_registry_mirrors = [\"docker.io=mirror:5000\"]\n").unwrap();
    let err = node(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("node_registry_mirrors: ") && err.contains("nodeimg.toml"), "{err}");
}

#[test]
fn verify_flags_need_verify_on_build() {
    let parse = node;
    assert_eq!(parse(&["--timeout", "90s"]).unwrap_err(), ConfigError::OnlyWith("--timeout", "--verify"));
    assert_eq!(parse(&["--cni", "bridge"]).unwrap_err(), ConfigError::OnlyWith("--cni", "--verify"));
    assert!(parse(&[]).unwrap().check.is_none());
    let check = parse(&["--verify", "--timeout", "90s", "--cni", "bridge"]).unwrap().check.unwrap();
    assert_eq!(check.timeout, std::time::Duration::from_secs(90));
    assert_eq!(check.cni, crate::verify::Cni::Bridge);
    let check = parse(&["--verify"]).unwrap().check.unwrap();
    assert_eq!((check.timeout.as_secs(), check.cni), (300, crate::verify::Cni::Auto));
}

#[test]
fn proxies_come_from_the_given_lookup() {
    let env = |k: &str| (k == "HTTPS_PROXY").then(|| "http://proxy:3128".to_owned());
    assert_eq!(proxy_env(env), [("HTTPS_PROXY".to_owned(), "http://proxy:3128".to_owned())]);
    assert!(proxy_env(|_| Some(String::new())).is_empty(), "empty settings are not passed on");
}

#[test]
fn checksum_flag_is_named_for_what_it_skips() {
    assert!(node(&[]).unwrap().checksums);
    assert!(!node(&["--skip-checksums"]).unwrap().checksums);
    assert!(!node(&["--no-verify"]).unwrap().checksums, "the old name still works");
}

#[test]
fn engines_name_an_arch_being_built_and_a_socket_or_tcp_host() {
    let m = multi(&["--arch", "amd64,arm64", "-b", "b:{arch}", "--engine", "arm64=unix:///tmp/arm.sock"])
        .unwrap();
    assert_eq!(m.engines, [("arm64".to_owned(), "unix:///tmp/arm.sock".to_owned())]);
    let refused = |engine: &str, needle: &str| {
        let err =
            multi(&["--arch", "amd64,arm64", "-b", "b:{arch}", "--engine", engine]).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains(engine), "{err}");
    };
    refused("s390x=tcp://h:2375", "not among --arch");
    refused("arm64", "ARCH=DOCKER_HOST");
    refused("arm64=ssh://builder", "forward");
    refused("arm64=builder:2375", "unix://");
}

#[test]
fn no_verify_is_the_old_skip_checksums_and_refused_beside_verify() {
    let parse = |args: &[&str]| {
        let cli =
            Cli::try_parse_from([&["nodeimg", "build", "node-image", "v1.30.0"][..], args].concat()).unwrap();
        let crate::cli::Command::Build(crate::cli::BuildCommand::NodeImage(args)) = cli.command else {
            unreachable!()
        };
        node_image(*args)
    };
    let (multi, _) = parse(&["--no-verify"]).unwrap();
    assert!(!multi.cfg.checksums, "--no-verify still skips checksums");
    assert_eq!(parse(&["--verify", "--no-verify"]).err(), Some(ConfigError::VerifyNoVerify));
}
