//! Power-cut sweep throughput: points verified per second in swap mode, for images from
//! 64 KiB to 1 MiB, every flash operation (before, torn, after) and every UDS boundary; and,
//! in the same run, the same kind of points replayed from the start (no forking), on a sample.
//!
//! `cargo bench -p hil --bench sweep` (release). Prints a Markdown table.

use std::time::Instant;

use hil::scenario::runner;
use hil::scenario::validate;
use hil::sweep::{self, Class, Options};

/// An update of `kib` KiB on a flash with `sector_kib` KiB sectors (the swap journal, one
/// sector, must hold three records per image sector: 4 KiB sectors stop at ~320 KiB images).
/// After a cut, a 512 KiB or 1 MiB swap can outlast the default 30 s boot timeout (it did
/// in the first 512 KiB run), so the manager waits up to 120 s for the ECU after a reset.
fn scenario(kib: usize, sector_kib: usize) -> hil::scenario::schema::Scenario {
    let sectors = kib / sector_kib + 2;
    let text = format!(
        "description: {kib} KiB update in swap mode\nseed: 1\necu: {{slot_sectors: {sectors}, sector_size: {}}}\ninstalled: {{version: 1.0.0, size: {}}}\nupdate: {{version: 2.0.0, size: {}}}\nclient: {{manager: {{boot_timeout_s: 120}}}}\nexpect: {{outcome: committed, version: 2.0.0, or_rolled_back: true}}\n",
        sector_kib * 1024,
        kib * 1024 - 4096,
        kib * 1024
    );
    validate::parse(&text, "bench.yaml").expect("bench scenario")
}

fn main() {
    // (image KiB, sector KiB); SWEEP_SIZES_KIB=64,256 runs only those (4 KiB sectors).
    let sizes: Vec<(usize, usize)> = std::env::var("SWEEP_SIZES_KIB")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|x| x.parse().ok())
                .map(|k| (k, 4))
                .collect()
        })
        .unwrap_or_else(|| {
            vec![
                (64, 4),
                (128, 4),
                (256, 4),
                (256, 16),
                (512, 16),
                (1024, 16),
            ]
        });
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("sweep, swap mode, flash-ops (before/torn/after) + uds, {jobs} worker threads\n");
    println!(
        "| image | sectors | flash ops | requests | points | wall | points/s | replayed from the start (sample) | fork speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (kib, sector_kib) in sizes {
        let s = scenario(kib, sector_kib);
        let o = Options {
            classes: vec![Class::FlashOps, Class::Uds],
            ..Options::default()
        };
        let summary = sweep::sweep(&s, "bench", &o, &|_, _, _| {}).expect("sweep runs");
        assert_eq!(summary.failed, 0, "{:#?}", summary.failures);
        assert_eq!(summary.fired, summary.points);
        let rate = summary.points as f64 / summary.wall_s;
        // The same points without forking: each run from power-on with the cut, on `jobs`
        // threads, for an evenly spread sample.
        let sample: Vec<_> = summary
            .all_points
            .iter()
            .step_by((summary.points / 40).max(1))
            .cloned()
            .collect();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for chunk in sample.chunks(sample.len().div_ceil(jobs)) {
                let s = &s;
                scope.spawn(move || {
                    for p in chunk {
                        let r = runner::run(&sweep::reproducer(s, "bench", p, &[]), None).unwrap();
                        assert!(r.failures.is_empty(), "{:?}", r.failures);
                    }
                });
            }
        });
        let replay = sample.len() as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {kib} KiB | {sector_kib} KiB | {} | {} | {} | {:.1} s | {:.0} | {:.0} points/s ({} points) | {:.1}x |",
            summary.clean.flash_ops,
            summary.clean.requests,
            summary.points,
            summary.wall_s,
            rate,
            replay,
            sample.len(),
            rate / replay
        );
    }
}
