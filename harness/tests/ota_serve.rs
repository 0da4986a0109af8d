//! `hil ota serve` as a user runs it: the real process on a store, a real HTTP client
//! (reqwest, and raw TCP for bodies no client should send), `ecu-sim serve` (DoIP on loopback)
//! and `hil serve-artifacts`: every endpoint and its errors, cancel in each state, two targets
//! at once, the event stream up to `committed`, a restarted service resuming its job. The
//! portal in chromium and the MQTT job events: `ota_serve_clients.rs`.

mod common;
mod serve_common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Bench, submit};
use ecu_sim::image::{Behaviour, Version};
use serde_json::Value;

use serve_common::*;

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
