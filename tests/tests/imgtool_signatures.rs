//! Every signature type MCUboot verifies, against MCUboot's own `imgtool` (the project's
//! `.venv`, `HIL_IMGTOOL` overrides): for each of ed25519 (SHA-256, SHA-512, pure), ECDSA
//! P-256, ECDSA P-384, RSA-2048 and RSA-3072, with keys from `imgtool keygen -t TYPE`,
//! images imgtool signs verify here and boot, tampered ones and ones signed by another key
//! are refused with the named reason, and images we sign pass `imgtool verify`.
//!
//! Without imgtool these tests fail (they never skip): run `ci/install.sh`.

mod common;

use common::{hex, imgtool_output, payload, run};
use std::path::{Path, PathBuf};

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::ecu::Ecu;
use ecu_sim::event::EventKind;
use ecu_sim::flash::Geometry;
use ecu_sim::image::{
    self, HashAlg, ImageBuilder, ImageError, KeyFormat, KeyKind, Keyring, PrivateKey, PublicKey,
    SignOptions, SignatureKind, TLV_KEYHASH, TLV_PUBKEY, Version,
};

/// One way imgtool signs: a key type and the options that go with it.
#[derive(Clone, Copy, Debug)]
struct Case {
    kind: KeyKind,
    extra: &'static [&'static str],
    hash: HashAlg,
    signature: SignatureKind,
    /// The key TLV imgtool writes (KEYHASH by default, PUBKEY with `--public-key-format full`).
    key_tlv: u16,
}

const fn case(kind: KeyKind, hash: HashAlg, signature: SignatureKind) -> Case {
    Case {
        kind,
        extra: &[],
        hash,
        signature,
        key_tlv: TLV_KEYHASH,
    }
}

/// Every signature type with imgtool's default hash, then the other hashes and forms imgtool
/// 2.5.0 offers with a private key.
const CASES: [Case; 9] = [
    case(KeyKind::Ed25519, HashAlg::Sha256, SignatureKind::Ed25519),
    case(
        KeyKind::EcdsaP256,
        HashAlg::Sha256,
        SignatureKind::EcdsaP256,
    ),
    case(
        KeyKind::EcdsaP384,
        HashAlg::Sha384,
        SignatureKind::EcdsaP384,
    ),
    case(KeyKind::Rsa2048, HashAlg::Sha256, SignatureKind::Rsa2048Pss),
    case(KeyKind::Rsa3072, HashAlg::Sha256, SignatureKind::Rsa3072Pss),
    Case {
        extra: &["--sha", "512"],
        ..case(KeyKind::Ed25519, HashAlg::Sha512, SignatureKind::Ed25519)
    },
    Case {
        extra: &["--pure"],
        ..case(
            KeyKind::Ed25519,
            HashAlg::Sha512,
            SignatureKind::Ed25519Pure,
        )
    },
    Case {
        extra: &["--public-key-format", "full"],
        key_tlv: TLV_PUBKEY,
        ..case(
            KeyKind::EcdsaP256,
            HashAlg::Sha256,
            SignatureKind::EcdsaP256,
        )
    },
    Case {
        extra: &["--public-key-format", "full"],
        key_tlv: TLV_PUBKEY,
        ..case(KeyKind::Rsa2048, HashAlg::Sha256, SignatureKind::Rsa2048Pss)
    },
];

/// `imgtool keygen -t KIND -k NAME.pem` in `dir`; the public key as `imgtool getpub -e pem`
/// prints it, loaded into a keyring.
fn imgtool_key(dir: &Path, kind: KeyKind, name: &str) -> (Keyring, PathBuf) {
    let file = format!("{name}.pem");
    run(&["keygen", "-k", &file, "-t", kind.name()], dir);
    let pem = run(&["getpub", "-k", &file, "-e", "pem"], dir);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let mut keys = Keyring::new();
    assert_eq!(
        keys.add_pem(&pem),
        Ok(kind),
        "{name}: imgtool's public key loads"
    );
    (keys, dir.join(file))
}

/// `imgtool sign` with `key`: header 0x200 (padded), align 8, slot 0x20000, the case's
/// options.
fn imgtool_sign(dir: &Path, key: &Path, data: &[u8], version: &str, extra: &[&str]) -> Vec<u8> {
    let tag = format!(
        "{}-{version}-{}",
        key.file_stem().unwrap().to_str().unwrap(),
        extra.join("_")
    );
    let input = dir.join(format!("in-{tag}.bin"));
    let output = dir.join(format!("out-{tag}.bin"));
    std::fs::write(&input, data).unwrap();
    let mut args = vec![
        "sign",
        "-k",
        key.to_str().unwrap(),
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
        "3",
    ];
    args.extend_from_slice(extra);
    args.push(input.to_str().unwrap());
    args.push(output.to_str().unwrap());
    run(&args, dir);
    std::fs::read(output).unwrap()
}

/// The unprotected TLVs of `img`: (type, offset of the value, value length).
fn unprotected_tlvs(img: &[u8]) -> Vec<(u16, usize, usize)> {
    let parsed = image::parse(img).unwrap();
    parsed
        .tlvs()
        .filter(|t| !t.protected)
        .map(|t| (t.kind, t.offset + 4, t.value.len()))
        .collect()
}

#[test]
fn imgtool_images_of_every_signature_type_verify_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = payload(7000, 1);
    for (i, c) in CASES.iter().enumerate() {
        let (keys, key) = imgtool_key(d, c.kind, &format!("k{i}"));
        let img = imgtool_sign(d, &key, &data, "1.2.3", c.extra);
        let info = image::verify(&img, &keys, 3).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(info.hash_alg, c.hash, "{c:?}");
        assert_eq!(info.signature, Some(c.signature), "{c:?}");
        assert_eq!(info.total_size, img.len());

        // The TLVs imgtool wrote, in its order: hash, [SIG_PURE], key, signature.
        let tlvs = unprotected_tlvs(&img);
        let kinds: Vec<u16> = tlvs.iter().map(|t| t.0).collect();
        let sig_tlv = c.kind.signature_tlv().unwrap();
        let expected: Vec<u16> = if c.signature == SignatureKind::Ed25519Pure {
            vec![c.hash.tlv(), 0x25, c.key_tlv, sig_tlv]
        } else {
            vec![c.hash.tlv(), c.key_tlv, sig_tlv]
        };
        assert_eq!(kinds, expected, "{c:?}");
        // The key TLV: the key's MCUboot bytes, or their hash with the image hash.
        let public = keys.iter().next().unwrap();
        let (_, at, len) = tlvs.iter().find(|t| t.0 == c.key_tlv).copied().unwrap();
        let want = if c.key_tlv == TLV_KEYHASH {
            public.keyhash(c.hash)
        } else {
            public.mcuboot_bytes()
        };
        assert_eq!(&img[at..at + len], &want[..], "{c:?}: key tlv");

        // imgtool agrees on the digest (it prints none for pure images).
        let path = d.join(format!("theirs-{i}.bin"));
        std::fs::write(&path, &img).unwrap();
        let out = run(
            &[
                "verify",
                "-k",
                key.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
            d,
        );
        assert!(out.contains("Image was correctly validated"), "{out}");
        if c.signature != SignatureKind::Ed25519Pure {
            assert!(
                out.contains(&format!("Image digest: {}", hex(&info.hash))),
                "{c:?}: {out}"
            );
        }

        // A payload byte: the hash no longer matches.
        let mut bad = img.clone();
        bad[0x200 + 4321] ^= 0x10;
        assert_eq!(
            image::verify(&bad, &keys, 0),
            Err(ImageError::HashMismatch),
            "{c:?}"
        );
        // A bit of the signature (its last byte, inside the DER integer s for ECDSA).
        let (_, at, len) = *tlvs.last().unwrap();
        let mut bad = img.clone();
        bad[at + len - 1] ^= 0x01;
        assert_eq!(
            image::verify(&bad, &keys, 0),
            Err(ImageError::BadSignature {
                signature: c.signature
            }),
            "{c:?}"
        );

        // Another key of the same type, and one of another type: not trusted.
        let (same, _) = imgtool_key(d, c.kind, &format!("same{i}"));
        let other_kind = if c.kind == KeyKind::Rsa3072 {
            KeyKind::Ed25519
        } else {
            KeyKind::Rsa3072
        };
        let (other, _) = imgtool_key(d, other_kind, &format!("other{i}"));
        for strangers in [same, other] {
            let err = image::verify(&img, &strangers, 0).unwrap_err();
            match c.key_tlv {
                TLV_KEYHASH => assert_eq!(
                    err,
                    ImageError::UnknownKey {
                        keyhash: public.keyhash(c.hash)
                    },
                    "{c:?}"
                ),
                _ => assert_eq!(
                    err,
                    ImageError::UntrustedPubkey {
                        key: c.kind.described().to_string()
                    },
                    "{c:?}"
                ),
            }
            // Trusting both is fine.
            let mut both = strangers.clone();
            both.add(public.clone());
            assert!(image::verify(&img, &both, 0).is_ok(), "{c:?}");
        }
    }
}

#[test]
fn keyhashes_are_what_imgtool_getpubhash_prints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for kind in [
        KeyKind::Ed25519,
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::X25519,
    ] {
        let file = format!("{kind}.pem");
        run(&["keygen", "-k", &file, "-t", kind.name()], d);
        run(
            &["getpubhash", "-k", &file, "-e", "raw", "-o", "hash.bin"],
            d,
        );
        let theirs = std::fs::read(d.join("hash.bin")).unwrap();
        // The private key PEM imgtool keygen writes loads, as does the public one.
        let private = PrivateKey::from_pem(&std::fs::read_to_string(d.join(&file)).unwrap())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(private.kind(), kind);
        assert_eq!(private.public_hash_sha256(), theirs, "{kind}");
        let pem = run(&["getpub", "-k", &file, "-e", "pem"], d);
        assert_eq!(private.public_pem(), pem, "{kind}: the same public PEM");
        match PublicKey::from_pem(&pem) {
            Ok(public) => {
                assert_eq!(public.kind(), kind);
                assert_eq!(public.keyhash(HashAlg::Sha256), theirs, "{kind}");
                // `getpub -e raw` prints the bytes MCUboot embeds.
                run(&["getpub", "-k", &file, "-e", "raw", "-o", "raw.bin"], d);
                assert_eq!(
                    public.mcuboot_bytes(),
                    std::fs::read(d.join("raw.bin")).unwrap(),
                    "{kind}"
                );
            }
            Err(e) => {
                assert_eq!(kind, KeyKind::X25519);
                assert_eq!(
                    e.to_string(),
                    "an X25519 key signs no images (it is an encryption key)"
                );
            }
        }
    }
}

#[test]
fn our_images_of_every_signature_type_pass_imgtool_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = payload(5000, 2);
    for (i, c) in CASES.iter().enumerate() {
        let (keys, key_path) = imgtool_key(d, c.kind, &format!("k{i}"));
        let key = PrivateKey::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        let options = SignOptions {
            hash: (c.extra == ["--sha", "512"]).then_some(HashAlg::Sha512),
            pure: c.extra == ["--pure"],
            key_format: if c.key_tlv == TLV_PUBKEY {
                KeyFormat::Full
            } else {
                KeyFormat::Hash
            },
        };
        let ours = ImageBuilder::new("2.0.1".parse().unwrap(), data.clone())
            .security_counter(3)
            .sign_with(&key, &options)
            .unwrap();
        let info = image::verify(&ours, &keys, 3).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(info.signature, Some(c.signature));
        let path = d.join(format!("ours-{i}.bin"));
        std::fs::write(&path, &ours).unwrap();
        let out = run(
            &[
                "verify",
                "-k",
                key_path.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
            d,
        );
        assert!(
            out.contains("Image was correctly validated"),
            "{c:?}: {out}"
        );
        assert!(out.contains("Image version: 2.0.1+0"), "{out}");

        // Up to the signature, the same bytes as imgtool's (ed25519: all of them, it is
        // deterministic; ECDSA and RSA-PSS signatures are randomised in imgtool).
        // (A DER ECDSA signature varies in length, and with it the unprotected area's size.)
        let theirs = imgtool_sign(d, &key_path, &data, "2.0.1", c.extra);
        let (_, sig_at, _) = *unprotected_tlvs(&theirs).last().unwrap();
        let info_at = image::parse(&theirs).unwrap().unprotected_offset();
        for range in [0..info_at + 2, info_at + 4..sig_at - 2] {
            assert!(
                ours[range.clone()] == theirs[range.clone()],
                "{c:?}: bytes {range:?} differ"
            );
        }
        if c.kind == KeyKind::Ed25519 {
            assert!(ours == theirs, "{c:?}: ed25519 images are identical");
        }

        // imgtool refuses ours once tampered.
        let mut bad = ours.clone();
        bad[0x200 + 9] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let out = imgtool_output(
            &[
                "verify",
                "-k",
                key_path.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
            d,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("correctly validated"),
            "{c:?}: imgtool accepted a tampered image: {stdout}"
        );
    }
}

#[test]
fn imgtool_refuses_the_pairings_we_refuse() {
    // What imgtool will not sign, our builder will not either, with the named reason.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = payload(100, 3);
    for (kind, extra, error) in [
        (
            KeyKind::EcdsaP384,
            &["--sha", "256"][..],
            ImageError::HashNotForSignature {
                hash: HashAlg::Sha256,
                signature: SignatureKind::EcdsaP384,
            },
        ),
        (
            KeyKind::EcdsaP256,
            &["--sha", "384"][..],
            ImageError::HashNotForSignature {
                hash: HashAlg::Sha384,
                signature: SignatureKind::EcdsaP256,
            },
        ),
        (
            KeyKind::Rsa2048,
            &["--sha", "512"][..],
            ImageError::HashNotForSignature {
                hash: HashAlg::Sha512,
                signature: SignatureKind::Rsa2048Pss,
            },
        ),
        (
            KeyKind::EcdsaP256,
            &["--pure"][..],
            ImageError::PureNotEd25519 {
                key: KeyKind::EcdsaP256,
            },
        ),
    ] {
        let name = format!("{kind}-{}", extra.join(""));
        let file = format!("{name}.pem");
        run(&["keygen", "-k", &file, "-t", kind.name()], d);
        std::fs::write(d.join("in.bin"), &data).unwrap();
        let mut args = vec![
            "sign",
            "-k",
            &file,
            "--header-size",
            "0x200",
            "--pad-header",
        ];
        args.extend_from_slice(&["--align", "8", "--version", "1.0.0"]);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["in.bin", "out.bin"]);
        let out = imgtool_output(&args, d);
        assert!(!out.status.success(), "imgtool signed {name}");
        let key = PrivateKey::from_pem(&std::fs::read_to_string(d.join(&file)).unwrap()).unwrap();
        let options = SignOptions {
            hash: HashAlg::ALL
                .into_iter()
                .find(|h| extra.contains(&&*h.bits().to_string())),
            pure: extra.contains(&"--pure"),
            key_format: KeyFormat::Hash,
        };
        assert_eq!(
            ImageBuilder::new(Version::new(1, 0, 0), data.clone()).sign_with(&key, &options),
            Err(error),
            "{name}"
        );
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
fn imgtool_images_of_every_signature_type_boot_and_update_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, c) in CASES.iter().enumerate() {
        let (keys, key) = imgtool_key(d, c.kind, &format!("k{i}"));
        let v1 = imgtool_sign(d, &key, &payload(12_000, 1), "1.0.0", c.extra);
        let v2 = imgtool_sign(d, &key, &payload(15_000, 2), "2.0.0", c.extra);
        for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
            let mut ecu = ecu_with(keys.clone(), mode, &v1);
            assert_eq!(
                ecu.running().unwrap().image.header.version,
                Version::new(1, 0, 0)
            );
            // A V2 with a flipped signature bit is refused by the bootloader, by name.
            let mut bad = v2.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            ecu.stage_update(&bad, false).unwrap();
            ecu.reset().unwrap();
            let rejected = ecu.drain_events().into_iter().find_map(|e| match e.kind {
                EventKind::ImageRejected { reason, .. } => Some(reason),
                _ => None,
            });
            assert_eq!(
                rejected,
                Some(format!(
                    "bad signature: the {} signature does not verify with the trusted key",
                    c.signature
                )),
                "{c:?} {mode}"
            );
            // The genuine V2 installs, runs and confirms itself.
            ecu.stage_update(&v2, false).unwrap();
            ecu.reset().unwrap();
            assert!(ecu.running().unwrap().test, "{c:?} {mode}");
            ecu.advance(1_000_000).unwrap();
            ecu.power_cycle().unwrap();
            let r = ecu.running().unwrap();
            assert_eq!(
                r.image.header.version,
                Version::new(2, 0, 0),
                "{c:?} {mode}"
            );
            assert!(!r.test, "{c:?} {mode}: confirmed");
        }
    }
}
