//! ECIES (P-256 and X25519, MCUboot's HKDF/HMAC layout) and the AES-CTR keystream.

use super::*;
use sha2::{Sha256, Sha512};

/// HKDF (no salt, MCUboot's info) of the shared secret into the AES key and the MAC key.
pub(super) fn ecies_okm(kind: EncTlvKind, aes: AesKeySize, shared: &[u8]) -> Vec<u8> {
    let mut okm = vec![0u8; aes.key_len() + ecies_tag_len(kind)];
    let done = if kind == EncTlvKind::X25519Sha512 {
        hkdf::Hkdf::<Sha512>::new(None, shared).expand(ECIES_INFO, &mut okm)
    } else {
        hkdf::Hkdf::<Sha256>::new(None, shared).expand(ECIES_INFO, &mut okm)
    };
    done.expect("at most 96 bytes of HKDF output");
    okm
}

pub(super) fn ecies_tag_len(kind: EncTlvKind) -> usize {
    if kind == EncTlvKind::X25519Sha512 {
        64
    } else {
        32
    }
}

/// The HMAC tag of `data` under `key`, SHA-512 for ENC_X25519_SHA512.
pub(super) fn ecies_tag(kind: EncTlvKind, key: &[u8], data: &[u8]) -> Vec<u8> {
    if kind == EncTlvKind::X25519Sha512 {
        let mut mac = <hmac::Hmac<Sha512> as hmac::Mac>::new_from_slice(key)
            .expect("hmac takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    } else {
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
            .expect("hmac takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

/// ECIES open: `rest` is tag ‖ wrapped key (lengths checked by [`EncTlv::new`]).
pub(super) fn ecies_open(
    kind: EncTlvKind,
    aes: AesKeySize,
    shared: &[u8],
    rest: &[u8],
) -> Result<ImageKey, EncError> {
    let okm = ecies_okm(kind, aes, shared);
    let (tag, wrapped) = rest.split_at(ecies_tag_len(kind));
    let (aes_key, mac_key) = okm.split_at(aes.key_len());
    let expected = ecies_tag(kind, mac_key, wrapped);
    // Constant time, as MCUboot's bootutil_constant_time_compare.
    let diff = expected
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(EncError::UnwrapFailed {
            tlv: kind,
            reason: UnwrapFailure::HmacMismatch,
        });
    }
    let mut plain = [0u8; 32];
    let plain = &mut plain[..aes.key_len()];
    plain.copy_from_slice(wrapped);
    ctr_xor(aes_key, 0, plain);
    ImageKey::from_bytes(plain)
}

/// ECIES seal: ephemeral point ‖ tag ‖ wrapped key.
pub(super) fn ecies_seal(kind: EncTlvKind, point: &[u8], shared: &[u8], key: &ImageKey) -> Vec<u8> {
    let okm = ecies_okm(kind, key.size, shared);
    let (aes_key, mac_key) = okm.split_at(key.size.key_len());
    let mut wrapped = key.as_bytes().to_vec();
    ctr_xor(aes_key, 0, &mut wrapped);
    let tag = ecies_tag(kind, mac_key, &wrapped);
    let mut out = Vec::with_capacity(point.len() + tag.len() + wrapped.len());
    out.extend_from_slice(point);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&wrapped);
    out
}

/// AES-CTR keystream (16- or 32-byte `key`, counter block 0 at stream offset 0) XORed into
/// `buf`, which starts `offset` bytes into the stream.
pub(super) fn ctr_xor(key: &[u8], offset: u64, buf: &mut [u8]) {
    let iv = [0u8; 16];
    match key.len() {
        16 => {
            let mut c = ctr::Ctr128BE::<aes::Aes128>::new(key.into(), &iv.into());
            c.seek(offset);
            c.apply_keystream(buf);
        }
        _ => {
            let mut c = ctr::Ctr128BE::<aes::Aes256>::new(key.into(), &iv.into());
            c.seek(offset);
            c.apply_keystream(buf);
        }
    }
}
