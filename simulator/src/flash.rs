//! NOR flash model, stricter than silicon.
//!
//! | rule | what the model does |
//! |---|---|
//! | erased value | `0xFF` (default) or `0x00`, per [`Geometry::with_erased`] |
//! | program | only moves bits away from the erased value (`old & new` for 0xFF, `old \| new` for 0x00) |
//! | erase-before-write | every byte remembers whether it was programmed since its last erase; programming it again is [`FlashError::NotErased`] |
//! | alignment | writes start and end on the write unit (1, 2, 4, 8, 16 or 32 bytes); erases cover whole sectors |
//! | sector map | uniform or uneven (e.g. STM32F4: 4×16 KiB, 1×64 KiB, 7×128 KiB) |
//! | accounting | every sector erase and every write call is one *operation*, numbered from 0 |
//! | timing | each operation adds simulated busy time (erase per KiB, program per byte) |
//!
//! A power cut can be armed at operation `k` ([`SimFlash::arm_cut`]). When operation `k` runs:
//!
//! | variant | effect on the cells | result |
//! |---|---|---|
//! | [`CutVariant::Before`] | nothing | `Err(PowerLost)` |
//! | [`CutVariant::Torn`] | write: a seeded random prefix of the alignment units lands, the next unit is half-programmed (random subset of its bits); erase: a random subset of the sector's bytes is erased (interrupted early, midway or late), the rest keeps old data, and the whole sector needs a new erase before any write | `Err(PowerLost)` |
//!
//! Torn randomness is seeded per operation (device seed and operation index), so a cut at the
//! same operation tears the same way in every run, and different operations tear differently.
//! | [`CutVariant::After`] | the operation completes | `Err(PowerLost)` |
//!
//! After a cut every operation (reads included) fails with `PowerLost` until
//! [`SimFlash::restore_power`]. The caller never learns whether an `After` op completed,
//! exactly like firmware that loses power right after the flash controller finished.
//!
//! [`SimFlash`] is cheap to clone: sectors are copy-on-write (`Arc`), so forking a
//! simulation at a cut point copies only a table of pointers.
//!
//! | module | what |
//! |---|---|
//! | this one | errors, geometry, timing, the [`Flash`] trait |
//! | `cut` | injected power cuts: variants, operations, rules, what fired |
//! | `sim` | [`SimFlash`], the in-memory model |
//! | `file` | [`FileFlash`], the model kept in a file |

use std::path::PathBuf;

mod cut;
mod file;
mod sim;
#[cfg(test)]
mod tests;

pub use cut::{CutRule, CutVariant, EventCut, FiredCut, Op, OpContext, OpKind};
pub use file::FileFlash;
pub use sim::SimFlash;

/// Write units the model accepts.
pub const ALIGNMENTS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Everything that can go wrong with a flash operation.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("access 0x{addr:08x}+{len} is outside the flash (size 0x{size:x})")]
    OutOfBounds { addr: u32, len: usize, size: u32 },
    #[error("write 0x{addr:08x}+{len} is not aligned to the {align}-byte write unit")]
    Unaligned { addr: u32, len: usize, align: usize },
    #[error("erase 0x{addr:08x}+{len} does not cover whole sectors")]
    NotSectorAligned { addr: u32, len: usize },
    #[error("write to 0x{addr:08x}, which was programmed and not erased since")]
    NotErased { addr: u32 },
    #[error("power lost at flash operation {op}")]
    PowerLost { op: u64 },
    #[error("bad flash geometry: {0}")]
    BadGeometry(String),
    /// Refused before anything is allocated: the model keeps every cell in memory.
    #[error(
        "bad flash geometry: {sectors} sectors of {sector_size} bytes exceed the simulated device's limits ({} sectors, {} MiB)",
        MAX_SECTORS,
        MAX_DEVICE_SIZE >> 20
    )]
    TooLarge { sectors: usize, sector_size: u64 },
    #[error("flash backing file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Most sectors a simulated device has ([`Geometry::uniform`] and [`Geometry::from_sizes`]).
pub const MAX_SECTORS: usize = 1 << 16;
/// Largest simulated device, bytes: its cells live in memory.
pub const MAX_DEVICE_SIZE: u64 = 1 << 30;

/// One sector of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sector {
    pub offset: u32,
    pub size: u32,
}

impl Sector {
    pub fn end(&self) -> u32 {
        self.offset + self.size
    }
}

/// Simulated operation durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashTiming {
    /// Sector erase time per KiB of sector, microseconds (STM32F4: ~16 ms/KiB for 128 KiB in 2 s).
    pub erase_us_per_kib: u32,
    /// Programming time per byte, nanoseconds (~16 µs per 32-bit word → 4000 ns/byte).
    pub program_ns_per_byte: u32,
}

impl Default for FlashTiming {
    fn default() -> Self {
        FlashTiming {
            erase_us_per_kib: 12_000,
            program_ns_per_byte: 4_000,
        }
    }
}

/// Sector map, write unit, erased value and timing of a flash device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    name: String,
    sectors: Vec<Sector>,
    write_align: usize,
    erased: u8,
    timing: FlashTiming,
}

/// Whether `count` sectors (the widest `sector_size` bytes, `total` bytes in all) make a
/// device the model takes.
fn check_size(count: usize, sector_size: u64, total: u64) -> Result<(), FlashError> {
    if count == 0 {
        return Err(FlashError::BadGeometry("no sectors".into()));
    }
    if count > MAX_SECTORS || total > MAX_DEVICE_SIZE {
        return Err(FlashError::TooLarge {
            sectors: count,
            sector_size,
        });
    }
    Ok(())
}

impl Geometry {
    /// A device of `count` sectors of `sector_size` bytes.
    ///
    /// Refused before allocating: more than [`MAX_SECTORS`] sectors or [`MAX_DEVICE_SIZE`]
    /// bytes ([`FlashError::TooLarge`]), a zero sector size or count.
    pub fn uniform(sector_size: u32, count: usize, write_align: usize) -> Result<Self, FlashError> {
        if sector_size == 0 {
            return Err(FlashError::BadGeometry("sector size 0".into()));
        }
        let size = u64::from(sector_size);
        check_size(count, size, size.saturating_mul(count as u64))?;
        Self::from_sizes(
            &format!("{count}x{}K", sector_size / 1024),
            &vec![sector_size; count],
            write_align,
        )
    }

    /// A device with an arbitrary (possibly uneven) sector map, in address order.
    pub fn from_sizes(name: &str, sizes: &[u32], write_align: usize) -> Result<Self, FlashError> {
        if !ALIGNMENTS.contains(&write_align) {
            return Err(FlashError::BadGeometry(format!(
                "write unit {write_align} is not one of {ALIGNMENTS:?}"
            )));
        }
        let widest = sizes.iter().copied().max().map_or(0, u64::from);
        let total = sizes.iter().map(|&s| u64::from(s)).sum();
        check_size(sizes.len(), widest, total)?;
        let mut sectors = Vec::with_capacity(sizes.len());
        let mut offset: u32 = 0;
        for (i, &size) in sizes.iter().enumerate() {
            if size == 0 || size as usize % write_align != 0 {
                return Err(FlashError::BadGeometry(format!(
                    "sector {i} size {size} is not a non-zero multiple of the write unit {write_align}"
                )));
            }
            sectors.push(Sector { offset, size });
            offset = offset
                .checked_add(size)
                .ok_or_else(|| FlashError::BadGeometry("device larger than 4 GiB".into()))?;
        }
        Ok(Geometry {
            name: name.to_string(),
            sectors,
            write_align,
            erased: 0xFF,
            timing: FlashTiming::default(),
        })
    }

    /// STM32F405/407-like 1 MiB internal flash: 4×16 KiB, 1×64 KiB, 7×128 KiB.
    pub fn stm32f4_1mib(write_align: usize) -> Result<Self, FlashError> {
        let mut sizes = vec![16 * 1024; 4];
        sizes.push(64 * 1024);
        sizes.extend(std::iter::repeat_n(128 * 1024, 7));
        Self::from_sizes("stm32f4-1M", &sizes, write_align)
    }

    /// Use `0x00` (or `0xFF`) as the erased value.
    pub fn with_erased(mut self, erased: u8) -> Result<Self, FlashError> {
        if erased != 0xFF && erased != 0x00 {
            return Err(FlashError::BadGeometry(format!(
                "erased value 0x{erased:02x} is neither 0xff nor 0x00"
            )));
        }
        self.erased = erased;
        Ok(self)
    }

    pub fn with_timing(mut self, timing: FlashTiming) -> Self {
        self.timing = timing;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn sectors(&self) -> &[Sector] {
        &self.sectors
    }
    pub fn write_align(&self) -> usize {
        self.write_align
    }
    pub fn erased(&self) -> u8 {
        self.erased
    }
    pub fn timing(&self) -> FlashTiming {
        self.timing
    }
    pub fn size(&self) -> u32 {
        self.sectors.last().map_or(0, Sector::end)
    }

    /// Index of the sector holding `addr`.
    pub fn sector_index(&self, addr: u32) -> Option<usize> {
        if addr >= self.size() {
            return None;
        }
        Some(self.sectors.partition_point(|s| s.end() <= addr))
    }

    /// Indices of the sectors that exactly cover `addr..addr+len`.
    pub fn sectors_covering(
        &self,
        addr: u32,
        len: u32,
    ) -> Result<std::ops::Range<usize>, FlashError> {
        let bad = || FlashError::NotSectorAligned {
            addr,
            len: len as usize,
        };
        let end = addr.checked_add(len).ok_or_else(bad)?;
        if end > self.size() {
            return Err(FlashError::OutOfBounds {
                addr,
                len: len as usize,
                size: self.size(),
            });
        }
        if len == 0 {
            return Ok(0..0);
        }
        let first = self.sector_index(addr).ok_or_else(bad)?;
        let last = self.sector_index(end - 1).ok_or_else(bad)?;
        if self.sectors[first].offset != addr || self.sectors[last].end() != end {
            return Err(bad());
        }
        Ok(first..last + 1)
    }

    /// Round `n` up to the write unit.
    pub fn align_up(&self, n: usize) -> usize {
        n.div_ceil(self.write_align) * self.write_align
    }
}

/// Operation counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlashStats {
    pub erases: u64,
    pub writes: u64,
    pub bytes_written: u64,
    /// Simulated time the device spent busy, microseconds.
    pub busy_us: u64,
}

/// The narrow hardware interface the bootloader and firmware use.
pub trait Flash {
    fn geometry(&self) -> &Geometry;
    fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError>;
    /// Erase whole sectors; each sector is one operation.
    fn erase(&mut self, addr: u32, len: u32) -> Result<(), FlashError>;
    /// Program `data` (aligned start and length) into erased cells; one operation.
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError>;
    /// Simulated time the device has spent busy so far, microseconds.
    fn busy_us(&self) -> u64 {
        0
    }
    /// Operations counted so far (the index the next one gets).
    fn ops(&self) -> u64 {
        0
    }
    /// Operation counters, for models that keep them.
    fn stats(&self) -> FlashStats {
        FlashStats::default()
    }
    /// Supply power to the device (a model may refuse every access while unpowered).
    fn set_powered(&mut self, _on: bool) {}
    /// The injected power cut that fired since the last call, if the model injects any.
    fn take_fired(&mut self) -> Option<FiredCut> {
        None
    }
    /// Who runs the next operations (models that match cut rules on it keep it).
    fn set_context(&mut self, _context: OpContext) {}
    /// Arm a power cut by rule (models that inject cuts; others ignore it).
    fn add_cut_rule(&mut self, _rule: CutRule) {}
}
