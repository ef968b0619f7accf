//! README.md promises two commands; CI must run exactly the test one.

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    let ci_command = ci.lines().last().unwrap().trim();
    assert!(ci_command.contains("cargo test"), "the last line of .ci/run runs the tests: {ci_command}");
    assert!(
        readme.lines().any(|l| l.trim() == ci_command),
        "README.md shows the command .ci/run runs: {ci_command}"
    );
    assert!(readme.contains("cargo run --release -- build base-image"), "README shows the main job");
}
