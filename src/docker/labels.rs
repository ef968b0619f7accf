use std::collections::HashMap;

/// Which nodeimg run created a container or image.
pub const LABEL_BUILD: &str = "io.nodeimg.build";
/// The nodeimg version that created it.
pub const LABEL_VERSION: &str = "io.nodeimg.version";
/// On a container the cleanup guard leaves in place (`--keep-container`).
pub const LABEL_KEEP: &str = "io.nodeimg.keep";
/// Process and host of the run, so `nodeimg clean` can tell a live run from a killed one.
pub const LABEL_PID: &str = "io.nodeimg.pid";
pub const LABEL_HOST: &str = "io.nodeimg.host";

/// The labels put on everything a run creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub run_id: String,
    pub version: String,
    pub pid: u32,
    pub host: String,
}

impl Labels {
    /// Labels for this process. `NODEIMG_RUN_ID` lets a pipeline choose the id (to find what
    /// a CI job left behind); otherwise it is unique per process.
    pub fn for_this_process() -> Self {
        let pid = std::process::id();
        let run_id = std::env::var("NODEIMG_RUN_ID").ok().filter(|id| !id.is_empty()).unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{:x}-{pid:x}", nanos as u64)
        });
        Self { run_id, version: env!("CARGO_PKG_VERSION").to_owned(), pid, host: hostname() }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_BUILD.to_owned(), self.run_id.clone()),
            (LABEL_VERSION.to_owned(), self.version.clone()),
            (LABEL_PID.to_owned(), self.pid.to_string()),
            (LABEL_HOST.to_owned(), self.host.clone()),
        ])
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_run_version_and_process() {
        let labels = Labels { run_id: "r1".into(), version: "0.1.0".into(), pid: 42, host: "h".into() };
        let map = labels.to_map();
        assert_eq!(map[LABEL_BUILD], "r1");
        assert_eq!(map[LABEL_VERSION], "0.1.0");
        assert_eq!(map[LABEL_PID], "42");
        assert_eq!(map[LABEL_HOST], "h");
    }

    #[test]
    fn run_ids_differ_between_runs() {
        let a = Labels::for_this_process();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = Labels::for_this_process();
        if std::env::var("NODEIMG_RUN_ID").is_err() {
            assert_ne!(a.run_id, b.run_id);
        }
        assert_eq!(a.pid, std::process::id());
    }
}
