use std::collections::HashMap;

/// Which nodeimg run created a container or image.
pub const LABEL_BUILD: &str = "io.nodeimg.build";
/// The nodeimg version that created it.
pub const LABEL_VERSION: &str = "io.nodeimg.version";
/// On a container the cleanup guard leaves in place (`--keep-container`).
pub const LABEL_KEEP: &str = "io.nodeimg.keep";
/// On a node container that shares the host's cgroup namespace: its pods' cgroups must be
/// removed from inside before the container goes.
pub const LABEL_HOST_CGROUPS: &str = "io.nodeimg.host-cgroups";
/// Process and host of the run, so `nodeimg clean` can tell a live run from a killed one.
pub const LABEL_PID: &str = "io.nodeimg.pid";
pub const LABEL_HOST: &str = "io.nodeimg.host";
/// Unique to one nodeimg process (pid and start time): what its cleanup may touch, even
/// when several processes share a run id.
pub const LABEL_PROCESS: &str = "io.nodeimg.process";

/// The run id, on the containers nodeimg creates and never on an image: a container started
/// from a node image (a kind node) inherits the image's labels, and `clean` and the guards find
/// containers by this one. Images carry it blank ([`Labels::image_map`]), and a blank one
/// matches nothing.
pub const LABEL_CONTAINER: &str = "io.nodeimg.container";
/// What made an image (run, process, pid, host), under keys no container is judged by: for
/// `clean` and the guards to tell an unfinished image of a live run from a leftover.
pub const LABEL_IMAGE_BUILD: &str = "io.nodeimg.image.build";
pub const LABEL_IMAGE_PROCESS: &str = "io.nodeimg.image.process";
pub const LABEL_IMAGE_PID: &str = "io.nodeimg.image.pid";
pub const LABEL_IMAGE_HOST: &str = "io.nodeimg.image.host";

/// The labels put on everything a run creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub run_id: String,
    pub version: String,
    pub pid: u32,
    pub host: String,
    pub process: String,
}

impl Labels {
    /// Labels for this process. `NODEIMG_RUN_ID` lets a pipeline choose the run id (to find
    /// what a CI job left behind); otherwise it is the process token. Either way the process
    /// token is this process's alone.
    pub fn for_this_process() -> Self {
        Self::with_run_id(std::env::var("NODEIMG_RUN_ID").ok().filter(|id| !id.is_empty()))
    }

    pub fn with_run_id(run_id: Option<String>) -> Self {
        let pid = std::process::id();
        let process = process_token(pid);
        Self {
            run_id: run_id.unwrap_or_else(|| process.clone()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid,
            host: hostname(),
            process,
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_BUILD.to_owned(), self.run_id.clone()),
            (LABEL_VERSION.to_owned(), self.version.clone()),
            (LABEL_PID.to_owned(), self.pid.to_string()),
            (LABEL_HOST.to_owned(), self.host.clone()),
            (LABEL_PROCESS.to_owned(), self.process.clone()),
        ])
    }

    /// A container's: the run's labels and [`LABEL_CONTAINER`].
    pub fn container_map(&self) -> HashMap<String, String> {
        let mut map = self.to_map();
        map.insert(LABEL_CONTAINER.to_owned(), self.run_id.clone());
        map
    }

    /// An image's: the run under the image's own keys, and the container keys blank, which
    /// overrides what a committed build container had (Docker's commit cannot drop a label).
    pub fn image_map(&self) -> HashMap<String, String> {
        let blank = [LABEL_CONTAINER, LABEL_BUILD, LABEL_PID, LABEL_HOST, LABEL_PROCESS];
        let mut map: HashMap<String, String> =
            blank.iter().map(|k| ((*k).to_owned(), String::new())).collect();
        map.extend([
            (LABEL_VERSION.to_owned(), self.version.clone()),
            (LABEL_IMAGE_BUILD.to_owned(), self.run_id.clone()),
            (LABEL_IMAGE_PID.to_owned(), self.pid.to_string()),
            (LABEL_IMAGE_HOST.to_owned(), self.host.clone()),
            (LABEL_IMAGE_PROCESS.to_owned(), self.process.clone()),
        ]);
        map
    }
}

/// `<start time>-<pid>` in hex, fixed for the life of the process; usable in an image tag.
fn process_token(pid: u32) -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{:x}-{pid:x}", nanos as u64)
        })
        .clone()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_run_version_and_process() {
        let labels = Labels {
            run_id: "r1".into(),
            version: "0.1.0".into(),
            pid: 42,
            host: "h".into(),
            process: "p".into(),
        };
        let map = labels.to_map();
        assert_eq!(map[LABEL_BUILD], "r1");
        assert_eq!(map[LABEL_VERSION], "0.1.0");
        assert_eq!(map[LABEL_PID], "42");
        assert_eq!(map[LABEL_HOST], "h");
        assert_eq!(map[LABEL_PROCESS], "p");
    }

    #[test]
    fn images_never_carry_what_containers_are_found_by() {
        let labels = Labels::with_run_id(Some("r2".into()));
        let image = labels.image_map();
        for key in [LABEL_CONTAINER, LABEL_BUILD, LABEL_PID, LABEL_HOST, LABEL_PROCESS] {
            assert_eq!(image[key], "", "{key} is blank on images");
        }
        assert_eq!(image[LABEL_IMAGE_BUILD], "r2");
        assert_eq!(labels.container_map()[LABEL_CONTAINER], "r2");
    }

    #[test]
    fn a_shared_run_id_keeps_the_process_token_apart() {
        let shared = Labels::with_run_id(Some("ci-42".into()));
        assert_eq!(shared.run_id, "ci-42");
        assert_ne!(shared.process, shared.run_id);
        assert!(shared.process.ends_with(&format!("-{:x}", std::process::id())));
        let own = Labels::with_run_id(None);
        assert_eq!(own.run_id, own.process, "without NODEIMG_RUN_ID the run is the process");
    }
}
