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

fn build_image(dir: &Path, version: &str, size: &str, out: &str, sign_with: &str) {
    let (code, text) = ecu_sim(
        dir,
        &[
            "image",
            "--version",
            version,
            "--size",
            size,
            "--sign-with",
            sign_with,
            "--out",
            out,
        ],
    );
    assert_eq!(code, 0, "{text}");
}

/// Every bad image is refused with the verifier's reason before the flash is touched: the flash
/// file stays byte for byte what it was and the factory image still boots.
#[test]
fn provision_refuses_bad_images_and_leaves_the_flash_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_image(d, "1.0.0", "20000", "v1.bin", "oem");
    build_image(d, "2.0.0", "20000", "v2.bin", "oem");
    // The default serve geometry's slot holds 0x3F000 bytes of image.
    build_image(d, "3.0.0", "300000", "huge.bin", "oem");
    build_image(d, "4.0.0", "20000", "foreign.bin", "attacker");
    let v2 = std::fs::read(d.join("v2.bin")).unwrap();
    std::fs::write(d.join("truncated.bin"), &v2[..v2.len() / 2]).unwrap();
    std::fs::write(d.join("empty.bin"), b"").unwrap();
    std::fs::write(d.join("garbage.bin"), vec![0x5Au8; 4096]).unwrap();
    let mut flipped = v2.clone();
    flipped[1000] ^= 0x01;
    std::fs::write(d.join("flipped.bin"), flipped).unwrap();

    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "provision", "v1.bin"]);
    assert_eq!(code, 0, "{text}");
    let before = std::fs::read(d.join("f.bin")).unwrap();
    for (file, reason) in [
        ("huge.bin", "do not fit the primary slot"),
        ("truncated.bin", "image truncated"),
        ("empty.bin", "image truncated"),
        ("garbage.bin", "bad image magic 0x5a5a5a5a"),
        ("flipped.bin", "hash mismatch"),
        ("foreign.bin", "signed with an unknown key"),
    ] {
        let (code, text) = ecu_sim(d, &["--flash", "f.bin", "provision", file]);
        assert_eq!(code, 2, "{file}: {text}");
        assert!(text.contains("image refused"), "{file}: {text}");
        assert!(text.contains(reason), "{file}: wanted {reason:?} in {text}");
        assert!(
            std::fs::read(d.join("f.bin")).unwrap() == before,
            "{file}: the flash changed"
        );
    }
    // Refused before a flash file is even created.
    let (code, text) = ecu_sim(d, &["--flash", "new.bin", "provision", "garbage.bin"]);
    assert_eq!(code, 2, "{text}");
    assert!(!d.join("new.bin").exists());
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "boot"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("running: 1.0.0 from primary"), "{text}");
}

/// `ulimit -v` keeps a regression (a huge allocation) from hurting the machine: the old code
/// died allocating; the new one refuses with a named error before allocating.
#[test]
fn absurd_geometries_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ecu-sim");
    for (args, wanted) in [
        ("--sectors 4000000000", "4000000000 sectors of 4096 bytes"),
        (
            "--sector-size 4294967295 --sectors 2",
            "2 sectors of 4294967295 bytes",
        ),
        ("--sectors 1000000", "1000000 sectors of 4096 bytes"),
        (
            "--sector-size 1073741824 --sectors 8",
            "8 sectors of 1073741824 bytes",
        ),
        ("--sectors 0", "no sectors"),
        ("--sector-size 0", "sector size 0"),
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 1000000; exec {bin} --flash f.bin {args} status"
            ))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args}: {text}");
        assert!(text.contains(wanted), "{args}: wanted {wanted:?} in {text}");
        assert!(!dir.path().join("f.bin").exists(), "{args}");
    }
}

/// `--key` takes every public (or private) key PEM imgtool prints or writes; a key it cannot
/// trust is refused naming what the file holds, an unknown algorithm by the OID found.
#[test]
fn trusted_keys_of_every_type_load_and_refusals_name_what_was_found() {
    use ecu_sim::image::{KeyKind, dev_private_key};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for kind in KeyKind::ALL {
        let key = dev_private_key(kind, "cli");
        std::fs::write(d.join("pub.pem"), key.public_pem()).unwrap();
        std::fs::write(d.join("key.pem"), key.to_pem()).unwrap();
        for file in ["pub.pem", "key.pem"] {
            let (code, text) = ecu_sim(d, &["--flash", "f.bin", "--key", file, "status"]);
            if kind == KeyKind::X25519 {
                assert_eq!(code, 2, "{kind} {file}: {text}");
                assert!(
                    text.contains(&format!(
                        "key {file}: an X25519 key signs no images (it is an encryption key)"
                    )),
                    "{text}"
                );
            } else {
                assert_eq!(code, 0, "{kind} {file}: {text}");
            }
        }
    }
    // SubjectPublicKeyInfo { AlgorithmIdentifier { 1.2.3.4 }, BIT STRING 00 01 }.
    std::fs::write(
        d.join("odd.pem"),
        "-----BEGIN PUBLIC KEY-----\nMAswBQYDKgMEAwIAAQ==\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (code, text) = ecu_sim(d, &["--flash", "f.bin", "--key", "odd.pem", "status"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("key odd.pem: unknown key algorithm OID 1.2.3.4 (expected ed25519"),
        "{text}"
    );
}

/// Every strategy by MCUboot's name (and the old names) through the `ecu-sim` command: the
/// update staged by one process is installed by the next; a misspelt mode lists the names.
#[test]
fn every_mode_by_name_installs_an_update_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (v, c) in [("1.0.0", "1"), ("2.0.0", "2")] {
        let out = format!("v{v}.bin");
        let args = [
            "image",
            "--version",
            v,
            "--security-counter",
            c,
            "--size",
            "20000",
            "--out",
            &out,
        ];
        assert_eq!(ecu_sim(d, &args).0, 0);
    }
    for (mode, slot) in [
        ("swap-scratch", "primary"),
        ("swap-move", "primary"),
        ("swap-offset", "primary"),
        ("overwrite", "primary"),
        ("direct-xip", "secondary"),
        ("swap", "primary"),
        ("ab", "secondary"),
    ] {
        let flash = format!("{mode}.bin");
        let g = ["--flash", flash.as_str(), "--mode", mode];
        let (code, text) = ecu_sim(d, &[&g[..], &["provision", "v1.0.0.bin"]].concat());
        assert_eq!(code, 0, "{mode}: {text}");
        let (code, text) = ecu_sim(d, &[&g[..], &["stage", "v2.0.0.bin"]].concat());
        assert_eq!(code, 0, "{mode}: {text}");
        let (code, text) = ecu_sim(d, &[&g[..], &["boot", "--run-ms", "1000"]].concat());
        assert_eq!(code, 0, "{mode}: {text}");
        let (code, text) = ecu_sim(d, &[&g[..], &["boot"]].concat());
        assert_eq!(code, 0, "{mode}: {text}");
        assert!(
            text.contains(&format!("running: 2.0.0 from {slot}\n")),
            "{mode}: {text}"
        );
    }
    let (code, text) = ecu_sim(d, &["--mode", "ram-load", "status"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("unknown boot mode `ram-load`: expected swap-scratch, swap-move, swap-offset, overwrite or direct-xip"),
        "{text}"
    );
}

/// `--enc-key` takes the private key an image is encrypted for, as `imgtool keygen` writes it
/// (X25519, EC P-256, RSA-2048), or an AES-KW key file; anything else is refused by name.
#[test]
fn decryption_keys_load_and_refusals_name_what_was_found() {
    use ecu_sim::image::{KeyKind, dev_private_key};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let status = |file: &str| ecu_sim(d, &["--flash", "f.bin", "--enc-key", file, "status"]);
    for kind in [KeyKind::X25519, KeyKind::EcdsaP256, KeyKind::Rsa2048] {
        let key = dev_private_key(kind, "cli");
        std::fs::write(d.join("key.pem"), key.to_pem()).unwrap();
        std::fs::write(d.join("pub.pem"), key.public_pem()).unwrap();
        let (code, text) = status("key.pem");
        assert_eq!(code, 0, "{kind}: {text}");
        let (code, text) = status("pub.pem");
        assert_eq!(code, 2, "{kind}: {text}");
        assert!(
            text.contains("decryption key pub.pem: a public key: decrypting needs the private key"),
            "{kind}: {text}"
        );
    }
    // MCUboot's enc-aes128kw.b64.
    std::fs::write(d.join("kw.b64"), "0VoElcTCqP8weM5Jtfyy3Q==\n").unwrap();
    let (code, text) = status("kw.b64");
    assert_eq!(code, 0, "{text}");
    for (kind, wanted) in [
        (KeyKind::Ed25519, "an ed25519 key encrypts no images"),
        (KeyKind::EcdsaP384, "an ECDSA P-384 key encrypts no images"),
        (
            KeyKind::Rsa3072,
            "an RSA key of 3072 bits: MCUboot's ENC_RSA2048 takes RSA-2048 keys",
        ),
    ] {
        std::fs::write(d.join("sign.pem"), dev_private_key(kind, "cli").to_pem()).unwrap();
        let (code, text) = status("sign.pem");
        assert_eq!(code, 2, "{kind}: {text}");
        assert!(
            text.contains(&format!("decryption key sign.pem: {wanted}")),
            "{kind}: {text}"
        );
    }
    std::fs::write(d.join("short.key"), [1u8; 7]).unwrap();
    let (code, text) = status("short.key");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a PEM key nor an AES-KW key"), "{text}");
    let (code, text) = status("missing.pem");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("reading missing.pem"), "{text}");
}
