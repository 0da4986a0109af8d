//! Where the bootloader keeps things on the flash.
//!
//! | area | sectors | contents |
//! |---|---|---|
//! | journal | 2 | swap journal, ping-pong: swap *k* writes journal sector *k* mod 2, so erasing one for a new swap never touches the record of the last finished swap (see [`super::journal`]); kept erased by the modes that do not swap |
//! | counter | 1 | security counter records (downgrade protection) |
//! | scratch | 1, ≥ largest slot sector | swap-scratch only: one slot sector in transit |
//! | primary | n (+1 in swap-move) | image sectors, swap-move's spare sector, trailer (last sector, see [`super::trailer`]) |
//! | secondary | n (+1 in swap-offset) | swap-offset's spare sector (first), image sectors, trailer |
//!
//! The trailer takes the last sector(s) of its slot, as many as it needs, so image data and
//! trailer never share a sector and a swap never moves a trailer: the largest image is the
//! image sectors' size (MCUboot's `maximum-image-size`: the slot minus the trailer's sectors,
//! minus swap-move's spare sector). MCUboot's trailer ends those sectors ([`TrailerMap`]), sized as
//! MCUboot sizes it for the mode, the write size and the slot's sector count
//! (`BOOT_MAX_IMG_SECTORS` = the slot's sectors).

use std::fmt;
use std::ops::Range;

use crate::flash::{FlashError, Geometry};

/// How the bootloader installs a new image: MCUboot's upgrade strategies, by MCUboot's names
/// (`docs/design.md`, "Image slots").
///
/// | mode | names accepted | runs from | slots | needs |
/// |---|---|---|---|---|
/// | [`SwapScratch`](BootMode::SwapScratch) | `swap-scratch`, `swap` | primary | equal | a scratch sector ≥ the largest slot sector |
/// | [`SwapMove`](BootMode::SwapMove) | `swap-move` | primary | primary one sector larger | uniform sectors |
/// | [`SwapOffset`](BootMode::SwapOffset) | `swap-offset` | primary | secondary one sector larger | uniform sectors |
/// | [`Overwrite`](BootMode::Overwrite) | `overwrite`, `overwrite-only` | primary | equal | — (no revert) |
/// | [`DirectXip`](BootMode::DirectXip) | `direct-xip`, `ab` | either | equal | — (revert: `MCUBOOT_DIRECT_XIP_REVERT`) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootMode {
    /// Swap through a scratch sector (`MCUBOOT_SWAP_USING_SCRATCH`): the primary slot runs.
    SwapScratch,
    /// Swap by moving the primary image up one sector first (`MCUBOOT_SWAP_USING_MOVE`).
    SwapMove,
    /// Swap with the new image staged one sector into the secondary slot
    /// (`MCUBOOT_SWAP_USING_OFFSET`).
    SwapOffset,
    /// Copy the new image over the old one (`MCUBOOT_OVERWRITE_ONLY`): no revert, a test
    /// upgrade is installed for good.
    Overwrite,
    /// Either slot runs in place, the newest version first (`MCUBOOT_DIRECT_XIP` with
    /// `MCUBOOT_DIRECT_XIP_REVERT`).
    DirectXip,
}

impl BootMode {
    /// Every mode, in the order of the table above.
    pub const ALL: [BootMode; 5] = [
        BootMode::SwapScratch,
        BootMode::SwapMove,
        BootMode::SwapOffset,
        BootMode::Overwrite,
        BootMode::DirectXip,
    ];

    /// MCUboot's name (what [`fmt::Display`] prints and [`str::parse`] reads).
    pub fn name(self) -> &'static str {
        match self {
            BootMode::SwapScratch => "swap-scratch",
            BootMode::SwapMove => "swap-move",
            BootMode::SwapOffset => "swap-offset",
            BootMode::Overwrite => "overwrite",
            BootMode::DirectXip => "direct-xip",
        }
    }

    /// Names accepted besides [`BootMode::name`]: the simulator's earlier names.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            BootMode::SwapScratch => &["swap"],
            BootMode::Overwrite => &["overwrite-only"],
            BootMode::DirectXip => &["ab"],
            BootMode::SwapMove | BootMode::SwapOffset => &[],
        }
    }

    /// The swap strategies: the primary slot always runs, an upgrade swaps the slots' contents
    /// and a revert swaps them back (the swap journal records the progress).
    pub fn is_swap(self) -> bool {
        matches!(
            self,
            BootMode::SwapScratch | BootMode::SwapMove | BootMode::SwapOffset
        )
    }

    /// Whether a test image that never confirms is put back (every mode but overwrite).
    pub fn can_revert(self) -> bool {
        self != BootMode::Overwrite
    }

    /// Sectors the mode needs besides two equal slots: (scratch, extra in the primary, extra in
    /// the secondary).
    pub fn extra_sectors(self) -> (usize, usize, usize) {
        match self {
            BootMode::SwapScratch => (1, 0, 0),
            BootMode::SwapMove => (0, 1, 0),
            BootMode::SwapOffset => (0, 0, 1),
            BootMode::Overwrite | BootMode::DirectXip => (0, 0, 0),
        }
    }

    /// Swap-status entries per sector in MCUboot's trailer (`BOOT_STATUS_STATE_COUNT`): 3 for
    /// swap-scratch and swap-move, 2 for swap-offset, none without a swap.
    pub fn status_states(self) -> u32 {
        match self {
            BootMode::SwapScratch | BootMode::SwapMove => 3,
            BootMode::SwapOffset => 2,
            BootMode::Overwrite | BootMode::DirectXip => 0,
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A boot mode name that is none of MCUboot's strategies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown boot mode `{0}`: expected swap-scratch, swap-move, swap-offset, overwrite or direct-xip (aliases: swap = swap-scratch, ab = direct-xip, overwrite-only = overwrite)"
)]
pub struct UnknownBootMode(pub String);

impl std::str::FromStr for BootMode {
    type Err = UnknownBootMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BootMode::ALL
            .into_iter()
            .find(|m| m.name() == s || m.aliases().contains(&s))
            .ok_or_else(|| UnknownBootMode(s.to_string()))
    }
}

/// The two image slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Primary,
    Secondary,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::Primary => Slot::Secondary,
            Slot::Secondary => Slot::Primary,
        }
    }
    pub fn index(self) -> u8 {
        match self {
            Slot::Primary => 0,
            Slot::Secondary => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::Primary => "primary",
            Slot::Secondary => "secondary",
        })
    }
}

/// A run of whole sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub size: u32,
    pub sectors: Range<usize>,
}

/// A slot: image sectors, a spare sector (swap-move's primary, swap-offset's secondary) and
/// the trailer sector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotArea {
    pub region: Region,
    /// Offset and size of every image sector, in order: where a staged image goes.
    pub image_sectors: Vec<(u32, u32)>,
    /// The sector a swap-move (after the image sectors) or swap-offset (before them) needs.
    pub spare: Option<(u32, u32)>,
    pub trailer_offset: u32,
    pub trailer_size: u32,
}

impl SlotArea {
    /// Largest image that fits.
    pub fn image_capacity(&self) -> u32 {
        self.image_sectors.iter().map(|&(_, s)| s).sum()
    }
    /// Where an image staged in this slot starts (after swap-offset's spare sector).
    pub fn image_offset(&self) -> u32 {
        self.image_sectors
            .first()
            .map_or(self.region.offset, |&(o, _)| o)
    }
    /// Number of image sectors that hold `len` bytes from the image start.
    pub fn sectors_for(&self, len: u32) -> usize {
        let mut end = 0;
        for (n, &(_, size)) in self.image_sectors.iter().enumerate() {
            if end >= len {
                return n;
            }
            end += size;
        }
        self.image_sectors.len()
    }
    /// Every sector but the trailer, in flash order (spare included).
    pub fn data_sectors(&self) -> Vec<(u32, u32)> {
        let mut all: Vec<(u32, u32)> = self
            .image_sectors
            .iter()
            .copied()
            .chain(self.spare)
            .collect();
        all.sort_unstable();
        all
    }
}

/// MCUboot's image trailer inside the trailer sector (`docs/design.md`, "Image trailer"):
/// offsets from the start of the trailer sector, every field padded to `BOOT_MAX_ALIGN`
/// (`A` = max(write size, 8)), the magic in the slot's last 16 bytes.
///
/// | field | size | where |
/// |---|---|---|
/// | boot attempts (this simulator's, for `max_boot_attempts` > 1) | 16 × A | sector start |
/// | swap status | `BOOT_MAX_IMG_SECTORS` × states × write size (states: 3 swap-scratch/move, 2 swap-offset, 0 otherwise) | below the keys |
/// | encryption key 1, key 0 | 2 × align_up(32, A) | below swap size |
/// | swap size | A | below swap info (swap-offset: below the unprotected TLV sizes) |
/// | unprotected TLV sizes (swap-offset only) | A | below swap info |
/// | swap info | A | end − M − 3A |
/// | copy done | A | end − M − 2A |
/// | image ok | A | end − M − A |
/// | magic | M = align_up(16, A) | end − M (the 16 bytes at the end) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailerMap {
    pub attempts: u32,
    pub status: (u32, u32),
    /// Key 0 (the primary slot's), key 1 (the secondary's).
    pub enc_keys: [(u32, u32); 2],
    pub swap_size: u32,
    pub tlv_sizes: Option<u32>,
    pub swap_info: u32,
    pub copy_done: u32,
    pub image_ok: u32,
    /// The magic field: `magic_len` bytes ending at the sector's end.
    pub magic: u32,
    pub magic_len: u32,
    /// Bytes from the status area's start to the sector end: MCUboot's `boot_trailer_sz`.
    pub mcuboot_size: u32,
}

/// Bytes one encryption key field holds: an AES-256 key (`BOOT_ENC_KEY_SIZE` with
/// `MCUBOOT_AES_256`; an AES-128 key fills the first 16).
pub const ENC_KEY_SIZE: u32 = 32;

impl TrailerMap {
    /// The map for a trailer sector of `sector` bytes.
    pub fn new(mode: BootMode, sector: u32, align: u32, write_size: u32, max_sectors: u32) -> Self {
        let a = align;
        let magic_len = 16u32.div_ceil(a) * a;
        let magic = sector - magic_len;
        let image_ok = magic - a;
        let copy_done = image_ok - a;
        let swap_info = copy_done - a;
        let tlv_sizes = (mode == BootMode::SwapOffset).then(|| swap_info - a);
        let swap_size = tlv_sizes.unwrap_or(swap_info) - a;
        let key = ENC_KEY_SIZE.div_ceil(a) * a;
        let enc_keys = [(swap_size - key, key), (swap_size - 2 * key, key)];
        let status_len = max_sectors * mode.status_states() * write_size;
        let status = (enc_keys[1].0.saturating_sub(status_len), status_len);
        TrailerMap {
            attempts: 0,
            status,
            enc_keys,
            swap_size,
            tlv_sizes,
            swap_info,
            copy_done,
            image_ok,
            magic,
            magic_len,
            mcuboot_size: sector - status.0,
        }
    }
}

/// Error in a layout request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{0}")]
    Flash(String),
    #[error("{what} sector {index} does not exist (device has {count})")]
    NoSuchSector {
        what: &'static str,
        index: usize,
        count: usize,
    },
    #[error("{0} overlaps another area")]
    Overlap(&'static str),
    #[error("slots differ in sector sizes: primary {primary:?}, secondary {secondary:?}")]
    SlotMismatch {
        primary: Vec<u32>,
        secondary: Vec<u32>,
    },
    #[error("slots need at least 2 sectors (image + trailer), got {0}")]
    SlotTooSmall(usize),
    #[error("swap mode needs a scratch sector")]
    NoScratch,
    #[error("scratch sector ({scratch} bytes) is smaller than the largest slot sector ({largest})")]
    ScratchTooSmall { scratch: u32, largest: u32 },
    #[error("journal sector ({size} bytes) holds {capacity} records, a swap needs {needed}")]
    StatusTooSmall {
        size: u32,
        capacity: usize,
        needed: usize,
    },
    #[error("no two runs of sectors in this geometry can be {mode}'s slots{}", .mode.extra_hint())]
    NoSlotPair { mode: BootMode },
    #[error(
        "{mode} needs the {bigger} slot exactly one sector larger than the other: primary {primary} sectors, secondary {secondary}"
    )]
    NoExtraSector {
        mode: BootMode,
        bigger: Slot,
        primary: usize,
        secondary: usize,
    },
    #[error("{mode} needs every slot sector of one size, got {sizes:?}")]
    UnevenSectors { mode: BootMode, sizes: Vec<u32> },
    #[error(
        "the slots cannot hold the {mode} trailer at their end: it needs {needed} bytes (MCUboot's {mcuboot} + {attempts} of boot attempts), the last sectors that leave an image sector give {sector}"
    )]
    TrailerTooLarge {
        mode: BootMode,
        sector: u32,
        needed: u32,
        mcuboot: u32,
        attempts: u32,
    },
}

impl BootMode {
    fn extra_hint(self) -> &'static str {
        match self {
            BootMode::SwapScratch => " (two equal runs and a scratch sector at the end)",
            BootMode::SwapMove => " (uniform sectors, the primary one sector larger)",
            BootMode::SwapOffset => " (uniform sectors, the secondary one sector larger)",
            BootMode::Overwrite | BootMode::DirectXip => " (two equal runs)",
        }
    }
}

impl From<FlashError> for LayoutError {
    fn from(e: FlashError) -> Self {
        LayoutError::Flash(e.to_string())
    }
}

/// Which sectors hold what, by sector index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutSpec {
    /// Two sectors for the swap journal.
    pub journal: [usize; 2],
    pub counter: usize,
    pub scratch: Option<usize>,
    pub primary: Range<usize>,
    pub secondary: Range<usize>,
}

/// The resolved layout the bootloader and the firmware updater share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub mode: BootMode,
    pub journal: [Region; 2],
    pub counter: Region,
    pub scratch: Option<Region>,
    pub primary: SlotArea,
    pub secondary: SlotArea,
    /// `BOOT_MAX_ALIGN`: the size of one trailer field / journal record, the write unit and
    /// at least 8 bytes.
    pub unit: u32,
    /// The flash's write size (MCUboot's `min-write-size`: a swap-status entry).
    pub write_size: u32,
    /// Where each trailer field sits in a trailer sector.
    pub trailer: TrailerMap,
    pub erased: u8,
}

/// Bytes of MCUboot's trailer for `mode` (`boot_trailer_sz`, with the encryption keys).
pub fn mcuboot_trailer_len(mode: BootMode, align: u32, write_size: u32, max_sectors: u32) -> u64 {
    let a = u64::from(align);
    let magic = 16u64.div_ceil(a) * a;
    let info = 4 * a + u64::from(mode == BootMode::SwapOffset) * a + magic;
    let keys = 2 * u64::from(ENC_KEY_SIZE).div_ceil(a) * a;
    let status = u64::from(max_sectors) * u64::from(mode.status_states()) * u64::from(write_size);
    status + keys + info
}

impl Layout {
    /// Resolve and check an explicit layout.
    pub fn new(
        geometry: &Geometry,
        mode: BootMode,
        spec: &LayoutSpec,
    ) -> Result<Self, LayoutError> {
        let count = geometry.sectors().len();
        let region = |what: &'static str, r: Range<usize>| -> Result<Region, LayoutError> {
            if r.is_empty() || r.end > count {
                return Err(LayoutError::NoSuchSector {
                    what,
                    index: r.end.saturating_sub(1).max(r.start),
                    count,
                });
            }
            let first = geometry.sectors()[r.start];
            let last = geometry.sectors()[r.end - 1];
            Ok(Region {
                offset: first.offset,
                size: last.end() - first.offset,
                sectors: r,
            })
        };
        let journal = [
            region("journal", spec.journal[0]..spec.journal[0] + 1)?,
            region("journal", spec.journal[1]..spec.journal[1] + 1)?,
        ];
        let counter = region("counter", spec.counter..spec.counter + 1)?;
        let scratch = match (mode, spec.scratch) {
            (BootMode::SwapScratch, None) => return Err(LayoutError::NoScratch),
            (BootMode::SwapScratch, Some(s)) => Some(region("scratch", s..s + 1)?),
            _ => None,
        };
        let primary = region("primary", spec.primary.clone())?;
        let secondary = region("secondary", spec.secondary.clone())?;
        let mut used: Vec<(&'static str, &Range<usize>)> = vec![
            ("journal", &journal[0].sectors),
            ("journal", &journal[1].sectors),
            ("counter", &counter.sectors),
            ("primary", &primary.sectors),
            ("secondary", &secondary.sectors),
        ];
        if let Some(s) = &scratch {
            used.push(("scratch", &s.sectors));
        }
        for (i, (name, a)) in used.iter().enumerate() {
            for (_, b) in &used[i + 1..] {
                if a.start < b.end && b.start < a.end {
                    return Err(LayoutError::Overlap(name));
                }
            }
        }
        let sizes = |r: &Range<usize>| -> Vec<u32> {
            geometry.sectors()[r.clone()]
                .iter()
                .map(|s| s.size)
                .collect()
        };
        let (ps, ss) = (sizes(&primary.sectors), sizes(&secondary.sectors));
        let (_, extra_p, extra_s) = mode.extra_sectors();
        if extra_p + extra_s > 0 {
            if ps.len() != ss.len() + extra_p - extra_s {
                return Err(LayoutError::NoExtraSector {
                    mode,
                    bigger: if extra_p > 0 {
                        Slot::Primary
                    } else {
                        Slot::Secondary
                    },
                    primary: ps.len(),
                    secondary: ss.len(),
                });
            }
            if ps.iter().chain(&ss).any(|&s| s != ps[0]) {
                let mut sizes = ps.clone();
                sizes.extend(&ss);
                return Err(LayoutError::UnevenSectors { mode, sizes });
            }
        } else if ps != ss {
            return Err(LayoutError::SlotMismatch {
                primary: ps,
                secondary: ss,
            });
        }
        let smaller = ps.len().min(ss.len());
        if smaller < 2 {
            return Err(LayoutError::SlotTooSmall(smaller));
        }
        let largest = ps.iter().copied().max().unwrap_or(0);
        if let Some(s) = &scratch
            && s.size < largest
        {
            return Err(LayoutError::ScratchTooSmall {
                scratch: s.size,
                largest,
            });
        }
        let unit = geometry.write_align().max(8) as u32;
        let write_size = geometry.write_align() as u32;
        // The trailer: MCUboot's, plus this simulator's attempt units, in as many of the
        // slot's last sectors as it needs (MCUboot's image-trailer-sectors-size).
        let max_sectors = ps.len().max(ss.len()) as u32;
        let mcuboot = mcuboot_trailer_len(mode, unit, write_size, max_sectors);
        let attempts = u32::from(super::trailer::MAX_ATTEMPTS) * unit;
        let needed = mcuboot + u64::from(attempts);
        let mut trailer_sectors = 0;
        let mut trailer_len = 0u64;
        while trailer_len < needed && trailer_sectors < smaller {
            trailer_sectors += 1;
            trailer_len += u64::from(ss[ss.len() - trailer_sectors]);
        }
        let tail = |sizes: &[u32]| sizes[sizes.len() - trailer_sectors..].to_vec();
        if trailer_len < needed || trailer_sectors + 1 > smaller || tail(&ps) != tail(&ss) {
            // What the slot's last sectors give while leaving one image sector.
            let room: u64 = ss[ss.len() + 1 - smaller..]
                .iter()
                .map(|&s| u64::from(s))
                .sum();
            return Err(LayoutError::TrailerTooLarge {
                mode,
                sector: room.min(u64::from(u32::MAX)) as u32,
                needed: needed.min(u64::from(u32::MAX)) as u32,
                mcuboot: mcuboot.min(u64::from(u32::MAX)) as u32,
                attempts,
            });
        }
        let record = record_size(unit);
        let small = journal[0].size.min(journal[1].size);
        let capacity = (small / record) as usize;
        // Bounded by every sector but one, however many the trailer takes.
        let needed = records_needed(smaller - 1);
        if mode.is_swap() && capacity < needed {
            return Err(LayoutError::StatusTooSmall {
                size: small,
                capacity,
                needed,
            });
        }
        let trailer = TrailerMap::new(mode, trailer_len as u32, unit, write_size, max_sectors);
        let slot = |r: Region, spare_first: bool, spare_last: bool| {
            let secs = &geometry.sectors()[r.sectors.clone()];
            let (data, trailer) = secs.split_at(secs.len() - trailer_sectors);
            let (spare, image) = if spare_first {
                (Some(&data[0]), &data[1..])
            } else if spare_last {
                (data.last(), &data[..data.len() - 1])
            } else {
                (None, data)
            };
            SlotArea {
                image_sectors: image.iter().map(|s| (s.offset, s.size)).collect(),
                spare: spare.map(|s| (s.offset, s.size)),
                trailer_offset: trailer[0].offset,
                trailer_size: trailer.iter().map(|s| s.size).sum(),
                region: r,
            }
        };
        Ok(Layout {
            mode,
            journal,
            counter,
            scratch,
            primary: slot(primary, false, extra_p > 0),
            secondary: slot(secondary, extra_s > 0, false),
            unit,
            write_size,
            trailer,
            erased: geometry.erased(),
        })
    }

    /// A sensible layout for any geometry: sectors 0 and 1 journal, sector 2 counter, the last
    /// sector scratch (swap-scratch), and as the slots the two adjacent runs of sectors that give
    /// the largest image capacity (first such pair wins): equal runs, or for swap-move
    /// (swap-offset) uniform runs with the primary (secondary) one sector longer.
    pub fn auto(geometry: &Geometry, mode: BootMode) -> Result<Self, LayoutError> {
        let sizes: Vec<u32> = geometry.sectors().iter().map(|s| s.size).collect();
        let (scr, extra_p, extra_s) = mode.extra_sectors();
        let end = sizes.len().checked_sub(scr).ok_or(LayoutError::NoScratch)?;
        let scratch = (scr > 0).then_some(end);
        let first = 3;
        let mut best: Option<(u64, usize, usize)> = None;
        for start in first..end {
            for n in 2.. {
                let p_end = start + n + extra_p;
                let s_end = p_end + n + extra_s;
                if s_end > end {
                    break;
                }
                let (a, b) = (&sizes[start..p_end], &sizes[p_end..s_end]);
                let fits = if extra_p + extra_s > 0 {
                    a.iter().chain(b).all(|&s| s == a[0])
                } else {
                    a == b
                };
                if fits {
                    let capacity: u64 = a[..n - 1].iter().map(|&s| u64::from(s)).sum();
                    if best.is_none_or(|(c, _, _)| capacity > c) {
                        best = Some((capacity, start, n));
                    }
                }
            }
        }
        let (_, start, n) = best.ok_or(LayoutError::NoSlotPair { mode })?;
        let p_end = start + n + extra_p;
        Self::new(
            geometry,
            mode,
            &LayoutSpec {
                journal: [0, 1],
                counter: 2,
                scratch,
                primary: start..p_end,
                secondary: p_end..p_end + n + extra_s,
            },
        )
    }

    pub fn slot(&self, slot: Slot) -> &SlotArea {
        match slot {
            Slot::Primary => &self.primary,
            Slot::Secondary => &self.secondary,
        }
    }
}

/// Size of one swap-journal record ([`super::journal`]) for a layout unit: the journal's
/// sizing rules live here, with the layout they size.
pub fn record_size(unit: u32) -> u32 {
    16u32.div_ceil(unit) * unit
}

/// Records a swap of `sectors` image sectors needs (start, a step record per step, two image
/// key records, finished), plus room for records lost to torn writes.
pub fn records_needed(sectors: usize) -> usize {
    3 * sectors + 4 + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Journal in sectors 0 and 7, counter in 1.
    fn spec(scratch: usize, primary: Range<usize>, secondary: Range<usize>) -> LayoutSpec {
        LayoutSpec {
            journal: [0, 7],
            counter: 1,
            scratch: Some(scratch),
            primary,
            secondary,
        }
    }

    #[test]
    fn auto_layout_on_stm32f4_uses_equal_128k_runs() {
        let g = Geometry::stm32f4_1mib(8).unwrap();
        let l = Layout::auto(&g, BootMode::SwapScratch).unwrap();
        assert_eq!(l.primary.region.sectors, 5..8);
        assert_eq!(l.secondary.region.sectors, 8..11);
        assert_eq!(l.scratch.as_ref().unwrap().sectors, 11..12);
        assert_eq!(l.primary.image_capacity(), 256 * 1024);
        assert_eq!(l.journal[1].size, 16 * 1024);
    }

    #[test]
    fn auto_layout_uniform() {
        let g = Geometry::uniform(4096, 4 + 2 * 9, 4).unwrap();
        let l = Layout::auto(&g, BootMode::SwapScratch).unwrap();
        assert_eq!(l.primary.region.sectors, 3..12);
        assert_eq!(l.secondary.region.sectors, 12..21);
        assert_eq!(l.unit, 8);
        let l = Layout::auto(&g, BootMode::DirectXip).unwrap();
        assert_eq!(l.primary.region.sectors, 3..12);
        assert_eq!(l.secondary.region.sectors, 12..21);
        assert!(l.scratch.is_none());
    }

    #[test]
    fn rejects_bad_layouts() {
        let g = Geometry::from_sizes("m", &[4096, 4096, 4096, 4096, 8192, 4096, 4096, 4096], 8)
            .unwrap();
        let s = spec(2, 3..5, 5..7);
        assert_eq!(
            Layout::new(&g, BootMode::SwapScratch, &s).unwrap_err(),
            LayoutError::SlotMismatch {
                primary: vec![4096, 8192],
                secondary: vec![4096, 4096]
            }
        );
        let s = spec(2, 2..4, 5..7);
        assert_eq!(
            Layout::new(&g, BootMode::SwapScratch, &s)
                .unwrap_err()
                .to_string(),
            "primary overlaps another area"
        );
        let s = spec(2, 3..5, 5..7);
        assert!(matches!(
            Layout::new(&g, BootMode::SwapScratch, &s),
            Err(LayoutError::SlotMismatch { .. })
        ));
        let s = spec(2, 3..5, 5..9);
        assert!(matches!(
            Layout::new(&g, BootMode::SwapScratch, &s),
            Err(LayoutError::NoSuchSector {
                what: "secondary",
                ..
            })
        ));
    }

    #[test]
    fn scratch_must_hold_a_slot_sector() {
        let g = Geometry::from_sizes("m", &[4096, 4096, 4096, 8192, 4096, 8192, 4096, 4096], 8)
            .unwrap();
        let s = spec(2, 3..5, 5..7);
        assert_eq!(
            Layout::new(&g, BootMode::SwapScratch, &s).unwrap_err(),
            LayoutError::ScratchTooSmall {
                scratch: 4096,
                largest: 8192
            }
        );
        assert!(Layout::new(&g, BootMode::DirectXip, &s).is_ok());
    }
}
