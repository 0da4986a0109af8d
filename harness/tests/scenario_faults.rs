//! Faults act where the scenario says.

use std::path::{Path, PathBuf};

use hil::scenario::report;
use hil::scenario::runner;

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
