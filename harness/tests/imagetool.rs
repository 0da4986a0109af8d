//! `hil keys generate` and `hil image build`, as a user runs them; and MCUboot's imgtool
//! reading what they write (the interop test uses `.venv/bin/imgtool` from `ci/install.sh`,
//! `HIL_IMGTOOL` overrides; it fails without it, like the other interop tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ecu_sim::image::{self, ImageError, Keyring, dev_key};

fn hil(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn imgtool() -> PathBuf {
    std::env::var_os("HIL_IMGTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/imgtool"))
}

#[test]
fn a_generated_key_signs_images_only_its_ecu_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = hil(d, &["keys", "generate", "--name", "fleet", "--out", "keys"]);
    assert!(o.status.success(), "{}", text(&o));
    let private = d.join("keys/fleet.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is private");
    }
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.1.0",
            "--size",
            "20000",
            "--key",
            "keys/fleet.pem",
            "--security-counter",
            "7",
            "--out",
            "v2.bin",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("v2.bin: 20677 bytes, v2.1.0, counter 7, key "),
        "{}",
        text(&o)
    );
    let bytes = std::fs::read(d.join("v2.bin")).unwrap();

    let mut ours = Keyring::new();
    ours.add_pem(&std::fs::read_to_string(d.join("keys/fleet.pub.pem")).unwrap())
        .unwrap();
    let info = image::verify(&bytes, &ours, 7).expect("verifies with its key");
    assert_eq!(info.header.version.to_string(), "2.1.0");
    assert_eq!(info.security_counter, 7);
    let oem = Keyring::new().with_key(dev_key("oem").verifying_key());
    assert!(matches!(
        image::verify(&bytes, &oem, 0),
        Err(ImageError::UnknownKey { .. })
    ));

    // Unsigned: refused by any ECU with keys.
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.1.0",
            "--unsigned",
            "--out",
            "u.bin",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("unsigned"), "{}", text(&o));
    let u = std::fs::read(d.join("u.bin")).unwrap();
    assert!(matches!(
        image::verify(&u, &ours, 0),
        Err(ImageError::MissingSignature)
    ));

    // The same arguments, the same bytes (ed25519 signatures are deterministic).
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.1.0",
            "--size",
            "20000",
            "--key",
            "keys/fleet.pem",
            "--security-counter",
            "7",
            "--out",
            "again.bin",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(d.join("again.bin")).unwrap(), bytes);
}

#[test]
fn mistakes_exit_2_and_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(hil(d, &["keys", "generate", "--out", "k"]).status.success());
    let o = hil(d, &["keys", "generate", "--out", "k"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("k/oem.pem: exists (use --force to overwrite)"),
        "{}",
        text(&o)
    );
    assert!(
        hil(d, &["keys", "generate", "--out", "k", "--force"])
            .status
            .success()
    );

    let o = hil(d, &["image", "build", "--version", "two", "--out", "x.bin"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("'--version <VERSION>': bad version \"two\""),
        "{}",
        text(&o)
    );

    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "1.0.0",
            "--key",
            "missing.pem",
            "--out",
            "x.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("missing.pem: No such file"),
        "{}",
        text(&o)
    );

    std::fs::write(
        d.join("bad.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "1.0.0",
            "--key",
            "bad.pem",
            "--out",
            "x.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.pem: not a private key imgtool writes: "),
        "{}",
        text(&o)
    );

    assert!(
        hil(
            d,
            &["image", "build", "--version", "1.0.0", "--out", "y.bin"]
        )
        .status
        .success()
    );
    let o = hil(
        d,
        &["image", "build", "--version", "1.0.0", "--out", "y.bin"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("y.bin: exists"), "{}", text(&o));
}

#[test]
fn imgtool_reads_our_keys_and_images_and_we_read_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        hil(d, &["keys", "generate", "--name", "fleet", "--out", "."])
            .status
            .success()
    );
    assert!(
        hil(
            d,
            &[
                "image",
                "build",
                "--version",
                "2.0.0",
                "--key",
                "fleet.pem",
                "--out",
                "ours.bin"
            ]
        )
        .status
        .success()
    );
    let run = |args: &[&str]| {
        Command::new(imgtool())
            .args(args)
            .current_dir(d)
            .output()
            .unwrap_or_else(|e| panic!("{} ({e}): run ci/install.sh", imgtool().display()))
    };
    let o = run(&["verify", "-k", "fleet.pem", "ours.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Image was correctly validated"),
        "{}",
        text(&o)
    );
    let o = run(&["getpub", "-k", "fleet.pem", "-e", "pem"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(d.join("fleet.pub.pem")).unwrap()
    );
    // imgtool's key signs our image; imgtool verifies it.
    assert!(
        run(&["keygen", "-k", "theirs.pem", "-t", "ed25519"])
            .status
            .success()
    );
    assert!(
        hil(
            d,
            &[
                "image",
                "build",
                "--version",
                "3.0.0",
                "--key",
                "theirs.pem",
                "--out",
                "t.bin"
            ]
        )
        .status
        .success()
    );
    let o = run(&["verify", "-k", "theirs.pem", "t.bin"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn force_keeps_keys_private_and_manifests_never_clobber_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("oem.pem"), "old").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("oem.pem"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(
            hil(d, &["keys", "generate", "--out", ".", "--force"])
                .status
                .success()
        );
        let mode = std::fs::metadata(d.join("oem.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "--force makes an existing key file private"
        );
    }
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.0.0",
            "--out",
            "v2.yaml",
            "--manifest-url",
            "http://h/v2",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the image and its manifest would be the same file"),
        "{}",
        text(&o)
    );
    std::fs::write(d.join("v2.yaml"), "mine").unwrap();
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.0.0",
            "--out",
            "v2.bin",
            "--manifest-url",
            "http://h/a b#c: d",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "an existing manifest is not overwritten: {}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(d.join("v2.yaml")).unwrap(), "mine");
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.0.0",
            "--out",
            "v2.bin",
            "--manifest-url",
            "http://h/a b#c: d",
            "--force",
        ],
    );
    // A URL `hil ota submit` would refuse is refused here, before anything is written.
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            r#"error: --manifest-url "http://h/a b#c: d" is not a usable url: invalid character ' '"#
        ),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(d.join("v2.yaml")).unwrap(), "mine");
    // Quotes, `#` and `:` stay one YAML string.
    let url = "http://h:8080/it's/a?b=c:d#frag";
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "2.0.0",
            "--out",
            "v2.bin",
            "--manifest-url",
            url,
            "--force",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let m = hil::ota::manifest::Manifest::parse(
        &std::fs::read_to_string(d.join("v2.yaml")).unwrap(),
        "v2.yaml",
    )
    .expect("the manifest parses");
    assert_eq!(m.artifact.url, url);
}

/// `hil keys generate --type T` for every type imgtool makes: imgtool reads our private key
/// (`getpub` prints our public PEM, `getpubhash` the hash we print), `hil image build` signs
/// with it as imgtool pairs hash and key, `imgtool verify` accepts the image and our verifier
/// trusts the public PEM. An X25519 key signs nothing, and a hash imgtool refuses for a key
/// is refused, both by name.
#[test]
fn every_key_type_generates_signs_and_imgtool_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let imgtool_run = |args: &[&str]| {
        Command::new(imgtool())
            .args(args)
            .current_dir(d)
            .output()
            .unwrap_or_else(|e| panic!("{} ({e}): run ci/install.sh", imgtool().display()))
    };
    for (kind, sha, described) in [
        ("ed25519", None, "ed25519, sha256"),
        ("ed25519", Some("512"), "ed25519, sha512"),
        ("ecdsa-p256", None, "ECDSA P-256, sha256"),
        ("ecdsa-p384", None, "ECDSA P-384, sha384"),
        ("rsa-2048", None, "RSA-2048 PSS, sha256"),
        ("rsa-3072", None, "RSA-3072 PSS, sha256"),
    ] {
        let name = format!("{kind}-{}", sha.unwrap_or("auto"));
        let o = hil(
            d,
            &[
                "keys", "generate", "--type", kind, "--name", &name, "--out", ".",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let printed = text(&o);
        assert!(printed.contains(&format!(" {kind} keyhash ")), "{printed}");
        let private = format!("{name}.pem");
        let o = imgtool_run(&["getpub", "-k", &private, "-e", "pem"]);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let public = std::fs::read_to_string(d.join(format!("{name}.pub.pem"))).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), public, "{kind}");
        let o = imgtool_run(&["getpubhash", "-k", &private, "-e", "raw", "-o", "h.bin"]);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let hash: String = std::fs::read(d.join("h.bin"))
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            printed.contains(&format!("keyhash {hash}")),
            "{kind}: {printed}"
        );

        let out = format!("{name}.bin");
        let mut args = vec!["image", "build", "--version", "1.2.3", "--key", &private];
        args.extend_from_slice(&["--out", &out]);
        if let Some(sha) = sha {
            args.extend_from_slice(&["--sha", sha]);
        }
        let o = hil(d, &args);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        assert!(text(&o).contains(&format!("({described})")), "{}", text(&o));
        let o = imgtool_run(&["verify", "-k", &private, &out]);
        assert!(
            text(&o).contains("Image was correctly validated"),
            "{kind}: {}",
            text(&o)
        );
        let mut keys = Keyring::new();
        keys.add_pem(&public).unwrap();
        let bytes = std::fs::read(d.join(&out)).unwrap();
        assert!(image::verify(&bytes, &keys, 0).is_ok(), "{kind}");
    }
    // --dev keys of other types are deterministic.
    let o = hil(
        d,
        &[
            "keys",
            "generate",
            "--type",
            "ecdsa-p256",
            "--dev",
            "x",
            "--name",
            "a",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = hil(
        d,
        &[
            "keys",
            "generate",
            "--type",
            "ecdsa-p256",
            "--dev",
            "x",
            "--name",
            "b",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(d.join("a.pem")).unwrap(),
        std::fs::read(d.join("b.pem")).unwrap()
    );

    // X25519: written as imgtool writes it, signs nothing.
    let o = hil(
        d,
        &[
            "keys", "generate", "--type", "x25519", "--name", "enc", "--out", ".",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = imgtool_run(&["getpub", "-k", "enc.pem", "-e", "pem"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(d.join("enc.pub.pem")).unwrap()
    );
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "1.0.0",
            "--key",
            "enc.pem",
            "--out",
            "e.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("signing with enc.pem: an X25519 key signs no images"),
        "{}",
        text(&o)
    );
    let o = hil(
        d,
        &[
            "image",
            "build",
            "--version",
            "1.0.0",
            "--key",
            "ed25519-auto.pem",
            "--sha",
            "384",
            "--out",
            "s.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("a sha384 image hash does not go with ed25519 signatures (MCUboot pairs those with sha256 or sha512)"),
        "{}",
        text(&o)
    );
    let o = hil(d, &["keys", "generate", "--type", "dsa", "--out", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("unknown key type \"dsa\""),
        "{}",
        text(&o)
    );
}

/// `hil keys generate` makes every key images are encrypted for (x25519, ecdsa-p256 and
/// rsa-2048 as imgtool does; aes-kw-128/256 as MCUboot's base64 files), `hil image build
/// --encrypt` encrypts for each as imgtool does, and the ECU's key decrypts the image to the
/// plaintext the same build makes unencrypted; bad pairings are refused by name (exit 2).
#[test]
fn every_encryption_key_type_generates_and_encrypts_images_the_ecu_decrypts() {
    use image::{AesKeySize, EncKey, EncTlvKind};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = hil(d, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        text(&o)
    };
    run(&["keys", "generate", "--type", "ed25519", "--name", "sign"]);
    let mut keys = Keyring::new();
    keys.add_pem(&std::fs::read_to_string(d.join("sign.pub.pem")).unwrap())
        .unwrap();
    run(&[
        "image",
        "build",
        "--version",
        "3.1.0",
        "--size",
        "5000",
        "--key",
        "sign.pem",
        "--out",
        "plain.bin",
    ]);
    let plain = std::fs::read(d.join("plain.bin")).unwrap();
    let plain_payload = image::parse(&plain).unwrap().payload.to_vec();
    for (kind, recipient, private, extra, tlv, aes) in [
        (
            "x25519",
            "x.pub.pem",
            "x.pem",
            &[][..],
            EncTlvKind::X25519,
            AesKeySize::Aes128,
        ),
        (
            "x25519",
            "x.pub.pem",
            "x.pem",
            &["--hmac-sha512", "--aes256"][..],
            EncTlvKind::X25519Sha512,
            AesKeySize::Aes256,
        ),
        (
            "ecdsa-p256",
            "ec.pub.pem",
            "ec.pem",
            &["--aes256"][..],
            EncTlvKind::Ec256,
            AesKeySize::Aes256,
        ),
        (
            "rsa-2048",
            "rsa.pub.pem",
            "rsa.pem",
            &[][..],
            EncTlvKind::Rsa2048,
            AesKeySize::Aes128,
        ),
        (
            "aes-kw-128",
            "kw128.b64",
            "kw128.b64",
            &[][..],
            EncTlvKind::Kw,
            AesKeySize::Aes128,
        ),
        (
            "aes-kw-256",
            "kw256.b64",
            "kw256.b64",
            &["--aes256"][..],
            EncTlvKind::Kw,
            AesKeySize::Aes256,
        ),
    ] {
        let name = private.trim_end_matches(".pem").trim_end_matches(".b64");
        if !d.join(private).exists() {
            let printed = run(&["keys", "generate", "--type", kind, "--name", name]);
            assert!(printed.contains(kind), "{printed}");
        }
        let out = format!("enc-{kind}-{}.bin", aes.bits());
        let mut args = vec![
            "image",
            "build",
            "--version",
            "3.1.0",
            "--size",
            "5000",
            "--key",
            "sign.pem",
            "--encrypt",
            recipient,
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        let printed = run(&args);
        assert!(
            printed.contains(&format!("encrypted {aes} ({tlv})")),
            "{kind}: {printed}"
        );
        let img = std::fs::read(d.join(&out)).unwrap();
        let key = EncKey::from_file(&std::fs::read(d.join(private)).unwrap()).unwrap();
        let info =
            image::verify_encrypted(&img, &keys, 0, &key).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(info.header.flags & 0x0c, aes.flag(), "{kind}");
        let decrypted = image::decrypt_image(&img, &key).unwrap();
        let payload = image::parse(&decrypted).unwrap().payload.to_vec();
        assert!(
            payload[..5000] == plain_payload[..] && payload[5000..].iter().all(|&b| b == 0),
            "{kind}: the plaintext of the unencrypted build, zero-padded to 16"
        );
        assert_eq!(payload.len(), 5008);
        // The ciphertext is not what was hashed.
        assert_eq!(image::verify(&img, &keys, 0), Err(ImageError::HashMismatch));
    }
    // An AES-KW key file is secret: mode 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("kw128.b64"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for (extra, wanted) in [
        (
            &["--encrypt", "sign.pub.pem"][..],
            "sign.pub.pem: not a key images are encrypted for: an ed25519 key encrypts no images",
        ),
        (
            &["--encrypt", "ec.pub.pem", "--hmac-sha512"][..],
            "HMAC-SHA512 (ENC_X25519_SHA512) needs an X25519 key, not an EC P-256 key",
        ),
        (
            &["--encrypt", "kw128.b64", "--aes256"][..],
            "an AES-KW key of 16 bytes wraps no AES-256 key",
        ),
        (&["--aes256"][..], "--encrypt"),
    ] {
        let mut args = vec![
            "image",
            "build",
            "--version",
            "3.1.0",
            "--key",
            "sign.pem",
            "--out",
            "bad.bin",
        ];
        args.extend_from_slice(extra);
        let o = hil(d, &args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(wanted), "{extra:?}: {}", text(&o));
        assert!(!d.join("bad.bin").exists(), "{extra:?}");
    }
    let o = hil(
        d,
        &["keys", "generate", "--type", "aes-kw-128", "--dev", "x"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = hil(d, &["keys", "generate", "--type", "aes-kw-512"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("aes-kw-128 or aes-kw-256"),
        "{}",
        text(&o)
    );
}
