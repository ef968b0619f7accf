//! Servers of the test's own on 127.0.0.1 for what users' machines have and this one lacks:
//! a certificate authority made for the test, an HTTPS git server (git's `git http-backend`
//! behind TLS) and a CONNECT proxy. Each server is a Python script in `scripts/` that prints
//! its port; it is stopped when its guard drops.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{COMMAND_LIMIT, assert_success, output_within};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/scripts").join(name)
}

/// A CA and a server certificate for `127.0.0.1` it signed, made with the openssl CLI.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sh = "set -e
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=nodeimg-test-ca \
              -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
              -keyout ca.key -out ca.pem
            openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
            printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
              -extfile ext -out server.pem";
        let out = output_within(Command::new("sh").args(["-c", sh]).current_dir(dir.path()), COMMAND_LIMIT);
        assert_success(&out, "making the test's CA with openssl");
        TestCa { dir }
    }

    /// The CA's certificate: what SSL_CERT_FILE names for a client that trusts it.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn server_pair(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("server.pem"), self.dir.path().join("server.key"))
    }
}

/// A server script started with `args`, its port read from its first line.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(name: &str, args: &[&Path]) -> Self {
        let mut child = Command::new("python3")
            .arg(script(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        // The script prints its port once it listens, or dies (EOF) trying.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("{name} printed no port: {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        super::stop(&mut self.child);
    }
}

/// An HTTPS git server of the repositories under `root` (`https://127.0.0.1:PORT/NAME.git`).
pub struct GitHttps {
    server: Server,
    log: tempfile::NamedTempFile,
}

impl GitHttps {
    pub fn serve(root: &Path, ca: &TestCa) -> Self {
        let (cert, key) = ca.server_pair();
        let log = tempfile::NamedTempFile::new().unwrap();
        let server = Server::start("git_https.py", &[root, &cert, &key, log.path()]);
        GitHttps { server, log }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/{repo}", self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `METHOD PATH STATUS BYTES` per request served.
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

/// A proxy that tunnels CONNECT requests and logs their request lines.
pub struct ConnectProxy {
    server: Server,
    log: tempfile::NamedTempFile,
}

impl ConnectProxy {
    pub fn start() -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let server = Server::start("connect_proxy.py", &[log.path()]);
        ConnectProxy { server, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}
