//! Property tests: the image parser and verifier never panic, and every byte that the hash
//! or the signature covers is protected.

use ecu_sim::image::{self, Behaviour, ImageBuilder, ImageError, Keyring, Version, dev_key};
use proptest::prelude::*;

fn keys() -> Keyring {
    Keyring::new().with_key(dev_key("oem").verifying_key())
}

fn signed(payload_len: usize, header: u16) -> Vec<u8> {
    ImageBuilder::new(
        Version::new(1, 2, 3),
        (0..payload_len).map(|i| i as u8).collect(),
    )
    .header_size(header)
    .security_counter(4)
    .behaviour(Behaviour::NeverConfirm)
    .sign(&dev_key("oem"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = image::parse(&bytes);
        let _ = image::verify(&bytes, &keys(), 0);
        let _ = image::verify(&bytes, &Keyring::new(), 0);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
        hdr_size in any::<u16>(),
        prot in any::<u16>(),
        img_size in any::<u32>(),
    ) {
        let mut bytes = signed(16, 32)[..32].to_vec();
        bytes[8..10].copy_from_slice(&hdr_size.to_le_bytes());
        bytes[10..12].copy_from_slice(&prot.to_le_bytes());
        bytes[12..16].copy_from_slice(&img_size.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = image::parse(&bytes);
        let _ = image::verify(&bytes, &keys(), 0);
    }

    #[test]
    fn mutated_and_truncated_images_never_panic(
        len in 0usize..600,
        header in prop_oneof![Just(32u16), Just(0x200u16)],
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let mut img = signed(len, header);
        for (at, v) in edits {
            let n = img.len();
            img[at % n] = v;
        }
        let keep = cut % (img.len() + 1);
        let _ = image::verify(&img[..keep], &keys(), 0);
        let _ = image::verify(&img, &keys(), 0);
    }

    #[test]
    fn any_flip_in_hashed_bytes_or_signature_is_rejected(
        len in 1usize..600,
        header in prop_oneof![Just(32u16), Just(0x200u16)],
        pick in any::<usize>(),
        bit in 0u8..8,
    ) {
        let img = signed(len, header);
        let parsed = image::parse(&img).unwrap();
        let hashed = parsed.hashed.len();
        let total = parsed.total_size;
        prop_assert!(image::verify(&img, &keys(), 0).is_ok());
        // Everything before the unprotected TLVs is hashed; the last 64 bytes are the signature.
        let candidates: Vec<usize> = (0..hashed).chain(total - 64..total).collect();
        let at = candidates[pick % candidates.len()];
        let mut bad = img.clone();
        bad[at] ^= 1 << bit;
        prop_assert!(image::verify(&bad, &keys(), 0).is_err(), "flip at {} accepted", at);
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
}
