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
use crate::ota::job::{State, TransferStep};
use crate::ota::live::{DownloadWatch, LiveWorkers, Progress, drive};
use crate::ota::manifest::{Artifact, Manifest};
use crate::ota::store::Store;
use crate::power::{ExternalCommand, Manual, PowerControl, PowerError, SerialRelay};
use crate::scenario::engine::{Engine, Observation, download_threshold};
use crate::scenario::expect;
use crate::scenario::outcome::{EndState, RunError, RunResult, outcome_of};
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

/// Read the ECU's boot status and DTCs, retrying while it does not answer (it may be booting
/// or swapping) until `within` passed.
pub async fn read_ecu(bench: &Bench, within: Duration) -> Result<EcuReading, String> {
    let until = Instant::now() + within;
    loop {
        let last = match read_once(bench).await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        if Instant::now() >= until {
            return Err(format!(
                "the ECU at {} did not answer within {within:?}: {last}",
                bench.target.describe()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn read_once(bench: &Bench) -> Result<EcuReading, String> {
    let transport = crate::target::connect(&bench.target)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = UdsClient::new(transport, bench.uds_config());
    let raw = client
        .read_did(did::BOOT_STATUS)
        .await
        .map_err(|e| e.to_string())?;
    let status = BootStatusRecord::decode(&raw).map_err(|e| e.to_string())?;
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

/// What the fault engine hands to the executor.
#[derive(Debug)]
enum Job {
    Act(usize, Action),
    /// Drain marker: the executor answers when everything before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The bench as a place for the fault engine: the manager's progress (synchronously), the
/// downloader's position, the server's armed faults and the clock become observations; what
/// fires goes to the executor.
struct BenchPlace {
    engine: Engine,
    start: Instant,
    trace: Trace,
    tap: Option<Tap>,
    actions: mpsc::UnboundedSender<Job>,
    /// Faults the artifact server carries out itself (armed at a byte offset).
    armed: Vec<(usize, FaultKind)>,
    size: u64,
    state: String,
    download_resumed: bool,
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

    /// Fire what `obs` triggers: traced, and handed to the executor.
    fn observe(&mut self, obs: Observation<'_>) {
        for m in self.engine.matches(&obs) {
            let text = self.engine.fire(m.fault, &m.what);
            let kind = TraceKind::FaultFired { fault: m.fault };
            self.push_kind(Source::Fault, "fault_fired", text, kind);
            let _ = self.actions.send(Job::Act(m.fault, m.action));
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
            Progress::Note(n) => match n.strip_prefix("download: ") {
                Some(d) => {
                    let event = download_event(d);
                    self.download_resumed |= event == "download_resumed";
                    self.push(Source::Download, event, d.to_string());
                }
                None => self.push(Source::Ota, "note", n.clone()),
            },
            Progress::State(state) => self.on_state(state),
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
    let dir = tempfile::tempdir().map_err(|e| RunError::Store(e.to_string()))?;
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
            return Err(RunError::Ecu(
                "external clients run against the virtual ECU only".into(),
            ));
        }
    };
    let boot_timeout = Duration::from_secs_f64(manager_spec.boot_timeout_s);
    let mut power = AnyPower::open(&bench.power).map_err(|e| RunError::Ecu(e.to_string()))?;
    power
        .set(true)
        .await
        .map_err(|e| RunError::Ecu(format!("switching power on: {e}")))?;

    // The bench must be where the scenario starts.
    let before = read_ecu(bench, boot_timeout).await.map_err(RunError::Ecu)?;
    let installed: Version = s.installed.version.parse().map_err(|e| RunError::Image {
        what: "installed",
        message: format!("{e}"),
    })?;
    if before.status.version != Some(installed) {
        return Err(RunError::Ecu(format!(
            "the bench ECU runs {}, the scenario starts from {installed}: bring the ECU to {installed} first",
            before
                .status
                .version
                .map_or_else(|| "nothing".to_string(), |v| v.to_string())
        )));
    }

    // The update, served from loopback.
    let update = match bench.images.get(&s.update.version) {
        None => build_image(&s.update, s.seed, "update")?,
        Some(path) => bench_image(path, &s.update.version)?,
    };
    let swapped = swaps(&s.update, s.seed)?;
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).map_err(|e| RunError::Store(e.to_string()))?;
    std::fs::write(artifacts.join(ARTIFACT), &update)
        .map_err(|e| RunError::Store(e.to_string()))?;
    let size = update.len() as u64;
    let (faults, armed) = pre_armed(&s, size);
    let (server, mut server_events) = ArtifactServer::bind("127.0.0.1:0", &artifacts, faults)
        .await
        .map_err(|e| RunError::Store(e.to_string()))?;
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
    let store = Store::open(&dir.join("store")).map_err(|e| RunError::Store(e.to_string()))?;
    let id = store
        .submit(manifest, crate::ota::live::now_us())
        .map_err(|e| RunError::Store(e.to_string()))?
        .id;

    let (tx, mut rx) = mpsc::unbounded_channel();
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
    }));
    let start = lock(&engine).start;
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

    // The server's requests and the faults it carried out.
    let listener = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            while let Some(e) = server_events.recv().await {
                let mut g = lock(&engine);
                if let ArtifactEvent::FaultFired { kind, offset } = &e {
                    let hit = g.armed.iter().find(|(_, k)| k == kind).map(|(i, _)| *i);
                    if let Some(i) = hit {
                        let text = g.engine.fire(i, &format!("at download byte {offset}"));
                        g.push_kind(
                            Source::Fault,
                            "fault_fired",
                            text,
                            TraceKind::FaultFired { fault: i },
                        );
                        continue;
                    }
                }
                g.push(Source::Download, "server", e.to_string());
            }
        })
    };

    // Time triggers: the engine's next deadline, observed when it is due.
    let clock = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            loop {
                let Some(due) = lock(&engine).engine.next_deadline_us() else {
                    break;
                };
                tokio::time::sleep_until(start + Duration::from_micros(due)).await;
                let mut g = lock(&engine);
                let now_us = g.now();
                g.observe(Observation::Tick { now_us });
            }
        })
    };

    // The executor: actions that take time, in order.
    let kill = Arc::new(Notify::new());
    let down_until = Arc::new(Mutex::new(None::<Instant>));
    let executor = {
        let (engine, kill, server, down_until) = (
            Arc::clone(&engine),
            Arc::clone(&kill),
            Arc::clone(&server),
            Arc::clone(&down_until),
        );
        let artifact = artifacts.join(ARTIFACT);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let (i, action) = match job {
                    Job::Act(i, a) => (i, a),
                    Job::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                };
                let note =
                    |event: &str, text: String| lock(&engine).push(Source::Fault, event, text);
                match action {
                    Action::PowerCut(cut) => {
                        if cut.kill_manager {
                            *lock(&down_until) =
                                Some(Instant::now() + Duration::from_millis(cut.restore_after_ms));
                            kill.notify_one();
                        }
                        match power.set(false).await {
                            Ok(_) => note("power_off", "power off".into()),
                            Err(e) => note("power_failed", format!("power off: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(cut.restore_after_ms)).await;
                        match power.set(true).await {
                            Ok(_) => note("power_on", "power on".into()),
                            Err(e) => note("power_failed", format!("power on: {e}")),
                        }
                    }
                    Action::KillManager => kill.notify_one(),
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
                            DownloadFault::HttpError(status) => {
                                f.fail_every_kth = Some((1, status))
                            }
                            DownloadFault::IgnoreRange => f.ignore_range = true,
                            DownloadFault::FlipByte => f.flip_byte_at = Some(0),
                        }
                        server.set_faults(f);
                    }
                    Action::SwapArtifact(which) => {
                        if let Some((_, bytes)) = swapped.iter().find(|(k, _)| *k == which) {
                            let _ = std::fs::write(&artifact, bytes);
                            note(
                                "artifact_swapped",
                                format!("the server now serves the {} image", swap_name(which)),
                            );
                        }
                    }
                    other => note(
                        "fault_unrealised",
                        format!("fault {}: {other:?} cannot be realised on a bench", i + 1),
                    ),
                }
            }
        })
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
    let job = loop {
        let down = lock(&down_until).take();
        if let Some(t) = down {
            tokio::time::sleep_until(t).await;
        }
        let progress = {
            let engine = Arc::clone(&engine);
            move |p: &Progress| lock(&engine).on_progress(p)
        };
        let result = tokio::select! {
            biased;
            () = kill.notified() => None,
            r = drive(&store, &id, &config, &workers, progress) => Some(r),
        };
        match result {
            Some(Ok(job)) => break job,
            Some(Err(e)) => return Err(RunError::Manager(e.to_string())),
            None => {
                let mut g = lock(&engine);
                let state = g.state.clone();
                g.push(
                    Source::Runner,
                    "manager_killed",
                    format!("the OTA manager was killed in {state}; resuming from its store"),
                );
            }
        }
    };

    // Pending power switching ends before the ECU is read.
    let (done, wait) = tokio::sync::oneshot::channel();
    let _ = tx.send(Job::Flush(done));
    let _ = wait.await;
    clock.abort();
    // (The engine keeps a sender: the executor is stopped, not drained.)
    executor.abort();
    let reading = read_ecu(bench, boot_timeout).await;
    listener.abort();
    drop(server);

    let mut g = lock(&engine);
    let (outcome, reason) = outcome_of(&job.state);
    let mut failures = Vec::new();
    let read = match reading {
        Ok(r) => {
            g.push(
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
        Err(e) => {
            failures.push(format!("the ECU does not answer at the end: {e}"));
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
        // A real ECU's boots and reverts are not counted (`realise` skips such expectations).
        boots: 0,
        rollbacks: 0,
        dtcs: read.map(|r| r.dtcs).unwrap_or_default(),
        simulated_us: g.now(),
        download_resumed: g.download_resumed,
        installed: Some(installed),
    };
    failures.extend(g.engine.unfired());
    failures.extend(expect::check(&s.expect, &end, &g.trace, true));
    Ok(RunResult {
        trace: g.trace.clone(),
        end,
        failures,
        job: Some(job),
        evidence: None,
        real_time: true,
    })
}

/// The bench's own image for `version`: it must read, parse and carry that version.
fn bench_image(path: &Path, version: &str) -> Result<Vec<u8>, RunError> {
    let err = |message: String| RunError::Image {
        what: "update",
        message: format!("bench image {}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let header = ecu_sim::image::Header::parse(&bytes).map_err(|e| err(e.to_string()))?;
    if version.parse::<Version>().ok() != Some(header.version) {
        return Err(err(format!(
            "its header says {}, the scenario updates to {version}",
            header.version
        )));
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
