//! Encrypted images: published vectors for the primitives, MCUboot's counter layout, every
//! key wrap both ways, and every named error on crafted images.

use super::*;
use aes::cipher::{BlockEncrypt as _, KeyInit as _};
use hex_literal::hex;
use rand_chacha::rand_core::SeedableRng as _;

fn rng(seed: u8) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::from_seed([seed; 32])
}

/// A deterministic key of every family (the RSA one is a development key: generating one is
/// slow).
fn keys() -> Vec<EncKey> {
    vec![
        EncKey::from_private(dev_private_key(KeyKind::Rsa2048, "enc")).unwrap(),
        EncKey::Kw(KwKey::from_bytes(&[0x5a; 16]).unwrap()),
        EncKey::Kw(KwKey::from_bytes(&[0xa5; 32]).unwrap()),
        EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "enc")).unwrap(),
        EncKey::from_private(dev_private_key(KeyKind::X25519, "enc")).unwrap(),
    ]
}

/// The AES sizes a key wraps (a KW key only its own).
fn sizes(key: &EncKey) -> Vec<AesKeySize> {
    match key {
        EncKey::Kw(k) => vec![k.size()],
        _ => AesKeySize::ALL.to_vec(),
    }
}

fn plain_image(aes: AesKeySize, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    ImageBuilder::new(Version::new(1, 2, 3), payload)
        .security_counter(1)
        .encrypted(aes)
        .sign(&dev_key("oem"))
}

fn oem() -> Keyring {
    Keyring::new().with_key(dev_key("oem").verifying_key())
}

#[test]
fn aes_key_wrap_matches_rfc_3394() {
    // RFC 3394 4.1: 128-bit key data with a 128-bit KEK.
    let kek = KwKey::from_bytes(&hex!("000102030405060708090A0B0C0D0E0F")).unwrap();
    let key = ImageKey::from_bytes(&hex!("00112233445566778899AABBCCDDEEFF")).unwrap();
    let wrapped = hex!("1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5");
    assert_eq!(kek.wrap(&key).unwrap(), wrapped);
    assert_eq!(kek.unwrap(&wrapped, AesKeySize::Aes128).unwrap(), key);
    // RFC 3394 4.6: 256-bit key data with a 256-bit KEK.
    let kek = KwKey::from_bytes(&hex!(
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
    ))
    .unwrap();
    let key = ImageKey::from_bytes(&hex!(
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F"
    ))
    .unwrap();
    let wrapped = hex!(
        "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"
    );
    assert_eq!(kek.wrap(&key).unwrap(), wrapped);
    assert_eq!(kek.unwrap(&wrapped, AesKeySize::Aes256).unwrap(), key);
    let mut bad = wrapped;
    bad[0] ^= 1;
    assert_eq!(
        kek.unwrap(&bad, AesKeySize::Aes256),
        Err(EncError::UnwrapFailed {
            tlv: EncTlvKind::Kw,
            reason: UnwrapFailure::KwIntegrity
        })
    );
}

/// MCUboot's `boot_enc_decrypt`: the counter block is 12 zero bytes and the block index
/// `offset / 16` big-endian; the keystream byte at `offset` is byte `offset % 16` of AES of it.
#[test]
fn the_keystream_is_mcuboots_counter_at_the_payload_offset() {
    for aes in AesKeySize::ALL {
        let key = ImageKey::generate(aes, &mut rng(1));
        let block = |index: u32| {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&index.to_be_bytes());
            let mut b = b.into();
            match aes {
                AesKeySize::Aes128 => aes::Aes128::new(key.as_bytes().into()).encrypt_block(&mut b),
                AesKeySize::Aes256 => aes::Aes256::new(key.as_bytes().into()).encrypt_block(&mut b),
            }
            b
        };
        for offset in [0u64, 1, 15, 16, 4095, 4096, 70_000] {
            let mut buf = [0u8; 40];
            key.apply_keystream(offset, &mut buf);
            for (i, byte) in buf.iter().enumerate() {
                let at = offset + i as u64;
                let expected = block((at / 16) as u32)[(at % 16) as usize];
                assert_eq!(*byte, expected, "{aes} offset {at}");
            }
        }
        // Applying it twice gives the input back.
        let mut buf: Vec<u8> = (0..100).collect();
        key.apply_keystream(33, &mut buf);
        key.apply_keystream(33, &mut buf);
        assert_eq!(buf, (0..100).collect::<Vec<u8>>());
    }
}

#[test]
fn every_key_wraps_and_unwraps_every_size() {
    for key in keys() {
        let public = key.public();
        assert_eq!(public.family(), key.family());
        for aes in sizes(&key) {
            let image_key = ImageKey::generate(aes, &mut rng(2));
            let (kind, value) = public.wrap(&image_key, false, &mut rng(3)).unwrap();
            assert_eq!(kind.key(), key.family(), "{key:?} {aes}");
            assert_eq!(value.len(), kind.value_len(aes), "{key:?} {aes}");
            let tlv = EncTlv::new(kind, aes, &value).unwrap();
            assert_eq!(key.unwrap(&tlv), Ok(image_key.clone()), "{key:?} {aes}");
        }
    }
}

#[test]
fn x25519_with_sha512_is_its_own_tlv_and_x25519_only() {
    let key = EncKey::from_private(dev_private_key(KeyKind::X25519, "enc")).unwrap();
    for aes in AesKeySize::ALL {
        let image_key = ImageKey::generate(aes, &mut rng(4));
        let (kind, value) = key.public().wrap(&image_key, true, &mut rng(5)).unwrap();
        assert_eq!(kind, EncTlvKind::X25519Sha512);
        assert_eq!(value.len(), 32 + 64 + aes.key_len());
        let tlv = EncTlv::new(kind, aes, &value).unwrap();
        assert_eq!(key.unwrap(&tlv), Ok(image_key.clone()));
        // The same bytes as the SHA-256 form do not unwrap (another KDF and MAC).
        let as_sha256 = EncTlv::new(EncTlvKind::X25519, aes, &value[..value.len() - 32]);
        if let Ok(tlv) = as_sha256 {
            assert!(key.unwrap(&tlv).is_err());
        }
    }
    for key in keys()
        .into_iter()
        .filter(|k| k.family() != EncKeyFamily::X25519)
    {
        let image_key = ImageKey::generate(sizes(&key)[0], &mut rng(6));
        assert_eq!(
            key.public().wrap(&image_key, true, &mut rng(7)),
            Err(EncError::Sha512NotX25519 { key: key.family() })
        );
    }
}

#[test]
fn a_changed_or_foreign_wrapped_key_is_a_named_unwrap_failure() {
    let others = [
        EncKey::from_private(dev_private_key(KeyKind::Rsa2048, "other")).unwrap(),
        EncKey::Kw(KwKey::from_bytes(&[0x11; 16]).unwrap()),
        EncKey::Kw(KwKey::from_bytes(&[0x22; 32]).unwrap()),
        EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "other")).unwrap(),
        EncKey::from_private(dev_private_key(KeyKind::X25519, "other")).unwrap(),
    ];
    for (key, other) in keys().iter().zip(&others) {
        for aes in sizes(key) {
            let image_key = ImageKey::generate(aes, &mut rng(8));
            let (kind, value) = key.public().wrap(&image_key, false, &mut rng(9)).unwrap();
            let reason = match kind {
                EncTlvKind::Rsa2048 => UnwrapFailure::OaepDecode,
                EncTlvKind::Kw => UnwrapFailure::KwIntegrity,
                _ => UnwrapFailure::HmacMismatch,
            };
            let failed = Err(EncError::UnwrapFailed { tlv: kind, reason });
            let tlv = EncTlv::new(kind, aes, &value).unwrap();
            assert_eq!(other.unwrap(&tlv), failed, "{key:?} {aes}");
            // Every byte of the value matters (the ephemeral key, the tag, the wrapped key).
            for at in [0, value.len() / 2, value.len() - 1] {
                let mut bad = value.clone();
                bad[at] ^= 0x80;
                let tlv = EncTlv::new(kind, aes, &bad).unwrap();
                let err = key.unwrap(&tlv).unwrap_err();
                assert!(
                    matches!(err, EncError::UnwrapFailed { tlv, .. } if tlv == kind),
                    "{key:?} {aes} byte {at}: {err}"
                );
            }
        }
    }
}

#[test]
fn bad_ephemeral_keys_are_named() {
    let x = EncKey::from_private(dev_private_key(KeyKind::X25519, "enc")).unwrap();
    // The all-zero point is of low order: every shared secret with it is zero.
    let value = [0u8; 80];
    let tlv = EncTlv::new(EncTlvKind::X25519, AesKeySize::Aes128, &value).unwrap();
    assert_eq!(
        x.unwrap(&tlv),
        Err(EncError::UnwrapFailed {
            tlv: EncTlvKind::X25519,
            reason: UnwrapFailure::LowOrderPoint
        })
    );
    let ec = EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "enc")).unwrap();
    let mut value = [0u8; 113];
    value[0] = 0x04; // uncompressed, but (0, 0) is not on the curve
    let tlv = EncTlv::new(EncTlvKind::Ec256, AesKeySize::Aes128, &value).unwrap();
    assert_eq!(
        ec.unwrap(&tlv),
        Err(EncError::UnwrapFailed {
            tlv: EncTlvKind::Ec256,
            reason: UnwrapFailure::BadEphemeralKey
        })
    );
}

#[test]
fn an_rsa_plaintext_of_another_length_is_named() {
    use rand_chacha::rand_core::RngCore as _;
    let key = EncKey::from_private(dev_private_key(KeyKind::Rsa2048, "enc")).unwrap();
    let EncPublicKey::Rsa2048(public) = key.public() else {
        unreachable!()
    };
    let mut secret = [0u8; 20];
    rng(10).fill_bytes(&mut secret);
    let value = public
        .encrypt(&mut rng(11), rsa::Oaep::new::<sha2::Sha256>(), &secret)
        .unwrap();
    let tlv = EncTlv::new(EncTlvKind::Rsa2048, AesKeySize::Aes128, &value).unwrap();
    assert_eq!(
        key.unwrap(&tlv),
        Err(EncError::UnwrapFailed {
            tlv: EncTlvKind::Rsa2048,
            reason: UnwrapFailure::KeyLength { len: 20 }
        })
    );
}

#[test]
fn tlv_lengths_are_mcuboots() {
    use AesKeySize::*;
    use EncTlvKind::*;
    // enc_key_public.h: BOOT_ENC_TLV_SIZE per build; the MCUboot simulator's estimates.
    for (kind, aes, len) in [
        (Rsa2048, Aes128, 256),
        (Rsa2048, Aes256, 256),
        (Kw, Aes128, 24),
        (Kw, Aes256, 40),
        (Ec256, Aes128, 113),
        (Ec256, Aes256, 129),
        (X25519, Aes128, 80),
        (X25519, Aes256, 96),
        (X25519Sha512, Aes128, 112),
        (X25519Sha512, Aes256, 128),
    ] {
        assert_eq!(kind.value_len(aes), len, "{kind} {aes}");
        assert_eq!(EncTlvKind::from_tlv(kind.tlv()), Some(kind));
        let short = vec![0; len - 1];
        assert_eq!(
            EncTlv::new(kind, aes, &short),
            Err(EncError::BadEncTlvLength {
                tlv: kind,
                len: len - 1,
                expected: len,
                aes
            })
        );
    }
    assert_eq!(
        EncError::BadEncTlvLength {
            tlv: Ec256,
            len: 112,
            expected: 113,
            aes: Aes128
        }
        .to_string(),
        "ENC_EC256 (0x32) has length 112 (expected 113 for AES-128)"
    );
}

#[test]
fn header_flags_say_the_key_size() {
    assert_eq!(AesKeySize::from_flags(0), Ok(None));
    assert_eq!(AesKeySize::from_flags(0x20), Ok(None));
    assert_eq!(AesKeySize::from_flags(0x24), Ok(Some(AesKeySize::Aes128)));
    assert_eq!(AesKeySize::from_flags(0x08), Ok(Some(AesKeySize::Aes256)));
    assert_eq!(AesKeySize::from_flags(0x0c), Err(EncError::BothAesFlags));
    for aes in AesKeySize::ALL {
        let img = plain_image(aes, 1000);
        let parsed = parse(&img).unwrap();
        assert_eq!(parsed.header.flags, aes.flag());
        // imgtool pads the payload to 16 bytes with zeros.
        assert_eq!(parsed.payload.len(), 1008);
        assert!(parsed.payload[1000..].iter().all(|&b| b == 0));
    }
}

#[test]
fn our_images_round_trip_for_every_key() {
    for key in keys() {
        for aes in sizes(&key) {
            let plain = plain_image(aes, 3333);
            let img = encrypt_image(
                &plain,
                &key.public(),
                EncryptOptions::default(),
                &mut rng(12),
            )
            .unwrap();
            let decrypted = decrypt_image(&img, &key).unwrap();
            assert_eq!(
                parse(&decrypted).unwrap().hashed,
                parse(&plain).unwrap().hashed,
                "{key:?} {aes}"
            );
            let info = verify_encrypted(&img, &oem(), 1, &key).unwrap();
            assert_eq!(info.header.flags, aes.flag());
            // The decrypted image, ENC TLV kept, verifies as the primary slot holds it.
            assert_eq!(verify(&decrypted, &oem(), 1).map(|i| i.hash), Ok(info.hash));
            // The ciphertext does not.
            assert_eq!(verify(&img, &oem(), 0), Err(ImageError::HashMismatch));
            // A sector-sized piece at a time, as the bootloader copies.
            let parsed = parse(&img).unwrap();
            let image_key = image_key(&parsed, &key).unwrap();
            let start = usize::from(parsed.header.hdr_size);
            let mut body = parsed.payload.to_vec();
            for (i, chunk) in body.chunks_mut(1000).enumerate() {
                image_key.apply_keystream(i as u64 * 1000, chunk);
            }
            assert!(
                body == decrypted[start..start + body.len()],
                "{key:?} {aes}"
            );
        }
    }
}

#[test]
fn crafted_images_get_named_errors() {
    let x = EncKey::from_private(dev_private_key(KeyKind::X25519, "enc")).unwrap();
    let ec = EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "enc")).unwrap();
    let enc = |e| Err(ImageError::Encryption(e));
    let opts = EncryptOptions::default();

    // Not encrypted: neither flag.
    let unencrypted = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 64]).sign(&dev_key("oem"));
    assert_eq!(decrypt_image(&unencrypted, &x), enc(EncError::NotEncrypted));
    assert_eq!(
        encrypt_image(&unencrypted, &x.public(), opts, &mut rng(13)),
        enc(EncError::NotEncrypted)
    );
    // Flags say encrypted, no ENC TLV (imgtool --clear without one, or a stripped image).
    let plain = plain_image(AesKeySize::Aes128, 64);
    assert_eq!(
        decrypt_image(&plain, &x),
        enc(EncError::MissingEncTlv {
            key: EncKeyFamily::X25519
        })
    );
    assert_eq!(
        EncError::MissingEncTlv {
            key: EncKeyFamily::X25519
        }
        .to_string(),
        "the header says the image is encrypted but it has no ENC tlv (an X25519 key takes \
         ENC_X25519 (0x33) or ENC_X25519_SHA512 (0x34))"
    );
    // Encrypted for X25519, an EC key.
    let img = encrypt_image(&plain, &x.public(), opts, &mut rng(14)).unwrap();
    assert_eq!(
        decrypt_image(&img, &ec),
        enc(EncError::WrongKeyType {
            found: EncTlvKind::X25519,
            key: EncKeyFamily::EcP256
        })
    );
    // Encrypting twice.
    assert_eq!(
        encrypt_image(&img, &x.public(), opts, &mut rng(15)),
        enc(EncError::AlreadyEncrypted {
            tlv: EncTlvKind::X25519
        })
    );
    // Both flags (the protected-free header is hashed: the hash no longer matches either).
    let mut both = img.clone();
    both[16] |= 0x0c;
    assert_eq!(decrypt_image(&both, &x), enc(EncError::BothAesFlags));
    // The flag of the other size: the TLV's length is wrong for it.
    let mut other = img.clone();
    other[16] = 0x08;
    assert_eq!(
        decrypt_image(&other, &x),
        enc(EncError::BadEncTlvLength {
            tlv: EncTlvKind::X25519,
            len: 80,
            expected: 96,
            aes: AesKeySize::Aes256
        })
    );
    // Two ENC TLVs of the key's kind.
    let parsed = parse(&img).unwrap();
    let enc_tlv = parsed.tlvs().last().unwrap();
    let mut twice = img[..parsed.unprotected_offset()].to_vec();
    let area = &img[parsed.unprotected_offset()..];
    let size = u16::from_le_bytes([area[2], area[3]]) + 4 + 80;
    twice.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
    twice.extend_from_slice(&size.to_le_bytes());
    twice.extend_from_slice(&area[4..]);
    twice.extend_from_slice(&img[enc_tlv.offset..enc_tlv.offset + 84]);
    assert_eq!(
        decrypt_image(&twice, &x),
        enc(EncError::DuplicateEncTlv {
            tlv: EncTlvKind::X25519
        })
    );
    // An ENC TLV in the protected area: not where MCUboot's allow list has it.
    let img = ImageBuilder::new(Version::new(1, 0, 0), vec![0; 32])
        .encrypted(AesKeySize::Aes128)
        .protected_tlv(TLV_ENC_X25519, vec![0; 80])
        .sign(&dev_key("oem"));
    assert_eq!(
        verify(&img, &oem(), 0),
        Err(ImageError::MisplacedTlv {
            tlv: TLV_ENC_X25519,
            protected: true
        })
    );
}

#[test]
fn image_keys_come_and_go_as_trailer_bytes() {
    for aes in AesKeySize::ALL {
        let key = ImageKey::generate(aes, &mut rng(16));
        assert_eq!(key.as_bytes().len(), aes.key_len());
        assert_eq!(ImageKey::from_bytes(key.as_bytes()), Ok(key.clone()));
        assert_eq!(
            format!("{key:?}"),
            format!("ImageKey({aes})"),
            "no key bytes in logs"
        );
    }
    assert_eq!(
        ImageKey::from_bytes(&[0; 24]),
        Err(EncError::BadImageKeyLength { len: 24 })
    );
}

#[test]
fn kw_key_files_are_base64_or_raw() {
    // MCUboot's enc-aes128kw.b64 and enc-aes256kw.b64.
    let k128 = KwKey::from_file(b"0VoElcTCqP8weM5Jtfyy3Q==\n").unwrap();
    assert_eq!(k128.as_bytes(), hex!("d15a0495c4c2a8ff3078ce49b5fcb2dd"));
    assert_eq!(k128.to_base64(), "0VoElcTCqP8weM5Jtfyy3Q==\n");
    let k256 = KwKey::from_file(b"5FxRRtIcgjXMGhmvofKqIMiMf0Bs2yKqarXLqvixW7Q=").unwrap();
    assert_eq!(k256.size(), AesKeySize::Aes256);
    assert_eq!(KwKey::from_file(&[9; 16]).unwrap().as_bytes(), [9; 16]);
    assert_eq!(
        KwKey::from_file(b"abcd"),
        Err(EncKeyError::BadKwKey { len: 4 })
    );
    // A PEM is read as a PEM, never as a KW key.
    let err = EncKey::from_file(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
        .unwrap_err();
    assert!(
        matches!(
            err,
            EncKeyError::Key(ImageError::BadKeyDer {
                kind: "a private key",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn our_key_pems_load_both_ways() {
    for kind in [KeyKind::X25519, KeyKind::EcdsaP256, KeyKind::Rsa2048] {
        let private = dev_private_key(kind, "pem");
        let key = EncKey::from_pem(&private.to_pem()).unwrap();
        let public = EncPublicKey::from_pem(&private.public_pem()).unwrap();
        assert_eq!(key.public(), public, "{kind}");
        assert_eq!(
            EncKey::from_pem(&private.public_pem()).map(|k| k.family()),
            Err(EncKeyError::PublicKeyOnly)
        );
    }
    for kind in [KeyKind::Ed25519, KeyKind::EcdsaP384] {
        let private = dev_private_key(kind, "pem");
        assert_eq!(
            EncKey::from_pem(&private.to_pem()).map(|k| k.family()),
            Err(EncKeyError::NotAnEncryptionKey { found: kind })
        );
    }
    assert_eq!(
        EncKey::from_private(dev_private_key(KeyKind::Rsa3072, "pem")).map(|k| k.family()),
        Err(EncKeyError::RsaSize { bits: 3072 })
    );
    assert_eq!(
        format!(
            "{:?}",
            EncKey::from_private(dev_private_key(KeyKind::X25519, "pem")).unwrap()
        ),
        "EncKey(an X25519 key)",
        "no key bytes in logs"
    );
}
