//! Slot trailer: the last sector of each slot.
//!
//! Every field sits in its own write unit `u` = max(write unit, 8), so each is written by one
//! flash operation and never shares a unit with another field. Offsets from the start of the
//! trailer sector (`M` = 16 rounded up to `u`):
//!
//! | offset | size | field | values |
//! |---|---|---|---|
//! | 0 | M | magic | MCUboot's 16-byte boot magic `77 c2 95 f3 60 d2 ef 7f 35 52 50 0f 2c b6 79 80`, padded with the erased value |
//! | M | u | swap type | `0x02` test, `0x03` permanent, `0x04` revert (what the last swap did, or, in the staging slot, what is requested) |
//! | M+u | u | image_ok | `0x01` = the image is confirmed |
//! | M+2u | u | copy_done | `0x01` = the image was installed by a finished swap (A/B: booted at least once) |
//! | M+(3+i)u | u | boot attempt *i* (i < 16) | `0x01` = attempt *i* of a test image started |
//!
//! A flag reads *set* only if its unit is exactly `[0x01, erased…]`; *unset* if the unit is
//! erased; anything else (a torn write) is *bad*, which every reader treats as unset. Magic is
//! written last when a trailer is built, so a trailer is valid only once complete. Attempt units
//! that are not erased count as used, torn or not: probation only gets shorter, never longer.

use crate::flash::{Flash, FlashError};

use super::layout::{Layout, Slot};

/// MCUboot's boot magic.
pub const BOOT_MAGIC: [u8; 16] = [
    0x77, 0xc2, 0x95, 0xf3, 0x60, 0xd2, 0xef, 0x7f, 0x35, 0x52, 0x50, 0x0f, 0x2c, 0xb6, 0x79, 0x80,
];

/// Attempt units in a trailer: the upper bound of `max_boot_attempts`.
pub const MAX_ATTEMPTS: u8 = 16;

const FLAG_SET: u8 = 0x01;

/// What a swap does, or what an upgrade request asks for.
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

/// The fields of a trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Magic,
    SwapType,
    ImageOk,
    CopyDone,
    Attempt(u8),
}

/// A decoded trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub magic: bool,
    pub swap_type: Option<SwapType>,
    pub image_ok: Flag,
    pub copy_done: Flag,
    /// Attempt units that are not erased.
    pub attempts: u8,
}

impl Trailer {
    /// A complete trailer that is an upgrade request (staging slot) or a test image on probation.
    pub fn is_pending(&self) -> bool {
        self.magic && matches!(self.swap_type, Some(SwapType::Test)) && !self.image_ok.is_set()
    }
    pub fn is_confirmed(&self) -> bool {
        self.magic && self.image_ok.is_set()
    }
}

fn magic_len(layout: &Layout) -> u32 {
    16u32.div_ceil(layout.unit) * layout.unit
}

/// Absolute address and length of a field in `slot`'s trailer.
pub fn field_location(layout: &Layout, slot: Slot, field: Field) -> (u32, u32) {
    let base = layout.slot(slot).trailer_offset;
    let (m, u) = (magic_len(layout), layout.unit);
    match field {
        Field::Magic => (base, m),
        Field::SwapType => (base + m, u),
        Field::ImageOk => (base + m + u, u),
        Field::CopyDone => (base + m + 2 * u, u),
        Field::Attempt(i) => (base + m + (3 + u32::from(i)) * u, u),
    }
}

/// Bytes of a complete trailer area that the reader looks at.
fn span(layout: &Layout) -> u32 {
    magic_len(layout) + (3 + u32::from(MAX_ATTEMPTS)) * layout.unit
}

/// Read and decode `slot`'s trailer with one read.
pub fn read<F: Flash>(flash: &F, layout: &Layout, slot: Slot) -> Result<Trailer, FlashError> {
    let base = layout.slot(slot).trailer_offset;
    let mut buf = vec![0; span(layout) as usize];
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
    let magic = at(Field::Magic)[..16] == BOOT_MAGIC;
    let st = at(Field::SwapType);
    let swap_type = if st[1..].iter().all(|&b| b == erased) {
        SwapType::from_byte(st[0])
    } else {
        None
    };
    let attempts = (0..MAX_ATTEMPTS)
        .filter(|&i| at(Field::Attempt(i)).iter().any(|&b| b != erased))
        .count() as u8;
    Ok(Trailer {
        magic,
        swap_type,
        image_ok: flag(at(Field::ImageOk)),
        copy_done: flag(at(Field::CopyDone)),
        attempts,
    })
}

/// Encoded bytes of one field (value in the first byte, the rest erased).
pub fn encode_field(layout: &Layout, field: Field, swap_type: Option<SwapType>) -> Vec<u8> {
    let (_, len) = field_location(layout, Slot::Primary, field);
    let mut unit = vec![layout.erased; len as usize];
    match field {
        Field::Magic => unit[..16].copy_from_slice(&BOOT_MAGIC),
        Field::SwapType => unit[0] = swap_type.unwrap_or(SwapType::Test).to_byte(),
        Field::ImageOk | Field::CopyDone | Field::Attempt(_) => unit[0] = FLAG_SET,
    }
    unit
}

/// Program one field of `slot`'s trailer (one flash operation).
pub fn write_field<F: Flash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    field: Field,
    swap_type: Option<SwapType>,
) -> Result<(), FlashError> {
    let (addr, _) = field_location(layout, slot, field);
    flash.write(addr, &encode_field(layout, field, swap_type))
}

/// Erase `slot`'s trailer sector (one flash operation).
pub fn erase<F: Flash>(flash: &mut F, layout: &Layout, slot: Slot) -> Result<(), FlashError> {
    let area = layout.slot(slot);
    flash.erase(area.trailer_offset, area.trailer_size)
}

/// Build a complete trailer in an erased trailer sector: swap type, flags, then magic last.
pub fn write_complete<F: Flash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    swap_type: SwapType,
    image_ok: bool,
    copy_done: bool,
) -> Result<(), FlashError> {
    write_field(flash, layout, slot, Field::SwapType, Some(swap_type))?;
    if copy_done {
        write_field(flash, layout, slot, Field::CopyDone, None)?;
    }
    if image_ok {
        write_field(flash, layout, slot, Field::ImageOk, None)?;
    }
    write_field(flash, layout, slot, Field::Magic, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::layout::BootMode;
    use crate::flash::{CutVariant, Geometry, SimFlash};
    use hex_literal::hex;

    fn setup(align: usize) -> (SimFlash, Layout) {
        let g = Geometry::uniform(1024, 4 + 2 * 3, align).unwrap();
        let l = Layout::auto(&g, BootMode::Swap).unwrap();
        (SimFlash::new(g, 9), l)
    }

    #[test]
    fn field_offsets_follow_the_table() {
        let (_, l) = setup(8);
        let base = l.primary.trailer_offset;
        assert_eq!(field_location(&l, Slot::Primary, Field::Magic), (base, 16));
        assert_eq!(
            field_location(&l, Slot::Primary, Field::SwapType),
            (base + 16, 8)
        );
        assert_eq!(
            field_location(&l, Slot::Primary, Field::ImageOk),
            (base + 24, 8)
        );
        assert_eq!(
            field_location(&l, Slot::Primary, Field::CopyDone),
            (base + 32, 8)
        );
        assert_eq!(
            field_location(&l, Slot::Primary, Field::Attempt(2)),
            (base + 56, 8)
        );
        let (_, l) = setup(32);
        let base = l.secondary.trailer_offset;
        assert_eq!(
            field_location(&l, Slot::Secondary, Field::Magic),
            (base, 32)
        );
        assert_eq!(
            field_location(&l, Slot::Secondary, Field::ImageOk),
            (base + 64, 32)
        );
    }

    #[test]
    fn encodes_units_with_erased_padding() {
        let (_, l) = setup(8);
        assert_eq!(
            encode_field(&l, Field::ImageOk, None),
            hex!("01 ff ff ff ff ff ff ff")
        );
        assert_eq!(
            encode_field(&l, Field::SwapType, Some(SwapType::Perm)),
            hex!("03 ff ff ff ff ff ff ff")
        );
        assert_eq!(
            encode_field(&l, Field::Magic, None),
            hex!("77 c2 95 f3 60 d2 ef 7f 35 52 50 0f 2c b6 79 80")
        );
    }

    #[test]
    fn round_trip_and_states() {
        let (mut f, l) = setup(8);
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert!(!t.magic && !t.is_pending() && !t.is_confirmed());
        write_complete(&mut f, &l, Slot::Secondary, SwapType::Test, false, false).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert!(t.magic && t.is_pending());
        assert_eq!(t.swap_type, Some(SwapType::Test));
        write_field(&mut f, &l, Slot::Secondary, Field::Attempt(0), None).unwrap();
        write_field(&mut f, &l, Slot::Secondary, Field::ImageOk, None).unwrap();
        let t = read(&f, &l, Slot::Secondary).unwrap();
        assert_eq!(t.attempts, 1);
        assert!(t.is_confirmed() && !t.is_pending());
        assert_eq!(read(&f, &l, Slot::Primary).unwrap().attempts, 0);
    }

    #[test]
    fn torn_flag_reads_bad_and_counts_as_unset() {
        let (mut f, l) = setup(8);
        // Find a seed where the torn image_ok is not accidentally complete.
        f.arm_cut(f.ops(), CutVariant::Torn);
        let _ = write_field(&mut f, &l, Slot::Primary, Field::ImageOk, None);
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
        let l = Layout::auto(&g, BootMode::Ab).unwrap();
        let mut f = SimFlash::new(g, 1);
        write_complete(&mut f, &l, Slot::Primary, SwapType::Perm, true, true).unwrap();
        let t = read(&f, &l, Slot::Primary).unwrap();
        assert!(t.is_confirmed());
        assert_eq!(t.copy_done, Flag::Set);
        assert_eq!(
            encode_field(&l, Field::ImageOk, None),
            hex!("01 00 00 00 00 00 00 00")
        );
    }
}
