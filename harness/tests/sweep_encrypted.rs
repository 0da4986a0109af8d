//! Power-cut sweeps of encrypted updates over the whole OTA flow: every flash operation
//! (before, torn, after), UDS boundary, download step and boot, in each strategy that copies
//! (swap-scratch, swap-move, swap-offset, overwrite), with the update encrypted for the ECU's
//! key. 0 failures: no cut bricks the ECU, boots an image that does not verify, or installs
//! the update twice — the keys saved in the trailer carry every interrupted swap.

use std::path::{Path, PathBuf};

use hil::scenario::{report, validate};
use hil::sweep::{self, Options, Summary};

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/keys")
}

fn sweep_all(s: &hil::scenario::schema::Scenario, name: &str) -> Summary {
    let summary = sweep::sweep(s, name, &Options::default(), &|_, _, _| {}).unwrap();
    print!("{}", sweep::cli::table(&summary));
    for f in summary.failures.iter().take(10) {
        for p in &f.verdict.problems {
            println!("FAIL  {}: [{}] {}", f.point.what, p.kind.name(), p.message);
        }
    }
    assert!(summary.clean.flash_ops > 30, "{name}: {:?}", summary.clean);
    assert_eq!(summary.fired, summary.points, "{name}: every cut fired");
    assert_eq!(summary.failed, 0, "{name}: {:?}", summary.failure_kinds);
    summary
}

/// An inline encrypted update in `mode`, encrypted for `key` (a file in scenarios/keys).
fn inline(
    mode: &str,
    key: &str,
    encrypt: &str,
    behaviour: &str,
    outcome: &str,
) -> hil::scenario::schema::Scenario {
    let text = format!(
        "description: encrypted update to sweep\nseed: 5\necu: {{boot_mode: {mode}, slot_sectors: 10, enc_key: {}}}\ninstalled: {{version: 1.0.0, size: 15000}}\nupdate: {{version: 2.0.0, size: 16000, encrypt: {encrypt}, behaviour: {behaviour}}}\nclient: {{manager: {{confirm_timeout_s: 5}}}}\nexpect: {{outcome: {outcome}, or_rolled_back: true}}\n",
        keys().join(key).display()
    );
    validate::parse(&text, "sweep.yaml").unwrap()
}

#[test]
fn encrypted_swap_move_library_scenario_sweeps_clean() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/encrypted-swap-move-power-cut-mid-swap.yaml");
    let s = report::load(&path).unwrap();
    let summary = sweep_all(&s, "encrypted-swap-move");
    assert!(
        summary.all.committed > summary.all.rolled_back,
        "{:?}",
        summary.all
    );
}

#[test]
fn encrypted_never_confirming_swap_offset_always_reverts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/encrypted-swap-offset-never-confirms.yaml");
    let s = report::load(&path).unwrap();
    let summary = sweep_all(&s, "encrypted-swap-offset-never-confirms");
    assert_eq!(summary.all.rolled_back, summary.points, "{:?}", summary.all);
}

#[test]
fn encrypted_swap_scratch_aes256_sweeps_clean() {
    let s = inline(
        "swap-scratch",
        "enc-x25519.pem",
        "{aes: 256, hmac_sha512: true}",
        "{healthy: {confirm_after_ms: 200}}",
        "committed",
    );
    sweep_all(&s, "encrypted-swap-scratch");
}

#[test]
fn encrypted_never_confirming_swap_scratch_always_reverts() {
    let s = inline(
        "swap-scratch",
        "enc-ec256.pem",
        "{}",
        "never_confirm",
        "rolled_back",
    );
    let summary = sweep_all(&s, "encrypted-swap-scratch-never-confirms");
    assert_eq!(summary.all.rolled_back, summary.points, "{:?}", summary.all);
}

/// Overwrite cannot revert: an encrypted never-confirming update is installed for good, at
/// every cut (MCUboot's promise for overwrite-only), decrypted once into the primary.
#[test]
fn encrypted_overwrite_installs_for_good_at_every_cut() {
    let s = inline(
        "overwrite",
        "enc-x25519.pem",
        "{}",
        "never_confirm",
        "committed",
    );
    let summary = sweep_all(&s, "encrypted-overwrite-never-confirms");
    assert_eq!(summary.all.committed, summary.points, "{:?}", summary.all);
}
