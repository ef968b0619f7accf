//! The pod network `nodeimg verify` installs: the image's own default CNI (kindnetd, as
//! kind applies it) when every image it needs is in the node, else a bridge + host-local
//! conflist written for the check.

use anyhow::Result;
use serde::Serialize;

use crate::nodeimage::images::normalize;

pub const DEFAULT_MANIFEST: &str = "/kind/manifests/default-cni.yaml";
pub const BRIDGE_CONFLIST: &str = "/etc/cni/net.d/10-nodeimg-bridge.conflist";
const BRIDGE_TEMPLATE: &str = include_str!("../../templates/bridge.conflist.hbs");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// The image's default CNI if all its images are in the node, else bridge.
    Auto,
    /// `/kind/manifests/default-cni.yaml`, applied like kind does.
    Default,
    /// A bridge + host-local conflist, no pods needed.
    Bridge,
}

/// The images a manifest runs (`image:` fields), canonical.
pub fn manifest_images(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| normalize(i.trim().trim_matches(['"', '\''])))
        .collect()
}

/// Which CNI `choice` comes to for a node holding `present` images (canonical names), and
/// the reason when auto falls back to the bridge.
pub fn decide(choice: Cni, manifest: Option<&str>, present: &[String]) -> (Cni, Option<String>) {
    if choice != Cni::Auto {
        return (choice, None);
    }
    let Some(manifest) = manifest else {
        return (Cni::Bridge, Some(format!("the image has no {DEFAULT_MANIFEST}")));
    };
    let missing: Vec<String> =
        manifest_images(manifest).into_iter().filter(|i| !present.contains(i)).collect();
    if missing.is_empty() {
        (Cni::Default, None)
    } else {
        (Cni::Bridge, Some(format!("the default CNI's images are not in the node: {}", missing.join(", "))))
    }
}

/// kind fills the manifest's `{{ .PodSubnet }}` when it creates a cluster.
pub fn fill_pod_subnet(manifest: &str, subnet: &str) -> String {
    manifest.replace("{{ .PodSubnet }}", subnet)
}

pub fn bridge_conflist(subnet: &str) -> Result<String> {
    #[derive(Serialize)]
    struct Vars<'a> {
        subnet: &'a str,
    }
    Ok(crate::templates::render(BRIDGE_TEMPLATE, &Vars { subnet })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_manifest() -> String {
        crate::nodeimage::manifests::render()
            .unwrap()
            .into_iter()
            .find(|(p, _)| *p == DEFAULT_MANIFEST)
            .unwrap()
            .1
    }

    #[test]
    fn auto_takes_the_default_cni_only_when_its_images_are_there() {
        let manifest = default_manifest();
        let images = manifest_images(&manifest);
        assert_eq!(images, vec!["docker.io/kindest/kindnetd:v20240513-cd2ac642"]);
        assert_eq!(decide(Cni::Auto, Some(&manifest), &images), (Cni::Default, None));
        let (cni, why) = decide(Cni::Auto, Some(&manifest), &[]);
        assert_eq!(cni, Cni::Bridge);
        assert!(why.unwrap().contains("kindnetd"));
        assert_eq!(decide(Cni::Auto, None, &images).0, Cni::Bridge);
        assert_eq!(decide(Cni::Bridge, Some(&manifest), &images), (Cni::Bridge, None));
    }

    #[test]
    fn pod_subnet_is_filled_in() {
        let filled = fill_pod_subnet(&default_manifest(), "10.244.0.0/16");
        assert!(filled.contains("value: \"10.244.0.0/16\""));
        assert!(!filled.contains("PodSubnet"));
    }

    #[test]
    fn bridge_conflist_is_json_with_the_subnet() {
        let conf: serde_json::Value =
            serde_json::from_str(&bridge_conflist("10.244.0.0/24").unwrap()).unwrap();
        let plugins = conf["plugins"].as_array().unwrap();
        assert_eq!(plugins[0]["type"], "bridge");
        assert_eq!(plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.244.0.0/24");
        assert!(plugins.iter().any(|p| p["type"] == "loopback"));
    }
}
