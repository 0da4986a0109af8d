//! The ECU: power rail, bootloader, running firmware, virtual clock and event stream.
//!
//! Time is simulated: it advances by the bootloader's fixed start-up cost, by every flash
//! operation's busy time, and by [`Ecu::advance`]. Nothing here reads a wall clock.
//!
//! Any flash operation can lose power (a cut armed in the flash model). The ECU then turns
//! off (`Err(EcuError::PowerLost)`, event [`EventKind::PowerLost`]) and stays off until
//! [`Ecu::power_on`], which runs the bootloader again.

use std::sync::Arc;

use crate::boot::{
    self, BootConfig, BootDecision, BootError, Bootloader, Layout, Sink, Slot, SwapType, Trailer,
    UpdateError, Updater,
};
use crate::dtc::{Dtc, DtcMemory};
use crate::event::{Event, EventKind, RevertReason};
use crate::firmware::{self, Action};
use crate::flash::{EventCut, Flash, FlashError, FlashStats, OpContext, SimFlash};
use crate::image::{self, ImageInfo, Version};

/// Static description of an ECU.
#[derive(Clone, Debug)]
pub struct EcuConfig {
    pub layout: Layout,
    pub boot: BootConfig,
    /// Bootloader start-up time before it touches the flash, µs.
    pub boot_overhead_us: u64,
    /// The image decryption key (MCUboot's `bootutil_enc_key`: `--enc-key`, scenario
    /// `ecu.enc_key`), for the bootloader to unwrap an encrypted image's AES key with
    /// ([`image::image_key`]) when it installs it. `None`: the ECU decrypts nothing.
    pub enc_key: Option<image::EncKey>,
}

impl EcuConfig {
    pub fn new(layout: Layout, boot: BootConfig) -> Self {
        EcuConfig {
            layout,
            boot,
            boot_overhead_us: 20_000,
            enc_key: None,
        }
    }

    /// The same configuration with the image decryption key `key`.
    pub fn with_enc_key(mut self, key: Option<image::EncKey>) -> Self {
        self.enc_key = key;
        self
    }
}

/// Errors of ECU operations.
#[derive(Debug, thiserror::Error)]
pub enum EcuError {
    #[error("power lost at flash operation {op}")]
    PowerLost { op: u64 },
    #[error("the ecu is powered off")]
    PoweredOff,
    #[error("no firmware is running")]
    NotRunning,
    #[error(transparent)]
    Update(UpdateError),
    #[error(transparent)]
    Boot(BootError),
    #[error(transparent)]
    Flash(FlashError),
    #[error(transparent)]
    Layout(#[from] crate::boot::LayoutError),
}

/// The firmware that runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub slot: Slot,
    pub image: ImageInfo,
    pub test: bool,
    pub attempt: u8,
    pub booted_at_us: u64,
    pub confirmed: bool,
}

/// What an observer (a debugger, a test, the dashboard) sees of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    /// Version from the header, if a header parses.
    pub version: Option<Version>,
    /// `None` if the image verifies, else why not.
    pub invalid: Option<String>,
    pub trailer: Trailer,
}

/// Observer's view of the ECU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcuStatus {
    pub powered: bool,
    pub running: Option<Running>,
    pub boot_count: u64,
    pub stored_counter: u32,
    pub slots: [SlotStatus; 2],
    pub last_decision: Option<BootDecision>,
    pub last_boot: Option<BootOutcome>,
}

/// The image bytes a boot started: the SHA-256 of the slot's first `total_size` bytes as the
/// bootloader left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootedBytes {
    pub boot: u64,
    pub slot: Slot,
    pub sha256: [u8; 32],
}

/// How the last boot went, as the diagnostics report it (DID 0xFD00 / 0xFD04).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// The confirmed image booted; nothing was installed.
    Normal,
    /// A test image booted on probation (attempt n).
    Test { attempt: u8 },
    /// A permanent upgrade was installed and booted.
    Upgraded,
    /// The test image was taken out and the previous image booted.
    Reverted { reason: RevertReason },
    /// A requested image was refused; the running image booted.
    Rejected { reason: String },
    /// Nothing bootable.
    NoImage,
}

impl BootOutcome {
    /// The code in DID 0xFD00.
    pub fn code(&self) -> u8 {
        match self {
            BootOutcome::Normal => 0x01,
            BootOutcome::Test { .. } => 0x02,
            BootOutcome::Upgraded => 0x03,
            BootOutcome::Reverted { .. } => 0x04,
            BootOutcome::Rejected { .. } => 0x05,
            BootOutcome::NoImage => 0x06,
        }
    }

    /// A human-readable reason (DID 0xFD04); empty for a normal boot.
    pub fn reason(&self) -> String {
        match self {
            BootOutcome::Normal | BootOutcome::Upgraded => String::new(),
            BootOutcome::Test { attempt } => format!("test boot, attempt {attempt}"),
            BootOutcome::Reverted { reason } => format!("reverted: {reason}"),
            BootOutcome::Rejected { reason } => format!("rejected: {reason}"),
            BootOutcome::NoImage => "no bootable image".into(),
        }
    }
}

/// A simulated ECU. Cheap to clone with [`SimFlash`] (copy-on-write sectors).
#[derive(Clone, Debug)]
pub struct Ecu<F: Flash = SimFlash> {
    config: Arc<EcuConfig>,
    flash: F,
    now_us: u64,
    busy_seen: u64,
    powered: bool,
    running: Option<Running>,
    boot_count: u64,
    last_decision: Option<BootDecision>,
    last_boot: Option<BootOutcome>,
    /// SHA-256 of the bytes each boot started, read from flash at that moment (observers check
    /// them against the images they know).
    booted: Vec<BootedBytes>,
    dtcs: DtcMemory,
    events: Vec<Event>,
    /// Power cuts waiting for a boot's event (see [`EventCut`]).
    event_cuts: Vec<EventCut>,
}

/// Write a factory image: erase every area, program `image` into the primary slot with a
/// confirmed trailer. Used before an ECU first powers on.
pub fn provision<F: Flash>(
    flash: &mut F,
    layout: &Layout,
    image: &[u8],
) -> Result<(), UpdateError> {
    for r in layout
        .journal
        .iter()
        .chain([&layout.counter])
        .chain(layout.scratch.as_ref())
    {
        flash.erase(r.offset, r.size)?;
    }
    for slot in [Slot::Primary, Slot::Secondary] {
        let r = &layout.slot(slot).region;
        flash.erase(r.offset, r.size)?;
    }
    let area = layout.slot(Slot::Primary);
    if image.len() > area.image_capacity() as usize {
        return Err(UpdateError::OutOfSlot {
            offset: 0,
            len: image.len(),
            capacity: area.image_capacity(),
        });
    }
    let padded = flash.geometry().align_up(image.len());
    let mut buf = image.to_vec();
    buf.resize(padded, layout.erased);
    flash.write(area.image_offset(), &buf)?;
    boot::trailers::write_complete(
        flash,
        layout,
        Slot::Primary,
        boot::trailers::Complete {
            swap_type: SwapType::Perm,
            swap_size: None,
            image_ok: true,
            copy_done: true,
        },
    )?;
    Ok(())
}

impl Ecu<SimFlash> {
    /// A powered-on ECU on a fresh simulated flash (`seed` for its random tears), laid out for
    /// `mode`, with `factory` installed in the primary slot and confirmed.
    pub fn factory(
        geometry: crate::flash::Geometry,
        mode: boot::BootMode,
        factory: &[u8],
        boot: BootConfig,
        seed: u64,
    ) -> Result<Self, EcuError> {
        Self::factory_with_enc_key(geometry, mode, factory, boot, None, seed)
    }

    /// [`Ecu::factory`] with an image decryption key ([`EcuConfig::enc_key`]).
    pub fn factory_with_enc_key(
        geometry: crate::flash::Geometry,
        mode: boot::BootMode,
        factory: &[u8],
        boot: BootConfig,
        enc_key: Option<image::EncKey>,
        seed: u64,
    ) -> Result<Self, EcuError> {
        let layout = Layout::auto(&geometry, mode)?;
        let mut flash = SimFlash::new(geometry, seed);
        provision(&mut flash, &layout, factory).map_err(EcuError::Update)?;
        let config = EcuConfig::new(layout, boot).with_enc_key(enc_key);
        let mut ecu = Ecu::new(config, flash);
        ecu.power_on()?;
        Ok(ecu)
    }
}

impl Ecu<SimFlash> {
    /// Write the state that decides this ECU's future into `f`, its times relative to
    /// `now_us` (see [`crate::fingerprint`]): the flash ([`SimFlash::fingerprint`]), power,
    /// its clock and the flash busy time it has not accounted yet, the running firmware
    /// (its boot time relative), boot counter, last decision and outcome, the boots' bytes and
    /// the events not drained yet (their times relative, their operation index relative to
    /// the flash's count), DTC memory. Left out: the configuration (the same for the states a
    /// caller compares). An event cut waiting has no fingerprint.
    pub fn fingerprint(
        &self,
        f: &mut crate::fingerprint::Fingerprint,
        now_us: u64,
    ) -> Result<(), crate::fingerprint::Unfingerprintable> {
        if !self.event_cuts.is_empty() {
            return Err(crate::fingerprint::Unfingerprintable(
                "an event cut waits in the ecu",
            ));
        }
        self.flash.fingerprint(f)?;
        f.tag("ecu");
        f.rel(self.now_us, now_us);
        f.u64(self.flash.busy_us().wrapping_sub(self.busy_seen));
        f.bool(self.powered);
        match &self.running {
            None => f.tag("off"),
            Some(r) => {
                f.debug(&(r.slot, &r.image, r.test, r.attempt, r.confirmed));
                f.rel(r.booted_at_us, now_us);
            }
        }
        f.u64(self.boot_count);
        f.debug(&self.last_decision);
        f.debug(&self.last_boot);
        f.debug(&self.booted);
        f.debug(&self.dtcs);
        f.u64(self.events.len() as u64);
        let ops = self.flash.ops();
        for e in &self.events {
            f.debug(&e.kind);
            f.rel(e.at_us, now_us);
            f.u64(ops.wrapping_sub(e.flash_ops));
        }
        Ok(())
    }
}

impl<F: Flash> Ecu<F> {
    /// An ECU, powered off, around `flash` (provisioned or not).
    pub fn new(config: EcuConfig, flash: F) -> Self {
        let busy_seen = flash.busy_us();
        Ecu {
            config: Arc::new(config),
            flash,
            now_us: 0,
            busy_seen,
            powered: false,
            running: None,
            boot_count: 0,
            last_decision: None,
            last_boot: None,
            booted: Vec::new(),
            dtcs: DtcMemory::default(),
            events: Vec::new(),
            event_cuts: Vec::new(),
        }
    }

    pub fn config(&self) -> &EcuConfig {
        &self.config
    }
    pub fn flash(&self) -> &F {
        &self.flash
    }
    /// Direct access for fault injection (arming cuts, bit rot). Time is not accounted.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }
    pub fn now_us(&self) -> u64 {
        self.now_us
    }
    pub fn is_powered(&self) -> bool {
        self.powered
    }
    pub fn running(&self) -> Option<&Running> {
        self.running.as_ref()
    }
    pub fn boot_count(&self) -> u64 {
        self.boot_count
    }
    pub fn last_decision(&self) -> Option<&BootDecision> {
        self.last_decision.as_ref()
    }
    pub fn last_boot(&self) -> Option<&BootOutcome> {
        self.last_boot.as_ref()
    }
    pub fn dtcs(&self) -> &DtcMemory {
        &self.dtcs
    }
    /// DTC memory, for the diagnostic server (record, clear, recording on/off).
    pub fn dtcs_mut(&mut self) -> &mut DtcMemory {
        &mut self.dtcs
    }
    /// When the running firmware will next act on its own (confirm, crash, hang), if ever.
    pub fn next_action_at(&self) -> Option<u64> {
        let r = self.running.as_ref()?;
        firmware::next_action(r.image.behaviour, r.booted_at_us, r.confirmed).map(|(at, _)| at)
    }
    /// Whether the running firmware answers diagnostics.
    pub fn answers_diagnostics(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| firmware::answers_diagnostics(r.image.behaviour))
    }

    /// Arm a power cut at the flash operation that follows the first boot event `cut`
    /// matches (events of the firmware's side do not arm it).
    pub fn add_event_cut(&mut self, cut: EventCut) {
        self.event_cuts.push(cut);
    }
    /// Take out the waiting event cut named `id`; whether it was still waiting.
    pub fn remove_event_cut(&mut self, id: u64) -> bool {
        let before = self.event_cuts.len();
        self.event_cuts.retain(|c| c.id != id);
        self.event_cuts.len() != before
    }
    /// The event cuts still waiting for their event.
    pub fn event_cuts(&self) -> &[EventCut] {
        &self.event_cuts
    }

    /// What each boot since the last call started, byte for byte (as a SHA-256).
    pub fn drain_booted(&mut self) -> Vec<BootedBytes> {
        std::mem::take(&mut self.booted)
    }

    /// Take the events since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Record an event at the current time (the diagnostic server reports through here too).
    pub(crate) fn emit(&mut self, kind: EventKind) {
        let event = Event {
            at_us: self.now_us,
            flash_ops: self.flash.ops(),
            kind,
        };
        self.push(event);
    }

    /// Record a DTC (if recording is on) with its event.
    pub(crate) fn record_dtc(&mut self, dtc: Dtc) {
        if self.dtcs.record(dtc) {
            self.emit(EventKind::DtcRecorded { code: dtc.code() });
        }
    }

    fn push(&mut self, event: Event) {
        let dtc = Dtc::for_event(&event.kind);
        let at = (event.at_us, event.flash_ops);
        self.events.push(event);
        if let Some(dtc) = dtc
            && self.dtcs.record(dtc)
        {
            self.events.push(Event {
                at_us: at.0,
                flash_ops: at.1,
                kind: EventKind::DtcRecorded { code: dtc.code() },
            });
        }
    }

    fn sync_clock(&mut self) {
        let busy = self.flash.busy_us();
        self.now_us += busy.saturating_sub(self.busy_seen);
        self.busy_seen = busy;
    }

    /// Turn a flash failure into the ECU's reaction: a power loss turns it off.
    fn fail(&mut self, e: FlashError) -> EcuError {
        self.sync_clock();
        match e {
            FlashError::PowerLost { op } => {
                let fired = self.flash.take_fired();
                self.powered = false;
                self.running = None;
                self.flash.set_powered(false);
                if let Some(cut) = fired {
                    self.emit(EventKind::PowerLost {
                        op: cut.op.index,
                        variant: cut.variant,
                    });
                } else {
                    self.emit(EventKind::PowerOff);
                }
                EcuError::PowerLost { op }
            }
            other => EcuError::Flash(other),
        }
    }

    /// Apply power; the bootloader runs.
    pub fn power_on(&mut self) -> Result<(), EcuError> {
        if self.powered {
            return Ok(());
        }
        self.powered = true;
        self.flash.set_powered(true);
        self.emit(EventKind::PowerOn);
        self.boot()
    }

    /// Remove power now (not inside a flash operation).
    pub fn power_off(&mut self) {
        if !self.powered {
            return;
        }
        self.powered = false;
        self.running = None;
        self.flash.set_powered(false);
        self.emit(EventKind::PowerOff);
    }

    /// Power off, then on.
    pub fn power_cycle(&mut self) -> Result<(), EcuError> {
        self.power_off();
        self.power_on()
    }

    /// Reset (watchdog, ECUReset service): the bootloader runs again, power stays on.
    pub fn reset(&mut self) -> Result<(), EcuError> {
        if !self.powered {
            return Err(EcuError::PoweredOff);
        }
        self.running = None;
        self.boot()
    }

    fn boot(&mut self) -> Result<(), EcuError> {
        self.boot_count += 1;
        self.emit(EventKind::BootStarted {
            boot: self.boot_count,
        });
        self.now_us += self.config.boot_overhead_us;
        let config = Arc::clone(&self.config);
        let before = self.flash.stats();
        let start_busy = self.flash.busy_us();
        let start_now = self.now_us;
        let mut sink = Sink::new(self.boot_count, std::mem::take(&mut self.event_cuts));
        self.flash.set_context(OpContext::Boot(self.boot_count));
        let result = Bootloader::new(&config.layout, &config.boot)
            .with_enc_key(config.enc_key.as_ref())
            .boot(&mut self.flash, &mut sink);
        self.flash.set_context(OpContext::Firmware);
        self.event_cuts = std::mem::take(&mut sink.cuts);
        self.dtcs.new_cycle();
        let mut outcome = None;
        for (busy, ops, kind) in sink.events {
            match &kind {
                EventKind::RevertStarted { reason, .. } => {
                    outcome = Some(BootOutcome::Reverted {
                        reason: reason.clone(),
                    })
                }
                // The boot that completes a revert interrupted by a power cut reports it as
                // a revert (DID 0xFD00, 0xFD04), like the boot that started it would have.
                EventKind::SwapResumed {
                    kind: SwapType::Revert,
                    ..
                } if outcome.is_none() => {
                    outcome = Some(BootOutcome::Reverted {
                        reason: RevertReason::Resumed,
                    })
                }
                EventKind::ImageRejected { reason, .. } if outcome.is_none() => {
                    outcome = Some(BootOutcome::Rejected {
                        reason: reason.clone(),
                    })
                }
                EventKind::SwapFinished {
                    kind: SwapType::Perm,
                    ..
                } if outcome.is_none() => outcome = Some(BootOutcome::Upgraded),
                _ => {}
            }
            self.push(Event {
                at_us: start_now + busy.saturating_sub(start_busy),
                flash_ops: ops,
                kind,
            });
        }
        let decision = match result {
            Ok(d) => d,
            Err(BootError::Flash(e)) => return Err(self.fail(e)),
            Err(e) => return Err(EcuError::Boot(e)),
        };
        self.sync_clock();
        self.emit_activity(before);
        self.last_boot = Some(match (&decision, outcome) {
            (BootDecision::NoBootableImage { .. }, _) => BootOutcome::NoImage,
            (_, Some(o)) => o,
            (BootDecision::Boot(b), None) if b.test => BootOutcome::Test { attempt: b.attempt },
            (BootDecision::Boot(_), None) => BootOutcome::Normal,
        });
        match &decision {
            BootDecision::Boot(b) => {
                let area = match b.slot {
                    Slot::Primary => &self.config.layout.primary,
                    Slot::Secondary => &self.config.layout.secondary,
                };
                let mut bytes = vec![0; b.image.total_size];
                if self.flash.read(area.image_offset(), &mut bytes).is_ok() {
                    use sha2::Digest;
                    self.booted.push(BootedBytes {
                        boot: self.boot_count,
                        slot: b.slot,
                        sha256: sha2::Sha256::digest(&bytes).into(),
                    });
                }
                self.emit(EventKind::Booted {
                    slot: b.slot,
                    version: b.image.header.version,
                    test: b.test,
                    attempt: b.attempt,
                });
                self.running = Some(Running {
                    slot: b.slot,
                    image: b.image.clone(),
                    test: b.test,
                    attempt: b.attempt,
                    booted_at_us: self.now_us,
                    confirmed: !b.test,
                });
            }
            BootDecision::NoBootableImage { reasons } => {
                self.emit(EventKind::NoBootableImage {
                    reasons: reasons.clone(),
                });
                self.running = None;
            }
        }
        self.last_decision = Some(decision);
        Ok(())
    }

    fn emit_activity(&mut self, before: FlashStats) {
        let now = self.flash.stats();
        let (erases, writes) = (now.erases - before.erases, now.writes - before.writes);
        if erases + writes > 0 {
            self.emit(EventKind::FlashActivity {
                erases,
                writes,
                bytes_written: now.bytes_written - before.bytes_written,
            });
        }
    }

    /// Let simulated time pass until `at_us` (nothing happens if that is not in the future).
    pub fn advance_to(&mut self, at_us: u64) -> Result<(), EcuError> {
        self.advance(at_us.saturating_sub(self.now_us))
    }

    /// Let `dt_us` of simulated time pass: the firmware confirms, crashes or hangs as its
    /// behaviour says; resets happen on the way.
    pub fn advance(&mut self, dt_us: u64) -> Result<(), EcuError> {
        let until = self.now_us + dt_us;
        loop {
            if !self.powered {
                self.now_us = self.now_us.max(until);
                return Ok(());
            }
            let next = self.running.as_ref().and_then(|r| {
                firmware::next_action(r.image.behaviour, r.booted_at_us, r.confirmed)
            });
            match next {
                Some((at, action)) if at <= until => {
                    self.now_us = self.now_us.max(at);
                    self.act(action)?;
                }
                _ => {
                    self.now_us = self.now_us.max(until);
                    return Ok(());
                }
            }
        }
    }

    fn act(&mut self, action: Action) -> Result<(), EcuError> {
        let Some(running) = self.running.clone() else {
            return Ok(());
        };
        let version = running.image.header.version;
        match action {
            Action::Confirm => {
                let confirmed = self.with_updater(|u| u.confirm());
                match confirmed {
                    Ok(newly) => {
                        if newly {
                            self.emit(EventKind::Confirmed {
                                slot: running.slot,
                                version,
                            });
                        }
                        if let Some(r) = self.running.as_mut() {
                            r.confirmed = true;
                        }
                        Ok(())
                    }
                    // A torn image_ok cannot be fixed by the firmware: it stays on probation.
                    Err(EcuError::Update(UpdateError::TrailerCorrupt { .. })) => {
                        if let Some(r) = self.running.as_mut() {
                            r.confirmed = true;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Action::Crash => {
                self.emit(EventKind::FirmwareCrashed { version });
                self.reset()
            }
            Action::WatchdogReset => {
                self.emit(EventKind::WatchdogReset { version });
                self.reset()
            }
        }
    }

    /// Run firmware-side update calls (see [`Updater`]) on the running ECU. Flash time is
    /// accounted and a power loss turns the ECU off.
    pub fn with_updater<R>(
        &mut self,
        f: impl FnOnce(&mut Updater<'_, F>) -> Result<R, UpdateError>,
    ) -> Result<R, EcuError> {
        if !self.powered {
            return Err(EcuError::PoweredOff);
        }
        let slot = self.running.as_ref().ok_or(EcuError::NotRunning)?.slot;
        let config = Arc::clone(&self.config);
        let result = f(&mut Updater::new(&mut self.flash, &config.layout, slot));
        self.sync_clock();
        match result {
            Ok(r) => Ok(r),
            Err(UpdateError::Flash(e)) => Err(self.fail(e)),
            Err(e) => Err(EcuError::Update(e)),
        }
    }

    /// Stage `image` in the staging slot (erase, write) and request it. The sequence a
    /// firmware update agent runs; each step can lose power.
    pub fn stage_update(&mut self, image: &[u8], permanent: bool) -> Result<(), EcuError> {
        let before = self.flash.stats();
        let slot = self.with_updater(|u| {
            u.erase_staging()?;
            Ok(u.staging_slot())
        })?;
        self.emit(EventKind::StagingErased { slot });
        const CHUNK: usize = 4096;
        for (i, chunk) in image.chunks(CHUNK).enumerate() {
            self.with_updater(|u| u.write((i * CHUNK) as u32, chunk))?;
        }
        self.with_updater(|u| u.mark_pending(permanent))?;
        self.emit_activity(before);
        self.emit(EventKind::UpgradeRequested { slot, permanent });
        Ok(())
    }

    /// What a debugger would see: both slots, trailers, counter, and the running firmware.
    /// Reads the flash with power forced on and restores the power state.
    pub fn status(&mut self) -> Result<EcuStatus, EcuError> {
        self.flash.set_powered(true);
        let result = self.read_status();
        self.flash.set_powered(self.powered);
        result.map_err(EcuError::Flash)
    }

    fn read_status(&self) -> Result<EcuStatus, FlashError> {
        let layout = &self.config.layout;
        let (stored, _) = boot::read_counter(&self.flash, layout)?;
        let slot = |slot| -> Result<SlotStatus, FlashError> {
            let bytes = boot::slot_bytes(&self.flash, layout, slot)?;
            let version = image::Header::parse(&bytes).ok().map(|h| h.version);
            let keys = &self.config.boot.keys;
            let enc_key = self.config.enc_key.as_ref();
            let invalid = boot::verify_image(&bytes, layout, keys, enc_key, 0, slot)
                .err()
                .map(|e| e.to_string());
            Ok(SlotStatus {
                slot,
                version,
                invalid,
                trailer: boot::trailers::read(&self.flash, layout, slot)?,
            })
        };
        Ok(EcuStatus {
            powered: self.powered,
            running: self.running.clone(),
            boot_count: self.boot_count,
            stored_counter: stored,
            slots: [slot(Slot::Primary)?, slot(Slot::Secondary)?],
            last_decision: self.last_decision.clone(),
            last_boot: self.last_boot.clone(),
        })
    }
}
