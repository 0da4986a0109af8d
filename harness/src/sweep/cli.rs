//! `hil sweep SCENARIO`.
//!
//! Exit codes: 0 every point passed (each ended in an outcome the scenario allows, none
//! bricked, broke an invariant or installed an image twice), 1 a point failed, 2 invalid input
//! or usage, 3 the engine broke (or the scenario fails without any cut, or a cut did not fire).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::verdict::Verdict;
use super::{Class, Options, Summary, Tally, random_chains, to_yaml};
use crate::exit;
use crate::scenario::report::{self, LiveEvent, RunControl};
use crate::scenario::schema::CutVariantSpec;
use crate::ui::state::{SweepView, UiState};
use crate::ui::{UiMode, dashboard};

/// Options of `hil sweep` beyond [`Options`].
#[derive(Clone, Debug, Default)]
pub struct CliOptions {
    pub sweep: Options,
    pub json: bool,
    /// `--random N`: chains of cuts from the start.
    pub random: Option<usize>,
    pub seed: u64,
    pub max_chain: usize,
    /// `None`: the dashboard on a terminal outside CI (and without `--json`), plain otherwise.
    pub ui: Option<UiMode>,
}

/// Parse `flash-ops,uds,download,boots`.
pub fn parse_classes(s: &str) -> Result<Vec<Class>, String> {
    s.split(',')
        .map(|c| {
            Class::parse(c.trim()).ok_or_else(|| {
                format!("unknown point class {c:?} (flash-ops, uds, boots, download)")
            })
        })
        .collect()
}

/// Parse `before,torn,after`.
pub fn parse_variants(s: &str) -> Result<Vec<CutVariantSpec>, String> {
    s.split(',')
        .map(|v| match v.trim() {
            "before" => Ok(CutVariantSpec::Before),
            "torn" => Ok(CutVariantSpec::Torn),
            "after" => Ok(CutVariantSpec::After),
            other => Err(format!(
                "unknown cut variant {other:?} (before, torn, after)"
            )),
        })
        .collect()
}

pub fn run(path: &Path, o: &CliOptions) -> ExitCode {
    let scenario = match report::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::INVALID.into();
        }
    };
    let name = report::name_of(path);
    let bar = !o.json && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let progress = |done: usize, known: usize, failed: usize| {
        if bar && (done % 50 == 0 || done == known) {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{done}/{known} points, {failed} failed   ");
        }
    };
    let mode = if o.json {
        UiMode::Json
    } else {
        UiMode::choose(o.ui)
    };
    let result = if mode == UiMode::Tui {
        sweep_with_dashboard(&scenario, &name, &o.sweep)
    } else {
        super::sweep(&scenario, &name, &o.sweep, &progress)
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if bar {
                eprintln!();
            }
            return exit::error(exit::BROKEN, format_args!("{name}: {e}"));
        }
    };
    if bar {
        eprintln!();
    }
    let mut chains_failed = 0;
    let mut chain_lines = Vec::new();
    if let Some(n) = o.random {
        for (s, verdict) in random_chains(
            &scenario,
            &name,
            &summary.all_points,
            n,
            o.seed,
            o.max_chain,
        ) {
            if !verdict.passed() {
                chains_failed += 1;
                let file = o
                    .sweep
                    .out
                    .as_ref()
                    .map(|d| d.join(format!("{name}--random-{}-{chains_failed}.yaml", o.seed)));
                if let (Some(f), Ok(yaml)) = (&file, to_yaml(&s)) {
                    let _ = std::fs::create_dir_all(f.parent().unwrap_or(Path::new(".")));
                    let _ = std::fs::write(f, yaml);
                }
                chain_lines.push(format!(
                    "  random chain: {}{}",
                    first_problem(&verdict),
                    file.map(|f| format!("\n    reproducer: {}", f.display()))
                        .unwrap_or_default()
                ));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if o.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{}", table(&summary));
        for f in &summary.failures {
            fail_line(&mut out, &f.point.what, &f.verdict, f.reproducer.as_deref());
        }
        if let Some(n) = o.random {
            let _ = writeln!(
                out,
                "random chains: {n} (seed {}, up to {} cuts), {chains_failed} failed",
                o.seed, o.max_chain
            );
            for l in &chain_lines {
                let _ = writeln!(out, "{l}");
            }
        }
    }
    if summary.fired != summary.points {
        let _ = writeln!(
            out,
            "error: {} of {} cuts fired: the sweep did not cut where it meant to (first: {})",
            summary.fired,
            summary.points,
            summary
                .not_fired
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return exit::BROKEN.into();
    }
    if summary.failed > 0 || chains_failed > 0 {
        exit::FAILED.into()
    } else {
        exit::OK.into()
    }
}

/// The sweep on worker threads, the dashboard on this one; `q` stops the sweep (the points
/// not yet run are reported as skipped).
fn sweep_with_dashboard(
    scenario: &crate::scenario::schema::Scenario,
    name: &str,
    o: &Options,
) -> Result<Summary, crate::scenario::runner::RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    let options = Options {
        stop: Some(Arc::clone(&stop)),
        ..o.clone()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let finished = AtomicBool::new(false);
    let control = Arc::new(RunControl::default());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            let tx = std::sync::Mutex::new(tx);
            let progress = |done: usize, total: usize, failed: usize| {
                if done % 25 == 0 || done == total {
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let _ = tx.send(LiveEvent::Sweep {
                        done,
                        total,
                        failed,
                        points_per_s: rate,
                    });
                }
            };
            let r = super::sweep(scenario, name, &options, &progress);
            finished.store(true, Ordering::SeqCst);
            r
        });
        let mut state = UiState::new("hil sweep", &[name.to_string()]);
        state.sweep = Some(SweepView::default());
        if let Err(e) = dashboard::run(state, &rx, None, &control, &finished) {
            eprintln!("error: the dashboard: {e}");
        }
        stop.store(true, Ordering::SeqCst);
        run.join()
            .unwrap_or(Err(crate::scenario::runner::RunError::Panicked))
    })
}

/// `FAIL  what: [kind] message`, and the line of its reproducer.
fn fail_line(out: &mut impl Write, what: &str, v: &Verdict, reproducer: Option<&Path>) {
    let _ = writeln!(out, "FAIL  {what}: {}", first_problem(v));
    if let Some(r) = reproducer {
        let _ = writeln!(
            out,
            "      reproducer: {} (hil run {})",
            r.display(),
            r.display()
        );
    }
}

/// `[kind] message` of a verdict's most important problem.
fn first_problem(v: &Verdict) -> String {
    v.problems
        .first()
        .map(|p| format!("[{}] {}", p.kind.name(), p.message))
        .unwrap_or_default()
}

/// One row of the table.
fn row(name: &str, t: &Tally) -> String {
    format!(
        "{name:<18} {:>7} {:>10} {:>12} {:>8} {:>8} {:>7}\n",
        t.points, t.committed, t.rolled_back, t.refused, t.gave_up, t.failed
    )
}

/// The summary table: the outcome distribution per point class (a point that failed counts
/// as failed only), then the failures by kind.
///
/// ```text
/// sweep NAME: clean pass 294 flash ops, 36 requests, 1 boots, 9.8 s simulated
/// points               total  committed  rolled back  refused  gave up  failed
/// flash-ops              882        868           14        0        0       0
/// ...
/// all                    923        898           25        0        0       0
/// 923 points in 1.19 s (774 points/s), 923 cuts fired
/// ```
pub fn table(s: &Summary) -> String {
    let mut t = format!(
        "sweep {}: clean pass {} flash ops, {} requests, {} boots, {:.1} s simulated\n",
        s.scenario, s.clean.flash_ops, s.clean.requests, s.clean.boots, s.clean.simulated_s
    );
    t.push_str(&format!(
        "{:<18} {:>7} {:>10} {:>12} {:>8} {:>8} {:>7}\n",
        "points", "total", "committed", "rolled back", "refused", "gave up", "failed"
    ));
    for (k, v) in &s.by_kind {
        t.push_str(&row(k, v));
    }
    if s.skipped > 0 {
        t.push_str(&format!("stopped: {} points not run\n", s.skipped));
    }
    if let Some(p) = s.partition {
        t.push_str(&format!(
            "shard {}/{}: {} of the sweep's {} points\n",
            p.k, p.n, s.points, s.points_total
        ));
    }
    t.push_str(&row("all", &s.all));
    if !s.failure_kinds.is_empty() {
        let kinds: Vec<String> = s
            .failure_kinds
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect();
        t.push_str(&format!("failed: {}\n", kinds.join(", ")));
    }
    if s.converged > 0 {
        let kinds: Vec<String> = s
            .converged_by_kind
            .iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        t.push_str(&format!(
            "converged: {} points stopped at a state known to lead to an end ({})\n",
            s.converged,
            kinds.join(", ")
        ));
    }
    if s.faults_not_required > 0 {
        t.push_str(&format!(
            "{} points: some of the scenario's faults did not fire after the cut (not required)\n",
            s.faults_not_required
        ));
    }
    t.push_str(&format!(
        "{} points in {:.2} s ({:.0} points/s), {} cuts fired\n",
        s.points,
        s.wall_s,
        s.points as f64 / s.wall_s.max(1e-9),
        s.fired
    ));
    t
}

/// `hil sweep merge SHARD.json...`: the merged table (or JSON) and its verdict.
pub fn merge(paths: &[PathBuf], json: bool) -> ExitCode {
    let shards: Result<Vec<_>, _> = paths
        .iter()
        .map(|p| super::shard::read(p).map(|s| (p.clone(), s)))
        .collect();
    let summary = match shards.and_then(|s| super::shard::merge(&s)) {
        Ok(s) => s,
        Err(e) => return exit::error(exit::INVALID, format_args!("hil sweep merge: {e}")),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{}", table(&summary));
        let _ = writeln!(out, "merged from {} shards", paths.len());
        for r in summary.records.iter().filter(|r| !r.verdict.passed()) {
            fail_line(&mut out, &r.what, &r.verdict, r.reproducer.as_deref());
        }
    }
    if summary.fired != summary.points {
        let _ = writeln!(
            out,
            "error: {} of {} cuts fired: the sweep did not cut where it meant to",
            summary.fired, summary.points
        );
        return exit::BROKEN.into();
    }
    if summary.failed > 0 {
        exit::FAILED.into()
    } else {
        exit::OK.into()
    }
}

/// Where reproducers go by default.
pub fn default_out() -> PathBuf {
    PathBuf::from("sweep-failures")
}
