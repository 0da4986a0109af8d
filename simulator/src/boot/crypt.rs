//! Encrypted images in the bootloader (MCUboot's `MCUBOOT_ENC_IMAGES`,
//! `docs/encrypted_images.md`): which slot holds ciphertext, where the keys of a swap are kept,
//! and what each strategy does.
//!
//! An image whose header has an encryption flag (`0x04` AES-128, `0x08` AES-256) is
//! **ciphertext in the secondary slot** and **plaintext in the primary slot**; header, TLVs
//! (its ENC TLV included) and trailer are plain in both. The image hash and signature are over
//! the plaintext (imgtool hashes before it encrypts), so an image in the secondary slot is
//! verified by unwrapping its AES key with the ECU's decryption key and decrypting it
//! ([`image::verify_encrypted`]); an image in the primary slot is verified as it is.
//!
//! | strategy | what the bootloader does with an encrypted image |
//! |---|---|
//! | swap-scratch, swap-move, swap-offset | verify (decrypt, hash, signature); swap: a copy out of the secondary into the primary or the scratch sector decrypts with the secondary image's key, a copy into the secondary encrypts with the primary image's key (its own ENC TLV, unwrapped with the same decryption key), so the image moved out of the primary is stored encrypted again and a revert decrypts it back |
//! | overwrite | verify; copy into the primary decrypting (a power cut restarts the copy: the request and the ciphertext stay in the secondary until the copy is done) |
//! | direct-xip | refuse it ([`image::EncError::RunsInPlace`]): an image runs where it lies, and MCUboot supports encryption only with a copy (or ram-load, not simulated) |
//!
//! A refusal — no decryption key ([`image::EncError::NoDecryptionKey`]), a key of the wrong
//! type, a key the image was not encrypted for (the unwrap fails), a changed ciphertext byte
//! (the plaintext hash does not match) — is an `ImageRejected` event with that reason and the
//! DTC `D0 01 00`; the request is erased and the running image keeps running.
//!
//! ## The keys of a swap
//!
//! A swap needs two AES keys: key 0 for the image in the primary slot when it starts, key 1
//! for the secondary's (MCUboot's `enc_state[0]`, `[1]`). Halfway through a swap neither
//! header may be where it was, so the keys are saved before the first step, as MCUboot saves
//! them (`boot_write_enc_key`): **the plain AES keys** (MCUboot's default; not
//! `MCUBOOT_SWAP_SAVE_ENCTLV`, which saves the wrapped TLV) in the primary trailer's two
//! encryption key fields, key 0 in `enc_keys[0]`, key 1 in `enc_keys[1]` (an AES-128 key fills
//! the first 16 bytes, the rest stays erased).
//!
//! | order | operation | a power cut here resumes by |
//! |---|---|---|
//! | 1 | erase the journal sector, write the start record | no start record: the swap is decided again from the trailers |
//! | 2 | erase the primary trailer | no step recorded: both images are intact (no first step writes over either), so the keys are taken from the headers again and saved again from 2 |
//! | 3 | write each key into its field | as 2 |
//! | 4 | append a *key* record per key (slot, AES size, header size, payload size: [`super::journal`]) | as 2 |
//! | 5 | the steps | reading the keys back from the fields the key records name |
//!
//! At the end of the swap the primary trailer is erased and rebuilt, so the keys do not
//! outlive it. A swap of plain images saves nothing and its operations are what they were.

use crate::flash::{Flash, FlashError};
use crate::image::{self, AesKeySize, EncError, EncKey, ImageError, ImageKey};

use super::journal::KeyRecord;
use super::layout::{Layout, Slot};
use super::loader::{image_base, image_bytes_at};
use super::trailer::SwapType;

/// An image's AES key and where its payload lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadKey {
    pub key: ImageKey,
    /// The header's `hdr_size`: the payload's offset in the image.
    pub hdr_size: u16,
    /// The header's `img_size`: the payload's length.
    pub img_size: u32,
}

impl PayloadKey {
    /// Decrypt or encrypt (the same XOR) the payload bytes in `buf`, which holds the image's
    /// bytes from `image_offset` on (offset 0: the header's first byte); header and TLV bytes
    /// are left as they are.
    pub fn apply(&self, image_offset: u32, buf: &mut [u8]) {
        let start = u64::from(self.hdr_size);
        let end = start + u64::from(self.img_size);
        let from = u64::from(image_offset);
        let lo = from.max(start);
        let hi = (from + buf.len() as u64).min(end);
        if lo < hi {
            let range = (lo - from) as usize..(hi - from) as usize;
            self.key.apply_keystream(lo - start, &mut buf[range]);
        }
    }

    /// The journal record that says this key is saved for `slot`.
    pub fn record(&self, slot: Slot) -> KeyRecord {
        KeyRecord {
            slot,
            aes: self.key.size(),
            hdr_size: self.hdr_size,
            img_size: self.img_size,
        }
    }

    /// Write the key into the primary trailer's field for `slot` (one flash operation).
    pub fn write_field<F: Flash>(
        &self,
        flash: &mut F,
        layout: &Layout,
        slot: Slot,
    ) -> Result<(), FlashError> {
        let (addr, len) = key_field(layout, slot);
        let mut bytes = vec![layout.erased; len as usize];
        let key = self.key.as_bytes();
        bytes[..key.len()].copy_from_slice(key);
        flash.write(addr, &bytes)
    }

    /// Read the key a key record names back from its field.
    pub fn read_field<F: Flash>(
        flash: &F,
        layout: &Layout,
        record: &KeyRecord,
    ) -> Result<PayloadKey, FlashError> {
        let (addr, _) = key_field(layout, record.slot);
        let mut key = vec![0; record.aes.key_len()];
        flash.read(addr, &mut key)?;
        Ok(PayloadKey {
            key: ImageKey::from_bytes(&key).expect("16 or 32 bytes by the record's AES size"),
            hdr_size: record.hdr_size,
            img_size: record.img_size,
        })
    }
}

/// Address and length of the primary trailer's encryption key field for `slot`'s image.
pub fn key_field(layout: &Layout, slot: Slot) -> (u32, u32) {
    let (offset, len) = layout.trailer.enc_keys[usize::from(slot.index())];
    (layout.primary.trailer_offset + offset, len)
}

/// The keys of a swap, by the slot the image was in when the swap started; `None` for an
/// image that is not encrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapKeys(pub [Option<PayloadKey>; 2]);

impl SwapKeys {
    /// Whether neither image is encrypted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    pub fn get(&self, slot: Slot) -> Option<&PayloadKey> {
        self.0[usize::from(slot.index())].as_ref()
    }

    /// The keys of both images as their headers say (at the start of a swap), or the slot
    /// whose encrypted image's key cannot be unwrapped and why.
    pub fn load<F: Flash>(
        flash: &F,
        layout: &Layout,
        enc_key: Option<&EncKey>,
        kind: SwapType,
    ) -> Result<Result<SwapKeys, (Slot, ImageError)>, FlashError> {
        let mut keys = SwapKeys::default();
        for slot in [Slot::Primary, Slot::Secondary] {
            match slot_key(flash, layout, enc_key, slot, kind)? {
                Ok(k) => keys.0[usize::from(slot.index())] = k,
                Err(e) => return Ok(Err((slot, e))),
            }
        }
        Ok(Ok(keys))
    }

    /// The keys saved for a swap in progress, from its key records.
    pub fn restore<F: Flash>(
        flash: &F,
        layout: &Layout,
        records: &[Option<KeyRecord>; 2],
    ) -> Result<SwapKeys, FlashError> {
        let mut keys = SwapKeys::default();
        for (i, r) in records.iter().enumerate() {
            if let Some(r) = r {
                keys.0[i] = Some(PayloadKey::read_field(flash, layout, r)?);
            }
        }
        Ok(keys)
    }
}

/// The key of the image in `slot` for swap `kind` if its header says it is encrypted
/// (`Ok(None)`: it is not, or no image parses there and there is nothing to decrypt). The image
/// a revert puts back from swap-offset's secondary slot is the one the upgrade moved to its
/// spare sector (the staged image's first sector may still hold a stale header when the
/// upgrade moved a single sector).
pub fn slot_key<F: Flash>(
    flash: &F,
    layout: &Layout,
    enc_key: Option<&EncKey>,
    slot: Slot,
    kind: SwapType,
) -> Result<Result<Option<PayloadKey>, ImageError>, FlashError> {
    let spare = layout
        .slot(slot)
        .spare
        .filter(|&(o, _)| o < layout.slot(slot).image_offset());
    let base = match spare {
        Some((o, _)) if kind == SwapType::Revert => o,
        _ => image_base(flash, layout, slot)?,
    };
    let bytes = image_bytes_at(flash, layout, slot, base)?;
    let Ok(parsed) = image::parse(&bytes) else {
        return Ok(Ok(None));
    };
    let aes = match AesKeySize::from_flags(parsed.header.flags) {
        Ok(None) => return Ok(Ok(None)),
        Ok(Some(aes)) => aes,
        Err(e) => return Ok(Err(ImageError::Encryption(e))),
    };
    let Some(enc_key) = enc_key else {
        return Ok(Err(ImageError::Encryption(EncError::NoDecryptionKey {
            aes,
        })));
    };
    Ok(image::image_key(&parsed, enc_key)
        .map(|key| {
            Some(PayloadKey {
                key,
                hdr_size: parsed.header.hdr_size,
                img_size: parsed.header.img_size,
            })
        })
        .map_err(ImageError::Encryption))
}

/// Verify `bytes`, the image in `slot`, as the bootloader does: an encrypted image is
/// ciphertext in the secondary slot of a copying strategy (decrypted first, with `enc_key`),
/// plaintext in the primary, refused in direct-xip.
pub fn verify_image(
    bytes: &[u8],
    layout: &Layout,
    keys: &image::Keyring,
    enc_key: Option<&EncKey>,
    min_counter: u32,
    slot: Slot,
) -> Result<image::ImageInfo, ImageError> {
    let aes = match image::Header::parse(bytes).map(|h| AesKeySize::from_flags(h.flags)) {
        Ok(Ok(Some(aes))) => aes,
        Ok(Err(e)) => return Err(ImageError::Encryption(e)),
        // Not encrypted, or no header: the verifier says what it finds.
        Ok(Ok(None)) | Err(_) => return image::verify(bytes, keys, min_counter),
    };
    if layout.mode == super::BootMode::DirectXip {
        return Err(ImageError::Encryption(EncError::RunsInPlace));
    }
    if slot == Slot::Primary {
        return image::verify(bytes, keys, min_counter);
    }
    let enc_key = enc_key.ok_or(ImageError::Encryption(EncError::NoDecryptionKey { aes }))?;
    image::verify_encrypted(bytes, keys, min_counter, enc_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_touches_only_the_payload_at_its_offset() {
        let key = ImageKey::from_bytes(&[9; 16]).unwrap();
        let k = PayloadKey {
            key: key.clone(),
            hdr_size: 32,
            img_size: 100,
        };
        let image: Vec<u8> = (0..200u8).collect();
        let mut whole = image.clone();
        k.apply(0, &mut whole);
        assert_eq!(whole[..32], image[..32], "header untouched");
        assert_eq!(whole[132..], image[132..], "tlvs untouched");
        let mut payload = image[32..132].to_vec();
        key.apply_keystream(0, &mut payload);
        assert_eq!(whole[32..132], payload[..]);
        // Piecewise, at odd offsets, gives the same bytes.
        let mut pieces = image.clone();
        for (i, chunk) in pieces.chunks_mut(7).enumerate() {
            k.apply(i as u32 * 7, chunk);
        }
        assert_eq!(pieces, whole);
        // And applied twice it is the identity.
        k.apply(0, &mut whole);
        assert_eq!(whole, image);
    }
}
