//! Sharded sweeps: the shards of `--partition K/N` together are the unsharded sweep, point
//! for point (ids, what was cut, verdicts, tallies), through the shard file format; a merge
//! refuses shards that are not of one sweep; and the CLI round trip (`hil sweep --partition
//! K/N --json`, `hil sweep merge`) gives the unsharded verdict and exit code.

use std::path::PathBuf;
use std::process::Command;

use hil::scenario::validate;
use hil::sweep::shard::{self, MergeError, Shard};
use hil::sweep::{self, Class, Options, Partition, Summary};

/// A bootloader that journals no swap steps: some cuts brick it, so the sweep has failing
/// points as well as passing ones to carry through the shards.
const BROKEN: &str = "description: a bootloader that journals no swap steps\nseed: 3\necu: {boot_mode: swap, slot_sectors: 10, bootloader_defect: no_step_records}\ninstalled: {version: 1.0.0, size: 15000}\nupdate: {version: 2.0.0, size: 16000}\nexpect: {outcome: committed, version: 2.0.0, or_rolled_back: true}\n";

fn options(partition: Option<Partition>) -> Options {
    Options {
        classes: vec![Class::FlashOps, Class::Uds, Class::Boots],
        partition,
        ..Options::default()
    }
}

fn run(text: &str, partition: Option<Partition>) -> Summary {
    let s = validate::parse(text, "broken.yaml").unwrap();
    sweep::sweep(&s, "broken", &options(partition), &|_, _, _| {}).unwrap()
}

/// A summary through the shard file format, as `hil sweep merge` reads it.
fn as_shard(s: &Summary) -> Shard {
    serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap()
}

#[test]
fn three_shards_merge_into_the_unsharded_sweep_point_for_point() {
    let whole = run(BROKEN, Some(Partition { k: 1, n: 1 }));
    assert_eq!(whole.records.len(), whole.points);
    assert_eq!(whole.points, whole.points_total);
    assert!(whole.failed > 0 && whole.passed > 0, "{:?}", whole.all);
    let shards: Vec<(PathBuf, Shard)> = (1..=3)
        .map(|k| {
            let s = run(BROKEN, Some(Partition { k, n: 3 }));
            assert_eq!(s.points_total, whole.points_total);
            assert!(
                s.points.abs_diff(whole.points / 3) <= 1,
                "balanced: {}",
                s.points
            );
            (PathBuf::from(format!("shard-{k}.json")), as_shard(&s))
        })
        .collect();
    let merged = shard::merge(&shards).unwrap();
    assert_eq!(merged.records.len(), whole.records.len());
    for (m, w) in merged.records.iter().zip(&whole.records) {
        assert_eq!(
            (m.id, &m.what, &m.verdict, m.fired),
            (w.id, &w.what, &w.verdict, w.fired),
            "point {}",
            w.id
        );
    }
    assert_eq!(merged.all, whole.all);
    assert_eq!(merged.by_kind, whole.by_kind);
    assert_eq!(merged.failure_kinds, whole.failure_kinds);
    assert_eq!(
        (merged.points, merged.failed, merged.fired),
        (whole.points, whole.failed, whole.fired)
    );

    // Not one sweep: a shard missing, one given twice, one of another seed, an unsharded run.
    let err = shard::merge(&shards[..2]).unwrap_err();
    assert!(
        matches!(&err, MergeError::Partitions(m) if m.contains("shards 3/3 are missing")),
        "{err}"
    );
    let twice = vec![shards[0].clone(), shards[0].clone(), shards[2].clone()];
    let err = shard::merge(&twice).unwrap_err();
    assert!(
        err.to_string().contains("shard 1/3 is given twice"),
        "{err}"
    );
    let other_seed = BROKEN.replace("seed: 3", "seed: 4");
    let mut mixed = shards.clone();
    mixed[1].1 = as_shard(&run(&other_seed, Some(Partition { k: 2, n: 3 })));
    let err = shard::merge(&mixed).unwrap_err();
    assert!(
        matches!(&err, MergeError::Different { what, .. } if what.starts_with("scenario files") || *what == "seeds"),
        "{err}"
    );
    let unsharded = as_shard(&run(BROKEN, None));
    let err = shard::merge(&[(PathBuf::from("all.json"), unsharded)]).unwrap_err();
    assert!(matches!(err, MergeError::NotAShard { .. }), "{err}");
    // A shard file that lost a point.
    let mut lost = shards.clone();
    lost[0].1.records.pop();
    let err = shard::merge(&lost).unwrap_err();
    assert!(
        matches!(&err, MergeError::Points(m) if m.contains("missing")),
        "{err}"
    );
}

#[test]
fn partitions_parse_and_bad_ones_are_refused() {
    assert_eq!(Partition::parse("2/4"), Ok(Partition { k: 2, n: 4 }));
    for bad in ["0/4", "5/4", "1/0", "4", "a/b", "1/2/3", ""] {
        let e = Partition::parse(bad).unwrap_err();
        assert!(e.contains("expected K/N"), "{bad}: {e}");
    }
    let p = Partition { k: 2, n: 3 };
    let ids: Vec<u64> = (0..9).filter(|&i| p.takes(i)).collect();
    assert_eq!(ids, [1, 4, 7]);
}

#[test]
fn the_cli_round_trip_gives_the_unsharded_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, BROKEN).unwrap();
    let hil = env!("CARGO_BIN_EXE_hil");
    let mut files = Vec::new();
    for k in 1..=2 {
        let o = Command::new(hil)
            .arg("sweep")
            .arg(&file)
            .args([
                "--points",
                "flash-ops",
                "--partition",
                &format!("{k}/2"),
                "--json",
                "--out",
            ])
            .arg(dir.path().join("failures"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "shard {k}: some points brick");
        let path = dir.path().join(format!("shard-{k}.json"));
        std::fs::write(&path, &o.stdout).unwrap();
        files.push(path);
    }
    let o = Command::new(hil)
        .args(["sweep", "merge"])
        .args(&files)
        .output()
        .unwrap();
    let merged = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{merged}");
    assert!(merged.contains("merged from 2 shards"), "{merged}");
    let o = Command::new(hil)
        .arg("sweep")
        .arg(&file)
        .args(["--points", "flash-ops", "--out"])
        .arg(dir.path().join("failures-all"))
        .output()
        .unwrap();
    let whole = String::from_utf8_lossy(&o.stdout);
    // The same table row for every class and the same failure lines.
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| {
                l.starts_with("flash-ops") || l.starts_with("all ") || l.starts_with("failed:")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        rows(&merged),
        rows(&whole),
        "merged:\n{merged}\nwhole:\n{whole}"
    );
    let fails = |t: &str| t.lines().filter(|l| l.starts_with("FAIL  ")).count();
    assert_eq!(fails(&merged), fails(&whole));
    // One shard alone is refused, with the reason, exit 2.
    let o = Command::new(hil)
        .args(["sweep", "merge"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("shards 2/2 are missing"), "{err}");
}
