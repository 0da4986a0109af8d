use super::*;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use hex_literal::hex;
use rand_chacha::rand_core::SeedableRng as _;
use sha2::{Digest as _, Sha256};

/// The SHA-256 KEYHASH of an ed25519 key.
fn keyhash(key: &ed25519_dalek::VerifyingKey) -> Vec<u8> {
    PublicKey::from(*key).keyhash(HashAlg::Sha256)
}

fn oem() -> Keyring {
    Keyring::new().with_key(dev_key("oem").verifying_key())
}

/// Header 0x200, 200-byte payload, counter 5, hang behaviour, signed by "oem".
fn builder() -> ImageBuilder {
    ImageBuilder::new(Version::new(1, 2, 3), (0..200u8).collect())
        .security_counter(5)
        .behaviour(Behaviour::Hang { watchdog_ms: 250 })
}

fn signed() -> Vec<u8> {
    builder().sign(&dev_key("oem"))
}

/// Offsets in [`signed`]: protected area, unprotected area and its TLVs.
const PROT: usize = 0x200 + 200;
const PROT_SIZE: usize = 4 + 8 + 9;
const UNPROT: usize = PROT + PROT_SIZE;
const SHA_TLV: usize = UNPROT + 4;
const KEYHASH_TLV: usize = SHA_TLV + 36;
const SIG_TLV: usize = KEYHASH_TLV + 36;

/// An image with `builder`'s hashed part and a hand-made unprotected area.
fn with_unprotected(builder: &ImageBuilder, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
    ImageBuilder::finish(builder.hashed_part(), tlvs)
}

fn digest_of(builder: &ImageBuilder) -> [u8; 32] {
    Sha256::digest(builder.hashed_part()).into()
}

/// Signed by `key`, with the SHA256 TLV right.
fn signed_pairs(builder: &ImageBuilder, pairs: &[(&SigningKey, bool)]) -> Vec<u8> {
    let digest = digest_of(builder);
    let mut owned: Vec<(u16, Vec<u8>)> = vec![(TLV_SHA256, digest.to_vec())];
    for (key, good) in pairs {
        let mut sig = key.sign(&digest).to_bytes();
        if !good {
            sig[0] ^= 1;
        }
        owned.push((TLV_KEYHASH, keyhash(&key.verifying_key())));
        owned.push((TLV_ED25519, sig.to_vec()));
    }
    let tlvs: Vec<(u16, &[u8])> = owned.iter().map(|(k, v)| (*k, &v[..])).collect();
    with_unprotected(builder, &tlvs)
}

#[test]
fn header_round_trip_against_known_bytes() {
    let h = Header {
        load_addr: 0x0800_0000,
        hdr_size: 0x200,
        protect_tlv_size: 0x15,
        img_size: 0x1234,
        flags: IMAGE_F_RAM_LOAD,
        version: Version::new(1, 2, 0x0303).with_build(0x0a0b_0c0d),
    };
    let bytes = hex!(
        "3d b8 f3 96  00 00 00 08  00 02  15 00  34 12 00 00"
        "20 00 00 00  01 02 03 03  0d 0c 0b 0a  00 00 00 00"
    );
    assert_eq!(h.encode(), bytes);
    assert_eq!(Header::parse(&bytes), Ok(h.clone()));
    assert_eq!(h.tlv_offset(), Some(0x200 + 0x1234));
    assert_eq!(h.hashed_len(), Some(0x200 + 0x1234 + 0x15));
    // Only the first 32 bytes are read.
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0xff; 8]);
    assert_eq!(Header::parse(&longer), Ok(h));
}

/// The bytes `imgtool sign` 2.5.0 writes for this image (produced with
/// `imgtool sign -k oem.pem --header-size 32 --pad-header --align 8 --version 1.2.3+4
/// --security-counter 7 --custom-tlv 0xa5 0x02f4010000`, where oem.pem is
/// `dev_key("oem")` as PKCS#8): our builder writes the very same bytes.
#[test]
fn builder_matches_imgtool_bytes() {
    let payload = hex!("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
    let ours = ImageBuilder::new("1.2.3+4".parse().unwrap(), payload.to_vec())
        .header_size(32)
        .security_counter(7)
        .behaviour(Behaviour::Hang { watchdog_ms: 500 })
        .sign(&dev_key("oem"));
    assert_eq!(ours, IMGTOOL_GOLDEN);
    let info = verify(&IMGTOOL_GOLDEN, &oem(), 7).unwrap();
    assert_eq!(info.header.version, Version::new(1, 2, 3).with_build(4));
    assert_eq!(info.security_counter, 7);
    assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 500 });
    assert_eq!(info.total_size, IMGTOOL_GOLDEN.len());
}

const IMGTOOL_GOLDEN: [u8; 213] = hex!(
    "3d b8 f3 96 00 00 00 00 20 00 15 00 10 00 00 00"
    "00 00 00 00 01 02 03 00 04 00 00 00 00 00 00 00"
    "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"
    "08 69 15 00 50 00 04 00 07 00 00 00 a5 00 05 00"
    "02 f4 01 00 00 07 69 90 00 10 00 20 00 6d 28 1e"
    "4b cf ab 6f a6 e3 01 23 4f dc 14 ec 86 3e 57 67"
    "60 ff 89 bd 66 bb 57 73 19 73 2d 56 39 01 00 20"
    "00 c0 bb ad 8a f8 62 42 72 70 44 7e 4e 59 e0 1d"
    "fc 3d 7a f0 5c 2e 4f 8e eb a2 5b 57 de 87 a2 d7"
    "b1 24 00 40 00 ce 65 74 9f 25 a6 86 40 4d 05 56"
    "db 84 a9 8a f4 57 c3 48 48 77 aa 18 8a 65 54 bc"
    "e1 ce 13 a5 44 e1 36 0d 98 0f 08 c9 52 dd b0 a4"
    "87 58 66 45 2f b1 8c fe 86 3a cb b4 39 9d 43 aa"
    "39 b5 30 ab 00"
);

#[test]
fn signed_round_trip_and_erased_flash_after_it() {
    let img = signed();
    let info = verify(&img, &oem(), 5).unwrap();
    assert_eq!(info.header.version, Version::new(1, 2, 3));
    assert_eq!(info.header.hdr_size, 0x200);
    assert_eq!(info.header.protect_tlv_size as usize, PROT_SIZE);
    assert_eq!(info.security_counter, 5);
    assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 250 });
    assert!(info.signed);
    assert_eq!(info.total_size, img.len());
    assert_eq!(info.total_size, SIG_TLV + 4 + 64);
    assert_eq!(info.hash, digest_of(&builder()));
    // Without keys only the hash is checked.
    let unsigned_check = verify(&img, &Keyring::new(), 0).unwrap();
    assert!(!unsigned_check.signed);
    // Followed by erased flash (or anything), it still verifies, with the same extent.
    for fill in [0xff, 0x00, 0x69] {
        let mut slot = img.clone();
        slot.resize(img.len() + 4096, fill);
        assert_eq!(verify(&slot, &oem(), 0), Ok(info.clone()));
    }
}

#[test]
fn parse_exposes_the_layout() {
    let img = signed();
    let p = parse(&img).unwrap();
    assert_eq!(p.payload, &(0..200u8).collect::<Vec<_>>()[..]);
    assert_eq!(p.hashed.len(), UNPROT);
    assert_eq!(p.unprotected_offset(), UNPROT);
    let tlvs: Vec<(u16, usize, bool, usize)> = p
        .tlvs()
        .map(|t| (t.kind, t.value.len(), t.protected, t.offset))
        .collect();
    assert_eq!(
        tlvs,
        [
            (TLV_SEC_CNT, 4, true, PROT + 4),
            (TLV_SIM_BEHAVIOUR, 5, true, PROT + 12),
            (TLV_SHA256, 32, false, SHA_TLV),
            (TLV_KEYHASH, 32, false, KEYHASH_TLV),
            (TLV_ED25519, 64, false, SIG_TLV),
        ]
    );
    assert_eq!(p.find(TLV_SEC_CNT, true), Some(&5u32.to_le_bytes()[..]));
    assert_eq!(p.find(TLV_SEC_CNT, false), None);
    // The protected area as bytes: info, SEC_CNT, simulation TLV.
    assert_eq!(
        img[PROT..UNPROT],
        hex!("08 69 15 00  50 00 04 00 05 00 00 00  a5 00 05 00 02 fa 00 00 00")
    );
    assert_eq!(img[UNPROT..SHA_TLV + 4], hex!("07 69 90 00  10 00 20 00"));
}

#[test]
fn unsigned_images_with_and_without_tlvs_and_header_sizes() {
    for header in [32u16, 0x200] {
        for (counter, behaviour) in [
            (None, None),
            (Some(9), None),
            (None, Some(Behaviour::CrashOnBoot)),
            (Some(0), Some(Behaviour::NoDiagnostics)),
        ] {
            let mut b = ImageBuilder::new(Version::new(0, 0, 1), vec![7; 10]).header_size(header);
            if let Some(c) = counter {
                b = b.security_counter(c);
            }
            if let Some(x) = behaviour {
                b = b.behaviour(x);
            }
            let what = format!("header {header}, {counter:?}, {behaviour:?}");
            let unsigned = b.build_unsigned();
            let info = verify(&unsigned, &Keyring::new(), 0).expect(&what);
            assert_eq!(info.security_counter, counter.unwrap_or(0), "{what}");
            assert_eq!(
                info.behaviour,
                behaviour.unwrap_or(Behaviour::DEFAULT),
                "{what}"
            );
            assert!(!info.signed);
            assert_eq!(info.header.hdr_size, header);
            let prot = if counter.is_some() || behaviour.is_some() {
                4 + counter.map_or(0, |_| 8) + behaviour.map_or(0, |_| 9)
            } else {
                0
            };
            assert_eq!(usize::from(info.header.protect_tlv_size), prot, "{what}");
            assert_eq!(unsigned.len(), usize::from(header) + 10 + prot + 4 + 36);
            assert_eq!(
                verify(&unsigned, &oem(), 0),
                Err(ImageError::MissingSignature),
                "{what}"
            );
            let signed = b.sign(&dev_key("oem"));
            let info = verify(&signed, &oem(), 0).expect(&what);
            assert!(info.signed);
            assert_eq!(
                info.hash,
                verify(&unsigned, &Keyring::new(), 0).unwrap().hash
            );
        }
    }
}

#[test]
fn header_padding_is_the_erased_value() {
    let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 4]).header_size(0x40);
    let ff = b.clone().build_unsigned();
    assert!(ff[32..0x40].iter().all(|&x| x == 0xff));
    let zeros = b.erased_val(0).build_unsigned();
    assert!(zeros[32..0x40].iter().all(|&x| x == 0));
    // Both verify; the padding is hashed, so the digests differ.
    let (a, z) = (
        verify(&ff, &Keyring::new(), 0).unwrap(),
        verify(&zeros, &Keyring::new(), 0).unwrap(),
    );
    assert_ne!(a.hash, z.hash);
}

#[test]
fn load_addr_sets_ram_load_like_imgtool() {
    let img = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 4])
        .load_addr(0x2000_0000)
        .build_unsigned();
    let h = verify(&img, &Keyring::new(), 0).unwrap().header;
    assert_eq!((h.load_addr, h.flags), (0x2000_0000, IMAGE_F_RAM_LOAD));
}

#[test]
fn bad_magic_and_header_size() {
    let img = signed();
    let mut bad = img.clone();
    bad[0] = 0;
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::BadMagic { found: 0x96f3_b800 })
    );
    // Erased flash is not an image.
    assert_eq!(
        parse(&[0xff; 64]),
        Err(ImageError::BadMagic { found: 0xffff_ffff })
    );
    let mut bad = img.clone();
    bad[8..10].copy_from_slice(&31u16.to_le_bytes());
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::BadHeaderSize { hdr_size: 31 })
    );
}

#[test]
fn truncated_at_every_part() {
    let img = signed();
    let n = img.len();
    let cases = [
        (0, 32),
        (20, 32),
        (31, 32),
        (32, PROT),
        (0x200 + 100, PROT),
        (PROT + 2, PROT + 4),
        (PROT + 10, UNPROT),
        (UNPROT + 3, UNPROT + 4),
        (UNPROT + 4, n),
        (n - 1, n),
    ];
    for (keep, needed) in cases {
        assert_eq!(
            verify(&img[..keep], &oem(), 0),
            Err(ImageError::Truncated {
                needed,
                available: keep
            }),
            "cut at {keep}"
        );
    }
    // An image size that cannot fit in memory is truncated, not an overflow.
    let mut huge = img[..32].to_vec();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        parse(&huge),
        Err(ImageError::Truncated {
            needed: 0x200 + u32::MAX as usize,
            available: 32
        })
    );
}

#[test]
fn bad_tlv_info_magic_and_protected_size() {
    let img = signed();
    let mut bad = img.clone();
    bad[PROT] = 0x07;
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::BadTlvInfoMagic {
            offset: PROT,
            found: TLV_INFO_MAGIC
        })
    );
    let mut bad = img.clone();
    bad[UNPROT + 1] = 0x00;
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::BadTlvInfoMagic {
            offset: UNPROT,
            found: 0x0007
        })
    );
    // The header claims no protected area, but there is one.
    let mut bad = img.clone();
    bad[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::BadTlvInfoMagic {
            offset: PROT,
            found: TLV_PROT_INFO_MAGIC
        })
    );
    // Header and protected info disagree.
    let mut bad = img.clone();
    bad[10] = PROT_SIZE as u8 + 4;
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::ProtectedSizeMismatch {
            header: PROT_SIZE as u16 + 4,
            info: PROT_SIZE as u16
        })
    );
}

#[test]
fn tlv_overflow() {
    let img = signed();
    // The first protected TLV claims more bytes than its area has.
    let mut bad = img.clone();
    bad[PROT + 6] = 0xff;
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::TlvOverflow { offset: PROT + 4 })
    );
    // The unprotected area ends 2 bytes into the signature TLV's header.
    let mut bad = img.clone();
    let size = (SIG_TLV + 2 - UNPROT) as u16;
    bad[UNPROT + 2..UNPROT + 4].copy_from_slice(&size.to_le_bytes());
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::TlvOverflow { offset: SIG_TLV })
    );
    // An area size smaller than its own info.
    let mut bad = img.clone();
    bad[UNPROT + 2..UNPROT + 4].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        verify(&bad, &oem(), 0),
        Err(ImageError::TlvOverflow { offset: UNPROT })
    );
}

#[test]
fn bad_tlv_lengths() {
    let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
    assert_eq!(
        verify(&with_unprotected(&b, &[(TLV_SHA256, &[0; 31])]), &oem(), 0),
        Err(ImageError::BadTlvLength { tlv: 0x10, len: 31 })
    );
    let digest = digest_of(&b);
    let short_key = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_KEYHASH, &[0; 20])]);
    assert_eq!(
        verify(&short_key, &oem(), 0),
        Err(ImageError::KeyHashLength {
            len: 20,
            hash: HashAlg::Sha256
        })
    );
    // Signatures: fixed lengths for ed25519 and RSA, 1 to 128 bytes of DER for ECDSA (checked
    // with or without keys).
    for (tlv, len, text) in [
        (TLV_ED25519, 65, "expected 64"),
        (TLV_RSA2048_PSS, 255, "expected 256"),
        (TLV_RSA3072_PSS, 256, "expected 384"),
        (TLV_ECDSA_SIG, 0, "expected 1 to 128 bytes of DER"),
        (TLV_ECDSA_SIG, 129, "expected 1 to 128 bytes of DER"),
    ] {
        let sig = vec![0x30; len];
        let img = with_unprotected(&b, &[(TLV_SHA256, &digest), (tlv, &sig)]);
        let err = verify(&img, &Keyring::new(), 0).unwrap_err();
        assert_eq!(
            err,
            ImageError::BadSignatureLength {
                tlv,
                len: len as u16
            }
        );
        assert!(err.to_string().ends_with(&format!("({text})")), "{err}");
    }
    let sha384 = with_unprotected(&b, &[(TLV_SHA384, &[0; 32])]);
    assert_eq!(
        verify(&sha384, &Keyring::new(), 0),
        Err(ImageError::BadTlvLength { tlv: 0x11, len: 32 })
    );
    let pure = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_SIG_PURE, &[1, 1])]);
    assert_eq!(
        verify(&pure, &Keyring::new(), 0),
        Err(ImageError::BadTlvLength { tlv: 0x25, len: 2 })
    );
    let pure = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_SIG_PURE, &[0])]);
    assert_eq!(
        verify(&pure, &Keyring::new(), 0),
        Err(ImageError::BadSigPure { value: 0 })
    );
    let counter = b
        .clone()
        .protected_tlv(TLV_SEC_CNT, vec![1, 0])
        .build_unsigned();
    assert_eq!(
        verify(&counter, &Keyring::new(), 0),
        Err(ImageError::BadTlvLength { tlv: 0x50, len: 2 })
    );
    let behaviour = b
        .protected_tlv(TLV_SIM_BEHAVIOUR, vec![0; 4])
        .build_unsigned();
    let err = verify(&behaviour, &Keyring::new(), 0).unwrap_err();
    assert_eq!(err, ImageError::BadTlvLength { tlv: 0xa5, len: 4 });
    assert_eq!(err.to_string(), "tlv 0x00a5 has length 4 (expected 5)");
}

#[test]
fn duplicate_and_misplaced_tlvs() {
    let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
    let twice = b
        .clone()
        .security_counter(1)
        .protected_tlv(TLV_SEC_CNT, vec![9, 0, 0, 0]);
    assert_eq!(
        verify(&twice.sign(&dev_key("oem")), &oem(), 0),
        Err(ImageError::DuplicateTlv { tlv: TLV_SEC_CNT })
    );
    let twice = b
        .clone()
        .behaviour(Behaviour::CrashOnBoot)
        .protected_tlv(TLV_SIM_BEHAVIOUR, Behaviour::DEFAULT.encode().to_vec());
    assert_eq!(
        verify(&twice.build_unsigned(), &Keyring::new(), 0),
        Err(ImageError::DuplicateTlv {
            tlv: TLV_SIM_BEHAVIOUR
        })
    );
    let digest = digest_of(&b);
    let two_hashes = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_SHA256, &digest)]);
    assert_eq!(
        verify(&two_hashes, &Keyring::new(), 0),
        Err(ImageError::DuplicateTlv { tlv: TLV_SHA256 })
    );
    // A security counter outside the signed area would let anybody change it.
    let sneaky = with_unprotected(
        &b,
        &[(TLV_SHA256, &digest), (TLV_SEC_CNT, &100u32.to_le_bytes())],
    );
    let err = verify(&sneaky, &Keyring::new(), 0).unwrap_err();
    assert_eq!(
        err,
        ImageError::MisplacedTlv {
            tlv: TLV_SEC_CNT,
            protected: false
        }
    );
    assert_eq!(
        err.to_string(),
        "tlv 0x0050 is not allowed in the unprotected tlv area"
    );
    let unknown = with_unprotected(&b, &[(TLV_SHA256, &digest), (0x00a0, b"x")]);
    assert_eq!(
        verify(&unknown, &Keyring::new(), 0),
        Err(ImageError::MisplacedTlv {
            tlv: 0x00a0,
            protected: false
        })
    );
    let hash_inside = b
        .clone()
        .protected_tlv(TLV_SHA256, vec![0; 32])
        .build_unsigned();
    assert_eq!(
        verify(&hash_inside, &Keyring::new(), 0),
        Err(ImageError::MisplacedTlv {
            tlv: TLV_SHA256,
            protected: true
        })
    );
    // Unknown protected TLVs (imgtool's dependencies, custom TLVs) are fine.
    let custom = b
        .protected_tlv(0x00a0, b"anything".to_vec())
        .sign(&dev_key("oem"));
    assert!(verify(&custom, &oem(), 0).is_ok());
}

#[test]
fn missing_hash_and_hash_mismatch() {
    let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
    assert_eq!(
        verify(&with_unprotected(&b, &[]), &Keyring::new(), 0),
        Err(ImageError::MissingHash)
    );
    let img = signed();
    // One payload byte, one header padding byte, one protected TLV byte.
    for at in [0x200 + 10, 100, PROT + 8] {
        let mut bad = img.clone();
        bad[at] ^= 1;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::HashMismatch),
            "{at}"
        );
        assert_eq!(
            verify(&bad, &Keyring::new(), 0),
            Err(ImageError::HashMismatch),
            "{at}"
        );
    }
    let mut bad = img.clone();
    bad[SHA_TLV + 4] ^= 0x80;
    assert_eq!(verify(&bad, &oem(), 0), Err(ImageError::HashMismatch));
}

#[test]
fn signature_failures() {
    let img = signed();
    let b = builder();
    assert_eq!(
        verify(&b.build_unsigned(), &oem(), 0),
        Err(ImageError::MissingSignature)
    );
    // KEYHASH without a signature after it.
    let digest = digest_of(&b);
    let oem_hash = keyhash(&dev_key("oem").verifying_key());
    let no_sig = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_KEYHASH, &oem_hash)]);
    assert_eq!(
        verify(&no_sig, &oem(), 0),
        Err(ImageError::MissingSignature)
    );

    let other = Keyring::new().with_key(dev_key("someone else").verifying_key());
    let err = verify(&img, &other, 0).unwrap_err();
    assert_eq!(
        err,
        ImageError::UnknownKey {
            keyhash: oem_hash.clone()
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "signed with an unknown key (keyhash {}…)",
            hex(&oem_hash[..8])
        )
    );
    let mut bad = img.clone();
    bad[KEYHASH_TLV + 4] ^= 1;
    assert!(matches!(
        verify(&bad, &oem(), 0),
        Err(ImageError::UnknownKey { .. })
    ));

    for at in [SIG_TLV + 4, SIG_TLV + 4 + 40, img.len() - 1] {
        let mut bad = img.clone();
        bad[at] ^= 1;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadSignature {
                signature: SignatureKind::Ed25519
            }),
            "{at}"
        );
    }
}

#[test]
fn several_signatures() {
    let b = builder();
    let (oem_key, stranger) = (dev_key("oem"), dev_key("stranger"));
    // A stranger's signature first, then ours: accepted (MCUboot skips unknown keys).
    let img = signed_pairs(&b, &[(&stranger, true), (&oem_key, true)]);
    assert!(verify(&img, &oem(), 0).unwrap().signed);
    // A bad signature by a trusted key fails, wherever it is.
    let img = signed_pairs(&b, &[(&oem_key, true), (&oem_key, false)]);
    assert_eq!(
        verify(&img, &oem(), 0),
        Err(ImageError::BadSignature {
            signature: SignatureKind::Ed25519
        })
    );
    // Strangers only.
    let img = signed_pairs(&b, &[(&stranger, true)]);
    assert_eq!(
        verify(&img, &oem(), 0),
        Err(ImageError::UnknownKey {
            keyhash: keyhash(&stranger.verifying_key())
        })
    );
    // Either of two trusted keys.
    let both = oem().with_key(stranger.verifying_key());
    assert_eq!(both.len(), 2);
    assert!(verify(&img, &both, 0).is_ok());
}

#[test]
fn security_counter() {
    let img = signed();
    assert_eq!(verify(&img, &oem(), 5).unwrap().security_counter, 5);
    assert_eq!(
        verify(&img, &oem(), 6),
        Err(ImageError::CounterTooLow {
            image: 5,
            required: 6
        })
    );
    // No SEC_CNT counts as 0.
    let plain = ImageBuilder::new(Version::new(1, 0, 0), vec![1]).sign(&dev_key("oem"));
    assert_eq!(verify(&plain, &oem(), 0).unwrap().security_counter, 0);
    assert_eq!(
        verify(&plain, &oem(), 1),
        Err(ImageError::CounterTooLow {
            image: 0,
            required: 1
        })
    );
    assert_eq!(
        ImageError::CounterTooLow {
            image: 2,
            required: 3
        }
        .to_string(),
        "security counter 2 is lower than the stored 3 (downgrade)"
    );
}

#[test]
fn behaviour_tlv() {
    let table = [
        (
            Behaviour::Healthy {
                confirm_after_ms: 500,
            },
            hex!("00 f4 01 00 00"),
        ),
        (Behaviour::CrashOnBoot, hex!("01 00 00 00 00")),
        (
            Behaviour::Hang {
                watchdog_ms: 0x0102_0304,
            },
            hex!("02 04 03 02 01"),
        ),
        (Behaviour::NeverConfirm, hex!("03 00 00 00 00")),
        (Behaviour::NoDiagnostics, hex!("04 00 00 00 00")),
    ];
    for (b, bytes) in table {
        assert_eq!(b.encode(), bytes);
        assert_eq!(Behaviour::decode(&bytes), Ok(b));
    }
    assert_eq!(Behaviour::DEFAULT.encode(), table[0].1);
    // Parameters of kinds that take none are ignored.
    assert_eq!(
        Behaviour::decode(&hex!("01 ff ff ff ff")),
        Ok(Behaviour::CrashOnBoot)
    );
    assert_eq!(
        Behaviour::decode(&hex!("05 00 00 00 00")),
        Err(ImageError::BadBehaviour { kind: 5 })
    );
    // In a correctly signed image, an unknown kind is still refused.
    let img = ImageBuilder::new(Version::new(1, 0, 0), vec![1])
        .protected_tlv(TLV_SIM_BEHAVIOUR, hex!("09 00 00 00 00").to_vec())
        .sign(&dev_key("oem"));
    assert_eq!(
        verify(&img, &oem(), 0),
        Err(ImageError::BadBehaviour { kind: 9 })
    );
}

#[test]
fn keys_and_pem() {
    let key = dev_key("oem").verifying_key();
    // ed25519's MCUboot bytes are its DER SubjectPublicKeyInfo: a fixed prefix + the 32 key
    // bytes, as the pkcs8 encoder writes it.
    let der = key.to_public_key_der().unwrap();
    let public = PublicKey::from(key);
    assert_eq!(public.mcuboot_bytes(), der.as_bytes());
    assert_eq!(
        public.mcuboot_bytes()[..12],
        hex!("30 2a 30 05 06 03 2b 65 70 03 21 00")
    );
    assert_eq!(
        public.keyhash(HashAlg::Sha256),
        Sha256::digest(der.as_bytes()).to_vec()
    );
    assert_eq!(public.keyhash(HashAlg::Sha512).len(), 64);

    let pem = key.to_public_key_pem(LineEnding::LF).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(public.to_pem(), pem);
    let mut ring = Keyring::new();
    assert!(ring.is_empty());
    assert_eq!(ring.add_pem(&format!("\n{pem}\n")), Ok(KeyKind::Ed25519));
    ring.add(key);
    assert_eq!(ring.len(), 1, "the same key twice is one key");
    assert_eq!(ring.find(&keyhash(&key)), Some(&public));
    assert_eq!(
        ring.find(&public.keyhash(HashAlg::Sha512)),
        Some(&public),
        "found by the keyhash of any hash"
    );
    assert_eq!(ring.find(&[0; 20]), None);
    assert_eq!(ring.iter().collect::<Vec<_>>(), [&public]);

    let err = ring.add_pem("not a key").unwrap_err();
    assert!(matches!(err, ImageError::BadPem { .. }), "{err}");
    assert!(err.to_string().starts_with("not a PEM key: "), "{err}");
    // A private key PEM gives its public half.
    let private = dev_key("oem").to_pkcs8_pem(LineEnding::LF).unwrap();
    assert_eq!(ring.add_pem(&private), Ok(KeyKind::Ed25519));
    assert_eq!(ring.len(), 1);
}

#[test]
fn dev_keys_are_deterministic_and_distinct() {
    let seed: [u8; 32] = Sha256::digest(b"ecu-sim dev key:oem").into();
    assert_eq!(dev_key("oem").to_bytes(), seed);
    assert_eq!(
        dev_key("oem").verifying_key(),
        dev_key("oem").verifying_key()
    );
    assert_ne!(
        dev_key("oem").verifying_key(),
        dev_key("oem2").verifying_key()
    );
}

#[test]
#[should_panic(expected = "header size 16 is smaller than the 32-byte header")]
fn builder_refuses_a_short_header() {
    let _ = ImageBuilder::new(Version::new(1, 0, 0), vec![]).header_size(16);
}

#[test]
fn versions_parse_print_and_order() {
    let v: Version = "1.2.3+4".parse().unwrap();
    assert_eq!(v, Version::new(1, 2, 3).with_build(4));
    assert_eq!(v.to_string(), "1.2.3+4");
    assert_eq!("2.0.0".parse(), Ok(Version::new(2, 0, 0)));
    assert_eq!(Version::new(2, 0, 0).to_string(), "2.0.0");
    assert_eq!(format!("{:#}", Version::new(2, 0, 0)), "2.0.0+0");
    assert_eq!(
        "255.255.65535+4294967295".parse(),
        Ok(Version {
            major: 255,
            minor: 255,
            revision: 65535,
            build: u32::MAX
        })
    );
    for bad in [
        "",
        "1",
        "1.2",
        "1.2.x",
        "1.2.3.4",
        "1.2.3+",
        "+1.2.3",
        "1.+2.3",
        "1.2.3+-1",
        "256.0.0",
        "0.0.65536",
        " 1.2.3",
        "1.2.3 ",
        "1..3",
        "1.2.3+4+5",
    ] {
        assert_eq!(
            bad.parse::<Version>(),
            Err(ParseVersionError {
                input: bad.to_string()
            }),
            "{bad:?}"
        );
    }
    assert_eq!(
        "1.2".parse::<Version>().unwrap_err().to_string(),
        "bad version \"1.2\" (expected major.minor.revision[+build], major and minor < 256, revision < 65536)"
    );
    let mut sorted = vec![
        Version::new(1, 10, 0),
        Version::new(1, 9, 300),
        Version::new(0, 255, 65535),
        Version::new(1, 9, 300).with_build(1),
        Version::new(2, 0, 0),
    ];
    sorted.sort();
    assert_eq!(
        sorted,
        [
            Version::new(0, 255, 65535),
            Version::new(1, 9, 300),
            Version::new(1, 9, 300).with_build(1),
            Version::new(1, 10, 0),
            Version::new(2, 0, 0),
        ]
    );
}

#[test]
fn error_messages_are_lowercase_fragments() {
    let errors = [
        ImageError::BadMagic { found: 0x1234_5678 },
        ImageError::Truncated {
            needed: 9,
            available: 3,
        },
        ImageError::BadHeaderSize { hdr_size: 1 },
        ImageError::BadTlvInfoMagic {
            offset: 1,
            found: 2,
        },
        ImageError::ProtectedSizeMismatch { header: 1, info: 2 },
        ImageError::TlvOverflow { offset: 1 },
        ImageError::BadTlvLength { tlv: 0x10, len: 1 },
        ImageError::DuplicateTlv { tlv: 0x10 },
        ImageError::MisplacedTlv {
            tlv: 0x10,
            protected: true,
        },
        ImageError::MissingHash,
        ImageError::HashMismatch,
        ImageError::MissingSignature,
        ImageError::UnknownKey {
            keyhash: vec![0xab; 32],
        },
        ImageError::BadSignature {
            signature: SignatureKind::EcdsaP384,
        },
        ImageError::KeyHashLength {
            len: 3,
            hash: HashAlg::Sha384,
        },
        ImageError::BadSigPure { value: 2 },
        ImageError::BadSignatureLength { tlv: 0x24, len: 3 },
        ImageError::BadSignatureEncoding {
            tlv: 0x22,
            message: "x".into(),
        },
        ImageError::UntrustedPubkey { key: "x".into() },
        ImageError::WrongKeyType {
            tlv: 0x22,
            key: KeyKind::Rsa2048,
        },
        ImageError::PureNotEd25519 {
            key: KeyKind::EcdsaP256,
        },
        ImageError::HashNotForSignature {
            hash: HashAlg::Sha256,
            signature: SignatureKind::EcdsaP384,
        },
        ImageError::BadPem {
            message: "x".into(),
        },
        ImageError::UnsupportedPem {
            label: "CERTIFICATE".into(),
        },
        ImageError::EncryptedPrivateKey,
        ImageError::NotAPrivateKey,
        ImageError::BadKeyDer {
            kind: "an RSA key",
            message: "x".into(),
        },
        ImageError::UnknownKeyAlgorithm {
            oid: "1.2.3".into(),
        },
        ImageError::UnsupportedCurve {
            oid: "1.2.3".into(),
        },
        ImageError::UnsupportedRsaSize { bits: 1024 },
        ImageError::NotASigningKey {
            found: KeyKind::X25519,
        },
        ImageError::CounterTooLow {
            image: 1,
            required: 2,
        },
        ImageError::BadBehaviour { kind: 7 },
    ];
    for e in errors {
        let text = e.to_string();
        let first = text.chars().next().unwrap();
        assert!(first.is_lowercase(), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }
    assert_eq!(
        ImageError::BadMagic { found: 0x1234_5678 }.to_string(),
        "bad image magic 0x12345678 (expected 0x96f3b83d)"
    );
}

/// A dev key of every signing type (RSA generation is slow: made once per test binary).
fn typed_key(kind: KeyKind) -> PrivateKey {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        KeyKind::ALL
            .into_iter()
            .map(|k| dev_private_key(k, "unit"))
            .collect()
    });
    keys[KeyKind::ALL.iter().position(|k| *k == kind).unwrap()].clone()
}

fn trusting(kinds: &[KeyKind]) -> Keyring {
    let mut ring = Keyring::new();
    for k in kinds {
        ring.add(typed_key(*k).public().unwrap());
    }
    ring
}

#[test]
fn every_signature_type_signs_and_verifies_with_its_default_hash() {
    let b = builder();
    for (kind, hash, signature, sig_tlv) in [
        (
            KeyKind::Ed25519,
            HashAlg::Sha256,
            SignatureKind::Ed25519,
            TLV_ED25519,
        ),
        (
            KeyKind::EcdsaP256,
            HashAlg::Sha256,
            SignatureKind::EcdsaP256,
            TLV_ECDSA_SIG,
        ),
        (
            KeyKind::EcdsaP384,
            HashAlg::Sha384,
            SignatureKind::EcdsaP384,
            TLV_ECDSA_SIG,
        ),
        (
            KeyKind::Rsa2048,
            HashAlg::Sha256,
            SignatureKind::Rsa2048Pss,
            TLV_RSA2048_PSS,
        ),
        (
            KeyKind::Rsa3072,
            HashAlg::Sha256,
            SignatureKind::Rsa3072Pss,
            TLV_RSA3072_PSS,
        ),
    ] {
        let key = typed_key(kind);
        let img = b.sign_with(&key, &SignOptions::default()).unwrap();
        let info = verify(&img, &trusting(&KeyKind::ALL[..5]), 5).unwrap();
        assert_eq!((info.hash_alg, info.signature), (hash, Some(signature)));
        assert_eq!(info.hash, hash.digest(&b.hashed_part()));
        let kinds: Vec<u16> = parse(&img)
            .unwrap()
            .tlvs()
            .filter(|t| !t.protected)
            .map(|t| t.kind)
            .collect();
        assert_eq!(kinds, [hash.tlv(), TLV_KEYHASH, sig_tlv], "{kind}");
        // The same image and key, the same bytes (RFC 6979, RFC 8032, a seeded PSS salt).
        assert_eq!(b.sign_with(&key, &SignOptions::default()).unwrap(), img);
    }
}

/// The hashed part of `b`, then a hand-made unprotected area: hash, key, signature of
/// `digest` by `key` as the key's type signs it.
fn crafted(b: &ImageBuilder, hash: HashAlg, keyhash: &[u8], sig_tlv: u16, sig: &[u8]) -> Vec<u8> {
    let digest = hash.digest(&b.hashed_part());
    with_unprotected(
        b,
        &[
            (hash.tlv(), &digest),
            (TLV_KEYHASH, keyhash),
            (sig_tlv, sig),
        ],
    )
}

#[test]
fn a_signature_tlv_of_another_type_than_its_key_is_named() {
    let b = builder();
    let p256 = typed_key(KeyKind::EcdsaP256);
    let img = b.sign_with(&p256, &SignOptions::default()).unwrap();
    let p = parse(&img).unwrap();
    let sig = p.find(TLV_ECDSA_SIG, false).unwrap();
    // The KEYHASH names a trusted RSA key; the signature TLV is ECDSA.
    let rsa = typed_key(KeyKind::Rsa2048).public().unwrap();
    let forged = crafted(
        &b,
        HashAlg::Sha256,
        &rsa.keyhash(HashAlg::Sha256),
        TLV_ECDSA_SIG,
        sig,
    );
    let err = verify(&forged, &trusting(&[KeyKind::Rsa2048]), 0).unwrap_err();
    assert_eq!(
        err,
        ImageError::WrongKeyType {
            tlv: TLV_ECDSA_SIG,
            key: KeyKind::Rsa2048
        }
    );
    assert_eq!(
        err.to_string(),
        "signature tlv 0x0022 (ECDSA) cannot come from the trusted key named before it: an RSA-2048 key"
    );
    // An RSA-2048 key and the RSA-3072 TLV (of the right length for 3072).
    let forged = crafted(
        &b,
        HashAlg::Sha256,
        &rsa.keyhash(HashAlg::Sha256),
        TLV_RSA3072_PSS,
        &[0; 384],
    );
    assert_eq!(
        verify(&forged, &trusting(&[KeyKind::Rsa2048]), 0),
        Err(ImageError::WrongKeyType {
            tlv: TLV_RSA3072_PSS,
            key: KeyKind::Rsa2048
        })
    );
}

#[test]
fn a_hash_the_signature_does_not_pair_with_is_named() {
    use p384::ecdsa::signature::hazmat::PrehashSigner as _;
    let b = builder();
    // A P-384 signature over a SHA-256 digest: valid maths, a pairing MCUboot never builds.
    let PrivateKey::EcdsaP384(k) = typed_key(KeyKind::EcdsaP384) else {
        unreachable!()
    };
    let digest = HashAlg::Sha256.digest(&b.hashed_part());
    let sig: p384::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
    let public = typed_key(KeyKind::EcdsaP384).public().unwrap();
    let img = crafted(
        &b,
        HashAlg::Sha256,
        &public.keyhash(HashAlg::Sha256),
        TLV_ECDSA_SIG,
        sig.to_der().as_bytes(),
    );
    let err = verify(&img, &trusting(&[KeyKind::EcdsaP384]), 0).unwrap_err();
    assert_eq!(
        err,
        ImageError::HashNotForSignature {
            hash: HashAlg::Sha256,
            signature: SignatureKind::EcdsaP384
        }
    );
    assert_eq!(
        err.to_string(),
        "a sha256 image hash does not go with ECDSA P-384 signatures (MCUboot pairs those with sha384)"
    );
    // RSA with SHA-512, and the builder refusing what imgtool refuses.
    let rsa = typed_key(KeyKind::Rsa2048);
    let options = SignOptions {
        hash: Some(HashAlg::Sha512),
        ..SignOptions::default()
    };
    assert_eq!(
        b.sign_with(&rsa, &options),
        Err(ImageError::HashNotForSignature {
            hash: HashAlg::Sha512,
            signature: SignatureKind::Rsa2048Pss
        })
    );
    // A pure signature with SHA-256, and a pure flag on an ECDSA image.
    let ed = typed_key(KeyKind::Ed25519);
    let pure = b
        .sign_with(
            &ed,
            &SignOptions {
                pure: true,
                ..SignOptions::default()
            },
        )
        .unwrap();
    let info = verify(&pure, &trusting(&[KeyKind::Ed25519]), 0).unwrap();
    assert_eq!(info.signature, Some(SignatureKind::Ed25519Pure));
    let p = parse(&pure).unwrap();
    let sig = p.find(TLV_ED25519, false).unwrap();
    let digest = HashAlg::Sha256.digest(&b.hashed_part());
    let ed_pub = ed.public().unwrap();
    let img = with_unprotected(
        &b,
        &[
            (TLV_SHA256, &digest),
            (TLV_SIG_PURE, &[1]),
            (TLV_KEYHASH, &ed_pub.keyhash(HashAlg::Sha256)),
            (TLV_ED25519, sig),
        ],
    );
    assert_eq!(
        verify(&img, &trusting(&[KeyKind::Ed25519]), 0),
        Err(ImageError::HashNotForSignature {
            hash: HashAlg::Sha256,
            signature: SignatureKind::Ed25519Pure
        })
    );
    let p256 = typed_key(KeyKind::EcdsaP256);
    let ecdsa = b.sign_with(&p256, &SignOptions::default()).unwrap();
    let sig = parse(&ecdsa)
        .unwrap()
        .find(TLV_ECDSA_SIG, false)
        .unwrap()
        .to_vec();
    let img = with_unprotected(
        &b,
        &[
            (TLV_SHA256, &digest),
            (TLV_SIG_PURE, &[1]),
            (
                TLV_KEYHASH,
                &p256.public().unwrap().keyhash(HashAlg::Sha256),
            ),
            (TLV_ECDSA_SIG, &sig),
        ],
    );
    assert_eq!(
        verify(&img, &trusting(&[KeyKind::EcdsaP256]), 0),
        Err(ImageError::PureNotEd25519 {
            key: KeyKind::EcdsaP256
        })
    );
}

#[test]
fn undecodable_and_padded_ecdsa_signatures() {
    let b = builder();
    let key = typed_key(KeyKind::EcdsaP256);
    let public = key.public().unwrap();
    let keyhash = public.keyhash(HashAlg::Sha256);
    let ring = trusting(&[KeyKind::EcdsaP256]);
    let err = verify(
        &crafted(
            &b,
            HashAlg::Sha256,
            &keyhash,
            TLV_ECDSA_SIG,
            &[0x30, 0x03, 0x02, 0x01],
        ),
        &ring,
        0,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::BadSignatureEncoding {
                tlv: TLV_ECDSA_SIG,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("signature tlv 0x0022 is not a DER ECDSA signature: "),
        "{err}"
    );
    // Old imgtools padded the DER signature with zeros (to 72 bytes): still verifies.
    let img = b.sign_with(&key, &SignOptions::default()).unwrap();
    let mut sig = parse(&img)
        .unwrap()
        .find(TLV_ECDSA_SIG, false)
        .unwrap()
        .to_vec();
    let der_len = sig.len();
    sig.resize(der_len + 3, 0);
    let padded = crafted(&b, HashAlg::Sha256, &keyhash, TLV_ECDSA_SIG, &sig);
    assert_eq!(
        verify(&padded, &ring, 0).unwrap().signature,
        Some(SignatureKind::EcdsaP256)
    );
    // Anything else after the DER: not a signature.
    sig[der_len + 2] = 1;
    let trailing = crafted(&b, HashAlg::Sha256, &keyhash, TLV_ECDSA_SIG, &sig);
    assert!(matches!(
        verify(&trailing, &ring, 0),
        Err(ImageError::BadSignatureEncoding { .. })
    ));
}

#[test]
fn pubkey_tlvs_name_their_key_by_its_bytes() {
    let b = builder();
    let options = SignOptions {
        key_format: KeyFormat::Full,
        ..SignOptions::default()
    };
    for kind in [KeyKind::Ed25519, KeyKind::EcdsaP384, KeyKind::Rsa3072] {
        let img = b.sign_with(&typed_key(kind), &options).unwrap();
        let p = parse(&img).unwrap();
        assert_eq!(
            p.find(TLV_PUBKEY, false),
            Some(&typed_key(kind).public().unwrap().mcuboot_bytes()[..])
        );
        assert!(verify(&img, &trusting(&[kind]), 0).is_ok(), "{kind}");
        assert_eq!(
            verify(&img, &oem(), 0),
            Err(ImageError::UntrustedPubkey {
                key: kind.described().to_string()
            })
        );
    }
    let img = with_unprotected(
        &b,
        &[(TLV_SHA256, &digest_of(&b)), (TLV_PUBKEY, &[1, 2, 3])],
    );
    assert_eq!(
        verify(&img, &oem(), 0).unwrap_err().to_string(),
        "signed with an untrusted key: the pubkey tlv holds 3 bytes that are no public key"
    );
}

#[test]
fn keys_load_from_every_pem_and_refusals_name_what_was_found() {
    use pkcs8::der::pem::encode_string;
    use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
    for kind in KeyKind::ALL {
        let key = typed_key(kind);
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{kind}");
        let again = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(again.to_pem(), pem, "{kind}: round trip");
        assert_eq!(again.public_pem(), key.public_pem());
        match PublicKey::from_pem(&key.public_pem()) {
            Ok(public) => {
                assert_eq!(Some(public.clone()), key.public(), "{kind}");
                // A private key PEM gives the public key where one is trusted.
                assert_eq!(PublicKey::from_pem(&pem), Ok(public));
            }
            Err(e) => {
                assert_eq!(kind, KeyKind::X25519);
                assert_eq!(e, ImageError::NotASigningKey { found: kind });
                assert_eq!(PublicKey::from_pem(&pem), Err(e));
            }
        }
    }
    // PKCS#1 RSA and SEC1 EC forms (OpenSSL's traditional ones).
    let PrivateKey::Rsa(rsa) = typed_key(KeyKind::Rsa2048) else {
        unreachable!()
    };
    let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert_eq!(
        PrivateKey::from_pem(&pkcs1).unwrap().kind(),
        KeyKind::Rsa2048
    );
    let pkcs1_pub = rsa.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap();
    assert_eq!(
        PublicKey::from_pem(&pkcs1_pub).unwrap().kind(),
        KeyKind::Rsa2048
    );
    let PrivateKey::EcdsaP384(ec) = typed_key(KeyKind::EcdsaP384) else {
        unreachable!()
    };
    let sec1 = p384::SecretKey::from(ec)
        .to_sec1_pem(LineEnding::LF)
        .unwrap();
    assert_eq!(
        PrivateKey::from_pem(&sec1).unwrap().kind(),
        KeyKind::EcdsaP384
    );

    // SubjectPublicKeyInfo { AlgorithmIdentifier { 1.2.3.4 }, BIT STRING 00 01 }.
    let unknown = encode_string(
        "PUBLIC KEY",
        LineEnding::LF,
        &hex!("30 0b 30 05 06 03 2a 03 04 03 02 00 01"),
    )
    .unwrap();
    let err = PublicKey::from_pem(&unknown).unwrap_err();
    assert_eq!(
        err,
        ImageError::UnknownKeyAlgorithm {
            oid: "1.2.3.4".into()
        }
    );
    assert!(
        err.to_string()
            .starts_with("unknown key algorithm OID 1.2.3.4 "),
        "{err}"
    );
    // An EC key on P-521 (1.3.132.0.35).
    let p521 = encode_string(
        "PUBLIC KEY",
        LineEnding::LF,
        &hex!("30 16 30 10 06 07 2a 86 48 ce 3d 02 01 06 05 2b 81 04 00 23 03 02 00 04"),
    )
    .unwrap();
    assert_eq!(
        PublicKey::from_pem(&p521),
        Err(ImageError::UnsupportedCurve {
            oid: "1.3.132.0.35".into()
        })
    );
    let small = rsa::RsaPrivateKey::new(&mut rand_chacha::ChaCha20Rng::from_seed([7; 32]), 1024)
        .unwrap()
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap();
    assert_eq!(
        PublicKey::from_pem(&small),
        Err(ImageError::UnsupportedRsaSize { bits: 1024 })
    );
    let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert_eq!(
        PublicKey::from_pem(cert),
        Err(ImageError::UnsupportedPem {
            label: "CERTIFICATE".into()
        })
    );
    assert_eq!(
        PrivateKey::from_pem(&typed_key(KeyKind::EcdsaP256).public_pem()).unwrap_err(),
        ImageError::NotAPrivateKey
    );
    let garbage = "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        PublicKey::from_pem(garbage),
        Err(ImageError::BadKeyDer {
            kind: "a public key",
            ..
        })
    ));
    // Signing with an encryption key.
    assert_eq!(
        builder().sign_with(&typed_key(KeyKind::X25519), &SignOptions::default()),
        Err(ImageError::NotASigningKey {
            found: KeyKind::X25519
        })
    );
}
