//! `hil run`, `hil validate`, `hil list`.
//!
//! Exit codes of `hil run`: 0 every scenario passed (or was skipped), 1 a scenario failed, 2
//! invalid input or usage (a scenario file that does not validate, a path that does not
//! exist), 3 the engine broke on a valid scenario.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use super::report::{self, LiveEvent, Outcome, RunControl, Status};
use super::trace::TraceEvent;
use crate::exit;
use crate::ui::state::UiState;
use crate::ui::{UiMode, dashboard};

/// Options of `hil run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub seed: Option<u64>,
    /// Write `<name>.jsonl` (the trace) per scenario here.
    pub trace_dir: Option<PathBuf>,
    /// Threads; 0 = one per core.
    pub jobs: usize,
    /// `None`: the dashboard on a terminal outside CI, plain otherwise.
    pub ui: Option<UiMode>,
    /// Write JUnit XML here.
    pub junit: Option<PathBuf>,
    /// Write `<name>.svg` (the timeline) per scenario here.
    pub timeline_dir: Option<PathBuf>,
    /// Run on this bench (a real ECU) instead of the virtual ECU.
    pub bench: Option<PathBuf>,
}

/// The plain view of one live event: a line for milestones (a new phase, a fault, a power
/// loss, a boot decision), nothing for the rest (blocks, swap sectors, diagnostics).
fn milestone(name: &str, e: &TraceEvent, phases: &mut Vec<String>) -> Option<String> {
    let line = |text: &str| {
        Some(format!(
            "{name:<32} {:>10.3} s  {text}",
            e.at_us as f64 / 1e6
        ))
    };
    if let Some(state) = e.event.strip_prefix("state:") {
        let phase = state.split(':').next().unwrap_or(state).to_string();
        if phases.contains(&phase) {
            return None;
        }
        phases.push(phase);
        return line(&e.text);
    }
    match &*e.event {
        "fault_fired" | "power_lost" | "revert_started" | "image_rejected"
        | "no_bootable_image" | "manager_killed" | "swap_started" | "swap_finished"
        | "confirmed" | "download_resumed" | "download_restarted" | "download_corrupt" => {
            line(&e.text)
        }
        _ => None,
    }
}

/// Print live events as `--ui plain` or `--ui json` does, until the channel closes.
fn print_live(rx: Receiver<LiveEvent>, names: Vec<String>, mode: UiMode, total: usize) {
    let bar = mode == UiMode::Plain && std::io::stderr().is_terminal();
    let mut phases: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let mut done = 0;
    for ev in rx {
        let mut out = std::io::stdout().lock();
        match (&ev, mode) {
            (LiveEvent::Events { idx, events }, UiMode::Json) => {
                for event in events {
                    let mut v = serde_json::to_value(event).unwrap_or_default();
                    v["scenario"] = names[*idx].clone().into();
                    let _ = writeln!(out, "{v}");
                }
            }
            (LiveEvent::Started { idx }, UiMode::Json) => {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"scenario": names[*idx], "event": "scenario_started"})
                );
            }
            (LiveEvent::Finished { idx, status, line }, UiMode::Json) => {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"scenario": names[*idx], "event": "scenario_finished", "status": status.label(), "text": line})
                );
            }
            (LiveEvent::Events { idx, events }, _) => {
                for event in events {
                    if let Some(l) = milestone(&names[*idx], event, &mut phases[*idx]) {
                        if bar {
                            eprint!("\r\x1b[K");
                        }
                        let _ = writeln!(out, "{l}");
                    }
                }
            }
            (LiveEvent::Finished { line, .. }, _) => {
                done += 1;
                if bar {
                    eprint!("\r\x1b[K");
                }
                let _ = writeln!(out, "{line}");
            }
            (LiveEvent::Started { .. } | LiveEvent::Sweep { .. }, _) => {}
        }
        drop(out);
        if bar {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} scenarios",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
        }
    }
    if bar {
        eprint!("\r\x1b[K");
    }
}

pub fn run(paths: &[PathBuf], opts: &RunOptions) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) if f.is_empty() => {
            return exit::error(
                exit::INVALID,
                "no scenario files (*.yaml) in the given paths",
            );
        }
        Ok(f) => f,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    let bench = match &opts.bench {
        None => None,
        Some(path) => match crate::bench::validate::load(path) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("{e}");
                return exit::INVALID.into();
            }
        },
    };
    let bench = bench.as_ref();
    let jobs = if bench.is_some() {
        // One ECU: one scenario at a time.
        1
    } else if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.jobs
    };
    let names: Vec<String> = files.iter().map(|f| report::name_of(f)).collect();
    let mode = UiMode::choose(opts.ui);
    let (tx, rx) = std::sync::mpsc::channel();
    let control = Arc::new(RunControl::default());
    let outcomes = match mode {
        UiMode::Tui => {
            let finished = AtomicBool::new(false);
            let state = UiState::new("hil run", &names);
            let buffers = report::live_buffers(files.len());
            std::thread::scope(|scope| {
                let live = report::Live {
                    tx,
                    buffers: Some(Arc::clone(&buffers)),
                };
                let runs = scope.spawn(|| {
                    let o = report::run_all(
                        &files,
                        opts.seed,
                        jobs,
                        &|_| {},
                        Some(live),
                        Some(Arc::clone(&control)),
                        bench,
                    );
                    finished.store(true, Ordering::SeqCst);
                    o
                });
                if let Err(e) = dashboard::run(state, &rx, Some(&buffers), &control, &finished) {
                    eprintln!("error: the dashboard: {e}");
                }
                // Quit: no new scenarios; the running ones finish.
                control.stop.store(true, Ordering::SeqCst);
                control.paused.store(false, Ordering::SeqCst);
                runs.join().unwrap_or_default()
            })
        }
        UiMode::Plain | UiMode::Json => {
            let printer = {
                let names = names.clone();
                let total = files.len();
                std::thread::spawn(move || print_live(rx, names, mode, total))
            };
            let live = report::Live { tx, buffers: None };
            let o = report::run_all(&files, opts.seed, jobs, &|_| {}, Some(live), None, bench);
            let _ = printer.join();
            o
        }
    };
    if let Some(path) = &opts.junit {
        let xml = super::junit::render("scenarios", &outcomes);
        if let Err(e) = std::fs::write(path, xml) {
            return exit::error(
                exit::BROKEN,
                format_args!("writing {}: {e}", path.display()),
            );
        }
    }
    if let Some(dir) = &opts.timeline_dir {
        let paths: Vec<PathBuf> = outcomes.iter().map(|o| o.path.clone()).collect();
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            outcomes
                .iter()
                .zip(output_keys(&paths))
                .filter_map(|(o, key)| o.run.as_ref().map(|r| (o, r, key)))
                .try_for_each(|(o, r, key)| {
                    write_keyed(
                        dir,
                        &key,
                        "svg",
                        super::timeline::render(&o.name, &o.description, &r.trace),
                    )
                })
        });
        if let Err(e) = written {
            return exit::error(
                exit::BROKEN,
                format_args!("writing timelines to {}: {e}", dir.display()),
            );
        }
    }
    if mode == UiMode::Json {
        let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({"event": "summary", "scenarios": outcomes.len(), "passed": count(Status::Passed), "failed": count(Status::Failed), "errors": count(Status::Error), "invalid": count(Status::Invalid), "skipped": count(Status::Skipped)})
        );
    }
    if let Some(dir) = &opts.trace_dir {
        if let Err(e) = write_traces(dir, &outcomes) {
            return exit::error(
                exit::BROKEN,
                format_args!("writing traces to {}: {e}", dir.display()),
            );
        }
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (passed, failed, errors, invalid, skipped) = (
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Error),
        count(Status::Invalid),
        count(Status::Skipped),
    );
    // Written, not printed: a closed pipe (`| head`) must not panic. JSON mode: JSON only.
    let mut sink = std::io::sink();
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = if mode == UiMode::Json {
        &mut sink
    } else {
        &mut stdout
    };
    for o in outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed | Status::Error | Status::Invalid))
    {
        let _ = write!(out, "\n{}", o.explain());
    }
    let _ = writeln!(
        out,
        "\n{} scenario(s): {passed} passed, {failed} failed, {errors} error(s), {invalid} invalid, {skipped} skipped",
        outcomes.len()
    );
    let code = if failed > 0 {
        exit::FAILED
    } else if invalid > 0 {
        exit::INVALID
    } else if errors > 0 {
        exit::BROKEN
    } else {
        exit::OK
    };
    code.into()
}

fn write_traces(dir: &Path, outcomes: &[Outcome]) -> std::io::Result<()> {
    let paths: Vec<PathBuf> = outcomes.iter().map(|o| o.path.clone()).collect();
    for (o, key) in outcomes.iter().zip(output_keys(&paths)) {
        if let Some(r) = &o.run {
            write_keyed(dir, &key, "jsonl", r.trace.to_json_lines())?;
        }
    }
    Ok(())
}

/// Write `DIR/<key>.<ext>`, making the key's folders.
fn write_keyed(dir: &Path, key: &Path, ext: &str, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    let path = dir.join(key).with_extension(ext);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// Where each scenario's output files go under an output folder (`--trace`, `--timeline`):
/// its path relative to the folder all the scenarios share, without the extension. Files of
/// one folder keep their names (`x`); same-named files of different folders stay apart
/// (`a/x`, `b/x`).
pub fn output_keys(paths: &[PathBuf]) -> Vec<PathBuf> {
    let absolute: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut root: Option<PathBuf> = None;
    for p in &absolute {
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        root = Some(match root {
            None => parent,
            Some(r) => r
                .components()
                .zip(parent.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    let root = root.unwrap_or_default();
    absolute
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap_or(p).with_extension(""))
        .collect()
}

/// `hil validate FILE...`: every problem as `file:line:col: message`; exit 0 all valid, 2 not.
pub fn validate(paths: &[PathBuf]) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) if f.is_empty() => {
            return exit::error(
                exit::INVALID,
                "no scenario files (*.yaml) in the given paths",
            );
        }
        Ok(f) => f,
        Err(e) => return exit::error(exit::INVALID, e),
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
        exit::OK.into()
    } else {
        eprintln!("{bad} of {} scenario file(s) invalid", files.len());
        exit::INVALID.into()
    }
}

/// `hil list PATH...`: name and description of each scenario.
pub fn list(paths: &[PathBuf]) -> ExitCode {
    let files = match report::discover(paths) {
        Ok(f) => f,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    let mut code: ExitCode = exit::OK.into();
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
                code = exit::INVALID.into();
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keys_keep_same_named_scenarios_of_different_folders_apart() {
        let keys = |paths: &[&str]| -> Vec<String> {
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            output_keys(&paths)
                .iter()
                .map(|k| k.display().to_string())
                .collect()
        };
        assert_eq!(keys(&["s/a/x.yaml", "s/b/x.yaml"]), ["a/x", "b/x"]);
        assert_eq!(keys(&["s/x.yaml", "s/y.yaml"]), ["x", "y"]);
        assert_eq!(keys(&["s/x.yaml"]), ["x"]);
        assert_eq!(keys(&["s/x.yaml", "s/a/x.yaml"]), ["x", "a/x"]);
        assert_eq!(keys(&["./s/a/x.yaml", "s/b/x.yaml"]), ["a/x", "b/x"]);
    }
}
