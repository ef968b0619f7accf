//! `nodeimg save` / `nodeimg load`: images carried between machines without a registry, as
//! docker-save tarballs (plain, gzip or zstd) with a `sha256sum` file beside them.

mod load;
mod save;

pub use load::{Archive, load, verify};
pub use save::save;

pub use crate::archive::Compression;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where `save` writes; `config` checks it before Docker is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveTarget {
    pub path: PathBuf,
    pub compression: Compression,
}

/// `FILE.sha256`.
pub fn checksum_path(path: &Path) -> PathBuf {
    with_suffix(path, ".sha256")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// One line of `sha256sum` output for `path`, which `sha256sum -c` run beside it accepts.
/// Like sha256sum, a name with a backslash or newline is escaped and the line marked `\`.
pub fn checksum_line(hex: &str, path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.contains(['\\', '\n']) {
        format!("\\{hex}  {}\n", name.replace('\\', "\\\\").replace('\n', "\\n"))
    } else {
        format!("{hex}  {name}\n")
    }
}

/// The sha256 a checksum file gives for `name`: the line naming it, else the only line
/// (the archive may have been renamed together with its checksum file).
pub fn expected_checksum(text: &str, name: &str) -> Option<String> {
    let entries: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let escaped = line.starts_with('\\');
            let (hex, file) = line.trim_start_matches('\\').split_once(' ')?;
            let file = file.strip_prefix([' ', '*'])?;
            let file =
                if escaped { file.replace("\\n", "\n").replace("\\\\", "\\") } else { file.to_owned() };
            let ok = hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
            ok.then(|| (hex.to_ascii_lowercase(), file))
        })
        .collect();
    match entries.iter().find(|(_, file)| file == name) {
        Some((hex, _)) => Some(hex.clone()),
        None if entries.len() == 1 => Some(entries[0].0.clone()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files_are_in_sha256sum_format() {
        let hex = "0a".repeat(32);
        assert_eq!(checksum_line(&hex, Path::new("/out/node.tar.gz")), format!("{hex}  node.tar.gz\n"));
        assert_eq!(checksum_line(&hex, Path::new("a\\b")), format!("\\{hex}  a\\\\b\n"));
        assert_eq!(checksum_path(Path::new("/out/node.tar.gz")), Path::new("/out/node.tar.gz.sha256"));
    }

    #[test]
    fn checksums_are_found_by_name_or_as_the_only_line() {
        let (a, b) = ("aa".repeat(32), "BB".repeat(32));
        let two = format!("{a}  node.tar\n{b} *other.tar\n");
        assert_eq!(expected_checksum(&two, "other.tar"), Some("bb".repeat(32)));
        assert_eq!(expected_checksum(&two, "missing.tar"), None);
        assert_eq!(expected_checksum(&format!("{a}  renamed.tar\n"), "node.tar"), Some(a.clone()));
        assert_eq!(expected_checksum(&checksum_line(&a, Path::new("a\\b")), "a\\b"), Some(a));
        assert_eq!(expected_checksum("not a checksum\n", "node.tar"), None);
        assert_eq!(expected_checksum("", "node.tar"), None);
    }
}
