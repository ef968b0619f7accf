use super::*;
use crate::provenance::{Kubernetes, PreloadedImage, SourceKind};

fn report() -> ArchReport {
    ArchReport {
        arch: "amd64".into(),
        image: "kindest/node:v1.30.0".into(),
        image_id: "sha256:aaaa".into(),
        kubernetes: Kubernetes {
            version: "v1.30.0".into(),
            source: KubernetesSource {
                kind: SourceKind::Release,
                url: Some("https://dl.k8s.io/v1.30.0/kubernetes-server-linux-amd64.tar.gz".into()),
                sha512: Some("ff".into()),
                ..Default::default()
            },
        },
        images: vec![PreloadedImage {
            name: "registry.k8s.io/pause:3.9".into(),
            digest: "sha256:bbbb".into(),
            platform: "linux/amd64".into(),
            origin: "archive".into(),
        }],
        ..Default::default()
    }
}

fn facts() -> Facts {
    Facts {
        packages: vec![Deb {
            name: "systemd".into(),
            version: "252.39-1~deb12u1".into(),
            arch: "amd64".into(),
        }],
        binaries: vec![("kubelet".into(), "cccc".into())],
        crictl: Some(("v1.26.1".into(), Some("dddd".into()))),
    }
}

#[test]
fn the_document_is_spdx_2_3_with_every_part_contained_by_the_image() {
    let doc = document(&[(report(), facts())], 1_700_000_000);
    let json: serde_json::Value = serde_json::from_slice(&to_json(&doc)).unwrap();
    assert_eq!(json["spdxVersion"], "SPDX-2.3");
    // Whole seconds, as SPDX's date format has them.
    assert_eq!(json["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(json["documentNamespace"], "https://nodeimg.invalid/spdx/aaaa");
    let packages = json["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 5, "the image, a package, kubelet, crictl, an image");
    let by_name = |n: &str| packages.iter().find(|p| p["name"] == n).unwrap().clone();
    let purl = |p: &serde_json::Value| p["externalRefs"][0]["referenceLocator"].as_str().unwrap().to_owned();
    assert_eq!(purl(&by_name("systemd")), "pkg:deb/debian/systemd@252.39-1~deb12u1?arch=amd64");
    let kubelet = by_name("kubelet");
    assert_eq!(kubelet["checksums"][0]["checksumValue"], "cccc");
    assert_eq!(kubelet["downloadLocation"], "https://dl.k8s.io/v1.30.0/kubernetes-server-linux-amd64.tar.gz");
    assert!(kubelet["sourceInfo"].as_str().unwrap().contains("sha512 ff"), "{kubelet}");
    assert_eq!(purl(&kubelet), "pkg:golang/k8s.io/kubernetes@v1.30.0#cmd/kubelet");
    let pause = by_name("registry.k8s.io/pause:3.9");
    assert_eq!(pause["checksums"][0]["checksumValue"], "bbbb");
    assert_eq!(purl(&pause), "pkg:oci/pause@sha256:bbbb?repository_url=registry.k8s.io%2Fpause&tag=3.9");
    let relationships = json["relationships"].as_array().unwrap();
    let contains = relationships.iter().filter(|r| r["relationshipType"] == "CONTAINS").count();
    assert_eq!(contains, 4);
    assert!(relationships.iter().any(|r| r["relationshipType"] == "DESCRIBES"
        && r["spdxElementId"] == "SPDXRef-DOCUMENT"
        && r["relatedSpdxElement"] == "SPDXRef-node-image-amd64"));
    // Equal inputs, equal bytes.
    assert_eq!(to_json(&doc), to_json(&document(&[(report(), facts())], 1_700_000_000)));
}
