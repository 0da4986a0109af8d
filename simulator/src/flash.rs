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

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    #[error("flash backing file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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

impl Geometry {
    /// A device of `count` sectors of `sector_size` bytes.
    pub fn uniform(sector_size: u32, count: usize, write_align: usize) -> Result<Self, FlashError> {
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
        if sizes.is_empty() {
            return Err(FlashError::BadGeometry("no sectors".into()));
        }
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

/// Where a power cut lands relative to its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CutVariant {
    Before,
    Torn,
    After,
}

impl CutVariant {
    pub const ALL: [CutVariant; 3] = [CutVariant::Before, CutVariant::Torn, CutVariant::After];
}

impl fmt::Display for CutVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutVariant::Before => "before",
            CutVariant::Torn => "torn",
            CutVariant::After => "after",
        })
    }
}

/// Kind of a counted operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Erase,
    Write,
}

/// One counted operation (the most recent is kept for diagnostics and fault reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub index: u64,
    pub kind: OpKind,
    pub addr: u32,
    pub len: u32,
}

/// A cut that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiredCut {
    pub op: Op,
    pub variant: CutVariant,
}

/// Who is using the flash: the bootloader (during boot number `n`) or the firmware and its
/// diagnostic server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OpContext {
    Boot(u64),
    #[default]
    Firmware,
}

/// A power cut that fires at the `nth` (1-based) operation matching every given filter;
/// operations before that count down. Scenario triggers such as "the 3rd erase of the
/// secondary slot" or "the 10th write during boot 2" become rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutRule {
    /// The caller's name for the rule (to tell which one fired).
    pub id: u64,
    pub kind: Option<OpKind>,
    /// Only operations starting inside one of these address ranges (none: anywhere).
    pub ranges: Vec<std::ops::Range<u32>>,
    /// `Some(Some(n))`: during boot `n`; `Some(None)`: during any boot; `None`: any context.
    pub boot: Option<Option<u64>>,
    /// Only operations outside any boot (the firmware's).
    pub firmware_only: bool,
    pub nth: u64,
    pub variant: CutVariant,
}

impl CutRule {
    fn matches(&self, op: &Op, context: OpContext) -> bool {
        self.kind.is_none_or(|k| k == op.kind)
            && (self.ranges.is_empty() || self.ranges.iter().any(|r| r.contains(&op.addr)))
            && match (self.boot, context) {
                (None, OpContext::Firmware) => true,
                (None, OpContext::Boot(_)) => !self.firmware_only,
                (Some(None), OpContext::Boot(_)) => true,
                (Some(Some(n)), OpContext::Boot(b)) => n == b,
                (Some(_), OpContext::Firmware) => false,
            }
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
}

#[derive(Clone, Debug)]
struct SectorCells {
    bytes: Vec<u8>,
    /// One bit per byte: programmed since the last erase.
    programmed: Vec<u64>,
}

impl SectorCells {
    fn erased(size: usize, value: u8) -> Self {
        SectorCells {
            bytes: vec![value; size],
            programmed: vec![0; size.div_ceil(64)],
        }
    }
    fn is_programmed(&self, i: usize) -> bool {
        self.programmed[i / 64] & (1 << (i % 64)) != 0
    }
    fn set_programmed(&mut self, i: usize) {
        self.programmed[i / 64] |= 1 << (i % 64);
    }
    /// The bits of word `w` that fall in `start..end`.
    fn word_mask(w: usize, start: usize, end: usize) -> u64 {
        let lo = start.max(w * 64) - w * 64;
        let hi = end.min(w * 64 + 64) - w * 64;
        if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        }
    }
    /// The first programmed byte in `start..end`, a word at a time.
    fn first_programmed(&self, start: usize, end: usize) -> Option<usize> {
        if start >= end {
            return None;
        }
        for w in start / 64..=(end - 1) / 64 {
            let hit = self.programmed[w] & Self::word_mask(w, start, end);
            if hit != 0 {
                return Some(w * 64 + hit.trailing_zeros() as usize);
            }
        }
        None
    }
    /// Mark `start..end` programmed, a word at a time.
    fn set_programmed_range(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        for w in start / 64..=(end - 1) / 64 {
            self.programmed[w] |= Self::word_mask(w, start, end);
        }
    }
}

/// In-memory NOR flash with operation counting, armed power cuts and bit-rot injection.
#[derive(Clone, Debug)]
pub struct SimFlash {
    geometry: Arc<Geometry>,
    sectors: Vec<Arc<SectorCells>>,
    ops: u64,
    stats: FlashStats,
    armed: Option<(u64, CutVariant)>,
    rules: Vec<CutRule>,
    context: OpContext,
    fired: Option<FiredCut>,
    powered: bool,
    seed: u64,
    tear_salt: u64,
    rng: ChaCha8Rng,
    last_op: Option<Op>,
}

impl SimFlash {
    /// A fully erased device. `seed` drives torn-operation randomness.
    pub fn new(geometry: Geometry, seed: u64) -> Self {
        let erased = geometry.erased;
        let sectors = geometry
            .sectors
            .iter()
            .map(|s| Arc::new(SectorCells::erased(s.size as usize, erased)))
            .collect();
        SimFlash {
            geometry: Arc::new(geometry),
            sectors,
            ops: 0,
            stats: FlashStats::default(),
            armed: None,
            rules: Vec::new(),
            context: OpContext::Firmware,
            fired: None,
            powered: true,
            seed,
            tear_salt: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            last_op: None,
        }
    }

    /// A device as it may come from the factory: random contents, every byte programmed, so
    /// anything that forgets to erase fails.
    pub fn new_random(geometry: Geometry, seed: u64) -> Self {
        let mut flash = Self::new(geometry, seed);
        for cells in &mut flash.sectors {
            let cells = Arc::make_mut(cells);
            flash.rng.fill(&mut cells.bytes[..]);
            cells.programmed.fill(u64::MAX);
        }
        flash
    }

    pub fn last_op(&self) -> Option<Op> {
        self.last_op
    }

    /// Arm a power cut at operation `op` (absolute index, see [`SimFlash::ops`]).
    pub fn arm_cut(&mut self, op: u64, variant: CutVariant) {
        self.armed = Some((op, variant));
    }
    /// Add a cut rule; the first operation that exhausts a rule's count fires it (and removes
    /// it).
    pub fn add_cut_rule(&mut self, rule: CutRule) {
        self.rules.push(rule);
    }
    /// Rules that have not fired yet.
    pub fn cut_rules(&self) -> &[CutRule] {
        &self.rules
    }
    pub fn clear_cut_rules(&mut self) {
        self.rules.clear();
    }
    pub fn context(&self) -> OpContext {
        self.context
    }
    /// Vary how torn operations tear without changing anything else (sweeps try several).
    pub fn set_tear_salt(&mut self, salt: u64) {
        self.tear_salt = salt;
    }
    pub fn disarm(&mut self) {
        self.armed = None;
    }
    pub fn armed(&self) -> Option<(u64, CutVariant)> {
        self.armed
    }
    pub fn is_powered(&self) -> bool {
        self.powered
    }
    /// Cut power now (outside any operation).
    pub fn cut_power(&mut self) {
        self.powered = false;
    }
    pub fn restore_power(&mut self) {
        self.powered = true;
    }

    /// Flip the bits of `mask` at `addr` (bit rot / radiation): not an operation, not counted.
    pub fn flip_bits(&mut self, addr: u32, mask: u8) -> Result<(), FlashError> {
        let (s, i) = self.locate(addr, 1)?;
        Arc::make_mut(&mut self.sectors[s]).bytes[i] ^= mask;
        Ok(())
    }

    /// Whether every byte of `addr..addr+len` is erased and writable.
    pub fn is_erased(&self, addr: u32, len: u32) -> Result<bool, FlashError> {
        let mut a = addr;
        let end = self.check_range(addr, len as usize)?;
        while a < end {
            let (s, i) = self.locate(a, 1)?;
            let cells = &self.sectors[s];
            if cells.is_programmed(i) || cells.bytes[i] != self.geometry.erased {
                return Ok(false);
            }
            a += 1;
        }
        Ok(true)
    }

    /// Whole contents (for file persistence and debugging).
    pub fn contents(&self) -> Vec<u8> {
        self.sectors
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }

    fn check_range(&self, addr: u32, len: usize) -> Result<u32, FlashError> {
        let size = self.geometry.size();
        match u32::try_from(len).ok().and_then(|l| addr.checked_add(l)) {
            Some(end) if end <= size => Ok(end),
            _ => Err(FlashError::OutOfBounds { addr, len, size }),
        }
    }

    /// Sector index and offset inside it; `len` bytes must fit in the device.
    fn locate(&self, addr: u32, len: usize) -> Result<(usize, usize), FlashError> {
        self.check_range(addr, len)?;
        let s = self
            .geometry
            .sector_index(addr)
            .ok_or(FlashError::OutOfBounds {
                addr,
                len,
                size: self.geometry.size(),
            })?;
        Ok((s, (addr - self.geometry.sectors[s].offset) as usize))
    }

    fn check_powered(&self) -> Result<(), FlashError> {
        if self.powered {
            Ok(())
        } else {
            Err(FlashError::PowerLost { op: self.ops })
        }
    }

    /// Begin an operation: returns the cut variant if the armed cut lands on it.
    fn begin(&mut self, kind: OpKind, addr: u32, len: u32) -> Option<CutVariant> {
        let op = Op {
            index: self.ops,
            kind,
            addr,
            len,
        };
        self.ops += 1;
        self.last_op = Some(op);
        let mut by_rule = None;
        for (i, rule) in self.rules.iter_mut().enumerate() {
            if rule.matches(&op, self.context) {
                rule.nth = rule.nth.saturating_sub(1);
                if rule.nth == 0 && by_rule.is_none() {
                    by_rule = Some((i, rule.variant));
                }
            }
        }
        if let Some((i, variant)) = by_rule {
            self.rules.remove(i);
            self.armed = Some((op.index, variant));
        }
        match self.armed {
            Some((at, variant)) if at == op.index => {
                self.armed = None;
                self.fired = Some(FiredCut { op, variant });
                // Each operation tears its own way, whatever happened before it.
                self.rng = ChaCha8Rng::seed_from_u64(
                    self.seed
                        ^ op.index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ self.tear_salt.wrapping_mul(0xD1B5_4A32_D192_ED03),
                );
                Some(variant)
            }
            _ => None,
        }
    }

    fn lose_power(&mut self) -> FlashError {
        self.powered = false;
        FlashError::PowerLost { op: self.ops - 1 }
    }

    fn erase_sector(&mut self, s: usize) -> Result<(), FlashError> {
        let sector = self.geometry.sectors[s];
        let cut = self.begin(OpKind::Erase, sector.offset, sector.size);
        if cut == Some(CutVariant::Before) {
            return Err(self.lose_power());
        }
        self.stats.erases += 1;
        let kib = u64::from(sector.size).div_ceil(1024);
        self.stats.busy_us += kib * u64::from(self.geometry.timing.erase_us_per_kib);
        let erased = self.geometry.erased;
        let cells = Arc::make_mut(&mut self.sectors[s]);
        if cut == Some(CutVariant::Torn) {
            // Some cells reached the erased state, others did not: the sector is neither
            // erased nor intact, and must be erased again before any write. Interrupted early,
            // midway or late, equally likely: early tears keep most old data readable.
            let fraction: f64 = match self.rng.gen_range(0..3) {
                0 => self.rng.gen_range(0.0001..0.02),
                1 => self.rng.gen_range(0.02..0.98),
                _ => self.rng.gen_range(0.98..0.9999),
            };
            for b in cells.bytes.iter_mut() {
                if self.rng.gen_bool(fraction) {
                    *b = erased;
                }
            }
            cells.programmed.fill(u64::MAX);
            return Err(self.lose_power());
        }
        cells.bytes.fill(erased);
        cells.programmed.fill(0);
        if cut == Some(CutVariant::After) {
            return Err(self.lose_power());
        }
        Ok(())
    }

    /// Split `addr..addr+len` into (sector, offset in sector, range of the input) pieces.
    fn spans(
        &self,
        addr: u32,
        len: usize,
    ) -> Result<Vec<(usize, usize, std::ops::Range<usize>)>, FlashError> {
        let end = self.check_range(addr, len)?;
        let mut out = Vec::new();
        let mut a = addr;
        while a < end {
            let (s, i) = self.locate(a, 1)?;
            let n = (self.sectors[s].bytes.len() - i).min((end - a) as usize);
            let from = (a - addr) as usize;
            out.push((s, i, from..from + n));
            a += n as u32;
        }
        Ok(out)
    }

    fn program(&mut self, addr: u32, data: &[u8], mark_all: bool) -> Result<(), FlashError> {
        let erased = self.geometry.erased;
        for (s, i, range) in self.spans(addr, data.len())? {
            let cells = Arc::make_mut(&mut self.sectors[s]);
            let src = &data[range];
            if mark_all {
                // The common case, a word at a time (the compiler vectorizes the byte loop).
                let dst = &mut cells.bytes[i..i + src.len()];
                if erased == 0xFF {
                    dst.iter_mut().zip(src).for_each(|(d, v)| *d &= v);
                } else {
                    dst.iter_mut().zip(src).for_each(|(d, v)| *d |= v);
                }
                cells.set_programmed_range(i, i + src.len());
                continue;
            }
            for (k, &v) in src.iter().enumerate() {
                let old = cells.bytes[i + k];
                let new = if erased == 0xFF { old & v } else { old | v };
                cells.bytes[i + k] = new;
                if new != old {
                    cells.set_programmed(i + k);
                }
            }
        }
        Ok(())
    }
}

impl Flash for SimFlash {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    fn set_context(&mut self, context: OpContext) {
        self.context = context;
    }
    fn busy_us(&self) -> u64 {
        self.stats.busy_us
    }
    fn set_powered(&mut self, on: bool) {
        self.powered = on;
    }
    fn ops(&self) -> u64 {
        self.ops
    }
    fn stats(&self) -> FlashStats {
        self.stats
    }
    fn take_fired(&mut self) -> Option<FiredCut> {
        self.fired.take()
    }

    fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        self.check_powered()?;
        let end = self.check_range(addr, buf.len())?;
        let mut a = addr;
        let mut out = 0;
        while a < end {
            let (s, i) = self.locate(a, 1)?;
            let cells = &self.sectors[s];
            let n = (cells.bytes.len() - i).min((end - a) as usize);
            buf[out..out + n].copy_from_slice(&cells.bytes[i..i + n]);
            out += n;
            a += n as u32;
        }
        Ok(())
    }

    fn erase(&mut self, addr: u32, len: u32) -> Result<(), FlashError> {
        self.check_powered()?;
        for s in self.geometry.sectors_covering(addr, len)? {
            self.erase_sector(s)?;
        }
        Ok(())
    }

    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError> {
        self.check_powered()?;
        self.check_range(addr, data.len())?;
        let align = self.geometry.write_align;
        if addr as usize % align != 0 || data.len() % align != 0 {
            return Err(FlashError::Unaligned {
                addr,
                len: data.len(),
                align,
            });
        }
        // Checked before the operation counts: a rejected write never touches the cells.
        for (s, i, range) in self.spans(addr, data.len())? {
            let cells = &self.sectors[s];
            if let Some(k) = cells.first_programmed(i, i + range.len()) {
                return Err(FlashError::NotErased {
                    addr: self.geometry.sectors[s].offset + k as u32,
                });
            }
        }
        let cut = self.begin(OpKind::Write, addr, data.len() as u32);
        if cut == Some(CutVariant::Before) {
            return Err(self.lose_power());
        }
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        self.stats.busy_us += (data.len() as u64
            * u64::from(self.geometry.timing.program_ns_per_byte))
        .div_ceil(1000);
        if cut == Some(CutVariant::Torn) {
            let units = data.len() / align;
            let landed = self.rng.gen_range(0..units);
            self.program(addr, &data[..landed * align], true)?;
            // The unit in flight: a random subset of the bits that should move did move.
            let start = landed * align;
            let erased = self.geometry.erased;
            let partial: Vec<u8> = data[start..start + align]
                .iter()
                .map(|&v| {
                    let moving = v ^ erased;
                    let moved = moving & self.rng.r#gen::<u8>();
                    erased ^ moved
                })
                .collect();
            self.program(addr + start as u32, &partial, false)?;
            return Err(self.lose_power());
        }
        self.program(addr, data, true)?;
        if cut == Some(CutVariant::After) {
            return Err(self.lose_power());
        }
        Ok(())
    }
}

/// A [`SimFlash`] whose contents live in a file, written through after every operation, so a
/// served ECU keeps its flash across process restarts (also after `kill -9`).
///
/// On open, a byte that reads as the erased value counts as erased (the file stores cell values
/// only, like a flash dump).
#[derive(Debug)]
pub struct FileFlash {
    inner: SimFlash,
    file: File,
    path: PathBuf,
}

impl FileFlash {
    /// Open `path`, creating an erased device if it does not exist. An existing file must be
    /// exactly the device size.
    pub fn open(path: &Path, geometry: Geometry, seed: u64) -> Result<Self, FlashError> {
        let io = |source| FlashError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut inner = SimFlash::new(geometry, seed);
        let size = inner.geometry.size();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            file.write_all(&inner.contents()).map_err(io)?;
            file.sync_all().map_err(io)?;
        } else if len != u64::from(size) {
            return Err(FlashError::BadGeometry(format!(
                "{} holds {len} bytes but the geometry is {size} bytes",
                path.display()
            )));
        } else {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(io)?;
            let erased = inner.geometry.erased;
            for (s, sector) in inner.geometry.sectors.clone().iter().enumerate() {
                let cells = Arc::make_mut(&mut inner.sectors[s]);
                let src = &data[sector.offset as usize..sector.end() as usize];
                cells.bytes.copy_from_slice(src);
                for (i, &b) in src.iter().enumerate() {
                    if b != erased {
                        cells.set_programmed(i);
                    }
                }
            }
        }
        Ok(FileFlash {
            inner,
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn sim(&self) -> &SimFlash {
        &self.inner
    }
    pub fn sim_mut(&mut self) -> &mut SimFlash {
        &mut self.inner
    }

    /// Write `addr..addr+len` of the model back to the file, whatever the operation's outcome
    /// (a torn operation changed cells too).
    fn sync(&mut self, addr: u32, len: u32) -> Result<(), FlashError> {
        let io = |source| FlashError::Io {
            path: self.path.clone(),
            source,
        };
        let was = self.inner.powered;
        self.inner.powered = true;
        let mut buf = vec![0; len as usize];
        let read = self.inner.read(addr, &mut buf);
        self.inner.powered = was;
        read?;
        self.file
            .seek(SeekFrom::Start(u64::from(addr)))
            .map_err(io)?;
        // No fsync per operation: the page cache survives the process being killed, which is
        // what a served ECU must survive; `flush` makes it durable on a clean shutdown.
        self.file.write_all(&buf).map_err(io)
    }

    /// Make everything written so far durable (fsync).
    pub fn flush(&mut self) -> Result<(), FlashError> {
        self.file.sync_all().map_err(|source| FlashError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Flash for FileFlash {
    fn geometry(&self) -> &Geometry {
        self.inner.geometry()
    }
    fn busy_us(&self) -> u64 {
        self.inner.busy_us()
    }
    fn set_powered(&mut self, on: bool) {
        self.inner.set_powered(on);
    }
    fn ops(&self) -> u64 {
        self.inner.ops
    }
    fn stats(&self) -> FlashStats {
        self.inner.stats
    }
    fn take_fired(&mut self) -> Option<FiredCut> {
        self.inner.take_fired()
    }
    fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        self.inner.read(addr, buf)
    }
    fn erase(&mut self, addr: u32, len: u32) -> Result<(), FlashError> {
        let r = self.inner.erase(addr, len);
        if !matches!(
            r,
            Err(FlashError::OutOfBounds { .. } | FlashError::NotSectorAligned { .. })
        ) {
            self.sync(addr, len)?;
        }
        r
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError> {
        let r = self.inner.write(addr, data);
        if r.is_ok() || matches!(r, Err(FlashError::PowerLost { .. })) {
            self.sync(addr, data.len() as u32)?;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(align: usize) -> SimFlash {
        SimFlash::new(Geometry::uniform(256, 4, align).unwrap(), 1)
    }

    #[test]
    fn write_then_read_back() {
        let mut f = small(4);
        f.write(0x104, &[1, 2, 3, 4]).unwrap();
        let mut buf = [0; 8];
        f.read(0x100, &mut buf).unwrap();
        assert_eq!(buf, [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
        assert_eq!(f.ops(), 1);
        assert_eq!(f.stats().writes, 1);
    }

    #[test]
    fn rejects_unaligned_write_naming_address() {
        let mut f = small(8);
        let e = f.write(0x04, &[0; 8]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "write 0x00000004+8 is not aligned to the 8-byte write unit"
        );
        let e = f.write(0x08, &[0; 4]).unwrap_err();
        assert!(matches!(
            e,
            FlashError::Unaligned {
                addr: 8,
                len: 4,
                align: 8
            }
        ));
        assert_eq!(f.ops(), 0, "rejected writes are not operations");
    }

    #[test]
    fn rejects_write_to_programmed_byte() {
        let mut f = small(1);
        f.write(0x10, &[0xF0]).unwrap();
        let e = f.write(0x0F, &[0xAA, 0xAA]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "write to 0x00000010, which was programmed and not erased since"
        );
        // Even writing the erased value counts as programming.
        f.write(0x20, &[0xFF]).unwrap();
        assert!(matches!(
            f.write(0x20, &[0x00]),
            Err(FlashError::NotErased { addr: 0x20 })
        ));
        f.erase(0, 256).unwrap();
        f.write(0x10, &[0x0F]).unwrap();
    }

    #[test]
    fn program_only_moves_bits_away_from_erased() {
        // With 0x00 erased, programming ORs.
        let g = Geometry::uniform(64, 2, 1)
            .unwrap()
            .with_erased(0x00)
            .unwrap();
        let mut f = SimFlash::new(g, 0);
        let mut b = [0xAA];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0x00]);
        f.write(0, &[0x5A]).unwrap();
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0x5A]);
        assert!(
            Geometry::uniform(64, 2, 1)
                .unwrap()
                .with_erased(0x55)
                .is_err()
        );
    }

    #[test]
    fn rejects_out_of_bounds_and_partial_sector_erase() {
        let mut f = small(1);
        assert_eq!(
            f.write(0x3FF, &[0, 0]).unwrap_err().to_string(),
            "access 0x000003ff+2 is outside the flash (size 0x400)"
        );
        assert_eq!(
            f.erase(0x80, 0x100).unwrap_err().to_string(),
            "erase 0x00000080+256 does not cover whole sectors"
        );
        let mut buf = [0; 2];
        assert!(matches!(
            f.read(0x3FF, &mut buf),
            Err(FlashError::OutOfBounds { .. })
        ));
        assert!(matches!(
            f.read(u32::MAX, &mut buf),
            Err(FlashError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn bad_geometries_are_refused() {
        assert!(Geometry::uniform(256, 4, 3).is_err());
        assert!(Geometry::from_sizes("x", &[256, 100], 8).is_err());
        assert!(Geometry::from_sizes("x", &[], 8).is_err());
    }

    #[test]
    fn uneven_map_lookups() {
        let g = Geometry::stm32f4_1mib(4).unwrap();
        assert_eq!(g.size(), 1024 * 1024);
        assert_eq!(g.sectors().len(), 12);
        assert_eq!(g.sector_index(0x0000_3FFF), Some(0));
        assert_eq!(g.sector_index(0x0001_0000), Some(4));
        assert_eq!(g.sector_index(0x0002_0000), Some(5));
        assert_eq!(g.sector_index(0x000F_FFFF), Some(11));
        assert_eq!(g.sector_index(0x0010_0000), None);
        assert_eq!(g.sectors_covering(0x0001_0000, 0x3_0000).unwrap(), 4..6);
        assert!(g.sectors_covering(0x0001_0000, 0x1_0000 + 0x1000).is_err());
    }

    #[test]
    fn each_sector_erase_is_one_operation() {
        let mut f = small(1);
        f.erase(0, 0x300).unwrap();
        assert_eq!(f.ops(), 3);
        assert_eq!(f.stats().erases, 3);
        assert!(f.stats().busy_us > 0);
    }

    #[test]
    fn cut_before_leaves_cells_untouched() {
        let mut f = small(4);
        f.arm_cut(0, CutVariant::Before);
        assert!(matches!(
            f.write(0, &[0; 8]),
            Err(FlashError::PowerLost { op: 0 })
        ));
        assert_eq!(f.take_fired().unwrap().variant, CutVariant::Before);
        assert!(matches!(
            f.read(0, &mut [0; 1]),
            Err(FlashError::PowerLost { .. })
        ));
        f.restore_power();
        assert!(f.is_erased(0, 8).unwrap());
    }

    #[test]
    fn cut_after_completes_the_operation() {
        let mut f = small(4);
        f.arm_cut(0, CutVariant::After);
        assert!(f.write(0, &[0; 8]).is_err());
        f.restore_power();
        let mut b = [0xEE; 8];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
    }

    #[test]
    fn torn_write_lands_a_prefix_and_is_seeded() {
        let torn = |seed| {
            let mut f = SimFlash::new(Geometry::uniform(256, 1, 4).unwrap(), seed);
            f.arm_cut(0, CutVariant::Torn);
            assert!(f.write(0, &[0u8; 64]).is_err());
            f.restore_power();
            let mut b = [0; 64];
            f.read(0, &mut b).unwrap();
            b
        };
        let a = torn(7);
        assert_eq!(a, torn(7), "same seed, same tear");
        // A prefix of whole zero units, then at most one half-programmed unit, then erased cells.
        let first_not_zero = a.iter().position(|&b| b != 0).unwrap();
        let unit = first_not_zero / 4;
        assert!(a[(unit + 1) * 4..].iter().all(|&b| b == 0xFF), "{a:?}");
        let differs = (0..64u64).any(|s| torn(s) != a);
        assert!(differs, "tear point depends on the seed");
    }

    #[test]
    fn torn_erase_needs_a_new_erase() {
        let mut f = small(1);
        f.write(0, &[0u8; 256]).unwrap();
        f.arm_cut(1, CutVariant::Torn);
        assert!(f.erase(0, 256).is_err());
        f.restore_power();
        let mut b = [0; 256];
        f.read(0, &mut b).unwrap();
        assert!(
            b.contains(&0xFF) && b.contains(&0x00),
            "neither erased nor intact"
        );
        assert!(matches!(
            f.write(0, &[0]),
            Err(FlashError::NotErased { .. })
        ));
        let pos = b.iter().position(|&x| x == 0xFF).unwrap() as u32;
        assert!(
            f.write(pos, &[0]).is_err(),
            "even cells that read erased need an erase"
        );
        f.erase(0, 256).unwrap();
        f.write(0, &[1]).unwrap();
    }

    #[test]
    fn armed_cut_fires_once_at_its_index() {
        let mut f = small(1);
        f.arm_cut(2, CutVariant::Before);
        f.write(0, &[1]).unwrap();
        f.write(1, &[1]).unwrap();
        assert!(f.write(2, &[1]).is_err());
        assert_eq!(f.take_fired().unwrap().op.index, 2);
        f.restore_power();
        f.write(3, &[1]).unwrap();
        assert_eq!(f.take_fired(), None);
    }

    #[test]
    fn cut_rules_count_matching_operations_only() {
        let mut f = small(1);
        // The 2nd write at or above address 4, during boot 3.
        f.add_cut_rule(CutRule {
            id: 1,
            kind: Some(OpKind::Write),
            ranges: std::iter::once(4..u32::MAX).collect(),
            boot: Some(Some(3)),
            firmware_only: false,
            nth: 2,
            variant: CutVariant::After,
        });
        f.write(4, &[1]).unwrap(); // firmware: not counted
        f.set_context(OpContext::Boot(2));
        f.write(5, &[1]).unwrap(); // boot 2: not counted
        f.set_context(OpContext::Boot(3));
        f.write(0, &[1]).unwrap(); // below the range
        f.write(6, &[1]).unwrap(); // 1st match
        f.erase(0, 256).unwrap(); // an erase
        assert_eq!(f.cut_rules().len(), 1);
        assert!(f.write(7, &[1]).is_err(), "2nd match fires");
        let fired = f.take_fired().unwrap();
        assert_eq!((fired.op.index, fired.variant), (5, CutVariant::After));
        assert!(f.cut_rules().is_empty(), "a rule fires once");
        f.restore_power();
        f.write(8, &[1]).unwrap();
        // Firmware-only rules ignore the bootloader.
        f.add_cut_rule(CutRule {
            id: 2,
            kind: None,
            ranges: Vec::new(),
            boot: None,
            firmware_only: true,
            nth: 1,
            variant: CutVariant::Before,
        });
        f.write(9, &[1]).unwrap();
        f.set_context(OpContext::Firmware);
        assert!(f.write(10, &[1]).is_err());
    }

    #[test]
    fn bit_rot_flips_without_counting() {
        let mut f = small(1);
        f.write(0, &[0x0F]).unwrap();
        f.flip_bits(0, 0x01).unwrap();
        let mut b = [0];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0x0E]);
        assert_eq!(f.ops(), 1);
    }

    #[test]
    fn clones_are_independent_and_share_untouched_sectors() {
        let mut a = small(1);
        a.write(0, &[1]).unwrap();
        let mut b = a.clone();
        b.write(1, &[2]).unwrap();
        let mut x = [0; 2];
        a.read(0, &mut x).unwrap();
        assert_eq!(x, [1, 0xFF]);
        assert!(Arc::ptr_eq(&a.sectors[3], &b.sectors[3]));
    }

    #[test]
    fn random_factory_contents_must_be_erased_first() {
        let mut f = SimFlash::new_random(Geometry::uniform(256, 2, 4).unwrap(), 3);
        assert!(matches!(
            f.write(0, &[0; 4]),
            Err(FlashError::NotErased { addr: 0 })
        ));
        f.erase(0, 256).unwrap();
        f.write(0, &[0; 4]).unwrap();
    }

    #[test]
    fn file_backing_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        let g = Geometry::uniform(256, 4, 4).unwrap();
        {
            let mut f = FileFlash::open(&path, g.clone(), 0).unwrap();
            f.write(0x100, &[1, 2, 3, 4]).unwrap();
            f.sim_mut().arm_cut(1, CutVariant::After);
            assert!(f.write(0x200, &[5, 6, 7, 8]).is_err());
        }
        let mut f = FileFlash::open(&path, g.clone(), 0).unwrap();
        let mut b = [0; 4];
        f.read(0x100, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        f.read(0x200, &mut b).unwrap();
        assert_eq!(b, [5, 6, 7, 8], "an op completed before the cut is on disk");
        assert!(matches!(
            f.write(0x100, &[0; 4]),
            Err(FlashError::NotErased { .. })
        ));
        f.erase(0x100, 0x100).unwrap();
        drop(f);
        let f = FileFlash::open(&path, g, 0).unwrap();
        f.read(0x100, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4]);
        let wrong = Geometry::uniform(256, 8, 4).unwrap();
        assert!(matches!(
            FileFlash::open(&path, wrong, 0),
            Err(FlashError::BadGeometry(_))
        ));
    }
}
