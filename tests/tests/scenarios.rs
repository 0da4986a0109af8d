//! Every `scenarios/**/*.yaml` is its own test (named after the file), so nextest runs,
//! reports, retries and shards scenarios one by one.
//!
//! Each test validates the file, runs it twice with its seed (the two traces must be equal
//! byte for byte), requires it to pass, and compares its trace with the insta snapshot
//! `tests/snapshots/scenarios__<name>.snap` (simulated times only; nothing from the machine).
//! Review changed traces with `cargo insta review`.

use std::path::{Path, PathBuf};

use hil::scenario::report::{self, Status};
use hil::scenario::runner;
use libtest_mimic::{Arguments, Failed, Trial};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("scenarios")
}

fn check(path: &Path) -> Result<(), Failed> {
    let name = report::name_of(path);
    let scenario = report::load(path).map_err(|e| e.to_string())?;
    let first = runner::run(&scenario, None).map_err(|e| format!("engine error: {e}"))?;
    let again = runner::run(&scenario, None).map_err(|e| format!("engine error: {e}"))?;
    if first.trace != again.trace {
        let diverged = first
            .trace
            .events
            .iter()
            .zip(&again.trace.events)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.events.len().min(again.trace.events.len()));
        return Err(format!(
            "not deterministic: the traces of two runs with seed {} differ from event {diverged}",
            scenario.seed
        )
        .into());
    }
    in_time_order(&first.trace)?;
    if !first.failures.is_empty() {
        let outcome = report::Outcome {
            path: path.to_path_buf(),
            name: name.clone(),
            description: scenario.description.clone(),
            seed: scenario.seed,
            link: String::new(),
            status: Status::Failed,
            wall_s: 0.0,
            messages: first.failures.clone(),
            run: Some(first),
            bench: None,
        };
        return Err(outcome.explain().into());
    }
    let lines: Vec<String> = first
        .trace
        .events
        .iter()
        .map(|e| {
            format!(
                "{:.6} {} {}: {}",
                e.at_us as f64 / 1e6,
                e.source,
                e.event,
                e.text
            )
        })
        .collect();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(scenario.description.clone());
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_yaml_snapshot!(format!("scenario-{name}"), lines));
    Ok(())
}

/// The trace tells the story in time order, and the OTA manager dies at the fault that killed
/// it (the fault fired just before, at the same time), not at its own last activity.
fn in_time_order(trace: &hil::scenario::trace::Trace) -> Result<(), Failed> {
    let events = &trace.events;
    for (k, w) in events.windows(2).enumerate() {
        if w[1].at_us < w[0].at_us {
            return Err(format!(
                "trace out of time order: event {} ({} at {} µs) after event {k} ({} at {} µs)",
                k + 1,
                w[1].event,
                w[1].at_us,
                w[0].event,
                w[0].at_us
            )
            .into());
        }
    }
    for (k, e) in events.iter().enumerate() {
        if &*e.event != "manager_killed" {
            continue;
        }
        let fault = events[..k]
            .iter()
            .rev()
            .find(|f| &*f.event == "fault_fired");
        if fault.is_none_or(|f| f.at_us != e.at_us) {
            return Err(format!(
                "manager_killed at {} µs is not stamped at the fault that killed it (last fault fired at {:?} µs)",
                e.at_us,
                fault.map(|f| f.at_us)
            )
            .into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let files = report::discover(&[scenarios_dir()]).expect("the scenarios directory");
    assert!(
        !files.is_empty(),
        "no scenarios in {}",
        scenarios_dir().display()
    );
    let trials = files
        .into_iter()
        .map(|path| {
            let name = report::name_of(&path);
            Trial::test(name, move || check(&path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
