//! SocketCAN as a [`CanBackend`]: the virtual ECU's own SocketCAN connection
//! ([`ecu_sim::can::socketcan`], which documents what is checked at open and what a classic or
//! FD connection carries), so that `hil` and `ecu-sim serve --socketcan` share one
//! implementation.

use ecu_sim::can::frame::Frame;
use ecu_sim::can::socketcan::SocketCanError;
pub use ecu_sim::can::socketcan::{ENOBUFS_PATIENCE, SocketCan, from_socketcan, to_socketcan};
use tokio::time::Instant;

use super::{CanBackend, CanError};

/// A CAN interface seen through a `CAN_RAW` socket.
#[derive(Debug)]
pub struct SocketCanBackend(SocketCan);

/// Open `interface` for classic (`fd: false`) or CAN FD frames: [`SocketCanBackend::open`].
pub fn open(interface: &str, fd: bool) -> Result<SocketCanBackend, CanError> {
    SocketCanBackend::open(interface, fd)
}

/// Whether this kernel can open CAN sockets at all (no interface, no tokio runtime needed).
pub fn check_kernel() -> Result<(), CanError> {
    ecu_sim::can::socketcan::check_kernel().map_err(CanError::from)
}

impl From<SocketCanError> for CanError {
    fn from(e: SocketCanError) -> CanError {
        match e {
            SocketCanError::Interface { interface, message } => {
                CanError::Interface { interface, message }
            }
            SocketCanError::Io { what, op, source } => CanError::Io { what, op, source },
            SocketCanError::Closed(what) => CanError::Closed(what),
            SocketCanError::Unsendable {
                what,
                frame,
                message,
            } => CanError::Unsendable {
                what,
                frame,
                message,
            },
        }
    }
}

impl SocketCanBackend {
    /// Open `interface` (see [`ecu_sim::can::socketcan`] for the checks and their errors).
    pub fn open(interface: &str, fd: bool) -> Result<Self, CanError> {
        Ok(SocketCanBackend(SocketCan::open(interface, fd)?))
    }

    pub fn interface(&self) -> &str {
        self.0.interface()
    }

    /// Whether this is a CAN FD connection.
    pub fn is_fd(&self) -> bool {
        self.0.is_fd()
    }
}

impl CanBackend for SocketCanBackend {
    async fn send(&mut self, frame: &Frame) -> Result<(), CanError> {
        Ok(self.0.send(frame).await?)
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Frame>, CanError> {
        Ok(self.0.recv(deadline).await?)
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}
