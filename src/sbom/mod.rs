//! `--sbom FILE`: an SPDX 2.3 JSON document of the node image(s) a build made: every Debian
//! package of the base (from dpkg's own database), the Kubernetes binaries (version, sha256,
//! where they came from), crictl, and every image in the node's containerd (name, manifest
//! digest, platform), each CONTAINED by the node image. The document model is `spdx-rs`'s and
//! the package URLs are `packageurl`'s, so neither format is written by hand here.

mod facts;

use packageurl::PackageUrl;
use spdx_rs::models::{
    Algorithm, Checksum, ExternalPackageReference, ExternalPackageReferenceCategory, PackageInformation,
    PrimaryPackagePurpose, Relationship, RelationshipType, SPDX,
};

use crate::provenance::{ArchReport, KubernetesSource};

pub use facts::{Deb, Facts, read as read_facts};

/// The document for every architecture's node image, created at `created` (Unix seconds;
/// `SOURCE_DATE_EPOCH` when the caller has it, so equal inputs give equal documents).
pub fn document(images: &[(ArchReport, Facts)], created: i64) -> SPDX {
    let name = images.first().map_or_else(|| "node image".to_owned(), |(r, _)| r.image.clone());
    let mut doc = SPDX::new(&name);
    let info = &mut doc.document_creation_information;
    info.spdx_version = "SPDX-2.3".into();
    // Unique per content: the image IDs, not a random UUID.
    let ids: Vec<&str> = images.iter().map(|(r, _)| r.image_id.trim_start_matches("sha256:")).collect();
    info.spdx_document_namespace = format!("https://nodeimg.invalid/spdx/{}", ids.join("-"));
    info.creation_info.creators = vec![format!("Tool: nodeimg-{}", env!("CARGO_PKG_VERSION"))];
    info.creation_info.created = chrono::DateTime::from_timestamp(created, 0).unwrap_or_default();
    for (report, facts) in images {
        add_image(&mut doc, report, facts);
    }
    doc
}

pub fn to_json(doc: &SPDX) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("an SPDX document is JSON");
    bytes.push(b'\n');
    bytes
}

fn add_image(doc: &mut SPDX, report: &ArchReport, facts: &Facts) {
    let arch = &report.arch;
    let root = format!("SPDXRef-node-image-{}", id_part(arch));
    let mut node = package(&report.image, Some(&report.kubernetes.version), &root);
    node.primary_package_purpose = Some(PrimaryPackagePurpose::Container);
    node.package_checksum = vec![sha256(&report.image_id)];
    node.package_comment = Some(format!("image ID {}, linux/{arch}", report.image_id));
    doc.document_creation_information.document_describes.push(root.clone());
    doc.relationships.push(Relationship::new("SPDXRef-DOCUMENT", &root, RelationshipType::Describes, None));
    doc.package_information.push(node);
    let mut contained = Vec::new();
    for (i, deb) in facts.packages.iter().enumerate() {
        let mut p = package(&deb.name, Some(&deb.version), &format!("SPDXRef-deb-{}-{i}", id_part(arch)));
        p.external_reference =
            purl("deb", Some("debian"), &deb.name, Some(&deb.version), &[("arch", &deb.arch)]);
        contained.push(p);
    }
    for (name, sum) in &facts.binaries {
        let version = &report.kubernetes.version;
        let mut p = package(name, Some(version), &format!("SPDXRef-{}-{}", id_part(name), id_part(arch)));
        p.package_checksum = vec![sha256(sum)];
        p.package_download_location = download_location(&report.kubernetes.source);
        p.source_information = Some(source_information(&report.kubernetes.source));
        p.primary_package_purpose = Some(PrimaryPackagePurpose::Application);
        let subpath = format!("cmd/{name}");
        p.external_reference = purl("golang", Some("k8s.io"), "kubernetes", Some(version), &[]);
        if let Some(r) = p.external_reference.first_mut() {
            r.reference_locator = format!("{}#{subpath}", r.reference_locator);
        }
        contained.push(p);
    }
    if let Some((version, sum)) = &facts.crictl {
        let mut p = package("crictl", Some(version), &format!("SPDXRef-crictl-{}", id_part(arch)));
        p.package_download_location = format!(
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/{version}/crictl-{version}-linux-{arch}.tar.gz"
        );
        if let Some(sum) = sum {
            p.package_checksum = vec![sha256(sum)];
            p.package_comment = Some("the checksum is the release tarball's".into());
        }
        p.external_reference = purl("github", Some("kubernetes-sigs"), "cri-tools", Some(version), &[]);
        contained.push(p);
    }
    for (i, image) in report.images.iter().enumerate() {
        let (repo, tag) = crate::reference::split(&image.name);
        let mut p = package(&image.name, Some(tag), &format!("SPDXRef-image-{}-{i}", id_part(arch)));
        p.package_checksum = vec![sha256(&image.digest)];
        p.primary_package_purpose = Some(PrimaryPackagePurpose::Container);
        p.package_comment =
            Some(format!("manifest {} for {}, from {}", image.digest, image.platform, image.origin));
        let last = repo.rsplit('/').next().unwrap_or(repo);
        let qualifiers = [("repository_url", repo), ("tag", tag)];
        p.external_reference = purl("oci", None, last, Some(&image.digest), &qualifiers);
        contained.push(p);
    }
    for p in contained {
        let id = p.package_spdx_identifier.clone();
        doc.relationships.push(Relationship::new(&root, &id, RelationshipType::Contains, None));
        doc.package_information.push(p);
    }
}

fn package(name: &str, version: Option<&str>, id: &str) -> PackageInformation {
    PackageInformation {
        package_name: name.to_owned(),
        package_spdx_identifier: id.to_owned(),
        package_version: version.map(str::to_owned),
        package_download_location: "NOASSERTION".into(),
        files_analyzed: Some(false),
        ..Default::default()
    }
}

fn sha256(digest: &str) -> Checksum {
    Checksum::new(Algorithm::SHA256, digest.trim_start_matches("sha256:"))
}

/// `SPDXRef-` ids allow letters, digits, `.` and `-`.
fn id_part(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect()
}

fn purl(
    ty: &str,
    namespace: Option<&str>,
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, &str)],
) -> Vec<ExternalPackageReference> {
    let Ok(mut purl) = PackageUrl::new(ty, name) else { return Vec::new() };
    if let Some(ns) = namespace {
        purl.with_namespace(ns).ok();
    }
    if let Some(v) = version {
        purl.with_version(v).ok();
    }
    for (k, v) in qualifiers {
        purl.add_qualifier(*k, *v).ok();
    }
    vec![ExternalPackageReference::new(
        ExternalPackageReferenceCategory::PackageManager,
        "purl".into(),
        purl.to_string(),
        None,
    )]
}

fn download_location(source: &KubernetesSource) -> String {
    match (&source.url, &source.commit) {
        (Some(url), _) => url.clone(),
        (None, Some(commit)) => format!("git+https://github.com/kubernetes/kubernetes@{commit}"),
        _ => "NOASSERTION".into(),
    }
}

fn source_information(source: &KubernetesSource) -> String {
    let mut parts = vec![format!("{:?}", source.kind).to_lowercase()];
    if let Some(url) = &source.url {
        parts.push(url.clone());
    }
    if let Some(sha512) = &source.sha512 {
        parts.push(format!("sha512 {sha512}"));
    }
    if let Some(commit) = &source.commit {
        parts.push(format!("git commit {commit}"));
    }
    if let Some(state) = &source.tree_state {
        parts.push(format!("tree {}", format!("{state:?}").to_lowercase()));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
