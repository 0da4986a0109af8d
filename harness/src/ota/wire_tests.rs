use proptest::prelude::*;

use super::*;
use crate::ota::job::TransferStep;

fn manifest() -> Manifest {
    Manifest::parse(
        "artifact: {url: http://127.0.0.1:8080/v2.bin, size: 100, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\nversion: 2.0.0\ntarget: {transport: doip, host: 127.0.0.1}\n",
        "m.yaml",
    )
    .unwrap()
}

#[test]
fn messages_round_trip_and_name_their_schema() {
    let mut gate = Gate::default();
    let cmd = gate.issue("job-1", Command::Transfer, &manifest());
    let back: CommandMsg = decode(&encode(&cmd)).unwrap();
    assert_eq!(back, cmd);
    let text = String::from_utf8(encode(&cmd)).unwrap();
    assert!(
        text.starts_with(r#"{"v":1,"job":"job-1","attempt":1,"command":"transfer","#),
        "{text}"
    );

    let mut ledger = Ledger::default();
    assert_eq!(ledger.admit(&cmd), Admit::Run);
    let ev = ledger
        .event(
            &cmd,
            "w1",
            WorkerEvent::TransferStep(TransferStep::Erase),
            false,
        )
        .unwrap();
    let bytes = encode(&ev);
    assert_eq!(decode_event("ota/v1/events/job-1", &bytes).unwrap(), ev);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""event":{"transfer_step":{"step":"erase"}}"#),
        "{text}"
    );
}

#[test]
fn bad_messages_are_refused_with_the_reason() {
    assert_eq!(
        decode::<CommandMsg>(
            br#"{"v":2,"job":"j","attempt":1,"command":"transfer","manifest":{},"extra":1}"#
        ),
        Err(WireError::Version { found: 2 })
    );
    let unknown = decode::<Heartbeat>(br#"{"v":1,"worker":"w","kind":"download","colour":"red"}"#);
    assert!(
        matches!(&unknown, Err(WireError::Json(m)) if m.contains("unknown field `colour`")),
        "{unknown:?}"
    );
    let kind = decode::<Heartbeat>(br#"{"v":1,"worker":"w","kind":"flash"}"#);
    assert!(
        matches!(&kind, Err(WireError::Json(m)) if m.contains("unknown variant `flash`")),
        "{kind:?}"
    );
    assert!(matches!(
        decode::<Heartbeat>(b"not json"),
        Err(WireError::Json(_))
    ));
    let mut gate = Gate::default();
    let cmd = gate.issue("a", Command::Download, &manifest());
    let mut ledger = Ledger::default();
    ledger.admit(&cmd);
    let ev = ledger
        .event(&cmd, "w", WorkerEvent::Downloaded, true)
        .unwrap();
    assert_eq!(
        decode_event("ota/v1/events/b", &encode(&ev)),
        Err(WireError::TopicMismatch {
            topic: "ota/v1/events/b".into(),
            what: "an event",
            outer: "b".into(),
            inner: "a".into()
        })
    );
}

#[test]
fn a_redelivered_command_is_not_run_twice_and_a_late_one_is_dropped() {
    let mut gate = Gate::default();
    let first = gate.issue("j", Command::Transfer, &manifest());
    let mut ledger = Ledger::default();
    assert_eq!(ledger.admit(&first), Admit::Run);
    let e1 = ledger
        .event(
            &first,
            "w",
            WorkerEvent::TransferStep(TransferStep::Session),
            false,
        )
        .unwrap();
    // Re-delivered: repeat what was sent, do not run it again.
    assert_eq!(ledger.admit(&first), Admit::Repeat(vec![e1.clone()]));
    // The manager gives the job to a new attempt (the worker was taken for lost).
    let second = gate.issue("j", Command::Transfer, &manifest());
    assert_eq!(ledger.admit(&second), Admit::Run);
    // The old execution's next event is suppressed: a newer attempt owns the job.
    assert_eq!(
        ledger.event(&first, "w", WorkerEvent::Transferred, true),
        None
    );
    // The first command arriving late is stale.
    assert_eq!(ledger.admit(&first), Admit::Stale { newest: 2 });
    // And the manager drops the first attempt's event.
    assert_eq!(
        gate.admit(&e1),
        Err(Dropped::OtherAttempt {
            job: "j".into(),
            got: 1,
            current: 2
        })
    );
}

#[test]
fn the_gate_takes_each_event_of_the_current_attempt_once_in_order() {
    let mut gate = Gate::default();
    let cmd = gate.issue("j", Command::Download, &manifest());
    let mut ledger = Ledger::default();
    ledger.admit(&cmd);
    let a = ledger
        .event(
            &cmd,
            "w",
            WorkerEvent::DownloadProgress { bytes: 10 },
            false,
        )
        .unwrap();
    let b = ledger
        .event(&cmd, "w", WorkerEvent::Downloaded, true)
        .unwrap();
    assert_eq!(gate.admit(&a), Ok(()));
    assert!(matches!(
        gate.admit(&a),
        Err(Dropped::Seen {
            seq: 1,
            last: 1,
            ..
        })
    ));
    assert_eq!(gate.admit(&b), Ok(()));
    assert!(gate.issued("j").unwrap().finished);
    assert!(matches!(
        gate.admit(&a),
        Err(Dropped::Seen {
            seq: 1,
            last: 2,
            ..
        })
    ));
    let other = EventMsg {
        job: "k".into(),
        ..a
    };
    assert_eq!(gate.admit(&other), Err(Dropped::UnknownJob("k".into())));
}

#[test]
fn a_silent_worker_is_lost_with_the_job_it_held() {
    let mut live = Liveness::default();
    let hb = |w: &str, holding: Option<(&str, u64)>| Heartbeat {
        v: VERSION,
        worker: w.into(),
        kind: WorkerKind::Transfer,
        holding: holding.map(|(j, a)| (j.to_string(), a)),
    };
    live.heartbeat(0, hb("w1", Some(("j", 3))));
    live.heartbeat(0, hb("w2", None));
    live.heartbeat(3_000, hb("w2", None));
    assert!(live.lost(LOST_AFTER_MS).is_empty());
    assert_eq!(
        live.lost(LOST_AFTER_MS + 1),
        vec![("w1".to_string(), Some(("j".to_string(), 3)))]
    );
    assert!(live.any_alive(WorkerKind::Transfer, LOST_AFTER_MS + 1));
    assert!(!live.any_alive(WorkerKind::Apply, 0));
    assert!(!live.any_alive(WorkerKind::Transfer, 3_000 + LOST_AFTER_MS + 1));
}

#[test]
fn the_gate_survives_a_manager_restart_as_json() {
    let mut gate = Gate::default();
    gate.issue("j", Command::Apply, &manifest());
    let saved = serde_json::to_string(&gate).unwrap();
    let mut back: Gate = serde_json::from_str(&saved).unwrap();
    assert_eq!(back, gate);
    assert_eq!(back.issue("j", Command::Observe, &manifest()).attempt, 2);
}

proptest! {
    /// Whatever the broker does to the events of several attempts — duplicates, reordering,
    /// late arrivals — the manager takes only events of the current attempt, each once, with
    /// rising numbers, and takes its last event if it was delivered at all.
    #[test]
    fn any_delivery_order_takes_each_current_event_once(
        attempts in 1u64..4,
        per_attempt in 1usize..6,
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
    ) {
        let mut gate = Gate::default();
        let mut ledger = Ledger::default();
        let mut all = Vec::new();
        let mut cmd = None;
        for _ in 0..attempts {
            let c = gate.issue("j", Command::Download, &manifest());
            prop_assert_eq!(ledger.admit(&c), Admit::Run);
            for i in 0..per_attempt {
                let last = i + 1 == per_attempt;
                all.push(ledger.event(&c, "w", WorkerEvent::DownloadProgress { bytes: i as u64 }, last).unwrap());
            }
            cmd = Some(c);
        }
        let current = cmd.unwrap().attempt;
        let mut taken = Vec::new();
        for ix in &order {
            let ev = ix.get(&all);
            if gate.admit(ev).is_ok() {
                taken.push((ev.attempt, ev.seq));
            }
        }
        prop_assert!(taken.iter().all(|(a, _)| *a == current));
        prop_assert!(taken.windows(2).all(|w| w[0].1 < w[1].1));
        let delivered_last = order.iter().any(|ix| { let e = ix.get(&all); e.attempt == current && e.last });
        prop_assert_eq!(gate.issued("j").unwrap().finished, delivered_last);
    }

    /// Decoding never panics, whatever the bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::<CommandMsg>(&bytes);
        let _ = decode_event("ota/v1/events/j", &bytes);
        let _ = decode::<Heartbeat>(&bytes);
        let _ = decode::<JobEventMsg>(&bytes);
    }
}
