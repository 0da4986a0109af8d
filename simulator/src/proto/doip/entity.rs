//! The entity's identity and its UDP answers (vehicle identification, status, power mode).

use super::*;

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

    pub(super) fn reply_version(&self, request: u8) -> u8 {
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
