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
//! * The multi-socket registry (codes `0x01`, `0x03`, alive checks of other sockets) is
//!   [`Registry`], run by the I/O layer: with [`Config::defer_activation`] the connection reports
//!   [`Event::ActivationRequested`] and waits for [`Connection::complete_activation`]; without
//!   it, a valid request is accepted at once.
//! * On UDP a datagram shorter than a header is dropped silently; one whose length disagrees
//!   with its header's payload length gets NACK `0x04`; responses from other entities are
//!   ignored.
//!
//! | module | what |
//! |---|---|
//! | this one | constants, payload types, codes, [`DoipError`] |
//! | `codec` | [`Header`], [`Message`], the streaming [`Decoder`] |
//! | `entity` | [`EntityInfo`], [`udp_response`] |
//! | `server` | [`Connection`] (the entity's side of a TCP connection), [`Config`], [`Event`] |
//! | `registry` | [`Registry`]: which socket is registered for which tester, the alive checks an activation needs, the socket limit |
//! | `client` | [`ClientConnection`] (the tester's side), [`ClientConfig`], [`ClientEvent`] |

use std::fmt;

mod client;
mod codec;
mod entity;
mod registry;
mod server;
#[cfg(test)]
mod tests;

pub use client::*;
pub use codec::*;
pub use entity::*;
pub use registry::*;
pub use server::*;

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
