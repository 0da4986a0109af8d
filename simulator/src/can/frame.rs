//! CAN and CAN FD frames as they travel on the virtual bus.
//!
//! | field | classic CAN | CAN FD |
//! |---|---|---|
//! | `id` | 11 bits (`extended: false`) or 29 bits (`extended: true`) | same |
//! | `data` | 0..=8 bytes | 0..=8, 12, 16, 20, 24, 32, 48 or 64 bytes |
//!
//! ISO-TP works on [`crate::proto::isotp::Frame`] (id and payload only); [`Frame::from_isotp`]
//! and [`Frame::to_isotp`] convert, taking the CAN-level flags from the connection.

use crate::proto::isotp;

/// Largest 11-bit identifier.
pub const MAX_STD_ID: u32 = 0x7FF;
/// Largest 29-bit identifier.
pub const MAX_EXT_ID: u32 = 0x1FFF_FFFF;

/// One CAN data frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub id: u32,
    /// 29-bit identifier (IDE set).
    pub extended: bool,
    /// CAN FD format (FDF set); the bit rate switches if the bus has a data bit rate.
    pub fd: bool,
    pub data: Vec<u8>,
}

/// Why a frame cannot go on the bus.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("identifier {id:#x} does not fit {bits} bits")]
    IdTooLarge { id: u32, bits: u8 },
    #[error("{len} data bytes is not a valid {kind} length")]
    BadLength { len: usize, kind: &'static str },
}

impl Frame {
    /// A classic frame; 29-bit if `id` does not fit 11 bits.
    pub fn classic(id: u32, data: impl Into<Vec<u8>>) -> Self {
        Frame {
            id,
            extended: id > MAX_STD_ID,
            fd: false,
            data: data.into(),
        }
    }

    /// A CAN FD frame; 29-bit if `id` does not fit 11 bits.
    pub fn fd(id: u32, data: impl Into<Vec<u8>>) -> Self {
        Frame {
            fd: true,
            ..Frame::classic(id, data)
        }
    }

    /// The bus frame for an ISO-TP frame of a connection that is CAN FD or not.
    pub fn from_isotp(frame: isotp::Frame, fd: bool) -> Self {
        if fd {
            Frame::fd(frame.id, frame.data)
        } else {
            Frame::classic(frame.id, frame.data)
        }
    }

    pub fn to_isotp(&self) -> isotp::Frame {
        isotp::Frame {
            id: self.id,
            data: self.data.clone(),
        }
    }

    pub fn into_isotp(self) -> isotp::Frame {
        isotp::Frame {
            id: self.id,
            data: self.data,
        }
    }

    /// The 4-bit data length code.
    pub fn dlc(&self) -> u8 {
        dlc(self.data.len())
    }

    /// Check the identifier range and the data length.
    pub fn validate(&self) -> Result<(), FrameError> {
        let (max, bits) = if self.extended {
            (MAX_EXT_ID, 29)
        } else {
            (MAX_STD_ID, 11)
        };
        if self.id > max {
            return Err(FrameError::IdTooLarge { id: self.id, bits });
        }
        let len = self.data.len();
        match (self.fd, len) {
            (_, 0..=8) => Ok(()),
            (true, 12 | 16 | 20 | 24 | 32 | 48 | 64) => Ok(()),
            (true, _) => Err(FrameError::BadLength {
                len,
                kind: "CAN FD",
            }),
            (false, _) => Err(FrameError::BadLength {
                len,
                kind: "classic CAN",
            }),
        }
    }
}

/// DLC for a valid data length (lengths between valid FD lengths map to the next one up).
pub fn dlc(len: usize) -> u8 {
    match len {
        0..=8 => len as u8,
        9..=12 => 9,
        13..=16 => 10,
        17..=20 => 11,
        21..=24 => 12,
        25..=32 => 13,
        33..=48 => 14,
        _ => 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_validation() {
        let f = Frame::classic(0x18DA_F110, vec![1, 2]);
        assert!(f.extended && !f.fd);
        assert_eq!(f.validate(), Ok(()));
        assert!(!Frame::fd(0x7E0, vec![0; 64]).extended);
        assert_eq!(
            Frame::classic(0x7E0, vec![0; 9]).validate(),
            Err(FrameError::BadLength {
                len: 9,
                kind: "classic CAN"
            })
        );
        assert_eq!(
            Frame::fd(0x7E0, vec![0; 13])
                .validate()
                .unwrap_err()
                .to_string(),
            "13 data bytes is not a valid CAN FD length"
        );
        let mut f = Frame::classic(0x800, vec![]);
        f.extended = false;
        assert_eq!(
            f.validate(),
            Err(FrameError::IdTooLarge {
                id: 0x800,
                bits: 11
            })
        );
        assert_eq!(
            [0, 8, 12, 16, 20, 24, 32, 48, 64].map(dlc),
            [0, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        let iso = isotp::Frame {
            id: 0x7E8,
            data: vec![1],
        };
        assert_eq!(Frame::from_isotp(iso.clone(), true).to_isotp(), iso);
    }
}
