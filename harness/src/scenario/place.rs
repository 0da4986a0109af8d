//! Where a scenario runs, and what its faults can observe and do there: one table for every
//! place. Validation (external clients: located errors) and bench realisation (SKIPPED with
//! the reason) both read it; the fault engine ([`super::engine`]) is the same everywhere, so
//! what a place can observe is all that differs.
//!
//! | part | simulation | external client | bench |
//! |---|---|---|---|
//! | `when: state`, `event: state:…` | yes | no: no job states | yes |
//! | `when: download_bytes`, `download_percent`, `probability` per `download_chunk` | yes | no: no download | yes (not `probability`) |
//! | `when: transfer_block`, `transfer_percent`, `at_ms` | yes | yes | yes |
//! | `when: flash_op`, `boot`, `request`, `event`, `probability` | yes | yes | no: not visible from outside / not replayable |
//! | `do: download`, `swap_artifact` | yes | no: no download | with the bench's `download` |
//! | `do: kill_manager`, `power_cut.kill_manager` | yes | no: no manager | with the bench's `kill_manager` |
//! | `do: power_cut` | yes | yes | with the bench's `power_cut` |
//! | `do: reset`, `can`, `drop_connection`, `flip_transfer_bits`, `inject_nrc`, `corrupt_request`, `bit_rot` | yes | yes | no: they need a gateway / the flash |

use super::outcome::{EndState, RunResult};
use super::schema::Scenario;
use super::schema::{Action, Opportunity, Trigger};
use super::trace::Trace;
use crate::ota::job::Job;

/// Where the ECU lives during a run: its row of the table above, and how the end of a run is
/// read there. Implemented by the simulated world (in virtual time, or served on real
/// sockets for an external client: `ota::sim::SimWorld<World>`) and by a bench
/// (`bench::run`). The client that updates the ECU — the project's manager with its
/// kill/restart loop ([`super::client::run_manager`]) or an external command — is chosen
/// apart from the place; [`Finish::result`] turns what the place read into the run's result
/// the same way everywhere.
pub trait Place {
    /// This place's row of the table.
    fn kind(&self) -> PlaceKind;
    /// The end of the run as this place reads it, at `now_us`; `job` is the manager's (none
    /// with an external client).
    fn finish(&mut self, job: Option<&Job>, now_us: u64) -> Finish;
}

/// Where a scenario's ECU lives and who updates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceKind {
    /// The project's manager against the in-process virtual ECU, in virtual time.
    Simulation,
    /// An external OTA client against the virtual ECU served on real sockets.
    External,
    /// The project's manager against a real ECU on a bench.
    Bench,
}

/// What a place read at the end of a run ([`Place::finish`]).
#[derive(Clone, Debug)]
pub struct Finish {
    pub end: EndState,
    /// What the place itself found wrong, most important first: an ECU that runs nothing
    /// or does not answer, invariants broken, an image installed twice.
    pub findings: Vec<String>,
    /// The faults that never fired, in the scenario's words.
    pub unfired: Vec<String>,
    pub trace: Trace,
    /// The simulated world's typed record (none on a bench).
    pub evidence: Option<super::world::Evidence>,
}

impl Finish {
    /// The run's result, the same for every place: the place's findings, then the faults
    /// that never fired, then the scenario's expectations (`full_checks`: also those on
    /// event order and counts).
    pub fn result(
        self,
        s: &Scenario,
        job: Option<Job>,
        full_checks: bool,
        real_time: bool,
    ) -> RunResult {
        let mut failures = self.findings;
        failures.extend(self.unfired);
        failures.extend(super::expect::check(
            &s.expect,
            &self.end,
            &self.trace,
            full_checks,
        ));
        RunResult {
            trace: self.trace,
            end: self.end,
            failures,
            job,
            evidence: self.evidence,
            real_time,
        }
    }
}

/// A scenario part a place cannot realise: its name in scenario files, where under the fault
/// it is written (for located errors) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub name: &'static str,
    pub at: &'static [&'static str],
    pub why: &'static str,
}

pub const MANAGER_ONLY: &str =
    "needs the project's OTA manager (an external client has no job states)";
pub const NO_DOWNLOAD: &str =
    "an external client gets the image as a file (`{image}`): there is no download to attack";

/// Why `place` cannot fire a fault on `t`; `None` when it can.
pub fn trigger_gap(place: PlaceKind, t: &Trigger) -> Option<Gap> {
    let gap = |name, at, why| Some(Gap { name, at, why });
    match (place, t) {
        (PlaceKind::Simulation, _) => None,
        (PlaceKind::External, Trigger::State(_)) => gap("state", &["when", "state"], MANAGER_ONLY),
        (PlaceKind::External, Trigger::DownloadBytes(_)) => {
            gap("download_bytes", &["when"], NO_DOWNLOAD)
        }
        (PlaceKind::External, Trigger::DownloadPercent(_)) => {
            gap("download_percent", &["when"], NO_DOWNLOAD)
        }
        (PlaceKind::External, Trigger::Probability(p)) if p.per == Opportunity::DownloadChunk => {
            gap("probability", &["when", "probability", "per"], NO_DOWNLOAD)
        }
        (PlaceKind::External, _) => None,
        (
            PlaceKind::Bench,
            Trigger::State(_)
            | Trigger::DownloadBytes(_)
            | Trigger::DownloadPercent(_)
            | Trigger::TransferBlock(_)
            | Trigger::TransferPercent(_)
            | Trigger::AtMs(_),
        ) => None,
        // A job state by its event name: the engine matches it wherever the manager runs.
        (PlaceKind::Bench, Trigger::Event(e)) if e.starts_with("state:") => None,
        (PlaceKind::Bench, Trigger::FlashOp(_)) => gap(
            "flash_op",
            &["when", "flash_op"],
            "a real ECU's flash operations cannot be seen from outside",
        ),
        (PlaceKind::Bench, Trigger::Boot(_)) => gap(
            "boot",
            &["when", "boot"],
            "a real ECU's boots cannot be counted from outside",
        ),
        (PlaceKind::Bench, Trigger::Request(_)) => gap(
            "request",
            &["when", "request"],
            "the moment the ECU has handled a request, before its response leaves, cannot be seen from outside",
        ),
        (PlaceKind::Bench, Trigger::Event(_)) => gap(
            "event",
            &["when", "event"],
            "ECU events (swap_started, booted, …) are the virtual ECU's insides; for a job state use `state`",
        ),
        (PlaceKind::Bench, Trigger::Probability(_)) => gap(
            "probability",
            &["when", "probability"],
            "chance triggers draw at the simulated links' opportunities from the scenario's seed; a bench run cannot replay them",
        ),
    }
}

/// Why `place` can never carry out `a`; `None` when it can (a bench may still lack the
/// capability: `bench::realise` checks the bench's `faults`).
pub fn action_gap(place: PlaceKind, a: &Action) -> Option<Gap> {
    let gap = |name, at, why| Some(Gap { name, at, why });
    match (place, a) {
        (PlaceKind::Simulation, _) => None,
        (PlaceKind::External, Action::Download(_)) => gap("download", &["do"], NO_DOWNLOAD),
        (PlaceKind::External, Action::SwapArtifact(_)) => {
            gap("swap_artifact", &["do"], NO_DOWNLOAD)
        }
        (PlaceKind::External, Action::KillManager) => gap("kill_manager", &["do"], MANAGER_ONLY),
        (PlaceKind::External, Action::PowerCut(c)) if c.kill_manager => gap(
            "power_cut",
            &["do", "power_cut", "kill_manager"],
            MANAGER_ONLY,
        ),
        (PlaceKind::External, _) => None,
        (PlaceKind::Bench, a) => {
            let name = action_name(a);
            never_on_a_bench(name).map(|why| Gap {
                name,
                at: &["do"],
                why,
            })
        }
    }
}

/// An action's name in scenario files.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::PowerCut(_) => "power_cut",
        Action::Reset => "reset",
        Action::Can(_) => "can",
        Action::DropConnection => "drop_connection",
        Action::Download(_) => "download",
        Action::FlipTransferBits(_) => "flip_transfer_bits",
        Action::BitRot(_) => "bit_rot",
        Action::InjectNrc(_) => "inject_nrc",
        Action::CorruptRequest(_) => "corrupt_request",
        Action::KillManager => "kill_manager",
        Action::SwapArtifact(_) => "swap_artifact",
    }
}

/// Scenario actions no bench can realise, by their name in scenario files, and why.
const NEVER_ON_A_BENCH: &[(&str, &str)] = &[
    (
        "reset",
        "an ECU reset behind the manager's back needs a gateway between tester and ECU; benches have none",
    ),
    (
        "can",
        "CAN frame faults need a gateway between tester and ECU; benches have none",
    ),
    (
        "drop_connection",
        "closing the connection from the ECU's side needs a gateway between tester and ECU; benches have none",
    ),
    (
        "flip_transfer_bits",
        "flipping bits in TransferData blocks on the way needs a gateway between tester and ECU; benches have none",
    ),
    (
        "inject_nrc",
        "answering in the ECU's place needs a gateway between tester and ECU; benches have none",
    ),
    (
        "corrupt_request",
        "corrupting requests on the way needs a gateway between tester and ECU; benches have none",
    ),
    (
        "bit_rot",
        "a real ECU's flash contents cannot be changed from outside",
    ),
];

/// Why no bench can carry out the action named `action` (`can`, `bit_rot`, …); `None` for
/// actions a bench capability realises.
pub fn never_on_a_bench(action: &str) -> Option<&'static str> {
    NEVER_ON_A_BENCH
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(_, why)| *why)
}
