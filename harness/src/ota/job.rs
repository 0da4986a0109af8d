//! An OTA job: its manifest, its state, and the transitions between states.
//!
//! ## States
//!
//! | state | meaning | may go to |
//! |---|---|---|
//! | `submitted` | accepted, nothing done | `downloading`, `failed`, `cancelled` |
//! | `downloading {bytes}` | artifact bytes on disk so far | `downloading`, `downloaded`, `failed`, `cancelled` |
//! | `downloaded` | size and SHA-256 verified | `verifying`, `failed`, `cancelled` |
//! | `verifying` | the image is checked against the manifest (header, version, key) | `transferring`, `downloading` (artifact gone or changed), `failed`, `cancelled` |
//! | `transferring {step}` | the programming sequence over UDS: `session`, `security`, `erase`, `request_download`, `block {n, of}`, `exit`, `check` | `transferring`, `applying`, `rolled_back` (the ECU took and reverted the image before the apply: a cut right after the check routine), `failed`, `cancelled` (only before the ECU is asked to install: see [`crate::ota::serve`]) |
//! | `applying {step}` | `reset`, `await_boot`, `await_confirm` | `applying`, `transferring` (the ECU lost the staged image), `committed`, `rolled_back`, `failed` |
//! | `committed` | the new version runs, confirmed | — |
//! | `rolled_back {reason}` | the ECU reverted to the old image; `reason` is the ECU's | — |
//! | `failed {reason}` | the update was abandoned | — |
//! | `cancelled` | cancelled through `hil ota serve`'s API before the ECU was asked to install the image | — |
//!
//! Every transition is recorded with its time (virtual or wall-clock microseconds). Anything
//! not in the table is refused with [`IllegalTransition`]. The JSON form (one document
//! per job, see [`crate::ota::store`]) is the serde form of [`Job`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::manifest::Manifest;

/// A step of the programming sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransferStep {
    Session,
    Security,
    Erase,
    RequestDownload,
    /// `n` of `of` TransferData blocks accepted.
    Block {
        n: u32,
        of: u32,
    },
    Exit,
    Check,
}

/// A step of activating the new image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStep {
    Reset,
    AwaitBoot,
    AwaitConfirm,
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum State {
    Submitted,
    Downloading {
        bytes: u64,
    },
    Downloaded,
    Verifying,
    Transferring {
        step: TransferStep,
    },
    Applying {
        step: ApplyStep,
    },
    Committed,
    RolledBack {
        reason: String,
    },
    /// `refused`: the image was turned down (by the ECU's checks or the manifest check), as
    /// opposed to the manager giving up on a link or an ECU that does not answer.
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refused: bool,
    },
    /// Cancelled before the ECU was asked to install the image (`hil ota serve`'s
    /// `POST /jobs/{id}/cancel`); the history says where it stood.
    Cancelled,
}

/// The phase of a state (the state without its data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Submitted,
    Downloading,
    Downloaded,
    Verifying,
    Transferring,
    Applying,
    Committed,
    RolledBack,
    Failed,
    Cancelled,
}

impl State {
    pub fn phase(&self) -> Phase {
        match self {
            State::Submitted => Phase::Submitted,
            State::Downloading { .. } => Phase::Downloading,
            State::Downloaded => Phase::Downloaded,
            State::Verifying => Phase::Verifying,
            State::Transferring { .. } => Phase::Transferring,
            State::Applying { .. } => Phase::Applying,
            State::Committed => Phase::Committed,
            State::RolledBack { .. } => Phase::RolledBack,
            State::Failed { .. } => Phase::Failed,
            State::Cancelled => Phase::Cancelled,
        }
    }

    /// A state the job never leaves.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.phase(),
            Phase::Committed | Phase::RolledBack | Phase::Failed | Phase::Cancelled
        )
    }
}

impl Phase {
    /// Whether the table in the module doc allows `self → to`.
    pub fn may_go_to(self, to: Phase) -> bool {
        use Phase::*;
        match self {
            Submitted => matches!(to, Downloading | Failed | Cancelled),
            Downloading => matches!(to, Downloading | Downloaded | Failed | Cancelled),
            Downloaded => matches!(to, Verifying | Failed | Cancelled),
            Verifying => matches!(to, Transferring | Downloading | Failed | Cancelled),
            // rolled_back: the ECU installed and reverted the image before the manager got to
            // apply it (a power cut right after the check routine).
            Transferring => matches!(
                to,
                Transferring | Applying | RolledBack | Failed | Cancelled
            ),
            Applying => matches!(
                to,
                Applying | Transferring | Committed | RolledBack | Failed
            ),
            Committed | RolledBack | Failed | Cancelled => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Submitted => "submitted",
            Phase::Downloading => "downloading",
            Phase::Downloaded => "downloaded",
            Phase::Verifying => "verifying",
            Phase::Transferring => "transferring",
            Phase::Applying => "applying",
            Phase::Committed => "committed",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TransferStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferStep::Session => write!(f, "session"),
            TransferStep::Security => write!(f, "security"),
            TransferStep::Erase => write!(f, "erase"),
            TransferStep::RequestDownload => write!(f, "request_download"),
            TransferStep::Block { n, of } => write!(f, "block {n}/{of}"),
            TransferStep::Exit => write!(f, "exit"),
            TransferStep::Check => write!(f, "check"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Downloading { bytes } => write!(f, "downloading ({bytes} bytes)"),
            State::Transferring { step } => write!(f, "transferring: {step}"),
            State::Applying { step } => write!(
                f,
                "applying: {}",
                match step {
                    ApplyStep::Reset => "reset",
                    ApplyStep::AwaitBoot => "await_boot",
                    ApplyStep::AwaitConfirm => "await_confirm",
                }
            ),
            State::RolledBack { reason } => write!(f, "rolled_back: {reason}"),
            State::Failed {
                reason,
                refused: true,
            } => write!(f, "failed: refused: {reason}"),
            State::Failed { reason, .. } => write!(f, "failed: {reason}"),
            other => f.write_str(other.phase().name()),
        }
    }
}

/// One recorded transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// Microseconds: virtual time in simulation, since the Unix epoch when live.
    pub at_us: u64,
    pub state: State,
}

/// A transition the state table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: String,
    pub to: String,
}

/// A job as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Format version of this document.
    pub format: u32,
    pub id: String,
    pub manifest: Manifest,
    pub state: State,
    /// Every state the job went through, with its time (progress-only updates of
    /// `downloading` and `transferring: block` replace the last entry instead of adding one).
    pub history: Vec<Transition>,
    /// How many times each phase was (re)started, e.g. download attempts after a restart.
    #[serde(default)]
    pub attempts: std::collections::BTreeMap<String, u32>,
    /// The manager sent (or was about to send) the reset that installs the image. Persisted
    /// before the reset: afterwards, the old version running with the new image no longer
    /// staged means the bootloader reverted or rejected it — the image is never flashed again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub applied: bool,
    /// The ECU's boot counter (DID 0xFD00) read just before the check-programming-dependencies
    /// routine asked it to install the image (persisted before the request): a rollback the
    /// ECU reports from a later boot is this job's, even if the manager never applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at_boot: Option<u32>,
    /// Why retried attempts failed, per phase (`download`, `transfer`), oldest first, at most
    /// [`MAX_FAILURES`] each: the reason of a job that gives up names them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures: std::collections::BTreeMap<String, Vec<AttemptFailure>>,
}

/// One failed attempt of a phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFailure {
    pub attempt: u32,
    pub reason: String,
}

/// Failures kept per phase (the most recent ones).
pub const MAX_FAILURES: usize = 8;

/// The current format of [`Job`] documents.
pub const JOB_FORMAT: u32 = 1;

impl Job {
    pub fn new(id: String, manifest: Manifest, at_us: u64) -> Job {
        Job {
            format: JOB_FORMAT,
            id,
            manifest,
            state: State::Submitted,
            history: vec![Transition {
                at_us,
                state: State::Submitted,
            }],
            attempts: Default::default(),
            applied: false,
            requested_at_boot: None,
            failures: Default::default(),
        }
    }

    /// Move to `to` at `at_us`, or refuse with [`IllegalTransition`].
    pub fn go(&mut self, to: State, at_us: u64) -> Result<(), IllegalTransition> {
        let (from, next) = (self.state.phase(), to.phase());
        if !from.may_go_to(next) {
            return Err(IllegalTransition {
                from: self.state.to_string(),
                to: to.to_string(),
            });
        }
        let progress_only = matches!(
            (&self.state, &to),
            (State::Downloading { .. }, State::Downloading { .. })
                | (
                    State::Transferring {
                        step: TransferStep::Block { .. }
                    },
                    State::Transferring {
                        step: TransferStep::Block { .. }
                    }
                )
        );
        let entry = Transition {
            at_us,
            state: to.clone(),
        };
        match self.history.last_mut() {
            Some(last) if progress_only => *last = entry,
            _ => self.history.push(entry),
        }
        self.state = to;
        Ok(())
    }

    /// Count one more start of `what` (e.g. `download`, `transfer`); returns the count.
    pub fn attempt(&mut self, what: &str) -> u32 {
        let n = self.attempts.entry(what.to_string()).or_default();
        *n += 1;
        *n
    }

    /// Record why the current attempt of `what` failed (it will be retried).
    pub fn failed_attempt(&mut self, what: &str, reason: String) {
        let attempt = self.attempts.get(what).copied().unwrap_or(0);
        let list = self.failures.entry(what.to_string()).or_default();
        list.push(AttemptFailure { attempt, reason });
        if list.len() > MAX_FAILURES {
            list.remove(0);
        }
    }

    /// The recorded failures of `what` as one line, attempts with the same reason grouped:
    /// `attempts 1-2: connection closed; attempt 3: sha-256 mismatch …`.
    pub fn failure_summary(&self, what: &str) -> Option<String> {
        let list = self.failures.get(what).filter(|l| !l.is_empty())?;
        let mut groups: Vec<(u32, u32, &str)> = Vec::new();
        for f in list {
            match groups.last_mut() {
                Some((_, last, reason)) if *reason == f.reason && f.attempt <= *last + 1 => {
                    *last = f.attempt;
                }
                _ => groups.push((f.attempt, f.attempt, &f.reason)),
            }
        }
        let parts: Vec<String> = groups
            .into_iter()
            .map(|(first, last, reason)| {
                if first == last {
                    format!("attempt {first}: {reason}")
                } else {
                    format!("attempts {first}-{last}: {reason}")
                }
            })
            .collect();
        Some(parts.join("; "))
    }

    /// Whether `phase` appears anywhere in the history.
    pub fn was(&self, phase: Phase) -> bool {
        self.history.iter().any(|t| t.state.phase() == phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::manifest::{Artifact, Target};

    fn manifest() -> Manifest {
        Manifest {
            artifact: Artifact {
                url: "http://127.0.0.1:8080/v2.bin".into(),
                size: 1000,
                sha256: "00".repeat(32),
                ca_file: None,
            },
            version: "2.0.0".into(),
            target: Target::Doip {
                host: "127.0.0.1".into(),
                port: 13400,
                logical_address: 0x10,
                tester_address: 0x0E00,
            },
            key_id: None,
            permanent: false,
        }
    }

    fn all_states() -> Vec<State> {
        vec![
            State::Submitted,
            State::Downloading { bytes: 5 },
            State::Downloaded,
            State::Verifying,
            State::Transferring {
                step: TransferStep::Block { n: 1, of: 2 },
            },
            State::Applying {
                step: ApplyStep::AwaitBoot,
            },
            State::Committed,
            State::RolledBack { reason: "r".into() },
            State::Failed {
                reason: "f".into(),
                refused: false,
            },
            State::Failed {
                reason: "r".into(),
                refused: true,
            },
            State::Cancelled,
        ]
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_the_table_says() {
        // (from, to) pairs allowed, by phase index in all_states().
        let allowed: &[(usize, &[usize])] = &[
            (0, &[1, 8, 9, 10]),
            (1, &[1, 2, 8, 9, 10]),
            (2, &[3, 8, 9, 10]),
            (3, &[1, 4, 8, 9, 10]),
            (4, &[4, 5, 7, 8, 9, 10]),
            (5, &[4, 5, 6, 7, 8, 9]),
            (6, &[]),
            (7, &[]),
            (8, &[]),
            (9, &[]),
            (10, &[]),
        ];
        let states = all_states();
        for &(from, tos) in allowed {
            for (to, target) in states.iter().enumerate() {
                let mut job = Job::new("j".into(), manifest(), 0);
                job.state = states[from].clone();
                let r = job.go(target.clone(), 10);
                if tos.contains(&to) {
                    assert!(r.is_ok(), "{} -> {} refused", states[from], target);
                    assert_eq!(&job.state, target);
                } else {
                    let e = r.expect_err("must be refused").to_string();
                    assert_eq!(
                        e,
                        format!("illegal transition {} -> {target}", states[from])
                    );
                    assert_eq!(job.state, states[from], "a refusal changes nothing");
                }
            }
        }
    }

    #[test]
    fn progress_replaces_the_last_history_entry() {
        let mut job = Job::new("j".into(), manifest(), 0);
        job.go(State::Downloading { bytes: 0 }, 1).unwrap();
        job.go(State::Downloading { bytes: 10 }, 2).unwrap();
        job.go(State::Downloading { bytes: 20 }, 3).unwrap();
        job.go(State::Downloaded, 4).unwrap();
        let states: Vec<_> = job.history.iter().map(|t| t.state.to_string()).collect();
        assert_eq!(
            states,
            ["submitted", "downloading (20 bytes)", "downloaded"]
        );
        assert_eq!(job.history[1].at_us, 3);
    }

    #[test]
    fn json_round_trips_every_state() {
        let mut job = Job::new("job-0001".into(), manifest(), 7);
        job.attempt("download");
        for s in all_states() {
            job.state = s.clone();
            job.history.push(Transition { at_us: 9, state: s });
            let text = serde_json::to_string_pretty(&job).unwrap();
            let back: Job = serde_json::from_str(&text).unwrap();
            assert_eq!(back, job, "{text}");
        }
        let text = serde_json::to_string(&State::Transferring {
            step: TransferStep::Block { n: 3, of: 9 },
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"state":"transferring","step":{"step":"block","n":3,"of":9}}"#
        );
    }
}
