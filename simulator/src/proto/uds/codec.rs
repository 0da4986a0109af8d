//! UDS wire format shared by the ECU's server and the harness's client: service ids, negative
//! response codes, the memory address/size encoding, session timing, and the project's
//! status records.
//!
//! ## Message shapes
//!
//! | message | bytes |
//! |---|---|
//! | request | `SID params…` |
//! | positive response | `SID+0x40 params…` |
//! | negative response | `7F SID NRC` |
//! | sub-function byte | bit 7: suppress the positive response, bits 0–6: the sub-function |
//! | memory address/size | `ALFID addr… size…`, ALFID high nibble = size bytes, low nibble = address bytes (1–4 each) |

use std::fmt;

use crate::image::Version;

/// Service identifiers.
pub mod sid {
    pub const DIAGNOSTIC_SESSION_CONTROL: u8 = 0x10;
    pub const ECU_RESET: u8 = 0x11;
    pub const CLEAR_DIAGNOSTIC_INFORMATION: u8 = 0x14;
    pub const READ_DTC_INFORMATION: u8 = 0x19;
    pub const READ_DATA_BY_IDENTIFIER: u8 = 0x22;
    pub const SECURITY_ACCESS: u8 = 0x27;
    pub const COMMUNICATION_CONTROL: u8 = 0x28;
    pub const WRITE_DATA_BY_IDENTIFIER: u8 = 0x2E;
    pub const ROUTINE_CONTROL: u8 = 0x31;
    pub const REQUEST_DOWNLOAD: u8 = 0x34;
    pub const TRANSFER_DATA: u8 = 0x36;
    pub const REQUEST_TRANSFER_EXIT: u8 = 0x37;
    pub const TESTER_PRESENT: u8 = 0x3E;
    pub const CONTROL_DTC_SETTING: u8 = 0x85;
    /// First byte of a negative response.
    pub const NEGATIVE_RESPONSE: u8 = 0x7F;
}

/// Bit 7 of a sub-function byte: do not send a positive response.
pub const SUPPRESS_POSITIVE_RESPONSE: u8 = 0x80;
/// Added to the SID in a positive response.
pub const POSITIVE_RESPONSE_OFFSET: u8 = 0x40;

/// Data identifiers this ECU knows.
pub mod did {
    /// Boot software identification (ASCII).
    pub const BOOT_SOFTWARE_ID: u16 = 0xF180;
    /// Active diagnostic session (1 byte).
    pub const ACTIVE_SESSION: u16 = 0xF186;
    /// Spare part number (ASCII).
    pub const PART_NUMBER: u16 = 0xF187;
    /// Application software version of the running image (ASCII, `major.minor.revision[+build]`).
    pub const APPLICATION_VERSION: u16 = 0xF189;
    /// ECU serial number (ASCII).
    pub const SERIAL_NUMBER: u16 = 0xF18C;
    /// VIN (17 ASCII bytes, writable).
    pub const VIN: u16 = 0xF190;
    /// Project: boot status ([`BootStatusRecord`]).
    pub const BOOT_STATUS: u16 = 0xFD00;
    /// Project: primary slot ([`SlotRecord`]).
    pub const PRIMARY_SLOT: u16 = 0xFD01;
    /// Project: secondary slot ([`SlotRecord`]).
    pub const SECONDARY_SLOT: u16 = 0xFD02;
    /// Project: where to download ([`StagingRecord`]).
    pub const STAGING_AREA: u16 = 0xFD03;
    /// Project: why the last boot was not a normal one (ASCII, empty if it was).
    pub const LAST_BOOT_REASON: u16 = 0xFD04;
    /// Project: the stored security (anti-rollback) counter, u32.
    pub const SECURITY_COUNTER: u16 = 0xFD05;
}

/// Routine identifiers (RoutineControl 0x31).
pub mod routine {
    /// Erase memory: `ALFID address size`.
    pub const ERASE_MEMORY: u16 = 0xFF00;
    /// Verify the downloaded image (hash, signature, security counter) and, if it passes, request
    /// it as an upgrade: optional record byte `00` test (default) or `01` permanent.
    pub const CHECK_PROGRAMMING_DEPENDENCIES: u16 = 0xFF01;
    /// Compare the SHA-256 of the last download with the 32-byte record.
    pub const CHECK_MEMORY: u16 = 0x0202;
}

/// RoutineControl sub-functions.
pub mod routine_control {
    pub const START: u8 = 0x01;
    pub const STOP: u8 = 0x02;
    pub const RESULTS: u8 = 0x03;
}

/// Diagnostic sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Session {
    Default = 0x01,
    Programming = 0x02,
    Extended = 0x03,
}

impl Session {
    pub fn from_u8(b: u8) -> Option<Session> {
        match b {
            0x01 => Some(Session::Default),
            0x02 => Some(Session::Programming),
            0x03 => Some(Session::Extended),
            _ => None,
        }
    }
}

/// Negative response codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nrc {
    GeneralReject = 0x10,
    ServiceNotSupported = 0x11,
    SubFunctionNotSupported = 0x12,
    IncorrectMessageLength = 0x13,
    BusyRepeatRequest = 0x21,
    ConditionsNotCorrect = 0x22,
    RequestSequenceError = 0x24,
    RequestOutOfRange = 0x31,
    SecurityAccessDenied = 0x33,
    InvalidKey = 0x35,
    ExceededNumberOfAttempts = 0x36,
    RequiredTimeDelayNotExpired = 0x37,
    UploadDownloadNotAccepted = 0x70,
    TransferDataSuspended = 0x71,
    GeneralProgrammingFailure = 0x72,
    WrongBlockSequenceCounter = 0x73,
    ResponsePending = 0x78,
    SubFunctionNotSupportedInActiveSession = 0x7E,
    ServiceNotSupportedInActiveSession = 0x7F,
}

impl Nrc {
    pub const ALL: [Nrc; 19] = [
        Nrc::GeneralReject,
        Nrc::ServiceNotSupported,
        Nrc::SubFunctionNotSupported,
        Nrc::IncorrectMessageLength,
        Nrc::BusyRepeatRequest,
        Nrc::ConditionsNotCorrect,
        Nrc::RequestSequenceError,
        Nrc::RequestOutOfRange,
        Nrc::SecurityAccessDenied,
        Nrc::InvalidKey,
        Nrc::ExceededNumberOfAttempts,
        Nrc::RequiredTimeDelayNotExpired,
        Nrc::UploadDownloadNotAccepted,
        Nrc::TransferDataSuspended,
        Nrc::GeneralProgrammingFailure,
        Nrc::WrongBlockSequenceCounter,
        Nrc::ResponsePending,
        Nrc::SubFunctionNotSupportedInActiveSession,
        Nrc::ServiceNotSupportedInActiveSession,
    ];

    pub fn from_u8(b: u8) -> Option<Nrc> {
        Nrc::ALL.into_iter().find(|n| *n as u8 == b)
    }

    /// The ISO 14229-1 name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Nrc::GeneralReject => "generalReject",
            Nrc::ServiceNotSupported => "serviceNotSupported",
            Nrc::SubFunctionNotSupported => "subFunctionNotSupported",
            Nrc::IncorrectMessageLength => "incorrectMessageLengthOrInvalidFormat",
            Nrc::BusyRepeatRequest => "busyRepeatRequest",
            Nrc::ConditionsNotCorrect => "conditionsNotCorrect",
            Nrc::RequestSequenceError => "requestSequenceError",
            Nrc::RequestOutOfRange => "requestOutOfRange",
            Nrc::SecurityAccessDenied => "securityAccessDenied",
            Nrc::InvalidKey => "invalidKey",
            Nrc::ExceededNumberOfAttempts => "exceededNumberOfAttempts",
            Nrc::RequiredTimeDelayNotExpired => "requiredTimeDelayNotExpired",
            Nrc::UploadDownloadNotAccepted => "uploadDownloadNotAccepted",
            Nrc::TransferDataSuspended => "transferDataSuspended",
            Nrc::GeneralProgrammingFailure => "generalProgrammingFailure",
            Nrc::WrongBlockSequenceCounter => "wrongBlockSequenceCounter",
            Nrc::ResponsePending => "requestCorrectlyReceived-ResponsePending",
            Nrc::SubFunctionNotSupportedInActiveSession => "subFunctionNotSupportedInActiveSession",
            Nrc::ServiceNotSupportedInActiveSession => "serviceNotSupportedInActiveSession",
        }
    }
}

impl fmt::Display for Nrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x} {}", *self as u8, self.name())
    }
}

/// A negative response `7F SID NRC`.
pub fn negative(sid: u8, nrc: Nrc) -> Vec<u8> {
    vec![sid::NEGATIVE_RESPONSE, sid, nrc as u8]
}

/// What a response says, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Positive response to `sid`; `params` follow the response SID.
    Positive { sid: u8, params: &'a [u8] },
    /// Negative response; `nrc` is the raw code (it may be one this crate does not name).
    Negative { sid: u8, nrc: u8 },
}

/// Errors decoding UDS bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty message")]
    Empty,
    #[error("negative response is {len} bytes (expected 3)")]
    BadNegative { len: usize },
    #[error("0x{0:02x} is not a response sid")]
    NotAResponse(u8),
    #[error("addressAndLengthFormatIdentifier 0x{0:02x} is invalid (each nibble must be 1..=4)")]
    BadFormat(u8),
    #[error("{field} needs {needed} bytes, {available} available")]
    Short {
        field: &'static str,
        needed: usize,
        available: usize,
    },
}

/// Split a response into positive/negative.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply<'_>, CodecError> {
    match bytes {
        [] => Err(CodecError::Empty),
        [sid::NEGATIVE_RESPONSE, sid, nrc] => Ok(Reply::Negative {
            sid: *sid,
            nrc: *nrc,
        }),
        [sid::NEGATIVE_RESPONSE, ..] => Err(CodecError::BadNegative { len: bytes.len() }),
        [rsid, params @ ..] if *rsid >= POSITIVE_RESPONSE_OFFSET => Ok(Reply::Positive {
            sid: rsid - POSITIVE_RESPONSE_OFFSET,
            params,
        }),
        [other, ..] => Err(CodecError::NotAResponse(*other)),
    }
}

/// A memory region as RequestDownload and eraseMemory carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub address: u32,
    pub size: u32,
}

/// Decode `ALFID address size` at the start of `bytes`; returns the range and the bytes used.
/// Addresses and sizes wider than 4 bytes are refused (this ECU has a 32-bit address space).
pub fn decode_memory(bytes: &[u8]) -> Result<(MemoryRange, usize), CodecError> {
    let &alfid = bytes.first().ok_or(CodecError::Short {
        field: "addressAndLengthFormatIdentifier",
        needed: 1,
        available: 0,
    })?;
    let (size_len, addr_len) = ((alfid >> 4) as usize, (alfid & 0x0F) as usize);
    if !(1..=4).contains(&size_len) || !(1..=4).contains(&addr_len) {
        return Err(CodecError::BadFormat(alfid));
    }
    let needed = 1 + addr_len + size_len;
    if bytes.len() < needed {
        return Err(CodecError::Short {
            field: "memoryAddress and memorySize",
            needed,
            available: bytes.len(),
        });
    }
    let be = |b: &[u8]| b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x));
    let address = be(&bytes[1..1 + addr_len]);
    let size = be(&bytes[1 + addr_len..needed]);
    Ok((MemoryRange { address, size }, needed))
}

/// Encode `ALFID address size` with 4-byte address and size (ALFID 0x44).
pub fn encode_memory(range: MemoryRange) -> Vec<u8> {
    let mut out = vec![0x44];
    out.extend_from_slice(&range.address.to_be_bytes());
    out.extend_from_slice(&range.size.to_be_bytes());
    out
}

/// Session timing from the DiagnosticSessionControl response: `P2 (ms, u16) P2* (10 ms, u16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTiming {
    pub p2_us: u64,
    pub p2_star_us: u64,
}

impl SessionTiming {
    pub fn encode(&self) -> [u8; 4] {
        let p2 = (self.p2_us / 1000).min(0xFFFF) as u16;
        let p2s = (self.p2_star_us / 10_000).min(0xFFFF) as u16;
        let [a, b] = p2.to_be_bytes();
        let [c, d] = p2s.to_be_bytes();
        [a, b, c, d]
    }
    pub fn decode(b: &[u8]) -> Result<SessionTiming, CodecError> {
        if b.len() < 4 {
            return Err(CodecError::Short {
                field: "session parameter record",
                needed: 4,
                available: b.len(),
            });
        }
        Ok(SessionTiming {
            p2_us: u64::from(u16::from_be_bytes([b[0], b[1]])) * 1000,
            p2_star_us: u64::from(u16::from_be_bytes([b[2], b[3]])) * 10_000,
        })
    }
}

/// `major minor revision(u16 BE) build(u32 BE)`; all 0xFF when there is no version.
pub fn encode_version(v: Option<Version>) -> [u8; 8] {
    match v {
        None => [0xFF; 8],
        Some(v) => {
            let r = v.revision.to_be_bytes();
            let b = v.build.to_be_bytes();
            [v.major, v.minor, r[0], r[1], b[0], b[1], b[2], b[3]]
        }
    }
}

pub fn decode_version(b: &[u8; 8]) -> Option<Version> {
    if *b == [0xFF; 8] {
        return None;
    }
    Some(Version {
        major: b[0],
        minor: b[1],
        revision: u16::from_be_bytes([b[2], b[3]]),
        build: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    })
}

fn take<const N: usize>(b: &[u8], at: usize, field: &'static str) -> Result<[u8; N], CodecError> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(CodecError::Short {
            field,
            needed: at + N,
            available: b.len(),
        })
}

/// DID 0xFD00, 16 bytes:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | running slot: 0 primary, 1 secondary |
/// | 1 | 8 | running version |
/// | 9 | 1 | flags: bit 0 on probation (test boot), bit 1 confirmed |
/// | 10 | 1 | boot attempt of a test image (0 otherwise) |
/// | 11 | 4 | boot count since the simulator started (u32 BE) |
/// | 15 | 1 | last boot outcome: 1 normal, 2 test boot, 3 upgraded, 4 reverted, 5 image rejected |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootStatusRecord {
    pub slot: u8,
    pub version: Option<Version>,
    pub on_probation: bool,
    pub confirmed: bool,
    pub attempt: u8,
    pub boot_count: u32,
    pub outcome: u8,
}

impl BootStatusRecord {
    pub const LEN: usize = 16;
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.slot];
        out.extend_from_slice(&encode_version(self.version));
        out.push(u8::from(self.on_probation) | (u8::from(self.confirmed) << 1));
        out.push(self.attempt);
        out.extend_from_slice(&self.boot_count.to_be_bytes());
        out.push(self.outcome);
        out
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let flags = take::<1>(b, 9, "boot status flags")?[0];
        Ok(BootStatusRecord {
            slot: take::<1>(b, 0, "boot status slot")?[0],
            version: decode_version(&take::<8>(b, 1, "boot status version")?),
            on_probation: flags & 1 != 0,
            confirmed: flags & 2 != 0,
            attempt: take::<1>(b, 10, "boot attempt")?[0],
            boot_count: u32::from_be_bytes(take::<4>(b, 11, "boot count")?),
            outcome: take::<1>(b, 15, "boot outcome")?[0],
        })
    }
}

/// DIDs 0xFD01/0xFD02, 10 bytes:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | version in the image header (0xFF… if none parses) |
/// | 8 | 1 | image: 0 none, 1 valid (hash, signature and counter verify), 2 invalid |
/// | 9 | 1 | trailer: bit 0 magic, bit 1 test requested/on probation, bit 2 permanent, bit 3 image_ok, bit 4 copy_done |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRecord {
    pub version: Option<Version>,
    pub image: u8,
    pub trailer: u8,
}

impl SlotRecord {
    pub const LEN: usize = 10;
    pub const TRAILER_MAGIC: u8 = 0x01;
    pub const TRAILER_TEST: u8 = 0x02;
    pub const TRAILER_PERMANENT: u8 = 0x04;
    pub const TRAILER_IMAGE_OK: u8 = 0x08;
    pub const TRAILER_COPY_DONE: u8 = 0x10;
    pub fn encode(&self) -> Vec<u8> {
        let mut out = encode_version(self.version).to_vec();
        out.push(self.image);
        out.push(self.trailer);
        out
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        Ok(SlotRecord {
            version: decode_version(&take::<8>(b, 0, "slot version")?),
            image: take::<1>(b, 8, "slot image state")?[0],
            trailer: take::<1>(b, 9, "slot trailer flags")?[0],
        })
    }
}

/// DID 0xFD03, 14 bytes: `slot(1) address(u32) size(u32) erase_sector(u32) write_align(1)`:
/// the region RequestDownload accepts (the staging slot's image area).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagingRecord {
    pub slot: u8,
    pub address: u32,
    pub size: u32,
    /// Size of the largest sector in the area.
    pub erase_sector: u32,
    pub write_align: u8,
}

impl StagingRecord {
    pub const LEN: usize = 14;
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.slot];
        out.extend_from_slice(&self.address.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.erase_sector.to_be_bytes());
        out.push(self.write_align);
        out
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        Ok(StagingRecord {
            slot: take::<1>(b, 0, "staging slot")?[0],
            address: u32::from_be_bytes(take::<4>(b, 1, "staging address")?),
            size: u32::from_be_bytes(take::<4>(b, 5, "staging size")?),
            erase_sector: u32::from_be_bytes(take::<4>(b, 9, "erase sector size")?),
            write_align: take::<1>(b, 13, "write alignment")?[0],
        })
    }
}

/// The fixed length of a DID's value, for DIDs whose length is fixed (used by clients that
/// parse multi-DID responses).
pub fn did_len(id: u16) -> Option<usize> {
    match id {
        did::ACTIVE_SESSION => Some(1),
        did::VIN => Some(17),
        did::BOOT_STATUS => Some(BootStatusRecord::LEN),
        did::PRIMARY_SLOT | did::SECONDARY_SLOT => Some(SlotRecord::LEN),
        did::STAGING_AREA => Some(StagingRecord::LEN),
        did::SECURITY_COUNTER => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(&hex!("7f 34 33")),
            Ok(Reply::Negative {
                sid: 0x34,
                nrc: 0x33
            })
        );
        assert_eq!(
            parse_reply(&hex!("50 02 00 32 01 f4")),
            Ok(Reply::Positive {
                sid: 0x10,
                params: &hex!("02 00 32 01 f4")
            })
        );
        assert_eq!(parse_reply(&[]), Err(CodecError::Empty));
        assert_eq!(
            parse_reply(&hex!("7f 34")),
            Err(CodecError::BadNegative { len: 2 })
        );
        assert_eq!(
            parse_reply(&hex!("10 01")),
            Err(CodecError::NotAResponse(0x10))
        );
    }

    #[test]
    fn memory_ranges() {
        let (r, used) = decode_memory(&hex!("44 00 08 00 00 00 01 00 00 ff")).unwrap();
        assert_eq!((r.address, r.size, used), (0x0008_0000, 0x0001_0000, 9));
        let (r, used) = decode_memory(&hex!("12 80 00 01 00")).unwrap();
        assert_eq!((r.address, r.size, used), (0x8000, 0x01, 4));
        assert_eq!(
            encode_memory(MemoryRange {
                address: 0x20000,
                size: 0x1234
            }),
            hex!("44 00 02 00 00 00 00 12 34")
        );
        assert_eq!(
            decode_memory(&hex!("05 00")),
            Err(CodecError::BadFormat(0x05))
        );
        assert_eq!(
            decode_memory(&hex!("51 00")),
            Err(CodecError::BadFormat(0x51))
        );
        assert!(matches!(
            decode_memory(&hex!("44 00 00")),
            Err(CodecError::Short { needed: 9, .. })
        ));
    }

    #[test]
    fn timing_and_records_round_trip() {
        let t = SessionTiming {
            p2_us: 50_000,
            p2_star_us: 5_000_000,
        };
        assert_eq!(t.encode(), hex!("00 32 01 f4"));
        assert_eq!(SessionTiming::decode(&t.encode()), Ok(t));

        let b = BootStatusRecord {
            slot: 1,
            version: Some(Version {
                major: 1,
                minor: 2,
                revision: 0x0304,
                build: 5,
            }),
            on_probation: true,
            confirmed: false,
            attempt: 1,
            boot_count: 7,
            outcome: 2,
        };
        let bytes = b.encode();
        assert_eq!(
            bytes,
            hex!("01 01 02 03 04 00 00 00 05 01 01 00 00 00 07 02")
        );
        assert_eq!(BootStatusRecord::decode(&bytes), Ok(b));
        let s = SlotRecord {
            version: None,
            image: 0,
            trailer: 0,
        };
        assert_eq!(s.encode(), hex!("ff ff ff ff ff ff ff ff 00 00"));
        assert_eq!(SlotRecord::decode(&s.encode()), Ok(s));
        let st = StagingRecord {
            slot: 1,
            address: 0x48000,
            size: 0x3f000,
            erase_sector: 0x1000,
            write_align: 8,
        };
        assert_eq!(st.encode().len(), StagingRecord::LEN);
        assert_eq!(StagingRecord::decode(&st.encode()), Ok(st));
        assert!(BootStatusRecord::decode(&[1, 2]).is_err());
    }

    #[test]
    fn nrc_names() {
        for n in Nrc::ALL {
            assert_eq!(Nrc::from_u8(n as u8), Some(n));
        }
        assert_eq!(Nrc::from_u8(0x99), None);
        assert_eq!(
            Nrc::SecurityAccessDenied.to_string(),
            "0x33 securityAccessDenied"
        );
    }
}
