//! `hil demo`: two signed images, v1 installed, an update to v2 with a power cut mid-install.

use std::process::ExitCode;

use clap::ValueEnum;
use ecu_sim::boot::BootMode;
use ecu_sim::flash::CutVariant;

use crate::demo::{self, DemoOptions};
use crate::exit;

/// Build two signed images, install v1, update to v2 with a power cut mid-install, show the
/// outcome. Exit 0 committed, 1 rolled back, 3 the harness broke.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Bootloader mode: swap-scratch, swap-move, swap-offset, overwrite or direct-xip
    /// (aliases: swap, ab, overwrite-only).
    #[arg(long, default_value = "swap-scratch", value_parser = parse_mode)]
    mode: BootMode,
    /// Where the cut lands relative to its flash operation.
    #[arg(long, value_enum, default_value_t = Variant::Torn)]
    variant: Variant,
    /// Size of the new image's payload, bytes.
    #[arg(long, default_value_t = 48 * 1024)]
    image_size: usize,
    /// Seed for image contents and torn-write randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_mode(s: &str) -> Result<BootMode, String> {
    s.parse()
        .map_err(|e: ecu_sim::boot::UnknownBootMode| e.to_string())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Variant {
    Before,
    Torn,
    After,
}

pub fn run(a: &DemoArgs) -> ExitCode {
    let opts = DemoOptions {
        mode: a.mode,
        variant: match a.variant {
            Variant::Before => CutVariant::Before,
            Variant::Torn => CutVariant::Torn,
            Variant::After => CutVariant::After,
        },
        image_size: a.image_size,
        seed: a.seed,
    };
    match demo::run(&opts, &mut std::io::stdout().lock()) {
        Ok(s) if s.committed => exit::OK.into(),
        Ok(_) => exit::FAILED.into(),
        Err(e) => exit::error(exit::BROKEN, e),
    }
}
