//! What the binary tests share: plain HTTP requests to the running
//! binary, free ports, and a recording HTTP server standing in for a media
//! server or a webhook receiver.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Only turns a hang into a failure; events are awaited, never timed.
pub const GUARD: Duration = Duration::from_secs(120);

/// Kills the child if the test fails half way.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` → (status code, body); `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls `path` until `accept` holds; the limit only turns a hang into a
/// failure.
pub fn get_until(port: u16, path: &str, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let started = Instant::now();
    loop {
        if let Some((status, body)) = get(port, path)
            && accept(status, &body)
        {
            return (status, body);
        }
        assert!(
            started.elapsed() < GUARD,
            "{path} never answered as expected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `holds` until it is true; the limit only turns a hang into a
/// failure.
pub fn wait_until(what: &str, mut holds: impl FnMut() -> bool) {
    let started = Instant::now();
    while !holds() {
        assert!(started.elapsed() < GUARD, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the child to exit; the limit only turns a hang into a failure.
pub fn exit_code_within_a_minute(child: &mut Child) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "metafuse did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// The value of `/metrics` counter `name`, if listed.
pub fn counter(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An HTTP/1.1 server on loopback that records every request and answers
/// each with `status` (a media server or webhook receiver double).
pub struct Recorder {
    pub port: u16,
    requests: mpsc::Receiver<Recorded>,
}

impl Recorder {
    pub fn start(status: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (sender, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sender = sender.clone();
                std::thread::spawn(move || serve_connection(stream, status, &sender));
            }
        });
        Recorder { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request received.
    pub fn next(&self) -> Recorded {
        self.requests
            .recv_timeout(GUARD)
            .expect("a request within the guard time")
    }
}

fn serve_connection(stream: TcpStream, status: u16, sender: &mpsc::Sender<Recorded>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = sender.send(Recorded {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let answer = if status == 200 { "{}" } else { "server error" };
        let response = format!(
            "HTTP/1.1 {status} Test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
