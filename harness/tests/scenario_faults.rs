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
