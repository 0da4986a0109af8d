//! Power-cut sweep cost against the image size: 256 KiB, 1 MiB and 4 MiB updates in swap mode
//! (16 KiB sectors), every flash operation (before, torn, after) and every UDS boundary, with
//! convergence on ([`Options::converge`]): points, wall and CPU time, the CPU ratio to the
//! size before (4× the image each; CPU time, as the machine may be shared), the share of forks that converged and in which class, and the peak
//! resident memory of each sweep (VmHWM, reset before each through `/proc/self/clear_refs`).
//!
//! `cargo bench -p hil --bench sweep` (release). Prints a Markdown table.
//! `SWEEP_SIZES_KIB=256,1024` runs only those sizes; `SWEEP_CONVERGE=0` runs every fork to
//! its end.
//!
//! The 4 MiB image with 16 KiB sectors: 258 sectors a slot; the swap journal (one 16 KiB
//! sector, 16-byte records: 1024) must hold `records_needed(257)` = 3 × 257 + 20 = 791
//! records, so the layout resolves (up to ~5.2 MiB images at 16 KiB sectors).

use hil::scenario::validate;
use hil::sweep::{self, Class, Options};

/// An update of `kib` KiB on a flash with `sector_kib` KiB sectors. After a cut, a large
/// swap can outlast the default 30 s boot timeout, so the manager waits up to 600 s for the
/// ECU after a reset.
fn scenario(kib: usize, sector_kib: usize) -> hil::scenario::schema::Scenario {
    let sectors = kib / sector_kib + 2;
    let text = format!(
        "description: {kib} KiB update in swap mode\nseed: 1\necu: {{slot_sectors: {sectors}, sector_size: {}}}\ninstalled: {{version: 1.0.0, size: {}}}\nupdate: {{version: 2.0.0, size: {}}}\nclient: {{manager: {{boot_timeout_s: 600}}}}\nexpect: {{outcome: committed, version: 2.0.0, or_rolled_back: true}}\n",
        sector_kib * 1024,
        kib * 1024 - 4096,
        kib * 1024
    );
    validate::parse(&text, "bench.yaml").expect("bench scenario")
}

/// Peak resident set since the last reset, KiB (`None` where /proc is not there).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reset the peak resident set to the current one (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time of this process so far, user + system, seconds (`/proc/self/stat`, 100 Hz ticks):
/// what a sweep costs, unlike its wall time, whatever else runs on the machine.
fn cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: field 3 is the state; utime and stime are 14, 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SWEEP_SIZES_KIB")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 1024, 4096]);
    let converge = std::env::var("SWEEP_CONVERGE").map_or(true, |v| v != "0");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sweep, swap mode, 16 KiB sectors, flash-ops (before/torn/after) + uds, {jobs} worker threads, convergence {}, load average before: {}\n",
        if converge { "on" } else { "off" },
        load()
    );
    println!(
        "| image | flash ops | requests | points | wall | CPU | × CPU for 4× image | converged | converged by class | peak RSS | load after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut last: Option<f64> = None;
    for kib in sizes {
        let s = scenario(kib, 16);
        let o = Options {
            classes: vec![Class::FlashOps, Class::Uds],
            converge,
            ..Options::default()
        };
        reset_peak_rss();
        let cpu0 = cpu_s();
        let summary = sweep::sweep(&s, "bench", &o, &|_, _, _| {}).expect("sweep runs");
        let rss = peak_rss_kib();
        let cpu = cpu_s().zip(cpu0).map_or(f64::NAN, |(a, b)| a - b);
        assert_eq!(summary.failed, 0, "{:#?}", summary.failures);
        assert_eq!(summary.fired, summary.points);
        let ratio = last.map_or_else(|| "—".to_string(), |t| format!("{:.1}×", cpu / t));
        last = Some(cpu);
        let by_class: Vec<String> = summary
            .converged_by_kind
            .iter()
            .map(|(k, n)| {
                let of = summary.by_kind.get(k).map_or(0, |t| t.points);
                format!("{k} {n}/{of}")
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {:.1} s | {cpu:.1} s | {ratio} | {:.1} % | {} | {} | {} |",
            if kib >= 1024 {
                format!("{} MiB", kib / 1024)
            } else {
                format!("{kib} KiB")
            },
            summary.clean.flash_ops,
            summary.clean.requests,
            summary.points,
            summary.wall_s,
            100.0 * summary.converged as f64 / summary.points.max(1) as f64,
            if by_class.is_empty() {
                "—".to_string()
            } else {
                by_class.join(", ")
            },
            rss.map_or_else(|| "?".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
            load()
        );
    }
}
