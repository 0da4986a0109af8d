//! Benchmark (not a timed test): flash model throughput and power-cut sweep speed.
//!
//! `cargo bench -p ecu-sim --bench core` prints a markdown table; the README quotes it.

use std::hint::black_box;
use std::time::Instant;

use ecu_sim::boot::BootMode;
use ecu_sim::flash::{Flash, Geometry, SimFlash};
use ecu_sim::powercut::{self, Flow, Setup};

fn flash_ops_per_sec(write_len: usize) -> (f64, f64) {
    let geometry = Geometry::uniform(4096, 256, 8).unwrap();
    let mut flash = SimFlash::new(geometry, 1);
    let data = vec![0x5Au8; write_len];
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed().as_secs_f64() < 1.0 {
        for sector in 0..256u32 {
            let base = sector * 4096;
            flash.erase(base, 4096).unwrap();
            ops += 1;
            for off in (0..4096).step_by(write_len) {
                flash.write(base + off as u32, black_box(&data)).unwrap();
                ops += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (
        ops as f64 / secs,
        flash.stats().bytes_written as f64 / secs / 1e6,
    )
}

fn sweep_rate(mode: BootMode, image_size: usize) -> (u64, f64, f64) {
    let sectors = image_size / 4096 + 2;
    let geometry = Geometry::uniform(4096, 3 + 2 * sectors + 1, 8).unwrap();
    let setup = Setup::new(geometry, mode, Flow::TestConfirm, 1, image_size, 3).unwrap();
    let start = Instant::now();
    let summary = powercut::sweep(&setup, 1).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    (summary.points, secs, summary.points as f64 / secs)
}

fn main() {
    println!("| measure | value |");
    println!("|---|---|");
    for len in [8, 256, 4096] {
        let (ops, mbs) = flash_ops_per_sec(len);
        println!(
            "| flash ops/s, 4 KiB erase + {len}-byte writes | {ops:.0} ({mbs:.0} MB/s programmed) |"
        );
    }
    for mode in BootMode::ALL {
        for kib in [16usize, 64, 256] {
            let (points, secs, rate) = sweep_rate(mode, kib * 1024);
            println!(
                "| {mode}: cut points checked/s, {kib} KiB image (every op × 3 variants, {points} points in {secs:.2} s) | {rate:.0} |"
            );
        }
    }
}
