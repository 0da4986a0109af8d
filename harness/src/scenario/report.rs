//! Running scenario files: discovery, statuses, parallel runs, what a failure prints.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::runner::{self, RunError, RunResult};
use super::schema::{Scenario, TransportSpec};
use super::validate::{self, Invalid};

/// How a scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Passed,
    /// An expectation or an invariant did not hold.
    Failed,
    /// The file is invalid, or the engine could not run it.
    Error,
    Skipped,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "PASS",
            Status::Failed => "FAIL",
            Status::Error => "ERROR",
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
    /// For FAIL: unmet expectations; for ERROR: what broke; for SKIP: why.
    pub messages: Vec<String>,
    pub run: Option<RunResult>,
}

impl Outcome {
    /// The command that replays this scenario exactly.
    pub fn replay(&self) -> String {
        format!("hil run {} --seed {}", self.path.display(), self.seed)
    }

    /// The one line `hil run` prints for it.
    pub fn line(&self) -> String {
        let detail = match (&self.run, self.status) {
            (Some(r), Status::Passed) => format!(
                "{} in {:.1} s simulated ({})",
                outcome_word(r),
                r.end.simulated_us as f64 / 1e6,
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

/// Load and run one file.
pub fn run_file(path: &Path, seed: Option<u64>) -> Outcome {
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
                status: Status::Error,
                messages: e.0.iter().map(|p| p.to_string()).collect(),
                run: None,
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
    let (status, messages, run) = match runner::run(&scenario, Some(seed)) {
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
        messages,
        run,
    }
}

/// Run `paths` on `jobs` threads; `on_done` sees each outcome as it finishes. Returns the
/// outcomes in the order of `paths`.
pub fn run_all(
    paths: &[PathBuf],
    seed: Option<u64>,
    jobs: usize,
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(paths.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(path) = paths.get(i) else {
                        return;
                    };
                    let outcome = run_file(path, seed);
                    on_done(&outcome);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(outcome);
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
