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
use hil::ota::live::Workers;
use hil::ota::live::{LiveConfig, drive};
use hil::ota::manifest::Manifest;
use hil::ota::sim::{ChunkFate, Hooks, SimEcu, SimWorkers};
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
        let ecu = Ecu::factory(geometry, BootMode::SwapScratch, &v1, boot, 1).unwrap();
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

/// Closes the connection at byte `at` (once) and asks for a chunk to end there.
struct CloseAt {
    at: u64,
    closed: bool,
    chunks: std::sync::Arc<std::sync::Mutex<Vec<(u64, usize)>>>,
}

impl Hooks for CloseAt {
    fn chunk_end(&mut self, offset: u64, _total: u64) -> Option<u64> {
        (offset < self.at).then_some(self.at)
    }
    fn on_chunk(
        &mut self,
        _sim: &mut SimEcu,
        _now_us: u64,
        offset: u64,
        len: usize,
        _total: u64,
        _first: bool,
    ) -> ChunkFate {
        self.chunks.lock().unwrap().push((offset, len));
        if offset == self.at && !self.closed {
            self.closed = true;
            return ChunkFate::Close;
        }
        ChunkFate::Send
    }
}

#[test]
fn the_simulated_download_ends_a_chunk_where_the_hooks_act() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifact.bin");
    let img = image(2, Behaviour::DEFAULT);
    let chunks = std::sync::Arc::default();
    runtime.block_on(async {
        let geometry = Geometry::uniform(4096, 3 + 2 * 32 + 1, 8).unwrap();
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys: Keyring::new(),
        };
        let v1 = image(1, Behaviour::DEFAULT);
        let ecu = Ecu::factory(geometry, BootMode::SwapScratch, &v1, boot, 1).unwrap();
        let hooks = CloseAt {
            at: 30_000,
            closed: false,
            chunks: std::sync::Arc::clone(&chunks),
        };
        let server = DiagServer::new(ServerConfig::default());
        let mut workers = SimWorkers::with_hooks(SimEcu { ecu, server }, hooks, 1_000_000);
        let url = "http://artifacts.sim/v.bin";
        workers.artifacts.insert(url.into(), img.clone());
        let m = manifest(url, &img, 2);
        let mut notes = Vec::new();
        let e = workers
            .download(&m, &dest, &mut |_| {}, &mut |e| notes.push(e.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.reason, "connection closed by the server at byte 30000");
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 30_000);
        workers
            .download(&m, &dest, &mut |_| {}, &mut |e| notes.push(e.clone()))
            .await
            .unwrap();
        assert_eq!(
            notes[1],
            hil::download::DownloadEvent::Started {
                offset: 30_000,
                resumed: true
            }
        );
        assert_eq!(notes[1].to_string(), "resuming at byte 30000");
    });
    assert_eq!(std::fs::read(&dest).unwrap(), img);
    let chunks = chunks.lock().unwrap().clone();
    assert_eq!(
        &chunks[..3],
        &[(0, 16_384), (16_384, 30_000 - 16_384), (30_000, 16_384)]
    );
    assert_eq!(
        chunks[3],
        (30_000, 16_384),
        "the resumed request starts at 30 000"
    );
}

/// The install gate (`hil ota serve`'s cancel) saying no: the programming sequence stops right
/// before check programming dependencies — the ECU is never asked to install — and the driver
/// ends with `Stopped`; the job is not requested, and a later run without the gate commits it.
#[test]
fn an_install_gate_that_says_no_stops_before_the_ecu_is_asked() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use hil::flasher::InstallGate;
    use hil::ota::error::OtaError;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys,
        };
        let geometry = Geometry::uniform(4096, 3 + 2 * 32 + 1, 8).unwrap();
        let v1 = image(1, Behaviour::DEFAULT);
        let ecu = Ecu::factory(geometry, BootMode::SwapScratch, &v1, boot, 1).unwrap();
        let server = DiagServer::new(ServerConfig::default());
        let mut workers = SimWorkers::new(SimEcu { ecu, server }, 1_000_000);
        let img = image(
            2,
            Behaviour::Healthy {
                confirm_after_ms: 300,
            },
        );
        let url = "http://artifacts.sim/v.bin";
        workers.artifacts.insert(url.into(), img.clone());
        let store = Store::open(dir.path()).unwrap();
        let id = store.submit(manifest(url, &img, 2), 0).unwrap().id;
        let asked = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&asked);
        let mut config = LiveConfig {
            flasher: FlasherConfig {
                confirm_timeout: Duration::from_secs(5),
                ..FlasherConfig::default()
            },
            install_gate: Some(InstallGate(Arc::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                Err("the job is being cancelled".into())
            }))),
            ..LiveConfig::default()
        };
        let e = drive(&store, &id, &config, &workers, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, OtaError::Stopped { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "stopped before the ecu was asked to install the image: the job is being cancelled"
        );
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        let job = store.load(&id).unwrap();
        assert_eq!(job.state.to_string(), "transferring: check");
        assert_eq!(
            job.requested_at_boot, None,
            "the request was never recorded"
        );
        assert!(!job.applied);
        // Without the gate, the job resumes: the ECU says nothing is requested, so it
        // programs again and commits.
        config.install_gate = None;
        let job = drive(&store, &id, &config, &workers, |_| {}).await.unwrap();
        assert_eq!(job.state, State::Committed);
        assert_eq!(job.attempts["transfer"], 2);
    });
}
