//! `hil flash`: program one image over UDS and wait for the confirm or the rollback.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::args::{parse_u16, parse_u32};
use crate::exit;
use crate::flasher::{FlashEvent, Flasher, FlasherConfig};
use crate::target::{self, Target};
use crate::uds_client::{UdsClient, UdsConfig};

/// Flash an MCUboot image over UDS (on DoIP, or ISO-TP through an slcan adapter or a
/// SocketCAN interface): program, reset, wait for the confirm or the rollback. Exit 0
/// committed, 1 rolled back or refused by the ECU, 2 invalid input (an argument, the image
/// file, a target that does not exist), 3 the link or the ECU broke.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("via").required(true).args(["doip", "slcan", "socketcan"])))]
pub struct FlashArgs {
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
    /// Seconds added to the ECU's P2 before a request counts as unanswered (a gateway or a
    /// slow link in between needs more than the default).
    #[arg(long, default_value_t = 1.0)]
    p2_margin: f64,
    /// The signed image.
    image: PathBuf,
}

impl FlashArgs {
    /// The target these arguments name.
    fn target(&self) -> Result<Target, String> {
        let padding = Some(target::DEFAULT_PADDING);
        let target = if let Some(device) = &self.slcan {
            Target::Slcan {
                device: device.clone(),
                serial_baud: self.serial_baud,
                bitrate: self.bitrate,
                tx_id: self.tx_id,
                rx_id: self.rx_id,
                padding,
            }
        } else if let Some(interface) = &self.socketcan {
            Target::Socketcan {
                interface: interface.clone(),
                fd: self.fd,
                tx_id: self.tx_id,
                rx_id: self.rx_id,
                padding,
            }
        } else {
            let doip = self.doip.clone().unwrap_or_default();
            let Some((host, port)) = doip.rsplit_once(':') else {
                return Err(format!("--doip {doip:?}: expected HOST:PORT"));
            };
            let Ok(port) = port.parse() else {
                return Err(format!("--doip {doip:?}: {port:?} is not a port"));
            };
            Target::Doip {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                logical_address: self.ecu,
                tester_address: self.tester,
            }
        };
        match target.check() {
            Some((field, message)) => Err(format!("{field}: {message}")),
            None => Ok(target),
        }
    }
}

pub fn run(args: &FlashArgs) -> ExitCode {
    let target = match args.target() {
        Ok(t) => t,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    let p2_margin = match Duration::try_from_secs_f64(args.p2_margin) {
        Ok(d) => d,
        Err(_) => {
            return exit::error(
                exit::INVALID,
                format_args!("--p2-margin {}: not a number of seconds", args.p2_margin),
            );
        }
    };
    let uds = UdsConfig {
        p2_margin,
        ..UdsConfig::default()
    };
    let config = FlasherConfig {
        permanent: args.permanent,
        confirm_timeout: Duration::from_secs_f64(args.confirm_timeout),
        boot_timeout: Duration::from_secs_f64(args.boot_timeout),
        ..FlasherConfig::default()
    };
    flash(&target, Flasher::new(config), uds, &args.image)
}

/// One line per phase on stdout, then the result.
fn flash(target: &Target, flasher: Flasher, uds: UdsConfig, image: &Path) -> ExitCode {
    let image = match std::fs::read(image) {
        Ok(b) => b,
        Err(e) => {
            return exit::error(
                exit::INVALID,
                format_args!("reading {}: {e}", image.display()),
            );
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return exit::error(exit::BROKEN, format_args!("starting the runtime: {e}")),
    };
    runtime.block_on(async {
        let transport = match target::connect(target).await {
            Ok(t) => t,
            Err(e) => {
                return exit::error(exit::INVALID, format_args!("{}: {e}", target.describe()));
            }
        };
        let mut client = UdsClient::new(transport, uds);
        let mut print = |e: &FlashEvent| {
            if !matches!(e, FlashEvent::Block { .. }) {
                println!("{e}");
            }
        };
        match flasher.run(&mut client, &image, &mut print).await {
            Ok(report) if report.outcome.is_committed() => exit::OK.into(),
            Ok(_) => exit::FAILED.into(),
            Err(e) if e.is_refusal() => {
                println!("result: REFUSED: {e}");
                exit::FAILED.into()
            }
            Err(e) => exit::error(exit::BROKEN, e),
        }
    })
}
