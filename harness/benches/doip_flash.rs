//! Benchmark (not a timed test): flashing a 4 MiB image over UDS on DoIP on loopback.
//!
//! `cargo bench -p hil --bench doip_flash` prints a markdown table: our flasher's programming
//! time (session → check dependencies, without the reset) against udsoncan + doipclient
//! (`tests/interop/flash_doip.py`, its `flash_seconds`) on the same in-process ECU at
//! `Pace::Max`, for two maxNumberOfBlockLength values, and how much of it the ECU itself takes
//! (the same request sequence straight into `DiagServer::handle_request`, no sockets).
//!
//! The geometry has 64 KiB journal sectors: with uniform 4 KiB sectors the swap journal of a
//! 1030-sector slot does not fit (`LayoutError::StatusTooSmall`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::{Geometry, SimFlash};
use ecu_sim::host::{Host, Pace};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::doip;
use ecu_sim::proto::uds::codec::{self, MemoryRange, StagingRecord};
use ecu_sim::proto::uds::security::{compute_key, default_secrets};
use ecu_sim::proto::uds::server::{Addressing, DiagServer, ServerConfig};
use ecu_sim::serve::serve_tcp;
use hil::flasher::{FlashEvent, Flasher, FlasherConfig, Outcome};
use hil::transport::{DoipSettings, DoipTransport};
use hil::uds_client::{UdsClient, UdsConfig};
use sha2::{Digest, Sha256};

/// 4 KiB sectors; slots of 1030 sectors hold a 4 MiB image.
const SLOT_SECTORS: usize = 1030;
/// A swap of 1030 sectors needs 3105 journal records: 64 KiB journal sectors hold 4096.
const JOURNAL_SECTOR: u32 = 64 * 1024;
const IMAGE_PAYLOAD: usize = 4 * 1024 * 1024 - 1024;
const RUNS: usize = 3;

fn image(major: u8, payload: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..payload).map(|i| (i * 31 + 7) as u8 ^ major).collect();
    ImageBuilder::new(Version::new(major, 0, 0), body)
        .security_counter(u32::from(major))
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 1,
        })
        .sign(&dev_key("oem"))
}

/// Journal ×2 (64 KiB), counter, two slots of 1030 × 4 KiB, scratch.
fn geometry() -> Geometry {
    let mut sizes = vec![JOURNAL_SECTOR, JOURNAL_SECTOR, 4096];
    sizes.extend(std::iter::repeat_n(4096, 2 * SLOT_SECTORS + 1));
    Geometry::from_sizes("bench", &sizes, 8).unwrap()
}

fn ecu() -> Ecu<SimFlash> {
    let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
    let boot = BootConfig {
        defect: None,
        max_boot_attempts: 1,
        keys,
    };
    Ecu::factory(
        geometry(),
        BootMode::SwapScratch,
        &image(1, 16 * 1024),
        boot,
        1,
    )
    .unwrap()
}

fn server(max_block_len: u32) -> DiagServer {
    DiagServer::new(ServerConfig {
        max_block_len,
        ..ServerConfig::default()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Our flasher, `RUNS` times (v2, v3, …): programming seconds of each.
async fn ours(addr: &str, images: &[Vec<u8>]) -> Vec<f64> {
    let transport = DoipTransport::connect(addr, DoipSettings::default())
        .await
        .unwrap();
    let mut client = UdsClient::new(transport, UdsConfig::default());
    let flasher = Flasher::new(FlasherConfig::default());
    let mut out = Vec::new();
    for img in images {
        let report = flasher
            .run(&mut client, img, &mut |_: &FlashEvent| {})
            .await
            .unwrap();
        assert!(
            matches!(report.outcome, Outcome::Committed { .. }),
            "{}",
            report.outcome
        );
        out.push(report.programmed.elapsed.as_secs_f64());
    }
    out
}

/// `flash_doip.py`'s `flash_seconds`, or why there is none.
fn python(root: &Path, port: u16, image: &Path) -> Result<f64, String> {
    let py = root.join(".venv/bin/python");
    if !py.exists() {
        return Err(format!("{} missing", py.display()));
    }
    let out = Command::new(py)
        .arg(root.join("tests/interop/flash_doip.py"))
        .args(["--port", &port.to_string(), "--boot-wait", "0.2", "--image"])
        .arg(image)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {stdout}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let key = "\"flash_seconds\": ";
    let at = stdout
        .find(key)
        .ok_or_else(|| format!("no {key}in {stdout}"))?
        + key.len();
    let num: String = stdout[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().map_err(|e| format!("{num:?}: {e}"))
}

/// Wall time the ECU needs for the programming sequence alone: the same requests straight
/// into the server, simulated clock following the responses. Returns (total, erase,
/// transfer, checks) seconds.
fn ecu_alone(max_block_len: u32, img: &[u8]) -> (f64, f64, f64, f64) {
    let mut ecu = ecu();
    let mut server = server(max_block_len);
    let mut now = ecu.now_us();
    let mut busy = Duration::ZERO;
    let mut ask = |ecu: &mut Ecu<SimFlash>, req: &[u8]| -> Vec<u8> {
        let t = Instant::now();
        server.handle_request(ecu, now, req, Addressing::Physical);
        busy += t.elapsed();
        let last = std::iter::from_fn(|| server.poll_transmit())
            .last()
            .unwrap();
        now = now.max(last.at_us);
        last.bytes
    };
    ask(&mut ecu, &[0x10, 0x02]);
    let seed = ask(&mut ecu, &[0x27, 0x01]);
    let mut req = vec![0x27, 0x02];
    req.extend_from_slice(&compute_key(&default_secrets()[&1], &seed[2..]));
    assert_eq!(ask(&mut ecu, &req), [0x67, 0x02]);
    let st = StagingRecord::decode(&ask(&mut ecu, &[0x22, 0xFD, 0x03])[3..]).unwrap();
    let t = Instant::now();
    let mut erase = vec![0x31, 0x01, 0xFF, 0x00];
    erase.extend_from_slice(&codec::encode_memory(MemoryRange {
        address: st.address,
        size: (img.len() as u32).div_ceil(st.erase_sector) * st.erase_sector,
    }));
    assert_eq!(ask(&mut ecu, &erase), [0x71, 0x01, 0xFF, 0x00, 0x00]);
    let erase_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut dl = vec![0x34, 0x00];
    dl.extend_from_slice(&codec::encode_memory(MemoryRange {
        address: st.address,
        size: img.len() as u32,
    }));
    assert_eq!(ask(&mut ecu, &dl)[0], 0x74);
    for (i, chunk) in img.chunks(max_block_len as usize - 2).enumerate() {
        let seq = (i + 1) as u8;
        let mut req = vec![0x36, seq];
        req.extend_from_slice(chunk);
        assert_eq!(ask(&mut ecu, &req), [0x76, seq]);
    }
    assert_eq!(ask(&mut ecu, &[0x37]), [0x77]);
    let transfer_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut check = vec![0x31, 0x01, 0x02, 0x02];
    check.extend_from_slice(&Sha256::digest(img));
    assert_eq!(ask(&mut ecu, &check), [0x71, 0x01, 0x02, 0x02, 0x00]);
    assert_eq!(
        ask(&mut ecu, &[0x31, 0x01, 0xFF, 0x01]),
        [0x71, 0x01, 0xFF, 0x01, 0x00]
    );
    let check_s = t.elapsed().as_secs_f64();
    (busy.as_secs_f64(), erase_s, transfer_s, check_s)
}

struct Row {
    block: u32,
    ours: Vec<f64>,
    python: Result<Vec<f64>, String>,
    alone: (f64, f64, f64, f64),
}

async fn measure(root: &Path, max_block_len: u32, dir: &Path) -> Row {
    let host = Host {
        ecu: ecu(),
        server: server(max_block_len),
        nvm_path: None,
    };
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let (handle, host) = host.spawn(Pace::Max, stop_rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(serve_tcp(listener, handle, doip::Config::default()));

    let images: Vec<Vec<u8>> = (2..2 + RUNS as u8)
        .map(|v| image(v, IMAGE_PAYLOAD))
        .collect();
    let ours = ours(&addr.to_string(), &images).await;

    let mut python_runs = Vec::new();
    let mut python_err = None;
    for v in 2 + RUNS as u8..2 + 2 * RUNS as u8 {
        let path: PathBuf = dir.join(format!("v{v}.bin"));
        std::fs::write(&path, image(v, IMAGE_PAYLOAD)).unwrap();
        let root = root.to_path_buf();
        let r = tokio::task::spawn_blocking(move || python(&root, addr.port(), &path))
            .await
            .unwrap();
        match r {
            Ok(s) => python_runs.push(s),
            Err(e) => {
                python_err = Some(e);
                break;
            }
        }
    }
    serve.abort();
    let _ = stop.send(());
    let _ = host.await;
    Row {
        block: max_block_len,
        ours,
        python: python_err.map_or(Ok(python_runs), Err),
        alone: ecu_alone(max_block_len, &images[0]),
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = std::env::temp_dir().join(format!("hil-doip-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The default of `ecu-sim serve`, and the largest DoIP takes (0x10000 bytes of user data).
    let blocks = [
        16 * 1024 + 2,
        doip::Config::default().max_diagnostic_data as u32,
    ];
    let rows: Vec<Row> = blocks
        .iter()
        .map(|&b| runtime.block_on(measure(root, b, &dir)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);

    let size = image(2, IMAGE_PAYLOAD).len();
    let mb = size as f64 / 1e6;
    let rate = |s: f64| format!("{s:.3} s ({:.1} MB/s)", mb / s);
    let runs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "image: {size} bytes; ECU in-process at Pace::Max, DoIP on 127.0.0.1; median of {RUNS}"
    );
    println!();
    println!("| measure | {} |", {
        rows.iter()
            .map(|r| format!("maxNumberOfBlockLength {}", r.block))
            .collect::<Vec<_>>()
            .join(" | ")
    });
    println!("|---|{}", "---|".repeat(rows.len()));
    let line = |name: &str, f: &dyn Fn(&Row) -> String| {
        let cells: Vec<String> = rows.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    line("hil flasher: session → check dependencies", &|r| {
        rate(median(r.ours.clone()))
    });
    line("… runs (s)", &|r| runs(&r.ours));
    line(
        "udsoncan + doipclient: flash_seconds",
        &|r| match &r.python {
            Ok(v) if !v.is_empty() => rate(median(v.clone())),
            Ok(_) => "n/a".into(),
            Err(e) => format!("n/a ({})", e.lines().next().unwrap_or_default()),
        },
    );
    line("… runs (s)", &|r| match &r.python {
        Ok(v) => runs(v),
        Err(_) => "-".into(),
    });
    line("speed-up (python ÷ hil)", &|r| match &r.python {
        Ok(v) if !v.is_empty() => format!("{:.1}×", median(v.clone()) / median(r.ours.clone())),
        _ => "n/a".into(),
    });
    line(
        "ECU alone: the same requests into DiagServer::handle_request",
        &|r| {
            let (busy, ..) = r.alone;
            format!(
                "{busy:.3} s ({:.0} % of hil's time)",
                busy / median(r.ours.clone()) * 100.0
            )
        },
    );
    line(
        "… of which erase / download+transfer+exit / checks",
        &|r| {
            let (_, e, t, c) = r.alone;
            format!("{e:.3} / {t:.3} / {c:.3} s")
        },
    );
}
