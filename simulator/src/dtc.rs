//! Diagnostic trouble code memory: what the ECU remembers about faults, read and cleared
//! over UDS (0x19, 0x14).
//!
//! The memory lives with the ECU's non-volatile state: it survives resets and power cycles.
//! Codes are 3-byte DTCs (ISO 14229-1 DTC format); the status byte uses these bits:
//!
//! | bit | mask | name | set when | cleared when |
//! |---|---|---|---|---|
//! | 0 | 0x01 | testFailed | the fault occurs | ClearDiagnosticInformation |
//! | 1 | 0x02 | testFailedThisOperationCycle | the fault occurs | the next boot |
//! | 3 | 0x08 | confirmedDTC | the fault occurs | ClearDiagnosticInformation |
//!
//! | DTC | recorded when |
//! |---|---|
//! | `D0 01 00` | the bootloader rejected an image (hash, signature, counter): a requested upgrade, a test image on probation, or the running image (e.g. bit rot) |
//! | `D0 02 00` | a test image was reverted (also recorded by the boot that completes a revert interrupted by a power loss) |
//! | `D0 03 00` | the firmware hung and the watchdog reset the ECU |
//! | `D0 04 00` | the firmware crashed |
//! | `D0 05 00` | checkProgrammingDependencies (routine 0xFF01) found the downloaded image invalid |

use std::collections::BTreeMap;

use crate::boot::SwapType;
use crate::event::EventKind;

/// Status bits this ECU supports (the DTCStatusAvailabilityMask of 0x19).
pub const STATUS_AVAILABILITY_MASK: u8 = 0x0B;
const TEST_FAILED: u8 = 0x01;
const THIS_CYCLE: u8 = 0x02;
const CONFIRMED: u8 = 0x08;

/// A diagnostic trouble code this ECU records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtc {
    ImageRejected,
    Reverted,
    Watchdog,
    Crash,
    CheckFailed,
}

impl Dtc {
    pub const ALL: [Dtc; 5] = [
        Dtc::ImageRejected,
        Dtc::Reverted,
        Dtc::Watchdog,
        Dtc::Crash,
        Dtc::CheckFailed,
    ];

    /// The 3-byte code, as a number (`0xD00100`).
    pub fn code(self) -> u32 {
        match self {
            Dtc::ImageRejected => 0xD0_0100,
            Dtc::Reverted => 0xD0_0200,
            Dtc::Watchdog => 0xD0_0300,
            Dtc::Crash => 0xD0_0400,
            Dtc::CheckFailed => 0xD0_0500,
        }
    }

    pub fn from_code(code: u32) -> Option<Dtc> {
        Dtc::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The DTC an ECU event records, if any.
    pub fn for_event(kind: &EventKind) -> Option<Dtc> {
        match kind {
            EventKind::ImageRejected { .. } => Some(Dtc::ImageRejected),
            EventKind::RevertStarted { .. }
            | EventKind::SwapResumed {
                kind: SwapType::Revert,
                ..
            } => Some(Dtc::Reverted),
            EventKind::WatchdogReset { .. } => Some(Dtc::Watchdog),
            EventKind::FirmwareCrashed { .. } => Some(Dtc::Crash),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtc::ImageRejected => "image rejected by the bootloader",
            Dtc::Reverted => "test image reverted",
            Dtc::Watchdog => "watchdog reset",
            Dtc::Crash => "firmware crash",
            Dtc::CheckFailed => "downloaded image failed verification",
        }
    }
}

/// The ECU's DTC memory, ordered by code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtcMemory {
    entries: BTreeMap<Dtc, u8>,
    /// ControlDTCSetting off: nothing is recorded.
    pub recording_off: bool,
}

impl DtcMemory {
    /// Record a fault. Returns `true` if it was recorded (recording is on).
    pub fn record(&mut self, dtc: Dtc) -> bool {
        if self.recording_off {
            return false;
        }
        *self.entries.entry(dtc).or_default() |= TEST_FAILED | THIS_CYCLE | CONFIRMED;
        true
    }

    /// Restore an entry (from saved non-volatile memory).
    pub fn set(&mut self, dtc: Dtc, status: u8) {
        self.entries.insert(dtc, status & STATUS_AVAILABILITY_MASK);
    }

    /// A new operation cycle (a boot) begins.
    pub fn new_cycle(&mut self) {
        for status in self.entries.values_mut() {
            *status &= !THIS_CYCLE;
        }
    }

    /// `(code, status)` of every entry whose status matches `mask`, by code.
    pub fn matching(&self, mask: u8) -> Vec<(u32, u8)> {
        self.entries
            .iter()
            .filter(|(_, s)| *s & mask & STATUS_AVAILABILITY_MASK != 0)
            .map(|(d, s)| (d.code(), *s))
            .collect()
    }

    pub fn contains(&self, dtc: Dtc) -> bool {
        self.entries.contains_key(&dtc)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Clear one group: `0xFFFFFF` is all DTCs, otherwise one code. Returns `false` for a
    /// group this ECU does not know.
    pub fn clear(&mut self, group: u32) -> bool {
        if group == 0xFF_FFFF {
            self.entries.clear();
            return true;
        }
        match Dtc::from_code(group) {
            Some(d) => {
                self.entries.remove(&d);
                true
            }
            None => false,
        }
    }

    /// Entries as `(dtc, status)`.
    pub fn iter(&self) -> impl Iterator<Item = (Dtc, u8)> + '_ {
        self.entries.iter().map(|(d, s)| (*d, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_cycle_and_clear() {
        let mut m = DtcMemory::default();
        assert!(m.record(Dtc::Reverted));
        assert_eq!(m.matching(0xFF), vec![(0xD00200, 0x0B)]);
        m.new_cycle();
        assert_eq!(m.matching(0xFF), vec![(0xD00200, 0x09)]);
        assert_eq!(m.matching(0x02), vec![]);
        m.recording_off = true;
        assert!(!m.record(Dtc::Crash));
        m.recording_off = false;
        m.record(Dtc::Crash);
        assert_eq!(m.iter().count(), 2);
        assert!(!m.clear(0x123456));
        assert!(m.clear(0xD00400));
        assert!(!m.contains(Dtc::Crash));
        assert!(m.clear(0xFFFFFF));
        assert!(m.is_empty());
    }
}
