//! `hil`: the OTA test harness command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecu_sim::boot::BootMode;
use ecu_sim::flash::CutVariant;
use hil::demo::{self, DemoOptions};

#[derive(Parser, Debug)]
#[command(name = "hil", version, about = "ECU OTA test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build two signed images, install v1, update to v2 with a power cut mid-install, show the outcome.
    Demo {
        /// Bootloader mode.
        #[arg(long, value_enum, default_value_t = Mode::Swap)]
        mode: Mode,
        /// Where the cut lands relative to its flash operation.
        #[arg(long, value_enum, default_value_t = Variant::Torn)]
        variant: Variant,
        /// Size of the new image's payload, bytes.
        #[arg(long, default_value_t = 48 * 1024)]
        image_size: usize,
        /// Seed for image contents and torn-write randomness.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Swap,
    Ab,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Variant {
    Before,
    Torn,
    After,
}

/// Exit codes: 0 the update committed, 1 it did not, 2 the harness or the ECU broke.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            mode,
            variant,
            image_size,
            seed,
        } => {
            let opts = DemoOptions {
                mode: match mode {
                    Mode::Swap => BootMode::Swap,
                    Mode::Ab => BootMode::Ab,
                },
                variant: match variant {
                    Variant::Before => CutVariant::Before,
                    Variant::Torn => CutVariant::Torn,
                    Variant::After => CutVariant::After,
                },
                image_size,
                seed,
            };
            match demo::run(&opts, &mut std::io::stdout().lock()) {
                Ok(s) if s.committed => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
