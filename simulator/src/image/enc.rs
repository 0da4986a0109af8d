//! Encrypted images: the ENC TLV, the ECU's decryption key, the image's AES key and AES-CTR
//! over the payload — MCUboot's `encrypted.c`, sans-IO.
//!
//! An encrypted image (`imgtool sign --encrypt KEY [--encrypt-keylen 256] [--hmac-sha 512]`)
//! is an ordinary image whose **payload alone** is AES-CTR encrypted with a random AES key;
//! header, protected TLVs and the unprotected TLVs stay plain. The header says so (flag
//! [`IMAGE_F_ENCRYPTED_AES128`] `0x04` or [`IMAGE_F_ENCRYPTED_AES256`] `0x08`), and one
//! unprotected ENC TLV carries the AES key wrapped for the ECU's key. The image hash and the
//! signature are computed over the **plaintext** (imgtool hashes before it encrypts; MCUboot's
//! `bootutil_img_hash` decrypts each chunk of the payload before hashing it when the image is
//! in the secondary slot), so [`verify_encrypted`] decrypts and then runs [`verify`].
//!
//! | TLV | type | value | the ECU's key |
//! |---|---|---|---|
//! | ENC_RSA2048 | [`TLV_ENC_RSA2048`] `0x30` | 256 bytes: RSA-OAEP (SHA-256, MGF1-SHA-256, no label) of the AES key | RSA-2048 private key |
//! | ENC_KW | [`TLV_ENC_KW`] `0x31` | 24 / 40 bytes: AES key wrap (RFC 3394) of the AES key; the key-encryption key is as long as the AES key | 16 / 32 raw bytes (MCUboot's `enc-aes128kw.b64`, base64) |
//! | ENC_EC256 | [`TLV_ENC_EC256`] `0x32` | 113 / 129 bytes: ECIES-P256, below; the ephemeral key an uncompressed SEC1 point (65) | P-256 private key (`imgtool keygen -t ecdsa-p256`) |
//! | ENC_X25519 | [`TLV_ENC_X25519`] `0x33` | 80 / 96 bytes: ECIES-X25519, below; the ephemeral key 32 raw bytes | X25519 private key (`imgtool keygen -t x25519`) |
//! | ENC_X25519_SHA512 | [`TLV_ENC_X25519_SHA512`] `0x34` | 112 / 128 bytes: the same with HKDF-SHA512 and HMAC-SHA512 (imgtool `--hmac-sha 512`) | X25519 private key |
//!
//! ECIES (imgtool's `ecies_hkdf`, MCUboot's `boot_decrypt_key`), value = ephemeral public key
//! ‖ tag ‖ wrapped key:
//!
//! | step | what |
//! |---|---|
//! | 1 | `shared` = ECDH(ECU key, ephemeral key): the 32-byte x coordinate (P-256) or X25519 output |
//! | 2 | `okm` = HKDF-SHA256 (SHA512 for `0x34`), no salt, info `"MCUBoot_ECIES_v1"`, length AES key size + tag size (32; 64 for `0x34`) |
//! | 3 | tag = HMAC(`okm[key size..]`, wrapped key): checked in constant time before anything else |
//! | 4 | AES key = AES-CTR(`okm[..key size]`, counter 0) of the wrapped key |
//!
//! The payload's keystream: AES-CTR with a 128-bit big-endian counter block starting at zero
//! at the first payload byte (imgtool's nonce 0; MCUboot's `boot_enc_decrypt` puts the
//! block index `offset / 16` in the low 32 bits), so any range of the payload can be
//! decrypted or encrypted on its own given its offset in the payload
//! ([`ImageKey::apply_keystream`]): sector by sector when installing, and again when an
//! image moved out of the primary slot is re-encrypted. imgtool pads an encrypted payload with
//! zeros to a multiple of 16 bytes; CTR itself needs no padding.
//!
//! Which slot holds ciphertext is the bootloader's business (MCUboot: an image with an
//! encryption flag is encrypted in the secondary slot, plain in the primary one, its header
//! and ENC TLV unchanged): [`verify`] checks an image as plaintext, with the ENC TLVs allowed
//! in its unprotected area; [`verify_encrypted`] decrypts it first.
//!
//! | function | for |
//! |---|---|
//! | [`image_key`] | the image's [`ImageKey`], unwrapped with the ECU's [`EncKey`] (the bootloader, once per image; MCUboot keeps it in the trailer) |
//! | [`ImageKey::apply_keystream`] | decrypt or encrypt any payload range in place |
//! | [`decrypt_image`], [`verify_encrypted`] | a whole image at once |
//! | [`encrypt_image`] | our encryptor: an image built with [`ImageBuilder::encrypted`] (flags set, payload padded, hashed as plaintext) gets its ENC TLV and its payload encrypted |
//!
//! Every failure is a named [`EncError`] (decrypting) or [`EncKeyError`] (loading a key).

use aes::cipher::{KeyIvInit as _, StreamCipher as _, StreamCipherSeek as _};
use hmac::Mac as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use pkcs8::der::Decode as _;
use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts as _;

use super::*;

mod ecies;
mod keys;

use ecies::*;
pub use keys::{EncKey, EncPublicKey, KwKey};

/// Header flag: the payload is encrypted with AES-128-CTR.
pub const IMAGE_F_ENCRYPTED_AES128: u32 = 0x04;
/// Header flag: the payload is encrypted with AES-256-CTR.
pub const IMAGE_F_ENCRYPTED_AES256: u32 = 0x08;
/// The AES key, RSA-OAEP-2048 encrypted.
pub const TLV_ENC_RSA2048: u16 = 0x30;
/// The AES key, AES key wrapped (RFC 3394).
pub const TLV_ENC_KW: u16 = 0x31;
/// The AES key, ECIES-P256 encrypted.
pub const TLV_ENC_EC256: u16 = 0x32;
/// The AES key, ECIES-X25519 encrypted (HKDF and HMAC with SHA-256).
pub const TLV_ENC_X25519: u16 = 0x33;
/// The AES key, ECIES-X25519 encrypted with HKDF and HMAC SHA-512.
pub const TLV_ENC_X25519_SHA512: u16 = 0x34;

/// The HKDF info string of MCUboot's ECIES.
const ECIES_INFO: &[u8] = b"MCUBoot_ECIES_v1";
/// An uncompressed SEC1 P-256 point.
const P256_POINT_LEN: usize = 65;
/// An X25519 public key.
const X25519_LEN: usize = 32;
/// RSA-2048 ciphertext.
const RSA2048_LEN: usize = 256;
/// What AES key wrap adds.
const KW_OVERHEAD: usize = 8;

/// AES-128 or AES-256: the header flag and the AES key's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AesKeySize {
    /// Flag `0x04`, 16-byte key (imgtool's default `--encrypt-keylen 128`).
    Aes128,
    /// Flag `0x08`, 32-byte key (`--encrypt-keylen 256`).
    Aes256,
}

impl AesKeySize {
    pub const ALL: [AesKeySize; 2] = [AesKeySize::Aes128, AesKeySize::Aes256];

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            AesKeySize::Aes128 => 16,
            AesKeySize::Aes256 => 32,
        }
    }

    /// `128` or `256`: imgtool's `--encrypt-keylen`.
    pub const fn bits(self) -> u16 {
        match self {
            AesKeySize::Aes128 => 128,
            AesKeySize::Aes256 => 256,
        }
    }

    /// The header flag.
    pub const fn flag(self) -> u32 {
        match self {
            AesKeySize::Aes128 => IMAGE_F_ENCRYPTED_AES128,
            AesKeySize::Aes256 => IMAGE_F_ENCRYPTED_AES256,
        }
    }

    /// What the header's flags say: `None` for an image that is not encrypted.
    pub fn from_flags(flags: u32) -> Result<Option<AesKeySize>, EncError> {
        match (
            flags & IMAGE_F_ENCRYPTED_AES128 != 0,
            flags & IMAGE_F_ENCRYPTED_AES256 != 0,
        ) {
            (false, false) => Ok(None),
            (true, false) => Ok(Some(AesKeySize::Aes128)),
            (false, true) => Ok(Some(AesKeySize::Aes256)),
            (true, true) => Err(EncError::BothAesFlags),
        }
    }
}

impl fmt::Display for AesKeySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AES-{}", self.bits())
    }
}

/// How an image's AES key is wrapped: the ENC TLV's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EncTlvKind {
    /// `0x30`, RSA-OAEP.
    Rsa2048,
    /// `0x31`, AES key wrap.
    Kw,
    /// `0x32`, ECIES-P256.
    Ec256,
    /// `0x33`, ECIES-X25519 with SHA-256.
    X25519,
    /// `0x34`, ECIES-X25519 with SHA-512.
    X25519Sha512,
}

impl EncTlvKind {
    pub const ALL: [EncTlvKind; 5] = [
        EncTlvKind::Rsa2048,
        EncTlvKind::Kw,
        EncTlvKind::Ec256,
        EncTlvKind::X25519,
        EncTlvKind::X25519Sha512,
    ];

    pub const fn tlv(self) -> u16 {
        match self {
            EncTlvKind::Rsa2048 => TLV_ENC_RSA2048,
            EncTlvKind::Kw => TLV_ENC_KW,
            EncTlvKind::Ec256 => TLV_ENC_EC256,
            EncTlvKind::X25519 => TLV_ENC_X25519,
            EncTlvKind::X25519Sha512 => TLV_ENC_X25519_SHA512,
        }
    }

    pub const fn from_tlv(tlv: u16) -> Option<EncTlvKind> {
        Some(match tlv {
            TLV_ENC_RSA2048 => EncTlvKind::Rsa2048,
            TLV_ENC_KW => EncTlvKind::Kw,
            TLV_ENC_EC256 => EncTlvKind::Ec256,
            TLV_ENC_X25519 => EncTlvKind::X25519,
            TLV_ENC_X25519_SHA512 => EncTlvKind::X25519Sha512,
            _ => return None,
        })
    }

    /// The TLV value's length for an image key of `aes`.
    pub const fn value_len(self, aes: AesKeySize) -> usize {
        match self {
            EncTlvKind::Rsa2048 => RSA2048_LEN,
            EncTlvKind::Kw => aes.key_len() + KW_OVERHEAD,
            EncTlvKind::Ec256 => P256_POINT_LEN + 32 + aes.key_len(),
            EncTlvKind::X25519 => X25519_LEN + 32 + aes.key_len(),
            EncTlvKind::X25519Sha512 => X25519_LEN + 64 + aes.key_len(),
        }
    }

    /// The kind of key that unwraps it.
    pub const fn key(self) -> EncKeyFamily {
        match self {
            EncTlvKind::Rsa2048 => EncKeyFamily::Rsa2048,
            EncTlvKind::Kw => EncKeyFamily::AesKw,
            EncTlvKind::Ec256 => EncKeyFamily::EcP256,
            EncTlvKind::X25519 | EncTlvKind::X25519Sha512 => EncKeyFamily::X25519,
        }
    }
}

impl fmt::Display for EncTlvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            EncTlvKind::Rsa2048 => "ENC_RSA2048",
            EncTlvKind::Kw => "ENC_KW",
            EncTlvKind::Ec256 => "ENC_EC256",
            EncTlvKind::X25519 => "ENC_X25519",
            EncTlvKind::X25519Sha512 => "ENC_X25519_SHA512",
        };
        write!(f, "{name} (0x{:02x})", self.tlv())
    }
}

/// The kind of an encryption key, whatever its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EncKeyFamily {
    Rsa2048,
    /// An AES key-encryption key (16 or 32 bytes).
    AesKw,
    EcP256,
    X25519,
}

impl EncKeyFamily {
    /// The ENC TLVs this key unwraps.
    pub const fn tlvs(self) -> &'static [EncTlvKind] {
        match self {
            EncKeyFamily::Rsa2048 => &[EncTlvKind::Rsa2048],
            EncKeyFamily::AesKw => &[EncTlvKind::Kw],
            EncKeyFamily::EcP256 => &[EncTlvKind::Ec256],
            EncKeyFamily::X25519 => &[EncTlvKind::X25519, EncTlvKind::X25519Sha512],
        }
    }

    /// "an RSA-2048 key", ...: for messages.
    pub const fn described(self) -> &'static str {
        match self {
            EncKeyFamily::Rsa2048 => "an RSA-2048 key",
            EncKeyFamily::AesKw => "an AES key-encryption key",
            EncKeyFamily::EcP256 => "an EC P-256 key",
            EncKeyFamily::X25519 => "an X25519 key",
        }
    }
}

impl fmt::Display for EncKeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.described())
    }
}

/// Why unwrapping the image's AES key failed: the key is not the one the image was encrypted
/// for, or the TLV was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwrapFailure {
    /// ECIES: the HMAC tag over the wrapped key does not match.
    HmacMismatch,
    /// RSA: the OAEP padding does not decode.
    OaepDecode,
    /// AES-KW: the RFC 3394 integrity check failed.
    KwIntegrity,
    /// ECIES-P256: the ephemeral key is no point on the curve.
    BadEphemeralKey,
    /// ECIES-X25519: the ephemeral key is of low order (the shared secret is all zeros).
    LowOrderPoint,
    /// RSA: the OAEP plaintext is not as long as the header's AES key.
    KeyLength { len: usize },
}

impl fmt::Display for UnwrapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnwrapFailure::HmacMismatch => f.write_str("the ECIES HMAC tag does not match"),
            UnwrapFailure::OaepDecode => f.write_str("the RSA-OAEP padding does not decode"),
            UnwrapFailure::KwIntegrity => f.write_str("the AES key wrap integrity check failed"),
            UnwrapFailure::BadEphemeralKey => f.write_str("the ephemeral key is not a P-256 point"),
            UnwrapFailure::LowOrderPoint => f.write_str("the ephemeral X25519 key is of low order"),
            UnwrapFailure::KeyLength { len } => {
                write!(f, "the RSA-OAEP plaintext is {len} bytes")
            }
        }
    }
}

/// What is wrong with an encrypted image, or with decrypting it with a given key.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncError {
    #[error("the image is not encrypted (header flags have neither 0x04 nor 0x08)")]
    NotEncrypted,
    #[error("header flags say both AES-128 (0x04) and AES-256 (0x08)")]
    BothAesFlags,
    #[error(
        "the header says the image is encrypted but it has no ENC tlv ({} takes {})",
        .key.described(),
        tlv_list(.key.tlvs())
    )]
    MissingEncTlv { key: EncKeyFamily },
    #[error("the image's AES key is wrapped in {found}, which {} cannot unwrap (it takes {})",
        .key.described(),
        tlv_list(.key.tlvs())
    )]
    WrongKeyType {
        found: EncTlvKind,
        key: EncKeyFamily,
    },
    #[error("{tlv} appears more than once")]
    DuplicateEncTlv { tlv: EncTlvKind },
    #[error("{tlv} has length {len} (expected {expected} for {aes})")]
    BadEncTlvLength {
        tlv: EncTlvKind,
        len: usize,
        expected: usize,
        aes: AesKeySize,
    },
    #[error(
        "an AES-KW key of {kek} bytes wraps no {image} key (MCUboot's key-encryption key is as long as the image key)"
    )]
    KwKeySize { kek: usize, image: AesKeySize },
    #[error(
        "unwrapping the image's AES key from {tlv} failed: {reason} (not the key the image was encrypted for, or a changed tlv)"
    )]
    UnwrapFailed {
        tlv: EncTlvKind,
        reason: UnwrapFailure,
    },
    #[error("an image AES key is 16 or 32 bytes, not {len}")]
    BadImageKeyLength { len: usize },
    #[error("HMAC-SHA512 (ENC_X25519_SHA512) needs an X25519 key, not {}", .key.described())]
    Sha512NotX25519 { key: EncKeyFamily },
    #[error("the image already has an ENC tlv ({tlv})")]
    AlreadyEncrypted { tlv: EncTlvKind },
    #[error("the unprotected tlv area would exceed 64 KiB")]
    AreaTooLarge,
    #[error(
        "the image is encrypted ({aes}) and the ecu has no decryption key (ecu-sim --enc-key, scenario ecu.enc_key)"
    )]
    NoDecryptionKey { aes: AesKeySize },
    #[error(
        "an encrypted image cannot run in place (direct-xip): mcuboot decrypts an image only while copying it into the primary slot (swap, overwrite) or into ram (ram-load)"
    )]
    RunsInPlace,
    #[error(
        "the running image is encrypted and its key cannot be unwrapped ({reason}): a swap could not store it encrypted in the secondary slot for a revert"
    )]
    RunningImageKey { reason: String },
}

fn tlv_list(tlvs: &[EncTlvKind]) -> String {
    tlvs.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Why a key file cannot be an image encryption key.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncKeyError {
    /// The PEM or DER itself (see [`ImageError`]'s key variants).
    #[error(transparent)]
    Key(ImageError),
    #[error(
        "{} encrypts no images (MCUboot wraps image keys for RSA-2048, EC P-256, X25519 and AES-KW keys)",
        .found.described()
    )]
    NotAnEncryptionKey { found: KeyKind },
    #[error("an RSA key of {bits} bits: MCUboot's ENC_RSA2048 takes RSA-2048 keys")]
    RsaSize { bits: usize },
    #[error("a public key: decrypting needs the private key (what imgtool keygen writes)")]
    PublicKeyOnly,
    #[error(
        "not a PEM key nor an AES-KW key (16 or 32 bytes, raw or base64 as MCUboot's enc-aes128kw.b64): {len} bytes"
    )]
    BadKwKey { len: usize },
}

impl From<ImageError> for EncKeyError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::NotAPrivateKey => EncKeyError::PublicKeyOnly,
            ImageError::NotASigningKey { found } => EncKeyError::NotAnEncryptionKey { found },
            e => EncKeyError::Key(e),
        }
    }
}

/// An image's AES key (what MCUboot keeps in the trailer, per slot, while it swaps).
#[derive(Clone, PartialEq, Eq)]
pub struct ImageKey {
    bytes: [u8; 32],
    size: AesKeySize,
}

/// Only the size: key material stays out of logs.
impl fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageKey({})", self.size)
    }
}

impl ImageKey {
    /// A fresh random key, as imgtool draws one for every image.
    pub fn generate(size: AesKeySize, rng: &mut (impl RngCore + CryptoRng)) -> ImageKey {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes[..size.key_len()]);
        ImageKey { bytes, size }
    }

    /// 16 or 32 bytes (from a trailer).
    pub fn from_bytes(bytes: &[u8]) -> Result<ImageKey, EncError> {
        let size = match bytes.len() {
            16 => AesKeySize::Aes128,
            32 => AesKeySize::Aes256,
            len => return Err(EncError::BadImageKeyLength { len }),
        };
        let mut b = [0u8; 32];
        b[..bytes.len()].copy_from_slice(bytes);
        Ok(ImageKey { bytes: b, size })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.size.key_len()]
    }

    pub fn size(&self) -> AesKeySize {
        self.size
    }

    /// Decrypt or encrypt (the same XOR) `buf` in place: the bytes at `payload_offset` and
    /// after in the image's payload (offset 0 is the first byte after the header area). Any
    /// offset and length: a sector at a time, not aligned to 16.
    pub fn apply_keystream(&self, payload_offset: u64, buf: &mut [u8]) {
        ctr_xor(self.as_bytes(), payload_offset, buf);
    }
}

/// An image's ENC TLV, its length checked against the header's AES key size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncTlv<'a> {
    pub kind: EncTlvKind,
    pub aes: AesKeySize,
    pub value: &'a [u8],
}

impl<'a> EncTlv<'a> {
    /// A TLV value (from an image, or a trailer that saves the TLV rather than the key:
    /// MCUboot's `MCUBOOT_SWAP_SAVE_ENCTLV`).
    pub fn new(kind: EncTlvKind, aes: AesKeySize, value: &'a [u8]) -> Result<Self, EncError> {
        let expected = kind.value_len(aes);
        if value.len() != expected {
            return Err(EncError::BadEncTlvLength {
                tlv: kind,
                len: value.len(),
                expected,
                aes,
            });
        }
        Ok(EncTlv { kind, aes, value })
    }

    /// The ENC TLV of `image` that a key of `family` unwraps. Errors: the image is not
    /// encrypted or says both sizes; it has no ENC TLV; only ENC TLVs for other keys
    /// ([`EncError::WrongKeyType`]); two of this key's; a value of the wrong length.
    pub fn of_image(image: &ParsedImage<'a>, family: EncKeyFamily) -> Result<Self, EncError> {
        let aes = AesKeySize::from_flags(image.header.flags)?.ok_or(EncError::NotEncrypted)?;
        let mut mine: Option<(EncTlvKind, &'a [u8])> = None;
        let mut other = None;
        for tlv in image.tlvs() {
            let Some(kind) = EncTlvKind::from_tlv(tlv.kind) else {
                continue;
            };
            if !family.tlvs().contains(&kind) {
                other.get_or_insert(kind);
            } else if mine.replace((kind, tlv.value)).is_some() {
                return Err(EncError::DuplicateEncTlv { tlv: kind });
            }
        }
        match (mine, other) {
            (Some((kind, value)), _) => Self::new(kind, aes, value),
            (None, Some(found)) => Err(EncError::WrongKeyType { found, key: family }),
            (None, None) => Err(EncError::MissingEncTlv { key: family }),
        }
    }
}

/// The AES key of an encrypted image, unwrapped with the ECU's key.
pub fn image_key(image: &ParsedImage<'_>, key: &EncKey) -> Result<ImageKey, EncError> {
    key.unwrap(&EncTlv::of_image(image, key.family())?)
}

/// The image (its extent in `bytes`) with the payload decrypted: what MCUboot writes into the
/// primary slot (header and TLVs unchanged, the encryption flag and ENC TLV included).
pub fn decrypt_image(bytes: &[u8], key: &EncKey) -> Result<Vec<u8>, ImageError> {
    let image = parse(bytes)?;
    let aes_key = image_key(&image, key).map_err(ImageError::Encryption)?;
    let mut out = bytes[..image.total_size].to_vec();
    let start = usize::from(image.header.hdr_size);
    let end = start + image.payload.len();
    aes_key.apply_keystream(0, &mut out[start..end]);
    Ok(out)
}

/// [`verify`] of the decrypted image: the hash and the signature are over the plaintext.
/// Decryption errors are [`ImageError::Encryption`]; a changed ciphertext byte decrypts to a
/// changed plaintext byte, [`ImageError::HashMismatch`].
pub fn verify_encrypted(
    bytes: &[u8],
    keys: &Keyring,
    min_security_counter: u32,
    key: &EncKey,
) -> Result<ImageInfo, ImageError> {
    verify(&decrypt_image(bytes, key)?, keys, min_security_counter)
}

/// Options of [`encrypt_image`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncryptOptions {
    /// HKDF and HMAC with SHA-512 (ENC_X25519_SHA512; imgtool `--hmac-sha 512`).
    pub hmac_sha512: bool,
}

/// Encrypt a plaintext image for `recipient`, as imgtool's `sign --encrypt` does after
/// hashing and signing: a fresh AES key of the size the header's flags say (the image comes
/// from [`ImageBuilder::encrypted`], or imgtool `--clear` without its ENC TLV), wrapped into
/// an ENC TLV appended to the unprotected area, and the payload AES-CTR encrypted.
pub fn encrypt_image(
    bytes: &[u8],
    recipient: &EncPublicKey,
    options: EncryptOptions,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, ImageError> {
    let image = parse(bytes)?;
    let enc = |e| ImageError::Encryption(e);
    let aes = AesKeySize::from_flags(image.header.flags)
        .map_err(enc)?
        .ok_or(enc(EncError::NotEncrypted))?;
    if let Some(tlv) = image.tlvs().find_map(|t| EncTlvKind::from_tlv(t.kind)) {
        return Err(enc(EncError::AlreadyEncrypted { tlv }));
    }
    let key = ImageKey::generate(aes, rng);
    let (kind, value) = recipient
        .wrap(&key, options.hmac_sha512, rng)
        .map_err(enc)?;
    let area_start = image.unprotected_offset();
    let entries = &bytes[area_start + TLV_INFO_SIZE..image.total_size];
    let size = u16::try_from(entries.len() + TLV_INFO_SIZE * 2 + value.len())
        .map_err(|_| enc(EncError::AreaTooLarge))?;
    let mut out = Vec::with_capacity(usize::from(size) + area_start);
    out.extend_from_slice(image.hashed);
    out.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(entries);
    out.extend_from_slice(&kind.tlv().to_le_bytes());
    out.extend_from_slice(&len_u16(&value).to_le_bytes());
    out.extend_from_slice(&value);
    let start = usize::from(image.header.hdr_size);
    key.apply_keystream(0, &mut out[start..start + image.payload.len()]);
    Ok(out)
}
