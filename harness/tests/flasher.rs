//! The flasher against the virtual ECU on a real loopback DoIP socket: the ECU task runs
//! in-process at `Pace::Max`, the tester connects over TCP like any other tool would.

use std::collections::BTreeMap;
use std::time::Duration;

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::{Geometry, SimFlash};
use ecu_sim::host::{Host, Pace};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::doip;
use ecu_sim::proto::uds::codec::{BootStatusRecord, did};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};
use ecu_sim::serve::serve_tcp;
use hil::flasher::{FlashEvent, Flasher, FlasherConfig, FlasherError, Outcome, Phase};
use hil::transport::{DoipSettings, DoipTransport};
use hil::uds_client::{ClientError, UdsClient, UdsConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn image(major: u8, counter: u32, behaviour: Behaviour, key: &str, len: usize) -> Vec<u8> {
    ImageBuilder::new(Version::new(major, 0, 0), vec![0xA0 | major; len])
        .security_counter(counter)
        .behaviour(behaviour)
        .sign(&dev_key(key))
}

const HEALTHY: Behaviour = Behaviour::Healthy {
    confirm_after_ms: 100,
};

/// A virtual ECU running v1 (security counter 1), served over DoIP on 127.0.0.1.
struct TestEcu {
    addr: String,
    stop: oneshot::Sender<()>,
    host: JoinHandle<Host<SimFlash>>,
    serve: JoinHandle<()>,
}

impl TestEcu {
    async fn start(server: ServerConfig) -> TestEcu {
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let ecu = Ecu::factory(
            Geometry::uniform(4096, 3 + 2 * 16 + 1, 8).unwrap(),
            BootMode::SwapScratch,
            &image(1, 1, HEALTHY, "oem", 9000),
            BootConfig {
                defect: None,
                max_boot_attempts: 1,
                keys,
            },
            1,
        )
        .unwrap();
        let host = Host {
            ecu,
            server: DiagServer::new(server),
            nvm_path: None,
        };
        let (stop, stop_rx) = oneshot::channel();
        let (handle, host) = host.spawn(Pace::Max, stop_rx);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = tokio::spawn(serve_tcp(listener, handle, doip::Config::default()));
        TestEcu {
            addr,
            stop,
            host,
            serve,
        }
    }

    async fn client(&self, config: UdsConfig) -> UdsClient<DoipTransport> {
        let t = DoipTransport::connect(&self.addr, DoipSettings::default())
            .await
            .unwrap();
        UdsClient::new(t, config)
    }

    /// Stop serving and hand back the ECU for inspection.
    async fn stop(self) -> Ecu<SimFlash> {
        self.serve.abort();
        let _ = self.stop.send(());
        self.host.await.unwrap().ecu
    }
}

/// Healthy test images confirm 100 ms after boot; the timeout leaves room for a busy machine.
fn quick() -> FlasherConfig {
    FlasherConfig {
        confirm_timeout: Duration::from_secs(5),
        boot_timeout: Duration::from_secs(10),
        ..FlasherConfig::default()
    }
}

async fn boot_status(client: &mut UdsClient<DoipTransport>) -> BootStatusRecord {
    BootStatusRecord::decode(&client.read_did(did::BOOT_STATUS).await.unwrap()).unwrap()
}

async fn running_version(client: &mut UdsClient<DoipTransport>) -> String {
    String::from_utf8(client.read_did(did::APPLICATION_VERSION).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_v2_commits_with_the_block_counter_wrapping() {
    // 130-byte blocks: 40 000 bytes take 313 blocks, so the counter wraps FF -> 00.
    let ecu = TestEcu::start(ServerConfig {
        max_block_len: 130,
        ..ServerConfig::default()
    })
    .await;
    let mut client = ecu.client(UdsConfig::default()).await;
    let v2 = image(2, 2, HEALTHY, "oem", 40_000);
    let mut events = Vec::new();
    let report = Flasher::new(quick())
        .run(&mut client, &v2, &mut |e: &FlashEvent| {
            events.push(e.clone())
        })
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Committed {
            version: Version::new(2, 0, 0),
            slot: 0
        }
    );
    assert_eq!(report.programmed.block_data, 128);
    assert_eq!(report.programmed.blocks, v2.len().div_ceil(128) as u32);
    assert!(report.programmed.blocks > 256);
    // The erase covers the image rounded up to whole 4 KiB sectors.
    assert_eq!(
        report.programmed.erased.size,
        (v2.len() as u32).div_ceil(4096) * 4096
    );

    let phases: Vec<&'static str> = events
        .iter()
        .filter_map(|e| match e {
            FlashEvent::Phase(p) => Some(p.name()),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            "session",
            "security access",
            "staging area",
            "erase",
            "request download",
            "transfer data",
            "transfer exit",
            "check memory",
            "check programming dependencies",
            "reset",
            "reboot",
            "confirm",
        ]
    );
    let blocks = events
        .iter()
        .filter(|e| matches!(e, FlashEvent::Block { .. }))
        .count();
    assert_eq!(blocks as u32, report.programmed.blocks);
    assert!(matches!(events.last(), Some(FlashEvent::Done(o)) if o.is_committed()));

    assert_eq!(running_version(&mut client).await, "2.0.0");
    let s = boot_status(&mut client).await;
    assert!(s.confirmed && !s.on_probation, "{s:?}");
    let ecu = ecu.stop().await;
    let running = ecu.running().unwrap();
    assert_eq!(running.image.header.version, Version::new(2, 0, 0));
    assert!(running.confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_is_refused_by_check_04_and_v1_keeps_running() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let mut client = ecu.client(UdsConfig::default()).await;
    let foreign = image(2, 2, HEALTHY, "somebody else", 20_000);
    let e = Flasher::new(quick())
        .run(&mut client, &foreign, &mut |_: &FlashEvent| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FlasherError::CheckFailed {
                code: 0x04,
                check: "unknown key"
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "check programming dependencies: image refused by check 0x04 (unknown key)"
    );
    assert!(e.is_refusal());
    assert_eq!(running_version(&mut client).await, "1.0.0");
    let s = boot_status(&mut client).await;
    assert!(s.confirmed, "{s:?}");
    assert_eq!(s.boot_count, 1, "no reset happened");
    let ecu = ecu.stop().await;
    assert_eq!(
        ecu.running().unwrap().image.header.version,
        Version::new(1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_security_counter_is_refused_as_a_downgrade() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let mut client = ecu.client(UdsConfig::default()).await;
    let old = image(2, 0, HEALTHY, "oem", 20_000);
    let e = Flasher::new(quick())
        .run(&mut client, &old, &mut |_: &FlashEvent| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, FlasherError::CheckFailed { code: 0x05, .. }),
        "{e}"
    );
    assert!(e.to_string().ends_with("check 0x05 (downgrade)"), "{e}");
    ecu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_confirming_image_is_rolled_back_with_the_ecus_reason() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let mut client = ecu.client(UdsConfig::default()).await;
    let v2 = image(2, 2, Behaviour::NeverConfirm, "oem", 20_000);
    let mut phases = Vec::new();
    let config = FlasherConfig {
        confirm_timeout: Duration::from_millis(300),
        ..quick()
    };
    let report = Flasher::new(config)
        .run(&mut client, &v2, &mut |e: &FlashEvent| {
            if let FlashEvent::Phase(p) = e {
                phases.push(p.clone());
            }
        })
        .await
        .unwrap();
    let Outcome::RolledBack {
        running,
        boot_outcome,
        reason,
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(*running, Some(Version::new(1, 0, 0)));
    assert_eq!(*boot_outcome, 4, "reverted");
    assert_eq!(reason, "reverted: not confirmed after 1 boot attempt(s)");
    assert!(phases.contains(&Phase::Revert), "{phases:?}");
    assert_eq!(
        report.outcome.to_string(),
        "ROLLED BACK to v1.0.0 (reverted: reverted: not confirmed after 1 boot attempt(s))"
    );
    assert_eq!(running_version(&mut client).await, "1.0.0");
    ecu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_crashing_on_boot_is_reverted_by_the_bootloader() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let mut client = ecu.client(UdsConfig::default()).await;
    let v2 = image(2, 2, Behaviour::CrashOnBoot, "oem", 20_000);
    let report = Flasher::new(quick())
        .run(&mut client, &v2, &mut |_: &FlashEvent| {})
        .await
        .unwrap();
    let Outcome::RolledBack {
        running, reason, ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(*running, Some(Version::new(1, 0, 0)));
    assert!(reason.starts_with("reverted: "), "{reason}");
    ecu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_with_nrc_35() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let config = UdsConfig {
        secrets: BTreeMap::from([(1, b"not the secret".to_vec())]),
        ..UdsConfig::default()
    };
    let mut client = ecu.client(config).await;
    let v2 = image(2, 2, HEALTHY, "oem", 20_000);
    let e = Flasher::new(quick())
        .run(&mut client, &v2, &mut |_: &FlashEvent| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FlasherError::Uds {
                phase: "security access",
                source: ClientError::Negative {
                    sid: 0x27,
                    nrc: 0x35,
                    name: "invalidKey"
                }
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "security access: service 0x27 refused: nrc 0x35 invalidKey"
    );
    assert!(e.is_refusal());
    ecu.stop().await;
}

/// `hil flash` as a user runs it: exit 0 and a COMMITTED line, exit 1 for a refused image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flash_exit_codes() {
    let ecu = TestEcu::start(ServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("v2.bin");
    std::fs::write(&good, image(2, 2, HEALTHY, "oem", 20_000)).unwrap();
    let foreign = dir.path().join("foreign.bin");
    std::fs::write(&foreign, image(3, 3, HEALTHY, "stranger", 20_000)).unwrap();
    let run = |path: std::path::PathBuf, addr: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
                .args(["flash", "--doip", &addr, "--ecu", "0x0010"])
                .arg(path)
                .output()
                .unwrap()
        })
    };
    let out = run(good, ecu.addr.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("transfer data: 6 blocks of up to 4096 bytes"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("result: COMMITTED v2.0.0 runs from slot 0"),
        "{stdout}"
    );

    let out = run(foreign, ecu.addr.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("result: REFUSED: check programming dependencies: image refused by check 0x04 (unknown key)"),
        "{stdout}"
    );

    let out = run(dir.path().join("missing.bin"), ecu.addr.clone())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    ecu.stop().await;
}
