//! MCUboot image format: builder, parser and verifier, byte-compatible with MCUboot's `imgtool`.
//!
//! ## Layout
//!
//! | part | size | notes |
//! |---|---|---|
//! | header | `hdr_size` (≥ 32) | 32-byte header, then zero padding (`imgtool --pad-header`) |
//! | payload | `img_size` | |
//! | protected TLV area | `protect_tlv_size` (0 if none) | info `{u16 magic 0x6908, u16 total incl. info}` + TLVs |
//! | TLV area | info total | info `{u16 magic 0x6907, u16 total incl. info}` + TLVs |
//!
//! Header (little-endian): `u32 magic 0x96f3b83d`, `u32 load_addr`, `u16 hdr_size`,
//! `u16 protect_tlv_size`, `u32 img_size`, `u32 flags`, version `{u8 major, u8 minor,
//! u16 revision, u32 build}`, `u32 pad`. A TLV is `{u16 type, u16 len}` + value.
//!
//! The SHA-256 covers header (all `hdr_size` bytes), payload and the whole protected area. The
//! ED25519 signature signs that 32-byte digest (imgtool's non-"pure" mode). KEYHASH is the
//! SHA-256 of the public key as DER SubjectPublicKeyInfo (what imgtool hashes for ed25519).
//!
//! | TLV | type | area | value |
//! |---|---|---|---|
//! | KEYHASH | `0x01` | unprotected | SHA-256 of the signing key's SPKI DER |
//! | SHA256 | `0x10` | unprotected | image digest |
//! | ED25519 | `0x24` | unprotected | 64-byte signature of the digest |
//! | SEC_CNT | `0x50` | protected | `u32` security counter |
//! | simulation | [`TLV_SIM_BEHAVIOUR`] `0x00a5` | protected | [`Behaviour`]: `u8` kind + `u32` parameter |
//!
//! Security counter and simulation TLVs count only in the protected area (as in MCUboot), so
//! nobody can add them to a signed image.
//!
//! Simulation TLV kinds: `0` healthy (parameter: confirm delay, ms), `1` crash on boot,
//! `2` hang (parameter: watchdog timeout, ms), `3` never confirm, `4` no diagnostics.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
pub const TLV_INFO_MAGIC: u16 = 0x6907;
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
pub const TLV_KEYHASH: u16 = 0x01;
pub const TLV_SHA256: u16 = 0x10;
pub const TLV_ED25519: u16 = 0x24;
pub const TLV_SEC_CNT: u16 = 0x50;
/// Our simulation TLV, in the range imgtool accepts for `--custom-tlv` (0x00a0..=0xfffe).
pub const TLV_SIM_BEHAVIOUR: u16 = 0x00a5;

/// Image version `major.minor.revision+build`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub revision: u16,
    pub build: u32,
}

impl Version {
    pub const fn new(major: u8, minor: u8, revision: u16) -> Self {
        Version {
            major,
            minor,
            revision,
            build: 0,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.revision)?;
        if self.build != 0 {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad version {s:?} (expected major.minor.revision[+build])");
        let (main, build) = match s.split_once('+') {
            Some((m, b)) => (m, b.parse().map_err(|_| bad())?),
            None => (s, 0),
        };
        let parts: Vec<&str> = main.split('.').collect();
        let [major, minor, revision] = parts.as_slice() else {
            return Err(bad());
        };
        Ok(Version {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
            revision: revision.parse().map_err(|_| bad())?,
            build,
        })
    }
}

/// How an image behaves when booted (see [`crate::firmware`]).
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

    pub fn encode(self) -> [u8; 5] {
        let (kind, param) = match self {
            Behaviour::Healthy { confirm_after_ms } => (0, confirm_after_ms),
            Behaviour::CrashOnBoot => (1, 0),
            Behaviour::Hang { watchdog_ms } => (2, watchdog_ms),
            Behaviour::NeverConfirm => (3, 0),
            Behaviour::NoDiagnostics => (4, 0),
        };
        let mut out = [kind, 0, 0, 0, 0];
        out[1..].copy_from_slice(&param.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        let [kind, a, b, c, d] = bytes else {
            return Err(ImageError::BadTlvLength {
                tlv: TLV_SIM_BEHAVIOUR,
                len: bytes.len() as u16,
            });
        };
        let param = u32::from_le_bytes([*a, *b, *c, *d]);
        Ok(match kind {
            0 => Behaviour::Healthy {
                confirm_after_ms: param,
            },
            1 => Behaviour::CrashOnBoot,
            2 => Behaviour::Hang { watchdog_ms: param },
            3 => Behaviour::NeverConfirm,
            4 => Behaviour::NoDiagnostics,
            &kind => return Err(ImageError::BadBehaviour { kind }),
        })
    }
}

/// What is wrong with an image.
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
    #[error("protected tlv area size {info} disagrees with the header's {header}")]
    ProtectedSizeMismatch { header: u16, info: u16 },
    #[error("tlv at offset {offset} runs past the end of its area")]
    TlvOverflow { offset: usize },
    #[error("tlv 0x{tlv:02x} has length {len}")]
    BadTlvLength { tlv: u16, len: u16 },
    #[error("no sha256 tlv")]
    MissingHash,
    #[error("hash mismatch: the image is not what was signed")]
    HashMismatch,
    #[error("no signature (keyhash + ed25519 tlvs) but keys are configured")]
    MissingSignature,
    #[error("signed with an unknown key (keyhash {keyhash})")]
    UnknownKey { keyhash: String },
    #[error("bad signature")]
    BadSignature,
    #[error("security counter {image} is lower than the stored {required} (downgrade)")]
    CounterTooLow { image: u32, required: u32 },
    #[error("unknown simulation behaviour kind {kind}")]
    BadBehaviour { kind: u8 },
    #[error("bad key: {0}")]
    BadKey(String),
}

/// The 32-byte image header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub load_addr: u32,
    pub hdr_size: u16,
    pub protect_tlv_size: u16,
    pub img_size: u32,
    pub flags: u32,
    pub version: Version,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    pub const SIZE: usize = 32;

    pub fn parse(buf: &[u8]) -> Result<Header, ImageError> {
        if buf.len() < Self::SIZE {
            return Err(ImageError::Truncated {
                needed: Self::SIZE,
                available: buf.len(),
            });
        }
        let magic = u32_at(buf, 0);
        if magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        let hdr_size = u16_at(buf, 8);
        if usize::from(hdr_size) < Self::SIZE {
            return Err(ImageError::BadHeaderSize { hdr_size });
        }
        Ok(Header {
            load_addr: u32_at(buf, 4),
            hdr_size,
            protect_tlv_size: u16_at(buf, 10),
            img_size: u32_at(buf, 12),
            flags: u32_at(buf, 16),
            version: Version {
                major: buf[20],
                minor: buf[21],
                revision: u16_at(buf, 22),
                build: u32_at(buf, 24),
            },
        })
    }

    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.load_addr.to_le_bytes());
        b[8..10].copy_from_slice(&self.hdr_size.to_le_bytes());
        b[10..12].copy_from_slice(&self.protect_tlv_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.img_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.to_le_bytes());
        b[20] = self.version.major;
        b[21] = self.version.minor;
        b[22..24].copy_from_slice(&self.version.revision.to_le_bytes());
        b[24..28].copy_from_slice(&self.version.build.to_le_bytes());
        b
    }
}

/// One TLV entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    pub protected: bool,
}

/// A structurally valid image (nothing checked cryptographically yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedImage<'a> {
    pub header: Header,
    pub payload: &'a [u8],
    pub tlvs: Vec<Tlv<'a>>,
    /// Bytes covered by the hash: header, payload, protected area.
    pub hashed: &'a [u8],
    /// Header + payload + both TLV areas.
    pub total_size: usize,
}

impl ParsedImage<'_> {
    fn find(&self, kind: u16, protected: bool) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.kind == kind && t.protected == protected)
            .map(|t| t.value)
    }
}

/// Parse one TLV area starting at `start`; returns its entries and its end.
fn parse_area<'a>(
    bytes: &'a [u8],
    start: usize,
    magic: u16,
    protected: bool,
    tlvs: &mut Vec<Tlv<'a>>,
) -> Result<usize, ImageError> {
    let info_end = start
        .checked_add(4)
        .ok_or(ImageError::TlvOverflow { offset: start })?;
    if bytes.len() < info_end {
        return Err(ImageError::Truncated {
            needed: info_end,
            available: bytes.len(),
        });
    }
    let found = u16_at(bytes, start);
    if found != magic {
        return Err(ImageError::BadTlvInfoMagic {
            offset: start,
            found,
        });
    }
    let total = usize::from(u16_at(bytes, start + 2));
    if total < 4 {
        return Err(ImageError::TlvOverflow { offset: start });
    }
    let end = start + total;
    if bytes.len() < end {
        return Err(ImageError::Truncated {
            needed: end,
            available: bytes.len(),
        });
    }
    let mut at = info_end;
    while at < end {
        if at + 4 > end {
            return Err(ImageError::TlvOverflow { offset: at });
        }
        let kind = u16_at(bytes, at);
        let len = usize::from(u16_at(bytes, at + 2));
        if at + 4 + len > end {
            return Err(ImageError::TlvOverflow { offset: at });
        }
        tlvs.push(Tlv {
            kind,
            value: &bytes[at + 4..at + 4 + len],
            protected,
        });
        at += 4 + len;
    }
    Ok(end)
}

/// Structural parse: header and TLV areas. `bytes` may extend past the image (a flash slot).
pub fn parse(bytes: &[u8]) -> Result<ParsedImage<'_>, ImageError> {
    let header = Header::parse(bytes)?;
    let payload_start = usize::from(header.hdr_size);
    let prot_start =
        payload_start
            .checked_add(header.img_size as usize)
            .ok_or(ImageError::TlvOverflow {
                offset: payload_start,
            })?;
    if bytes.len() < prot_start {
        return Err(ImageError::Truncated {
            needed: prot_start,
            available: bytes.len(),
        });
    }
    let mut tlvs = Vec::new();
    let unprot_start = if header.protect_tlv_size > 0 {
        let end = parse_area(bytes, prot_start, TLV_PROT_INFO_MAGIC, true, &mut tlvs)?;
        let info = (end - prot_start) as u16;
        if info != header.protect_tlv_size {
            return Err(ImageError::ProtectedSizeMismatch {
                header: header.protect_tlv_size,
                info,
            });
        }
        end
    } else {
        prot_start
    };
    let total_size = parse_area(bytes, unprot_start, TLV_INFO_MAGIC, false, &mut tlvs)?;
    Ok(ParsedImage {
        payload: &bytes[payload_start..prot_start],
        hashed: &bytes[..unprot_start],
        header,
        tlvs,
        total_size,
    })
}

/// A verified image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub header: Header,
    pub total_size: usize,
    pub hash: [u8; 32],
    pub security_counter: u32,
    pub behaviour: Behaviour,
    pub signed: bool,
}

/// The bootloader's trusted keys, looked up by KEYHASH.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<([u8; 32], VerifyingKey)>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_key(mut self, key: VerifyingKey) -> Self {
        self.add(key);
        self
    }
    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.push((Self::keyhash(&key), key));
    }
    /// Add a `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) PEM, as `imgtool getpub -e pem` prints.
    pub fn add_pem(&mut self, pem: &str) -> Result<(), ImageError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| ImageError::BadKey(e.to_string()))?;
        self.add(key);
        Ok(())
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// SHA-256 of the key's SubjectPublicKeyInfo DER, the bytes imgtool hashes.
    pub fn keyhash(key: &VerifyingKey) -> [u8; 32] {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_else(|_| {
                // The DER form of an ed25519 key is a fixed prefix and the 32 key bytes.
                let mut v = vec![
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                v.extend_from_slice(key.as_bytes());
                v
            });
        Sha256::digest(der).into()
    }
}

/// Verify structure, hash, signature (when `keys` is not empty) and security counter.
pub fn verify(
    bytes: &[u8],
    keys: &Keyring,
    min_security_counter: u32,
) -> Result<ImageInfo, ImageError> {
    let image = parse(bytes)?;
    let hash = image
        .find(TLV_SHA256, false)
        .ok_or(ImageError::MissingHash)?;
    if hash.len() != 32 {
        return Err(ImageError::BadTlvLength {
            tlv: TLV_SHA256,
            len: hash.len() as u16,
        });
    }
    let digest: [u8; 32] = Sha256::digest(image.hashed).into();
    if digest[..] != hash[..] {
        return Err(ImageError::HashMismatch);
    }
    let mut signed = false;
    if !keys.is_empty() {
        let (Some(keyhash), Some(sig)) = (
            image.find(TLV_KEYHASH, false),
            image.find(TLV_ED25519, false),
        ) else {
            return Err(ImageError::MissingSignature);
        };
        let bad_len = |tlv, v: &[u8]| ImageError::BadTlvLength {
            tlv,
            len: v.len() as u16,
        };
        let keyhash: [u8; 32] = keyhash
            .try_into()
            .map_err(|_| bad_len(TLV_KEYHASH, keyhash))?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| bad_len(TLV_ED25519, sig))?;
        let key = keys
            .keys
            .iter()
            .find(|(h, _)| *h == keyhash)
            .map(|(_, k)| k)
            .ok_or_else(|| ImageError::UnknownKey {
                keyhash: keyhash[..8].iter().map(|b| format!("{b:02x}")).collect(),
            })?;
        key.verify(&digest, &Signature::from_bytes(&sig))
            .map_err(|_| ImageError::BadSignature)?;
        signed = true;
    }
    let security_counter = match image.find(TLV_SEC_CNT, true) {
        Some(v) => u32::from_le_bytes(v.try_into().map_err(|_| ImageError::BadTlvLength {
            tlv: TLV_SEC_CNT,
            len: v.len() as u16,
        })?),
        None => 0,
    };
    if security_counter < min_security_counter {
        return Err(ImageError::CounterTooLow {
            image: security_counter,
            required: min_security_counter,
        });
    }
    let behaviour = match image.find(TLV_SIM_BEHAVIOUR, true) {
        Some(v) => Behaviour::decode(v)?,
        None => Behaviour::DEFAULT,
    };
    Ok(ImageInfo {
        header: image.header,
        total_size: image.total_size,
        hash: digest,
        security_counter,
        behaviour,
        signed,
    })
}

/// Deterministic development key `name` — for simulation only, never for real devices.
pub fn dev_key(name: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("ecu-sim dev key:{name}")).into();
    SigningKey::from_bytes(&seed)
}

/// Builds MCUboot images.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    version: Version,
    payload: Vec<u8>,
    header_size: u16,
    load_addr: u32,
    security_counter: Option<u32>,
    behaviour: Option<Behaviour>,
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

impl ImageBuilder {
    pub fn new(version: Version, payload: Vec<u8>) -> Self {
        ImageBuilder {
            version,
            payload,
            header_size: 0x200,
            load_addr: 0,
            security_counter: None,
            behaviour: None,
        }
    }
    /// Header area size (≥ 32; the rest is zero padding).
    pub fn header_size(mut self, n: u16) -> Self {
        self.header_size = n.max(Header::SIZE as u16);
        self
    }
    pub fn load_addr(mut self, a: u32) -> Self {
        self.load_addr = a;
        self
    }
    pub fn security_counter(mut self, c: u32) -> Self {
        self.security_counter = Some(c);
        self
    }
    pub fn behaviour(mut self, b: Behaviour) -> Self {
        self.behaviour = Some(b);
        self
    }

    /// Header, payload and protected area, and the digest over them.
    fn hashed_part(&self) -> (Vec<u8>, [u8; 32]) {
        let mut prot = Vec::new();
        if let Some(c) = self.security_counter {
            push_tlv(&mut prot, TLV_SEC_CNT, &c.to_le_bytes());
        }
        if let Some(b) = self.behaviour {
            push_tlv(&mut prot, TLV_SIM_BEHAVIOUR, &b.encode());
        }
        let prot_size = if prot.is_empty() { 0 } else { prot.len() + 4 };
        let header = Header {
            load_addr: self.load_addr,
            hdr_size: self.header_size,
            protect_tlv_size: prot_size as u16,
            img_size: self.payload.len() as u32,
            flags: 0,
            version: self.version,
        };
        let mut out = header.encode().to_vec();
        out.resize(usize::from(self.header_size), 0);
        out.extend_from_slice(&self.payload);
        if prot_size > 0 {
            out.extend_from_slice(&TLV_PROT_INFO_MAGIC.to_le_bytes());
            out.extend_from_slice(&(prot_size as u16).to_le_bytes());
            out.extend_from_slice(&prot);
        }
        let digest = Sha256::digest(&out).into();
        (out, digest)
    }

    fn finish(mut out: Vec<u8>, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
        let total: usize = 4 + tlvs.iter().map(|(_, v)| 4 + v.len()).sum::<usize>();
        out.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
        out.extend_from_slice(&(total as u16).to_le_bytes());
        for (kind, value) in tlvs {
            push_tlv(&mut out, *kind, value);
        }
        out
    }

    /// Image with SHA-256, KEYHASH and ED25519 signature.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let (out, digest) = self.hashed_part();
        let keyhash = Keyring::keyhash(&key.verifying_key());
        let sig = key.sign(&digest).to_bytes();
        Self::finish(
            out,
            &[
                (TLV_SHA256, &digest),
                (TLV_KEYHASH, &keyhash),
                (TLV_ED25519, &sig),
            ],
        )
    }

    /// Image with the SHA-256 only.
    pub fn build_unsigned(&self) -> Vec<u8> {
        let (out, digest) = self.hashed_part();
        Self::finish(out, &[(TLV_SHA256, &digest)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn keys() -> Keyring {
        Keyring::new().with_key(dev_key("oem").verifying_key())
    }

    fn signed() -> Vec<u8> {
        ImageBuilder::new(Version::new(1, 2, 3), (0..200u8).collect())
            .security_counter(5)
            .behaviour(Behaviour::Hang { watchdog_ms: 250 })
            .sign(&dev_key("oem"))
    }

    #[test]
    fn header_round_trip_against_known_bytes() {
        let h = Header {
            load_addr: 0,
            hdr_size: 0x200,
            protect_tlv_size: 0x14,
            img_size: 0x1234,
            flags: 0,
            version: Version {
                major: 1,
                minor: 2,
                revision: 3,
                build: 4,
            },
        };
        let bytes = hex!(
            "3d b8 f3 96 00 00 00 00 00 02 14 00 34 12 00 00"
            "00 00 00 00 01 02 03 00 04 00 00 00 00 00 00 00"
        );
        assert_eq!(h.encode(), bytes);
        assert_eq!(Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn signed_round_trip() {
        let img = signed();
        let info = verify(&img, &keys(), 5).unwrap();
        assert_eq!(info.header.version, Version::new(1, 2, 3));
        assert_eq!(info.security_counter, 5);
        assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 250 });
        assert!(info.signed);
        assert_eq!(info.total_size, img.len());
        // Followed by erased flash, it still verifies.
        let mut slot = img.clone();
        slot.resize(img.len() + 4096, 0xFF);
        assert_eq!(verify(&slot, &keys(), 0).unwrap().total_size, img.len());
    }

    #[test]
    fn unsigned_and_minimal_images() {
        let img = ImageBuilder::new(Version::new(0, 0, 1), vec![7; 10])
            .header_size(32)
            .build_unsigned();
        let info = verify(&img, &Keyring::new(), 0).unwrap();
        assert_eq!(info.behaviour, Behaviour::DEFAULT);
        assert_eq!(info.security_counter, 0);
        assert!(!info.signed);
        assert_eq!(verify(&img, &keys(), 0), Err(ImageError::MissingSignature));
        assert_eq!(parse(&img).unwrap().header.protect_tlv_size, 0);
    }

    #[test]
    fn every_failure_is_named() {
        let img = signed();
        let k = keys();
        let mut bad = img.clone();
        bad[0] = 0;
        assert_eq!(
            verify(&bad, &k, 0),
            Err(ImageError::BadMagic { found: 0x96f3_b800 })
        );
        assert_eq!(
            verify(&img[..20], &k, 0),
            Err(ImageError::Truncated {
                needed: 32,
                available: 20
            })
        );
        assert!(matches!(
            verify(&img[..0x200 + 100], &k, 0),
            Err(ImageError::Truncated { .. })
        ));
        assert!(matches!(
            verify(&img[..img.len() - 1], &k, 0),
            Err(ImageError::Truncated { .. })
        ));
        let mut bad = img.clone();
        bad[8] = 16;
        bad[9] = 0;
        assert_eq!(
            verify(&bad, &k, 0),
            Err(ImageError::BadHeaderSize { hdr_size: 16 })
        );
        let prot = 0x200 + 200;
        let mut bad = img.clone();
        bad[prot] = 0x07;
        assert_eq!(
            verify(&bad, &k, 0),
            Err(ImageError::BadTlvInfoMagic {
                offset: prot,
                found: 0x6907
            })
        );
        // The first protected TLV claims more bytes than its area has.
        let mut bad = img.clone();
        bad[prot + 6] = 0xFF;
        assert_eq!(
            verify(&bad, &k, 0),
            Err(ImageError::TlvOverflow { offset: prot + 4 })
        );
        let mut bad = img.clone();
        bad[0x200 + 10] ^= 1;
        assert_eq!(verify(&bad, &k, 0), Err(ImageError::HashMismatch));
        let mut bad = img.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(verify(&bad, &k, 0), Err(ImageError::BadSignature));
        let other = Keyring::new().with_key(dev_key("someone else").verifying_key());
        assert!(matches!(
            verify(&img, &other, 0),
            Err(ImageError::UnknownKey { .. })
        ));
        assert_eq!(
            verify(&img, &k, 6),
            Err(ImageError::CounterTooLow {
                image: 5,
                required: 6
            })
        );
        let no_hash = ImageBuilder::finish(
            ImageBuilder::new(Version::new(1, 0, 0), vec![1])
                .hashed_part()
                .0,
            &[],
        );
        assert_eq!(verify(&no_hash, &k, 0), Err(ImageError::MissingHash));
        let short_hash = ImageBuilder::finish(
            ImageBuilder::new(Version::new(1, 0, 0), vec![1])
                .hashed_part()
                .0,
            &[(TLV_SHA256, &[0; 31])],
        );
        assert_eq!(
            verify(&short_hash, &k, 0),
            Err(ImageError::BadTlvLength { tlv: 0x10, len: 31 })
        );
        assert_eq!(
            Behaviour::decode(&[9, 0, 0, 0, 0]),
            Err(ImageError::BadBehaviour { kind: 9 })
        );
        let mut kr = Keyring::new();
        assert!(matches!(
            kr.add_pem("not a key"),
            Err(ImageError::BadKey(_))
        ));
    }

    #[test]
    fn protected_size_must_match_header() {
        let mut img = signed();
        img[10] += 4;
        assert!(matches!(
            verify(&img, &keys(), 0),
            Err(ImageError::ProtectedSizeMismatch { .. }
                | ImageError::Truncated { .. }
                | ImageError::BadTlvInfoMagic { .. })
        ));
    }

    #[test]
    fn versions_parse_print_and_order() {
        let v: Version = "1.2.3+4".parse().unwrap();
        assert_eq!(v.to_string(), "1.2.3+4");
        assert_eq!("2.0.0".parse::<Version>().unwrap(), Version::new(2, 0, 0));
        assert!("1.2".parse::<Version>().is_err());
        assert!("1.2.x".parse::<Version>().is_err());
        assert!(Version::new(1, 10, 0) > Version::new(1, 9, 300));
    }

    #[test]
    fn keyhash_is_sha256_of_spki_der() {
        let key = dev_key("oem").verifying_key();
        let mut der = hex!("30 2a 30 05 06 03 2b 65 70 03 21 00").to_vec();
        der.extend_from_slice(key.as_bytes());
        assert_eq!(
            Keyring::keyhash(&key),
            <[u8; 32]>::from(Sha256::digest(&der))
        );
    }
}
