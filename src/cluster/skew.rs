//! Kubernetes' version skew policy for the kubelet: never newer than the API server, and at
//! most three minor versions older (two before v1.28). Minor versions only: a patch release
//! of either side is within the policy.

use crate::kube::KubeVersion;

/// Why `kubelet` may not run against an API server at `server`.
pub fn check(kubelet: &KubeVersion, server: &KubeVersion) -> Result<(), String> {
    let (k, s) = (&kubelet.semver, &server.semver);
    if k.major != s.major {
        return Err(format!("kubelet {kubelet} and API server {server} differ in their major version"));
    }
    if k.minor > s.minor {
        return Err(format!(
            "kubelet {kubelet} is newer than the API server {server}; the skew policy allows none (update the control plane first)"
        ));
    }
    let allowed = if server.at_least(1, 28) { 3 } else { 2 };
    if s.minor - k.minor > allowed {
        return Err(format!(
            "kubelet {kubelet} is {} minor versions older than the API server {server}; the skew policy allows {allowed}",
            s.minor - k.minor
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> KubeVersion {
        KubeVersion::parse(text).unwrap()
    }

    #[test]
    fn the_kubelet_is_never_newer_and_not_too_old() {
        assert!(check(&v("v1.20.2-nodeimg.variant"), &v("v1.20.2")).is_ok());
        // A patch release either way is within the policy.
        assert!(check(&v("v1.20.3"), &v("v1.20.2")).is_ok());
        assert!(check(&v("v1.18.0"), &v("v1.20.2")).is_ok());
        let newer = check(&v("v1.21.0"), &v("v1.20.2")).unwrap_err();
        assert!(newer.contains("newer than the API server v1.20.2"), "{newer}");
        let old = check(&v("v1.17.0"), &v("v1.20.2")).unwrap_err();
        assert!(old.contains("3 minor versions older") && old.contains("allows 2"), "{old}");
        // Since v1.28 the kubelet may be three minors behind.
        assert!(check(&v("v1.27.4"), &v("v1.30.0")).is_ok());
        assert!(check(&v("v1.26.0"), &v("v1.30.0")).unwrap_err().contains("allows 3"));
        assert!(check(&v("v2.0.0"), &v("v1.30.0")).is_err());
    }
}
