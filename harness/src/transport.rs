//! How the tester's UDS client reaches an ECU: one UDS request out, UDS responses in.
//!
//! | layer | type | owns |
//! |---|---|---|
//! | interface | [`Transport`] | `send` one request (returns once the transport delivered it), `recv` the next response by a deadline, `reconnect` |
//! | DoIP over TCP | [`DoipTransport`] | the socket and the wall clock around the sans-IO [`ClientConnection`] |
//!
//! The UDS client above decides what a response means (responsePending, P2/P2*, matching
//! SIDs); a transport only moves bytes and reports delivery failures.
//!
//! ## DoIP: what each call does on the wire
//!
//! | call | sends | waits for | fails with |
//! |---|---|---|---|
//! | [`DoipTransport::connect`] | TCP connect, routing activation request (tester address, type `0x00`) | routing activation response `0x10` | [`TransportError::ActivationRefused`], A_DoIP_Ctrl timeout |
//! | [`Transport::send`] | diagnostic message (`0x8001`) to the ECU address | its diagnostic ACK (`0x8002`) | [`TransportError::DiagnosticNack`], A_DoIP_Diagnostic_Message timeout |
//! | [`Transport::recv`] | alive check responses, when the entity asks | a diagnostic message from the ECU address, or the deadline | [`TransportError::Closed`] |
//! | [`Transport::reconnect`] | a new TCP connection and routing activation | as `connect` | as `connect` |
//!
//! Time for the sans-IO core is microseconds since the TCP connection opened; the wall clock
//! is read only here.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use ecu_sim::proto::doip::{
    self, ActivationType, ClientConnection, ClientEvent, DiagnosticNackCode, DoipError, NackCode,
    RoutingActivationCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A way to exchange UDS messages with one ECU.
pub trait Transport: Send {
    /// Send one UDS request; returns once the transport has delivered it (DoIP: acknowledged).
    fn send(&mut self, request: &[u8]) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The next UDS message from the ECU, waiting until `deadline` at the latest; `Ok(None)`
    /// if none arrived by then.
    fn recv(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, TransportError>> + Send;

    /// Drop the connection and open a new one (after the peer closed it, e.g. across a reset).
    fn reconnect(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Why a transport could not deliver or receive.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: no connection within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("socket {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("the entity closed the connection")]
    Closed,
    #[error("routing activation of tester 0x{tester:04x} refused with code {code}")]
    ActivationRefused {
        tester: u16,
        code: RoutingActivationCode,
    },
    #[error("diagnostic message to 0x{target:04x} refused with diagnostic nack {code}")]
    DiagnosticNack {
        target: u16,
        code: DiagnosticNackCode,
    },
    #[error("the entity refused a message with generic header nack {0}")]
    PeerNack(NackCode),
    #[error("doip: {0}")]
    Doip(#[from] DoipError),
    /// The CAN backend under an ISO-TP transport failed.
    #[error("can: {0}")]
    Can(String),
    #[error("iso-tp: {0}")]
    IsoTp(ecu_sim::proto::isotp::IsoTpError),
}

/// Addresses and timeouts of a DoIP tester connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoipSettings {
    /// Our logical address (the tester's source address).
    pub tester: u16,
    /// The ECU's logical address (target of physically addressed requests).
    pub ecu: u16,
    pub activation_type: ActivationType,
    pub connect_timeout: Duration,
    /// Protocol version, A_DoIP_Ctrl and A_DoIP_Diagnostic_Message.
    pub client: doip::ClientConfig,
}

impl Default for DoipSettings {
    fn default() -> Self {
        DoipSettings {
            tester: 0x0E00,
            ecu: 0x0010,
            activation_type: ActivationType::Default,
            connect_timeout: Duration::from_secs(5),
            client: doip::ClientConfig::default(),
        }
    }
}

/// UDS over DoIP on one TCP connection.
#[derive(Debug)]
pub struct DoipTransport {
    addr: String,
    settings: DoipSettings,
    stream: TcpStream,
    conn: ClientConnection,
    /// Time zero of `conn`.
    opened: Instant,
    buf: Vec<u8>,
    responses: VecDeque<Vec<u8>>,
    activated: bool,
    acked: bool,
}

/// What woke [`DoipTransport::pump`].
enum Woke {
    Read(std::io::Result<usize>),
    Timer,
}

impl DoipTransport {
    /// Connect to the DoIP entity at `addr` (`host:port`) and activate routing.
    pub async fn connect(
        addr: impl Into<String>,
        settings: DoipSettings,
    ) -> Result<Self, TransportError> {
        let addr = addr.into();
        let stream = open(&addr, settings.connect_timeout).await?;
        let mut t = DoipTransport {
            conn: ClientConnection::new(settings.client.clone()),
            addr,
            settings,
            stream,
            opened: Instant::now(),
            buf: vec![0; 16 * 1024],
            responses: VecDeque::new(),
            activated: false,
            acked: false,
        };
        t.activate().await?;
        Ok(t)
    }

    pub fn settings(&self) -> &DoipSettings {
        &self.settings
    }

    /// Microseconds since the connection opened: the sans-IO core's clock.
    fn now(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    async fn activate(&mut self) -> Result<(), TransportError> {
        let now = self.now();
        self.conn
            .activate(now, self.settings.tester, self.settings.activation_type)?;
        self.flush().await?;
        while !self.activated {
            self.pump(None).await?;
        }
        tracing::debug!(
            "doip: routing activated for tester 0x{:04x} at {}",
            self.settings.tester,
            self.addr
        );
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        while let Some(bytes) = self.conn.poll_transmit() {
            self.stream
                .write_all(&bytes)
                .await
                .map_err(|source| TransportError::Io {
                    op: "write",
                    source,
                })?;
        }
        Ok(())
    }

    /// Wait for bytes, the core's next timer or `deadline`, whichever comes first; feed the
    /// core, send what it queued (alive check responses), then act on its events.
    async fn pump(&mut self, deadline: Option<Instant>) -> Result<(), TransportError> {
        let timer = self
            .conn
            .poll_timeout()
            .map(|t| self.opened + Duration::from_micros(t));
        let wake = [deadline, timer]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let woke = tokio::select! {
            r = self.stream.read(&mut self.buf) => Woke::Read(r),
            () = tokio::time::sleep_until(wake) => Woke::Timer,
        };
        let now = self.now();
        match woke {
            Woke::Read(Ok(0)) => return Err(TransportError::Closed),
            Woke::Read(Ok(n)) => self.conn.handle_bytes(now, &self.buf[..n]),
            Woke::Read(Err(source)) => return Err(TransportError::Io { op: "read", source }),
            Woke::Timer => self.conn.handle_timeout(now),
        }
        self.flush().await?;
        self.drain_events()
    }

    fn drain_events(&mut self) -> Result<(), TransportError> {
        let ecu = self.settings.ecu;
        while let Some(event) = self.conn.poll_event() {
            match event {
                ClientEvent::Activated { .. } => self.activated = true,
                ClientEvent::ActivationRefused { code } => {
                    return Err(TransportError::ActivationRefused {
                        tester: self.settings.tester,
                        code,
                    });
                }
                ClientEvent::DiagnosticAck { source, .. } if source == ecu => self.acked = true,
                ClientEvent::DiagnosticNack { source, code, .. } => {
                    return Err(TransportError::DiagnosticNack {
                        target: source,
                        code,
                    });
                }
                ClientEvent::Diagnostic { source, data, .. } if source == ecu => {
                    self.responses.push_back(data);
                }
                ClientEvent::PeerNack(code) => return Err(TransportError::PeerNack(code)),
                ClientEvent::Error(e) | ClientEvent::Closed(e) => return Err(e.into()),
                other => tracing::debug!("doip: ignored {other:?}"),
            }
        }
        Ok(())
    }
}

impl Transport for DoipTransport {
    async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
        self.acked = false;
        let now = self.now();
        self.conn.send_diagnostic(now, self.settings.ecu, request)?;
        self.flush().await?;
        // The core's A_DoIP_Diagnostic_Message timer bounds this wait.
        while !self.acked {
            self.pump(None).await?;
        }
        Ok(())
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
        loop {
            if let Some(r) = self.responses.pop_front() {
                return Ok(Some(r));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.pump(Some(deadline)).await?;
        }
    }

    async fn reconnect(&mut self) -> Result<(), TransportError> {
        let _ = self.stream.shutdown().await;
        self.stream = open(&self.addr, self.settings.connect_timeout).await?;
        self.conn = ClientConnection::new(self.settings.client.clone());
        self.opened = Instant::now();
        self.responses.clear();
        self.activated = false;
        self.acked = false;
        self.activate().await
    }
}

async fn open(addr: &str, timeout: Duration) -> Result<TcpStream, TransportError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::ConnectTimeout {
            addr: addr.to_string(),
            timeout,
        })?
        .map_err(|source| TransportError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    stream
        .set_nodelay(true)
        .map_err(|source| TransportError::Io {
            op: "set_nodelay",
            source,
        })?;
    Ok(stream)
}
