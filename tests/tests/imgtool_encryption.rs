//! Encrypted images against MCUboot's own `imgtool` (the project's `.venv`, `HIL_IMGTOOL`
//! overrides): for every key encryption imgtool 2.5.0 produces — ENC_RSA2048 (`0x30`),
//! ENC_EC256 (`0x32`), ENC_X25519 (`0x33`) and ENC_X25519_SHA512 (`0x34`, `--hmac-sha 512`) —
//! with AES-128 and AES-256, keys from `imgtool keygen -t TYPE`: imgtool's encrypted image
//! decrypts here to the input binary and verifies with the signing key, another key is refused
//! by name, a changed ciphertext byte is a hash mismatch; our own encryptor's images decrypt
//! back, and once decrypted pass `imgtool verify`. ENC_KW (`0x31`), which imgtool does not
//! write, is checked against Python's `cryptography` (the venv's): its AES key unwrap and AES-CTR
//! recover the plaintext of our image.
//!
//! And imgtool's encrypted images boot: staged in the secondary slot they are installed
//! decrypting in swap-scratch, swap-move, swap-offset and overwrite, and a swap stores the
//! image it moves out of the primary encrypted again — byte for byte imgtool's ciphertext.
//!
//! Without imgtool these tests fail (they never skip): run `ci/install.sh`.

mod common;

use common::{payload, run, run_program, venv_bin};
use std::path::{Path, PathBuf};

use ecu_sim::image::{
    self, AesKeySize, EncError, EncKey, EncKeyError, EncKeyFamily, EncPublicKey, EncTlv,
    EncTlvKind, EncryptOptions, ImageBuilder, ImageError, KeyKind, Keyring, KwKey, PrivateKey,
    SignOptions, SignatureKind, UnwrapFailure, Version,
};

/// A ChaCha-free deterministic CSPRNG stand-in for the tests: the images' AES keys and
/// ephemeral keys come from it.
fn rng(seed: u8) -> impl rand_core::RngCore + rand_core::CryptoRng {
    use rand_core::SeedableRng as _;
    rand_chacha::ChaCha20Rng::from_seed([seed; 32])
}

/// One way imgtool encrypts: the encryption key's type, the signing key's (imgtool requires
/// the same type for ECDSA and RSA), the TLV it writes.
#[derive(Clone, Copy, Debug)]
struct Case {
    enc: KeyKind,
    sign: KeyKind,
    hmac_sha512: bool,
    tlv: EncTlvKind,
    signature: SignatureKind,
}

const CASES: [Case; 4] = [
    Case {
        enc: KeyKind::X25519,
        sign: KeyKind::Ed25519,
        hmac_sha512: false,
        tlv: EncTlvKind::X25519,
        signature: SignatureKind::Ed25519,
    },
    Case {
        enc: KeyKind::X25519,
        sign: KeyKind::Ed25519,
        hmac_sha512: true,
        tlv: EncTlvKind::X25519Sha512,
        signature: SignatureKind::Ed25519,
    },
    Case {
        enc: KeyKind::EcdsaP256,
        sign: KeyKind::EcdsaP256,
        hmac_sha512: false,
        tlv: EncTlvKind::Ec256,
        signature: SignatureKind::EcdsaP256,
    },
    Case {
        enc: KeyKind::Rsa2048,
        sign: KeyKind::Rsa2048,
        hmac_sha512: false,
        tlv: EncTlvKind::Rsa2048,
        signature: SignatureKind::Rsa2048Pss,
    },
];

/// `imgtool keygen -t KIND -k NAME.pem` in `dir`, and the public key `imgtool getpub -e pem`
/// prints, written to NAME.pub.pem.
fn keygen(dir: &Path, kind: KeyKind, name: &str) -> (PathBuf, PathBuf) {
    let private = format!("{name}.pem");
    run(&["keygen", "-k", &private, "-t", kind.name()], dir);
    let public = run(&["getpub", "-k", &private, "-e", "pem"], dir);
    let public_path = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&public_path, public).unwrap();
    (dir.join(private), public_path)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// `imgtool sign -k SIGN --encrypt ENC_PUB --encrypt-keylen N [--hmac-sha 512]`, header 0x200.
fn imgtool_encrypt(
    dir: &Path,
    sign: &Path,
    enc_pub: &Path,
    aes: AesKeySize,
    hmac_sha512: bool,
    data: &[u8],
    tag: &str,
) -> Vec<u8> {
    imgtool_encrypt_version(dir, sign, enc_pub, aes, hmac_sha512, data, tag, "1.2.3")
}

/// [`imgtool_encrypt`] with `--version VERSION`.
#[expect(clippy::too_many_arguments, reason = "imgtool's options, spelled out")]
fn imgtool_encrypt_version(
    dir: &Path,
    sign: &Path,
    enc_pub: &Path,
    aes: AesKeySize,
    hmac_sha512: bool,
    data: &[u8],
    tag: &str,
    version: &str,
) -> Vec<u8> {
    let input = dir.join(format!("in-{tag}.bin"));
    let output = dir.join(format!("out-{tag}.bin"));
    std::fs::write(&input, data).unwrap();
    let bits = aes.bits().to_string();
    let mut args = vec![
        "sign",
        "-k",
        sign.to_str().unwrap(),
        "--encrypt",
        enc_pub.to_str().unwrap(),
        "--encrypt-keylen",
        &bits,
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
    if hmac_sha512 {
        args.extend(["--hmac-sha", "512"]);
    }
    args.push(input.to_str().unwrap());
    args.push(output.to_str().unwrap());
    run(&args, dir);
    read(&output)
}

fn keyring(public_pem: &Path) -> Keyring {
    let mut keys = Keyring::new();
    keys.add_pem(&std::fs::read_to_string(public_pem).unwrap())
        .unwrap();
    keys
}

/// `decrypted` is `plain` (built, not yet encrypted) with the ENC TLV appended: the same
/// hashed bytes and the same unprotected TLVs before it. Compared without printing images.
fn assert_decrypted_is(decrypted: &[u8], plain: &[u8], tlv: EncTlvKind, what: &str) {
    let d = image::parse(decrypted).unwrap();
    let p = image::parse(plain).unwrap();
    assert!(d.hashed == p.hashed, "{what}: the hashed bytes differ");
    let tlvs = |i: &image::ParsedImage<'_>| -> Vec<(u16, Vec<u8>)> {
        i.tlvs().map(|t| (t.kind, t.value.to_vec())).collect()
    };
    let (mut dt, pt) = (tlvs(&d), tlvs(&p));
    assert_eq!(
        dt.pop().map(|t| t.0),
        Some(tlv.tlv()),
        "{what}: the ENC tlv last"
    );
    assert!(dt == pt, "{what}: the other tlvs differ");
    assert_eq!(d.total_size, decrypted.len(), "{what}");
}

/// The payload of `img` and where it starts.
fn payload_of(img: &[u8]) -> (usize, Vec<u8>) {
    let parsed = image::parse(img).unwrap();
    (usize::from(parsed.header.hdr_size), parsed.payload.to_vec())
}

#[test]
fn imgtool_encrypted_images_of_every_kind_decrypt_to_the_input_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not a multiple of 16: imgtool pads the encrypted payload with zeros.
    let data = payload(10_003, 7);
    for (i, c) in CASES.iter().enumerate() {
        let (sign, sign_pub) = keygen(d, c.sign, &format!("sign{i}"));
        let (enc, enc_pub) = keygen(d, c.enc, &format!("enc{i}"));
        let (stranger, _) = keygen(d, c.enc, &format!("stranger{i}"));
        let keys = keyring(&sign_pub);
        let key = EncKey::from_file(&read(&enc)).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(key.family(), c.tlv.key(), "{c:?}");
        let stranger = EncKey::from_file(&read(&stranger)).unwrap();
        for aes in AesKeySize::ALL {
            let what = format!("{c:?} {aes}");
            let img = imgtool_encrypt(
                d,
                &sign,
                &enc_pub,
                aes,
                c.hmac_sha512,
                &data,
                &format!("{i}-{}", aes.bits()),
            );
            let parsed = image::parse(&img).unwrap();
            assert_eq!(
                AesKeySize::from_flags(parsed.header.flags),
                Ok(Some(aes)),
                "{what}"
            );
            let tlv = EncTlv::of_image(&parsed, key.family()).unwrap();
            assert_eq!((tlv.kind, tlv.aes), (c.tlv, aes), "{what}");
            assert_eq!(tlv.value.len(), c.tlv.value_len(aes), "{what}");

            // Decrypted: the input binary, zero-padded to 16 bytes; header and TLVs as they were.
            let plain = image::decrypt_image(&img, &key).unwrap_or_else(|e| panic!("{what}: {e}"));
            let (start, body) = payload_of(&plain);
            assert_eq!(body.len(), data.len().next_multiple_of(16), "{what}");
            assert_eq!(&body[..data.len()], &data[..], "{what}: the input binary");
            assert!(body[data.len()..].iter().all(|&b| b == 0), "{what}");
            assert!(plain[..start] == img[..start], "{what}: header unchanged");
            let end = start + body.len();
            assert!(plain[end..] == img[end..], "{what}: tlvs unchanged");
            assert!(
                img[start..end] != plain[start..end],
                "{what}: it was encrypted"
            );

            // The hash and the signature are over the plaintext.
            let info = image::verify_encrypted(&img, &keys, 3, &key)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(info.signature, Some(c.signature), "{what}");
            assert_eq!(
                image::verify(&plain, &keys, 3).map(|i| i.hash),
                Ok(info.hash.clone()),
                "{what}: the decrypted image (primary slot) verifies as is"
            );
            assert_eq!(
                image::verify(&img, &keys, 0),
                Err(ImageError::HashMismatch),
                "{what}: ciphertext is not what was hashed"
            );

            // Any range decrypts on its own at its payload offset (a sector at a time).
            let image_key = image::image_key(&parsed, &key).unwrap();
            assert_eq!(image_key.size(), aes);
            let mut piece = img[start + 4093..start + 8200].to_vec();
            image_key.apply_keystream(4093, &mut piece);
            assert!(piece == plain[start + 4093..start + 8200], "{what}");

            // Another key of the same type: the unwrap fails, by name.
            let reason = match c.tlv {
                EncTlvKind::Rsa2048 => UnwrapFailure::OaepDecode,
                _ => UnwrapFailure::HmacMismatch,
            };
            assert_eq!(
                image::verify_encrypted(&img, &keys, 0, &stranger),
                Err(ImageError::Encryption(EncError::UnwrapFailed {
                    tlv: c.tlv,
                    reason
                })),
                "{what}"
            );
            // A changed tlv byte (the wrapped key's last): the same.
            let (at, len) = parsed
                .tlvs()
                .find(|t| t.kind == c.tlv.tlv())
                .map(|t| (t.offset + 4, t.value.len()))
                .unwrap();
            let mut bad = img.clone();
            bad[at + len - 1] ^= 0x01;
            assert_eq!(
                image::decrypt_image(&bad, &key),
                Err(ImageError::Encryption(EncError::UnwrapFailed {
                    tlv: c.tlv,
                    reason
                })),
                "{what}"
            );
            // A flipped ciphertext byte: a flipped plaintext byte, the hash no longer matches.
            let mut bad = img.clone();
            bad[start + 5000] ^= 0x40;
            assert_eq!(
                image::verify_encrypted(&bad, &keys, 0, &key),
                Err(ImageError::HashMismatch),
                "{what}"
            );
        }
    }
}

#[test]
fn a_key_of_another_family_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sign, sign_pub) = keygen(d, KeyKind::Ed25519, "sign");
    let (_, x_pub) = keygen(d, KeyKind::X25519, "x");
    let (ec, _) = keygen(d, KeyKind::EcdsaP256, "ec");
    let (rsa, _) = keygen(d, KeyKind::Rsa2048, "rsa");
    let img = imgtool_encrypt(
        d,
        &sign,
        &x_pub,
        AesKeySize::Aes128,
        false,
        &payload(3000, 2),
        "x",
    );
    let keys = keyring(&sign_pub);
    for (path, family) in [(ec, EncKeyFamily::EcP256), (rsa, EncKeyFamily::Rsa2048)] {
        let key = EncKey::from_file(&read(&path)).unwrap();
        assert_eq!(
            image::verify_encrypted(&img, &keys, 0, &key),
            Err(ImageError::Encryption(EncError::WrongKeyType {
                found: EncTlvKind::X25519,
                key: family
            }))
        );
    }
    let kw = EncKey::Kw(KwKey::from_bytes(&[7; 16]).unwrap());
    let err = image::decrypt_image(&img, &kw).unwrap_err();
    assert_eq!(
        err.to_string(),
        "encrypted image: the image's AES key is wrapped in ENC_X25519 (0x33), which an AES \
         key-encryption key cannot unwrap (it takes ENC_KW (0x31))"
    );
}

#[test]
fn every_key_form_imgtool_writes_loads_and_signing_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (kind, family) in [
        (KeyKind::X25519, EncKeyFamily::X25519),
        (KeyKind::EcdsaP256, EncKeyFamily::EcP256),
        (KeyKind::Rsa2048, EncKeyFamily::Rsa2048),
    ] {
        let (private, public) = keygen(d, kind, kind.name());
        let key = EncKey::from_file(&read(&private)).unwrap();
        assert_eq!(key.family(), family);
        // The public key imgtool prints is the recipient; the private PEM gives the same one.
        let recipient = EncPublicKey::from_file(&read(&public)).unwrap();
        assert_eq!(recipient, key.public(), "{kind}");
        assert_eq!(
            EncPublicKey::from_file(&read(&private)).unwrap(),
            recipient,
            "{kind}"
        );
        // A public key decrypts nothing.
        assert_eq!(
            EncKey::from_file(&read(&public)).unwrap_err(),
            EncKeyError::PublicKeyOnly,
            "{kind}"
        );
    }
    for kind in [KeyKind::Ed25519, KeyKind::EcdsaP384] {
        let (private, public) = keygen(d, kind, kind.name());
        assert_eq!(
            EncKey::from_file(&read(&private)).unwrap_err(),
            EncKeyError::NotAnEncryptionKey { found: kind }
        );
        assert_eq!(
            EncPublicKey::from_file(&read(&public)).unwrap_err(),
            EncKeyError::NotAnEncryptionKey { found: kind }
        );
    }
    let (private, public) = keygen(d, KeyKind::Rsa3072, "rsa3072");
    for file in [&private, &public] {
        assert_eq!(
            EncPublicKey::from_file(&read(file)).unwrap_err(),
            EncKeyError::RsaSize { bits: 3072 }
        );
    }
    assert_eq!(
        EncKey::from_file(&read(&private)).unwrap_err(),
        EncKeyError::RsaSize { bits: 3072 }
    );
    // imgtool encrypts for an RSA-3072 key all the same, into a 384-byte ENC_RSA2048 TLV
    // that no MCUboot reads: refused by its length.
    let (sign, _) = keygen(d, KeyKind::Ed25519, "sign");
    let img = imgtool_encrypt(
        d,
        &sign,
        &public,
        AesKeySize::Aes128,
        false,
        &payload(100, 5),
        "rsa3072",
    );
    let parsed = image::parse(&img).unwrap();
    assert_eq!(
        EncTlv::of_image(&parsed, EncKeyFamily::Rsa2048),
        Err(EncError::BadEncTlvLength {
            tlv: EncTlvKind::Rsa2048,
            len: 384,
            expected: 256,
            aes: AesKeySize::Aes128
        })
    );
}

/// Ours, imgtool's layout: built with [`ImageBuilder::encrypted`] and [`image::encrypt_image`].
fn our_encrypted(
    signer: &PrivateKey,
    recipient: &EncPublicKey,
    aes: AesKeySize,
    hmac_sha512: bool,
    data: &[u8],
    seed: u8,
) -> (Vec<u8>, Vec<u8>) {
    let plain = ImageBuilder::new(Version::new(2, 0, 1), data.to_vec())
        .security_counter(2)
        .encrypted(aes)
        .sign_with(signer, &SignOptions::default())
        .unwrap();
    let encrypted = image::encrypt_image(
        &plain,
        recipient,
        EncryptOptions { hmac_sha512 },
        &mut rng(seed),
    )
    .unwrap();
    (plain, encrypted)
}

#[test]
fn our_encrypted_images_decrypt_and_once_decrypted_pass_imgtool_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = payload(9_001, 3);
    for (i, c) in CASES.iter().enumerate() {
        let (sign, sign_pub) = keygen(d, c.sign, &format!("sign{i}"));
        let (enc, enc_pub) = keygen(d, c.enc, &format!("enc{i}"));
        let signer = PrivateKey::from_pem(&std::fs::read_to_string(&sign).unwrap()).unwrap();
        let recipient = EncPublicKey::from_file(&read(&enc_pub)).unwrap();
        let key = EncKey::from_file(&read(&enc)).unwrap();
        let keys = keyring(&sign_pub);
        for aes in AesKeySize::ALL {
            let what = format!("{c:?} {aes}");
            let (plain, img) = our_encrypted(&signer, &recipient, aes, c.hmac_sha512, &data, 9);
            let parsed = image::parse(&img).unwrap();
            let tlv = EncTlv::of_image(&parsed, key.family()).unwrap();
            assert_eq!((tlv.kind, tlv.aes), (c.tlv, aes), "{what}");
            // The ENC TLV last, after imgtool's hash, key and signature.
            let last = parsed.tlvs().last().unwrap();
            assert_eq!(last.kind, c.tlv.tlv(), "{what}");
            let decrypted = image::decrypt_image(&img, &key).unwrap();
            assert_decrypted_is(&decrypted, &plain, c.tlv, &what);
            let (start, body) = payload_of(&plain);
            assert_eq!(&body[..data.len()], &data[..], "{what}");
            assert!(
                image::verify_encrypted(&img, &keys, 2, &key).is_ok(),
                "{what}"
            );

            // imgtool reads our encrypted image's header and TLVs ...
            let ours = d.join(format!("ours-{i}-{}.bin", aes.bits()));
            std::fs::write(&ours, &img).unwrap();
            let dump = run(&["dumpinfo", ours.to_str().unwrap()], d);
            let flag = format!("ENCRYPTED_AES{} (0x{:x})", aes.bits(), aes.flag());
            assert!(dump.contains(&flag), "{what}: {flag} not in {dump}");
            assert!(
                dump.contains(&format!("(0x{:x})", c.tlv.tlv())),
                "{what}: {dump}"
            );
            // ... and validates the decrypted one (its hash is over the plaintext).
            let decrypted_file = d.join(format!("ours-plain-{i}-{}.bin", aes.bits()));
            std::fs::write(&decrypted_file, &decrypted).unwrap();
            let out = run(
                &[
                    "verify",
                    "-k",
                    sign.to_str().unwrap(),
                    decrypted_file.to_str().unwrap(),
                ],
                d,
            );
            assert!(
                out.contains("Image was correctly validated"),
                "{what}: {out}"
            );
            assert!(img[start..start + 64] != plain[start..start + 64], "{what}");
        }
    }
}

#[test]
fn aes_kw_images_decrypt_with_pythons_key_unwrap_and_aes_ctr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let python = venv_bin("python");
    assert!(
        python.exists(),
        "no {}: run ci/install.sh",
        python.display()
    );
    let signer = PrivateKey::Ed25519(image::dev_key("oem"));
    let data = payload(5_000, 4);
    for (aes, kek) in [
        // MCUboot's own test keys (enc-aes128kw.b64, enc-aes256kw.b64), as the files hold them.
        (AesKeySize::Aes128, "0VoElcTCqP8weM5Jtfyy3Q==\n"),
        (
            AesKeySize::Aes256,
            "5FxRRtIcgjXMGhmvofKqIMiMf0Bs2yKqarXLqvixW7Q=\n",
        ),
    ] {
        let key_file = d.join(format!("kw{}.b64", aes.bits()));
        std::fs::write(&key_file, kek).unwrap();
        let key = EncKey::from_file(kek.as_bytes()).unwrap();
        assert_eq!(key.family(), EncKeyFamily::AesKw);
        let (plain, img) = our_encrypted(&signer, &key.public(), aes, false, &data, 5);
        let parsed = image::parse(&img).unwrap();
        let tlv = EncTlv::of_image(&parsed, EncKeyFamily::AesKw).unwrap();
        assert_eq!(
            (tlv.kind, tlv.value.len()),
            (EncTlvKind::Kw, aes.key_len() + 8)
        );
        assert_decrypted_is(
            &image::decrypt_image(&img, &key).unwrap(),
            &plain,
            EncTlvKind::Kw,
            &aes.to_string(),
        );

        // Python's cryptography: RFC 3394 unwrap of the TLV with the key file, then AES-CTR
        // (nonce 0) over the payload.
        let (start, _) = payload_of(&img);
        let end = start + parsed.payload.len();
        let image_file = d.join(format!("kw{}.bin", aes.bits()));
        std::fs::write(&image_file, &img).unwrap();
        let script = format!(
            "import base64,sys\n\
             from cryptography.hazmat.primitives.keywrap import aes_key_unwrap\n\
             from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
             kek = base64.b64decode(open(sys.argv[1]).read().strip())\n\
             img = open(sys.argv[2], 'rb').read()\n\
             wrapped = bytes.fromhex(sys.argv[3])\n\
             key = aes_key_unwrap(kek, wrapped)\n\
             d = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).decryptor()\n\
             sys.stdout.write(d.update(img[{start}:{end}]).hex())\n"
        );
        let wrapped: String = tlv.value.iter().map(|b| format!("{b:02x}")).collect();
        let out = run_program(
            &python,
            &[
                "-c",
                &script,
                key_file.to_str().unwrap(),
                image_file.to_str().unwrap(),
                &wrapped,
            ],
            d,
        );
        let theirs: String = plain[start..end]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            out, theirs,
            "{aes}: python decrypts our image to its plaintext"
        );

        // A KEK of the other size wraps no key of this size (MCUboot's are equal).
        let other = EncKey::Kw(KwKey::from_bytes(&vec![1; 48 - aes.key_len()]).unwrap());
        assert_eq!(
            image::decrypt_image(&img, &other),
            Err(ImageError::Encryption(EncError::KwKeySize {
                kek: 48 - aes.key_len(),
                image: aes
            }))
        );
        // Another KEK of the right size: the integrity check fails.
        let wrong = EncKey::Kw(KwKey::from_bytes(&vec![1; aes.key_len()]).unwrap());
        assert_eq!(
            image::decrypt_image(&img, &wrong),
            Err(ImageError::Encryption(EncError::UnwrapFailed {
                tlv: EncTlvKind::Kw,
                reason: UnwrapFailure::KwIntegrity
            }))
        );
    }
}

#[test]
fn imgtool_encrypted_images_boot_in_every_copying_strategy() {
    use ecu_sim::boot::{self, BootConfig, BootMode, Slot};
    use ecu_sim::ecu::Ecu;
    use ecu_sim::flash::{Flash, Geometry};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let modes = [
        BootMode::SwapScratch,
        BootMode::SwapMove,
        BootMode::SwapOffset,
        BootMode::Overwrite,
    ];
    for (i, c) in CASES.iter().enumerate() {
        let (sign, sign_pub) = keygen(d, c.sign, &format!("boot-sign{i}"));
        let (enc, enc_pub) = keygen(d, c.enc, &format!("boot-enc{i}"));
        let key = EncKey::from_file(&read(&enc)).unwrap();
        // Cases alternate the AES key size; the old and the new image differ in it too.
        let (old_aes, new_aes) = if i % 2 == 0 {
            (AesKeySize::Aes128, AesKeySize::Aes256)
        } else {
            (AesKeySize::Aes256, AesKeySize::Aes128)
        };
        let enc_v1 = imgtool_encrypt_version(
            d,
            &sign,
            &enc_pub,
            old_aes,
            c.hmac_sha512,
            &payload(9_001, 1),
            &format!("b{i}-1"),
            "1.0.0",
        );
        let enc_v2 = imgtool_encrypt_version(
            d,
            &sign,
            &enc_pub,
            new_aes,
            c.hmac_sha512,
            &payload(11_003, 2),
            &format!("b{i}-2"),
            "2.0.0",
        );
        // The factory image runs as one installed from an encrypted update: decrypted.
        let v1 = image::decrypt_image(&enc_v1, &key).unwrap();
        let v2 = image::decrypt_image(&enc_v2, &key).unwrap();
        for mode in modes {
            let what = format!("{c:?} {mode}");
            let (scratch, p, s) = mode.extra_sectors();
            let g = Geometry::uniform(4096, 3 + 2 * 6 + scratch + p + s, 8).unwrap();
            let boot = BootConfig {
                defect: None,
                max_boot_attempts: 1,
                keys: keyring(&sign_pub),
            };
            let mut ecu =
                Ecu::factory_with_enc_key(g, mode, &v1, boot, Some(key.clone()), 1).unwrap();
            ecu.stage_update(&enc_v2, false).unwrap();
            ecu.reset().unwrap();
            let r = ecu.running().unwrap().clone();
            assert_eq!(
                (r.image.header.version, r.slot, r.test),
                (Version::new(2, 0, 0), Slot::Primary, mode.can_revert()),
                "{what}"
            );
            let layout = ecu.config().layout.clone();
            let read_slot = |ecu: &Ecu, slot, len| {
                let base = boot::image_base(ecu.flash(), &layout, slot).unwrap();
                let mut bytes = vec![0; len];
                ecu.flash().read(base, &mut bytes).unwrap();
                bytes
            };
            assert!(
                read_slot(&ecu, Slot::Primary, v2.len()) == v2,
                "{what}: plaintext"
            );
            if mode.is_swap() {
                assert!(
                    read_slot(&ecu, Slot::Secondary, enc_v1.len()) == enc_v1,
                    "{what}: the old image is imgtool's ciphertext again"
                );
            }
            // imgtool images carry no behaviour TLV: the image confirms itself and stays.
            ecu.advance(2_000_000).unwrap();
            ecu.power_cycle().unwrap();
            let r = ecu.running().unwrap();
            assert_eq!(
                (r.image.header.version, r.test),
                (Version::new(2, 0, 0), false)
            );
        }
    }
}
