//! CAN on the tester's side: a [`CanBackend`] moves frames to and from a bus, and
//! [`IsoTpTransport`] carries UDS over ISO-TP on any backend with the same sans-IO core the
//! virtual ECU uses ([`ecu_sim::proto::isotp`]).
//!
//! | backend | type | bus |
//! |---|---|---|
//! | slcan | [`slcan::SlcanAdapter`] | a USB-CAN adapter speaking Lawicel ASCII on a serial port (or `ecu-sim serve --slcan-pty`) |
//! | SocketCAN | [`socketcan::SocketCanBackend`] | a Linux CAN interface (`can0`, `vcan0`), classic or FD |
//!
//! Time for the ISO-TP core is microseconds since the transport was made; the wall clock is
//! read only here.

pub mod isotp;
pub mod slcan;
pub mod socketcan;

pub use isotp::{IsoTpSettings, IsoTpTransport};

use std::future::Future;

use ecu_sim::can::frame::Frame;
use tokio::time::Instant;

/// Something that puts frames on a CAN bus and takes them off it.
pub trait CanBackend: Send {
    /// Queue one frame for the bus; returns once the backend accepted it.
    fn send(&mut self, frame: &Frame) -> impl Future<Output = Result<(), CanError>> + Send;
    /// The next frame from the bus, waiting until `deadline` at the latest; `Ok(None)` if none
    /// arrived by then.
    fn recv(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Frame>, CanError>> + Send;
    /// What it is (`slcan /dev/ttyACM0 @ 500 kbit/s`), for logs and errors.
    fn describe(&self) -> String;
}

/// What a CAN backend could not do.
#[derive(Debug, thiserror::Error)]
pub enum CanError {
    /// A serial port (slcan adapter) did not open.
    #[error(transparent)]
    Serial(#[from] crate::serial::OpenError),
    /// A CAN interface did not open.
    #[error("CAN interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("{what}: {op}: {source}")]
    Io {
        what: String,
        op: &'static str,
        source: std::io::Error,
    },
    /// The adapter refused a command or answered something else than expected.
    #[error("{what}: {message}")]
    Adapter { what: String, message: String },
    /// The adapter's line or the interface went away.
    #[error("{0}: closed")]
    Closed(String),
    /// The bus cannot carry this frame (an FD frame on classic slcan, a bad length).
    #[error("{what}: cannot send {frame}: {message}")]
    Unsendable {
        what: String,
        frame: String,
        message: String,
    },
}
