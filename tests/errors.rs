//! Bad input ends with one clear line naming the problem, a non-zero exit, and nothing left
//! in Docker.

mod support;

use std::process::Output;

fn run(run_id: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = support::nodeimg();
    cmd.args(args).env("NODEIMG_RUN_ID", run_id);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Exactly one `error:` line, naming `needle`, as the last line; exit code 1.
fn assert_one_line_error(out: &Output, needle: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "exit status: {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "the error is the last line:\n{stderr}");
    assert!(errors[0].contains(needle), "the error names {needle:?}: {}", errors[0]);
    assert!(out.stdout.is_empty(), "no result on stdout");
    errors[0].to_owned()
}

fn assert_nothing_left(run_id: &str) {
    support::runtime().block_on(async {
        let docker = support::docker(run_id).await;
        let left = docker.list_containers(Some(run_id)).await.unwrap();
        assert!(left.is_empty(), "containers left behind: {left:?}");
    });
}

#[test]
fn unknown_suite_is_named() {
    let id = support::run_id("suite");
    let out = run(&id, &["build", "base-image", "--suite", "nosuch"], &[]);
    let line = assert_one_line_error(&out, "\"nosuch\"");
    assert!(line.contains("not found on mirror"), "{line}");
    assert_nothing_left(&id);
}

#[test]
fn unreachable_mirror_is_named() {
    let id = support::run_id("mirror");
    // --rebuild: a cached image from the same inputs would be reused without asking any mirror.
    let out = run(&id, &["build", "base-image", "--mirror", "http://127.0.0.1:9/", "--rebuild"], &[]);
    let line = assert_one_line_error(&out, "http://127.0.0.1:9");
    assert!(line.contains("unreachable"), "{line}");
    assert_nothing_left(&id);
}

#[test]
fn unreachable_daemon_is_named() {
    let id = support::run_id("daemon");
    let out = run(&id, &["build", "base-image"], &[("DOCKER_HOST", "unix:///nonexistent")]);
    let line = assert_one_line_error(&out, "unix:///nonexistent");
    assert!(line.contains("cannot reach the Docker daemon"), "{line}");
    assert_nothing_left(&id);
}

#[test]
fn invalid_flags_fail_before_touching_docker() {
    let id = support::run_id("flags");
    // A dead daemon proves validation comes first: the error is about the flag, not Docker.
    let dead = [("DOCKER_HOST", "unix:///nonexistent")];
    let out = run(&id, &["build", "base-image", "-i", "Not/Valid"], &dead);
    assert_one_line_error(&out, "\"Not/Valid\"");
    let out = run(&id, &["build", "base-image", "--from", "dockerfile", "--suite", "trixie"], &dead);
    assert_one_line_error(&out, "--suite");
}
