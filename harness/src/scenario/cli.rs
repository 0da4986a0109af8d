//! `hil run`, `hil validate`, `hil list`.
//!
//! Exit codes of `hil run`: 0 every scenario passed (or was skipped), 1 a scenario failed, 2
//! invalid input or usage (a scenario file that does not validate, a path that does not
//! exist), 3 the engine broke on a valid scenario.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::report::{self, Outcome, Status};

/// Options of `hil run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub seed: Option<u64>,
    /// Write `<name>.jsonl` (the trace) per scenario here.
    pub trace_dir: Option<PathBuf>,
    /// Threads; 0 = one per core.
    pub jobs: usize,
}

pub fn run(paths: &[PathBuf], opts: &RunOptions) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) if f.is_empty() => {
            eprintln!("error: no scenario files (*.yaml) in the given paths");
            return ExitCode::from(2);
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.jobs
    };
    let print = |o: &Outcome| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", o.line());
    };
    let outcomes = report::run_all(&files, opts.seed, jobs, &print);
    if let Some(dir) = &opts.trace_dir {
        if let Err(e) = write_traces(dir, &outcomes) {
            eprintln!("error: writing traces to {}: {e}", dir.display());
            return ExitCode::from(3);
        }
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (passed, failed, errors, skipped) = (
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Error),
        count(Status::Skipped),
    );
    // Written, not printed: a closed pipe (`| head`) must not panic.
    let mut out = std::io::stdout().lock();
    for o in outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed | Status::Error))
    {
        let _ = write!(out, "\n{}", o.explain());
    }
    let _ = writeln!(
        out,
        "\n{} scenario(s): {passed} passed, {failed} failed, {errors} error(s), {skipped} skipped",
        outcomes.len()
    );
    drop(out);
    let invalid = outcomes.iter().any(|o| {
        o.status == Status::Error
            && o.run.is_none()
            && o.messages
                .iter()
                .any(|m| m.contains(".yaml:") || m.contains(".yml:"))
    });
    if failed > 0 {
        ExitCode::from(1)
    } else if invalid {
        ExitCode::from(2)
    } else if errors > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn write_traces(dir: &Path, outcomes: &[Outcome]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for o in outcomes {
        if let Some(r) = &o.run {
            std::fs::write(
                dir.join(format!("{}.jsonl", o.name)),
                r.trace.to_json_lines(),
            )?;
        }
    }
    Ok(())
}

/// `hil validate FILE...`: every problem as `file:line:col: message`; exit 0 all valid, 2 not.
pub fn validate(paths: &[PathBuf]) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bad = 0;
    for f in &files {
        if let Err(e) = report::load(f) {
            bad += 1;
            eprintln!("{e}");
        }
    }
    if bad == 0 {
        let _ = writeln!(std::io::stdout(), "{} scenario file(s) valid", files.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("{bad} of {} scenario file(s) invalid", files.len());
        ExitCode::from(2)
    }
}

/// `hil list PATH...`: name and description of each scenario.
pub fn list(paths: &[PathBuf]) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut code = ExitCode::SUCCESS;
    for f in &files {
        match report::load(f) {
            Ok(s) => {
                let _ = writeln!(
                    std::io::stdout(),
                    "{:<40} {}",
                    report::name_of(f),
                    s.description
                );
            }
            Err(e) => {
                eprintln!("{e}");
                code = ExitCode::from(2);
            }
        }
    }
    code
}
