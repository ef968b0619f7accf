//! containerd's configuration file, read and edited structurally in the two formats
//! current containerd reads: version 2 (containerd 1.x; 2.x migrates it in memory) and
//! version 3 (containerd 2.x), which moves the CRI settings to other plugin tables. Every
//! key nodeimg touches is named once, in [`ConfigVersion::path`]; edits keep comments,
//! layout and every other setting as they were.

use std::fmt;

use toml_edit::{DocumentMut, Item, TableLike, Value};

/// The format of a containerd config file (its top-level `version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigVersion {
    /// `version = 2`: the CRI plugin is `io.containerd.grpc.v1.cri`, one table.
    V2,
    /// `version = 3`: CRI is split into `io.containerd.cri.v1.images` and `...runtime`.
    V3,
}

/// The settings nodeimg reads or edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The pause image of pod sandboxes.
    SandboxImage,
    /// runc's cgroup driver; the kubelet must use the same.
    SystemdCgroup,
    /// The `certs.d` directory of per-registry `hosts.toml` files.
    RegistryConfigPath,
    /// Whether containerd clamps oom_score_adj (needed without CAP_SYS_RESOURCE).
    RestrictOomScoreAdj,
    /// The snapshotter CRI unpacks images with.
    Snapshotter,
}

const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const IMAGES_V3: &str = "io.containerd.cri.v1.images";
const RUNTIME_V3: &str = "io.containerd.cri.v1.runtime";

impl ConfigVersion {
    pub fn number(self) -> i64 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The full key of `setting` in this format, from the document root.
    pub fn path(self, setting: Setting) -> &'static [&'static str] {
        use Setting::*;
        match (self, setting) {
            (Self::V2, SandboxImage) => &["plugins", CRI_V2, "sandbox_image"],
            (Self::V3, SandboxImage) => &["plugins", IMAGES_V3, "pinned_images", "sandbox"],
            (Self::V2, SystemdCgroup) => {
                &["plugins", CRI_V2, "containerd", "runtimes", "runc", "options", "SystemdCgroup"]
            }
            (Self::V3, SystemdCgroup) => {
                &["plugins", RUNTIME_V3, "containerd", "runtimes", "runc", "options", "SystemdCgroup"]
            }
            (Self::V2, RegistryConfigPath) => &["plugins", CRI_V2, "registry", "config_path"],
            (Self::V3, RegistryConfigPath) => &["plugins", IMAGES_V3, "registry", "config_path"],
            (Self::V2, RestrictOomScoreAdj) => &["plugins", CRI_V2, "restrict_oom_score_adj"],
            (Self::V3, RestrictOomScoreAdj) => &["plugins", RUNTIME_V3, "restrict_oom_score_adj"],
            (Self::V2, Snapshotter) => &["plugins", CRI_V2, "containerd", "snapshotter"],
            (Self::V3, Snapshotter) => &["plugins", IMAGES_V3, "snapshotter"],
        }
    }
}

impl fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}", self.number())
    }
}

/// A key path as TOML writes it: `plugins."io.containerd.grpc.v1.cri".sandbox_image`.
pub fn dotted(path: &[&str]) -> String {
    let bare = |k: &str| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    path.iter()
        .map(|k| if bare(k) { (*k).to_owned() } else { format!("\"{k}\"") })
        .collect::<Vec<_>>()
        .join(".")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file} is not valid TOML: {source}")]
    Parse {
        file: String,
        #[source]
        source: toml_edit::TomlError,
    },
    #[error("{file}: `version` is not an integer")]
    VersionType { file: String },
    #[error(
        "{file} is a containerd config version {version}{hint}; nodeimg reads versions 2 (containerd 1.x, also read by 2.x) and 3 (containerd 2.x)",
        hint = if *version == 1 { " (no `version` means 1, whose CRI plugin is plugins.cri)" } else { "" }
    )]
    Version { file: String, version: i64 },
    #[error("{file} ({version}) sets no {key}")]
    Missing { file: String, version: ConfigVersion, key: String },
    #[error("{file} ({version}): {key} is not {expected}")]
    Type { file: String, version: ConfigVersion, key: String, expected: &'static str },
    #[error("{file} sets {key}, which containerd refuses next to config_path")]
    Mirrors { file: String, key: String },
}

/// A containerd config file, parsed; [`fmt::Display`] gives its text back.
#[derive(Clone, Debug)]
pub struct Config {
    file: String,
    version: ConfigVersion,
    doc: DocumentMut,
}

impl Config {
    /// Parses `text`, the content of `file` (named in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let doc: DocumentMut =
            text.parse().map_err(|source| ConfigError::Parse { file: file.to_owned(), source })?;
        // containerd reads a config without `version` as version 1.
        let number = match doc.get("version") {
            None => 1,
            Some(v) => v.as_integer().ok_or_else(|| ConfigError::VersionType { file: file.to_owned() })?,
        };
        let version = match number {
            2 => ConfigVersion::V2,
            3 => ConfigVersion::V3,
            version => return Err(ConfigError::Version { file: file.to_owned(), version }),
        };
        Ok(Self { file: file.to_owned(), version, doc })
    }

    pub fn version(&self) -> ConfigVersion {
        self.version
    }

    /// The pause image of pod sandboxes; an error if the file does not name one (nodeimg
    /// pre-pulls it, so containerd's built-in default is not good enough).
    pub fn sandbox_image(&self) -> Result<String, ConfigError> {
        self.string(Setting::SandboxImage)?.ok_or_else(|| self.missing(Setting::SandboxImage))
    }

    /// Whether runc runs with the systemd cgroup driver (containerd's default: false).
    pub fn systemd_cgroup(&self) -> Result<bool, ConfigError> {
        Ok(self.bool(Setting::SystemdCgroup)?.unwrap_or(false))
    }

    /// containerd's default: false.
    pub fn restrict_oom_score_adj(&self) -> Result<bool, ConfigError> {
        Ok(self.bool(Setting::RestrictOomScoreAdj)?.unwrap_or(false))
    }

    /// The CRI snapshotter, if the file names one.
    pub fn snapshotter(&self) -> Result<Option<String>, ConfigError> {
        self.string(Setting::Snapshotter)
    }

    /// The registry `certs.d` directory, if set and not empty.
    pub fn registry_config_path(&self) -> Result<Option<String>, ConfigError> {
        Ok(self.string(Setting::RegistryConfigPath)?.filter(|p| !p.is_empty()))
    }

    /// Sets runc's `SystemdCgroup`, creating its tables if needed.
    pub fn set_systemd_cgroup(&mut self, on: bool) -> Result<(), ConfigError> {
        self.set(Setting::SystemdCgroup, on.into())
    }

    /// Points CRI at a `certs.d` directory. containerd refuses a non-empty
    /// `registry.mirrors` next to `config_path`, so a config that has one is refused here.
    pub fn set_registry_config_path(&mut self, dir: &str) -> Result<(), ConfigError> {
        let path = self.version.path(Setting::RegistryConfigPath);
        let mut mirrors = path.to_vec();
        if let Some(leaf) = mirrors.last_mut() {
            *leaf = "mirrors";
        }
        let set = self.lookup(&mirrors)?.and_then(Item::as_table_like).is_some_and(|t| !t.is_empty());
        if set {
            return Err(ConfigError::Mirrors { file: self.file.clone(), key: dotted(&mirrors) });
        }
        self.set(Setting::RegistryConfigPath, dir.into())
    }

    /// What the entrypoint sets for KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER.
    pub fn set_snapshotter(&mut self, name: &str) -> Result<(), ConfigError> {
        self.set(Setting::Snapshotter, name.into())
    }

    /// What the entrypoint sets without CAP_SYS_RESOURCE.
    pub fn set_restrict_oom_score_adj(&mut self, on: bool) -> Result<(), ConfigError> {
        self.set(Setting::RestrictOomScoreAdj, on.into())
    }

    fn missing(&self, setting: Setting) -> ConfigError {
        let key = dotted(self.version.path(setting));
        ConfigError::Missing { file: self.file.clone(), version: self.version, key }
    }

    fn wrong_type(&self, path: &[&str], expected: &'static str) -> ConfigError {
        ConfigError::Type { file: self.file.clone(), version: self.version, key: dotted(path), expected }
    }

    /// The item at `path`; `None` if any part is missing, an error if a parent is not a table.
    fn lookup(&self, path: &[&str]) -> Result<Option<&Item>, ConfigError> {
        let mut item = self.doc.as_item();
        for (i, key) in path.iter().enumerate() {
            let table = item.as_table_like().ok_or_else(|| self.wrong_type(&path[..i], "a table"))?;
            match table.get(key) {
                Some(next) => item = next,
                None => return Ok(None),
            }
        }
        Ok(Some(item))
    }

    fn string(&self, setting: Setting) -> Result<Option<String>, ConfigError> {
        let path = self.version.path(setting);
        match self.lookup(path)? {
            None => Ok(None),
            Some(item) => {
                item.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| self.wrong_type(path, "a string"))
            }
        }
    }

    fn bool(&self, setting: Setting) -> Result<Option<bool>, ConfigError> {
        let path = self.version.path(setting);
        match self.lookup(path)? {
            None => Ok(None),
            Some(item) => item.as_bool().map(Some).ok_or_else(|| self.wrong_type(path, "a boolean")),
        }
    }

    /// Sets `setting` in place, keeping the comment after an existing value; missing tables
    /// are added (implicit, so only the innermost gets a header).
    fn set(&mut self, setting: Setting, mut value: Value) -> Result<(), ConfigError> {
        let path = self.version.path(setting);
        let (leaf, parents) = path.split_last().ok_or_else(|| self.wrong_type(path, "a key"))?;
        let mut table: &mut dyn TableLike = self.doc.as_table_mut();
        for (i, key) in parents.iter().enumerate() {
            if !table.contains_key(key) {
                let mut new = toml_edit::Table::new();
                new.set_implicit(true);
                // At the end of the file, not among its siblings: an addition stays in one piece.
                new.set_position(Some(isize::MAX));
                table.insert(key, Item::Table(new));
            }
            match table.get_mut(key).and_then(Item::as_table_like_mut) {
                Some(next) => table = next,
                None => {
                    let key = dotted(&parents[..=i]);
                    return Err(ConfigError::Type {
                        file: self.file.clone(),
                        version: self.version,
                        key,
                        expected: "a table",
                    });
                }
            }
        }
        match table.get_mut(leaf) {
            Some(Item::Value(old)) => {
                *value.decor_mut() = old.decor().clone();
                *old = value;
            }
            Some(_) => {
                return Err(ConfigError::Type {
                    file: self.file.clone(),
                    version: self.version,
                    key: dotted(path),
                    expected: "a value",
                });
            }
            None => {
                table.insert(leaf, Item::Value(value));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.doc)
    }
}
