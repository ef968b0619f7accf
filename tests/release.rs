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

/// amd64 on this machine's engine, arm64 on a second one standing in for an arm64 builder
/// (here it runs under the same qemu), at the same time; both pushed, one index.
#[test]
fn two_arches_on_two_engines_are_pushed_as_one_index() {
    let (amd64_base, arm64_base) = (support::base_image(), support::base_image_arm64());
    let registry = Registry::start();
    let second = support::engine::SecondEngine::start();
    let run = Run::new("engines");
    let targets: Vec<String> = ["amd64", "arm64"].iter().map(|a| format!("{}-{a}", run.target)).collect();
    let _remove = support::RemoveImage(targets[0].clone());
    // The bases, under names of this run: amd64 here, arm64 copied to the second engine.
    let base = |arch: &str| format!("nodeimg-test/base:{}-{arch}", run.unique);
    let (_amd64_base, _arm64_base) =
        (support::RemoveImage(base("amd64")), support::RemoveImage(base("arm64")));
    docker_cli(&["tag", &amd64_base, &base("amd64")]);
    docker_cli(&["tag", &arm64_base, &base("arm64")]);
    second.copy_image(&base("arm64"));
    let two = support::arches::TwoArches::serve(&run, &arm64_base);

    let repo = format!("{}/nodeimg-test/node", registry.host);
    let target = format!("{repo}:{}", run.unique);
    let report_path = run.files.path().join("report.json");
    let mut cmd = run.command(&["build", "node-image", VERSION, "-i", &run.target, "-b", &base("{arch}")]);
    cmd.args(["--arch", "amd64,arm64", "--engine", &format!("arm64={}", second.host)])
        .args([
            "--release-url",
            &two.server.url,
            "--push",
            &target,
            "--report",
            report_path.to_str().unwrap(),
        ])
        .arg("--image-archive")
        .arg(&two.archive);
    let started = std::time::Instant::now();
    let out = support::output_within(&mut cmd, support::EMULATED_BUILD_LIMIT);
    assert_success(&out, "build node-image --arch amd64,arm64 --engine arm64=… --push");
    eprintln!("amd64 + arm64 on two engines, pushed: {:?}", started.elapsed());
    run.assert_clean();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], targets[..], "{stdout}");
    let index_digest = lines[2].strip_prefix(&format!("{repo}@")).expect("REPO@sha256:…");
    // Each image lives on the engine that built it.
    assert!(!docker_cli(&["images", "-q", &targets[0]]).trim().is_empty());
    assert!(docker_cli(&["images", "-q", &targets[1]]).trim().is_empty(), "arm64 was built elsewhere");
    assert!(!second.docker_cli(&["images", "-q", &targets[1]]).trim().is_empty());

    // The index: both platforms; each child pulls by digest and is for its arch.
    let index = get_json(
        &format!("http://{}/v2/nodeimg-test/node/manifests/{}", registry.host, run.unique),
        OCI_INDEX,
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["index"]["digest"], index_digest);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    for (n, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let child =
            manifests.iter().find(|m| m["platform"]["architecture"] == arch).expect("a manifest per arch");
        let digest = child["digest"].as_str().unwrap();
        assert_eq!(report["architectures"][n]["arch"], arch);
        assert_eq!(report["architectures"][n]["pushed"]["digest"], digest);
        let images = report["architectures"][n]["images"].as_array().unwrap();
        assert!(images.iter().all(|i| i["platform"] == format!("linux/{arch}")), "{arch}: {images:?}");
        let by_digest = format!("{repo}@{digest}");
        let _pulled = support::RemoveImage(by_digest.clone());
        docker_cli(&["pull", "-q", &by_digest]);
        assert_eq!(docker_cli(&["image", "inspect", "-f", "{{.Architecture}}", &by_digest]).trim(), arch);
    }
}
