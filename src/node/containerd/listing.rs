//! `ctr images ls` read back: what a node's containerd holds.

/// One image in the node's containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub digest: String,
    /// As ctr prints it (rounded), in bytes.
    pub size: u64,
    /// `linux/amd64`, or a comma-separated list for a multi-platform image.
    pub platforms: String,
    /// Labelled `io.cri-containerd.pinned=pinned`: the kubelet's garbage collection keeps it.
    pub pinned: bool,
}

/// `ctr images ls`: REF TYPE DIGEST SIZE (two words) PLATFORMS LABELS. Names made of a
/// digest only (`sha256:…`, ctr's `import-…@sha256:…`) are left out: they name the same
/// images again.
pub fn parse_listing(listing: &str) -> Vec<Held> {
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, digest, labels) = (words.first()?, words.get(2)?, words.last()?);
            if name.starts_with("sha256:") || name.starts_with("import-") {
                return None;
            }
            Some(Held {
                name: (*name).to_owned(),
                digest: (*digest).to_owned(),
                size: words.get(3..5).and_then(|w| parse_size(&w.join(" "))).unwrap_or(0),
                platforms: words.get(5).map_or_else(String::new, |p| (*p).to_owned()),
                pinned: labels.split(',').any(|l| l == "io.cri-containerd.pinned=pinned"),
            })
        })
        .collect()
}

/// `12.3 MiB` (ctr's sizes) → bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text.trim().split_once(' ').unwrap_or((text.trim(), "B"));
    let factor = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| (n * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_sizes_parse() {
        assert_eq!(parse_size("512.0 B"), Some(512));
        assert_eq!(parse_size("1.5 KiB"), Some(1536));
        assert_eq!(parse_size("2.0 MiB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn reads_ctrs_listing() {
        let listing = "\
REF                               TYPE                                                 DIGEST                                                                  SIZE      PLATFORMS   LABELS
docker.io/library/busybox:1       application/vnd.docker.distribution.manifest.v2+json sha256:aaa 1.2 MiB   linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned
import-2024-01-01@sha256:bbb      application/vnd.oci.image.manifest.v1+json           sha256:bbb 3.0 KiB   linux/amd64 -
registry.k8s.io/pause:3.9         application/vnd.oci.image.manifest.v1+json           sha256:ccc 300.0 KiB linux/amd64 -
";
        assert_eq!(
            parse_listing(listing),
            vec![
                Held {
                    name: "docker.io/library/busybox:1".into(),
                    digest: "sha256:aaa".into(),
                    size: 1258291,
                    platforms: "linux/amd64".into(),
                    pinned: true
                },
                Held {
                    name: "registry.k8s.io/pause:3.9".into(),
                    digest: "sha256:ccc".into(),
                    size: 307200,
                    platforms: "linux/amd64".into(),
                    pinned: false
                },
            ]
        );
    }
}
