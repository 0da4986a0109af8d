//! `hil sweep`: a power cut at every point of a scenario's update.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::UiArg;
use crate::exit;
use crate::sweep::cli::{self, CliOptions};

/// Cut power at every flash operation, UDS boundary, download step and boot of a scenario's
/// update and check the ECU never bricks. Exit 0 all points passed, 1 a point failed, 2
/// invalid input, 3 the engine broke.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    #[arg(required = true)]
    scenario: Option<PathBuf>,
    /// Run only shard K of N (by point id; with --json, a shard file for `hil sweep merge`).
    #[arg(long, value_name = "K/N")]
    partition: Option<String>,
    /// Point classes: flash-ops, uds, boots, download (comma-separated).
    #[arg(long, default_value = "flash-ops,uds,boots,download")]
    points: String,
    /// Cut variants at flash operations (comma-separated).
    #[arg(long, default_value = "before,torn,after")]
    variants: String,
    /// Bytes between download points.
    #[arg(long, default_value_t = 16384)]
    download_step: u64,
    /// Power (and the OTA manager) come back after this long.
    #[arg(long, default_value_t = 500)]
    restore_ms: u64,
    /// Stop a fork at a state already known to lead to a verified end and take that end
    /// (exact: the verdicts are the same; off by default).
    #[arg(long)]
    converge: bool,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Write a reproducer scenario per failing point here.
    #[arg(long, default_value = "sweep-failures")]
    out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Also run N chains of random cuts from the start.
    #[arg(long)]
    random: Option<usize>,
    /// Seed of the random chains.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most cuts in one random chain.
    #[arg(long, default_value_t = 3)]
    max_chain: usize,
    /// tui (the dashboard) or plain. Default: tui on a terminal outside CI.
    #[arg(long, value_enum)]
    ui: Option<UiArg>,
}

#[derive(clap::Subcommand, Debug)]
enum SweepCommand {
    /// Merge the shard files of one sweep (`--partition K/N --json`) into one summary and
    /// verdict; refuses shards of different scenarios, seeds, settings or builds, and shards
    /// that miss or repeat points. Exit 0 every point passed, 1 a point failed, 2 the shards
    /// do not make one sweep.
    Merge {
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Print the merged summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: SweepArgs) -> ExitCode {
    if let Some(SweepCommand::Merge { shards, json }) = &a.command {
        return cli::merge(shards, *json);
    }
    let Some(scenario) = &a.scenario else {
        return exit::error(exit::INVALID, "hil sweep: a scenario file is required");
    };
    let (classes, variants) = match (
        cli::parse_classes(&a.points),
        cli::parse_variants(&a.variants),
    ) {
        (Ok(c), Ok(v)) => (c, v),
        (Err(e), _) | (_, Err(e)) => return exit::error(exit::INVALID, e),
    };
    let partition = match a.partition.as_deref().map(crate::sweep::Partition::parse) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return exit::error(exit::INVALID, e),
    };
    cli::run(
        scenario,
        &CliOptions {
            sweep: crate::sweep::Options {
                classes,
                variants,
                download_step: a.download_step,
                restore_ms: a.restore_ms,
                jobs: a.jobs,
                out: Some(a.out),
                stop: None,
                partition,
                converge: a.converge,
            },
            json: a.json,
            random: a.random,
            seed: a.seed,
            max_chain: a.max_chain,
            ui: a.ui.map(Into::into),
        },
    )
}
