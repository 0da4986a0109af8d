//! The ECU to talk to and how to reach it — shared by manifests, bench files and `hil flash` —
//! and [`connect`], which opens the matching transport.
//!
//! | `transport` | fields (defaults) | transport |
//! |---|---|---|
//! | `doip` | `host`, `port` (13400), `logical_address` (0x0010), `tester_address` (0x0E00) | [`DoipTransport`]: TCP + routing activation |
//! | `slcan` | `device`, `serial_baud` (115200), `bitrate` (500000), `tx_id` (0x7E0), `rx_id` (0x7E8), `padding` (0xCC) | ISO-TP over an slcan USB-CAN adapter |
//! | `socketcan` | `interface`, `fd` (false), `tx_id`, `rx_id`, `padding` | ISO-TP over a Linux CAN interface |

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub(crate) mod read;

use crate::can::slcan::SlcanAdapter;
use crate::can::socketcan::SocketCanBackend;
use crate::can::{IsoTpSettings, IsoTpTransport};
use crate::transport::{DoipSettings, DoipTransport, Transport, TransportError};

fn default_port() -> u16 {
    13400
}
fn default_ecu() -> u16 {
    0x0010
}
fn default_tester() -> u16 {
    0x0E00
}
fn default_serial_baud() -> u32 {
    115_200
}
fn default_bitrate() -> u32 {
    500_000
}
fn default_tx() -> u32 {
    0x7E0
}
fn default_rx() -> u32 {
    0x7E8
}
/// The ISO-TP padding byte unless a target says otherwise.
pub const DEFAULT_PADDING: u8 = 0xCC;

fn default_padding() -> Option<u8> {
    Some(DEFAULT_PADDING)
}

/// The ECU and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Doip {
        host: String,
        #[serde(default = "default_port")]
        port: u16,
        #[serde(default = "default_ecu")]
        logical_address: u16,
        #[serde(default = "default_tester")]
        tester_address: u16,
    },
    Slcan {
        /// The adapter's serial port.
        device: PathBuf,
        #[serde(default = "default_serial_baud")]
        serial_baud: u32,
        /// CAN bit rate, bit/s (an slcan `S0`..`S8` rate).
        #[serde(default = "default_bitrate")]
        bitrate: u32,
        #[serde(default = "default_tx")]
        tx_id: u32,
        #[serde(default = "default_rx")]
        rx_id: u32,
        #[serde(default = "default_padding")]
        padding: Option<u8>,
    },
    Socketcan {
        interface: String,
        #[serde(default)]
        fd: bool,
        #[serde(default = "default_tx")]
        tx_id: u32,
        #[serde(default = "default_rx")]
        rx_id: u32,
        #[serde(default = "default_padding")]
        padding: Option<u8>,
    },
}

impl Target {
    /// What is wrong with the fields, as (field, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        let id = |name: &'static str, id: u32| {
            (id > ecu_sim::can::frame::MAX_EXT_ID)
                .then(|| (name, format!("{id:#x} does not fit 29 bits")))
        };
        match self {
            Target::Doip { host, .. } if host.is_empty() => {
                Some(("host", "must not be empty".into()))
            }
            Target::Doip { port: 0, .. } => Some(("port", "0 is not a TCP port".into())),
            Target::Doip { .. } => None,
            Target::Slcan { serial_baud: 0, .. } => Some(("serial_baud", "must be above 0".into())),
            Target::Slcan {
                bitrate,
                tx_id,
                rx_id,
                ..
            } => {
                if crate::can::slcan::bitrate_command(*bitrate).is_none() {
                    return Some((
                        "bitrate",
                        format!(
                            "{bitrate} is not an slcan bit rate (one of {})",
                            ecu_sim::proto::slcan::BITRATES
                                .map(|b| b.to_string())
                                .join(", ")
                        ),
                    ));
                }
                id("tx_id", *tx_id).or_else(|| id("rx_id", *rx_id))
            }
            Target::Socketcan {
                interface,
                tx_id,
                rx_id,
                ..
            } => {
                if interface.is_empty() {
                    return Some(("interface", "must not be empty".into()));
                }
                if interface.len() > 15 {
                    return Some((
                        "interface",
                        format!(
                            "{interface:?} is longer than 15 bytes, the longest Linux interface name"
                        ),
                    ));
                }
                id("tx_id", *tx_id).or_else(|| id("rx_id", *rx_id))
            }
        }
    }

    /// One line: `doip 127.0.0.1:13400 (ecu 0x0010)`.
    pub fn describe(&self) -> String {
        match self {
            Target::Doip {
                host,
                port,
                logical_address,
                ..
            } => format!("doip {host}:{port} (ecu {logical_address:#06x})"),
            Target::Slcan {
                device,
                bitrate,
                tx_id,
                rx_id,
                ..
            } => format!(
                "slcan {} @ {} kbit/s (iso-tp {tx_id:#x}/{rx_id:#x})",
                device.display(),
                bitrate / 1000
            ),
            Target::Socketcan {
                interface,
                fd,
                tx_id,
                rx_id,
                ..
            } => format!(
                "socketcan {interface}{} (iso-tp {tx_id:#x}/{rx_id:#x})",
                if *fd { " fd" } else { "" }
            ),
        }
    }
}

/// A connected transport of any kind.
#[derive(Debug)]
pub enum AnyTransport {
    Doip(DoipTransport),
    Slcan(IsoTpTransport<SlcanAdapter<tokio_serial::SerialStream>>),
    Socketcan(IsoTpTransport<SocketCanBackend>),
}

/// Open the transport to `target`: connect and activate routing (DoIP), open the adapter and
/// its channel (slcan), bind to the interface (SocketCAN).
pub async fn connect(target: &Target) -> Result<AnyTransport, TransportError> {
    let can = |e: crate::can::CanError| TransportError::Can(e.to_string());
    Ok(match target {
        Target::Doip {
            host,
            port,
            logical_address,
            tester_address,
        } => {
            let settings = DoipSettings {
                ecu: *logical_address,
                tester: *tester_address,
                ..DoipSettings::default()
            };
            AnyTransport::Doip(DoipTransport::connect(format!("{host}:{port}"), settings).await?)
        }
        Target::Slcan {
            device,
            serial_baud,
            bitrate,
            tx_id,
            rx_id,
            padding,
        } => {
            let adapter = SlcanAdapter::open(device, *serial_baud, *bitrate)
                .await
                .map_err(can)?;
            let settings = IsoTpSettings {
                tx_id: *tx_id,
                rx_id: *rx_id,
                fd: false,
                padding: *padding,
            };
            AnyTransport::Slcan(IsoTpTransport::new(adapter, settings))
        }
        Target::Socketcan {
            interface,
            fd,
            tx_id,
            rx_id,
            padding,
        } => {
            let backend = SocketCanBackend::open(interface, *fd).map_err(can)?;
            let settings = IsoTpSettings {
                tx_id: *tx_id,
                rx_id: *rx_id,
                fd: *fd,
                padding: *padding,
            };
            AnyTransport::Socketcan(IsoTpTransport::new(backend, settings))
        }
    })
}

impl Transport for AnyTransport {
    async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
        match self {
            AnyTransport::Doip(t) => t.send(request).await,
            AnyTransport::Slcan(t) => t.send(request).await,
            AnyTransport::Socketcan(t) => t.send(request).await,
        }
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
        match self {
            AnyTransport::Doip(t) => t.recv(deadline).await,
            AnyTransport::Slcan(t) => t.recv(deadline).await,
            AnyTransport::Socketcan(t) => t.recv(deadline).await,
        }
    }

    async fn reconnect(&mut self) -> Result<(), TransportError> {
        match self {
            AnyTransport::Doip(t) => t.reconnect().await,
            AnyTransport::Slcan(t) => t.reconnect().await,
            AnyTransport::Socketcan(t) => t.reconnect().await,
        }
    }
}
