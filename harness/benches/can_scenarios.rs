//! Simulated time ÷ wall time of the CAN scenarios: every `transport: can|canfd` file of
//! `scenarios/` run in virtual time, each UDS message through both ISO-TP cores over the
//! virtual bus (`scenario/world/canlink.rs`), single-threaded, several rounds.
//!
//! `cargo bench -p hil --bench can_scenarios` (release). Prints a Markdown table; the goal is a
//! ratio of at least 1000 (a CAN update of seconds must take milliseconds).

use std::path::Path;
use std::time::Instant;

use hil::scenario::report;
use hil::scenario::runner;
use hil::scenario::schema::TransportSpec;

/// Rounds per scenario (the wall time is their total).
const ROUNDS: u32 = 20;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    println!("CAN scenarios, {ROUNDS} rounds each, one thread\n");
    println!("| scenario | transport | simulated | wall per run | ratio |");
    println!("|---|---|---|---|---|");
    let (mut sim_total, mut wall_total) = (0f64, 0f64);
    for path in paths {
        let s = report::load(&path).expect("a valid scenario");
        let transport = match s.ecu.transport {
            TransportSpec::Doip => continue,
            TransportSpec::Can => "can",
            TransportSpec::Canfd => "canfd",
        };
        let first = runner::run(&s, None).expect("the scenario runs");
        assert!(first.failures.is_empty(), "{:?}", first.failures);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            let r = runner::run(&s, None).expect("the scenario runs");
            std::hint::black_box(&r);
        }
        let wall = start.elapsed().as_secs_f64() / f64::from(ROUNDS);
        let sim = first.end.simulated_us as f64 / 1e6;
        sim_total += sim;
        wall_total += wall;
        println!(
            "| {} | {transport} | {sim:.2} s | {:.2} ms | {:.0}x |",
            report::name_of(&path),
            wall * 1e3,
            sim / wall
        );
    }
    println!(
        "| **all** | | {sim_total:.2} s | {:.2} ms | **{:.0}x** |",
        wall_total * 1e3,
        sim_total / wall_total
    );
}
