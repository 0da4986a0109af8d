//! `ecu-sim` end to end: the flash file keeps the ECU's state across processes, so an update
//! staged by one run is swapped in by the next and confirmed, and a wrong key bricks nothing
//! silently (exit 1, the reason printed).

use std::path::Path;
use std::process::Command;

fn ecu_sim(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn flash_file_carries_an_update_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (v, c) in [("1.0.0", "1"), ("2.0.0", "2")] {
        let out = format!("v{v}.bin");
        let (code, text) = ecu_sim(
            d,
            &[
                "image",
                "--version",
                v,
                "--security-counter",
                c,
                "--size",
                "20000",
                "--out",
                &out,
            ],
        );
        assert_eq!(code, 0, "{text}");
    }
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "provision", "v1.0.0.bin"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "stage", "v2.0.0.bin"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("upgrade from secondary requested (test)"),
        "{text}"
    );
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "boot", "--run-ms", "1000"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("booted 2.0.0 from primary (test, attempt 1)"),
        "{text}"
    );
    assert!(text.contains("2.0.0 in primary confirmed"), "{text}");
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "boot"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("security counter raised 1 -> 2"), "{text}");
    assert!(text.contains("running: 2.0.0 from primary\n"), "{text}");
    let (code, text) = ecu_sim(
        d,
        &["--flash", "f.bin", "--dev-key", "someone-else", "boot"],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no bootable image; primary: signed with an unknown key"),
        "{text}"
    );
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "--sectors", "20", "status"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("holds 540672 bytes but the geometry is 81920 bytes"),
        "{text}"
    );
}
