//! What the world establishes from the ECU's typed events, kept typed for the verdicts that
//! read them (a sweep's classification): the invariants that did not hold and what the ECU
//! did with the images (test boots, reverts).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ecu_sim::boot::Slot;
use ecu_sim::event::RevertReason;

use crate::ota::job::{Job, State};

/// An always-on invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The bootloader found nothing it may boot.
    NoBootableImage {
        at_us: u64,
        reasons: Vec<(Slot, String)>,
    },
    /// A boot whose bytes the ECU did not report (the harness could not check it).
    BootUnread {
        at_us: u64,
        boot: u64,
        slot: Slot,
        version: String,
    },
    /// A boot of bytes that are neither image (a mixed, torn or corrupted image).
    ForeignImage {
        at_us: u64,
        slot: Slot,
        version: String,
    },
    /// A boot of one of the two images, which does not verify with the ECU's keys.
    Unverified {
        at_us: u64,
        slot: Slot,
        image: &'static str,
    },
}

impl Violation {
    /// Whether the ECU is bricked by it: nothing bootable, or it ran an image it must not run.
    pub fn bricks(&self) -> bool {
        !matches!(self, Violation::BootUnread { .. })
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// `12.345 s`.
fn at(us: u64) -> String {
    format!("{:.3} s", secs(us))
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NoBootableImage { at_us, reasons } => write!(
                f,
                "at {:.6} s the ECU has no bootable image (bricked): {reasons:?}",
                secs(*at_us)
            ),
            Violation::BootUnread {
                at_us,
                boot,
                slot,
                version,
            } => write!(
                f,
                "at {:.6} s boot {boot} started {version} from {slot}, but its bytes could not be read",
                secs(*at_us)
            ),
            Violation::ForeignImage {
                at_us,
                slot,
                version,
            } => write!(
                f,
                "at {:.6} s the ECU booted {version} from {slot}, which is neither image byte for byte (a mixed or corrupted image)",
                secs(*at_us)
            ),
            Violation::Unverified { at_us, slot, image } => write!(
                f,
                "at {:.6} s the ECU booted the {image} image from {slot}, which does not verify",
                secs(*at_us)
            ),
        }
    }
}

/// What the ECU did with an image, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageEvent {
    /// An image booted on probation (a test boot); `image` names which of the two it is
    /// (`None`: neither, a violation of its own).
    TestBoot {
        at_us: u64,
        slot: Slot,
        image: Option<&'static str>,
    },
    /// The bootloader started taking a test image out; `image` is the one the last test boot
    /// from that slot ran (`None`: no test boot from it was seen).
    Revert {
        at_us: u64,
        slot: Slot,
        image: Option<&'static str>,
        reason: RevertReason,
    },
}

/// The typed record of a simulated run, from its start (a fork keeps its parent's record up
/// to the fork).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    pub violations: Vec<Violation>,
    /// Times each fault of the run's scenario fired, by index.
    pub fired: Vec<u32>,
    pub images: Vec<ImageEvent>,
}

/// How often the update was installed (see [`Evidence::installs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installs {
    /// Programming sequences the manager started (the job entering `transferring`).
    pub transfers: u32,
    /// Reverts of the update by the ECU.
    pub rollbacks: u32,
    /// Each way it was installed twice, as a sentence (none: once at most).
    pub problems: Vec<String>,
}

impl Evidence {
    /// How often the update was installed, from the ECU's image events and the job's history
    /// (`None`: an external client, only the ECU's side is checked). An image is **installed
    /// twice** when, after the ECU reverted it, the manager transfers it again, it boots on
    /// probation again, or the ECU reverts it again. A revert reported again before the image
    /// booted on probation again (a revert resumed after a cut) is the same revert.
    pub fn installs(&self, job: Option<&Job>) -> Installs {
        let evidence = self;
        let mut problems = Vec::new();
        // Per image: when it was first reverted, how many reverts (a revert reported again before
        // the image booted on probation again is the same revert), whether it is on probation.
        let mut first_revert: BTreeMap<&str, u64> = BTreeMap::new();
        let mut reverts: BTreeMap<&str, u32> = BTreeMap::new();
        let mut on_probation: BTreeSet<&str> = BTreeSet::new();
        let mut booted_again = false;
        for e in &evidence.images {
            match e {
                ImageEvent::TestBoot {
                    at_us,
                    image: Some(image),
                    ..
                } => {
                    if let Some(t0) = first_revert.get(image)
                        && !booted_again
                    {
                        booted_again = true;
                        problems.push(format!(
                            "the {image} image booted on probation again at {} after the ECU reverted it at {}",
                            at(*at_us),
                            at(*t0)
                        ));
                    }
                    on_probation.insert(image);
                }
                ImageEvent::Revert {
                    at_us,
                    image: Some(image),
                    ..
                } => {
                    if on_probation.remove(image) {
                        *reverts.entry(image).or_default() += 1;
                    }
                    first_revert.entry(image).or_insert(*at_us);
                }
                _ => {}
            }
        }
        for (image, n) in &reverts {
            if *n > 1 {
                problems.push(format!("the ECU reverted the {image} image {n} times"));
            }
        }
        // Programming sequences: the job entering `transferring` from another state.
        let mut transfers = 0;
        if let Some(job) = job {
            let mut in_transfer = false;
            let mut reported = false;
            for t in &job.history {
                let transferring = matches!(t.state, State::Transferring { .. });
                if transferring && !in_transfer {
                    transfers += 1;
                }
                if transferring
                    && !reported
                    && let Some(t0) = first_revert.get("update")
                    && t.at_us > *t0
                {
                    reported = true;
                    problems.push(format!(
                    "the manager transferred the update again at {} after the ECU reverted it at {}",
                    at(t.at_us),
                    at(*t0)
                ));
                }
                in_transfer = transferring;
            }
        }
        let rollbacks = reverts.get("update").copied().unwrap_or(0);
        if !problems.is_empty() {
            let counts = format!(" ({transfers} transfer(s), {rollbacks} rollback(s))");
            for p in &mut problems {
                p.push_str(&counts);
            }
        }
        Installs {
            transfers,
            rollbacks,
            problems,
        }
    }
}

#[cfg(test)]
mod tests;
