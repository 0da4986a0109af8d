//! Slot trailer: MCUboot's image trailer, at the end of the last sector of each slot.
//!
//! Laid out as MCUboot lays it out ([`TrailerMap`], `docs/design.md` "Image trailer"): every
//! field padded to `BOOT_MAX_ALIGN` (`A` = max(write unit, 8)) and written by one flash
//! operation, the magic in the slot's last 16 bytes. Offsets from the end of the slot
//! (`M` = 16 rounded up to `A`):
//!
//! | from the end | size | field | values |
//! |---|---|---|---|
//! | −M | M | magic | `A` = 8: `77 c2 95 f3 60 d2 ef 7f 35 52 50 0f 2c b6 79 80`; `A` = 16, 32: `A` as u16 LE, then `2d e1 5d 29 41 0b 8d 77 67 9c 11 0f 1f 8a`; the 16 bytes end the slot, erased padding before them |
//! | −M−A | A | image_ok | `0x01` = the image is confirmed |
//! | −M−2A | A | copy_done | `0x01` = installed by a finished swap (direct-xip: selected to run once) |
//! | −M−3A | A | swap info | swap type in bits 0–3 (`2` test, `3` permanent, `4` revert), image number 0 in bits 4–7 |
//! | −M−4A | A | unprotected TLV sizes | swap-offset only; reserved (erased) |
//! | below | A | swap size | u32 LE (MCUboot: what the swap moves); erased here: the journal's start record holds the swap's sector count |
//! | below | 2 × align_up(32, A) | encryption keys 0, 1 | reserved, erased: no image is encrypted yet |
//! | below | max sectors × states × write size | swap status | reserved, erased: this simulator records swap progress in its journal (see [`super::journal`]) |
//! | sector start | 16 × A | boot attempt *i* | this simulator's: `0x01` = attempt *i* of a test image started (`max_boot_attempts` > 1; MCUboot's one attempt is copy_done) |
//!
//! A flag reads *set* only if its unit is exactly `[0x01, erased…]`; *unset* if the unit is
//! erased; anything else (a torn write) is *bad*, which every reader treats as unset, as
//! MCUboot's `boot_flag_decode` does. The magic reads good only when all 16 bytes match.
//!
//! What a slot's trailer says, read as MCUboot reads it (`boot_swap_type`):
//!
//! | slot | magic | image_ok | copy_done | meaning |
//! |---|---|---|---|---|
//! | secondary | good | unset | any | upgrade request, test (`imgtool sign --pad`) |
//! | secondary | good | set | any | upgrade request, permanent (`--pad --confirm`) |
//! | primary | good | unset | set | a test image on probation: revert unless it confirms |
//!
//! When this simulator builds a trailer it writes swap info, copy_done and image_ok before the
//! magic, so a trailer is valid only once complete (MCUboot's `boot_set_pending`
//! writes the magic first). Attempt units that are not erased count as used, torn or not:
//! probation only gets shorter, never longer.

use crate::flash::{Flash, FlashError};

use super::layout::{BootMode, Layout, Slot};

/// MCUboot's boot magic for `BOOT_MAX_ALIGN` = 8.
pub const BOOT_MAGIC: [u8; 16] = [
    0x77, 0xc2, 0x95, 0xf3, 0x60, 0xd2, 0xef, 0x7f, 0x35, 0x52, 0x50, 0x0f, 0x2c, 0xb6, 0x79, 0x80,
];

/// The 14 bytes after the alignment in MCUboot's magic for `BOOT_MAX_ALIGN` ≠ 8.
pub const BOOT_MAGIC_ALIGNED: [u8; 14] = [
    0x2d, 0xe1, 0x5d, 0x29, 0x41, 0x0b, 0x8d, 0x77, 0x67, 0x9c, 0x11, 0x0f, 0x1f, 0x8a,
];

/// The magic for a `BOOT_MAX_ALIGN` of `max_align` bytes.
pub fn boot_magic(max_align: u32) -> [u8; 16] {
    if max_align == 8 {
        return BOOT_MAGIC;
    }
    let mut m = [0; 16];
    m[..2].copy_from_slice(&(max_align as u16).to_le_bytes());
    m[2..].copy_from_slice(&BOOT_MAGIC_ALIGNED);
    m
}

/// Attempt units in a trailer: the upper bound of `max_boot_attempts`.
pub const MAX_ATTEMPTS: u8 = 16;

const FLAG_SET: u8 = 0x01;

/// What a swap does, or what an upgrade request asks for (MCUboot's `BOOT_SWAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SwapType {
    /// Boot the new image on probation; revert unless it confirms.
    Test,
    /// Install for good.
    Perm,
    /// Put the previous image back.
    Revert,
}

impl SwapType {
    pub fn to_byte(self) -> u8 {
        match self {
            SwapType::Test => 0x02,
            SwapType::Perm => 0x03,
            SwapType::Revert => 0x04,
        }
    }
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x02 => Some(SwapType::Test),
            0x03 => Some(SwapType::Perm),
            0x04 => Some(SwapType::Revert),
            _ => None,
        }
    }
}

/// A one-unit flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Unset,
    Set,
    /// Neither erased nor set: a torn write.
    Bad,
}

impl Flag {
    pub fn is_set(self) -> bool {
        self == Flag::Set
    }
}

/// The fields of a trailer this simulator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Magic,
    /// Swap info: the swap type (bits 0–3) of image 0.
    SwapInfo,
    SwapSize,
    ImageOk,
    CopyDone,
    Attempt(u8),
}

/// A decoded trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub magic: bool,
    /// Swap info's swap type (`None`: erased or not a swap type).
    pub swap_type: Option<SwapType>,
    /// Swap size (`None`: erased).
    pub swap_size: Option<u32>,
    pub image_ok: Flag,
    pub copy_done: Flag,
    /// Attempt units that are not erased.
    pub attempts: u8,
}

impl Trailer {
    /// A complete trailer whose image is not confirmed: in the staging slot an upgrade
    /// request for a test, in the running slot a test image on probation.
    pub fn is_pending(&self) -> bool {
        self.magic && !self.image_ok.is_set()
    }
    pub fn is_confirmed(&self) -> bool {
        self.magic && self.image_ok.is_set()
    }
    /// The upgrade this trailer requests when it is the secondary slot's (MCUboot's
    /// `boot_swap_type`, states II and III): magic good and image_ok unset → test, set →
    /// permanent. The swap info byte is not consulted (`imgtool sign --pad` leaves it erased).
    pub fn request(&self) -> Option<SwapType> {
        match (self.magic, self.image_ok) {
            (true, Flag::Unset) => Some(SwapType::Test),
            (true, Flag::Set) => Some(SwapType::Perm),
            _ => None,
        }
    }
}

/// Absolute address and length of a field in `slot`'s trailer.
pub fn field_location(layout: &Layout, slot: Slot, field: Field) -> (u32, u32) {
    let base = layout.slot(slot).trailer_offset;
    let (t, u) = (&layout.trailer, layout.unit);
    match field {
        Field::Magic => (base + t.magic, t.magic_len),
        Field::SwapInfo => (base + t.swap_info, u),
        Field::SwapSize => (base + t.swap_size, u),
        Field::ImageOk => (base + t.image_ok, u),
        Field::CopyDone => (base + t.copy_done, u),
        // Direct-xip's first attempt is MCUboot's "selected" mark, copy_done.
        Field::Attempt(0) if layout.mode == BootMode::DirectXip => (base + t.copy_done, u),
        Field::Attempt(i) => (base + t.attempts + u32::from(i) * u, u),
    }
}

/// Read and decode `slot`'s trailer with one read of its sector.
pub fn read<F: Flash>(flash: &F, layout: &Layout, slot: Slot) -> Result<Trailer, FlashError> {
    let area = layout.slot(slot);
    let base = area.trailer_offset;
    let mut buf = vec![0; area.trailer_size as usize];
    flash.read(base, &mut buf)?;
    let at = |field| {
        let (addr, len) = field_location(layout, slot, field);
        let start = (addr - base) as usize;
        &buf[start..start + len as usize]
    };
    let erased = layout.erased;
    let flag = |bytes: &[u8]| {
        if bytes.iter().all(|&b| b == erased) {
            Flag::Unset
        } else if bytes[0] == FLAG_SET && bytes[1..].iter().all(|&b| b == erased) {
            Flag::Set
        } else {
            Flag::Bad
        }
    };
    let m = at(Field::Magic);
    let magic = m[m.len() - 16..] == boot_magic(layout.unit);
    let si = at(Field::SwapInfo);
    let swap_type = if si[1..].iter().all(|&b| b == erased) {
        SwapType::from_byte(si[0] & 0x0f).filter(|_| si[0] >> 4 == 0)
    } else {
        None
    };
    let ss = at(Field::SwapSize);
    let swap_size = (!ss.iter().all(|&b| b == erased))
        .then(|| u32::from_le_bytes([ss[0], ss[1], ss[2], ss[3]]));
    let attempts = (0..MAX_ATTEMPTS)
        .filter(|&i| at(Field::Attempt(i)).iter().any(|&b| b != erased))
        .count() as u8;
    Ok(Trailer {
        magic,
        swap_type,
        swap_size,
        image_ok: flag(at(Field::ImageOk)),
        copy_done: flag(at(Field::CopyDone)),
        attempts,
    })
}

/// Encoded bytes of one field (a flag or the swap info in the first byte, the swap size in
/// the first four, the magic in the last 16; the rest erased). `value` is the swap info's
/// swap type or the swap size; flags ignore it.
pub fn encode_field(layout: &Layout, field: Field, value: u32) -> Vec<u8> {
    let (_, len) = field_location(layout, Slot::Primary, field);
    let mut unit = vec![layout.erased; len as usize];
    match field {
        Field::Magic => unit[len as usize - 16..].copy_from_slice(&boot_magic(layout.unit)),
        Field::SwapInfo => unit[0] = value as u8 & 0x0f,
        Field::SwapSize => unit[..4].copy_from_slice(&value.to_le_bytes()),
        Field::ImageOk | Field::CopyDone | Field::Attempt(_) => unit[0] = FLAG_SET,
    }
    unit
}

/// Program one field of `slot`'s trailer (one flash operation); `value` as for
/// [`encode_field`].
pub fn write_field<F: Flash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    field: Field,
    value: u32,
) -> Result<(), FlashError> {
    let (addr, _) = field_location(layout, slot, field);
    flash.write(addr, &encode_field(layout, field, value))
}

/// Erase `slot`'s trailer sector (one flash operation).
pub fn erase<F: Flash>(flash: &mut F, layout: &Layout, slot: Slot) -> Result<(), FlashError> {
    let area = layout.slot(slot);
    flash.erase(area.trailer_offset, area.trailer_size)
}

/// What [`write_complete`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Complete {
    pub swap_type: SwapType,
    /// Swap size, when a swap wrote the trailer.
    pub swap_size: Option<u32>,
    pub image_ok: bool,
    pub copy_done: bool,
}

/// Build a complete trailer in an erased trailer sector: swap info, swap size, flags, then
/// the magic last.
pub fn write_complete<F: Flash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    c: Complete,
) -> Result<(), FlashError> {
    write_field(
        flash,
        layout,
        slot,
        Field::SwapInfo,
        u32::from(c.swap_type.to_byte()),
    )?;
    if let Some(size) = c.swap_size {
        write_field(flash, layout, slot, Field::SwapSize, size)?;
    }
    if c.copy_done {
        write_field(flash, layout, slot, Field::CopyDone, 0)?;
    }
    if c.image_ok {
        write_field(flash, layout, slot, Field::ImageOk, 0)?;
    }
    write_field(flash, layout, slot, Field::Magic, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::{CutVariant, Geometry, SimFlash};
    use hex_literal::hex;

    fn setup_mode(align: usize, mode: BootMode) -> (SimFlash, Layout) {
        let g = Geometry::uniform(1024, 4 + 2 * 3 + 1, align).unwrap();
        let l = Layout::auto(&g, mode).unwrap();
        (SimFlash::new(g, 9), l)
    }

    fn setup(align: usize) -> (SimFlash, Layout) {
        setup_mode(align, BootMode::SwapScratch)
    }

    #[test]
    fn field_offsets_follow_mcuboot() {
        let (_, l) = setup(8);
        let end = l.primary.trailer_offset + l.primary.trailer_size;
        let at = |f| field_location(&l, Slot::Primary, f);
        assert_eq!(at(Field::Magic), (end - 16, 16));
        assert_eq!(at(Field::ImageOk), (end - 24, 8));
        assert_eq!(at(Field::CopyDone), (end - 32, 8));
        assert_eq!(at(Field::SwapInfo), (end - 40, 8));
        assert_eq!(at(Field::SwapSize), (end - 48, 8));
        assert_eq!(
            l.trailer.enc_keys,
            [(1024 - 48 - 32, 32), (1024 - 48 - 64, 32)]
        );
        // 3 sectors per slot × 3 states × 8-byte writes.
        assert_eq!(l.trailer.status, (1024 - 48 - 64 - 72, 72));
        assert_eq!(l.trailer.mcuboot_size, 72 + 64 + 48);
        assert_eq!(at(Field::Attempt(2)), (l.primary.trailer_offset + 16, 8));

        let (_, l) = setup(32);
        let end = l.secondary.trailer_offset + l.secondary.trailer_size;
        let at = |f| field_location(&l, Slot::Secondary, f);
        // BOOT_MAX_ALIGN 32: the magic field is 32 bytes, the magic its last 16.
        assert_eq!(at(Field::Magic), (end - 32, 32));
        assert_eq!(at(Field::ImageOk), (end - 64, 32));
        assert_eq!(at(Field::SwapInfo), (end - 128, 32));
        // swap-offset adds the unprotected TLV sizes and keeps 2 states per sector.
        let (_, l) = setup_mode(8, BootMode::SwapOffset);
        assert_eq!(l.trailer.tlv_sizes, Some(1024 - 48));
        assert_eq!(l.trailer.swap_size, 1024 - 56);
        let sectors = l.secondary.region.sectors.len() as u32;
        assert_eq!(l.trailer.status.1, sectors * 2 * 8);
        // No swap, no status area.
        let (_, l) = setup_mode(8, BootMode::Overwrite);
        assert_eq!(l.trailer.status.1, 0);
    }

    #[test]
    fn direct_xip_first_attempt_is_copy_done() {
        let (_, l) = setup_mode(8, BootMode::DirectXip);
        assert_eq!(
            field_location(&l, Slot::Primary, Field::Attempt(0)),
            field_location(&l, Slot::Primary, Field::CopyDone)
        );
        assert_ne!(
            field_location(&l, Slot::Primary, Field::Attempt(1)),
            field_location(&l, Slot::Primary, Field::CopyDone)
        );
    }

    #[test]
    fn encodes_units_with_erased_padding() {
        let (_, l) = setup(8);
        assert_eq!(
            encode_field(&l, Field::ImageOk, 0),
            hex!("01 ff ff ff ff ff ff ff")
        );
        assert_eq!(
            encode_field(&l, Field::SwapInfo, u32::from(SwapType::Perm.to_byte())),
            hex!("03 ff ff ff ff ff ff ff")
        );
        assert_eq!(
            encode_field(&l, Field::SwapSize, 0x1234),
            hex!("34 12 00 00 ff ff ff ff")
        );
        assert_eq!(
            encode_field(&l, Field::Magic, 0),
            hex!("77 c2 95 f3 60 d2 ef 7f 35 52 50 0f 2c b6 79 80")
        );
        let (_, l) = setup(16);
        assert_eq!(
            encode_field(&l, Field::Magic, 0),
            hex!("10 00 2d e1 5d 29 41 0b 8d 77 67 9c 11 0f 1f 8a")
        );
        let (_, l) = setup(32);
        let m = encode_field(&l, Field::Magic, 0);
        assert_eq!(m[..16], [0xff; 16]);
        assert_eq!(
            m[16..],
            hex!("20 00 2d e1 5d 29 41 0b 8d 77 67 9c 11 0f 1f 8a")
        );
    }

    fn test_request() -> Complete {
        Complete {
            swap_type: SwapType::Test,
            swap_size: None,
            image_ok: false,
            copy_done: false,
        }
    }

    #[test]
    fn round_trip_and_states() {
        let (mut f, l) = setup(8);
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert!(!t.magic && !t.is_pending() && !t.is_confirmed());
        assert_eq!(t.request(), None);
        write_complete(&mut f, &l, Slot::Secondary, test_request()).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert!(t.magic && t.is_pending());
        assert_eq!(t.swap_type, Some(SwapType::Test));
        assert_eq!(t.request(), Some(SwapType::Test));
        write_field(&mut f, &l, Slot::Secondary, Field::Attempt(0), 0).unwrap();
        write_field(&mut f, &l, Slot::Secondary, Field::ImageOk, 0).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert_eq!(t.attempts, 1);
        assert!(t.is_confirmed() && !t.is_pending());
        assert_eq!(t.request(), Some(SwapType::Perm));
        assert_eq!(read(&f, &l, Slot::Primary).unwrap().attempts, 0);
    }

    #[test]
    fn magic_alone_is_a_test_request_as_imgtool_pads_it() {
        // `imgtool sign --pad` writes only the magic (and image_ok with --confirm).
        let (mut f, l) = setup(8);
        write_field(&mut f, &l, Slot::Secondary, Field::Magic, 0).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert_eq!((t.swap_type, t.request()), (None, Some(SwapType::Test)));
        write_field(&mut f, &l, Slot::Secondary, Field::ImageOk, 0).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert_eq!(t.request(), Some(SwapType::Perm));
        // An alignment-8 magic on an alignment-16 device is not a magic.
        let (mut f, l16) = setup(16);
        let (addr, _) = field_location(&l16, Slot::Secondary, Field::Magic);
        f.write(addr, &BOOT_MAGIC).unwrap();
        assert!(!read(&f, &l16, Slot::Secondary).unwrap().magic);
    }

    #[test]
    fn torn_flag_reads_bad_and_counts_as_unset() {
        let (mut f, l) = setup(8);
        f.arm_cut(f.ops(), CutVariant::Torn);
        let _ = write_field(&mut f, &l, Slot::Primary, Field::ImageOk, 0);
        f.restore_power();
        let t = read(&f, &l, Slot::Primary).unwrap();
        assert_ne!(t.image_ok, Flag::Set);
        // Unset if nothing moved, bad otherwise: either way not confirmed.
        assert!(!t.is_confirmed());
    }

    #[test]
    fn erased_zero_devices_work_too() {
        let g = Geometry::uniform(1024, 10, 4)
            .unwrap()
            .with_erased(0)
            .unwrap();
        let l = Layout::auto(&g, BootMode::DirectXip).unwrap();
        let mut f = SimFlash::new(g, 1);
        let c = Complete {
            swap_type: SwapType::Perm,
            swap_size: Some(4096),
            image_ok: true,
            copy_done: true,
        };
        write_complete(&mut f, &l, Slot::Primary, c).unwrap();
        let t = read(&f, &l, Slot::Primary).unwrap();
        assert!(t.is_confirmed());
        assert_eq!(t.copy_done, Flag::Set);
        assert_eq!(t.swap_size, Some(4096));
        assert_eq!(
            encode_field(&l, Field::ImageOk, 0),
            hex!("01 00 00 00 00 00 00 00")
        );
    }
}
