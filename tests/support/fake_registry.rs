//! A stand-in registry on a free 127.0.0.1 port whose every answer the test decides: for
//! refusals and logins that Debian's docker-registry cannot be made to give. One request per
//! connection, each answered by the test's handler, or passed on to a real registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Request {
    pub method: String,
    /// With the query (`/token?scope=…`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The request line and headers as sent, less `Connection`, for passing on.
    head: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub enum Reply {
    Answer {
        status: &'static str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Pass the request on to the registry at this host.
    Forward(String),
}

impl Reply {
    pub fn ok(content_type: &str, body: &[u8]) -> Self {
        Reply::Answer { status: "200 OK", headers: vec![], body: body.to_vec() }
            .header("Content-Type", content_type)
    }

    /// A registry error: `{"errors":[{"code","message"}]}`.
    pub fn error(status: &'static str, code: &str, message: &str) -> Self {
        let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
        Reply::Answer { status, headers: vec![], body: body.into_bytes() }
            .header("Content-Type", "application/json")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Answer { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

type Handler = dyn Fn(&Request, &str) -> Reply + Send + Sync;

pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRegistry {
    /// Serves until dropped; `handler` gets each request and the registry's own host.
    pub fn start(handler: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log, stopping, own) = (requests.clone(), stop.clone(), host.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (log, handler, own) = (log.clone(), handler.clone(), own.clone());
                        std::thread::spawn(move || serve(stream, &log, &*handler, &own));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { host, requests, stop, thread: Some(thread) }
    }

    /// The request lines so far (`GET /v2/ HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<String>>, handler: &Handler, own: &str) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream);
    // The engine tries TLS first, even for a loopback registry: refuse the handshake at once,
    // as Go's server does, so that it falls back to plain HTTP without waiting.
    if reader.fill_buf().map(|b| b.first() == Some(&0x16)).unwrap_or(true) {
        reader.into_inner().write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").ok();
        return;
    }
    let Some(request) = read_request(&mut reader) else { return };
    log.lock().unwrap().push(request.head.lines().next().unwrap_or("").to_owned());
    let mut client = reader.into_inner();
    match handler(&request, own) {
        Reply::Forward(upstream) => {
            let mut server = TcpStream::connect(upstream).unwrap();
            server.set_read_timeout(Some(Duration::from_secs(10))).ok();
            server.write_all(format!("{}Connection: close\r\n\r\n", request.head).as_bytes()).unwrap();
            server.write_all(&request.body).unwrap();
            std::io::copy(&mut server, &mut client).ok();
        }
        Reply::Answer { status, headers, body } => {
            let mut response =
                format!("HTTP/1.1 {status}\r\nDocker-Distribution-API-Version: registry/2.0\r\n");
            for (name, value) in headers {
                response += &format!("{name}: {value}\r\n");
            }
            response += &format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            client.write_all(response.as_bytes()).ok();
            if request.method != "HEAD" {
                client.write_all(&body).ok();
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    reader.read_line(&mut head).ok()?;
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
        if !name.eq_ignore_ascii_case("connection") {
            head += &line;
        }
    }
    let length = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let mut body = vec![0; length.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, headers, body, head })
}
