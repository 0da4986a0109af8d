//! Reading an image: the header, the TLV areas, the layout checks.

use super::*;

/// The 32-byte image header (layout in the [module docs](super#header)).
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
