//! `nodeimg::registry` against a real registry (Debian's docker-registry on 127.0.0.1) and
//! the real Docker daemon: one image per architecture pushed through the engine, tied
//! together by an OCI index; and a registry that refuses, which must leave no index and
//! every local image.
//!
//! The local images are busybox stand-ins loaded from docker-save archives (the engine's
//! import cannot set an architecture) under `nodeimg-test/push-<unique>` names, removed by
//! guards, also when an assertion fails.

mod support;

use std::time::Duration;

use base64::Engine as _;

use nodeimg::docker::Docker;
use nodeimg::progress::{Reporter, Verbosity};
use nodeimg::registry::{self, Client, DockerConfig, ManifestInfo, Platform};
use support::arches::arch_image;
use support::fake_registry::{FakeRegistry, Reply};
use support::registry::Registry;
use support::{RemoveImage, Run};

/// Everything a test does in Docker and the registry finishes well within this.
const TEST_LIMIT: Duration = Duration::from_secs(300);

fn reporter() -> Reporter {
    Reporter::with_terminal(Verbosity::Normal, false)
}

fn items(run: &Run) -> Vec<(String, String)> {
    ["amd64", "arm64"]
        .iter()
        .map(|a| (a.to_string(), format!("nodeimg-test/push-{}:{a}", run.unique)))
        .collect()
}

/// Both images, loaded; their guards.
async fn load_both(docker: &Docker, run: &Run) -> Vec<RemoveImage> {
    let mut guards = Vec::new();
    for (arch, name) in items(run) {
        guards.push(arch_image(docker, run, &arch, Some(&name)).await);
    }
    guards
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, future).await.expect("the test finishes within its limit")
}

#[test]
fn pushes_each_architecture_and_an_index_of_them() {
    let run = Run::new("push");
    let registry = Registry::start();
    let target = format!("{}/nodeimg-test/push-{}:v1", registry.host, run.unique);
    support::runtime().block_on(within(async {
        let docker = support::docker(&run.run_id).await;
        let _images = load_both(&docker, &run).await;
        let result = nodeimg::publish::push_all(&docker, &items(&run), &target, &reporter())
            .await
            .unwrap_or_else(|e| panic!("{}", nodeimg::one_line(&e.into())));

        let pushed: Vec<_> =
            result.per_arch.iter().map(|p| (p.arch.as_str(), p.reference.as_str())).collect();
        assert_eq!(
            pushed,
            [("amd64", format!("{target}-amd64").as_str()), ("arm64", &format!("{target}-arm64"))]
        );
        for p in &result.per_arch {
            assert!(!p.kept_tag, "{} has other names", p.arch);
            assert!(
                !docker.image_exists(&p.reference).await.unwrap(),
                "the push's tag {} is removed",
                p.reference
            );
        }
        for (_, name) in items(&run) {
            assert!(docker.image_exists(&name).await.unwrap(), "{name} is kept");
        }

        // The index as any client reads it: exact bytes, two platforms, the pushed digests.
        let url = format!("http://{}/v2/nodeimg-test/push-{}/manifests/v1", registry.host, run.unique);
        let response = reqwest::Client::new()
            .get(&url)
            .header("Accept", registry::OCI_INDEX)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], registry::OCI_INDEX);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(registry::digest(&bytes), result.index_digest);
        let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().unwrap();
        let listed: Vec<_> = manifests
            .iter()
            .map(|m| (m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
            .collect();
        assert_eq!(listed, [("linux", "amd64"), ("linux", "arm64")]);
        for (entry, p) in manifests.iter().zip(&result.per_arch) {
            assert_eq!(entry["digest"], p.digest.as_str());
            assert_eq!(entry["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
        }

        // Each child pulls by digest; the index itself is not one image.
        let client = Client::new().unwrap();
        let mut children = Vec::new();
        for p in &result.per_arch {
            let by_digest = format!("{}/nodeimg-test/push-{}@{}", registry.host, run.unique, p.digest);
            let _pulled = RemoveImage(by_digest.clone());
            docker.pull(&by_digest, &format!("linux/{}", p.arch), &mut |_| ()).await.unwrap();
            assert!(docker.image_exists(&by_digest).await.unwrap(), "{by_digest}");
            let info = client.manifest(&by_digest).await.unwrap();
            children.push(info.clone());
            assert_eq!(
                (info.digest.as_str(), info.platform.architecture.as_str()),
                (p.digest.as_str(), p.arch.as_str())
            );
        }
        let err = client.manifest(&target).await.unwrap_err();
        assert!(matches!(err, registry::Error::IsIndex { .. }), "{err}");

        // A registry that refuses the index: one line with its words, and no index.
        let upstream = registry.host.clone();
        let refusing = FakeRegistry::start(move |request, _| match request.method.as_str() {
            "GET" | "HEAD" => Reply::Forward(upstream.clone()),
            _ => Reply::error("403 Forbidden", "DENIED", "this test registry takes no writes"),
        });
        let second = format!("{}/nodeimg-test/push-{}:v2", refusing.host, run.unique);
        let err = client.put_index(&second, &children).await.unwrap_err();
        let line = nodeimg::one_line(&err.into());
        assert!(
            line.contains(&second) && line.contains("HTTP 403 Forbidden: this test registry takes no writes"),
            "{line}"
        );
        let heads = refusing.requests().iter().filter(|r| r.starts_with("HEAD ")).count();
        assert_eq!(heads, 2, "every child was checked first: {:?}", refusing.requests());
        let err = client.manifest(&target.replace(":v1", ":v2")).await.unwrap_err();
        assert!(matches!(err, registry::Error::Status { status: 404, .. }), "no index: {err}");
    }));
}

#[test]
fn an_index_with_a_missing_image_is_not_written() {
    let registry = Registry::start();
    let target = format!("{}/nodeimg-test/push-missing:v1", registry.host);
    support::runtime().block_on(within(async {
        let absent = ManifestInfo {
            digest: registry::digest(b"no such manifest"),
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            size: 16,
            platform: Platform { os: "linux".into(), architecture: "arm64".into(), variant: None },
        };
        let client = Client::new().unwrap();
        let err = client.put_index(&target, &[absent]).await.unwrap_err();
        let line = nodeimg::one_line(&err.into());
        assert!(line.contains(&registry.host) && line.contains("linux/arm64"), "{line}");
        let err = client.manifest(&target).await.unwrap_err();
        assert!(matches!(err, registry::Error::Status { status: 404, .. }), "no index: {err}");
    }));
    assert!(!registry.log().contains("PUT /v2/"), "nothing was written:\n{}", registry.log());
}

/// An image known only by its ID keeps the tag made for the push: removing an image's last
/// name would remove the image.
#[test]
fn an_untagged_image_keeps_the_push_tag() {
    let run = Run::new("push-untagged");
    let registry = Registry::start();
    let target = format!("{}/nodeimg-test/push-{}:v1", registry.host, run.unique);
    support::runtime().block_on(within(async {
        let docker = support::docker(&run.run_id).await;
        let image = arch_image(&docker, &run, "arm64", None).await;
        let items = [("arm64".to_owned(), image.0.clone())];
        let result = nodeimg::publish::push_all(&docker, &items, &target, &reporter()).await.unwrap();
        let pushed = &result.per_arch[0];
        assert!(pushed.kept_tag, "{pushed:?}");
        let info = docker.inspect_image(&pushed.reference).await.unwrap().expect("the tag stays");
        assert_eq!(info.id, image.0, "on the image, which stays");
    }));
}

/// A registry that wants a login nobody has: 401 with a Basic challenge, as from a registry
/// the user has not logged in to. (A 403 DENIED would fail the push as well, but the engine
/// retries blob uploads for 50 s first.)
#[test]
fn a_refusing_registry_gets_no_index_and_local_images_stay() {
    let run = Run::new("push-refused");
    let refusing = FakeRegistry::start(|_, _| {
        Reply::error("401 Unauthorized", "UNAUTHORIZED", "this test registry refuses everyone")
            .header("WWW-Authenticate", r#"Basic realm="nodeimg-test""#)
    });
    let target = format!("{}/nodeimg-test/push-{}:v1", refusing.host, run.unique);
    support::runtime().block_on(within(async {
        let docker = support::docker(&run.run_id).await;
        let _images = load_both(&docker, &run).await;
        let err = nodeimg::publish::push_all(&docker, &items(&run), &target, &reporter()).await.unwrap_err();
        let line = nodeimg::one_line(&err.into());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(&format!("{target}-amd64")) && line.contains("amd64 image"), "{line}");
        assert!(line.contains("no basic auth credentials"), "the engine's words: {line}");
        // The index write alone fails as plainly, before writing anything.
        let child = ManifestInfo {
            digest: registry::digest(b"child"),
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            size: 5,
            platform: Platform { os: "linux".into(), architecture: "amd64".into(), variant: None },
        };
        let client = Client::with_config(DockerConfig::default()).unwrap();
        let err = client.put_index(&target, &[child]).await.unwrap_err();
        let line = nodeimg::one_line(&err.into());
        assert!(line.contains(&refusing.host) && line.contains("HTTP 401 Unauthorized"), "{line}");
        for (arch, name) in items(&run) {
            assert!(docker.image_exists(&name).await.unwrap(), "{name} is kept");
            let tag = format!("{target}-{arch}");
            assert!(!docker.image_exists(&tag).await.unwrap(), "the push's tag {tag} is removed");
        }
    }));
    let requests = refusing.requests();
    assert!(requests.iter().any(|r| r.starts_with("GET /v2/")), "the engine asked: {requests:?}");
    // Nothing but the engine's version check, and the client's check for the index's image.
    assert!(!requests.iter().any(|r| r.starts_with("PUT ") || r.contains("-arm64")), "{requests:?}");
}

/// The token flow: a 401 with a Bearer challenge, a token from the realm for the stored
/// credentials, the request again with the token, which is kept for the next request.
#[test]
fn logs_in_with_a_token_from_the_realm() {
    let config = br#"{"os":"linux","architecture":"riscv64"}"#;
    let config_digest = registry::digest(config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [],
    }))
    .unwrap();
    let manifest_digest = registry::digest(&manifest);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("tester:s3cret"));
    let expected_basic = basic.clone();
    let served = manifest.clone();
    let fake = FakeRegistry::start(move |request, host| {
        if request.path.starts_with("/token?") {
            let scoped = request.path.contains("scope=repository%3Atok%2Fimg%3Apull")
                && request.path.contains("service=fake");
            return if request.header("Authorization") == Some(expected_basic.as_str()) && scoped {
                Reply::ok("application/json", br#"{"token":"t0k"}"#)
            } else {
                Reply::error("401 Unauthorized", "UNAUTHORIZED", "bad login")
            };
        }
        if request.header("Authorization") != Some("Bearer t0k") {
            let challenge = format!(
                r#"Bearer realm="http://{host}/token",service="fake",scope="repository:tok/img:pull""#
            );
            return Reply::error("401 Unauthorized", "UNAUTHORIZED", "log in")
                .header("WWW-Authenticate", &challenge);
        }
        match request.path.as_str() {
            "/v2/tok/img/manifests/v1" => {
                Reply::ok("application/vnd.docker.distribution.manifest.v2+json", &served)
            }
            p if p.ends_with(config_digest.as_str()) => Reply::ok("application/octet-stream", config),
            _ => Reply::error("404 Not Found", "NOT_FOUND", "no such thing"),
        }
    });
    let auth = base64::engine::general_purpose::STANDARD.encode("tester:s3cret");
    let docker_config = format!(r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#, fake.host);
    let client = Client::with_config(DockerConfig::parse(docker_config.as_bytes()).unwrap()).unwrap();
    let reference = format!("{}/tok/img:v1", fake.host);
    support::runtime().block_on(within(async {
        for _ in 0..2 {
            let info = client.manifest(&reference).await.unwrap();
            assert_eq!(info.digest, manifest_digest);
            assert_eq!(info.platform.to_string(), "linux/riscv64");
            assert_eq!(info.size, manifest.len() as u64);
        }
    }));
    let tokens = fake.requests().iter().filter(|r| r.starts_with("GET /token?")).count();
    assert_eq!(tokens, 1, "the token is kept: {:?}", fake.requests());

    // Without credentials, the realm refuses, and the error says where.
    let anonymous = Client::with_config(DockerConfig::default()).unwrap();
    let err = support::runtime().block_on(within(anonymous.manifest(&reference))).unwrap_err();
    let line = nodeimg::one_line(&err.into());
    assert!(
        line.contains("getting a token") && line.contains(&fake.host) && line.contains("bad login"),
        "{line}"
    );
}
