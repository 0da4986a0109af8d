//! Property tests of the encrypted-image layer: arbitrary bytes never panic the ENC TLV
//! parser, the key unwrap, the decryptor or the key loaders; arbitrary ENC TLV values of the
//! right length are refused by name or unwrap; encrypting then decrypting gives the plaintext
//! back, whatever the payload, key and AES size; the keystream of a range is the keystream of
//! the whole at that offset.

use ecu_sim::image::{
    self, AesKeySize, EncError, EncKey, EncKeyFamily, EncPublicKey, EncTlv, EncTlvKind,
    EncryptOptions, ImageBuilder, ImageError, ImageKey, KeyKind, Keyring, KwKey, Version, dev_key,
    dev_private_key,
};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng as _;

fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

fn keys() -> &'static [EncKey] {
    static KEYS: std::sync::OnceLock<Vec<EncKey>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        vec![
            EncKey::from_private(dev_private_key(KeyKind::Rsa2048, "props")).unwrap(),
            EncKey::Kw(KwKey::from_bytes(&[3; 16]).unwrap()),
            EncKey::Kw(KwKey::from_bytes(&[4; 32]).unwrap()),
            EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "props")).unwrap(),
            EncKey::from_private(dev_private_key(KeyKind::X25519, "props")).unwrap(),
        ]
    })
}

fn oem() -> Keyring {
    Keyring::new().with_key(dev_key("oem").verifying_key())
}

fn aes() -> impl Strategy<Value = AesKeySize> {
    prop_oneof![Just(AesKeySize::Aes128), Just(AesKeySize::Aes256)]
}

/// An encrypted image for key `k` (a KW key wraps only its own size).
fn encrypted(k: usize, aes: AesKeySize, payload: Vec<u8>, seed: u64) -> (Vec<u8>, AesKeySize) {
    let key = &keys()[k];
    let aes = match key {
        EncKey::Kw(kw) => kw.size(),
        _ => aes,
    };
    let plain = ImageBuilder::new(Version::new(1, 0, 0), payload)
        .encrypted(aes)
        .sign(&dev_key("oem"));
    let img = image::encrypt_image(
        &plain,
        &key.public(),
        EncryptOptions::default(),
        &mut rng(seed),
    )
    .unwrap();
    (img, aes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for key in keys() {
            if let Ok(parsed) = image::parse(&bytes) {
                let _ = EncTlv::of_image(&parsed, key.family());
                let _ = image::image_key(&parsed, key);
            }
            let _ = image::decrypt_image(&bytes, key);
            let _ = image::verify_encrypted(&bytes, &oem(), 0, key);
        }
        let _ = EncKey::from_file(&bytes);
        let _ = EncPublicKey::from_file(&bytes);
        let _ = KwKey::from_file(&bytes);
        let _ = ImageKey::from_bytes(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = EncKey::from_pem(text);
            let _ = EncPublicKey::from_pem(text);
        }
    }

    /// Arbitrary values of the right length: refused by name (almost always) or unwrapped;
    /// arbitrary lengths: refused by length. Never a panic, never another error.
    #[test]
    fn arbitrary_enc_tlv_values_are_refused_by_name(
        kind in prop::sample::select(EncTlvKind::ALL.to_vec()),
        aes in aes(),
        seed in any::<u64>(),
        len in 0usize..300,
    ) {
        use rand_chacha::rand_core::RngCore as _;
        let mut value = vec![0u8; kind.value_len(aes)];
        rng(seed).fill_bytes(&mut value);
        let tlv = EncTlv::new(kind, aes, &value).unwrap();
        for key in keys() {
            match key.unwrap(&tlv) {
                Ok(k) => prop_assert_eq!(k.size(), aes),
                Err(EncError::UnwrapFailed { tlv: t, .. }) => prop_assert_eq!(t, kind),
                Err(EncError::WrongKeyType { found, key: family }) => {
                    prop_assert_eq!(found, kind);
                    prop_assert!(!family.tlvs().contains(&kind));
                }
                Err(EncError::KwKeySize { image, .. }) => {
                    prop_assert_eq!(key.family(), EncKeyFamily::AesKw);
                    prop_assert_eq!(image, aes);
                }
                Err(e) => prop_assert!(false, "{key:?} {kind} {aes}: {e}"),
            }
        }
        let mut other = vec![0u8; len];
        rng(seed).fill_bytes(&mut other);
        let r = EncTlv::new(kind, aes, &other);
        if len == kind.value_len(aes) {
            prop_assert!(r.is_ok());
        } else {
            let is_len_error = matches!(r, Err(EncError::BadEncTlvLength { .. }));
            prop_assert!(is_len_error);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encrypt_then_decrypt_is_the_plaintext(
        k in 0usize..5,
        aes in aes(),
        payload in proptest::collection::vec(any::<u8>(), 1..3000),
        seed in any::<u64>(),
    ) {
        let (img, aes) = encrypted(k, aes, payload.clone(), seed);
        let key = &keys()[k];
        let parsed = image::parse(&img).unwrap();
        prop_assert_eq!(image::AesKeySize::from_flags(parsed.header.flags), Ok(Some(aes)));
        let decrypted = image::decrypt_image(&img, key).unwrap();
        let plain = image::parse(&decrypted).unwrap();
        prop_assert_eq!(&plain.payload[..payload.len()], &payload[..]);
        prop_assert!(plain.payload[payload.len()..].iter().all(|&b| b == 0));
        prop_assert!(image::verify_encrypted(&img, &oem(), 0, key).is_ok());
        // Any payload byte changed in the ciphertext: the hash mismatch, named.
        let at = usize::from(parsed.header.hdr_size) + (seed as usize % parsed.payload.len());
        let mut bad = img.clone();
        bad[at] ^= 1 << (seed % 8);
        prop_assert_eq!(
            image::verify_encrypted(&bad, &oem(), 0, key),
            Err(ImageError::HashMismatch)
        );
    }

    #[test]
    fn a_range_is_the_whole_keystream_at_its_offset(
        aes in aes(),
        seed in any::<u64>(),
        len in 1usize..600,
        cut in 0usize..600,
    ) {
        let key = ImageKey::generate(aes, &mut rng(seed));
        let mut whole = vec![0u8; len];
        key.apply_keystream(0, &mut whole);
        let cut = cut.min(len);
        let mut pieces = vec![0u8; len];
        let (a, b) = pieces.split_at_mut(cut);
        key.apply_keystream(0, a);
        key.apply_keystream(cut as u64, b);
        prop_assert_eq!(whole, pieces);
    }

    /// Truncated or mutated encrypted images never panic the decryptor.
    #[test]
    fn mutated_encrypted_images_never_panic(
        k in 0usize..5,
        aes in aes(),
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (img, _) = encrypted(k, aes, vec![0x42; 700], seed);
        let key = &keys()[k];
        let mut bad = img.clone();
        for (at, x) in &flips {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        let _ = image::decrypt_image(&bad, key);
        let _ = image::verify_encrypted(&bad, &oem(), 0, key);
        let truncated = &img[..cut.index(img.len())];
        prop_assert!(image::decrypt_image(truncated, key).is_err());
    }
}
