//! An SBOM attached to pushed images as OCI 1.1 artifacts (`subject`, artifactType
//! `application/spdx+json`). Debian's docker-registry (distribution 2.8) has no referrers
//! API, so nodeimg keeps the referrers tag schema there; a registry in front of it that
//! answers the API itself gets no tag.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeimg::progress::{Reporter, Verbosity};
use nodeimg::publish::{PushResult, SPDX_JSON};
use nodeimg::registry::{Client, Listed};
use support::Run;
use support::arches::arch_image;
use support::fake_registry::{FakeRegistry, Reply};
use support::registry::Registry;

const LIMIT: Duration = Duration::from_secs(300);
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn reporter() -> Reporter {
    Reporter::with_terminal(Verbosity::Normal, false)
}

/// GET `url`: its status and body.
async fn get(url: &str, accept: &str) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(url)
        .header("Accept", accept)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

/// One amd64 image pushed as `<host>/nodeimg-test/sbom-<unique>:v1` with its index.
async fn pushed(run: &Run, host: &str) -> (PushResult, support::RemoveImage) {
    let docker = support::docker(&run.run_id).await;
    let name = format!("nodeimg-test/sbom-{}:amd64", run.unique);
    let image = arch_image(&docker, run, "amd64", Some(&name)).await;
    let target = format!("{host}/nodeimg-test/sbom-{}:v1", run.unique);
    let items = [("amd64".to_owned(), name)];
    let result = nodeimg::publish::push_all(&docker, &items, &target, &reporter())
        .await
        .unwrap_or_else(|e| panic!("{}", nodeimg::one_line(&e.into())));
    (result, image)
}

#[test]
fn without_a_referrers_api_the_sbom_is_listed_under_the_referrers_tag() {
    let run = Run::new("referrers-tag");
    let registry = Registry::start();
    support::runtime().block_on(async {
        tokio::time::timeout(LIMIT, async {
            let (result, _image) = pushed(&run, &registry.host).await;
            let document = br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec();
            let attached = nodeimg::publish::attach_sbom(&result, &document, &reporter()).await.unwrap();
            assert_eq!(attached.len(), 2, "the index and the amd64 image");
            let v2 = format!("http://{}/v2/nodeimg-test/sbom-{}", registry.host, run.unique);

            // distribution 2.8 has no referrers endpoint: 404, which the spec reads as "none".
            let (status, _) = get(&format!("{v2}/referrers/{}", result.index_digest), OCI_INDEX).await;
            assert_eq!(status, 404, "distribution 2.8 answers the referrers API");
            for ((subject_ref, done), subject) in attached
                .iter()
                .zip(std::iter::once(&result.index_digest).chain(result.per_arch.iter().map(|p| &p.digest)))
            {
                assert_eq!(done.listed, Listed::TagSchema, "{subject_ref}");
                let tag = subject.replacen(':', "-", 1);
                let (status, body) = get(&format!("{v2}/manifests/{tag}"), OCI_INDEX).await;
                assert_eq!(status, 200, "the referrers tag {tag}");
                let index = json(&body);
                let entries = index["manifests"].as_array().unwrap();
                assert_eq!(entries.len(), 1, "{index}");
                assert_eq!(entries[0]["digest"], done.digest.as_str());
                assert_eq!(entries[0]["artifactType"], SPDX_JSON);

                let (status, body) = get(&format!("{v2}/manifests/{}", done.digest), OCI_MANIFEST).await;
                assert_eq!(status, 200);
                let artifact = json(&body);
                assert_eq!(artifact["subject"]["digest"], subject.as_str());
                assert_eq!(artifact["artifactType"], SPDX_JSON);
                assert_eq!(artifact["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
                let layer = artifact["layers"][0]["digest"].as_str().unwrap();
                let (status, blob) = get(&format!("{v2}/blobs/{layer}"), "*/*").await;
                assert_eq!((status, blob), (200, document.clone()), "the SBOM's bytes");
            }

            // Read back as consumers do (oci-client's referrers, falling back to the tag).
            let client = Client::new().unwrap();
            let referrers = client.referrers(&result.index, &result.index_digest).await.unwrap();
            assert_eq!(referrers.len(), 1);
            assert_eq!(referrers[0].digest, attached[0].1.digest);
            assert_eq!(referrers[0].artifact_type.as_deref(), Some(SPDX_JSON));

            // A second artifact joins the tag's index; the first stays.
            let other = client
                .attach(&result.index, &result.index_digest, SPDX_JSON, b"{}".to_vec(), BTreeMap::new())
                .await
                .unwrap();
            let listed: Vec<String> = client
                .referrers(&result.index, &result.index_digest)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.digest)
                .collect();
            assert_eq!(listed, [attached[0].1.digest.clone(), other.digest]);
        })
        .await
        .expect("the test finishes within its limit")
    });
    run.assert_clean();
}

#[test]
fn a_registry_with_the_referrers_api_gets_no_referrers_tag() {
    let run = Run::new("referrers-api");
    let registry = Registry::start();
    // Manifests that name a subject, by subject: what the API answers with.
    let seen: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>> = Arc::default();
    let record = seen.clone();
    let upstream = registry.host.clone();
    let front = FakeRegistry::start(move |request, _| {
        if request.method == "GET" && request.path.contains("/referrers/") {
            let subject = request.path.rsplit('/').next().unwrap().to_owned();
            let manifests = record.lock().unwrap().get(&subject).cloned().unwrap_or_default();
            let index =
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
            return Reply::ok(OCI_INDEX, index.to_string().as_bytes());
        }
        if request.method == "PUT" && request.path.contains("/manifests/sha256:") {
            let manifest: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            if let Some(subject) = manifest["subject"]["digest"].as_str() {
                let digest = request.path.rsplit('/').next().unwrap().to_owned();
                let entry = serde_json::json!({
                    "mediaType": OCI_MANIFEST, "digest": digest, "size": request.body.len(),
                    "artifactType": manifest["artifactType"],
                });
                record.lock().unwrap().entry(subject.to_owned()).or_default().push(entry);
            }
        }
        Reply::Forward(upstream.clone())
    });
    support::runtime().block_on(async {
        tokio::time::timeout(LIMIT, async {
            // The engine pushes to the registry itself (the front does not relay chunked
            // uploads); nodeimg attaches through the front.
            let (mut result, _image) = pushed(&run, &registry.host).await;
            result.index = result.index.replacen(&registry.host, &front.host, 1);
            let attached = nodeimg::publish::attach_sbom(&result, b"{}", &reporter()).await.unwrap();
            for (subject, done) in &attached {
                assert_eq!(done.listed, Listed::Api, "{subject}");
            }
            let tags: Vec<String> =
                front.requests().into_iter().filter(|r| r.contains("/manifests/sha256-")).collect();
            assert!(tags.is_empty(), "no referrers tag was read or written: {tags:?}");
            assert_eq!(seen.lock().unwrap().len(), 2, "both subjects have the SBOM");
        })
        .await
        .expect("the test finishes within its limit")
    });
    run.assert_clean();
}
