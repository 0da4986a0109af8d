//! MCUboot image format: builder, parser and verifier, byte-compatible with MCUboot's `imgtool`.
//!
//! Images signed by `imgtool sign` (2.5.0, ed25519 key, default `--sha auto`) verify here, and
//! images built by [`ImageBuilder`] pass `imgtool verify`; for the same key, payload and options
//! the two produce the same bytes (ed25519 signatures are deterministic). The interop tests in
//! `tests/tests/imgtool_interop.rs` check both directions against the real tool.
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
//! | TLV | type | area | value |
//! |---|---|---|---|
//! | KEYHASH | [`TLV_KEYHASH`] `0x01` | unprotected | SHA-256 of the signing key as DER SubjectPublicKeyInfo (44 bytes; imgtool's `get_public_bytes()` for ed25519, and the form MCUboot embeds its keys in) |
//! | SHA256 | [`TLV_SHA256`] `0x10` | unprotected | SHA-256 of header + payload + protected area (incl. its info) |
//! | ED25519 | [`TLV_ED25519`] `0x24` | unprotected | 64-byte ed25519 signature *of the 32-byte digest* (imgtool's default, not `--pure`) |
//! | SEC_CNT | [`TLV_SEC_CNT`] `0x50` | protected | `u32` security counter (imgtool `--security-counter`) |
//! | simulation | [`TLV_SIM_BEHAVIOUR`] `0x00a5` | protected | [`Behaviour`], 5 bytes (imgtool `--custom-tlv 0xa5 0x…`) |
//!
//! `0x00a5` lies in MCUboot's vendor-reserved ranges (`0xXXa0`–`0xXXff`) and in the range
//! imgtool 2.5.0 accepts for `--custom-tlv` (`0x00a0..=0xfffe`, minus its predefined types);
//! imgtool always places custom TLVs in the protected area, after SEC_CNT.
//!
//! ## Verification ([`verify`])
//!
//! Like MCUboot built with `MCUBOOT_SIGN_ED25519`, SHA-256 image hashes, key hashes (not
//! `MCUBOOT_HW_KEY`), `MCUBOOT_USE_TLV_ALLOW_LIST` and downgrade prevention by security counter:
//!
//! | step | check | error |
//! |---|---|---|
//! | 1 | header magic, `hdr_size` ≥ 32, both TLV areas inside the input and well-formed | [`ImageError::BadMagic`], [`ImageError::BadHeaderSize`], [`ImageError::Truncated`], [`ImageError::BadTlvInfoMagic`], [`ImageError::ProtectedSizeMismatch`], [`ImageError::TlvOverflow`] |
//! | 2 | only KEYHASH, SHA256 and ED25519 in the unprotected area; SEC_CNT and the simulation TLV only in the protected one; known TLVs have their exact length; SHA256, SEC_CNT and the simulation TLV at most once | [`ImageError::MisplacedTlv`], [`ImageError::BadTlvLength`], [`ImageError::DuplicateTlv`] |
//! | 3 | a SHA256 TLV equal to the SHA-256 of the hashed bytes | [`ImageError::MissingHash`], [`ImageError::HashMismatch`] |
//! | 4 | only if the [`Keyring`] is not empty: a KEYHASH naming a trusted key, followed by an ED25519 signature of the digest that verifies with it | [`ImageError::MissingSignature`], [`ImageError::UnknownKey`], [`ImageError::BadSignature`] |
//! | 5 | security counter (0 without SEC_CNT) ≥ the required minimum | [`ImageError::CounterTooLow`] |
//! | 6 | simulation TLV kind known | [`ImageError::BadBehaviour`] |
//!
//! Several KEYHASH + ED25519 pairs may follow each other (MCUboot's multi-signature form):
//! pairs naming unknown keys are skipped, at least one must name a trusted key, and every
//! pair naming a trusted key must verify. Other protected TLVs (imgtool's dependencies, boot
//! record, UUIDs, custom TLVs) are covered by the hash and otherwise ignored. An image
//! without SEC_CNT counts as security counter 0 (an MCUboot with `MCUBOOT_HW_ROLLBACK_PROT`
//! would refuse it).
//!
//! Images for other MCUboot configurations are refused by the allow list
//! ([`ImageError::MisplacedTlv`]), as such an MCUboot refuses them: `imgtool --sha 512` and
//! `--pure` put a SHA512 TLV (`0x12`) in the unprotected area, `--public-key-format full` a
//! PUBKEY TLV (`0x02`), encrypted images their `ENC_*` key TLVs (`0x30..=0x34`).
//!
//! With every check above, changing any single byte of a signed image (header, padding,
//! payload, either TLV area) makes [`verify`] fail when the keyring is not empty; without keys
//! only the hash protects the image, so KEYHASH and signature bytes may change unnoticed.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// `ih_magic` of an MCUboot image.
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Magic of the unprotected TLV area's info.
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Magic of the protected TLV area's info.
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
/// Size of a TLV area info (`u16 magic`, `u16 size`) and of a TLV header (`u16 type`, `u16 len`).
pub const TLV_INFO_SIZE: usize = 4;
/// SHA-256 of the signing key's DER SubjectPublicKeyInfo.
pub const TLV_KEYHASH: u16 = 0x01;
/// SHA-256 of header, payload and protected TLV area.
pub const TLV_SHA256: u16 = 0x10;
/// Ed25519 signature of the SHA-256 digest.
pub const TLV_ED25519: u16 = 0x24;
/// Security counter, `u32`, protected.
pub const TLV_SEC_CNT: u16 = 0x50;
/// Our simulation TLV: how the image behaves when booted ([`Behaviour`]). In MCUboot's
/// vendor-reserved range and in imgtool's `--custom-tlv` range (`0x00a0..=0xfffe`);
/// protected, so it is covered by hash and signature.
pub const TLV_SIM_BEHAVIOUR: u16 = 0x00a5;
/// `ih_flags` bit imgtool sets when `--load-addr` is given.
pub const IMAGE_F_RAM_LOAD: u32 = 0x20;

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

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
    #[error("no sha256 tlv")]
    MissingHash,
    #[error("hash mismatch: the image is not what was signed")]
    HashMismatch,
    #[error("no signature (keyhash + ed25519 tlvs) but keys are configured")]
    MissingSignature,
    #[error("signed with an unknown key (keyhash {}…)", hex(&.keyhash[..8]))]
    UnknownKey { keyhash: [u8; 32] },
    #[error("bad signature: the ed25519 signature does not verify with the trusted key")]
    BadSignature,
    #[error("security counter {image} is lower than the stored {required} (downgrade)")]
    CounterTooLow { image: u32, required: u32 },
    #[error("unknown simulation behaviour kind {kind}")]
    BadBehaviour { kind: u8 },
    #[error("bad key: {0}")]
    BadKey(String),
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
        TLV_KEYHASH | TLV_SHA256 => 32,
        TLV_ED25519 => 64,
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

/// The 32-byte image header (layout in the [module docs](self#header)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub load_addr: u32,
    pub hdr_size: u16,
    pub protect_tlv_size: u16,
    pub img_size: u32,
    pub flags: u32,
    pub version: Version,
}

impl Header {
    pub const SIZE: usize = 32;

    /// Parse the first 32 bytes of `buf`: checks the magic and that `hdr_size` ≥ 32.
    pub fn parse(buf: &[u8]) -> Result<Header, ImageError> {
        let Some(buf) = buf.get(..Self::SIZE) else {
            return Err(ImageError::Truncated {
                needed: Self::SIZE,
                available: buf.len(),
            });
        };
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

    /// The 32 header bytes (`_pad1` zero).
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
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

    /// Offset of the first TLV area (header area + payload); `None` if it overflows `usize`.
    pub fn tlv_offset(&self) -> Option<usize> {
        usize::from(self.hdr_size).checked_add(usize::try_from(self.img_size).ok()?)
    }

    /// Number of bytes the SHA-256 covers: header area, payload, protected TLV area.
    pub fn hashed_len(&self) -> Option<usize> {
        self.tlv_offset()?
            .checked_add(usize::from(self.protect_tlv_size))
    }
}

/// One TLV entry of a parsed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// TLV type.
    pub kind: u16,
    pub value: &'a [u8],
    /// In the protected (hashed) area.
    pub protected: bool,
    /// Offset of the TLV's 4-byte header in the image.
    pub offset: usize,
}

/// The entries of one TLV area (after its info), already checked to be well-formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Area<'a> {
    entries: &'a [u8],
    /// Offset of `entries` in the image.
    offset: usize,
    protected: bool,
}

impl<'a> Area<'a> {
    const EMPTY: Area<'static> = Area {
        entries: &[],
        offset: 0,
        protected: true,
    };

    /// The entry at `at` (relative to `entries`): type, value and the next entry's position;
    /// `Err(at)` when it runs past the area.
    fn entry(&self, at: usize) -> Result<(u16, &'a [u8], usize), usize> {
        let entries = self.entries;
        let value_start = at.checked_add(TLV_INFO_SIZE).ok_or(at)?;
        if value_start > entries.len() {
            return Err(at);
        }
        let kind = u16_at(entries, at);
        let len = usize::from(u16_at(entries, at + 2));
        let end = value_start.checked_add(len).ok_or(at)?;
        let value = entries.get(value_start..end).ok_or(at)?;
        Ok((kind, value, end))
    }
}

/// The TLVs of a parsed image in image order: protected area first, then unprotected.
#[derive(Clone, Debug)]
pub struct Tlvs<'a> {
    areas: [Area<'a>; 2],
    area: usize,
    at: usize,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        loop {
            let area = self.areas.get(self.area)?;
            if self.at >= area.entries.len() {
                self.area += 1;
                self.at = 0;
                continue;
            }
            // `parse` checked every entry; a failure here cannot happen, but ends the walk.
            let Ok((kind, value, next)) = area.entry(self.at) else {
                self.area = self.areas.len();
                return None;
            };
            let offset = area.offset + self.at;
            self.at = next;
            return Some(Tlv {
                kind,
                value,
                protected: area.protected,
                offset,
            });
        }
    }
}

/// A structurally valid image: nothing checked cryptographically yet. Borrows the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedImage<'a> {
    pub header: Header,
    pub payload: &'a [u8],
    /// The bytes the SHA-256 covers: header area, payload, protected TLV area.
    pub hashed: &'a [u8],
    /// Header area + payload + both TLV areas: the image's extent in the input.
    pub total_size: usize,
    protected: Area<'a>,
    unprotected: Area<'a>,
}

impl<'a> ParsedImage<'a> {
    /// All TLVs, protected ones first.
    pub fn tlvs(&self) -> Tlvs<'a> {
        Tlvs {
            areas: [self.protected, self.unprotected],
            area: 0,
            at: 0,
        }
    }

    /// The first TLV of type `kind` in the protected (`true`) or unprotected area.
    pub fn find(&self, kind: u16, protected: bool) -> Option<&'a [u8]> {
        self.tlvs()
            .find(|t| t.kind == kind && t.protected == protected)
            .map(|t| t.value)
    }

    /// Offset of the unprotected TLV area's info.
    pub fn unprotected_offset(&self) -> usize {
        self.hashed.len()
    }
}

/// Check the TLV area whose info is at `start`; returns its entries. `header_size` is the
/// size the image header gives the area (the protected one), checked before anything else
/// of it is read, as MCUboot does.
fn parse_area(
    bytes: &[u8],
    start: usize,
    magic: u16,
    protected: bool,
    header_size: Option<u16>,
) -> Result<Area<'_>, ImageError> {
    let truncated = |needed| ImageError::Truncated {
        needed,
        available: bytes.len(),
    };
    let info_end = start
        .checked_add(TLV_INFO_SIZE)
        .ok_or(ImageError::TlvOverflow { offset: start })?;
    let info = bytes.get(start..info_end).ok_or(truncated(info_end))?;
    let found = u16_at(info, 0);
    if found != magic {
        return Err(ImageError::BadTlvInfoMagic {
            offset: start,
            found,
        });
    }
    let size = u16_at(info, 2);
    if let Some(header) = header_size.filter(|&h| h != size) {
        return Err(ImageError::ProtectedSizeMismatch { header, info: size });
    }
    if usize::from(size) < TLV_INFO_SIZE {
        // The size includes the info itself.
        return Err(ImageError::TlvOverflow { offset: start });
    }
    let end = start
        .checked_add(usize::from(size))
        .ok_or(ImageError::TlvOverflow { offset: start })?;
    let entries = bytes.get(info_end..end).ok_or(truncated(end))?;
    let area = Area {
        entries,
        offset: info_end,
        protected,
    };
    let mut at = 0;
    while at < entries.len() {
        let (_, _, next) = area.entry(at).map_err(|at| ImageError::TlvOverflow {
            offset: info_end + at,
        })?;
        at = next;
    }
    Ok(area)
}

/// Structural parse: header and TLV areas, with checked arithmetic and without allocating.
/// `bytes` may extend past the image (a whole flash slot with erased bytes or a trailer after
/// it): only what the header and the TLV infos describe is read.
pub fn parse(bytes: &[u8]) -> Result<ParsedImage<'_>, ImageError> {
    let header = Header::parse(bytes)?;
    let payload_start = usize::from(header.hdr_size);
    let tlv_start = header.tlv_offset().ok_or(ImageError::Truncated {
        needed: usize::MAX,
        available: bytes.len(),
    })?;
    let payload = bytes
        .get(payload_start..tlv_start)
        .ok_or(ImageError::Truncated {
            needed: tlv_start,
            available: bytes.len(),
        })?;
    let (protected, unprotected_start) = if header.protect_tlv_size == 0 {
        (Area::EMPTY, tlv_start)
    } else {
        let area = parse_area(
            bytes,
            tlv_start,
            TLV_PROT_INFO_MAGIC,
            true,
            Some(header.protect_tlv_size),
        )?;
        (area, area.offset + area.entries.len())
    };
    let unprotected = parse_area(bytes, unprotected_start, TLV_INFO_MAGIC, false, None)?;
    let total_size = unprotected.offset + unprotected.entries.len();
    Ok(ParsedImage {
        header,
        payload,
        hashed: &bytes[..unprotected_start],
        total_size,
        protected,
        unprotected,
    })
}

/// A verified image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub header: Header,
    /// Header area + payload + both TLV areas.
    pub total_size: usize,
    /// SHA-256 of the hashed bytes (what the SHA256 TLV holds and the signature signs).
    pub hash: [u8; 32],
    /// From SEC_CNT; 0 without it.
    pub security_counter: u32,
    /// From the simulation TLV; [`Behaviour::DEFAULT`] without it.
    pub behaviour: Behaviour,
    /// A signature was checked (the keyring was not empty).
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

    /// Trust `key` (adding a key twice changes nothing).
    pub fn add(&mut self, key: VerifyingKey) {
        let hash = Self::keyhash(&key);
        if self.find(&hash).is_none() {
            self.keys.push((hash, key));
        }
    }

    /// Trust the key in a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), what
    /// `imgtool getpub -k key.pem -e pem` prints.
    pub fn add_pem(&mut self, pem: &str) -> Result<(), ImageError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            ImageError::BadKey(format!(
                "not an ed25519 public key pem (-----BEGIN PUBLIC KEY-----): {e}"
            ))
        })?;
        self.add(key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The trusted key whose [`Keyring::keyhash`] is `keyhash`.
    pub fn find(&self, keyhash: &[u8; 32]) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(h, _)| h == keyhash).map(|(_, k)| k)
    }

    /// The trusted keys, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().map(|(_, k)| k)
    }

    /// The key as DER SubjectPublicKeyInfo (44 bytes): the bytes imgtool's
    /// `get_public_bytes()` returns for ed25519 and MCUboot embeds.
    pub fn spki_der(key: &VerifyingKey) -> [u8; 44] {
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        der[12..].copy_from_slice(key.as_bytes());
        der
    }

    /// SHA-256 of [`Keyring::spki_der`]: the KEYHASH TLV value, what
    /// `imgtool getpubhash -e raw` prints.
    pub fn keyhash(key: &VerifyingKey) -> [u8; 32] {
        Sha256::digest(Self::spki_der(key)).into()
    }
}

/// What the TLVs of an image say, after the placement, length and duplicate checks.
#[derive(Default)]
struct Found<'a> {
    sha256: Option<&'a [u8]>,
    security_counter: Option<u32>,
    behaviour: Option<&'a [u8]>,
}

impl<'a> Found<'a> {
    fn collect(image: &ParsedImage<'a>) -> Result<Self, ImageError> {
        let mut found = Found::default();
        for tlv in image.tlvs() {
            let kind = tlv.kind;
            match (kind, tlv.protected) {
                (TLV_SHA256 | TLV_KEYHASH | TLV_ED25519, false)
                | (TLV_SEC_CNT | TLV_SIM_BEHAVIOUR, true) => {}
                // Everything else unprotected could be changed without breaking the signature.
                (TLV_SHA256 | TLV_KEYHASH | TLV_ED25519, true) | (_, false) => {
                    return Err(ImageError::MisplacedTlv {
                        tlv: kind,
                        protected: tlv.protected,
                    });
                }
                // Other protected TLVs are covered by the hash; nothing here uses them.
                (_, true) => continue,
            }
            if tlv.value.len() != expected_len(kind) {
                return Err(ImageError::BadTlvLength {
                    tlv: kind,
                    len: len_u16(tlv.value),
                });
            }
            let duplicate = match kind {
                TLV_SHA256 => found.sha256.replace(tlv.value).is_some(),
                TLV_SEC_CNT => found
                    .security_counter
                    .replace(u32_at(tlv.value, 0))
                    .is_some(),
                TLV_SIM_BEHAVIOUR => found.behaviour.replace(tlv.value).is_some(),
                _ => false,
            };
            if duplicate {
                return Err(ImageError::DuplicateTlv { tlv: kind });
            }
        }
        Ok(found)
    }
}

/// Check the KEYHASH + ED25519 pairs against `keys` (see the [module docs](crate::image)).
fn check_signature(
    image: &ParsedImage<'_>,
    keys: &Keyring,
    digest: &[u8; 32],
) -> Result<(), ImageError> {
    let mut key: Option<&VerifyingKey> = None;
    let mut unknown: Option<[u8; 32]> = None;
    let mut verified = false;
    for tlv in image.tlvs().filter(|t| !t.protected) {
        match tlv.kind {
            TLV_KEYHASH => {
                let hash: [u8; 32] =
                    tlv.value.try_into().map_err(|_| ImageError::BadTlvLength {
                        tlv: TLV_KEYHASH,
                        len: len_u16(tlv.value),
                    })?;
                key = keys.find(&hash);
                if key.is_none() {
                    unknown.get_or_insert(hash);
                }
            }
            TLV_ED25519 => {
                let sig: [u8; 64] = tlv.value.try_into().map_err(|_| ImageError::BadTlvLength {
                    tlv: TLV_ED25519,
                    len: len_u16(tlv.value),
                })?;
                // A signature belongs to the KEYHASH just before it.
                if let Some(key) = key.take() {
                    key.verify(digest, &Signature::from_bytes(&sig))
                        .map_err(|_| ImageError::BadSignature)?;
                    verified = true;
                }
            }
            _ => {}
        }
    }
    match (verified, unknown) {
        (true, _) => Ok(()),
        (false, Some(keyhash)) => Err(ImageError::UnknownKey { keyhash }),
        (false, None) => Err(ImageError::MissingSignature),
    }
}

/// Full verification, in the order of the [module docs](crate::image): structure,
/// TLV placement and lengths, SHA-256, signature (only if `keys` is not empty), security
/// counter ≥ `min_security_counter`, simulation behaviour.
pub fn verify(
    bytes: &[u8],
    keys: &Keyring,
    min_security_counter: u32,
) -> Result<ImageInfo, ImageError> {
    let image = parse(bytes)?;
    let found = Found::collect(&image)?;
    let expected = found.sha256.ok_or(ImageError::MissingHash)?;
    let digest: [u8; 32] = Sha256::digest(image.hashed).into();
    if digest[..] != *expected {
        return Err(ImageError::HashMismatch);
    }
    let signed = !keys.is_empty();
    if signed {
        check_signature(&image, keys, &digest)?;
    }
    let security_counter = found.security_counter.unwrap_or(0);
    if security_counter < min_security_counter {
        return Err(ImageError::CounterTooLow {
            image: security_counter,
            required: min_security_counter,
        });
    }
    let behaviour = match found.behaviour {
        Some(value) => Behaviour::decode(value)?,
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

/// Deterministic development key `name`: `SigningKey::from_bytes(sha256("ecu-sim dev key:" +
/// name))`. Anybody can compute it: **insecure, for simulation only**, never for a real device.
pub fn dev_key(name: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("ecu-sim dev key:{name}")).into();
    SigningKey::from_bytes(&seed)
}

/// Builds MCUboot images the way `imgtool sign --pad-header` lays them out.
///
/// Protected TLVs are written in imgtool's order: SEC_CNT, then the simulation TLV, then
/// [`ImageBuilder::protected_tlv`]s in the order given (imgtool's `--custom-tlv`s). The
/// unprotected area holds SHA256, then KEYHASH and ED25519 when signed.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    version: Version,
    payload: Vec<u8>,
    header_size: u16,
    load_addr: u32,
    security_counter: Option<u32>,
    behaviour: Option<Behaviour>,
    custom: Vec<(u16, Vec<u8>)>,
    erased_val: u8,
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("a tlv value is at most 65535 bytes");
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// A TLV area: its info (`magic`, size including the info) and `entries`.
fn tlv_area(magic: u16, entries: &[u8]) -> Vec<u8> {
    let size = u16::try_from(entries.len() + TLV_INFO_SIZE).expect("a tlv area is at most 64 KiB");
    let mut out = Vec::with_capacity(usize::from(size));
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(entries);
    out
}

impl ImageBuilder {
    /// An image of `payload` with header size 0x200 padded with `0xff`, load address 0, no
    /// security counter and no simulation TLV.
    pub fn new(version: Version, payload: Vec<u8>) -> Self {
        ImageBuilder {
            version,
            payload,
            header_size: 0x200,
            load_addr: 0,
            security_counter: None,
            behaviour: None,
            custom: Vec::new(),
            erased_val: 0xff,
        }
    }

    /// Header area size, like `imgtool --header-size N --pad-header`: the 32-byte header, then
    /// the erased value up to `n` bytes.
    ///
    /// # Panics
    /// If `n` < 32.
    pub fn header_size(mut self, n: u16) -> Self {
        assert!(
            usize::from(n) >= Header::SIZE,
            "header size {n} is smaller than the 32-byte header"
        );
        self.header_size = n;
        self
    }

    /// What fills the header area after the 32-byte header: `0xff` unless told otherwise,
    /// like `imgtool --pad-header` with `-R/--erased-val` (`0` or `0xff`).
    pub fn erased_val(mut self, v: u8) -> Self {
        self.erased_val = v;
        self
    }

    /// `ih_load_addr`; like imgtool, a non-zero address also sets [`IMAGE_F_RAM_LOAD`].
    pub fn load_addr(mut self, a: u32) -> Self {
        self.load_addr = a;
        self
    }

    /// Add a SEC_CNT TLV (protected), like `imgtool --security-counter`.
    pub fn security_counter(mut self, c: u32) -> Self {
        self.security_counter = Some(c);
        self
    }

    /// Add the simulation TLV (protected).
    pub fn behaviour(mut self, b: Behaviour) -> Self {
        self.behaviour = Some(b);
        self
    }

    /// Add a raw protected TLV, like `imgtool --custom-tlv`. Not checked: tests use it to
    /// build odd images (duplicates, bad lengths, unknown behaviours).
    pub fn protected_tlv(mut self, kind: u16, value: Vec<u8>) -> Self {
        self.custom.push((kind, value));
        self
    }

    /// Header area, payload and protected TLV area: the hashed bytes.
    ///
    /// # Panics
    /// If the payload is 4 GiB or more, or the protected TLVs exceed 64 KiB.
    fn hashed_part(&self) -> Vec<u8> {
        let mut entries = Vec::new();
        if let Some(c) = self.security_counter {
            push_tlv(&mut entries, TLV_SEC_CNT, &c.to_le_bytes());
        }
        if let Some(b) = self.behaviour {
            push_tlv(&mut entries, TLV_SIM_BEHAVIOUR, &b.encode());
        }
        for (kind, value) in &self.custom {
            push_tlv(&mut entries, *kind, value);
        }
        let protected = if entries.is_empty() {
            Vec::new()
        } else {
            tlv_area(TLV_PROT_INFO_MAGIC, &entries)
        };
        let header = Header {
            load_addr: self.load_addr,
            hdr_size: self.header_size,
            protect_tlv_size: len_u16(&protected),
            img_size: u32::try_from(self.payload.len()).expect("payload is less than 4 GiB"),
            flags: if self.load_addr != 0 {
                IMAGE_F_RAM_LOAD
            } else {
                0
            },
            version: self.version,
        };
        // Room for a signed image's unprotected area too: 4 + 36 (SHA256) + 36 + 68.
        let mut out = Vec::with_capacity(
            usize::from(self.header_size) + self.payload.len() + protected.len() + 144,
        );
        out.extend_from_slice(&header.encode());
        out.resize(usize::from(self.header_size), self.erased_val);
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&protected);
        out
    }

    /// `hashed` followed by an unprotected area of `tlvs`.
    fn finish(mut hashed: Vec<u8>, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (kind, value) in tlvs {
            push_tlv(&mut entries, *kind, value);
        }
        hashed.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &entries));
        hashed
    }

    /// The image with SHA256, KEYHASH and ED25519 (signature of the digest) TLVs.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let hashed = self.hashed_part();
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        let keyhash = Keyring::keyhash(&key.verifying_key());
        let sig = key.sign(&digest).to_bytes();
        Self::finish(
            hashed,
            &[
                (TLV_SHA256, &digest),
                (TLV_KEYHASH, &keyhash),
                (TLV_ED25519, &sig),
            ],
        )
    }

    /// The image with the SHA256 TLV only (for a bootloader without keys).
    pub fn build_unsigned(&self) -> Vec<u8> {
        let hashed = self.hashed_part();
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        Self::finish(hashed, &[(TLV_SHA256, &digest)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use hex_literal::hex;

    fn oem() -> Keyring {
        Keyring::new().with_key(dev_key("oem").verifying_key())
    }

    /// Header 0x200, 200-byte payload, counter 5, hang behaviour, signed by "oem".
    fn builder() -> ImageBuilder {
        ImageBuilder::new(Version::new(1, 2, 3), (0..200u8).collect())
            .security_counter(5)
            .behaviour(Behaviour::Hang { watchdog_ms: 250 })
    }

    fn signed() -> Vec<u8> {
        builder().sign(&dev_key("oem"))
    }

    /// Offsets in [`signed`]: protected area, unprotected area and its TLVs.
    const PROT: usize = 0x200 + 200;
    const PROT_SIZE: usize = 4 + 8 + 9;
    const UNPROT: usize = PROT + PROT_SIZE;
    const SHA_TLV: usize = UNPROT + 4;
    const KEYHASH_TLV: usize = SHA_TLV + 36;
    const SIG_TLV: usize = KEYHASH_TLV + 36;

    /// An image with `builder`'s hashed part and a hand-made unprotected area.
    fn with_unprotected(builder: &ImageBuilder, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
        ImageBuilder::finish(builder.hashed_part(), tlvs)
    }

    fn digest_of(builder: &ImageBuilder) -> [u8; 32] {
        Sha256::digest(builder.hashed_part()).into()
    }

    /// Signed by `key`, with the SHA256 TLV right.
    fn signed_pairs(builder: &ImageBuilder, pairs: &[(&SigningKey, bool)]) -> Vec<u8> {
        let digest = digest_of(builder);
        let mut owned: Vec<(u16, Vec<u8>)> = vec![(TLV_SHA256, digest.to_vec())];
        for (key, good) in pairs {
            let mut sig = key.sign(&digest).to_bytes();
            if !good {
                sig[0] ^= 1;
            }
            owned.push((TLV_KEYHASH, Keyring::keyhash(&key.verifying_key()).to_vec()));
            owned.push((TLV_ED25519, sig.to_vec()));
        }
        let tlvs: Vec<(u16, &[u8])> = owned.iter().map(|(k, v)| (*k, &v[..])).collect();
        with_unprotected(builder, &tlvs)
    }

    #[test]
    fn header_round_trip_against_known_bytes() {
        let h = Header {
            load_addr: 0x0800_0000,
            hdr_size: 0x200,
            protect_tlv_size: 0x15,
            img_size: 0x1234,
            flags: IMAGE_F_RAM_LOAD,
            version: Version::new(1, 2, 0x0303).with_build(0x0a0b_0c0d),
        };
        let bytes = hex!(
            "3d b8 f3 96  00 00 00 08  00 02  15 00  34 12 00 00"
            "20 00 00 00  01 02 03 03  0d 0c 0b 0a  00 00 00 00"
        );
        assert_eq!(h.encode(), bytes);
        assert_eq!(Header::parse(&bytes), Ok(h.clone()));
        assert_eq!(h.tlv_offset(), Some(0x200 + 0x1234));
        assert_eq!(h.hashed_len(), Some(0x200 + 0x1234 + 0x15));
        // Only the first 32 bytes are read.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xff; 8]);
        assert_eq!(Header::parse(&longer), Ok(h));
    }

    /// The bytes `imgtool sign` 2.5.0 writes for this image (produced with
    /// `imgtool sign -k oem.pem --header-size 32 --pad-header --align 8 --version 1.2.3+4
    /// --security-counter 7 --custom-tlv 0xa5 0x02f4010000`, where oem.pem is
    /// `dev_key("oem")` as PKCS#8): our builder writes the very same bytes.
    #[test]
    fn builder_matches_imgtool_bytes() {
        let payload = hex!("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
        let ours = ImageBuilder::new("1.2.3+4".parse().unwrap(), payload.to_vec())
            .header_size(32)
            .security_counter(7)
            .behaviour(Behaviour::Hang { watchdog_ms: 500 })
            .sign(&dev_key("oem"));
        assert_eq!(ours, IMGTOOL_GOLDEN);
        let info = verify(&IMGTOOL_GOLDEN, &oem(), 7).unwrap();
        assert_eq!(info.header.version, Version::new(1, 2, 3).with_build(4));
        assert_eq!(info.security_counter, 7);
        assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 500 });
        assert_eq!(info.total_size, IMGTOOL_GOLDEN.len());
    }

    const IMGTOOL_GOLDEN: [u8; 213] = hex!(
        "3d b8 f3 96 00 00 00 00 20 00 15 00 10 00 00 00"
        "00 00 00 00 01 02 03 00 04 00 00 00 00 00 00 00"
        "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"
        "08 69 15 00 50 00 04 00 07 00 00 00 a5 00 05 00"
        "02 f4 01 00 00 07 69 90 00 10 00 20 00 6d 28 1e"
        "4b cf ab 6f a6 e3 01 23 4f dc 14 ec 86 3e 57 67"
        "60 ff 89 bd 66 bb 57 73 19 73 2d 56 39 01 00 20"
        "00 c0 bb ad 8a f8 62 42 72 70 44 7e 4e 59 e0 1d"
        "fc 3d 7a f0 5c 2e 4f 8e eb a2 5b 57 de 87 a2 d7"
        "b1 24 00 40 00 ce 65 74 9f 25 a6 86 40 4d 05 56"
        "db 84 a9 8a f4 57 c3 48 48 77 aa 18 8a 65 54 bc"
        "e1 ce 13 a5 44 e1 36 0d 98 0f 08 c9 52 dd b0 a4"
        "87 58 66 45 2f b1 8c fe 86 3a cb b4 39 9d 43 aa"
        "39 b5 30 ab 00"
    );

    #[test]
    fn signed_round_trip_and_erased_flash_after_it() {
        let img = signed();
        let info = verify(&img, &oem(), 5).unwrap();
        assert_eq!(info.header.version, Version::new(1, 2, 3));
        assert_eq!(info.header.hdr_size, 0x200);
        assert_eq!(info.header.protect_tlv_size as usize, PROT_SIZE);
        assert_eq!(info.security_counter, 5);
        assert_eq!(info.behaviour, Behaviour::Hang { watchdog_ms: 250 });
        assert!(info.signed);
        assert_eq!(info.total_size, img.len());
        assert_eq!(info.total_size, SIG_TLV + 4 + 64);
        assert_eq!(info.hash, digest_of(&builder()));
        // Without keys only the hash is checked.
        let unsigned_check = verify(&img, &Keyring::new(), 0).unwrap();
        assert!(!unsigned_check.signed);
        // Followed by erased flash (or anything), it still verifies, with the same extent.
        for fill in [0xff, 0x00, 0x69] {
            let mut slot = img.clone();
            slot.resize(img.len() + 4096, fill);
            assert_eq!(verify(&slot, &oem(), 0), Ok(info.clone()));
        }
    }

    #[test]
    fn parse_exposes_the_layout() {
        let img = signed();
        let p = parse(&img).unwrap();
        assert_eq!(p.payload, &(0..200u8).collect::<Vec<_>>()[..]);
        assert_eq!(p.hashed.len(), UNPROT);
        assert_eq!(p.unprotected_offset(), UNPROT);
        let tlvs: Vec<(u16, usize, bool, usize)> = p
            .tlvs()
            .map(|t| (t.kind, t.value.len(), t.protected, t.offset))
            .collect();
        assert_eq!(
            tlvs,
            [
                (TLV_SEC_CNT, 4, true, PROT + 4),
                (TLV_SIM_BEHAVIOUR, 5, true, PROT + 12),
                (TLV_SHA256, 32, false, SHA_TLV),
                (TLV_KEYHASH, 32, false, KEYHASH_TLV),
                (TLV_ED25519, 64, false, SIG_TLV),
            ]
        );
        assert_eq!(p.find(TLV_SEC_CNT, true), Some(&5u32.to_le_bytes()[..]));
        assert_eq!(p.find(TLV_SEC_CNT, false), None);
        // The protected area as bytes: info, SEC_CNT, simulation TLV.
        assert_eq!(
            img[PROT..UNPROT],
            hex!("08 69 15 00  50 00 04 00 05 00 00 00  a5 00 05 00 02 fa 00 00 00")
        );
        assert_eq!(img[UNPROT..SHA_TLV + 4], hex!("07 69 90 00  10 00 20 00"));
    }

    #[test]
    fn unsigned_images_with_and_without_tlvs_and_header_sizes() {
        for header in [32u16, 0x200] {
            for (counter, behaviour) in [
                (None, None),
                (Some(9), None),
                (None, Some(Behaviour::CrashOnBoot)),
                (Some(0), Some(Behaviour::NoDiagnostics)),
            ] {
                let mut b =
                    ImageBuilder::new(Version::new(0, 0, 1), vec![7; 10]).header_size(header);
                if let Some(c) = counter {
                    b = b.security_counter(c);
                }
                if let Some(x) = behaviour {
                    b = b.behaviour(x);
                }
                let what = format!("header {header}, {counter:?}, {behaviour:?}");
                let unsigned = b.build_unsigned();
                let info = verify(&unsigned, &Keyring::new(), 0).expect(&what);
                assert_eq!(info.security_counter, counter.unwrap_or(0), "{what}");
                assert_eq!(
                    info.behaviour,
                    behaviour.unwrap_or(Behaviour::DEFAULT),
                    "{what}"
                );
                assert!(!info.signed);
                assert_eq!(info.header.hdr_size, header);
                let prot = if counter.is_some() || behaviour.is_some() {
                    4 + counter.map_or(0, |_| 8) + behaviour.map_or(0, |_| 9)
                } else {
                    0
                };
                assert_eq!(usize::from(info.header.protect_tlv_size), prot, "{what}");
                assert_eq!(unsigned.len(), usize::from(header) + 10 + prot + 4 + 36);
                assert_eq!(
                    verify(&unsigned, &oem(), 0),
                    Err(ImageError::MissingSignature),
                    "{what}"
                );
                let signed = b.sign(&dev_key("oem"));
                let info = verify(&signed, &oem(), 0).expect(&what);
                assert!(info.signed);
                assert_eq!(
                    info.hash,
                    verify(&unsigned, &Keyring::new(), 0).unwrap().hash
                );
            }
        }
    }

    #[test]
    fn header_padding_is_the_erased_value() {
        let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 4]).header_size(0x40);
        let ff = b.clone().build_unsigned();
        assert!(ff[32..0x40].iter().all(|&x| x == 0xff));
        let zeros = b.erased_val(0).build_unsigned();
        assert!(zeros[32..0x40].iter().all(|&x| x == 0));
        // Both verify; the padding is hashed, so the digests differ.
        let (a, z) = (
            verify(&ff, &Keyring::new(), 0).unwrap(),
            verify(&zeros, &Keyring::new(), 0).unwrap(),
        );
        assert_ne!(a.hash, z.hash);
    }

    #[test]
    fn load_addr_sets_ram_load_like_imgtool() {
        let img = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 4])
            .load_addr(0x2000_0000)
            .build_unsigned();
        let h = verify(&img, &Keyring::new(), 0).unwrap().header;
        assert_eq!((h.load_addr, h.flags), (0x2000_0000, IMAGE_F_RAM_LOAD));
    }

    #[test]
    fn bad_magic_and_header_size() {
        let img = signed();
        let mut bad = img.clone();
        bad[0] = 0;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadMagic { found: 0x96f3_b800 })
        );
        // Erased flash is not an image.
        assert_eq!(
            parse(&[0xff; 64]),
            Err(ImageError::BadMagic { found: 0xffff_ffff })
        );
        let mut bad = img.clone();
        bad[8..10].copy_from_slice(&31u16.to_le_bytes());
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadHeaderSize { hdr_size: 31 })
        );
    }

    #[test]
    fn truncated_at_every_part() {
        let img = signed();
        let n = img.len();
        let cases = [
            (0, 32),
            (20, 32),
            (31, 32),
            (32, PROT),
            (0x200 + 100, PROT),
            (PROT + 2, PROT + 4),
            (PROT + 10, UNPROT),
            (UNPROT + 3, UNPROT + 4),
            (UNPROT + 4, n),
            (n - 1, n),
        ];
        for (keep, needed) in cases {
            assert_eq!(
                verify(&img[..keep], &oem(), 0),
                Err(ImageError::Truncated {
                    needed,
                    available: keep
                }),
                "cut at {keep}"
            );
        }
        // An image size that cannot fit in memory is truncated, not an overflow.
        let mut huge = img[..32].to_vec();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse(&huge),
            Err(ImageError::Truncated {
                needed: 0x200 + u32::MAX as usize,
                available: 32
            })
        );
    }

    #[test]
    fn bad_tlv_info_magic_and_protected_size() {
        let img = signed();
        let mut bad = img.clone();
        bad[PROT] = 0x07;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadTlvInfoMagic {
                offset: PROT,
                found: TLV_INFO_MAGIC
            })
        );
        let mut bad = img.clone();
        bad[UNPROT + 1] = 0x00;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadTlvInfoMagic {
                offset: UNPROT,
                found: 0x0007
            })
        );
        // The header claims no protected area, but there is one.
        let mut bad = img.clone();
        bad[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::BadTlvInfoMagic {
                offset: PROT,
                found: TLV_PROT_INFO_MAGIC
            })
        );
        // Header and protected info disagree.
        let mut bad = img.clone();
        bad[10] = PROT_SIZE as u8 + 4;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::ProtectedSizeMismatch {
                header: PROT_SIZE as u16 + 4,
                info: PROT_SIZE as u16
            })
        );
    }

    #[test]
    fn tlv_overflow() {
        let img = signed();
        // The first protected TLV claims more bytes than its area has.
        let mut bad = img.clone();
        bad[PROT + 6] = 0xff;
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::TlvOverflow { offset: PROT + 4 })
        );
        // The unprotected area ends 2 bytes into the signature TLV's header.
        let mut bad = img.clone();
        let size = (SIG_TLV + 2 - UNPROT) as u16;
        bad[UNPROT + 2..UNPROT + 4].copy_from_slice(&size.to_le_bytes());
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::TlvOverflow { offset: SIG_TLV })
        );
        // An area size smaller than its own info.
        let mut bad = img.clone();
        bad[UNPROT + 2..UNPROT + 4].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            verify(&bad, &oem(), 0),
            Err(ImageError::TlvOverflow { offset: UNPROT })
        );
    }

    #[test]
    fn bad_tlv_lengths() {
        let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
        assert_eq!(
            verify(&with_unprotected(&b, &[(TLV_SHA256, &[0; 31])]), &oem(), 0),
            Err(ImageError::BadTlvLength { tlv: 0x10, len: 31 })
        );
        let digest = digest_of(&b);
        let short_key = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_KEYHASH, &[0; 20])]);
        assert_eq!(
            verify(&short_key, &oem(), 0),
            Err(ImageError::BadTlvLength { tlv: 0x01, len: 20 })
        );
        let long_sig = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_ED25519, &[0; 65])]);
        assert_eq!(
            verify(&long_sig, &Keyring::new(), 0),
            Err(ImageError::BadTlvLength { tlv: 0x24, len: 65 })
        );
        let counter = b
            .clone()
            .protected_tlv(TLV_SEC_CNT, vec![1, 0])
            .build_unsigned();
        assert_eq!(
            verify(&counter, &Keyring::new(), 0),
            Err(ImageError::BadTlvLength { tlv: 0x50, len: 2 })
        );
        let behaviour = b
            .protected_tlv(TLV_SIM_BEHAVIOUR, vec![0; 4])
            .build_unsigned();
        let err = verify(&behaviour, &Keyring::new(), 0).unwrap_err();
        assert_eq!(err, ImageError::BadTlvLength { tlv: 0xa5, len: 4 });
        assert_eq!(err.to_string(), "tlv 0x00a5 has length 4 (expected 5)");
    }

    #[test]
    fn duplicate_and_misplaced_tlvs() {
        let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
        let twice = b
            .clone()
            .security_counter(1)
            .protected_tlv(TLV_SEC_CNT, vec![9, 0, 0, 0]);
        assert_eq!(
            verify(&twice.sign(&dev_key("oem")), &oem(), 0),
            Err(ImageError::DuplicateTlv { tlv: TLV_SEC_CNT })
        );
        let twice = b
            .clone()
            .behaviour(Behaviour::CrashOnBoot)
            .protected_tlv(TLV_SIM_BEHAVIOUR, Behaviour::DEFAULT.encode().to_vec());
        assert_eq!(
            verify(&twice.build_unsigned(), &Keyring::new(), 0),
            Err(ImageError::DuplicateTlv {
                tlv: TLV_SIM_BEHAVIOUR
            })
        );
        let digest = digest_of(&b);
        let two_hashes = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_SHA256, &digest)]);
        assert_eq!(
            verify(&two_hashes, &Keyring::new(), 0),
            Err(ImageError::DuplicateTlv { tlv: TLV_SHA256 })
        );
        // A security counter outside the signed area would let anybody change it.
        let sneaky = with_unprotected(
            &b,
            &[(TLV_SHA256, &digest), (TLV_SEC_CNT, &100u32.to_le_bytes())],
        );
        let err = verify(&sneaky, &Keyring::new(), 0).unwrap_err();
        assert_eq!(
            err,
            ImageError::MisplacedTlv {
                tlv: TLV_SEC_CNT,
                protected: false
            }
        );
        assert_eq!(
            err.to_string(),
            "tlv 0x0050 is not allowed in the unprotected tlv area"
        );
        let unknown = with_unprotected(&b, &[(TLV_SHA256, &digest), (0x00a0, b"x")]);
        assert_eq!(
            verify(&unknown, &Keyring::new(), 0),
            Err(ImageError::MisplacedTlv {
                tlv: 0x00a0,
                protected: false
            })
        );
        let hash_inside = b
            .clone()
            .protected_tlv(TLV_SHA256, vec![0; 32])
            .build_unsigned();
        assert_eq!(
            verify(&hash_inside, &Keyring::new(), 0),
            Err(ImageError::MisplacedTlv {
                tlv: TLV_SHA256,
                protected: true
            })
        );
        // Unknown protected TLVs (imgtool's dependencies, custom TLVs) are fine.
        let custom = b
            .protected_tlv(0x00a0, b"anything".to_vec())
            .sign(&dev_key("oem"));
        assert!(verify(&custom, &oem(), 0).is_ok());
    }

    #[test]
    fn missing_hash_and_hash_mismatch() {
        let b = ImageBuilder::new(Version::new(1, 0, 0), vec![1]);
        assert_eq!(
            verify(&with_unprotected(&b, &[]), &Keyring::new(), 0),
            Err(ImageError::MissingHash)
        );
        let img = signed();
        // One payload byte, one header padding byte, one protected TLV byte.
        for at in [0x200 + 10, 100, PROT + 8] {
            let mut bad = img.clone();
            bad[at] ^= 1;
            assert_eq!(
                verify(&bad, &oem(), 0),
                Err(ImageError::HashMismatch),
                "{at}"
            );
            assert_eq!(
                verify(&bad, &Keyring::new(), 0),
                Err(ImageError::HashMismatch),
                "{at}"
            );
        }
        let mut bad = img.clone();
        bad[SHA_TLV + 4] ^= 0x80;
        assert_eq!(verify(&bad, &oem(), 0), Err(ImageError::HashMismatch));
    }

    #[test]
    fn signature_failures() {
        let img = signed();
        let b = builder();
        assert_eq!(
            verify(&b.build_unsigned(), &oem(), 0),
            Err(ImageError::MissingSignature)
        );
        // KEYHASH without a signature after it.
        let digest = digest_of(&b);
        let oem_hash = Keyring::keyhash(&dev_key("oem").verifying_key());
        let no_sig = with_unprotected(&b, &[(TLV_SHA256, &digest), (TLV_KEYHASH, &oem_hash)]);
        assert_eq!(
            verify(&no_sig, &oem(), 0),
            Err(ImageError::MissingSignature)
        );

        let other = Keyring::new().with_key(dev_key("someone else").verifying_key());
        let err = verify(&img, &other, 0).unwrap_err();
        assert_eq!(err, ImageError::UnknownKey { keyhash: oem_hash });
        assert_eq!(
            err.to_string(),
            format!(
                "signed with an unknown key (keyhash {}…)",
                hex(&oem_hash[..8])
            )
        );
        let mut bad = img.clone();
        bad[KEYHASH_TLV + 4] ^= 1;
        assert!(matches!(
            verify(&bad, &oem(), 0),
            Err(ImageError::UnknownKey { .. })
        ));

        for at in [SIG_TLV + 4, SIG_TLV + 4 + 40, img.len() - 1] {
            let mut bad = img.clone();
            bad[at] ^= 1;
            assert_eq!(
                verify(&bad, &oem(), 0),
                Err(ImageError::BadSignature),
                "{at}"
            );
        }
    }

    #[test]
    fn several_signatures() {
        let b = builder();
        let (oem_key, stranger) = (dev_key("oem"), dev_key("stranger"));
        // A stranger's signature first, then ours: accepted (MCUboot skips unknown keys).
        let img = signed_pairs(&b, &[(&stranger, true), (&oem_key, true)]);
        assert!(verify(&img, &oem(), 0).unwrap().signed);
        // A bad signature by a trusted key fails, wherever it is.
        let img = signed_pairs(&b, &[(&oem_key, true), (&oem_key, false)]);
        assert_eq!(verify(&img, &oem(), 0), Err(ImageError::BadSignature));
        // Strangers only.
        let img = signed_pairs(&b, &[(&stranger, true)]);
        assert_eq!(
            verify(&img, &oem(), 0),
            Err(ImageError::UnknownKey {
                keyhash: Keyring::keyhash(&stranger.verifying_key())
            })
        );
        // Either of two trusted keys.
        let both = oem().with_key(stranger.verifying_key());
        assert_eq!(both.len(), 2);
        assert!(verify(&img, &both, 0).is_ok());
    }

    #[test]
    fn security_counter() {
        let img = signed();
        assert_eq!(verify(&img, &oem(), 5).unwrap().security_counter, 5);
        assert_eq!(
            verify(&img, &oem(), 6),
            Err(ImageError::CounterTooLow {
                image: 5,
                required: 6
            })
        );
        // No SEC_CNT counts as 0.
        let plain = ImageBuilder::new(Version::new(1, 0, 0), vec![1]).sign(&dev_key("oem"));
        assert_eq!(verify(&plain, &oem(), 0).unwrap().security_counter, 0);
        assert_eq!(
            verify(&plain, &oem(), 1),
            Err(ImageError::CounterTooLow {
                image: 0,
                required: 1
            })
        );
        assert_eq!(
            ImageError::CounterTooLow {
                image: 2,
                required: 3
            }
            .to_string(),
            "security counter 2 is lower than the stored 3 (downgrade)"
        );
    }

    #[test]
    fn behaviour_tlv() {
        let table = [
            (
                Behaviour::Healthy {
                    confirm_after_ms: 500,
                },
                hex!("00 f4 01 00 00"),
            ),
            (Behaviour::CrashOnBoot, hex!("01 00 00 00 00")),
            (
                Behaviour::Hang {
                    watchdog_ms: 0x0102_0304,
                },
                hex!("02 04 03 02 01"),
            ),
            (Behaviour::NeverConfirm, hex!("03 00 00 00 00")),
            (Behaviour::NoDiagnostics, hex!("04 00 00 00 00")),
        ];
        for (b, bytes) in table {
            assert_eq!(b.encode(), bytes);
            assert_eq!(Behaviour::decode(&bytes), Ok(b));
        }
        assert_eq!(Behaviour::DEFAULT.encode(), table[0].1);
        // Parameters of kinds that take none are ignored.
        assert_eq!(
            Behaviour::decode(&hex!("01 ff ff ff ff")),
            Ok(Behaviour::CrashOnBoot)
        );
        assert_eq!(
            Behaviour::decode(&hex!("05 00 00 00 00")),
            Err(ImageError::BadBehaviour { kind: 5 })
        );
        // In a correctly signed image, an unknown kind is still refused.
        let img = ImageBuilder::new(Version::new(1, 0, 0), vec![1])
            .protected_tlv(TLV_SIM_BEHAVIOUR, hex!("09 00 00 00 00").to_vec())
            .sign(&dev_key("oem"));
        assert_eq!(
            verify(&img, &oem(), 0),
            Err(ImageError::BadBehaviour { kind: 9 })
        );
    }

    #[test]
    fn keys_and_pem() {
        let key = dev_key("oem").verifying_key();
        // Fixed DER prefix + the 32 key bytes, as the pkcs8 encoder writes it.
        let der = key.to_public_key_der().unwrap();
        assert_eq!(Keyring::spki_der(&key)[..], *der.as_bytes());
        assert_eq!(
            Keyring::spki_der(&key)[..12],
            hex!("30 2a 30 05 06 03 2b 65 70 03 21 00")
        );
        assert_eq!(
            Keyring::keyhash(&key),
            <[u8; 32]>::from(Sha256::digest(der.as_bytes()))
        );

        let pem = key.to_public_key_pem(LineEnding::LF).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let mut ring = Keyring::new();
        assert!(ring.is_empty());
        ring.add_pem(&format!("\n{pem}\n")).unwrap();
        ring.add(key);
        assert_eq!(ring.len(), 1, "the same key twice is one key");
        assert_eq!(ring.find(&Keyring::keyhash(&key)), Some(&key));
        assert_eq!(ring.iter().collect::<Vec<_>>(), [&key]);

        let err = ring.add_pem("not a key").unwrap_err();
        assert!(matches!(err, ImageError::BadKey(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("bad key: not an ed25519 public key pem"),
            "{err}"
        );
        // A private key is not a public key.
        let private = dev_key("oem").to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(matches!(ring.add_pem(&private), Err(ImageError::BadKey(_))));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn dev_keys_are_deterministic_and_distinct() {
        let seed: [u8; 32] = Sha256::digest(b"ecu-sim dev key:oem").into();
        assert_eq!(dev_key("oem").to_bytes(), seed);
        assert_eq!(
            dev_key("oem").verifying_key(),
            dev_key("oem").verifying_key()
        );
        assert_ne!(
            dev_key("oem").verifying_key(),
            dev_key("oem2").verifying_key()
        );
    }

    #[test]
    #[should_panic(expected = "header size 16 is smaller than the 32-byte header")]
    fn builder_refuses_a_short_header() {
        let _ = ImageBuilder::new(Version::new(1, 0, 0), vec![]).header_size(16);
    }

    #[test]
    fn versions_parse_print_and_order() {
        let v: Version = "1.2.3+4".parse().unwrap();
        assert_eq!(v, Version::new(1, 2, 3).with_build(4));
        assert_eq!(v.to_string(), "1.2.3+4");
        assert_eq!("2.0.0".parse(), Ok(Version::new(2, 0, 0)));
        assert_eq!(Version::new(2, 0, 0).to_string(), "2.0.0");
        assert_eq!(format!("{:#}", Version::new(2, 0, 0)), "2.0.0+0");
        assert_eq!(
            "255.255.65535+4294967295".parse(),
            Ok(Version {
                major: 255,
                minor: 255,
                revision: 65535,
                build: u32::MAX
            })
        );
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.x",
            "1.2.3.4",
            "1.2.3+",
            "+1.2.3",
            "1.+2.3",
            "1.2.3+-1",
            "256.0.0",
            "0.0.65536",
            " 1.2.3",
            "1.2.3 ",
            "1..3",
            "1.2.3+4+5",
        ] {
            assert_eq!(
                bad.parse::<Version>(),
                Err(ParseVersionError {
                    input: bad.to_string()
                }),
                "{bad:?}"
            );
        }
        assert_eq!(
            "1.2".parse::<Version>().unwrap_err().to_string(),
            "bad version \"1.2\" (expected major.minor.revision[+build], major and minor < 256, revision < 65536)"
        );
        let mut sorted = vec![
            Version::new(1, 10, 0),
            Version::new(1, 9, 300),
            Version::new(0, 255, 65535),
            Version::new(1, 9, 300).with_build(1),
            Version::new(2, 0, 0),
        ];
        sorted.sort();
        assert_eq!(
            sorted,
            [
                Version::new(0, 255, 65535),
                Version::new(1, 9, 300),
                Version::new(1, 9, 300).with_build(1),
                Version::new(1, 10, 0),
                Version::new(2, 0, 0),
            ]
        );
    }

    #[test]
    fn error_messages_are_lowercase_fragments() {
        let errors = [
            ImageError::BadMagic { found: 0x1234_5678 },
            ImageError::Truncated {
                needed: 9,
                available: 3,
            },
            ImageError::BadHeaderSize { hdr_size: 1 },
            ImageError::BadTlvInfoMagic {
                offset: 1,
                found: 2,
            },
            ImageError::ProtectedSizeMismatch { header: 1, info: 2 },
            ImageError::TlvOverflow { offset: 1 },
            ImageError::BadTlvLength { tlv: 0x10, len: 1 },
            ImageError::DuplicateTlv { tlv: 0x10 },
            ImageError::MisplacedTlv {
                tlv: 0x10,
                protected: true,
            },
            ImageError::MissingHash,
            ImageError::HashMismatch,
            ImageError::MissingSignature,
            ImageError::UnknownKey {
                keyhash: [0xab; 32],
            },
            ImageError::BadSignature,
            ImageError::CounterTooLow {
                image: 1,
                required: 2,
            },
            ImageError::BadBehaviour { kind: 7 },
            ImageError::BadKey("x".into()),
        ];
        for e in errors {
            let text = e.to_string();
            let first = text.chars().next().unwrap();
            assert!(first.is_lowercase(), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        assert_eq!(
            ImageError::BadMagic { found: 0x1234_5678 }.to_string(),
            "bad image magic 0x12345678 (expected 0x96f3b83d)"
        );
    }
}
