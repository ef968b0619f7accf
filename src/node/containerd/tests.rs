//! Every read and edit against real configs of each version: what `containerd config default`
//! prints for containerd 1.6, 1.7 and 2.1 (testdata/, see each file's header), a config
//! shaped like kind's, and nodeimg's own base config. The entrypoint's shell edits run
//! against the same files and must agree with the Rust ones.

use std::process::Command;

use super::*;

const C16: &str = include_str!("testdata/config-1.6.toml");
const C17: &str = include_str!("testdata/config-1.7.toml");
const C21: &str = include_str!("testdata/config-2.1.toml");
const KIND: &str = include_str!("testdata/kind-base.toml");
const BASE: &str = include_str!("../../../base-image/files/etc/containerd/config.toml");
const ENTRYPOINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/base-image/files/usr/local/bin/entrypoint");

struct Fixture {
    name: &'static str,
    text: &'static str,
    version: ConfigVersion,
    sandbox: &'static str,
    systemd: bool,
}

const FIXTURES: [Fixture; 5] = [
    Fixture {
        name: "1.6",
        text: C16,
        version: ConfigVersion::V2,
        sandbox: "registry.k8s.io/pause:3.6",
        systemd: false,
    },
    Fixture {
        name: "1.7",
        text: C17,
        version: ConfigVersion::V2,
        sandbox: "registry.k8s.io/pause:3.8",
        systemd: false,
    },
    Fixture {
        name: "2.1",
        text: C21,
        version: ConfigVersion::V3,
        sandbox: "registry.k8s.io/pause:3.10",
        systemd: false,
    },
    Fixture {
        name: "kind",
        text: KIND,
        version: ConfigVersion::V2,
        sandbox: "registry.k8s.io/pause:3.10",
        systemd: true,
    },
    Fixture {
        name: "base",
        text: BASE,
        version: ConfigVersion::V2,
        sandbox: "registry.k8s.io/pause:3.9",
        systemd: false,
    },
];

fn parse(text: &str) -> Config {
    Config::parse(CONFIG, text).unwrap()
}

/// The lines of `after` that differ from `before`, when the edit changed lines in place.
fn changed_lines(before: &str, after: &str) -> Vec<String> {
    let (b, a): (Vec<_>, Vec<_>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(b.len(), a.len(), "an in-place edit keeps the line count:\n{after}");
    b.iter().zip(&a).filter(|(x, y)| x != y).map(|(_, y)| y.trim().to_owned()).collect()
}

#[test]
fn reads_every_fixture() {
    for f in &FIXTURES {
        let config = parse(f.text);
        assert_eq!(config.version(), f.version, "{}", f.name);
        assert_eq!(config.sandbox_image().unwrap(), f.sandbox, "{}", f.name);
        assert_eq!(config.systemd_cgroup().unwrap(), f.systemd, "{}", f.name);
        assert!(!config.restrict_oom_score_adj().unwrap(), "{}", f.name);
        assert_eq!(config.snapshotter().unwrap().as_deref(), Some("overlayfs"), "{}", f.name);
        assert_eq!(config.registry_config_path().unwrap(), None, "{}", f.name);
        assert_eq!(config.to_string(), f.text, "{}: parsing alone changes nothing", f.name);
    }
}

#[test]
fn edits_the_default_configs_in_place() {
    for f in &FIXTURES[..3] {
        let quote = if f.version == ConfigVersion::V3 { '\'' } else { '"' };
        let mut config = parse(f.text);
        config.set_systemd_cgroup(true).unwrap();
        assert_eq!(changed_lines(f.text, &config.to_string()), ["SystemdCgroup = true"], "{}", f.name);
        assert!(parse(&config.to_string()).systemd_cgroup().unwrap());

        let mut config = parse(f.text);
        config.set_registry_config_path(CERTS_D).unwrap();
        let line = format!("config_path = \"{CERTS_D}\"");
        assert_eq!(changed_lines(f.text, &config.to_string()), [line], "{}", f.name);
        let reread = parse(&config.to_string());
        assert_eq!(reread.registry_config_path().unwrap().as_deref(), Some(CERTS_D));
        // 1.7's transfer plugin has a config_path of its own: untouched.
        assert_eq!(
            config.to_string().matches(&format!("config_path = {quote}{quote}")).count(),
            f.text.matches(&format!("config_path = {quote}{quote}")).count() - 1
        );

        let mut config = parse(f.text);
        config.set_snapshotter("native").unwrap();
        config.set_restrict_oom_score_adj(true).unwrap();
        let changed = changed_lines(f.text, &config.to_string());
        assert_eq!(changed.len(), 2, "{}: {changed:?}", f.name);
        assert!(changed.contains(&"snapshotter = \"native\"".to_owned()), "{}: {changed:?}", f.name);
        assert!(changed.contains(&"restrict_oom_score_adj = true".to_owned()), "{}: {changed:?}", f.name);
    }
}

#[test]
fn each_version_has_its_own_keys() {
    let v2 = ConfigVersion::V2;
    let v3 = ConfigVersion::V3;
    assert_eq!(dotted(v2.path(Setting::SandboxImage)), "plugins.\"io.containerd.grpc.v1.cri\".sandbox_image");
    assert_eq!(
        dotted(v3.path(Setting::SandboxImage)),
        "plugins.\"io.containerd.cri.v1.images\".pinned_images.sandbox"
    );
    assert_eq!(
        dotted(v3.path(Setting::SystemdCgroup)),
        "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options.SystemdCgroup"
    );
    assert_eq!(
        dotted(v3.path(Setting::RegistryConfigPath)),
        "plugins.\"io.containerd.cri.v1.images\".registry.config_path"
    );
    assert_eq!(
        dotted(v3.path(Setting::RestrictOomScoreAdj)),
        "plugins.\"io.containerd.cri.v1.runtime\".restrict_oom_score_adj"
    );
    assert_eq!(
        dotted(v2.path(Setting::Snapshotter)),
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.snapshotter"
    );
    assert_eq!(dotted(v3.path(Setting::Snapshotter)), "plugins.\"io.containerd.cri.v1.images\".snapshotter");
    // A v3 file with a leftover v2 table is read by its own version's keys only.
    let mixed = "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"old\"\n";
    let err = parse(mixed).sandbox_image().unwrap_err().to_string();
    assert!(
        err.contains("(version 3) sets no plugins.\"io.containerd.cri.v1.images\".pinned_images.sandbox"),
        "{err}"
    );
}

#[test]
fn refuses_version_1_and_unknown_versions() {
    let err = Config::parse(CONFIG, "[plugins.cri]\nsandbox_image = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains(CONFIG) && err.contains("version 1") && err.contains("plugins.cri"), "{err}");
    let err = Config::parse("/x.toml", "version = 4\n").unwrap_err().to_string();
    assert!(err.starts_with("/x.toml is a containerd config version 4;"), "{err}");
    let err = Config::parse("/x.toml", "version = \"2\"\n").unwrap_err().to_string();
    assert!(err.contains("not an integer"), "{err}");
    assert!(Config::parse("/x.toml", "version = [").unwrap_err().to_string().contains("not valid TOML"));
}

#[test]
fn config_path_is_refused_next_to_mirrors() {
    for (version, table) in [(2, "io.containerd.grpc.v1.cri"), (3, "io.containerd.cri.v1.images")] {
        let text = format!(
            "version = {version}\n[plugins.\"{table}\".registry.mirrors.\"docker.io\"]\nendpoint = [\"x\"]\n"
        );
        let err = parse(&text).set_registry_config_path(CERTS_D).unwrap_err().to_string();
        assert!(err.contains("registry.mirrors") && err.contains("refuses"), "{err}");
    }
}

#[test]
fn missing_tables_are_added_with_one_header() {
    for (version, header) in [
        (2, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]"),
        (3, "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]"),
    ] {
        let mut config = parse(&format!("version = {version}\n"));
        config.set_systemd_cgroup(false).unwrap();
        let text = config.to_string();
        assert_eq!(text.lines().filter(|l| l.starts_with('[')).collect::<Vec<_>>(), [header], "{text}");
        assert!(!parse(&text).systemd_cgroup().unwrap());
        assert!(config.sandbox_image().unwrap_err().to_string().contains("sets no"));
    }
    let mut bad = parse("version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\" = 1\n");
    let err = bad.set_systemd_cgroup(true).unwrap_err().to_string();
    assert!(err.contains("plugins.\"io.containerd.grpc.v1.cri\" is not a table"), "{err}");
}

/// kind's config through nodeimg's edits (what a build with --node-registry-mirror does, and
/// the cgroupfs driver for Kubernetes < 1.24): everything else stays byte for byte.
#[test]
fn kind_shaped_config_keeps_everything_else() {
    let mut config = parse(KIND);
    config.set_systemd_cgroup(false).unwrap();
    config.set_registry_config_path(CERTS_D).unwrap();
    let expected =
        KIND.replacen(
            "SystemdCgroup = true # the kubelet's driver",
            "SystemdCgroup = false # the kubelet's driver",
            1,
        ) + &format!("\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"{CERTS_D}\"\n");
    assert_eq!(config.to_string(), expected);
    let doc: toml_edit::DocumentMut = config.to_string().parse().unwrap();
    let handler = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["test-handler"];
    assert_eq!(handler["options"]["SystemdCgroup"].as_bool(), Some(true), "only runc changes");
}

/// Runs `fix_snapshotter` and the oom_score_adj edit of the entrypoint on a copy of `text`.
fn entrypoint_edits(text: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, text).unwrap();
    let script = format!(
        "source {ENTRYPOINT}; CONTAINERD_CONFIG={}; fix_snapshotter; set_containerd runtime restrict_oom_score_adj true",
        file.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER", "fuse-overlayfs")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    (std::fs::read_to_string(&file).unwrap(), log)
}

#[test]
fn entrypoint_edits_agree_with_the_rust_ones() {
    for f in &FIXTURES {
        let (edited, log) = entrypoint_edits(f.text);
        assert!(log.contains("containerd snapshotter: fuse-overlayfs"), "{}: {log}", f.name);
        let mut rust = parse(f.text);
        rust.set_snapshotter("fuse-overlayfs").unwrap();
        rust.set_restrict_oom_score_adj(true).unwrap();
        assert_eq!(edited, rust.to_string(), "{}: shell and Rust edit the same lines", f.name);
        let shell = parse(&edited);
        assert_eq!(shell.snapshotter().unwrap().as_deref(), Some("fuse-overlayfs"));
        assert!(shell.restrict_oom_score_adj().unwrap());
    }
}

#[test]
fn entrypoint_adds_missing_keys_and_leaves_version_1_alone() {
    let v3 = "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'] # CRI runtime\n  enable_cdi = true\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n";
    let (edited, _) = entrypoint_edits(v3);
    let config = parse(&edited);
    assert!(config.restrict_oom_score_adj().unwrap(), "added to the existing table:\n{edited}");
    assert_eq!(config.snapshotter().unwrap().as_deref(), Some("fuse-overlayfs"), "a new table:\n{edited}");
    assert!(edited.starts_with("version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'] # CRI runtime\n  enable_cdi = true\nrestrict_oom_score_adj = true\n"), "{edited}");

    let v1 = "[plugins.cri]\n  sandbox_image = \"x\"\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, v1).unwrap();
    let script = format!("source {ENTRYPOINT}; CONTAINERD_CONFIG={}; fix_snapshotter", file.display());
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER", "native")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("config version 1 is not supported"), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), v1);
}
