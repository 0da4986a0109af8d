//! Running a job: the driver loop, and the live workers (real HTTP(S), real DoIP over TCP, the
//! wall clock). The same driver runs simulated jobs with other [`Workers`] (an in-process ECU,
//! virtual time).
//!
//! The driver loop asks the [`Manager`] for a command, persists the job, runs the worker for
//! that command, and feeds every worker event back through the manager (persisting the job
//! after each state change, and before each side effect the new state announces). Kill the
//! process at any instant and [`run`] on the same store resumes the job.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ecu_sim::image::{self, TLV_KEYHASH};
use ecu_sim::proto::uds::codec::{BootStatusRecord, SlotRecord, StagingRecord, did};

use super::error::OtaError;
use super::job::{ApplyStep, Job, State, TransferStep};
use super::manager::{Command, Manager, Observation, WorkerEvent};
use super::manifest::{Manifest, Target};
use super::store::Store;
use crate::download::{self, DownloadConfig, DownloadError, DownloadEvent};
use crate::flasher::{
    FlashEvent, Flasher, FlasherConfig, FlasherError, InstallGate, Outcome, Phase,
};
use crate::target::AnyTransport;
use crate::transport::Transport;
use crate::uds_client::{UdsClient, UdsConfig};

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Settings of the driver and the flasher.
#[derive(Clone, Debug, Default)]
pub struct LiveConfig {
    pub manager: Manager,
    pub download: DownloadConfig,
    pub flasher: FlasherConfig,
    /// Asked before the ECU is asked to install the image; a refusal ends [`drive`] with
    /// [`OtaError::Stopped`] (`hil ota serve`'s cancel).
    pub install_gate: Option<InstallGate>,
}

/// A download that did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadFailure {
    pub reason: String,
    /// Worth another attempt (the link, not the artifact).
    pub retryable: bool,
    /// The bytes did not match the manifest's size or SHA-256 and were deleted.
    pub corrupt: bool,
}

/// What the driver needs from the world: a clock, a way to fetch the artifact, and a UDS
/// connection to the target.
pub trait Workers: Sync {
    type Transport: Transport;
    /// Microseconds: wall clock since the Unix epoch, or virtual time.
    fn now_us(&self) -> u64;
    /// Fetch the manifest's artifact into `dest`, resuming from the bytes already there;
    /// `progress` gets the bytes on disk, `note` what happened (retries, restarts).
    fn download(
        &self,
        m: &Manifest,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
        event: &mut (dyn FnMut(&DownloadEvent) + Send),
    ) -> impl Future<Output = Result<(), DownloadFailure>>;
    /// A UDS client connected to `target`.
    fn connect(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<UdsClient<Self::Transport>, String>>;
}

/// Real HTTP and DoIP over TCP, the wall clock.
#[derive(Clone, Debug, Default)]
pub struct LiveWorkers {
    pub download: DownloadConfig,
    /// The UDS client's settings (the security key algorithm of a bench).
    pub uds: UdsConfig,
    /// Sees every download event as it happens (a bench's fault engine).
    pub watch: Option<DownloadWatch>,
}

/// A synchronous observer of the downloader's events.
#[derive(Clone)]
pub struct DownloadWatch(pub Arc<dyn Fn(&DownloadEvent) + Send + Sync>);

impl std::fmt::Debug for DownloadWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadWatch")
    }
}

impl Workers for LiveWorkers {
    type Transport = AnyTransport;

    fn now_us(&self) -> u64 {
        now_us()
    }

    async fn download(
        &self,
        m: &Manifest,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
        event: &mut (dyn FnMut(&DownloadEvent) + Send),
    ) -> Result<(), DownloadFailure> {
        // The manifest's CA file wins over the runner's (`--ca-file`).
        let mut config = self.download.clone();
        if let Some(ca) = &m.artifact.ca_file {
            config.ca_file = Some(ca.clone());
        }
        let result = download::download(
            &m.artifact.url,
            dest,
            m.artifact.size,
            &m.sha256(),
            &config,
            |e: &DownloadEvent| {
                if let Some(w) = &self.watch {
                    (w.0)(e);
                }
                match e {
                    DownloadEvent::Progress { bytes, .. } => progress(*bytes),
                    other => event(other),
                }
            },
        )
        .await;
        result
            .map(|_| ())
            .map_err(|e: DownloadError| DownloadFailure {
                retryable: e.is_retryable(),
                corrupt: matches!(
                    e,
                    DownloadError::HashMismatch { .. } | DownloadError::SizeMismatch { .. }
                ),
                reason: e.to_string(),
            })
    }

    async fn connect(&self, target: &Target) -> Result<UdsClient<AnyTransport>, String> {
        let transport = crate::target::connect(target)
            .await
            .map_err(|e| format!("connecting to {}: {e}", target.describe()))?;
        Ok(UdsClient::new(transport, self.uds.clone()))
    }
}

/// What the driver tells its caller (for progress output).
#[derive(Clone, Debug)]
pub enum Progress {
    /// The job entered a new state (progress-only updates included).
    State(State),
    /// What the downloader did: requests, resumes, restarts, retries (its byte progress is
    /// the job's state).
    Download(DownloadEvent),
    /// A download attempt failed; `corrupt`: its bytes did not match the manifest and were
    /// deleted.
    DownloadFailed { reason: String, corrupt: bool },
    /// A worker's note in words (the transfer's retries, what the ECU said after a restart).
    Note(String),
    /// Bytes on disk between the persisted progress steps (at most one report per 50 ms);
    /// for live views, not a state change.
    Bytes(u64),
    /// The ECU's boot status (DID 0xFD00) while the apply waits for the outcome, each time it
    /// changes.
    BootStatus(BootStatusRecord),
}

/// The driver: a store, a job, the manager, the workers.
struct Driver<'a, W: Workers, P: FnMut(&Progress) + Send> {
    store: &'a Store,
    job: Job,
    config: &'a LiveConfig,
    workers: &'a W,
    progress: P,
}

impl<W: Workers, P: FnMut(&Progress) + Send> Driver<'_, W, P> {
    /// Apply a worker event, persist, report.
    fn event(&mut self, event: WorkerEvent) -> Result<(), OtaError> {
        let before = self.job.state.clone();
        let changed = self
            .config
            .manager
            .handle(&mut self.job, event, self.workers.now_us())?;
        // Anything the manager recorded is on disk before the worker goes on.
        if changed {
            self.store.save(&self.job)?;
        }
        if self.job.state != before {
            (self.progress)(&Progress::State(self.job.state.clone()));
        }
        Ok(())
    }

    fn note(&mut self, text: String) {
        (self.progress)(&Progress::Note(text));
    }
}

/// Run (or resume) job `id` live until it is finished. Returns the final job.
pub async fn run<P: FnMut(&Progress) + Send>(
    store: &Store,
    id: &str,
    config: &LiveConfig,
    progress: P,
) -> Result<Job, OtaError> {
    let workers = LiveWorkers {
        download: config.download.clone(),
        uds: UdsConfig::default(),
        watch: None,
    };
    drive(store, id, config, &workers, progress).await
}

/// Run (or resume) job `id` with `workers` until it is finished.
pub async fn drive<W: Workers, P: FnMut(&Progress) + Send>(
    store: &Store,
    id: &str,
    config: &LiveConfig,
    workers: &W,
    progress: P,
) -> Result<Job, OtaError> {
    let job = store.load(id)?;
    let mut d = Driver {
        store,
        job,
        config,
        workers,
        progress,
    };
    let mut resumed = !matches!(d.job.state, State::Submitted);
    loop {
        let before = d.job.state.clone();
        let cmd = config.manager.next(&mut d.job, workers.now_us(), resumed)?;
        resumed = false;
        store.save(&d.job)?;
        if d.job.state != before {
            (d.progress)(&Progress::State(d.job.state.clone()));
        }
        match cmd {
            Command::Done => return Ok(d.job),
            Command::Download => download_artifact(&mut d).await?,
            Command::Verify => verify(&mut d)?,
            Command::Transfer => transfer(&mut d).await?,
            Command::Apply | Command::AwaitOutcome => apply(&mut d, cmd).await?,
            Command::Observe => observe(&mut d).await?,
        }
    }
}

async fn download_artifact<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
) -> Result<(), OtaError> {
    let m = d.job.manifest.clone();
    let dest = d.store.artifact_path(&d.job.id);
    let (tx, mut rx) = std::sync::mpsc::channel::<Downloading>();
    let (ptx, etx) = (tx.clone(), tx);
    let mut progress = move |bytes| {
        let _ = ptx.send(Downloading::Bytes(bytes));
    };
    let mut event = move |e: &DownloadEvent| {
        let _ = etx.send(Downloading::Event(e.clone()));
    };
    let workers = d.workers;
    let result = {
        let download = workers.download(&m, &dest, &mut progress, &mut event);
        tokio::pin!(download);
        // Persist progress while the download runs (in steps: the bytes on disk are the truth
        // for a resume).
        let mut last_saved = 0u64;
        loop {
            let tick = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                biased;
                r = &mut download => break r,
                () = tick => {}
            }
            drain(d, &mut rx, &mut last_saved, m.artifact.size)?;
        }
    };
    let mut last_saved = 0;
    drain(d, &mut rx, &mut last_saved, 0)?;
    match result {
        Ok(()) => d.event(WorkerEvent::Downloaded),
        Err(f) => {
            (d.progress)(&Progress::DownloadFailed {
                reason: f.reason.clone(),
                corrupt: f.corrupt,
            });
            d.event(WorkerEvent::DownloadFailed {
                reason: f.reason,
                retryable: f.retryable,
            })
        }
    }
}

/// What a running download reports to the driver.
enum Downloading {
    Bytes(u64),
    Event(DownloadEvent),
}

/// Apply queued download progress (every 256 KiB and at the end) and events.
fn drain<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
    rx: &mut std::sync::mpsc::Receiver<Downloading>,
    last_saved: &mut u64,
    size: u64,
) -> Result<(), OtaError> {
    let mut unsaved = None;
    while let Ok(item) = rx.try_recv() {
        match item {
            Downloading::Bytes(bytes) if bytes >= *last_saved + 256 * 1024 || bytes == size => {
                *last_saved = bytes;
                unsaved = None;
                d.event(WorkerEvent::DownloadProgress { bytes })?;
            }
            Downloading::Bytes(bytes) => unsaved = Some(bytes),
            Downloading::Event(e) => (d.progress)(&Progress::Download(e)),
        }
    }
    if let Some(bytes) = unsaved {
        (d.progress)(&Progress::Bytes(bytes));
    }
    Ok(())
}

/// The artifact against the manifest: an MCUboot image of the announced version, signed with
/// the announced key. (The ECU verifies hash and signature itself before it installs.)
fn verify<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
) -> Result<(), OtaError> {
    let path = d.store.artifact_path(&d.job.id);
    let Ok(bytes) = std::fs::read(&path) else {
        return d.event(WorkerEvent::ArtifactMissing);
    };
    match check_artifact(&bytes, &d.job.manifest) {
        Ok(()) => d.event(WorkerEvent::Verified),
        Err(CheckError::Stale(why)) => {
            d.note(format!("verify: {why}; downloading again"));
            let _ = std::fs::remove_file(&path);
            d.event(WorkerEvent::ArtifactMissing)
        }
        Err(CheckError::Refused(reason)) => d.event(WorkerEvent::VerifyFailed { reason }),
    }
}

enum CheckError {
    /// The file on disk is not the downloaded artifact any more.
    Stale(String),
    /// The artifact is not what the manifest promises.
    Refused(String),
}

fn check_artifact(bytes: &[u8], m: &Manifest) -> Result<(), CheckError> {
    use sha2::Digest;
    if bytes.len() as u64 != m.artifact.size || sha2::Sha256::digest(bytes)[..] != m.sha256() {
        return Err(CheckError::Stale("the artifact on disk changed".into()));
    }
    let parsed = image::parse(bytes)
        .map_err(|e| CheckError::Refused(format!("not an MCUboot image: {e}")))?;
    let version = parsed.header.version;
    if version != m.version() {
        return Err(CheckError::Refused(format!(
            "image version {version} is not the manifest's {}",
            m.version
        )));
    }
    if let Some(key_id) = &m.key_id {
        let hash = parsed
            .find(TLV_KEYHASH, false)
            .map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match hash {
            Some(h) if h.starts_with(&key_id.to_ascii_lowercase()) => {}
            Some(h) => {
                return Err(CheckError::Refused(format!(
                    "signed with key {}…, the manifest expects {key_id}",
                    &h[..16]
                )));
            }
            None => {
                return Err(CheckError::Refused(format!(
                    "the image is not signed; the manifest expects key {key_id}"
                )));
            }
        }
    }
    Ok(())
}

/// Flasher events as job transitions.
fn transfer_step(e: &FlashEvent) -> Option<TransferStep> {
    Some(match e {
        FlashEvent::Phase(p) => match p {
            Phase::Session => TransferStep::Session,
            Phase::Unlock { .. } => TransferStep::Security,
            Phase::Erase { .. } => TransferStep::Erase,
            Phase::Download { .. } => TransferStep::RequestDownload,
            Phase::Transfer { blocks, .. } => TransferStep::Block { n: 0, of: *blocks },
            Phase::TransferExit => TransferStep::Exit,
            Phase::CheckMemory | Phase::CheckDependencies { .. } => TransferStep::Check,
            _ => return None,
        },
        FlashEvent::Block { n, total, .. } => TransferStep::Block { n: *n, of: *total },
        _ => return None,
    })
}

fn apply_step(e: &FlashEvent) -> Option<ApplyStep> {
    match e {
        FlashEvent::Phase(Phase::Reset | Phase::Revert) => Some(ApplyStep::Reset),
        FlashEvent::Phase(Phase::Reboot) => Some(ApplyStep::AwaitBoot),
        FlashEvent::Phase(Phase::Confirm { .. }) => Some(ApplyStep::AwaitConfirm),
        _ => None,
    }
}

/// Whether a flasher error is worth another programming attempt: the link or a transient ECU
/// condition, not the ECU's verdict on the image.
///
/// | error | retried | why |
/// |---|---|---|
/// | timeouts, a closed connection | yes | the link |
/// | check memory failed (`31 01 02 02` status ≠ 0) | yes | the artifact verified here, so the bytes changed on the way |
/// | NRC `0x21` busy, `0x22` conditions, `0x24` sequence, `0x71`–`0x73` transfer errors, `0x7E`/`0x7F` session | yes | transient, or caused by an earlier broken attempt |
/// | NRC `0x35` invalid key, `0x36` attempts exceeded, `0x37` delay | yes | a key corrupted on the way; the lockout delay is waited out |
/// | check dependencies failed (format, hash, signature, key, downgrade), NRC `0x31`/`0x70`/`0x13`, too large | no | the ECU refuses this image |
pub fn retryable(e: &FlasherError) -> bool {
    match e {
        FlasherError::MemoryCheckFailed { .. } => true,
        FlasherError::Image(_) => false,
        _ => match e.nrc() {
            Some(nrc) => matches!(
                nrc,
                0x21 | 0x22 | 0x24 | 0x35 | 0x36 | 0x37 | 0x71 | 0x72 | 0x73 | 0x7E | 0x7F
            ),
            None => !e.is_refusal(),
        },
    }
}

async fn transfer<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
) -> Result<(), OtaError> {
    let image = match std::fs::read(d.store.artifact_path(&d.job.id)) {
        Ok(b) => b,
        Err(_) => return d.event(WorkerEvent::ArtifactMissing),
    };
    let mut client = match d.workers.connect(&d.job.manifest.target).await {
        Ok(c) => c,
        Err(reason) => {
            d.note(format!("transfer: {reason}"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            return d.event(WorkerEvent::TransferFailed {
                reason,
                retryable: true,
            });
        }
    };
    let flasher = Flasher::new(FlasherConfig {
        permanent: d.job.manifest.permanent,
        ..d.config.flasher.clone()
    })
    .with_install_gate(d.config.install_gate.clone());
    // The flasher calls back synchronously before each request: persist there.
    let mut failure = None;
    let result = {
        let mut on = |e: &FlashEvent| {
            if failure.is_some() {
                return;
            }
            let recorded = match e {
                FlashEvent::NotReady { .. } => {
                    d.note(format!("transfer: {e}"));
                    Ok(())
                }
                FlashEvent::Requesting { boot_count } => d.event(WorkerEvent::Requesting {
                    boot_count: *boot_count,
                }),
                _ => match transfer_step(e) {
                    Some(step) => d.event(WorkerEvent::TransferStep(step)),
                    None => Ok(()),
                },
            };
            if let Err(err) = recorded {
                failure = Some(err);
            }
        };
        flasher.program(&mut client, &image, &mut on).await
    };
    if let Some(e) = failure {
        return Err(e);
    }
    match result {
        Ok(_) => d.event(WorkerEvent::Transferred),
        Err(FlasherError::Withheld { reason }) => Err(OtaError::Stopped { reason }),
        Err(e) => {
            let retryable = retryable(&e);
            d.note(format!("transfer: {e}"));
            if retryable && silent(&e) {
                // The ECU is off, rebooting or busy: the next attempt starts when it answers.
                drop(client);
                wait_for_ecu(d).await;
            }
            d.event(WorkerEvent::TransferFailed {
                reason: e.to_string(),
                retryable,
            })
        }
    }
}

async fn apply<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
    cmd: Command,
) -> Result<(), OtaError> {
    let version = d.job.manifest.version();
    let mut client = match d.workers.connect(&d.job.manifest.target).await {
        Ok(c) => c,
        Err(reason) => return d.event(WorkerEvent::ApplyFailed { reason }),
    };
    let flasher = Flasher::new(d.config.flasher.clone());
    let mut failure = None;
    let result = {
        let mut on = |e: &FlashEvent| {
            if failure.is_some() {
                return;
            }
            if let FlashEvent::BootStatus(s) = e {
                (d.progress)(&Progress::BootStatus(s.clone()));
            }
            if let Some(step) = apply_step(e)
                && let Err(err) = d.event(WorkerEvent::ApplyStep(step))
            {
                failure = Some(err);
            }
        };
        if cmd == Command::Apply {
            flasher.activate(&mut client, version, &mut on).await
        } else {
            flasher.await_outcome(&mut client, version, &mut on).await
        }
    };
    if let Some(e) = failure {
        return Err(e);
    }
    match result {
        Ok(Outcome::Committed { .. }) => d.event(WorkerEvent::Committed),
        Ok(Outcome::RolledBack { reason, .. }) => d.event(WorkerEvent::RolledBack { reason }),
        Err(e) => d.event(WorkerEvent::ApplyFailed {
            reason: e.to_string(),
        }),
    }
}

/// Whether the ECU did not answer at all (as opposed to answering no).
fn silent(e: &FlasherError) -> bool {
    match e {
        FlasherError::NoAnswer { .. } => true,
        FlasherError::Uds { source, .. } => source.nrc().is_none(),
        _ => false,
    }
}

/// Poll TesterPresent (a new connection each time) until the ECU answers, at most the boot
/// timeout.
async fn wait_for_ecu<W: Workers, P: FnMut(&Progress) + Send>(d: &mut Driver<'_, W, P>) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < d.config.flasher.boot_timeout {
        if let Ok(mut client) = d.workers.connect(&d.job.manifest.target).await
            && client
                .request_within(&[0x3E, 0x00], Duration::from_millis(500))
                .await
                .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After a restart in the apply phase: ask the ECU where it stands.
async fn observe<W: Workers, P: FnMut(&Progress) + Send>(
    d: &mut Driver<'_, W, P>,
) -> Result<(), OtaError> {
    let version = d.job.manifest.version();
    let mut last_error = String::new();
    let started = tokio::time::Instant::now();
    while started.elapsed() < d.config.flasher.boot_timeout {
        match observation(d.workers, &d.job.manifest, version).await {
            Ok(o) => {
                d.note(format!("observed the ecu: {o}"));
                return d.event(WorkerEvent::Observed(o));
            }
            Err(e) => {
                // The ECU may be booting (or swapping) right now.
                last_error = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    d.event(WorkerEvent::ApplyFailed {
        reason: format!("the ecu's boot status could not be read: {last_error}"),
    })
}

async fn observation<W: Workers>(
    workers: &W,
    m: &Manifest,
    version: ecu_sim::image::Version,
) -> Result<Observation, String> {
    let mut client = workers.connect(&m.target).await?;
    let dids = client
        .read_dids(&[did::BOOT_STATUS, did::STAGING_AREA])
        .await
        .map_err(|e| e.to_string())?;
    let get = |id| {
        dids.iter()
            .find(|(d, _)| *d == id)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("no 0x{id:04x} in the answer"))
    };
    let status = BootStatusRecord::decode(&get(did::BOOT_STATUS)?).map_err(|e| e.to_string())?;
    if status.version == Some(version) {
        return Ok(if status.confirmed {
            Observation::Committed
        } else {
            Observation::OnProbation
        });
    }
    let staging = StagingRecord::decode(&get(did::STAGING_AREA)?).map_err(|e| e.to_string())?;
    let slot_did = if staging.slot == 0 {
        did::PRIMARY_SLOT
    } else {
        did::SECONDARY_SLOT
    };
    let slot = SlotRecord::decode(&client.read_did(slot_did).await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let requested = slot.trailer & (SlotRecord::TRAILER_TEST | SlotRecord::TRAILER_PERMANENT) != 0
        && slot.trailer & SlotRecord::TRAILER_MAGIC != 0;
    if slot.version == Some(version) && slot.image == 1 && requested {
        return Ok(Observation::Requested);
    }
    if matches!(status.outcome, 4 | 5) {
        let reason = client
            .read_did(did::LAST_BOOT_REASON)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Observation::RolledBack {
            reason: String::from_utf8_lossy(&reason).into_owned(),
            boot_count: status.boot_count,
        });
    }
    let last_boot = client
        .read_did(did::LAST_BOOT_REASON)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Observation::NotStaged {
        running: status.version,
        last_boot: String::from_utf8_lossy(&last_boot).into_owned(),
    })
}
