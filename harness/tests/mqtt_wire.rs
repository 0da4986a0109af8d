//! The service messages on a real broker: a `mosquitto` started on a free loopback port
//! (Debian's, installed by `ci/install.sh`), rumqttc clients for a manager and a worker, and
//! paho-mqtt (from `.venv`) as an outside subscriber. Commands and events end to end; a
//! command delivered twice runs once and its events, repeated, are taken once; after a broker
//! restart (no persistence: every session lost) both clients reconnect and resubscribe, the
//! next attempt gets through and a late event of the earlier attempt is dropped.
//!
//! Without mosquitto or the virtualenv these tests fail (they never skip): run `ci/install.sh`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hil::ota::job::TransferStep;
use hil::ota::manager::{Command as OtaCommand, WorkerEvent};
use hil::ota::manifest::Manifest;
use hil::ota::mqtt::{BrokerUrl, Incoming, Mqtt};
use hil::ota::wire::{self, Admit, Dropped, Gate, JobEventMsg, Ledger, WorkerKind, topic};

use common::Broker;

fn manifest() -> Manifest {
    Manifest::parse(
        "artifact: {url: http://127.0.0.1:8080/v2.bin, size: 100, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\nversion: 2.0.0\ntarget: {transport: doip, host: 127.0.0.1}\n",
        "m.yaml",
    )
    .unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

/// Wait until `c` has reconnected after a broker restart.
async fn reconnected(c: &mut Mqtt) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut broke = false;
    while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, c.recv()).await {
        match seen {
            Incoming::Disconnected(_) => broke = true,
            Incoming::Connected { session_present } if broke => {
                assert!(
                    !session_present,
                    "a broker without persistence kept a session"
                );
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The worker's side of one delivery: admit the command and publish what the ledger says.
async fn work(worker: &Mqtt, ledger: &mut Ledger, bytes: &[u8], events: &[WorkerEvent]) -> Admit {
    let cmd: wire::CommandMsg = wire::decode(bytes).unwrap();
    let admit = ledger.admit(&cmd);
    let out = match &admit {
        Admit::Run => events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                ledger
                    .event(&cmd, "worker-t1", e.clone(), i + 1 == events.len())
                    .unwrap()
            })
            .collect(),
        Admit::Repeat(sent) => sent.clone(),
        Admit::Stale { .. } => Vec::new(),
    };
    for ev in &out {
        worker.publish(&topic::events(&ev.job), ev).await.unwrap();
    }
    admit
}

/// The manager's side: events for up to `wait`, each through the gate; (taken, dropped).
async fn collect(
    manager: &mut Mqtt,
    gate: &mut Gate,
    wait: Duration,
) -> (Vec<wire::EventMsg>, Vec<Dropped>) {
    let (mut taken, mut dropped) = (Vec::new(), Vec::new());
    while let Some((t, bytes)) = manager.next_message(wait).await {
        let ev = wire::decode_event(&t, &bytes).unwrap();
        match gate.admit(&ev) {
            Ok(()) => taken.push(ev),
            Err(d) => dropped.push(d),
        }
    }
    (taken, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_events_survive_duplicates_and_a_broker_restart() {
    let broker = Broker::start(Broker::free_port());
    let url = broker.url();
    let mut manager = Mqtt::connect(&url, "manager", &[topic::ALL_EVENTS.to_string()], WAIT)
        .await
        .unwrap();
    let mut worker = Mqtt::connect(
        &url,
        "worker-t1",
        &[topic::commands(WorkerKind::Transfer)],
        WAIT,
    )
    .await
    .unwrap();
    // Subscriptions are sent right after the connection: let the broker take them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut gate = Gate::default();
    let mut ledger = Ledger::default();
    let cmd = gate.issue("job-1", OtaCommand::Transfer, &manifest());
    // Published twice, as a re-delivery would: the worker runs it once and repeats its events.
    for _ in 0..2 {
        manager
            .publish(&topic::commands(WorkerKind::Transfer), &cmd)
            .await
            .unwrap();
    }
    let steps = [
        WorkerEvent::TransferStep(TransferStep::Session),
        WorkerEvent::Transferred,
    ];
    let mut admits = Vec::new();
    for _ in 0..2 {
        let (t, bytes) = worker
            .next_message(WAIT)
            .await
            .expect("the command arrives");
        assert_eq!(t, "ota/v1/commands/transfer");
        admits.push(work(&worker, &mut ledger, &bytes, &steps).await);
    }
    assert_eq!(admits[0], Admit::Run);
    assert!(
        matches!(&admits[1], Admit::Repeat(sent) if sent.len() == 2),
        "{admits:?}"
    );
    let (taken, dropped) = collect(&mut manager, &mut gate, Duration::from_secs(2)).await;
    assert_eq!(
        taken
            .iter()
            .map(|e| (e.attempt, e.seq, e.event.clone()))
            .collect::<Vec<_>>(),
        vec![(1, 1, steps[0].clone()), (1, 2, steps[1].clone())]
    );
    assert_eq!(dropped.len(), 2, "the repeated events: {dropped:?}");
    assert!(
        dropped
            .iter()
            .all(|d| matches!(d, Dropped::Seen { attempt: 1, .. }))
    );
    assert!(gate.issued("job-1").unwrap().finished);

    // The broker dies and comes back empty: both clients reconnect and subscribe again.
    let broker = broker.restart();
    assert!(reconnected(&mut manager).await, "the manager reconnects");
    assert!(reconnected(&mut worker).await, "the worker reconnects");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = gate.issue("job-1", OtaCommand::Transfer, &manifest());
    manager
        .publish(&topic::commands(WorkerKind::Transfer), &next)
        .await
        .unwrap();
    let (_, bytes) = worker
        .next_message(WAIT)
        .await
        .expect("the resubscribed worker gets it");
    assert_eq!(
        work(&worker, &mut ledger, &bytes, &steps[1..]).await,
        Admit::Run
    );
    // A late event of attempt 1 (a worker presumed lost, publishing after all).
    worker
        .publish(&topic::events("job-1"), &taken[0])
        .await
        .unwrap();
    let (taken2, dropped2) = collect(&mut manager, &mut gate, Duration::from_secs(2)).await;
    assert_eq!(
        taken2
            .iter()
            .map(|e| (e.attempt, e.seq))
            .collect::<Vec<_>>(),
        vec![(2, 1)]
    );
    assert_eq!(
        dropped2,
        vec![Dropped::OtherAttempt {
            job: "job-1".into(),
            got: 1,
            current: 2
        }]
    );
    manager.close().await;
    worker.close().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_there_is_a_named_error() {
    let port = Broker::free_port();
    let url: BrokerUrl = format!("mqtt://127.0.0.1:{port}").parse().unwrap();
    let e = Mqtt::connect(&url, "nobody", &[], Duration::from_millis(800))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "no connection to mqtt://127.0.0.1:{port} within 800 ms: "
        )),
        "{e}"
    );
    assert!(e.contains("refused"), "{e}");
}

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(p.exists(), "{} not found: run ci/install.sh", p.display());
    p
}

/// paho-mqtt, a client nobody here wrote, subscribed to `ota/+/events`, reads the job events
/// the manager publishes for outside subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqtt_reads_the_job_events() {
    let broker = Broker::start(Broker::free_port());
    let script = r#"
import json, sys
import paho.mqtt.client as mqtt
want = int(sys.argv[2])
got = []
def on_connect(c, userdata, flags, reason, props):
    c.subscribe("ota/+/events", qos=1)
def on_subscribe(c, userdata, mid, reasons, props):
    print("subscribed", flush=True)
def on_message(c, userdata, msg):
    got.append({"topic": msg.topic, "qos": msg.qos, "payload": json.loads(msg.payload)})
    if len(got) == want:
        c.disconnect()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="outside")
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
for g in got:
    print(json.dumps(g), flush=True)
"#;
    let mut child = Command::new(python())
        .args(["-c", script, &broker.port.to_string(), "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");

    let manager = Mqtt::connect(&broker.url(), "manager", &[], WAIT)
        .await
        .unwrap();
    let sent: Vec<JobEventMsg> = [
        ("downloading", 0),
        ("transferring:block", 1_200),
        ("committed", 9_800),
    ]
    .iter()
    .enumerate()
    .map(|(i, (state, at_ms))| JobEventMsg {
        v: wire::VERSION,
        job: "job-7".into(),
        seq: i as u64 + 1,
        event: format!("state:{state}"),
        state: Some(state.to_string()),
        text: format!("{state} at {at_ms} ms"),
        at_ms: *at_ms,
    })
    .collect();
    for m in &sent {
        manager
            .publish(&topic::job_events(&m.job), m)
            .await
            .unwrap();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, m) in lines.iter().zip(&sent) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["topic"], "ota/job-7/events");
        assert_eq!(v["qos"], 1);
        let back: JobEventMsg = serde_json::from_value(v["payload"].clone()).unwrap();
        assert_eq!(&back, m);
    }
    manager.close().await;
}
