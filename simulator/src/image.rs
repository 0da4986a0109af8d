//! MCUboot image format: builder, parser and verifier, byte-compatible with MCUboot's `imgtool`.
//!
//! Images signed by `imgtool sign` (2.5.0) with every key type MCUboot verifies — ed25519
//! (over the hash, `--sha 256|512`, or `--pure`), ECDSA P-256, ECDSA P-384, RSA-2048 and
//! RSA-3072 — verify here, with KEYHASH or PUBKEY (`--public-key-format full`) naming the key;
//! images built by [`ImageBuilder`] pass `imgtool verify`, and for ed25519 (deterministic
//! signatures) the two produce the same bytes. The interop tests in
//! `tests/tests/imgtool_interop.rs` and `tests/tests/imgtool_signatures.rs` check both
//! directions against the real tool.
//!
//! ## Layout
//!
//! | part | size | hashed | notes |
//! |---|---|---|---|
//! | header | `hdr_size` (≥ 32) | yes | the 32-byte [`Header`], then padding: `imgtool --pad-header` fills it with the erased value (`-R`, default `0xff`) |
//! | payload | `img_size` | yes | |
//! | protected TLV area | `protect_tlv_size` (0 if none) | yes | info `{u16 0x6908, u16 size incl. info}` + TLVs |
//! | unprotected TLV area | its info's size | no | info `{u16 0x6907, u16 size incl. info}` + TLVs |
//!
//! Everything is little-endian. A TLV is `u16 type`, `u16 len` (value only) and `len` value
//! bytes, with no alignment padding. The protected area exists only when it holds a TLV; its
//! size in the header (`ih_protect_tlv_size`) includes its 4-byte info and must equal the
//! size that info states (MCUboot's `bootutil_tlv_iter_begin` checks the same). Bytes after
//! the unprotected area (erased flash, a swap trailer) are not part of the image and are
//! never read.
//!
//! ## Header
//!
//! | offset | field | type | notes |
//! |---|---|---|---|
//! | 0 | `ih_magic` | u32 | [`IMAGE_MAGIC`] `0x96f3b83d` (bytes `3d b8 f3 96`) |
//! | 4 | `ih_load_addr` | u32 | imgtool `--load-addr`; non-zero also sets [`IMAGE_F_RAM_LOAD`] |
//! | 8 | `ih_hdr_size` | u16 | header area size, ≥ 32 |
//! | 10 | `ih_protect_tlv_size` | u16 | protected TLV area size incl. its info, 0 if none |
//! | 12 | `ih_img_size` | u32 | payload size |
//! | 16 | `ih_flags` | u32 | `IMAGE_F_*` |
//! | 20 | `iv_major`, `iv_minor` | u8, u8 | [`Version`] |
//! | 22 | `iv_revision` | u16 | |
//! | 24 | `iv_build_num` | u32 | |
//! | 28 | `_pad1` | u32 | zero |
//!
//! ## TLVs
//!
//! "The hashed bytes" are header area + payload + protected TLV area (incl. its info); "the
//! digest" is their hash with the image's hash algorithm.
//!
//! | TLV | type | area | value |
//! |---|---|---|---|
//! | KEYHASH | [`TLV_KEYHASH`] `0x01` | unprotected | the signing key's MCUboot bytes ([`PublicKey::mcuboot_bytes`]: DER SubjectPublicKeyInfo for ed25519 and ECDSA, DER PKCS#1 `RSAPublicKey` for RSA — imgtool's `get_public_bytes()`) hashed *with the image's hash algorithm* (32, 48 or 64 bytes) |
//! | PUBKEY | [`TLV_PUBKEY`] `0x02` | unprotected | the MCUboot bytes themselves (imgtool `--public-key-format full`) |
//! | SHA256 | [`TLV_SHA256`] `0x10` | unprotected | SHA-256 of the hashed bytes (32) |
//! | SHA384 | [`TLV_SHA384`] `0x11` | unprotected | SHA-384 (48): imgtool's only hash for ECDSA P-384 |
//! | SHA512 | [`TLV_SHA512`] `0x12` | unprotected | SHA-512 (64): ed25519 `--sha 512`, and `--pure` |
//! | RSA2048_PSS | [`TLV_RSA2048_PSS`] `0x20` | unprotected | 256 bytes: RSASSA-PSS of the SHA-256 digest, MGF1-SHA-256, 32-byte salt |
//! | ECDSA_SIG | [`TLV_ECDSA_SIG`] `0x22` | unprotected | DER `ECDSA-Sig-Value` (≤ 128 bytes; zero padding after it ignored) of the digest: P-256 with SHA-256, P-384 with SHA-384, as the key says |
//! | RSA3072_PSS | [`TLV_RSA3072_PSS`] `0x23` | unprotected | 384 bytes, as RSA2048_PSS with a 3072-bit key |
//! | ED25519 | [`TLV_ED25519`] `0x24` | unprotected | 64 bytes: ed25519 of the digest (SHA-256 or SHA-512), or with SIG_PURE of the hashed bytes themselves |
//! | SIG_PURE | [`TLV_SIG_PURE`] `0x25` | unprotected | one byte `01`: imgtool `--pure`, which also forces SHA512 and a SHA-512 KEYHASH |
//! | SEC_CNT | [`TLV_SEC_CNT`] `0x50` | protected | `u32` security counter (imgtool `--security-counter`) |
//! | simulation | [`TLV_SIM_BEHAVIOUR`] `0x00a5` | protected | [`Behaviour`], 5 bytes (imgtool `--custom-tlv 0xa5 0x…`) |
//!
//! imgtool writes the unprotected area in the order hash, SIG_PURE, KEYHASH/PUBKEY,
//! signature; [`ImageBuilder::sign_with`] does the same. `0x00a5` lies in MCUboot's
//! vendor-reserved ranges (`0xXXa0`–`0xXXff`) and in the range imgtool 2.5.0 accepts for
//! `--custom-tlv` (`0x00a0..=0xfffe`, minus its predefined types); imgtool always places
//! custom TLVs in the protected area, after SEC_CNT.
//!
//! Which hash goes with which signature ([`SignatureKind::hashes`]; MCUboot builds one pair,
//! this verifier accepts each): ed25519 SHA-256 or SHA-512, pure ed25519 SHA-512, ECDSA P-256
//! SHA-256, ECDSA P-384 SHA-384, RSA SHA-256 — what imgtool 2.5.0 signs with a private key.
//!
//! ## Verification ([`verify`])
//!
//! Like MCUboot with key hashes (or PUBKEY), `MCUBOOT_USE_TLV_ALLOW_LIST` and downgrade
//! prevention by security counter, built for every signature type at once:
//!
//! | step | check | error |
//! |---|---|---|
//! | 1 | header magic, `hdr_size` ≥ 32, both TLV areas inside the input and well-formed | [`ImageError::BadMagic`], [`ImageError::BadHeaderSize`], [`ImageError::Truncated`], [`ImageError::BadTlvInfoMagic`], [`ImageError::ProtectedSizeMismatch`], [`ImageError::TlvOverflow`] |
//! | 2 | only the key, hash, signature and SIG_PURE TLVs in the unprotected area; SEC_CNT and the simulation TLV only in the protected one; fixed-length TLVs of their length, signatures of theirs, SIG_PURE `01`, KEYHASH as long as the image hash; one image hash, SIG_PURE, SEC_CNT and simulation TLV at most | [`ImageError::MisplacedTlv`], [`ImageError::BadTlvLength`], [`ImageError::BadSignatureLength`], [`ImageError::BadSigPure`], [`ImageError::KeyHashLength`], [`ImageError::DuplicateTlv`] |
//! | 3 | a hash TLV equal to that hash of the hashed bytes | [`ImageError::MissingHash`], [`ImageError::HashMismatch`] |
//! | 4 | only if the [`Keyring`] is not empty: a KEYHASH or PUBKEY naming a trusted key, followed by a signature TLV of that key's type (pure: ed25519 only), paired with the image hash, decodable, that verifies with it | [`ImageError::MissingSignature`], [`ImageError::UnknownKey`], [`ImageError::UntrustedPubkey`], [`ImageError::WrongKeyType`], [`ImageError::PureNotEd25519`], [`ImageError::HashNotForSignature`], [`ImageError::BadSignatureEncoding`], [`ImageError::BadSignature`] |
//! | 5 | security counter (0 without SEC_CNT) ≥ the required minimum | [`ImageError::CounterTooLow`] |
//! | 6 | simulation TLV kind known | [`ImageError::BadBehaviour`] |
//!
//! Several key + signature pairs may follow each other (MCUboot's multi-signature form):
//! pairs naming unknown keys are skipped, at least one must name a trusted key, and every
//! pair naming a trusted key must verify. Other protected TLVs (imgtool's dependencies, boot
//! record, UUIDs, custom TLVs) are covered by the hash and otherwise ignored. An image
//! without SEC_CNT counts as security counter 0 (an MCUboot with `MCUBOOT_HW_ROLLBACK_PROT`
//! would refuse it). MCUboot built for pure signatures does not check the hash TLV; this
//! verifier checks the one imgtool writes.
//!
//! Encrypted images (`imgtool sign --encrypt`): the `ENC_*` key TLVs (`0x30..=0x34`) are
//! allowed in the unprotected area (MCUboot's allow list), their lengths checked when the key
//! is unwrapped. [`verify`] takes the payload as it is — plaintext, as in MCUboot's primary
//! slot, where an installed image keeps its encryption flag and ENC TLV; the hash and the
//! signature are over the plaintext, so an image still encrypted (the secondary slot) is
//! checked with [`verify_encrypted`], which decrypts it with the ECU's [`EncKey`] first. The
//! `enc` module's docs have the TLVs, the key wraps and the keystream.
//!
//! With every check above, changing any single byte of a signed image (header, padding,
//! payload, either TLV area) makes [`verify`] fail when the keyring is not empty; without keys
//! only the hash protects the image, so key and signature bytes may change unnoticed.
//!
//! Keys ([`PublicKey`], [`PrivateKey`]) load from every PEM imgtool prints or writes
//! (`getpub -e pem`: SubjectPublicKeyInfo for every type; `keygen`: PKCS#8), and from PKCS#1
//! and SEC1; a key the bootloader cannot trust is refused naming what was found
//! ([`ImageError::NotASigningKey`], [`ImageError::UnknownKeyAlgorithm`] with the OID found,
//! [`ImageError::UnsupportedCurve`], [`ImageError::UnsupportedRsaSize`], ...). The maths is
//! RustCrypto's (`rsa`, `p256`, `p384`, `ed25519-dalek`, `x25519-dalek`, `sha2`; for
//! encryption `aes`, `ctr`, `aes-kw`, `hkdf`, `hmac`).
//!
//! | module | what |
//! |---|---|
//! | this one | constants, [`Version`], [`Behaviour`], [`ImageError`] |
//! | `parse` | [`Header`], TLV areas, [`parse`] |
//! | `keys` | [`HashAlg`], [`KeyKind`], [`PublicKey`], [`PrivateKey`]: PEM, MCUboot bytes, KEYHASH |
//! | `verify` | [`Keyring`], [`SignatureKind`], [`verify`] |
//! | `build` | [`ImageBuilder`], [`SignOptions`], [`dev_key`], [`dev_private_key`] |
//! | `enc` | encrypted images: [`EncKey`], [`EncPublicKey`], [`EncTlv`], [`ImageKey`], [`image_key`], [`decrypt_image`], [`encrypt_image`], [`verify_encrypted`], [`EncError`] |

use std::fmt;
use std::str::FromStr;

mod build;
mod enc;
#[cfg(test)]
mod enc_tests;
mod keys;
mod parse;
#[cfg(test)]
mod tests;
mod verify;

pub use build::{ImageBuilder, KeyFormat, SignOptions, dev_key, dev_private_key};
pub use enc::{
    AesKeySize, EncError, EncKey, EncKeyError, EncKeyFamily, EncPublicKey, EncTlv, EncTlvKind,
    EncryptOptions, IMAGE_F_ENCRYPTED_AES128, IMAGE_F_ENCRYPTED_AES256, ImageKey, KwKey,
    TLV_ENC_EC256, TLV_ENC_KW, TLV_ENC_RSA2048, TLV_ENC_X25519, TLV_ENC_X25519_SHA512,
    UnwrapFailure, decrypt_image, encrypt_image, image_key, verify_encrypted,
};
pub use keys::{HashAlg, KeyKind, ParseKeyKindError, PrivateKey, PublicKey};
pub use parse::{Header, ParsedImage, Tlv, Tlvs, parse};
pub use verify::{ImageInfo, Keyring, SignatureKind, verify};

use ed25519_dalek::SigningKey;

/// `ih_magic` of an MCUboot image.
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Magic of the unprotected TLV area's info.
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Magic of the protected TLV area's info.
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
/// Size of a TLV area info (`u16 magic`, `u16 size`) and of a TLV header (`u16 type`, `u16 len`).
pub const TLV_INFO_SIZE: usize = 4;
/// Hash of the signing key's MCUboot bytes ([`PublicKey::mcuboot_bytes`]), with the image's
/// hash algorithm.
pub const TLV_KEYHASH: u16 = 0x01;
/// The signing key's MCUboot bytes (imgtool `--public-key-format full`).
pub const TLV_PUBKEY: u16 = 0x02;
/// SHA-256 of header, payload and protected TLV area.
pub const TLV_SHA256: u16 = 0x10;
/// SHA-384 of the same (ECDSA P-384 images).
pub const TLV_SHA384: u16 = 0x11;
/// SHA-512 of the same (imgtool `--sha 512`, `--pure`).
pub const TLV_SHA512: u16 = 0x12;
/// RSASSA-PSS signature with a 2048-bit key (256 bytes).
pub const TLV_RSA2048_PSS: u16 = 0x20;
/// DER ECDSA signature (P-256 or P-384, as the key says).
pub const TLV_ECDSA_SIG: u16 = 0x22;
/// RSASSA-PSS signature with a 3072-bit key (384 bytes).
pub const TLV_RSA3072_PSS: u16 = 0x23;
/// Ed25519 signature (64 bytes) of the digest, or of the image with [`TLV_SIG_PURE`].
pub const TLV_ED25519: u16 = 0x24;
/// One byte `01`: the signature is over the image itself, not its hash (imgtool `--pure`).
pub const TLV_SIG_PURE: u16 = 0x25;
/// Security counter, `u32`, protected.
pub const TLV_SEC_CNT: u16 = 0x50;
/// Our simulation TLV: how the image behaves when booted ([`Behaviour`]). In MCUboot's
/// vendor-reserved range and in imgtool's `--custom-tlv` range (`0x00a0..=0xfffe`);
/// protected, so it is covered by hash and signature.
pub const TLV_SIM_BEHAVIOUR: u16 = 0x00a5;
/// `ih_flags` bit imgtool sets when `--load-addr` is given.
pub const IMAGE_F_RAM_LOAD: u32 = 0x20;

/// The PSS salt length MCUboot requires and imgtool uses (the SHA-256 digest size).
const RSA_PSS_SALT_LEN: usize = 32;
/// MCUboot's buffer for a DER ECDSA signature (`SIG_BUF_SIZE`).
const ECDSA_SIG_MAX: usize = 128;

/// Image version `major.minor.revision+build`. Ordered field by field, as MCUboot compares
/// versions (build included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub revision: u16,
    pub build: u32,
}

impl Version {
    /// `major.minor.revision+0`.
    pub const fn new(major: u8, minor: u8, revision: u16) -> Self {
        Version {
            major,
            minor,
            revision,
            build: 0,
        }
    }

    /// The same version with build number `build`.
    pub const fn with_build(self, build: u32) -> Self {
        Version { build, ..self }
    }
}

/// `1.2.3+4`; a zero build number is left out (`1.2.3`) unless the alternate form is asked
/// for: `format!("{v:#}")` always prints it, as `imgtool verify` does (`1.2.3+0`).
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.revision)?;
        if self.build != 0 || f.alternate() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

/// As its string (`"1.2.3"`, `"1.2.3+4"`): how job documents and wire messages carry it.
impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A version string that is not `major.minor.revision` or `major.minor.revision+build`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "bad version {input:?} (expected major.minor.revision[+build], major and minor < 256, revision < 65536)"
)]
pub struct ParseVersionError {
    pub input: String,
}

/// Accepts `1.2.3` and `1.2.3+4`: decimal digits only (no sign, no spaces), every field
/// within its width.
impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, ParseVersionError> {
        fn field<T: FromStr>(digits: &str) -> Option<T> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
        let parse = || -> Option<Version> {
            let (main, build) = match s.split_once('+') {
                Some((main, build)) => (main, field(build)?),
                None => (s, 0),
            };
            let mut parts = main.split('.');
            let version = Version {
                major: field(parts.next()?)?,
                minor: field(parts.next()?)?,
                revision: field(parts.next()?)?,
                build,
            };
            parts.next().is_none().then_some(version)
        };
        parse().ok_or_else(|| ParseVersionError {
            input: s.to_string(),
        })
    }
}

/// How an image behaves when booted (see [`crate::firmware`]), carried in the protected
/// [`TLV_SIM_BEHAVIOUR`] TLV. Images without it behave as [`Behaviour::DEFAULT`].
///
/// TLV value (5 bytes):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | kind |
/// | 1 | 4 | parameter, `u32` little-endian |
///
/// | kind | behaviour | parameter |
/// |---|---|---|
/// | `0` | [`Behaviour::Healthy`]: runs, confirms itself after a delay | delay, ms |
/// | `1` | [`Behaviour::CrashOnBoot`]: resets right after boot | ignored (written 0) |
/// | `2` | [`Behaviour::Hang`]: hangs; the watchdog resets it | watchdog timeout, ms |
/// | `3` | [`Behaviour::NeverConfirm`]: runs and answers diagnostics, never confirms | ignored (written 0) |
/// | `4` | [`Behaviour::NoDiagnostics`]: runs and confirms, answers no diagnostics | ignored (written 0) |
///
/// Any other kind is [`ImageError::BadBehaviour`]. Example: `02 f4 01 00 00` is a hang with a
/// 500 ms watchdog, given to imgtool as `--custom-tlv 0xa5 0x02f4010000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Healthy { confirm_after_ms: u32 },
    CrashOnBoot,
    Hang { watchdog_ms: u32 },
    NeverConfirm,
    NoDiagnostics,
}

impl Behaviour {
    /// What images without the simulation TLV do.
    pub const DEFAULT: Behaviour = Behaviour::Healthy {
        confirm_after_ms: 500,
    };

    /// Length of the TLV value.
    pub const TLV_LEN: usize = 5;

    /// The TLV value.
    pub fn encode(self) -> [u8; Self::TLV_LEN] {
        let (kind, param) = match self {
            Behaviour::Healthy { confirm_after_ms } => (0, confirm_after_ms),
            Behaviour::CrashOnBoot => (1, 0),
            Behaviour::Hang { watchdog_ms } => (2, watchdog_ms),
            Behaviour::NeverConfirm => (3, 0),
            Behaviour::NoDiagnostics => (4, 0),
        };
        let p = u32::to_le_bytes(param);
        [kind, p[0], p[1], p[2], p[3]]
    }

    /// Decode a TLV value.
    pub fn decode(value: &[u8]) -> Result<Self, ImageError> {
        let &[kind, a, b, c, d] = value else {
            return Err(ImageError::BadTlvLength {
                tlv: TLV_SIM_BEHAVIOUR,
                len: len_u16(value),
            });
        };
        let param = u32::from_le_bytes([a, b, c, d]);
        Ok(match kind {
            0 => Behaviour::Healthy {
                confirm_after_ms: param,
            },
            1 => Behaviour::CrashOnBoot,
            2 => Behaviour::Hang { watchdog_ms: param },
            3 => Behaviour::NeverConfirm,
            4 => Behaviour::NoDiagnostics,
            kind => return Err(ImageError::BadBehaviour { kind }),
        })
    }
}

/// What is wrong with an image. Offsets are from the start of the image.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ImageError {
    #[error("bad image magic 0x{found:08x} (expected 0x96f3b83d)")]
    BadMagic { found: u32 },
    #[error("image truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("header size {hdr_size} is smaller than the 32-byte header")]
    BadHeaderSize { hdr_size: u16 },
    #[error("bad tlv info magic 0x{found:04x} at offset {offset}")]
    BadTlvInfoMagic { offset: usize, found: u16 },
    #[error("protected tlv area is {info} bytes but the header says {header}")]
    ProtectedSizeMismatch { header: u16, info: u16 },
    #[error("tlv at offset {offset} runs past the end of its area")]
    TlvOverflow { offset: usize },
    #[error("tlv 0x{tlv:04x} has length {len} (expected {})", expected_len(*.tlv))]
    BadTlvLength { tlv: u16, len: u16 },
    #[error("tlv 0x{tlv:04x} appears more than once")]
    DuplicateTlv { tlv: u16 },
    #[error(
        "tlv 0x{tlv:04x} is not allowed in the {} tlv area",
        area_name(*.protected)
    )]
    MisplacedTlv { tlv: u16, protected: bool },
    #[error("no image hash tlv (sha256, sha384 or sha512)")]
    MissingHash,
    #[error("hash mismatch: the image is not what was signed")]
    HashMismatch,
    #[error("keyhash tlv has length {len} but the image hash is {hash} ({} bytes)", .hash.digest_len())]
    KeyHashLength { len: u16, hash: HashAlg },
    #[error("sig_pure tlv holds 0x{value:02x} (expected 0x01)")]
    BadSigPure { value: u8 },
    #[error(
        "signature tlv 0x{tlv:04x} has length {len} (expected {})",
        signature_len_text(*.tlv)
    )]
    BadSignatureLength { tlv: u16, len: u16 },
    #[error("signature tlv 0x{tlv:04x} is not a DER ECDSA signature: {message}")]
    BadSignatureEncoding { tlv: u16, message: String },
    #[error("no signature (key + signature tlvs) but keys are configured")]
    MissingSignature,
    #[error("signed with an unknown key (keyhash {}…)", hex(&.keyhash[..keyhash.len().min(8)]))]
    UnknownKey { keyhash: Vec<u8> },
    #[error("signed with an untrusted key: the pubkey tlv holds {key}")]
    UntrustedPubkey { key: String },
    #[error(
        "signature tlv 0x{tlv:04x} ({}) cannot come from the trusted key named before it: {}",
        signature_tlv_name(*.tlv),
        .key.described()
    )]
    WrongKeyType { tlv: u16, key: KeyKind },
    #[error("a pure signature (sig_pure tlv) needs an ed25519 key, not {}", .key.described())]
    PureNotEd25519 { key: KeyKind },
    #[error(
        "a {hash} image hash does not go with {signature} signatures (MCUboot pairs those with {})",
        hash_list(.signature.hashes())
    )]
    HashNotForSignature {
        hash: HashAlg,
        signature: SignatureKind,
    },
    #[error("bad signature: the {signature} signature does not verify with the trusted key")]
    BadSignature { signature: SignatureKind },
    #[error("security counter {image} is lower than the stored {required} (downgrade)")]
    CounterTooLow { image: u32, required: u32 },
    #[error("unknown simulation behaviour kind {kind}")]
    BadBehaviour { kind: u8 },
    #[error("not a PEM key: {message}")]
    BadPem { message: String },
    #[error(
        "a PEM {label:?} holds no key this reads (expected PUBLIC KEY, PRIVATE KEY, RSA PUBLIC KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    UnsupportedPem { label: String },
    #[error("a public key PEM: signing needs the private key (what imgtool keygen writes)")]
    NotAPrivateKey,
    #[error("password-protected private keys are not supported (export it without a password)")]
    EncryptedPrivateKey,
    #[error("{kind} that does not decode: {message}")]
    BadKeyDer { kind: &'static str, message: String },
    #[error(
        "unknown key algorithm OID {oid} (expected ed25519 1.3.101.112, EC 1.2.840.10045.2.1 or RSA 1.2.840.113549.1.1.1)"
    )]
    UnknownKeyAlgorithm { oid: String },
    #[error(
        "an ECDSA key on curve {oid}: MCUboot verifies P-256 (1.2.840.10045.3.1.7) and P-384 (1.3.132.0.34)"
    )]
    UnsupportedCurve { oid: String },
    #[error("an RSA key of {bits} bits: MCUboot verifies RSA-2048 and RSA-3072")]
    UnsupportedRsaSize { bits: usize },
    #[error("{} signs no images (it is an encryption key)", .found.described())]
    NotASigningKey { found: KeyKind },
    #[error("encrypted image: {0}")]
    Encryption(EncError),
}

fn signature_tlv_name(tlv: u16) -> &'static str {
    match tlv {
        TLV_RSA2048_PSS => "RSA-2048 PSS",
        TLV_RSA3072_PSS => "RSA-3072 PSS",
        TLV_ECDSA_SIG => "ECDSA",
        TLV_ED25519 => "ed25519",
        _ => "unknown",
    }
}

fn signature_len_text(tlv: u16) -> String {
    match tlv {
        TLV_ECDSA_SIG => format!("1 to {ECDSA_SIG_MAX} bytes of DER"),
        _ => expected_len(tlv).to_string(),
    }
}

fn hash_list(hashes: &[HashAlg]) -> String {
    hashes
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn area_name(protected: bool) -> &'static str {
    if protected {
        "protected"
    } else {
        "unprotected"
    }
}

/// Value length of the TLVs whose length is fixed (for [`ImageError::BadTlvLength`]).
fn expected_len(tlv: u16) -> usize {
    match tlv {
        TLV_SHA256 => 32,
        TLV_SHA384 => 48,
        TLV_SHA512 | TLV_ED25519 => 64,
        TLV_RSA2048_PSS => 256,
        TLV_RSA3072_PSS => 384,
        TLV_SIG_PURE => 1,
        TLV_SEC_CNT => 4,
        TLV_SIM_BEHAVIOUR => Behaviour::TLV_LEN,
        _ => 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TLV value's length as the format stores it (values longer than any TLV can be saturate).
fn len_u16(value: &[u8]) -> u16 {
    u16::try_from(value.len()).unwrap_or(u16::MAX)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
