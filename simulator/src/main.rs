//! `ecu-sim`: a virtual ECU whose flash lives in a file, so its state survives across runs.
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
//! Exit codes: 0 ok, 1 the ECU has no bootable image, 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ecu_sim::boot::{BootConfig, BootDecision, BootMode, Layout};
use ecu_sim::ecu::{Ecu, EcuConfig};
use ecu_sim::factory;
use ecu_sim::flash::{FileFlash, Geometry};
use ecu_sim::host::{Host, Pace};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::doip;
use ecu_sim::proto::relay::{self, RelayBoard, format_bytes};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "ecu-sim",
    version,
    about = "Virtual ECU with file-backed flash"
)]
struct Cli {
    /// Flash image file (created erased if missing).
    #[arg(long, global = true, default_value = "ecu-flash.bin")]
    flash: PathBuf,
    #[arg(long, global = true, value_enum, default_value_t = Mode::Swap)]
    mode: Mode,
    /// Sector size in bytes (uniform map).
    #[arg(long, global = true, default_value_t = 4096)]
    sector_size: u32,
    /// Number of sectors.
    #[arg(long, global = true, default_value_t = 132)]
    sectors: usize,
    /// Write unit in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    align: usize,
    /// Trusted public key (PEM, as `imgtool getpub -e pem` prints); repeatable.
    #[arg(long, global = true)]
    key: Vec<PathBuf>,
    /// Trusted development key by name (default "oem" when no --key is given); repeatable.
    #[arg(long, global = true)]
    dev_key: Vec<String>,
    /// Boots a test image gets before it is reverted.
    #[arg(long, global = true, default_value_t = 1)]
    max_boot_attempts: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a signed image with a development key.
    Image {
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
    },
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
    ///   ecu-sim: power relay on PTY (on A0 01 01 A2, off A0 01 00 A1)          (--relay-pty)
    #[command(
        verbatim_doc_comment,
        about = "Run the ECU as a DoIP node (UDS over TCP, vehicle identification over UDP) until Ctrl-C. Flash, VIN and DTCs persist in the state directory across restarts."
    )]
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Swap,
    Ab,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Healthy,
    CrashOnBoot,
    Hang,
    NeverConfirm,
    NoDiagnostics,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Image {
        version,
        out,
        size,
        security_counter,
        behaviour,
        sign_with,
    } = &cli.command
    {
        let behaviour = match behaviour {
            Kind::Healthy => Behaviour::DEFAULT,
            Kind::CrashOnBoot => Behaviour::CrashOnBoot,
            Kind::Hang => Behaviour::Hang { watchdog_ms: 1000 },
            Kind::NeverConfirm => Behaviour::NeverConfirm,
            Kind::NoDiagnostics => Behaviour::NoDiagnostics,
        };
        let payload = (0..*size).map(|i| (i as u8) ^ version.major).collect();
        let image = ImageBuilder::new(*version, payload)
            .security_counter(*security_counter)
            .behaviour(behaviour)
            .sign(&dev_key(sign_with));
        std::fs::write(out, &image).with_context(|| format!("writing {}", out.display()))?;
        println!(
            "{}: {version}, {} bytes, signed with dev key {sign_with:?}",
            out.display(),
            image.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mode = match cli.mode {
        Mode::Swap => BootMode::Swap,
        Mode::Ab => BootMode::Ab,
    };
    let geometry = Geometry::uniform(cli.sector_size, cli.sectors, cli.align)?;
    let layout = Layout::auto(&geometry, mode)?;
    let mut keys = Keyring::new();
    for path in &cli.key {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.add_pem(&pem)
            .with_context(|| format!("key {}", path.display()))?;
    }
    let names = if cli.key.is_empty() && cli.dev_key.is_empty() {
        vec!["oem".to_string()]
    } else {
        cli.dev_key.clone()
    };
    for name in names {
        keys.add(dev_key(&name).verifying_key());
    }
    if let Command::Serve(args) = &cli.command {
        let config = EcuConfig::new(
            layout,
            BootConfig {
                defect: None,
                max_boot_attempts: cli.max_boot_attempts,
                keys,
            },
        );
        return serve(args, geometry, config);
    }
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if let Command::Provision { image } = &cli.command {
        let info = factory::install(&cli.flash, &geometry, &layout, &keys, &read(image)?)
            .with_context(|| format!("provisioning {}", image.display()))?;
        println!(
            "provisioned {} ({}) into the primary slot of {}",
            image.display(),
            info.header.version,
            cli.flash.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let flash = FileFlash::open(&cli.flash, geometry, 0)?;
    let config = EcuConfig::new(
        layout,
        BootConfig {
            defect: None,
            max_boot_attempts: cli.max_boot_attempts,
            keys,
        },
    );
    let mut ecu = Ecu::new(config, flash);
    match &cli.command {
        Command::Status => {}
        Command::Stage { image, permanent } => {
            ecu.power_on()?;
            if ecu.running().is_none() {
                bail!("no firmware runs to stage an update");
            }
            ecu.stage_update(&read(image)?, *permanent)?;
        }
        Command::Boot { run_ms } => {
            ecu.power_on()?;
            ecu.advance(run_ms * 1000)?;
        }
        Command::Image { .. } | Command::Provision { .. } | Command::Serve(_) => {
            unreachable!("handled above")
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
        Some(BootDecision::NoBootableImage { .. }) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn serve(args: &ServeArgs, geometry: Geometry, config: EcuConfig) -> Result<ExitCode> {
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
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let flash_path = args.state.join("flash.bin");
    // flash.bin appears only complete (ecu_sim::factory): a kill during the first start
    // leaves no flash.bin, and the next start provisions again.
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
    let mut host = Host {
        ecu: Ecu::new(config, flash),
        server,
        nvm_path: Some(args.state.join("nvm.txt")),
    };
    if let Some(path) = host.nvm_path.clone()
        && path.exists()
    {
        let path = &path;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        host.load_nvm(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    host.ecu.power_on()?;
    for e in host.ecu.drain_events() {
        tracing::info!(target: "ecu", "{e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.doip)
            .await
            .with_context(|| format!("binding tcp {}", args.doip))?;
        let addr = listener.local_addr()?;
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding udp {addr}"))?;
        let mut entity = doip::EntityInfo {
            logical_address: args.logical_address,
            vin: host.server.vin(),
            max_sockets: 4,
            ..doip::EntityInfo::default()
        };
        entity.max_data_size = Some(doip::DEFAULT_MAX_PAYLOAD + doip::HEADER_LEN as u32);
        let conn_config = doip::Config {
            entity: entity.clone(),
            ecu_address: args.logical_address,
            ..doip::Config::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (handle, host_task) = host.spawn(args.speed, stop_rx);
        let sockets = ecu_sim::serve::Sockets::new(entity.max_sockets);
        let tcp = tokio::spawn(ecu_sim::serve::serve_tcp_with(
            listener,
            handle.clone(),
            conn_config,
            sockets.clone(),
        ));
        let udp = tokio::spawn(ecu_sim::serve::serve_udp(
            udp,
            entity,
            handle.clone(),
            sockets,
        ));
        println!(
            "ecu-sim: doip listening on {addr} (tcp and udp), ecu logical address 0x{:04x}",
            args.logical_address
        );
        // The ptys' slaves stay open here too: clients come and go without the masters seeing
        // a hang-up. Dropped at the end, they end the masters' pending reads.
        let mut slaves = Vec::new();
        let slcan = if args.slcan_pty {
            let (master, slave, path) =
                ecu_sim::serve::raw_pty().context("creating the slcan pty")?;
            println!("ecu-sim: slcan adapter on {path} (iso-tp 0x7e0/0x7e8, functional 0x7df)");
            slaves.push(slave);
            Some(tokio::spawn(ecu_sim::serve::serve_slcan(
                master,
                handle.clone(),
                ecu_sim::proto::uds_can::CanIds::default(),
                args.block_len as usize,
            )))
        } else {
            None
        };
        let socketcan = match &args.socketcan {
            Some(iface) => {
                let socket = ecu_sim::can::socketcan::SocketCan::open(iface, args.socketcan_fd)
                    .context("--socketcan")?;
                println!(
                    "ecu-sim: socketcan on {} (iso-tp 0x7e0/0x7e8, functional 0x7df)",
                    socket.describe()
                );
                Some(tokio::spawn(ecu_sim::serve::serve_socketcan(
                    socket,
                    handle.clone(),
                    ecu_sim::proto::uds_can::CanIds::default(),
                    args.block_len as usize,
                )))
            }
            None => None,
        };
        let relay = match relay {
            Some(board) => {
                let (master, slave, path) =
                    ecu_sim::serve::raw_pty().context("creating the relay pty")?;
                println!(
                    "ecu-sim: power relay on {path} (on {}, off {})",
                    format_bytes(board.on_command()),
                    format_bytes(board.off_command())
                );
                slaves.push(slave);
                Some(tokio::spawn(ecu_sim::serve::serve_relay(
                    master,
                    board,
                    handle.clone(),
                )))
            }
            None => None,
        };
        use std::io::Write as _;
        std::io::stdout().flush()?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        tcp.abort();
        udp.abort();
        for task in [slcan, socketcan, relay].into_iter().flatten() {
            task.abort();
        }
        let _ = stop_tx.send(());
        let mut host = host_task.await?;
        host.ecu.flash_mut().flush()?;
        if let Some(path) = &host.nvm_path {
            ecu_sim::host::write_atomically(path, host.nvm_text().as_bytes())?;
        }
        anyhow::Ok(())
    });
    // A pty's master read runs on a blocking thread until the last slave closes: with a tool
    // still holding the slcan or relay port open it never ends, and dropping the runtime
    // would wait for it. Everything is saved by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    served?;
    Ok(ExitCode::SUCCESS)
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
