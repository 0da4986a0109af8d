//! `hil ota serve`: the update manager as a long-running service — the same sans-IO
//! [`Manager`](super::manager::Manager), the same job store and the same driver
//! ([`live::drive`]) as `hil ota run`, with jobs submitted, listed and cancelled through a
//! REST API ([`super::api`]) and every job event published on one stream (server-sent events,
//! the portal).
//!
//! ## Jobs
//!
//! Every unfinished job has a task driving it with the configured workers (today: the local
//! ones of `hil ota run`, [`WorkersKind::Local`]; the seam for others is [`Service::spawn`]).
//! Jobs for different targets run concurrently; a job for a target that already has an
//! unfinished job is refused ([`ServeError::Busy`]). At start, the unfinished jobs of the store
//! resume (two for one target — submitted with `hil ota submit` meanwhile — run one after the
//! other, in id order). The service holds the store's runner lock: no `hil ota run` drives the
//! same jobs meanwhile.
//!
//! ## Cancel
//!
//! | job state | cancel | why |
//! |---|---|---|
//! | `submitted`, `downloading`, `downloaded`, `verifying` | yes: the task stops, the job is `cancelled` (the bytes downloaded stay in the store) | the ECU was not touched |
//! | `transferring` up to the check routine | yes: the programming sequence stops; the staging slot holds an unrequested download, which no boot installs (the next update erases it) | the ECU was not asked to install |
//! | `transferring` once check programming dependencies is (about to be) sent, `applying` | refused, [`ServeError::TooLate`] | the ECU may install the image at its next boot: the bootloader decides from there, and the job must observe the outcome |
//! | `committed`, `rolled_back`, `failed`, `cancelled` | refused, [`ServeError::Finished`] | nothing left to stop |
//!
//! The line between the two is drawn atomically: the flasher asks an
//! [`InstallGate`](crate::flasher::InstallGate) right before the request that lets the ECU
//! install the image, and the gate and a cancel take the same lock — either the cancel wins
//! and the request is never sent, or the request is on its way and the cancel is refused.
//! The cancel then waits for the job's task to end and persists `cancelled`.
//!
//! ## Events
//!
//! Each report of the driver becomes one [`TraceEvent`] (the names of the scenario trace:
//! `state:<state>`, `note`, `download_*`; the apply's boot status polls are `ecu_read` events
//! of source `ecu`), published as a [`ServiceEvent`] with its job id, a sequence number, and
//! its typed payload (the job state, the boot status). `at_us` is wall-clock microseconds since
//! the Unix epoch, as in job histories.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ecu_sim::proto::uds::codec::BootStatusRecord;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::error::OtaError;
use super::job::{Job, Phase, State, TransferStep};
use super::live::{self, LiveConfig, LiveWorkers, Progress};
use super::manifest::{Manifest, ManifestError};
use super::store::{Store, StoreError};
use crate::flasher::{FlashEvent, InstallGate, boot_outcome_name};
use crate::scenario::trace::{Source, TraceEvent, TraceKind};
use crate::scenario::world::{download_event, state_name};

/// Who executes the manager's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkersKind {
    /// In this process, as `hil ota run` does: HTTP(S) downloads, UDS over the target's
    /// transport.
    Local,
}

/// Errors of the service (the API maps each to a status: [`ServeError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The body is not a manifest document (syntax, types, unknown or missing fields).
    #[error("{0}")]
    Malformed(ManifestError),
    /// A manifest document whose values do not validate.
    #[error("{0}")]
    Invalid(ManifestError),
    #[error("{origin}: not valid JSON at line {line} column {column}: {message}")]
    Json {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the body is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("content type {found:?} is not a manifest: send application/json or application/yaml")]
    ContentType { found: String },
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the body: {0}")]
    Body(String),
    #[error("target {target} already has an unfinished job, {job} ({state})")]
    Busy {
        target: String,
        job: String,
        state: String,
    },
    #[error("no job {id}")]
    NoSuchJob { id: String },
    #[error("job {id} is {state}: nothing to cancel")]
    Finished { id: String, state: State },
    #[error("job {id} cannot be cancelled any more ({state}): {why}")]
    TooLate {
        id: String,
        state: State,
        why: String,
    },
    #[error("job {id} is being cancelled already")]
    Cancelling { id: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Ota(#[from] OtaError),
}

impl ServeError {
    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            ServeError::Malformed(_)
            | ServeError::Json { .. }
            | ServeError::NotUtf8(_)
            | ServeError::Body(_) => 400,
            ServeError::NoSuchJob { .. } => 404,
            ServeError::Busy { .. }
            | ServeError::Finished { .. }
            | ServeError::TooLate { .. }
            | ServeError::Cancelling { .. } => 409,
            ServeError::TooLarge { .. } => 413,
            ServeError::ContentType { .. } => 415,
            ServeError::Invalid(_) => 422,
            ServeError::Store(StoreError::NoSuchJob { .. }) => 404,
            ServeError::Store(_) | ServeError::Ota(_) => 500,
        }
    }

    /// The JSON body of the error: `error` (the message) and the facts a client acts on.
    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "error": self.to_string() });
        let extra = match self {
            ServeError::Malformed(m) | ServeError::Invalid(m) => match m {
                ManifestError::Syntax { line, column, .. } => {
                    serde_json::json!({"line": line, "column": column})
                }
                ManifestError::Field {
                    line,
                    column,
                    field,
                    ..
                } => serde_json::json!({"line": line, "column": column, "field": field}),
                ManifestError::Invalid { .. } => serde_json::json!({}),
            },
            ServeError::Json { line, column, .. } => {
                serde_json::json!({"line": line, "column": column})
            }
            ServeError::Busy { job, state, .. } => serde_json::json!({"job": job, "state": state}),
            ServeError::Finished { id, state } | ServeError::TooLate { id, state, .. } => {
                serde_json::json!({"job": id, "state": state})
            }
            ServeError::NoSuchJob { id } | ServeError::Cancelling { id } => {
                serde_json::json!({"job": id})
            }
            ServeError::TooLarge { limit } => serde_json::json!({"limit": limit}),
            _ => serde_json::json!({}),
        };
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }
}

/// How a manifest body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

impl BodyFormat {
    /// The format a `Content-Type` names (parameters such as `charset` ignored).
    pub fn of_content_type(value: Option<&str>) -> Result<BodyFormat, ServeError> {
        let found = value.unwrap_or("").to_string();
        let media = found
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Ok(BodyFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Ok(BodyFormat::Yaml)
            }
            _ => Err(ServeError::ContentType { found }),
        }
    }
}

/// What errors call the body of `POST /jobs`.
pub const ORIGIN: &str = "manifest";

/// Parse and check a submitted manifest: JSON is checked as JSON first (its errors are JSON
/// errors), then both formats go through [`Manifest::parse`] (YAML reads JSON), so the errors
/// are those of `hil ota submit`, located in the body. A `ca_file` is resolved against `base`
/// (the service's working directory).
pub fn parse_manifest(
    body: &[u8],
    format: BodyFormat,
    base: &Path,
) -> Result<Manifest, ServeError> {
    let text = std::str::from_utf8(body).map_err(ServeError::NotUtf8)?;
    if format == BodyFormat::Json
        && let Err(e) = serde_json::from_str::<serde_json::Value>(text)
    {
        return Err(ServeError::Json {
            origin: ORIGIN.to_string(),
            line: e.line(),
            column: e.column(),
            message: super::store::json_message(&e),
        });
    }
    let mut m = Manifest::parse(text, ORIGIN).map_err(|e| match e {
        ManifestError::Field { .. } => ServeError::Invalid(e),
        _ => ServeError::Malformed(e),
    })?;
    m.resolve_files(text, ORIGIN, base)
        .map_err(ServeError::Invalid)?;
    Ok(m)
}

/// The ECU's boot status as the portal shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootView {
    pub version: Option<String>,
    pub slot: u8,
    pub confirmed: bool,
    pub on_probation: bool,
    pub boot_count: u32,
    /// What the last boot did (DID 0xFD00's outcome, by name).
    pub last_boot: &'static str,
}

impl From<&BootStatusRecord> for BootView {
    fn from(s: &BootStatusRecord) -> Self {
        BootView {
            version: s.version.map(|v| v.to_string()),
            slot: s.slot,
            confirmed: s.confirmed,
            on_probation: s.on_probation,
            boot_count: s.boot_count,
            last_boot: boot_outcome_name(s.outcome),
        }
    }
}

/// A job's progress: bytes on disk, blocks accepted by the ECU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgressView {
    pub bytes: u64,
    pub size: u64,
    /// `[n, of]` of the last programming sequence (none before one reached the blocks).
    pub blocks: Option<[u32; 2]>,
}

impl ProgressView {
    pub fn of(job: &Job) -> ProgressView {
        let size = job.manifest.artifact.size;
        let bytes = match &job.state {
            State::Downloading { bytes } => *bytes,
            _ if job.was(Phase::Downloaded) => size,
            _ => 0,
        };
        let last_block = job.history.iter().rev().find_map(|t| match &t.state {
            State::Transferring {
                step: TransferStep::Block { n, of },
            } => Some([*n, *of]),
            _ => None,
        });
        let blocks = match &job.state {
            // A new sequence has not reached its blocks yet.
            State::Transferring {
                step:
                    TransferStep::Session
                    | TransferStep::Security
                    | TransferStep::Erase
                    | TransferStep::RequestDownload,
            } => last_block.map(|[_, of]| [0, of]),
            _ => last_block,
        };
        ProgressView {
            bytes,
            size,
            blocks,
        }
    }
}

/// A job as the API shows it: the job document, its phase, target, progress and the last
/// boot status the service saw.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub phase: &'static str,
    pub target: String,
    pub progress: ProgressView,
    /// Whether the service drives the job now.
    pub running: bool,
    pub boot: Option<BootView>,
    /// The job's last events besides its states, oldest first (since the service started).
    pub recent: Vec<Arc<ServiceEvent>>,
}

/// One event of the stream: a [`TraceEvent`] of job `job`, numbered.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceEvent {
    pub seq: u64,
    pub job: String,
    #[serde(flatten)]
    pub trace: TraceEvent,
    /// The job's state, for `state:` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// The ECU's boot status, for `ecu_read` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootView>,
}

/// The stream's items: trace events, and whole jobs (at subscription, after a submit, at the
/// end of a job, after a cancel).
#[derive(Clone, Debug)]
pub enum Published {
    Trace(Arc<ServiceEvent>),
    Job(Arc<JobView>),
}

/// Between a job's task and a cancel (see the module doc).
#[derive(Debug, Default)]
struct Gate {
    cancel: bool,
    install_requested: bool,
}

/// An unfinished job the service drives.
#[derive(Debug)]
struct Live {
    target: String,
    gate: Arc<Mutex<Gate>>,
    /// Taken by the cancel that stops the task.
    task: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    live: BTreeMap<String, Live>,
    /// One job at a time per target, in the order they were spawned (id order on resume,
    /// then submit order): the job at the front drives, the others wait.
    queues: BTreeMap<String, std::collections::VecDeque<String>>,
    boot: BTreeMap<String, BootView>,
    /// Bytes on disk of downloading jobs, between the persisted steps.
    bytes: BTreeMap<String, u64>,
    /// The last [`RECENT`] events of each job besides its states (notes, retries, the
    /// download, the ECU), for views that open later.
    recent: BTreeMap<String, std::collections::VecDeque<Arc<ServiceEvent>>>,
}

/// Events besides states kept per job for [`JobView::recent`].
pub const RECENT: usize = 30;

/// The service: a store, the manager's settings, the jobs it drives, the event stream.
#[derive(Debug)]
pub struct Service {
    store: Store,
    config: LiveConfig,
    workers: WorkersKind,
    /// Where relative `ca_file`s of submitted manifests are resolved.
    base: std::path::PathBuf,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Published>,
    seq: AtomicU64,
    /// A job left the front of a target's queue.
    turn_changed: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The target's key: two manifests naming the same ECU on the same transport clash.
fn target_key(m: &Manifest) -> String {
    m.target.describe()
}

impl Service {
    pub fn new(
        store: Store,
        config: LiveConfig,
        workers: WorkersKind,
        base: std::path::PathBuf,
    ) -> Arc<Service> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Service {
            store,
            config,
            workers,
            base,
            inner: Mutex::new(Inner::default()),
            events,
            seq: AtomicU64::new(0),
            turn_changed: tokio::sync::Notify::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where relative `ca_file`s of submitted manifests are resolved.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Subscribe to the stream (then read [`Service::views`] for the current state: nothing
    /// between the two is missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.events.subscribe()
    }

    /// Start driving every unfinished job of the store (id order); returns them, and the
    /// errors of the job files that do not read.
    pub fn resume_all(self: &Arc<Self>) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        let (jobs, broken) = self.store.scan()?;
        let unfinished: Vec<Job> = jobs
            .into_iter()
            .filter(|j| !j.state.is_terminal())
            .collect();
        let mut inner = lock(&self.inner);
        for job in &unfinished {
            self.spawn(&mut inner, job);
        }
        Ok((unfinished, broken))
    }

    /// Submit a manifest: refused while its target has an unfinished job.
    pub fn submit(self: &Arc<Self>, m: Manifest) -> Result<JobView, ServeError> {
        let target = target_key(&m);
        let mut inner = lock(&self.inner);
        if let Some((id, _)) = inner.live.iter().find(|(_, l)| l.target == target) {
            let state = self
                .store
                .load(id)
                .map_or_else(|e| e.to_string(), |j| j.state.to_string());
            return Err(ServeError::Busy {
                target,
                job: id.clone(),
                state,
            });
        }
        let job = self.store.submit(m, live::now_us())?;
        // Published before the task starts: the stream has the job before its first step.
        self.trace(
            &job.id,
            state_event(&job.state),
            Some(job.state.clone()),
            None,
        );
        let mut view = self.view_locked(&inner, job.clone());
        view.running = true;
        let _ = self.events.send(Published::Job(Arc::new(view.clone())));
        self.spawn(&mut inner, &job);
        Ok(view)
    }

    /// Start the task driving `job`. The seam for other workers: this is where a job's
    /// commands are handed to whoever executes them.
    fn spawn(self: &Arc<Self>, inner: &mut Inner, job: &Job) {
        let target = target_key(&job.manifest);
        let gate = Arc::new(Mutex::new(Gate {
            cancel: false,
            install_requested: job.requested_at_boot.is_some() || job.applied,
        }));
        inner
            .queues
            .entry(target.clone())
            .or_default()
            .push_back(job.id.clone());
        let turn = target.clone();
        let svc = Arc::clone(self);
        let id = job.id.clone();
        let task_gate = Arc::clone(&gate);
        let task = match self.workers {
            WorkersKind::Local => tokio::spawn(async move {
                svc.run_local(id, turn, task_gate).await;
            }),
        };
        inner.live.insert(
            job.id.clone(),
            Live {
                target,
                gate,
                task: Some(task),
            },
        );
    }

    /// Drive job `id` with the local workers until it ends (or its task is aborted).
    async fn run_local(self: Arc<Self>, id: String, turn: String, gate: Arc<Mutex<Gate>>) {
        let _turn = self.wait_turn(turn, &id).await;
        let mut config = self.config.clone();
        config.install_gate = Some(install_gate(Arc::clone(&gate)));
        let workers = LiveWorkers {
            download: config.download.clone(),
            ..LiveWorkers::default()
        };
        let svc = Arc::clone(&self);
        let pid = id.clone();
        let result = live::drive(&self.store, &id, &config, &workers, move |p: &Progress| {
            svc.on_progress(&pid, p);
        })
        .await;
        match result {
            Ok(job) => println!("{id}: {}", super::cli::summary(&job)),
            // The cancel that stopped the gate persists the job.
            Err(OtaError::Stopped { .. }) => return,
            Err(e) => {
                eprintln!("error: {id}: {e}");
                self.trace_other(
                    &id,
                    Source::Ota,
                    "note",
                    format!("the manager stopped: {e}"),
                );
            }
        }
        let mut inner = lock(&self.inner);
        if !lock(&gate).cancel {
            inner.live.remove(&id);
        }
        if let Ok(job) = self.store.load(&id) {
            let view = self.view_locked(&inner, job);
            drop(inner);
            let _ = self.events.send(Published::Job(Arc::new(view)));
        }
    }

    /// A report of job `id`'s driver, published.
    fn on_progress(&self, id: &str, p: &Progress) {
        match p {
            Progress::State(s) => {
                if !matches!(s, State::Downloading { .. }) {
                    lock(&self.inner).bytes.remove(id);
                }
                if !matches!(
                    s,
                    State::Downloading { .. }
                        | State::Transferring {
                            step: TransferStep::Block { .. }
                        }
                ) {
                    println!("{id}: {s}");
                }
                self.trace(id, state_event(s), Some(s.clone()), None);
            }
            Progress::Note(n) => self.trace_other(id, Source::Ota, "note", n.clone()),
            // Between the persisted steps: a progress-only `downloading` of the trace.
            Progress::Bytes(bytes) => {
                lock(&self.inner).bytes.insert(id.to_string(), *bytes);
                let s = State::Downloading { bytes: *bytes };
                self.trace(id, state_event(&s), Some(s), None);
            }
            Progress::BootStatus(s) => {
                let view = BootView::from(s);
                lock(&self.inner).boot.insert(id.to_string(), view.clone());
                let text = FlashEvent::BootStatus(s.clone()).to_string();
                let e = trace_event(Source::Ecu, "ecu_read", text, TraceKind::Other);
                self.trace(id, e, None, Some(view));
            }
            Progress::Download(_) | Progress::DownloadFailed { .. } => {
                if let Some((event, text)) = download_event(p) {
                    self.trace_other(id, Source::Download, event, text);
                }
            }
        }
    }

    fn trace_other(&self, id: &str, source: Source, event: &str, text: String) {
        self.trace(
            id,
            trace_event(source, event, text, TraceKind::Other),
            None,
            None,
        );
    }

    fn trace(&self, id: &str, trace: TraceEvent, state: Option<State>, boot: Option<BootView>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let e = ServiceEvent {
            seq,
            job: id.to_string(),
            trace,
            state,
            boot,
        };
        let e = Arc::new(e);
        if e.state.is_none() {
            let mut inner = lock(&self.inner);
            let recent = inner.recent.entry(id.to_string()).or_default();
            recent.push_back(Arc::clone(&e));
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        // No subscriber is fine.
        let _ = self.events.send(Published::Trace(e));
    }

    fn view_locked(&self, inner: &Inner, job: Job) -> JobView {
        let mut progress = ProgressView::of(&job);
        if let (State::Downloading { .. }, Some(live)) = (&job.state, inner.bytes.get(&job.id)) {
            progress.bytes = progress.bytes.max(*live).min(progress.size);
        }
        JobView {
            phase: job.state.phase().name(),
            target: job.manifest.target.describe(),
            progress,
            running: inner.live.contains_key(&job.id),
            boot: inner.boot.get(&job.id).cloned(),
            recent: inner
                .recent
                .get(&job.id)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            job,
        }
    }

    /// Every job of the store, and the errors of the files that do not read.
    pub fn views(&self) -> Result<(Vec<JobView>, Vec<String>), ServeError> {
        let (jobs, broken) = self.store.scan()?;
        let inner = lock(&self.inner);
        let views = jobs
            .into_iter()
            .map(|j| self.view_locked(&inner, j))
            .collect();
        Ok((views, broken.iter().map(|e| e.to_string()).collect()))
    }

    /// One job.
    pub fn view(&self, id: &str) -> Result<JobView, ServeError> {
        let job = self.load(id)?;
        Ok(self.view_locked(&lock(&self.inner), job))
    }

    fn load(&self, id: &str) -> Result<Job, ServeError> {
        // Ids are `job-N`; anything else names no file of the store.
        let valid = id
            .strip_prefix("job-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return Err(ServeError::NoSuchJob { id: id.to_string() });
        }
        self.store.load(id).map_err(|e| match e {
            StoreError::NoSuchJob { id, .. } => ServeError::NoSuchJob { id },
            e => ServeError::Store(e),
        })
    }

    /// Wait until `id` is at the front of `target`'s queue; the returned turn takes it out of
    /// the queue when dropped — at the end of the job's task, or when a cancel aborts it,
    /// waiting or not.
    async fn wait_turn(self: &Arc<Self>, target: String, id: &str) -> Turn {
        let turn = Turn {
            svc: Arc::clone(self),
            target,
            id: id.to_string(),
        };
        loop {
            // Registered before the check: a turn handed over in between is not missed.
            let changed = self.turn_changed.notified();
            let front = lock(&self.inner)
                .queues
                .get(&turn.target)
                .and_then(|q| q.front().cloned());
            if front.as_deref() == Some(id) {
                return turn;
            }
            changed.await;
        }
    }

    /// Cancel job `id` (the module doc's table); returns the cancelled job.
    pub async fn cancel(&self, id: &str) -> Result<JobView, ServeError> {
        let job = self.load(id)?;
        too_late(&job)?;
        let (gate, task) = {
            let mut inner = lock(&self.inner);
            match inner.live.get_mut(id) {
                Some(l) => (Some(Arc::clone(&l.gate)), l.task.take()),
                None => (None, None),
            }
        };
        if let Some(gate) = &gate {
            let mut g = lock(gate);
            if g.install_requested {
                return Err(ServeError::TooLate {
                    id: id.to_string(),
                    state: job.state.clone(),
                    why: "the ecu has been asked to install the image".into(),
                });
            }
            if g.cancel && task.is_none() {
                return Err(ServeError::Cancelling { id: id.to_string() });
            }
            g.cancel = true;
        }
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        // No task drives the job now: its document is the truth.
        let result = self.finish_cancel(id);
        lock(&self.inner).live.remove(id);
        let view = self.view(id)?;
        let _ = self.events.send(Published::Job(Arc::new(view.clone())));
        result.map(|()| view)
    }

    fn finish_cancel(&self, id: &str) -> Result<(), ServeError> {
        let mut job = self.load(id)?;
        too_late(&job)?;
        job.go(State::Cancelled, live::now_us())
            .map_err(OtaError::from)?;
        self.store.save(&job)?;
        println!("{id}: cancelled");
        self.trace(id, state_event(&job.state), Some(job.state.clone()), None);
        Ok(())
    }
}

/// A job's place in its target's queue ([`Service::wait_turn`]).
#[derive(Debug)]
struct Turn {
    svc: Arc<Service>,
    target: String,
    id: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut inner = lock(&self.svc.inner);
        if let Some(q) = inner.queues.get_mut(&self.target) {
            q.retain(|j| *j != self.id);
            if q.is_empty() {
                inner.queues.remove(&self.target);
            }
        }
        drop(inner);
        self.svc.turn_changed.notify_waiters();
    }
}

/// The flasher's gate for a job: refused once a cancel is under way; once it lets the
/// request through, cancels are refused (the two take the same lock).
fn install_gate(gate: Arc<Mutex<Gate>>) -> InstallGate {
    InstallGate(Arc::new(move || {
        let mut g = lock(&gate);
        if g.cancel {
            return Err("the job is being cancelled".to_string());
        }
        g.install_requested = true;
        Ok(())
    }))
}

/// Whether the job's own document says it is past cancelling.
fn too_late(job: &Job) -> Result<(), ServeError> {
    if job.state.is_terminal() {
        return Err(ServeError::Finished {
            id: job.id.clone(),
            state: job.state.clone(),
        });
    }
    let why = if job.state.phase() == Phase::Applying || job.applied {
        "the ecu has been told to install the image: the bootloader decides now"
    } else if job.requested_at_boot.is_some() {
        "the ecu has been asked to install the image"
    } else {
        return Ok(());
    };
    Err(ServeError::TooLate {
        id: job.id.clone(),
        state: job.state.clone(),
        why: why.into(),
    })
}

fn trace_event(source: Source, event: &str, text: String, kind: TraceKind) -> TraceEvent {
    TraceEvent {
        at_us: live::now_us(),
        source,
        event: Arc::from(event),
        text: Arc::from(text),
        kind,
    }
}

/// The `state:<name>` event of a job state.
fn state_event(s: &State) -> TraceEvent {
    trace_event(
        Source::Ota,
        &format!("state:{}", state_name(s)),
        s.to_string(),
        TraceKind::Job(Arc::new(s.clone())),
    )
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
