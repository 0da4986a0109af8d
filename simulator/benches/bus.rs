//! Benchmark (not a timed test): ISO-TP through the virtual CAN bus.
//!
//! `cargo bench -p ecu-sim --bench bus` prints a markdown table: frames per wall-clock second
//! and how much faster than real time 1 MiB moves (256 messages of 4 KiB, BS 0, STmin 0),
//! best of three runs.

use std::hint::black_box;
use std::time::Instant;

use ecu_sim::can::bus::{Bus, BusConfig, NodeId};
use ecu_sim::can::frame::Frame;
use ecu_sim::can::link::{Link, Side};
use ecu_sim::proto::isotp::{Config, Event, IsoTp};

struct Run {
    frames: u64,
    sim_us: u64,
    wall_s: f64,
}

fn transfer_1_mib(bus: BusConfig, fd: bool) -> Run {
    let cfg = |tx, rx| {
        let mut c = Config::new(tx, rx);
        c.fd = fd;
        c.max_message = 4096;
        IsoTp::new(c)
    };
    let mut link = Link::new(Bus::new(bus), cfg(0x7E0, 0x7E8), cfg(0x7E8, 0x7E0));
    let msg: Vec<u8> = (0..4096u32).map(|i| (i * 31) as u8).collect();
    let start = Instant::now();
    let mut received = 0;
    for _ in 0..256 {
        link.send(Side::A, &msg).unwrap();
        for e in link.run() {
            if matches!(e.event, Event::Received(ref m) if m.len() == 4096) {
                received += 1;
            }
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    assert_eq!(received, 256);
    Run {
        frames: link.bus().stats().frames,
        sim_us: link.now(),
        wall_s,
    }
}

fn best_of_3(f: impl Fn() -> Run) -> Run {
    (0..3)
        .map(|_| f())
        .min_by(|a, b| a.wall_s.total_cmp(&b.wall_s))
        .unwrap()
}

/// Raw bus: 8-byte classic frames from one node to another, no ISO-TP.
fn raw_frames_per_sec() -> f64 {
    let mut bus = Bus::new(BusConfig::classic(500_000));
    let (a, _b): (NodeId, NodeId) = (bus.attach(), bus.attach());
    let n = 500_000u64;
    let start = Instant::now();
    let mut now = 0;
    for i in 0..n {
        bus.send(now, a, Frame::classic(0x100, i.to_le_bytes().to_vec()))
            .unwrap();
        now = bus.poll_timeout().unwrap();
        bus.handle_timeout(now);
        now = bus.poll_timeout().unwrap();
        bus.handle_timeout(now);
        black_box(bus.poll_delivery());
        black_box(bus.poll_event());
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| raw bus, 8-byte classic frames/s (wall clock) | {:.0} |",
        raw_frames_per_sec()
    );
    for (name, bus, fd) in [
        ("classic 500 kbit/s", BusConfig::classic(500_000), false),
        (
            "CAN FD 500 kbit/s / 2 Mbit/s",
            BusConfig::fd(500_000, 2_000_000),
            true,
        ),
    ] {
        let r = best_of_3(|| transfer_1_mib(bus.clone(), fd));
        println!(
            "| ISO-TP over the bus, {name}: frames/s (wall clock) | {:.0} ({} frames in {:.1} ms) |",
            r.frames as f64 / r.wall_s,
            r.frames,
            r.wall_s * 1e3
        );
        println!(
            "| 1 MiB as 256 × 4 KiB, {name}: simulated ÷ wall time | {:.0}× ({:.2} s simulated, {:.1} ms wall) |",
            r.sim_us as f64 / 1e6 / r.wall_s,
            r.sim_us as f64 / 1e6,
            r.wall_s * 1e3
        );
    }
}
