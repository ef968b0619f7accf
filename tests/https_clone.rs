//! `-k VERSION` with no tree clones over HTTPS, as it does from github.com on a user's machine:
//! here from an HTTPS git server of the test's own on 127.0.0.1 with a CA made for the test,
//! through a CONNECT proxy, fetching only the tag it needs.

mod support;

use std::process::Command;

use support::kubetree::{SourceRun, tree};
use support::tls::{ConnectProxy, GitHttps, TestCa};
use support::{COMMAND_LIMIT, assert_success, output_within};

/// `git ARGS` in `dir`, which must succeed; its stdout.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = output_within(Command::new("git").arg("-C").arg(dir).args(args), COMMAND_LIMIT);
    assert_success(&out, &format!("git {}", args.join(" ")));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn k_clones_one_tag_over_https_through_a_proxy() {
    let origin = tree(false);
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("kubernetes.git");
    git(origin.path(), &["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()]);
    let ca = TestCa::new();
    let server = GitHttps::serve(served.path(), &ca);
    let url = server.url("kubernetes.git");
    let ca_pem = ca.ca_pem();
    let ca_pem = ca_pem.to_str().unwrap();

    // Through a proxy, trusting the test's CA by SSL_CERT_FILE.
    let proxy = ConnectProxy::start();
    let proxy_url = proxy.url();
    let via_proxy =
        [("SSL_CERT_FILE", Some(ca_pem)), ("HTTPS_PROXY", Some(proxy_url.as_str())), ("NO_PROXY", None)];
    let run = SourceRun::new("https");
    let out = run.build_with(&["-k", "v1.30.0", "--kube-repo", &url], &via_proxy);
    assert_success(&out, "build -k v1.30.0 cloned over https");
    assert_eq!(run.built_version(), "v1.30.0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MB received"), "says how much it transferred: {stderr}");
    let connects = proxy.requests();
    assert!(
        connects.contains(&format!("CONNECT 127.0.0.1:{}", server.port())),
        "through the proxy: {connects:?}"
    );
    let clone = run.cache.path().join("kubernetes");
    assert!(clone.join(".git/shallow").is_file(), "a shallow clone");
    assert_eq!(
        git(&clone, &["rev-list", "--count", "--all"]).trim(),
        "1",
        "one tag's commit, not the history"
    );
    assert!(git(&clone, &["tag"]).lines().eq(["v1.30.0"]), "only the tag it needs");

    // The next version comes alone into the same clone, which stays shallow.
    let out = run.build_with(&["-k", "v1.30.1", "--kube-repo", &url], &via_proxy);
    assert_success(&out, "build -k v1.30.1 reusing the https clone");
    assert_eq!(run.built_version(), "v1.30.1");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cloning"), "no second clone");
    assert!(clone.join(".git/shallow").is_file(), "still shallow");
    assert_eq!(git(&clone, &["rev-list", "--count", "--all"]).trim(), "2");

    // A CA nobody told the client about: one line naming the remote, nothing cloned.
    let untrusted = SourceRun::new("https-untrusted");
    let out = untrusted.build_with(
        &["-k", "v1.30.0", "--kube-repo", &url],
        &[("SSL_CERT_FILE", None), ("SSL_CERT_DIR", None)],
    );
    let line = untrusted.assert_failed(&out, &url);
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert!(!untrusted.cache.path().join("kubernetes").exists(), "no clone kept");

    // NO_PROXY skips a proxy that does not answer.
    let direct = SourceRun::new("https-noproxy");
    let dead_proxy = [
        ("SSL_CERT_FILE", Some(ca_pem)),
        ("HTTPS_PROXY", Some("http://127.0.0.1:9")),
        ("NO_PROXY", Some("127.0.0.1")),
    ];
    let out = direct.build_with(&["-k", "v1.30.0", "--kube-repo", &url], &dead_proxy);
    assert_success(&out, "build -k with NO_PROXY naming the git server");
    assert_eq!(direct.built_version(), "v1.30.0");
    eprintln!("requests served:\n{}", server.requests());
}
