//! What the `hil ota serve` tests share: the service as a process, an HTTP client, the
//! job and event helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Bench;

/// Bound of every wait for a job (the jobs here take a few seconds).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A running `hil ota serve`, killed when dropped; its output is collected.
pub struct Serve {
    pub child: Child,
    pub port: u16,
    out: Arc<Mutex<String>>,
}

impl Serve {
    pub fn start(store: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hil"))
            .args([
                "ota",
                "serve",
                "--http",
                "127.0.0.1:0",
                "--confirm-timeout",
                "5",
            ])
            .arg("--store")
            .arg(store)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hil ota serve starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        let out = Arc::new(Mutex::new(first));
        // Drained all the time: a full pipe must never stall the service.
        let (o, e) = (Arc::clone(&out), Arc::clone(&out));
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                o.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                e.lock().unwrap().push_str(&format!("stderr: {line}\n"));
            }
        });
        Serve { child, port, out }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP client (the build's reqwest has TLS without a default provider).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The manifest at `path` (YAML) as JSON text.
pub fn json_manifest(path: &Path) -> String {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.to_string()
}

pub async fn post(
    c: &reqwest::Client,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut r = c.post(url).body(body);
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    let resp = r.send().await.expect("the service answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

pub async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = c.get(url).send().await.expect("the service answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

/// Poll `GET /jobs/{id}` until `done` says so; the job.
pub async fn wait_job(
    c: &reqwest::Client,
    s: &Serve,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, job) = get(c, &s.url(&format!("/jobs/{id}"))).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{id} never {what}: it is {}\n{}",
            job["state"],
            s.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn phase(job: &Value) -> &str {
    job["state"]["state"].as_str().unwrap_or_default()
}

pub fn terminal(job: &Value) -> bool {
    matches!(
        phase(job),
        "committed" | "rolled_back" | "failed" | "cancelled"
    )
}

/// The ECU's state read on a thread of its own (the bench's reader runs its own runtime).
pub fn ecu_state(
    b: &Bench,
) -> (
    ecu_sim::proto::uds::codec::BootStatusRecord,
    ecu_sim::proto::uds::codec::SlotRecord,
) {
    std::thread::scope(|sc| sc.spawn(|| b.ecu_state()).join().unwrap())
}

/// The events of `GET /events` as (SSE event name, data), collected in the background.
pub struct Events {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    pub async fn open(c: &reqwest::Client, s: &Serve) -> Events {
        let mut resp = c.get(s.url("/events")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut name = String::from("message");
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(n) = line.strip_prefix("event: ") {
                            name = n.to_string();
                        } else if let Some(d) = line.strip_prefix("data: ") {
                            data.push_str(d);
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    let v: Value = serde_json::from_str(&data).expect("event data is JSON");
                    into.lock().unwrap().push((name, v));
                }
            }
        });
        Events { seen, task }
    }

    /// Wait until an event satisfies `pred`; all events so far.
    pub async fn until(
        &self,
        what: &str,
        pred: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        let start = Instant::now();
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if seen.iter().any(|(n, v)| pred(n, v)) {
                    return seen.clone();
                }
            }
            assert!(start.elapsed() < PATIENCE, "no event {what} in the stream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Send `head` then (from another thread) `body_len` bytes; the status and body of the
/// answer, read while the body may still be going out.
pub fn raw_request(port: u16, head: &str, body_len: usize, chunked: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            let r = if chunked {
                writer
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| writer.write_all(&chunk[..n]))
                    .and_then(|()| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&chunk[..n])
            };
            // The server may close once it has refused the body.
            if r.is_err() {
                return;
            }
            left -= n;
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                // Complete: headers and a body of the announced length.
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end].lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    });
                    if len.is_some_and(|l| answer.len() >= end + 4 + l) {
                        break;
                    }
                }
            }
            Err(e) => panic!(
                "reading the answer: {e} (so far {:?})",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    drop(stream);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}
