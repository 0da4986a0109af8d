//! Benchmark (not a timed test): verifying a 256 KiB image, per signature type — parse, hash
//! and signature, as the bootloader does at every boot.
//!
//! `cargo bench -p ecu-sim --bench verify` prints a markdown table; the README quotes it.

use std::hint::black_box;
use std::time::Instant;

use ecu_sim::image::{
    self, HashAlg, ImageBuilder, KeyKind, Keyring, SignOptions, Version, dev_private_key,
};

const IMAGE: usize = 256 * 1024;

/// Time of one `verify`, in ms: the best mean of batches of 5 over at least a second (the
/// best batch is the one other processes on a shared machine disturbed least).
fn time_verify(img: &[u8], keys: &Keyring) -> f64 {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut batches = 0;
    while batches < 10 || start.elapsed().as_secs_f64() < 1.0 {
        let batch = Instant::now();
        for _ in 0..5 {
            black_box(image::verify(black_box(img), keys, 0).unwrap());
        }
        best = best.min(batch.elapsed().as_secs_f64() * 1e3 / 5.0);
        batches += 1;
    }
    best
}

fn main() {
    let payload: Vec<u8> = (0..IMAGE).map(|i| (i * 31 % 251) as u8).collect();
    let builder = ImageBuilder::new(Version::new(1, 0, 0), payload).security_counter(1);
    println!("| signature | image hash | verify 256 KiB (ms) | hash check alone (ms) |");
    println!("|---|---|---|---|");
    let unsigned = builder.build_unsigned();
    let hash_only = time_verify(&unsigned, &Keyring::new());
    for (kind, hash, pure) in [
        (KeyKind::Ed25519, HashAlg::Sha256, false),
        (KeyKind::Ed25519, HashAlg::Sha512, false),
        (KeyKind::Ed25519, HashAlg::Sha512, true),
        (KeyKind::EcdsaP256, HashAlg::Sha256, false),
        (KeyKind::EcdsaP384, HashAlg::Sha384, false),
        (KeyKind::Rsa2048, HashAlg::Sha256, false),
        (KeyKind::Rsa3072, HashAlg::Sha256, false),
    ] {
        let key = dev_private_key(kind, "bench");
        let options = SignOptions {
            hash: Some(hash),
            pure,
            ..SignOptions::default()
        };
        let img = builder.sign_with(&key, &options).unwrap();
        let keys = Keyring::new().with_key(key.public().unwrap());
        let info = image::verify(&img, &keys, 0).unwrap();
        let ms = time_verify(&img, &keys);
        // The hash alone: the same image's hash TLV checked without keys.
        let hashing = time_verify(&img, &Keyring::new());
        println!(
            "| {} | {hash} | {ms:.3} | {hashing:.3} |",
            info.signature.unwrap()
        );
    }
    println!("| none (unsigned) | sha256 | {hash_only:.3} | {hash_only:.3} |");
}
