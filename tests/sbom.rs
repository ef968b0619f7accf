//! `build node-image --sbom FILE`: an SPDX 2.3 document that the real validator (`pyspdxtools`
//! from PyPI's spdx-tools, installed by scripts/setup.sh) accepts, listing the kubelet by its
//! sha256, every image in the node's containerd by its digest, and the base's packages;
//! with `--push`, attached to the pushed index as an OCI artifact that refers to it.

mod support;

use support::fixtures::{self, Options};
use support::registry::Registry;
use support::{Run, assert_success, docker_cli};

#[test]
fn the_sbom_passes_the_spdx_validator_and_lists_what_the_node_holds() {
    let run = Run::new("sbom");
    let registry = Registry::start();
    let release = fixtures::server_tarball(&Options::default());
    let sbom = run.files.path().join("node.spdx.json");
    let repo = format!("{}/nodeimg-test/node", registry.host);
    let target = format!("{repo}:{}", run.unique);
    let args = [&release.build_args()[..], &["--sbom", sbom.to_str().unwrap(), "--push", &target]].concat();
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

    // Pushed: the registry (distribution 2.8, no referrers API) lists the SBOM under the
    // index's referrers tag, and the artifact's one layer is the file's bytes.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let index = stdout.lines().last().unwrap().strip_prefix(&format!("{repo}@")).unwrap().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tag = index.replacen(':', "-", 1);
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("refers to {repo}@{index}")))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("listed under the referrers tag {tag}")), "{line}");
    let get = |path: &str, accept: &str| {
        let url = format!("http://{}/v2/nodeimg-test/node/{path}", registry.host);
        support::block_on(async {
            let response = reqwest::Client::new()
                .get(&url)
                .header("Accept", accept)
                .timeout(std::time::Duration::from_secs(20))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "GET {url}: {}", response.status());
            response.bytes().await.unwrap().to_vec()
        })
    };
    let referrers: serde_json::Value =
        serde_json::from_slice(&get(&format!("manifests/{tag}"), "application/vnd.oci.image.index.v1+json"))
            .unwrap();
    let artifact = referrers["manifests"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(referrers["manifests"][0]["artifactType"], "application/spdx+json");
    let artifact: serde_json::Value = serde_json::from_slice(&get(
        &format!("manifests/{artifact}"),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(artifact["subject"]["digest"], index.as_str());
    let layer = artifact["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(get(&format!("blobs/{layer}"), "*/*"), std::fs::read(&sbom).unwrap(), "the SBOM as pushed");
    support::block_on(async { support::docker(&run.run_id).await.remove_image(&run.target).await.unwrap() });
    run.assert_clean();
}
