//! The programming services of [`DiagServer`]: RoutineControl (eraseMemory `0xFF00`,
//! checkProgrammingDependencies `0xFF01`, checkMemory `0x0202`), RequestDownload,
//! TransferData and RequestTransferExit, and the NRCs their refusals map to.

use sha2::{Digest, Sha256};

use super::codec::{self, CodecError, MemoryRange, Nrc, routine};
use super::{DiagServer, Download, Downloaded, Handled, Outcome, reply, sub_function};
use crate::boot::{Slot, UpdateError};
use crate::dtc::Dtc;
use crate::ecu::{Ecu, EcuError};
use crate::event::EventKind;
use crate::flash::Flash;
use crate::image::ImageError;

impl DiagServer {
    pub(super) fn routine_control<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        let sub = sub_function(req)?;
        let control = sub & 0x7F;
        if req.len() < 4 {
            return Err(Nrc::IncorrectMessageLength);
        }
        if !(codec::routine_control::START..=codec::routine_control::RESULTS).contains(&control) {
            return Err(Nrc::SubFunctionNotSupported);
        }
        let id = u16::from_be_bytes([req[2], req[3]]);
        if !matches!(
            id,
            routine::ERASE_MEMORY | routine::CHECK_PROGRAMMING_DEPENDENCIES | routine::CHECK_MEMORY
        ) {
            return Err(Nrc::RequestOutOfRange);
        }
        self.require_programming_unlock()?;
        let record = &req[4..];
        let status = match control {
            codec::routine_control::START => match id {
                routine::ERASE_MEMORY => self.erase_memory(ecu, record)?,
                routine::CHECK_PROGRAMMING_DEPENDENCIES => self.check_dependencies(ecu, record)?,
                _ => self.check_memory(record)?,
            },
            // Our routines run to completion inside the start request.
            codec::routine_control::STOP => return Err(Nrc::SubFunctionNotSupported),
            _ => {
                if !record.is_empty() {
                    return Err(Nrc::IncorrectMessageLength);
                }
                Some(
                    self.t
                        .results
                        .get(&id)
                        .cloned()
                        .ok_or(Nrc::RequestSequenceError)?,
                )
            }
        };
        let Some(status) = status else {
            return Ok(Outcome::Silent);
        };
        if control == codec::routine_control::START {
            ecu.emit(EventKind::RoutineFinished {
                id,
                ok: status.first() == Some(&0),
            });
            self.t.results.insert(id, status.clone());
        }
        let mut out = vec![0x71, control, req[2], req[3]];
        out.extend_from_slice(&status);
        Ok(reply(req[1], out))
    }

    /// 0xFF00: erase the staging sectors covering `ALFID address size`. `Ok(None)`: power lost.
    fn erase_memory<F: Flash>(
        &mut self,
        ecu: &mut Ecu<F>,
        record: &[u8],
    ) -> Result<Option<Vec<u8>>, Nrc> {
        let (range, used) = codec::decode_memory(record).map_err(memory_nrc)?;
        if used != record.len() {
            return Err(Nrc::IncorrectMessageLength);
        }
        let offset = self.staging_offset(ecu, range)?;
        self.staging_changed(true);
        self.t.download = None;
        self.t.downloaded = None;
        self.t.erased = None;
        match ecu.with_updater(|u| u.erase_range(offset, range.size)) {
            Ok(()) => {
                self.t.erased = Some(range);
                Ok(Some(vec![0x00]))
            }
            Err(e) => update_nrc(e).map(|_| None),
        }
    }

    /// 0xFF01: verify the downloaded image and request it (test, or permanent with record 01).
    fn check_dependencies<F: Flash>(
        &mut self,
        ecu: &mut Ecu<F>,
        record: &[u8],
    ) -> Result<Option<Vec<u8>>, Nrc> {
        let permanent = match record {
            [] | [0x00] => false,
            [0x01] => true,
            [_] => return Err(Nrc::RequestOutOfRange),
            _ => return Err(Nrc::IncorrectMessageLength),
        };
        let Some(done) = &self.t.downloaded else {
            return Err(Nrc::RequestSequenceError);
        };
        let keys = ecu.config().boot.keys.clone();
        let enc_key = ecu.config().enc_key.clone();
        let work = u64::from(done.size) * 1_000_000 / self.config.hash_bytes_per_sec.max(1)
            + self.config.signature_check_us;
        let verdict = ecu.with_updater(|u| match u.verify_staged(&keys, enc_key.as_ref()) {
            Ok(info) => u.mark_pending(permanent).map(|()| Ok(info)),
            Err(UpdateError::Image(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        });
        if ecu.advance(work).is_err() {
            return Ok(None);
        }
        match verdict {
            Ok(Ok(_)) => {
                let slot = staging(ecu).map_or(Slot::Secondary, |s| s.0);
                ecu.emit(EventKind::UpgradeRequested { slot, permanent });
                self.staging_changed(false);
                self.t.downloaded = None;
                Ok(Some(vec![0x00]))
            }
            Ok(Err(e)) => {
                ecu.record_dtc(Dtc::CheckFailed);
                Ok(Some(vec![0x01, image_error_code(&e)]))
            }
            Err(e) => update_nrc(e).map(|_| None),
        }
    }

    /// 0x0202: compare the SHA-256 of the last download with the record.
    fn check_memory(&mut self, record: &[u8]) -> Result<Option<Vec<u8>>, Nrc> {
        if record.len() != 32 {
            return Err(Nrc::IncorrectMessageLength);
        }
        let done = self
            .t
            .downloaded
            .as_ref()
            .ok_or(Nrc::RequestSequenceError)?;
        Ok(Some(vec![u8::from(done.sha256[..] != *record)]))
    }

    /// Offset in the staging slot of a range that must lie inside its image area.
    fn staging_offset<F: Flash>(&self, ecu: &mut Ecu<F>, range: MemoryRange) -> Result<u32, Nrc> {
        let (_, address, size) = staging(ecu).ok_or(Nrc::ConditionsNotCorrect)?;
        let end = u64::from(range.address) + u64::from(range.size);
        if range.size == 0 || range.address < address || end > u64::from(address) + u64::from(size)
        {
            return Err(Nrc::RequestOutOfRange);
        }
        Ok(range.address - address)
    }

    pub(super) fn request_download<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        if req.len() < 3 {
            return Err(Nrc::IncorrectMessageLength);
        }
        self.require_programming_unlock()?;
        if req[1] != 0x00 {
            // Compression and encryption are not supported.
            return Err(Nrc::RequestOutOfRange);
        }
        let (range, used) = codec::decode_memory(&req[2..]).map_err(memory_nrc)?;
        if 2 + used != req.len() {
            return Err(Nrc::IncorrectMessageLength);
        }
        if self.t.download.is_some() {
            return Err(Nrc::ConditionsNotCorrect);
        }
        let slot_offset = self.staging_offset(ecu, range)?;
        let erased = self.t.erased.is_some_and(|e| {
            e.address <= range.address
                && u64::from(range.address) + u64::from(range.size)
                    <= u64::from(e.address) + u64::from(e.size)
        });
        if !erased {
            return Err(Nrc::UploadDownloadNotAccepted);
        }
        self.staging_changed(false);
        self.t.erased = None;
        self.t.downloaded = None;
        self.t.download = Some(Download {
            range,
            slot_offset,
            received: 0,
            written: 0,
            tail: Vec::new(),
            next_seq: 1,
            last_seq: None,
            hash: Sha256::new(),
        });
        ecu.emit(EventKind::DownloadStarted {
            address: range.address,
            size: range.size,
        });
        let max = self.config.max_block_len;
        let mut out = vec![0x74];
        if max <= 0xFFFF {
            out.push(0x20);
            out.extend_from_slice(&(max as u16).to_be_bytes());
        } else {
            out.push(0x40);
            out.extend_from_slice(&max.to_be_bytes());
        }
        Ok(Outcome::Reply(out))
    }

    pub(super) fn transfer_data<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        self.require_programming_unlock()?;
        let max = self.config.max_block_len as usize;
        let Some(dl) = self.t.download.as_mut() else {
            return Err(Nrc::RequestSequenceError);
        };
        if req.len() < 3 || req.len() > max {
            return Err(Nrc::IncorrectMessageLength);
        }
        let (seq, data) = (req[1], &req[2..]);
        if seq != dl.next_seq {
            if dl.last_seq == Some(seq) {
                // The tester repeats a block whose response it lost: already written.
                return Ok(Outcome::Reply(vec![0x76, seq]));
            }
            return Err(Nrc::WrongBlockSequenceCounter);
        }
        if u64::from(dl.received) + data.len() as u64 > u64::from(dl.range.size) {
            return Err(Nrc::RequestOutOfRange);
        }
        dl.hash.update(data);
        dl.tail.extend_from_slice(data);
        dl.received += data.len() as u32;
        dl.last_seq = Some(seq);
        dl.next_seq = seq.wrapping_add(1);
        let align = ecu.flash().geometry().write_align();
        let ready = dl.tail.len() / align * align;
        if ready > 0 {
            let chunk: Vec<u8> = dl.tail.drain(..ready).collect();
            let at = dl.slot_offset + dl.written;
            dl.written += ready as u32;
            if let Err(e) = ecu.with_updater(|u| u.write(at, &chunk)) {
                self.t.download = None;
                return update_nrc(e).map(|()| Outcome::Silent);
            }
        }
        Ok(Outcome::Reply(vec![0x76, seq]))
    }

    pub(super) fn transfer_exit<F: Flash>(&mut self, ecu: &mut Ecu<F>) -> Handled {
        self.require_programming_unlock()?;
        let Some(dl) = self.t.download.as_ref() else {
            return Err(Nrc::RequestSequenceError);
        };
        if dl.received < dl.range.size {
            return Err(Nrc::RequestSequenceError);
        }
        let dl = self.t.download.take().expect("checked above");
        if !dl.tail.is_empty() {
            let at = dl.slot_offset + dl.written;
            if let Err(e) = ecu.with_updater(|u| u.write(at, &dl.tail)) {
                return update_nrc(e).map(|()| Outcome::Silent);
            }
        }
        self.t.downloaded = Some(Downloaded {
            size: dl.received,
            sha256: dl.hash.finalize().into(),
        });
        ecu.emit(EventKind::DownloadFinished { bytes: dl.received });
        Ok(Outcome::Reply(vec![0x77]))
    }
}

/// Where downloads go: the staging slot and its image area (address, size).
pub(super) fn staging<F: Flash>(ecu: &mut Ecu<F>) -> Option<(Slot, u32, u32)> {
    ecu.with_updater(|u| {
        let (a, s) = u.staging_area();
        Ok((u.staging_slot(), a, s))
    })
    .ok()
}

fn memory_nrc(e: CodecError) -> Nrc {
    match e {
        CodecError::BadFormat(_) => Nrc::RequestOutOfRange,
        _ => Nrc::IncorrectMessageLength,
    }
}

/// The NRC for a refused update call; `Ok(())` means the ECU lost power (no response).
fn update_nrc(e: EcuError) -> Result<(), Nrc> {
    match e {
        EcuError::PowerLost { .. } | EcuError::PoweredOff | EcuError::NotRunning => Ok(()),
        EcuError::Update(UpdateError::OnProbation { .. })
        | EcuError::Update(UpdateError::TrailerNotErased { .. }) => Err(Nrc::ConditionsNotCorrect),
        EcuError::Update(UpdateError::OutOfSlot { .. }) => Err(Nrc::RequestOutOfRange),
        _ => Err(Nrc::GeneralProgrammingFailure),
    }
}

/// The second status byte of a failed checkProgrammingDependencies.
///
/// | code | check that failed |
/// |---|---|
/// | 0x01 | format: header, TLV area, behaviour |
/// | 0x02 | hash |
/// | 0x03 | signature missing, bad, undecodable, of the wrong length, of another type than its key, or with a hash its type does not pair with |
/// | 0x04 | signed with an unknown key (KEYHASH) or an untrusted one (PUBKEY) |
/// | 0x05 | security counter lower than the stored one (downgrade) |
/// | 0x06 | an encrypted image the bootloader cannot decrypt: no decryption key, a key of another type or not the one it was encrypted for, a malformed ENC TLV, or a strategy that runs images in place (direct-xip) |
pub fn image_error_code(e: &ImageError) -> u8 {
    match e {
        ImageError::MissingHash | ImageError::HashMismatch => 0x02,
        ImageError::MissingSignature
        | ImageError::BadSignature { .. }
        | ImageError::BadSignatureLength { .. }
        | ImageError::BadSignatureEncoding { .. }
        | ImageError::WrongKeyType { .. }
        | ImageError::PureNotEd25519 { .. }
        | ImageError::HashNotForSignature { .. } => 0x03,
        ImageError::UnknownKey { .. } | ImageError::UntrustedPubkey { .. } => 0x04,
        ImageError::CounterTooLow { .. } => 0x05,
        ImageError::Encryption(_) => 0x06,
        _ => 0x01,
    }
}
