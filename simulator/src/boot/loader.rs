//! The bootloader: runs at every reset and decides what boots.
//!
//! ## Swap strategies: swap-scratch, swap-move, swap-offset (the primary slot always runs)
//!
//! | order | condition | action |
//! |---|---|---|
//! | 1 | the journal holds an unfinished swap | resume it (see [`super::journal`]) |
//! | 2 | primary trailer: magic good, image_ok unset, copy_done set (MCUboot's state IV: a test image installed by a swap), attempts used ≥ `max_boot_attempts` | revert swap |
//! | 3 | secondary trailer: magic good (state II: image_ok unset → test; state III: set → permanent) | verify the secondary image (hash, signature, security counter ≥ stored); good → swap, bad → erase the request |
//! | 4 | — | verify the primary image; a test image on probation records a boot attempt; a confirmed image raises the stored security counter to its own; an invalid test image is reverted |
//!
//! The three differ only in how a swap moves sectors (the journal's tables).
//!
//! ## Overwrite (no revert)
//!
//! | order | condition | action |
//! |---|---|---|
//! | 1 | secondary trailer: magic good (test or permanent alike) | verify the secondary image; good → erase the primary image sectors it needs, copy it, write the primary trailer (permanent, image_ok), erase the secondary's first sector and trailer (MCUboot's `boot_copy_image`); bad → erase the request |
//! | 2 | — | verify the primary image and boot it, confirmed |
//!
//! A test upgrade is installed for good: an image that never confirms, crashes or hangs keeps
//! running (MCUboot's overwrite-only cannot revert). A power cut anywhere in the copy leaves
//! the request in the secondary trailer, so the next boot copies again from the start: the
//! device boots the old image (cut before the request was complete) or the whole new one.
//!
//! ## Direct-xip with revert (either slot runs in place)
//!
//! Slots whose trailer magic is good, newest version first (equal: primary):
//!
//! | condition | action |
//! |---|---|
//! | image_ok unset, attempts used ≥ `max_boot_attempts` (attempt 0 is copy_done: MCUboot's "selected") | erase its trailer (revert), next slot |
//! | image_ok unset, image fails verification | erase its trailer, next slot |
//! | image_ok unset, image verifies | record an attempt (the first sets copy_done), boot it on probation |
//! | image_ok set, image verifies | boot it; raise the stored security counter |
//! | image_ok set, image fails verification | next slot |
//!
//! In every mode the stored security counter only rises when a *confirmed* image boots,
//! never at a test boot, so a rejected test image cannot lock out the image it replaced.
//!
//! Encrypted images (verified decrypted, installed decrypting, re-encrypted when a swap moves
//! them out of the primary, refused in direct-xip): see [`super::crypt`].

use crate::event::{EventKind, RevertReason};
use crate::flash::{EventCut, Flash, FlashError};
use crate::image::{self, EncKey, ImageError, ImageInfo, Keyring};

use super::crypt::{self, SwapKeys};
use super::journal::{self, Record, SwapState};
use super::layout::{BootMode, Layout, Slot};
use super::swap::{Swap, copy};
use super::trailer::{self, Complete, Field, MAX_ATTEMPTS, SwapType};

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
    #[error("the journal records a swap-scratch step but this layout has no scratch sector")]
    NoScratch,
    #[error("the {slot} slot's encrypted image cannot be swapped: {source}")]
    EncKeys {
        slot: Slot,
        #[source]
        source: ImageError,
    },
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
    /// The image decryption key (`None`: every encrypted image is refused).
    enc_key: Option<&'a EncKey>,
}

/// Where the image in `slot` starts: the image sectors' start, except in swap-offset's
/// secondary slot after a swap, where the image moved out of the primary starts one sector
/// earlier (at the spare sector) and no image header is where a staged one would be.
pub fn image_base<F: Flash>(flash: &F, layout: &Layout, slot: Slot) -> Result<u32, FlashError> {
    let area = layout.slot(slot);
    let staged = area.image_offset();
    let Some((spare, _)) = area.spare.filter(|&(o, _)| o < staged) else {
        return Ok(staged);
    };
    let has_header = |at: u32| -> Result<bool, FlashError> {
        let mut magic = [0u8; 4];
        flash.read(at, &mut magic)?;
        Ok(magic == image::IMAGE_MAGIC.to_le_bytes())
    };
    Ok(if !has_header(staged)? && has_header(spare)? {
        spare
    } else {
        staged
    })
}

/// Read a whole slot's image area (from [`image_base`]).
pub fn slot_bytes<F: Flash>(flash: &F, layout: &Layout, slot: Slot) -> Result<Vec<u8>, FlashError> {
    let area = layout.slot(slot);
    let mut buf = vec![0; area.image_capacity() as usize];
    flash.read(image_base(flash, layout, slot)?, &mut buf)?;
    Ok(buf)
}

/// Read the image in `slot`: as many bytes as its header and TLV infos declare (bounded by the
/// slot), or the whole image area when they do not parse (the verifier then says why).
pub fn image_bytes<F: Flash>(
    flash: &F,
    layout: &Layout,
    slot: Slot,
) -> Result<Vec<u8>, FlashError> {
    image_bytes_at(flash, layout, slot, image_base(flash, layout, slot)?)
}

/// [`image_bytes`] of the image that starts at `base` in `slot`.
pub fn image_bytes_at<F: Flash>(
    flash: &F,
    layout: &Layout,
    slot: Slot,
    base: u32,
) -> Result<Vec<u8>, FlashError> {
    let area = layout.slot(slot);
    let cap = area.image_capacity() as usize;
    let mut head = [0u8; image::Header::SIZE];
    flash.read(base, &mut head)?;
    let whole = || -> Result<Vec<u8>, FlashError> {
        let mut buf = vec![0; cap];
        flash.read(base, &mut buf)?;
        Ok(buf)
    };
    let Ok(h) = image::Header::parse(&head) else {
        return whole();
    };
    let unprot = usize::from(h.hdr_size) + h.img_size as usize + usize::from(h.protect_tlv_size);
    if unprot + 4 > cap {
        return whole();
    }
    let mut info = [0u8; 4];
    flash.read(base + unprot as u32, &mut info)?;
    let total = unprot + usize::from(u16::from_le_bytes([info[2], info[3]]));
    let mut buf = vec![0; total.min(cap)];
    flash.read(base, &mut buf)?;
    Ok(buf)
}

/// Verify the image in `slot` (an encrypted one as [`crypt::verify_image`] says: decrypted
/// with `enc_key` in the secondary slot).
pub fn verify_slot<F: Flash>(
    flash: &F,
    layout: &Layout,
    keys: &Keyring,
    enc_key: Option<&EncKey>,
    min_counter: u32,
    slot: Slot,
) -> Result<Result<ImageInfo, ImageError>, FlashError> {
    let bytes = image_bytes(flash, layout, slot)?;
    Ok(crypt::verify_image(
        &bytes,
        layout,
        keys,
        enc_key,
        min_counter,
        slot,
    ))
}

impl<'a> Bootloader<'a> {
    pub fn new(layout: &'a Layout, config: &'a BootConfig) -> Self {
        Bootloader {
            layout,
            config,
            enc_key: None,
        }
    }

    /// The same bootloader with the image decryption key `key` (MCUboot's
    /// `bootutil_enc_key`).
    pub fn with_enc_key(mut self, key: Option<&'a EncKey>) -> Self {
        self.enc_key = key;
        self
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
            BootMode::SwapScratch | BootMode::SwapMove | BootMode::SwapOffset => {
                self.boot_swap(flash, sink)
            }
            BootMode::Overwrite => self.boot_overwrite(flash, sink),
            BootMode::DirectXip => self.boot_direct_xip(flash, sink),
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
        verify_slot(
            flash,
            self.layout,
            &self.config.keys,
            self.enc_key,
            min,
            slot,
        )
    }

    /// The keys of both images for a swap that starts now, or the slot whose key fails.
    fn swap_keys<F: Flash>(
        &self,
        flash: &F,
        kind: SwapType,
    ) -> Result<Result<SwapKeys, (Slot, ImageError)>, FlashError> {
        SwapKeys::load(flash, self.layout, self.enc_key, kind)
    }

    /// The keys for swap `kind` starting (or restarting before its first step) now. A revert
    /// throws the primary's image out: when its key does not unwrap (a damaged test image)
    /// it moves as it is; the image it puts back must decrypt.
    fn keys_for<F: Flash>(&self, flash: &F, kind: SwapType) -> Result<SwapKeys, BootError> {
        if kind == SwapType::Revert {
            let key = |slot| crypt::slot_key(flash, self.layout, self.enc_key, slot, kind);
            let secondary = key(Slot::Secondary)?.map_err(|source| BootError::EncKeys {
                slot: Slot::Secondary,
                source,
            })?;
            let primary = key(Slot::Primary)?;
            return Ok(SwapKeys([primary.ok().flatten(), secondary]));
        }
        self.swap_keys(flash, kind)?
            .map_err(|(slot, source)| BootError::EncKeys { slot, source })
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
                keys,
            } => {
                // Before the first step both images are where they were: take the keys
                // from their headers and save them (again); after it, from the trailer.
                let keys = match last {
                    Some(_) => SwapKeys::restore(flash, self.layout, &keys)?,
                    None => self.keys_for(flash, kind)?,
                };
                let mut swap = Swap {
                    layout: self.layout,
                    defect: self.config.defect,
                    seq,
                    kind,
                    sectors,
                    journal,
                    next,
                    keys,
                };
                if last.is_none() {
                    swap.save_keys(flash)?;
                }
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
                    if let Some(kind) = st.request() {
                        let verdict = match self.verify(flash, Slot::Secondary, stored)? {
                            Ok(_) => self.swap_keys(flash, kind)?.map_err(|(slot, e)| {
                                if slot == Slot::Primary {
                                    ImageError::Encryption(image::EncError::RunningImageKey {
                                        reason: e.to_string(),
                                    })
                                } else {
                                    e
                                }
                            }),
                            Err(e) => Err(e),
                        };
                        match verdict {
                            Ok(keys) => Swap::start(
                                self.layout,
                                self.config.defect,
                                flash,
                                last_seq + 1,
                                kind,
                                keys,
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
                    0,
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
        let keys = self.keys_for(flash, SwapType::Revert)?;
        Swap::start(
            self.layout,
            self.config.defect,
            flash,
            seq,
            SwapType::Revert,
            keys,
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

    fn boot_overwrite<F: Flash>(
        &self,
        flash: &mut F,
        sink: &mut Sink,
    ) -> Result<BootDecision, BootError> {
        let (stored, _) = journal::read_counter(flash, self.layout)?;
        let st = trailer::read(flash, self.layout, Slot::Secondary)?;
        if st.request().is_some() {
            let verdict = match self.verify(flash, Slot::Secondary, stored)? {
                Ok(info) => {
                    let (layout, key) = (self.layout, self.enc_key);
                    crypt::slot_key(flash, layout, key, Slot::Secondary, SwapType::Perm)?
                        .map(|key| (info, key))
                }
                Err(e) => Err(e),
            };
            match verdict {
                Ok((info, key)) => self.overwrite(flash, info.total_size as u32, key, sink)?,
                Err(e) => {
                    Self::reject(flash, sink, Slot::Secondary, &e);
                    trailer::erase(flash, self.layout, Slot::Secondary)?;
                }
            }
        }
        match self.verify(flash, Slot::Primary, stored)? {
            Ok(info) => self.boot_confirmed(flash, stored, Slot::Primary, info, sink),
            Err(e) => {
                Self::reject(flash, sink, Slot::Primary, &e);
                Ok(BootDecision::NoBootableImage {
                    reasons: vec![(Slot::Primary, e.to_string())],
                })
            }
        }
    }

    /// Overwrite-only's install: erase what the new image needs in the primary, copy it
    /// (decrypting it with `key` when it is encrypted), mark it installed for good, then take
    /// the request away (header sector and trailer).
    fn overwrite<F: Flash>(
        &self,
        flash: &mut F,
        len: u32,
        key: Option<crypt::PayloadKey>,
        sink: &mut Sink,
    ) -> Result<(), BootError> {
        let l = self.layout;
        let sectors = l.primary.sectors_for(len) as u16;
        sink.emit(
            flash,
            EventKind::SwapStarted {
                kind: SwapType::Perm,
                seq: 0,
                sectors,
            },
        );
        let mut image_offset = 0;
        for i in 0..usize::from(sectors) {
            let (p, size) = l.primary.image_sectors[i];
            let (s, _) = l.secondary.image_sectors[i];
            flash.erase(p, size)?;
            let crypt = key.as_ref().map(|k| (k, image_offset));
            copy(flash, s, p, size, l.erased, crypt)?;
            image_offset += size;
            sink.emit(
                flash,
                EventKind::SwapProgress {
                    kind: SwapType::Perm,
                    sector: i as u16,
                    of: sectors,
                },
            );
        }
        trailer::erase(flash, l, Slot::Primary)?;
        trailer::write_complete(
            flash,
            l,
            Slot::Primary,
            Complete {
                swap_type: SwapType::Perm,
                swap_size: None,
                image_ok: true,
                copy_done: true,
            },
        )?;
        let (first, size) = l.secondary.image_sectors[0];
        flash.erase(first, size)?;
        trailer::erase(flash, l, Slot::Secondary)?;
        sink.emit(
            flash,
            EventKind::SwapFinished {
                kind: SwapType::Perm,
                seq: 0,
            },
        );
        Ok(())
    }

    fn boot_direct_xip<F: Flash>(
        &self,
        flash: &mut F,
        sink: &mut Sink,
    ) -> Result<BootDecision, BootError> {
        let (stored, _) = journal::read_counter(flash, self.layout)?;
        let mut reasons = Vec::new();
        // Slots with a complete trailer, newest version first (equal: primary first).
        let mut candidates = Vec::new();
        for slot in [Slot::Primary, Slot::Secondary] {
            let t = trailer::read(flash, self.layout, slot)?;
            if !t.magic {
                reasons.push((slot, "no trailer (sign with imgtool --pad)".to_string()));
                continue;
            }
            let mut head = [0u8; image::Header::SIZE];
            flash.read(self.layout.slot(slot).image_offset(), &mut head)?;
            let version = image::Header::parse(&head).ok().map(|h| h.version);
            candidates.push((std::cmp::Reverse(version), slot, t));
        }
        candidates.sort_by_key(|&(v, slot, _)| (v, slot));
        for (_, slot, t) in candidates {
            if t.is_pending() {
                if t.attempts >= self.config.max_boot_attempts {
                    let reason = RevertReason::NotConfirmed {
                        attempts: t.attempts,
                    };
                    sink.emit(flash, EventKind::RevertStarted { slot, reason });
                    trailer::erase(flash, self.layout, slot)?;
                    reasons.push((slot, "test image reverted".to_string()));
                    continue;
                }
                match self.verify(flash, slot, stored)? {
                    Ok(info) => {
                        trailer::write_field(
                            flash,
                            self.layout,
                            slot,
                            Field::Attempt(t.attempts),
                            0,
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
                        reasons.push((slot, e.to_string()));
                    }
                }
                continue;
            }
            match self.verify(flash, slot, stored)? {
                Ok(info) => return self.boot_confirmed(flash, stored, slot, info, sink),
                // Superseded by a newer confirmed image: not worth an event at every boot.
                Err(e @ ImageError::CounterTooLow { .. }) => reasons.push((slot, e.to_string())),
                Err(e) => {
                    Self::reject(flash, sink, slot, &e);
                    reasons.push((slot, e.to_string()));
                }
            }
        }
        reasons.sort_by_key(|(slot, _)| *slot);
        Ok(BootDecision::NoBootableImage { reasons })
    }
}
