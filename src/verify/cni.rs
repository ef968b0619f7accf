//! The pod network `nodeimg verify` installs: the image's own default CNI (kindnetd, as
//! kind applies it) when every image it needs is in the node, else a bridge + host-local
//! conflist written for the check.

use anyhow::Result;
use serde::Serialize;

use crate::reference::normalize;

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
