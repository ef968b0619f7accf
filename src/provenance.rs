//! The build report (`--report FILE`): what was built from what, and where it went, as JSON
//! for release tooling and as a short table for people. Plain data: it depends on no other
//! module, so any step can fill it in.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildReport {
    /// The multi-architecture index, when the build was pushed.
    pub index: Option<Pushed>,
    pub architectures: Vec<ArchReport>,
}

/// A reference in a registry and the digest it had when written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArchReport {
    pub arch: String,
    /// The local image name.
    pub image: String,
    pub image_id: String,
    pub pushed: Option<Pushed>,
    pub kubernetes: Kubernetes,
    pub base: Base,
    /// The images preloaded into the node.
    pub images: Vec<PreloadedImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kubernetes {
    pub version: String,
    pub source: KubernetesSource,
}

/// Where the Kubernetes binaries came from; only what applies to the kind is written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubernetesSource {
    pub kind: SourceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A tarball, directory or tree on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_state: Option<TreeState>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Release,
    Url,
    File,
    Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeState {
    Clean,
    Dirty,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Base {
    pub image: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub containerd: String,
    pub runc: String,
    pub cni_plugins: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PreloadedImage {
    /// The canonical name (`registry.k8s.io/pause:3.9`).
    pub name: String,
    pub digest: String,
    /// `linux/amd64`.
    pub platform: String,
    /// Where nodeimg took it from (`release`, `archive`, `registry`, `docker`, ...).
    pub origin: String,
}

impl BuildReport {
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("JSON of strings");
        bytes.push(b'\n');
        bytes
    }

    /// Writes the JSON report to `path` through a temporary file in the same directory and
    /// a rename, so a reader never sees half a report, and a failed build leaves the last
    /// complete one.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| std::io::Error::other("the report path names no file"))?;
        let temp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_file(&temp); // left by a process of the same id that died
        let written = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
            file.write_all(&self.to_json())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// A short plain-text summary for stderr: a line per architecture (local image ID and
    /// pushed digest), then a line per preloaded image, digests in pinnable form.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = Vec::new();
        if let Some(index) = &self.index {
            rows.push([
                "index".into(),
                pinned(&index.reference, &index.digest),
                String::new(),
                String::new(),
            ]);
        }
        for arch in &self.architectures {
            let pushed = arch
                .pushed
                .as_ref()
                .map_or_else(|| "not pushed".to_owned(), |p| pinned(&p.reference, &p.digest));
            rows.push([
                arch.arch.clone(),
                format!("{} {}", arch.image, short(&arch.image_id)),
                pushed,
                String::new(),
            ]);
        }
        for arch in &self.architectures {
            for image in &arch.images {
                let label = format!("  {}", arch.arch);
                rows.push([
                    label,
                    pinned(&image.name, &image.digest),
                    image.platform.clone(),
                    image.origin.clone(),
                ]);
            }
        }
        let widths: Vec<usize> =
            (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line += &format!("{cell:<width$}  ");
            }
            out += line.trim_end();
            out.push('\n');
        }
        out
    }
}

/// `name@sha256:…`, the form that pins an image: the tag is dropped, since a reference with
/// both is resolved by digest anyway and some tools refuse it.
fn pinned(name: &str, digest: &str) -> String {
    if digest.is_empty() {
        return name.to_owned();
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let repo = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    format!("{repo}@{digest}")
}

/// The 12 hex digits `docker images` shows.
fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn report() -> BuildReport {
        BuildReport {
            index: Some(Pushed { reference: "127.0.0.1:5000/kind/node:v1.30.0".into(), digest: D1.into() }),
            architectures: vec![ArchReport {
                arch: "amd64".into(),
                image: "kind/node:v1.30.0-amd64".into(),
                image_id: D2.into(),
                pushed: Some(Pushed {
                    reference: "127.0.0.1:5000/kind/node:v1.30.0-amd64".into(),
                    digest: D2.into(),
                }),
                kubernetes: Kubernetes {
                    version: "v1.30.0".into(),
                    source: KubernetesSource {
                        kind: SourceKind::Tree,
                        commit: Some("abc123".into()),
                        tree_state: Some(TreeState::Dirty),
                        ..Default::default()
                    },
                },
                base: Base {
                    image: "kindest/base:v1".into(),
                    id: D1.into(),
                    digest: None,
                    containerd: "1.7.13".into(),
                    runc: "1.1.12".into(),
                    cni_plugins: "1.4.0".into(),
                },
                images: vec![PreloadedImage {
                    name: "registry.k8s.io/pause:3.9".into(),
                    digest: D1.into(),
                    platform: "linux/amd64".into(),
                    origin: "release".into(),
                }],
            }],
        }
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let value: serde_json::Value = serde_json::from_slice(&report().to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "index": {"reference": "127.0.0.1:5000/kind/node:v1.30.0", "digest": D1},
                "architectures": [{
                    "arch": "amd64",
                    "image": "kind/node:v1.30.0-amd64",
                    "image_id": D2,
                    "pushed": {"reference": "127.0.0.1:5000/kind/node:v1.30.0-amd64", "digest": D2},
                    "kubernetes": {"version": "v1.30.0", "source": {"kind": "tree", "commit": "abc123", "tree_state": "dirty"}},
                    "base": {"image": "kindest/base:v1", "id": D1, "containerd": "1.7.13", "runc": "1.1.12", "cni_plugins": "1.4.0"},
                    "images": [{"name": "registry.k8s.io/pause:3.9", "digest": D1, "platform": "linux/amd64", "origin": "release"}],
                }],
            })
        );
        let unpushed = BuildReport { index: None, architectures: vec![ArchReport::default()] };
        let value: serde_json::Value = serde_json::from_slice(&unpushed.to_json()).unwrap();
        assert_eq!(value["index"], serde_json::Value::Null);
        assert_eq!(value["architectures"][0]["pushed"], serde_json::Value::Null);
        assert_eq!(value["architectures"][0]["kubernetes"]["source"], json!({"kind": "release"}));
    }

    #[test]
    fn the_table_pins_digests() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("index") && lines[0].contains(&format!("127.0.0.1:5000/kind/node@{D1}"))
        );
        assert!(lines[1].starts_with("amd64"), "{table}");
        assert!(lines[1].contains("kind/node:v1.30.0-amd64 222222222222"), "{table}");
        assert!(lines[1].contains(&format!("127.0.0.1:5000/kind/node@{D2}")), "{table}");
        assert!(lines[2].contains(&format!("registry.k8s.io/pause@{D1}")), "{table}");
        assert!(lines[2].contains("linux/amd64") && lines[2].ends_with("release"), "{table}");
        let unpushed = BuildReport {
            architectures: vec![ArchReport { arch: "arm64".into(), ..Default::default() }],
            index: None,
        };
        assert!(unpushed.table().contains("not pushed"));
    }

    #[test]
    fn pinned_names_drop_the_tag_not_the_port() {
        assert_eq!(pinned("localhost:5000/x:v1", D1), format!("localhost:5000/x@{D1}"));
        assert_eq!(pinned("localhost:5000/x", D1), format!("localhost:5000/x@{D1}"));
        assert_eq!(pinned("busybox", ""), "busybox");
    }

    #[test]
    fn reports_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, "old").unwrap();
        report().write_json(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), report().to_json());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("report.json")], "no temporary file is left");
        assert!(report().write_json(&dir.path().join("missing/report.json")).is_err());
    }
}
