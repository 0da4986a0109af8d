//! Append-only records: the swap journal and the security counter.
//!
//! A record is 16 bytes (rounded up to the write unit), written by one flash operation:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | tag: `0x51` swap start, `0x52` swap step done, `0x53` swap finished, `0x54` image key saved, `0x5c` security counter |
//! | 1 | argument: swap type byte (start), step (`1` A, `2` B, `3` C, `4` M), or for a key: bit 0 the slot (0 primary, 1 secondary), bit 1 AES-256 |
//! | 2..4 | u16 LE: sector count (start), sector index (step) or the image's header size (key) |
//! | 4..8 | u32 LE: swap sequence number (journal), counter value (counter) or the image's payload size (key) |
//! | 8..12 | zero; a key record: the swap sequence number |
//! | 12..16 | CRC-32 (IEEE) of bytes 0..12 |
//!
//! A record whose CRC does not match (torn, or left over from a torn erase) is ignored; records
//! are appended after the last unit that is not erased.
//!
//! ## The swap, step by step
//!
//! A swap moves sectors in steps, each finished by a journal record. Every step starts by
//! erasing its destination and copies from a source that the journal proves intact, so a step
//! interrupted anywhere is simply done again. `P[i]`, `S[i]` are the slots' sectors in flash
//! order (swap-move's spare is `P[n]`, swap-offset's is `S[0]`), `k` the sectors the larger
//! image needs.
//!
//! **swap-scratch** (i = 0‥k):
//!
//! | step | erase | copy | the source is intact because |
//! |---|---|---|---|
//! | A | scratch | S\[i\] → scratch | B(i) has not started |
//! | B | S\[i\] | P\[i\] → S\[i\] | C(i) has not started |
//! | C | P\[i\] | scratch → P\[i\] | A(i+1) has not started |
//!
//! **swap-move**: first M(i) for i = k−1 down to 0, then A(i), B(i) for i = 0‥k (a revert is
//! the same swap again):
//!
//! | step | erase | copy | the source is intact because |
//! |---|---|---|---|
//! | M | P\[i+1\] | P\[i\] → P\[i+1\] | M(i−1) and A(i) have not started |
//! | A | P\[i\] | S\[i\] → P\[i\] | B(i) has not started |
//! | B | S\[i\] | P\[i+1\] → S\[i\] | A(i+1) has not started |
//!
//! **swap-offset**: a test or permanent swap runs A(i), B(i) for i = 0‥k (the new image starts
//! at `S[1]`, the old one ends at `S[0]`); a revert runs them backwards, for i = k−1 down to 0:
//!
//! | swap | step | erase | copy | the source is intact because |
//! |---|---|---|---|---|
//! | test, permanent | A | S\[i\] | P\[i\] → S\[i\] | B(i) has not started |
//! | test, permanent | B | P\[i\] | S\[i+1\] → P\[i\] | A(i+1) has not started |
//! | revert | A | S\[i+1\] | P\[i\] → S\[i+1\] | B(i) has not started |
//! | revert | B | P\[i\] | S\[i\] → P\[i\] | A(i−1) has not started |
//!
//! After the last step the trailers are rebuilt (primary: erase, write swap info, swap size,
//! flags, magic; secondary: erase) and a *finished* record closes the swap. A swap with a start
//! record and no finished record is resumed at the next boot before anything else happens.
//! (MCUboot keeps this progress in the trailer's swap-status area instead; this journal keeps
//! it in two sectors of its own, CRC-checked, and leaves that area erased.)
//!
//! Swap *k* (its sequence number) uses journal sector *k* mod 2, erased just before its start
//! record is written. The journal in force is the one whose valid start record has the highest
//! sequence number; the other sector holds the previous swap, finished, so a torn erase of the
//! sector being prepared can never resurrect an older, half-done swap.

use crate::flash::{Flash, FlashError};

use super::layout::{Layout, Region, Slot};
pub use super::layout::{record_size, records_needed};
use super::trailer::SwapType;
use crate::image::AesKeySize;

const TAG_START: u8 = 0x51;
const TAG_STEP: u8 = 0x52;
const TAG_DONE: u8 = 0x53;
const TAG_KEY: u8 = 0x54;
const TAG_COUNTER: u8 = 0x5c;

/// One step of moving a sector (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    A,
    B,
    C,
    /// Swap-move's move-up of one primary sector.
    M,
}

impl Step {
    fn to_byte(self) -> u8 {
        match self {
            Step::A => 1,
            Step::B => 2,
            Step::C => 3,
            Step::M => 4,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Step::A),
            2 => Some(Step::B),
            3 => Some(Step::C),
            4 => Some(Step::M),
            _ => None,
        }
    }
}

/// What a key record says: which slot's image, its AES key size, and where its payload is
/// (the header size and the payload size from its header, which a swap may have moved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub slot: Slot,
    pub aes: AesKeySize,
    pub hdr_size: u16,
    pub img_size: u32,
}

/// A decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Start {
        seq: u32,
        kind: SwapType,
        sectors: u16,
    },
    Step {
        seq: u32,
        step: Step,
        sector: u16,
    },
    Done {
        seq: u32,
    },
    /// The AES key of the image that was in `key.slot` when swap `seq` started is in the
    /// primary trailer's key field for that slot (see [`super::crypt`]).
    Key {
        seq: u32,
        key: KeyRecord,
    },
    Counter {
        value: u32,
    },
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Record {
    pub fn encode(&self, unit: u32, erased: u8) -> Vec<u8> {
        let (tag, arg, half, word, extra) = match *self {
            Record::Start { seq, kind, sectors } => (TAG_START, kind.to_byte(), sectors, seq, 0),
            Record::Step { seq, step, sector } => (TAG_STEP, step.to_byte(), sector, seq, 0),
            Record::Done { seq } => (TAG_DONE, 0, 0, seq, 0),
            Record::Key { seq, key } => (
                TAG_KEY,
                key.slot.index() | (u8::from(key.aes == AesKeySize::Aes256) << 1),
                key.hdr_size,
                key.img_size,
                seq,
            ),
            Record::Counter { value } => (TAG_COUNTER, 0, 0, value, 0),
        };
        let mut out = vec![erased; record_size(unit) as usize];
        out[0] = tag;
        out[1] = arg;
        out[2..4].copy_from_slice(&half.to_le_bytes());
        out[4..8].copy_from_slice(&word.to_le_bytes());
        out[8..12].copy_from_slice(&u32::to_le_bytes(extra));
        let crc = crc32(&out[..12]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() < 16 {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
        let extra = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
        if crc != crc32(&bytes[..12]) || (bytes[0] != TAG_KEY && extra != 0) {
            return None;
        }
        let half = u16::from_le_bytes([bytes[2], bytes[3]]);
        let word = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
        match bytes[0] {
            TAG_KEY if bytes[1] >> 2 == 0 => Some(Record::Key {
                seq: extra,
                key: KeyRecord {
                    slot: if bytes[1] & 1 == 0 {
                        Slot::Primary
                    } else {
                        Slot::Secondary
                    },
                    aes: if bytes[1] & 2 == 0 {
                        AesKeySize::Aes128
                    } else {
                        AesKeySize::Aes256
                    },
                    hdr_size: half,
                    img_size: word,
                },
            }),
            TAG_START => Some(Record::Start {
                seq: word,
                kind: SwapType::from_byte(bytes[1])?,
                sectors: half,
            }),
            TAG_STEP => Some(Record::Step {
                seq: word,
                step: Step::from_byte(bytes[1])?,
                sector: half,
            }),
            TAG_DONE => Some(Record::Done { seq: word }),
            TAG_COUNTER => Some(Record::Counter { value: word }),
            _ => None,
        }
    }
}

/// The records of one sector and where the next one goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub records: Vec<Record>,
    /// Address for the next record, or `None` if the sector is full.
    pub next: Option<u32>,
}

/// Read every record of `region`.
pub fn read_log<F: Flash>(flash: &F, layout: &Layout, region: &Region) -> Result<Log, FlashError> {
    let size = record_size(layout.unit);
    let mut buf = vec![0; region.size as usize];
    flash.read(region.offset, &mut buf)?;
    let mut records = Vec::new();
    let mut last_used = None;
    for (i, chunk) in buf.chunks_exact(size as usize).enumerate() {
        if chunk.iter().any(|&b| b != layout.erased) {
            last_used = Some(i);
        }
        if let Some(r) = Record::decode(chunk) {
            records.push(r);
        }
    }
    let next_index = last_used.map_or(0, |i| i + 1) as u32;
    let next = (next_index < region.size / size).then(|| region.offset + next_index * size);
    Ok(Log { records, next })
}

/// Progress of the swap in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// No swap in progress. `last_seq` is the sequence number of the last swap (0 if none).
    Idle { last_seq: u32 },
    /// A swap was started and not finished.
    InProgress {
        seq: u32,
        kind: SwapType,
        sectors: u16,
        /// The last step recorded, if any.
        last: Option<(Step, u16)>,
        /// Journal sector (0 or 1) and where its next record goes.
        journal: usize,
        next: Option<u32>,
        /// The image keys saved for this swap, by slot (the last record of each wins).
        keys: [Option<KeyRecord>; 2],
    },
}

/// Decode the journal in force from both journal sectors.
pub fn swap_state<F: Flash>(flash: &F, layout: &Layout) -> Result<SwapState, FlashError> {
    let mut best: Option<(u32, usize, Log)> = None;
    for (j, region) in layout.journal.iter().enumerate() {
        let log = read_log(flash, layout, region)?;
        let start = log.records.iter().rev().find_map(|r| match r {
            Record::Start { seq, .. } => Some(*seq),
            _ => None,
        });
        if let Some(seq) = start
            && best.as_ref().is_none_or(|(s, _, _)| seq > *s)
        {
            best = Some((seq, j, log));
        }
    }
    let Some((seq, journal, log)) = best else {
        return Ok(SwapState::Idle { last_seq: 0 });
    };
    let mut kind = None;
    let mut last = None;
    let mut keys = [None; 2];
    for r in &log.records {
        match *r {
            Record::Start {
                seq: s,
                kind: k,
                sectors,
            } if s == seq => kind = Some((k, sectors)),
            Record::Step {
                seq: s,
                step,
                sector,
            } if s == seq => last = Some((step, sector)),
            Record::Key { seq: s, key } if s == seq => {
                keys[usize::from(key.slot.index())] = Some(key);
            }
            Record::Done { seq: s } if s == seq => return Ok(SwapState::Idle { last_seq: seq }),
            _ => {}
        }
    }
    let Some((kind, sectors)) = kind else {
        return Ok(SwapState::Idle { last_seq: seq });
    };
    Ok(SwapState::InProgress {
        seq,
        kind,
        sectors,
        last,
        journal,
        next: log.next,
        keys,
    })
}

/// The stored security counter: the highest valid counter record (0 if none).
pub fn read_counter<F: Flash>(
    flash: &F,
    layout: &Layout,
) -> Result<(u32, Option<u32>), FlashError> {
    let log = read_log(flash, layout, &layout.counter)?;
    let value = log
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Counter { value } => Some(*value),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    Ok((value, log.next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::layout::BootMode;
    use crate::flash::{CutVariant, Geometry, SimFlash};
    use hex_literal::hex;

    #[test]
    fn record_encoding_is_stable() {
        let r = Record::Start {
            seq: 7,
            kind: SwapType::Test,
            sectors: 3,
        };
        let bytes = r.encode(8, 0xFF);
        assert_eq!(bytes[..12], hex!("51 02 03 00 07 00 00 00 00 00 00 00"));
        assert_eq!(Record::decode(&bytes), Some(r));
        let wide = r.encode(32, 0xFF);
        assert_eq!(wide.len(), 32);
        assert!(wide[16..].iter().all(|&b| b == 0xFF));
        assert_eq!(Record::decode(&wide), Some(r));
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn any_flipped_bit_invalidates_a_record() {
        let bytes = Record::Step {
            seq: 1,
            step: Step::B,
            sector: 2,
        }
        .encode(8, 0xFF);
        for i in 0..16 * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(Record::decode(&b), None, "bit {i}");
        }
        assert_eq!(Record::decode(&[0xFF; 16]), None);
        assert_eq!(Record::decode(&[0x00; 16]), None);
    }

    fn setup() -> (SimFlash, Layout) {
        let g = Geometry::uniform(1024, 4 + 2 * 3, 8).unwrap();
        let l = Layout::auto(&g, BootMode::SwapScratch).unwrap();
        (SimFlash::new(g, 5), l)
    }

    fn append(f: &mut SimFlash, l: &Layout, j: usize, r: Record) {
        let next = read_log(f, l, &l.journal[j]).unwrap().next.unwrap();
        f.write(next, &r.encode(l.unit, l.erased)).unwrap();
    }

    #[test]
    fn journal_in_force_is_the_newest_start() {
        let (mut f, l) = setup();
        assert_eq!(swap_state(&f, &l).unwrap(), SwapState::Idle { last_seq: 0 });
        append(
            &mut f,
            &l,
            1,
            Record::Start {
                seq: 1,
                kind: SwapType::Test,
                sectors: 2,
            },
        );
        append(
            &mut f,
            &l,
            1,
            Record::Step {
                seq: 1,
                step: Step::A,
                sector: 0,
            },
        );
        let SwapState::InProgress {
            seq, last, journal, ..
        } = swap_state(&f, &l).unwrap()
        else {
            panic!()
        };
        assert_eq!((seq, last, journal), (1, Some((Step::A, 0)), 1));
        append(&mut f, &l, 1, Record::Done { seq: 1 });
        assert_eq!(swap_state(&f, &l).unwrap(), SwapState::Idle { last_seq: 1 });
        // The next swap goes to the other sector; the old one stays as it is.
        append(
            &mut f,
            &l,
            0,
            Record::Start {
                seq: 2,
                kind: SwapType::Revert,
                sectors: 2,
            },
        );
        assert!(matches!(
            swap_state(&f, &l).unwrap(),
            SwapState::InProgress {
                seq: 2,
                kind: SwapType::Revert,
                journal: 0,
                last: None,
                ..
            }
        ));
    }

    #[test]
    fn torn_record_is_skipped_and_the_next_goes_after_it() {
        let (mut f, l) = setup();
        append(
            &mut f,
            &l,
            0,
            Record::Start {
                seq: 1,
                kind: SwapType::Perm,
                sectors: 2,
            },
        );
        let next = read_log(&f, &l, &l.journal[0]).unwrap().next.unwrap();
        f.arm_cut(f.ops(), CutVariant::Torn);
        let rec = Record::Step {
            seq: 1,
            step: Step::A,
            sector: 0,
        }
        .encode(l.unit, l.erased);
        assert!(f.write(next, &rec).is_err());
        f.restore_power();
        let log = read_log(&f, &l, &l.journal[0]).unwrap();
        assert_eq!(log.records.len(), 1);
        let SwapState::InProgress { last: None, .. } = swap_state(&f, &l).unwrap() else {
            panic!()
        };
        // Append lands after the torn unit unless the tear left it looking erased.
        assert!(log.next.unwrap() >= next);
        f.write(log.next.unwrap(), &rec).unwrap();
    }

    #[test]
    fn counter_is_the_highest_valid_record() {
        let (mut f, l) = setup();
        assert_eq!(read_counter(&f, &l).unwrap().0, 0);
        for v in [3, 5] {
            let next = read_counter(&f, &l).unwrap().1.unwrap();
            f.write(next, &Record::Counter { value: v }.encode(l.unit, l.erased))
                .unwrap();
        }
        assert_eq!(read_counter(&f, &l).unwrap().0, 5);
    }
}
