//! The tester's side of one TCP connection.

use std::collections::VecDeque;

use super::*;

/// Settings of a tester's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Protocol version of everything we send.
    pub version: u8,
    pub max_payload: u32,
    /// A_DoIP_Ctrl: how long to wait for the routing activation response.
    pub ctrl_timeout_us: u64,
    /// A_DoIP_Diagnostic_Message: how long to wait for a diagnostic ACK or NACK.
    pub ack_timeout_us: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            version: VERSION_2012,
            max_payload: DEFAULT_MAX_PAYLOAD,
            ctrl_timeout_us: 2_000_000,
            ack_timeout_us: 2_000_000,
        }
    }
}

/// What happened on a tester's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Activated {
        source: u16,
        entity: u16,
    },
    /// The entity refused routing activation (it closes the socket for most codes).
    ActivationRefused {
        code: RoutingActivationCode,
    },
    /// `source` (the ECU) accepted our diagnostic message.
    DiagnosticAck {
        source: u16,
        target: u16,
    },
    DiagnosticNack {
        source: u16,
        target: u16,
        code: DiagnosticNackCode,
    },
    /// A diagnostic message from the entity: the ECU's response.
    Diagnostic {
        source: u16,
        target: u16,
        data: Vec<u8>,
    },
    /// The entity refused one of our messages with a generic NACK.
    PeerNack(NackCode),
    /// Any other message from the entity (entity status response, …).
    Message(Message),
    /// A timeout or a refused message; the connection lives on.
    Error(DoipError),
    /// The stream is out of step; close the socket after flushing `poll_transmit`.
    Closed(DoipError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Idle,
    Activating { source: u16, deadline: u64 },
    Active { source: u16, entity: u16 },
}

/// A tester's side of one TCP connection to a DoIP entity.
///
/// Driven like [`Connection`]: [`ClientConnection::activate`] and
/// [`ClientConnection::send_diagnostic`] queue requests, [`ClientConnection::handle_bytes`]
/// takes what the entity sent, [`ClientConnection::handle_timeout`] runs at
/// [`ClientConnection::poll_timeout`]; after each, drain [`ClientConnection::poll_transmit`]
/// then [`ClientConnection::poll_event`]. Alive check requests are answered automatically.
/// One diagnostic message may await its ACK at a time.
#[derive(Clone, Debug)]
pub struct ClientConnection {
    cfg: ClientConfig,
    decoder: Decoder,
    state: ClientState,
    /// Target and deadline of the diagnostic message awaiting its ACK.
    pending_ack: Option<(u16, u64)>,
    closed: bool,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl ClientConnection {
    pub fn new(cfg: ClientConfig) -> Self {
        ClientConnection {
            decoder: Decoder::new(cfg.max_payload),
            state: ClientState::Idle,
            pending_ack: None,
            closed: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Our source address, once routing is active.
    pub fn active_source(&self) -> Option<u16> {
        match self.state {
            ClientState::Active { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Queue any message (entity status request, …).
    pub fn send_message(&mut self, msg: &Message) {
        self.out.push_back(msg.encode(self.cfg.version));
    }

    /// Request routing activation for tester address `source`.
    pub fn activate(
        &mut self,
        now: u64,
        source: u16,
        activation_type: ActivationType,
    ) -> Result<(), DoipError> {
        if self.closed {
            return Err(DoipError::Closed);
        }
        if let ClientState::Activating { .. } = self.state {
            return Err(DoipError::ActivationPending);
        }
        self.send_message(&Message::RoutingActivationRequest {
            source,
            activation_type,
            oem: None,
        });
        self.state = ClientState::Activating {
            source,
            deadline: now + self.cfg.ctrl_timeout_us,
        };
        Ok(())
    }

    /// Send a diagnostic request to `target`.
    pub fn send_diagnostic(&mut self, now: u64, target: u16, data: &[u8]) -> Result<(), DoipError> {
        if self.closed {
            return Err(DoipError::Closed);
        }
        let Some(source) = self.active_source() else {
            return Err(DoipError::NotActivated);
        };
        if let Some((target, _)) = self.pending_ack {
            return Err(DoipError::AckPending { target });
        }
        if data.is_empty() {
            return Err(DoipError::EmptyDiagnostic);
        }
        self.send_message(&Message::Diagnostic {
            source,
            target,
            data: data.to_vec(),
        });
        self.pending_ack = Some((target, now + self.cfg.ack_timeout_us));
        Ok(())
    }

    /// Feed bytes received from the entity.
    pub fn handle_bytes(&mut self, _now: u64, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.decoder.push(bytes);
        while !self.closed {
            match self.decoder.decode() {
                Ok(Some((_, msg))) => self.on_message(msg),
                Ok(None) => break,
                Err(e) => {
                    if let Some(code) = e.nack_code() {
                        self.send_message(&Message::GenericNack(code));
                    }
                    if e.closes_connection() {
                        self.closed = true;
                        self.events.push_back(ClientEvent::Closed(e));
                    } else {
                        self.events.push_back(ClientEvent::Error(e));
                    }
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        let event = match msg {
            Message::RoutingActivationResponse {
                tester,
                entity,
                code,
                ..
            } if matches!(self.state, ClientState::Activating { source, .. } if source == tester) => {
                if code == RoutingActivationCode::Success {
                    self.state = ClientState::Active {
                        source: tester,
                        entity,
                    };
                    ClientEvent::Activated {
                        source: tester,
                        entity,
                    }
                } else {
                    self.state = ClientState::Idle;
                    ClientEvent::ActivationRefused { code }
                }
            }
            Message::DiagnosticAck { source, target, .. } => {
                self.ack_arrived(source);
                ClientEvent::DiagnosticAck { source, target }
            }
            Message::DiagnosticNack {
                source,
                target,
                code,
                ..
            } => {
                self.ack_arrived(source);
                ClientEvent::DiagnosticNack {
                    source,
                    target,
                    code,
                }
            }
            Message::Diagnostic {
                source,
                target,
                data,
            } => ClientEvent::Diagnostic {
                source,
                target,
                data,
            },
            Message::AliveCheckRequest => {
                let source = match self.state {
                    ClientState::Active { source, .. } | ClientState::Activating { source, .. } => {
                        source
                    }
                    ClientState::Idle => 0,
                };
                return self.send_message(&Message::AliveCheckResponse { source });
            }
            Message::GenericNack(code) => ClientEvent::PeerNack(code),
            other => ClientEvent::Message(other),
        };
        self.events.push_back(event);
    }

    fn ack_arrived(&mut self, from: u16) {
        if self.pending_ack.is_some_and(|(target, _)| target == from) {
            self.pending_ack = None;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientConnection::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let ctrl = match self.state {
            ClientState::Activating { deadline, .. } => Some(deadline),
            _ => None,
        };
        ctrl.into_iter()
            .chain(self.pending_ack.map(|(_, d)| d))
            .min()
    }

    /// Expire the timers due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.closed {
            return;
        }
        if let ClientState::Activating { deadline, .. } = self.state
            && now >= deadline
        {
            self.state = ClientState::Idle;
            self.events
                .push_back(ClientEvent::Error(DoipError::ActivationTimeout {
                    timeout_us: self.cfg.ctrl_timeout_us,
                }));
        }
        if let Some((target, deadline)) = self.pending_ack
            && now >= deadline
        {
            self.pending_ack = None;
            self.events
                .push_back(ClientEvent::Error(DoipError::AckTimeout {
                    target,
                    timeout_us: self.cfg.ack_timeout_us,
                }));
        }
    }
}
