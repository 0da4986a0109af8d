//! Sharded sweeps: `hil sweep --partition K/N --json` runs one shard's points and writes
//! them with what they depend on; `hil sweep merge SHARD.json...` checks that the shards are
//! of one sweep and cover it exactly once, and counts them into one summary and verdict.
//!
//! | the shards must agree on | else |
//! |---|---|
//! | the scenario's name and SHA-256, the seed | [`MergeError::Different`] |
//! | the build (the executable's SHA-256) | [`MergeError::Different`] |
//! | point classes, variants, download step, restore delay | [`MergeError::Different`] |
//! | N, and each K from 1 to N exactly once | [`MergeError::Partitions`] |
//! | the points: together every id of the sweep exactly once, each in its own shard | [`MergeError::Points`] |

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::run::{CleanPass, Identity, Partition, PointRecord, Summary};

/// What a merge reads of a shard file (the rest of its summary is counted again).
#[derive(Clone, Debug, Deserialize)]
pub struct Shard {
    pub scenario: String,
    pub identity: Identity,
    pub partition: Option<Partition>,
    pub points_total: usize,
    pub clean: CleanPass,
    #[serde(default)]
    pub records: Vec<PointRecord>,
    pub wall_s: f64,
    #[serde(default)]
    pub skipped: usize,
}

/// Why shards do not merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a sweep shard: {source}", path = path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: not a shard (the sweep ran without --partition)", path = path.display())]
    NotAShard { path: PathBuf },
    #[error("{path}: shard {k}/{n} was stopped before all its points ran ({skipped} not run)", path = path.display())]
    Incomplete {
        path: PathBuf,
        k: u64,
        n: u64,
        skipped: usize,
    },
    #[error("{b} and {a} are of different sweeps: their {what} differ ({va} vs {vb})", a = a.display(), b = b.display())]
    Different {
        what: &'static str,
        a: PathBuf,
        va: String,
        b: PathBuf,
        vb: String,
    },
    #[error("the shards do not make one sweep: {0}")]
    Partitions(String),
    #[error("the shards' points do not make the sweep: {0}")]
    Points(String),
    #[error("no shard files given")]
    Empty,
}

/// Read a shard file.
pub fn read(path: &Path) -> Result<Shard, MergeError> {
    let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| MergeError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Merge `shards` (each with the file it came from) into the summary of the whole sweep;
/// its `records` hold every point by id.
pub fn merge(shards: &[(PathBuf, Shard)]) -> Result<Summary, MergeError> {
    let Some((first_path, first)) = shards.first() else {
        return Err(MergeError::Empty);
    };
    let mut ks = BTreeSet::new();
    let mut n_all = None;
    for (path, s) in shards {
        let Some(p) = s.partition else {
            return Err(MergeError::NotAShard { path: path.clone() });
        };
        if s.skipped > 0 {
            return Err(MergeError::Incomplete {
                path: path.clone(),
                k: p.k,
                n: p.n,
                skipped: s.skipped,
            });
        }
        let differ = |what, va: &dyn ToString, vb: &dyn ToString| {
            let (va, vb) = (va.to_string(), vb.to_string());
            (va != vb).then(|| MergeError::Different {
                what,
                a: first_path.clone(),
                va,
                b: path.clone(),
                vb,
            })
        };
        let checks = [
            differ("scenarios", &first.scenario, &s.scenario),
            differ(
                "scenario files (SHA-256)",
                &first.identity.scenario_sha256,
                &s.identity.scenario_sha256,
            ),
            differ("seeds", &first.identity.seed, &s.identity.seed),
            differ("builds", &first.identity.build, &s.identity.build),
            differ("settings", &first.identity.settings, &s.identity.settings),
            differ("point totals", &first.points_total, &s.points_total),
        ];
        if let Some(e) = checks.into_iter().flatten().next() {
            return Err(e);
        }
        match n_all {
            None => n_all = Some(p.n),
            Some(n) if n != p.n => {
                return Err(MergeError::Partitions(format!(
                    "{} is shard {}/{}, another is of {n}",
                    path.display(),
                    p.k,
                    p.n
                )));
            }
            Some(_) => {}
        }
        if !ks.insert(p.k) {
            return Err(MergeError::Partitions(format!(
                "shard {}/{} is given twice (again in {})",
                p.k,
                p.n,
                path.display()
            )));
        }
        if let Some(r) = s.records.iter().find(|r| !p.takes(r.id)) {
            return Err(MergeError::Points(format!(
                "{} (shard {}/{}) holds point {} ({}), which is not its",
                path.display(),
                p.k,
                p.n,
                r.id,
                r.what
            )));
        }
    }
    let n = n_all.unwrap_or(0);
    let missing: Vec<String> = (1..=n)
        .filter(|k| !ks.contains(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Partitions(format!(
            "shards {} are missing",
            missing.join(", ")
        )));
    }
    let mut records: Vec<PointRecord> = shards
        .iter()
        .flat_map(|(_, s)| s.records.iter().cloned())
        .collect();
    records.sort_by_key(|r| r.id);
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let want: Vec<u64> = (0..first.points_total as u64).collect();
    if ids != want {
        let have: BTreeSet<u64> = ids.iter().copied().collect();
        let absent: Vec<String> = want
            .iter()
            .filter(|i| !have.contains(i))
            .take(5)
            .map(ToString::to_string)
            .collect();
        return Err(MergeError::Points(format!(
            "{} points for a sweep of {}{}",
            ids.len(),
            first.points_total,
            if absent.is_empty() {
                " (some twice)".to_string()
            } else {
                format!(" (missing: {})", absent.join(", "))
            }
        )));
    }
    let mut summary = Summary {
        scenario: first.scenario.clone(),
        clean: first.clean.clone(),
        identity: first.identity.clone(),
        partition: None,
        points_total: first.points_total,
        // The slowest shard: they ran side by side.
        wall_s: shards.iter().map(|(_, s)| s.wall_s).fold(0.0, f64::max),
        ..Summary::default()
    };
    for r in &records {
        summary.count(r);
    }
    summary.records = records;
    Ok(summary)
}
