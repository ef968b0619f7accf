//! `build node-image --sbom FILE`: an SPDX 2.3 document that the real validator (`pyspdxtools`
//! from PyPI's spdx-tools, installed by scripts/setup.sh) accepts, listing the kubelet by its
//! sha256, every image in the node's containerd by its digest, and the base's packages.

mod support;

use support::fixtures::{self, Options};
use support::{Run, assert_success, docker_cli};

#[test]
fn the_sbom_passes_the_spdx_validator_and_lists_what_the_node_holds() {
    let run = Run::new("sbom");
    let release = fixtures::server_tarball(&Options::default());
    let sbom = run.files.path().join("node.spdx.json");
    let args = [&release.build_args()[..], &["--sbom", sbom.to_str().unwrap()]].concat();
    let out = support::output_within(
        run.build_command(&args).env("SOURCE_DATE_EPOCH", "1700000000"),
        support::BUILD_LIMIT,
    );
    assert_success(&out, "build node-image --sbom");

    let check = std::process::Command::new("pyspdxtools")
        .arg("-i")
        .arg(&sbom)
        .output()
        .expect("pyspdxtools (scripts/setup.sh installs it)");
    assert!(
        check.status.success(),
        "pyspdxtools refused the SBOM:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH");
    let packages = doc["packages"].as_array().unwrap();
    let sum_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["checksums"][0]["checksumValue"].as_str().unwrap().to_owned())
    };
    let kubelet = docker_cli(&["run", "--rm", "--entrypoint", "sha256sum", &run.target, "/usr/bin/kubelet"]);
    let kubelet = kubelet.split_whitespace().next().unwrap().to_owned();
    assert_eq!(sum_of("kubelet").as_deref(), Some(kubelet.as_str()), "the kubelet by its sha256");
    // Every image `images list` sees in the node, by its digest.
    let listed = run.output(&["images", "list", &run.target]);
    assert_success(&listed, "images list");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.lines().count() >= 5, "{listed}");
    for line in listed.lines() {
        let mut fields = line.split('\t');
        let (name, digest) = (fields.next().unwrap(), fields.next().unwrap());
        assert_eq!(sum_of(name).as_deref(), Some(digest.trim_start_matches("sha256:")), "{name} in the SBOM");
    }
    // dpkg's view of the base: systemd and containerd, each with a Debian purl.
    let dpkg =
        docker_cli(&["run", "--rm", "--entrypoint", "dpkg-query", &run.target, "-W", "-f", "${Package}\n"]);
    let debs = packages.iter().filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-deb-")).count();
    assert_eq!(debs, dpkg.lines().count(), "every installed package");
    for name in ["systemd", "containerd"] {
        let p = packages.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name} in the SBOM"));
        assert!(
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .starts_with(&format!("pkg:deb/debian/{name}@")),
            "{p}"
        );
    }
    let contains = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "CONTAINS")
        .count();
    assert_eq!(contains, packages.len() - 1, "the node image contains every other package");
    support::block_on(async { support::docker(&run.run_id).await.remove_image(&run.target).await.unwrap() });
    run.assert_clean();
}
