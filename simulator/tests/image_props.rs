//! Property tests of the image parser and verifier: they never panic, whatever the input, and
//! no change to the bytes an image's hash and signature cover goes unnoticed.
//!
//! What covers what, in a signed image (see `ecu_sim::image`):
//!
//! | bytes | protected by |
//! |---|---|
//! | header, its zero padding, payload, protected TLV area | the image hash (hash mismatch, or a structural error first) |
//! | unprotected info, TLV types and lengths | structure: allow list, exact lengths, no duplicates, areas must add up |
//! | SHA256 / SHA384 / SHA512 value | the image hash |
//! | KEYHASH / PUBKEY value | the keyring (unknown key) — only when keys are configured |
//! | signature value (ED25519, ECDSA_SIG, RSA*_PSS) | the signature check — only when keys are configured |
//! | anything after the image (erased flash, trailer) | nothing: not part of the image |
//!
//! So with keys configured every single byte of the image matters, for every signature type;
//! without keys, the key and signature values (and dropping them) do not.

use std::sync::OnceLock;

use ecu_sim::image::{
    self, Behaviour, HashAlg, ImageBuilder, ImageError, KeyFormat, KeyKind, Keyring, PrivateKey,
    SignOptions, TLV_ED25519, TLV_INFO_MAGIC, TLV_KEYHASH, TLV_PROT_INFO_MAGIC, TLV_SHA256,
    Version, dev_key, dev_private_key,
};
use proptest::prelude::*;

/// A development key of every signing type (made once: RSA key generation takes a while).
fn every_key() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeyKind::ALL
            .into_iter()
            .filter(|k| *k != KeyKind::X25519)
            .map(|k| dev_private_key(k, "props"))
            .collect()
    })
}

/// A keyring trusting [`every_key`].
fn every_keyring() -> Keyring {
    let mut ring = Keyring::new();
    for k in every_key() {
        ring.add(k.public().unwrap());
    }
    ring
}

/// A key of any signing type, with any hash it pairs with, pure or not, KEYHASH or PUBKEY.
fn any_signer() -> impl Strategy<Value = (&'static PrivateKey, SignOptions)> {
    (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(key, hash, pure, full)| {
            let key = &every_key()[key.index(every_key().len())];
            let pure = pure && key.kind() == KeyKind::Ed25519;
            let hashes = if pure {
                &[HashAlg::Sha512][..]
            } else {
                key.kind().hashes()
            };
            let options = SignOptions {
                hash: Some(hashes[hash.index(hashes.len())]),
                pure,
                key_format: if full {
                    KeyFormat::Full
                } else {
                    KeyFormat::Hash
                },
            };
            (key, options)
        })
}

fn keys() -> Keyring {
    Keyring::new().with_key(dev_key("oem").verifying_key())
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        any::<u32>().prop_map(|confirm_after_ms| Behaviour::Healthy { confirm_after_ms }),
        Just(Behaviour::CrashOnBoot),
        any::<u32>().prop_map(|watchdog_ms| Behaviour::Hang { watchdog_ms }),
        Just(Behaviour::NeverConfirm),
        Just(Behaviour::NoDiagnostics),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    (any::<u8>(), any::<u8>(), any::<u16>(), any::<u32>()).prop_map(
        |(major, minor, revision, build)| Version {
            major,
            minor,
            revision,
            build,
        },
    )
}

/// A builder with random header size, payload, counter and behaviour.
fn builder() -> impl Strategy<Value = ImageBuilder> {
    (
        version(),
        proptest::collection::vec(any::<u8>(), 0..300),
        prop_oneof![Just(32u16), Just(0x200), 32u16..0x120],
        proptest::option::of(any::<u32>()),
        proptest::option::of(behaviour()),
    )
        .prop_map(|(version, payload, header, counter, behaviour)| {
            let mut b = ImageBuilder::new(version, payload).header_size(header);
            if let Some(c) = counter {
                b = b.security_counter(c);
            }
            if let Some(x) = behaviour {
                b = b.behaviour(x);
            }
            b
        })
}

fn signed(b: &ImageBuilder) -> Vec<u8> {
    b.sign(&dev_key("oem"))
}

#[derive(Debug, PartialEq, Eq)]
enum Region {
    /// Header area, payload, protected TLV area.
    Hashed,
    /// The SHA256 TLV's value.
    HashValue,
    /// A KEYHASH or ED25519 value.
    SignatureValue,
    /// Unprotected info and TLV headers.
    UnprotectedStructure,
}

/// Which part of the valid image `img` byte `at` is in.
fn region(img: &[u8], at: usize) -> Region {
    let parsed = image::parse(img).unwrap();
    if at < parsed.hashed.len() {
        return Region::Hashed;
    }
    for t in parsed.tlvs().filter(|t| !t.protected) {
        if (t.offset + 4..t.offset + 4 + t.value.len()).contains(&at) {
            return match t.kind {
                TLV_SHA256 => Region::HashValue,
                TLV_KEYHASH | TLV_ED25519 => Region::SignatureValue,
                _ => Region::UnprotectedStructure,
            };
        }
    }
    Region::UnprotectedStructure
}

/// A header with the given sizes, then TLV infos at the places it points to (so the parser
/// gets past the header), then arbitrary bytes in the areas.
fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    (
        32u16..48,
        0u32..48,
        prop_oneof![Just(0u16), 0u16..64],
        0u16..96,
        proptest::collection::vec(any::<u8>(), 0..160),
        any::<bool>(),
    )
        .prop_map(|(hdr, img, prot, unprot, tail, honest)| {
            let mut b =
                ImageBuilder::new(Version::new(1, 0, 0), vec![]).build_unsigned()[..32].to_vec();
            b[8..10].copy_from_slice(&hdr.to_le_bytes());
            b[10..12].copy_from_slice(&prot.to_le_bytes());
            b[12..16].copy_from_slice(&img.to_le_bytes());
            b.resize(usize::from(hdr) + img as usize, 0x5a);
            if prot > 0 {
                b.extend_from_slice(&TLV_PROT_INFO_MAGIC.to_le_bytes());
                let claimed = if honest { prot } else { prot ^ 4 };
                b.extend_from_slice(&claimed.to_le_bytes());
                let entries = usize::from(prot).saturating_sub(4).min(tail.len());
                b.extend_from_slice(&tail[..entries]);
            }
            b.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
            b.extend_from_slice(&unprot.to_le_bytes());
            b.extend_from_slice(&tail);
            b
        })
}

/// What a successful parse promises, whatever the input.
fn check_parse_invariants(bytes: &[u8]) {
    if let Ok(p) = image::parse(bytes) {
        assert!(p.total_size <= bytes.len());
        assert!(p.hashed.len() < p.total_size);
        assert_eq!(
            p.hashed.len(),
            usize::from(p.header.hdr_size)
                + p.header.img_size as usize
                + usize::from(p.header.protect_tlv_size)
        );
        assert_eq!(p.payload.len(), p.header.img_size as usize);
        for t in p.tlvs() {
            assert!(t.offset + 4 + t.value.len() <= p.total_size);
            assert_eq!(t.protected, t.offset < p.hashed.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_parse_invariants(&bytes);
        let _ = image::verify(&bytes, &keys(), 0);
        let _ = image::verify(&bytes, &Keyring::new(), 0);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_magic_never_panic(
        fields in proptest::collection::vec(any::<u8>(), 28),
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = 0x96f3_b83d_u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&fields);
        bytes.extend_from_slice(&tail);
        check_parse_invariants(&bytes);
        let _ = image::verify(&bytes, &keys(), 0);
    }

    #[test]
    fn near_valid_images_never_panic(bytes in near_valid()) {
        check_parse_invariants(&bytes);
        let _ = image::verify(&bytes, &keys(), 0);
        let _ = image::verify(&bytes, &Keyring::new(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn builder_round_trips(
        b in builder(),
        load_addr in prop_oneof![Just(0u32), any::<u32>()],
        sign in any::<bool>(),
    ) {
        let b = b.load_addr(load_addr);
        let img = if sign { signed(&b) } else { b.build_unsigned() };
        let ring = if sign { keys() } else { Keyring::new() };
        let info = image::verify(&img, &ring, 0).unwrap();
        prop_assert_eq!(info.total_size, img.len());
        prop_assert_eq!(info.signed, sign);
        prop_assert_eq!(info.header.load_addr, load_addr);
        prop_assert_eq!(info.header.flags, if load_addr == 0 { 0 } else { image::IMAGE_F_RAM_LOAD });
        // What the builder was told comes back (read it again through a second builder).
        let parsed = image::parse(&img).unwrap();
        let rebuilt = {
            let mut r = ImageBuilder::new(info.header.version, parsed.payload.to_vec())
                .header_size(info.header.hdr_size)
                .load_addr(load_addr);
            if parsed.find(image::TLV_SEC_CNT, true).is_some() {
                r = r.security_counter(info.security_counter);
            }
            if parsed.find(image::TLV_SIM_BEHAVIOUR, true).is_some() {
                r = r.behaviour(info.behaviour);
            }
            if sign { signed(&r) } else { r.build_unsigned() }
        };
        prop_assert_eq!(rebuilt, img);
    }

    #[test]
    fn mutated_and_truncated_images_never_panic(
        b in builder(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut img = signed(&b);
        for (at, v) in edits {
            let at = at.index(img.len());
            img[at] = v;
        }
        let keep = cut.index(img.len() + 1);
        check_parse_invariants(&img[..keep]);
        let _ = image::verify(&img[..keep], &keys(), 0);
        let _ = image::verify(&img, &keys(), 0);
        let _ = image::verify(&img, &Keyring::new(), 0);
    }

    /// With keys configured, every byte of a signed image is covered.
    #[test]
    fn any_byte_change_in_a_signed_image_is_rejected(
        b in builder(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let img = signed(&b);
        prop_assert!(image::verify(&img, &keys(), 0).is_ok());
        let at = at.index(img.len());
        let mut bad = img.clone();
        bad[at] ^= xor;
        prop_assert!(image::verify(&bad, &keys(), 0).is_err(), "change at {} accepted", at);
    }

    /// Without keys, the hashed bytes and the SHA256 value are still covered, and the
    /// KEYHASH and ED25519 values are not looked at. (Other unprotected bytes are not asserted
    /// on: shrinking the area's size to drop KEYHASH and ED25519 leaves a valid unsigned image.)
    #[test]
    fn without_keys_the_hash_covers_and_signature_values_do_not_matter(
        b in builder(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let img = signed(&b);
        let at = at.index(img.len());
        let mut bad = img.clone();
        bad[at] ^= xor;
        let result = image::verify(&bad, &Keyring::new(), 0);
        match region(&img, at) {
            Region::Hashed | Region::HashValue => {
                prop_assert!(result.is_err(), "change at {} accepted", at);
            }
            Region::SignatureValue => prop_assert!(result.is_ok(), "change at {}: {:?}", at, result),
            Region::UnprotectedStructure => {}
        }
    }

    #[test]
    fn every_prefix_is_truncated(b in builder(), cut in any::<prop::sample::Index>()) {
        let img = signed(&b);
        let keep = cut.index(img.len());
        let result = image::verify(&img[..keep], &keys(), 0);
        prop_assert!(
            matches!(result, Err(ImageError::Truncated { available, .. }) if available == keep),
            "cut at {}: {:?}", keep, result
        );
    }

    #[test]
    fn bytes_after_the_image_never_matter(
        b in builder(),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let img = signed(&b);
        let info = image::verify(&img, &keys(), 0).unwrap();
        let mut slot = img.clone();
        slot.extend_from_slice(&tail);
        prop_assert_eq!(image::verify(&slot, &keys(), 0), Ok(info));
    }

    #[test]
    fn counter_check_is_exact(counter in any::<u32>(), min in any::<u32>()) {
        let img = ImageBuilder::new(Version::new(1, 0, 0), vec![1, 2, 3])
            .security_counter(counter)
            .sign(&dev_key("oem"));
        let r = image::verify(&img, &keys(), min);
        if counter >= min {
            prop_assert_eq!(r.unwrap().security_counter, counter);
        } else {
            prop_assert_eq!(r, Err(ImageError::CounterTooLow { image: counter, required: min }));
        }
    }

    #[test]
    fn versions_print_and_parse_back(v in version()) {
        prop_assert_eq!(v.to_string().parse::<Version>(), Ok(v));
        prop_assert_eq!(format!("{v:#}").parse::<Version>(), Ok(v));
    }

    #[test]
    fn behaviour_values_decode_iff_the_kind_is_known(value in proptest::array::uniform5(any::<u8>()), b in behaviour()) {
        prop_assert_eq!(Behaviour::decode(&b.encode()), Ok(b));
        match Behaviour::decode(&value) {
            Ok(decoded) => {
                prop_assert!(value[0] <= 4);
                prop_assert_eq!(decoded.encode()[0], value[0]);
            }
            Err(e) => prop_assert_eq!(e, ImageError::BadBehaviour { kind: value[0] }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Images of every signature type, hash and key form verify with a keyring of every
    /// type; mutated and truncated, they never panic the verifier, and any single byte changed
    /// is refused.
    #[test]
    fn every_signature_type_round_trips_and_any_change_is_refused(
        b in builder(),
        (key, options) in any_signer(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let ring = every_keyring();
        let img = b.sign_with(key, &options).unwrap();
        let info = image::verify(&img, &ring, 0).unwrap();
        prop_assert_eq!(info.hash_alg, options.hash.unwrap());
        prop_assert_eq!(info.total_size, img.len());

        let at = at.index(img.len());
        let mut bad = img.clone();
        bad[at] ^= xor;
        prop_assert!(image::verify(&bad, &ring, 0).is_err(), "change at {} accepted", at);

        let mut mutated = img.clone();
        for (at, v) in edits {
            let at = at.index(mutated.len());
            mutated[at] = v;
        }
        let keep = cut.index(mutated.len() + 1);
        check_parse_invariants(&mutated[..keep]);
        let _ = image::verify(&mutated[..keep], &ring, 0);
        let _ = image::verify(&mutated, &ring, 0);
        let _ = image::verify(&mutated, &Keyring::new(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_with_keys_of_every_type(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        check_parse_invariants(&bytes);
        let _ = image::verify(&bytes, &every_keyring(), 0);
    }

    /// Arbitrary TLVs of every kind this verifier reads, after a valid hashed part: never a
    /// panic, whatever their values and lengths.
    #[test]
    fn arbitrary_signature_tlvs_never_panic(
        b in builder(),
        tlvs in proptest::collection::vec(
            (
                prop::sample::select(vec![0x01u16, 0x02, 0x10, 0x11, 0x12, 0x20, 0x22, 0x23, 0x24, 0x25]),
                proptest::collection::vec(any::<u8>(), 0..400),
            ),
            0..6,
        ),
        (key, options) in any_signer(),
        keep_hash in any::<bool>(),
    ) {
        // Start from a real signed image's TLVs so that some inputs get to the signature check.
        let img = b.sign_with(key, &options).unwrap();
        let parsed = image::parse(&img).unwrap();
        let hashed = parsed.hashed.to_vec();
        let mut entries: Vec<(u16, Vec<u8>)> = parsed
            .tlvs()
            .filter(|t| !t.protected && (keep_hash || !matches!(t.kind, 0x10..=0x12)))
            .map(|t| (t.kind, t.value.to_vec()))
            .collect();
        entries.extend(tlvs);
        let mut bytes = hashed;
        let mut area = Vec::new();
        for (kind, value) in &entries {
            area.extend_from_slice(&kind.to_le_bytes());
            area.extend_from_slice(&(value.len() as u16).to_le_bytes());
            area.extend_from_slice(value);
        }
        bytes.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&((area.len() + 4) as u16).to_le_bytes());
        bytes.extend_from_slice(&area);
        let _ = image::verify(&bytes, &every_keyring(), 0);
        let _ = image::verify(&bytes, &Keyring::new(), 0);
    }
}

/// Every single-bit flip anywhere in small images, exhaustively: a signed image rejects all
/// of them with keys; without keys it rejects those in the hashed bytes and the SHA256 value
/// and ignores those in the KEYHASH and ED25519 values; an unsigned image rejects all of them.
#[test]
fn every_bit_flip_in_small_images() {
    let images = [
        ImageBuilder::new(Version::new(1, 2, 3), (0..16).collect())
            .header_size(32)
            .security_counter(7)
            .behaviour(Behaviour::Hang { watchdog_ms: 500 }),
        ImageBuilder::new(Version::new(0, 0, 1), vec![]).header_size(40),
        ImageBuilder::new(Version::new(9, 9, 9), vec![0xff; 5]).behaviour(Behaviour::NoDiagnostics),
    ];
    let mut flips = 0;
    for b in &images {
        let img = signed(b);
        let unsigned = b.build_unsigned();
        for at in 0..img.len() {
            let region = region(&img, at);
            for bit in 0..8 {
                flips += 1;
                let mut bad = img.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    image::verify(&bad, &keys(), 0).is_err(),
                    "flip {at}.{bit} ({region:?}) accepted"
                );
                let without_keys = image::verify(&bad, &Keyring::new(), 0);
                match region {
                    Region::Hashed | Region::HashValue => assert!(
                        without_keys.is_err(),
                        "flip {at}.{bit} ({region:?}) accepted without keys"
                    ),
                    Region::SignatureValue => assert!(without_keys.is_ok(), "{without_keys:?}"),
                    Region::UnprotectedStructure => {}
                }
                if let Some(byte) = unsigned.get(at) {
                    let mut bad = unsigned.clone();
                    bad[at] = byte ^ (1 << bit);
                    assert!(
                        image::verify(&bad, &Keyring::new(), 0).is_err(),
                        "unsigned flip {at}.{bit} accepted"
                    );
                }
            }
        }
    }
    assert!(flips > 3000, "{flips}");
}
