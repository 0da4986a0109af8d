//! Interop with MCUboot's own `imgtool` (PyPI `imgtool`, pinned in ci/requirements.txt and
//! installed into `.venv` by `ci/install.sh`; `HIL_IMGTOOL` overrides the path): images it
//! signs verify and boot in the simulator, tampered ones are refused, and images we sign pass
//! `imgtool verify` — byte for byte the same as imgtool's own.
//!
//! Without imgtool these tests fail (they never skip): run `ci/install.sh`.

mod common;

use common::{hex, imgtool_output, payload, run};
use std::path::{Path, PathBuf};

use ecu_sim::boot::{BootConfig, BootMode, Slot};
use ecu_sim::ecu::Ecu;
use ecu_sim::event::EventKind;
use ecu_sim::flash::Geometry;
use ecu_sim::image::{
    self, Behaviour, HashAlg, ImageBuilder, ImageError, Keyring, PublicKey, SignatureKind,
    TLV_SIM_BEHAVIOUR, Version, dev_key,
};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;

/// A fresh ed25519 key from `imgtool keygen` (at `dir/key.pem`), and our keyring holding
/// its public half, loaded from `imgtool getpub -e pem`.
fn imgtool_key(dir: &Path) -> (Keyring, PathBuf) {
    run(&["keygen", "-k", "key.pem", "-t", "ed25519"], dir);
    let pem = run(&["getpub", "-k", "key.pem", "-e", "pem"], dir);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let mut keys = Keyring::new();
    keys.add_pem(&pem).expect("imgtool's public key PEM loads");
    (keys, dir.join("key.pem"))
}

/// imgtool's private key, loaded by ed25519-dalek.
fn signing_key(key_path: &Path) -> SigningKey {
    let pem = std::fs::read_to_string(key_path).unwrap();
    SigningKey::from_pkcs8_pem(&pem).expect("imgtool's private key PEM loads")
}

/// Sign `payload` with `dir/key.pem`: header 0x200 (padded), align 8, slot 0x20000, and
/// `extra` options (a custom TLV, `--pad`, ...).
fn imgtool_sign(
    dir: &Path,
    payload: &[u8],
    version: &str,
    counter: u32,
    extra: &[&str],
) -> Vec<u8> {
    let tag = format!(
        "{version}-{counter}-{}",
        extra.join("_").replace(['/', ' '], "")
    );
    let input = dir.join(format!("in-{tag}.bin"));
    let output = dir.join(format!("out-{tag}.bin"));
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

/// What the imgtool image of [`imgtool_signed_image`] carries.
const BEHAVIOUR: Behaviour = Behaviour::Hang { watchdog_ms: 500 };
const PAYLOAD_LEN: usize = 5000;

// ---------------------------------------------------------------------------------------------
// Shared fixture for other tests (e.g. booting an imgtool image in the simulated bootloader):
// a real `imgtool sign` image and the keyring that trusts its key.
// ---------------------------------------------------------------------------------------------

/// An image signed by `imgtool sign` with a fresh imgtool ed25519 key in `dir`:
/// `--header-size 0x200 --pad-header --align 8 --version 1.2.3+4 --slot-size 0x20000
/// --security-counter 7 --custom-tlv 0xa5 <Behaviour::Hang { watchdog_ms: 500 }>`, payload
/// [`PAYLOAD_LEN`] pseudo-random bytes. Returns the image and a keyring with (only) that key.
fn imgtool_signed_image(dir: &Path) -> (Vec<u8>, Keyring) {
    let (keys, _) = imgtool_key(dir);
    let tag = format!("0x{TLV_SIM_BEHAVIOUR:02x}");
    let value = format!("0x{}", hex(&BEHAVIOUR.encode()));
    let img = imgtool_sign(
        dir,
        &payload(PAYLOAD_LEN, 1),
        "1.2.3+4",
        7,
        &["--custom-tlv", &tag, &value],
    );
    (img, keys)
}

#[test]
fn imgtool_signed_image_verifies_with_counter_and_simulation_tlv() {
    let dir = tempfile::tempdir().unwrap();
    let (img, keys) = imgtool_signed_image(dir.path());
    let info = image::verify(&img, &keys, 7).expect("imgtool image verifies");
    assert_eq!(info.header.version, Version::new(1, 2, 3).with_build(4));
    assert_eq!(info.security_counter, 7);
    assert_eq!(info.behaviour, BEHAVIOUR);
    assert_eq!(info.header.hdr_size, 0x200);
    assert_eq!(info.header.img_size as usize, PAYLOAD_LEN);
    // SEC_CNT (4 + 4) and the simulation TLV (4 + 5), after the 4-byte info.
    assert_eq!(info.header.protect_tlv_size, 4 + 8 + 9);
    assert_eq!(info.total_size, img.len());
    assert!(info.signed);
    assert_eq!(
        image::verify(&img, &keys, 8),
        Err(ImageError::CounterTooLow {
            image: 7,
            required: 8
        })
    );

    // imgtool agrees on the digest.
    let path = dir.path().join("theirs.bin");
    std::fs::write(&path, &img).unwrap();
    let out = run(
        &["verify", "-k", "key.pem", path.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        out.contains(&format!("Image digest: {}", hex(&info.hash))),
        "{out}"
    );
    assert!(out.contains("Image version: 1.2.3+4"), "{out}");
}

#[test]
fn tampered_imgtool_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, keys) = imgtool_signed_image(dir.path());
    // A payload byte, a header padding byte, the behaviour TLV's parameter.
    let prot = 0x200 + PAYLOAD_LEN;
    for at in [0x200 + 1234, 0x100, prot + 4 + 8 + 4 + 1] {
        let mut tampered = img.clone();
        tampered[at] ^= 0x01;
        assert_eq!(
            image::verify(&tampered, &keys, 0),
            Err(ImageError::HashMismatch),
            "byte {at}"
        );
    }
    let mut tampered = img.clone();
    let last = img.len() - 1;
    tampered[last] ^= 0x01;
    assert_eq!(
        image::verify(&tampered, &keys, 0),
        Err(ImageError::BadSignature {
            signature: SignatureKind::Ed25519
        })
    );
}

#[test]
fn a_key_not_in_the_keyring_is_unknown_and_keyhashes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (img, keys) = imgtool_signed_image(dir.path());
    let theirs = PublicKey::from(signing_key(&dir.path().join("key.pem")).verifying_key());
    let keyhash = theirs.keyhash(HashAlg::Sha256);
    // The KEYHASH we compute is what `imgtool getpubhash` prints.
    run(
        &["getpubhash", "-k", "key.pem", "-e", "raw", "-o", "hash.bin"],
        dir.path(),
    );
    assert_eq!(std::fs::read(dir.path().join("hash.bin")).unwrap(), keyhash);
    assert_eq!(keys.find(&keyhash), Some(&theirs));

    let strangers = Keyring::new().with_key(dev_key("oem").verifying_key());
    assert_eq!(
        image::verify(&img, &strangers, 0),
        Err(ImageError::UnknownKey { keyhash })
    );
    // Trusting both is fine; trusting none checks the hash only.
    let both = strangers.with_key(theirs);
    assert!(image::verify(&img, &both, 0).unwrap().signed);
    assert!(!image::verify(&img, &Keyring::new(), 0).unwrap().signed);
}

#[test]
fn our_images_pass_imgtool_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key_path) = imgtool_key(dir.path());
    let key = signing_key(&key_path);
    let img = ImageBuilder::new("3.1.4+15".parse().unwrap(), payload(3000, 9))
        .security_counter(3)
        .behaviour(Behaviour::NeverConfirm)
        .sign(&key);
    let info = image::verify(&img, &Keyring::new().with_key(key.verifying_key()), 3).unwrap();
    let path = dir.path().join("ours.bin");
    std::fs::write(&path, &img).unwrap();
    let out = run(
        &["verify", "-k", "key.pem", path.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.contains("Image was correctly validated"), "{out}");
    assert!(out.contains("Image version: 3.1.4+15"), "{out}");
    assert!(
        out.contains(&format!("Image digest: {}", hex(&info.hash))),
        "{out}"
    );

    // imgtool refuses it once tampered.
    let mut bad = img;
    bad[0x200 + 5] ^= 0x80;
    std::fs::write(&path, &bad).unwrap();
    let out = imgtool_output(
        &["verify", "-k", "key.pem", path.to_str().unwrap()],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() || !stdout.contains("correctly validated"),
        "imgtool accepted a tampered image: {stdout}"
    );
    assert!(stdout.contains("Image has an invalid hash"), "{stdout}");
}

/// One way to sign an image, given both to imgtool and to our builder.
struct Case {
    len: usize,
    version: &'static str,
    counter: u32,
    header: u16,
    erased: u8,
    behaviour: Option<Behaviour>,
}

#[test]
fn our_builder_writes_the_same_bytes_as_imgtool() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key_path) = imgtool_key(dir.path());
    let key = signing_key(&key_path);
    let cases = [
        Case {
            len: 4000,
            version: "1.2.3+4",
            counter: 7,
            header: 0x200,
            erased: 0xff,
            behaviour: Some(BEHAVIOUR),
        },
        Case {
            len: 1,
            version: "0.0.1",
            counter: 0,
            header: 0x20,
            erased: 0xff,
            behaviour: None,
        },
        Case {
            len: 777,
            version: "255.255.65535+4294967295",
            counter: 1,
            header: 0x80,
            erased: 0,
            behaviour: Some(Behaviour::CrashOnBoot),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let data = payload(case.len, i as u64);
        let tag = format!("0x{TLV_SIM_BEHAVIOUR:02x}");
        let value = case.behaviour.map(|b| format!("0x{}", hex(&b.encode())));
        let header = format!("{:#x}", case.header);
        let counter = case.counter.to_string();
        let erased = if case.erased == 0 { "0" } else { "0xff" };
        let input = dir.path().join(format!("same-{i}.bin"));
        let output = dir.path().join(format!("same-{i}.signed"));
        std::fs::write(&input, &data).unwrap();
        let mut args = vec![
            "sign",
            "-k",
            "key.pem",
            "--header-size",
            &header,
            "--pad-header",
            "-R",
            erased,
            "--align",
            "8",
            "--version",
            case.version,
            "--slot-size",
            "0x20000",
            "--security-counter",
            &counter,
        ];
        if let Some(value) = &value {
            args.extend_from_slice(&["--custom-tlv", &tag, value]);
        }
        args.push(input.to_str().unwrap());
        args.push(output.to_str().unwrap());
        run(&args, dir.path());
        let theirs = std::fs::read(&output).unwrap();

        let mut builder = ImageBuilder::new(case.version.parse().unwrap(), data)
            .header_size(case.header)
            .erased_val(case.erased)
            .security_counter(case.counter);
        if let Some(b) = case.behaviour {
            builder = builder.behaviour(b);
        }
        let ours = builder.sign(&key);
        let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert!(
            first_difference.is_none() && ours.len() == theirs.len(),
            "case {i}: first difference at {first_difference:?}, lengths {} and {}",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn imgtool_slot_images_with_a_trailer_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = imgtool_key(dir.path());
    // --pad fills the slot with 0xff and writes MCUboot's trailer (magic, image_ok) at its end.
    let slot = imgtool_sign(
        dir.path(),
        &payload(2000, 3),
        "2.0.0",
        2,
        &["--pad", "--confirm"],
    );
    assert_eq!(slot.len(), 0x20000);
    let info = image::verify(&slot, &keys, 2).unwrap();
    assert_eq!(info.header.version, Version::new(2, 0, 0));
    assert!(info.total_size < 0x1000);
    assert!(slot[info.total_size..0x1000].iter().all(|&b| b == 0xff));
}

/// imgtool's other ed25519 forms verify too (every signature type: `imgtool_signatures.rs`).
/// imgtool 2.5.0 writes, in the unprotected area:
/// --sha 512: SHA512 (0x12), KEYHASH as SHA-512 of the key, ED25519 over the 64-byte digest;
/// --pure: SHA512 too, then SIG_PURE (0x25), KEYHASH (SHA-512), ED25519 over the image;
/// --public-key-format full: SHA256, PUBKEY (0x02, the key's DER), ED25519.
#[test]
fn imgtool_ed25519_images_with_sha512_pure_or_a_full_key_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = imgtool_key(dir.path());
    let data = payload(1000, 4);
    for (extra, hash, signature) in [
        (
            &["--sha", "512"][..],
            HashAlg::Sha512,
            SignatureKind::Ed25519,
        ),
        (&["--pure"][..], HashAlg::Sha512, SignatureKind::Ed25519Pure),
        (
            &["--public-key-format", "full"][..],
            HashAlg::Sha256,
            SignatureKind::Ed25519,
        ),
    ] {
        let img = imgtool_sign(dir.path(), &data, "1.0.0", 1, extra);
        let info = image::verify(&img, &keys, 0).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_eq!(info.hash_alg, hash, "{extra:?}");
        assert_eq!(info.signature, Some(signature), "{extra:?}");
    }
}

fn ecu_with(keys: Keyring, mode: BootMode, factory: &[u8]) -> Ecu {
    let boot = BootConfig {
        defect: None,
        max_boot_attempts: 1,
        keys,
    };
    let geometry = Geometry::uniform(4096, 3 + 2 * 8 + 1, 8).unwrap();
    Ecu::factory(geometry, mode, factory, boot, 5).unwrap()
}

#[test]
fn imgtool_images_boot_update_and_tampered_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = imgtool_key(dir.path());
    let v1 = imgtool_sign(dir.path(), &payload(12_000, 1), "1.0.0", 1, &[]);
    let v2 = imgtool_sign(dir.path(), &payload(15_000, 2), "2.0.0", 2, &[]);
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
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
        let expected_slot = if mode == BootMode::SwapScratch {
            Slot::Primary
        } else {
            Slot::Secondary
        };
        assert_eq!(r.slot, expected_slot);
        assert_eq!(ecu.status().unwrap().stored_counter, 2);
    }
}
