//! Putting an ECU on its endpoints in one call: [`ServeConfig`] says where (DoIP on TCP and
//! UDP, an slcan adapter on a pty, a SocketCAN interface, a relay board on a pty),
//! [`Served::start`] binds and spawns them all, [`Served::stop`] ends them. `ecu-sim serve`
//! and the scenario engine's real-time runs (external clients) both start their ECU here.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use tokio::task::JoinHandle;

use super::{Backend, FlowControl, Sockets, raw_pty, serve_relay, serve_slcan, serve_socketcan};
use super::{Routes, serve_tcp_with, serve_udp};
use crate::can::socketcan::{SocketCan, SocketCanError};
use crate::proto::doip;
use crate::proto::relay::{RelayBoard, format_bytes};
use crate::proto::uds_can::CanIds;

/// Where an ECU is served.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// DoIP: TCP (diagnostics) and UDP (vehicle identification) on this address; port 0 picks
    /// a free one.
    pub doip: Option<DoipEndpoint>,
    /// An slcan adapter on a new pseudo-terminal.
    pub slcan_pty: bool,
    /// A Linux CAN interface, and whether its frames are CAN FD.
    pub socketcan: Option<(String, bool)>,
    /// The ECU's power behind a relay board on a new pseudo-terminal.
    pub relay: Option<RelayBoard>,
    /// ISO-TP ids on CAN (slcan and SocketCAN).
    pub can_ids: CanIds,
    /// The longest ISO-TP message the ECU takes on CAN.
    pub max_can_message: usize,
    /// The flow control the ECU asks for on CAN (`None`: each link's own).
    pub can_flow_control: Option<FlowControl>,
}

/// DoIP's settings.
#[derive(Clone, Debug)]
pub struct DoipEndpoint {
    pub addr: SocketAddr,
    /// What the entity announces (logical address, VIN, socket limit, max data size).
    pub entity: doip::EntityInfo,
}

/// One endpoint as started: its `Display` is the line `ecu-sim serve` prints for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Doip {
        addr: SocketAddr,
        logical_address: u16,
        /// The entity is a gateway in front of several ECUs.
        gateway: bool,
    },
    Slcan {
        pty: String,
        ids: CanIds,
    },
    Socketcan {
        describe: String,
        ids: CanIds,
    },
    Relay {
        pty: String,
        on: Vec<u8>,
        off: Vec<u8>,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |f: &mut fmt::Formatter<'_>, ids: &CanIds| {
            write!(
                f,
                "(iso-tp 0x{:x}/0x{:x}, functional 0x{:x})",
                ids.request, ids.response, ids.functional
            )
        };
        match self {
            Endpoint::Doip {
                addr,
                logical_address,
                gateway,
            } => {
                let node = if *gateway { "gateway" } else { "ecu" };
                write!(
                    f,
                    "doip listening on {addr} (tcp and udp), {node} logical address 0x{logical_address:04x}"
                )
            }
            Endpoint::Slcan { pty, ids: i } => {
                write!(f, "slcan adapter on {pty} ")?;
                ids(f, i)
            }
            Endpoint::Socketcan { describe, ids: i } => {
                write!(f, "socketcan on {describe} ")?;
                ids(f, i)
            }
            Endpoint::Relay { pty, on, off } => write!(
                f,
                "power relay on {pty} (on {}, off {})",
                format_bytes(on),
                format_bytes(off)
            ),
        }
    }
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating the {what} pty: {source}")]
    Pty {
        what: &'static str,
        source: std::io::Error,
    },
    /// The interface did not open (not a `source`: the message carries it, once).
    #[error("--socketcan: {0}")]
    Socketcan(SocketCanError),
}

impl From<SocketCanError> for ServeError {
    fn from(e: SocketCanError) -> Self {
        ServeError::Socketcan(e)
    }
}

/// The endpoints of one ECU, serving until [`Served::stop`] (or drop).
#[derive(Debug)]
pub struct Served {
    /// In the order `ecu-sim serve` prints them: DoIP, slcan, SocketCAN, relay.
    pub endpoints: Vec<Endpoint>,
    tasks: Vec<JoinHandle<()>>,
    /// The ptys' slaves stay open here: clients come and go without the masters seeing a
    /// hang-up. Dropped on stop, they end the masters' pending reads.
    slaves: Vec<OwnedFd>,
}

impl Served {
    /// Binds and spawns every endpoint of `config` in front of `ecu` (on the current tokio
    /// runtime). Nothing is left running when one fails.
    pub async fn start<B: Backend>(config: &ServeConfig, ecu: B) -> Result<Served, ServeError> {
        let mut served = Served {
            endpoints: Vec::new(),
            tasks: Vec::new(),
            slaves: Vec::new(),
        };
        if let Some(d) = &config.doip {
            let functional = doip::Config::default().functional_addresses;
            let routes = Routes::single(d.entity.logical_address, ecu.clone(), functional);
            served.start_doip(d, routes).await?;
        }
        if config.slcan_pty {
            let (master, slave, pty) = raw_pty().map_err(|source| ServeError::Pty {
                what: "slcan",
                source,
            })?;
            served.slaves.push(slave);
            served.tasks.push(tokio::spawn(serve_slcan(
                master,
                ecu.clone(),
                config.can_ids,
                config.max_can_message,
                config.can_flow_control,
            )));
            served.endpoints.push(Endpoint::Slcan {
                pty,
                ids: config.can_ids,
            });
        }
        if let Some((iface, fd)) = &config.socketcan {
            let socket = SocketCan::open(iface, *fd)?;
            let describe = socket.describe();
            served.tasks.push(tokio::spawn(serve_socketcan(
                socket,
                ecu.clone(),
                config.can_ids,
                config.max_can_message,
                config.can_flow_control,
            )));
            served.endpoints.push(Endpoint::Socketcan {
                describe,
                ids: config.can_ids,
            });
        }
        if let Some(board) = &config.relay {
            let (master, slave, pty) = raw_pty().map_err(|source| ServeError::Pty {
                what: "relay",
                source,
            })?;
            served.slaves.push(slave);
            served.endpoints.push(Endpoint::Relay {
                pty,
                on: board.on_command().to_vec(),
                off: board.off_command().to_vec(),
            });
            served.tasks.push(tokio::spawn(serve_relay(
                master,
                board.clone(),
                ecu.clone(),
            )));
        }
        Ok(served)
    }

    /// A DoIP entity (a vehicle's gateway) in front of the ECUs of `routes`, each at its
    /// logical address; DoIP is its only endpoint.
    pub async fn start_gateway<B: Backend>(
        doip: &DoipEndpoint,
        routes: Routes<B>,
    ) -> Result<Served, ServeError> {
        let mut served = Served {
            endpoints: Vec::new(),
            tasks: Vec::new(),
            slaves: Vec::new(),
        };
        served.start_doip(doip, routes).await?;
        Ok(served)
    }

    /// Bind TCP and UDP on `d.addr` and serve `routes` behind the entity `d.entity`.
    async fn start_doip<B: Backend>(
        &mut self,
        d: &DoipEndpoint,
        routes: Routes<B>,
    ) -> Result<(), ServeError> {
        let bind = |proto, source| ServeError::Bind {
            proto,
            addr: d.addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(d.addr)
            .await
            .map_err(|e| bind("tcp", e))?;
        let addr = listener.local_addr().map_err(|e| bind("tcp", e))?;
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| bind("udp", e))?;
        let conn = doip::Config {
            entity: d.entity.clone(),
            ..doip::Config::default()
        };
        let sockets = Sockets::new(d.entity.max_sockets);
        self.tasks.push(tokio::spawn(serve_tcp_with(
            listener,
            routes.clone(),
            conn,
            sockets.clone(),
        )));
        self.tasks.push(tokio::spawn(serve_udp(
            udp,
            d.entity.clone(),
            routes,
            sockets,
        )));
        self.endpoints.push(Endpoint::Doip {
            addr,
            logical_address: d.entity.logical_address,
            gateway: d.entity.node_type == doip::NodeType::Gateway,
        });
        Ok(())
    }

    /// The DoIP address, if DoIP is served.
    pub fn doip_addr(&self) -> Option<SocketAddr> {
        self.endpoints.iter().find_map(|e| match e {
            Endpoint::Doip { addr, .. } => Some(*addr),
            _ => None,
        })
    }

    /// The slcan adapter's pty, if one is served.
    pub fn slcan_pty(&self) -> Option<&str> {
        self.endpoints.iter().find_map(|e| match e {
            Endpoint::Slcan { pty, .. } => Some(pty.as_str()),
            _ => None,
        })
    }

    /// Ends every endpoint's task and closes the ptys.
    pub fn stop(self) {}
}

impl Drop for Served {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.slaves.clear();
    }
}
