//! `hil run`, `hil validate`, `hil list`: scenario files.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::UiArg;
use crate::scenario::cli::{self, RunOptions};

/// Run scenario files (or every *.yaml under directories), in parallel, in virtual time.
/// Exit 0 all passed, 1 a scenario failed, 2 invalid input, 3 the engine broke.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Override every scenario's seed (what a failure's replay command sets).
    #[arg(long)]
    seed: Option<u64>,
    /// Write each scenario's trace as JSON lines to DIR/<name>.jsonl (<name>: the file's
    /// path below the folder the scenarios share, a/x and b/x for a/x.yaml and b/x.yaml).
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// Scenarios run at once (default: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// tui (the dashboard), plain, or json (one event per line). Default: tui on a
    /// terminal outside CI, plain otherwise.
    #[arg(long, value_enum)]
    ui: Option<UiArg>,
    /// Write JUnit XML to PATH.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write an SVG timeline per scenario to DIR/<name>.svg.
    #[arg(long, value_name = "DIR")]
    timeline: Option<PathBuf>,
    /// Run against the real ECU of this bench file (one scenario at a time, real time);
    /// scenarios with faults the bench cannot realise are SKIPPED with the reason.
    #[arg(long, value_name = "BENCH.yaml")]
    bench: Option<PathBuf>,
}

/// Check scenario files; every problem as file:line:col: message. Exit 0 valid, 2 not.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Scenarios with their one-line descriptions.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(default_value = "scenarios")]
    paths: Vec<PathBuf>,
}

pub fn run(a: RunArgs) -> ExitCode {
    cli::run(
        &a.paths,
        &RunOptions {
            seed: a.seed,
            trace_dir: a.trace,
            jobs: a.jobs,
            ui: a.ui.map(Into::into),
            junit: a.junit,
            timeline_dir: a.timeline,
            bench: a.bench,
        },
    )
}

pub fn validate(a: &ValidateArgs) -> ExitCode {
    cli::validate(&a.paths)
}

pub fn list(a: &ListArgs) -> ExitCode {
    cli::list(&a.paths)
}
