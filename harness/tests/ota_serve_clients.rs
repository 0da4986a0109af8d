//! `hil ota serve` seen by clients nobody here wrote: the portal in Debian's headless
//! chromium, and paho-mqtt subscribed to the job events the service publishes on mosquitto.

mod common;
mod serve_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bench, Broker, submit};
use ecu_sim::image::Behaviour;
use serde_json::Value;
use serve_common::*;

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
