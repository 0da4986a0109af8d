//! Running scenario files: discovery, statuses, parallel runs, what a failure prints.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::runner::{self, RunError, RunResult};
use super::schema::{Scenario, TransportSpec};
use super::trace::TraceEvent;
use super::validate::{self, Invalid};
use super::world::Tap;
use crate::bench::realise;
use crate::bench::run as bench_run;
use crate::bench::schema::Bench;

/// How a scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Passed,
    /// An expectation or an invariant did not hold.
    Failed,
    /// The engine could not run a valid file.
    Error,
    /// The file does not validate; nothing ran.
    Invalid,
    Skipped,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "PASS",
            Status::Failed => "FAIL",
            Status::Error => "ERROR",
            Status::Invalid => "INVALID",
            Status::Skipped => "SKIP",
        }
    }
}

/// One scenario's result.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    /// The file name without `.yaml`.
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// The link the update went over, e.g. `doip`, `can 500 kbit/s`.
    pub link: String,
    pub status: Status,
    /// Wall-clock seconds the run took (reports only; never in traces).
    pub wall_s: f64,
    /// For FAIL: unmet expectations; for ERROR: what broke; for SKIP: why.
    pub messages: Vec<String>,
    pub run: Option<RunResult>,
    /// The bench file it ran on (none: the virtual ECU).
    pub bench: Option<PathBuf>,
}

impl Outcome {
    /// The command that replays this scenario exactly.
    pub fn replay(&self) -> String {
        match &self.bench {
            None => format!("hil run {} --seed {}", self.path.display(), self.seed),
            Some(b) => format!(
                "hil run --bench {} {} --seed {}",
                b.display(),
                self.path.display(),
                self.seed
            ),
        }
    }

    /// The one line `hil run` prints for it.
    pub fn line(&self) -> String {
        let detail = match (&self.run, self.status) {
            (Some(r), Status::Passed) => format!(
                "{} in {:.1} s {} ({})",
                outcome_word(r),
                r.end.simulated_us as f64 / 1e6,
                if r.real_time {
                    "real time"
                } else {
                    "simulated"
                },
                self.link
            ),
            (_, _) => self.messages.first().cloned().unwrap_or_default(),
        };
        format!("{:<5} {:<40} {detail}", self.status.label(), self.name)
    }

    /// What a failure prints: the first unmet expectation, the seed, the last events, the
    /// replay command.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "--- {} ({}) seed {}\n",
            self.name,
            self.status.label(),
            self.seed
        ));
        for m in &self.messages {
            out.push_str(&format!("  {m}\n"));
        }
        if let Some(r) = &self.run {
            out.push_str("  last events:\n");
            for line in r.trace.tail(12) {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out.push_str(&format!("  replay: {}\n", self.replay()));
        out
    }
}

fn outcome_word(r: &RunResult) -> String {
    let v = r
        .end
        .version
        .map_or_else(|| "nothing".to_string(), |v| format!("v{v}"));
    let o = serde_json::to_value(r.end.outcome).unwrap_or_default();
    format!("{}, {v} running", o.as_str().unwrap_or_default())
}

/// Every `*.yaml` under `paths` (files as given, directories recursively), sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Read and validate one file.
pub fn load(path: &Path) -> Result<Scenario, Invalid> {
    let file = path.display().to_string();
    let refuse = |message: String| {
        Invalid(vec![validate::Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            message,
        }])
    };
    // A FIFO, socket or device named `*.yaml` would block the read (or never end).
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(refuse(
                "not a regular file (a FIFO, socket, device or directory): scenario files are read whole, so it is refused".into(),
            ));
        }
        Ok(m) if m.len() > validate::MAX_TEXT as u64 => {
            return Err(refuse(format!(
                "{} bytes: a scenario file is at most {} bytes",
                m.len(),
                validate::MAX_TEXT
            )));
        }
        _ => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Invalid(vec![validate::Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read: {e}"),
        }])
    })?;
    validate::parse(&text, &file)
}

/// The scenario's name: its file name without the extension.
pub fn name_of(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// Flags a live view sets and the runs obey: `paused` holds every run at its next event,
/// `stop` starts no further scenario (the running ones finish; the rest are SKIPPED).
#[derive(Debug, Default)]
pub struct RunControl {
    pub paused: std::sync::atomic::AtomicBool,
    pub stop: std::sync::atomic::AtomicBool,
}

/// Where live views get events: every event through `tx` (plain and JSON output print them
/// all), or, with `buffers` (one per scenario), appended there for a view that samples what it
/// shows (the dashboard folds only the selected scenario's events); `tx` then carries starts
/// and results only.
#[derive(Clone, Debug)]
pub struct Live {
    pub tx: std::sync::mpsc::Sender<LiveEvent>,
    pub buffers: Option<LiveBuffers>,
}

/// Each scenario's trace so far, for sampling views.
pub type LiveBuffers = std::sync::Arc<Vec<Mutex<Vec<TraceEvent>>>>;

/// A buffer per scenario.
pub fn live_buffers(n: usize) -> LiveBuffers {
    std::sync::Arc::new((0..n).map(|_| Mutex::new(Vec::new())).collect())
}

/// Trace events per live message.
const LIVE_BATCH: usize = 32;

/// What a live view gets while scenarios run, by index into the list of files.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    Started {
        idx: usize,
    },
    /// Trace events, in the order they happened.
    Events {
        idx: usize,
        events: Vec<TraceEvent>,
    },
    /// The one-line result.
    Finished {
        idx: usize,
        status: Status,
        line: String,
    },
    /// A sweep's progress.
    Sweep {
        done: usize,
        total: usize,
        failed: usize,
        points_per_s: f64,
    },
}

/// Load and run one file.
pub fn run_file(path: &Path, seed: Option<u64>) -> Outcome {
    run_file_live(path, seed, None, None)
}

/// [`run_file`], showing every trace event to `tap` as it happens; on `bench` (a real ECU)
/// instead of the virtual ECU when given — SKIPPED with the reason if the bench cannot
/// realise the scenario.
pub fn run_file_live(
    path: &Path,
    seed: Option<u64>,
    tap: Option<Tap>,
    bench: Option<&Bench>,
) -> Outcome {
    let name = name_of(path);
    let scenario = match load(path) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                path: path.to_path_buf(),
                name,
                description: String::new(),
                seed: seed.unwrap_or(0),
                link: String::new(),
                status: Status::Invalid,
                wall_s: 0.0,
                messages: e.0.iter().map(|p| p.to_string()).collect(),
                run: None,
                bench: None,
            };
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    let e = &scenario.ecu;
    let link = match e.transport {
        TransportSpec::Doip => "doip".to_string(),
        TransportSpec::Can => format!("can {} kbit/s", e.bitrate / 1000),
        TransportSpec::Canfd => format!("can fd {}k/{}k", e.bitrate / 1000, e.data_bitrate / 1000),
    };
    let link = bench.map_or(link, |b| b.target.describe());
    let started = std::time::Instant::now();
    let result = match bench {
        None => runner::run_tapped(&scenario, Some(seed), tap),
        Some(b) => match realise::unrealisable(&scenario, b) {
            Some(reason) => {
                return Outcome {
                    path: path.to_path_buf(),
                    name,
                    description: scenario.description,
                    seed,
                    link,
                    status: Status::Skipped,
                    wall_s: 0.0,
                    messages: vec![format!("bench {}: {reason}", b.name)],
                    run: None,
                    bench: b.file.clone(),
                };
            }
            None => bench_run::run(&scenario, b, Some(seed), tap),
        },
    };
    let (status, messages, run) = match result {
        Ok(r) if r.failures.is_empty() => (Status::Passed, Vec::new(), Some(r)),
        Ok(r) => (Status::Failed, r.failures.clone(), Some(r)),
        Err(e @ RunError::Stuck(_)) => (Status::Failed, vec![e.to_string()], None),
        Err(e) => (Status::Error, vec![e.to_string()], None),
    };
    Outcome {
        path: path.to_path_buf(),
        name,
        description: scenario.description,
        seed,
        link,
        status,
        wall_s: started.elapsed().as_secs_f64(),
        messages,
        run,
        bench: bench.and_then(|b| b.file.clone()),
    }
}

/// Run `paths` on `jobs` threads; `on_done` sees each outcome as it finishes. Returns the
/// outcomes in the order of `paths`.
pub fn run_all(
    paths: &[PathBuf],
    seed: Option<u64>,
    jobs: usize,
    on_done: &(dyn Fn(&Outcome) + Sync),
    live: Option<Live>,
    control: Option<std::sync::Arc<RunControl>>,
    bench: Option<&Bench>,
) -> Vec<Outcome> {
    let (live, buffers) = match live {
        Some(l) => (Some(l.tx), l.buffers),
        None => (None, None),
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    // A scenario's end, run or skipped: the view hears of it, the caller sees it, it is kept.
    let finish = |i: usize, outcome: Outcome| {
        if let Some(tx) = &live {
            let _ = tx.send(LiveEvent::Finished {
                idx: i,
                status: outcome.status,
                line: outcome.line(),
            });
        }
        on_done(&outcome);
        results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(outcome);
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(paths.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(path) = paths.get(i) else {
                        return;
                    };
                    if control
                        .as_ref()
                        .is_some_and(|c| c.stop.load(Ordering::SeqCst))
                    {
                        let outcome = Outcome {
                            path: path.clone(),
                            name: name_of(path),
                            description: String::new(),
                            seed: seed.unwrap_or(0),
                            link: String::new(),
                            status: Status::Skipped,
                            wall_s: 0.0,
                            messages: vec!["stopped by the user before it started".into()],
                            run: None,
                            bench: bench.and_then(|b| b.file.clone()),
                        };
                        finish(i, outcome);
                        continue;
                    }
                    // Events go out in batches: a view samples at most 20 times a second,
                    // and one message per event would cost the simulation more than the
                    // drawing does.
                    let batch = std::sync::Arc::new(Mutex::new(Vec::new()));
                    let flush = |tx: &std::sync::mpsc::Sender<LiveEvent>| {
                        let events = std::mem::take(
                            &mut *batch
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner),
                        );
                        if !events.is_empty() {
                            let _ = tx.send(LiveEvent::Events { idx: i, events });
                        }
                    };
                    let tap = live.as_ref().map(|tx| {
                        let _ = tx.send(LiveEvent::Started { idx: i });
                        let tx = tx.clone();
                        let control = control.clone();
                        let batch = std::sync::Arc::clone(&batch);
                        let buffers = buffers.clone();
                        Tap(std::sync::Arc::new(move |e: &TraceEvent| {
                            while control
                                .as_ref()
                                .is_some_and(|c| c.paused.load(Ordering::SeqCst))
                            {
                                std::thread::sleep(std::time::Duration::from_millis(50));
                            }
                            if let Some(buffers) = &buffers {
                                // The view samples these buffers; nothing is sent.
                                buffers[i]
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push(e.clone());
                                return;
                            }
                            let mut b = batch
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            b.push(e.clone());
                            if b.len() >= LIVE_BATCH {
                                let _ = tx.send(LiveEvent::Events {
                                    idx: i,
                                    events: std::mem::take(&mut *b),
                                });
                            }
                        }))
                    });
                    let outcome = run_file_live(path, seed, tap, bench);
                    if let Some(tx) = &live {
                        flush(tx);
                    }
                    finish(i, outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}
