//! Building a scenario run in the simulation: the images (seeded), the provisioned and booted
//! virtual ECU, the world, the manager's configuration, the runtimes (virtual or real time)
//! and the ticker that lets the world's time pass. Shared by the virtual-time runner and the
//! external-client runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::boot::{BootConfig, Defect};
use ecu_sim::ecu::Ecu;
use ecu_sim::image::{self, Behaviour, EncKey, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::outcome::{EncryptProblem, RunError};
use super::schema::{
    ArtifactSwap, BehaviourSpec, Client, DefectSpec, ImageSpec, ManagerSpec, Scenario, Signing,
};
use super::world::{KnownImage, World};
use crate::flasher::FlasherConfig;
use crate::ota::live::LiveConfig;
use crate::ota::manager::{Limits, Manager};
use crate::ota::manifest::Manifest;
use crate::ota::sim::{SimEcu, SimWorld};

/// The URL the simulated artifact server serves the update at.
pub const ARTIFACT_URL: &str = "http://artifacts.sim/update.bin";

/// A one-thread runtime on a paused clock: every wait costs no wall time (virtual time).
pub(super) fn virtual_time() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(RunError::Runtime)
}

/// A one-thread runtime on the wall clock (external clients, benches: real processes and
/// real ECUs do not run on a paused clock).
pub fn real_time() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

/// A scratch directory for a simulated job store: in memory (`/dev/shm`) where there is one,
/// as simulations write thousands of small files that no disk needs to see.
pub fn scratch_dir() -> Result<tempfile::TempDir, RunError> {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("hil-sim-")
            .tempdir_in(shm)
            .or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    };
    dir.map_err(RunError::Scratch)
}

pub(super) fn behaviour(b: BehaviourSpec) -> Behaviour {
    match b {
        BehaviourSpec::Healthy { confirm_after_ms } => Behaviour::Healthy { confirm_after_ms },
        BehaviourSpec::CrashOnBoot => Behaviour::CrashOnBoot,
        BehaviourSpec::Hang { watchdog_ms } => Behaviour::Hang { watchdog_ms },
        BehaviourSpec::NeverConfirm => Behaviour::NeverConfirm,
    }
}

/// Build an image: the payload is seeded by the scenario's seed and the version, so the same
/// file gives the same bytes. An image with `encrypt` is encrypted for `enc_key` (the
/// scenario's `ecu.enc_key`) with an AES key drawn from the same seed.
pub fn build_image(
    spec: &ImageSpec,
    seed: u64,
    what: &'static str,
    enc_key: Option<&EncKey>,
) -> Result<Vec<u8>, RunError> {
    let version: Version = spec.version.parse().map_err(|source| RunError::Version {
        what,
        version: spec.version.clone(),
        source,
    })?;
    let mut h = [0u8; 8];
    h.copy_from_slice(&Sha256::digest(spec.version.as_bytes())[..8]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from_le_bytes(h));
    let mut payload = vec![0u8; spec.size];
    rng.fill_bytes(&mut payload);
    let mut builder = ImageBuilder::new(version, payload)
        .security_counter(spec.security_counter.unwrap_or(u32::from(version.major)))
        .behaviour(behaviour(spec.behaviour));
    let encrypt = match spec.encrypt {
        None => None,
        Some(e) => {
            let key = enc_key.ok_or(RunError::Encrypt {
                what,
                problem: EncryptProblem::NoKey,
            })?;
            let aes = e.aes_key_size().ok_or(RunError::Encrypt {
                what,
                problem: EncryptProblem::AesBits(e.aes),
            })?;
            builder = builder.encrypted(aes);
            Some((key, e))
        }
    };
    let mut bytes = match &spec.signing {
        Signing::Key(name) => builder.sign(&dev_key(name)),
        Signing::Unsigned => builder.build_unsigned(),
    };
    if let Some((key, e)) = encrypt {
        let options = image::EncryptOptions {
            hmac_sha512: e.hmac_sha512,
        };
        bytes =
            image::encrypt_image(&bytes, &key.public(), options, &mut rng).map_err(|source| {
                RunError::Encrypt {
                    what,
                    problem: EncryptProblem::Image(source),
                }
            })?;
    }
    if spec.tampered {
        let header = image::parse(&bytes)
            .map_err(|source| RunError::Image { what, source })?
            .header
            .hdr_size as usize;
        let at = header + spec.size / 2;
        if let Some(b) = bytes.get_mut(at) {
            *b ^= 0x01;
        }
    }
    Ok(bytes)
}

/// The images a `swap_artifact` action can serve instead of the update.
pub fn swaps(
    update: &ImageSpec,
    seed: u64,
    enc_key: Option<&EncKey>,
) -> Result<Vec<(ArtifactSwap, Vec<u8>)>, RunError> {
    let tampered = ImageSpec {
        tampered: true,
        ..update.clone()
    };
    let unsigned = ImageSpec {
        signing: Signing::Unsigned,
        ..update.clone()
    };
    let v: Version = update.version.parse().map_err(|source| RunError::Version {
        what: "update",
        version: update.version.clone(),
        source,
    })?;
    let older = ImageSpec {
        version: Version::new(v.major.saturating_sub(1), v.minor, v.revision).to_string(),
        security_counter: Some(u32::from(v.major.saturating_sub(1))),
        ..update.clone()
    };
    Ok(vec![
        (
            ArtifactSwap::Tampered,
            build_image(&tampered, seed, "tampered", enc_key)?,
        ),
        (
            ArtifactSwap::Unsigned,
            build_image(&unsigned, seed, "unsigned", enc_key)?,
        ),
        (
            ArtifactSwap::Downgraded,
            build_image(&older, seed, "downgraded", enc_key)?,
        ),
    ])
}

pub(crate) fn manifest(update: &[u8], version: &str) -> Manifest {
    let sha: String = Sha256::digest(update)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "artifact: {{url: '{ARTIFACT_URL}', size: {}, sha256: '{sha}'}}\nversion: {version}\ntarget: {{transport: doip, host: sim}}\n",
        update.len()
    );
    Manifest::parse(&text, "scenario").expect("a manifest the runner writes parses")
}

/// What a run is made of before it starts.
#[derive(Debug)]
pub struct Prepared {
    pub sim: SimEcu,
    pub world: World,
    pub update: Vec<u8>,
    pub config: LiveConfig,
}

/// Build the images, the ECU (provisioned and booted) and the world of `scenario`.
pub fn prepare(scenario: &Arc<Scenario>) -> Result<Prepared, RunError> {
    let s = scenario;
    let enc_key = s
        .ecu
        .load_enc_key(s.dir.as_deref())
        .map_err(RunError::EncKey)?;
    let installed = build_image(&s.installed, s.seed, "installed", None)?;
    let update = build_image(&s.update, s.seed, "update", enc_key.as_ref())?;
    let mut keys = Keyring::new();
    for k in &s.ecu.keys {
        keys = keys.with_key(dev_key(k).verifying_key());
    }
    let verifies = |b: &[u8]| image::verify(b, &keys, 0).is_ok();
    // What boots is what the bootloader installs: an encrypted update decrypted (a tampered
    // one decrypts to bytes that do not verify; one that does not decrypt is never installed).
    let installs = match (&s.update.encrypt, &enc_key) {
        (Some(_), Some(key)) => {
            image::decrypt_image(&update, key).unwrap_or_else(|_| update.clone())
        }
        _ => update.clone(),
    };
    let images = vec![
        KnownImage {
            name: "installed",
            verifies: verifies(&installed),
            sha256: Sha256::digest(&installed).into(),
            bytes: installed.clone(),
        },
        KnownImage {
            name: "update",
            verifies: verifies(&installs),
            sha256: Sha256::digest(&installs).into(),
            bytes: installs,
        },
    ];
    let mode = s.ecu.mode();
    let geometry = s.ecu.geometry().map_err(RunError::Geometry)?;
    let boot = BootConfig {
        defect: s.ecu.bootloader_defect.map(|d| match d {
            DefectSpec::JournalBeforeCopy => Defect::JournalBeforeCopy,
            DefectSpec::NoStepRecords => Defect::NoStepRecords,
        }),
        max_boot_attempts: s.ecu.max_boot_attempts,
        keys,
    };
    let swapped = swaps(&s.update, s.seed, enc_key.as_ref())?;
    let ecu = Ecu::factory_with_enc_key(geometry, mode, &installed, boot, enc_key, s.seed)
        .map_err(RunError::Provision)?;
    let layout = ecu.config().layout.clone();
    let server = DiagServer::new(ServerConfig {
        max_block_len: s.ecu.block_len,
        rng_seed: s.seed,
        ..ServerConfig::default()
    });
    let mut world = World::new(Arc::clone(scenario), images, layout);
    world.swaps = Arc::new(swapped);
    let mut sim = SimEcu { ecu, server };
    world.arm_flash_faults(&mut sim);
    world.observe(&mut sim, 0);
    let m = match &s.client {
        Client::Manager(m) => m.clone(),
        // (An external client runs without the manager: its limits are unused.)
        Client::External(_) => ManagerSpec::default(),
    };
    let config = live_config(&m);
    Ok(Prepared {
        sim,
        world,
        update,
        config,
    })
}

/// The manager's configuration for a scenario's `manager:` settings (in simulation and on a
/// bench alike).
pub fn live_config(m: &ManagerSpec) -> LiveConfig {
    LiveConfig {
        manager: Manager {
            limits: Limits {
                download_attempts: m.download_attempts,
                transfer_attempts: m.transfer_attempts,
            },
        },
        flasher: FlasherConfig {
            confirm_timeout: Duration::from_secs_f64(m.confirm_timeout_s),
            boot_timeout: Duration::from_secs_f64(m.boot_timeout_s),
            ..FlasherConfig::default()
        },
        ..LiveConfig::default()
    }
}

/// The ticker: power restores, time triggers, the firmware's own timers. Runs until aborted.
pub fn spawn_ticker(
    shared: Arc<Mutex<SimWorld<World>>>,
    woken: Arc<tokio::sync::Notify>,
    epoch: tokio::time::Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wake = {
                let w = lock(&shared);
                let now = us(epoch.elapsed());
                w.hooks.next_wake(&w.sim, now)
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(epoch + Duration::from_micros(wake)) => {}
                () = woken.notified() => {}
            }
            let mut w = lock(&shared);
            let SimWorld { sim, hooks } = &mut *w;
            hooks.tick(sim, us(epoch.elapsed()));
        }
    })
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}
