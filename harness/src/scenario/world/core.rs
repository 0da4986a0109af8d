//! The world's state: the scenario's images, the trace, the steps a sweep records, and what
//! every fault and link is doing.

use std::collections::VecDeque;
use std::sync::Arc;

use ecu_sim::boot::Layout;
use ecu_sim::flash::Flash;
use tokio::sync::Notify;

use super::{ImageEvent, Violation, canlink};
use crate::ota::sim::SimEcu;
use crate::scenario::engine::Engine;
use crate::scenario::schema::{ArtifactSwap, CanFault, Client, DownloadFault, Scenario};
use crate::scenario::trace::{Source, Trace, TraceEvent, TraceKind};

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
    pub(super) pending_step: Option<Box<StepRecord>>,
    /// Power comes back at these times (µs).
    pub(super) restore_at: Vec<u64>,
    /// Faults armed in the flash model: (rule id, fault index, restore delay µs).
    pub(super) flash_cuts: Vec<(u64, usize, u64)>,
    /// Power cuts on an ECU event, waiting in the ECU for a boot's event (an
    /// [`EventCut`](ecu_sim::flash::EventCut)): (cut id, fault index, restore delay µs).
    pub(super) event_cuts: Vec<(u64, usize, u64)>,
    pub(super) next_rule: u64,
    pub(super) download_next: VecDeque<DownloadFault>,
    pub(super) throttle: Option<u64>,
    pub(super) nrc: Vec<(u8, u8, u32)>,
    pub(super) corrupt: Vec<(u8, Option<u8>, u32)>,
    pub(super) flip_next_block: Option<u8>,
    pub(super) storm: Option<(u8, u32)>,
    /// The storm answering the request in flight.
    pub(super) storm_now: Option<(u8, u32)>,
    pub(super) can_next: VecDeque<CanFault>,
    pub(super) drop_next: bool,
    pub kill: Arc<Notify>,
    /// Wakes the runner's ticker when something was scheduled.
    pub wake: Arc<Notify>,
    pub(super) blocks_sent: u32,
    pub(super) blocks_total: u32,
    /// memorySize of the RequestDownload waiting for its answer.
    pub(super) download_size: Option<u64>,
    pub download_resumed: bool,
    pub download_restarted: bool,
    /// Reverts seen.
    pub rollbacks: u64,
    pub boots: u64,
    pub(super) current_boot: u64,
    /// The job's state as the last transition left it.
    pub job_state: String,
    /// Replacement artifacts the scenario may swap in, by kind.
    pub swaps: Arc<Vec<(ArtifactSwap, Vec<u8>)>>,
    pub(super) swapped: Option<Vec<u8>>,
    /// The virtual CAN bus between the tester and the ECU (`transport: can|canfd` with the
    /// project's manager; an external client's frames travel on a real slcan pty instead).
    pub(super) can: Option<canlink::CanLink>,
    /// An OTA manager is running (the runner sets it when one starts and clears it when one
    /// is killed): while none runs, the job document is the manager's whole state.
    pub manager_running: bool,
    /// A kill was notified that the runner has not acted on yet.
    pub kill_pending: bool,
    /// A sweep's fork stops where its state is one known to lead to an end (`None`: runs to
    /// its end).
    pub checkpoint: Option<Arc<crate::sweep::converge::Watch>>,
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
            manager_running: false,
            kill_pending: false,
            checkpoint: None,
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
        w.manager_running = false;
        w.kill_pending = false;
        w.checkpoint = None;
        w
    }

    pub(super) fn begin_step(&mut self, sim: &SimEcu, now: u64, step: Step) {
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

    pub(super) fn end_step(&mut self, sim: &SimEcu) {
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
