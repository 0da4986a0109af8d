//! Running a sweep: the clean pass, the forks on worker threads, the tally; random chains of cuts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use ecu_sim::flash::Flash;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::converge::{Known, Watch};
use super::points::{Class, Point, points_of};
use super::reproducer::write_reproducers;
use super::verdict;
use super::verdict::{FailureKind, Outcome, Verdict};
use crate::scenario::outcome::RunError;
use crate::scenario::prepare::{self, Prepared};
use crate::scenario::runner::{self, ForkStart};
use crate::scenario::schema::{Action, CutVariantSpec, Scenario, Trigger};
use crate::scenario::world::{Recorder, Step, StepRecord};

/// Settings of a sweep.
#[derive(Clone, Debug)]
pub struct Options {
    pub classes: Vec<Class>,
    pub variants: Vec<CutVariantSpec>,
    /// Bytes between download points.
    pub download_step: u64,
    /// Power (and the manager) come back after this long.
    pub restore_ms: u64,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    /// Write a reproducer per failing point here.
    pub out: Option<PathBuf>,
    /// Set to stop: points not yet run are skipped (and counted as such).
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// `--partition K/N`: run only this shard's points.
    pub partition: Option<Partition>,
    /// Stop a fork at a state already known to lead to a verified end and take that end
    /// ([`super::converge`]); off: every fork runs to its end.
    pub converge: bool,
}

/// Shard `k` of `n` (`k` from 1): the points whose id is `k - 1` modulo `n`. Neighbouring
/// points cost alike (the same step of the update), so dealing them out in turn balances the
/// shards; the ids are the clean pass's order, so every shard agrees on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub k: u64,
    pub n: u64,
}

impl Partition {
    /// `K/N` with 1 ≤ K ≤ N.
    pub fn parse(s: &str) -> Result<Partition, String> {
        let bad = || format!("--partition {s:?}: expected K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (
            k.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Partition { k, n })
    }

    /// Whether point `id` is this shard's.
    pub fn takes(self, id: u64) -> bool {
        id % self.n == self.k - 1
    }
}

/// What a sweep's points depend on: shards merge only when all of this is equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// SHA-256 of the scenario as the sweep read it (in the scenario format).
    pub scenario_sha256: String,
    pub seed: u64,
    /// SHA-256 of the executable that ran the sweep (its first 16 hex digits).
    pub build: String,
    /// Point classes, cut variants, download step and restore delay.
    pub settings: String,
}

impl Identity {
    fn of(scenario: &Scenario, o: &Options) -> Identity {
        use sha2::{Digest, Sha256};
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let yaml = super::to_yaml(scenario).unwrap_or_default();
        Identity {
            scenario_sha256: hex(&Sha256::digest(yaml.as_bytes())),
            seed: scenario.seed,
            build: build_id().to_string(),
            settings: format!(
                "points {:?}, variants {:?}, download step {}, restore {} ms",
                o.classes, o.variants, o.download_step, o.restore_ms
            ),
        }
    }
}

/// The running executable's SHA-256, first 16 hex digits (`unknown` if it cannot be read).
fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use sha2::{Digest, Sha256};
        std::env::current_exe()
            .and_then(std::fs::read)
            .map(|b| {
                Sha256::digest(&b)[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .unwrap_or_else(|_| "unknown".into())
    })
}

/// One point's result as a shard file carries it (and a merge reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub id: u64,
    pub class: Class,
    pub variant: Option<CutVariantSpec>,
    pub what: String,
    pub verdict: Verdict,
    /// Whether its cut fired.
    pub fired: bool,
    /// Some of the scenario's own faults did not fire after the cut (not required).
    pub faults_not_required: bool,
    /// Where its reproducer was written (failing points).
    pub reproducer: Option<PathBuf>,
    /// It stopped at a state known to lead to an end and took that end.
    #[serde(default)]
    pub converged: bool,
    /// Where it ended (not in shard files).
    #[serde(skip)]
    pub end: Option<PointEnd>,
}

/// Where a point's run ended: the end state and the job's history, times included (a fork
/// that converged must end exactly where it would have run to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointEnd {
    pub end: crate::scenario::outcome::EndState,
    pub history: Vec<crate::ota::job::Transition>,
    /// Times each fault fired.
    pub fired: Vec<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            classes: Class::ALL.to_vec(),
            variants: vec![
                CutVariantSpec::Before,
                CutVariantSpec::Torn,
                CutVariantSpec::After,
            ],
            download_step: 16 * 1024,
            restore_ms: 500,
            jobs: 0,
            out: None,
            stop: None,
            partition: None,
            converge: false,
        }
    }
}

/// A point that failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub point: Point,
    pub verdict: Verdict,
    /// Where its reproducer was written.
    pub reproducer: Option<PathBuf>,
    /// The scenario's faults that did not fire in the point's run (optional in the reproducer).
    #[serde(skip)]
    pub unfired: Vec<usize>,
}

/// Points per class and variant: those that passed by their outcome, and those that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub points: usize,
    pub passed: usize,
    pub failed: usize,
    pub committed: usize,
    pub rolled_back: usize,
    pub refused: usize,
    pub gave_up: usize,
}

impl Tally {
    /// Count one point.
    pub fn add(&mut self, v: &Verdict) {
        self.points += 1;
        if !v.passed() {
            self.failed += 1;
            return;
        }
        self.passed += 1;
        match v.outcome {
            Some(Outcome::Committed) => self.committed += 1,
            Some(Outcome::RolledBack) => self.rolled_back += 1,
            Some(Outcome::Refused) => self.refused += 1,
            Some(Outcome::GaveUp) => self.gave_up += 1,
            None => {}
        }
    }
}

/// What a sweep found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub points: usize,
    pub passed: usize,
    pub failed: usize,
    /// Every point: the outcomes of those that passed, and the failures.
    pub all: Tally,
    /// Failing points by their most important problem.
    pub failure_kinds: BTreeMap<FailureKind, usize>,
    /// Cuts that fired (must equal `points`).
    pub fired: usize,
    /// Points not run because the sweep was stopped.
    pub skipped: usize,
    /// Points after whose cut some of the scenario's own faults did not fire (not required:
    /// the cut changed the path).
    pub faults_not_required: usize,
    /// Points whose cut did not fire (a sweep defect: it did not cut where it meant to).
    pub not_fired: Vec<String>,
    /// By "class" or "class/variant".
    pub by_kind: BTreeMap<String, Tally>,
    pub failures: Vec<Failure>,
    /// Every point (for random chains).
    #[serde(skip)]
    pub all_points: Vec<Point>,
    /// Flash operations, requests, boots and download bytes of the clean pass.
    pub clean: CleanPass,
    pub wall_s: f64,
    /// What the points depend on (a merge checks the shards agree).
    pub identity: Identity,
    /// This sweep's share of the points (`None`: all of them).
    pub partition: Option<Partition>,
    /// The points of the whole sweep, all shards together.
    pub points_total: usize,
    /// Points that stopped at a state known to lead to an end (`--converge`), in all and
    /// by "class" or "class/variant".
    pub converged: usize,
    pub converged_by_kind: BTreeMap<String, usize>,
    /// Every point this sweep ran, by id (in shard files, for `hil sweep merge`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<PointRecord>,
}

impl Summary {
    /// Count one point's result into the tallies.
    pub fn count(&mut self, r: &PointRecord) {
        self.fired += usize::from(r.fired);
        if !r.fired {
            self.not_fired.push(r.what.clone());
        }
        let mut keys = vec![r.class.name().to_string()];
        if let Some(v) = r.variant {
            keys.push(format!(
                "{}/{}",
                r.class.name(),
                format!("{v:?}").to_lowercase()
            ));
        }
        for k in keys {
            if r.converged {
                *self.converged_by_kind.entry(k.clone()).or_default() += 1;
            }
            self.by_kind.entry(k).or_default().add(&r.verdict);
        }
        self.converged += usize::from(r.converged);
        self.all.add(&r.verdict);
        self.faults_not_required += usize::from(r.faults_not_required);
        if let Some(kind) = r.verdict.first_kind() {
            *self.failure_kinds.entry(kind).or_default() += 1;
        }
        self.points = self.all.points;
        self.passed = self.all.passed;
        self.failed = self.all.failed;
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CleanPass {
    pub flash_ops: u64,
    pub requests: u64,
    pub boots: u64,
    pub download_bytes: u64,
    pub simulated_s: f64,
}

/// What one point's run established.
struct PointResult {
    point: Point,
    verdict: Verdict,
    /// Whether the point's cut fired.
    fired: bool,
    /// The scenario's faults that did not fire.
    unfired: Vec<usize>,
    /// It converged ([`super::converge`]).
    converged: bool,
    end: Option<PointEnd>,
}

/// A step's copy and its points, on their way to a worker.
struct Work {
    record: StepRecord,
    job_json: String,
    artifact_len: u64,
    points: Vec<Point>,
}

/// Sweep `scenario` (named `name`, read from `path` for the reproducers' description).
/// `progress` is called after every point with (done, known so far, failed).
pub fn sweep(
    scenario: &Scenario,
    name: &str,
    o: &Options,
    progress: &(dyn Fn(usize, usize, usize) + Sync),
) -> Result<Summary, RunError> {
    if matches!(
        scenario.client,
        crate::scenario::schema::Client::External(_)
    ) {
        return Err(RunError::Unsupported(
            "a sweep forks the project's OTA manager at every point; an external client cannot be forked (run the scenario with `hil run` instead)",
        ));
    }
    let started = std::time::Instant::now();
    let base = Arc::new(scenario.clone());
    let prepared = prepare::prepare(&base)?;
    let arm_ops = prepared.sim.ecu.flash().ops();
    let update = prepared.update.clone();
    let config = prepared.config.clone();
    drop(prepared);
    let jobs = if o.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        o.jobs
    };
    let dir = prepare::scratch_dir()?;
    let (tx, rx) = sync_channel::<Work>(jobs * 2);
    let rx = Arc::new(Mutex::new(rx));
    let known = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let done = AtomicUsize::new(0);
    let failed_n = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let results: Mutex<Vec<PointResult>> = Mutex::new(Vec::new());
    let known_ends = o.converge.then(|| Arc::new(Known::default()));

    let clean = std::thread::scope(|scope| {
        for _ in 0..jobs {
            let rx = Arc::clone(&rx);
            let (base, update, config) = (Arc::clone(&base), &update, &config);
            let (results, done, failed_n, known, skipped) =
                (&results, &done, &failed_n, Arc::clone(&known), &skipped);
            let ends = known_ends.clone();
            scope.spawn(move || {
                // One job store per worker, emptied before each point.
                let Ok(store) = prepare::scratch_dir() else {
                    return;
                };
                loop {
                    let work = {
                        let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        rx.recv()
                    };
                    let Ok(work) = work else {
                        return;
                    };
                    for point in &work.points {
                        if o.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                            skipped.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        for f in ["jobs/job-0001.json", "jobs/job-0001.json.tmp"] {
                            let _ = std::fs::remove_file(store.path().join(f));
                        }
                        let result = run_point(
                            &base,
                            &work,
                            point,
                            update,
                            config,
                            store.path(),
                            ends.as_ref(),
                        );
                        if !result.verdict.passed() {
                            failed_n.fetch_add(1, Ordering::SeqCst);
                        }
                        results
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(result);
                        let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                        progress(
                            d,
                            known.load(Ordering::SeqCst),
                            failed_n.load(Ordering::SeqCst),
                        );
                    }
                }
            });
        }
        // The clean pass, on this thread, feeding the workers.
        let job_path = dir.path().join("jobs").join("job-0001.json");
        let artifact_path = dir.path().join("artifacts").join("job-0001.bin");
        let mut last_download = None;
        let options = o.clone();
        let tx_rec = tx.clone();
        let counter = Arc::new(Mutex::new(CleanPass::default()));
        let counter_rec = Arc::clone(&counter);
        let known_ref = Arc::clone(&known);
        let total_rec = Arc::clone(&total);
        let partition = o.partition;
        let recorder = move |r: StepRecord| {
            {
                let mut c = counter_rec
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.flash_ops += r.ops.end - r.ops.start;
                c.boots += r.boots.end - r.boots.start;
                if matches!(r.step, Step::Request { .. }) {
                    c.requests += 1;
                }
            }
            let mut points = points_of(&r, &options, arm_ops, &mut last_download);
            let first = total_rec.fetch_add(points.len(), Ordering::SeqCst) as u64;
            for (i, p) in points.iter_mut().enumerate() {
                p.id = first + i as u64;
            }
            points.retain(|p| partition.is_none_or(|s| s.takes(p.id)));
            if points.is_empty() {
                return;
            }
            known_ref.fetch_add(points.len(), Ordering::SeqCst);
            let job_json = std::fs::read_to_string(&job_path).unwrap_or_default();
            let artifact_len = match r.step {
                Step::Chunk { offset } => offset,
                _ => std::fs::metadata(&artifact_path).map_or(0, |m| m.len()),
            };
            let _ = tx_rec.send(Work {
                record: r,
                job_json,
                artifact_len,
                points,
            });
        };
        let rec = Recorder(Arc::new(Mutex::new(recorder)));
        let clean = runner::run_recorded(&base, rec, dir.path());
        drop(tx);
        let mut c = counter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        clean.map(|r| {
            c.simulated_s = r.end.simulated_us as f64 / 1e6;
            c.download_bytes = update.len() as u64;
            (r, c)
        })
    });
    let (clean_run, clean_pass) = clean?;
    if !clean_run.failures.is_empty() {
        return Err(RunError::FailsWithoutCut(clean_run.failures.join("; ")));
    }
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by(|a, b| a.point.what.cmp(&b.point.what));
    let mut summary = Summary {
        scenario: name.to_string(),
        clean: clean_pass,
        skipped: skipped.load(Ordering::SeqCst),
        identity: Identity::of(scenario, o),
        partition: o.partition,
        points_total: total.load(Ordering::SeqCst),
        ..Summary::default()
    };
    let mut records = Vec::with_capacity(results.len());
    for PointResult {
        point,
        verdict,
        fired,
        unfired,
        converged,
        end,
    } in results
    {
        let record = PointRecord {
            id: point.id,
            class: point.class,
            variant: point.variant,
            what: point.what.clone(),
            verdict: verdict.clone(),
            fired,
            faults_not_required: !unfired.is_empty(),
            reproducer: None,
            converged,
            end,
        };
        summary.count(&record);
        records.push(record);
        summary.all_points.push(point.clone());
        if !verdict.passed() {
            summary.failures.push(Failure {
                point,
                verdict,
                reproducer: None,
                unfired,
            });
        }
    }
    if let Some(out) = &o.out {
        write_reproducers(scenario, name, out, &mut summary.failures).map_err(|source| {
            RunError::Io {
                what: "the reproducers' directory",
                path: out.clone(),
                source,
            }
        })?;
    }
    if o.partition.is_some() {
        for f in &summary.failures {
            if let Some(r) = records.iter_mut().find(|r| r.id == f.point.id) {
                r.reproducer.clone_from(&f.reproducer);
            }
        }
        records.sort_by_key(|r| r.id);
        summary.records = records;
    }
    summary.wall_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Run one point as a fork and classify it; with `known`, the fork stops at a state known
/// to lead to a verified end, and records its own end if it runs to one.
fn run_point(
    base: &Arc<Scenario>,
    work: &Work,
    point: &Point,
    update: &[u8],
    config: &crate::ota::live::LiveConfig,
    dir: &Path,
    known: Option<&Arc<Known>>,
) -> PointResult {
    let mut scenario = (**base).clone();
    scenario.faults.push(point.fork_fault.clone());
    let index = scenario.faults.len() - 1;
    let scenario = Arc::new(scenario);
    let mut world = work.record.world.fork(Arc::clone(&scenario));
    let mut sim = work.record.sim.clone();
    if matches!(point.fork_fault.when, Trigger::FlashOp(_)) {
        world.arm_flash_fault(&mut sim, index, &point.fork_fault);
    }
    let watch = known.map(|known| {
        Arc::new(Watch {
            known: Arc::clone(known),
            job_path: dir.join("jobs").join("job-0001.json"),
            artifact_path: dir.join("artifacts").join("job-0001.bin"),
            hash_artifact: base
                .faults
                .iter()
                .any(|f| matches!(f.action, Action::Download(_) | Action::SwapArtifact(_))),
            cut: index,
            start_us: work.record.at_us,
            limit_us: runner::LIMIT_US,
            seen: Mutex::new(Vec::new()),
            stopped: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        })
    });
    world.checkpoint.clone_from(&watch);
    let prepared = Prepared {
        sim,
        world,
        update: update.to_vec(),
        config: config.clone(),
    };
    let fork = ForkStart {
        at_us: work.record.at_us,
        step: work.record.step.clone(),
        job_json: work.job_json.clone(),
        artifact_len: work.artifact_len,
    };
    match runner::run_fork(prepared, fork, dir) {
        Ok(r) => {
            let fired = r.evidence.as_ref().map_or(&[][..], |e| &e.fired[..]);
            let verdict = verdict::classify(base, &r);
            let converged = watch.as_ref().is_some_and(|w| w.has_stopped());
            if let Some(w) = &watch
                && !converged
                && verdict.passed()
                && let (Some(evidence), Some(job)) = (&r.evidence, &r.job)
                && let Some(end) = job.history.last()
            {
                w.known
                    .record(w.take_seen(), evidence, job, &r.end, end.at_us);
            }
            PointResult {
                point: point.clone(),
                fired: fired.get(index).is_some_and(|n| *n > 0),
                unfired: unfired(base, fired),
                verdict,
                converged,
                end: Some(PointEnd {
                    end: r.end.clone(),
                    history: r
                        .job
                        .as_ref()
                        .map(|j| j.history.clone())
                        .unwrap_or_default(),
                    fired: fired.to_vec(),
                }),
            }
        }
        Err(e) => PointResult {
            point: point.clone(),
            verdict: Verdict::engine(e.to_string()),
            fired: false,
            unfired: Vec::new(),
            converged: false,
            end: None,
        },
    }
}

/// The scenario's faults (the first `base.faults.len()`) that did not fire.
fn unfired(base: &Scenario, fired: &[u32]) -> Vec<usize> {
    (0..base.faults.len())
        .filter(|&i| fired.get(i).is_none_or(|n| *n == 0))
        .collect()
}

/// `--random N --seed S`: `n` runs from the start, each with a chain of up to `max_chain`
/// cuts at random points of the clean pass (later cuts may not fire once an earlier one
/// changed the run; they are optional, and so are the scenario's faults that did not fire).
/// Returns each run's scenario (its reproducer) with its verdict, classified as a point's.
pub fn random_chains(
    scenario: &Scenario,
    name: &str,
    points: &[Point],
    n: usize,
    seed: u64,
    max_chain: usize,
) -> Vec<(Scenario, Verdict)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..n {
        if points.is_empty() {
            break;
        }
        let k = rng.gen_range(1..=max_chain.max(1));
        let mut picked: Vec<&Point> = (0..k)
            .map(|_| &points[rng.gen_range(0..points.len())])
            .collect();
        picked.sort_by_key(|p| p.what.clone());
        let mut s = scenario.clone();
        s.description = format!("Sweep random chain {i} (seed {seed}) of {name}");
        for p in picked {
            let mut f = p.fault.clone();
            f.optional = true;
            s.faults.push(f);
        }
        let verdict = match runner::run(&s, None) {
            Ok(r) => {
                let fired = r.evidence.as_ref().map_or(&[][..], |e| &e.fired[..]);
                for i in unfired(scenario, fired) {
                    s.faults[i].optional = true;
                }
                verdict::classify(scenario, &r)
            }
            Err(e) => Verdict::engine(e.to_string()),
        };
        out.push((s, verdict));
    }
    out
}
