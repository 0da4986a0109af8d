//! `ecu-sim`: a virtual ECU whose flash lives in a file, so its state survives across runs.
//! Parses and dispatches; the verbs live in `ecu_sim::cli`.
//!
//! ```text
//! ecu-sim --flash ecu.bin image --version 1.0.0 --out v1.bin
//! ecu-sim --flash ecu.bin provision v1.bin
//! ecu-sim --flash ecu.bin stage v2.bin        # as the running firmware: write + request (test)
//! ecu-sim --flash ecu.bin boot --run-ms 1000  # reset: the bootloader swaps, v2 confirms itself
//! ecu-sim --flash ecu.bin status
//! ecu-sim serve --doip 127.0.0.1:13400 --state ecu-state   # UDS over DoIP until Ctrl-C
//! ecu-sim serve --slcan-pty --relay-pty   # also on CAN via slcan, power behind a relay board
//! ```
//!
//! Exit codes (`ecu_sim::exit`): 0 ok, 1 the ECU has no bootable image, 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecu_sim::cli::ecu::EcuArgs;
use ecu_sim::cli::offline::{self, ImageArgs, Offline};
use ecu_sim::cli::serve::{self, ServeArgs};
use ecu_sim::exit;

#[derive(Parser, Debug)]
#[command(
    name = "ecu-sim",
    version,
    about = "Virtual ECU with file-backed flash"
)]
struct Cli {
    #[command(flatten)]
    ecu: EcuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a signed image with a development key.
    Image(ImageArgs),
    /// Erase everything and install IMAGE in the primary slot, confirmed. IMAGE is verified
    /// first (format, hash, signature against the keys, fits the slot): a refused one leaves
    /// the flash file unchanged (exit 2).
    Provision { image: PathBuf },
    /// Power on, then stage IMAGE as an upgrade request (what a firmware update agent does).
    Stage {
        image: PathBuf,
        #[arg(long)]
        permanent: bool,
    },
    /// Power on (the bootloader runs) and let the firmware run.
    Boot {
        #[arg(long, default_value_t = 1000)]
        run_ms: u64,
    },
    /// Show both slots, trailers and the stored security counter.
    Status,
    /// Run the ECU as a DoIP node (UDS over TCP, vehicle identification over UDP) until
    /// Ctrl-C. Flash, VIN and DTCs persist in the state directory across restarts.
    ///
    /// Once it serves, stdout has one line per endpoint, in this order:
    ///
    ///   ecu-sim: doip listening on ADDR:PORT (tcp and udp), ecu logical address 0x0010
    ///   ecu-sim: slcan adapter on PTY (iso-tp 0x7e0/0x7e8, functional 0x7df)   (--slcan-pty)
    ///   ecu-sim: socketcan on IFACE ... (iso-tp 0x7e0/0x7e8, functional 0x7df) (--socketcan)
    ///   ecu-sim: power relay on PTY (on A0 01 01 A2, off A0 01 00 A1)          (--relay-pty)
    #[command(
        verbatim_doc_comment,
        about = "Run the ECU as a DoIP node (UDS over TCP, vehicle identification over UDP) until Ctrl-C. Flash, VIN and DTCs persist in the state directory across restarts."
    )]
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Image(a) => offline::image(&a),
        Command::Serve(a) => serve::run(&a, &cli.ecu),
        Command::Provision { image } => offline::run(&cli.ecu, &Offline::Provision(image)),
        Command::Stage { image, permanent } => {
            offline::run(&cli.ecu, &Offline::Stage { image, permanent })
        }
        Command::Boot { run_ms } => offline::run(&cli.ecu, &Offline::Boot { run_ms }),
        Command::Status => offline::run(&cli.ecu, &Offline::Status),
    };
    match done {
        Ok(code) => code.into(),
        Err(e) => exit::error(exit::INVALID, format_args!("{e:#}")),
    }
}
