//! Benchmark (not a timed test): encrypted images of 256 KiB, per key encryption and AES key
//! size — unwrapping the image's AES key (once per image), decrypting the payload with
//! AES-CTR, and the whole `verify_encrypted` (unwrap, decrypt into a copy, hash, signature).
//!
//! `cargo bench -p ecu-sim --bench decrypt` prints a markdown table; the README quotes it.

use std::hint::black_box;
use std::time::Instant;

use ecu_sim::image::{
    self, AesKeySize, EncKey, EncryptOptions, ImageBuilder, KeyKind, Keyring, KwKey, Version,
    dev_key, dev_private_key,
};
use rand_chacha::rand_core::SeedableRng as _;

const IMAGE: usize = 256 * 1024;

/// Time of one `f()`, in ms: the best mean of batches of 5 over at least a second.
fn time(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut batches = 0;
    while batches < 10 || start.elapsed().as_secs_f64() < 1.0 {
        let batch = Instant::now();
        for _ in 0..5 {
            f();
        }
        best = best.min(batch.elapsed().as_secs_f64() * 1e3 / 5.0);
        batches += 1;
    }
    best
}

fn main() {
    let payload: Vec<u8> = (0..IMAGE).map(|i| (i * 31 % 251) as u8).collect();
    let keys = Keyring::new().with_key(dev_key("bench").verifying_key());
    println!(
        "| key encryption | AES | unwrap the key (ms) | decrypt 256 KiB (ms) | verify_encrypted 256 KiB (ms) |"
    );
    println!("|---|---|---|---|---|");
    let cases: Vec<(EncKey, bool, AesKeySize)> = vec![
        (
            EncKey::from_private(dev_private_key(KeyKind::Rsa2048, "bench")).unwrap(),
            false,
            AesKeySize::Aes128,
        ),
        (
            EncKey::Kw(KwKey::from_bytes(&[7; 16]).unwrap()),
            false,
            AesKeySize::Aes128,
        ),
        (
            EncKey::Kw(KwKey::from_bytes(&[7; 32]).unwrap()),
            false,
            AesKeySize::Aes256,
        ),
        (
            EncKey::from_private(dev_private_key(KeyKind::EcdsaP256, "bench")).unwrap(),
            false,
            AesKeySize::Aes128,
        ),
        (
            EncKey::from_private(dev_private_key(KeyKind::X25519, "bench")).unwrap(),
            false,
            AesKeySize::Aes128,
        ),
        (
            EncKey::from_private(dev_private_key(KeyKind::X25519, "bench")).unwrap(),
            false,
            AesKeySize::Aes256,
        ),
        (
            EncKey::from_private(dev_private_key(KeyKind::X25519, "bench")).unwrap(),
            true,
            AesKeySize::Aes128,
        ),
    ];
    for (key, hmac_sha512, aes) in cases {
        let plain = ImageBuilder::new(Version::new(1, 0, 0), payload.clone())
            .encrypted(aes)
            .sign(&dev_key("bench"));
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let img = image::encrypt_image(
            &plain,
            &key.public(),
            EncryptOptions { hmac_sha512 },
            &mut rng,
        )
        .unwrap();
        let parsed = image::parse(&img).unwrap();
        let tlv = image::EncTlv::of_image(&parsed, key.family()).unwrap();
        let image_key = image::image_key(&parsed, &key).unwrap();
        let unwrap = time(|| {
            black_box(key.unwrap(black_box(&tlv)).unwrap());
        });
        let mut body = parsed.payload.to_vec();
        let decrypt = time(|| image_key.apply_keystream(0, black_box(&mut body)));
        let verify = time(|| {
            black_box(image::verify_encrypted(black_box(&img), &keys, 0, &key).unwrap());
        });
        println!(
            "| {} | {} | {unwrap:.3} | {decrypt:.3} | {verify:.3} |",
            tlv.kind,
            aes.bits()
        );
    }
}
