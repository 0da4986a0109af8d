//! The simulated world of one scenario: the ECU's surroundings, the faults waiting for their
//! triggers, and the trace everything is written to.
//!
//! [`World`] implements the simulation [`Hooks`](crate::ota::sim::Hooks): it sees every UDS request and response,
//! every download chunk, every job state (through the runner) and every ECU event, fires the
//! faults whose triggers match, and checks the always-on invariants (the ECU only ever boots
//! an image that is byte for byte one of the two images and verifies; it never stops booting).
//! What it does to the messages on the links (UDS, the download) is in `links.rs`, the CAN bus
//! of `transport: can|canfd` (the ISO-TP cores on the virtual bus) in `canlink.rs`; arming the
//! faults that act inside the ECU (flash-op and event cuts) in `arm.rs`; the typed record the
//! verdicts read in `facts.rs`.

mod arm;
mod canlink;
mod facts;
mod links;

pub use arm::region_ranges;
pub use facts::{Evidence, ImageEvent, Installs, Violation};
pub use links::download_event;

use std::collections::VecDeque;
use std::sync::Arc;

use ecu_sim::boot::{Layout, Slot};
use ecu_sim::ecu::{BootedBytes, EcuError};
use ecu_sim::event::{Event, EventKind};
use ecu_sim::flash::Flash;
use tokio::sync::Notify;

use super::engine::{Engine, Match, Observation};
pub use super::engine::{describe_action, state_matches};
use super::schema::{Action, ArtifactSwap, CanFault, Client, DownloadFault, Scenario, Trigger};
use super::trace::{Source, Trace, TraceEvent, TraceKind};
use crate::ota::sim::SimEcu;

/// One of the two images, as the invariants need it.
#[derive(Clone, Debug)]
pub struct KnownImage {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// Whether it verifies with the ECU's keys.
    pub verifies: bool,
    pub sha256: [u8; 32],
}

/// A step of the simulation a sweep can fork before: one UDS request handled by the ECU, one
/// tick of the clock (power restores, the firmware's timers, boots), one download chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The `index`-th request (1-based) of the run.
    Request {
        bytes: Vec<u8>,
        index: u64,
    },
    Tick,
    Chunk {
        offset: u64,
    },
}

/// What a recorder sees of one step: the world and the ECU as they were before it, and the
/// flash operations and boots it performed.
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub at_us: u64,
    pub step: Step,
    pub world: World,
    pub sim: SimEcu,
    pub ops: std::ops::Range<u64>,
    pub boots: std::ops::Range<u64>,
}

/// Sees every trace event as it happens (live views: the dashboard, `--ui json`).
#[derive(Clone)]
pub struct Tap(pub Arc<dyn Fn(&TraceEvent) + Send + Sync>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// Receives every step of a run (the sweep's clean pass).
#[derive(Clone)]
pub struct Recorder(pub Arc<std::sync::Mutex<dyn FnMut(StepRecord) + Send>>);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

#[derive(Clone, Debug)]
pub struct World {
    pub scenario: Arc<Scenario>,
    pub trace: Trace,
    /// Which faults fire when; what fired.
    pub engine: Engine,
    /// Invariant violations, in order.
    pub violations: Vec<Violation>,
    /// Test boots and reverts, in order (the sweep's "installed twice" check).
    pub image_events: Vec<ImageEvent>,
    pub images: Arc<Vec<KnownImage>>,
    pub layout: Layout,
    /// Requests the ECU got so far.
    pub requests: u64,
    /// A power cut also took the OTA manager down; it starts again at this time (µs).
    pub manager_down_until: u64,
    /// When the last fault that kills the manager fired (µs): the manager dies then, though
    /// the runtime notices later or, with the ECU's clock ahead in a boot, earlier.
    pub killed_at: u64,
    /// Gets every step (sweeps); `None` in ordinary runs.
    pub recorder: Option<Recorder>,
    /// Gets every trace event as it happens; `None` without a live view.
    pub tap: Option<Tap>,
    /// The step in progress (its record, completed when it ends).
    pending_step: Option<Box<StepRecord>>,
    /// Power comes back at these times (µs).
    restore_at: Vec<u64>,
    /// Faults armed in the flash model: (rule id, fault index, restore delay µs).
    flash_cuts: Vec<(u64, usize, u64)>,
    /// Power cuts on an ECU event, waiting in the ECU for a boot's event (an
    /// [`EventCut`](ecu_sim::flash::EventCut)): (cut id, fault index, restore delay µs).
    event_cuts: Vec<(u64, usize, u64)>,
    next_rule: u64,
    download_next: VecDeque<DownloadFault>,
    throttle: Option<u64>,
    nrc: Vec<(u8, u8, u32)>,
    corrupt: Vec<(u8, Option<u8>, u32)>,
    flip_next_block: Option<u8>,
    storm: Option<(u8, u32)>,
    /// The storm answering the request in flight.
    storm_now: Option<(u8, u32)>,
    can_next: VecDeque<CanFault>,
    drop_next: bool,
    pub kill: Arc<Notify>,
    /// Wakes the runner's ticker when something was scheduled.
    pub wake: Arc<Notify>,
    blocks_sent: u32,
    blocks_total: u32,
    /// memorySize of the RequestDownload waiting for its answer.
    download_size: Option<u64>,
    pub download_resumed: bool,
    pub download_restarted: bool,
    /// Reverts seen.
    pub rollbacks: u64,
    pub boots: u64,
    current_boot: u64,
    /// The job's state as the last transition left it.
    pub job_state: String,
    /// Replacement artifacts the scenario may swap in, by kind.
    pub swaps: Arc<Vec<(ArtifactSwap, Vec<u8>)>>,
    swapped: Option<Vec<u8>>,
    /// The virtual CAN bus between the tester and the ECU (`transport: can|canfd` with the
    /// project's manager; an external client's frames travel on a real slcan pty instead).
    can: Option<canlink::CanLink>,
}

impl World {
    pub fn new(scenario: Arc<Scenario>, images: Vec<KnownImage>, layout: Layout) -> World {
        let can = match scenario.client {
            Client::External(_) => None,
            _ => canlink::CanLink::new(&scenario.ecu),
        };
        World {
            engine: Engine::new(Arc::clone(&scenario)),
            scenario,
            trace: Trace::default(),
            violations: Vec::new(),
            image_events: Vec::new(),
            images: Arc::new(images),
            layout,
            requests: 0,
            manager_down_until: 0,
            killed_at: 0,
            recorder: None,
            tap: None,
            pending_step: None,
            restore_at: Vec::new(),
            flash_cuts: Vec::new(),
            event_cuts: Vec::new(),
            next_rule: 1,
            download_next: VecDeque::new(),
            throttle: None,
            nrc: Vec::new(),
            corrupt: Vec::new(),
            flip_next_block: None,
            storm: None,
            storm_now: None,
            can_next: VecDeque::new(),
            drop_next: false,
            kill: Arc::new(Notify::new()),
            wake: Arc::new(Notify::new()),
            blocks_sent: 0,
            blocks_total: 0,
            download_size: None,
            download_resumed: false,
            download_restarted: false,
            rollbacks: 0,
            boots: 0,
            current_boot: 0,
            job_state: "submitted".into(),
            swaps: Arc::new(Vec::new()),
            swapped: None,
            can,
        }
    }

    /// Add an event to the trace (and show it to the tap).
    pub fn push(&mut self, at_us: u64, source: Source, event: &str, text: impl Into<String>) {
        self.push_kind(at_us, source, event, text, TraceKind::Other);
    }

    /// [`World::push`] with the event's typed `kind`.
    pub fn push_kind(
        &mut self,
        at_us: u64,
        source: Source,
        event: &str,
        text: impl Into<String>,
        kind: TraceKind,
    ) {
        self.trace.push_kind(at_us, source, event, text, kind);
        if let (Some(tap), Some(e)) = (&self.tap, self.trace.events.last()) {
            (tap.0)(e);
        }
    }

    /// Fault `fault` fired: `text` in the trace.
    pub fn push_fired(&mut self, at_us: u64, fault: usize, text: String) {
        let kind = TraceKind::FaultFired { fault };
        self.push_kind(at_us, Source::Fault, "fault_fired", text, kind);
    }

    /// This world as a fork starts from it: the same state, `scenario` (the original plus
    /// the fork's fault), its own notifications, no recorder, an empty trace.
    pub fn fork(&self, scenario: Arc<Scenario>) -> World {
        let mut w = self.clone();
        w.engine.extend_to(Arc::clone(&scenario));
        w.scenario = scenario;
        w.kill = Arc::new(Notify::new());
        w.wake = Arc::new(Notify::new());
        w.recorder = None;
        w.tap = None;
        w.pending_step = None;
        w.trace = Trace::default();
        w
    }

    fn begin_step(&mut self, sim: &SimEcu, now: u64, step: Step) {
        if self.recorder.is_some() {
            // Without the trace (a fork starts its own), which would make every copy O(run).
            let trace = std::mem::take(&mut self.trace);
            let pending = self.pending_step.take();
            let mut before = self.clone();
            self.trace = trace;
            self.pending_step = pending;
            before.recorder = None;
            let ops = sim.ecu.flash().ops();
            self.pending_step = Some(Box::new(StepRecord {
                at_us: now,
                step,
                world: before,
                sim: sim.clone(),
                ops: ops..ops,
                boots: self.boots..self.boots,
            }));
        }
    }

    fn end_step(&mut self, sim: &SimEcu) {
        if let (Some(rec), Some(p)) = (self.recorder.clone(), self.pending_step.take()) {
            let mut record = *p;
            record.ops.end = sim.ecu.flash().ops();
            record.boots.end = self.boots;
            let mut f = rec
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(record);
        }
    }
}

impl World {
    /// Fire the faults `obs` triggers and that can act now; returns their actions, for
    /// [`World::apply`].
    fn fire(&mut self, now: u64, obs: Observation<'_>) -> Vec<Action> {
        self.fire_except(now, obs, &[])
            .into_iter()
            .map(|m| m.action)
            .collect()
    }

    /// [`World::fire`] without the faults in `skip` (event cuts that landed in a boot); the
    /// matches that fired.
    fn fire_except(&mut self, now: u64, obs: Observation<'_>, skip: &[usize]) -> Vec<Match> {
        let mut fired = Vec::new();
        for m in self.engine.matches(&obs) {
            if skip.contains(&m.fault) || !self.can_act(now, m.fault, &m.action) {
                continue;
            }
            let text = self.engine.fire(m.fault, &m.what);
            self.push_fired(now, m.fault, text);
            fired.push(m);
        }
        fired
    }

    /// Power went off at `at_us` (the world cut it, or a cut armed in the flash fired): it comes
    /// back `restore_us` later; with `kill_manager` the OTA manager loses power too and resumes
    /// from its store then.
    fn power_cut_at(&mut self, at_us: u64, restore_us: u64, kill_manager: bool) {
        self.restore_at.push(at_us + restore_us);
        self.wake.notify_one();
        if kill_manager {
            self.manager_down_until = at_us + restore_us;
            self.killed_at = at_us;
            self.kill.notify_one();
        }
    }

    /// Carry out actions now.
    fn apply(&mut self, sim: &mut SimEcu, now: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::PowerCut(p) => {
                    if sim.ecu.is_powered() {
                        let _ = sim.ecu.advance_to(now);
                        sim.ecu.power_off();
                    }
                    self.power_cut_at(now, p.restore_after_ms * 1000, p.kill_manager);
                }
                Action::Reset => {
                    let _ = sim.ecu.advance_to(now);
                    if let Err(e) = sim.ecu.reset()
                        && !matches!(e, EcuError::PowerLost { .. })
                    {
                        self.push(now, Source::Ecu, "reset_failed", format!("reset: {e}"));
                    }
                }
                Action::Can(f) => self.can_next.push_back(f),
                Action::DropConnection => self.drop_next = true,
                Action::Download(DownloadFault::Throttle(bps)) => self.throttle = Some(bps),
                Action::Download(f) => self.download_next.push_back(f),
                Action::FlipTransferBits(mask) => self.flip_next_block = Some(mask),
                Action::BitRot(b) => {
                    let Ok(addr) = self.bit_rot_target(&b) else {
                        continue;
                    };
                    let r = sim.ecu.flash_mut().flip_bits(addr, b.mask);
                    self.push(
                        now,
                        Source::Fault,
                        "bit_rot",
                        match r {
                            Ok(()) => format!("bits {:#04x} flipped at {addr:#x}", b.mask),
                            Err(e) => format!("bit rot at {addr:#x} failed: {e}"),
                        },
                    );
                }
                Action::InjectNrc(n) if n.nrc == 0x78 => self.storm = Some((n.service, n.count)),
                Action::InjectNrc(n) => self.nrc.push((n.service, n.nrc, n.count)),
                Action::CorruptRequest(c) => self.corrupt.push((c.service, c.subfunction, c.count)),
                Action::KillManager => {
                    self.killed_at = now;
                    self.kill.notify_one();
                }
                Action::SwapArtifact(kind) => {
                    self.swapped = self
                        .swaps
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, b)| b.clone());
                    if self.swapped.is_some() {
                        self.push(
                            now,
                            Source::Fault,
                            "artifact_swapped",
                            format!("the server now serves the {} image", kind.name()),
                        );
                    }
                }
            }
        }
    }

    /// Read the ECU's events: trace them, check the invariants, fire event triggers.
    pub fn observe(&mut self, sim: &mut SimEcu, now: u64) {
        loop {
            let events = sim.ecu.drain_events();
            if events.is_empty() {
                return;
            }
            let booted = sim.ecu.drain_booted();
            for e in events {
                self.on_event(sim, now, e, &booted);
            }
        }
    }

    fn on_event(&mut self, sim: &mut SimEcu, now: u64, e: Event, booted: &[BootedBytes]) {
        let name = event_name(&e.kind);
        let kind = TraceKind::Ecu(Arc::new(e.kind.clone()));
        self.push_kind(e.at_us, Source::Ecu, &name, e.kind.to_string(), kind);
        match &e.kind {
            EventKind::BootStarted { boot } => {
                self.boots += 1;
                self.current_boot = *boot;
                let actions = self.fire(e.at_us, Observation::Boot(*boot));
                self.apply(sim, now.max(e.at_us), actions);
            }
            EventKind::Booted {
                slot,
                version,
                test,
                ..
            } => {
                let boot = self.current_boot;
                let image = self.check_booted(booted, boot, *slot, &version.to_string(), e.at_us);
                if *test {
                    self.image_events.push(ImageEvent::TestBoot {
                        at_us: e.at_us,
                        slot: *slot,
                        image,
                    });
                }
            }
            EventKind::NoBootableImage { reasons } => {
                self.violations.push(Violation::NoBootableImage {
                    at_us: e.at_us,
                    reasons: reasons.clone(),
                });
            }
            EventKind::RevertStarted { slot, reason } => {
                // A revert started again before the image booted on probation again (a cut
                // before its journal's start record) is the same revert.
                let again = matches!(
                    self.image_events.iter().rev().find(|i| match i {
                        ImageEvent::TestBoot { slot: s, .. }
                        | ImageEvent::Revert { slot: s, .. } => s == slot,
                    }),
                    Some(ImageEvent::Revert { .. })
                );
                if !again {
                    self.rollbacks += 1;
                }
                let image = self.image_events.iter().rev().find_map(|i| match i {
                    ImageEvent::TestBoot { slot: s, image, .. } if s == slot => Some(*image),
                    _ => None,
                });
                self.image_events.push(ImageEvent::Revert {
                    at_us: e.at_us,
                    slot: *slot,
                    image: image.flatten(),
                    reason: reason.clone(),
                });
            }
            EventKind::PowerLost { op, .. } => {
                // A cut armed in the flash model fired: the rule that is gone.
                let left: Vec<u64> = sim.ecu.flash().cut_rules().iter().map(|r| r.id).collect();
                let waiting: Vec<u64> = sim.ecu.event_cuts().iter().map(|c| c.id).collect();
                if let Some(k) = self
                    .event_cuts
                    .iter()
                    .position(|(id, ..)| !left.contains(id) && !waiting.contains(id))
                {
                    let (_, fault, restore_us) = self.event_cuts.remove(k);
                    let f = self.scenario.faults[fault].clone();
                    let on = match &f.when {
                        Trigger::Event(n) => n.clone(),
                        _ => String::new(),
                    };
                    let text = self
                        .engine
                        .fire(fault, &format!("on {on} at flash op {op}"));
                    self.push_fired(e.at_us, fault, text);
                    let kill = matches!(&f.action, Action::PowerCut(p) if p.kill_manager);
                    self.power_cut_at(e.at_us, restore_us, kill);
                    self.rearm_event_cuts(sim);
                } else if let Some(k) = self
                    .flash_cuts
                    .iter()
                    .position(|(id, ..)| !left.contains(id))
                {
                    let (_, fault, restore_us) = self.flash_cuts.remove(k);
                    let f = self.scenario.faults[fault].clone();
                    let acts = self.can_act(e.at_us, fault, &f.action);
                    let what = format!("at flash op {op}");
                    let text = if acts {
                        self.engine.fire(fault, &what)
                    } else {
                        self.engine.describe(fault, &what)
                    };
                    self.push_fired(e.at_us, fault, text);
                    let kill = matches!(&f.action, Action::PowerCut(p) if p.kill_manager);
                    self.power_cut_at(e.at_us, restore_us, kill);
                    if self.engine.has_times_left(fault) {
                        self.arm_flash_fault(sim, fault, &f);
                    }
                    if acts && !matches!(f.action, Action::PowerCut(_)) {
                        self.apply(sim, now.max(e.at_us), vec![f.action.clone()]);
                    }
                }
            }
            _ => {}
        }
        let at = e.at_us;
        let landed = self.event_cuts_in_boot(sim, &name);
        let actions = self
            .fire_except(at, Observation::EcuEvent(&name), &landed)
            .into_iter()
            .map(|m| m.action)
            .collect();
        self.apply(sim, now.max(at), actions);
        self.rearm_event_cuts(sim);
    }

    /// Let the event cuts that fired wait again, as long as their fault has times left.
    fn rearm_event_cuts(&mut self, sim: &mut SimEcu) {
        let faults = self.scenario.faults.clone();
        for (i, f) in faults.iter().enumerate() {
            if matches!(
                (&f.when, &f.action),
                (Trigger::Event(_), Action::PowerCut(_))
            ) && self.engine.has_times_left(i)
                && !self.event_cuts.iter().any(|&(_, fault, _)| fault == i)
            {
                self.arm_event_cut(sim, i, f);
            }
        }
    }

    /// Every boot started an image that is byte for byte one of the two, and verifies (the ECU
    /// hashed the slot's bytes at the moment of the boot). Returns the name of the image it
    /// booted, if it is one of the two.
    fn check_booted(
        &mut self,
        booted: &[BootedBytes],
        boot: u64,
        slot: Slot,
        version: &str,
        at_us: u64,
    ) -> Option<&'static str> {
        let Some(b) = booted.iter().find(|b| b.boot == boot) else {
            self.violations.push(Violation::BootUnread {
                at_us,
                boot,
                slot,
                version: version.to_string(),
            });
            return None;
        };
        let image = self.images.iter().find(|img| img.sha256 == b.sha256);
        match image {
            None => self.violations.push(Violation::ForeignImage {
                at_us,
                slot,
                version: version.to_string(),
            }),
            Some(img) if !img.verifies => self.violations.push(Violation::Unverified {
                at_us,
                slot,
                image: img.name,
            }),
            Some(_) => {}
        }
        image.map(|img| img.name)
    }

    /// The typed record of the run so far.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            violations: self.violations.clone(),
            fired: self.engine.fired().to_vec(),
            images: self.image_events.clone(),
        }
    }

    /// The runner reports a job transition.
    pub fn on_state(&mut self, sim: &mut SimEcu, now: u64, state: &crate::ota::job::State) {
        use crate::ota::job::{State, TransferStep};
        let name = state_name(state);
        let progress_only = progress_only(state);
        if let State::Transferring {
            step: TransferStep::Block { of, .. },
        } = state
        {
            self.blocks_total = *of;
        }
        self.push_kind(
            now,
            Source::Ota,
            &format!("state:{name}"),
            state.to_string(),
            TraceKind::Job(Arc::new(state.clone())),
        );
        self.job_state = name.clone();
        if progress_only {
            return;
        }
        let actions = self.fire(now, Observation::State(&name));
        self.apply(sim, now, actions);
    }

    /// A note from a worker (download resumed, transfer failed, ...).
    pub fn on_note(&mut self, now: u64, note: &str) {
        self.push(now, Source::Ota, "note", note.to_string());
    }

    /// Time passed (the runner's ticker): restore power, fire time triggers, let the ECU run.
    pub fn tick(&mut self, sim: &mut SimEcu, now: u64) {
        self.begin_step(sim, now, Step::Tick);
        self.tick_inner(sim, now);
        self.end_step(sim);
    }

    fn tick_inner(&mut self, sim: &mut SimEcu, now: u64) {
        let _ = sim.ecu.advance_to(now);
        self.observe(sim, now);
        let due: Vec<u64> = self
            .restore_at
            .iter()
            .copied()
            .filter(|&t| t <= now)
            .collect();
        if !due.is_empty() {
            self.restore_at.retain(|&t| t > now);
            if !sim.ecu.is_powered() {
                // (A cut inside the boot is its own `power_lost` event.)
                if let Err(e) = sim.ecu.power_on()
                    && !matches!(e, EcuError::PowerLost { .. })
                {
                    self.push(
                        now,
                        Source::Ecu,
                        "power_on_failed",
                        format!("power on: {e}"),
                    );
                }
                self.observe(sim, now);
            }
        }
        let actions = self.fire(now, Observation::Tick { now_us: now });
        self.apply(sim, now, actions);
        self.observe(sim, now);
    }

    /// When the ticker should look again (µs).
    pub fn next_wake(&self, sim: &SimEcu, now: u64) -> u64 {
        let mut t = now + 1_000_000;
        for &r in &self.restore_at {
            t = t.min(r);
        }
        if let Some(a) = sim.ecu.next_action_at() {
            t = t.min(a);
        }
        if let Some(d) = self.engine.next_deadline_us() {
            t = t.min(d);
        }
        t.max(now + 1)
    }

    /// Whether a power restore is still pending.
    pub fn power_pending(&self) -> bool {
        !self.restore_at.is_empty()
    }
}

/// A transition that only reports progress (bytes downloaded, blocks sent) within a state.
pub fn progress_only(state: &crate::ota::job::State) -> bool {
    use crate::ota::job::{State, TransferStep};
    matches!(
        state,
        State::Transferring {
            step: TransferStep::Block { n, .. }
        } if *n > 0
    ) || matches!(state, State::Downloading { bytes } if *bytes > 0)
}

/// `transferring:block`, `applying:await_boot`, `committed`, ...
pub fn state_name(state: &crate::ota::job::State) -> String {
    let v = serde_json::to_value(state).unwrap_or_default();
    let phase = v["state"].as_str().unwrap_or_default().to_string();
    match &v["step"] {
        serde_json::Value::String(s) => format!("{phase}:{s}"),
        serde_json::Value::Object(o) => match o.get("step").and_then(|s| s.as_str()) {
            Some(s) => format!("{phase}:{s}"),
            None => phase,
        },
        _ => phase,
    }
}

/// `swap_started` for `EventKind::SwapStarted { .. }` (the names: [`crate::scenario::trace::EVENTS`]).
pub fn event_name(kind: &EventKind) -> String {
    crate::scenario::trace::ecu_event_name(kind).to_string()
}
