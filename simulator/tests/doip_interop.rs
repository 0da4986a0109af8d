//! Interop with diagnostic tools nobody here wrote: python-udsoncan over python-doipclient
//! (PyPI, pinned in ci/requirements.txt, installed into `.venv` by `ci/install.sh`) program
//! `ecu-sim serve` on a loopback port with the full sequence, read the new version and boot
//! status, and are refused without security access. The served ECU keeps its state across a
//! restart.
//!
//! For every signature type MCUboot verifies and every key encryption imgtool makes, in every
//! upgrade strategy, an ECU that trusts a key from `imgtool keygen` (`--key PUB`, the PEM
//! `imgtool getpub -e pem` prints; `--enc-key` the private encryption key) and boots an
//! imgtool-signed factory image takes an imgtool-signed (and encrypted) V2 from udsoncan and
//! runs it confirmed.
//!
//! Without the virtualenv these tests fail (they never skip): run `ci/install.sh`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};

fn python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        path.exists(),
        "{} not found: run ci/install.sh",
        path.display()
    );
    path
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/flash_doip.py")
}

/// `ecu-sim serve` on a free loopback port; killed when dropped.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn start(state: &Path) -> Served {
        Self::start_with(state, &[])
    }

    /// With more `serve` options (`--key`, `--factory`, ...).
    fn start_with(state: &Path, extra: &[&str]) -> Served {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        Self::start_args(state, &args)
    }

    /// `ecu-sim --sectors 132 ARGS --doip 127.0.0.1:0 ...`: `args` start with the global
    /// options and `serve`.
    fn start_args(state: &Path, args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
            .args(["--sectors", "132"])
            .args(args)
            .args(["--doip", "127.0.0.1:0"])
            .args(["--speed", "max", "--seed", "7", "--state"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ecu-sim starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Served { child, port }
    }

    /// SIGTERM, as Ctrl-C would: the server flushes and exits 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "ecu-sim serve exited with {status}");
    }

    /// Run the udsoncan script; returns its JSON report.
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(script())
            .args(["--port", &self.port.to_string(), "--boot-wait", "1.0"])
            .args(args)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "flash_doip.py {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 4..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim_matches('"')
}

#[test]
fn udsoncan_flashes_the_served_ecu_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let image = dir.path().join("v2.bin");
    let v2 = ImageBuilder::new(Version::new(2, 0, 0), vec![0x42; 100_000])
        .security_counter(2)
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 200,
        })
        .sign(&dev_key("oem"));
    std::fs::write(&image, &v2).unwrap();

    let served = Served::start(&state);
    // Identification over UDP, status over TCP: the factory image runs.
    let before = served.script(&["--identify"]);
    assert_eq!(field(&before, "vin"), "WSIM0000000000001", "{before}");
    assert_eq!(field(&before, "logical_address"), "16");
    assert_eq!(field(&before, "version"), "1.0.0");

    // Programming without SecurityAccess is refused with securityAccessDenied.
    let refused = served.script(&["--image", image.to_str().unwrap(), "--without-security"]);
    assert_eq!(field(&refused, "refused_nrc"), "51", "0x33: {refused}");

    // The full sequence: session, security, erase, download, transfer, exit, check, reset.
    let flashed = served.script(&["--image", image.to_str().unwrap()]);
    assert_eq!(field(&flashed, "check_status"), "[0]", "{flashed}");
    assert_eq!(field(&flashed, "max_block_length"), "16386");
    assert_eq!(field(&flashed, "version"), "2.0.0", "{flashed}");
    assert_eq!(field(&flashed, "confirmed"), "true", "{flashed}");
    assert_eq!(field(&flashed, "on_probation"), "false");
    assert_eq!(
        field(&flashed, "outcome"),
        "2",
        "booted as a test image: {flashed}"
    );
    served.stop();

    // Same state directory: the same image, confirmed; a normal boot.
    let served = Served::start(&state);
    let after = served.script(&[]);
    assert_eq!(field(&after, "version"), "2.0.0", "{after}");
    assert_eq!(field(&after, "confirmed"), "true");
    assert_eq!(field(&after, "outcome"), "1", "{after}");
    served.stop();
}

fn imgtool(dir: &Path, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/imgtool");
    let out = Command::new(&path)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run ci/install.sh", path.display()));
    assert!(
        out.status.success(),
        "imgtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signing: every type MCUboot verifies, with imgtool's hash and ED25519 variants.
const SIGNED: [(&str, &[&str]); 7] = [
    ("ed25519", &[]),
    ("ed25519", &["--pure"]),
    ("ed25519", &["--sha", "512"]),
    ("ecdsa-p256", &[]),
    ("ecdsa-p384", &[]),
    ("rsa-2048", &[]),
    ("rsa-3072", &[]),
];

/// Encryption: (the ECU's key type, the signing key type, imgtool's options). Every key
/// encryption imgtool 2.5.0 makes: ENC_X25519 (AES-128 and -256), ENC_X25519_SHA512,
/// ENC_EC256, ENC_RSA2048 — imgtool signs with a key of the encryption key's family
/// ("Signing and encryption must use the same type of key"), two different keys here.
const ENCRYPTED: [(&str, &str, &[&str]); 5] = [
    ("x25519", "ed25519", &[]),
    ("x25519", "ed25519", &["--encrypt-keylen", "256"]),
    ("x25519", "ed25519", &["--hmac-sha", "512"]),
    ("ecdsa-p256", "ecdsa-p256", &[]),
    ("rsa-2048", "rsa-2048", &["--encrypt-keylen", "256"]),
];

/// The held-out check of MCUboot breadth, as a user following the README does it: keys made
/// on the spot with `imgtool keygen`, V1 and V2 signed (V2 encrypted too) with `imgtool sign`,
/// `ecu-sim --mode MODE serve --key PUB [--enc-key KEY] --factory V1`, V2 flashed by
/// python-udsoncan over doipclient (`flash_doip.py`). Every case ends with V2 running
/// confirmed — except encrypted images in direct-xip, which runs in place and cannot decrypt
/// (MCUboot's direct-xip has no encryption either): refused, V1 keeps running confirmed.
fn imgtool_keys_and_images_flash_in(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    // Signing keys `KIND.pem`, encryption keys `enc-KIND.pem` (never the signing key).
    let mut names: Vec<(String, &str)> = SIGNED.iter().map(|(k, _)| (k.to_string(), *k)).collect();
    names.extend(ENCRYPTED.iter().map(|(e, _, _)| (format!("enc-{e}"), *e)));
    names.sort();
    names.dedup();
    for (name, kind) in &names {
        let key = format!("{name}.pem");
        imgtool(keys, &["keygen", "-t", kind, "-k", &key]);
        let public = format!("{name}.pub.pem");
        imgtool(keys, &["getpub", "-k", &key, "-e", "pem", "-o", &public]);
    }
    let signed = SIGNED.iter().map(|(sign, extra)| (*sign, None, *extra));
    let encrypted = ENCRYPTED
        .iter()
        .map(|(enc, sign, extra)| (*sign, Some(*enc), *extra));
    let mut ran = 0;
    for (i, (sign, enc, extra)) in signed.chain(encrypted).enumerate() {
        let case = format!("{mode}: signed {sign} {extra:?}, encrypted for {enc:?}");
        let d = keys.join(format!("case{i}"));
        std::fs::create_dir(&d).unwrap();
        for (version, len) in [("1.0.0", 20_000), ("2.0.0", 30_000)] {
            std::fs::write(d.join("in.bin"), vec![i as u8 ^ 0x5a; len]).unwrap();
            let key = keys.join(format!("{sign}.pem"));
            let mut args = vec![
                "sign",
                "-k",
                key.to_str().unwrap(),
                "--header-size",
                "0x200",
            ];
            args.extend_from_slice(&["--pad-header", "--align", "8", "--slot-size", "0x40000"]);
            args.extend_from_slice(&["--version", version]);
            let enc_pub = enc.map(|e| keys.join(format!("enc-{e}.pub.pem")));
            if let (Some(public), "2.0.0") = (&enc_pub, version) {
                args.extend_from_slice(&["--encrypt", public.to_str().unwrap()]);
                args.extend_from_slice(extra);
            } else if enc.is_none() {
                args.extend_from_slice(extra);
            }
            let out = format!("v{}.bin", &version[..1]);
            args.extend_from_slice(&["in.bin", &out]);
            imgtool(&d, &args);
        }
        let public = keys.join(format!("{sign}.pub.pem"));
        let v1 = d.join("v1.bin");
        let mut options = vec![
            "--key".to_string(),
            public.display().to_string(),
            "--factory".to_string(),
            v1.display().to_string(),
        ];
        if let Some(e) = enc {
            options.extend([
                "--enc-key".to_string(),
                keys.join(format!("enc-{e}.pem")).display().to_string(),
            ]);
        }
        let mut args = vec!["--mode", mode, "serve"];
        args.extend(options.iter().map(String::as_str));
        let served = Served::start_args(&d.join("state"), &args);
        let before = served.script(&[]);
        assert_eq!(field(&before, "version"), "1.0.0", "{case}: {before}");
        let v2 = d.join("v2.bin");
        let flashed = served.script(&["--image", v2.to_str().unwrap()]);
        let refused = enc.is_some() && mode == "direct-xip";
        if refused {
            assert_ne!(field(&flashed, "check_status"), "[0]", "{case}: {flashed}");
            assert_eq!(field(&flashed, "version"), "1.0.0", "{case}: {flashed}");
        } else {
            assert_eq!(field(&flashed, "check_status"), "[0]", "{case}: {flashed}");
            assert_eq!(field(&flashed, "version"), "2.0.0", "{case}: {flashed}");
        }
        assert_eq!(field(&flashed, "confirmed"), "true", "{case}: {flashed}");
        served.stop();
        ran += 1;
    }
    assert_eq!(ran, SIGNED.len() + ENCRYPTED.len());
}

#[test]
fn imgtool_keys_and_images_flash_with_udsoncan_in_swap_scratch() {
    imgtool_keys_and_images_flash_in("swap-scratch");
}

#[test]
fn imgtool_keys_and_images_flash_with_udsoncan_in_swap_move() {
    imgtool_keys_and_images_flash_in("swap-move");
}

#[test]
fn imgtool_keys_and_images_flash_with_udsoncan_in_swap_offset() {
    imgtool_keys_and_images_flash_in("swap-offset");
}

#[test]
fn imgtool_keys_and_images_flash_with_udsoncan_in_overwrite() {
    imgtool_keys_and_images_flash_in("overwrite");
}

#[test]
fn imgtool_keys_and_images_flash_with_udsoncan_in_direct_xip() {
    imgtool_keys_and_images_flash_in("direct-xip");
}
