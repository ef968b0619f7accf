//! The release pipeline's end: `build node-image --push REF --report FILE` against a real
//! registry on loopback (Debian's docker-registry): the image pushed as REF-<arch>, an OCI
//! index under REF read back over the registry API, and a report whose digests are the ones
//! the registry and the node hold.

mod support;

use std::collections::BTreeMap;

use sha2::{Digest, Sha512};
use support::fixtures::{self, Options, VERSION};
use support::registry::Registry;
use support::{Run, assert_one_error_line, assert_success, docker_cli};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// GET `url` with `accept`; the body as JSON.
fn get_json(url: &str, accept: &str) -> serde_json::Value {
    support::block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .header("Accept", accept)
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(response.status().is_success(), "GET {url}: {}", response.status());
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    })
}

#[test]
fn push_and_report_pin_what_went_in() {
    let registry = Registry::start();
    let run = Run::new("release");
    let release = fixtures::server_tarball(&Options::default());
    let repo = format!("{}/nodeimg-test/node", registry.host);
    let target = format!("{repo}:{}", run.unique);
    let report_path = run.files.path().join("report.json");
    let mut args = release.build_args().to_vec();
    args.extend(["--push", &target, "--report", report_path.to_str().unwrap()]);
    let out = run.build(&args);
    assert_success(&out, "build --push --report");
    run.assert_clean();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "the image, then the index pinned: {stdout}");
    assert_eq!(lines[0], run.target);
    let index_digest = lines[1].strip_prefix(&format!("{repo}@")).expect("REPO@sha256:…").to_owned();
    assert!(index_digest.starts_with("sha256:"), "{stdout}");

    // The index, as the registry has it: one manifest, for linux/amd64.
    let index = get_json(
        &format!("http://{}/v2/nodeimg-test/node/manifests/{}", registry.host, run.unique),
        OCI_INDEX,
    );
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    assert_eq!(manifests[0]["platform"]["os"], "linux");

    // The report: its digests are the registry's and the node's.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["index"]["reference"], target);
    assert_eq!(report["index"]["digest"], index_digest);
    let arch = &report["architectures"][0];
    assert_eq!(arch["arch"], "amd64");
    assert_eq!(arch["image"], run.target);
    assert_eq!(arch["image_id"], docker_cli(&["image", "inspect", "-f", "{{.Id}}", &run.target]).trim());
    assert_eq!(arch["pushed"]["reference"], format!("{target}-amd64"));
    assert_eq!(arch["pushed"]["digest"], manifests[0]["digest"]);
    assert_eq!(arch["kubernetes"]["version"], VERSION);
    assert_eq!(arch["kubernetes"]["source"]["kind"], "file");
    let sha512 = hex::encode(Sha512::digest(std::fs::read(&release.tarball).unwrap()));
    assert_eq!(arch["kubernetes"]["source"]["sha512"], sha512);
    assert!(arch["base"]["containerd"].as_str().unwrap().starts_with("1.7."), "{}", arch["base"]);
    assert!(arch["base"]["id"].as_str().unwrap().starts_with("sha256:"));
    let images: BTreeMap<String, &serde_json::Value> = arch["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_owned(), i))
        .collect();
    let built = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
        .map(|c| format!("registry.k8s.io/{c}:{VERSION}"));
    for name in fixtures::needed_images().iter().chain(&built) {
        let image = images.get(name).unwrap_or_else(|| panic!("{name} is not in the report: {images:?}"));
        assert!(image["digest"].as_str().unwrap().starts_with("sha256:"), "{image}");
        assert_eq!(image["platform"], "linux/amd64", "{image}");
    }
    assert!(images[&built[0]]["origin"].as_str().unwrap().starts_with("built"), "{}", images[&built[0]]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pause = &fixtures::needed_images()[0];
    let pinned =
        format!("{}@{}", pause.rsplit_once(':').unwrap().0, images[pause]["digest"].as_str().unwrap());
    assert!(stderr.contains(&pinned), "the table names {pinned}: {stderr}");

    // The tag made for the push is gone; the image keeps its own name.
    assert!(docker_cli(&["images", "-q", &format!("{target}-amd64")]).trim().is_empty());
}

#[test]
fn a_refused_push_writes_no_index_nor_report_and_keeps_the_image() {
    let run = Run::new("refused");
    let release = fixtures::server_tarball(&Options::default());
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}/nodeimg-test/node:{}", run.unique);
    let report_path = run.files.path().join("report.json");
    let mut args = release.build_args().to_vec();
    args.extend(["--push", &target, "--report", report_path.to_str().unwrap()]);
    let out = run.build(&args);
    let line = assert_one_error_line(&out, &format!("127.0.0.1:{port}"));
    assert!(line.contains("amd64"), "{line}");
    run.assert_clean();
    assert!(!report_path.exists(), "no report of a push that did not happen");
    assert!(!docker_cli(&["images", "-q", &run.target]).trim().is_empty(), "the built image stays");
    assert!(docker_cli(&["images", "-q", &format!("{target}-amd64")]).trim().is_empty(), "no push tag left");
}

#[test]
fn a_report_path_in_a_missing_directory_is_refused_before_building() {
    let run = Run::new("report-dir");
    let out = run.output(&["build", "node-image", "v1.30.0", "--report", "/nonexistent/dir/report.json"]);
    assert_one_error_line(&out, "/nonexistent/dir/report.json");
    run.assert_clean();
}
