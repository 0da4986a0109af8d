//! The OTA flow as services: what the manager and its workers say to each other over MQTT,
//! and the rules that make a duplicated, re-delivered, reordered or late message harmless.
//! Sans-IO: topics, payloads (JSON with a version field) and two small state machines — the
//! worker's [`Ledger`] and the manager's [`Gate`]; [`super::mqtt`] carries them on a broker.
//!
//! ## Topics
//!
//! | topic | from → to | QoS | payload |
//! |---|---|---|---|
//! | `ota/v1/commands/{kind}` (`download`, `transfer`, `apply`) | manager → the workers of that kind | 1 | [`CommandMsg`] |
//! | `ota/v1/events/{job}` | a worker → the manager | 1 | [`EventMsg`] |
//! | `ota/v1/heartbeats/{worker}` | a worker → the manager, every [`HEARTBEAT_MS`] | 0 | [`Heartbeat`] |
//! | `ota/{job}/events` | the manager → anyone outside | 1 | [`JobEventMsg`] |
//!
//! QoS 1 is "at least once": the broker may deliver a message twice, and after a reconnect
//! the publisher sends again what it had not seen acknowledged. Nothing here relies on
//! exactly-once delivery or on order between topics.
//!
//! ## The rules
//!
//! - The manager **persists before it publishes**: a command's `attempt` is written to the
//!   job store, then the command goes out. A manager restarted mid-job publishes the
//!   persisted command again, with a new attempt number.
//! - Every command carries `(job, attempt)`, attempts rising per job. A worker's [`Ledger`]
//!   runs a command whose attempt is above every attempt it has seen for the job; the same
//!   attempt again (a re-delivery) is not run twice — the worker repeats the last event it
//!   sent for it, in case that was lost; an older attempt (a late command) is dropped.
//! - Every event carries `(job, attempt, seq)`, `seq` rising from 1 per attempt. The manager's
//!   [`Gate`] takes an event only of the job's current attempt and with a `seq` above the
//!   last it took: duplicates, re-deliveries and the late events of earlier attempts (a
//!   worker presumed lost that comes back) are dropped, each with its reason.
//! - A worker that sent no heartbeat for [`LOST_AFTER_MS`] while it held a job is lost
//!   ([`Liveness`]); the manager issues the job's command again with the next attempt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manager::{Command, WorkerEvent};
use super::manifest::Manifest;

/// The payload schema's version: the `v` of every message.
pub const VERSION: u32 = 1;

/// How often a worker says it is alive.
pub const HEARTBEAT_MS: u64 = 1_000;

/// Silence after which a worker holding a job is taken for lost (three heartbeats missed).
pub const LOST_AFTER_MS: u64 = 3 * HEARTBEAT_MS + 500;

/// The three kinds of worker, each with its own command topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// Downloads and verifies the artifact.
    Download,
    /// Runs the programming sequence.
    Transfer,
    /// Resets the ECU and watches the outcome; reads its boot status after a restart.
    Apply,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 3] = [
        WorkerKind::Download,
        WorkerKind::Transfer,
        WorkerKind::Apply,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Download => "download",
            WorkerKind::Transfer => "transfer",
            WorkerKind::Apply => "apply",
        }
    }

    /// The kind of worker that executes `command`; `None` for [`Command::Done`].
    pub fn of(command: Command) -> Option<WorkerKind> {
        match command {
            Command::Download | Command::Verify => Some(WorkerKind::Download),
            Command::Transfer => Some(WorkerKind::Transfer),
            Command::Apply | Command::AwaitOutcome | Command::Observe => Some(WorkerKind::Apply),
            Command::Done => None,
        }
    }
}

impl std::str::FromStr for WorkerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        WorkerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?} is not a worker kind (download, transfer, apply)"))
    }
}

/// Topic names.
pub mod topic {
    use super::WorkerKind;

    /// Commands for the workers of `kind`.
    pub fn commands(kind: WorkerKind) -> String {
        format!("ota/v1/commands/{}", kind.name())
    }

    /// The workers' events about `job`.
    pub fn events(job: &str) -> String {
        format!("ota/v1/events/{job}")
    }

    /// Every job's worker events (the manager's subscription).
    pub const ALL_EVENTS: &str = "ota/v1/events/+";

    /// `worker`'s heartbeats.
    pub fn heartbeat(worker: &str) -> String {
        format!("ota/v1/heartbeats/{worker}")
    }

    /// Every worker's heartbeats.
    pub const ALL_HEARTBEATS: &str = "ota/v1/heartbeats/+";

    /// `job`'s events for subscribers outside the system.
    pub fn job_events(job: &str) -> String {
        format!("ota/{job}/events")
    }
}

/// A command for a worker: run `command` for `job`, attempt `attempt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMsg {
    pub v: u32,
    pub job: String,
    pub attempt: u64,
    pub command: Command,
    /// What the job updates, from where: everything a worker needs besides its own settings.
    pub manifest: Manifest,
}

/// An event a worker reports about `job`'s attempt `attempt`; `seq` rises from 1 per attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMsg {
    pub v: u32,
    pub job: String,
    pub attempt: u64,
    pub seq: u64,
    /// The worker that sent it (its client id).
    pub worker: String,
    pub event: WorkerEvent,
    /// The attempt's last event: the worker is done with the command.
    pub last: bool,
}

/// A worker is alive; `holding`: the job and attempt it is executing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub v: u32,
    pub worker: String,
    pub kind: WorkerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<(String, u64)>,
}

/// A job's event for outside subscribers: each event of its trace (states, notes, retries,
/// the ECU's boot status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEventMsg {
    pub v: u32,
    pub job: String,
    /// Rises by one per message of the service (gaps: events of other jobs).
    pub seq: u64,
    /// The trace event's name (`state:transferring:erase`, `note`, `ecu_read`, …).
    pub event: String,
    /// The job's state after a `state:` event (`downloading`, `committed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What happened, as the trace says it.
    pub text: String,
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A message that cannot be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a message of this schema: {0}")]
    Json(String),
    #[error("schema version {found}, this build speaks version {VERSION}")]
    Version { found: u32 },
    #[error("topic {topic} carries {what} for job {inner:?}, not for {outer:?}")]
    TopicMismatch {
        topic: String,
        what: &'static str,
        outer: String,
        inner: String,
    },
}

/// What every message has: the schema version.
trait Versioned {
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}
versioned!(CommandMsg, EventMsg, Heartbeat, JobEventMsg);

/// Decode a message, checking its schema version first (a message of another version may not
/// parse as this one: its version is reported, not its first unknown field).
#[allow(private_bounds)]
pub fn decode<T: serde::de::DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, WireError> {
    #[derive(Deserialize)]
    struct Peek {
        v: Option<u32>,
    }
    if let Ok(Peek { v: Some(found) }) = serde_json::from_slice::<Peek>(bytes)
        && found != VERSION
    {
        return Err(WireError::Version { found });
    }
    let msg: T = serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))?;
    match msg.version() {
        VERSION => Ok(msg),
        found => Err(WireError::Version { found }),
    }
}

/// An event from `topic` (`ota/v1/events/{job}`): the job in the payload must be the topic's.
pub fn decode_event(topic: &str, bytes: &[u8]) -> Result<EventMsg, WireError> {
    let msg: EventMsg = decode(bytes)?;
    let outer = topic.rsplit('/').next().unwrap_or_default();
    if outer != msg.job {
        return Err(WireError::TopicMismatch {
            topic: topic.to_string(),
            what: "an event",
            outer: outer.to_string(),
            inner: msg.job,
        });
    }
    Ok(msg)
}

/// JSON bytes of a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("wire messages serialise")
}

/// What a worker does with a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// A new attempt: execute it.
    Run,
    /// The attempt it is executing or has executed, delivered again: do not execute it
    /// again; send these events again (what it has sent for the attempt so far).
    Repeat(Vec<EventMsg>),
    /// An attempt older than one it has seen: drop it.
    Stale { newest: u64 },
}

/// A worker's memory of the commands it took: per job the newest attempt and the events it
/// sent for it. A worker restarted with an empty ledger runs a re-delivered command again —
/// which is safe, because every command resumes from what the ECU and the disk say (a
/// download resumes, a transfer asks the ECU first), and the manager's [`Gate`] drops the
/// events of anything but the current attempt.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    jobs: BTreeMap<String, (u64, Vec<EventMsg>)>,
}

impl Ledger {
    /// Decide about `cmd`; a [`Admit::Run`] makes its attempt the job's newest.
    pub fn admit(&mut self, cmd: &CommandMsg) -> Admit {
        match self.jobs.get(&cmd.job) {
            Some((newest, _)) if cmd.attempt < *newest => Admit::Stale { newest: *newest },
            Some((newest, sent)) if cmd.attempt == *newest => Admit::Repeat(sent.clone()),
            _ => {
                self.jobs.insert(cmd.job.clone(), (cmd.attempt, Vec::new()));
                Admit::Run
            }
        }
    }

    /// The next event of `cmd`'s attempt, numbered and remembered (to be repeated); `None` if
    /// a newer attempt of the job has been admitted since (the old execution must stop).
    pub fn event(
        &mut self,
        cmd: &CommandMsg,
        worker: &str,
        event: WorkerEvent,
        last: bool,
    ) -> Option<EventMsg> {
        let (newest, sent) = self.jobs.get_mut(&cmd.job)?;
        if *newest != cmd.attempt {
            return None;
        }
        let msg = EventMsg {
            v: VERSION,
            job: cmd.job.clone(),
            attempt: cmd.attempt,
            seq: sent.len() as u64 + 1,
            worker: worker.to_string(),
            event,
            last,
        };
        sent.push(msg.clone());
        Some(msg)
    }
}

/// Why the manager's [`Gate`] dropped an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("no command is out for job {0}")]
    UnknownJob(String),
    #[error("attempt {got} of job {job} is not the current attempt {current}")]
    OtherAttempt { job: String, got: u64, current: u64 },
    #[error(
        "event {seq} of attempt {attempt} of job {job} was taken already (the last taken is {last})"
    )]
    Seen {
        job: String,
        attempt: u64,
        seq: u64,
        last: u64,
    },
}

/// The manager's side: per job the attempt it issued last and the last event it took of it.
/// Persisted with the job (serde), so a restarted manager goes on with the next attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    jobs: BTreeMap<String, Issued>,
}

/// The current attempt of a job and how far its events have been taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub attempt: u64,
    pub last_seq: u64,
    /// The command of the attempt (issued again if its worker is lost).
    pub command: Option<Command>,
    /// Its last event came in: the attempt is over.
    pub finished: bool,
}

impl Gate {
    /// The next command for `job`: a new attempt (persist the gate, then publish).
    pub fn issue(&mut self, job: &str, command: Command, manifest: &Manifest) -> CommandMsg {
        let issued = self.jobs.entry(job.to_string()).or_default();
        issued.attempt += 1;
        issued.last_seq = 0;
        issued.command = Some(command);
        issued.finished = false;
        CommandMsg {
            v: VERSION,
            job: job.to_string(),
            attempt: issued.attempt,
            command,
            manifest: manifest.clone(),
        }
    }

    /// Take `msg` or say why not. A broker delivers one publisher's messages on a topic at
    /// one QoS in the order they were published (MQTT 3.1.1, 4.6), so an event at or below
    /// the last taken is a re-delivery or a duplicate, never one that overtook another.
    pub fn admit(&mut self, msg: &EventMsg) -> Result<(), Dropped> {
        let issued = self
            .jobs
            .get_mut(&msg.job)
            .ok_or_else(|| Dropped::UnknownJob(msg.job.clone()))?;
        if msg.attempt != issued.attempt {
            return Err(Dropped::OtherAttempt {
                job: msg.job.clone(),
                got: msg.attempt,
                current: issued.attempt,
            });
        }
        if msg.seq <= issued.last_seq {
            return Err(Dropped::Seen {
                job: msg.job.clone(),
                attempt: msg.attempt,
                seq: msg.seq,
                last: issued.last_seq,
            });
        }
        issued.last_seq = msg.seq;
        issued.finished |= msg.last;
        Ok(())
    }

    /// The state of `job`'s current attempt.
    pub fn issued(&self, job: &str) -> Option<&Issued> {
        self.jobs.get(job)
    }

    /// Forget a finished job.
    pub fn remove(&mut self, job: &str) {
        self.jobs.remove(job);
    }
}

/// The manager's view of which workers are alive, from their heartbeats (times in ms of any
/// monotonic clock).
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    workers: BTreeMap<String, (u64, Heartbeat)>,
}

impl Liveness {
    pub fn heartbeat(&mut self, now_ms: u64, hb: Heartbeat) {
        self.workers.insert(hb.worker.clone(), (now_ms, hb));
    }

    /// Workers silent for longer than [`LOST_AFTER_MS`] and the (job, attempt) each held;
    /// they are forgotten (a worker that comes back heartbeats afresh).
    pub fn lost(&mut self, now_ms: u64) -> Vec<(String, Option<(String, u64)>)> {
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, (at, _))| now_ms.saturating_sub(*at) > LOST_AFTER_MS)
            .map(|(w, _)| w.clone())
            .collect();
        gone.into_iter()
            .filter_map(|w| self.workers.remove(&w).map(|(_, hb)| (w, hb.holding)))
            .collect()
    }

    /// Whether a worker of `kind` has been heard from within [`LOST_AFTER_MS`].
    pub fn any_alive(&self, kind: WorkerKind, now_ms: u64) -> bool {
        self.workers
            .values()
            .any(|(at, hb)| hb.kind == kind && now_ms.saturating_sub(*at) <= LOST_AFTER_MS)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
