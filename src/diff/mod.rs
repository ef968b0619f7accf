//! `nodeimg diff IMAGE_A IMAGE_B`: what differs between two node images, part by part
//! (Kubernetes binaries, Debian packages, images in containerd, kind's files and the
//! node's config files), so that a release engineer sees in one screen why two digests
//! differ. Layers and history are left out: they differ whenever anything does.

mod snapshot;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

pub use snapshot::{File, Snapshot, read};

/// One entry that is not the same in both: `a` absent means added in B, `b` absent removed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// For a text file in both: a unified diff of its lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<String>,
}

/// One part compared: how many entries each side has, and those that differ.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub count_a: usize,
    pub count_b: usize,
    pub changes: Vec<Change>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Diff {
    pub a: Side,
    pub b: Side,
    pub identical: bool,
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Side {
    pub image: String,
    pub id: String,
    pub kubernetes: String,
}

pub fn compare(a: &Snapshot, b: &Snapshot) -> Diff {
    let version = |s: &Snapshot| BTreeMap::from([("/kind/version".to_owned(), s.kubernetes.clone())]);
    let texts = |s: &Snapshot| s.files.iter().map(|(k, f)| (k.clone(), f.sha256.clone())).collect();
    let mut files = part("files", &texts(a), &texts(b));
    for change in &mut files.changes {
        let text = |s: &Snapshot| s.files.get(&change.name).and_then(|f| f.text.clone());
        if let (Some(old), Some(new)) = (text(a), text(b)) {
            let diff = similar::TextDiff::from_lines(&old, &new);
            change.lines = Some(diff.unified_diff().context_radius(1).to_string());
        }
    }
    let parts = vec![
        part("kubernetes", &version(a), &version(b)),
        part("binaries", &a.binaries, &b.binaries),
        part("packages", &a.packages, &b.packages),
        part("images", &a.images, &b.images),
        files,
    ];
    let side =
        |s: &Snapshot| Side { image: s.image.clone(), id: s.id.clone(), kubernetes: s.kubernetes.clone() };
    let identical = parts.iter().all(|p| p.changes.is_empty());
    Diff { a: side(a), b: side(b), identical, parts }
}

fn part(name: &'static str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Part {
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    let changes = names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| Change { name: n.clone(), a: a.get(n).cloned(), b: b.get(n).cloned(), lines: None })
        .collect();
    Part { name, count_a: a.len(), count_b: b.len(), changes }
}

impl Diff {
    /// One screen: a line per part, `+`/`-`/`~` per entry that differs, the changed lines of
    /// text files indented below them.
    pub fn text(&self) -> String {
        let mut out = format!(
            "A: {} ({})\nB: {} ({})\n",
            self.a.image,
            short(&self.a.id),
            self.b.image,
            short(&self.b.id)
        );
        for part in &self.parts {
            let counts = match part.count_a == part.count_b {
                true => part.count_a.to_string(),
                false => format!("{} -> {}", part.count_a, part.count_b),
            };
            if part.changes.is_empty() {
                let _ = writeln!(out, "{}: identical ({counts})", part.name);
                continue;
            }
            let _ = writeln!(out, "{}: {} differ ({counts})", part.name, part.changes.len());
            for c in &part.changes {
                let _ = match (&c.a, &c.b) {
                    (None, Some(b)) => writeln!(out, "  + {}  {}", c.name, short(b)),
                    (Some(a), None) => writeln!(out, "  - {}  {}", c.name, short(a)),
                    (Some(a), Some(b)) => writeln!(out, "  ~ {}  {} -> {}", c.name, short(a), short(b)),
                    (None, None) => Ok(()),
                };
                for line in c
                    .lines
                    .iter()
                    .flat_map(|l| l.lines())
                    .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
                {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        out.push_str(if self.identical { "the images hold the same\n" } else { "" });
        out
    }
}

/// A sha256 (bare or `sha256:`) cut to 12 hex digits; anything else as it is.
fn short(value: &str) -> &str {
    let hex = value.strip_prefix("sha256:").unwrap_or(value);
    let is_sum = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_sum { &value[..value.len() - hex.len() + 12] } else { value }
}

#[cfg(test)]
mod tests;
