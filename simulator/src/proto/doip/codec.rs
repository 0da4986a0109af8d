//! The wire format: the generic header, every payload type, a streaming decoder.

use super::*;

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
