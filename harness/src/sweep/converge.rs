//! Convergence: a fork whose whole simulation state equals one already known to lead to a
//! verified end stops there and takes that end (`Options::converge`, `hil sweep --converge`).
//!
//! **Checkpoints.** Only where the OTA manager holds nothing in memory (its whole state is
//! the job document): after the point's cut, at each power-on while the manager is down,
//! and at each start of the manager (it then reads the job from its store). At a checkpoint
//! the fork's state is fingerprinted (SHA-256, [`ecu_sim::fingerprint`]):
//!
//! | part | in the fingerprint |
//! |---|---|
//! | flash | every sector's cells (hashes kept with the copy-on-write sectors, rehashed only when changed), power |
//! | ECU, bootloader | clock, firmware and boot time, boot counter, last decision and outcome, undrained events, DTCs ([`ecu_sim::ecu::Ecu::fingerprint`]) |
//! | diagnostic server | seed generator, lockout, responses in flight, the testers' sessions, security, downloads (not when a boot comes first: it resets them) |
//! | world | pending power restores and the manager's restart, fault effects queued (NRCs, corruptions, download faults), boots, reverts, transfer counters, the job state, the served artifact, the ECU's test boots and reverts (without their times) |
//! | job store | the job document (its history without the times), the artifact's length (and its bytes when the scenario can corrupt a download) |
//! | runtime | the checkpoint's kind, the sub-millisecond phase of now against the fork's runtime (tokio rounds timers to milliseconds from its start) |
//!
//! **Normalised** — left out because it provably cannot change what happens next:
//!
//! | what | why |
//! |---|---|
//! | absolute time | every time is taken relative to now; deadlines only compared as `now < t` count as "passed" alike; the one absolute deadline, the run's time limit, is checked when the end is taken (a fork whose shifted end would pass it runs on) |
//! | flash operation counters, statistics, tear randomness; the request counter; the ids of armed rules | only fault triggers and armed cuts read them: a checkpoint is only taken when every fault of the scenario is spent and nothing is armed |
//! | the job history's times, the trace, the invariant violations and the times of test boots and reverts | history: nothing in the simulation reads them; the verdict does, so a converged fork's record is its own up to the checkpoint followed by the end's record after it, shifted to its time |
//! | the time the manager was killed | only stamps a trace line |
//!
//! **Exact.** The stored end is the part of a finished fork *after* the checkpoint: its
//! invariant violations, test boots and reverts, faults fired and job history since, the
//! final job and end state, with times relative to the checkpoint. A converged fork is its
//! own record up to the checkpoint plus that part, shifted by the difference of the two
//! "now"s, and is classified like any other ([`super::verdict::classify`]): every invariant
//! was checked at every boot up to the checkpoint, the rest is the end's. Only forks that ran
//! to the end *and passed* are recorded, so a failing point always runs to its own end.
//! Whichever thread records a state first, the ends agree (that is what exactness means, and
//! `tests/sweep_converge.rs` checks it point by point against run-to-the-end); which points
//! converge can depend on the threads' timing, their verdicts cannot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ecu_sim::fingerprint::{Fingerprint, Unfingerprintable};

use crate::ota::job::Job;
use crate::ota::sim::SimEcu;
use crate::scenario::outcome::{EndState, RunResult};
use crate::scenario::trace::Trace;
use crate::scenario::world::{Evidence, ImageEvent, Violation, World};

/// Where a checkpoint is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Power comes back (the ECU about to boot) while the manager is down.
    PowerOn,
    /// The manager starts (it reads its job from the store).
    ManagerStart,
}

/// A fork's own record at a checkpoint: where its history stood.
#[derive(Clone, Debug)]
pub struct Mark {
    pub now_us: u64,
    pub violations: Vec<Violation>,
    pub images: Vec<ImageEvent>,
    pub fired: Vec<u32>,
    pub job: Job,
}

/// A finished fork's end, seen from one of its checkpoints.
#[derive(Debug)]
pub struct End {
    pub mark: Mark,
    pub evidence: Evidence,
    pub job: Job,
    pub end: EndState,
    /// When its job ended (µs).
    pub job_end_us: u64,
}

/// The ends known so far, by fingerprint: shared by a sweep's workers.
#[derive(Debug, Default)]
pub struct Known {
    ends: Mutex<HashMap<[u8; 32], Arc<End>>>,
}

impl Known {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<End>> {
        lock(&self.ends).get(key).cloned()
    }

    /// Record a finished fork's end under each of its checkpoints (an end already known for
    /// a fingerprint stays: both are the same end).
    pub fn record(
        &self,
        seen: Vec<([u8; 32], Mark)>,
        evidence: &Evidence,
        job: &Job,
        end: &EndState,
        job_end_us: u64,
    ) {
        let mut ends = lock(&self.ends);
        for (key, mark) in seen {
            ends.entry(key).or_insert_with(|| {
                Arc::new(End {
                    mark,
                    evidence: evidence.clone(),
                    job: job.clone(),
                    end: end.clone(),
                    job_end_us,
                })
            });
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.ends).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One fork's link to the known ends: where its job store is, what it passed, where it
/// stopped.
#[derive(Debug)]
pub struct Watch {
    pub known: Arc<Known>,
    pub job_path: PathBuf,
    pub artifact_path: PathBuf,
    /// The scenario can change the artifact's bytes (download faults, swapped artifacts):
    /// fingerprint them, not only their length.
    pub hash_artifact: bool,
    /// The index of the point's own fault (checkpoints come after it fired).
    pub cut: usize,
    /// The fork's runtime started at this world time (µs).
    pub start_us: u64,
    /// The run's time limit (µs of world time).
    pub limit_us: u64,
    /// The checkpoints this fork passed (recorded if it runs to a verified end).
    pub seen: Mutex<Vec<([u8; 32], Mark)>>,
    /// Where it converged: the end it takes, and its own mark there.
    pub stopped: Mutex<Option<(Arc<End>, Mark)>>,
    pub wake: tokio::sync::Notify,
}

impl Watch {
    /// At a checkpoint: fingerprint the fork; whether it stops here (an end is known, and
    /// it would come before the time limit).
    pub fn check(&self, world: &World, sim: &SimEcu, now: u64, at: Checkpoint) -> bool {
        if lock(&self.stopped).is_some()
            || world.engine.fired().get(self.cut).is_none_or(|n| *n == 0)
        {
            return false;
        }
        let Ok((key, job)) = self.fingerprint(world, sim, now, at) else {
            return false;
        };
        let mark = Mark {
            now_us: now,
            violations: world.violations.clone(),
            images: world.image_events.clone(),
            fired: world.engine.fired().to_vec(),
            job,
        };
        match self.known.get(&key) {
            Some(end)
                if shift(end.job_end_us, now, end.mark.now_us)
                    .is_some_and(|t| t < self.limit_us) =>
            {
                *lock(&self.stopped) = Some((end, mark));
                self.wake.notify_one();
                true
            }
            _ => {
                lock(&self.seen).push((key, mark));
                false
            }
        }
    }

    fn fingerprint(
        &self,
        world: &World,
        sim: &SimEcu,
        now: u64,
        at: Checkpoint,
    ) -> Result<([u8; 32], Job), Unfingerprintable> {
        let mut f = Fingerprint::new();
        f.debug(&at);
        f.u64(now.wrapping_sub(self.start_us) % 1000);
        world.fingerprint(&mut f, now)?;
        sim.ecu.fingerprint(&mut f, now)?;
        sim.server.fingerprint(&mut f, now, &sim.ecu);
        let text = std::fs::read_to_string(&self.job_path)
            .map_err(|_| Unfingerprintable("the job document cannot be read"))?;
        let job = crate::ota::store::parse_job(&text, &self.job_path)
            .map_err(|_| Unfingerprintable("the job document does not parse"))?;
        let mut timeless = job.clone();
        for t in &mut timeless.history {
            t.at_us = 0;
        }
        f.tag("job");
        f.bytes(
            serde_json::to_string(&timeless)
                .map_err(|_| Unfingerprintable("the job does not serialise"))?
                .as_bytes(),
        );
        f.tag("artifact");
        if self.hash_artifact {
            use sha2::{Digest, Sha256};
            match std::fs::read(&self.artifact_path) {
                Ok(b) => f.bytes(&Sha256::digest(&b)),
                Err(_) => f.tag("none"),
            }
        } else {
            f.u64(std::fs::metadata(&self.artifact_path).map_or(0, |m| m.len()));
        }
        Ok((f.finish(), job))
    }

    /// The end this fork converged on, composed into its own run's result (see the module
    /// doc); `None` if it did not stop.
    pub fn converged(&self) -> Option<RunResult> {
        let (end, mine) = lock(&self.stopped).clone()?;
        Some(compose(&end, mine))
    }

    /// Whether it stopped at a checkpoint.
    pub fn has_stopped(&self) -> bool {
        lock(&self.stopped).is_some()
    }

    /// The checkpoints passed, to record when the fork's end is verified.
    pub fn take_seen(&self) -> Vec<([u8; 32], Mark)> {
        std::mem::take(&mut *lock(&self.seen))
    }
}

/// `t` of the end recorded at `then`, for a fork at `now`.
fn shift(t: u64, now: u64, then: u64) -> Option<u64> {
    u64::try_from(i128::from(t) + i128::from(now) - i128::from(then)).ok()
}

fn compose(end: &End, mine: Mark) -> RunResult {
    let (now, then) = (mine.now_us, end.mark.now_us);
    let at = |t: u64| shift(t, now, then).unwrap_or(0);
    let mut violations = mine.violations;
    violations.extend(
        end.evidence.violations[end.mark.violations.len()..]
            .iter()
            .map(|v| shift_violation(v, &at)),
    );
    let mut images = mine.images;
    images.extend(
        end.evidence.images[end.mark.images.len()..]
            .iter()
            .map(|e| shift_image(e, &at)),
    );
    let fired = mine
        .fired
        .iter()
        .zip(end.evidence.fired.iter().zip(&end.mark.fired))
        .map(|(m, (e, before))| m + (e - before))
        .collect();
    // The job: the end's, with this fork's own history up to the checkpoint (the states are
    // the same, the times its own), then the end's, shifted.
    let mut job = end.job.clone();
    let n = end.mark.job.history.len();
    let mut history = mine.job.history;
    let shifted = |t: &crate::ota::job::Transition| crate::ota::job::Transition {
        at_us: at(t.at_us),
        state: t.state.clone(),
    };
    if n > 0
        && let Some(last) = end.job.history.get(n - 1)
        && Some(last) != end.mark.job.history.get(n - 1)
        && let Some(mine) = history.get_mut(n - 1)
    {
        // The end replaced the last entry before the checkpoint (a progress-only update).
        *mine = shifted(last);
    }
    history.extend(end.job.history.iter().skip(n).map(shifted));
    job.history = history;
    let mut end_state = end.end.clone();
    end_state.simulated_us = at(end_state.simulated_us);
    RunResult {
        trace: Trace::default(),
        end: end_state,
        failures: Vec::new(),
        job: Some(job),
        evidence: Some(Evidence {
            violations,
            fired,
            images,
        }),
        real_time: false,
    }
}

fn shift_violation(v: &Violation, at: &impl Fn(u64) -> u64) -> Violation {
    let mut v = v.clone();
    match &mut v {
        Violation::NoBootableImage { at_us, .. }
        | Violation::BootUnread { at_us, .. }
        | Violation::ForeignImage { at_us, .. }
        | Violation::Unverified { at_us, .. } => *at_us = at(*at_us),
    }
    v
}

fn shift_image(e: &ImageEvent, at: &impl Fn(u64) -> u64) -> ImageEvent {
    let mut e = e.clone();
    match &mut e {
        ImageEvent::TestBoot { at_us, .. } | ImageEvent::Revert { at_us, .. } => {
            *at_us = at(*at_us);
        }
    }
    e
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
