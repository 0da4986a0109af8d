//! `hil`: the OTA test harness command line. Parses and dispatches; each verb lives in
//! `hil::cli::<verb>`, exit codes in `hil::exit` (the README's exit-code table).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hil::cli::artifacts::ServeArtifactsArgs;
use hil::cli::demo::DemoArgs;
use hil::cli::flash::FlashArgs;
use hil::cli::image::{ImageCommand, KeysCommand};
use hil::cli::ota::OtaCommand;
use hil::cli::scenario::{ListArgs, RunArgs, ValidateArgs};
use hil::cli::sweep::SweepArgs;
use hil::cli::{artifacts, demo, flash, image, ota, scenario, sweep};

#[derive(Parser, Debug)]
#[command(name = "hil", version, about = "ECU OTA test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(RunArgs),
    Sweep(SweepArgs),
    Validate(ValidateArgs),
    List(ListArgs),
    Demo(DemoArgs),
    Flash(FlashArgs),
    ServeArtifacts(ServeArtifactsArgs),
    /// OTA jobs: submit a manifest, run or resume jobs from a store directory, show status.
    Ota {
        #[command(subcommand)]
        command: OtaCommand,
    },
    /// Test signing keys (PEM).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Test images (MCUboot format, with the simulator's behaviour TLV).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(a) => scenario::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Validate(a) => scenario::validate(&a),
        Command::List(a) => scenario::list(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Flash(a) => flash::run(&a),
        Command::ServeArtifacts(a) => artifacts::run(&a),
        Command::Ota { command } => ota::run(&command),
        Command::Keys { command } => image::keys(&command),
        Command::Image { command } => image::image(&command),
    }
}
