//! Faults act where the scenario says and count as fired only when they did something.

use std::path::{Path, PathBuf};

use ecu_sim::flash::Flash;
use hil::scenario::report;
use hil::scenario::runner;
use hil::scenario::schema::Action;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scenarios")
        .join(name)
}

fn texts(r: &runner::RunResult) -> Vec<String> {
    r.trace
        .events
        .iter()
        .map(|e| format!("{}: {}", e.event, e.text))
        .collect()
}

#[test]
fn a_download_fault_at_a_byte_acts_at_that_byte() {
    let s = report::load(&scenario("download-closed-at-byte.yaml")).unwrap();
    let r = runner::run(&s, None).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let t = texts(&r);
    assert!(
        t.iter()
            .any(|l| l == "fault_fired: fault 1 fired at download byte 30000: download close"),
        "{t:#?}"
    );
    assert!(
        t.iter()
            .any(|l| l == "download_resumed: resuming at byte 30000"),
        "{t:#?}"
    );
}

#[test]
fn a_bit_rot_outside_its_region_does_not_fire_and_fails_the_run() {
    let base = report::load(&scenario("bit-rot-staged-image.yaml")).unwrap();
    let p = hil::scenario::prepare::prepare(&std::sync::Arc::new(base.clone())).unwrap();
    let slot = p.world.layout.secondary.region;
    let flash = p.sim.ecu.flash().geometry().size();
    // The first byte past the slot is still in the flash (another region).
    assert!(slot.offset + slot.size < flash);
    let past = format!("offset {:#x} is outside the secondary region", slot.size);
    // Outside the flash, and inside the flash but past the secondary slot.
    for (offset, why) in [
        (
            0x4000_0000,
            "offset 0x40000000 is outside the secondary region",
        ),
        (slot.size, past.as_str()),
    ] {
        let mut s = base.clone();
        let Action::BitRot(b) = &mut s.faults[0].action else {
            panic!("the scenario's fault is a bit rot");
        };
        b.offset = offset;
        let r = runner::run(&s, None).unwrap();
        let t = texts(&r);
        assert!(
            !t.iter().any(|l| l.starts_with("fault_fired:")),
            "a bit rot that did nothing fired: {t:#?}"
        );
        assert!(
            t.iter().any(
                |l| l.starts_with("bit_rot: the bit rot of fault 1 did nothing: ")
                    && l.contains(why)
            ),
            "{t:#?}"
        );
        assert!(
            r.failures.iter().any(|f| f.contains(
                "fault 1 (when: {state: applying:reset}) never fired: its trigger matched, but its action did nothing ("
            ) && f.contains(why)),
            "{:?}",
            r.failures
        );
    }
}

/// A classic-CAN scenario with one fault, parsed as `hil validate` does.
fn can_scenario(when: &str, can: &str) -> hil::scenario::schema::Scenario {
    let text = format!(
        "description: x\nseed: 5\necu: {{transport: can}}\nupdate: {{version: 2.0.0, size: 20000}}\nfaults:\n  - when: {when}\n    do: {{can: {can}}}\nexpect: {{outcome: committed, version: 2.0.0}}\n"
    );
    hil::scenario::validate::parse(&text, "x.yaml").unwrap()
}

fn names(r: &runner::RunResult) -> Vec<&str> {
    r.trace.events.iter().map(|e| &*e.event).collect()
}

#[test]
fn a_can_fault_whose_frame_is_not_in_the_exchange_does_not_fire_and_fails_the_run() {
    // After request 1 (10 02) the fault is armed for request 2 (27 01): a single frame.
    let s = can_scenario("{request: 1}", "{drop: {frame: consecutive, n: 3}}");
    let r = runner::run(&s, None).unwrap();
    let t = texts(&r);
    assert!(
        t.iter().any(|l| l
            == "can_fault_idle: the CAN fault of fault 1 did nothing: the exchange had no 3rd consecutive frame"),
        "{t:#?}"
    );
    assert!(!names(&r).contains(&"can_frame_dropped"));
    assert_eq!(
        r.failures,
        [
            "x.yaml:6:5: fault 1 (when: {request: 1}) never fired: its trigger matched, but its action did nothing (the exchange had no 3rd consecutive frame)"
        ]
    );
}

#[test]
fn a_flow_control_frame_held_past_n_bs_fails_the_testers_send_and_the_update_commits() {
    let s = can_scenario(
        "{transfer_block: 3}",
        "{delay: {ms: 1500, frame: flow_control, n: 2}}",
    );
    let r = runner::run(&s, None).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let t = texts(&r);
    let at = |prefix: &str| {
        t.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {t:#?}"))
    };
    let delayed = at(
        "can_frame_delayed: the 2nd flow control frame (id 0x7e8, ECU) of the request to 0x36 held back 1500 ms",
    );
    let n_bs =
        at("isotp_timeout: N_Bs expired: the tester's sender gave up on the request to 0x36");
    let note = at("note: transfer: transfer data: iso-tp: no flow control within N_Bs");
    assert!(delayed < n_bs && n_bs < note, "{t:#?}");
    // N_Bs is 1 s from the tester's CF 16, the FC would have come 1.5 s after it.
    let ev = &r.trace.events;
    let gap = ev[n_bs].at_us - ev[delayed].at_us;
    assert!((999_000..1_001_000).contains(&gap), "{gap} µs");
}

#[test]
fn the_short_can_forms_act_on_frames_and_the_update_commits() {
    for (form, expected) in [
        (
            "drop",
            &["can_frame_dropped", "isotp_timeout", "can_message_lost"][..],
        ),
        ("corrupt", &["can_error_frame"][..]),
        ("{delay_ms: 20}", &["can_frame_delayed"][..]),
        (
            "duplicate",
            // The block is longer than one ISO-TP block of 16: after the sequence error the
            // ECU sends no more flow control, the tester's N_Bs expires.
            &[
                "can_frame_duplicated",
                "isotp_sequence_error",
                "isotp_timeout",
            ][..],
        ),
    ] {
        let s = can_scenario("{transfer_block: 2}", form);
        let r = runner::run(&s, None).unwrap();
        assert!(r.failures.is_empty(), "{form}: {:?}", r.failures);
        let got: Vec<_> = names(&r)
            .into_iter()
            .filter(|n| n.starts_with("can_") || n.starts_with("isotp_"))
            .collect();
        assert_eq!(got, expected, "{form}: {:#?}", texts(&r));
    }
}
