//! SocketCAN: a Linux CAN interface (`can0`, `vcan0`) as a [`SocketCan`] connection, through one
//! `CAN_RAW` socket bound to that interface (with `CAN_RAW_FD_FRAMES` on, so the same socket
//! type serves classic and FD connections).
//!
//! ## Opening
//!
//! [`SocketCan::open`] checks, in this order, and fails with
//! [`SocketCanError::Interface`] (`CAN interface IFACE: MESSAGE`) at the first that does not hold:
//!
//! | check | message |
//! |---|---|
//! | the name fits `IFNAMSIZ` | `interface names are 1 to 15 bytes without '/'` |
//! | the interface exists | `no such interface`; on a kernel without CAN `no such interface; this kernel has no CAN support: socket(PF_CAN): Address family not supported by protocol (os error 97) (…)` |
//! | it is a CAN interface (link type 280) | `not a CAN interface (link type 772, CAN is 280)` |
//! | it is up | ``interface is down: `ip link set can0 up` (…)`` |
//! | FD: its MTU is 72 or more | `CAN FD requested, but the MTU is 16: the interface carries classic frames only (…)` |
//! | a tokio runtime is current | `not inside a tokio runtime: …` |
//! | a `CAN_RAW` socket opens and binds to it | `this kernel has no CAN support: …`, `permission denied opening a CAN_RAW socket on it: …`, `not a CAN interface: bind: …`, `this kernel's CAN_RAW has no CAN FD: …` |
//!
//! [`check_kernel`] asks the first question alone, without an interface: the test that flashes
//! over vcan uses it to say why it skips.
//!
//! Link type, state and MTU come from `/sys/class/net/IFACE/{type,flags,mtu}`; where sysfs
//! cannot be read those checks are left to the kernel, which then refuses the first write
//! (`Network is down`, `Invalid argument` for an FD frame on a classic interface).
//!
//! ## Frames
//!
//! | direction | classic connection (`fd: false`) | FD connection (`fd: true`) |
//! |---|---|---|
//! | send | classic data frames; an FD frame is [`SocketCanError::Unsendable`] | classic or FD data frames; FD frames with BRS set (the data phase switches bit rate if the bus has one) |
//! | receive | classic data frames; FD frames are skipped, as a classic `CAN_RAW` socket never sees them | classic and FD data frames |
//!
//! Remote and error frames from the bus are skipped either way (the socket's error mask is
//! zero as well). Identifiers keep their format: a 29-bit `0x7E0` stays 29-bit.
//! `ENOBUFS` on send (the interface's transmit queue is full, usual on controllers with a
//! short queue) is retried every millisecond for up to [`ENOBUFS_PATIENCE`].
//!
//! ## The socket
//!
//! The `socketcan` crate opens and binds it; the backend drives it non-blocking through its own
//! [`AsyncFd`] rather than the crate's `tokio` socket, which waits for `READABLE` only: the
//! kernel reports an interface that goes down (`ENETDOWN`) or away (`ENODEV`) as a socket
//! error, which raises `EPOLLERR` alone, so a read waiting for `READABLE` would sleep until its
//! deadline and the caller would see timeouts instead of the cause. Here a read also wakes on
//! errors: the interface going down is [`SocketCanError::Io`] (`Network is down`), its removal
//! [`SocketCanError::Closed`]. The socket closes when the backend is dropped. The backend registers
//! with the tokio reactor, so it is opened inside a tokio runtime with I/O enabled.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::frame::{Frame, FrameError};
use ::socketcan::id::FdFlags;
use ::socketcan::{
    CanAddr, CanAnyFrame, CanDataFrame, CanFdFrame, CanFdSocket, EmbeddedFrame, ExtendedId, Id,
    Socket, SocketOptions, StandardId,
};
use nix::errno::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// What went wrong with a CAN interface. (The harness's `hil::can::CanError` carries these
/// with the same text.)
#[derive(Debug, thiserror::Error)]
pub enum SocketCanError {
    /// The interface did not open.
    #[error("CAN interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("{what}: {op}: {source}")]
    Io {
        what: String,
        op: &'static str,
        source: std::io::Error,
    },
    /// The interface went away.
    #[error("{0}: closed")]
    Closed(String),
    /// The bus cannot carry this frame (an FD frame on a classic connection, a bad length).
    #[error("{what}: cannot send {frame}: {message}")]
    Unsendable {
        what: String,
        frame: String,
        message: String,
    },
}

/// How long a send retries while the interface's transmit queue is full (`ENOBUFS`).
pub const ENOBUFS_PATIENCE: Duration = Duration::from_secs(1);

/// `ARPHRD_CAN`: the link type of CAN interfaces.
const ARPHRD_CAN: u32 = 280;
/// MTU of an interface that carries CAN FD frames (`sizeof(struct canfd_frame)`).
const CANFD_MTU: u32 = 72;
/// `IFNAMSIZ` less the terminating NUL.
const MAX_NAME: usize = 15;

/// A CAN interface seen through a `CAN_RAW` socket.
#[derive(Debug)]
pub struct SocketCan {
    socket: AsyncFd<CanFdSocket>,
    interface: String,
    fd: bool,
}

/// Open `interface` for classic (`fd: false`) or CAN FD frames: [`SocketCan::open`].
pub fn open(interface: &str, fd: bool) -> Result<SocketCan, SocketCanError> {
    SocketCan::open(interface, fd)
}

/// Whether this kernel can open CAN sockets at all: a `CAN_RAW` socket bound to every
/// interface, closed again at once. Needs no interface and no tokio runtime.
pub fn check_kernel() -> Result<(), SocketCanError> {
    ::socketcan::CanSocket::open_iface(0)
        .map(drop)
        .map_err(|source| SocketCanError::Io {
            what: "SocketCAN".into(),
            op: "socket(PF_CAN, SOCK_RAW, CAN_RAW)",
            source,
        })
}

impl SocketCan {
    /// Open `interface` (see the module doc for what is checked and the errors).
    pub fn open(interface: &str, fd: bool) -> Result<Self, SocketCanError> {
        let fail = |message: String| SocketCanError::Interface {
            interface: interface.to_string(),
            message,
        };
        if interface.is_empty() || interface.len() > MAX_NAME || interface.contains('/') {
            return Err(fail(format!(
                "interface names are 1 to {MAX_NAME} bytes without '/'"
            )));
        }
        let addr = match CanAddr::from_iface(interface) {
            Ok(addr) => addr,
            Err(e) if errno(&e) == Some(Errno::ENODEV) => {
                // A kernel without CAN has no CAN interface either: name the deeper cause.
                return Err(fail(match check_kernel() {
                    Err(SocketCanError::Io { source, .. }) => {
                        format!("no such interface; {}", socket_error(&source))
                    }
                    _ => "no such interface".into(),
                }));
            }
            Err(e) => return Err(fail(format!("if_nametoindex: {e}"))),
        };
        match Link::read(interface) {
            Some(link) => link.check(interface, fd).map_err(fail)?,
            None => tracing::debug!(
                "{interface}: /sys/class/net/{interface} unreadable: link type, state and MTU unchecked"
            ),
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(fail(
                "not inside a tokio runtime: the SocketCAN backend registers with its reactor"
                    .into(),
            ));
        }
        let socket = CanFdSocket::open_addr(&addr).map_err(|e| fail(socket_error(&e)))?;
        socket
            .set_error_filter_drop_all()
            .map_err(|e| fail(format!("setsockopt(CAN_RAW_ERR_FILTER): {e}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| fail(format!("fcntl(O_NONBLOCK): {e}")))?;
        // `AsyncFd::register`, its replacement, is `unsafe` (the caller vouches that the fd stays
        // open and the same while registered), which the workspace forbids. Here that holds by
        // construction: the `CanFdSocket` owns its fd and moves into the `AsyncFd` for good.
        #[expect(
            deprecated,
            reason = "AsyncFd::register is unsafe; the socket owns its fd"
        )]
        let socket = AsyncFd::new(socket)
            .map_err(|e| fail(format!("registering with the tokio reactor: {e}")))?;
        Ok(SocketCan {
            socket,
            interface: interface.to_string(),
            fd,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Whether this is a CAN FD connection.
    pub fn is_fd(&self) -> bool {
        self.fd
    }

    /// The next frame of any kind, or the socket's pending error.
    async fn read(&self) -> io::Result<CanAnyFrame> {
        loop {
            let mut ready = self
                .socket
                .ready(Interest::READABLE | Interest::ERROR)
                .await?;
            // A spurious wake (or an error already taken) reads WouldBlock and clears readiness.
            if let Ok(result) = ready.try_io(|s| s.get_ref().read_frame()) {
                return result;
            }
        }
    }

    fn io_error(&self, op: &'static str, source: io::Error) -> SocketCanError {
        match errno(&source) {
            // The interface was removed under the socket.
            Some(Errno::ENODEV | Errno::ENXIO) => SocketCanError::Closed(self.describe()),
            _ => SocketCanError::Io {
                what: self.describe(),
                op,
                source,
            },
        }
    }
}

impl SocketCan {
    /// Send `frame` (see the module doc for what a connection carries).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), SocketCanError> {
        let unsendable = |message: String| SocketCanError::Unsendable {
            what: self.describe(),
            frame: format!(
                "{:#x} [{} bytes, fd: {}]",
                frame.id,
                frame.data.len(),
                frame.fd
            ),
            message,
        };
        if frame.fd && !self.fd {
            return Err(unsendable(
                "an FD frame on a classic connection (open it with fd)".into(),
            ));
        }
        let raw = to_socketcan(frame).map_err(|e| unsendable(e.to_string()))?;
        let patience = Instant::now() + ENOBUFS_PATIENCE;
        loop {
            let written = self
                .socket
                .async_io(Interest::WRITABLE, |s| s.write_frame(&raw))
                .await;
            match written {
                Ok(()) => return Ok(()),
                Err(e) if errno(&e) == Some(Errno::ENOBUFS) && Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(self.io_error("write", e)),
            }
        }
    }

    /// The next data frame this connection carries, or `None` at `deadline`.
    pub async fn recv(&mut self, deadline: Instant) -> Result<Option<Frame>, SocketCanError> {
        loop {
            let raw = match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_elapsed) => return Ok(None),
                Ok(Err(e)) => return Err(self.io_error("read", e)),
                Ok(Ok(raw)) => raw,
            };
            match from_socketcan(&raw) {
                Some(frame) if frame.fd && !self.fd => {
                    tracing::trace!("{}: FD frame {:#x} skipped", self.describe(), frame.id)
                }
                Some(frame) => return Ok(Some(frame)),
                None => tracing::trace!("{}: skipped {raw:?}", self.describe()),
            }
            // Only skipped frames: a bus full of them must not hold the caller past its deadline.
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// `socketcan IFACE (classic|fd)`.
    pub fn describe(&self) -> String {
        let kind = if self.fd { "fd" } else { "classic" };
        format!("socketcan {} ({kind})", self.interface)
    }
}

/// The SocketCAN frame for one of ours (an FD frame with BRS set).
pub fn to_socketcan(frame: &Frame) -> Result<CanAnyFrame, FrameError> {
    frame.validate()?;
    let id = if frame.extended {
        ExtendedId::new(frame.id).map(Id::Extended)
    } else {
        u16::try_from(frame.id)
            .ok()
            .and_then(StandardId::new)
            .map(Id::Standard)
    };
    let bits = if frame.extended { 29 } else { 11 };
    let id = id.ok_or(FrameError::IdTooLarge { id: frame.id, bits })?;
    let bad_length = |kind| FrameError::BadLength {
        len: frame.data.len(),
        kind,
    };
    if frame.fd {
        CanFdFrame::with_flags(id, &frame.data, FdFlags::BRS)
            .map(CanAnyFrame::Fd)
            .ok_or_else(|| bad_length("CAN FD"))
    } else {
        CanDataFrame::new(id, &frame.data)
            .map(CanAnyFrame::Normal)
            .ok_or_else(|| bad_length("classic CAN"))
    }
}

/// Our frame for a SocketCAN data frame; `None` for remote and error frames.
pub fn from_socketcan(frame: &CanAnyFrame) -> Option<Frame> {
    let (id, extended, fd, data) = match frame {
        CanAnyFrame::Normal(f) => (f.id(), f.is_extended(), false, f.data()),
        CanAnyFrame::Fd(f) => (f.id(), f.is_extended(), true, f.data()),
        CanAnyFrame::Remote(_) | CanAnyFrame::Error(_) => return None,
    };
    let id = match id {
        Id::Standard(id) => u32::from(id.as_raw()),
        Id::Extended(id) => id.as_raw(),
    };
    Some(Frame {
        id,
        extended,
        fd,
        data: data.to_vec(),
    })
}

fn errno(e: &io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw)
}

/// Why a `CAN_RAW` socket did not open or bind (`socket`, `bind` and
/// `setsockopt(CAN_RAW_FD_FRAMES)` in one call).
fn socket_error(e: &io::Error) -> String {
    match errno(e) {
        Some(Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT) => format!(
            "this kernel has no CAN support: socket(PF_CAN): {e} (a kernel with CONFIG_CAN and CONFIG_CAN_RAW, or `modprobe can-raw`)"
        ),
        Some(Errno::EPERM | Errno::EACCES) => format!(
            "permission denied opening a CAN_RAW socket on it: {e} (CAN_RAW needs no privilege: a security policy or seccomp filter refuses it)"
        ),
        Some(Errno::ENODEV) => format!("not a CAN interface: bind: {e}"),
        Some(Errno::ENOPROTOOPT) => {
            format!("this kernel's CAN_RAW has no CAN FD: setsockopt(CAN_RAW_FD_FRAMES): {e}")
        }
        _ => format!("opening a CAN_RAW socket: {e}"),
    }
}

/// What sysfs tells about a network interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    /// `ARPHRD_*` link type.
    kind: u32,
    up: bool,
    mtu: u32,
}

impl Link {
    fn read(interface: &str) -> Option<Link> {
        let dir = Path::new("/sys/class/net").join(interface);
        let read = |name| std::fs::read_to_string(dir.join(name)).ok();
        Link::parse(&read("type")?, &read("flags")?, &read("mtu")?)
    }

    /// From the text of `type` (decimal), `flags` (`0x…`) and `mtu` (decimal).
    fn parse(kind: &str, flags: &str, mtu: &str) -> Option<Link> {
        let flags = flags.trim();
        let flags = flags.strip_prefix("0x").unwrap_or(flags);
        Some(Link {
            kind: kind.trim().parse().ok()?,
            // IFF_UP
            up: u32::from_str_radix(flags, 16).ok()? & 0x1 != 0,
            mtu: mtu.trim().parse().ok()?,
        })
    }

    fn check(&self, interface: &str, fd: bool) -> Result<(), String> {
        if self.kind != ARPHRD_CAN {
            return Err(format!(
                "not a CAN interface (link type {}, CAN is {ARPHRD_CAN})",
                self.kind
            ));
        }
        if !self.up {
            return Err(format!(
                "interface is down: `ip link set {interface} up` (a controller needs its bit rate first: `ip link set {interface} type can bitrate 500000`)"
            ));
        }
        if fd && self.mtu < CANFD_MTU {
            return Err(format!(
                "CAN FD requested, but the MTU is {}: the interface carries classic frames only (vcan: `ip link set {interface} mtu {CANFD_MTU}` while down; a controller: `ip link set {interface} type can bitrate … dbitrate … fd on`)",
                self.mtu
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::socketcan::frame::AsPtr;
    use ::socketcan::{CanErrorFrame, CanRemoteFrame};
    use hex_literal::hex;

    /// `struct can_frame`: can_id (LE, flags in the top bits), len, pad, res0, len8_dlc, data[8].
    #[test]
    fn classic_frames_become_kernel_can_frames() {
        let f = Frame::classic(0x7E0, hex!("02 10 03 CC CC CC CC CC"));
        let raw = to_socketcan(&f).unwrap();
        assert!(matches!(raw, CanAnyFrame::Normal(_)));
        assert_eq!(
            raw.as_bytes(),
            hex!("E0 07 00 00 08 00 00 00 02 10 03 CC CC CC CC CC")
        );
        // 29-bit: CAN_EFF_FLAG (bit 31) set; short frames stay short.
        let f = Frame::classic(0x18DA_F110, hex!("02 50 03"));
        assert_eq!(
            to_socketcan(&f).unwrap().as_bytes(),
            hex!("10 F1 DA 98 03 00 00 00 02 50 03 00 00 00 00 00")
        );
    }

    /// `struct canfd_frame`: can_id, len, flags (BRS 0x01 | FDF 0x04), res0, res1, data[64].
    #[test]
    fn fd_frames_become_kernel_canfd_frames_with_brs() {
        let f = Frame::fd(0x7E8, vec![0xAB; 12]);
        let raw = to_socketcan(&f).unwrap();
        assert!(matches!(raw, CanAnyFrame::Fd(_)));
        let bytes = raw.as_bytes();
        assert_eq!(bytes.len(), 72);
        assert_eq!(bytes[..8], hex!("E8 07 00 00 0C 05 00 00"));
        assert_eq!(bytes[8..20], [0xAB; 12]);
        assert!(bytes[20..].iter().all(|&b| b == 0));
        let f = Frame::fd(0x18DA_10F1, vec![0x11; 64]);
        let bytes = to_socketcan(&f).unwrap();
        assert_eq!(bytes.as_bytes()[..8], hex!("F1 10 DA 98 40 05 00 00"));
    }

    #[test]
    fn frames_survive_the_round_trip() {
        let frames = [
            Frame::classic(0, vec![]),
            Frame::classic(0x7FF, vec![1, 2, 3, 4, 5, 6, 7, 8]),
            Frame::classic(0x800, vec![9]),
            Frame::classic(0x1FFF_FFFF, vec![0; 8]),
            // A 29-bit id below 0x800 stays 29-bit.
            Frame {
                id: 0x7E0,
                extended: true,
                fd: false,
                data: vec![0x02, 0x3E, 0x00],
            },
            Frame::fd(0x7E0, vec![0x5A; 5]),
            Frame::fd(0x123, vec![0x00; 48]),
            Frame::fd(0x18DA_F110, vec![0xEE; 64]),
            Frame {
                id: 0x10,
                extended: true,
                fd: true,
                data: vec![0x77; 20],
            },
        ];
        for f in frames {
            let back = from_socketcan(&to_socketcan(&f).unwrap());
            assert_eq!(back.as_ref(), Some(&f), "{f:?}");
        }
    }

    #[test]
    fn frames_the_bus_cannot_carry_are_refused_with_the_reason() {
        let cases = [
            (
                Frame {
                    id: 0x800,
                    extended: false,
                    fd: false,
                    data: vec![],
                },
                "identifier 0x800 does not fit 11 bits",
            ),
            (
                Frame::classic(0x2000_0000, vec![]),
                "identifier 0x20000000 does not fit 29 bits",
            ),
            (
                Frame::classic(0x7E0, vec![0; 9]),
                "9 data bytes is not a valid classic CAN length",
            ),
            (
                Frame::fd(0x7E0, vec![0; 13]),
                "13 data bytes is not a valid CAN FD length",
            ),
            (
                Frame::fd(0x7E0, vec![0; 65]),
                "65 data bytes is not a valid CAN FD length",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(to_socketcan(&f).unwrap_err().to_string(), want, "{f:?}");
        }
    }

    #[test]
    fn remote_and_error_frames_are_not_delivered() {
        let id = StandardId::new(0x7E8).unwrap();
        let remote = CanRemoteFrame::new_remote(id, 8).unwrap();
        assert_eq!(from_socketcan(&CanAnyFrame::Remote(remote)), None);
        // CAN_ERR_BUSOFF
        let error = CanErrorFrame::new_error(0x40, &[]).unwrap();
        assert_eq!(from_socketcan(&CanAnyFrame::Error(error)), None);
    }

    #[test]
    fn sysfs_link_attributes_parse() {
        assert_eq!(
            Link::parse("280\n", "0xc1\n", "72\n"),
            Some(Link {
                kind: 280,
                up: true,
                mtu: 72
            })
        );
        assert_eq!(
            Link::parse("280", "0x80", "16"),
            Some(Link {
                kind: 280,
                up: false,
                mtu: 16
            })
        );
        assert_eq!(Link::parse("ether", "0x1", "1500"), None);
        assert_eq!(Link::parse("1", "up", "1500"), None);
    }

    #[test]
    fn link_checks_name_what_is_wrong_and_the_fix() {
        let can = |up, mtu| Link {
            kind: ARPHRD_CAN,
            up,
            mtu,
        };
        assert_eq!(can(true, 16).check("can0", false), Ok(()));
        assert_eq!(can(true, 72).check("vcan0", true), Ok(()));
        // A CAN XL interface carries FD frames as well.
        assert_eq!(can(true, 2060).check("xl0", true), Ok(()));
        let cases = [
            (
                Link {
                    kind: 1,
                    up: true,
                    mtu: 1500,
                },
                false,
                "not a CAN interface (link type 1, CAN is 280)",
            ),
            (
                can(false, 16),
                false,
                "interface is down: `ip link set can0 up` (a controller needs its bit rate first: `ip link set can0 type can bitrate 500000`)",
            ),
            (
                can(true, 16),
                true,
                "CAN FD requested, but the MTU is 16: the interface carries classic frames only (vcan: `ip link set can0 mtu 72` while down; a controller: `ip link set can0 type can bitrate … dbitrate … fd on`)",
            ),
        ];
        for (link, fd, want) in cases {
            assert_eq!(link.check("can0", fd), Err(want.to_string()), "{link:?}");
        }
    }

    #[test]
    fn socket_errors_name_the_cause() {
        let e = |n| io::Error::from_raw_os_error(n as i32);
        let text = socket_error(&e(Errno::EAFNOSUPPORT));
        assert!(
            text.starts_with("this kernel has no CAN support: socket(PF_CAN): "),
            "{text}"
        );
        assert!(text.contains("(os error 97)"), "{text}");
        let text = socket_error(&e(Errno::EACCES));
        assert!(
            text.starts_with("permission denied opening a CAN_RAW socket on it: "),
            "{text}"
        );
        assert!(socket_error(&e(Errno::EPERM)).starts_with("permission denied"));
        assert!(socket_error(&e(Errno::ENODEV)).starts_with("not a CAN interface: bind: "));
        assert!(
            socket_error(&e(Errno::ENOPROTOOPT))
                .starts_with("this kernel's CAN_RAW has no CAN FD: ")
        );
        assert!(socket_error(&e(Errno::EMFILE)).starts_with("opening a CAN_RAW socket: "));
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_syscall() {
        for name in ["", "a_name_of_16_chr", "../etc"] {
            let e = SocketCan::open(name, false).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("CAN interface {name}: interface names are 1 to 15 bytes without '/'")
            );
        }
    }

    /// Whatever this kernel has, a missing interface is reported as missing (and, on a
    /// kernel without CAN, with that cause too).
    #[test]
    fn a_missing_interface_is_named() {
        let e = SocketCan::open("hilnosuch0", true).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("CAN interface hilnosuch0: no such interface"),
            "{text}"
        );
        let kernel = check_kernel();
        assert_eq!(
            text.contains("this kernel has no CAN support"),
            kernel.is_err(),
            "{text} / {kernel:?}"
        );
    }
}
