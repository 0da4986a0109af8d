//! DoIP (ISO 13400-2:2012 and :2019) codec and connection state machines, sans-IO: bytes and
//! the current time (µs) in; bytes, deadlines and events out. Nothing here reads a clock or
//! touches a socket; the I/O layer owns the TCP and UDP sockets on port 13400.
//!
//! Three layers, as everywhere in this crate:
//!
//! | layer | types |
//! |---|---|
//! | codec | [`Header`] (zero-copy view of the 8-byte header), [`Message`], [`Decoder`] (stream reassembly) |
//! | server (DoIP entity, one TCP socket) | [`Connection`], [`Config`], [`Event`]; UDP: [`udp_response`], [`EntityInfo::announcement`] |
//! | client (tester, one TCP socket) | [`ClientConnection`], [`ClientConfig`], [`ClientEvent`] |
//!
//! ## Generic header (8 bytes, big endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version: `0x02` (2012), `0x03` (2019), `0xFF` (default, vehicle identification requests only) |
//! | 1 | 1 | inverse protocol version (`!version`) |
//! | 2 | 2 | payload type |
//! | 4 | 4 | payload length (bytes after the header) |
//!
//! ## Header checks, in the order of ISO 13400-2 (generic header NACK `0x0000`)
//!
//! | order | check | NACK | afterwards |
//! |---|---|---|---|
//! | 1 | version is 2 or 3 (or `0xFF` for `0x0001..=0x0003`) and inverse matches | `0x00` incorrect pattern | close the connection |
//! | 2 | payload type known | `0x01` unknown payload type | discard the message, keep the connection |
//! | 3 | payload length ≤ `max_payload` | `0x02` message too large | discard, keep |
//! | 4 | payload length ≤ the memory available (fault injection, [`Decoder::set_available_memory`]) | `0x03` out of memory | discard, keep |
//! | 5 | payload length valid for the type (table below) | `0x04` invalid payload length | close the connection |
//!
//! A payload type the codec knows but that makes no sense on the socket it arrives on (a
//! vehicle identification request over TCP, any response type sent to the entity) is answered
//! like an unknown one: NACK `0x01`, message discarded.
//!
//! ## Payload types
//!
//! | type | message | payload length | layout after the header |
//! |---|---|---|---|
//! | `0x0000` | generic header NACK | 1 | NACK code |
//! | `0x0001` | vehicle identification request | 0 | |
//! | `0x0002` | … with EID | 6 | EID |
//! | `0x0003` | … with VIN | 17 | VIN |
//! | `0x0004` | vehicle announcement / identification response | 32 or 33 | VIN 17, logical address 2, EID 6, GID 6, further action 1, \[VIN/GID sync status 1\] |
//! | `0x0005` | routing activation request | 7 or 11 | source address 2, activation type 1, reserved 4, \[OEM 4\] |
//! | `0x0006` | routing activation response | 9 or 13 | tester address 2, entity address 2, response code 1, reserved 4, \[OEM 4\] |
//! | `0x0007` | alive check request | 0 | |
//! | `0x0008` | alive check response | 2 | source address |
//! | `0x4001` | entity status request | 0 | |
//! | `0x4002` | entity status response | 3 or 7 | node type 1, max sockets 1, open sockets 1, \[max data size 4\] |
//! | `0x4003` | diagnostic power mode request | 0 | |
//! | `0x4004` | diagnostic power mode response | 1 | power mode |
//! | `0x8001` | diagnostic message | ≥ 5 | source 2, target 2, user data (≥ 1) |
//! | `0x8002` | diagnostic message positive ACK | ≥ 5 | source 2, target 2, ACK code `0x00`, \[previous diagnostic data\] |
//! | `0x8003` | diagnostic message negative ACK | ≥ 5 | source 2, target 2, NACK code, \[previous diagnostic data\] |
//!
//! Reserved bytes are sent as zero and ignored on receipt.
//!
//! ## Routing activation response codes (server side)
//!
//! | code | meaning | produced when | socket |
//! |---|---|---|---|
//! | `0x00` | unknown source address | source outside [`Config::tester_addresses`] | closed |
//! | `0x01` | all sockets registered | the I/O layer says so via [`Connection::complete_activation`] | closed |
//! | `0x02` | different source address | this socket is already activated (or pending) for another source | closed |
//! | `0x03` | source address already active | the I/O layer says so via [`Connection::complete_activation`] | closed |
//! | `0x06` | unsupported activation type | type other than `0x00`, `0x01`, and `0xE0` unless [`Config::central_security`] | closed |
//! | `0x10` | routing successfully activated | otherwise; again on a repeated request with the same source | open |
//!
//! ## Timers (microseconds, configurable)
//!
//! | timer | default | runs | on expiry |
//! |---|---|---|---|
//! | T_TCP_Initial_Inactivity | 2 000 000 | from [`Connection::new`] until routing is activated | close |
//! | T_TCP_General_Inactivity | 300 000 000 | after activation; restarted by every well-formed message received and every diagnostic message sent | close |
//! | alive check response | 500 000 | after [`Connection::start_alive_check`] | close |
//! | A_DoIP_Ctrl (client) | 2 000 000 | after [`ClientConnection::activate`] | [`DoipError::ActivationTimeout`] |
//! | A_DoIP_Diagnostic_Message (client) | 2 000 000 | after [`ClientConnection::send_diagnostic`] until the ACK/NACK | [`DoipError::AckTimeout`] |
//!
//! ## Choices where the standard leaves room
//!
//! * A diagnostic message whose source address is not activated on the socket (before routing
//!   activation, or from another address afterwards) is answered with diagnostic NACK `0x02`
//!   (invalid source address) and the connection is closed, as ISO 13400-2 and AUTOSAR
//!   (SWS_DoIP_00123) require.
//! * Every diagnostic message is acknowledged (`0x8002`) as soon as it is accepted, before the
//!   ECU sees it; the ACK carries no copy of the previous diagnostic data.
//! * Our replies use the protocol version of the request they answer; messages we originate
//!   (diagnostic responses, alive check requests) use the version of the last well-formed request
//!   on the socket; before any, and for replies to `0xFF` requests, [`EntityInfo::version`].
//! * Entity status and power mode requests are UDP messages in the standard; the connection also
//!   answers them over TCP. An alive check *request* from the tester is answered with an alive
//!   check response carrying the entity's address.
//! * Diagnostic messages to [`Config::ecu_address`] or to one of
//!   [`Config::functional_addresses`] (default `0xE400`) are delivered; others get NACK `0x03`.
//!   User data above [`Config::max_diagnostic_data`] gets NACK `0x04`.
//! * The multi-socket registry (codes `0x01`, `0x03`, alive checks of other sockets) belongs to
//!   the I/O layer: with [`Config::defer_activation`] the connection reports
//!   [`Event::ActivationRequested`] and waits for [`Connection::complete_activation`]; without
//!   it, a valid request is accepted at once.
//! * On UDP a datagram shorter than a header is dropped silently; one whose length disagrees
//!   with its header's payload length gets NACK `0x04`; responses from other entities are
//!   ignored.

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeInclusive;

/// TCP port of DoIP entities (TCP_DATA).
pub const TCP_PORT: u16 = 13400;
/// UDP port for vehicle identification (UDP_DISCOVERY).
pub const UDP_PORT: u16 = 13400;
/// Protocol version of ISO 13400-2:2012.
pub const VERSION_2012: u8 = 0x02;
/// Protocol version of ISO 13400-2:2019.
pub const VERSION_2019: u8 = 0x03;
/// Default protocol version, only valid on vehicle identification requests.
pub const VERSION_DEFAULT: u8 = 0xFF;
/// Length of the generic header.
pub const HEADER_LEN: usize = 8;
/// Default largest payload accepted: 64 KiB of diagnostic user data plus source and target.
pub const DEFAULT_MAX_PAYLOAD: u32 = 0x1_0000 + 4;

/// Payload type numbers.
pub mod payload_type {
    pub const GENERIC_NACK: u16 = 0x0000;
    pub const VEHICLE_ID_REQUEST: u16 = 0x0001;
    pub const VEHICLE_ID_REQUEST_EID: u16 = 0x0002;
    pub const VEHICLE_ID_REQUEST_VIN: u16 = 0x0003;
    pub const VEHICLE_ANNOUNCEMENT: u16 = 0x0004;
    pub const ROUTING_ACTIVATION_REQUEST: u16 = 0x0005;
    pub const ROUTING_ACTIVATION_RESPONSE: u16 = 0x0006;
    pub const ALIVE_CHECK_REQUEST: u16 = 0x0007;
    pub const ALIVE_CHECK_RESPONSE: u16 = 0x0008;
    pub const ENTITY_STATUS_REQUEST: u16 = 0x4001;
    pub const ENTITY_STATUS_RESPONSE: u16 = 0x4002;
    pub const POWER_MODE_REQUEST: u16 = 0x4003;
    pub const POWER_MODE_RESPONSE: u16 = 0x4004;
    pub const DIAGNOSTIC_MESSAGE: u16 = 0x8001;
    pub const DIAGNOSTIC_ACK: u16 = 0x8002;
    pub const DIAGNOSTIC_NACK: u16 = 0x8003;
}
use payload_type as pt;

/// A one-byte code: the named values, plus `Other` for reserved or OEM values (never construct
/// `Other` with a value that has a name: it would not compare equal after a round trip).
macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $var:ident = $val:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $var,)*
            /// A value without a name here (reserved or OEM-specific).
            Other(u8),
        }
        impl From<u8> for $name {
            fn from(b: u8) -> Self {
                match b {
                    $($val => $name::$var,)*
                    other => $name::Other(other),
                }
            }
        }
        impl From<$name> for u8 {
            fn from(c: $name) -> u8 {
                match c {
                    $($name::$var => $val,)*
                    $name::Other(b) => b,
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#04x}", u8::from(*self))
            }
        }
    };
}

code_enum! {
    /// Generic header NACK code (payload type `0x0000`).
    NackCode {
        IncorrectPattern = 0x00,
        UnknownPayloadType = 0x01,
        MessageTooLarge = 0x02,
        OutOfMemory = 0x03,
        InvalidPayloadLength = 0x04,
    }
}

code_enum! {
    /// Diagnostic message NACK code (payload type `0x8003`).
    DiagnosticNackCode {
        InvalidSourceAddress = 0x02,
        UnknownTargetAddress = 0x03,
        MessageTooLarge = 0x04,
        OutOfMemory = 0x05,
        TargetUnreachable = 0x06,
        UnknownNetwork = 0x07,
        TransportProtocolError = 0x08,
    }
}

code_enum! {
    /// Routing activation response code (payload type `0x0006`).
    RoutingActivationCode {
        UnknownSourceAddress = 0x00,
        AllSocketsRegistered = 0x01,
        DifferentSourceAddress = 0x02,
        SourceAlreadyActive = 0x03,
        MissingAuthentication = 0x04,
        RejectedConfirmation = 0x05,
        UnsupportedActivationType = 0x06,
        /// 2019: a TLS connection is required.
        TlsRequired = 0x07,
        Success = 0x10,
        ConfirmationRequired = 0x11,
    }
}

impl RoutingActivationCode {
    /// Whether the entity closes the socket after sending this code (ISO 13400-2 table of
    /// routing activation response codes).
    pub fn closes_socket(self) -> bool {
        use RoutingActivationCode as C;
        matches!(
            self,
            C::UnknownSourceAddress
                | C::AllSocketsRegistered
                | C::DifferentSourceAddress
                | C::SourceAlreadyActive
                | C::RejectedConfirmation
                | C::UnsupportedActivationType
        )
    }
}

code_enum! {
    /// Routing activation type (payload type `0x0005`).
    ActivationType {
        Default = 0x00,
        WwhObd = 0x01,
        CentralSecurity = 0xE0,
    }
}

code_enum! {
    /// Node type in the entity status response.
    NodeType {
        Gateway = 0x00,
        Node = 0x01,
    }
}

code_enum! {
    /// Diagnostic power mode (payload type `0x4004`).
    PowerMode {
        NotReady = 0x00,
        Ready = 0x01,
        NotSupported = 0x02,
    }
}

/// Everything that goes wrong in the DoIP layer: header checks (each maps to a generic NACK
/// code), refusals and timeouts that close a connection, and API misuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DoipError {
    #[error(
        "incorrect pattern: version {version:#04x}, inverse {inverse:#04x}, payload type {payload_type:#06x}"
    )]
    IncorrectPattern {
        version: u8,
        inverse: u8,
        payload_type: u16,
    },
    #[error("unknown payload type {payload_type:#06x} ({length} payload bytes discarded)")]
    UnknownPayloadType { payload_type: u16, length: u32 },
    #[error("payload of {length} bytes exceeds the maximum of {max}")]
    MessageTooLarge { length: u32, max: u32 },
    #[error("payload of {length} bytes exceeds the {available} bytes of memory available")]
    OutOfMemory { length: u32, available: u32 },
    #[error("payload length {length} is invalid for payload type {payload_type:#06x}")]
    InvalidPayloadLength { payload_type: u16, length: u32 },
    #[error("no routing activation within {timeout_us} µs of connecting")]
    InitialInactivity { timeout_us: u64 },
    #[error("no traffic for {timeout_us} µs")]
    GeneralInactivity { timeout_us: u64 },
    #[error("no alive check response within {timeout_us} µs")]
    AliveCheckTimeout { timeout_us: u64 },
    #[error("routing activation of {tester:#06x} refused with code {code}")]
    ActivationRefused {
        tester: u16,
        code: RoutingActivationCode,
    },
    #[error("diagnostic message from {address:#06x}, which is not activated on this socket")]
    InvalidSourceAddress { address: u16 },
    #[error("routing is not active on this connection")]
    NotActivated,
    #[error("the connection is closed")]
    Closed,
    #[error("diagnostic message without user data")]
    EmptyDiagnostic,
    #[error("no routing activation is waiting for a verdict")]
    NoPendingActivation,
    #[error("a routing activation is already in progress")]
    ActivationPending,
    #[error("diagnostic message to {target:#06x} still awaits its acknowledgement")]
    AckPending { target: u16 },
    #[error("no routing activation response within {timeout_us} µs")]
    ActivationTimeout { timeout_us: u64 },
    #[error("no acknowledgement from {target:#06x} within {timeout_us} µs")]
    AckTimeout { target: u16, timeout_us: u64 },
}

impl DoipError {
    /// The generic header NACK code this error is answered with, if any.
    pub fn nack_code(&self) -> Option<NackCode> {
        match self {
            DoipError::IncorrectPattern { .. } => Some(NackCode::IncorrectPattern),
            DoipError::UnknownPayloadType { .. } => Some(NackCode::UnknownPayloadType),
            DoipError::MessageTooLarge { .. } => Some(NackCode::MessageTooLarge),
            DoipError::OutOfMemory { .. } => Some(NackCode::OutOfMemory),
            DoipError::InvalidPayloadLength { .. } => Some(NackCode::InvalidPayloadLength),
            _ => None,
        }
    }

    /// Whether a header error leaves the stream out of step, so the connection must close.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            DoipError::IncorrectPattern { .. } | DoipError::InvalidPayloadLength { .. }
        )
    }
}

/// Valid payload lengths of one payload type.
#[derive(Clone, Copy, Debug)]
enum Len {
    Exact(u32),
    Either(u32, u32),
    AtLeast(u32),
}

impl Len {
    fn of(payload_type: u16) -> Option<Len> {
        Some(match payload_type {
            pt::GENERIC_NACK => Len::Exact(1),
            pt::VEHICLE_ID_REQUEST
            | pt::ALIVE_CHECK_REQUEST
            | pt::ENTITY_STATUS_REQUEST
            | pt::POWER_MODE_REQUEST => Len::Exact(0),
            pt::VEHICLE_ID_REQUEST_EID => Len::Exact(6),
            pt::VEHICLE_ID_REQUEST_VIN => Len::Exact(17),
            pt::VEHICLE_ANNOUNCEMENT => Len::Either(32, 33),
            pt::ROUTING_ACTIVATION_REQUEST => Len::Either(7, 11),
            pt::ROUTING_ACTIVATION_RESPONSE => Len::Either(9, 13),
            pt::ALIVE_CHECK_RESPONSE => Len::Exact(2),
            pt::ENTITY_STATUS_RESPONSE => Len::Either(3, 7),
            pt::POWER_MODE_RESPONSE => Len::Exact(1),
            pt::DIAGNOSTIC_MESSAGE | pt::DIAGNOSTIC_ACK | pt::DIAGNOSTIC_NACK => Len::AtLeast(5),
            _ => return None,
        })
    }

    fn accepts(self, len: u32) -> bool {
        match self {
            Len::Exact(n) => len == n,
            Len::Either(a, b) => len == a || len == b,
            Len::AtLeast(n) => len >= n,
        }
    }
}

/// The generic DoIP header, parsed from the first 8 bytes of a buffer without copying the
/// payload. The inverse version is not stored: it is checked on parse and derived on encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub payload_type: u16,
    pub payload_length: u32,
}

impl Header {
    /// Parse and check the pattern (check 1). `Ok(None)`: fewer than 8 bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, DoipError> {
        let Some(b) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (version, inverse) = (b[0], b[1]);
        let payload_type = u16::from_be_bytes([b[2], b[3]]);
        let payload_length = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let version_ok = match version {
            VERSION_2012 | VERSION_2019 => true,
            VERSION_DEFAULT => matches!(
                payload_type,
                pt::VEHICLE_ID_REQUEST..=pt::VEHICLE_ID_REQUEST_VIN
            ),
            _ => false,
        };
        if !version_ok || inverse != !version {
            return Err(DoipError::IncorrectPattern {
                version,
                inverse,
                payload_type,
            });
        }
        Ok(Some(Header {
            version,
            payload_type,
            payload_length,
        }))
    }

    /// Checks 2–5: payload type known, not larger than `max_payload`, not larger than the
    /// memory `available` (if limited), and a valid length for the type.
    pub fn validate(&self, max_payload: u32, available: Option<u32>) -> Result<(), DoipError> {
        let length = self.payload_length;
        let Some(shape) = Len::of(self.payload_type) else {
            return Err(DoipError::UnknownPayloadType {
                payload_type: self.payload_type,
                length,
            });
        };
        if length > max_payload {
            return Err(DoipError::MessageTooLarge {
                length,
                max: max_payload,
            });
        }
        if let Some(available) = available
            && length > available
        {
            return Err(DoipError::OutOfMemory { length, available });
        }
        if !shape.accepts(length) {
            return Err(DoipError::InvalidPayloadLength {
                payload_type: self.payload_type,
                length,
            });
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [t0, t1] = self.payload_type.to_be_bytes();
        let [l0, l1, l2, l3] = self.payload_length.to_be_bytes();
        [self.version, !self.version, t0, t1, l0, l1, l2, l3]
    }
}

/// Payload of a vehicle announcement / vehicle identification response (`0x0004`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VehicleAnnouncement {
    pub vin: [u8; 17],
    pub logical_address: u16,
    pub eid: [u8; 6],
    pub gid: [u8; 6],
    /// `0x00` no further action, `0x10` routing activation required for central security.
    pub further_action: u8,
    /// VIN/GID synchronisation status (optional byte).
    pub sync_status: Option<u8>,
}

/// Payload of an entity status response (`0x4002`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityStatus {
    pub node_type: NodeType,
    pub max_sockets: u8,
    pub open_sockets: u8,
    /// Largest DoIP message (header included) the entity processes (optional field).
    pub max_data_size: Option<u32>,
}

/// One DoIP message of any payload type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    GenericNack(NackCode),
    VehicleIdRequest,
    VehicleIdRequestEid([u8; 6]),
    VehicleIdRequestVin([u8; 17]),
    VehicleAnnouncement(VehicleAnnouncement),
    RoutingActivationRequest {
        source: u16,
        activation_type: ActivationType,
        oem: Option<[u8; 4]>,
    },
    RoutingActivationResponse {
        tester: u16,
        entity: u16,
        code: RoutingActivationCode,
        oem: Option<[u8; 4]>,
    },
    AliveCheckRequest,
    AliveCheckResponse {
        source: u16,
    },
    EntityStatusRequest,
    EntityStatusResponse(EntityStatus),
    PowerModeRequest,
    PowerModeResponse(PowerMode),
    Diagnostic {
        source: u16,
        target: u16,
        data: Vec<u8>,
    },
    /// Positive ACK; `code` is `0x00` (routing confirmation).
    DiagnosticAck {
        source: u16,
        target: u16,
        code: u8,
        previous: Vec<u8>,
    },
    DiagnosticNack {
        source: u16,
        target: u16,
        code: DiagnosticNackCode,
        previous: Vec<u8>,
    },
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&s[..N]);
    a
}

impl Message {
    pub fn payload_type(&self) -> u16 {
        match self {
            Message::GenericNack(_) => pt::GENERIC_NACK,
            Message::VehicleIdRequest => pt::VEHICLE_ID_REQUEST,
            Message::VehicleIdRequestEid(_) => pt::VEHICLE_ID_REQUEST_EID,
            Message::VehicleIdRequestVin(_) => pt::VEHICLE_ID_REQUEST_VIN,
            Message::VehicleAnnouncement(_) => pt::VEHICLE_ANNOUNCEMENT,
            Message::RoutingActivationRequest { .. } => pt::ROUTING_ACTIVATION_REQUEST,
            Message::RoutingActivationResponse { .. } => pt::ROUTING_ACTIVATION_RESPONSE,
            Message::AliveCheckRequest => pt::ALIVE_CHECK_REQUEST,
            Message::AliveCheckResponse { .. } => pt::ALIVE_CHECK_RESPONSE,
            Message::EntityStatusRequest => pt::ENTITY_STATUS_REQUEST,
            Message::EntityStatusResponse(_) => pt::ENTITY_STATUS_RESPONSE,
            Message::PowerModeRequest => pt::POWER_MODE_REQUEST,
            Message::PowerModeResponse(_) => pt::POWER_MODE_RESPONSE,
            Message::Diagnostic { .. } => pt::DIAGNOSTIC_MESSAGE,
            Message::DiagnosticAck { .. } => pt::DIAGNOSTIC_ACK,
            Message::DiagnosticNack { .. } => pt::DIAGNOSTIC_NACK,
        }
    }

    /// Decode a payload of type `payload_type` (the bytes after the header, exactly).
    pub fn decode(payload_type: u16, p: &[u8]) -> Result<Message, DoipError> {
        let length = u32::try_from(p.len()).unwrap_or(u32::MAX);
        let unknown = DoipError::UnknownPayloadType {
            payload_type,
            length,
        };
        let shape = Len::of(payload_type).ok_or(unknown.clone())?;
        if !shape.accepts(length) {
            return Err(DoipError::InvalidPayloadLength {
                payload_type,
                length,
            });
        }
        let u16_at = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        let oem = |at: usize| (p.len() > at).then(|| array(&p[at..]));
        Ok(match payload_type {
            pt::GENERIC_NACK => Message::GenericNack(p[0].into()),
            pt::VEHICLE_ID_REQUEST => Message::VehicleIdRequest,
            pt::VEHICLE_ID_REQUEST_EID => Message::VehicleIdRequestEid(array(p)),
            pt::VEHICLE_ID_REQUEST_VIN => Message::VehicleIdRequestVin(array(p)),
            pt::VEHICLE_ANNOUNCEMENT => Message::VehicleAnnouncement(VehicleAnnouncement {
                vin: array(p),
                logical_address: u16_at(17),
                eid: array(&p[19..]),
                gid: array(&p[25..]),
                further_action: p[31],
                sync_status: p.get(32).copied(),
            }),
            pt::ROUTING_ACTIVATION_REQUEST => Message::RoutingActivationRequest {
                source: u16_at(0),
                activation_type: p[2].into(),
                oem: oem(7),
            },
            pt::ROUTING_ACTIVATION_RESPONSE => Message::RoutingActivationResponse {
                tester: u16_at(0),
                entity: u16_at(2),
                code: p[4].into(),
                oem: oem(9),
            },
            pt::ALIVE_CHECK_REQUEST => Message::AliveCheckRequest,
            pt::ALIVE_CHECK_RESPONSE => Message::AliveCheckResponse { source: u16_at(0) },
            pt::ENTITY_STATUS_REQUEST => Message::EntityStatusRequest,
            pt::ENTITY_STATUS_RESPONSE => Message::EntityStatusResponse(EntityStatus {
                node_type: p[0].into(),
                max_sockets: p[1],
                open_sockets: p[2],
                max_data_size: (p.len() == 7).then(|| u32::from_be_bytes(array(&p[3..]))),
            }),
            pt::POWER_MODE_REQUEST => Message::PowerModeRequest,
            pt::POWER_MODE_RESPONSE => Message::PowerModeResponse(p[0].into()),
            pt::DIAGNOSTIC_MESSAGE => Message::Diagnostic {
                source: u16_at(0),
                target: u16_at(2),
                data: p[4..].to_vec(),
            },
            pt::DIAGNOSTIC_ACK => Message::DiagnosticAck {
                source: u16_at(0),
                target: u16_at(2),
                code: p[4],
                previous: p[5..].to_vec(),
            },
            pt::DIAGNOSTIC_NACK => Message::DiagnosticNack {
                source: u16_at(0),
                target: u16_at(2),
                code: p[4].into(),
                previous: p[5..].to_vec(),
            },
            _ => return Err(unknown),
        })
    }

    /// Append the payload (without header) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::GenericNack(code) => out.push((*code).into()),
            Message::VehicleIdRequest
            | Message::AliveCheckRequest
            | Message::EntityStatusRequest
            | Message::PowerModeRequest => {}
            Message::VehicleIdRequestEid(eid) => out.extend_from_slice(eid),
            Message::VehicleIdRequestVin(vin) => out.extend_from_slice(vin),
            Message::VehicleAnnouncement(a) => {
                out.extend_from_slice(&a.vin);
                out.extend_from_slice(&a.logical_address.to_be_bytes());
                out.extend_from_slice(&a.eid);
                out.extend_from_slice(&a.gid);
                out.push(a.further_action);
                out.extend(a.sync_status);
            }
            Message::RoutingActivationRequest {
                source,
                activation_type,
                oem,
            } => {
                out.extend_from_slice(&source.to_be_bytes());
                out.push((*activation_type).into());
                out.extend_from_slice(&[0; 4]);
                out.extend(oem.iter().flatten());
            }
            Message::RoutingActivationResponse {
                tester,
                entity,
                code,
                oem,
            } => {
                out.extend_from_slice(&tester.to_be_bytes());
                out.extend_from_slice(&entity.to_be_bytes());
                out.push((*code).into());
                out.extend_from_slice(&[0; 4]);
                out.extend(oem.iter().flatten());
            }
            Message::AliveCheckResponse { source } => out.extend_from_slice(&source.to_be_bytes()),
            Message::EntityStatusResponse(s) => {
                out.extend_from_slice(&[s.node_type.into(), s.max_sockets, s.open_sockets]);
                out.extend(s.max_data_size.iter().flat_map(|m| m.to_be_bytes()));
            }
            Message::PowerModeResponse(mode) => out.push((*mode).into()),
            Message::Diagnostic {
                source,
                target,
                data,
            } => {
                out.extend_from_slice(&source.to_be_bytes());
                out.extend_from_slice(&target.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::DiagnosticAck {
                source,
                target,
                code,
                previous,
            } => {
                out.extend_from_slice(&source.to_be_bytes());
                out.extend_from_slice(&target.to_be_bytes());
                out.push(*code);
                out.extend_from_slice(previous);
            }
            Message::DiagnosticNack {
                source,
                target,
                code,
                previous,
            } => {
                out.extend_from_slice(&source.to_be_bytes());
                out.extend_from_slice(&target.to_be_bytes());
                out.push((*code).into());
                out.extend_from_slice(previous);
            }
        }
    }

    /// Header and payload, ready for the wire.
    ///
    /// # Panics
    ///
    /// If the payload exceeds 4 GiB (the header's length field).
    pub fn encode(&self, version: u8) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN];
        self.encode_payload(&mut out);
        let payload_length =
            u32::try_from(out.len() - HEADER_LEN).expect("DoIP payload over 4 GiB");
        let header = Header {
            version,
            payload_type: self.payload_type(),
            payload_length,
        };
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        out
    }
}

/// Reassembles DoIP messages from a byte stream (TCP). Feed bytes with [`Decoder::push`], then
/// call [`Decoder::decode`] until it returns `Ok(None)`.
///
/// An `Err` is a header check failure to answer with its [`DoipError::nack_code`]. For
/// *discard* errors the decoder throws the refused message's payload away as it arrives and
/// carries on; after a *close* error ([`DoipError::closes_connection`]) the stream is out of
/// step and the decoder ignores everything further.
#[derive(Clone, Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Payload bytes of a refused message still to arrive and be thrown away.
    skip: u64,
    max_payload: u32,
    available: Option<u32>,
    /// Version of the last header that passed the pattern check.
    version: Option<u8>,
    failed: bool,
}

impl Decoder {
    pub fn new(max_payload: u32) -> Self {
        Decoder {
            buf: Vec::new(),
            skip: 0,
            max_payload,
            available: None,
            version: None,
            failed: false,
        }
    }

    /// Fault injection: pretend only `available` bytes of receive memory are free, so larger
    /// payloads are refused with NACK `0x03` (out of memory). `None`: no limit.
    pub fn set_available_memory(&mut self, available: Option<u32>) {
        self.available = available;
    }

    /// Append received bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.failed {
            return;
        }
        // `skip` is only non-zero while the buffer is empty.
        let n = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        self.skip -= n as u64;
        bytes = &bytes[n..];
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message with its header; `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<(Header, Message)>, DoipError> {
        if self.failed {
            return Ok(None);
        }
        let header = match Header::parse(&self.buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        self.version = Some(header.version);
        if let Err(e) = header.validate(self.max_payload, self.available) {
            if e.closes_connection() {
                return Err(self.fail(e));
            }
            let total = HEADER_LEN as u64 + u64::from(header.payload_length);
            let now = usize::try_from(total)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.buf.drain(..now);
            self.skip = total - now as u64;
            return Err(e);
        }
        // validate() bounded the length by max_payload.
        let end = HEADER_LEN + header.payload_length as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let message = Message::decode(header.payload_type, &self.buf[HEADER_LEN..end]);
        self.buf.drain(..end);
        match message {
            Ok(m) => Ok(Some((header, m))),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: DoipError) -> DoipError {
        self.failed = true;
        self.buf = Vec::new();
        self.skip = 0;
        e
    }

    /// Protocol version of the most recent header that passed the pattern check.
    pub fn version(&self) -> Option<u8> {
        self.version
    }

    /// A close error happened; all further input is ignored.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes held waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Identity and status of a DoIP entity, shared by its UDP answers and TCP connections. The I/O
/// layer keeps `open_sockets` and `power_mode` current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityInfo {
    /// Version for messages we originate and for replies to `0xFF` requests.
    pub version: u8,
    pub logical_address: u16,
    pub vin: [u8; 17],
    pub eid: [u8; 6],
    pub gid: [u8; 6],
    pub further_action: u8,
    pub sync_status: Option<u8>,
    pub node_type: NodeType,
    pub max_sockets: u8,
    pub open_sockets: u8,
    /// Reported in the entity status response; header included.
    pub max_data_size: Option<u32>,
    pub power_mode: PowerMode,
}

impl Default for EntityInfo {
    /// An ECU that is its own DoIP node at logical address `0x0010`.
    fn default() -> Self {
        EntityInfo {
            version: VERSION_2012,
            logical_address: 0x0010,
            vin: *b"SIMECU00000000001",
            eid: [0x02, 0x00, 0x00, 0x00, 0x00, 0x10],
            gid: [0x02, 0x00, 0x00, 0x00, 0x00, 0x10],
            further_action: 0x00,
            sync_status: None,
            node_type: NodeType::Node,
            max_sockets: 1,
            open_sockets: 0,
            max_data_size: Some(DEFAULT_MAX_PAYLOAD + HEADER_LEN as u32),
            power_mode: PowerMode::Ready,
        }
    }
}

impl EntityInfo {
    pub fn vehicle_announcement(&self) -> VehicleAnnouncement {
        VehicleAnnouncement {
            vin: self.vin,
            logical_address: self.logical_address,
            eid: self.eid,
            gid: self.gid,
            further_action: self.further_action,
            sync_status: self.sync_status,
        }
    }

    /// The vehicle announcement datagram (sent on UDP after the address is assigned).
    pub fn announcement(&self) -> Vec<u8> {
        Message::VehicleAnnouncement(self.vehicle_announcement()).encode(self.version)
    }

    pub fn status(&self) -> EntityStatus {
        EntityStatus {
            node_type: self.node_type,
            max_sockets: self.max_sockets,
            open_sockets: self.open_sockets,
            max_data_size: self.max_data_size,
        }
    }

    fn reply_version(&self, request: u8) -> u8 {
        if request == VERSION_DEFAULT {
            self.version
        } else {
            request
        }
    }
}

/// The answer to one datagram received on UDP port 13400, if any: vehicle identification
/// requests (plain, or by EID / VIN, answered only on a match), entity status and power mode
/// requests, and generic NACKs for malformed datagrams.
pub fn udp_response(datagram: &[u8], entity: &EntityInfo) -> Option<Vec<u8>> {
    let nack = |code: NackCode, version: u8| Some(Message::GenericNack(code).encode(version));
    let header = match Header::parse(datagram) {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(e) => return nack(e.nack_code()?, entity.version),
    };
    let version = entity.reply_version(header.version);
    let max = entity
        .max_data_size
        .map_or(DEFAULT_MAX_PAYLOAD, |m| m.saturating_sub(HEADER_LEN as u32));
    if let Err(e) = header.validate(max, None) {
        return nack(e.nack_code()?, version);
    }
    let payload = &datagram[HEADER_LEN..];
    if payload.len() as u64 != u64::from(header.payload_length) {
        return nack(NackCode::InvalidPayloadLength, version);
    }
    let reply = match Message::decode(header.payload_type, payload) {
        Ok(Message::VehicleIdRequest) => {
            Message::VehicleAnnouncement(entity.vehicle_announcement())
        }
        Ok(Message::VehicleIdRequestEid(eid)) if eid == entity.eid => {
            Message::VehicleAnnouncement(entity.vehicle_announcement())
        }
        Ok(Message::VehicleIdRequestVin(vin)) if vin == entity.vin => {
            Message::VehicleAnnouncement(entity.vehicle_announcement())
        }
        Ok(Message::EntityStatusRequest) => Message::EntityStatusResponse(entity.status()),
        Ok(Message::PowerModeRequest) => Message::PowerModeResponse(entity.power_mode),
        Ok(_) => return None,
        Err(e) => return nack(e.nack_code()?, version),
    };
    Some(reply.encode(version))
}

/// Settings of the server side of one TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub entity: EntityInfo,
    /// Target address of the ECU behind this entity (physical addressing).
    pub ecu_address: u16,
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
        let code =
            if target != self.cfg.ecu_address && !self.cfg.functional_addresses.contains(&target) {
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
            source: self.cfg.ecu_address,
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

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    const TESTER: u16 = 0x0E00;
    /// Routing activation request from 0x0E00, default type, no OEM field.
    const ACTIVATE: [u8; 15] = hex!("02 fd 00 05 00 00 00 07 0e 00 00 00 00 00 00");
    const ACTIVATED: [u8; 17] = hex!("02 fd 00 06 00 00 00 09 0e 00 00 10 10 00 00 00 00");
    const VIN: [u8; 17] = *b"SIMECU00000000001";

    fn drain(c: &mut Connection) -> (Vec<Vec<u8>>, Vec<Event>) {
        (
            std::iter::from_fn(|| c.poll_transmit()).collect(),
            std::iter::from_fn(|| c.poll_event()).collect(),
        )
    }

    /// Feed `bytes` at `now`; return what went out and what happened.
    fn feed(c: &mut Connection, now: u64, bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<Event>) {
        c.handle_bytes(now, bytes);
        drain(c)
    }

    fn activated(cfg: Config) -> Connection {
        let mut c = Connection::new(0, cfg);
        let (out, _) = feed(&mut c, 0, &ACTIVATE);
        assert_eq!(out, vec![ACTIVATED.to_vec()]);
        c
    }

    fn nack(code: u8) -> Vec<u8> {
        let mut v = hex!("02 fd 00 00 00 00 00 01").to_vec();
        v.push(code);
        v
    }

    #[test]
    fn header_parse() {
        assert_eq!(
            Header::parse(&hex!("02 fd 00 05 00 00 00 07 0e")),
            Ok(Some(Header {
                version: 2,
                payload_type: 0x0005,
                payload_length: 7
            }))
        );
        assert_eq!(Header::parse(&hex!("02 fd 00 05 00 00 00")), Ok(None));
        assert_eq!(Header::parse(&[]), Ok(None));
        assert!(matches!(
            Header::parse(&hex!("03 fc 80 01 00 00 00 05")),
            Ok(Some(Header { version: 3, .. }))
        ));
        assert!(matches!(
            Header::parse(&hex!("ff 00 00 01 00 00 00 00")),
            Ok(Some(Header { version: 0xFF, .. }))
        ));
        let h = Header {
            version: 3,
            payload_type: 0x8001,
            payload_length: 0x0102_0304,
        };
        assert_eq!(h.to_bytes(), hex!("03 fc 80 01 01 02 03 04"));
    }

    #[test]
    fn header_incorrect_pattern() {
        for (bytes, version, inverse, payload_type) in [
            (hex!("02 fc 00 05 00 00 00 07"), 0x02, 0xFC, 0x0005),
            (hex!("04 fb 00 05 00 00 00 07"), 0x04, 0xFB, 0x0005),
            (hex!("01 fe 00 05 00 00 00 07"), 0x01, 0xFE, 0x0005),
            (hex!("ff 00 00 05 00 00 00 07"), 0xFF, 0x00, 0x0005),
            (hex!("ff 00 80 01 00 00 00 05"), 0xFF, 0x00, 0x8001),
        ] {
            let e = Header::parse(&bytes).unwrap_err();
            assert_eq!(
                e,
                DoipError::IncorrectPattern {
                    version,
                    inverse,
                    payload_type
                }
            );
            assert_eq!(e.nack_code(), Some(NackCode::IncorrectPattern));
            assert!(e.closes_connection());
        }
    }

    #[test]
    fn header_validation_in_iso_order() {
        let check =
            |bytes: [u8; 8], max, mem| Header::parse(&bytes).unwrap().unwrap().validate(max, mem);
        assert_eq!(check(hex!("02 fd 00 05 00 00 00 07"), 4096, None), Ok(()));
        assert_eq!(check(hex!("02 fd 00 05 00 00 00 0b"), 4096, None), Ok(()));
        assert_eq!(
            check(hex!("02 fd 12 34 00 00 00 03"), 4096, None),
            Err(DoipError::UnknownPayloadType {
                payload_type: 0x1234,
                length: 3
            })
        );
        assert_eq!(
            check(hex!("02 fd 80 01 00 00 10 01"), 4096, None),
            Err(DoipError::MessageTooLarge {
                length: 4097,
                max: 4096
            })
        );
        assert_eq!(
            check(hex!("02 fd 80 01 00 00 01 00"), 4096, Some(255)),
            Err(DoipError::OutOfMemory {
                length: 256,
                available: 255
            })
        );
        for (bytes, payload_type, length) in [
            (hex!("02 fd 00 05 00 00 00 08"), 0x0005, 8),
            (hex!("02 fd 00 05 00 00 00 06"), 0x0005, 6),
            (hex!("02 fd 80 01 00 00 00 04"), 0x8001, 4),
            (hex!("02 fd 00 07 00 00 00 01"), 0x0007, 1),
            (hex!("02 fd 40 02 00 00 00 05"), 0x4002, 5),
            (hex!("02 fd 00 04 00 00 00 1f"), 0x0004, 31),
        ] {
            assert_eq!(
                check(bytes, 4096, None),
                Err(DoipError::InvalidPayloadLength {
                    payload_type,
                    length
                })
            );
        }
        // Unknown type is checked before size: an unknown huge message is "unknown".
        assert!(matches!(
            check(hex!("02 fd 77 77 ff ff ff ff"), 4096, None),
            Err(DoipError::UnknownPayloadType { .. })
        ));
        let codes: Vec<_> = [
            DoipError::UnknownPayloadType {
                payload_type: 0,
                length: 0,
            },
            DoipError::MessageTooLarge { length: 0, max: 0 },
            DoipError::OutOfMemory {
                length: 0,
                available: 0,
            },
            DoipError::InvalidPayloadLength {
                payload_type: 0,
                length: 0,
            },
        ]
        .iter()
        .map(|e| (e.nack_code().map(u8::from), e.closes_connection()))
        .collect();
        assert_eq!(
            codes,
            vec![
                (Some(1), false),
                (Some(2), false),
                (Some(3), false),
                (Some(4), true)
            ]
        );
    }

    #[test]
    fn every_message_round_trips_with_wire_bytes() {
        let ann = VehicleAnnouncement {
            vin: VIN,
            logical_address: 0x0010,
            eid: hex!("02 00 00 00 00 10"),
            gid: hex!("aa bb cc dd ee ff"),
            further_action: 0x10,
            sync_status: None,
        };
        let vin_hex = hex!("53 49 4d 45 43 55 30 30 30 30 30 30 30 30 30 30 31");
        let mut ann_wire = hex!("02 fd 00 04 00 00 00 20").to_vec();
        ann_wire.extend(vin_hex);
        ann_wire.extend(hex!("00 10 02 00 00 00 00 10 aa bb cc dd ee ff 10"));
        let mut ann_sync_wire = ann_wire.clone();
        ann_sync_wire[7] = 0x21;
        ann_sync_wire.push(0x00);
        let mut vir_vin_wire = hex!("02 fd 00 03 00 00 00 11").to_vec();
        vir_vin_wire.extend(vin_hex);
        let cases: Vec<(Message, Vec<u8>)> = vec![
            (
                Message::GenericNack(NackCode::InvalidPayloadLength),
                hex!("02 fd 00 00 00 00 00 01 04").to_vec(),
            ),
            (
                Message::VehicleIdRequest,
                hex!("02 fd 00 01 00 00 00 00").to_vec(),
            ),
            (
                Message::VehicleIdRequestEid(hex!("02 00 00 00 00 10")),
                hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 10").to_vec(),
            ),
            (Message::VehicleIdRequestVin(VIN), vir_vin_wire),
            (Message::VehicleAnnouncement(ann.clone()), ann_wire),
            (
                Message::VehicleAnnouncement(VehicleAnnouncement {
                    sync_status: Some(0x00),
                    ..ann
                }),
                ann_sync_wire,
            ),
            (
                Message::RoutingActivationRequest {
                    source: TESTER,
                    activation_type: ActivationType::Default,
                    oem: None,
                },
                ACTIVATE.to_vec(),
            ),
            (
                Message::RoutingActivationRequest {
                    source: 0x0E80,
                    activation_type: ActivationType::CentralSecurity,
                    oem: Some(hex!("de ad be ef")),
                },
                hex!("02 fd 00 05 00 00 00 0b 0e 80 e0 00 00 00 00 de ad be ef").to_vec(),
            ),
            (
                Message::RoutingActivationResponse {
                    tester: TESTER,
                    entity: 0x0010,
                    code: RoutingActivationCode::Success,
                    oem: None,
                },
                ACTIVATED.to_vec(),
            ),
            (
                Message::RoutingActivationResponse {
                    tester: TESTER,
                    entity: 0x0010,
                    code: RoutingActivationCode::UnsupportedActivationType,
                    oem: Some(hex!("01 02 03 04")),
                },
                hex!("02 fd 00 06 00 00 00 0d 0e 00 00 10 06 00 00 00 00 01 02 03 04").to_vec(),
            ),
            (
                Message::AliveCheckRequest,
                hex!("02 fd 00 07 00 00 00 00").to_vec(),
            ),
            (
                Message::AliveCheckResponse { source: TESTER },
                hex!("02 fd 00 08 00 00 00 02 0e 00").to_vec(),
            ),
            (
                Message::EntityStatusRequest,
                hex!("02 fd 40 01 00 00 00 00").to_vec(),
            ),
            (
                Message::EntityStatusResponse(EntityStatus {
                    node_type: NodeType::Node,
                    max_sockets: 4,
                    open_sockets: 1,
                    max_data_size: Some(0x0001_000C),
                }),
                hex!("02 fd 40 02 00 00 00 07 01 04 01 00 01 00 0c").to_vec(),
            ),
            (
                Message::EntityStatusResponse(EntityStatus {
                    node_type: NodeType::Gateway,
                    max_sockets: 2,
                    open_sockets: 0,
                    max_data_size: None,
                }),
                hex!("02 fd 40 02 00 00 00 03 00 02 00").to_vec(),
            ),
            (
                Message::PowerModeRequest,
                hex!("02 fd 40 03 00 00 00 00").to_vec(),
            ),
            (
                Message::PowerModeResponse(PowerMode::Ready),
                hex!("02 fd 40 04 00 00 00 01 01").to_vec(),
            ),
            (
                Message::Diagnostic {
                    source: TESTER,
                    target: 0x0010,
                    data: hex!("22 f1 90").to_vec(),
                },
                hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90").to_vec(),
            ),
            (
                Message::DiagnosticAck {
                    source: 0x0010,
                    target: TESTER,
                    code: 0x00,
                    previous: Vec::new(),
                },
                hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec(),
            ),
            (
                Message::DiagnosticAck {
                    source: 0x0010,
                    target: TESTER,
                    code: 0x00,
                    previous: hex!("22 f1").to_vec(),
                },
                hex!("02 fd 80 02 00 00 00 07 00 10 0e 00 00 22 f1").to_vec(),
            ),
            (
                Message::DiagnosticNack {
                    source: 0x0011,
                    target: TESTER,
                    code: DiagnosticNackCode::UnknownTargetAddress,
                    previous: Vec::new(),
                },
                hex!("02 fd 80 03 00 00 00 05 00 11 0e 00 03").to_vec(),
            ),
            (
                Message::DiagnosticNack {
                    source: 0x0010,
                    target: TESTER,
                    code: DiagnosticNackCode::TransportProtocolError,
                    previous: hex!("10 02").to_vec(),
                },
                hex!("02 fd 80 03 00 00 00 07 00 10 0e 00 08 10 02").to_vec(),
            ),
        ];
        let mut types = std::collections::BTreeSet::new();
        for (msg, wire) in cases {
            assert_eq!(msg.encode(2), wire, "{msg:?}");
            let h = Header::parse(&wire).unwrap().unwrap();
            h.validate(DEFAULT_MAX_PAYLOAD, None).unwrap();
            assert_eq!(h.payload_length as usize, wire.len() - HEADER_LEN);
            assert_eq!(
                Message::decode(h.payload_type, &wire[HEADER_LEN..]).as_ref(),
                Ok(&msg)
            );
            types.insert(msg.payload_type());
        }
        assert_eq!(types.len(), 16, "every payload type covered");
        assert_eq!(
            Message::decode(0x9999, &[]),
            Err(DoipError::UnknownPayloadType {
                payload_type: 0x9999,
                length: 0
            })
        );
        assert_eq!(
            Message::decode(pt::ALIVE_CHECK_RESPONSE, &[1]),
            Err(DoipError::InvalidPayloadLength {
                payload_type: 0x0008,
                length: 1
            })
        );
    }

    #[test]
    fn codes_keep_unnamed_values() {
        assert_eq!(
            RoutingActivationCode::from(0x42),
            RoutingActivationCode::Other(0x42)
        );
        assert_eq!(u8::from(RoutingActivationCode::Other(0x42)), 0x42);
        assert_eq!(ActivationType::from(0xE0), ActivationType::CentralSecurity);
        assert_eq!(
            DiagnosticNackCode::from(0x01),
            DiagnosticNackCode::Other(0x01)
        );
        for b in 0..=255u8 {
            assert_eq!(u8::from(NackCode::from(b)), b);
            assert_eq!(u8::from(PowerMode::from(b)), b);
            assert_eq!(u8::from(NodeType::from(b)), b);
        }
    }

    #[test]
    fn error_messages_state_the_facts() {
        for (e, text) in [
            (
                DoipError::IncorrectPattern {
                    version: 2,
                    inverse: 0xFC,
                    payload_type: 5,
                },
                "incorrect pattern: version 0x02, inverse 0xfc, payload type 0x0005",
            ),
            (
                DoipError::UnknownPayloadType {
                    payload_type: 0x1234,
                    length: 3,
                },
                "unknown payload type 0x1234 (3 payload bytes discarded)",
            ),
            (
                DoipError::MessageTooLarge {
                    length: 70000,
                    max: 65540,
                },
                "payload of 70000 bytes exceeds the maximum of 65540",
            ),
            (
                DoipError::ActivationRefused {
                    tester: 0x0100,
                    code: RoutingActivationCode::UnknownSourceAddress,
                },
                "routing activation of 0x0100 refused with code 0x00",
            ),
            (
                DoipError::InvalidSourceAddress { address: 0x0E00 },
                "diagnostic message from 0x0e00, which is not activated on this socket",
            ),
            (
                DoipError::InitialInactivity {
                    timeout_us: 2_000_000,
                },
                "no routing activation within 2000000 µs of connecting",
            ),
            (
                DoipError::AckTimeout {
                    target: 0x0010,
                    timeout_us: 2_000_000,
                },
                "no acknowledgement from 0x0010 within 2000000 µs",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn routing_activation_success() {
        let mut c = Connection::new(0, Config::default());
        assert_eq!(c.active_source(), None);
        let (out, ev) = feed(&mut c, 10, &ACTIVATE);
        assert_eq!(out, vec![ACTIVATED.to_vec()]);
        assert_eq!(
            ev,
            vec![Event::RoutingActivated {
                source: TESTER,
                activation_type: ActivationType::Default
            }]
        );
        assert_eq!(c.active_source(), Some(TESTER));
        // Repeated with the same source (and an OEM field): success again, no new event.
        let (out, ev) = feed(
            &mut c,
            20,
            &hex!("02 fd 00 05 00 00 00 0b 0e 00 00 00 00 00 00 00 00 00 00"),
        );
        assert_eq!(out, vec![ACTIVATED.to_vec()]);
        assert_eq!(ev, vec![]);
        // WWH-OBD is accepted; the reply uses the request's version (2019).
        let mut c = Connection::new(0, Config::default());
        let (out, _) = feed(
            &mut c,
            0,
            &hex!("03 fc 00 05 00 00 00 07 0f ff 01 00 00 00 00"),
        );
        assert_eq!(
            out,
            vec![hex!("03 fc 00 06 00 00 00 09 0f ff 00 10 10 00 00 00 00").to_vec()]
        );
    }

    #[test]
    fn routing_activation_refusals_close_the_connection() {
        let refused = |source: u16, code: RoutingActivationCode| {
            vec![Event::Closed(DoipError::ActivationRefused {
                tester: source,
                code,
            })]
        };
        // 0x00: source outside the tester range.
        let mut c = Connection::new(0, Config::default());
        let (out, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 00 05 00 00 00 07 01 00 00 00 00 00 00"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 00 06 00 00 00 09 01 00 00 10 00 00 00 00 00").to_vec()]
        );
        assert_eq!(
            ev,
            refused(0x0100, RoutingActivationCode::UnknownSourceAddress)
        );
        assert!(c.is_closed());
        assert_eq!(c.poll_timeout(), None);
        // 0x06: unknown activation type, and central security unless configured.
        for t in ["02", "e0"] {
            let mut c = Connection::new(0, Config::default());
            let mut req = ACTIVATE;
            req[10] = u8::from_str_radix(t, 16).unwrap();
            let (out, ev) = feed(&mut c, 0, &req);
            assert_eq!(
                out,
                vec![hex!("02 fd 00 06 00 00 00 09 0e 00 00 10 06 00 00 00 00").to_vec()]
            );
            assert_eq!(
                ev,
                refused(TESTER, RoutingActivationCode::UnsupportedActivationType)
            );
        }
        let mut c = Connection::new(
            0,
            Config {
                central_security: true,
                ..Config::default()
            },
        );
        let mut req = ACTIVATE;
        req[10] = 0xE0;
        assert_eq!(feed(&mut c, 0, &req).0, vec![ACTIVATED.to_vec()]);
        // 0x02: another source on an already activated socket.
        let mut c = activated(Config::default());
        let (out, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 00 05 00 00 00 07 0e 01 00 00 00 00 00"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 00 06 00 00 00 09 0e 01 00 10 02 00 00 00 00").to_vec()]
        );
        assert_eq!(
            ev,
            refused(0x0E01, RoutingActivationCode::DifferentSourceAddress)
        );
        // 0x01 and 0x03: the I/O layer's registry decides.
        for code in [
            RoutingActivationCode::AllSocketsRegistered,
            RoutingActivationCode::SourceAlreadyActive,
        ] {
            let cfg = Config {
                defer_activation: true,
                ..Config::default()
            };
            let mut c = Connection::new(0, cfg);
            let (out, ev) = feed(&mut c, 0, &ACTIVATE);
            assert_eq!(out, Vec::<Vec<u8>>::new(), "no answer before the verdict");
            assert_eq!(
                ev,
                vec![Event::ActivationRequested {
                    source: TESTER,
                    activation_type: ActivationType::Default
                }]
            );
            // A repeat while pending is swallowed.
            assert_eq!(feed(&mut c, 1, &ACTIVATE), (vec![], vec![]));
            c.complete_activation(5, code).unwrap();
            let (out, ev) = drain(&mut c);
            let mut expected = ACTIVATED;
            expected[12] = code.into();
            assert_eq!(out, vec![expected.to_vec()]);
            assert_eq!(ev, refused(TESTER, code));
            assert_eq!(c.complete_activation(6, code), Err(DoipError::Closed));
        }
        // The registry can also say yes.
        let mut c = Connection::new(
            0,
            Config {
                defer_activation: true,
                ..Config::default()
            },
        );
        assert_eq!(
            c.complete_activation(0, RoutingActivationCode::Success),
            Err(DoipError::NoPendingActivation)
        );
        feed(&mut c, 0, &ACTIVATE);
        c.complete_activation(1, RoutingActivationCode::Success)
            .unwrap();
        assert_eq!(drain(&mut c).0, vec![ACTIVATED.to_vec()]);
        assert_eq!(c.active_source(), Some(TESTER));
        // After a close, input is ignored.
        let mut c = Connection::new(0, Config::default());
        feed(
            &mut c,
            0,
            &hex!("02 fd 00 05 00 00 00 07 01 00 00 00 00 00 00"),
        );
        assert_eq!(feed(&mut c, 0, &ACTIVATE), (vec![], vec![]));
    }

    #[test]
    fn diagnostic_before_activation_is_refused_and_closes() {
        let mut c = Connection::new(0, Config::default());
        let (out, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 00 02").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::Closed(DoipError::InvalidSourceAddress {
                address: TESTER
            })]
        );
        assert!(c.is_closed());
        assert_eq!(c.send_diagnostic(0, &[0x50]), Err(DoipError::Closed));
        // After activation, a different source address is equally refused.
        let mut c = activated(Config::default());
        let (out, ev) = feed(&mut c, 0, &hex!("02 fd 80 01 00 00 00 05 0e 01 00 10 3e"));
        assert_eq!(
            out,
            vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 01 02").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::Closed(DoipError::InvalidSourceAddress {
                address: 0x0E01
            })]
        );
        let mut c = Connection::new(0, Config::default());
        assert_eq!(c.send_diagnostic(0, &[0x50]), Err(DoipError::NotActivated));
    }

    #[test]
    fn diagnostic_is_acknowledged_then_delivered_and_answered() {
        let mut c = activated(Config::default());
        let (out, ev) = feed(
            &mut c,
            5,
            &hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::Diagnostic {
                source: TESTER,
                target: 0x0010,
                data: hex!("22 f1 90").to_vec()
            }]
        );
        c.send_diagnostic(6, &hex!("62 f1 90 41")).unwrap();
        assert_eq!(
            drain(&mut c).0,
            vec![hex!("02 fd 80 01 00 00 00 08 00 10 0e 00 62 f1 90 41").to_vec()]
        );
        assert_eq!(c.send_diagnostic(7, &[]), Err(DoipError::EmptyDiagnostic));
        // Functional addressing reaches the ECU too; the ACK comes from the functional address.
        let (out, ev) = feed(
            &mut c,
            8,
            &hex!("02 fd 80 01 00 00 00 06 0e 00 e4 00 3e 80"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 80 02 00 00 00 05 e4 00 0e 00 00").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::Diagnostic {
                source: TESTER,
                target: 0xE400,
                data: hex!("3e 80").to_vec()
            }]
        );
    }

    #[test]
    fn diagnostic_refusals_keep_the_connection() {
        let mut c = activated(Config {
            max_diagnostic_data: 4,
            ..Config::default()
        });
        let (out, ev) = feed(&mut c, 0, &hex!("02 fd 80 01 00 00 00 05 0e 00 07 77 3e"));
        assert_eq!(
            out,
            vec![hex!("02 fd 80 03 00 00 00 05 07 77 0e 00 03").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::DiagnosticRefused {
                source: TESTER,
                target: 0x0777,
                code: DiagnosticNackCode::UnknownTargetAddress
            }]
        );
        let (out, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 80 01 00 00 00 09 0e 00 00 10 36 01 aa bb cc"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 80 03 00 00 00 05 00 10 0e 00 04").to_vec()]
        );
        assert_eq!(
            ev,
            vec![Event::DiagnosticRefused {
                source: TESTER,
                target: 0x0010,
                code: DiagnosticNackCode::MessageTooLarge
            }]
        );
        assert!(!c.is_closed());
        let (_, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 80 01 00 00 00 08 0e 00 00 10 36 01 aa bb"),
        );
        assert!(matches!(ev[..], [Event::Diagnostic { .. }]));
    }

    #[test]
    fn generic_header_errors_on_a_connection() {
        // Unknown payload type: NACK 0x01, the payload is skipped even when split, then business
        // as usual.
        let mut c = Connection::new(0, Config::default());
        let (out, ev) = feed(&mut c, 0, &hex!("02 fd 12 34 00 00 00 04 aa bb"));
        assert_eq!(out, vec![nack(0x01)]);
        assert_eq!(
            ev,
            vec![Event::Error(DoipError::UnknownPayloadType {
                payload_type: 0x1234,
                length: 4
            })]
        );
        let mut rest = hex!("cc dd").to_vec();
        rest.extend(ACTIVATE);
        assert_eq!(feed(&mut c, 0, &rest).0, vec![ACTIVATED.to_vec()]);
        // Known type that an entity does not serve on TCP: also 0x01.
        let (out, _) = feed(&mut c, 0, &hex!("02 fd 00 01 00 00 00 00"));
        assert_eq!(out, vec![nack(0x01)]);
        let (out, _) = feed(&mut c, 0, &ACTIVATED);
        assert_eq!(out, vec![nack(0x01)]);
        // Too large: NACK 0x02, discard, keep. Out of memory: NACK 0x03, discard, keep.
        let mut c = activated(Config {
            max_payload: 16,
            ..Config::default()
        });
        let mut big = hex!("02 fd 80 01 00 00 00 11").to_vec();
        big.extend([0u8; 17]);
        let (out, ev) = feed(&mut c, 0, &big);
        assert_eq!(out, vec![nack(0x02)]);
        assert_eq!(
            ev,
            vec![Event::Error(DoipError::MessageTooLarge {
                length: 17,
                max: 16
            })]
        );
        c.set_available_memory(Some(5));
        let (out, ev) = feed(
            &mut c,
            0,
            &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 00"),
        );
        assert_eq!(out, vec![nack(0x03)]);
        assert_eq!(
            ev,
            vec![Event::Error(DoipError::OutOfMemory {
                length: 6,
                available: 5
            })]
        );
        c.set_available_memory(None);
        let (out, _) = feed(
            &mut c,
            0,
            &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 00"),
        );
        assert_eq!(
            out,
            vec![hex!("02 fd 80 02 00 00 00 05 00 10 0e 00 00").to_vec()]
        );
        // Invalid payload length: NACK 0x04 and close.
        let (out, ev) = feed(&mut c, 0, &hex!("02 fd 00 05 00 00 00 08"));
        assert_eq!(out, vec![nack(0x04)]);
        assert_eq!(
            ev,
            vec![Event::Closed(DoipError::InvalidPayloadLength {
                payload_type: 5,
                length: 8
            })]
        );
        assert!(c.is_closed());
        // Incorrect pattern: NACK 0x00 (in the entity's version) and close; the rest is ignored.
        let mut c = Connection::new(0, Config::default());
        let mut bytes = hex!("03 fd 00 05 00 00 00 07").to_vec();
        bytes.extend(ACTIVATE);
        let (out, ev) = feed(&mut c, 0, &bytes);
        assert_eq!(out, vec![nack(0x00)]);
        assert_eq!(
            ev,
            vec![Event::Closed(DoipError::IncorrectPattern {
                version: 3,
                inverse: 0xFD,
                payload_type: 5
            })]
        );
        assert_eq!(feed(&mut c, 0, &ACTIVATE), (vec![], vec![]));
        // A generic NACK from the tester is reported.
        let mut c = Connection::new(0, Config::default());
        let (out, ev) = feed(&mut c, 0, &nack(0x02));
        assert!(out.is_empty());
        assert_eq!(ev, vec![Event::PeerNack(NackCode::MessageTooLarge)]);
    }

    #[test]
    fn alive_check_both_ways() {
        let mut c = activated(Config::default());
        // The tester asks: we answer with the entity's address.
        let (out, _) = feed(&mut c, 0, &hex!("02 fd 00 07 00 00 00 00"));
        assert_eq!(out, vec![hex!("02 fd 00 08 00 00 00 02 00 10").to_vec()]);
        // We ask: the answer passes the check.
        c.start_alive_check(1_000).unwrap();
        c.start_alive_check(1_001).unwrap();
        assert_eq!(
            drain(&mut c).0,
            vec![hex!("02 fd 00 07 00 00 00 00").to_vec()]
        );
        assert_eq!(c.poll_timeout(), Some(501_000));
        let (out, ev) = feed(&mut c, 2_000, &hex!("02 fd 00 08 00 00 00 02 0e 00"));
        assert!(out.is_empty());
        assert_eq!(ev, vec![Event::AliveCheckPassed { source: TESTER }]);
        assert_eq!(c.poll_timeout(), Some(2_000 + 300_000_000));
        // No answer: the connection closes.
        c.start_alive_check(10_000).unwrap();
        c.handle_timeout(509_999);
        assert!(!c.is_closed());
        c.handle_timeout(510_000);
        assert_eq!(
            drain(&mut c).1,
            vec![Event::Closed(DoipError::AliveCheckTimeout {
                timeout_us: 500_000
            })]
        );
        assert_eq!(c.start_alive_check(0), Err(DoipError::Closed));
    }

    #[test]
    fn entity_status_and_power_mode_over_tcp() {
        let mut c = Connection::new(0, Config::default());
        c.entity_mut().open_sockets = 1;
        let (out, _) = feed(
            &mut c,
            0,
            &hex!("02 fd 40 01 00 00 00 00 02 fd 40 03 00 00 00 00"),
        );
        assert_eq!(
            out,
            vec![
                hex!("02 fd 40 02 00 00 00 07 01 01 01 00 01 00 0c").to_vec(),
                hex!("02 fd 40 04 00 00 00 01 01").to_vec()
            ]
        );
    }

    #[test]
    fn inactivity_timers() {
        // Initial: no activation within 2 s.
        let mut c = Connection::new(1_000, Config::default());
        assert_eq!(c.poll_timeout(), Some(2_001_000));
        // Other traffic does not extend it.
        feed(&mut c, 1_500_000, &hex!("02 fd 00 07 00 00 00 00"));
        assert_eq!(c.poll_timeout(), Some(2_001_000));
        c.handle_timeout(2_000_999);
        assert!(!c.is_closed());
        c.handle_timeout(2_001_000);
        assert_eq!(
            drain(&mut c).1,
            vec![Event::Closed(DoipError::InitialInactivity {
                timeout_us: 2_000_000
            })]
        );
        // General: 5 minutes after the last message, restarted by traffic both ways.
        let mut c = Connection::new(0, Config::default());
        feed(&mut c, 1_000_000, &ACTIVATE);
        assert_eq!(c.poll_timeout(), Some(301_000_000));
        feed(
            &mut c,
            100_000_000,
            &hex!("02 fd 80 01 00 00 00 06 0e 00 00 10 3e 80"),
        );
        assert_eq!(c.poll_timeout(), Some(400_000_000));
        c.send_diagnostic(200_000_000, &[0x7E, 0x00]).unwrap();
        assert_eq!(c.poll_timeout(), Some(500_000_000));
        c.handle_timeout(499_999_999);
        assert!(!c.is_closed());
        c.handle_timeout(500_000_000);
        assert_eq!(
            drain(&mut c).1.last(),
            Some(&Event::Closed(DoipError::GeneralInactivity {
                timeout_us: 300_000_000
            }))
        );
        c.handle_timeout(u64::MAX);
        assert_eq!(c.poll_event(), None);
    }

    #[test]
    fn udp_vehicle_identification() {
        let e = EntityInfo::default();
        let ann = e.announcement();
        assert_eq!(&ann[..8], hex!("02 fd 00 04 00 00 00 20"));
        assert_eq!(
            Message::decode(0x0004, &ann[8..]),
            Ok(Message::VehicleAnnouncement(e.vehicle_announcement()))
        );
        // Plain, in version 2 and the default version 0xFF (answered in the entity's version).
        assert_eq!(
            udp_response(&hex!("02 fd 00 01 00 00 00 00"), &e),
            Some(ann.clone())
        );
        assert_eq!(
            udp_response(&hex!("ff 00 00 01 00 00 00 00"), &e),
            Some(ann.clone())
        );
        let mut v3 = ann.clone();
        v3[..2].copy_from_slice(&hex!("03 fc"));
        assert_eq!(udp_response(&hex!("03 fc 00 01 00 00 00 00"), &e), Some(v3));
        // By EID.
        let by_eid = hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 10");
        assert_eq!(udp_response(&by_eid, &e), Some(ann.clone()));
        let other_eid = hex!("02 fd 00 02 00 00 00 06 02 00 00 00 00 11");
        assert_eq!(udp_response(&other_eid, &e), None);
        // By VIN.
        let mut by_vin = hex!("02 fd 00 03 00 00 00 11").to_vec();
        by_vin.extend(VIN);
        assert_eq!(udp_response(&by_vin, &e), Some(ann.clone()));
        by_vin[24] = b'2';
        assert_eq!(udp_response(&by_vin, &e), None);
        // Status and power mode.
        assert_eq!(
            udp_response(&hex!("02 fd 40 01 00 00 00 00"), &e),
            Some(hex!("02 fd 40 02 00 00 00 07 01 01 00 00 01 00 0c").to_vec())
        );
        assert_eq!(
            udp_response(&hex!("02 fd 40 03 00 00 00 00"), &e),
            Some(hex!("02 fd 40 04 00 00 00 01 01").to_vec())
        );
        // Malformed datagrams get generic NACKs; others' announcements and runts are ignored.
        assert_eq!(
            udp_response(&hex!("02 fc 00 01 00 00 00 00"), &e),
            Some(nack(0x00))
        );
        assert_eq!(
            udp_response(&hex!("02 fd 55 55 00 00 00 00"), &e),
            Some(nack(0x01))
        );
        assert_eq!(
            udp_response(&hex!("02 fd 00 01 00 00 00 01 00"), &e),
            Some(nack(0x04))
        );
        assert_eq!(
            udp_response(&hex!("02 fd 00 02 00 00 00 06 02"), &e),
            Some(nack(0x04))
        );
        assert_eq!(udp_response(&ann, &e), None);
        assert_eq!(udp_response(&hex!("02 fd 00"), &e), None);
    }

    /// A message stream with every kind of decoder outcome, fed whole and in every chunking.
    #[test]
    fn decoder_split_across_chunk_boundaries() {
        let mut stream = ACTIVATE.to_vec();
        stream.extend(hex!("02 fd 12 34 00 00 00 03 01 02 03")); // unknown: skipped
        stream.extend(hex!("02 fd 80 01 00 00 00 07 0e 00 00 10 22 f1 90"));
        stream.extend(hex!("02 fd 80 01 00 00 00 20")); // too large (max 16): skipped
        stream.extend([0x55; 0x20]);
        stream.extend(hex!("02 fd 00 07 00 00 00 00"));
        stream.extend(hex!("02 fd 00 08 00 00 00 03 00 00 00")); // invalid length: fatal
        stream.extend(ACTIVATE); // ignored
        let run = |chunks: &mut dyn Iterator<Item = &[u8]>| {
            let mut d = Decoder::new(16);
            let mut got = Vec::new();
            for chunk in chunks {
                d.push(chunk);
                while let Some(r) = d.decode().transpose() {
                    got.push(r);
                }
            }
            (got, d.is_failed(), d.buffered())
        };
        let whole = run(&mut std::iter::once(&stream[..]));
        assert_eq!(whole.0.len(), 6);
        assert!(matches!(
            whole.0[0],
            Ok((_, Message::RoutingActivationRequest { .. }))
        ));
        assert!(matches!(
            whole.0[1],
            Err(DoipError::UnknownPayloadType { .. })
        ));
        assert!(matches!(whole.0[2], Ok((_, Message::Diagnostic { .. }))));
        assert!(matches!(whole.0[3], Err(DoipError::MessageTooLarge { .. })));
        assert!(matches!(whole.0[4], Ok((_, Message::AliveCheckRequest))));
        assert!(matches!(
            whole.0[5],
            Err(DoipError::InvalidPayloadLength { .. })
        ));
        assert_eq!((whole.1, whole.2), (true, 0));
        for size in 1..=stream.len() {
            assert_eq!(run(&mut stream.chunks(size)), whole, "chunk size {size}");
        }
        // Every single split point, and a deterministic sweep of uneven chunkings.
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(run(&mut [a, b].into_iter()), whole, "cut at {cut}");
        }
        let mut x: u32 = 7;
        for _ in 0..500 {
            let mut pieces = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let n = (x as usize % 9).min(rest.len());
                let (a, b) = rest.split_at(n);
                pieces.push(a);
                rest = b;
            }
            assert_eq!(run(&mut pieces.into_iter()), whole);
        }
    }

    /// Shuttle bytes between a tester and an entity until both are quiet.
    fn shuttle(
        cl: &mut ClientConnection,
        sv: &mut Connection,
        now: u64,
    ) -> (Vec<ClientEvent>, Vec<Event>) {
        let (mut ce, mut se) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(b) = cl.poll_transmit() {
                sv.handle_bytes(now, &b);
                moved = true;
            }
            while let Some(b) = sv.poll_transmit() {
                cl.handle_bytes(now, &b);
                moved = true;
            }
            ce.extend(std::iter::from_fn(|| cl.poll_event()));
            se.extend(std::iter::from_fn(|| sv.poll_event()));
            if !moved {
                return (ce, se);
            }
        }
    }

    #[test]
    fn client_and_server_back_to_back() {
        let mut cl = ClientConnection::new(ClientConfig::default());
        let mut sv = Connection::new(0, Config::default());
        assert_eq!(
            cl.send_diagnostic(0, 0x0010, &[0x3E, 0x00]),
            Err(DoipError::NotActivated)
        );
        cl.activate(0, TESTER, ActivationType::Default).unwrap();
        assert_eq!(
            cl.activate(0, TESTER, ActivationType::Default),
            Err(DoipError::ActivationPending)
        );
        assert_eq!(cl.poll_timeout(), Some(2_000_000));
        let (ce, se) = shuttle(&mut cl, &mut sv, 1);
        assert_eq!(
            ce,
            vec![ClientEvent::Activated {
                source: TESTER,
                entity: 0x0010
            }]
        );
        assert_eq!(
            se,
            vec![Event::RoutingActivated {
                source: TESTER,
                activation_type: ActivationType::Default
            }]
        );
        assert_eq!(cl.poll_timeout(), None);
        // Request, ACK, delivery to the ECU, response.
        cl.send_diagnostic(2, 0x0010, &hex!("22 f1 90")).unwrap();
        assert_eq!(
            cl.send_diagnostic(2, 0x0010, &hex!("22 f1 90")),
            Err(DoipError::AckPending { target: 0x0010 })
        );
        let (ce, se) = shuttle(&mut cl, &mut sv, 3);
        assert_eq!(
            ce,
            vec![ClientEvent::DiagnosticAck {
                source: 0x0010,
                target: TESTER
            }]
        );
        assert_eq!(
            se,
            vec![Event::Diagnostic {
                source: TESTER,
                target: 0x0010,
                data: hex!("22 f1 90").to_vec()
            }]
        );
        let mut response = hex!("62 f1 90").to_vec();
        response.extend(VIN);
        sv.send_diagnostic(4, &response).unwrap();
        let (ce, _) = shuttle(&mut cl, &mut sv, 4);
        assert_eq!(
            ce,
            vec![ClientEvent::Diagnostic {
                source: 0x0010,
                target: TESTER,
                data: response
            }]
        );
        // Unknown target: NACK reaches the client and clears the pending ACK.
        cl.send_diagnostic(5, 0x0777, &[0x3E]).unwrap();
        let (ce, _) = shuttle(&mut cl, &mut sv, 5);
        assert_eq!(
            ce,
            vec![ClientEvent::DiagnosticNack {
                source: 0x0777,
                target: TESTER,
                code: DiagnosticNackCode::UnknownTargetAddress
            }]
        );
        // The entity's alive check is answered by the client automatically.
        sv.start_alive_check(6).unwrap();
        let (ce, se) = shuttle(&mut cl, &mut sv, 6);
        assert!(ce.is_empty());
        assert_eq!(se, vec![Event::AliveCheckPassed { source: TESTER }]);
        // Entity status through the raw send.
        cl.send_message(&Message::EntityStatusRequest);
        let (ce, _) = shuttle(&mut cl, &mut sv, 7);
        assert!(matches!(
            ce[..],
            [ClientEvent::Message(Message::EntityStatusResponse(_))]
        ));
    }

    #[test]
    fn client_refusals_and_timeouts() {
        // Refused activation (unknown source) and the entity closing.
        let mut cl = ClientConnection::new(ClientConfig::default());
        let mut sv = Connection::new(0, Config::default());
        cl.activate(0, 0x0100, ActivationType::Default).unwrap();
        let (ce, se) = shuttle(&mut cl, &mut sv, 0);
        assert_eq!(
            ce,
            vec![ClientEvent::ActivationRefused {
                code: RoutingActivationCode::UnknownSourceAddress
            }]
        );
        assert!(matches!(se[..], [Event::Closed(_)]));
        // No activation response, no ACK.
        let mut cl = ClientConnection::new(ClientConfig::default());
        cl.activate(0, TESTER, ActivationType::Default).unwrap();
        cl.handle_timeout(1_999_999);
        assert_eq!(cl.poll_event(), None);
        cl.handle_timeout(2_000_000);
        assert_eq!(
            cl.poll_event(),
            Some(ClientEvent::Error(DoipError::ActivationTimeout {
                timeout_us: 2_000_000
            }))
        );
        let mut cl = ClientConnection::new(ClientConfig::default());
        cl.activate(0, TESTER, ActivationType::Default).unwrap();
        cl.handle_bytes(0, &ACTIVATED);
        cl.send_diagnostic(10, 0x0010, &[0x3E, 0x00]).unwrap();
        assert_eq!(cl.poll_timeout(), Some(2_000_010));
        cl.handle_timeout(2_000_010);
        let events: Vec<_> = std::iter::from_fn(|| cl.poll_event()).collect();
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Error(DoipError::AckTimeout {
                target: 0x0010,
                timeout_us: 2_000_000
            }))
        );
        // A malformed header from the entity: NACK back and close.
        let mut cl = ClientConnection::new(ClientConfig::default());
        cl.handle_bytes(0, &hex!("02 02 00 00 00 00 00 00"));
        assert_eq!(cl.poll_transmit(), Some(nack(0x00)));
        assert!(cl.is_closed());
        assert_eq!(cl.poll_timeout(), None);
        assert_eq!(
            cl.activate(0, TESTER, ActivationType::Default),
            Err(DoipError::Closed)
        );
    }

    /// Split `data` at the given (sorted, deduplicated) cut points.
    fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            out.push(&data[start..c]);
            start = c;
        }
        out
    }

    /// Arbitrary bytes, possibly led by a plausible header so the deeper paths are reached.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        let header = prop_oneof![
            Just(Vec::new()),
            Just(ACTIVATE.to_vec()),
            (
                prop::sample::select(vec![
                    0x0000u16, 0x0001, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008, 0x4001, 0x4002,
                    0x4003, 0x4004, 0x8001, 0x8002, 0x8003, 0x1234
                ]),
                0u32..64
            )
                .prop_map(|(t, l)| Header {
                    version: 2,
                    payload_type: t,
                    payload_length: l
                }
                .to_bytes()
                .to_vec()),
        ];
        (
            header,
            prop::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        )
            .prop_map(|(mut h, tail, activate_first)| {
                if activate_first && !h.starts_with(&ACTIVATE) {
                    let mut v = ACTIVATE.to_vec();
                    v.append(&mut h);
                    h = v;
                }
                h.extend(tail);
                h
            })
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(
            data in input(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let chunks = pieces(&data, &cuts);
            let mut sv = Connection::new(0, Config { max_payload: 48, ..Config::default() });
            let mut cl = ClientConnection::new(ClientConfig::default());
            let mut d = Decoder::new(48);
            let mut now = 0;
            for chunk in &chunks {
                now += 100_000;
                sv.handle_bytes(now, chunk);
                sv.handle_timeout(now);
                let _ = sv.send_diagnostic(now, &[0x7F, 0x22, 0x78]);
                while sv.poll_transmit().is_some() {}
                while sv.poll_event().is_some() {}
                cl.handle_bytes(now, chunk);
                cl.handle_timeout(now);
                while cl.poll_transmit().is_some() {}
                while cl.poll_event().is_some() {}
                d.push(chunk);
                while d.decode().transpose().is_some() {}
            }
            let _ = udp_response(&data, &EntityInfo::default());
        }

        #[test]
        fn decoder_is_independent_of_chunking(
            data in input(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let run = |chunks: &[&[u8]]| {
                let mut d = Decoder::new(48);
                let mut got = Vec::new();
                for chunk in chunks {
                    d.push(chunk);
                    while let Some(r) = d.decode().transpose() {
                        got.push(r);
                    }
                }
                (got, d.is_failed(), d.buffered())
            };
            prop_assert_eq!(run(&pieces(&data, &cuts)), run(&[&data[..]]));
        }
    }
}
