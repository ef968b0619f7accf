//! Digest-pinned image references (`name:tag@sha256:…`), as kind's release notes tell users to
//! write node images: accepted where a user names an image, refused in one line naming both
//! digests when the image under that name has another.

mod support;

use support::fixtures::{self, Options};
use support::{Run, assert_one_error_line, assert_success};

const WRONG: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn pinned_base_images_are_checked_by_digest() {
    let run = Run::new("pinned");
    let release = fixtures::server_tarball(&Options::default());
    let base = support::base_image();
    let id = support::docker_cli(&["image", "inspect", "--format", "{{.Id}}", &base]).trim().to_owned();

    let wrong = format!("{base}@{WRONG}");
    let mut args = vec!["-b", wrong.as_str()];
    args.extend(release.build_args());
    let out = run.build(&args);
    let line = assert_one_error_line(&out, WRONG);
    assert!(line.contains(&id), "the error names the image's own digest too: {line}");
    let tagged = support::docker_cli(&["images", "-q", &run.target]);
    assert!(tagged.trim().is_empty(), "a refused build tags nothing: {tagged}");
    run.assert_clean();

    let pinned = format!("{base}@{id}");
    let mut args = vec!["-b", pinned.as_str()];
    args.extend(release.build_args());
    let out = run.build(&args);
    assert_success(&out, "a build on a base pinned by its image ID");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
    run.assert_clean();

    // The node image pinned by its own ID is a valid reference for every command that takes one.
    let node_id =
        support::docker_cli(&["image", "inspect", "--format", "{{.Id}}", &run.target]).trim().to_owned();
    let out = run.output(&["images", "list", &format!("{}@{node_id}", run.target)]);
    assert_success(&out, "images list --from-node of a pinned node image");
    assert!(String::from_utf8_lossy(&out.stdout).contains("registry.k8s.io/kube-apiserver"));
    let out = run.output(&["images", "list", &format!("{}@{WRONG}", run.target)]);
    assert_one_error_line(&out, WRONG);
    let out = run.output(&["verify", &format!("{}@{WRONG}", run.target), "--timeout", "30s"]);
    // verify prints its (empty) report on stdout either way; the error is the last line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(line.starts_with("error:") && line.contains(WRONG) && line.contains(&node_id), "{line}");
    let out = run.output(&[
        "save",
        &format!("{}@{WRONG}", run.target),
        "-o",
        run.files.path().join("n.tar").to_str().unwrap(),
    ]);
    assert_one_error_line(&out, WRONG);
}
