//! The entity's side of one TCP connection: routing activation, diagnostic messages, alive checks, timers.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use super::*;

/// Settings of the server side of one TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub entity: EntityInfo,
    /// Target address of the ECU behind this entity (physical addressing).
    pub ecu_address: u16,
    /// Further physical target addresses the entity routes to other ECUs behind it (a
    /// gateway); diagnostic messages to them are acknowledged and delivered like those to
    /// [`Config::ecu_address`].
    pub routed_addresses: Vec<u16>,
    /// Functional target addresses also delivered to the ECU.
    pub functional_addresses: Vec<u16>,
    /// Tester source addresses allowed to activate routing.
    pub tester_addresses: RangeInclusive<u16>,
    /// Largest payload accepted (generic NACK `0x02` above). Keep
    /// `entity.max_data_size` at this plus [`HEADER_LEN`].
    pub max_payload: u32,
    /// Largest diagnostic user data the ECU takes (diagnostic NACK `0x04` above).
    pub max_diagnostic_data: usize,
    /// Accept activation type `0xE0` (central security) without further authentication.
    pub central_security: bool,
    /// Let the I/O layer's socket registry decide each activation
    /// ([`Connection::complete_activation`]).
    pub defer_activation: bool,
    pub initial_inactivity_us: u64,
    pub general_inactivity_us: u64,
    pub alive_check_timeout_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entity: EntityInfo::default(),
            ecu_address: 0x0010,
            routed_addresses: Vec::new(),
            functional_addresses: vec![0xE400],
            tester_addresses: 0x0E00..=0x0FFF,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_diagnostic_data: DEFAULT_MAX_PAYLOAD as usize - 4,
            central_security: false,
            defer_activation: false,
            initial_inactivity_us: 2_000_000,
            general_inactivity_us: 300_000_000,
            alive_check_timeout_us: 500_000,
        }
    }
}

/// What happened on a server connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Only with [`Config::defer_activation`]: answer with [`Connection::complete_activation`].
    ActivationRequested {
        source: u16,
        activation_type: ActivationType,
    },
    RoutingActivated {
        source: u16,
        activation_type: ActivationType,
    },
    /// A diagnostic request for the ECU (already positively acknowledged).
    Diagnostic {
        source: u16,
        target: u16,
        data: Vec<u8>,
    },
    /// A diagnostic message was refused with a diagnostic NACK; the connection lives on.
    DiagnosticRefused {
        source: u16,
        target: u16,
        code: DiagnosticNackCode,
    },
    /// The tester answered our alive check.
    AliveCheckPassed { source: u16 },
    /// The tester sent us a generic header NACK.
    PeerNack(NackCode),
    /// A message was refused with a generic NACK and discarded; the connection lives on.
    Error(DoipError),
    /// The connection must close: flush [`Connection::poll_transmit`], then close the socket.
    Closed(DoipError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Routing {
    Inactive,
    Pending {
        source: u16,
        activation_type: ActivationType,
    },
    Active {
        source: u16,
    },
}

/// The DoIP entity's side of one TCP connection, fronting one ECU.
///
/// ## Driving it
///
/// 1. create it with [`Connection::new`] when the socket is accepted;
/// 2. feed received bytes to [`Connection::handle_bytes`], ECU responses to
///    [`Connection::send_diagnostic`], and call [`Connection::handle_timeout`] when the time from
///    [`Connection::poll_timeout`] has come;
/// 3. after each of these, drain [`Connection::poll_transmit`] to the socket, then drain
///    [`Connection::poll_event`] (requests for the ECU, activations, errors);
/// 4. once [`Connection::is_closed`] (also announced by [`Event::Closed`]), flush what
///    `poll_transmit` still holds — the last NACK or refusal — and close the socket. Input and
///    timers are ignored from then on.
#[derive(Clone, Debug)]
pub struct Connection {
    cfg: Config,
    decoder: Decoder,
    routing: Routing,
    /// Version for messages we originate.
    version: u8,
    inactivity_deadline: u64,
    alive_deadline: Option<u64>,
    closed: bool,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
}

impl Connection {
    /// A connection accepted at `now`; routing must be activated within the initial inactivity
    /// time.
    pub fn new(now: u64, cfg: Config) -> Self {
        Connection {
            decoder: Decoder::new(cfg.max_payload),
            routing: Routing::Inactive,
            version: cfg.entity.version,
            inactivity_deadline: now + cfg.initial_inactivity_us,
            alive_deadline: None,
            closed: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Entity status reported on this connection (open sockets, power mode).
    pub fn entity_mut(&mut self) -> &mut EntityInfo {
        &mut self.cfg.entity
    }

    /// Fault injection, see [`Decoder::set_available_memory`].
    pub fn set_available_memory(&mut self, available: Option<u32>) {
        self.decoder.set_available_memory(available);
    }

    /// The tester address routing is active for.
    pub fn active_source(&self) -> Option<u16> {
        match self.routing {
            Routing::Active { source } => Some(source),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn send(&mut self, version: u8, msg: &Message) {
        self.out.push_back(msg.encode(version));
    }

    fn close(&mut self, reason: DoipError) {
        if !self.closed {
            self.closed = true;
            self.alive_deadline = None;
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Feed bytes received on the socket.
    pub fn handle_bytes(&mut self, now: u64, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.decoder.push(bytes);
        while !self.closed {
            match self.decoder.decode() {
                Ok(Some((header, msg))) => self.on_message(now, header, msg),
                Ok(None) => break,
                Err(e) => {
                    let version = match e {
                        DoipError::IncorrectPattern { .. } => self.cfg.entity.version,
                        _ => self
                            .decoder
                            .version()
                            .map_or(self.version, |v| self.cfg.entity.reply_version(v)),
                    };
                    if let Some(code) = e.nack_code() {
                        self.send(version, &Message::GenericNack(code));
                    }
                    if e.closes_connection() {
                        self.close(e);
                    } else {
                        self.events.push_back(Event::Error(e));
                    }
                }
            }
        }
    }

    fn on_message(&mut self, now: u64, header: Header, msg: Message) {
        let version = self.cfg.entity.reply_version(header.version);
        self.version = version;
        if let Routing::Active { .. } = self.routing {
            self.inactivity_deadline = now + self.cfg.general_inactivity_us;
        }
        match msg {
            Message::RoutingActivationRequest {
                source,
                activation_type,
                ..
            } => self.on_activation(now, source, activation_type),
            Message::Diagnostic {
                source,
                target,
                data,
            } => self.on_diagnostic(source, target, data),
            Message::AliveCheckRequest => {
                let source = self.cfg.entity.logical_address;
                self.send(version, &Message::AliveCheckResponse { source });
            }
            Message::AliveCheckResponse { source } => {
                if self.alive_deadline.take().is_some() {
                    self.events.push_back(Event::AliveCheckPassed { source });
                }
            }
            Message::EntityStatusRequest => {
                let status = self.cfg.entity.status();
                self.send(version, &Message::EntityStatusResponse(status));
            }
            Message::PowerModeRequest => {
                let mode = self.cfg.entity.power_mode;
                self.send(version, &Message::PowerModeResponse(mode));
            }
            Message::GenericNack(code) => self.events.push_back(Event::PeerNack(code)),
            other => {
                // Known to the codec but not served on an entity's TCP socket.
                self.send(version, &Message::GenericNack(NackCode::UnknownPayloadType));
                self.events
                    .push_back(Event::Error(DoipError::UnknownPayloadType {
                        payload_type: other.payload_type(),
                        length: header.payload_length,
                    }));
            }
        }
    }

    fn activation_type_supported(&self, t: ActivationType) -> bool {
        match t {
            ActivationType::Default | ActivationType::WwhObd => true,
            ActivationType::CentralSecurity => self.cfg.central_security,
            ActivationType::Other(_) => false,
        }
    }

    fn on_activation(&mut self, now: u64, source: u16, activation_type: ActivationType) {
        let code = if !self.cfg.tester_addresses.contains(&source) {
            RoutingActivationCode::UnknownSourceAddress
        } else if !self.activation_type_supported(activation_type) {
            RoutingActivationCode::UnsupportedActivationType
        } else {
            match self.routing {
                Routing::Active { source: s } if s == source => {
                    // Already active for this source: confirm again, nothing changes.
                    let entity = self.cfg.entity.logical_address;
                    let response = Message::RoutingActivationResponse {
                        tester: source,
                        entity,
                        code: RoutingActivationCode::Success,
                        oem: None,
                    };
                    return self.send(self.version, &response);
                }
                // A repeat while the registry decides: the verdict answers both.
                Routing::Pending { source: s, .. } if s == source => return,
                Routing::Active { .. } | Routing::Pending { .. } => {
                    RoutingActivationCode::DifferentSourceAddress
                }
                Routing::Inactive if self.cfg.defer_activation => {
                    self.routing = Routing::Pending {
                        source,
                        activation_type,
                    };
                    return self.events.push_back(Event::ActivationRequested {
                        source,
                        activation_type,
                    });
                }
                Routing::Inactive => RoutingActivationCode::Success,
            }
        };
        self.finish_activation(now, source, activation_type, code);
    }

    fn finish_activation(
        &mut self,
        now: u64,
        source: u16,
        activation_type: ActivationType,
        code: RoutingActivationCode,
    ) {
        let response = Message::RoutingActivationResponse {
            tester: source,
            entity: self.cfg.entity.logical_address,
            code,
            oem: None,
        };
        self.send(self.version, &response);
        if code == RoutingActivationCode::Success {
            self.routing = Routing::Active { source };
            self.inactivity_deadline = now + self.cfg.general_inactivity_us;
            self.events.push_back(Event::RoutingActivated {
                source,
                activation_type,
            });
        } else if code.closes_socket() {
            self.close(DoipError::ActivationRefused {
                tester: source,
                code,
            });
        }
    }

    /// The I/O layer's verdict on the activation announced by [`Event::ActivationRequested`]:
    /// [`RoutingActivationCode::Success`], or a refusal such as
    /// [`RoutingActivationCode::AllSocketsRegistered`] or
    /// [`RoutingActivationCode::SourceAlreadyActive`] (after its alive checks).
    pub fn complete_activation(
        &mut self,
        now: u64,
        code: RoutingActivationCode,
    ) -> Result<(), DoipError> {
        if self.closed {
            return Err(DoipError::Closed);
        }
        let Routing::Pending {
            source,
            activation_type,
        } = self.routing
        else {
            return Err(DoipError::NoPendingActivation);
        };
        self.routing = Routing::Inactive;
        self.finish_activation(now, source, activation_type, code);
        Ok(())
    }

    fn on_diagnostic(&mut self, source: u16, target: u16, data: Vec<u8>) {
        let nack = |code| Message::DiagnosticNack {
            source: target,
            target: source,
            code,
            previous: Vec::new(),
        };
        if self.active_source() != Some(source) {
            self.send(
                self.version,
                &nack(DiagnosticNackCode::InvalidSourceAddress),
            );
            return self.close(DoipError::InvalidSourceAddress { address: source });
        }
        let code = if target != self.cfg.ecu_address
            && !self.cfg.routed_addresses.contains(&target)
            && !self.cfg.functional_addresses.contains(&target)
        {
            DiagnosticNackCode::UnknownTargetAddress
        } else if data.len() > self.cfg.max_diagnostic_data {
            DiagnosticNackCode::MessageTooLarge
        } else {
            let ack = Message::DiagnosticAck {
                source: target,
                target: source,
                code: 0x00,
                previous: Vec::new(),
            };
            self.send(self.version, &ack);
            return self.events.push_back(Event::Diagnostic {
                source,
                target,
                data,
            });
        };
        self.send(self.version, &nack(code));
        self.events.push_back(Event::DiagnosticRefused {
            source,
            target,
            code,
        });
    }

    /// Send the ECU's response `data` to the activated tester (diagnostic message from
    /// [`Config::ecu_address`]).
    pub fn send_diagnostic(&mut self, now: u64, data: &[u8]) -> Result<(), DoipError> {
        self.send_diagnostic_from(now, self.cfg.ecu_address, data)
    }

    /// Send the response `data` of the ECU at logical address `source` (one of the addresses
    /// the entity routes) to the activated tester.
    pub fn send_diagnostic_from(
        &mut self,
        now: u64,
        source: u16,
        data: &[u8],
    ) -> Result<(), DoipError> {
        if self.closed {
            return Err(DoipError::Closed);
        }
        let Some(tester) = self.active_source() else {
            return Err(DoipError::NotActivated);
        };
        if data.is_empty() {
            return Err(DoipError::EmptyDiagnostic);
        }
        let msg = Message::Diagnostic {
            source,
            target: tester,
            data: data.to_vec(),
        };
        self.send(self.version, &msg);
        self.inactivity_deadline = now + self.cfg.general_inactivity_us;
        Ok(())
    }

    /// Ask the tester whether it is still there (an alive check request); without an answer
    /// within the alive check timeout the connection closes. No-op while one is running.
    pub fn start_alive_check(&mut self, now: u64) -> Result<(), DoipError> {
        if self.closed {
            return Err(DoipError::Closed);
        }
        if self.alive_deadline.is_none() {
            self.send(self.version, &Message::AliveCheckRequest);
            self.alive_deadline = Some(now + self.cfg.alive_check_timeout_us);
        }
        Ok(())
    }

    /// The next message to write to the socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        Some(self.alive_deadline.map_or(self.inactivity_deadline, |a| {
            a.min(self.inactivity_deadline)
        }))
    }

    /// Expire the timers due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.closed {
            return;
        }
        if self.alive_deadline.is_some_and(|d| now >= d) {
            let timeout_us = self.cfg.alive_check_timeout_us;
            return self.close(DoipError::AliveCheckTimeout { timeout_us });
        }
        if now >= self.inactivity_deadline {
            let reason = match self.routing {
                Routing::Active { .. } => DoipError::GeneralInactivity {
                    timeout_us: self.cfg.general_inactivity_us,
                },
                _ => DoipError::InitialInactivity {
                    timeout_us: self.cfg.initial_inactivity_us,
                },
            };
            self.close(reason);
        }
    }
}
