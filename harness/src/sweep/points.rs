//! The cut points of a clean pass: which opportunities there are, and the fault that cuts at each.

use ecu_sim::flash::Flash;
use serde::{Deserialize, Serialize};

use super::run::Options;
use crate::scenario::schema::{Action, CutVariantSpec, Fault, FlashOpTrigger, PowerCut, Trigger};
use crate::scenario::world::{Step, StepRecord};

/// Which opportunities to cut at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    FlashOps,
    Uds,
    Boots,
    Download,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::FlashOps, Class::Uds, Class::Boots, Class::Download];

    pub fn name(self) -> &'static str {
        match self {
            Class::FlashOps => "flash-ops",
            Class::Uds => "uds",
            Class::Boots => "boots",
            Class::Download => "download",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One cut point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Its place in the clean pass's order, from 0: the same in every run of the same
    /// scenario, seed and build (what `--partition` shares out by).
    pub id: u64,
    pub class: Class,
    /// `before`/`torn`/`after` for flash operations.
    pub variant: Option<CutVariantSpec>,
    /// What a person reads: "flash op 212 (write) torn", "after request 57 (0x36)".
    pub what: String,
    /// The fault counted from the start of the scenario (the reproducer's).
    #[serde(skip)]
    pub fault: Fault,
    /// The fault counted from the step (the fork's).
    #[serde(skip)]
    pub(super) fork_fault: Fault,
}

fn cut(variant: CutVariantSpec, restore_ms: u64) -> Action {
    Action::PowerCut(PowerCut {
        variant,
        restore_after_ms: restore_ms,
        kill_manager: true,
    })
}

fn fault(when: Trigger, action: Action) -> Fault {
    Fault {
        when,
        action,
        times: 1,
        optional: false,
    }
}

fn op_trigger(n: u64) -> Trigger {
    Trigger::FlashOp(FlashOpTrigger {
        n,
        kind: None,
        region: None,
        boot: None,
        in_boot: false,
        in_firmware: false,
    })
}

/// The points of one step.
pub(super) fn points_of(
    r: &StepRecord,
    o: &Options,
    arm_ops: u64,
    last_download: &mut Option<u64>,
) -> Vec<Point> {
    let mut out = Vec::new();
    let has = |c: Class| o.classes.contains(&c);
    let snap_ops = r.sim.ecu.flash().ops();
    if has(Class::FlashOps) {
        for op in r.ops.clone() {
            for &v in &o.variants {
                out.push(Point {
                    id: 0,
                    class: Class::FlashOps,
                    variant: Some(v),
                    what: format!("flash op {op} {}", format!("{v:?}").to_lowercase()),
                    fault: fault(op_trigger(op - arm_ops + 1), cut(v, o.restore_ms)),
                    fork_fault: fault(op_trigger(op - snap_ops + 1), cut(v, o.restore_ms)),
                });
            }
        }
    }
    match &r.step {
        Step::Request { bytes, index } if has(Class::Uds) => {
            let f = fault(
                Trigger::Request(*index),
                cut(CutVariantSpec::Torn, o.restore_ms),
            );
            out.push(Point {
                id: 0,
                class: Class::Uds,
                variant: None,
                what: format!(
                    "after request {index} (0x{:02x})",
                    bytes.first().copied().unwrap_or(0)
                ),
                fault: f.clone(),
                fork_fault: f,
            });
        }
        Step::Chunk { offset } if has(Class::Download) => {
            let step = o.download_step.max(1);
            let bucket = offset / step;
            if *last_download != Some(bucket) {
                *last_download = Some(bucket);
                let f = fault(
                    Trigger::DownloadBytes(*offset),
                    cut(CutVariantSpec::Torn, o.restore_ms),
                );
                out.push(Point {
                    id: 0,
                    class: Class::Download,
                    variant: None,
                    what: format!("download at byte {offset}"),
                    fault: f.clone(),
                    fork_fault: f,
                });
            }
        }
        _ => {}
    }
    if has(Class::Boots) {
        for b in r.boots.start + 1..=r.boots.end {
            let f = fault(Trigger::Boot(b), cut(CutVariantSpec::Torn, o.restore_ms));
            out.push(Point {
                id: 0,
                class: Class::Boots,
                variant: None,
                what: format!("after boot {b}"),
                fault: f.clone(),
                fork_fault: f,
            });
        }
    }
    out
}
