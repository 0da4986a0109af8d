//! Where the bootloader keeps things on the flash.
//!
//! | area | sectors | contents |
//! |---|---|---|
//! | journal | 2 | swap journal, ping-pong: swap *k* writes journal sector *k* mod 2, so erasing one for a new swap never touches the record of the last finished swap (see [`super::journal`]); A/B mode keeps them erased |
//! | counter | 1 | security counter records (downgrade protection) |
//! | scratch | 1, ≥ largest slot sector | swap mode only: one slot sector in transit |
//! | primary | n | image (sectors `0..n-1`) + trailer (last sector, see [`super::trailer`]) |
//! | secondary | n, same sector sizes as primary | image + trailer |
//!
//! The trailer takes the whole last sector of its slot, so image data and trailer never share
//! a sector and the swap never moves a trailer: the largest image is the slot size minus that
//! sector.

use std::fmt;
use std::ops::Range;

use crate::flash::{FlashError, Geometry};

/// How the bootloader installs a new image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootMode {
    /// MCUboot-style swap through a scratch sector: the primary slot always runs.
    Swap,
    /// A/B (direct-XIP style): either slot runs in place, chosen by trailer state and version.
    Ab,
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootMode::Swap => "swap",
            BootMode::Ab => "ab",
        })
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

/// A slot: image sectors and the trailer sector after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotArea {
    pub region: Region,
    /// Offset and size of every image sector, in order.
    pub image_sectors: Vec<(u32, u32)>,
    pub trailer_offset: u32,
    pub trailer_size: u32,
}

impl SlotArea {
    /// Largest image that fits.
    pub fn image_capacity(&self) -> u32 {
        self.trailer_offset - self.region.offset
    }
    /// Number of image sectors that hold `len` bytes from the slot start.
    pub fn sectors_for(&self, len: u32) -> usize {
        let mut end = self.region.offset;
        for (n, &(_, size)) in self.image_sectors.iter().enumerate() {
            if end - self.region.offset >= len {
                return n;
            }
            end += size;
        }
        self.image_sectors.len()
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
    #[error("no two equal runs of sectors for the slots in this geometry")]
    NoSlotPair,
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
    /// Size of one trailer field / journal record: the write unit, at least 8 bytes.
    pub unit: u32,
    pub erased: u8,
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
            (BootMode::Swap, None) => return Err(LayoutError::NoScratch),
            (BootMode::Swap, Some(s)) => Some(region("scratch", s..s + 1)?),
            (BootMode::Ab, _) => None,
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
        if ps != ss {
            return Err(LayoutError::SlotMismatch {
                primary: ps,
                secondary: ss,
            });
        }
        if ps.len() < 2 {
            return Err(LayoutError::SlotTooSmall(ps.len()));
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
        let record = record_size(unit);
        let small = journal[0].size.min(journal[1].size);
        let capacity = (small / record) as usize;
        let needed = records_needed(ps.len() - 1);
        if mode == BootMode::Swap && capacity < needed {
            return Err(LayoutError::StatusTooSmall {
                size: small,
                capacity,
                needed,
            });
        }
        let slot = |r: Region| {
            let secs = &geometry.sectors()[r.sectors.clone()];
            let (image, trailer) = secs.split_at(secs.len() - 1);
            SlotArea {
                image_sectors: image.iter().map(|s| (s.offset, s.size)).collect(),
                trailer_offset: trailer[0].offset,
                trailer_size: trailer[0].size,
                region: r,
            }
        };
        Ok(Layout {
            mode,
            journal,
            counter,
            scratch,
            primary: slot(primary),
            secondary: slot(secondary),
            unit,
            erased: geometry.erased(),
        })
    }

    /// A sensible layout for any geometry: sectors 0 and 1 journal, sector 2 counter, the last
    /// sector scratch (swap mode), and as the slots the two adjacent runs of equal sector sizes
    /// that give the largest image capacity (first such pair wins).
    pub fn auto(geometry: &Geometry, mode: BootMode) -> Result<Self, LayoutError> {
        let sizes: Vec<u32> = geometry.sectors().iter().map(|s| s.size).collect();
        let mut end = sizes.len();
        let scratch = match mode {
            BootMode::Swap => {
                end = end.checked_sub(1).ok_or(LayoutError::NoScratch)?;
                Some(end)
            }
            BootMode::Ab => None,
        };
        let first = 3;
        let mut best: Option<(u64, usize, usize)> = None;
        for start in first..end {
            for n in 2..=(end.saturating_sub(start)) / 2 {
                let (a, b) = (&sizes[start..start + n], &sizes[start + n..start + 2 * n]);
                if a == b {
                    let capacity: u64 = a[..n - 1].iter().map(|&s| u64::from(s)).sum();
                    if best.is_none_or(|(c, _, _)| capacity > c) {
                        best = Some((capacity, start, n));
                    }
                }
            }
        }
        let (_, start, n) = best.ok_or(LayoutError::NoSlotPair)?;
        Self::new(
            geometry,
            mode,
            &LayoutSpec {
                journal: [0, 1],
                counter: 2,
                scratch,
                primary: start..start + n,
                secondary: start + n..start + 2 * n,
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

/// Records a swap of `sectors` image sectors needs, plus room for records lost to torn writes.
pub fn records_needed(sectors: usize) -> usize {
    3 * sectors + 2 + 16
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
        let l = Layout::auto(&g, BootMode::Swap).unwrap();
        assert_eq!(l.primary.region.sectors, 5..8);
        assert_eq!(l.secondary.region.sectors, 8..11);
        assert_eq!(l.scratch.as_ref().unwrap().sectors, 11..12);
        assert_eq!(l.primary.image_capacity(), 256 * 1024);
        assert_eq!(l.journal[1].size, 16 * 1024);
    }

    #[test]
    fn auto_layout_uniform() {
        let g = Geometry::uniform(4096, 4 + 2 * 9, 4).unwrap();
        let l = Layout::auto(&g, BootMode::Swap).unwrap();
        assert_eq!(l.primary.region.sectors, 3..12);
        assert_eq!(l.secondary.region.sectors, 12..21);
        assert_eq!(l.unit, 8);
        let l = Layout::auto(&g, BootMode::Ab).unwrap();
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
            Layout::new(&g, BootMode::Swap, &s).unwrap_err(),
            LayoutError::SlotMismatch {
                primary: vec![4096, 8192],
                secondary: vec![4096, 4096]
            }
        );
        let s = spec(2, 2..4, 5..7);
        assert_eq!(
            Layout::new(&g, BootMode::Swap, &s).unwrap_err().to_string(),
            "primary overlaps another area"
        );
        let s = spec(2, 3..5, 5..7);
        assert!(matches!(
            Layout::new(&g, BootMode::Swap, &s),
            Err(LayoutError::SlotMismatch { .. })
        ));
        let s = spec(2, 3..5, 5..9);
        assert!(matches!(
            Layout::new(&g, BootMode::Swap, &s),
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
            Layout::new(&g, BootMode::Swap, &s).unwrap_err(),
            LayoutError::ScratchTooSmall {
                scratch: 4096,
                largest: 8192
            }
        );
        assert!(Layout::new(&g, BootMode::Ab, &s).is_ok());
    }
}
