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
    fn pod_subnet_is_filled_in() {
        let filled = cni::fill_pod_subnet(&default_manifest(), "10.244.0.0/16");
        assert!(filled.contains("value: \"10.244.0.0/16\""));
        assert!(!filled.contains("PodSubnet"));
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
