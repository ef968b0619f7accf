//! Bad input ends with one clear line naming the problem, a non-zero exit, and nothing left
//! in Docker.

mod support;

use std::process::Output;

use support::{COMMAND_LIMIT, Run, assert_one_error_line, output_within};

/// `nodeimg ARGS` of a new run, with `envs`: a small command, bounded by [`COMMAND_LIMIT`].
fn nodeimg(name: &str, args: &[&str], envs: &[(&str, &str)]) -> (Run, Output) {
    let run = Run::new(name);
    let out = output_within(run.command(args).envs(envs.iter().copied()), COMMAND_LIMIT);
    (run, out)
}

#[test]
fn unknown_suite_is_named() {
    let (run, out) = nodeimg("suite", &["build", "base-image", "--suite", "nosuch"], &[]);
    let line = run.assert_failed(&out, "\"nosuch\"");
    assert!(line.contains("not found on mirror"), "{line}");
}

#[test]
fn unreachable_mirror_is_named() {
    // --rebuild: a cached image from the same inputs is reused without asking any mirror.
    let (run, out) =
        nodeimg("mirror", &["build", "base-image", "--mirror", "http://127.0.0.1:9/", "--rebuild"], &[]);
    let line = run.assert_failed(&out, "http://127.0.0.1:9");
    assert!(line.contains("unreachable"), "{line}");
}

#[test]
fn unreachable_daemon_is_named() {
    let dead = [("DOCKER_HOST", "unix:///nonexistent")];
    let (run, out) = nodeimg("daemon", &["build", "base-image"], &dead);
    let line = run.assert_failed(&out, "unix:///nonexistent");
    assert!(line.contains("cannot reach the Docker daemon"), "{line}");
}

#[test]
fn invalid_flags_fail_before_touching_docker() {
    // A dead daemon proves validation comes first: the error is about the flag, not Docker.
    let dead = [("DOCKER_HOST", "unix:///nonexistent")];
    let (_, out) = nodeimg("flags", &["build", "base-image", "-i", "Not/Valid"], &dead);
    assert_one_error_line(&out, "\"Not/Valid\"");
    let (_, out) =
        nodeimg("flags", &["build", "base-image", "--from", "dockerfile", "--suite", "trixie"], &dead);
    assert_one_error_line(&out, "--suite");
}
