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
