//! `hil`: the OTA test harness command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ecu_sim::boot::BootMode;
use ecu_sim::flash::CutVariant;
use hil::artifact::{self, Faults};
use hil::demo::{self, DemoOptions};
use hil::download::DownloadConfig;
use hil::flasher::{FlashEvent, Flasher, FlasherConfig};
use hil::imagetool;
use hil::ota::manager::{Limits, Manager};
use hil::target::Target;
use hil::uds_client::{UdsClient, UdsConfig};

#[derive(Parser, Debug)]
#[command(name = "hil", version, about = "ECU OTA test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files (or every *.yaml under directories), in parallel, in virtual time.
    /// Exit 0 all passed, 1 a scenario failed, 2 invalid input, 3 the engine broke.
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Override every scenario's seed (what a failure's replay command sets).
        #[arg(long)]
        seed: Option<u64>,
        /// Write each scenario's trace as JSON lines to DIR/<name>.jsonl (<name>: the file's
        /// path below the folder the scenarios share, a/x and b/x for a/x.yaml and b/x.yaml).
        #[arg(long, value_name = "DIR")]
        trace: Option<PathBuf>,
        /// Scenarios run at once (default: one per core).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// tui (the dashboard), plain, or json (one event per line). Default: tui on a
        /// terminal outside CI, plain otherwise.
        #[arg(long, value_enum)]
        ui: Option<UiArg>,
        /// Write JUnit XML to PATH.
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
        /// Write an SVG timeline per scenario to DIR/<name>.svg.
        #[arg(long, value_name = "DIR")]
        timeline: Option<PathBuf>,
        /// Run against the real ECU of this bench file (one scenario at a time, real time);
        /// scenarios with faults the bench cannot realise are SKIPPED with the reason.
        #[arg(long, value_name = "BENCH.yaml")]
        bench: Option<PathBuf>,
    },
    /// Cut power at every flash operation, UDS boundary, download step and boot of a scenario's
    /// update and check the ECU never bricks. Exit 0 all points passed, 1 a point failed, 2
    /// invalid input, 3 the engine broke.
    Sweep {
        scenario: PathBuf,
        /// Point classes: flash-ops, uds, boots, download (comma-separated).
        #[arg(long, default_value = "flash-ops,uds,boots,download")]
        points: String,
        /// Cut variants at flash operations (comma-separated).
        #[arg(long, default_value = "before,torn,after")]
        variants: String,
        /// Bytes between download points.
        #[arg(long, default_value_t = 16384)]
        download_step: u64,
        /// Power (and the OTA manager) come back after this long.
        #[arg(long, default_value_t = 500)]
        restore_ms: u64,
        /// Worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// Write a reproducer scenario per failing point here.
        #[arg(long, default_value = "sweep-failures")]
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Also run N chains of random cuts from the start.
        #[arg(long)]
        random: Option<usize>,
        /// Seed of the random chains.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Most cuts in one random chain.
        #[arg(long, default_value_t = 3)]
        max_chain: usize,
        /// tui (the dashboard) or plain. Default: tui on a terminal outside CI.
        #[arg(long, value_enum)]
        ui: Option<UiArg>,
    },
    /// Check scenario files; every problem as file:line:col: message. Exit 0 valid, 2 not.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Scenarios with their one-line descriptions.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
    },
    /// Build two signed images, install v1, update to v2 with a power cut mid-install, show the outcome.
    Demo {
        /// Bootloader mode.
        #[arg(long, value_enum, default_value_t = Mode::Swap)]
        mode: Mode,
        /// Where the cut lands relative to its flash operation.
        #[arg(long, value_enum, default_value_t = Variant::Torn)]
        variant: Variant,
        /// Size of the new image's payload, bytes.
        #[arg(long, default_value_t = 48 * 1024)]
        image_size: usize,
        /// Seed for image contents and torn-write randomness.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Flash an MCUboot image over UDS (on DoIP, or ISO-TP through an slcan adapter or a
    /// SocketCAN interface): program, reset, wait for the confirm or the rollback. Exit 0
    /// committed, 1 rolled back or refused by the ECU, 2 error.
    #[command(group(clap::ArgGroup::new("via").required(true).args(["doip", "slcan", "socketcan"])))]
    Flash {
        /// DoIP entity, HOST:PORT.
        #[arg(long)]
        doip: Option<String>,
        /// slcan USB-CAN adapter (serial port), e.g. /dev/ttyACM0 or the pty of
        /// `ecu-sim serve --slcan-pty`.
        #[arg(long, value_name = "DEVICE")]
        slcan: Option<PathBuf>,
        /// SocketCAN interface, e.g. can0 or vcan0.
        #[arg(long, value_name = "IFACE")]
        socketcan: Option<String>,
        /// CAN bit rate, bit/s (slcan).
        #[arg(long, default_value_t = 500_000)]
        bitrate: u32,
        /// Serial speed of the slcan adapter.
        #[arg(long, default_value_t = 115_200)]
        serial_baud: u32,
        /// CAN FD frames (SocketCAN).
        #[arg(long)]
        fd: bool,
        /// ISO-TP request id (tester -> ECU).
        #[arg(long, default_value = "0x7E0", value_parser = parse_u32)]
        tx_id: u32,
        /// ISO-TP response id (ECU -> tester).
        #[arg(long, default_value = "0x7E8", value_parser = parse_u32)]
        rx_id: u32,
        /// Logical address of the ECU (DoIP; hex with 0x, or decimal).
        #[arg(long, default_value = "0x0010", value_parser = parse_u16)]
        ecu: u16,
        /// Our (the tester's) logical address (DoIP).
        #[arg(long, default_value = "0x0E00", value_parser = parse_u16)]
        tester: u16,
        /// Request a permanent upgrade instead of a test boot.
        #[arg(long)]
        permanent: bool,
        /// Seconds the new image may stay on probation before a reset makes the bootloader revert it.
        #[arg(long, default_value_t = 10.0)]
        confirm_timeout: f64,
        /// Seconds the ECU may stay silent after a reset.
        #[arg(long, default_value_t = 30.0)]
        boot_timeout: f64,
        /// The signed image.
        image: PathBuf,
    },
    /// Serve the files of DIR over HTTP/1.1 (GET, HEAD, single byte ranges) with fault hooks.
    /// Prints `serving DIR on http://ADDR/` first, then one line per request and fault; runs
    /// until SIGINT/SIGTERM (exit 0), exit 2 if it cannot start. Offsets are file offsets.
    ServeArtifacts {
        /// Directory to serve.
        dir: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
        /// Close the connection when a response reaches this file offset.
        #[arg(long, value_name = "N")]
        close_after: Option<u64>,
        /// Pause a response for --stall-ms when it reaches this file offset.
        #[arg(long, value_name = "N")]
        stall_after: Option<u64>,
        /// Length of the pause of --stall-after, milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        stall_ms: u64,
        /// Send bodies at most this many bytes per second.
        #[arg(long, value_name = "BPS", value_parser = clap::value_parser!(u64).range(1..))]
        throttle: Option<u64>,
        /// Answer every K-th request with --fail-status.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
        fail_every: Option<u32>,
        /// Status of the requests failed by --fail-every.
        #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=599))]
        fail_status: u16,
        /// Answer range requests with the whole file (200), like a server without Range support.
        #[arg(long)]
        ignore_range: bool,
        /// Send the byte at this file offset with every bit flipped.
        #[arg(long, value_name = "OFF")]
        flip_byte: Option<u64>,
        /// Each fault fires in one response only (default: every response it matches).
        #[arg(long)]
        once: bool,
        /// Seed of the server's randomness (how responses are split into writes).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// OTA jobs: submit a manifest, run or resume jobs from a store directory, show status.
    Ota {
        #[command(subcommand)]
        command: OtaCommand,
    },
    /// Test signing keys (ed25519, PEM).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Test images (MCUboot format, with the simulator's behaviour TLV).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UiArg {
    Tui,
    Plain,
    Json,
}

fn ui_mode(u: UiArg) -> hil::ui::UiMode {
    match u {
        UiArg::Tui => hil::ui::UiMode::Tui,
        UiArg::Plain => hil::ui::UiMode::Plain,
        UiArg::Json => hil::ui::UiMode::Json,
    }
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Write NAME.pem (PKCS#8 private key, mode 0600) and NAME.pub.pem (public key) into DIR.
    Generate {
        #[arg(long, default_value = "oem")]
        name: String,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// The simulator's development key of this name instead of a random one.
        #[arg(long, value_name = "NAME")]
        dev: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BehaviourArg {
    Healthy,
    NeverConfirm,
    Crash,
    Hang,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Build a signed (or unsigned) image; prints its size, key hash and SHA-256.
    Build {
        #[arg(long)]
        version: ecu_sim::image::Version,
        /// Payload bytes (deterministic filler derived from the version).
        #[arg(long, default_value_t = 32 * 1024)]
        size: usize,
        #[arg(long, value_enum, default_value_t = BehaviourArg::Healthy)]
        behaviour: BehaviourArg,
        /// Healthy images confirm themselves this long after booting.
        #[arg(long, default_value_t = 500)]
        confirm_after_ms: u32,
        /// Hanging images are reset by the watchdog after this long.
        #[arg(long, default_value_t = 1000)]
        watchdog_ms: u32,
        /// Sign with this PKCS#8 PEM private key (`hil keys generate`, `imgtool keygen`).
        #[arg(long, value_name = "PEM", conflicts_with_all = ["dev_key", "unsigned"])]
        key: Option<PathBuf>,
        /// Sign with the simulator's development key of this name (default "oem").
        #[arg(long, value_name = "NAME", conflicts_with = "unsigned")]
        dev_key: Option<String>,
        /// No signature (hash only).
        #[arg(long)]
        unsigned: bool,
        /// Security counter (default: the major version).
        #[arg(long)]
        security_counter: Option<u32>,
        #[arg(long)]
        out: PathBuf,
        /// Also write OUT with .yaml: an OTA manifest for the image served at this URL.
        #[arg(long, value_name = "URL")]
        manifest_url: Option<String>,
        /// Overwrite OUT.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OtaCommand {
    /// Add a job for MANIFEST (YAML or JSON) to the store; prints its id.
    Submit {
        manifest: PathBuf,
        #[arg(long)]
        store: PathBuf,
    },
    /// Run every unfinished job (or JOB) to its end: download, verify, transfer, apply.
    /// Exit 0 all committed, 1 a job rolled back or failed, 2 error.
    Run(OtaRunArgs),
    /// The same as run: continue unfinished jobs from where the store says they are.
    Resume(OtaRunArgs),
    /// Show every job (`--json`: the job documents).
    Status {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct OtaRunArgs {
    /// The job store directory (one JSON document per job, and the downloaded artifacts).
    #[arg(long)]
    store: PathBuf,
    /// Only this job.
    job: Option<String>,
    /// Seconds the new image may stay on probation before a reset makes the bootloader revert it.
    #[arg(long, default_value_t = 10.0)]
    confirm_timeout: f64,
    /// Seconds the ECU may stay silent after a reset.
    #[arg(long, default_value_t = 30.0)]
    boot_timeout: f64,
    /// Downloads started (each resumes the last) before a job fails; a killed run counts.
    #[arg(long, default_value_t = Limits::default().download_attempts)]
    download_attempts: u32,
    /// Programming sequences started before a job fails; a killed run counts.
    #[arg(long, default_value_t = Limits::default().transfer_attempts)]
    transfer_attempts: u32,
    /// HTTP retries within one download attempt.
    #[arg(long, default_value_t = DownloadConfig::default().retries)]
    http_retries: u32,
    /// Seconds without a byte from the artifact server before the request counts as stalled.
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
    /// Seed of the retry jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
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
enum Variant {
    Before,
    Torn,
    After,
}

/// Exit codes: 0 the update committed, 1 it did not (rolled back, or refused by the ECU), 2 the
/// harness, the link or the ECU broke.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            mode,
            variant,
            image_size,
            seed,
        } => {
            let opts = DemoOptions {
                mode: match mode {
                    Mode::Swap => BootMode::Swap,
                    Mode::Ab => BootMode::Ab,
                },
                variant: match variant {
                    Variant::Before => CutVariant::Before,
                    Variant::Torn => CutVariant::Torn,
                    Variant::After => CutVariant::After,
                },
                image_size,
                seed,
            };
            match demo::run(&opts, &mut std::io::stdout().lock()) {
                Ok(s) if s.committed => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Flash {
            doip,
            slcan,
            socketcan,
            bitrate,
            serial_baud,
            fd,
            tx_id,
            rx_id,
            ecu,
            tester,
            permanent,
            confirm_timeout,
            boot_timeout,
            image,
        } => {
            let padding = Some(hil::target::DEFAULT_PADDING);
            let target = if let Some(device) = slcan {
                Target::Slcan {
                    device,
                    serial_baud,
                    bitrate,
                    tx_id,
                    rx_id,
                    padding,
                }
            } else if let Some(interface) = socketcan {
                Target::Socketcan {
                    interface,
                    fd,
                    tx_id,
                    rx_id,
                    padding,
                }
            } else {
                let doip = doip.unwrap_or_default();
                let Some((host, port)) = doip.rsplit_once(':') else {
                    eprintln!("error: --doip {doip:?}: expected HOST:PORT");
                    return ExitCode::from(2);
                };
                let Ok(port) = port.parse() else {
                    eprintln!("error: --doip {doip:?}: {port:?} is not a port");
                    return ExitCode::from(2);
                };
                Target::Doip {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port,
                    logical_address: ecu,
                    tester_address: tester,
                }
            };
            if let Some((field, message)) = target.check() {
                eprintln!("error: {field}: {message}");
                return ExitCode::from(2);
            }
            let config = FlasherConfig {
                permanent,
                confirm_timeout: Duration::from_secs_f64(confirm_timeout),
                boot_timeout: Duration::from_secs_f64(boot_timeout),
                ..FlasherConfig::default()
            };
            flash(&target, Flasher::new(config), &image)
        }
        Command::ServeArtifacts {
            dir,
            addr,
            close_after,
            stall_after,
            stall_ms,
            throttle,
            fail_every,
            fail_status,
            ignore_range,
            flip_byte,
            once,
            seed,
        } => {
            let faults = Faults {
                close_after_bytes: close_after,
                stall_after_bytes: stall_after,
                stall_ms,
                throttle_bytes_per_sec: throttle,
                fail_every_kth: fail_every.map(|k| (k, fail_status)),
                ignore_range,
                flip_byte_at: flip_byte,
                once,
                seed,
            };
            serve_artifacts(&dir, &addr, faults)
        }
        Command::Run {
            paths,
            seed,
            trace,
            jobs,
            ui,
            junit,
            timeline,
            bench,
        } => hil::scenario::cli::run(
            &paths,
            &hil::scenario::cli::RunOptions {
                seed,
                trace_dir: trace,
                jobs,
                ui: ui.map(ui_mode),
                junit,
                timeline_dir: timeline,
                bench,
            },
        ),
        Command::Validate { paths } => hil::scenario::cli::validate(&paths),
        Command::Sweep {
            scenario,
            points,
            variants,
            download_step,
            restore_ms,
            jobs,
            out,
            json,
            random,
            seed,
            max_chain,
            ui,
        } => {
            use hil::sweep::cli;
            let (classes, variants) =
                match (cli::parse_classes(&points), cli::parse_variants(&variants)) {
                    (Ok(c), Ok(v)) => (c, v),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            cli::run(
                &scenario,
                &cli::CliOptions {
                    sweep: hil::sweep::Options {
                        classes,
                        variants,
                        download_step,
                        restore_ms,
                        jobs,
                        out: Some(out),
                        stop: None,
                    },
                    json,
                    random,
                    seed,
                    max_chain,
                    ui: ui.map(ui_mode),
                },
            )
        }
        Command::List { paths } => hil::scenario::cli::list(&paths),
        Command::Keys {
            command:
                KeysCommand::Generate {
                    name,
                    out,
                    dev,
                    force,
                },
        } => {
            let source = dev.map_or(imagetool::KeySource::Random, imagetool::KeySource::Dev);
            match imagetool::generate_key(&name, &out, &source, force) {
                Ok(k) => {
                    println!(
                        "{} {} keyhash {}",
                        k.private.display(),
                        k.public.display(),
                        k.keyhash
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Image {
            command:
                ImageCommand::Build {
                    version,
                    size,
                    behaviour,
                    confirm_after_ms,
                    watchdog_ms,
                    key,
                    dev_key,
                    unsigned,
                    security_counter,
                    out,
                    manifest_url,
                    force,
                },
        } => {
            use ecu_sim::image::Behaviour;
            let signer = match (key, dev_key, unsigned) {
                (Some(k), _, _) => imagetool::Signer::Key(k),
                (_, _, true) => imagetool::Signer::Unsigned,
                (_, d, _) => imagetool::Signer::Dev(d.unwrap_or_else(|| "oem".into())),
            };
            let spec = imagetool::ImageSpec {
                version,
                size,
                behaviour: match behaviour {
                    BehaviourArg::Healthy => Behaviour::Healthy { confirm_after_ms },
                    BehaviourArg::NeverConfirm => Behaviour::NeverConfirm,
                    BehaviourArg::Crash => Behaviour::CrashOnBoot,
                    BehaviourArg::Hang => Behaviour::Hang { watchdog_ms },
                },
                security_counter: security_counter.unwrap_or(u32::from(version.major)),
                signer,
            };
            let built = match imagetool::build_image(&spec) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let manifest =
                match imagetool::write_image(&built, version, &out, manifest_url.as_deref(), force)
                {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            let key = if built.keyhash.is_empty() {
                "unsigned".to_string()
            } else {
                format!("key {}", &built.keyhash[..16])
            };
            println!(
                "{}: {} bytes, v{version}, counter {}, {key}, sha-256 {}",
                out.display(),
                built.bytes.len(),
                spec.security_counter,
                built.sha256
            );
            if let (Some(path), Some(url)) = (manifest, manifest_url) {
                println!("{}: OTA manifest for {url}", path.display());
            }
            ExitCode::SUCCESS
        }
        Command::Ota { command } => match command {
            OtaCommand::Submit { manifest, store } => hil::ota::cli::submit(&manifest, &store),
            OtaCommand::Run(a) | OtaCommand::Resume(a) => {
                let config = hil::ota::live::LiveConfig {
                    flasher: FlasherConfig {
                        confirm_timeout: Duration::from_secs_f64(a.confirm_timeout),
                        boot_timeout: Duration::from_secs_f64(a.boot_timeout),
                        ..FlasherConfig::default()
                    },
                    manager: Manager {
                        limits: Limits {
                            download_attempts: a.download_attempts,
                            transfer_attempts: a.transfer_attempts,
                        },
                    },
                    download: DownloadConfig {
                        retries: a.http_retries,
                        idle_timeout_ms: (a.idle_timeout * 1000.0) as u64,
                        jitter_seed: a.seed,
                        ..DownloadConfig::default()
                    },
                };
                hil::ota::cli::run(&a.store, a.job.as_deref(), &config)
            }
            OtaCommand::Status { store, json } => hil::ota::cli::status(&store, json),
        },
    }
}

/// `hil flash`: one line per phase on stdout, then the result.
fn flash(target: &Target, flasher: Flasher, image: &PathBuf) -> ExitCode {
    let image = match std::fs::read(image) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading {}: {e}", image.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let transport = match hil::target::connect(target).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", target.describe());
                return ExitCode::from(2);
            }
        };
        let mut client = UdsClient::new(transport, UdsConfig::default());
        let mut print = |e: &FlashEvent| {
            if !matches!(e, FlashEvent::Block { .. }) {
                println!("{e}");
            }
        };
        match flasher.run(&mut client, &image, &mut print).await {
            Ok(report) if report.outcome.is_committed() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) if e.is_refusal() => {
                println!("result: REFUSED: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// `hil serve-artifacts`: the server runs on worker threads, so a slow reader of stdout never
/// holds up a download.
fn serve_artifacts(dir: &std::path::Path, addr: &str, faults: Faults) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    let served = runtime.block_on(artifact::serve_until_signal(dir, addr, faults, &mut out));
    // A file read stuck in the kernel (e.g. a hung network file system) must not keep a
    // stopped server alive: blocking tasks get one second, then the process exits anyway.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
