use super::*;

fn snapshot(kubelet: &str, config: &str) -> Snapshot {
    let sum = |c: char| c.to_string().repeat(64);
    Snapshot {
        image: "kindest/node:a".into(),
        id: format!("sha256:{}", sum('a')),
        kubernetes: "v1.30.0".into(),
        binaries: [("kubeadm".to_owned(), sum('1')), ("kubelet".to_owned(), kubelet.to_owned())].into(),
        packages: [("systemd".to_owned(), "252 (amd64)".to_owned())].into(),
        images: [("registry.k8s.io/pause:3.9".to_owned(), format!("sha256:{}", sum('9')))].into(),
        files: [(
            "/etc/containerd/config.toml".to_owned(),
            File { sha256: crate::registry::digest(config.as_bytes()), text: Some(config.to_owned()) },
        )]
        .into(),
    }
}

#[test]
fn only_what_differs_is_listed_by_part() {
    let a = snapshot(&"2".repeat(64), "version = 2\nsandbox = \"pause:3.9\"\n");
    let mut b = snapshot(&"3".repeat(64), "version = 3\nsandbox = \"pause:3.9\"\n");
    b.images.insert("docker.io/library/extra:1".into(), format!("sha256:{}", "e".repeat(64)));
    let diff = compare(&a, &b);
    assert!(!diff.identical);
    let changed: Vec<(&str, Vec<&str>)> =
        diff.parts.iter().map(|p| (p.name, p.changes.iter().map(|c| c.name.as_str()).collect())).collect();
    assert_eq!(
        changed,
        [
            ("kubernetes", vec![]),
            ("binaries", vec!["kubelet"]),
            ("packages", vec![]),
            ("images", vec!["docker.io/library/extra:1"]),
            ("files", vec!["/etc/containerd/config.toml"]),
        ]
    );
    let text = diff.text();
    assert!(text.contains("  ~ kubelet  222222222222 -> 333333333333\n"), "{text}");
    assert!(text.contains("  + docker.io/library/extra:1  sha256:eeeeeeeeeeee\n"), "{text}");
    assert!(text.contains("      -version = 2\n      +version = 3\n"), "{text}");
    assert!(text.contains("packages: identical (1)\n"), "{text}");
    assert!(text.contains("images: 1 differ (1 -> 2)\n"), "{text}");
}

#[test]
fn the_same_image_twice_is_identical() {
    let a = snapshot(&"2".repeat(64), "x\n");
    let diff = compare(&a, &a.clone());
    assert!(diff.identical && diff.parts.iter().all(|p| p.changes.is_empty()));
    assert!(diff.text().ends_with("the images hold the same\n"), "{}", diff.text());
}
