//! Static pod manifests (`/etc/kubernetes/manifests/*.yaml`, kubeadm's layout): the kubelet
//! restarts a static pod when its manifest's content changes, not when an image under the
//! same name changes. So a changed image is written into the manifest (its new name, when the
//! tag changed) with an annotation naming its digest, which changes the pod's hash even when
//! the name did not. Edited as text, line by line, to leave kubeadm's file otherwise as it was.

/// The annotation that carries the digests of the images an update put in.
pub const ANNOTATION: &str = "io.nodeimg.update/images";

/// An image the update changed: its name without tag (`registry/repo`), the reference it
/// now has in containerd, the digest of that, and the digest it had before (none when the
/// image is new to the node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub name: String,
    pub reference: String,
    pub digest: String,
    pub old: Option<String>,
}

/// `manifest` with every container image of a changed name replaced, and the annotation
/// set; `None` when it uses none of them.
pub fn rewrite(manifest: &str, changed: &[Changed]) -> Option<String> {
    let mut hits = Vec::new();
    let mut lines: Vec<String> = manifest
        .lines()
        .map(|line| {
            let Some((indent, image)) = image_line(line) else { return line.to_owned() };
            let name = crate::reference::ImageRef::parse(image).map(|r| r.name()).unwrap_or_default();
            match changed.iter().find(|c| c.name == name) {
                Some(c) => {
                    hits.push(c.digest.clone());
                    format!("{indent}image: {}", c.reference)
                }
                None => line.to_owned(),
            }
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort();
    hits.dedup();
    let value = format!("    {ANNOTATION}: \"{}\"", hits.join(","));
    lines.retain(|l| !l.trim_start().starts_with(&format!("{ANNOTATION}:")));
    let metadata = lines.iter().position(|l| l == "metadata:")?;
    match lines.get(metadata + 1) {
        Some(next) if next == "  annotations:" => lines.insert(metadata + 2, value),
        _ => {
            lines.insert(metadata + 1, "  annotations:".to_owned());
            lines.insert(metadata + 2, value);
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Some(text)
}

/// `(indentation, image)` of an `image:` line (a container's, `- image:` included).
fn image_line(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start_matches([' ', '-']);
    let image = trimmed.strip_prefix("image:")?.trim().trim_matches(['"', '\'']);
    Some((&line[..line.len() - trimmed.len()], image))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APISERVER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 172.18.0.2:6443\n  creationTimestamp: null\n  labels:\n    component: kube-apiserver\n  name: kube-apiserver\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    image: k8s.gcr.io/kube-apiserver:v1.20.2\n    imagePullPolicy: IfNotPresent\n";
    const SCHEDULER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  name: kube-scheduler\nspec:\n  containers:\n  - image: k8s.gcr.io/kube-scheduler:v1.20.2\n";

    fn changed(name: &str, reference: &str, digest: &str) -> Changed {
        Changed { name: name.into(), reference: reference.into(), digest: digest.into(), old: None }
    }

    #[test]
    fn a_changed_image_is_written_in_with_its_digest() {
        let c = [changed("k8s.gcr.io/kube-apiserver", "k8s.gcr.io/kube-apiserver:v1.20.2", "sha256:aa")];
        let out = rewrite(APISERVER, &c).unwrap();
        assert!(
            out.contains(
                "metadata:\n  annotations:\n    io.nodeimg.update/images: \"sha256:aa\"\n    kubeadm."
            ),
            "{out}"
        );
        assert!(out.contains("    image: k8s.gcr.io/kube-apiserver:v1.20.2\n    imagePullPolicy"), "{out}");
        // A second update replaces the annotation rather than adding one.
        let again = rewrite(
            &out,
            &[changed("k8s.gcr.io/kube-apiserver", "k8s.gcr.io/kube-apiserver:v1.20.3", "sha256:bb")],
        )
        .unwrap();
        assert_eq!(again.matches(ANNOTATION).count(), 1, "{again}");
        assert!(
            again.contains("\"sha256:bb\"") && again.contains("image: k8s.gcr.io/kube-apiserver:v1.20.3"),
            "{again}"
        );
        assert_eq!(rewrite(SCHEDULER, &c), None);
    }

    #[test]
    fn a_manifest_without_annotations_gets_them() {
        let c = [changed("k8s.gcr.io/kube-scheduler", "k8s.gcr.io/kube-scheduler:dev", "sha256:cc")];
        let out = rewrite(SCHEDULER, &c).unwrap();
        assert!(
            out.contains(
                "metadata:\n  annotations:\n    io.nodeimg.update/images: \"sha256:cc\"\n  creationTimestamp"
            ),
            "{out}"
        );
        assert!(out.contains("  - image: k8s.gcr.io/kube-scheduler:dev\n"), "{out}");
    }
}
