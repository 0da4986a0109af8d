//! Power control of the ECU under test: the virtual rail of a simulated ECU, a serial relay
//! board (the common USB relay modules take a few bytes per switch, e.g. `A0 01 01 A2` on and
//! `A0 01 00 A1` off), an external command (like labgrid's ExternalPowerDriver), or the
//! operator at the bench.
//!
//! Serial ports open with a clear error for each way it goes wrong (missing device, no
//! permission, another program holding it: ports are opened exclusively) and close when the
//! relay is dropped.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::serial::{self, OpenError};

/// What went wrong switching power.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{}: writing the {what} bytes: {source}", path.display())]
    Write {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("relay bytes {text:?}: {message} (expected hex bytes like \"A0 01 01 A2\")")]
    Bytes { text: String, message: String },
    #[error("power {what} command `{command}` {outcome}")]
    Command {
        what: &'static str,
        command: String,
        outcome: String,
    },
    #[error("the operator did not confirm power {what}: {reason}")]
    Manual { what: &'static str, reason: String },
}

fn word(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Something that switches the ECU's supply.
pub trait PowerControl {
    /// Switch power on or off; returns when the switch is done.
    fn set(&mut self, on: bool) -> impl Future<Output = Result<(), PowerError>> + Send;
    /// What it is, for logs and reports.
    fn describe(&self) -> String;
}

/// The supply of a simulated ECU: calls `switch` (which powers the simulation on or off).
pub struct VirtualRail<F: FnMut(bool) + Send> {
    pub switch: F,
}

impl<F: FnMut(bool) + Send> std::fmt::Debug for VirtualRail<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VirtualRail")
    }
}

impl<F: FnMut(bool) + Send> PowerControl for VirtualRail<F> {
    async fn set(&mut self, on: bool) -> Result<(), PowerError> {
        (self.switch)(on);
        Ok(())
    }
    fn describe(&self) -> String {
        "virtual rail".into()
    }
}

/// `"A0 01 01 A2"` (spaces, commas or `0x` optional) → bytes: the notation the virtual
/// ECU's relay board (`ecu_sim::proto::relay`) reads too.
pub fn parse_bytes(text: &str) -> Result<Vec<u8>, PowerError> {
    ecu_sim::proto::relay::parse_bytes(text).map_err(|e| PowerError::Bytes {
        text: e.text,
        message: e.message,
    })
}

/// A relay board on a serial port.
pub struct SerialRelay {
    path: PathBuf,
    port: tokio_serial::SerialStream,
    on: Vec<u8>,
    off: Vec<u8>,
}

impl std::fmt::Debug for SerialRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialRelay")
            .field("path", &self.path)
            .field("on", &self.on)
            .field("off", &self.off)
            .finish()
    }
}

impl SerialRelay {
    /// Open `path` at `baud`; `on` and `off` are what switches the relay.
    pub fn open(path: &Path, baud: u32, on: Vec<u8>, off: Vec<u8>) -> Result<Self, PowerError> {
        Ok(SerialRelay {
            path: path.to_path_buf(),
            port: serial::open(path, baud)?,
            on,
            off,
        })
    }
}

impl PowerControl for SerialRelay {
    async fn set(&mut self, on: bool) -> Result<(), PowerError> {
        let bytes = if on { &self.on } else { &self.off };
        let err = |source| PowerError::Write {
            path: self.path.clone(),
            what: word(on),
            source,
        };
        self.port.write_all(bytes).await.map_err(err)?;
        self.port.flush().await.map_err(err)
    }
    fn describe(&self) -> String {
        format!("serial relay on {}", self.path.display())
    }
}

/// Shell commands that switch power (`HIL_POWER` is `on` or `off` in their environment).
#[derive(Clone, Debug)]
pub struct ExternalCommand {
    pub on: String,
    pub off: String,
}

impl PowerControl for ExternalCommand {
    async fn set(&mut self, on: bool) -> Result<(), PowerError> {
        let command = if on { &self.on } else { &self.off };
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("HIL_POWER", word(on))
            .output()
            .await
            .map_err(|e| PowerError::Command {
                what: word(on),
                command: command.clone(),
                outcome: format!("did not start: {e}"),
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(PowerError::Command {
            what: word(on),
            command: command.clone(),
            outcome: format!(
                "failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
    fn describe(&self) -> String {
        format!("external commands `{}` / `{}`", self.on, self.off)
    }
}

/// The operator switches power by hand: a prompt, then Enter.
pub struct Manual<R, W> {
    pub input: R,
    pub prompt: W,
}

impl<R, W> std::fmt::Debug for Manual<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Manual")
    }
}

impl<R: AsyncBufRead + Unpin + Send, W: AsyncWrite + Unpin + Send> PowerControl for Manual<R, W> {
    async fn set(&mut self, on: bool) -> Result<(), PowerError> {
        let what = word(on);
        let fail = |reason: String| PowerError::Manual { what, reason };
        let text = format!(
            "Switch the ECU power {} and press Enter: ",
            what.to_uppercase()
        );
        self.prompt
            .write_all(text.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        self.prompt.flush().await.map_err(|e| fail(e.to_string()))?;
        let mut line = String::new();
        match self.input.read_line(&mut line).await {
            Ok(0) => Err(fail("no input (end of file)".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(fail(e.to_string())),
        }
    }
    fn describe(&self) -> String {
        "manual (operator)".into()
    }
}
