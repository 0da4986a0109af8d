//! The verbs that work on the flash file directly: `image`, `provision`, `stage`, `boot`,
//! `status` (no endpoint, no real time).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use super::ecu::EcuArgs;
use crate::boot::BootDecision;
use crate::ecu::Ecu;
use crate::exit;
use crate::factory;
use crate::flash::FileFlash;
use crate::image::{Behaviour, ImageBuilder, Version, dev_key};

/// `ecu-sim image`: build a signed image with a development key.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[arg(long)]
    version: Version,
    #[arg(long)]
    out: PathBuf,
    /// Payload size in bytes (deterministic filler).
    #[arg(long, default_value_t = 32 * 1024)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    security_counter: u32,
    #[arg(long, value_enum, default_value_t = Kind::Healthy)]
    behaviour: Kind,
    #[arg(long, default_value = "oem")]
    sign_with: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Healthy,
    CrashOnBoot,
    Hang,
    NeverConfirm,
    NoDiagnostics,
}

/// What to do with the ECU of the flash file.
#[derive(Debug)]
pub enum Offline {
    Provision(PathBuf),
    Stage { image: PathBuf, permanent: bool },
    Boot { run_ms: u64 },
    Status,
}

pub fn image(a: &ImageArgs) -> Result<exit::Code> {
    let behaviour = match a.behaviour {
        Kind::Healthy => Behaviour::DEFAULT,
        Kind::CrashOnBoot => Behaviour::CrashOnBoot,
        Kind::Hang => Behaviour::Hang { watchdog_ms: 1000 },
        Kind::NeverConfirm => Behaviour::NeverConfirm,
        Kind::NoDiagnostics => Behaviour::NoDiagnostics,
    };
    let payload = (0..a.size).map(|i| (i as u8) ^ a.version.major).collect();
    let image = ImageBuilder::new(a.version, payload)
        .security_counter(a.security_counter)
        .behaviour(behaviour)
        .sign(&dev_key(&a.sign_with));
    std::fs::write(&a.out, &image).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{}: {}, {} bytes, signed with dev key {:?}",
        a.out.display(),
        a.version,
        image.len(),
        a.sign_with
    );
    Ok(exit::OK)
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// Runs `what` on the ECU of `--flash`, then prints its events and both slots. Exit 1 when
/// the ECU has no bootable image.
pub fn run(ecu_args: &EcuArgs, what: &Offline) -> Result<exit::Code> {
    let (geometry, config) = ecu_args.config()?;
    let path = &ecu_args.flash;
    if let Offline::Provision(image) = what {
        let info = factory::install(
            path,
            &geometry,
            &config.layout,
            &config.boot.keys,
            &read(image)?,
        )
        .with_context(|| format!("provisioning {}", image.display()))?;
        println!(
            "provisioned {} ({}) into the primary slot of {}",
            image.display(),
            info.header.version,
            path.display()
        );
        return Ok(exit::OK);
    }
    let flash = FileFlash::open(path, geometry, 0)?;
    let mut ecu = Ecu::new(config, flash);
    match what {
        Offline::Status | Offline::Provision(_) => {}
        Offline::Stage { image, permanent } => {
            ecu.power_on()?;
            if ecu.running().is_none() {
                bail!("no firmware runs to stage an update");
            }
            ecu.stage_update(&read(image)?, *permanent)?;
        }
        Offline::Boot { run_ms } => {
            ecu.power_on()?;
            ecu.advance(run_ms * 1000)?;
        }
    }
    for e in ecu.drain_events() {
        println!("{e}");
    }
    let status = ecu.status()?;
    for s in &status.slots {
        let t = &s.trailer;
        println!(
            "{:<9} version {:<10} {}  trailer: magic={} swap={:?} image_ok={:?} copy_done={:?} attempts={}",
            s.slot.to_string(),
            s.version.map_or("-".to_string(), |v| v.to_string()),
            s.invalid
                .as_deref()
                .map_or("valid".to_string(), |e| format!("invalid ({e})")),
            t.magic,
            t.swap_type,
            t.image_ok,
            t.copy_done,
            t.attempts
        );
    }
    println!("stored security counter: {}", status.stored_counter);
    if let Some(r) = &status.running {
        println!(
            "running: {} from {}{}",
            r.image.header.version,
            r.slot,
            if r.test && !r.confirmed {
                " (test, not confirmed)"
            } else {
                ""
            }
        );
    }
    Ok(match status.last_decision {
        Some(BootDecision::NoBootableImage { .. }) => exit::FAILED,
        _ => exit::OK,
    })
}
