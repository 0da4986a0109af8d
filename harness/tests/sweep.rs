//! Power-cut sweeps over a small update: every flash operation (before, torn, after) and every
//! UDS boundary, in both boot modes, with no failure; and a deliberately broken bootloader
//! that the sweep must catch, with a reproducer `hil run` replays.

use std::process::Command;

use hil::scenario::validate;
use hil::sweep::{self, Class, Options};

fn scenario(mode: &str, defect: &str) -> hil::scenario::schema::Scenario {
    let text = format!(
        "description: small update to sweep\nseed: 3\necu: {{boot_mode: {mode}, slot_sectors: 10{defect}}}\ninstalled: {{version: 1.0.0, size: 15000}}\nupdate: {{version: 2.0.0, size: 16000}}\nexpect: {{outcome: committed, version: 2.0.0, or_rolled_back: true}}\n"
    );
    validate::parse(&text, "sweep.yaml").unwrap()
}

#[test]
fn every_flash_op_and_uds_boundary_in_both_modes_and_nothing_bricks() {
    for mode in ["swap", "ab"] {
        let s = scenario(mode, "");
        let o = Options {
            classes: vec![Class::FlashOps, Class::Uds],
            ..Options::default()
        };
        let summary = sweep::sweep(&s, mode, &o, &|_, _, _| {}).unwrap();
        print!("{}", sweep::cli::table(&summary));
        assert_eq!(
            summary.points as u64,
            3 * summary.clean.flash_ops + summary.clean.requests,
            "a point per flash op and variant, and per request"
        );
        assert!(summary.clean.flash_ops > 10, "{mode}: {:?}", summary.clean);
        assert_eq!(
            summary.fired, summary.points,
            "every cut fired where it was meant to"
        );
        assert_eq!(summary.failed, 0, "{mode}: {:#?}", summary.failures);
    }
}

#[test]
fn a_broken_bootloader_is_found_and_its_reproducer_fails_under_hil_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    let text = "description: a bootloader that journals no swap steps\nseed: 3\necu: {boot_mode: swap, slot_sectors: 10, bootloader_defect: no_step_records}\ninstalled: {version: 1.0.0, size: 15000}\nupdate: {version: 2.0.0, size: 16000}\nexpect: {outcome: committed, version: 2.0.0, or_rolled_back: true}\n";
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("failures");
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--points",
            "flash-ops",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  flash op"), "{stdout}");
    let mut reproducers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    reproducers.sort();
    assert!(!reproducers.is_empty());
    // The first reproducer: the same failure from the start under `hil run`.
    let r = &reproducers[0];
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("run")
        .arg(r)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("no bootable image (bricked)"), "{text}");
    // Without the defect, the same cut is harmless: the bug, not the cut, bricked it.
    let fixed = dir.path().join("fixed.yaml");
    let yaml = std::fs::read_to_string(r).unwrap();
    std::fs::write(
        &fixed,
        yaml.replace("  bootloader_defect: no_step_records\n", ""),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("run")
        .arg(&fixed)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
