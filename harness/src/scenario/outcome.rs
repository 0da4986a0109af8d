//! What a scenario run produced, wherever it ran: the end state the expectations read, the
//! result, the errors of a run that could not be carried out, and the failures for faults
//! that never fired.

use std::path::PathBuf;

use ecu_sim::boot::Slot;
use ecu_sim::image::{self, Version};

use super::schema::parse_dtc;
use super::schema::{OutcomeSpec, Scenario};
use super::trace::Trace;
use super::world::state_name;
use crate::ota::job::{Job, State};

/// Something the runner could not do (as opposed to a scenario that failed): each with the
/// facts to diagnose it and its typed source.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the {what} image: version {version:?}: {source}")]
    Version {
        what: &'static str,
        version: String,
        source: image::ParseVersionError,
    },
    #[error("building the {what} image: {source}")]
    Image {
        what: &'static str,
        source: image::ImageError,
    },
    #[error("encrypting the {what} image: {problem}")]
    Encrypt {
        what: &'static str,
        problem: EncryptProblem,
    },
    #[error("bench image {path}: {problem}")]
    BenchImage {
        path: PathBuf,
        problem: BenchImageProblem,
    },
    #[error("the ecu's flash geometry: {0}")]
    Geometry(#[source] ecu_sim::flash::FlashError),
    #[error("provisioning the installed image: {0}")]
    Provision(#[source] ecu_sim::ecu::EcuError),
    #[error("the ecu's decryption key (ecu.enc_key): {0}")]
    EncKey(#[source] crate::scenario::schema::EncKeyFileError),
    #[error("starting a runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
    #[error("the job store: {0}")]
    Store(#[from] crate::ota::store::StoreError),
    #[error("the OTA manager broke: {0}")]
    Manager(#[from] crate::ota::error::OtaError),
    #[error("serving the ecu: {0}")]
    Serve(#[from] ecu_sim::serve::ServeError),
    #[error("the artifact server: {0}")]
    Artifacts(#[from] crate::artifact::ArtifactError),
    #[error("the bench's power switch: {0}")]
    Power(#[source] crate::power::PowerError),
    #[error("switching the bench's power on: {0}")]
    PowerOn(#[source] crate::power::PowerError),
    #[error(transparent)]
    Bench(#[from] crate::bench::run::BenchError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the scenario fails without a cut, fix it first: {0}")]
    FailsWithoutCut(String),
    #[error("the clock cannot go back {0} us to the fork")]
    ClockBeforeFork(u64),
    #[error("the sweep panicked")]
    Panicked,
    #[error("no end after {0} s of simulated time")]
    Stuck(u64),
}

/// Why an image with `encrypt` cannot be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum EncryptProblem {
    #[error("no key to encrypt for: set ecu.enc_key")]
    NoKey,
    #[error("AES-{0} is not an AES key size MCUboot has (128 or 256)")]
    AesBits(u16),
    #[error(transparent)]
    Image(image::ImageError),
}

/// What is wrong with a bench's own image file.
#[derive(Debug, thiserror::Error)]
pub enum BenchImageProblem {
    #[error("{0}")]
    Read(#[source] std::io::Error),
    #[error("{0}")]
    Header(#[source] image::ImageError),
    #[error("its header says {found}, the scenario updates to {wanted}")]
    Version { found: Version, wanted: String },
}

/// The end state of a run, as the expectations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndState {
    pub outcome: OutcomeSpec,
    pub reason: Option<String>,
    pub version: Option<Version>,
    pub slot: Option<Slot>,
    pub confirmed: bool,
    pub boots: u64,
    pub rollbacks: u64,
    pub dtcs: Vec<u32>,
    pub simulated_us: u64,
    pub download_resumed: bool,
    /// The version of the installed (old) image.
    pub installed: Option<Version>,
}

impl EndState {
    /// What the ECU runs at the end, e.g. `1.0.0 (confirmed)` or `nothing (unconfirmed)`.
    pub fn running(&self) -> String {
        format!(
            "{} ({})",
            self.version
                .map_or_else(|| "nothing".to_string(), |v| v.to_string()),
            if self.confirmed {
                "confirmed"
            } else {
                "unconfirmed"
            }
        )
    }
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub trace: Trace,
    pub end: EndState,
    /// Unmet expectations and broken invariants, most important first.
    pub failures: Vec<String>,
    /// The manager's job (none with an external client).
    pub job: Option<Job>,
    /// The simulated world's typed record (none on a bench: a real ECU is seen from outside).
    pub evidence: Option<super::world::Evidence>,
    /// Times are wall-clock time (an external client, a bench), not virtual time.
    pub real_time: bool,
}

/// A failure for every fault that never fired, unless it is optional: located at the fault
/// in its file and in the file's words, `s.yaml:7:5: fault 2 (when: {flash_op: {n: 900}})
/// never fired: …`.
pub fn unfired(s: &Scenario, fired: &[u32]) -> Vec<String> {
    unfired_or_idle(s, fired, &[])
}

/// [`unfired`], saying for a fault whose trigger matched but whose action did nothing
/// (`idle`, by index: a bit rot outside its region) why it did not fire.
pub fn unfired_or_idle(s: &Scenario, fired: &[u32], idle: &[Option<String>]) -> Vec<String> {
    s.faults
        .iter()
        .zip(fired)
        .enumerate()
        .filter(|(_, (f, n))| **n == 0 && !f.optional)
        .map(|(i, (f, _))| {
            let at = s
                .origin
                .as_ref()
                .and_then(|o| o.faults.get(i).map(|(l, c)| format!("{}:{l}:{c}: ", o.file)))
                .unwrap_or_default();
            match idle.get(i).and_then(Option::as_ref) {
                Some(why) => format!(
                    "{at}fault {} (when: {}) never fired: its trigger matched, but its action did nothing ({why})",
                    i + 1,
                    f.when.to_yaml_flow()
                ),
                None => format!(
                    "{at}fault {} (when: {}) never fired: its trigger did not match (mark it `optional: true` if that is fine)",
                    i + 1,
                    f.when.to_yaml_flow()
                ),
            }
        })
        .collect()
}

/// The scenario outcome of a job's final state, with its reason.
pub fn outcome_of(state: &State) -> (OutcomeSpec, Option<String>) {
    match state {
        State::Committed => (OutcomeSpec::Committed, None),
        State::RolledBack { reason } => (OutcomeSpec::RolledBack, Some(reason.clone())),
        State::Failed {
            reason,
            refused: true,
        } => (OutcomeSpec::Rejected, Some(reason.clone())),
        State::Failed { reason, .. } => (OutcomeSpec::Failed, Some(reason.clone())),
        other => (
            OutcomeSpec::Failed,
            Some(format!("unfinished: {}", state_name(other))),
        ),
    }
}

/// The DTC code of a `D00300`-style name.
pub fn dtc_code(name: &str) -> Option<u32> {
    parse_dtc(name)
}
