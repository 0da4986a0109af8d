//! The host side of an slcan (Lawicel ASCII) USB-CAN adapter: what the harness says to a cheap
//! adapter on a serial port — or to `ecu-sim serve --slcan-pty`, which plays one.
//!
//! | step | host sends | adapter answers | on a refusal (`\x07`) |
//! |---|---|---|---|
//! | [`SlcanAdapter::open`] | `C\r` (close, in case it was left open) | `\r` (or `\x07` if already closed: fine) | — |
//! | | `S0`..`S8` + `\r` (bit rate) | `\r` | [`CanError::Adapter`]: the adapter refused the bit rate |
//! | | `O\r` (open the channel) | `\r` | [`CanError::Adapter`]: the adapter refused to open |
//! | [`CanBackend::send`] | `tiiildd…\r` / `Tiiiiiiiildd…\r` | `z\r` / `Z\r` | logged; the frame is lost (ISO-TP timers notice) |
//! | [`SlcanAdapter::close`] | `C\r` | `\r` | — |
//!
//! Received frames arrive as `tiiildd…[tttt]\r` (the 4-digit timestamp of adapters that have
//! them on is dropped). Lines are parsed by the sans-IO [`HostLines`]; the I/O is in
//! [`SlcanAdapter`].

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use ecu_sim::can::frame::Frame;
use ecu_sim::proto::slcan::{BITRATES, decode_frame, encode_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{CanBackend, CanError};

/// How long the adapter may take to answer a setup command.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);
/// A line longer than this is noise (a `T` frame with 8 bytes and a timestamp is 30).
const MAX_LINE: usize = 64;

/// What the adapter sent, line by line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// A frame from the bus.
    Frame(Frame),
    /// `\r` alone: the last command was accepted.
    Ok,
    /// `z` / `Z`: a frame we sent went out.
    Sent,
    /// `\x07`: the last command was refused.
    Refused,
    /// Anything else (version strings, status flags, noise).
    Other(String),
}

/// Sans-IO parser of the adapter's output.
#[derive(Clone, Debug, Default)]
pub struct HostLines {
    line: Vec<u8>,
    events: VecDeque<HostEvent>,
}

impl HostLines {
    /// Bytes from the adapter (any chunking).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                0x07 => {
                    self.line.clear();
                    self.events.push_back(HostEvent::Refused);
                }
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.line);
                    // `\n` after `\r` (some adapters) is not a second empty answer.
                    if b == b'\n' && line.is_empty() {
                        continue;
                    }
                    self.events.push_back(classify(&line));
                }
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }

    pub fn poll(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }
}

fn classify(line: &[u8]) -> HostEvent {
    match line.first() {
        None => HostEvent::Ok,
        Some(b'z' | b'Z') if line.len() == 1 => HostEvent::Sent,
        Some(b't' | b'T') => {
            let frame = decode_frame(line).or_else(|| {
                // A timestamp (4 hex digits) after the data.
                let cut = line.len().checked_sub(4)?;
                decode_frame(&line[..cut])
            });
            match frame {
                Some(f) => HostEvent::Frame(f),
                None => HostEvent::Other(String::from_utf8_lossy(line).into_owned()),
            }
        }
        _ => HostEvent::Other(String::from_utf8_lossy(line).into_owned()),
    }
}

/// The `S` command for a bit rate.
pub fn bitrate_command(bitrate: u32) -> Option<String> {
    BITRATES
        .iter()
        .position(|&b| b == bitrate)
        .map(|i| format!("S{i}\r"))
}

/// An slcan adapter on a byte stream (a serial port), channel open.
#[derive(Debug)]
pub struct SlcanAdapter<S> {
    io: S,
    what: String,
    lines: HostLines,
    buf: Vec<u8>,
}

impl SlcanAdapter<tokio_serial::SerialStream> {
    /// Open the adapter on serial port `path` (exclusively) and open its channel at `bitrate`.
    pub async fn open(path: &Path, serial_baud: u32, bitrate: u32) -> Result<Self, CanError> {
        let port = crate::serial::open(path, serial_baud)?;
        let what = format!("slcan {} @ {} kbit/s", path.display(), bitrate / 1000);
        SlcanAdapter::start(port, what, bitrate).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> SlcanAdapter<S> {
    /// Set up the adapter on `io`: close, set the bit rate, open.
    pub async fn start(io: S, what: String, bitrate: u32) -> Result<Self, CanError> {
        let speed = bitrate_command(bitrate).ok_or_else(|| CanError::Adapter {
            what: what.clone(),
            message: format!(
                "{bitrate} bit/s is not an slcan bit rate (one of {})",
                BITRATES.map(|b| b.to_string()).join(", ")
            ),
        })?;
        let mut a = SlcanAdapter {
            io,
            what,
            lines: HostLines::default(),
            buf: vec![0; 4096],
        };
        // Whatever the adapter was doing, it ends here.
        a.command("C\r", true).await?;
        a.command(&speed, false).await?;
        a.command("O\r", false).await?;
        tracing::debug!("{}: channel open", a.what);
        Ok(a)
    }

    /// Close the channel (the adapter stops putting frames on the bus).
    pub async fn close(mut self) -> Result<(), CanError> {
        self.command("C\r", true).await
    }

    /// Send a setup command and wait for its answer; frames arriving meanwhile are dropped
    /// (the channel is not open yet, or is being closed).
    async fn command(&mut self, text: &str, refusal_ok: bool) -> Result<(), CanError> {
        self.write(text.as_bytes()).await?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            while let Some(e) = self.lines.poll() {
                match e {
                    HostEvent::Ok => return Ok(()),
                    HostEvent::Refused if refusal_ok => return Ok(()),
                    HostEvent::Refused => {
                        return Err(CanError::Adapter {
                            what: self.what.clone(),
                            message: format!("refused `{}`", text.trim_end()),
                        });
                    }
                    other => tracing::debug!("{}: during setup: {other:?}", self.what),
                }
            }
            if !self.read(deadline).await? {
                return Err(CanError::Adapter {
                    what: self.what.clone(),
                    message: format!(
                        "no answer to `{}` within {SETUP_TIMEOUT:?} (is it an slcan adapter, at the right serial speed?)",
                        text.trim_end()
                    ),
                });
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CanError> {
        let what = &self.what;
        let err = |source| CanError::Io {
            what: what.clone(),
            op: "write",
            source,
        };
        self.io.write_all(bytes).await.map_err(err)?;
        self.io.flush().await.map_err(err)
    }

    /// Read what is there by `deadline` into the parser; false if nothing came.
    async fn read(&mut self, deadline: Instant) -> Result<bool, CanError> {
        let r = tokio::select! {
            r = self.io.read(&mut self.buf) => r,
            () = tokio::time::sleep_until(deadline) => return Ok(false),
        };
        match r {
            Ok(0) => Err(CanError::Closed(self.what.clone())),
            Ok(n) => {
                self.lines.feed(&self.buf[..n]);
                Ok(true)
            }
            Err(source) => Err(CanError::Io {
                what: self.what.clone(),
                op: "read",
                source,
            }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> CanBackend for SlcanAdapter<S> {
    async fn send(&mut self, frame: &Frame) -> Result<(), CanError> {
        let line = encode_frame(frame).ok_or_else(|| CanError::Unsendable {
            what: self.what.clone(),
            frame: format!(
                "{:#x} [{} bytes, fd: {}]",
                frame.id,
                frame.data.len(),
                frame.fd
            ),
            message: "classic slcan carries classic frames of up to 8 bytes".into(),
        })?;
        self.write(&line).await
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Frame>, CanError> {
        loop {
            while let Some(e) = self.lines.poll() {
                match e {
                    HostEvent::Frame(f) => return Ok(Some(f)),
                    HostEvent::Refused => {
                        tracing::warn!("{}: the adapter refused a frame", self.what);
                    }
                    HostEvent::Ok | HostEvent::Sent => {}
                    HostEvent::Other(line) => tracing::debug!("{}: {line:?}", self.what),
                }
            }
            if !self.read(deadline).await? {
                return Ok(None);
            }
        }
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> Vec<HostEvent> {
        let mut l = HostLines::default();
        l.feed(bytes);
        std::iter::from_fn(|| l.poll()).collect()
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            events(b"\rz\rt7E8803020304AAAAAAAA\r\x07T1FFFFFFF20102\rV1013\r"),
            vec![
                HostEvent::Ok,
                HostEvent::Sent,
                HostEvent::Frame(Frame::classic(
                    0x7E8,
                    [0x03, 0x02, 0x03, 0x04, 0xAA, 0xAA, 0xAA, 0xAA]
                )),
                HostEvent::Refused,
                HostEvent::Frame(Frame::classic(0x1FFF_FFFF, [0x01, 0x02])),
                HostEvent::Other("V1013".into()),
            ]
        );
    }

    #[test]
    fn timestamps_and_crlf_are_tolerated() {
        assert_eq!(
            events(b"t12320102BEEF\r\n\r\n"),
            vec![
                HostEvent::Frame(Frame::classic(0x123, [0x01, 0x02])),
                HostEvent::Ok
            ]
        );
    }

    #[test]
    fn split_and_garbage_input_never_panics() {
        let mut l = HostLines::default();
        for chunk in [&b"t7E"[..], b"81", b"01\r", &[0xFF; 200], b"\rt9\r"] {
            l.feed(chunk);
        }
        let got: Vec<_> = std::iter::from_fn(|| l.poll()).collect();
        assert_eq!(got[0], HostEvent::Frame(Frame::classic(0x7E8, [0x01])));
        assert!(matches!(got[1], HostEvent::Other(_)), "{got:?}");
        assert!(matches!(got[2], HostEvent::Other(_)), "{got:?}");
    }

    #[test]
    fn bitrates_map_to_s_commands() {
        assert_eq!(bitrate_command(500_000).as_deref(), Some("S6\r"));
        assert_eq!(bitrate_command(10_000).as_deref(), Some("S0\r"));
        assert_eq!(bitrate_command(1_000_000).as_deref(), Some("S8\r"));
        assert_eq!(bitrate_command(83_333), None);
    }
}
