//! Drive a firmware update through an ECU while power cuts fire, and check that it never
//! bricks: the exhaustive tests, the benchmark and the demo share this.
//!
//! The driver behaves like a simple update agent in the field:
//!
//! 1. power on (the bootloader runs; a cut may fire in it);
//! 2. while the update is not *applied*: if the new image already runs, or the bootloader
//!    reverted it, it is applied; otherwise stage it again from scratch (erase, write, request)
//!    and reset;
//! 3. once applied: let the firmware run (it confirms, crashes or hangs as its behaviour says),
//!    power-cycle, and repeat until a power cycle and a run change nothing on the flash
//!    (*stable*).
//!
//! Whenever a cut fires the ECU turns off and the driver continues at 1, arming the next cut
//! of its [`CutPlan`]. At every boot it checks the invariant: the booted image verifies and is
//! exactly the old or the new image, never a mix. When stable it checks the end state.
//!
//! What each strategy promises (the end state checked after a single cut):
//!
//! | strategy | flow confirms, or permanent | flow never confirms, crashes or hangs |
//! |---|---|---|
//! | swap-scratch, swap-move, swap-offset, direct-xip | the new image, confirmed | the old image, confirmed (reverted) |
//! | overwrite | the new image | the new image: overwrite-only cannot revert; and once the copy has begun the old image never boots again |

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::boot::{self, BootConfig, BootDecision, BootMode, Layout, Slot, SwapState};
use crate::ecu::{Ecu, EcuConfig, EcuError, provision};
use crate::event::{Event, EventKind};
use crate::flash::{CutVariant, Flash, Geometry, SimFlash};
use crate::image::{
    self, AesKeySize, Behaviour, EncKey, EncryptOptions, ImageBuilder, KeyKind, Keyring, Version,
    dev_key, dev_private_key,
};

/// Simulated time the driver lets the firmware run before each power cycle.
pub const SETTLE_US: u64 = 2_000_000;
/// Give up (and report) after this many driver rounds.
const MAX_ROUNDS: usize = 200;

/// How the new image is requested and how it behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Test upgrade; the new image confirms itself.
    TestConfirm,
    /// Test upgrade; the new image never confirms → revert.
    TestNeverConfirm,
    /// Test upgrade; the new image crashes at boot → revert.
    TestCrash,
    /// Test upgrade; the new image hangs, the watchdog resets → revert.
    TestHang,
    /// Permanent upgrade.
    Permanent,
}

impl Flow {
    pub const ALL: [Flow; 5] = [
        Flow::TestConfirm,
        Flow::TestNeverConfirm,
        Flow::TestCrash,
        Flow::TestHang,
        Flow::Permanent,
    ];
    fn behaviour(self) -> Behaviour {
        match self {
            Flow::TestConfirm | Flow::Permanent => Behaviour::Healthy {
                confirm_after_ms: 300,
            },
            Flow::TestNeverConfirm => Behaviour::NeverConfirm,
            Flow::TestCrash => Behaviour::CrashOnBoot,
            Flow::TestHang => Behaviour::Hang { watchdog_ms: 500 },
        }
    }
    /// Which image runs at the end of a clean update.
    pub fn commits(self) -> bool {
        matches!(self, Flow::TestConfirm | Flow::Permanent)
    }
}

impl Setup {
    /// Whether the new image runs at the end: it confirms, or the strategy cannot revert.
    pub fn commits(&self) -> bool {
        self.flow.commits() || !self.mode.can_revert()
    }
}

/// An update to run: old and new signed images on a given ECU.
#[derive(Clone, Debug)]
pub struct Setup {
    pub mode: BootMode,
    pub flow: Flow,
    pub max_boot_attempts: u8,
    /// The old and the new image as they run (plaintext).
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    /// What the update agent stages: `new`, or `new` encrypted ([`Setup::new_encrypted`]).
    pub staged: Vec<u8>,
    pub old_version: Version,
    pub new_version: Version,
    /// Provisioned ECU, powered off, before the update.
    pub ecu: Ecu,
}

impl Setup {
    /// Build old (1.0.0, counter 1) and new (2.0.0, counter 2) images of about `image_size`
    /// bytes signed with the dev key "oem", and an ECU with `geometry` provisioned with the old.
    pub fn new(
        geometry: Geometry,
        mode: BootMode,
        flow: Flow,
        max_boot_attempts: u8,
        image_size: usize,
        seed: u64,
    ) -> Result<Self, String> {
        Self::build(
            geometry,
            mode,
            flow,
            max_boot_attempts,
            image_size,
            seed,
            None,
        )
    }

    /// [`Setup::new`] with encrypted images, for the ECU's decryption key [`Setup::enc_key`]
    /// (X25519): the new image (AES-256) is staged encrypted; the old one (AES-128) runs as an
    /// image installed from an encrypted update does (plaintext with its encryption flag and
    /// ENC TLV), so a swap stores it encrypted in the secondary slot and a revert decrypts it.
    pub fn new_encrypted(
        geometry: Geometry,
        mode: BootMode,
        flow: Flow,
        max_boot_attempts: u8,
        image_size: usize,
        seed: u64,
    ) -> Result<Self, String> {
        let key = Self::enc_key();
        Self::build(
            geometry,
            mode,
            flow,
            max_boot_attempts,
            image_size,
            seed,
            Some(key),
        )
    }

    /// The decryption key of [`Setup::new_encrypted`]: the X25519 dev key "oem-enc".
    pub fn enc_key() -> EncKey {
        EncKey::from_private(dev_private_key(KeyKind::X25519, "oem-enc"))
            .expect("an x25519 key decrypts")
    }

    fn build(
        geometry: Geometry,
        mode: BootMode,
        flow: Flow,
        max_boot_attempts: u8,
        image_size: usize,
        seed: u64,
        enc_key: Option<EncKey>,
    ) -> Result<Self, String> {
        let key = dev_key("oem");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut payload = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.r#gen()).collect() };
        let old_version = Version::new(1, 0, 0);
        let new_version = Version::new(2, 0, 0);
        let mut old = ImageBuilder::new(old_version, payload(image_size * 9 / 10))
            .security_counter(1)
            .behaviour(Behaviour::Healthy {
                confirm_after_ms: 300,
            });
        let mut new = ImageBuilder::new(new_version, payload(image_size))
            .security_counter(2)
            .behaviour(flow.behaviour());
        if enc_key.is_some() {
            old = old.encrypted(AesKeySize::Aes128);
            new = new.encrypted(AesKeySize::Aes256);
        }
        let (old, new) = (old.sign(&key), new.sign(&key));
        let (old, new, staged) = match &enc_key {
            None => (old, new.clone(), new),
            Some(k) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xE4C);
                let mut encrypt = |image: &[u8]| {
                    image::encrypt_image(image, &k.public(), EncryptOptions::default(), &mut rng)
                        .map_err(|e| e.to_string())
                };
                let old = image::decrypt_image(&encrypt(&old)?, k).map_err(|e| e.to_string())?;
                let staged = encrypt(&new)?;
                let new = image::decrypt_image(&staged, k).map_err(|e| e.to_string())?;
                (old, new, staged)
            }
        };
        let layout = Layout::auto(&geometry, mode).map_err(|e| e.to_string())?;
        let mut flash = SimFlash::new(geometry, seed);
        provision(&mut flash, &layout, &old).map_err(|e| e.to_string())?;
        let config = EcuConfig::new(
            layout,
            BootConfig {
                defect: None,
                max_boot_attempts,
                keys: Keyring::new().with_key(key.verifying_key()),
            },
        )
        .with_enc_key(enc_key);
        Ok(Setup {
            mode,
            flow,
            max_boot_attempts,
            old,
            new,
            staged,
            old_version,
            new_version,
            ecu: Ecu::new(config, flash),
        })
    }
}

/// Where cuts go.
#[derive(Clone, Debug)]
pub enum CutPlan {
    None,
    /// Cut at these absolute operation indices, in order (each armed after the previous fired).
    At(Vec<(u64, CutVariant)>),
    /// Up to `max` cuts, each at a random operation within `window` operations after the
    /// power came back, in a random variant.
    Random {
        rng: Box<ChaCha8Rng>,
        max: usize,
        window: u64,
    },
}

impl CutPlan {
    pub fn random(seed: u64, max: usize, window: u64) -> Self {
        CutPlan::Random {
            rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
            max,
            window,
        }
    }
    fn arm_next(&mut self, flash: &mut SimFlash, fired: usize) {
        match self {
            CutPlan::None => {}
            CutPlan::At(list) => {
                if let Some(&(op, variant)) = list.get(fired) {
                    flash.arm_cut(op, variant);
                }
            }
            CutPlan::Random { rng, max, window } => {
                if fired < *max {
                    let op = flash.ops() + rng.gen_range(0..*window);
                    let variant = CutVariant::ALL[rng.gen_range(0..3)];
                    flash.arm_cut(op, variant);
                }
            }
        }
    }
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened in one driven update.
#[derive(Clone, Debug)]
pub struct Report {
    pub final_version: Version,
    pub final_slot: Slot,
    /// Cuts that fired: operation index and variant.
    pub cuts: Vec<(u64, CutVariant)>,
    pub boots: u64,
    pub events: Vec<Event>,
    /// Flash operations performed by the run.
    pub ops: u64,
    /// Index of the run's first flash operation (the ECU's flash counts from provisioning on).
    pub first_op: u64,
    pub simulated_us: u64,
}

impl Report {
    pub fn reverted(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::RevertStarted { .. }))
    }
    /// Operation index of the first event matching `f` (the op just before it).
    pub fn op_of(&self, f: impl Fn(&EventKind) -> bool) -> Option<u64> {
        self.events
            .iter()
            .find(|e| f(&e.kind))
            .map(|e| e.flash_ops - 1)
    }
}

fn violation(msg: impl Into<String>) -> Violation {
    Violation(msg.into())
}

/// Drive the update of `setup` under `cuts`. The ECU is cloned, `setup` stays untouched.
pub fn run(setup: &Setup, mut cuts: CutPlan) -> Result<Report, Violation> {
    let mut ecu = setup.ecu.clone();
    let ops_at_start = ecu.flash().ops();
    let mut fired = 0;
    let mut events = Vec::new();
    let mut applied = false;
    let mut reverted = false;
    cuts.arm_next(ecu.flash_mut(), 0);
    let lost = |r: Result<(), EcuError>| -> Result<bool, Violation> {
        match r {
            Ok(()) => Ok(false),
            Err(EcuError::PowerLost { .. }) => Ok(true),
            Err(e) => Err(violation(format!("ecu error: {e}"))),
        }
    };
    for _ in 0..MAX_ROUNDS {
        if !ecu.is_powered() {
            let now_fired = count_cuts(&events);
            if now_fired > fired {
                fired = now_fired;
                cuts.arm_next(ecu.flash_mut(), fired);
            }
            let r = ecu.power_on();
            check_events(setup, &mut ecu, &mut events, &mut reverted)?;
            if lost(r)? {
                continue;
            }
        }
        if ecu.running().is_none() {
            return Err(violation("ecu powered but nothing runs"));
        }
        if !applied {
            let version = ecu.running().map(|r| r.image.header.version);
            if version == Some(setup.new_version) || reverted {
                applied = true;
                continue;
            }
            let r = ecu.stage_update(&setup.staged, setup.flow == Flow::Permanent);
            check_events(setup, &mut ecu, &mut events, &mut reverted)?;
            if lost(r)? {
                continue;
            }
            applied = true;
            let r = ecu.reset();
            check_events(setup, &mut ecu, &mut events, &mut reverted)?;
            lost(r)?;
            continue;
        }
        let before = ecu.flash().ops();
        let r = ecu.advance(SETTLE_US);
        check_events(setup, &mut ecu, &mut events, &mut reverted)?;
        if lost(r)? {
            continue;
        }
        let r = ecu.power_cycle();
        check_events(setup, &mut ecu, &mut events, &mut reverted)?;
        if lost(r)? {
            continue;
        }
        let r = ecu.advance(SETTLE_US);
        check_events(setup, &mut ecu, &mut events, &mut reverted)?;
        if lost(r)? {
            continue;
        }
        if ecu.flash().ops() == before {
            ecu.flash_mut().disarm();
            return finish(setup, ecu, events, ops_at_start);
        }
    }
    Err(violation(format!(
        "no stable state after {MAX_ROUNDS} rounds"
    )))
}

/// Check every boot since the last call (never bricked, only the old or the new version), and
/// that what runs now is byte for byte the old or the new image, never a mix.
fn check_events(
    setup: &Setup,
    ecu: &mut Ecu,
    events: &mut Vec<Event>,
    reverted: &mut bool,
) -> Result<(), Violation> {
    for e in ecu.drain_events() {
        match &e.kind {
            EventKind::NoBootableImage { .. } => {
                return Err(violation(format!("bricked: {}", e.kind)));
            }
            EventKind::RevertStarted { .. } => *reverted = true,
            EventKind::Booted { version, .. }
                if !setup.mode.can_revert()
                    && *version == setup.old_version
                    && events
                        .iter()
                        .any(|e| matches!(e.kind, EventKind::SwapStarted { .. })) =>
            {
                return Err(violation(
                    "the old image booted after the overwrite had begun",
                ));
            }
            EventKind::Booted { version, .. }
                if *version != setup.old_version && *version != setup.new_version =>
            {
                return Err(violation(format!("booted unknown version {version}")));
            }
            _ => {}
        }
        events.push(e);
    }
    if let Some(running) = ecu.running() {
        let expect = if running.image.header.version == setup.new_version {
            &setup.new
        } else if running.image.header.version == setup.old_version {
            &setup.old
        } else {
            return Err(violation(format!(
                "unknown version {} runs",
                running.image.header.version
            )));
        };
        let slot = running.slot;
        let offset = ecu.config().layout.slot(slot).image_offset();
        let mut bytes = vec![0; expect.len()];
        ecu.flash()
            .read(offset, &mut bytes)
            .map_err(|e| violation(e.to_string()))?;
        if bytes != expect[..] {
            return Err(violation(format!("{slot} runs a mixed image")));
        }
    }
    Ok(())
}

fn count_cuts(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::PowerLost { .. }))
        .count()
}

fn finish(
    setup: &Setup,
    mut ecu: Ecu,
    events: Vec<Event>,
    ops_at_start: u64,
) -> Result<Report, Violation> {
    let cuts = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::PowerLost { op, variant } => Some((op, variant)),
            _ => None,
        })
        .collect();
    let running = ecu
        .running()
        .cloned()
        .ok_or_else(|| violation("nothing runs at the end"))?;
    if running.test {
        return Err(violation("the final image is still on probation"));
    }
    let status = ecu.status().map_err(|e| violation(e.to_string()))?;
    let layout = &ecu.config().layout;
    let active = &status.slots[running.slot.index() as usize];
    let other = &status.slots[running.slot.other().index() as usize];
    if !active.trailer.is_confirmed() {
        return Err(violation(format!(
            "running {} slot is not confirmed: {:?}",
            running.slot, active.trailer
        )));
    }
    if other.trailer.is_pending() {
        return Err(violation(format!(
            "{} slot still requests an upgrade",
            running.slot.other()
        )));
    }
    if setup.mode != BootMode::DirectXip && running.slot != Slot::Primary {
        return Err(violation(format!(
            "{} runs from the secondary slot",
            setup.mode
        )));
    }
    if setup.mode.is_swap() {
        let state = boot::swap_state(ecu.flash(), layout).map_err(|e| violation(e.to_string()))?;
        if !matches!(state, SwapState::Idle { .. }) {
            return Err(violation(format!("swap journal not idle: {state:?}")));
        }
    }
    let expected_counter = if running.image.header.version == setup.new_version {
        2
    } else {
        1
    };
    if status.stored_counter != expected_counter {
        return Err(violation(format!(
            "stored security counter {} with {} running",
            status.stored_counter, running.image.header.version
        )));
    }
    if !matches!(status.last_decision, Some(BootDecision::Boot(_))) {
        return Err(violation("last boot decision was not a boot"));
    }
    Ok(Report {
        final_version: running.image.header.version,
        final_slot: running.slot,
        cuts,
        boots: ecu.boot_count(),
        events,
        ops: ecu.flash().ops() - ops_at_start,
        first_op: ops_at_start,
        simulated_us: ecu.now_us(),
    })
}

/// Result of sweeping every operation of an update.
#[derive(Clone, Debug, Default)]
pub struct SweepSummary {
    /// Operations of the clean update (cut points per variant).
    pub ops: u64,
    /// Runs done (ops × variants).
    pub points: u64,
    /// Cuts that fired where they were armed.
    pub fired: u64,
    pub failures: Vec<String>,
}

/// The final version a single cut at `op`/`variant` must produce, given the clean run.
/// `None` = either the old or the new image is right (a torn confirm).
pub fn expected_version(
    setup: &Setup,
    clean: &Report,
    op: u64,
    variant: CutVariant,
) -> Option<Version> {
    if !setup.commits() {
        return Some(setup.old_version);
    }
    if setup.flow == Flow::Permanent || !setup.mode.can_revert() {
        return Some(setup.new_version);
    }
    let new = setup.new_version;
    let attempt_op = clean
        .op_of(|k| matches!(k, EventKind::Booted { test: true, version, .. } if *version == new));
    let confirm_op =
        clean.op_of(|k| matches!(k, EventKind::Confirmed { version, .. } if *version == new));
    let one_attempt = setup.max_boot_attempts == 1;
    if Some(op) == attempt_op && one_attempt {
        // After: the attempt was recorded and power was lost before confirming: revert.
        // Torn: if any bit of the attempt unit moved it counts, else it is as if `before`.
        return match variant {
            CutVariant::Before => Some(new),
            CutVariant::Torn => None,
            CutVariant::After => Some(setup.old_version),
        };
    }
    if Some(op) == confirm_op {
        return match variant {
            CutVariant::Before if one_attempt => Some(setup.old_version),
            CutVariant::Before | CutVariant::After => Some(new),
            CutVariant::Torn => None,
        };
    }
    Some(new)
}

/// Cut at every operation of the clean update, in every variant (torn ones with
/// `tear_seeds` different tears each), and check each run.
pub fn sweep(setup: &Setup, tear_seeds: u64) -> Result<SweepSummary, Violation> {
    let clean = run(setup, CutPlan::None)?;
    let expected_clean = if setup.commits() {
        setup.new_version
    } else {
        setup.old_version
    };
    if clean.final_version != expected_clean {
        return Err(violation(format!(
            "clean run ended with {}",
            clean.final_version
        )));
    }
    let base = setup.ecu.flash().ops();
    let mut summary = SweepSummary {
        ops: clean.ops,
        ..SweepSummary::default()
    };
    let salted: Vec<Setup> = (0..tear_seeds.max(1))
        .map(|salt| {
            let mut s = setup.clone();
            s.ecu.flash_mut().set_tear_salt(salt);
            s
        })
        .collect();
    for k in 0..clean.ops {
        let op = base + k;
        let points = [
            (CutVariant::Before, &salted[..1]),
            (CutVariant::Torn, &salted[..]),
            (CutVariant::After, &salted[..1]),
        ];
        for (variant, setups) in points {
            for s in setups {
                summary.points += 1;
                check_point(s, &clean, op, variant, &mut summary);
            }
        }
    }
    Ok(summary)
}

fn check_point(
    setup: &Setup,
    clean: &Report,
    op: u64,
    variant: CutVariant,
    summary: &mut SweepSummary,
) {
    let report = match run(setup, CutPlan::At(vec![(op, variant)])) {
        Ok(r) => r,
        Err(v) => {
            summary
                .failures
                .push(format!("cut at op {op} ({variant}): {v}"));
            return;
        }
    };
    match report.cuts.as_slice() {
        [(o, v)] if *o == op && *v == variant => summary.fired += 1,
        other => summary
            .failures
            .push(format!("cut at op {op} ({variant}) fired as {other:?}")),
    }
    if let Some(v) = expected_version(setup, clean, op, variant)
        && report.final_version != v
    {
        summary.failures.push(format!(
            "cut at op {op} ({variant}): ended with {} instead of {v}",
            report.final_version
        ));
    }
}
