//! Running a scenario on a bench: the project's OTA manager updates a real ECU over the
//! bench's target, from the harness's own artifact server on loopback, while the scenario's
//! faults are realised with what the bench has (its power switch, the server, the manager).
//! Real time throughout; call it only for scenarios [`super::realise::unrealisable`] accepts.
//!
//! | step | what happens |
//! |---|---|
//! | power | switched on (a previous run may have left it off) |
//! | precondition | the ECU answers and runs the scenario's `installed.version`, else an error: the bench is not in the scenario's starting state |
//! | update | the bench's own image for the scenario's `update.version` (`images:`), else one built from the scenario (its seed, its signing key); served by [`ArtifactServer`] from a temp dir; the job is submitted to a fresh store |
//! | faults | the fault engine ([`crate::scenario::engine`]) observes the manager's progress (job states, transfer blocks: block n+1 goes out once block n is acknowledged), the downloader's position (it stops at every download trigger's byte) and the clock; actions: power off → `restore_after_ms` → on, killing and restarting the manager, server faults (download faults triggered at a byte offset act at exactly that offset), serving a swapped artifact |
//! | end | after the job and any pending power restore, the ECU is read over UDS: boot status (version, slot, confirmed) and its DTCs |
//!
//! The trace holds what the harness saw (job states, notes, faults, power switching, server
//! requests), stamped with real microseconds since the start.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::boot::Slot;
use ecu_sim::image::Version;
use ecu_sim::proto::uds::codec::{BootStatusRecord, did};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::schema::{Bench, PowerSpec};
use crate::artifact::{ArtifactEvent, ArtifactServer, FaultKind, Faults};
use crate::download::{DownloadConfig, DownloadEvent};
use crate::ota::job::{Job, State, TransferStep};
use crate::ota::live::{DownloadWatch, LiveWorkers, Progress};
use crate::ota::manifest::{Artifact, Manifest};
use crate::ota::store::Store;
use crate::power::{ExternalCommand, Manual, PowerControl, PowerError, SerialRelay};
use crate::scenario::client::{ManagerSeat, run_manager};
use crate::scenario::engine::{Engine, Observation, download_threshold};
use crate::scenario::outcome::{BenchImageProblem, EndState, RunError, RunResult, outcome_of};
use crate::scenario::place::{Finish, Place, PlaceKind};
use crate::scenario::prepare::{build_image, live_config, real_time, swaps};
use crate::scenario::schema::{Action, ArtifactSwap, Client, DownloadFault, Scenario};
use crate::scenario::trace::{Source, Trace, TraceKind};
use crate::scenario::world::{Tap, download_event, progress_only, state_name};
use crate::uds_client::UdsClient;

/// The file name the update is served under.
const ARTIFACT: &str = "update.bin";

/// The bench's power switch.
#[derive(Debug)]
pub enum AnyPower {
    Relay(SerialRelay),
    Command(ExternalCommand),
    /// The operator at the bench: prompts on stderr (stdout carries the report), answers on stdin.
    Manual(Manual<tokio::io::BufReader<tokio::io::Stdin>, tokio::io::Stderr>),
    None,
}

impl AnyPower {
    /// Open the bench's power control (a relay's serial port opens here, exclusively).
    pub fn open(spec: &PowerSpec) -> Result<AnyPower, PowerError> {
        Ok(match spec {
            PowerSpec::Relay {
                port,
                baud,
                on,
                off,
            } => AnyPower::Relay(SerialRelay::open(port, *baud, on.clone(), off.clone())?),
            PowerSpec::Command { on, off } => AnyPower::Command(ExternalCommand {
                on: on.clone(),
                off: off.clone(),
            }),
            PowerSpec::Manual => AnyPower::Manual(Manual {
                input: tokio::io::BufReader::new(tokio::io::stdin()),
                prompt: tokio::io::stderr(),
            }),
            PowerSpec::None => AnyPower::None,
        })
    }

    /// Switch; `Ok(false)` if the bench cannot switch power.
    pub async fn set(&mut self, on: bool) -> Result<bool, PowerError> {
        match self {
            AnyPower::Relay(p) => p.set(on).await.map(|()| true),
            AnyPower::Command(p) => p.set(on).await.map(|()| true),
            AnyPower::Manual(p) => p.set(on).await.map(|()| true),
            AnyPower::None => Ok(false),
        }
    }
}

/// What the ECU runs, read over UDS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcuReading {
    pub status: BootStatusRecord,
    /// Stored DTCs (ReadDTCInformation 02 FF), if the ECU answered it.
    pub dtcs: Vec<u32>,
}

/// The bench is not in a state a run can start from, or its ECU cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the ECU at {target} did not answer within {within:?}: {last}")]
    NoAnswer {
        target: String,
        within: Duration,
        last: ReadError,
    },
    #[error(
        "the bench ECU runs {found}, the scenario starts from {wanted}: bring the ECU to {wanted} first"
    )]
    WrongStart { found: String, wanted: Version },
}

/// One failed read of the ECU's state over UDS.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Connect(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Uds(#[from] crate::uds_client::ClientError),
    #[error("its boot status record: {0}")]
    Status(#[from] ecu_sim::proto::uds::codec::CodecError),
}

/// Read the ECU's boot status and DTCs, retrying while it does not answer (it may be booting
/// or swapping) until `within` passed.
pub async fn read_ecu(bench: &Bench, within: Duration) -> Result<EcuReading, BenchError> {
    let until = Instant::now() + within;
    loop {
        let last = match read_once(bench).await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        if Instant::now() >= until {
            return Err(BenchError::NoAnswer {
                target: bench.target.describe(),
                within,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn read_once(bench: &Bench) -> Result<EcuReading, ReadError> {
    let transport = crate::target::connect(&bench.target).await?;
    let mut client = UdsClient::new(transport, bench.uds_config());
    let raw = client.read_did(did::BOOT_STATUS).await?;
    let status = BootStatusRecord::decode(&raw)?;
    let dtcs = match client.request(&[0x19, 0x02, 0xFF]).await {
        Ok(r) => parse_dtcs(&r),
        Err(_) => Vec::new(),
    };
    Ok(EcuReading { status, dtcs })
}

/// DTCs of a `59 02 mask (dtc[3] status)…` response.
fn parse_dtcs(r: &[u8]) -> Vec<u32> {
    r.get(3..)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([0, c[0], c[1], c[2]]))
        .collect()
}

/// What the fault engine hands to the dispatcher.
#[derive(Debug)]
enum Task {
    Act(usize, Action),
}

/// The bench as a place for the fault engine: the manager's progress (synchronously), the
/// downloader's position, the server's armed faults and the clock become observations; what
/// fires goes to the dispatcher ([`BenchSeat`]).
struct BenchPlace {
    engine: Engine,
    start: Instant,
    trace: Trace,
    tap: Option<Tap>,
    actions: mpsc::UnboundedSender<Task>,
    /// Faults the artifact server carries out itself (armed at a byte offset).
    armed: Vec<(usize, FaultKind)>,
    size: u64,
    state: String,
    download_resumed: bool,
    /// The version the ECU ran at the start.
    installed: Version,
    /// The ECU as read over UDS once the job ended (before: `None`).
    reading: Option<Result<EcuReading, BenchError>>,
}

impl Place for BenchPlace {
    fn kind(&self) -> PlaceKind {
        PlaceKind::Bench
    }

    /// The end read from the real ECU over UDS (boot status, DTCs); a real ECU's boots and
    /// reverts are not counted (`realise` skips such expectations).
    fn finish(&mut self, job: Option<&Job>, now_us: u64) -> Finish {
        let unfinished = State::Submitted;
        let (outcome, reason) = outcome_of(job.map_or(&unfinished, |j| &j.state));
        let mut findings = Vec::new();
        let read = match self.reading.take() {
            Some(Ok(r)) => {
                self.push(
                    Source::Ecu,
                    "ecu_read",
                    format!(
                        "the ECU runs {} from slot {}{}",
                        r.status
                            .version
                            .map_or_else(|| "nothing".to_string(), |v| v.to_string()),
                        r.status.slot,
                        if r.status.confirmed {
                            ", confirmed"
                        } else {
                            ""
                        }
                    ),
                );
                Some(r)
            }
            Some(Err(e)) => {
                findings.push(format!("the ECU does not answer at the end: {e}"));
                None
            }
            None => {
                findings.push("the ECU was not read at the end".to_string());
                None
            }
        };
        let status = read.as_ref().map(|r| &r.status);
        let end = EndState {
            outcome,
            reason,
            version: status.and_then(|s| s.version),
            slot: status.map(|s| {
                if s.slot == 0 {
                    Slot::Primary
                } else {
                    Slot::Secondary
                }
            }),
            confirmed: status.is_some_and(|s| s.confirmed),
            boots: 0,
            rollbacks: 0,
            dtcs: read.map(|r| r.dtcs).unwrap_or_default(),
            simulated_us: now_us,
            download_resumed: self.download_resumed,
            installed: Some(self.installed),
        };
        Finish {
            end,
            findings,
            unfired: self.engine.unfired(),
            trace: self.trace.clone(),
            evidence: None,
        }
    }
}

impl BenchPlace {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn push(&mut self, source: Source, event: &str, text: String) {
        self.push_kind(source, event, text, TraceKind::Other);
    }

    fn push_kind(&mut self, source: Source, event: &str, text: String, kind: TraceKind) {
        let at = self.now();
        self.trace.push_kind(at, source, event, text, kind);
        if let (Some(t), Some(e)) = (&self.tap, self.trace.events.last()) {
            (t.0)(e);
        }
    }

    /// Fire what `obs` triggers: traced, and handed to the dispatcher.
    fn observe(&mut self, obs: Observation<'_>) {
        for m in self.engine.matches(&obs) {
            let text = self.engine.fire(m.fault, &m.what);
            let kind = TraceKind::FaultFired { fault: m.fault };
            self.push_kind(Source::Fault, "fault_fired", text, kind);
            let _ = self.actions.send(Task::Act(m.fault, m.action));
        }
    }

    /// Where the downloader stands (its requests and every write, stopping at each
    /// download trigger's byte).
    fn on_download(&mut self, e: &DownloadEvent) {
        let at = match e {
            DownloadEvent::Started { offset, .. } => *offset,
            DownloadEvent::Progress { bytes, .. } => *bytes,
            _ => return,
        };
        let total = self.size;
        self.observe(Observation::Download { at, total });
    }

    fn on_progress(&mut self, p: &Progress) {
        match p {
            Progress::Download(_) | Progress::DownloadFailed { .. } => {
                self.download_resumed |= matches!(
                    p,
                    Progress::Download(DownloadEvent::Started { resumed: true, .. })
                );
                if let Some((event, text)) = download_event(p) {
                    self.push(Source::Download, event, text);
                }
            }
            Progress::Note(n) => self.push(Source::Ota, "note", n.clone()),
            Progress::State(state) => self.on_state(state),
            // What the real ECU runs is read once at the end (`ecu_read`).
            Progress::BootStatus(_) | Progress::Bytes(_) => {}
        }
    }

    fn on_state(&mut self, state: &State) {
        if let State::Transferring {
            step: TransferStep::Block { n, of },
        } = state
            && n < of
        {
            // The flasher reports a block once it is acknowledged; the next one goes out now.
            self.observe(Observation::TransferBlock { n: n + 1, of: *of });
        }
        if progress_only(state) {
            return;
        }
        let name = state_name(state);
        let kind = TraceKind::Job(Arc::new(state.clone()));
        self.push_kind(
            Source::Ota,
            &format!("state:{name}"),
            state.to_string(),
            kind,
        );
        self.state = name.clone();
        self.observe(Observation::State(&name));
    }
}

/// The bench as the manager's seat, and the run's events: the artifact server's requests and
/// the faults it carried out, the actions the fault engine fired (in order; those behind a
/// power cut wait until power is back), the engine's time triggers and the pending power
/// restore.
struct BenchSeat {
    place: Arc<Mutex<BenchPlace>>,
    server_events: mpsc::UnboundedReceiver<ArtifactEvent>,
    actions: mpsc::UnboundedReceiver<Task>,
    power: AnyPower,
    server: Arc<ArtifactServer>,
    swapped: Vec<(ArtifactSwap, Vec<u8>)>,
    artifact: std::path::PathBuf,
    /// Power comes back then.
    power_on_at: Option<Instant>,
}

/// An event of the bench.
#[derive(Debug)]
enum BenchEvent {
    Server(ArtifactEvent),
    Act(usize, Action),
    /// A time trigger or the power restore is due.
    Timer,
}

impl BenchSeat {
    fn note(&self, event: &str, text: String) {
        lock(&self.place).push(Source::Fault, event, text);
    }

    fn on_server(&self, e: &ArtifactEvent) {
        let mut g = lock(&self.place);
        if let ArtifactEvent::FaultFired { kind, offset } = e {
            let hit = g.armed.iter().find(|(_, k)| k == kind).map(|(i, _)| *i);
            if let Some(i) = hit {
                let text = g.engine.fire(i, &format!("at download byte {offset}"));
                g.push_kind(
                    Source::Fault,
                    "fault_fired",
                    text,
                    TraceKind::FaultFired { fault: i },
                );
                return;
            }
        }
        g.push(Source::Download, "server", e.to_string());
    }

    /// Carry out fault `i`'s action; `Some(t)`: the manager dies now, back at `t`.
    async fn act(&mut self, i: usize, action: Action) -> Option<Instant> {
        match action {
            Action::PowerCut(cut) => {
                let back = Instant::now() + Duration::from_millis(cut.restore_after_ms);
                match self.power.set(false).await {
                    Ok(_) => self.note("power_off", "power off".into()),
                    Err(e) => self.note("power_failed", format!("power off: {e}")),
                }
                self.power_on_at = Some(back);
                return cut.kill_manager.then_some(back);
            }
            Action::KillManager => return Some(Instant::now()),
            Action::Download(d) => {
                let mut f = Faults {
                    once: true,
                    seed: i as u64,
                    ..Faults::default()
                };
                match d {
                    DownloadFault::Close => f.close_after_bytes = Some(0),
                    DownloadFault::StallMs(ms) => {
                        f.stall_after_bytes = Some(0);
                        f.stall_ms = ms;
                    }
                    DownloadFault::Throttle(b) => {
                        f.throttle_bytes_per_sec = Some(b);
                        f.once = false;
                    }
                    DownloadFault::HttpError(status) => f.fail_every_kth = Some((1, status)),
                    DownloadFault::IgnoreRange => f.ignore_range = true,
                    DownloadFault::FlipByte => f.flip_byte_at = Some(0),
                }
                self.server.set_faults(f);
            }
            Action::SwapArtifact(which) => {
                if let Some((_, bytes)) = self.swapped.iter().find(|(k, _)| *k == which) {
                    let _ = std::fs::write(&self.artifact, bytes);
                    self.note(
                        "artifact_swapped",
                        format!("the server now serves the {} image", swap_name(which)),
                    );
                }
            }
            other => self.note(
                "fault_unrealised",
                format!("fault {}: {other:?} cannot be realised on a bench", i + 1),
            ),
        }
        None
    }
}

impl ManagerSeat for BenchSeat {
    type Event = BenchEvent;

    async fn next(&mut self) -> BenchEvent {
        let due = {
            let g = lock(&self.place);
            g.engine
                .next_deadline_us()
                .map(|us| g.start + Duration::from_micros(us))
        };
        let timer = match (due, self.power_on_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let powered = self.power_on_at.is_none();
        tokio::select! {
            biased;
            Some(e) = self.server_events.recv() => BenchEvent::Server(e),
            Some(Task::Act(i, a)) = self.actions.recv(), if powered => BenchEvent::Act(i, a),
            () = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => BenchEvent::Timer,
        }
    }

    async fn handle(&mut self, event: BenchEvent) -> Option<Instant> {
        match event {
            BenchEvent::Server(e) => self.on_server(&e),
            BenchEvent::Act(i, a) => return self.act(i, a).await,
            BenchEvent::Timer => {
                if self.power_on_at.is_some_and(|t| t <= Instant::now()) {
                    self.power_on_at = None;
                    match self.power.set(true).await {
                        Ok(_) => self.note("power_on", "power on".into()),
                        Err(e) => self.note("power_failed", format!("power on: {e}")),
                    }
                }
                let mut g = lock(&self.place);
                let now_us = g.now();
                if g.engine.next_deadline_us().is_some_and(|d| d <= now_us) {
                    g.observe(Observation::Tick { now_us });
                }
            }
        }
        None
    }

    fn restart_at(&mut self) -> Option<Instant> {
        None
    }

    fn killed(&mut self) {
        let mut g = lock(&self.place);
        let state = g.state.clone();
        g.push(
            Source::Runner,
            "manager_killed",
            format!("the OTA manager was killed in {state}; resuming from its store"),
        );
    }

    fn busy(&self) -> bool {
        self.power_on_at.is_some() || !self.actions.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Server faults that act at a byte offset of the download: armed before it starts, so they
/// land exactly there (the server's offsets are absolute file offsets).
fn pre_armed(s: &Scenario, size: u64) -> (Faults, Vec<(usize, FaultKind)>) {
    let mut faults = Faults {
        once: true,
        seed: s.seed,
        ..Faults::default()
    };
    let mut armed = Vec::new();
    for (i, f) in s.faults.iter().enumerate() {
        let Some(at) = download_threshold(&f.when, size) else {
            continue;
        };
        let kind = match &f.action {
            Action::Download(DownloadFault::Close) => {
                faults.close_after_bytes = Some(at);
                FaultKind::CloseAfter
            }
            Action::Download(DownloadFault::StallMs(ms)) => {
                faults.stall_after_bytes = Some(at);
                faults.stall_ms = *ms;
                FaultKind::Stall
            }
            Action::Download(DownloadFault::FlipByte) => {
                faults.flip_byte_at = Some(at);
                FaultKind::FlipByte
            }
            _ => continue,
        };
        armed.push((i, kind));
    }
    (faults, armed)
}

/// Run `scenario` on `bench`; `seed` overrides the file's.
pub fn run(
    scenario: &Scenario,
    bench: &Bench,
    seed: Option<u64>,
    tap: Option<Tap>,
) -> Result<RunResult, RunError> {
    let mut scenario = scenario.clone();
    if let Some(s) = seed {
        scenario.seed = s;
    }
    let runtime = real_time()?;
    let dir = tempfile::tempdir().map_err(RunError::Scratch)?;
    let result = runtime.block_on(execute(Arc::new(scenario), bench, dir.path(), tap));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn execute(
    s: Arc<Scenario>,
    bench: &Bench,
    dir: &Path,
    tap: Option<Tap>,
) -> Result<RunResult, RunError> {
    let manager_spec = match &s.client {
        Client::Manager(m) => bench.manager_spec(m),
        Client::External(_) => {
            return Err(RunError::Unsupported(
                "external clients run against the virtual ECU only",
            ));
        }
    };
    let boot_timeout = Duration::from_secs_f64(manager_spec.boot_timeout_s);
    let mut power = AnyPower::open(&bench.power).map_err(RunError::Power)?;
    power.set(true).await.map_err(RunError::PowerOn)?;

    // The bench must be where the scenario starts.
    let before = read_ecu(bench, boot_timeout).await?;
    let installed: Version = s
        .installed
        .version
        .parse()
        .map_err(|source| RunError::Version {
            what: "installed",
            version: s.installed.version.clone(),
            source,
        })?;
    if before.status.version != Some(installed) {
        return Err(BenchError::WrongStart {
            found: before
                .status
                .version
                .map_or_else(|| "nothing".to_string(), |v| v.to_string()),
            wanted: installed,
        }
        .into());
    }

    // The update, served from loopback.
    let enc_key = s
        .ecu
        .load_enc_key(s.dir.as_deref())
        .map_err(RunError::EncKey)?;
    let update = match bench.images.get(&s.update.version) {
        None => build_image(&s.update, s.seed, "update", enc_key.as_ref())?,
        Some(path) => bench_image(path, &s.update.version)?,
    };
    let swapped = swaps(&s.update, s.seed, enc_key.as_ref())?;
    let artifacts = dir.join("artifacts");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io {
            what: "the artifact directory",
            path,
            source,
        }
    };
    std::fs::create_dir_all(&artifacts).map_err(io(&artifacts))?;
    std::fs::write(artifacts.join(ARTIFACT), &update).map_err(io(&artifacts))?;
    let size = update.len() as u64;
    let (faults, armed) = pre_armed(&s, size);
    let (server, server_events) = ArtifactServer::bind("127.0.0.1:0", &artifacts, faults).await?;
    let server = Arc::new(server);
    let manifest = Manifest {
        artifact: Artifact {
            url: server.url(ARTIFACT),
            size,
            sha256: Sha256::digest(&update)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            ca_file: None,
        },
        version: s.update.version.clone(),
        target: bench.target.clone(),
        key_id: None,
        permanent: false,
    };
    let store = Store::open(&dir.join("store"))?;
    let id = store.submit(manifest, crate::ota::live::now_us())?.id;

    let (tx, rx) = mpsc::unbounded_channel();
    let mut fault_engine = Engine::new(Arc::clone(&s));
    for &(i, _) in &armed {
        fault_engine.arm(i);
    }
    let stops = fault_engine.download_stops(0, size);
    let engine = Arc::new(Mutex::new(BenchPlace {
        engine: fault_engine,
        armed: armed.clone(),
        start: Instant::now(),
        trace: Trace::default(),
        tap,
        actions: tx.clone(),
        size,
        state: "submitted".into(),
        download_resumed: false,
        installed,
        reading: None,
    }));
    lock(&engine).push(
        Source::Runner,
        "bench",
        format!(
            "bench {}: {} runs {installed}; power: {}",
            bench.name,
            bench.target.describe(),
            bench.power.describe()
        ),
    );

    // One dispatcher: the server's requests, the actions the engine fired, its clock and the
    // pending power restore (the seat), kills and the manager, in one loop.
    let mut seat = BenchSeat {
        place: Arc::clone(&engine),
        server_events,
        actions: rx,
        power,
        server: Arc::clone(&server),
        swapped,
        artifact: artifacts.join(ARTIFACT),
        power_on_at: None,
    };
    let config = live_config(&manager_spec);
    let workers = LiveWorkers {
        download: DownloadConfig {
            stops,
            ..config.download.clone()
        },
        uds: bench.uds_config(),
        watch: Some(DownloadWatch({
            let engine = Arc::clone(&engine);
            Arc::new(move |e: &DownloadEvent| lock(&engine).on_download(e))
        })),
    };
    let progress = || {
        let engine = Arc::clone(&engine);
        move |p: &Progress| lock(&engine).on_progress(p)
    };
    let never = Notify::new();
    let job = run_manager(
        &store, &id, &config, &workers, &never, &mut seat, progress, None,
    )
    .await?;
    drop(tx);
    let reading = read_ecu(bench, boot_timeout).await;
    drop(seat);
    drop(server);

    let mut g = lock(&engine);
    g.reading = Some(reading);
    let now = g.now();
    Ok(g.finish(Some(&job), now).result(&s, Some(job), true, true))
}

/// The bench's own image for `version`: it must read, parse and carry that version.
fn bench_image(path: &Path, version: &str) -> Result<Vec<u8>, RunError> {
    let err = |problem| RunError::BenchImage {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| err(BenchImageProblem::Read(e)))?;
    let header =
        ecu_sim::image::Header::parse(&bytes).map_err(|e| err(BenchImageProblem::Header(e)))?;
    if version.parse::<Version>().ok() != Some(header.version) {
        return Err(err(BenchImageProblem::Version {
            found: header.version,
            wanted: version.to_string(),
        }));
    }
    Ok(bytes)
}

fn swap_name(s: ArtifactSwap) -> &'static str {
    match s {
        ArtifactSwap::Tampered => "tampered",
        ArtifactSwap::Unsigned => "unsigned",
        ArtifactSwap::Downgraded => "downgraded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtc_records_are_read() {
        assert_eq!(
            parse_dtcs(&[
                0x59, 0x02, 0xFF, 0xD0, 0x03, 0x00, 0x09, 0xC1, 0x00, 0x01, 0x08
            ]),
            vec![0xD0_0300, 0xC1_0001]
        );
        assert!(parse_dtcs(&[0x59, 0x02]).is_empty());
        assert!(parse_dtcs(&[0x59, 0x02, 0xFF, 0xD0]).is_empty());
    }

    #[test]
    fn download_offset_faults_are_armed_at_their_offset() {
        let text = "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {download_bytes: 5000}\n    do: {download: close}\n  - when: {download_percent: 50}\n    do: {download: flip_byte}\n  - when: {state: transferring}\n    do: {download: close}\nexpect: {outcome: committed}\n";
        let s = crate::scenario::validate::parse(text, "x.yaml").unwrap();
        let (f, armed) = pre_armed(&s, 10_000);
        assert_eq!(f.close_after_bytes, Some(5000));
        assert_eq!(f.flip_byte_at, Some(5000));
        assert!(f.once);
        assert_eq!(
            armed,
            vec![(0, FaultKind::CloseAfter), (1, FaultKind::FlipByte)]
        );
    }
}
