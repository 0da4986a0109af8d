//! Serial ports (USB relay boards, slcan adapters), opened exclusively and with the way it went
//! wrong named: a missing device, no permission, another program holding the port. A port is
//! closed when its stream is dropped.

use std::io;
use std::path::{Path, PathBuf};

use tokio_serial::SerialPortBuilderExt;

/// Why a serial port did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    Missing,
    PermissionDenied,
    Busy,
    Other,
}

/// A serial port that did not open.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {}", path.display(), match kind {
    OpenFailure::Missing => "no such device (is the adapter plugged in?)".to_string(),
    OpenFailure::PermissionDenied => "permission denied (add yourself to the dialout group)".to_string(),
    OpenFailure::Busy => "busy: another program has the port open".to_string(),
    OpenFailure::Other => message.clone(),
})]
pub struct OpenError {
    pub path: PathBuf,
    pub kind: OpenFailure,
    /// What the operating system said.
    pub message: String,
}

/// Open `path` at `baud`, exclusively.
pub fn open(path: &Path, baud: u32) -> Result<tokio_serial::SerialStream, OpenError> {
    tokio_serial::new(path.to_string_lossy(), baud)
        .open_native_async()
        .map_err(|e| {
            let io_kind = match e.kind {
                tokio_serial::ErrorKind::Io(k) => Some(k),
                tokio_serial::ErrorKind::NoDevice => Some(io::ErrorKind::NotFound),
                _ => None,
            };
            let text = e.description.to_ascii_lowercase();
            let busy = text.contains("busy") || text.contains("exclusive lock");
            let kind = match io_kind {
                _ if busy => OpenFailure::Busy,
                _ if !path.exists() => OpenFailure::Missing,
                Some(io::ErrorKind::NotFound) => OpenFailure::Missing,
                Some(io::ErrorKind::PermissionDenied) => OpenFailure::PermissionDenied,
                _ => OpenFailure::Other,
            };
            OpenError {
                path: path.to_path_buf(),
                kind,
                message: e.description,
            }
        })
}
