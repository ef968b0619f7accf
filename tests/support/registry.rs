//! A real image registry (Debian's `docker-registry`, distribution 2.8) on a free 127.0.0.1
//! port, for mirror and air-gap tests. The Docker daemon pushes to and pulls from loopback
//! registries without TLS. Stopped (killed) on drop; its storage lives in a temp dir.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, the registry's host as image references spell it.
    pub host: String,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/setup.sh)");
        let registry = Self { child: Some(child), dir, host: format!("127.0.0.1:{port}") };
        for _ in 0..200 {
            if TcpStream::connect(&registry.host).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (host, dir) = (&registry.host, &registry.dir);
        panic!(
            "docker-registry did not listen on {host}:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// Tags the local image `local` as `<host>/<path>` and pushes it; the local tag made for
    /// the push is removed again, so the daemon keeps no copy under the mirror's name.
    pub async fn push(&self, docker: &nodeimg::docker::Docker, local: &str, path: &str) {
        let reference = format!("{}/{path}", self.host);
        docker.tag_image(local, &reference).await.unwrap();
        docker.push(&reference).await.unwrap_or_else(|e| panic!("push {reference}: {e}"));
        docker.remove_image(&reference).await.unwrap();
    }

    /// Everything the registry logged so far (one access-log line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Stops the registry; later connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            super::stop(&mut child); // reaps it, within a bound
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
