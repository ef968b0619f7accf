//! Incremental rebuilds: a node image records what went into it (binaries, images, base,
//! settings) in a label, so the next build of the same source starts from it and changes
//! only what differs, without opening the old image. A bound on the layer stack sends the
//! build back to a full one.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::archives::Archive;
use super::images::BuiltImage;
use super::sources::{Origin, Planned};
use crate::docker::{Docker, short_id};
use crate::progress::Reporter;

/// The record of what went in (JSON of [`Inputs`]).
pub const LABEL_INPUTS: &str = "io.nodeimg.inputs";
/// How many incremental layers sit on the last full build.
pub const LABEL_LAYERS: &str = "io.nodeimg.incremental.layers";
/// Bytes in the image's layers that a later layer replaced or removed.
pub const LABEL_DEAD_BYTES: &str = "io.nodeimg.incremental.dead-bytes";
/// Past this many incremental layers the next build is a full one.
pub const MAX_LAYERS: u32 = 10;
/// The identity of an image obtained by name (a mirror or upstream pull): a moved tag is
/// not noticed (`--full` refreshes).
pub const BY_NAME: &str = "by-name";

/// Where a build starts, as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FromNode {
    /// `--full`, and every build that stops before an image (`images list`, `images save`).
    #[default]
    Full,
    /// From the target tag when it holds a build of the same source.
    Auto,
    /// As `Auto`, from this image rather than the target (a multi-arch build stages each
    /// arch under a temporary name; its real name holds the image to build on).
    AutoOn(String),
    /// `--from-node IMAGE`.
    Image(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub digest: String,
    pub size: u64,
}

/// What went into a node image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub version: String,
    pub arch: String,
    /// The base image's ID.
    pub base: String,
    /// A digest of the settings that shape the image beyond its binaries and images.
    pub settings: String,
    pub binaries: BTreeMap<String, Item>,
    pub images: BTreeMap<String, Item>,
}

/// The image a rebuild starts from.
#[derive(Clone, Debug)]
pub struct Previous {
    pub reference: String,
    pub id: String,
    pub inputs: Inputs,
    pub layers: u32,
    pub dead_bytes: u64,
}

/// What this build is compared with: everything but the binaries and images.
pub struct Expected<'a> {
    pub source_label: String,
    pub arch: &'a str,
    pub base_id: &'a str,
    pub settings: String,
}

/// The previous image to start from, or none for a full build (saying why when a previous
/// image was there but cannot be used).
pub async fn choose(
    docker: &Docker,
    from: &FromNode,
    target: &str,
    expected: &Expected<'_>,
    reporter: &Reporter,
) -> Result<Option<Previous>> {
    let (reference, explicit) = match from {
        FromNode::Full => return Ok(None),
        FromNode::Auto => (target, false),
        FromNode::AutoOn(image) => (image.as_str(), false),
        FromNode::Image(image) => (image.as_str(), true),
    };
    let Some(info) = docker.inspect_image(reference).await? else {
        if explicit {
            bail!("--from-node {reference}: no such image");
        }
        return Ok(None);
    };
    let labels = &info.labels;
    let Some(inputs) = labels.get(LABEL_INPUTS).and_then(|l| serde_json::from_str::<Inputs>(l).ok()) else {
        if explicit {
            bail!(
                "--from-node {reference}: not a node image with nodeimg's record of its inputs \
                 (label {LABEL_INPUTS}); build without --from-node"
            );
        }
        return Ok(None);
    };
    if !explicit
        && labels.get(super::LABEL_KUBE_SOURCE).map(String::as_str) != Some(expected.source_label.as_str())
    {
        reporter.detail(format!("full build: {reference} was built from another source"));
        return Ok(None);
    }
    let previous = Previous {
        reference: reference.to_owned(),
        id: info.id.clone(),
        layers: labels.get(LABEL_LAYERS).and_then(|v| v.parse().ok()).unwrap_or(0),
        dead_bytes: labels.get(LABEL_DEAD_BYTES).and_then(|v| v.parse().ok()).unwrap_or(0),
        inputs,
    };
    if explicit && previous.inputs.arch != expected.arch {
        bail!(
            "--from-node {reference} is a {} node image; this build is for {}",
            previous.inputs.arch,
            expected.arch
        );
    }
    if let Some(why) = refusal(&previous, expected, info.size) {
        reporter.info(format!("full build: {why}"));
        return Ok(None);
    }
    reporter.info(format!(
        "incremental build on {reference} ({}): incremental layer {} of at most {MAX_LAYERS}",
        short_id(&previous.id),
        previous.layers + 1
    ));
    Ok(Some(previous))
}

/// Why `previous` cannot carry another layer, if it cannot.
fn refusal(previous: &Previous, expected: &Expected<'_>, size: u64) -> Option<String> {
    let name = &previous.reference;
    let inputs = &previous.inputs;
    if inputs.arch != expected.arch {
        Some(format!("{name} is for {}, this build for {}", inputs.arch, expected.arch))
    } else if inputs.base != expected.base_id {
        Some(format!(
            "the base image changed ({name} is on {}, this build on {})",
            short_id(&inputs.base),
            short_id(expected.base_id)
        ))
    } else if inputs.settings != expected.settings.as_str() {
        Some(format!("the node's settings (registry mirrors, proxies) changed since {name}"))
    } else if previous.layers >= MAX_LAYERS {
        Some(format!("{name} already has {} incremental layers (at most {MAX_LAYERS})", previous.layers))
    } else if previous.dead_bytes > size.saturating_sub(previous.dead_bytes) {
        Some(format!(
            "{name}'s layers hold {:.0} MB that later layers replaced, more than the {:.0} MB in use",
            previous.dead_bytes as f64 / 1e6,
            size.saturating_sub(previous.dead_bytes) as f64 / 1e6
        ))
    } else {
        None
    }
}

/// The names in `new` that are not in `old` with the same digest. An image obtained by name
/// counts as unchanged while its name is there.
pub fn changed<'a>(old: &BTreeMap<String, Item>, new: &'a BTreeMap<String, Item>) -> Vec<&'a str> {
    new.iter()
        .filter(|(name, item)| match old.get(*name) {
            Some(before) => item.digest != BY_NAME && before.digest != item.digest,
            None => true,
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

/// The names in `old` that a build with `new` replaces or no longer has.
pub fn replaced(old: &BTreeMap<String, Item>, new: &BTreeMap<String, Item>) -> Vec<String> {
    let changed = changed(old, new);
    old.keys().filter(|name| !new.contains_key(*name) || changed.contains(&name.as_str())).cloned().collect()
}

/// The bytes the old layers hold for what `replaced` names.
pub fn dead_bytes(old: &BTreeMap<String, Item>, replaced: &[String]) -> u64 {
    replaced.iter().filter_map(|name| old.get(name)).map(|item| item.size).sum()
}

/// Each planned image's record, and the plan with every image that is unchanged since the
/// previous image (`old`) marked kept. `kept_built` are images made here that were not made
/// again (their recipe is unchanged).
pub async fn identify(
    docker: &Docker,
    plan: &mut Vec<Planned>,
    kept_built: &[(String, Item)],
    built: &[BuiltImage],
    archives: &[Archive],
    old: &BTreeMap<String, Item>,
) -> Result<BTreeMap<String, Item>> {
    let by_name = || Item { digest: BY_NAME.to_owned(), size: 0 };
    let mut items = BTreeMap::new();
    for planned in plan.iter() {
        let item = match &planned.origin {
            Origin::Built(tar) => match built.iter().find(|b| &b.tar == tar) {
                Some(b) => {
                    Item { digest: b.digest.clone(), size: std::fs::metadata(tar).map_or(0, |m| m.len()) }
                }
                None => by_name(),
            },
            Origin::Archive(path) => archives
                .iter()
                .find(|a| &a.path == path)
                .and_then(|a| a.images.get(&planned.image).cloned().flatten())
                .map_or_else(by_name, |digest| Item { digest, size: 0 }),
            Origin::Host => match docker.inspect_image(&planned.image).await? {
                Some(info) => Item { digest: info.id, size: info.size },
                None => by_name(),
            },
            Origin::Mirror { .. } | Origin::Upstream { .. } | Origin::Missing | Origin::Kept => by_name(),
        };
        items.insert(planned.image.clone(), item);
    }
    for (name, item) in kept_built {
        plan.push(Planned { image: name.clone(), origin: Origin::Kept });
        items.insert(name.clone(), item.clone());
    }
    let changed: HashSet<String> = changed(old, &items).into_iter().map(str::to_owned).collect();
    for planned in plan.iter_mut().filter(|p| !changed.contains(&p.image)) {
        planned.origin = Origin::Kept;
        if let Some(before) = old.get(&planned.image) {
            items.insert(planned.image.clone(), before.clone());
        }
    }
    Ok(items)
}

/// The sha256 and size of a file, read off the runtime.
pub async fn file_item(path: &std::path::Path) -> Result<Item> {
    let path = path.to_owned();
    let item = tokio::task::spawn_blocking(move || -> std::io::Result<Item> {
        let size = std::fs::metadata(&path)?.len();
        Ok(Item { digest: format!("sha256:{}", crate::archive::sha256_file(&path)?), size })
    })
    .await??;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(pairs: &[(&str, &str, u64)]) -> BTreeMap<String, Item> {
        pairs.iter().map(|(n, d, s)| (n.to_string(), Item { digest: d.to_string(), size: *s })).collect()
    }

    #[test]
    fn changed_and_replaced_compare_digests_and_names() {
        let old = items(&[("a", "sha256:1", 10), ("b", "sha256:2", 20), ("c", BY_NAME, 30), ("d", "x", 40)]);
        let new = items(&[("a", "sha256:1", 10), ("b", "sha256:3", 21), ("c", BY_NAME, 30), ("e", "y", 5)]);
        assert_eq!(changed(&old, &new), vec!["b", "e"]);
        let gone = replaced(&old, &new);
        assert_eq!(gone, vec!["b", "d"]);
        assert_eq!(dead_bytes(&old, &gone), 60);
        // A by-name image that now comes with a content digest (an archive) is not re-imported
        // for that alone; a content-digest image now obtained by name neither.
        let now = items(&[("c", "sha256:9", 30)]);
        assert_eq!(changed(&old, &now), vec!["c"]);
        let by_name = items(&[("a", BY_NAME, 10)]);
        assert!(changed(&old, &by_name).is_empty());
    }

    fn previous(layers: u32, dead: u64) -> Previous {
        Previous {
            reference: "node:dev".into(),
            id: "sha256:0123456789abcdef".into(),
            inputs: Inputs {
                arch: "amd64".into(),
                base: "sha256:base".into(),
                settings: "s".into(),
                ..Default::default()
            },
            layers,
            dead_bytes: dead,
        }
    }

    #[test]
    fn the_layer_stack_is_bounded() {
        let expected = Expected {
            source_label: "x".into(),
            arch: "amd64",
            base_id: "sha256:base",
            settings: "s".into(),
        };
        assert_eq!(refusal(&previous(0, 0), &expected, 1000), None);
        assert_eq!(refusal(&previous(9, 400), &expected, 1000), None);
        let why = refusal(&previous(10, 0), &expected, 1000).unwrap();
        assert!(why.contains("10 incremental layers"), "{why}");
        let why = refusal(&previous(3, 600), &expected, 1000).unwrap();
        assert!(why.contains("replaced"), "{why}");
        let other =
            Expected { base_id: "sha256:other", source_label: "x".into(), settings: "s".into(), ..expected };
        assert!(refusal(&previous(0, 0), &other, 1000).unwrap().contains("base image changed"));
        let other = Expected { settings: "t".into(), base_id: "sha256:base", ..other };
        assert!(refusal(&previous(0, 0), &other, 1000).unwrap().contains("settings"));
    }

    #[test]
    fn inputs_round_trip_through_the_label() {
        let inputs = Inputs {
            version: "v1.30.0".into(),
            binaries: items(&[("kubelet", "sha256:1", 5)]),
            ..previous(0, 0).inputs
        };
        let label = serde_json::to_string(&inputs).unwrap();
        assert_eq!(serde_json::from_str::<Inputs>(&label).unwrap(), inputs);
    }
}
