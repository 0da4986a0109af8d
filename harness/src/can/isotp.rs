//! UDS over ISO-TP over any [`CanBackend`]: the sans-IO ISO-TP core of the virtual ECU
//! ([`ecu_sim::proto::isotp`]) driven with the wall clock.
//!
//! | call | on the bus | fails with |
//! |---|---|---|
//! | [`Transport::send`] | single frame, or first frame + consecutive frames as the ECU's flow control allows | [`TransportError::IsoTp`] (no flow control within N_Bs, overflow), [`TransportError::Can`] |
//! | [`Transport::recv`] | flow control for a multi-frame response | [`TransportError::Can`]; a response that breaks off is lost (P2 above notices) |
//! | [`Transport::reconnect`] | nothing: CAN has no connection; the ISO-TP state starts over | — |

use std::collections::VecDeque;
use std::time::Duration;

use ecu_sim::can::frame::Frame;
use ecu_sim::proto::isotp::{self, IsoTp, IsoTpError};
use tokio::time::Instant;

use super::{CanBackend, CanError};
use crate::transport::{Transport, TransportError};

/// The ISO-TP side of a CAN diagnostic connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoTpSettings {
    /// Physical request identifier (tester → ECU).
    pub tx_id: u32,
    /// Response identifier (ECU → tester).
    pub rx_id: u32,
    /// CAN FD frames (up to 64 bytes).
    pub fd: bool,
    /// Frame padding byte.
    pub padding: Option<u8>,
}

impl Default for IsoTpSettings {
    fn default() -> Self {
        IsoTpSettings {
            tx_id: 0x7E0,
            rx_id: 0x7E8,
            fd: false,
            padding: Some(0xCC),
        }
    }
}

impl IsoTpSettings {
    /// The ISO-TP core settings the tester uses (also on the virtual bus of a scenario).
    pub fn core(&self) -> isotp::Config {
        isotp::Config {
            fd: self.fd,
            padding: self.padding,
            // Flash blocks are several KiB; accept what the ECU sends.
            max_message: 1 << 20,
            ..isotp::Config::new(self.tx_id, self.rx_id)
        }
    }
}

/// UDS over ISO-TP over a [`CanBackend`].
#[derive(Debug)]
pub struct IsoTpTransport<B> {
    backend: B,
    settings: IsoTpSettings,
    core: IsoTp,
    /// Time zero of `core`.
    opened: Instant,
    sent: bool,
    responses: VecDeque<Vec<u8>>,
}

impl<B: CanBackend> IsoTpTransport<B> {
    pub fn new(backend: B, settings: IsoTpSettings) -> Self {
        IsoTpTransport {
            core: IsoTp::new(settings.core()),
            backend,
            settings,
            opened: Instant::now(),
            sent: false,
            responses: Default::default(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    fn fail(&self, e: CanError) -> TransportError {
        TransportError::Can(e.to_string())
    }

    /// Send what the core queued, wait for a frame, the core's next timer or `deadline`,
    /// feed the core, act on its events.
    async fn pump(&mut self, deadline: Option<Instant>) -> Result<(), TransportError> {
        self.flush().await?;
        let timer = self
            .core
            .poll_timeout()
            .map(|t| self.opened + Duration::from_micros(t));
        let wake = [deadline, timer]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let got = self.backend.recv(wake).await;
        match got {
            Ok(Some(frame)) => {
                let now = self.now();
                self.core.handle_frame(now, &frame.into_isotp());
            }
            Ok(None) => {}
            Err(e) => return Err(self.fail(e)),
        }
        let now = self.now();
        self.core.handle_timeout(now);
        self.flush().await?;
        self.drain()
    }

    /// Act on the core's events.
    fn drain(&mut self) -> Result<(), TransportError> {
        while let Some(event) = self.core.poll_event() {
            match event {
                isotp::Event::Received(data) => self.responses.push_back(data),
                isotp::Event::Sent => self.sent = true,
                isotp::Event::Error(e) => match e {
                    // Our request did not go out (no flow control): the caller's P2 handles
                    // a lost response, but a lost request must fail now.
                    IsoTpError::FlowControlTimeout | IsoTpError::PeerOverflow { .. } => {
                        return Err(TransportError::IsoTp(e));
                    }
                    // A response that broke off: it is lost, as on a real bus.
                    other => tracing::debug!("iso-tp: {other}"),
                },
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        loop {
            let now = self.now();
            let Some(f) = self.core.poll_transmit(now) else {
                return Ok(());
            };
            let frame = Frame::from_isotp(f, self.settings.fd);
            if let Err(e) = self.backend.send(&frame).await {
                return Err(self.fail(e));
            }
        }
    }
}

impl<B: CanBackend> Transport for IsoTpTransport<B> {
    async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
        self.sent = false;
        let now = self.now();
        self.core
            .send(now, request)
            .map_err(TransportError::IsoTp)?;
        // A single frame is sent at once; N_Bs (no flow control) bounds the wait for more.
        self.flush().await?;
        self.drain()?;
        while !self.sent {
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

    /// CAN has no connection: start the ISO-TP state over (a half-received response from
    /// before an ECU reset is gone).
    async fn reconnect(&mut self) -> Result<(), TransportError> {
        self.core = IsoTp::new(self.settings.core());
        self.opened = Instant::now();
        self.responses.clear();
        self.sent = false;
        Ok(())
    }
}
