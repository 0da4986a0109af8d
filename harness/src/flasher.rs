//! The programming sequence for an MCUboot image over UDS, on any [`Transport`].
//!
//! ## Steps
//!
//! | phase | request | expects | fails with |
//! |---|---|---|---|
//! | session | `10 02` (an ECU not ready yet — `0x21`, `0x22`, pending without an answer — is asked again up to [`FlasherConfig::boot_timeout`]) | `50 02 P2 P2*` | [`FlasherError::Uds`] |
//! | unlock | `27 01` / `27 02 key` | `67 01 seed` / `67 02` | `Uds` (e.g. NRC 0x35 invalidKey) |
//! | staging | `22 FD 03` | slot, address, size, erase sector, write unit | [`FlasherError::TooLarge`] |
//! | erase | `31 01 FF 00 44 addr size` (the image rounded up to the erase sector) | status `00` | `Uds`, [`FlasherError::EraseFailed`] |
//! | download | `34 00 44 addr size` | `74 LFI maxNumberOfBlockLength` | `Uds`, [`FlasherError::BlockTooSmall`] |
//! | transfer | `36 seq data` × N, blocks of maxNumberOfBlockLength − 2 bytes, `seq` from 1, wrapping `FF`→`00` | `76 seq` | `Uds` |
//! | transfer exit | `37` | `77` | `Uds` |
//! | check memory | `31 01 02 02 sha256(image)` | status `00` | [`FlasherError::MemoryCheckFailed`] |
//! | boot counter | `22 FD 00` just before the install request ([`FlashEvent::Requesting`]) | the boot status record | — (not known: `None`) |
//! | check dependencies | `31 01 FF 01` (`… 01` permanent) | status `00` | [`FlasherError::CheckFailed`] with the check: `01` format, `02` hash, `03` signature, `04` unknown key, `05` downgrade |
//! | reset | `11 01` | `51 01` (a lost answer is tolerated) | `Uds` |
//! | reboot | `3E 00` polled with backoff | any answer | [`FlasherError::NoAnswer`] after [`FlasherConfig::boot_timeout`] |
//! | confirm | `22 FD 00` polled with backoff | new version confirmed: [`Outcome::Committed`]; another version: [`Outcome::RolledBack`] with `22 FD 04` | see below |
//! | revert | `11 01` when the new image is still on probation after [`FlasherConfig::confirm_timeout`] | the bootloader reverts an unconfirmed test image | [`FlasherError::Unconfirmed`] when [`FlasherConfig::revert_resets`] are used up |
//!
//! [`Flasher::program`] runs session → check dependencies (what "programming time" measures),
//! [`Flasher::activate`] reset → outcome, [`Flasher::run`] both. Progress goes out as
//! [`FlashEvent`]s to a callback; the flasher prints nothing.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use ecu_sim::image::{self, ImageError, Version};
use ecu_sim::proto::uds::codec::{
    self, BootStatusRecord, MemoryRange, Session, StagingRecord, did, routine, routine_control,
};
use ecu_sim::proto::uds::security;
use sha2::{Digest, Sha256};

use crate::transport::Transport;
use crate::uds_client::{ClientError, UdsClient};

/// How to flash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlasherConfig {
    /// SecurityAccess level that unlocks programming.
    pub security_level: u8,
    /// Request a permanent upgrade instead of a test (revertible) one.
    pub permanent: bool,
    /// Cap on TransferData payload bytes (default: maxNumberOfBlockLength − 2).
    pub max_block_data: Option<u32>,
    /// How long the ECU may stay silent after a reset.
    pub boot_timeout: Duration,
    /// How long the new image may stay on probation before it counts as unconfirmed.
    pub confirm_timeout: Duration,
    /// Resets sent to make the bootloader revert an unconfirmed image (0: report
    /// [`FlasherError::Unconfirmed`] at once).
    pub revert_resets: u8,
    /// How long each poll waits for its answer.
    pub poll_wait: Duration,
    /// First pause between polls; doubles up to `poll_max`.
    pub poll_initial: Duration,
    pub poll_max: Duration,
}

impl Default for FlasherConfig {
    fn default() -> Self {
        FlasherConfig {
            security_level: security::LEVEL_PROGRAMMING,
            permanent: false,
            max_block_data: None,
            boot_timeout: Duration::from_secs(30),
            confirm_timeout: Duration::from_secs(10),
            revert_resets: 1,
            poll_wait: Duration::from_millis(250),
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(500),
        }
    }
}

/// A step of the sequence, with what it acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Session,
    Unlock {
        level: u8,
    },
    Staging,
    Erase {
        range: MemoryRange,
    },
    Download {
        range: MemoryRange,
    },
    Transfer {
        blocks: u32,
        block_data: u32,
    },
    TransferExit,
    CheckMemory,
    CheckDependencies {
        permanent: bool,
    },
    Reset,
    Reboot,
    Confirm {
        version: Version,
    },
    /// The new image is still on probation: reset so that the bootloader reverts it.
    Revert,
}

impl Phase {
    /// Short name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Session => "session",
            Phase::Unlock { .. } => "security access",
            Phase::Staging => "staging area",
            Phase::Erase { .. } => "erase",
            Phase::Download { .. } => "request download",
            Phase::Transfer { .. } => "transfer data",
            Phase::TransferExit => "transfer exit",
            Phase::CheckMemory => "check memory",
            Phase::CheckDependencies { .. } => "check programming dependencies",
            Phase::Reset => "reset",
            Phase::Reboot => "reboot",
            Phase::Confirm { .. } => "confirm",
            Phase::Revert => "revert",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            Phase::Session => f.write_str(": programming session"),
            Phase::Unlock { level } => write!(f, ": level {level}"),
            Phase::Erase { range } | Phase::Download { range } => {
                write!(f, ": 0x{:08x} +{} bytes", range.address, range.size)
            }
            Phase::Transfer { blocks, block_data } => {
                write!(f, ": {blocks} blocks of up to {block_data} bytes")
            }
            Phase::CheckDependencies { permanent } => {
                f.write_str(if *permanent { ": permanent" } else { ": test" })
            }
            Phase::Staging => f.write_str(": reading 0xfd03"),
            Phase::Reboot => f.write_str(": waiting for the ecu to answer"),
            Phase::Confirm { version } => write!(f, ": waiting for v{version} to confirm"),
            _ => Ok(()),
        }
    }
}

/// What the flasher reports while it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlashEvent {
    Phase(Phase),
    /// Where the ECU takes downloads.
    Staging(StagingRecord),
    /// TransferData block `n` of `total` accepted; `bytes` sent so far.
    Block {
        n: u32,
        total: u32,
        bytes: u64,
    },
    /// Session → check dependencies done.
    Programmed {
        bytes: u64,
        elapsed: Duration,
    },
    /// The ECU answers again, `after` the reset request.
    Answering {
        after: Duration,
    },
    /// About to ask the ECU to install the image (checkProgrammingDependencies): its boot
    /// counter before the request (`None`: it did not say).
    Requesting {
        boot_count: Option<u32>,
    },
    /// The ECU answered `sid` but is not ready yet (just after a boot): `nrc`, or
    /// responsePending without a final answer (`nrc` 0x78); the request is repeated within
    /// the same attempt.
    NotReady {
        sid: u8,
        nrc: u8,
    },
    /// The boot status, each time it changes while waiting.
    BootStatus(BootStatusRecord),
    Done(Outcome),
}

impl fmt::Display for FlashEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashEvent::Phase(p) => p.fmt(f),
            FlashEvent::Staging(s) => write!(
                f,
                "staging area: slot {} at 0x{:08x}, {} bytes, {}-byte sectors, {}-byte writes",
                s.slot, s.address, s.size, s.erase_sector, s.write_align
            ),
            FlashEvent::Block { n, total, bytes } => write!(f, "block {n}/{total} ({bytes} bytes)"),
            FlashEvent::Programmed { bytes, elapsed } => write!(
                f,
                "programmed {bytes} bytes in {:.3} s ({:.1} MB/s)",
                elapsed.as_secs_f64(),
                *bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
            ),
            FlashEvent::Requesting { boot_count } => match boot_count {
                Some(n) => write!(f, "asking the ecu to install the image (boot {n})"),
                None => f.write_str("asking the ecu to install the image"),
            },
            FlashEvent::NotReady { sid, nrc } => write!(
                f,
                "ecu not ready: 0x{sid:02x} answered 0x{nrc:02x} {}; asking again",
                crate::uds_client::nrc_name(*nrc)
            ),
            FlashEvent::Answering { after } => {
                write!(f, "ecu answers {} ms after the reset", after.as_millis())
            }
            FlashEvent::BootStatus(s) => {
                let version = s.version.map_or("none".to_string(), |v| format!("v{v}"));
                let state = if s.confirmed {
                    "confirmed"
                } else if s.on_probation {
                    "on probation"
                } else {
                    "not confirmed"
                };
                write!(
                    f,
                    "boot status: {version} in slot {}, {state}, boot {}, last boot {}",
                    s.slot,
                    s.boot_count,
                    boot_outcome_name(s.outcome)
                )
            }
            FlashEvent::Done(o) => write!(f, "result: {o}"),
        }
    }
}

/// How an update ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new image runs and is confirmed.
    Committed { version: Version, slot: u8 },
    /// The ECU runs another image: the bootloader reverted or rejected the new one.
    RolledBack {
        running: Option<Version>,
        /// Last boot outcome from 0xFD00 (4 reverted, 5 rejected, …).
        boot_outcome: u8,
        /// 0xFD04.
        reason: String,
    },
}

impl Outcome {
    pub fn is_committed(&self) -> bool {
        matches!(self, Outcome::Committed { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Committed { version, slot } => {
                write!(f, "COMMITTED v{version} runs from slot {slot}, confirmed")
            }
            Outcome::RolledBack {
                running,
                boot_outcome,
                reason,
            } => write!(
                f,
                "ROLLED BACK to {} ({}: {reason})",
                running.map_or("no image".to_string(), |v| format!("v{v}")),
                boot_outcome_name(*boot_outcome)
            ),
        }
    }
}

/// The name of a last-boot-outcome code of 0xFD00.
pub fn boot_outcome_name(code: u8) -> &'static str {
    match code {
        1 => "normal",
        2 => "test boot",
        3 => "upgraded",
        4 => "reverted",
        5 => "image rejected",
        6 => "no bootable image",
        _ => "unknown",
    }
}

/// The check named by the second status byte of a failed checkProgrammingDependencies.
pub fn check_name(code: u8) -> &'static str {
    match code {
        0x01 => "format",
        0x02 => "hash",
        0x03 => "signature",
        0x04 => "unknown key",
        0x05 => "downgrade",
        0x06 => "decryption",
        _ => "unknown check",
    }
}

/// What the programming part did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    pub staging: StagingRecord,
    pub erased: MemoryRange,
    /// maxNumberOfBlockLength from RequestDownload.
    pub max_block_len: u32,
    /// Data bytes per TransferData.
    pub block_data: u32,
    pub blocks: u32,
    /// Session → check dependencies.
    pub elapsed: Duration,
}

/// The whole update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashReport {
    pub version: Version,
    pub programmed: Programmed,
    pub outcome: Outcome,
    /// Session → outcome.
    pub total: Duration,
}

/// Why an update did not reach an outcome.
#[derive(Debug, thiserror::Error)]
pub enum FlasherError {
    #[error("image: {0}")]
    Image(#[from] ImageError),
    #[error("{phase}: {source}")]
    Uds {
        phase: &'static str,
        source: ClientError,
    },
    #[error("the image ({size} bytes) does not fit the staging area ({capacity} bytes)")]
    TooLarge { size: usize, capacity: u32 },
    #[error("erase: routine status {status:02x?}")]
    EraseFailed { status: Vec<u8> },
    #[error("request download: maxNumberOfBlockLength {max} leaves no room for data")]
    BlockTooSmall { max: u32 },
    #[error(
        "check memory: the ecu's sha-256 of the download differs from the image's (status {status:02x?})"
    )]
    MemoryCheckFailed { status: Vec<u8> },
    #[error("check programming dependencies: image refused by check 0x{code:02x} ({check})")]
    CheckFailed { code: u8, check: &'static str },
    #[error("check programming dependencies: unexpected status {status:02x?}")]
    CheckStatus { status: Vec<u8> },
    #[error("{phase}: the ecu did not answer within {waited:?}")]
    NoAnswer {
        phase: &'static str,
        waited: Duration,
    },
    #[error("v{version} is still on probation after {waited:?}")]
    Unconfirmed { version: Version, waited: Duration },
    /// The [`InstallGate`] said no: the ECU was not asked to install the image.
    #[error("check programming dependencies: not sent: {reason}")]
    Withheld { reason: String },
}

impl FlasherError {
    /// Whether the update was turned down (an NRC, a failed check, an image that does not fit
    /// the staging area, an image that never confirmed and was not reverted), as opposed to
    /// the harness, the link or the ECU breaking. The CLI exits 1 for these, 2 for the rest.
    pub fn is_refusal(&self) -> bool {
        match self {
            FlasherError::Uds { source, .. } => source.nrc().is_some(),
            FlasherError::MemoryCheckFailed { .. }
            | FlasherError::CheckFailed { .. }
            | FlasherError::TooLarge { .. }
            | FlasherError::Unconfirmed { .. } => true,
            _ => false,
        }
    }

    /// The NRC, if the ECU refused a request.
    pub fn nrc(&self) -> Option<u8> {
        match self {
            FlasherError::Uds { source, .. } => source.nrc(),
            _ => None,
        }
    }
}

/// Runs the programming sequence; see the module doc.
#[derive(Clone, Debug, Default)]
pub struct Flasher {
    pub config: FlasherConfig,
    /// Asked right before the request that lets the ECU install the image.
    pub install_gate: Option<InstallGate>,
}

/// Decides, right before check programming dependencies (the request after which the ECU may
/// install the image at any boot), whether it is sent: `Err(reason)` ends the sequence with
/// [`FlasherError::Withheld`] and the ECU keeps an unrequested download in its staging slot,
/// which no boot installs. The gate is called synchronously, once per sequence, so a caller
/// can decide atomically with its own state (`hil ota serve`'s cancel).
#[derive(Clone)]
pub struct InstallGate(pub std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl fmt::Debug for InstallGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstallGate")
    }
}

fn uds(phase: &Phase) -> impl FnOnce(ClientError) -> FlasherError {
    let phase = phase.name();
    move |source| FlasherError::Uds { phase, source }
}

impl Flasher {
    pub fn new(config: FlasherConfig) -> Self {
        Flasher {
            config,
            install_gate: None,
        }
    }

    /// The same flasher asking `gate` before the ECU is asked to install the image.
    pub fn with_install_gate(mut self, gate: Option<InstallGate>) -> Self {
        self.install_gate = gate;
        self
    }

    /// Program `image`, reset, and wait for the outcome.
    pub async fn run<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        image: &[u8],
        on: &mut F,
    ) -> Result<FlashReport, FlasherError> {
        let version = image::Header::parse(image)?.version;
        let start = Instant::now();
        let programmed = self.program(client, image, on).await?;
        let outcome = self.activate(client, version, on).await?;
        Ok(FlashReport {
            version,
            programmed,
            outcome,
            total: start.elapsed(),
        })
    }

    /// Session → check dependencies: afterwards the ECU holds the image and has requested it.
    pub async fn program<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        image: &[u8],
        on: &mut F,
    ) -> Result<Programmed, FlasherError> {
        let start = Instant::now();
        let mut phase = Phase::Session;
        on(&FlashEvent::Phase(phase.clone()));
        self.enter_programming(client, on)
            .await
            .map_err(uds(&phase))?;

        phase = Phase::Unlock {
            level: self.config.security_level,
        };
        on(&FlashEvent::Phase(phase.clone()));
        client
            .unlock(self.config.security_level)
            .await
            .map_err(uds(&phase))?;

        phase = Phase::Staging;
        on(&FlashEvent::Phase(phase.clone()));
        let value = client
            .read_did(did::STAGING_AREA)
            .await
            .map_err(uds(&phase))?;
        let staging = StagingRecord::decode(&value).map_err(|source| FlasherError::Uds {
            phase: phase.name(),
            source: ClientError::Malformed { sid: 0x22, source },
        })?;
        on(&FlashEvent::Staging(staging.clone()));
        let size = u32::try_from(image.len())
            .ok()
            .filter(|&n| n <= staging.size && n > 0)
            .ok_or(FlasherError::TooLarge {
                size: image.len(),
                capacity: staging.size,
            })?;

        let sector = staging.erase_sector.max(1);
        let erased = MemoryRange {
            address: staging.address,
            size: size
                .div_ceil(sector)
                .saturating_mul(sector)
                .min(staging.size),
        };
        phase = Phase::Erase { range: erased };
        on(&FlashEvent::Phase(phase.clone()));
        let status = client
            .routine(
                routine_control::START,
                routine::ERASE_MEMORY,
                &codec::encode_memory(erased),
            )
            .await
            .map_err(uds(&phase))?;
        if status.first() != Some(&0x00) {
            return Err(FlasherError::EraseFailed { status });
        }

        let range = MemoryRange {
            address: staging.address,
            size,
        };
        phase = Phase::Download { range };
        on(&FlashEvent::Phase(phase.clone()));
        let max_block_len = client.request_download(range).await.map_err(uds(&phase))?;
        let mut block_data = max_block_len.saturating_sub(2);
        if let Some(cap) = self.config.max_block_data {
            block_data = block_data.min(cap);
        }
        if block_data == 0 {
            return Err(FlasherError::BlockTooSmall { max: max_block_len });
        }
        let blocks = size.div_ceil(block_data);

        phase = Phase::Transfer { blocks, block_data };
        on(&FlashEvent::Phase(phase.clone()));
        let mut seq = 1u8;
        let mut sent = 0u64;
        for (i, chunk) in image.chunks(block_data as usize).enumerate() {
            client
                .transfer_data(seq, chunk)
                .await
                .map_err(uds(&phase))?;
            sent += chunk.len() as u64;
            on(&FlashEvent::Block {
                n: i as u32 + 1,
                total: blocks,
                bytes: sent,
            });
            seq = seq.wrapping_add(1);
        }

        phase = Phase::TransferExit;
        on(&FlashEvent::Phase(phase.clone()));
        client.transfer_exit().await.map_err(uds(&phase))?;

        phase = Phase::CheckMemory;
        on(&FlashEvent::Phase(phase.clone()));
        let digest = Sha256::digest(image);
        let status = client
            .routine(routine_control::START, routine::CHECK_MEMORY, &digest)
            .await
            .map_err(uds(&phase))?;
        if status != [0x00] {
            return Err(FlasherError::MemoryCheckFailed { status });
        }

        phase = Phase::CheckDependencies {
            permanent: self.config.permanent,
        };
        on(&FlashEvent::Phase(phase.clone()));
        // From the next request on, the ECU may install the image at any boot: note where its
        // boot counter stands (an update agent that restarts tells its own rollback by it).
        let boot_count = self.boot_count(client).await;
        if let Some(gate) = &self.install_gate {
            (gate.0)().map_err(|reason| FlasherError::Withheld { reason })?;
        }
        on(&FlashEvent::Requesting { boot_count });
        let record: &[u8] = if self.config.permanent { &[0x01] } else { &[] };
        let status = client
            .routine(
                routine_control::START,
                routine::CHECK_PROGRAMMING_DEPENDENCIES,
                record,
            )
            .await
            .map_err(uds(&phase))?;
        match status[..] {
            [0x00] => {}
            [0x01, code] => {
                return Err(FlasherError::CheckFailed {
                    code,
                    check: check_name(code),
                });
            }
            _ => return Err(FlasherError::CheckStatus { status }),
        }
        let elapsed = start.elapsed();
        on(&FlashEvent::Programmed {
            bytes: u64::from(size),
            elapsed,
        });
        Ok(Programmed {
            staging,
            erased,
            max_block_len,
            block_data,
            blocks,
            elapsed,
        })
    }

    /// `10 02`. An ECU that answers but is not ready yet — just after a boot: `0x21`
    /// busyRepeatRequest, `0x22` conditionsNotCorrect, or responsePending with no final
    /// answer — is asked again (backoff from [`FlasherConfig::poll_initial`]) for up to
    /// [`FlasherConfig::boot_timeout`], within the same attempt.
    async fn enter_programming<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        on: &mut F,
    ) -> Result<(), ClientError> {
        let start = Instant::now();
        let mut delay = self.config.poll_initial;
        loop {
            let e = match client.session(Session::Programming).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let nrc = match &e {
                ClientError::Negative { nrc, .. } if matches!(nrc, 0x21 | 0x22) => *nrc,
                ClientError::Timeout { pending, .. } if *pending > 0 => 0x78,
                _ => return Err(e),
            };
            if start.elapsed() >= self.config.boot_timeout {
                return Err(e);
            }
            on(&FlashEvent::NotReady { sid: 0x10, nrc });
            client.idle(delay).await?;
            delay = (delay * 2).min(self.config.poll_max);
        }
    }

    /// Reset the ECU and wait until the new image (`version`) is confirmed or gone.
    pub async fn activate<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        version: Version,
        on: &mut F,
    ) -> Result<Outcome, FlasherError> {
        // An ECU may answer for a moment before it resets: only a new boot counts.
        let boots = self.boot_count(client).await;
        self.reset(client, Phase::Reset, on).await?;
        self.conclude(client, version, boots, on).await
    }

    /// Wait, without a reset first, until `version` is confirmed or gone (an update agent
    /// that restarted while the new image was on probation).
    pub async fn await_outcome<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        version: Version,
        on: &mut F,
    ) -> Result<Outcome, FlasherError> {
        self.conclude(client, version, None, on).await
    }

    /// Settle on an outcome; an image still on probation after the confirm timeout gets the
    /// configured revert resets.
    async fn conclude<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        version: Version,
        mut boots: Option<u32>,
        on: &mut F,
    ) -> Result<Outcome, FlasherError> {
        let mut resets_left = self.config.revert_resets;
        loop {
            on(&FlashEvent::Phase(Phase::Confirm { version }));
            if let Some(outcome) = self.settle(client, version, boots, on).await? {
                on(&FlashEvent::Done(outcome.clone()));
                return Ok(outcome);
            }
            if resets_left == 0 {
                return Err(FlasherError::Unconfirmed {
                    version,
                    waited: self.config.confirm_timeout,
                });
            }
            resets_left -= 1;
            boots = self.boot_count(client).await;
            self.reset(client, Phase::Revert, on).await?;
        }
    }

    /// The boot counter of 0xFD00, if the ECU tells.
    async fn boot_count<T: Transport>(&self, client: &mut UdsClient<T>) -> Option<u32> {
        let value = client.read_did(did::BOOT_STATUS).await.ok()?;
        BootStatusRecord::decode(&value).ok().map(|s| s.boot_count)
    }

    /// `11 01`, then poll TesterPresent until the ECU answers.
    async fn reset<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        phase: Phase,
        on: &mut F,
    ) -> Result<(), FlasherError> {
        on(&FlashEvent::Phase(phase.clone()));
        let start = Instant::now();
        match client.ecu_reset(0x01).await {
            // The answer may be lost in the reset; the polls tell.
            Ok(()) | Err(ClientError::Timeout { .. }) => {}
            Err(e) => return Err(uds(&phase)(e)),
        }
        let phase = Phase::Reboot;
        on(&FlashEvent::Phase(phase.clone()));
        let mut delay = self.config.poll_initial;
        loop {
            match client
                .request_within(&[0x3E, 0x00], self.config.poll_wait)
                .await
            {
                // Any answer, even a refusal, means the firmware runs diagnostics again.
                Ok(_) | Err(ClientError::Negative { .. }) => break,
                Err(ClientError::Timeout { .. }) => {}
                Err(ClientError::Transport(e)) => {
                    tracing::debug!("{phase}: {e}; reconnecting");
                    if let Err(e) = client.transport_mut().reconnect().await {
                        tracing::debug!("{phase}: reconnect: {e}");
                    }
                }
                Err(e) => return Err(uds(&phase)(e)),
            }
            if start.elapsed() >= self.config.boot_timeout {
                return Err(FlasherError::NoAnswer {
                    phase: phase.name(),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.poll_max);
        }
        on(&FlashEvent::Answering {
            after: start.elapsed(),
        });
        Ok(())
    }

    /// Poll 0xFD00 until `version` is confirmed (`Some(Committed)`), another image runs
    /// (`Some(RolledBack)`), or `version` is still on probation after the confirm timeout
    /// (`None`). Silence (the ECU rebooting again) is waited out up to the boot timeout, and
    /// so is a status from before the reset (boot counter still `boots_before`).
    async fn settle<T: Transport, F: FnMut(&FlashEvent) + Send>(
        &self,
        client: &mut UdsClient<T>,
        version: Version,
        boots_before: Option<u32>,
        on: &mut F,
    ) -> Result<Option<Outcome>, FlasherError> {
        let phase = Phase::Confirm { version };
        let start = Instant::now();
        // Since when the ECU has not shown a new boot (silent, or still the old boot).
        let mut waiting_since: Option<Instant> = None;
        let mut last: Option<BootStatusRecord> = None;
        let mut delay = self.config.poll_initial;
        loop {
            match self.poll_boot_status(client, &phase).await? {
                Some(status) if Some(status.boot_count) != boots_before => {
                    waiting_since = None;
                    if last.as_ref() != Some(&status) {
                        on(&FlashEvent::BootStatus(status.clone()));
                        last = Some(status.clone());
                    }
                    if status.version != Some(version) {
                        let reason = client
                            .read_did(did::LAST_BOOT_REASON)
                            .await
                            .map_err(uds(&phase))?;
                        let mut reason = String::from_utf8_lossy(&reason).into_owned();
                        if reason.is_empty() {
                            // The ECU's last boot was a normal one (the revert happened in an
                            // earlier boot): say what is seen, never an empty reason.
                            reason = format!(
                                "{} runs instead of {version} (last boot: {})",
                                status
                                    .version
                                    .map_or_else(|| "no image".to_string(), |v| v.to_string()),
                                boot_outcome_name(status.outcome)
                            );
                        }
                        return Ok(Some(Outcome::RolledBack {
                            running: status.version,
                            boot_outcome: status.outcome,
                            reason,
                        }));
                    }
                    if status.confirmed {
                        return Ok(Some(Outcome::Committed {
                            version,
                            slot: status.slot,
                        }));
                    }
                    if start.elapsed() >= self.config.confirm_timeout {
                        return Ok(None);
                    }
                }
                _ => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.config.boot_timeout {
                        return Err(FlasherError::NoAnswer {
                            phase: phase.name(),
                            waited: since.elapsed(),
                        });
                    }
                }
            }
            client.idle(delay).await.map_err(uds(&phase))?;
            delay = (delay * 2).min(self.config.poll_max);
        }
    }

    /// One `22 FD 00` with a short wait: `None` if the ECU is silent or the link dropped
    /// (then reconnect for the next poll).
    async fn poll_boot_status<T: Transport>(
        &self,
        client: &mut UdsClient<T>,
        phase: &Phase,
    ) -> Result<Option<BootStatusRecord>, FlasherError> {
        let [hi, lo] = did::BOOT_STATUS.to_be_bytes();
        match client
            .request_within(&[0x22, hi, lo], self.config.poll_wait)
            .await
        {
            Ok(r) => r
                .strip_prefix(&[0x62, hi, lo])
                .and_then(|v| BootStatusRecord::decode(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    uds(phase)(ClientError::Unexpected {
                        sid: 0x22,
                        response: crate::uds_client::hex(&r),
                        why: "boot status record",
                    })
                }),
            Err(ClientError::Timeout { .. }) => Ok(None),
            Err(ClientError::Transport(e)) => {
                tracing::debug!("{phase}: {e}; reconnecting");
                if let Err(e) = client.transport_mut().reconnect().await {
                    tracing::debug!("{phase}: reconnect: {e}");
                }
                Ok(None)
            }
            Err(e) => Err(uds(phase)(e)),
        }
    }
}
