//! Power-cut sweeps over a small update: every flash operation (before, torn, after) and every
//! UDS boundary, in both boot modes, with no failure; a deliberately broken bootloader that
//! the sweep must catch, with a reproducer `hil run` replays; the README's own example, whose
//! safe rollbacks are outcomes, not failures; the scenario's own faults after a cut; and the
//! CI sweeps over never-confirming, crashing and healthy images in both boot modes.

use std::path::PathBuf;
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
    // Classified as bricked, every failing point.
    let failed = stdout.lines().filter(|l| l.starts_with("FAIL  ")).count();
    let bricked = stdout
        .lines()
        .filter(|l| l.starts_with("FAIL  ") && l.contains(": [bricked] "))
        .count();
    assert_eq!(failed, bricked, "{stdout}");
    assert!(
        stdout.contains(&format!("failed: {bricked} bricked\n")),
        "{stdout}"
    );
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

fn library(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

#[test]
fn the_readme_sweep_exits_0_and_counts_its_safe_rollbacks_as_outcomes() {
    // The README's first sweep: a cut while v2 is on probation makes the bootloader revert it,
    // as it must; that is an outcome the sweep counts, not a failure.
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("sweep")
        .arg(library("healthy-swap-doip.yaml"))
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let all = &v["all"];
    println!("{all}");
    let n = |k: &str| all[k].as_u64().unwrap();
    assert_eq!(n("failed"), 0, "{all}");
    assert!(n("rolled_back") > 0, "cuts on probation revert: {all}");
    assert!(n("committed") > n("rolled_back"), "{all}");
    assert_eq!(n("committed") + n("rolled_back"), n("points"), "{all}");
    assert_eq!(v["points"], all["points"]);
    assert_eq!(v["fired"], all["points"], "every cut fired");
    // Per class the same distribution, adding up.
    let classes = ["flash-ops", "uds", "boots", "download"];
    let sum: u64 = classes
        .iter()
        .map(|c| v["by_kind"][c]["rolled_back"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, n("rolled_back"), "{}", v["by_kind"]);
}

#[test]
fn the_scenarios_own_faults_that_a_cut_preempts_are_not_required() {
    // The library's swap cut (`flash_op: {n: 20, boot: 2}`) cannot fire once a sweep cut has
    // made boot 2 a plain power-on during the transfer: those points pass, counted.
    let text = std::fs::read_to_string(library("power-cut-during-swap.yaml")).unwrap();
    let s = validate::parse(&text, "power-cut-during-swap.yaml").unwrap();
    let o = Options {
        classes: vec![Class::FlashOps, Class::Uds, Class::Boots],
        variants: vec![hil::scenario::schema::CutVariantSpec::Torn],
        ..Options::default()
    };
    let summary = sweep::sweep(&s, "power-cut-during-swap", &o, &|_, _, _| {}).unwrap();
    print!("{}", sweep::cli::table(&summary));
    assert_eq!(summary.fired, summary.points);
    assert!(
        summary.faults_not_required > 0,
        "some cut preempts the scenario's fault"
    );
    assert!(summary.faults_not_required < summary.points);
    assert_eq!(summary.failed, 0, "{:#?}", summary.failures);
}

#[test]
fn a_reproducer_marks_the_scenarios_faults_the_cut_preempted_optional() {
    // A broken bootloader, and the scenario's own reset once v2 is confirmed: where a sweep
    // cut bricked the ECU first, that fault cannot fire; the reproducer says `optional: true`,
    // so `hil run` replays the brick and not a "never fired".
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    let text = "description: a broken bootloader and a reset after the confirm\nseed: 3\necu: {boot_mode: swap, slot_sectors: 10, bootloader_defect: no_step_records}\ninstalled: {version: 1.0.0, size: 15000}\nupdate: {version: 2.0.0, size: 16000}\nfaults:\n  - when: {event: confirmed}\n    do: reset\nexpect: {outcome: committed, version: 2.0.0}\n";
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("failures");
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["sweep", file.to_str().unwrap(), "--points", "flash-ops"])
        .args(["--variants", "torn", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[bricked]"), "{stdout}");
    let mut preempted: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("optional: true")
        })
        .collect();
    preempted.sort();
    assert!(!preempted.is_empty(), "{stdout}");
    for r in preempted.iter().take(2) {
        let o = Command::new(env!("CARGO_BIN_EXE_hil"))
            .arg("run")
            .arg(r)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(text.contains("no bootable image (bricked)"), "{text}");
        assert!(!text.contains("never fired"), "{text}");
    }
}

/// A small update of `behaviour` in `mode`, expecting `outcome`.
fn small(mode: &str, behaviour: &str, outcome: &str) -> hil::scenario::schema::Scenario {
    let text = format!(
        "description: a small update to sweep\nseed: 5\necu: {{boot_mode: {mode}, slot_sectors: 10}}\ninstalled: {{version: 1.0.0, size: 15000}}\nupdate: {{version: 2.0.0, size: 16000, behaviour: {behaviour}}}\nexpect: {{outcome: {outcome}}}\n"
    );
    validate::parse(&text, "ci-sweep.yaml").unwrap()
}

/// Sweep every point class (each cut also kills the manager, as every sweep cut does), print
/// the outcome distribution, require no failure and every cut fired; returns the summary.
fn ci_sweep(mode: &str, label: &str, behaviour: &str, outcome: &str) -> sweep::Summary {
    let s = small(mode, behaviour, outcome);
    let name = format!("{label}-{mode}");
    let summary = sweep::sweep(&s, &name, &Options::default(), &|_, _, _| {}).unwrap();
    print!("{}", sweep::cli::table(&summary));
    for f in summary.failures.iter().take(10) {
        for p in &f.verdict.problems {
            println!("FAIL  {}: [{}] {}", f.point.what, p.kind.name(), p.message);
        }
    }
    assert!(summary.clean.flash_ops > 10, "{name}: {:?}", summary.clean);
    assert_eq!(summary.fired, summary.points, "{name}: every cut fired");
    assert_eq!(
        summary.failed, 0,
        "{name}: failures by kind: {:?}",
        summary.failure_kinds
    );
    assert_eq!(
        summary.all.committed + summary.all.rolled_back + summary.all.refused + summary.all.gave_up,
        summary.points,
        "{name}: every point has an outcome"
    );
    summary
}

/// A never-confirming image can only end rolled back, whatever the cut.
fn never_confirming(mode: &str) {
    let s = ci_sweep(mode, "never-confirming", "never_confirm", "rolled_back");
    assert_eq!(s.all.rolled_back, s.points, "{:?}", s.all);
}

/// An image that crashes on boot can only end rolled back, whatever the cut.
fn crashing(mode: &str) {
    let s = ci_sweep(mode, "crash-on-boot", "crash_on_boot", "rolled_back");
    assert_eq!(s.all.rolled_back, s.points, "{:?}", s.all);
}

/// A healthy image commits, except where a cut on probation makes the bootloader revert it.
fn healthy(mode: &str) {
    let s = ci_sweep(
        mode,
        "healthy",
        "{healthy: {confirm_after_ms: 500}}",
        "committed",
    );
    assert!(s.all.committed > s.all.rolled_back, "{:?}", s.all);
    assert!(
        s.all.rolled_back > 0,
        "a cut on probation reverts: {:?}",
        s.all
    );
}

#[test]
fn ci_sweep_never_confirming_swap() {
    never_confirming("swap");
}

#[test]
fn ci_sweep_never_confirming_ab() {
    never_confirming("ab");
}

#[test]
fn ci_sweep_crash_on_boot_swap() {
    crashing("swap");
}

#[test]
fn ci_sweep_crash_on_boot_ab() {
    crashing("ab");
}

#[test]
fn ci_sweep_healthy_swap() {
    healthy("swap");
}

#[test]
fn ci_sweep_healthy_ab() {
    healthy("ab");
}

#[test]
fn ci_sweep_healthy_swap_move() {
    healthy("swap-move");
}

#[test]
fn ci_sweep_healthy_swap_offset() {
    healthy("swap-offset");
}

#[test]
fn ci_sweep_never_confirming_swap_move() {
    never_confirming("swap-move");
}

#[test]
fn ci_sweep_never_confirming_swap_offset() {
    never_confirming("swap-offset");
}

/// Overwrite cannot revert: a healthy image commits at every point, never rolled back.
#[test]
fn ci_sweep_healthy_overwrite() {
    let s = ci_sweep(
        "overwrite",
        "healthy",
        "{healthy: {confirm_after_ms: 500}}",
        "committed",
    );
    assert_eq!(s.all.rolled_back, 0, "{:?}", s.all);
    assert!(s.all.committed > 0, "{:?}", s.all);
}

/// Overwrite installs even a never-confirming image for good: what MCUboot promises.
#[test]
fn ci_sweep_never_confirming_overwrite() {
    let s = ci_sweep(
        "overwrite",
        "never-confirming",
        "never_confirm",
        "committed",
    );
    assert_eq!(s.all.rolled_back, 0, "{:?}", s.all);
}
