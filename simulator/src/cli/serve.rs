//! `ecu-sim serve`: the ECU of a state directory on its endpoints, in real time, until
//! SIGINT/SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ecu::EcuArgs;
use crate::ecu::Ecu;
use crate::ecu::EcuConfig;
use crate::exit;
use crate::factory;
use crate::flash::FileFlash;
use crate::flash::Geometry;
use crate::host::{EcuHandle, Host, Pace};
use crate::image::{Behaviour, ImageBuilder, Version, dev_key};
use crate::proto::doip;
use crate::proto::relay::{self, RelayBoard};
use crate::proto::uds::server::{DiagServer, ServerConfig};
use crate::proto::uds_can::CanIds;
use crate::serve::{DoipEndpoint, FlowControl, ServeConfig, Served};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TCP (and UDP) address for DoIP; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:13400")]
    doip: std::net::SocketAddr,
    /// Also put the ECU on a CAN bus behind an slcan adapter on a new pseudo-terminal (its path
    /// is printed): any slcan tool can program the ECU through it (ISO-TP, ids 0x7E0/0x7E8,
    /// functional 0x7DF).
    #[arg(long)]
    slcan_pty: bool,
    /// Also put the ECU on a Linux CAN interface (SocketCAN, e.g. can0 or vcan0): ISO-TP on
    /// 0x7E0/0x7E8, functional 0x7DF, frames padded with 0xAA.
    #[arg(long, value_name = "IFACE")]
    socketcan: Option<String>,
    /// With --socketcan: CAN FD frames (up to 64 bytes, BRS) on an FD interface (MTU 72).
    #[arg(long, requires = "socketcan")]
    socketcan_fd: bool,
    /// The flow control the ECU's ISO-TP asks senders for on CAN (--slcan-pty, --socketcan):
    /// block size and STmin byte, BS:STMIN (e.g. 16:1; STmin 0-127 ms or 0xF1-0xF9 for
    /// 100-900 µs). Default: 0:0 on slcan, 16:0 on SocketCAN.
    #[arg(long, value_name = "BS:STMIN")]
    can_flow_control: Option<FlowControl>,
    /// Also put the ECU's power supply behind a USB relay board on a new pseudo-terminal (its
    /// path is printed): writing the on or off command to it switches the ECU on (it boots) or
    /// off (it answers nothing), as a bench's serial relay does. The ECU starts powered.
    #[arg(long)]
    relay_pty: bool,
    /// What switches the relay on: hex bytes (the default is an LCUS-1 board's channel 1).
    #[arg(
        long,
        value_name = "HEX",
        default_value = "A0 01 01 A2",
        requires = "relay_pty"
    )]
    relay_on: HexBytes,
    /// What switches the relay off: hex bytes.
    #[arg(
        long,
        value_name = "HEX",
        default_value = "A0 01 00 A1",
        requires = "relay_pty"
    )]
    relay_off: HexBytes,
    /// Directory for flash.bin and nvm.txt (created if missing).
    #[arg(long, default_value = "ecu-state")]
    state: PathBuf,
    /// Image installed when the state directory has no flash yet (default: a built-in v1.0.0
    /// signed with the "oem" development key).
    #[arg(long)]
    factory: Option<PathBuf>,
    /// Simulated seconds per wall-clock second, or `max` (never wait for simulated work).
    #[arg(long, default_value = "1")]
    speed: Pace,
    /// DoIP logical address of the ECU (hex with 0x, or decimal).
    #[arg(long, default_value = "0x0010", value_parser = parse_u16)]
    logical_address: u16,
    /// maxNumberOfBlockLength announced in RequestDownload responses.
    #[arg(long, default_value_t = 16 * 1024 + 2)]
    block_len: u32,
    /// Seed for security-access seeds (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Serve a vehicle instead of one ECU: a DoIP gateway on --doip routing by logical address
    /// to the ECUs of this vehicle file, each with its state in STATE/NAME (the file's fields
    /// replace the ECU options).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["slcan_pty", "socketcan", "relay_pty", "factory", "logical_address", "block_len", "seed"]
    )]
    vehicle: Option<PathBuf>,
}

/// Bytes written as hex on the command line, e.g. `"A0 01 01 A2"`.
#[derive(Clone, Debug)]
struct HexBytes(Vec<u8>);

impl std::str::FromStr for HexBytes {
    type Err = relay::HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        relay::parse_bytes(s).map(HexBytes)
    }
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

/// One ECU to host: where its state lives and what it is.
pub(super) struct HostSpec<'a> {
    pub state: &'a Path,
    /// Installed into a new flash (default: the built-in v1.0.0 signed with "oem").
    pub factory: Option<&'a Path>,
    pub geometry: Geometry,
    pub config: EcuConfig,
    pub block_len: u32,
    /// Security-access seeds (default: from the clock).
    pub seed: Option<u64>,
    /// The VIN at first start (default: the UDS server's).
    pub vin: Option<[u8; 17]>,
}

/// The host of a state directory: its flash (the factory image installed into a new one),
/// its NVM, powered on.
pub(super) fn host(spec: HostSpec<'_>) -> Result<Host<FileFlash>> {
    let HostSpec {
        state,
        factory,
        geometry,
        config,
        block_len,
        seed,
        vin,
    } = spec;
    if let Some(key) = &config.enc_key {
        tracing::info!("image decryption key: {}", key.family());
    }
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let flash_path = state.join("flash.bin");
    // flash.bin appears only complete (crate::factory): a kill during the first start leaves
    // no flash.bin, and the next start provisions again.
    if !flash_path.exists() {
        let image = match factory {
            Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            None => ImageBuilder::new(Version::new(1, 0, 0), vec![0x5A; 16 * 1024])
                .behaviour(Behaviour::DEFAULT)
                .sign(&dev_key("oem")),
        };
        let info = factory::install(
            &flash_path,
            &geometry,
            &config.layout,
            &config.boot.keys,
            &image,
        )
        .context("installing the factory image")?;
        tracing::info!(
            "new flash {}: factory image {} installed",
            flash_path.display(),
            info.header.version
        );
    }
    let flash = FileFlash::open(&flash_path, geometry, 0)?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let defaults = ServerConfig::default();
    let server = DiagServer::new(ServerConfig {
        max_block_len: block_len,
        rng_seed: seed,
        vin: vin.unwrap_or(defaults.vin),
        ..defaults
    });
    let nvm_path = state.join("nvm.txt");
    let mut host = Host {
        ecu: Ecu::new(config, flash),
        server,
        nvm_path: Some(nvm_path.clone()),
    };
    if nvm_path.exists() {
        let text = std::fs::read_to_string(&nvm_path)
            .with_context(|| format!("reading {}", nvm_path.display()))?;
        host.load_nvm(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", nvm_path.display()))?;
    }
    host.ecu.power_on()?;
    for e in host.ecu.drain_events() {
        tracing::info!(target: "ecu", "{e}");
    }
    Ok(host)
}

/// Serves until SIGINT/SIGTERM, then saves flash and NVM.
pub fn run(args: &ServeArgs, ecu_args: &EcuArgs) -> Result<exit::Code> {
    let relay = if args.relay_pty {
        Some(
            RelayBoard::new(args.relay_on.0.clone(), args.relay_off.0.clone())
                .context("--relay-on, --relay-off")?,
        )
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(file) = &args.vehicle {
        return super::vehicle::run(file, args.doip, &args.state, args.speed);
    }
    let (geometry, config) = ecu_args.config()?;
    let host = host(HostSpec {
        state: &args.state,
        factory: args.factory.as_deref(),
        geometry,
        config,
        block_len: args.block_len,
        seed: args.seed,
        vin: None,
    })?;
    let mut entity = doip::EntityInfo {
        logical_address: args.logical_address,
        vin: host.server.vin(),
        max_sockets: 4,
        ..doip::EntityInfo::default()
    };
    entity.max_data_size = Some(doip::DEFAULT_MAX_PAYLOAD + doip::HEADER_LEN as u32);
    let config = ServeConfig {
        doip: Some(DoipEndpoint {
            addr: args.doip,
            entity,
        }),
        slcan_pty: args.slcan_pty,
        socketcan: args.socketcan.clone().map(|i| (i, args.socketcan_fd)),
        relay,
        can_ids: CanIds::default(),
        max_can_message: args.block_len as usize,
        can_flow_control: args.can_flow_control,
    };
    serve_hosts(vec![host], args.speed, |mut handles| async move {
        let handle = handles.pop().expect("one host");
        let served = Served::start(&config, handle).await?;
        let lines = served.endpoints.iter().map(ToString::to_string).collect();
        Ok((served, lines))
    })
}

/// Spawn `hosts`, start their endpoints with `start` (which also says what to print), serve
/// until SIGINT/SIGTERM, then save every host's flash and NVM.
pub(super) fn serve_hosts<S, F>(
    hosts: Vec<Host<FileFlash>>,
    speed: Pace,
    start: S,
) -> Result<exit::Code>
where
    S: FnOnce(Vec<EcuHandle>) -> F,
    F: std::future::Future<Output = Result<(Served, Vec<String>)>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        let mut handles = Vec::new();
        for host in hosts {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            let (handle, task) = host.spawn(speed, stop_rx);
            stops.push(stop_tx);
            tasks.push(task);
            handles.push(handle);
        }
        let (served, lines) = start(handles).await?;
        for line in lines {
            println!("ecu-sim: {line}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        served.stop();
        for stop in stops {
            let _ = stop.send(());
        }
        for task in tasks {
            let mut host = task.await?;
            host.ecu.flash_mut().flush()?;
            if let Some(path) = &host.nvm_path {
                crate::host::write_atomically(path, host.nvm_text().as_bytes())?;
            }
        }
        anyhow::Ok(())
    });
    // A pty's master read runs on a blocking thread until the last slave closes: with a tool
    // still holding the slcan or relay port open it never ends, and dropping the runtime
    // would wait for it. Everything is saved by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    served?;
    Ok(exit::OK)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
