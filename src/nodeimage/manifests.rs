//! kind's manifests (`/kind/manifests/*`), rendered from `templates/` with handlebars. The
//! image variables come from one table, [`DEFAULT_IMAGES`].

use anyhow::Result;

/// The images the manifests use, by template variable. The single place they are named.
pub const DEFAULT_IMAGES: [(&str, &str); 3] = [
    ("kindnetd_image", "docker.io/kindest/kindnetd:v20240513-cd2ac642"),
    ("local_path_provisioner_image", "docker.io/kindest/local-path-provisioner:v20240513-b9bba138"),
    ("local_path_helper_image", "docker.io/kindest/local-path-helper:v20230510-486859a6"),
];

const TEMPLATES: [(&str, &str); 2] = [
    ("/kind/manifests/default-cni.yaml", include_str!("../../templates/default-cni.yaml.hbs")),
    ("/kind/manifests/default-storage.yaml", include_str!("../../templates/default-storage.yaml.hbs")),
];

pub fn default_images() -> impl Iterator<Item = &'static str> {
    DEFAULT_IMAGES.iter().map(|(_, image)| *image)
}

/// Every manifest, as (path in the node, content).
pub fn render() -> Result<Vec<(&'static str, String)>> {
    let vars: std::collections::BTreeMap<_, _> = DEFAULT_IMAGES.into_iter().collect();
    TEMPLATES.iter().map(|(path, template)| Ok((*path, crate::templates::render(template, &vars)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::cni;

    // verify reads these manifests the way kind does: checked here, where they are made.
    fn default_manifest() -> String {
        render().unwrap().into_iter().find(|(p, _)| *p == cni::DEFAULT_MANIFEST).unwrap().1
    }

    #[test]
    fn auto_takes_the_default_cni_only_when_its_images_are_there() {
        let manifest = default_manifest();
        let images = cni::manifest_images(&manifest);
        assert_eq!(images, vec!["docker.io/kindest/kindnetd:v20240513-cd2ac642"]);
        assert_eq!(cni::decide(cni::Cni::Auto, Some(&manifest), &images), (cni::Cni::Default, None));
        let (cni, why) = cni::decide(cni::Cni::Auto, Some(&manifest), &[]);
        assert_eq!(cni, cni::Cni::Bridge);
        assert!(why.unwrap().contains("kindnetd"));
        assert_eq!(cni::decide(cni::Cni::Auto, None, &images).0, cni::Cni::Bridge);
        assert_eq!(cni::decide(cni::Cni::Bridge, Some(&manifest), &images), (cni::Cni::Bridge, None));
    }

    #[test]
    fn the_default_cni_is_filled_and_patched_the_way_kind_does() {
        let manifest = default_manifest();
        assert!(manifest.lines().any(|l| l == format!("# {}", cni::TEMPLATE_MARKER)), "{manifest}");
        assert!(manifest.lines().any(|l| l == format!("# {}", cni::PATCH_MARKER)), "{manifest}");
        let filled = cni::kind_template(&manifest, "10.244.0.0/16", "172.18.0.2:6443").unwrap();
        assert!(!cni::unfilled(&filled), "no template action left:\n{filled}");
        let docs: Vec<serde_yaml_ng::Value> = filled
            .split("\n---\n")
            .filter_map(|d| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d).ok())
            .filter(|d| !d.is_null())
            .collect();
        let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
        let container = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["name"], "kindnet-cni");
        let env: Vec<(String, Option<String>)> = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().map(str::to_owned)))
            .collect();
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["HOST_IP", "POD_IP", "POD_SUBNET", "CONTROL_PLANE_ENDPOINT"]);
        assert_eq!(env[2].1.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(env[3].1.as_deref(), Some("172.18.0.2:6443"));
        assert_eq!(docs.len(), 4, "ClusterRole, ClusterRoleBinding, ServiceAccount, DaemonSet");
    }

    #[test]
    fn manifests_name_the_default_images() {
        let rendered = render().unwrap();
        let cni = &rendered.iter().find(|(p, _)| p.ends_with("default-cni.yaml")).unwrap().1;
        assert!(cni.contains("image: docker.io/kindest/kindnetd:v20240513-cd2ac642"));
        assert!(cni.contains("value: \"{{ .PodSubnet }}\""), "kind's own placeholder survives");
        let storage = &rendered.iter().find(|(p, _)| p.ends_with("default-storage.yaml")).unwrap().1;
        assert!(storage.contains("image: docker.io/kindest/local-path-provisioner:"));
        assert!(storage.contains("docker.io/kindest/local-path-helper:"));
        assert!(!storage.contains("{{"), "every variable was filled");
    }
}
