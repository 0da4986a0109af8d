//! Running one scenario: the real OTA manager against the in-process virtual ECU, in virtual
//! time, on one thread. The same scenario and seed give the same trace, byte for byte.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::boot::{BootConfig, Defect, Slot};
use ecu_sim::ecu::Ecu;
use ecu_sim::image::{self, Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::uds::server::{Addressing, DiagServer, Incoming, ServerConfig};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::schema::parse_dtc;
use super::schema::{
    ArtifactSwap, BehaviourSpec, Client, DefectSpec, ImageSpec, ManagerSpec, OutcomeSpec, Scenario,
    Signing, SlotSpec,
};
use super::trace::{Source, Trace};
use super::world::{KnownImage, Recorder, Step, Tap, World, state_name};
use crate::flasher::FlasherConfig;
use crate::ota::job::{Job, State};
use crate::ota::live::{LiveConfig, Progress, drive};
use crate::ota::manager::{Limits, Manager};
use crate::ota::manifest::Manifest;
use crate::ota::sim::{Hooks, RequestFate, SimEcu, SimWorkers, SimWorld};
use crate::ota::store::Store;

/// The URL the simulated artifact server serves the update at.
pub const ARTIFACT_URL: &str = "http://artifacts.sim/update.bin";
/// Simulated time the ECU runs after the job ended, before the end state is read.
const SETTLE_US: u64 = 5_000_000;
/// A job that has not ended after this much simulated time is stuck.
const LIMIT_US: u64 = 3_600_000_000;

/// Something the runner could not do (as opposed to a scenario that failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the {what} image: {message}")]
    Image { what: &'static str, message: String },
    #[error("the ecu: {0}")]
    Ecu(String),
    #[error("the job store: {0}")]
    Store(String),
    #[error("the OTA manager broke: {0}")]
    Manager(String),
    #[error("no end after {0} s of simulated time")]
    Stuck(u64),
}

/// The end state of a run, as the expectations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndState {
    pub outcome: OutcomeSpec,
    pub reason: Option<String>,
    pub version: Option<Version>,
    pub slot: Option<Slot>,
    pub confirmed: bool,
    pub boots: u64,
    pub rollbacks: u64,
    pub dtcs: Vec<u32>,
    pub simulated_us: u64,
    pub download_resumed: bool,
    /// The version of the installed (old) image.
    pub installed: Option<Version>,
}

impl EndState {
    /// What the ECU runs at the end, e.g. `1.0.0 (confirmed)` or `nothing (unconfirmed)`.
    pub fn running(&self) -> String {
        format!(
            "{} ({})",
            self.version
                .map_or_else(|| "nothing".to_string(), |v| v.to_string()),
            if self.confirmed {
                "confirmed"
            } else {
                "unconfirmed"
            }
        )
    }
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub trace: Trace,
    pub end: EndState,
    /// Unmet expectations and broken invariants, most important first.
    pub failures: Vec<String>,
    /// The manager's job (none with an external client).
    pub job: Option<Job>,
    /// The simulated world's typed record (none on a bench: a real ECU is seen from outside).
    pub evidence: Option<super::world::Evidence>,
    /// Times are wall-clock time (an external client, a bench), not virtual time.
    pub real_time: bool,
}

/// A one-thread runtime on a paused clock: every wait costs no wall time (virtual time).
fn virtual_time() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| RunError::Ecu(e.to_string()))
}

/// A one-thread runtime on the wall clock (external clients, benches: real processes and
/// real ECUs do not run on a paused clock).
pub fn real_time() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Ecu(e.to_string()))
}

/// A failure for every fault that never fired, unless it is optional: located at the fault
/// in its file and in the file's words, `s.yaml:7:5: fault 2 (when: {flash_op: {n: 900}})
/// never fired: …`.
pub fn unfired(s: &Scenario, fired: &[u32]) -> Vec<String> {
    unfired_or_idle(s, fired, &[])
}

/// [`unfired`], saying for a fault whose trigger matched but whose action did nothing
/// (`idle`, by index: a bit rot outside its region) why it did not fire.
pub fn unfired_or_idle(s: &Scenario, fired: &[u32], idle: &[Option<String>]) -> Vec<String> {
    s.faults
        .iter()
        .zip(fired)
        .enumerate()
        .filter(|(_, (f, n))| **n == 0 && !f.optional)
        .map(|(i, (f, _))| {
            let at = s
                .origin
                .as_ref()
                .and_then(|o| o.faults.get(i).map(|(l, c)| format!("{}:{l}:{c}: ", o.file)))
                .unwrap_or_default();
            match idle.get(i).and_then(Option::as_ref) {
                Some(why) => format!(
                    "{at}fault {} (when: {}) never fired: its trigger matched, but its action did nothing ({why})",
                    i + 1,
                    f.when.to_yaml_flow()
                ),
                None => format!(
                    "{at}fault {} (when: {}) never fired: its trigger did not match (mark it `optional: true` if that is fine)",
                    i + 1,
                    f.when.to_yaml_flow()
                ),
            }
        })
        .collect()
}

/// A scratch directory for a simulated job store: in memory (`/dev/shm`) where there is one,
/// as simulations write thousands of small files that no disk needs to see.
pub fn scratch_dir() -> Result<tempfile::TempDir, RunError> {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("hil-sim-")
            .tempdir_in(shm)
            .or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    };
    dir.map_err(|e| RunError::Store(e.to_string()))
}

/// Run `scenario`; `seed` overrides the file's.
pub fn run(scenario: &Scenario, seed: Option<u64>) -> Result<RunResult, RunError> {
    run_tapped(scenario, seed, None)
}

/// [`run`], showing every trace event to `tap` as it happens.
pub fn run_tapped(
    scenario: &Scenario,
    seed: Option<u64>,
    tap: Option<Tap>,
) -> Result<RunResult, RunError> {
    let mut scenario = scenario.clone();
    if let Some(s) = seed {
        scenario.seed = s;
    }
    if matches!(scenario.client, Client::External(_)) {
        return super::external::run(&scenario, tap);
    }
    let runtime = virtual_time()?;
    let dir = scratch_dir()?;
    let mut p = prepare(&Arc::new(scenario))?;
    if let Some(t) = &tap {
        // What happened while the ECU was built (the factory boot).
        for e in &p.world.trace.events {
            (t.0)(e);
        }
    }
    p.world.tap = tap;
    runtime.block_on(execute(p, dir.path(), None, true))
}

fn behaviour(b: BehaviourSpec) -> Behaviour {
    match b {
        BehaviourSpec::Healthy { confirm_after_ms } => Behaviour::Healthy { confirm_after_ms },
        BehaviourSpec::CrashOnBoot => Behaviour::CrashOnBoot,
        BehaviourSpec::Hang { watchdog_ms } => Behaviour::Hang { watchdog_ms },
        BehaviourSpec::NeverConfirm => Behaviour::NeverConfirm,
    }
}

/// Build an image: the payload is seeded by the scenario's seed and the version, so the same
/// file gives the same bytes.
pub fn build_image(spec: &ImageSpec, seed: u64, what: &'static str) -> Result<Vec<u8>, RunError> {
    let err = |message: String| RunError::Image { what, message };
    let version: Version = spec
        .version
        .parse()
        .map_err(|e| err(format!("version {:?}: {e}", spec.version)))?;
    let mut h = [0u8; 8];
    h.copy_from_slice(&Sha256::digest(spec.version.as_bytes())[..8]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from_le_bytes(h));
    let mut payload = vec![0u8; spec.size];
    rng.fill_bytes(&mut payload);
    let builder = ImageBuilder::new(version, payload)
        .security_counter(spec.security_counter.unwrap_or(u32::from(version.major)))
        .behaviour(behaviour(spec.behaviour));
    let mut bytes = match &spec.signing {
        Signing::Key(name) => builder.sign(&dev_key(name)),
        Signing::Unsigned => builder.build_unsigned(),
    };
    if spec.tampered {
        let header = image::parse(&bytes)
            .map_err(|e| err(e.to_string()))?
            .header
            .hdr_size as usize;
        let at = header + spec.size / 2;
        if let Some(b) = bytes.get_mut(at) {
            *b ^= 0x01;
        }
    }
    Ok(bytes)
}

/// The images a `swap_artifact` action can serve instead of the update.
pub fn swaps(update: &ImageSpec, seed: u64) -> Result<Vec<(ArtifactSwap, Vec<u8>)>, RunError> {
    let tampered = ImageSpec {
        tampered: true,
        ..update.clone()
    };
    let unsigned = ImageSpec {
        signing: Signing::Unsigned,
        ..update.clone()
    };
    let v: Version = update.version.parse().map_err(|e| RunError::Image {
        what: "update",
        message: format!("{e}"),
    })?;
    let older = ImageSpec {
        version: Version::new(v.major.saturating_sub(1), v.minor, v.revision).to_string(),
        security_counter: Some(u32::from(v.major.saturating_sub(1))),
        ..update.clone()
    };
    Ok(vec![
        (
            ArtifactSwap::Tampered,
            build_image(&tampered, seed, "tampered")?,
        ),
        (
            ArtifactSwap::Unsigned,
            build_image(&unsigned, seed, "unsigned")?,
        ),
        (
            ArtifactSwap::Downgraded,
            build_image(&older, seed, "downgraded")?,
        ),
    ])
}

pub(crate) fn manifest(update: &[u8], version: &str) -> Manifest {
    let sha: String = Sha256::digest(update)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "artifact: {{url: '{ARTIFACT_URL}', size: {}, sha256: '{sha}'}}\nversion: {version}\ntarget: {{transport: doip, host: sim}}\n",
        update.len()
    );
    Manifest::parse(&text, "scenario").expect("a manifest the runner writes parses")
}

/// What a run is made of before it starts.
#[derive(Debug)]
pub struct Prepared {
    pub sim: SimEcu,
    pub world: World,
    pub update: Vec<u8>,
    pub config: LiveConfig,
}

/// Build the images, the ECU (provisioned and booted) and the world of `scenario`.
pub fn prepare(scenario: &Arc<Scenario>) -> Result<Prepared, RunError> {
    let s = scenario;
    let installed = build_image(&s.installed, s.seed, "installed")?;
    let update = build_image(&s.update, s.seed, "update")?;
    let mut keys = Keyring::new();
    for k in &s.ecu.keys {
        keys = keys.with_key(dev_key(k).verifying_key());
    }
    let verifies = |b: &[u8]| image::verify(b, &keys, 0).is_ok();
    let images = vec![
        KnownImage {
            name: "installed",
            verifies: verifies(&installed),
            sha256: Sha256::digest(&installed).into(),
            bytes: installed.clone(),
        },
        KnownImage {
            name: "update",
            verifies: verifies(&update),
            sha256: Sha256::digest(&update).into(),
            bytes: update.clone(),
        },
    ];
    let mode = s.ecu.mode();
    let geometry = s.ecu.geometry().map_err(|e| RunError::Ecu(e.to_string()))?;
    let boot = BootConfig {
        defect: s.ecu.bootloader_defect.map(|d| match d {
            DefectSpec::JournalBeforeCopy => Defect::JournalBeforeCopy,
            DefectSpec::NoStepRecords => Defect::NoStepRecords,
        }),
        max_boot_attempts: s.ecu.max_boot_attempts,
        keys,
    };
    let ecu = Ecu::factory(geometry, mode, &installed, boot, s.seed)
        .map_err(|e| RunError::Ecu(format!("provisioning the installed image: {e}")))?;
    let layout = ecu.config().layout.clone();
    let server = DiagServer::new(ServerConfig {
        max_block_len: s.ecu.block_len,
        rng_seed: s.seed,
        ..ServerConfig::default()
    });
    let mut world = World::new(Arc::clone(scenario), images, layout);
    world.swaps = Arc::new(swaps(&s.update, s.seed)?);
    let mut sim = SimEcu { ecu, server };
    world.arm_flash_faults(&mut sim);
    world.observe(&mut sim, 0);
    let m = match &s.client {
        Client::Manager(m) => m.clone(),
        // (An external client runs without the manager: its limits are unused.)
        Client::External(_) => ManagerSpec::default(),
    };
    let config = LiveConfig {
        manager: Manager {
            limits: Limits {
                download_attempts: m.download_attempts,
                transfer_attempts: m.transfer_attempts,
            },
        },
        flasher: FlasherConfig {
            confirm_timeout: Duration::from_secs_f64(m.confirm_timeout_s),
            boot_timeout: Duration::from_secs_f64(m.boot_timeout_s),
            ..FlasherConfig::default()
        },
        ..LiveConfig::default()
    };
    Ok(Prepared {
        sim,
        world,
        update,
        config,
    })
}

/// A run that starts from a step of another run instead of power-on: the world and the ECU
/// as they were before the step, the job document and the bytes of the artifact on disk at
/// that moment. The fork's extra fault is already in `world`'s scenario (and armed, for a
/// flash operation); the step is executed again, so the fault lands where the original run
/// was at that moment. The manager starts from the job document, as after a restart.
#[derive(Debug)]
pub struct ForkStart {
    pub at_us: u64,
    pub step: Step,
    pub job_json: String,
    pub artifact_len: u64,
}

/// Run `scenario` with `recorder` getting every step; the job store lives in `dir` (the
/// recorder reads the job document and the artifact's length there).
pub fn run_recorded(
    scenario: &Scenario,
    recorder: Recorder,
    dir: &std::path::Path,
) -> Result<RunResult, RunError> {
    let runtime = virtual_time()?;
    let mut p = prepare(&Arc::new(scenario.clone()))?;
    p.world.recorder = Some(recorder);
    runtime.block_on(execute(p, dir, None, true))
}

/// Run a fork (see [`ForkStart`]): `prepared` holds the world and the ECU of the snapshot;
/// only the end state and the invariants are checked (the trace starts at the fork).
/// The job store lives in `dir`, which must hold no job (a sweep's worker reuses one).
pub fn run_fork(
    prepared: Prepared,
    fork: ForkStart,
    dir: &std::path::Path,
) -> Result<RunResult, RunError> {
    let runtime = virtual_time()?;
    runtime.block_on(execute(prepared, dir, Some(fork), false))
}

async fn execute(
    p: Prepared,
    dir: &std::path::Path,
    fork: Option<ForkStart>,
    full_checks: bool,
) -> Result<RunResult, RunError> {
    let scenario = Arc::clone(&p.world.scenario);
    let s = &scenario;
    let update = p.update;
    let config = p.config;
    let mut workers = SimWorkers::with_hooks(p.sim, p.world, s.download.bandwidth);
    workers
        .artifacts
        .insert(ARTIFACT_URL.into(), update.clone());
    if let Some(f) = &fork {
        workers.epoch = tokio::time::Instant::now()
            .checked_sub(Duration::from_micros(f.at_us))
            .ok_or_else(|| RunError::Ecu("the clock cannot go back to the fork".into()))?;
    }
    let epoch = workers.epoch;
    let shared = Arc::clone(&workers.world);
    let (kill, wake) = {
        let w = lock(&shared);
        (Arc::clone(&w.hooks.kill), Arc::clone(&w.hooks.wake))
    };
    let store = Store::open(dir)
        .map_err(|e| RunError::Store(e.to_string()))?
        .without_fsync();
    let id = match &fork {
        None => {
            store
                .submit(manifest(&update, &s.update.version), 0)
                .map_err(|e| RunError::Store(e.to_string()))?
                .id
        }
        Some(f) => {
            let job = crate::ota::store::parse_job(&f.job_json, std::path::Path::new("fork.json"))
                .map_err(|e| RunError::Store(e.to_string()))?;
            store
                .save(&job)
                .map_err(|e| RunError::Store(e.to_string()))?;
            let path = store.artifact_path(&job.id);
            let len = (f.artifact_len as usize).min(update.len());
            if len == 0 {
                let _ = std::fs::remove_file(&path);
            } else if std::fs::read(&path).ok().as_deref() != Some(&update[..len]) {
                // (A sweep's worker keeps the file between points when it is already right.)
                std::fs::write(&path, &update[..len])
                    .map_err(|e| RunError::Store(e.to_string()))?;
            }
            // The step again, with the fork's fault armed.
            let mut w = lock(&shared);
            let SimWorld { sim, hooks } = &mut *w;
            let t = f.at_us;
            match &f.step {
                Step::Request { bytes, .. } => {
                    let mut req = bytes.clone();
                    if let RequestFate::Deliver { after_us, held_us } =
                        hooks.on_request(sim, t, &mut req)
                    {
                        let incoming = Incoming::new(Addressing::Physical).held(held_us);
                        sim.server
                            .handle(&mut sim.ecu, t + after_us, &req, incoming);
                        while sim.server.poll_transmit().is_some() {}
                    }
                    hooks.after_request(sim, t);
                }
                Step::Tick => hooks.tick(sim, t),
                Step::Chunk { .. } => {}
            }
            job.id
        }
    };

    let ticker = spawn_ticker(Arc::clone(&shared), Arc::clone(&wake), epoch);

    let now = move || us(epoch.elapsed());
    let job = loop {
        // A manager that lost power with the ECU starts again when power is back.
        let down = lock(&shared).hooks.manager_down_until;
        if down > now() {
            tokio::time::sleep_until(epoch + Duration::from_micros(down)).await;
        }
        let progress = {
            let shared = Arc::clone(&shared);
            move |p: &Progress| {
                let mut w = lock(&shared);
                let SimWorld { sim, hooks } = &mut *w;
                match p {
                    Progress::State(state) => hooks.on_state(sim, now(), state),
                    Progress::Note(n) if !n.starts_with("download: ") => hooks.on_note(now(), n),
                    Progress::Note(_) => {}
                }
            }
        };
        let limit = tokio::time::sleep_until(epoch + Duration::from_micros(LIMIT_US));
        let result = tokio::select! {
            biased;
            () = kill.notified() => None,
            () = limit => {
                ticker.abort();
                return Err(RunError::Stuck(LIMIT_US / 1_000_000));
            }
            r = drive(&store, &id, &config, &workers, progress) => Some(r),
        };
        match result {
            Some(Ok(job)) => break job,
            Some(Err(e)) => {
                ticker.abort();
                return Err(RunError::Manager(e.to_string()));
            }
            None => {
                let mut w = lock(&shared);
                let state = w.hooks.job_state.clone();
                // At the fault that killed it (its cut may lie ahead of the runtime's clock).
                let at = now().max(w.hooks.killed_at);
                w.hooks.push(
                    at,
                    Source::Runner,
                    "manager_killed",
                    format!("the OTA manager was killed in {state}; resuming from its store"),
                );
            }
        }
    };
    // Let the ECU run on (power comes back if a cut is pending, the firmware confirms or
    // crashes), then read where it ended.
    let end_job = now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let w = lock(&shared);
        if now() >= end_job + SETTLE_US && !w.hooks.power_pending() {
            break;
        }
    }
    ticker.abort();
    let mut w = lock(&shared);
    let SimWorld { sim, hooks } = &mut *w;
    hooks.recorder = None;
    hooks.tick(sim, now());
    // Events are reported as they become known: the ECU stamps them with its own clock,
    // which runs ahead while it is busy. In time order they tell the story.
    hooks.trace.events.sort_by_key(|e| e.at_us);
    let end = end_state(Some(&job), sim, hooks, now());
    let mut failures: Vec<String> = hooks.violations.iter().map(ToString::to_string).collect();
    if sim.ecu.running().is_none() {
        failures.insert(
            0,
            format!(
                "the ECU runs nothing at the end (powered: {})",
                sim.ecu.is_powered()
            ),
        );
    }
    let evidence = hooks.evidence();
    failures.extend(evidence.installs(Some(&job)).problems);
    failures.extend(hooks.engine.unfired());
    failures.extend(super::expect::check(
        &s.expect,
        &end,
        &hooks.trace,
        full_checks,
    ));
    Ok(RunResult {
        trace: hooks.trace.clone(),
        end,
        failures,
        job: Some(job),
        evidence: Some(evidence),
        real_time: false,
    })
}

/// The ticker: power restores, time triggers, the firmware's own timers. Runs until aborted.
pub fn spawn_ticker(
    shared: Arc<Mutex<SimWorld<World>>>,
    woken: Arc<tokio::sync::Notify>,
    epoch: tokio::time::Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wake = {
                let w = lock(&shared);
                let now = us(epoch.elapsed());
                w.hooks.next_wake(&w.sim, now)
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(epoch + Duration::from_micros(wake)) => {}
                () = woken.notified() => {}
            }
            let mut w = lock(&shared);
            let SimWorld { sim, hooks } = &mut *w;
            hooks.tick(sim, us(epoch.elapsed()));
        }
    })
}

/// The scenario outcome of a job's final state, with its reason.
pub fn outcome_of(state: &State) -> (OutcomeSpec, Option<String>) {
    match state {
        State::Committed => (OutcomeSpec::Committed, None),
        State::RolledBack { reason } => (OutcomeSpec::RolledBack, Some(reason.clone())),
        State::Failed {
            reason,
            refused: true,
        } => (OutcomeSpec::Rejected, Some(reason.clone())),
        State::Failed { reason, .. } => (OutcomeSpec::Failed, Some(reason.clone())),
        other => (
            OutcomeSpec::Failed,
            Some(format!("unfinished: {}", state_name(other))),
        ),
    }
}

/// The end state; the outcome from `job` (without one, `failed` until the caller decides).
pub fn end_state(job: Option<&Job>, sim: &SimEcu, world: &World, now: u64) -> EndState {
    let unfinished = State::Submitted;
    let (outcome, reason) = outcome_of(job.map_or(&unfinished, |j| &j.state));
    let running = sim.ecu.running();
    EndState {
        outcome,
        reason,
        version: running.map(|r| r.image.header.version),
        slot: running.map(|r| r.slot),
        confirmed: running.is_some_and(|r| r.confirmed),
        boots: world.boots,
        rollbacks: world.rollbacks,
        dtcs: sim
            .ecu
            .dtcs()
            .matching(0xFF)
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
        simulated_us: now,
        download_resumed: world.download_resumed,
        installed: world.images[0]
            .bytes
            .get(..)
            .and_then(|b| image::parse(b).ok())
            .map(|p| p.header.version),
    }
}

impl SlotSpec {
    pub fn slot(self) -> Slot {
        match self {
            SlotSpec::Primary => Slot::Primary,
            SlotSpec::Secondary => Slot::Secondary,
        }
    }
}

/// The DTC code of a `D00300`-style name.
pub fn dtc_code(name: &str) -> Option<u32> {
    parse_dtc(name)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}
