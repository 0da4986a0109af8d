//! Running one scenario: the real OTA manager against the in-process virtual ECU, in virtual
//! time, on one thread. The same scenario and seed give the same trace, byte for byte.

use std::sync::Arc;
use std::time::Duration;

use ecu_sim::boot::Slot;
use ecu_sim::proto::uds::server::{Addressing, Incoming};

use super::schema::{Client, Scenario, SlotSpec};
use super::trace::Source;
use super::world::{Recorder, Step, Tap};
use crate::ota::live::Progress;
use crate::ota::sim::{Hooks, RequestFate, SimWorkers, SimWorld};
use crate::ota::store::Store;
use crate::sweep::converge::Checkpoint;

use super::client::{ManagerSeat, Never, run_manager};
pub use super::outcome::{EndState, RunError, RunResult};
use super::place::Place;
use super::prepare::{
    ARTIFACT_URL, Prepared, lock, manifest, prepare, scratch_dir, spawn_ticker, us, virtual_time,
};

/// Simulated time the ECU runs after the job ended, before the end state is read.
const SETTLE_US: u64 = 5_000_000;
/// A job that has not ended after this much simulated time is stuck.
pub const LIMIT_US: u64 = 3_600_000_000;

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
            .ok_or(RunError::ClockBeforeFork(f.at_us))?;
    }
    let epoch = workers.epoch;
    let shared = Arc::clone(&workers.world);
    let (kill, wake) = {
        let w = lock(&shared);
        (Arc::clone(&w.hooks.kill), Arc::clone(&w.hooks.wake))
    };
    let store = Store::open(dir)?.without_fsync();
    let id = match &fork {
        None => store.submit(manifest(&update, &s.update.version), 0)?.id,
        Some(f) => {
            let job = crate::ota::store::parse_job(&f.job_json, std::path::Path::new("fork.json"))?;
            store.save(&job)?;
            let path = store.artifact_path(&job.id);
            let len = (f.artifact_len as usize).min(update.len());
            if len == 0 {
                let _ = std::fs::remove_file(&path);
            } else if std::fs::read(&path).ok().as_deref() != Some(&update[..len]) {
                // (A sweep's worker keeps the file between points when it is already right.)
                std::fs::write(&path, &update[..len]).map_err(|source| RunError::Io {
                    what: "the fork's artifact",
                    path: path.clone(),
                    source,
                })?;
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
    let mut seat = SimSeat {
        world: Arc::clone(&shared),
        epoch,
    };
    let progress = || {
        let shared = Arc::clone(&shared);
        {
            // A manager starts: it holds nothing but what it reads from the store.
            let mut w = lock(&shared);
            let SimWorld { sim, hooks } = &mut *w;
            if let Some(watch) = hooks.checkpoint.clone() {
                let now = now();
                if !hooks.kill_pending && hooks.manager_down_until <= now {
                    watch.check(hooks, sim, now, Checkpoint::ManagerStart);
                }
            }
            hooks.manager_running = true;
        }
        move |p: &Progress| {
            let mut w = lock(&shared);
            let SimWorld { sim, hooks } = &mut *w;
            match p {
                Progress::State(state) => hooks.on_state(sim, now(), state),
                Progress::Note(n) => hooks.on_note(now(), n),
                // The simulated download told the world itself, as it happened.
                Progress::Download(_) | Progress::DownloadFailed { .. } => {}
                // The virtual ECU's own events say more (boots, swaps, confirms).
                Progress::BootStatus(_) | Progress::Bytes(_) => {}
            }
        }
    };
    let limit = epoch + Duration::from_micros(LIMIT_US);
    let watch = lock(&shared).hooks.checkpoint.clone();
    let manager = run_manager(
        &store,
        &id,
        &config,
        &workers,
        &kill,
        &mut seat,
        progress,
        Some((limit, LIMIT_US / 1_000_000)),
    );
    let job = match &watch {
        None => manager.await,
        Some(watch) => tokio::select! {
            biased;
            () = watch.wake.notified() => {
                // A sweep's fork reached a state known to lead to an end: it takes that end.
                ticker.abort();
                return watch.converged().ok_or(RunError::Unsupported(
                    "a fork was woken to converge without an end to take",
                ));
            }
            job = manager => job,
        },
    };
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            ticker.abort();
            return Err(e);
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
    let finish = lock(&shared).finish(Some(&job), now());
    Ok(finish.result(s, Some(job), full_checks, false))
}

impl SlotSpec {
    pub fn slot(self) -> Slot {
        match self {
            SlotSpec::Primary => Slot::Primary,
            SlotSpec::Secondary => Slot::Secondary,
        }
    }
}

/// The simulated world as the manager's seat: a power cut that took the manager down lets
/// it start again when power is back; a kill is stamped at the fault that killed it.
struct SimSeat {
    world: Arc<std::sync::Mutex<SimWorld<super::world::World>>>,
    epoch: tokio::time::Instant,
}

impl ManagerSeat for SimSeat {
    type Event = Never;

    fn next(&mut self) -> impl std::future::Future<Output = Never> {
        std::future::pending()
    }

    async fn handle(&mut self, event: Never) -> Option<tokio::time::Instant> {
        match event {}
    }

    fn restart_at(&mut self) -> Option<tokio::time::Instant> {
        let down = lock(&self.world).hooks.manager_down_until;
        (down > us(self.epoch.elapsed())).then(|| self.epoch + Duration::from_micros(down))
    }

    fn killed(&mut self) {
        let now = us(self.epoch.elapsed());
        let mut w = lock(&self.world);
        w.hooks.manager_running = false;
        w.hooks.kill_pending = false;
        let state = w.hooks.job_state.clone();
        // At the fault that killed it (its cut may lie ahead of the runtime's clock).
        let at = now.max(w.hooks.killed_at);
        w.hooks.push(
            at,
            Source::Runner,
            "manager_killed",
            format!("the OTA manager was killed in {state}; resuming from its store"),
        );
    }

    fn busy(&self) -> bool {
        false
    }
}
