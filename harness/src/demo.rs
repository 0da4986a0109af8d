//! `hil demo`: build two signed images, install v1, update to v2 with a power cut in the
//! middle of the installation, and show what the ECU did.

use std::io::{self, Write};

use ecu_sim::boot::BootMode;
use ecu_sim::event::EventKind;
use ecu_sim::flash::{CutVariant, Flash, Geometry};
use ecu_sim::powercut::{self, CutPlan, Flow, Report, Setup, Violation};

/// What to demonstrate.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub mode: BootMode,
    pub variant: CutVariant,
    pub image_size: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            mode: BootMode::SwapScratch,
            variant: CutVariant::Torn,
            image_size: 48 * 1024,
            seed: 1,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("the ecu broke a promise: {0}")]
    Violation(Violation),
    #[error("no flash operation to cut in the {0}")]
    NothingToCut(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What the demo ended with.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    pub committed: bool,
    pub cut_op: u64,
    pub report: Report,
}

/// Run the demo, writing a human-readable account to `out`.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let geometry =
        Geometry::uniform(4096, 3 + 2 * 33 + 1, 8).map_err(|e| DemoError::Setup(e.to_string()))?;
    let setup = Setup::new(
        geometry,
        opts.mode,
        Flow::TestConfirm,
        1,
        opts.image_size,
        opts.seed,
    )
    .map_err(DemoError::Setup)?;
    writeln!(
        out,
        "ECU: {} mode, {} KiB flash in 4 KiB sectors, 8-byte write unit; key \"oem\" (ed25519)",
        opts.mode,
        setup.ecu.flash().geometry().size() / 1024
    )?;
    writeln!(
        out,
        "v{}: {} bytes signed, installed at the factory",
        setup.old_version,
        setup.old.len()
    )?;
    writeln!(
        out,
        "v{}: {} bytes signed, to be installed as a test upgrade",
        setup.new_version,
        setup.new.len()
    )?;

    // A dry run finds the installation window; the cut goes in its middle.
    let clean = powercut::run(&setup, CutPlan::None).map_err(DemoError::Violation)?;
    let (phase, from, to) = match opts.mode {
        BootMode::SwapScratch | BootMode::SwapMove | BootMode::SwapOffset | BootMode::Overwrite => {
            (
                "swap",
                clean.op_of(|k| matches!(k, EventKind::SwapStarted { .. })),
                clean.op_of(|k| matches!(k, EventKind::SwapFinished { .. })),
            )
        }
        BootMode::DirectXip => (
            "download",
            clean.op_of(|k| matches!(k, EventKind::StagingErased { .. })),
            clean.op_of(|k| matches!(k, EventKind::UpgradeRequested { .. })),
        ),
    };
    let (Some(from), Some(to)) = (from, to) else {
        return Err(DemoError::NothingToCut(phase));
    };
    let cut_op = from + (to - from) / 2;
    writeln!(
        out,
        "clean update: {} flash operations (ops {}..{}); the {phase} spans ops {from}..={to}; cutting power at op {cut_op} ({})\n",
        clean.ops,
        clean.first_op,
        clean.first_op + clean.ops,
        opts.variant
    )?;

    let report = powercut::run(&setup, CutPlan::At(vec![(cut_op, opts.variant)]))
        .map_err(DemoError::Violation)?;
    for e in &report.events {
        if !matches!(e.kind, EventKind::SwapProgress { .. }) {
            writeln!(out, "{e}")?;
        }
    }
    let committed = report.final_version == setup.new_version;
    let resumed = report
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::SwapResumed { .. }));
    writeln!(out)?;
    writeln!(
        out,
        "outcome: {} — v{} runs from the {} slot, confirmed; {} power cut(s) fired; {} boots; {}simulated {:.1} s",
        if committed {
            "COMMITTED"
        } else {
            "ROLLED BACK"
        },
        report.final_version,
        report.final_slot,
        report.cuts.len(),
        report.boots,
        if resumed {
            "swap resumed after the cut; "
        } else {
            ""
        },
        report.simulated_us as f64 / 1e6
    )?;
    Ok(DemoSummary {
        committed,
        cut_op,
        report,
    })
}
