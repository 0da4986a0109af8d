//! The update manager, sans-IO: it decides the next command for a job and turns the workers'
//! events into state transitions. Workers (downloader, verifier, flasher, applier) never
//! change a job themselves; the driver persists the job after every call here, so the state on
//! disk always precedes the side effect it announces.
//!
//! ## What the manager asks for
//!
//! | job state | fresh run | after a restart (resume) |
//! |---|---|---|
//! | `submitted`, `downloading` | [`Command::Download`] (resumes from the bytes on disk) | same |
//! | `downloaded`, `verifying` | [`Command::Verify`] | same |
//! | `transferring` | [`Command::Transfer`] | the programming sequence restarts from `session` |
//! | `applying: reset` | [`Command::Apply`] (reset, then wait for the outcome) | [`Command::Observe`]: read the ECU's boot status first |
//! | `applying: await_boot/await_confirm` | — (the apply worker is still running) | [`Command::Observe`] |
//! | terminal | [`Command::Done`] | same |
//!
//! ## What an observation decides
//!
//! | the ECU runs | staging slot | next state |
//! |---|---|---|
//! | the new version, confirmed | — | `committed` |
//! | the new version, on probation | — | `applying: await_confirm` ([`Command::AwaitOutcome`]) |
//! | another version | the new image, requested (test or permanent) | `applying: reset` ([`Command::Apply`]) |
//! | another version, last boot reverted or rejected | not requested | `rolled_back` with the ECU's reason |
//! | another version, after the manager applied the image ([`Job::applied`]) | not requested | `rolled_back`: the bootloader reverted or rejected it (e.g. a revert completed after a power cut, or later boots since) — never flashed again |
//! | another version | anything else | `transferring: session` (flash again) |
//!
//! Mid-transfer (a restart during `transferring`, before the job applied anything), a rollback
//! the ECU reports is an earlier update's — the image is programmed — unless a boot after the
//! check routine asked the ECU to install this image reported it ([`Job::requested_at_boot`]):
//! then the ECU took this image and reverted it (a cut right after the check routine), and the
//! job ends `rolled_back`.

use super::error::OtaError;
use super::job::{ApplyStep, Job, Phase, State, TransferStep};

/// Bounds on retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Programming sequences started before the job fails (link errors are retried; refusals
    /// such as an NRC or a failed check are not).
    pub transfer_attempts: u32,
    /// Downloads started (each one resumes) before the job fails.
    pub download_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            transfer_attempts: 3,
            download_attempts: 5,
        }
    }
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Download,
    Verify,
    /// The programming sequence, from the start.
    Transfer,
    /// Reset the ECU, then wait for the outcome.
    Apply,
    /// Wait for the outcome without resetting (the new image is on probation).
    AwaitOutcome,
    /// Read the ECU's boot status and report an [`Observation`].
    Observe,
    /// The job is finished.
    Done,
}

/// What the ECU's boot status says, read after a restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Observation {
    Committed,
    OnProbation,
    /// The new image is staged and requested; the reset has not happened.
    Requested,
    /// The ECU's last boot (number `boot_count`) reverted or rejected an image.
    RolledBack {
        reason: String,
        boot_count: u32,
    },
    /// Nothing usable is staged: `running` is the version the ECU runs, `last_boot` what its
    /// last boot reported (DID 0xFD04, often empty after a normal boot).
    NotStaged {
        running: Option<ecu_sim::image::Version>,
        last_boot: String,
    },
}

impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observation::Committed => f.write_str("the new version runs, confirmed"),
            Observation::OnProbation => f.write_str("the new version runs on probation"),
            Observation::Requested => f.write_str("the new image is staged and requested"),
            Observation::RolledBack { reason, boot_count } => {
                write!(f, "rolled back at boot {boot_count} ({reason})")
            }
            Observation::NotStaged { running, last_boot } => {
                match running {
                    Some(v) => write!(f, "{v} runs, the new image is not staged")?,
                    None => f.write_str("no image runs, the new image is not staged")?,
                }
                if !last_boot.is_empty() {
                    write!(f, " (last boot: {last_boot})")?;
                }
                Ok(())
            }
        }
    }
}

/// What a worker reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerEvent {
    DownloadProgress {
        bytes: u64,
    },
    Downloaded,
    DownloadFailed {
        reason: String,
        retryable: bool,
    },
    Verified,
    VerifyFailed {
        reason: String,
    },
    /// The artifact on disk is gone or no longer matches: download again.
    ArtifactMissing,
    TransferStep(TransferStep),
    /// About to ask the ECU to install the image (check programming dependencies); the ECU's
    /// boot counter before the request.
    Requesting {
        boot_count: Option<u32>,
    },
    Transferred,
    TransferFailed {
        reason: String,
        retryable: bool,
    },
    ApplyStep(ApplyStep),
    Committed,
    RolledBack {
        reason: String,
    },
    ApplyFailed {
        reason: String,
    },
    Observed(Observation),
}

/// The manager: limits and the two decisions.
#[derive(Clone, Debug, Default)]
pub struct Manager {
    pub limits: Limits,
}

impl Manager {
    /// Decide the next command for `job` and enter the state it announces (persist `job`
    /// before acting on the command). `resumed`: the first decision after loading the job from
    /// the store.
    pub fn next(&self, job: &mut Job, at_us: u64, resumed: bool) -> Result<Command, OtaError> {
        let cmd = match &job.state {
            s if s.is_terminal() => return Ok(Command::Done),
            State::Submitted => {
                job.go(State::Downloading { bytes: 0 }, at_us)?;
                Command::Download
            }
            State::Downloading { .. } => Command::Download,
            State::Downloaded => {
                job.go(State::Verifying, at_us)?;
                Command::Verify
            }
            State::Verifying => Command::Verify,
            // After a restart mid-transfer, ask the ECU first: a cut after the check routine
            // may have left the image requested, or already installed.
            State::Transferring { .. } if resumed => Command::Observe,
            State::Transferring { step } => {
                if *step != TransferStep::Session {
                    job.go(
                        State::Transferring {
                            step: TransferStep::Session,
                        },
                        at_us,
                    )?;
                }
                Command::Transfer
            }
            State::Applying { step } => match (step, resumed) {
                (_, true) => Command::Observe,
                (ApplyStep::Reset, false) => {
                    // Persisted before the reset: from now on the image may be installed, and
                    // its absence means the bootloader reverted or rejected it.
                    job.applied = true;
                    Command::Apply
                }
                (_, false) => {
                    job.applied = true;
                    Command::AwaitOutcome
                }
            },
            _ => unreachable!("terminal states handled above"),
        };
        let what = match cmd {
            Command::Download => Some("download"),
            Command::Transfer => Some("transfer"),
            _ => None,
        };
        if let Some(what) = what {
            let n = job.attempt(what);
            let limit = match cmd {
                Command::Download => self.limits.download_attempts,
                _ => self.limits.transfer_attempts,
            };
            if n > limit {
                let mut reason = format!("{what}: gave up after {limit} attempts");
                if let Some(why) = job.failure_summary(what) {
                    reason = format!("{reason} ({why})");
                }
                job.go(
                    State::Failed {
                        reason,
                        refused: false,
                    },
                    at_us,
                )?;
                return Ok(Command::Done);
            }
        }
        Ok(cmd)
    }

    /// Apply a worker's event to `job`; returns whether the job changed (its state, or what
    /// it records: a failed attempt, the boot counter of the install request), so the driver
    /// persists exactly then.
    pub fn handle(&self, job: &mut Job, event: WorkerEvent, at_us: u64) -> Result<bool, OtaError> {
        let to = match event {
            WorkerEvent::DownloadProgress { bytes } => State::Downloading { bytes },
            WorkerEvent::Downloaded => State::Downloaded,
            WorkerEvent::DownloadFailed {
                retryable: true,
                reason,
            } => {
                job.failed_attempt("download", reason);
                return Ok(true);
            }
            WorkerEvent::DownloadFailed { reason, .. } => State::Failed {
                reason: format!("download: {reason}"),
                refused: false,
            },
            WorkerEvent::Verified => State::Transferring {
                step: TransferStep::Session,
            },
            WorkerEvent::VerifyFailed { reason } => State::Failed {
                reason: format!("verify: {reason}"),
                refused: true,
            },
            WorkerEvent::ArtifactMissing => State::Downloading { bytes: 0 },
            WorkerEvent::TransferStep(step) => {
                if job.state == (State::Transferring { step: step.clone() }) {
                    return Ok(false);
                }
                State::Transferring { step }
            }
            WorkerEvent::Requesting { boot_count } => {
                let changed = job.requested_at_boot != boot_count;
                job.requested_at_boot = boot_count;
                return Ok(changed);
            }
            WorkerEvent::Transferred => State::Applying {
                step: ApplyStep::Reset,
            },
            // A link error: `next` restarts the sequence (bounded by the attempt limit).
            WorkerEvent::TransferFailed {
                retryable: true,
                reason,
            } => {
                job.failed_attempt("transfer", reason);
                return Ok(true);
            }
            WorkerEvent::TransferFailed { reason, .. } => State::Failed {
                reason: format!("transfer: {reason}"),
                refused: true,
            },
            WorkerEvent::ApplyStep(step) => {
                if job.state == (State::Applying { step }) {
                    return Ok(false);
                }
                State::Applying { step }
            }
            WorkerEvent::Committed => State::Committed,
            WorkerEvent::RolledBack { reason } => State::RolledBack { reason },
            WorkerEvent::ApplyFailed { reason } => State::Failed {
                reason: format!("apply: {reason}"),
                refused: false,
            },
            WorkerEvent::Observed(o) if job.state.phase() == Phase::Transferring => {
                match o {
                    // Already installed (or on probation): wait for the outcome.
                    Observation::Committed | Observation::OnProbation => State::Applying {
                        step: ApplyStep::AwaitConfirm,
                    },
                    Observation::Requested => State::Applying {
                        step: ApplyStep::Reset,
                    },
                    // Reported by a boot after the ECU was asked to install this image: the
                    // ECU took it and reverted it (a cut right after the check routine).
                    Observation::RolledBack { reason, boot_count }
                        if job.requested_at_boot.is_some_and(|b| boot_count > b) =>
                    {
                        State::RolledBack { reason }
                    }
                    // A rollback seen now is an earlier update's: program this one.
                    Observation::RolledBack { .. } | Observation::NotStaged { .. } => {
                        State::Transferring {
                            step: TransferStep::Session,
                        }
                    }
                }
            }
            WorkerEvent::Observed(o) => match o {
                Observation::Committed => State::Committed,
                Observation::OnProbation => State::Applying {
                    step: ApplyStep::AwaitConfirm,
                },
                Observation::Requested => State::Applying {
                    step: ApplyStep::Reset,
                },
                Observation::RolledBack { reason, .. } => State::RolledBack { reason },
                // We applied it and it is gone: the bootloader reverted or rejected it.
                Observation::NotStaged { running, last_boot } if job.applied => State::RolledBack {
                    reason: rollback_reason(job, running, &last_boot),
                },
                Observation::NotStaged { .. } => State::Transferring {
                    step: TransferStep::Session,
                },
            },
        };
        if job.state.phase() == Phase::Applying && to.phase() == Phase::Applying && job.state == to
        {
            return Ok(false);
        }
        job.go(to, at_us)?;
        Ok(true)
    }
}

/// The reason of a rollback the ECU no longer reports as its last boot's outcome: what its
/// last boot said, or what the manager sees.
fn rollback_reason(job: &Job, running: Option<ecu_sim::image::Version>, last_boot: &str) -> String {
    if !last_boot.is_empty() {
        return last_boot.to_string();
    }
    let running = running.map_or_else(|| "no image".to_string(), |v| v.to_string());
    format!(
        "reverted: the ecu runs {running} again and {} is no longer staged (the boot that reverted it was not the last one)",
        job.manifest.version
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::manifest::Manifest;

    fn job() -> Job {
        let m = Manifest::parse(
            "artifact: {url: 'http://h:1/a', size: 5, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\nversion: 2.0.0\ntarget: {transport: doip, host: h}\n",
            "m",
        )
        .unwrap();
        Job::new("job-0001".into(), m, 0)
    }

    fn not_staged(last_boot: &str) -> Observation {
        Observation::NotStaged {
            running: Some(ecu_sim::image::Version::new(1, 0, 0)),
            last_boot: last_boot.into(),
        }
    }

    /// The image was applied (reset sent), then the manager restarted: the ECU runs the old
    /// version and the new one is not staged any more. That is a rollback (the revert may have
    /// completed in a boot after a power cut, which reports no revert), never a new transfer.
    #[test]
    fn an_applied_image_that_is_gone_was_rolled_back_not_flashed_again() {
        let m = Manager::default();
        for (start, last_boot, want) in [
            (
                ApplyStep::Reset,
                "reverted: an interrupted revert was resumed and completed",
                "rolled_back: reverted: an interrupted revert was resumed and completed",
            ),
            (
                ApplyStep::AwaitConfirm,
                "",
                "rolled_back: reverted: the ecu runs 1.0.0 again and 2.0.0 is no longer staged (the boot that reverted it was not the last one)",
            ),
        ] {
            let mut j = job();
            j.state = State::Applying { step: start };
            // The apply command marks the job before the reset is sent (the driver persists it).
            assert!(!j.applied);
            let cmd = m.next(&mut j, 1, false).unwrap();
            assert!(matches!(cmd, Command::Apply | Command::AwaitOutcome));
            assert!(j.applied, "{start:?}");
            // ... killed; resumed: observe.
            assert_eq!(m.next(&mut j, 2, true).unwrap(), Command::Observe);
            m.handle(&mut j, WorkerEvent::Observed(not_staged(last_boot)), 3)
                .unwrap();
            assert_eq!(j.state.to_string(), want);
            assert_eq!(m.next(&mut j, 4, false).unwrap(), Command::Done);
            assert!(
                !j.attempts.contains_key("transfer"),
                "never transferred again"
            );
        }
        // The flag survives the store's JSON form, and old documents without it load.
        let mut j = job();
        j.applied = true;
        let text = serde_json::to_string(&j).unwrap();
        assert!(text.contains("\"applied\":true"));
        let back: Job = serde_json::from_str(&text).unwrap();
        assert!(back.applied);
        let old = serde_json::to_string(&job()).unwrap();
        assert!(!old.contains("applied"));
        assert!(!serde_json::from_str::<Job>(&old).unwrap().applied);
    }

    /// Killed right after the check routine asked the ECU to install the image; the ECU then
    /// lost power, installed it, and reverted it (a crash on boot). The resumed manager sees a
    /// rollback from a boot after its request: this job's, not an earlier update's.
    #[test]
    fn a_rollback_from_a_boot_after_the_request_is_this_jobs() {
        let m = Manager::default();
        let rolled_back = |boot_count| {
            WorkerEvent::Observed(Observation::RolledBack {
                reason: "reverted: not confirmed after 1 boot attempt(s)".into(),
                boot_count,
            })
        };
        let mut j = job();
        j.state = State::Transferring {
            step: TransferStep::Check,
        };
        m.handle(
            &mut j,
            WorkerEvent::Requesting {
                boot_count: Some(4),
            },
            1,
        )
        .unwrap();
        assert_eq!(j.requested_at_boot, Some(4));
        assert_eq!(m.next(&mut j, 2, true).unwrap(), Command::Observe);
        m.handle(&mut j, rolled_back(6), 3).unwrap();
        assert_eq!(
            j.state.to_string(),
            "rolled_back: reverted: not confirmed after 1 boot attempt(s)"
        );
        // The same report from the boot before the request (no boot since) is an earlier
        // update's: program this one.
        let mut j = job();
        j.state = State::Transferring {
            step: TransferStep::Check,
        };
        j.requested_at_boot = Some(4);
        m.handle(&mut j, rolled_back(4), 3).unwrap();
        assert_eq!(j.state.to_string(), "transferring: session");
    }

    /// A download that gives up names every different reason its attempts failed for.
    #[test]
    fn giving_up_names_the_errors_of_the_attempts() {
        let m = Manager::default();
        let mut j = job();
        let reasons = [
            "http://h:1/a: server answered 503 Service Unavailable",
            "http://h:1/a: server answered 503 Service Unavailable",
            "http://h:1/a: connection closed after 100 of 5 bytes",
            "sha-256 mismatch: expected 00…, got 11…; the file was deleted",
            "http://h:1/a: connection closed after 100 of 5 bytes",
        ];
        for r in reasons {
            assert_eq!(m.next(&mut j, 1, false).unwrap(), Command::Download);
            m.handle(
                &mut j,
                WorkerEvent::DownloadFailed {
                    reason: r.into(),
                    retryable: true,
                },
                2,
            )
            .unwrap();
        }
        assert_eq!(m.next(&mut j, 3, false).unwrap(), Command::Done);
        assert_eq!(
            j.state.to_string(),
            "failed: download: gave up after 5 attempts (attempts 1-2: http://h:1/a: server answered 503 Service Unavailable; attempt 3: http://h:1/a: connection closed after 100 of 5 bytes; attempt 4: sha-256 mismatch: expected 00…, got 11…; the file was deleted; attempt 5: http://h:1/a: connection closed after 100 of 5 bytes)"
        );
        // Only the most recent failures are kept.
        let mut j = job();
        for i in 0..20 {
            j.attempt("transfer");
            j.failed_attempt("transfer", format!("e{i}"));
        }
        assert_eq!(j.failures["transfer"].len(), crate::ota::job::MAX_FAILURES);
        assert!(
            j.failure_summary("transfer")
                .unwrap()
                .starts_with("attempt 13: e12; ")
        );
    }

    #[test]
    fn a_clean_run() {
        let m = Manager::default();
        let mut j = job();
        assert_eq!(m.next(&mut j, 1, false).unwrap(), Command::Download);
        m.handle(&mut j, WorkerEvent::DownloadProgress { bytes: 3 }, 2)
            .unwrap();
        m.handle(&mut j, WorkerEvent::Downloaded, 3).unwrap();
        assert_eq!(m.next(&mut j, 4, false).unwrap(), Command::Verify);
        assert_eq!(j.state, State::Verifying);
        m.handle(&mut j, WorkerEvent::Verified, 5).unwrap();
        assert_eq!(m.next(&mut j, 6, false).unwrap(), Command::Transfer);
        for step in [
            TransferStep::Session,
            TransferStep::Security,
            TransferStep::Erase,
            TransferStep::RequestDownload,
            TransferStep::Block { n: 0, of: 2 },
            TransferStep::Block { n: 1, of: 2 },
            TransferStep::Block { n: 2, of: 2 },
            TransferStep::Exit,
            TransferStep::Check,
        ] {
            m.handle(&mut j, WorkerEvent::TransferStep(step), 7)
                .unwrap();
        }
        // The same step again changes nothing, so nothing needs saving.
        assert!(
            !m.handle(&mut j, WorkerEvent::TransferStep(TransferStep::Check), 7)
                .unwrap()
        );
        assert!(m.handle(&mut j, WorkerEvent::Transferred, 8).unwrap());
        assert_eq!(m.next(&mut j, 9, false).unwrap(), Command::Apply);
        m.handle(&mut j, WorkerEvent::ApplyStep(ApplyStep::AwaitBoot), 10)
            .unwrap();
        m.handle(&mut j, WorkerEvent::ApplyStep(ApplyStep::AwaitConfirm), 11)
            .unwrap();
        m.handle(&mut j, WorkerEvent::Committed, 12).unwrap();
        assert_eq!(m.next(&mut j, 13, false).unwrap(), Command::Done);
        let phases: Vec<_> = j.history.iter().map(|t| t.state.to_string()).collect();
        assert_eq!(
            phases,
            [
                "submitted",
                "downloading (3 bytes)",
                "downloaded",
                "verifying",
                "transferring: session",
                "transferring: security",
                "transferring: erase",
                "transferring: request_download",
                "transferring: block 2/2",
                "transferring: exit",
                "transferring: check",
                "applying: reset",
                "applying: await_boot",
                "applying: await_confirm",
                "committed"
            ]
        );
    }

    #[test]
    fn resume_decisions() {
        let m = Manager::default();
        let cases = [
            (State::Downloading { bytes: 7 }, Command::Download),
            (State::Verifying, Command::Verify),
            (
                State::Transferring {
                    step: TransferStep::Block { n: 5, of: 9 },
                },
                Command::Observe,
            ),
            (
                State::Applying {
                    step: ApplyStep::Reset,
                },
                Command::Observe,
            ),
            (
                State::Applying {
                    step: ApplyStep::AwaitConfirm,
                },
                Command::Observe,
            ),
            (State::Committed, Command::Done),
        ];
        for (state, want) in cases {
            let mut j = job();
            j.state = state.clone();
            assert_eq!(m.next(&mut j, 1, true).unwrap(), want, "{state}");
        }
        // A transfer restarts cleanly once the ECU says nothing of ours is staged.
        let mut j = job();
        j.state = State::Transferring {
            step: TransferStep::Block { n: 5, of: 9 },
        };
        assert_eq!(m.next(&mut j, 1, true).unwrap(), Command::Observe);
        m.handle(&mut j, WorkerEvent::Observed(not_staged("")), 2)
            .unwrap();
        assert_eq!(m.next(&mut j, 3, false).unwrap(), Command::Transfer);
        assert_eq!(
            j.state,
            State::Transferring {
                step: TransferStep::Session
            }
        );
        // Mid-transfer, what the ECU says decides too: a cut after the check routine left the
        // image requested (reset it), or the ECU already installed it (wait for the outcome);
        // an old rollback is an earlier update's.
        for (o, want) in [
            (Observation::Committed, "applying: await_confirm"),
            (Observation::OnProbation, "applying: await_confirm"),
            (Observation::Requested, "applying: reset"),
            (
                Observation::RolledBack {
                    reason: "reverted: x".into(),
                    boot_count: 3,
                },
                "transferring: session",
            ),
            (not_staged(""), "transferring: session"),
        ] {
            let mut j = job();
            j.state = State::Transferring {
                step: TransferStep::Check,
            };
            m.handle(&mut j, WorkerEvent::Observed(o), 2).unwrap();
            assert_eq!(j.state.to_string(), want);
        }
        // Observations decide.
        let obs = [
            (Observation::Committed, "committed"),
            (Observation::OnProbation, "applying: await_confirm"),
            (Observation::Requested, "applying: reset"),
            (
                Observation::RolledBack {
                    reason: "reverted: x".into(),
                    boot_count: 3,
                },
                "rolled_back: reverted: x",
            ),
            (not_staged(""), "transferring: session"),
        ];
        for (o, want) in obs {
            let mut j = job();
            j.state = State::Applying {
                step: ApplyStep::Reset,
            };
            m.handle(&mut j, WorkerEvent::Observed(o), 2).unwrap();
            assert_eq!(j.state.to_string(), want);
        }
    }

    #[test]
    fn retries_are_bounded_and_refusals_fail_at_once() {
        let m = Manager {
            limits: Limits {
                transfer_attempts: 2,
                download_attempts: 5,
            },
        };
        let mut j = job();
        j.state = State::Transferring {
            step: TransferStep::Session,
        };
        for _ in 0..2 {
            assert_eq!(m.next(&mut j, 1, false).unwrap(), Command::Transfer);
            m.handle(
                &mut j,
                WorkerEvent::TransferFailed {
                    reason: "connection reset".into(),
                    retryable: true,
                },
                2,
            )
            .unwrap();
        }
        assert_eq!(m.next(&mut j, 3, false).unwrap(), Command::Done);
        assert_eq!(
            j.state.to_string(),
            "failed: transfer: gave up after 2 attempts (attempts 1-2: connection reset)"
        );

        let mut j = job();
        j.state = State::Transferring {
            step: TransferStep::Security,
        };
        m.handle(
            &mut j,
            WorkerEvent::TransferFailed {
                reason: "check programming dependencies: image refused by check 0x05 (downgrade)"
                    .into(),
                retryable: false,
            },
            2,
        )
        .unwrap();
        assert_eq!(
            j.state.to_string(),
            "failed: refused: transfer: check programming dependencies: image refused by check 0x05 (downgrade)"
        );
        // Events that make no sense in the current state are refused, and change nothing.
        let mut j = job();
        let e = m.handle(&mut j, WorkerEvent::Committed, 1).unwrap_err();
        assert_eq!(e.to_string(), "illegal transition submitted -> committed");
        assert_eq!(j.state, State::Submitted);
    }
}
