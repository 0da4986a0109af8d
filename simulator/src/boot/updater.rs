//! The running firmware's side of an update: stage an image, request it, confirm itself.
//!
//! The firmware never decides what boots; it can only write the staging slot, ask for an
//! upgrade (test or permanent) and confirm the image it runs. Calls that make no sense are
//! refused with a named error instead of silently writing the flash.
//!
//! | call | writes | refused when |
//! |---|---|---|
//! | [`Updater::erase_staging`] | staging trailer, then image sectors | — |
//! | [`Updater::erase_range`] | the staging sectors covering a range | range outside the staging image area |
//! | [`Updater::write`] | staging image area and the trailer sector after it (a raw `imgtool sign --pad` image carries its own trailer) | outside the slot, unaligned offset, cells not erased |
//! | [`Updater::mark_pending`] | staging trailer: swap type, image_ok (permanent), magic | trailer not erased (already requested, or dirty) |
//! | [`Updater::confirm`] | running slot's image_ok | trailer torn (image_ok neither set nor erased) |
//!
//! Every call that writes the staging slot is refused with [`UpdateError::OnProbation`] while
//! the running image is an unconfirmed test image: the staging slot then holds the image the
//! bootloader must be able to revert to.

use crate::flash::{Flash, FlashError};
use crate::image::{ImageError, ImageInfo, Keyring};

use super::journal;
use super::layout::{BootMode, Layout, Slot};
use super::loader::verify_slot;
use super::trailer::{self, Complete, Field, Flag, SwapType};

/// Why an update call was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Flash(#[from] FlashError),
    #[error("range 0x{offset:x}+{len} is outside the staging area (0x{capacity:x} bytes)")]
    OutOfSlot {
        offset: u32,
        len: usize,
        capacity: u32,
    },
    #[error("offset 0x{offset:x} is not aligned to the {align}-byte write unit")]
    Unaligned { offset: u32, align: usize },
    #[error(
        "the {slot} trailer is not erased: an upgrade was already requested or the slot was not erased"
    )]
    TrailerNotErased { slot: Slot },
    #[error("the {slot} trailer is torn (image_ok neither set nor erased)")]
    TrailerCorrupt { slot: Slot },
    #[error("staged image does not verify: {0}")]
    Image(#[from] ImageError),
    #[error(
        "the running image is on probation: the {slot} slot holds the image to revert to; confirm first"
    )]
    OnProbation { slot: Slot },
}

/// Firmware-side update API over the flash of a running ECU.
#[derive(Debug)]
pub struct Updater<'a, F: Flash> {
    flash: &'a mut F,
    layout: &'a Layout,
    running: Slot,
}

impl<'a, F: Flash> Updater<'a, F> {
    /// `running` is the slot the firmware executes from.
    pub fn new(flash: &'a mut F, layout: &'a Layout, running: Slot) -> Self {
        Updater {
            flash,
            layout,
            running,
        }
    }

    /// Where a new image goes: the secondary slot (swap strategies, overwrite) or the slot not
    /// running (direct-xip).
    pub fn staging_slot(&self) -> Slot {
        match self.layout.mode {
            BootMode::DirectXip => self.running.other(),
            _ => Slot::Secondary,
        }
    }

    /// Flash address and size of the staging area: the staging slot's image sectors
    /// (swap-offset: from the secondary slot's second sector) and its trailer sector(s), so an
    /// `imgtool sign --pad --slot-size SIZE` image written raw brings its own trailer. The image
    /// itself must fit the image sectors ([`crate::boot::SlotArea::image_capacity`]).
    pub fn staging_area(&self) -> (u32, u32) {
        let area = self.layout.slot(self.staging_slot());
        (area.image_offset(), self.staging_slot_size())
    }

    /// Bytes from the staging address to the end of the slot: the image area and the trailer
    /// sector, the `--slot-size` of an `imgtool sign --pad` image written raw.
    pub fn staging_slot_size(&self) -> u32 {
        let area = self.layout.slot(self.staging_slot());
        area.trailer_offset + area.trailer_size - area.image_offset()
    }

    /// Refuse to touch the staging slot while it holds the rollback image.
    fn guard(&self) -> Result<(), UpdateError> {
        let running = trailer::read(self.flash, self.layout, self.running)?;
        if running.is_pending() {
            return Err(UpdateError::OnProbation {
                slot: self.staging_slot(),
            });
        }
        Ok(())
    }

    /// Erase the whole staging slot, trailer first (so a half-erased slot is never requested).
    pub fn erase_staging(&mut self) -> Result<(), UpdateError> {
        self.guard()?;
        let slot = self.staging_slot();
        trailer::erase(self.flash, self.layout, slot)?;
        let area = self.layout.slot(slot);
        self.flash
            .erase(area.image_offset(), area.image_capacity())?;
        Ok(())
    }

    /// Erase the staging sectors that cover `offset..offset+len` (relative to the slot start),
    /// plus the trailer so that no stale request survives.
    pub fn erase_range(&mut self, offset: u32, len: u32) -> Result<(), UpdateError> {
        self.guard()?;
        let (addr, cap) = self.staging_area();
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= cap)
            .ok_or(UpdateError::OutOfSlot {
                offset,
                len: len as usize,
                capacity: cap,
            })?;
        let slot = self.staging_slot();
        trailer::erase(self.flash, self.layout, slot)?;
        for &(s_off, s_size) in &self.layout.slot(slot).image_sectors {
            let (rel_start, rel_end) = (s_off - addr, s_off - addr + s_size);
            if rel_start < end && offset < rel_end {
                self.flash.erase(s_off, s_size)?;
            }
        }
        Ok(())
    }

    /// Program `data` at `offset` in the staging area. A final chunk that is not a whole
    /// number of write units is padded with the erased value. In the trailer sector(s) units
    /// that hold only the erased value are not programmed: they are the fields the bootloader
    /// writes later (copy_done, attempts, swap info), and the flash takes no second write.
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), UpdateError> {
        self.guard()?;
        let (addr, cap) = self.staging_area();
        let align = self.flash.geometry().write_align();
        if offset as usize % align != 0 {
            return Err(UpdateError::Unaligned { offset, align });
        }
        let padded = self.flash.geometry().align_up(data.len());
        if u64::from(offset) + padded as u64 > u64::from(cap) {
            return Err(UpdateError::OutOfSlot {
                offset,
                len: data.len(),
                capacity: cap,
            });
        }
        let mut buf = data.to_vec();
        buf.resize(padded, self.layout.erased);
        let start = addr + offset;
        let trailer = self.layout.slot(self.staging_slot()).trailer_offset;
        let split = (trailer.saturating_sub(start) as usize).min(buf.len());
        if split > 0 {
            self.flash.write(start, &buf[..split])?;
        }
        // The trailer part: runs of units that are not all erased (unit-aligned addresses).
        let unit = self.layout.unit as usize;
        let erased = self.layout.erased;
        let mut run: Option<usize> = None;
        let mut at = split;
        while at < buf.len() {
            let abs = start as usize + at;
            let end = (abs / unit + 1) * unit - start as usize;
            let end = end.min(buf.len());
            let blank = buf[at..end].iter().all(|&b| b == erased);
            match (blank, run) {
                (false, None) => run = Some(at),
                (true, Some(from)) => {
                    self.flash.write(start + from as u32, &buf[from..at])?;
                    run = None;
                }
                _ => {}
            }
            at = end;
        }
        if let Some(from) = run {
            self.flash.write(start + from as u32, &buf[from..])?;
        }
        Ok(())
    }

    /// Verify the staged image as the bootloader will (hash, signature, stored counter; an
    /// encrypted image decrypted with `enc_key`).
    pub fn verify_staged(
        &self,
        keys: &Keyring,
        enc_key: Option<&crate::image::EncKey>,
    ) -> Result<ImageInfo, UpdateError> {
        let (stored, _) = journal::read_counter(self.flash, self.layout)?;
        Ok(verify_slot(
            self.flash,
            self.layout,
            keys,
            enc_key,
            stored,
            self.staging_slot(),
        )??)
    }

    /// Ask the bootloader to install the staged image at the next reset: on probation
    /// (`permanent = false`) or for good.
    pub fn mark_pending(&mut self, permanent: bool) -> Result<(), UpdateError> {
        self.guard()?;
        let slot = self.staging_slot();
        let t = trailer::read(self.flash, self.layout, slot)?;
        let erased = !t.magic
            && t.swap_type.is_none()
            && t.swap_size.is_none()
            && t.image_ok == Flag::Unset
            && t.copy_done == Flag::Unset
            && t.attempts == 0;
        if !erased {
            return Err(UpdateError::TrailerNotErased { slot });
        }
        let kind = if permanent {
            SwapType::Perm
        } else {
            SwapType::Test
        };
        trailer::write_complete(
            self.flash,
            self.layout,
            slot,
            Complete {
                swap_type: kind,
                swap_size: None,
                image_ok: permanent,
                copy_done: false,
            },
        )?;
        Ok(())
    }

    /// Confirm the running image. Returns `false` if it was already confirmed (or has no
    /// trailer, as a factory image may not), `true` if this call confirmed it.
    pub fn confirm(&mut self) -> Result<bool, UpdateError> {
        let t = trailer::read(self.flash, self.layout, self.running)?;
        match t.image_ok {
            Flag::Set => Ok(false),
            Flag::Bad => Err(UpdateError::TrailerCorrupt { slot: self.running }),
            Flag::Unset if !t.magic => Ok(false),
            Flag::Unset => {
                trailer::write_field(self.flash, self.layout, self.running, Field::ImageOk, 0)?;
                Ok(true)
            }
        }
    }
}
