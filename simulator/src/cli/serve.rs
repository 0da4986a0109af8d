//! `ecu-sim serve`: the ECU of a state directory on its endpoints, in real time, until
//! SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::ecu::EcuArgs;
use crate::ecu::Ecu;
use crate::exit;
use crate::factory;
use crate::flash::FileFlash;
use crate::host::{Host, Pace};
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

/// The host of the state directory: its flash (the factory image installed into a new one),
/// its NVM, powered on.
fn host(args: &ServeArgs, ecu_args: &EcuArgs) -> Result<Host<FileFlash>> {
    let (geometry, config) = ecu_args.config()?;
    if let Some(key) = &config.enc_key {
        tracing::info!("image decryption key: {}", key.family());
    }
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let flash_path = args.state.join("flash.bin");
    // flash.bin appears only complete (crate::factory): a kill during the first start leaves
    // no flash.bin, and the next start provisions again.
    if !flash_path.exists() {
        let image = match &args.factory {
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
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let server = DiagServer::new(ServerConfig {
        max_block_len: args.block_len,
        rng_seed: seed,
        ..ServerConfig::default()
    });
    let nvm_path = args.state.join("nvm.txt");
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
    let host = host(args, ecu_args)?;
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (handle, host_task) = host.spawn(args.speed, stop_rx);
        let served = Served::start(&config, handle).await?;
        for e in &served.endpoints {
            println!("ecu-sim: {e}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        served.stop();
        let _ = stop_tx.send(());
        let mut host = host_task.await?;
        host.ecu.flash_mut().flush()?;
        if let Some(path) = &host.nvm_path {
            crate::host::write_atomically(path, host.nvm_text().as_bytes())?;
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
