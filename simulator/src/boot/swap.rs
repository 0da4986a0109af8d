//! A swap in progress: the steps of the journal's tables (see [`super::journal`]), run and
//! recorded one by one, with the payloads of encrypted images decrypted on their way into the
//! primary slot and encrypted on their way into the secondary (see [`super::crypt`]).

use crate::event::EventKind;
use crate::flash::{Flash, FlashError};
use crate::image;

use super::crypt::{PayloadKey, SwapKeys};
use super::journal::{self, Record, Step};
use super::layout::{BootMode, Layout, Slot};
use super::loader::{BootError, Defect, Sink, image_bytes};
use super::trailer::{self, Complete, SwapType};

/// A swap in progress.
pub(super) struct Swap<'a> {
    pub(super) layout: &'a Layout,
    pub(super) defect: Option<Defect>,
    pub(super) seq: u32,
    pub(super) kind: SwapType,
    pub(super) sectors: u16,
    pub(super) journal: usize,
    pub(super) next: Option<u32>,
    /// The keys of the encrypted images the swap moves (empty: it moves plain images).
    pub(super) keys: SwapKeys,
}

/// Copy granule: one write operation per chunk.
const COPY_CHUNK: u32 = 1024;

/// Every step of a swap of `k` sectors, in order (the journal's tables).
fn plan(mode: BootMode, kind: SwapType, k: u16) -> Vec<(Step, u16)> {
    let up = 0..k;
    match (mode, kind) {
        (BootMode::SwapMove, _) => up
            .clone()
            .rev()
            .map(|i| (Step::M, i))
            .chain(up.flat_map(|i| [(Step::A, i), (Step::B, i)]))
            .collect(),
        (BootMode::SwapOffset, SwapType::Revert) => up
            .rev()
            .flat_map(|i| [(Step::A, i), (Step::B, i)])
            .collect(),
        (BootMode::SwapOffset, _) => up.flat_map(|i| [(Step::A, i), (Step::B, i)]).collect(),
        _ => up
            .flat_map(|i| [(Step::A, i), (Step::B, i), (Step::C, i)])
            .collect(),
    }
}

impl<'a> Swap<'a> {
    /// Start swap `seq`: erase its journal sector, record the start, save the image keys
    /// (encrypted images only), run every step.
    pub(super) fn start<F: Flash>(
        layout: &'a Layout,
        defect: Option<Defect>,
        flash: &mut F,
        seq: u32,
        kind: SwapType,
        keys: SwapKeys,
        sink: &mut Sink,
    ) -> Result<(), BootError> {
        let image_len = |slot| -> Result<u32, FlashError> {
            let bytes = image_bytes(flash, layout, slot)?;
            Ok(image::parse(&bytes).map_or(0, |p| p.total_size as u32))
        };
        let len = image_len(Slot::Primary)?.max(image_len(Slot::Secondary)?);
        let sectors = layout.primary.sectors_for(len) as u16;
        let journal = (seq % 2) as usize;
        let region = &layout.journal[journal];
        flash.erase(region.offset, region.size)?;
        flash.write(
            region.offset,
            &Record::Start { seq, kind, sectors }.encode(layout.unit, layout.erased),
        )?;
        let mut swap = Swap {
            layout,
            defect,
            seq,
            kind,
            sectors,
            journal,
            next: Some(region.offset + journal::record_size(layout.unit)),
            keys,
        };
        swap.save_keys(flash)?;
        sink.emit(flash, EventKind::SwapStarted { kind, seq, sectors });
        let first = swap.next_step(None);
        swap.run(flash, first, sink)
    }

    /// Save the image keys before the first step: erase the primary trailer (once the start
    /// record exists the journal says what the swap does, and the trailer is rebuilt at its
    /// end), write each key into its field, then one key record per key into the journal.
    /// Nothing for a swap of plain images.
    pub(super) fn save_keys<F: Flash>(&mut self, flash: &mut F) -> Result<(), BootError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        trailer::erase(flash, self.layout, Slot::Primary)?;
        for slot in [Slot::Primary, Slot::Secondary] {
            if let Some(k) = self.keys.get(slot) {
                k.write_field(flash, self.layout, slot)?;
            }
        }
        for slot in [Slot::Primary, Slot::Secondary] {
            if let Some(k) = self.keys.get(slot) {
                let key = k.record(slot);
                self.append(flash, Record::Key { seq: self.seq, key })?;
            }
        }
        Ok(())
    }

    /// The step after `last` (`None`: the first), or `None` when the trailers come next.
    pub(super) fn next_step(&self, last: Option<(Step, u16)>) -> Option<(Step, u16)> {
        let plan = plan(self.layout.mode, self.kind, self.sectors);
        match last {
            None => plan.first().copied(),
            Some(done) => {
                let at = plan.iter().position(|&s| s == done)?;
                plan.get(at + 1).copied()
            }
        }
    }

    /// The step that ends the move of sector `i` (reported as progress).
    fn last_of_sector(&self, step: Step) -> bool {
        match self.layout.mode {
            BootMode::SwapMove | BootMode::SwapOffset => step == Step::B,
            _ => step == Step::C,
        }
    }

    pub(super) fn run<F: Flash>(
        &mut self,
        flash: &mut F,
        first: Option<(Step, u16)>,
        sink: &mut Sink,
    ) -> Result<(), BootError> {
        let mut step = first;
        while let Some((s, i)) = step {
            let record = Record::Step {
                seq: self.seq,
                step: s,
                sector: i,
            };
            if self.defect == Some(Defect::JournalBeforeCopy) {
                self.append(flash, record)?;
                self.do_step(flash, s, i)?;
            } else if self.defect == Some(Defect::NoStepRecords) {
                self.do_step(flash, s, i)?;
            } else {
                self.do_step(flash, s, i)?;
                self.append(flash, record)?;
            }
            if self.last_of_sector(s) {
                sink.emit(
                    flash,
                    EventKind::SwapProgress {
                        kind: self.kind,
                        sector: i,
                        of: self.sectors,
                    },
                );
            }
            step = self.next_step(Some((s, i)));
        }
        // Rebuild both trailers, then close the swap.
        let layout = self.layout;
        trailer::erase(flash, layout, Slot::Primary)?;
        trailer::write_complete(
            flash,
            layout,
            Slot::Primary,
            Complete {
                swap_type: self.kind,
                // The journal's start record holds what the swap moves.
                swap_size: None,
                image_ok: self.kind != SwapType::Test,
                copy_done: true,
            },
        )?;
        trailer::erase(flash, layout, Slot::Secondary)?;
        self.append(flash, Record::Done { seq: self.seq })?;
        sink.emit(
            flash,
            EventKind::SwapFinished {
                kind: self.kind,
                seq: self.seq,
            },
        );
        Ok(())
    }

    /// Erase the step's destination, copy its source there (the journal's tables), decrypting
    /// what leaves the secondary slot and encrypting what enters it (MCUboot's
    /// `boot_copy_region`: a copy out of the secondary into the primary or the scratch sector
    /// decrypts with the secondary image's key, a copy into the secondary encrypts with the
    /// primary image's key, other copies are plain). Every step moves the image bytes at the
    /// same image offset: the start of image sector `i`.
    fn do_step<F: Flash>(&self, flash: &mut F, step: Step, i: u16) -> Result<(), BootError> {
        let l = self.layout;
        let i = usize::from(i);
        let image_offset: u32 = l.primary.image_sectors[..i].iter().map(|&(_, s)| s).sum();
        let (p, s) = (l.primary.data_sectors(), l.secondary.data_sectors());
        let (from, to) = match (l.mode, step) {
            (BootMode::SwapMove, Step::M) => (p[i], p[i + 1]),
            (BootMode::SwapMove, Step::A) => (s[i], p[i]),
            (BootMode::SwapMove, Step::B) => (p[i + 1], s[i]),
            (BootMode::SwapOffset, Step::A) if self.kind == SwapType::Revert => (p[i], s[i + 1]),
            (BootMode::SwapOffset, Step::B) if self.kind == SwapType::Revert => (s[i], p[i]),
            (BootMode::SwapOffset, Step::A) => (p[i], s[i]),
            (BootMode::SwapOffset, Step::B) => (s[i + 1], p[i]),
            (_, step) => {
                let scratch = l.scratch.as_ref().ok_or(BootError::NoScratch)?;
                let scratch = (scratch.offset, scratch.size);
                match step {
                    Step::A => (s[i], scratch),
                    Step::B => (p[i], s[i]),
                    Step::C => (scratch, p[i]),
                    Step::M => return Err(BootError::NoScratch),
                }
            }
        };
        let secondary = &l.secondary.region;
        let in_secondary = |a: u32| a >= secondary.offset && a < secondary.offset + secondary.size;
        let key = match (in_secondary(from.0), in_secondary(to.0)) {
            (true, false) => self.keys.get(Slot::Secondary),
            (false, true) => self.keys.get(Slot::Primary),
            _ => None,
        };
        flash.erase(to.0, to.1)?;
        let len = from.1.min(to.1);
        copy(
            flash,
            from.0,
            to.0,
            len,
            l.erased,
            key.map(|k| (k, image_offset)),
        )?;
        Ok(())
    }

    fn append<F: Flash>(&mut self, flash: &mut F, record: Record) -> Result<(), BootError> {
        let region = &self.layout.journal[self.journal];
        let size = journal::record_size(self.layout.unit);
        let addr = self
            .next
            .filter(|a| a + size <= region.offset + region.size)
            .ok_or(BootError::JournalFull {
                journal: self.journal,
            })?;
        self.next = Some(addr + size);
        flash.write(addr, &record.encode(self.layout.unit, self.layout.erased))?;
        Ok(())
    }
}

/// Copy `len` bytes, one write per chunk, skipping chunks that are all erased (the destination
/// was just erased, so they already hold exactly that). With `crypt` = (key, image offset of
/// `from`), the payload bytes among them are decrypted or encrypted on the way (AES-CTR: the
/// same XOR).
pub(super) fn copy<F: Flash>(
    flash: &mut F,
    from: u32,
    to: u32,
    len: u32,
    erased: u8,
    crypt: Option<(&PayloadKey, u32)>,
) -> Result<(), FlashError> {
    let mut buf = vec![0; COPY_CHUNK.min(len) as usize];
    let mut off = 0;
    while off < len {
        let n = COPY_CHUNK.min(len - off) as usize;
        flash.read(from + off, &mut buf[..n])?;
        if let Some((key, image_offset)) = crypt {
            key.apply(image_offset + off, &mut buf[..n]);
        }
        if buf[..n].iter().any(|&b| b != erased) {
            flash.write(to + off, &buf[..n])?;
        }
        off += n as u32;
    }
    Ok(())
}
