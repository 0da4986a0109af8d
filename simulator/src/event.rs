//! The ECU's event vocabulary: everything the ECU does that a view, a report or a test may want.

use std::fmt;

use crate::boot::{Slot, Step, SwapType};
use crate::flash::CutVariant;
use crate::image::Version;

/// An event at a simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Simulated microseconds since the ECU was created.
    pub at_us: u64,
    /// Flash operations counted when the event happened (the next operation's index).
    pub flash_ops: u64,
    pub kind: EventKind,
}

/// Why the bootloader put the previous image back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevertReason {
    /// The test image used its boot attempts without confirming.
    NotConfirmed { attempts: u8 },
    /// The test image no longer verifies.
    Invalid { reason: String },
    /// A revert interrupted by a power loss was resumed from the swap journal and completed
    /// (the journal keeps the swap, not why it was started).
    Resumed,
}

impl fmt::Display for RevertReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevertReason::NotConfirmed { attempts } => {
                write!(f, "not confirmed after {attempts} boot attempt(s)")
            }
            RevertReason::Invalid { reason } => write!(f, "test image invalid: {reason}"),
            RevertReason::Resumed => write!(f, "an interrupted revert was resumed and completed"),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    PowerOn,
    PowerOff,
    /// Power was lost during flash operation `op` (a fault injected at that operation).
    PowerLost {
        op: u64,
        variant: CutVariant,
    },
    BootStarted {
        boot: u64,
    },
    SwapStarted {
        kind: SwapType,
        seq: u32,
        sectors: u16,
    },
    /// A swap interrupted by a power loss continues; `next` is the step that runs first.
    SwapResumed {
        kind: SwapType,
        seq: u32,
        next: Option<(Step, u16)>,
    },
    /// Image sector `sector` (of `of`) has been swapped.
    SwapProgress {
        kind: SwapType,
        sector: u16,
        of: u16,
    },
    SwapFinished {
        kind: SwapType,
        seq: u32,
    },
    /// An image was refused before boot (the request is dropped).
    ImageRejected {
        slot: Slot,
        reason: String,
    },
    /// A test image is being taken out.
    RevertStarted {
        slot: Slot,
        reason: RevertReason,
    },
    Booted {
        slot: Slot,
        version: Version,
        test: bool,
        attempt: u8,
    },
    /// The bootloader found nothing it may boot: the ECU is bricked.
    NoBootableImage {
        reasons: Vec<(Slot, String)>,
    },
    CounterRaised {
        from: u32,
        to: u32,
    },
    FirmwareCrashed {
        version: Version,
    },
    WatchdogReset {
        version: Version,
    },
    Confirmed {
        slot: Slot,
        version: Version,
    },
    StagingErased {
        slot: Slot,
    },
    /// Summary of the flash work of one boot or one staging (not emitted when there was none).
    FlashActivity {
        erases: u64,
        writes: u64,
        bytes_written: u64,
    },
    UpgradeRequested {
        slot: Slot,
        permanent: bool,
    },
    /// A diagnostic trouble code was stored (see [`crate::dtc`]).
    DtcRecorded {
        code: u32,
    },
    /// Diagnostics: the active session changed (0x01 default, 0x02 programming, 0x03 extended).
    SessionChanged {
        session: u8,
    },
    /// Diagnostics: a security level was unlocked.
    SecurityUnlocked {
        level: u8,
    },
    /// Diagnostics: a wrong key was sent (`attempts` so far); `locked_out` after the last one.
    SecurityKeyRejected {
        level: u8,
        attempts: u8,
        locked_out: bool,
    },
    /// Diagnostics: a request was answered negatively.
    NegativeResponse {
        sid: u8,
        nrc: u8,
    },
    /// Diagnostics: a download region was accepted (RequestDownload).
    DownloadStarted {
        address: u32,
        size: u32,
    },
    /// Diagnostics: the download ended (RequestTransferExit).
    DownloadFinished {
        bytes: u32,
    },
    /// Diagnostics: a routine ran (`ok` is its result).
    RoutineFinished {
        id: u16,
        ok: bool,
    },
    /// Diagnostics: stored DTCs were cleared.
    DtcsCleared,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::PowerOn => write!(f, "power on"),
            EventKind::PowerOff => write!(f, "power off"),
            EventKind::PowerLost { op, variant } => {
                write!(f, "power lost at flash op {op} ({variant})")
            }
            EventKind::BootStarted { boot } => write!(f, "boot #{boot}"),
            EventKind::SwapStarted { kind, seq, sectors } => {
                write!(f, "swap #{seq} started: {kind:?}, {sectors} sector(s)")
            }
            EventKind::SwapResumed { kind, seq, next } => match next {
                Some((step, sector)) => {
                    write!(
                        f,
                        "swap #{seq} ({kind:?}) resumed at step {step:?} of sector {sector}"
                    )
                }
                None => write!(f, "swap #{seq} ({kind:?}) resumed at trailer rebuild"),
            },
            EventKind::SwapProgress { sector, of, .. } => {
                write!(f, "swap: sector {}/{of} done", sector + 1)
            }
            EventKind::SwapFinished { kind, seq } => write!(f, "swap #{seq} ({kind:?}) finished"),
            EventKind::ImageRejected { slot, reason } => {
                write!(f, "{slot} image rejected: {reason}")
            }
            EventKind::RevertStarted { slot, reason } => {
                write!(f, "reverting {slot} image: {reason}")
            }
            EventKind::Booted {
                slot,
                version,
                test,
                attempt,
            } => {
                if *test {
                    write!(f, "booted {version} from {slot} (test, attempt {attempt})")
                } else {
                    write!(f, "booted {version} from {slot}")
                }
            }
            EventKind::NoBootableImage { reasons } => {
                write!(f, "no bootable image")?;
                for (slot, why) in reasons {
                    write!(f, "; {slot}: {why}")?;
                }
                Ok(())
            }
            EventKind::CounterRaised { from, to } => {
                write!(f, "security counter raised {from} -> {to}")
            }
            EventKind::FirmwareCrashed { version } => write!(f, "firmware {version} crashed"),
            EventKind::WatchdogReset { version } => {
                write!(f, "watchdog reset: firmware {version} hung")
            }
            EventKind::Confirmed { slot, version } => write!(f, "{version} in {slot} confirmed"),
            EventKind::StagingErased { slot } => write!(f, "{slot} slot erased for download"),
            EventKind::FlashActivity {
                erases,
                writes,
                bytes_written,
            } => write!(
                f,
                "flash: {erases} sector erase(s), {writes} write(s), {bytes_written} bytes"
            ),
            EventKind::UpgradeRequested { slot, permanent } => write!(
                f,
                "upgrade from {slot} requested ({})",
                if *permanent { "permanent" } else { "test" }
            ),
            EventKind::DtcRecorded { code } => write!(f, "dtc {code:06X} recorded"),
            EventKind::SessionChanged { session } => write!(f, "session 0x{session:02x}"),
            EventKind::SecurityUnlocked { level } => write!(f, "security level {level} unlocked"),
            EventKind::SecurityKeyRejected {
                level,
                attempts,
                locked_out,
            } => {
                write!(
                    f,
                    "security level {level}: invalid key (attempt {attempts})"
                )?;
                if *locked_out {
                    write!(f, ", locked out")?;
                }
                Ok(())
            }
            EventKind::NegativeResponse { sid, nrc } => {
                write!(f, "negative response to 0x{sid:02x}: nrc 0x{nrc:02x}")
            }
            EventKind::DownloadStarted { address, size } => {
                write!(f, "download of {size} bytes to 0x{address:x} accepted")
            }
            EventKind::DownloadFinished { bytes } => write!(f, "download finished: {bytes} bytes"),
            EventKind::RoutineFinished { id, ok } => write!(
                f,
                "routine 0x{id:04x} {}",
                if *ok { "succeeded" } else { "failed" }
            ),
            EventKind::DtcsCleared => write!(f, "dtcs cleared"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7}.{:03} s  {}",
            self.at_us / 1_000_000,
            (self.at_us / 1000) % 1000,
            self.kind
        )
    }
}
