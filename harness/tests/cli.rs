//! End-to-end: the `hil` binary as a user runs it.

use std::process::Command;

fn hil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hil"))
}

#[test]
fn demo_commits_after_a_torn_cut_mid_swap() {
    let out = hil()
        .args(["demo", "--image-size", "20000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("power lost at flash op"), "{stdout}");
    assert!(stdout.contains("resumed at step"), "{stdout}");
    assert!(
        stdout.contains("outcome: COMMITTED — v2.0.0 runs from the primary slot"),
        "{stdout}"
    );
}

#[test]
fn demo_in_ab_mode_commits_after_a_cut_mid_download() {
    let out = hil()
        .args([
            "demo",
            "--mode",
            "ab",
            "--variant",
            "after",
            "--image-size",
            "20000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("the download spans ops"), "{stdout}");
    assert!(
        stdout.contains("outcome: COMMITTED — v2.0.0 runs from the secondary slot"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let out = hil().args(["demo", "--mode", "xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'xyz'"));
}
