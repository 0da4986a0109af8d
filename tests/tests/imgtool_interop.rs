//! Interop with MCUboot's own `imgtool` (PyPI `imgtool`, pinned in ci/requirements.txt and
//! installed into `.venv` by `ci/install.sh`): images it signs verify and boot in the
//! simulator, tampered ones are refused, and images we sign pass `imgtool verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ecu_sim::boot::{BootConfig, BootMode, Layout, Slot};
use ecu_sim::ecu::{Ecu, EcuConfig, provision};
use ecu_sim::event::EventKind;
use ecu_sim::flash::{Geometry, SimFlash};
use ecu_sim::image::{self, Behaviour, ImageBuilder, ImageError, Keyring, Version, dev_key};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;

fn imgtool() -> PathBuf {
    let path = std::env::var_os("HIL_IMGTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/imgtool"));
    assert!(
        path.exists(),
        "imgtool not found at {}: run ci/install.sh",
        path.display()
    );
    path
}

fn run(args: &[&str], dir: &Path) -> String {
    let out = Command::new(imgtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("imgtool runs");
    assert!(
        out.status.success(),
        "imgtool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh ed25519 key from imgtool, as our keyring and as imgtool's PEM file.
fn imgtool_key(dir: &Path) -> (Keyring, PathBuf) {
    run(&["keygen", "-k", "key.pem", "-t", "ed25519"], dir);
    let pem = run(&["getpub", "-k", "key.pem", "-e", "pem"], dir);
    let mut keys = Keyring::new();
    keys.add_pem(&pem).expect("imgtool's public key PEM loads");
    (keys, dir.join("key.pem"))
}

/// Sign `payload` with imgtool; `extra` adds options (e.g. a custom TLV).
fn imgtool_sign(
    dir: &Path,
    payload: &[u8],
    version: &str,
    counter: u32,
    extra: &[&str],
) -> Vec<u8> {
    let input = dir.join(format!("in-{version}.bin"));
    let output = dir.join(format!("out-{version}.bin"));
    std::fs::write(&input, payload).unwrap();
    let counter = counter.to_string();
    let mut args = vec![
        "sign",
        "-k",
        "key.pem",
        "--header-size",
        "0x200",
        "--pad-header",
        "--align",
        "8",
        "--version",
        version,
        "--slot-size",
        "0x20000",
        "--security-counter",
        &counter,
    ];
    args.extend_from_slice(extra);
    args.push(input.to_str().unwrap());
    args.push(output.to_str().unwrap());
    run(&args, dir);
    std::fs::read(output).unwrap()
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn imgtool_signed_image_verifies_with_counter_and_simulation_tlv() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = imgtool_key(dir.path());
    // Our simulation TLV through imgtool's --custom-tlv: hang, watchdog 500 ms.
    let tlv = format!("0x{}", hex(&Behaviour::Hang { watchdog_ms: 500 }.encode()));
    let img = imgtool_sign(
        dir.path(),
        &payload(5000, 1),
        "1.2.3+4",
        7,
        &["--custom-tlv", "0xa5", &tlv],
    );
    let info = image::verify(&img, &keys, 7).expect("imgtool image verifies");
    assert_eq!(
        info.header.version,
        Version {
            major: 1,
            minor: 2,
            revision: 3,
            build: 4
        }
    );
    assert_eq!(info.security_counter, 7);
    assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 500 });
    assert_eq!(info.header.hdr_size, 0x200);
    assert!(info.signed);
    assert_eq!(
        image::verify(&img, &keys, 8),
        Err(ImageError::CounterTooLow {
            image: 7,
            required: 8
        })
    );

    let mut tampered = img.clone();
    tampered[0x200 + 1234] ^= 0x01;
    assert_eq!(
        image::verify(&tampered, &keys, 0),
        Err(ImageError::HashMismatch)
    );

    let strangers = Keyring::new().with_key(dev_key("oem").verifying_key());
    assert!(matches!(
        image::verify(&img, &strangers, 0),
        Err(ImageError::UnknownKey { .. })
    ));
}

#[test]
fn our_images_pass_imgtool_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key_path) = imgtool_key(dir.path());
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let key = SigningKey::from_pkcs8_pem(&pem).expect("imgtool's private key PEM loads");
    let img = ImageBuilder::new("3.1.4+15".parse().unwrap(), payload(3000, 9))
        .security_counter(3)
        .behaviour(Behaviour::NeverConfirm)
        .sign(&key);
    let path = dir.path().join("ours.bin");
    std::fs::write(&path, &img).unwrap();
    let out = run(
        &["verify", "-k", "key.pem", path.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.contains("Image was correctly validated"), "{out}");
    assert!(out.contains("Image version: 3.1.4+15"), "{out}");
    // And imgtool refuses it once tampered.
    let mut bad = img;
    bad[0x200 + 5] ^= 0x80;
    std::fs::write(&path, &bad).unwrap();
    let status = Command::new(imgtool())
        .args(["verify", "-k", "key.pem", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !status.status.success()
            || !String::from_utf8_lossy(&status.stdout).contains("correctly validated"),
        "imgtool accepted a tampered image"
    );
}

fn ecu_with(keys: Keyring, mode: BootMode, factory: &[u8]) -> Ecu {
    let geometry = Geometry::uniform(4096, 3 + 2 * 8 + 1, 8).unwrap();
    let layout = Layout::auto(&geometry, mode).unwrap();
    let mut flash = SimFlash::new(geometry, 5);
    provision(&mut flash, &layout, factory).unwrap();
    let config = EcuConfig::new(
        layout,
        BootConfig {
            max_boot_attempts: 1,
            keys,
        },
    );
    let mut ecu = Ecu::new(config, flash);
    ecu.power_on().unwrap();
    ecu
}

#[test]
fn imgtool_images_boot_update_and_tampered_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = imgtool_key(dir.path());
    let v1 = imgtool_sign(dir.path(), &payload(12_000, 1), "1.0.0", 1, &[]);
    let v2 = imgtool_sign(dir.path(), &payload(15_000, 2), "2.0.0", 2, &[]);
    for mode in [BootMode::Swap, BootMode::Ab] {
        let mut ecu = ecu_with(keys.clone(), mode, &v1);
        let running = ecu.running().expect("factory imgtool image boots").clone();
        assert_eq!(running.image.header.version, Version::new(1, 0, 0));

        // A tampered v2 is refused by the bootloader; v1 keeps running.
        let mut tampered = v2.clone();
        tampered[0x200 + 77] ^= 0x04;
        ecu.stage_update(&tampered, false).unwrap();
        ecu.reset().unwrap();
        let events = ecu.drain_events();
        let rejected = events.iter().find_map(|e| match &e.kind {
            EventKind::ImageRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert_eq!(
            rejected.as_deref(),
            Some("hash mismatch: the image is not what was signed"),
            "{mode}: {events:?}"
        );
        assert_eq!(
            ecu.running().unwrap().image.header.version,
            Version::new(1, 0, 0)
        );

        // The genuine v2 installs as a test upgrade and confirms itself (imgtool images carry
        // no simulation TLV: default behaviour, healthy).
        ecu.stage_update(&v2, false).unwrap();
        ecu.reset().unwrap();
        let r = ecu.running().unwrap().clone();
        assert_eq!(r.image.header.version, Version::new(2, 0, 0), "{mode}");
        assert!(r.test);
        ecu.advance(1_000_000).unwrap();
        ecu.power_cycle().unwrap();
        let r = ecu.running().unwrap();
        assert_eq!(r.image.header.version, Version::new(2, 0, 0), "{mode}");
        assert!(!r.test, "{mode}: confirmed after the power cycle");
        let expected_slot = if mode == BootMode::Swap {
            Slot::Primary
        } else {
            Slot::Secondary
        };
        assert_eq!(r.slot, expected_slot);
        assert_eq!(ecu.status().unwrap().stored_counter, 2);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
