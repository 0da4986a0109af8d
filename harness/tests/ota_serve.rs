//! `hil ota serve` as a user runs it: the real process on a store, a real HTTP client
//! (reqwest, and raw TCP for bodies no client should send), `ecu-sim serve` (DoIP on loopback)
//! and `hil serve-artifacts`: every endpoint and its errors, cancel in each state, two targets
//! at once, the event stream up to `committed`, a restarted service resuming its job, and the
//! portal in Debian's chromium.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Bench, Broker, submit};
use ecu_sim::image::{Behaviour, Version};
use serde_json::Value;

/// Bound of every wait for a job (the jobs here take a few seconds).
const PATIENCE: Duration = Duration::from_secs(120);

/// A running `hil ota serve`, killed when dropped; its output is collected.
struct Serve {
    child: Child,
    port: u16,
    out: Arc<Mutex<String>>,
}

impl Serve {
    fn start(store: &Path, args: &[&str]) -> Serve {
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash.
    fn kill(mut self) -> String {
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
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The manifest at `path` (YAML) as JSON text.
fn json_manifest(path: &Path) -> String {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.to_string()
}

async fn post(
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

async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = c.get(url).send().await.expect("the service answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

/// Poll `GET /jobs/{id}` until `done` says so; the job.
async fn wait_job(
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

fn phase(job: &Value) -> &str {
    job["state"]["state"].as_str().unwrap_or_default()
}

fn terminal(job: &Value) -> bool {
    matches!(
        phase(job),
        "committed" | "rolled_back" | "failed" | "cancelled"
    )
}

/// The ECU's state read on a thread of its own (the bench's reader runs its own runtime).
fn ecu_state(
    b: &Bench,
) -> (
    ecu_sim::proto::uds::codec::BootStatusRecord,
    ecu_sim::proto::uds::codec::SlotRecord,
) {
    std::thread::scope(|sc| sc.spawn(|| b.ecu_state()).join().unwrap())
}

/// The events of `GET /events` as (SSE event name, data), collected in the background.
struct Events {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    async fn open(c: &reqwest::Client, s: &Serve) -> Events {
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
    async fn until(&self, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
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
fn raw_request(port: u16, head: &str, body_len: usize, chunked: bool) -> (u16, String) {
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

/// Every endpoint, every kind of bad request, the stream up to `committed`, a late subscriber.
#[test]
fn the_api_end_to_end() {
    let b = Bench::start("max", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        60_000,
    );
    let s = Serve::start(&b.store(), &[]);
    runtime().block_on(async {
        let c = client();
        let (status, list) = get(&c, &s.url("/jobs")).await;
        assert_eq!((status, list.to_string()), (200, r#"{"jobs":[],"unreadable":[]}"#.into()));

        // Content types.
        let json = json_manifest(&v2);
        for ct in [Some("text/plain"), None, Some("application/xml")] {
            let (status, e) = post(&c, &s.url("/jobs"), ct, json.clone()).await;
            assert_eq!(status, 415, "{ct:?}: {e}");
            assert!(e["error"].as_str().unwrap().contains("send application/json or application/yaml"), "{e}");
        }
        // Bad JSON, located.
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/json"), "{\"artifact\": {\"url\": ".into()).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"], "manifest: not valid JSON at line 1 column 21: EOF while parsing a value");
        assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(1), Some(21)));
        // YAML sent as JSON is bad JSON.
        let yaml = std::fs::read_to_string(&v2).unwrap();
        let (status, _) = post(&c, &s.url("/jobs"), Some("application/json"), yaml.clone()).await;
        assert_eq!(status, 400);
        // An unknown field, located at the key.
        let unknown = json.replacen("\"version\"", "\"colour\":\"red\",\"version\"", 1);
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/json"), unknown).await;
        assert_eq!(status, 400, "{e}");
        let text = e["error"].as_str().unwrap();
        assert!(text.starts_with("manifest:1:") && text.contains("unknown field `colour`"), "{e}");
        // A missing field.
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/yaml"), "version: 2.0.0\n".into()).await;
        assert_eq!(status, 400, "{e}");
        assert!(e["error"].as_str().unwrap().contains("missing field `artifact`"), "{e}");
        // Values that do not validate: the errors of `hil ota submit`, located in the body.
        let bad_port = yaml.replace(&format!("port: {}", b.ecu_port), "port: 0");
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/yaml"), bad_port).await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"], "manifest:9:9: target.port: 0 is not a TCP port");
        assert_eq!((e["field"].as_str(), e["line"].as_u64()), (Some("target.port"), Some(9)));
        let bad_sha = json.replace("\"sha256\":\"", "\"sha256\":\"zz");
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/json"), bad_sha).await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["field"], "artifact.sha256");

        // 10 MB: refused by its declared length, and (chunked) once the limit is passed.
        for chunked in [false, true] {
            let length = if chunked {
                "Transfer-Encoding: chunked".to_string()
            } else {
                format!("Content-Length: {}", 10 << 20)
            };
            let head = format!(
                "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\nConnection: close\r\n\r\n"
            );
            let (status, body) = raw_request(s.port, &head, 10 << 20, chunked);
            assert_eq!(status, 413, "chunked {chunked}: {body}");
            let e: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["error"], "the body is over the limit of 65536 bytes");
        }

        // Unknown jobs, paths and methods.
        for path in ["/jobs/job-0042", "/jobs/job-", "/jobs/job-1x", "/jobs/x.json", "/nothing"] {
            let (status, e) = get(&c, &s.url(path)).await;
            assert_eq!(status, 404, "{path}: {e}");
            assert!(e["error"].is_string());
        }
        let (status, e) = post(&c, &s.url("/jobs/job-0042/cancel"), None, String::new()).await;
        assert_eq!((status, e["error"].as_str()), (404, Some("no job job-0042")));
        let r = c.put(s.url("/jobs")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        // Nothing above made a job.
        let (_, list) = get(&c, &s.url("/jobs")).await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 0);

        // A job, watched on the stream from before it is submitted.
        let events = Events::open(&c, &s).await;
        let (status, job) = post(&c, &s.url("/jobs"), Some("application/json"), json.clone()).await;
        assert_eq!(status, 201, "{job}");
        assert_eq!(job["id"], "job-0001");
        assert_eq!(job["running"], true);
        // A second job for the same ECU while the first runs.
        let (status, e) = post(&c, &s.url("/jobs"), Some("application/yaml"), yaml.clone()).await;
        assert_eq!(status, 409, "{e}");
        assert_eq!(e["job"], "job-0001");
        assert!(e["error"].as_str().unwrap().contains(&format!("target doip 127.0.0.1:{} (ecu 0x0010) already has an unfinished job, job-0001", b.ecu_port)), "{e}");

        let seen = events
            .until("state:committed", |n, v| n == "trace" && v["event"] == "state:committed")
            .await;
        let names: Vec<&str> = seen
            .iter()
            .filter(|(n, _)| n == "trace")
            .map(|(_, v)| v["event"].as_str().unwrap())
            .collect();
        let mut rest = &names[..];
        for want in [
            "state:submitted",
            "state:downloading",
            "download_requested",
            "state:downloaded",
            "state:verifying",
            "state:transferring:session",
            "state:transferring:block",
            "state:transferring:check",
            "state:applying:reset",
            "state:applying:await_confirm",
            "ecu_read",
            "state:committed",
        ] {
            match rest.iter().position(|n| *n == want) {
                Some(i) => rest = &rest[i + 1..],
                None => panic!("no {want} (in order) in {names:?}"),
            }
        }
        // Every trace event is numbered in order, names its job and carries its typed state.
        let trace: Vec<&Value> = seen.iter().filter(|(n, _)| n == "trace").map(|(_, v)| v).collect();
        for w in trace.windows(2) {
            assert!(w[0]["seq"].as_u64() < w[1]["seq"].as_u64());
        }
        for e in &trace {
            assert_eq!(e["job"], "job-0001");
            if e["event"].as_str().unwrap().starts_with("state:") {
                assert!(e["state"]["state"].is_string(), "{e}");
            }
        }
        let last_boot = trace.iter().rev().find(|e| e["event"] == "ecu_read").unwrap();
        assert_eq!(last_boot["boot"]["version"], "2.0.0");
        assert_eq!(last_boot["boot"]["confirmed"], true);
        assert_eq!(last_boot["source"], "ecu");

        // The job as the API shows it.
        let job = wait_job(&c, &s, "job-0001", "stopped running", |j| j["running"] == false).await;
        assert_eq!(phase(&job), "committed");
        assert_eq!(job["phase"], "committed");
        let size = job["manifest"]["artifact"]["size"].as_u64().unwrap();
        assert_eq!(job["progress"]["bytes"].as_u64(), Some(size));
        let blocks = job["progress"]["blocks"].as_array().unwrap();
        assert!(blocks[0] == blocks[1] && blocks[0].as_u64() > Some(0), "{job}");
        assert_eq!(job["boot"]["version"], "2.0.0");
        let history = job["history"].as_array().unwrap();
        let times: Vec<u64> = history.iter().map(|t| t["at_us"].as_u64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(history.first().unwrap()["state"]["state"], "submitted");
        assert_eq!(history.last().unwrap()["state"]["state"], "committed");
        let (status, list) = get(&c, &s.url("/jobs")).await;
        assert_eq!(status, 200);
        assert_eq!(list["jobs"][0]["id"], "job-0001");
        // The same document as `hil ota status --json`.
        let o = b.hil(&["ota", "status", "--json"]);
        let status_json: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(status_json[0]["history"], job["history"]);

        // Finished: nothing to cancel.
        let (status, e) = post(&c, &s.url("/jobs/job-0001/cancel"), None, String::new()).await;
        assert_eq!(status, 409, "{e}");
        assert_eq!(e["error"], "job job-0001 is committed: nothing to cancel");

        // A late subscriber gets the current state first.
        let late = Events::open(&c, &s).await;
        let seen = late.until("a job event", |n, _| n == "job").await;
        assert_eq!(seen[0].0, "job");
        assert_eq!(seen[0].1["id"], "job-0001");
        assert_eq!(phase(&seen[0].1), "committed");

        // The ECU runs what the API says.
        let (boot, _) = ecu_state(&b);
        assert_eq!(boot.version, Some(Version::new(2, 0, 0)));
        assert!(boot.confirmed);
        // The target is free again.
        let v3 = b.publish(3, Behaviour::Healthy { confirm_after_ms: 200 }, 30_000);
        let (status, job) = post(&c, &s.url("/jobs"), Some("application/json"), json_manifest(&v3)).await;
        assert_eq!((status, job["id"].as_str()), (201, Some("job-0002")));
        let job = wait_job(&c, &s, "job-0002", "ended", terminal).await;
        assert_eq!(phase(&job), "committed", "{job}");
    });
}

/// A download cut by the server resumes, and the stream and the job's recent events say so
/// as it happens (the portal's retry lines).
#[test]
fn retries_are_on_the_stream() {
    let b = Bench::start("max", &["--close-after", "30000", "--once"]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        80_000,
    );
    let s = Serve::start(&b.store(), &[]);
    runtime().block_on(async {
        let c = client();
        let events = Events::open(&c, &s).await;
        let (status, _) = post(
            &c,
            &s.url("/jobs"),
            Some("application/json"),
            json_manifest(&v2),
        )
        .await;
        assert_eq!(status, 201);
        let seen = events
            .until("state:committed", |n, v| {
                n == "trace" && v["event"] == "state:committed"
            })
            .await;
        let resumed = seen
            .iter()
            .find(|(_, v)| v["event"] == "download_resumed")
            .unwrap_or_else(|| panic!("no download_resumed in {seen:?}"));
        assert_eq!(resumed.1["source"], "download");
        assert_eq!(resumed.1["text"], "resuming at byte 30000");
        let job = wait_job(&c, &s, "job-0001", "stopped running", |j| {
            j["running"] == false
        })
        .await;
        assert_eq!(phase(&job), "committed");
        let recent: Vec<&str> = job["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(recent.contains(&"download_resumed"), "{recent:?}");
        assert!(recent.contains(&"ecu_read"), "{recent:?}");
    });
}

/// Cancel in each state a live job can be caught in: queued (`submitted`), downloading,
/// transferring (before the check routine: the ECU keeps running v1 and installs nothing),
/// applying (refused: the ECU was told to install), finished (refused).
#[test]
fn cancel_in_each_state() {
    // A throttled server (downloads take seconds) and an ECU at simulated speed ×5 (the
    // transfer and the boot take seconds).
    let b = Bench::start("5", &["--throttle", "40000"]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 4000,
        },
        120_000,
    );
    let v3 = b.publish(
        3,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        120_000,
    );
    // Two jobs for one ECU, submitted while no service runs: the second waits its turn.
    assert_eq!(submit(&b, &v2), "job-0001");
    assert_eq!(submit(&b, &v3), "job-0002");
    let s = Serve::start(&b.store(), &[]);
    runtime().block_on(async {
        let c = client();
        let cancel = |id: &str| {
            let url = s.url(&format!("/jobs/{id}/cancel"));
            let c = c.clone();
            async move { post(&c, &url, None, String::new()).await }
        };
        // job-0002 is queued behind job-0001: still submitted.
        let job1 = wait_job(&c, &s, "job-0001", "downloading", |j| {
            phase(j) == "downloading"
        })
        .await;
        assert_eq!(job1["running"], true);
        let (_, job2) = get(&c, &s.url("/jobs/job-0002")).await;
        assert_eq!(phase(&job2), "submitted");
        let (status, job2) = cancel("job-0002").await;
        assert_eq!(status, 200, "{job2}");
        assert_eq!(phase(&job2), "cancelled");
        assert_eq!(job2["running"], false);
        let states: Vec<&str> = job2["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"]["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["submitted", "cancelled"]);
        // Twice: finished.
        let (status, e) = cancel("job-0002").await;
        assert_eq!(status, 409);
        assert_eq!(e["error"], "job job-0002 is cancelled: nothing to cancel");

        // job-0001 while it downloads.
        let (status, job1) = cancel("job-0001").await;
        assert_eq!(status, 200, "{job1}");
        assert_eq!(phase(&job1), "cancelled");
        let history = job1["history"].as_array().unwrap();
        assert_eq!(history[history.len() - 2]["state"]["state"], "downloading");
        assert!(
            job1["progress"]["bytes"].as_u64().unwrap() < 120_000,
            "{job1}"
        );
        // It stays cancelled: the task is gone, the document says so.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, again) = get(&c, &s.url("/jobs/job-0001")).await;
        assert_eq!(phase(&again), "cancelled");
        assert_eq!(again["history"], job1["history"]);

        // A new job for the same ECU, cancelled in the transfer (its artifact downloads
        // again, then the blocks go out at the ECU's pace).
        let (status, job) = post(
            &c,
            &s.url("/jobs"),
            Some("application/json"),
            json_manifest(&v2),
        )
        .await;
        assert_eq!(
            (status, job["id"].as_str()),
            (201, Some("job-0003")),
            "{job}"
        );
        wait_job(&c, &s, "job-0003", "transferring blocks", |j| {
            j["state"]["step"]["step"] == "block"
        })
        .await;
        let (status, job3) = cancel("job-0003").await;
        assert_eq!(status, 200, "{job3}");
        assert_eq!(phase(&job3), "cancelled");
        let history = job3["history"].as_array().unwrap();
        assert_eq!(history[history.len() - 2]["state"]["state"], "transferring");
        assert!(job3.get("requested_at_boot").is_none(), "{job3}");
        // The ECU still runs v1 and was not asked to install anything.
        let (boot, slot) = ecu_state(&b);
        assert_eq!(boot.version, Some(Version::new(1, 0, 0)));
        assert!(boot.confirmed);
        assert_eq!(slot.version, Some(Version::new(1, 0, 0)));

        // A job caught while it applies: refused, and it goes on to commit.
        let (status, job) = post(
            &c,
            &s.url("/jobs"),
            Some("application/yaml"),
            std::fs::read_to_string(&v2).unwrap(),
        )
        .await;
        assert_eq!(
            (status, job["id"].as_str()),
            (201, Some("job-0004")),
            "{job}"
        );
        wait_job(&c, &s, "job-0004", "applying", |j| phase(j) == "applying").await;
        let (status, e) = cancel("job-0004").await;
        assert_eq!(status, 409, "{e}");
        let text = e["error"].as_str().unwrap();
        assert!(
            text.starts_with("job job-0004 cannot be cancelled any more (applying: ")
                && text.ends_with(
                    "the ecu has been told to install the image: the bootloader decides now"
                ),
            "{e}"
        );
        assert_eq!(e["state"]["state"], "applying");
        let job4 = wait_job(&c, &s, "job-0004", "ended", terminal).await;
        assert_eq!(phase(&job4), "committed", "{job4}");
        let (boot, _) = ecu_state(&b);
        assert_eq!(boot.version, Some(Version::new(2, 0, 0)));
    });
    let out = s.output();
    assert!(out.contains("job-0002: cancelled"), "{out}");
    assert!(out.contains("job-0004: COMMITTED v2.0.0"), "{out}");
}

/// Two ECUs, two jobs at once: both download at the same time and both commit.
#[test]
fn two_targets_run_concurrently() {
    let a = Bench::start("max", &["--throttle", "60000"]);
    let other = Bench::start("max", &["--throttle", "60000"]);
    let va = a.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        120_000,
    );
    let vb = other.publish(
        4,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        120_000,
    );
    let s = Serve::start(&a.store(), &[]);
    runtime().block_on(async {
        let c = client();
        for (m, id) in [(&va, "job-0001"), (&vb, "job-0002")] {
            let (status, job) = post(
                &c,
                &s.url("/jobs"),
                Some("application/json"),
                json_manifest(m),
            )
            .await;
            assert_eq!((status, job["id"].as_str()), (201, Some(id)), "{job}");
        }
        // Both on their way at one instant.
        let start = Instant::now();
        loop {
            let (_, list) = get(&c, &s.url("/jobs")).await;
            let jobs = list["jobs"].as_array().unwrap();
            let downloading = jobs
                .iter()
                .filter(|j| phase(j) == "downloading" && j["progress"]["bytes"].as_u64() > Some(0))
                .count();
            if downloading == 2 {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE && !jobs.iter().any(terminal),
                "the two jobs never downloaded at once: {list}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in ["job-0001", "job-0002"] {
            let job = wait_job(&c, &s, id, "ended", terminal).await;
            assert_eq!(phase(&job), "committed", "{job}");
        }
    });
    assert_eq!(a.ecu_state().0.version, Some(Version::new(2, 0, 0)));
    assert_eq!(other.ecu_state().0.version, Some(Version::new(4, 0, 0)));
}

/// The service killed mid-transfer: started again on its store, it resumes the job (the
/// manager asks the ECU first, then programs again) and the job commits.
#[test]
fn a_restarted_service_resumes_its_job() {
    let b = Bench::start("5", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        120_000,
    );
    let s = Serve::start(&b.store(), &[]);
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        let (status, _) = post(
            &c,
            &s.url("/jobs"),
            Some("application/json"),
            json_manifest(&v2),
        )
        .await;
        assert_eq!(status, 201);
        wait_job(&c, &s, "job-0001", "transferring blocks", |j| {
            j["state"]["step"]["step"] == "block"
        })
        .await;
    });
    let first = s.kill();
    // A second service while the first is down takes the store; the first one's lock died
    // with it.
    let s = Serve::start(&b.store(), &[]);
    rt.block_on(async {
        let c = client();
        let job = wait_job(&c, &s, "job-0001", "ended", terminal).await;
        assert_eq!(phase(&job), "committed", "{job}\n{first}\n{}", s.output());
        assert_eq!(job["attempts"]["transfer"], 2, "{job}");
        assert_eq!(job["attempts"]["download"], 1, "{job}");
    });
    let out = s.output();
    assert!(
        out.contains("job-0001: resuming (transferring: block "),
        "{out}"
    );
    assert_eq!(b.ecu_state().0.version, Some(Version::new(2, 0, 0)));
    // While a service holds the store, `hil ota run` is refused.
    let o = b.hil(&["ota", "run"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    // And a second service too.
    let o = b
        .hil_command(&["ota", "serve", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is in use by another"),
        "{}",
        common::text(&o)
    );
    // SIGTERM ends the service with 0, also with an event stream open.
    let stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&stream)
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut s = s;
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", s.output());
    drop(stream);
}

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium() -> Command {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: ci/install.sh installs Debian's chromium"
    );
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1200,900",
    ]);
    cmd
}

/// Where test artifacts are kept: `target/test-artifacts`.
fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `hil ota serve --mqtt URL` publishes every job event on `ota/<job>/events`: paho-mqtt (a
/// client nobody here wrote) subscribed to `ota/+/events` on a real mosquitto sees the job's
/// states in order up to `committed`, each message a valid `JobEventMsg`.
#[test]
fn job_events_reach_an_outside_mqtt_subscriber() {
    let broker = Broker::start(Broker::free_port());
    let b = Bench::start("max", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        60_000,
    );
    let script = r#"
import json, sys
import paho.mqtt.client as mqtt
def on_connect(c, userdata, flags, reason, props):
    c.subscribe("ota/+/events", qos=1)
def on_subscribe(c, userdata, mid, reasons, props):
    print("subscribed", flush=True)
def on_message(c, userdata, msg):
    print(json.dumps({"topic": msg.topic, "payload": json.loads(msg.payload)}), flush=True)
    if json.loads(msg.payload).get("state") == "committed":
        c.disconnect()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="outside")
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let mut paho = Command::new(&python)
        .args(["-c", script, &broker.port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} ({e}): run ci/install.sh", python.display()));
    let mut out = BufReader::new(paho.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");
    assert_eq!(submit(&b, &v2), "job-0001");
    let url = broker.url().to_string();
    let _s = Serve::start(&b.store(), &["--mqtt", &url]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while paho.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "no committed state on MQTT within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut states = Vec::new();
    let mut last_seq = 0;
    for line in out.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(v["topic"], "ota/job-0001/events");
        let m: hil::ota::wire::JobEventMsg = serde_json::from_value(v["payload"].clone()).unwrap();
        assert_eq!((m.v, m.job.as_str()), (1, "job-0001"));
        assert!(m.seq > last_seq, "seq rises: {} after {last_seq}", m.seq);
        last_seq = m.seq;
        if let Some(state) = m.state {
            assert_eq!(m.event, format!("state:{state}"));
            states.push(state);
        }
    }
    let top: Vec<&str> = states
        .iter()
        .map(|s| s.split(':').next().unwrap())
        .collect();
    let mut phases = top.clone();
    phases.dedup();
    assert_eq!(
        phases,
        [
            "downloading",
            "downloaded",
            "verifying",
            "transferring",
            "applying",
            "committed"
        ],
        "{states:?}"
    );
}

/// The portal in a real browser: chromium opens it while the job runs and the page follows
/// the job over the event stream to `committed` (its title, read over the DevTools HTTP
/// endpoint); afterwards `--dump-dom` shows the job committed, and a screenshot is kept in
/// `target/test-artifacts/ota-serve-portal.png`.
#[test]
fn the_portal_in_chromium() {
    // Long enough (a 6 s download) for chromium to start while the job runs.
    let b = Bench::start("5", &["--throttle", "20000"]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 300,
        },
        120_000,
    );
    let s = Serve::start(&b.store(), &[]);
    let profile = tempfile::tempdir().unwrap();
    let rt = runtime();
    let c = client();
    rt.block_on(async {
        let (status, _) = post(
            &c,
            &s.url("/jobs"),
            Some("application/json"),
            json_manifest(&v2),
        )
        .await;
        assert_eq!(status, 201);
        wait_job(&c, &s, "job-0001", "downloading", |j| {
            phase(j) == "downloading"
        })
        .await;
    });
    let mut browser = chromium()
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(s.url("/"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
    let mut err = BufReader::new(browser.stderr.take().unwrap());
    let devtools = loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "chromium said no DevTools port"
        );
        if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in err.lines() {});
    let titles = rt.block_on(async {
        let mut titles: Vec<String> = Vec::new();
        let start = Instant::now();
        loop {
            let list: Value = match c.get(format!("http://{devtools}/json/list")).send().await {
                Ok(r) => {
                    serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null)
                }
                Err(_) => Value::Null,
            };
            let title = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| {
                    t["type"] == "page"
                        && t["url"]
                            .as_str()
                            .is_some_and(|u| u.starts_with(&s.url("/")))
                })
                .and_then(|t| t["title"].as_str())
                .unwrap_or_default()
                .to_string();
            if titles.last() != Some(&title) && title.starts_with("hil ota:") {
                titles.push(title.clone());
            }
            if title == "hil ota: job-0001 committed" {
                break titles;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the page never showed the job committed: {titles:?}\n{}",
                s.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let _ = browser.kill();
    let _ = browser.wait();
    // The page saw the job before it committed: the stream, not the first load, took it there.
    assert!(
        titles.len() >= 2 && titles[0] != "hil ota: job-0001 committed",
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.contains("transferring")),
        "{titles:?}"
    );

    let dom = chromium()
        .arg("--dump-dom")
        .arg(s.url("/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"<section class="job" data-job="job-0001" data-state="committed">"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"data-role="state">committed</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<li class="done" data-step="committed">committed</li>"#),
        "{dom}"
    );
    assert!(
        dom.contains("ECU: </b>v2.0.0 in slot 0, confirmed"),
        "{dom}"
    );
    // The events of the job the service kept: the download and the ECU's boot status.
    assert!(
        dom.contains("download: requesting the whole artifact"),
        "{dom}"
    );
    assert!(
        dom.contains("ecu: boot status: v2.0.0 in slot 0, confirmed"),
        "{dom}"
    );
    let shot = artifact_dir().join("ota-serve-portal.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium()
        .arg(format!("--screenshot={}", shot.display()))
        .arg(s.url("/"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
