//! The OTA job in simulated mode: the same manager and driver as live, an in-process ECU,
//! virtual time. Jobs finish in milliseconds of wall time, report realistic simulated
//! durations, and the same inputs give the same job document, timestamps included.

use std::time::Duration;

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::Geometry;
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};
use hil::flasher::FlasherConfig;
use hil::ota::job::{Job, State};
use hil::ota::live::{LiveConfig, drive};
use hil::ota::manifest::Manifest;
use hil::ota::sim::{SimEcu, SimWorkers};
use hil::ota::store::Store;
use sha2::{Digest, Sha256};

fn image(major: u8, behaviour: Behaviour) -> Vec<u8> {
    ImageBuilder::new(Version::new(major, 0, 0), vec![major; 90_000])
        .security_counter(u32::from(major))
        .behaviour(behaviour)
        .sign(&dev_key("oem"))
}

fn manifest(url: &str, img: &[u8], major: u8) -> Manifest {
    let sha: String = Sha256::digest(img)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Manifest::parse(
        &format!(
            "artifact: {{url: '{url}', size: {}, sha256: '{sha}'}}\nversion: {major}.0.0\ntarget: {{transport: doip, host: sim}}\n",
            img.len()
        ),
        "sim",
    )
    .unwrap()
}

/// Run one job for `img` in simulated mode on a fresh ECU; the job and the wall time.
fn run(img: Vec<u8>, major: u8) -> (Job, Duration, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wall = std::time::Instant::now();
    let job = runtime.block_on(async {
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys,
        };
        let geometry = Geometry::uniform(4096, 3 + 2 * 32 + 1, 8).unwrap();
        let v1 = image(1, Behaviour::DEFAULT);
        let ecu = Ecu::factory(geometry, BootMode::Swap, &v1, boot, 1).unwrap();
        let server = DiagServer::new(ServerConfig::default());
        let mut workers = SimWorkers::new(SimEcu { ecu, server }, 1_000_000);
        let url = "http://artifacts.sim/v.bin";
        workers.artifacts.insert(url.into(), img.clone());
        let store = Store::open(dir.path()).unwrap();
        let id = store.submit(manifest(url, &img, major), 0).unwrap().id;
        let config = LiveConfig {
            flasher: FlasherConfig {
                confirm_timeout: Duration::from_secs(5),
                ..FlasherConfig::default()
            },
            ..LiveConfig::default()
        };
        drive(&store, &id, &config, &workers, |_| {}).await.unwrap()
    });
    let text =
        std::fs::read_to_string(dir.path().join("jobs").join(format!("{}.json", job.id))).unwrap();
    (job, wall.elapsed(), text)
}

#[test]
fn a_simulated_update_commits_in_virtual_time_and_is_deterministic() {
    let img = image(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 300,
        },
    );
    let (job, wall, text) = run(img.clone(), 2);
    assert_eq!(job.state, State::Committed, "{text}");
    let took = job.history.last().unwrap().at_us - job.history[0].at_us;
    // 90 KB at 1 MB/s, erasing 31 sectors (~1.5 s), the swap, the confirm: seconds, simulated.
    assert!(took > 2_000_000, "simulated {took} µs");
    assert!(
        wall < Duration::from_secs(took / 1_000_000),
        "wall {wall:?} for {took} µs"
    );
    println!(
        "simulated update: {:.2} s simulated in {:?} wall; {} transitions",
        took as f64 / 1e6,
        wall,
        job.history.len()
    );
    let (_, _, again) = run(img, 2);
    assert_eq!(text, again, "same inputs, same job document");
}

#[test]
fn a_simulated_never_confirming_update_rolls_back() {
    let (job, _, text) = run(image(3, Behaviour::NeverConfirm), 3);
    assert_eq!(
        job.state,
        State::RolledBack {
            reason: "reverted: not confirmed after 1 boot attempt(s)".into()
        },
        "{text}"
    );
}
