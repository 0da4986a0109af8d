//! The verdict of one sweep point (or random chain), from the run's typed record: the end
//! state, the ECU's boots and reverts ([`Evidence`]) and the job's history. Nothing here reads
//! the trace's text.
//!
//! A point ends in an **outcome** or it **fails**:
//!
//! | the run | verdict |
//! |---|---|
//! | "no bootable image", a boot of bytes that are neither image, a boot of an image that does not verify, nothing running at the end | failure: `bricked` |
//! | a boot the harness could not check; the job `committed` while the ECU does not run the update confirmed; `rolled_back` while it does not run the old image confirmed, or without a reason | failure: `invariant_broken` |
//! | the update transferred again after the ECU reverted it, booted on probation again after a revert, or reverted twice | failure: `installed_twice` |
//! | an outcome the scenario does not allow, or the allowed one with the wrong version or slot | failure: `not_allowed` |
//! | the engine could not run the point | failure: `engine` |
//! | otherwise: the job's end | outcome: `committed`, `rolled_back`, `refused` (the ECU or the manager turned the image down), `gave_up` (the manager's attempts ran out) |
//!
//! **Allowed outcomes**: the scenario's `expect.outcome`, and always a safe rollback (the old
//! image running, confirmed, with the ECU's reason): a cut while the new image is on probation
//! makes the bootloader revert it, as it must. `expect.or_rolled_back: true` says the same
//! explicitly (and makes `hil run` accept it too). With the expected outcome, the expected
//! `version` and `slot` must hold; the expectations about the whole trace (events, boots,
//! rollbacks, DTCs, duration) are not checked: the cut changes the path.
//!
//! **Installed twice** is [`Evidence::installs`](crate::scenario::world::Evidence::installs),
//! which `hil run` checks in every scenario too (so a reproducer replays it).

use serde::{Deserialize, Serialize};

use crate::scenario::runner::RunResult;
use crate::scenario::schema::{OutcomeSpec, Scenario};

/// How a point's update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Committed,
    RolledBack,
    Refused,
    GaveUp,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::Refused,
        Outcome::GaveUp,
    ];

    pub fn of(o: OutcomeSpec) -> Outcome {
        match o {
            OutcomeSpec::Committed => Outcome::Committed,
            OutcomeSpec::RolledBack => Outcome::RolledBack,
            OutcomeSpec::Rejected => Outcome::Refused,
            OutcomeSpec::Failed => Outcome::GaveUp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled back",
            Outcome::Refused => "refused",
            Outcome::GaveUp => "gave up",
        }
    }
}

/// Why a point failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Bricked,
    InvariantBroken,
    InstalledTwice,
    NotAllowed,
    Engine,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Bricked => "bricked",
            FailureKind::InvariantBroken => "invariant broken",
            FailureKind::InstalledTwice => "installed twice",
            FailureKind::NotAllowed => "outcome not allowed",
            FailureKind::Engine => "engine error",
        }
    }
}

/// One thing wrong with a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: FailureKind,
    pub message: String,
}

impl Problem {
    fn new(kind: FailureKind, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            message: message.into(),
        }
    }
}

/// What a point ended in, and what was wrong with it (nothing: it passed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The job's end (none when the engine failed).
    pub outcome: Option<Outcome>,
    /// Transfers started (programming sequences) and reverts of the update image.
    pub transfers: u32,
    pub rollbacks: u32,
    pub problems: Vec<Problem>,
}

impl Verdict {
    pub fn engine(message: String) -> Verdict {
        Verdict {
            outcome: None,
            transfers: 0,
            rollbacks: 0,
            problems: vec![Problem::new(FailureKind::Engine, message)],
        }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The most important problem first (the order of [`FailureKind`]).
    pub fn first_kind(&self) -> Option<FailureKind> {
        self.problems.iter().map(|p| p.kind).min()
    }
}

/// Whether `o` is allowed by `scenario` (see the module doc).
pub fn allowed(scenario: &Scenario, o: Outcome) -> bool {
    o == Outcome::of(scenario.expect.outcome) || o == Outcome::RolledBack
}

/// Classify a run (see the module doc).
pub fn classify(scenario: &Scenario, r: &RunResult) -> Verdict {
    let Some(evidence) = &r.evidence else {
        return Verdict::engine("the run has no simulated record".into());
    };
    let mut problems = Vec::new();
    for v in &evidence.violations {
        let kind = if v.bricks() {
            FailureKind::Bricked
        } else {
            FailureKind::InvariantBroken
        };
        problems.push(Problem::new(kind, v.to_string()));
    }
    let end = &r.end;
    if end.version.is_none() {
        problems.push(Problem::new(
            FailureKind::Bricked,
            "the ECU runs nothing at the end",
        ));
    }
    let outcome = Outcome::of(end.outcome);
    let runs = || end.running();
    match outcome {
        Outcome::Committed => {
            let update = scenario.update.version.parse().ok();
            if end.version.is_some() && (end.version != update || !end.confirmed) {
                problems.push(Problem::new(
                    FailureKind::InvariantBroken,
                    format!(
                        "the job committed, but the ECU runs {} instead of the update confirmed",
                        runs()
                    ),
                ));
            }
        }
        Outcome::RolledBack => {
            if end.version.is_some() && (end.version != end.installed || !end.confirmed) {
                problems.push(Problem::new(
                    FailureKind::InvariantBroken,
                    format!(
                        "the job rolled back, but the ECU runs {} instead of the old image confirmed",
                        runs()
                    ),
                ));
            }
            if end.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                problems.push(Problem::new(
                    FailureKind::InvariantBroken,
                    "the job rolled back without a reason",
                ));
            }
        }
        Outcome::Refused | Outcome::GaveUp => {}
    }
    let installs = evidence.installs(r.job.as_ref());
    problems.extend(
        installs
            .problems
            .iter()
            .map(|m| Problem::new(FailureKind::InstalledTwice, m.clone())),
    );
    if !allowed(scenario, outcome) {
        let expected = Outcome::of(scenario.expect.outcome);
        problems.push(Problem::new(
            FailureKind::NotAllowed,
            format!(
                "outcome: the scenario allows {}{}, got {}{}",
                expected.name(),
                if expected == Outcome::RolledBack {
                    ""
                } else {
                    " or a safe rollback"
                },
                outcome.name(),
                end.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ));
    } else if end.outcome == scenario.expect.outcome {
        // The expected outcome: its version and slot (the end state only).
        let x = &scenario.expect;
        if let Some(v) = &x.version
            && v.parse().ok() != end.version
        {
            problems.push(Problem::new(
                FailureKind::NotAllowed,
                format!("version: expected {v} running, got {}", runs()),
            ));
        }
        if let Some(slot) = x.slot
            && Some(slot.slot()) != end.slot
        {
            problems.push(Problem::new(
                FailureKind::NotAllowed,
                format!(
                    "slot: expected {}, got {}",
                    slot.slot(),
                    end.slot
                        .map_or_else(|| "none".to_string(), |s| s.to_string())
                ),
            ));
        }
    }
    problems.sort_by_key(|p| p.kind);
    Verdict {
        outcome: Some(outcome),
        transfers: installs.transfers,
        rollbacks: installs.rollbacks,
        problems,
    }
}

#[cfg(test)]
mod tests;
