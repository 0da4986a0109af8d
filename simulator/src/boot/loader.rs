//! The bootloader: runs at every reset and decides what boots.
//!
//! ## Swap mode (the primary slot always runs)
//!
//! | order | condition | action |
//! |---|---|---|
//! | 1 | the journal holds an unfinished swap | resume it (see [`super::journal`]) |
//! | 2 | primary trailer: test image, installed by a swap, unconfirmed, attempts used ≥ `max_boot_attempts` | revert swap |
//! | 3 | secondary trailer: complete upgrade request (test or permanent) | verify the secondary image (hash, signature, security counter ≥ stored); good → swap, bad → erase the request |
//! | 4 | — | verify the primary image; a test image on probation records a boot attempt; a confirmed image raises the stored security counter to its own; an invalid test image is reverted |
//!
//! ## A/B mode (either slot runs in place)
//!
//! | order | condition | action |
//! |---|---|---|
//! | 1 | a slot holds a test image (complete trailer, test, not confirmed) | attempts used ≥ max → erase its trailer (revert); image fails verification → erase its trailer; otherwise record an attempt and boot it |
//! | 2 | — | among confirmed slots whose image verifies, boot the highest version (equal: primary); raise the stored security counter |
//!
//! In both modes the stored security counter only rises when a *confirmed* image boots,
//! never at a test boot, so a rejected test image cannot lock out the image it replaced.

use crate::event::{EventKind, RevertReason};
use crate::flash::{EventCut, Flash, FlashError};
use crate::image::{self, ImageError, ImageInfo, Keyring};

use super::journal::{self, Record, Step, SwapState};
use super::layout::{BootMode, Layout, Slot};
use super::trailer::{self, Field, MAX_ATTEMPTS, SwapType};

/// Bootloader settings.
#[derive(Clone, Debug)]
pub struct BootConfig {
    /// Boots a test image gets before it is reverted (1 = MCUboot's behaviour).
    pub max_boot_attempts: u8,
    /// Keys images must be signed with; empty = hash check only.
    pub keys: Keyring,
    /// A deliberate bug (`None` for every real use): proves that power-cut sweeps find bugs.
    pub defect: Option<Defect>,
}

/// Deliberate bootloader bugs. A sweep that cannot fail is worthless; these make it fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// The swap journal records each step as done *before* the step's erase and copy run,
    /// instead of after: a power cut inside the copy makes the resumed swap skip a sector.
    JournalBeforeCopy,
    /// The swap journal records no steps at all: a swap interrupted by a power cut starts
    /// over from the first sector, swapping back the sectors it had already swapped.
    NoStepRecords,
}

/// What the bootloader decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootDecision {
    Boot(Booted),
    /// Nothing verifies: the ECU stays in the bootloader.
    NoBootableImage {
        reasons: Vec<(Slot, String)>,
    },
}

/// The image that was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booted {
    pub slot: Slot,
    pub image: ImageInfo,
    /// Running on probation (must confirm).
    pub test: bool,
    /// Which attempt this is (1-based) for a test boot, 0 otherwise.
    pub attempt: u8,
}

/// Failures that stop the bootloader (a power loss, mostly).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Flash(#[from] FlashError),
    #[error("swap journal sector {journal} is full")]
    JournalFull { journal: usize },
    #[error("max_boot_attempts {0} is outside 1..={MAX_ATTEMPTS}")]
    BadAttempts(u8),
}

/// Where a boot reports: its events with the flash busy time and operation count at which
/// they happened, and the power cuts that wait for one of them (fault injection: the first
/// event a cut matches arms it at the boot's next flash operation).
#[derive(Debug, Default)]
pub struct Sink {
    pub events: Vec<(u64, u64, EventKind)>,
    /// Cuts waiting for an event; an armed one moves to `armed`.
    pub cuts: Vec<EventCut>,
    /// The ids of the cuts armed during this boot.
    pub armed: Vec<u64>,
    /// The boot's number (the armed rules match only its operations).
    pub boot: u64,
}

impl Sink {
    /// A sink for boot number `boot` with `cuts` waiting.
    pub fn new(boot: u64, cuts: Vec<EventCut>) -> Sink {
        Sink {
            boot,
            cuts,
            ..Sink::default()
        }
    }

    /// Record `kind` and arm the cuts waiting for it.
    pub fn emit<F: Flash>(&mut self, flash: &mut F, kind: EventKind) {
        let boot = self.boot;
        let armed = &mut self.armed;
        self.cuts.retain(|c| {
            if (c.matches)(&kind) {
                flash.add_cut_rule(c.rule(boot));
                armed.push(c.id);
                false
            } else {
                true
            }
        });
        self.events.push((flash.busy_us(), flash.ops(), kind));
    }
}

/// The bootloader for one layout.
#[derive(Debug)]
pub struct Bootloader<'a> {
    layout: &'a Layout,
    config: &'a BootConfig,
}

/// Read a whole slot's image area.
pub fn slot_bytes<F: Flash>(flash: &F, layout: &Layout, slot: Slot) -> Result<Vec<u8>, FlashError> {
    let area = layout.slot(slot);
    let mut buf = vec![0; area.image_capacity() as usize];
    flash.read(area.region.offset, &mut buf)?;
    Ok(buf)
}

/// Read the image in `slot`: as many bytes as its header and TLV infos declare (bounded by the
/// slot), or the whole image area when they do not parse (the verifier then says why).
pub fn image_bytes<F: Flash>(
    flash: &F,
    layout: &Layout,
    slot: Slot,
) -> Result<Vec<u8>, FlashError> {
    let area = layout.slot(slot);
    let cap = area.image_capacity() as usize;
    let base = area.region.offset;
    let mut head = [0u8; image::Header::SIZE];
    flash.read(base, &mut head)?;
    let Ok(h) = image::Header::parse(&head) else {
        return slot_bytes(flash, layout, slot);
    };
    let unprot = usize::from(h.hdr_size) + h.img_size as usize + usize::from(h.protect_tlv_size);
    if unprot + 4 > cap {
        return slot_bytes(flash, layout, slot);
    }
    let mut info = [0u8; 4];
    flash.read(base + unprot as u32, &mut info)?;
    let total = unprot + usize::from(u16::from_le_bytes([info[2], info[3]]));
    let mut buf = vec![0; total.min(cap)];
    flash.read(base, &mut buf)?;
    Ok(buf)
}

/// Verify the image in `slot`.
pub fn verify_slot<F: Flash>(
    flash: &F,
    layout: &Layout,
    keys: &Keyring,
    min_counter: u32,
    slot: Slot,
) -> Result<Result<ImageInfo, ImageError>, FlashError> {
    let bytes = image_bytes(flash, layout, slot)?;
    Ok(image::verify(&bytes, keys, min_counter))
}

impl<'a> Bootloader<'a> {
    pub fn new(layout: &'a Layout, config: &'a BootConfig) -> Self {
        Bootloader { layout, config }
    }

    /// Run the bootloader once, after a reset.
    pub fn boot<F: Flash>(
        &self,
        flash: &mut F,
        sink: &mut Sink,
    ) -> Result<BootDecision, BootError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.config.max_boot_attempts) {
            return Err(BootError::BadAttempts(self.config.max_boot_attempts));
        }
        match self.layout.mode {
            BootMode::Swap => self.boot_swap(flash, sink),
            BootMode::Ab => self.boot_ab(flash, sink),
        }
    }

    fn reject<F: Flash>(flash: &mut F, sink: &mut Sink, slot: Slot, e: &ImageError) {
        let reason = e.to_string();
        sink.emit(flash, EventKind::ImageRejected { slot, reason });
    }

    fn verify<F: Flash>(
        &self,
        flash: &F,
        slot: Slot,
        min: u32,
    ) -> Result<Result<ImageInfo, ImageError>, FlashError> {
        verify_slot(flash, self.layout, &self.config.keys, min, slot)
    }

    fn boot_swap<F: Flash>(
        &self,
        flash: &mut F,
        sink: &mut Sink,
    ) -> Result<BootDecision, BootError> {
        let (stored, _) = journal::read_counter(flash, self.layout)?;
        match journal::swap_state(flash, self.layout)? {
            SwapState::InProgress {
                seq,
                kind,
                sectors,
                last,
                journal,
                next,
            } => {
                let mut swap = Swap {
                    layout: self.layout,
                    defect: self.config.defect,
                    seq,
                    kind,
                    sectors,
                    journal,
                    next,
                };
                let first = swap.next_step(last);
                sink.emit(
                    flash,
                    EventKind::SwapResumed {
                        kind,
                        seq,
                        next: first,
                    },
                );
                swap.run(flash, first, sink)?;
            }
            SwapState::Idle { last_seq } => {
                let pt = trailer::read(flash, self.layout, Slot::Primary)?;
                if pt.is_pending() && pt.copy_done.is_set() {
                    if pt.attempts >= self.config.max_boot_attempts {
                        let reason = RevertReason::NotConfirmed {
                            attempts: pt.attempts,
                        };
                        self.revert_swap(flash, last_seq + 1, reason, sink)?;
                    }
                } else {
                    let st = trailer::read(flash, self.layout, Slot::Secondary)?;
                    if let (true, Some(kind @ (SwapType::Test | SwapType::Perm))) =
                        (st.magic, st.swap_type)
                    {
                        match self.verify(flash, Slot::Secondary, stored)? {
                            Ok(_) => Swap::start(
                                self.layout,
                                self.config.defect,
                                flash,
                                last_seq + 1,
                                kind,
                                sink,
                            )?,
                            Err(e) => {
                                Self::reject(flash, sink, Slot::Secondary, &e);
                                trailer::erase(flash, self.layout, Slot::Secondary)?;
                            }
                        }
                    }
                }
            }
        }
        // Whatever happened above, the primary slot now holds what should run.
        let pt = trailer::read(flash, self.layout, Slot::Primary)?;
        match self.verify(flash, Slot::Primary, stored)? {
            Ok(info) if pt.is_pending() && pt.copy_done.is_set() => {
                let attempt = pt.attempts;
                trailer::write_field(
                    flash,
                    self.layout,
                    Slot::Primary,
                    Field::Attempt(attempt),
                    None,
                )?;
                Ok(BootDecision::Boot(Booted {
                    slot: Slot::Primary,
                    image: info,
                    test: true,
                    attempt: attempt + 1,
                }))
            }
            Ok(info) => self.boot_confirmed(flash, stored, Slot::Primary, info, sink),
            Err(e) if pt.is_pending() && pt.copy_done.is_set() => {
                Self::reject(flash, sink, Slot::Primary, &e);
                let seq = match journal::swap_state(flash, self.layout)? {
                    SwapState::Idle { last_seq } => last_seq,
                    SwapState::InProgress { seq, .. } => seq,
                };
                let reason = RevertReason::Invalid {
                    reason: e.to_string(),
                };
                self.revert_swap(flash, seq + 1, reason, sink)?;
                match self.verify(flash, Slot::Primary, stored)? {
                    Ok(info) => self.boot_confirmed(flash, stored, Slot::Primary, info, sink),
                    Err(e) => Ok(BootDecision::NoBootableImage {
                        reasons: vec![(Slot::Primary, e.to_string())],
                    }),
                }
            }
            Err(e) => {
                // The running image no longer verifies (bit rot, a torn write): the bootloader
                // rejects it (DTC D00100), and nothing else can boot in this mode.
                Self::reject(flash, sink, Slot::Primary, &e);
                Ok(BootDecision::NoBootableImage {
                    reasons: vec![(Slot::Primary, e.to_string())],
                })
            }
        }
    }

    /// Boot a confirmed image: the only moment the stored security counter rises.
    fn boot_confirmed<F: Flash>(
        &self,
        flash: &mut F,
        stored: u32,
        slot: Slot,
        image: ImageInfo,
        sink: &mut Sink,
    ) -> Result<BootDecision, BootError> {
        self.raise_counter(flash, stored, image.security_counter, sink)?;
        Ok(BootDecision::Boot(Booted {
            slot,
            image,
            test: false,
            attempt: 0,
        }))
    }

    fn revert_swap<F: Flash>(
        &self,
        flash: &mut F,
        seq: u32,
        reason: RevertReason,
        sink: &mut Sink,
    ) -> Result<(), BootError> {
        sink.emit(
            flash,
            EventKind::RevertStarted {
                slot: Slot::Primary,
                reason,
            },
        );
        Swap::start(
            self.layout,
            self.config.defect,
            flash,
            seq,
            SwapType::Revert,
            sink,
        )
    }

    fn raise_counter<F: Flash>(
        &self,
        flash: &mut F,
        stored: u32,
        image: u32,
        sink: &mut Sink,
    ) -> Result<(), BootError> {
        if image <= stored {
            return Ok(());
        }
        let (_, next) = journal::read_counter(flash, self.layout)?;
        // A full counter area keeps the old value: downgrade protection stays at that level.
        if let Some(addr) = next {
            flash.write(
                addr,
                &Record::Counter { value: image }.encode(self.layout.unit, self.layout.erased),
            )?;
            sink.emit(
                flash,
                EventKind::CounterRaised {
                    from: stored,
                    to: image,
                },
            );
        }
        Ok(())
    }

    fn boot_ab<F: Flash>(&self, flash: &mut F, sink: &mut Sink) -> Result<BootDecision, BootError> {
        let (stored, _) = journal::read_counter(flash, self.layout)?;
        let mut reasons = Vec::new();
        for slot in [Slot::Primary, Slot::Secondary] {
            let t = trailer::read(flash, self.layout, slot)?;
            if !t.is_pending() {
                continue;
            }
            if t.attempts >= self.config.max_boot_attempts {
                let reason = RevertReason::NotConfirmed {
                    attempts: t.attempts,
                };
                sink.emit(flash, EventKind::RevertStarted { slot, reason });
                trailer::erase(flash, self.layout, slot)?;
                continue;
            }
            match self.verify(flash, slot, stored)? {
                Ok(info) => {
                    trailer::write_field(
                        flash,
                        self.layout,
                        slot,
                        Field::Attempt(t.attempts),
                        None,
                    )?;
                    return Ok(BootDecision::Boot(Booted {
                        slot,
                        image: info,
                        test: true,
                        attempt: t.attempts + 1,
                    }));
                }
                Err(e) => {
                    Self::reject(flash, sink, slot, &e);
                    trailer::erase(flash, self.layout, slot)?;
                }
            }
        }
        let mut best: Option<(Slot, ImageInfo)> = None;
        for slot in [Slot::Primary, Slot::Secondary] {
            let t = trailer::read(flash, self.layout, slot)?;
            if !t.is_confirmed() {
                reasons.push((slot, "no confirmed image".to_string()));
                continue;
            }
            match self.verify(flash, slot, stored)? {
                Ok(info) => {
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| info.header.version > b.header.version)
                    {
                        best = Some((slot, info));
                    }
                }
                // Superseded by a newer confirmed image: not worth an event at every boot.
                Err(e @ ImageError::CounterTooLow { .. }) => reasons.push((slot, e.to_string())),
                Err(e) => {
                    Self::reject(flash, sink, slot, &e);
                    reasons.push((slot, e.to_string()));
                }
            }
        }
        match best {
            Some((slot, info)) => self.boot_confirmed(flash, stored, slot, info, sink),
            None => Ok(BootDecision::NoBootableImage { reasons }),
        }
    }
}

/// A swap in progress.
struct Swap<'a> {
    layout: &'a Layout,
    defect: Option<Defect>,
    seq: u32,
    kind: SwapType,
    sectors: u16,
    journal: usize,
    next: Option<u32>,
}

/// Copy granule: one write operation per chunk.
const COPY_CHUNK: u32 = 1024;

impl<'a> Swap<'a> {
    /// Start swap `seq`: erase its journal sector, record the start, run every step.
    fn start<F: Flash>(
        layout: &'a Layout,
        defect: Option<Defect>,
        flash: &mut F,
        seq: u32,
        kind: SwapType,
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
        };
        sink.emit(flash, EventKind::SwapStarted { kind, seq, sectors });
        let first = swap.next_step(None);
        swap.run(flash, first, sink)
    }

    /// The step after `last` (`None` = the trailers).
    fn next_step(&self, last: Option<(Step, u16)>) -> Option<(Step, u16)> {
        let next = match last {
            None => (Step::A, 0),
            Some((Step::A, i)) => (Step::B, i),
            Some((Step::B, i)) => (Step::C, i),
            Some((Step::C, i)) => (Step::A, i + 1),
        };
        (next.1 < self.sectors).then_some(next)
    }

    fn run<F: Flash>(
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
            if s == Step::C {
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
            self.kind,
            self.kind != SwapType::Test,
            true,
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

    fn do_step<F: Flash>(&self, flash: &mut F, step: Step, i: u16) -> Result<(), BootError> {
        let (p, size) = self.layout.primary.image_sectors[i as usize];
        let (s, _) = self.layout.secondary.image_sectors[i as usize];
        let scratch = self
            .layout
            .scratch
            .as_ref()
            .expect("swap layout has a scratch sector");
        let (erase_at, erase_len, from, to) = match step {
            Step::A => (scratch.offset, scratch.size, s, scratch.offset),
            Step::B => (s, size, p, s),
            Step::C => (p, size, scratch.offset, p),
        };
        flash.erase(erase_at, erase_len)?;
        copy(flash, from, to, size, self.layout.erased)?;
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
/// was just erased, so they already hold exactly that).
fn copy<F: Flash>(
    flash: &mut F,
    from: u32,
    to: u32,
    len: u32,
    erased: u8,
) -> Result<(), FlashError> {
    let mut buf = vec![0; COPY_CHUNK.min(len) as usize];
    let mut off = 0;
    while off < len {
        let n = COPY_CHUNK.min(len - off) as usize;
        flash.read(from + off, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != erased) {
            flash.write(to + off, &buf[..n])?;
        }
        off += n as u32;
    }
    Ok(())
}
