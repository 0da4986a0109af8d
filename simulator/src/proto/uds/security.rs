//! SecurityAccess (0x27) seed/key algorithm.
//!
//! `key = SHA-256(secret || seed)[0..4]`, with a 4-byte seed. Each level has its own secret:
//!
//! | level | requestSeed / sendKey | unlocks | default secret (ASCII) |
//! |---|---|---|---|
//! | 1 | `27 01` / `27 02` | programming: erase, download, check routines | `ecu-sim level 1 secret` |
//! | 3 | `27 03` / `27 04` | extended: WriteDataByIdentifier | `ecu-sim level 3 secret` |
//!
//! Python, for tools nobody here wrote:
//! `hashlib.sha256(b"ecu-sim level 1 secret" + seed).digest()[:4]`.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Level that unlocks programming (erase, download, routines).
pub const LEVEL_PROGRAMMING: u8 = 0x01;
/// Level that unlocks WriteDataByIdentifier in the extended session.
pub const LEVEL_EXTENDED: u8 = 0x03;

/// The key for `seed` at a level with `secret`.
pub fn compute_key(secret: &[u8], seed: &[u8]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(seed)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The documented default secrets, by level (the requestSeed sub-function).
pub fn default_secrets() -> BTreeMap<u8, Vec<u8>> {
    BTreeMap::from([
        (LEVEL_PROGRAMMING, b"ecu-sim level 1 secret".to_vec()),
        (LEVEL_EXTENDED, b"ecu-sim level 3 secret".to_vec()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn documented_key() {
        // python3 -c 'import hashlib; print(hashlib.sha256(b"ecu-sim level 1 secret" + bytes.fromhex("11223344")).hexdigest()[:8])'
        let secrets = default_secrets();
        let key = compute_key(&secrets[&LEVEL_PROGRAMMING], &hex!("11 22 33 44"));
        assert_eq!(key, hex!("04 9a aa 65"));
        let key = compute_key(&secrets[&LEVEL_PROGRAMMING], &hex!("3a 9c 51 e2"));
        assert_eq!(key, hex!("98 3d a0 38"), "the README's example");
        assert_ne!(
            key,
            compute_key(&secrets[&LEVEL_EXTENDED], &hex!("3a 9c 51 e2"))
        );
    }
}
