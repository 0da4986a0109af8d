//! [`SimFlash`]: the in-memory NOR model with operation counting, armed cuts and bit rot.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

#[derive(Clone, Debug)]
pub(super) struct SectorCells {
    pub(super) bytes: Vec<u8>,
    /// One bit per byte: programmed since the last erase.
    pub(super) programmed: Vec<u64>,
    /// SHA-256 of `bytes` and `programmed`, computed when first asked for and forgotten by
    /// every change ([`SimFlash::cells_mut`]). It lives in the shared sector, so the copies
    /// of a copy-on-write flash share it: a fingerprint rehashes only the sectors changed
    /// since (see [`SimFlash::sector_hash`]).
    pub(super) hash: std::sync::OnceLock<[u8; 32]>,
}

impl SectorCells {
    pub(super) fn erased(size: usize, value: u8) -> Self {
        SectorCells {
            bytes: vec![value; size],
            programmed: vec![0; size.div_ceil(64)],
            hash: std::sync::OnceLock::new(),
        }
    }
    fn hash(&self) -> [u8; 32] {
        *self.hash.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(&self.bytes);
            for w in &self.programmed {
                h.update(w.to_le_bytes());
            }
            h.finalize().into()
        })
    }
    pub(super) fn is_programmed(&self, i: usize) -> bool {
        self.programmed[i / 64] & (1 << (i % 64)) != 0
    }
    pub(super) fn set_programmed(&mut self, i: usize) {
        self.programmed[i / 64] |= 1 << (i % 64);
    }
    /// The bits of word `w` that fall in `start..end`.
    pub(super) fn word_mask(w: usize, start: usize, end: usize) -> u64 {
        let lo = start.max(w * 64) - w * 64;
        let hi = end.min(w * 64 + 64) - w * 64;
        if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        }
    }
    /// The first programmed byte in `start..end`, a word at a time.
    pub(super) fn first_programmed(&self, start: usize, end: usize) -> Option<usize> {
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
    pub(super) fn set_programmed_range(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        for w in start / 64..=(end - 1) / 64 {
            self.programmed[w] |= Self::word_mask(w, start, end);
        }
    }
}

/// Sector `s` to change: its own copy if it is shared (copy-on-write), its hash forgotten.
/// Every change to the cells goes through here.
pub(super) fn cells_mut(sectors: &mut [Arc<SectorCells>], s: usize) -> &mut SectorCells {
    let cells = Arc::make_mut(&mut sectors[s]);
    cells.hash = std::sync::OnceLock::new();
    cells
}

/// In-memory NOR flash with operation counting, armed power cuts and bit-rot injection.
#[derive(Clone, Debug)]
pub struct SimFlash {
    pub(super) geometry: Arc<Geometry>,
    pub(super) sectors: Vec<Arc<SectorCells>>,
    pub(super) ops: u64,
    pub(super) stats: FlashStats,
    pub(super) armed: Option<(u64, CutVariant)>,
    pub(super) rules: Vec<CutRule>,
    pub(super) context: OpContext,
    pub(super) fired: Option<FiredCut>,
    pub(super) powered: bool,
    pub(super) seed: u64,
    pub(super) tear_salt: u64,
    pub(super) rng: ChaCha8Rng,
    pub(super) last_op: Option<Op>,
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
        for s in 0..flash.sectors.len() {
            let cells = cells_mut(&mut flash.sectors, s);
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
    /// Take out the rule named `id` (whether or not it would still fire).
    pub fn remove_cut_rule(&mut self, id: u64) {
        self.rules.retain(|r| r.id != id);
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
        cells_mut(&mut self.sectors, s).bytes[i] ^= mask;
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

    /// SHA-256 of sector `s`'s cells: its bytes and which of them are programmed (both decide
    /// what the flash does next: a read, a write refused as not erased). Kept with the
    /// sector and shared by the copies of this flash; only a sector changed since the last
    /// call is hashed again. `None` past the last sector.
    pub fn sector_hash(&self, s: usize) -> Option<[u8; 32]> {
        self.sectors.get(s).map(|c| c.hash())
    }

    /// SHA-256 of the whole device's cells, from the sectors' hashes ([`SimFlash::sector_hash`]):
    /// two flashes of the same geometry have the same fingerprint exactly when every byte and
    /// every programmed bit are the same (up to SHA-256 collisions). Not in it: the counters
    /// (operations, statistics), power, armed cuts, the tear randomness — the caller decides
    /// which of those matter.
    pub fn contents_fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.geometry.erased.to_le_bytes());
        for (cells, sector) in self.sectors.iter().zip(&self.geometry.sectors) {
            h.update(sector.offset.to_le_bytes());
            h.update(sector.size.to_le_bytes());
            h.update(cells.hash());
        }
        h.finalize().into()
    }

    /// Write the state that decides this flash's future into `f`: the cells
    /// ([`SimFlash::contents_fingerprint`]), power and whose operations it counts. Left out:
    /// the operation counters and statistics (only armed cuts read the counters; the ECU
    /// reads busy time as differences, which it writes itself) and the tear randomness (only
    /// a cut uses it, reseeded from the operation's index). So a flash with a cut armed, a
    /// rule waiting or a fired cut not yet taken has no fingerprint.
    pub fn fingerprint(
        &self,
        f: &mut crate::fingerprint::Fingerprint,
    ) -> Result<(), crate::fingerprint::Unfingerprintable> {
        use crate::fingerprint::Unfingerprintable;
        if self.armed.is_some() || self.fired.is_some() {
            return Err(Unfingerprintable("a cut is armed in the flash"));
        }
        if !self.rules.is_empty() {
            return Err(Unfingerprintable("a cut rule waits in the flash"));
        }
        f.tag("flash");
        f.bytes(&self.contents_fingerprint());
        f.bool(self.powered);
        f.debug(&self.context);
        Ok(())
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
        let cells = cells_mut(&mut self.sectors, s);
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
            let cells = cells_mut(&mut self.sectors, s);
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
    fn add_cut_rule(&mut self, rule: CutRule) {
        SimFlash::add_cut_rule(self, rule);
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
