//! DoIP on real sockets: the I/O layer around [`crate::proto::doip`] for `ecu-sim serve`.
//!
//! - TCP: one task per connection drives a sans-IO [`doip::Connection`] with the wall clock;
//!   diagnostic requests go to the ECU task ([`EcuHandle`]) and its responses are sent when
//!   they are due. The connection stays up across ECU resets and power cuts (the DoIP entity
//!   is a gateway in front of the ECU, which reboots behind it); requests sent while the ECU
//!   boots or is off are acknowledged and get no answer, as on a vehicle.
//! - UDP on the same port: vehicle identification, entity status and power mode requests.
//! - slcan on a byte stream (a pty's master): ISO-TP frames through a sans-IO adapter.
//! - a relay board on a byte stream (a pty's master): the ECU's supply
//!   ([`crate::proto::relay`]).
//!
//! Responses computed before a power cut are not sent after it ([`Backend::power`]).
//!
//! What answers the requests is a [`Backend`]: the ECU task of `ecu-sim serve`
//! ([`EcuHandle`]), or a scenario world that injects faults on the way (the harness).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::can::frame::Frame;
use crate::host::{EcuHandle, PowerState};
use crate::proto::relay::{RelayBoard, RelayEvent, format_bytes};
use crate::proto::uds::server::{Addressing, TesterId};

mod served;
mod tcp;
pub use served::{DoipEndpoint, Endpoint, ServeConfig, ServeError, Served};
pub use tcp::{Routes, Sockets, serve_tcp, serve_tcp_with, serve_udp};

/// The flow control the ECU's ISO-TP endpoint on CAN asks senders for (ISO 15765-2: block size
/// and the STmin byte). Without one each link uses its own ([`CanLink::BLOCK_SIZE`], STmin 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowControl {
    /// Consecutive frames per block (0: the whole message without further flow control).
    pub block_size: u8,
    /// The STmin byte: 0x00-0x7F milliseconds, 0xF1-0xF9 100-900 µs.
    pub st_min: u8,
}

impl std::str::FromStr for FlowControl {
    type Err = String;

    /// `BS:STMIN`, each decimal or `0x` hex: `16:1`, `8:0xF5`.
    fn from_str(s: &str) -> Result<Self, String> {
        let byte = |what: &str, v: &str| {
            let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(hex) => u8::from_str_radix(hex, 16),
                None => v.parse(),
            };
            r.map_err(|e| format!("{what} {v:?}: {e}"))
        };
        let Some((bs, st)) = s.split_once(':') else {
            return Err(format!("{s:?}: expected BS:STMIN, e.g. 16:1"));
        };
        let fc = FlowControl {
            block_size: byte("block size", bs)?,
            st_min: byte("STmin", st)?,
        };
        if !matches!(fc.st_min, 0x00..=0x7F | 0xF1..=0xF9) {
            return Err(format!(
                "STmin 0x{:02X} is reserved (0x00-0x7F: ms, 0xF1-0xF9: 100-900 µs)",
                fc.st_min
            ));
        }
        Ok(fc)
    }
}

/// The connection carrying a request is to be closed (a fault injected in front of the ECU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnect;

/// What answers diagnostic requests behind a transport.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Handle one request; its responses with the instants they are due (none: no answer).
    fn request(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> impl Future<Output = Result<Vec<(Instant, Vec<u8>)>, Disconnect>> + Send;

    /// Handle one request from `tester` (a DoIP connection), which has its own diagnostic
    /// session. Default: [`Backend::request`] (a backend with one tester).
    fn request_from(
        &self,
        tester: TesterId,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> impl Future<Output = Result<Vec<(Instant, Vec<u8>)>, Disconnect>> + Send {
        let _ = tester;
        self.request(bytes, addressing)
    }

    /// Handle one request that took `receiving` to arrive before it was complete (a
    /// segmented ISO-TP request on CAN, from its first frame): ISO 14229-2 stops the server's
    /// S3 timer when a request begins to arrive. Default: [`Backend::request`].
    fn request_received_over(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
        receiving: Duration,
    ) -> impl Future<Output = Result<Vec<(Instant, Vec<u8>)>, Disconnect>> + Send {
        let _ = receiving;
        self.request(bytes, addressing)
    }

    /// `tester`'s connection closed: its session, security and download end. Default:
    /// nothing (a backend with one tester).
    fn tester_gone(&self, tester: TesterId) -> impl Future<Output = ()> + Send {
        let _ = tester;
        std::future::ready(())
    }

    /// The ECU's supply now. Transports send a request's responses only while
    /// [`PowerState::cuts`] stays what it was when they sent the request, and put nothing on
    /// a bus for an ECU that is off. Default: always on (a backend that drops what a cut
    /// loses by itself).
    fn power(&self) -> PowerState {
        PowerState::ALWAYS_ON
    }

    /// Switch the ECU's supply (a relay board in front of it, [`serve_relay`]). Default: the
    /// supply has no switch.
    fn switch_power(&self, on: bool) -> impl Future<Output = Result<PowerState, String>> + Send {
        let _ = on;
        std::future::ready(Err("this ECU's supply cannot be switched".to_string()))
    }
}

impl Backend for EcuHandle {
    async fn request(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> Result<Vec<(Instant, Vec<u8>)>, Disconnect> {
        Ok(EcuHandle::request(self, bytes, addressing).await)
    }

    async fn request_from(
        &self,
        tester: TesterId,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> Result<Vec<(Instant, Vec<u8>)>, Disconnect> {
        Ok(EcuHandle::request_from(self, tester, bytes, addressing).await)
    }

    async fn request_received_over(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
        receiving: Duration,
    ) -> Result<Vec<(Instant, Vec<u8>)>, Disconnect> {
        Ok(EcuHandle::request_received_over(self, bytes, addressing, receiving).await)
    }

    async fn tester_gone(&self, tester: TesterId) {
        EcuHandle::tester_gone(self, tester).await;
    }

    fn power(&self) -> PowerState {
        EcuHandle::power(self)
    }

    async fn switch_power(&self, on: bool) -> Result<PowerState, String> {
        self.set_power(on).await.map_err(|e| e.to_string())
    }
}

/// A CAN bus the ECU's ISO-TP endpoint sits on: frames from the bus in, frames to the bus out.
trait CanLink {
    /// What `serve` logs it as.
    const NAME: &'static str;
    /// The block size the ECU asks senders for in its flow control (0: the whole message
    /// without further flow control).
    const BLOCK_SIZE: u8;
    /// Frames that arrived (waits for at least one read); `None`: the link ended.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<Frame>>> + Send;
    /// Put `frames` on the bus (none: just flush what the link itself has to say); `false`:
    /// the link ended.
    fn send(&mut self, frames: Vec<Frame>) -> impl Future<Output = bool> + Send;
}

/// An slcan adapter on a byte stream (a pty's master).
struct SlcanLink<S> {
    io: S,
    dev: crate::proto::slcan::SlcanDevice,
    buf: Vec<u8>,
}

impl<S> CanLink for SlcanLink<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    const NAME: &'static str = "slcan";
    const BLOCK_SIZE: u8 = 0;

    async fn recv(&mut self) -> Option<Vec<Frame>> {
        match self.io.read(&mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.dev.handle_bytes(&self.buf[..n]);
                for c in self.dev.take_commands() {
                    let verdict = if c.accepted { "answered" } else { "refused" };
                    tracing::info!("slcan: host sent {:?}, {verdict}", c.line);
                }
                Some(self.dev.take_to_bus())
            }
        }
    }

    async fn send(&mut self, frames: Vec<Frame>) -> bool {
        for f in &frames {
            self.dev.handle_frame(f);
        }
        let out = self.dev.take_to_host();
        out.is_empty() || self.io.write_all(&out).await.is_ok()
    }
}

/// A Linux CAN interface (SocketCAN).
struct SocketCanLink(crate::can::socketcan::SocketCan);

impl CanLink for SocketCanLink {
    const NAME: &'static str = "socketcan";
    /// A sender on a Linux interface puts frames back to back; the socket's receive buffer
    /// holds a few hundred (see [`BUS_BLOCK_SIZE`](crate::proto::uds_can::BUS_BLOCK_SIZE)).
    const BLOCK_SIZE: u8 = crate::proto::uds_can::BUS_BLOCK_SIZE;

    async fn recv(&mut self) -> Option<Vec<Frame>> {
        let far = Instant::now() + Duration::from_secs(3600);
        match self.0.recv(far.into()).await {
            Ok(Some(f)) => Some(vec![f]),
            Ok(None) => Some(Vec::new()),
            Err(e) => {
                tracing::warn!("{}: {e}", self.0.describe());
                None
            }
        }
    }

    async fn send(&mut self, frames: Vec<Frame>) -> bool {
        for f in &frames {
            if let Err(e) = self.0.send(f).await {
                tracing::warn!("{}: {e}", self.0.describe());
                return false;
            }
        }
        true
    }
}

/// UDS over ISO-TP over CAN behind an slcan adapter on a byte stream (a pty's master): frames
/// the host sends go through the ISO-TP endpoint to the ECU; its answers go back as frames.
/// `max_message`: the largest request accepted (at least the block length RequestDownload
/// announces; ISO-TP's escaped first frame carries more than 4095 bytes on classic CAN).
/// Runs until the stream ends or fails.
///
/// The adapter stays powered when the ECU is not (it hangs on the host's USB): while the ECU
/// is off its endpoint sees no frames, and a power cut drops what it was receiving or sending.
pub async fn serve_slcan<S, B: Backend>(
    io: S,
    ecu: B,
    ids: crate::proto::uds_can::CanIds,
    max_message: usize,
    flow: Option<FlowControl>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let link = SlcanLink {
        io,
        dev: crate::proto::slcan::SlcanDevice::new(),
        buf: vec![0u8; 4096],
    };
    serve_can(link, ecu, ids, max_message, false, flow).await;
}

/// The same on a Linux CAN interface: the ECU's ISO-TP endpoint on `socket` (classic frames,
/// or CAN FD frames of up to 64 bytes with BRS when the socket was opened for FD). Runs until
/// the interface fails (goes down, is removed). Power as for slcan: while the ECU is off its
/// endpoint sees no frames.
pub async fn serve_socketcan<B: Backend>(
    socket: crate::can::socketcan::SocketCan,
    ecu: B,
    ids: crate::proto::uds_can::CanIds,
    max_message: usize,
    flow: Option<FlowControl>,
) {
    let fd = socket.is_fd();
    serve_can(SocketCanLink(socket), ecu, ids, max_message, fd, flow).await;
}

async fn serve_can<L: CanLink, B: Backend>(
    mut link: L,
    ecu: B,
    ids: crate::proto::uds_can::CanIds,
    max_message: usize,
    fd: bool,
    flow: Option<FlowControl>,
) {
    use crate::proto::uds_can::{DiagEndpoint, EndpointEvent};

    let start = Instant::now();
    let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    let template = crate::proto::isotp::Config {
        block_size: flow.map_or(L::BLOCK_SIZE, |f| f.block_size),
        st_min: flow.map_or(0, |f| f.st_min),
        ..crate::proto::uds_can::ecu_isotp_config(ids, fd, L::BLOCK_SIZE, max_message)
    };
    let mut ep = DiagEndpoint::new(ids, template);
    let mut power = ecu.power();
    // The supply as the ECU's endpoint last saw it: a new cut wipes the endpoint.
    let mut check_power = |ep: &mut DiagEndpoint, ecu: &B| {
        let now = ecu.power();
        if now.cuts != power.cuts {
            tracing::debug!(
                "{}: the ecu lost power: its iso-tp state and responses are gone",
                L::NAME
            );
            ep.clear();
        }
        power = now;
        power.on
    };
    loop {
        let wake = ep
            .poll_timeout()
            .map_or(Instant::now() + Duration::from_secs(3600), |t| {
                start + Duration::from_micros(t)
            });
        tokio::select! {
            r = link.recv() => match r {
                None => return,
                Some(frames) => {
                    let now = us(Instant::now());
                    if check_power(&mut ep, &ecu) {
                        for f in frames {
                            ep.handle_frame(now, &f.to_isotp());
                        }
                    }
                }
            },
            () = tokio::time::sleep_until(wake.into()) => {
                check_power(&mut ep, &ecu);
                ep.handle_timeout(us(Instant::now()));
            }
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Request {
                    data,
                    addressing,
                    started,
                } => {
                    let receiving =
                        Duration::from_micros(us(Instant::now()).saturating_sub(started));
                    // CAN has no connection to close: a disconnect loses the request.
                    let answers = ecu.request_received_over(data, addressing, receiving).await;
                    for (at, bytes) in answers.unwrap_or_default() {
                        ep.respond(us(Instant::now()), us(at), bytes);
                    }
                }
                EndpointEvent::TransportError(e) => tracing::debug!("{}: iso-tp: {e}", L::NAME),
            }
        }
        check_power(&mut ep, &ecu);
        let now = us(Instant::now());
        let mut out = Vec::new();
        while let Some(f) = ep.poll_transmit(now) {
            out.push(Frame::from_isotp(f, fd));
        }
        // Every round: an slcan adapter also answers its own commands (`O`, `S6`, `V`).
        if !link.send(out).await {
            return;
        }
    }
}

/// The ECU's supply behind a relay board on a byte stream (a pty's master): every command the
/// host writes switches the ECU's power ([`Backend::switch_power`]), in the order written;
/// other bytes are logged and skipped. The board only listens (LCUS-1 boards do not answer
/// switch commands). Runs until the stream ends or fails, or the ECU task stops.
pub async fn serve_relay<S, B: Backend>(mut io: S, mut board: RelayBoard, ecu: B)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 1024];
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("relay: reading: {e}");
                return;
            }
        };
        board.handle_bytes(&buf[..n]);
        while let Some(event) = board.poll_event() {
            match event {
                RelayEvent::Switched { on } => {
                    let word = if on { "on" } else { "off" };
                    match ecu.switch_power(on).await {
                        Ok(state) => tracing::info!(
                            "relay: switched {word} (ecu {}, {} power cut(s) so far)",
                            if state.on { "powered" } else { "unpowered" },
                            state.cuts
                        ),
                        Err(e) => {
                            tracing::error!("relay: switching {word}: {e}");
                            return;
                        }
                    }
                }
                RelayEvent::Ignored { bytes } => {
                    tracing::warn!("relay: ignored {} (not a command)", format_bytes(&bytes));
                }
            }
        }
    }
}

/// The master side of a pseudo-terminal as one async stream. Reads and writes go through two
/// handles of the same master: a `tokio::fs::File` runs one operation at a time, so with a
/// single handle an answer would wait behind a read that waits for the host.
pub type PtyStream = tokio::io::Join<tokio::fs::File, tokio::fs::File>;

/// A new pseudo-terminal in raw mode for an slcan adapter or a relay board: (the master as a
/// stream, the slave, the slave's path). Keep the slave open while serving, so tools can open
/// and close the path without the master seeing a hang-up; drop it to end a pending read.
pub fn raw_pty() -> std::io::Result<(PtyStream, std::os::fd::OwnedFd, String)> {
    use nix::sys::termios;
    let pty = nix::pty::openpty(None, None)?;
    let mut t = termios::tcgetattr(&pty.slave)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t)?;
    let path = nix::unistd::ttyname(&pty.slave)?;
    let reader = std::fs::File::from(pty.master);
    let writer = reader.try_clone()?;
    let stream = tokio::io::join(
        tokio::fs::File::from_std(reader),
        tokio::fs::File::from_std(writer),
    );
    Ok((stream, pty.slave, path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::can::frame::Frame;
    use crate::proto::doip::{self, ActivationType, ClientConfig, ClientConnection, ClientEvent};
    use crate::proto::slcan::encode_frame;

    const PENDING: [u8; 3] = [0x7F, 0x22, 0x78];
    const FINAL: [u8; 4] = [0x62, 0xF1, 0x89, 0x01];

    /// An ECU that answers every request with `answer` (each response due that long after the
    /// request) and whose supply the test switches.
    #[derive(Clone, Debug)]
    struct Scripted {
        answer: Vec<(Duration, Vec<u8>)>,
        power: Arc<Mutex<PowerState>>,
        requests: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn new(answer: &[(u64, &[u8])]) -> Self {
            Scripted {
                answer: answer
                    .iter()
                    .map(|&(ms, b)| (Duration::from_millis(ms), b.to_vec()))
                    .collect(),
                power: Arc::new(Mutex::new(PowerState::ALWAYS_ON)),
                requests: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn set_power(&self, on: bool) {
            let mut p = self.power.lock().unwrap();
            p.cuts += u64::from(p.on && !on);
            p.on = on;
        }

        /// Cut the power `after` from now.
        fn cut_after(&self, after: Duration) {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.set_power(false);
            });
        }
    }

    impl Backend for Scripted {
        async fn request(
            &self,
            _bytes: Vec<u8>,
            _addressing: Addressing,
        ) -> Result<Vec<(Instant, Vec<u8>)>, Disconnect> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let now = Instant::now();
            Ok(self
                .answer
                .iter()
                .map(|(after, b)| (now + *after, b.clone()))
                .collect())
        }

        fn power(&self) -> PowerState {
            *self.power.lock().unwrap()
        }
    }

    /// A tester on DoIP sends ReadDataByIdentifier F189 (`cut`: the ECU loses power that long
    /// after); every response that arrives within 1.5 s.
    async fn doip_responses(ecu: Scripted, cut: Option<Duration>) -> Vec<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tcp(listener, ecu.clone(), doip::Config::default()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut client = ClientConnection::new(ClientConfig::default());
        let start = Instant::now();
        let now = || start.elapsed().as_micros() as u64;
        client
            .activate(now(), 0x0E00, ActivationType::Default)
            .unwrap();
        let mut responses = Vec::new();
        let mut sent = false;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        let mut buf = vec![0u8; 4096];
        loop {
            while let Some(bytes) = client.poll_transmit() {
                stream.write_all(&bytes).await.unwrap();
            }
            let mut send = false;
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::Activated { .. } => send = true,
                    ClientEvent::Diagnostic { data, .. } => responses.push(data),
                    ClientEvent::DiagnosticAck { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            if send && !sent {
                sent = true;
                client
                    .send_diagnostic(now(), 0x0010, &[0x22, 0xF1, 0x89])
                    .unwrap();
                if let Some(after) = cut {
                    ecu.cut_after(after);
                }
                continue;
            }
            tokio::select! {
                n = stream.read(&mut buf) => {
                    let n = n.unwrap();
                    assert!(n > 0, "the entity closed the connection");
                    client.handle_bytes(now(), &buf[..n]);
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        server.abort();
        assert_eq!(ecu.requests.load(Ordering::SeqCst), 1);
        responses
    }

    #[tokio::test]
    async fn doip_sends_every_response_of_a_powered_ecu() {
        let ecu = Scripted::new(&[(0, &PENDING), (300, &FINAL)]);
        assert_eq!(doip_responses(ecu, None).await, [&PENDING[..], &FINAL]);
    }

    #[tokio::test]
    async fn doip_drops_the_responses_a_power_cut_overtakes() {
        let ecu = Scripted::new(&[(0, &PENDING), (300, &FINAL)]);
        let got = doip_responses(ecu, Some(Duration::from_millis(100))).await;
        assert_eq!(got, [&PENDING[..]]);
    }

    #[test]
    fn flow_control_reads_bs_and_stmin_and_refuses_reserved_stmin() {
        let fc = |s: &str| s.parse::<FlowControl>();
        assert_eq!(
            fc("16:1"),
            Ok(FlowControl {
                block_size: 16,
                st_min: 1
            })
        );
        assert_eq!(
            fc("0x08:0xF5"),
            Ok(FlowControl {
                block_size: 8,
                st_min: 0xF5
            })
        );
        for (bad, message) in [
            ("16", "\"16\": expected BS:STMIN, e.g. 16:1"),
            (
                "256:0",
                "block size \"256\": number too large to fit in target type",
            ),
            ("8:x", "STmin \"x\": invalid digit found in string"),
            (
                "8:0x80",
                "STmin 0x80 is reserved (0x00-0x7F: ms, 0xF1-0xF9: 100-900 µs)",
            ),
            (
                "8:250",
                "STmin 0xFA is reserved (0x00-0x7F: ms, 0xF1-0xF9: 100-900 µs)",
            ),
        ] {
            assert_eq!(fc(bad), Err(message.to_string()), "{bad}");
        }
    }

    /// An slcan tool sends ReadDataByIdentifier F189 as a single frame (`cut`: the ECU loses
    /// power that long after); the frames from the ECU within 700 ms.
    async fn slcan_frames(ecu: Scripted, cut: Option<Duration>) -> Vec<Frame> {
        let (mut host, device) = tokio::io::duplex(4096);
        let server = tokio::spawn(serve_slcan(
            device,
            ecu.clone(),
            crate::proto::uds_can::CanIds::default(),
            4095,
            None,
        ));
        host.write_all(b"S6\rO\r").await.unwrap();
        let request = Frame::classic(0x7E0, [0x03, 0x22, 0xF1, 0x89, 0xAA, 0xAA, 0xAA, 0xAA]);
        host.write_all(&encode_frame(&request).unwrap())
            .await
            .unwrap();
        if let Some(after) = cut {
            ecu.cut_after(after);
        }
        let mut text = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                n = host.read(&mut buf) => text.extend_from_slice(&buf[..n.unwrap()]),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        server.abort();
        text.split(|&b| b == b'\r')
            .filter(|l| l.first() == Some(&b't'))
            .map(|l| crate::proto::slcan::decode_frame(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn slcan_sends_the_response_of_a_powered_ecu() {
        let ecu = Scripted::new(&[(300, &FINAL)]);
        let frames = slcan_frames(ecu, None).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].id, 0x7E8);
        assert_eq!(&frames[0].data[..5], &[0x04, 0x62, 0xF1, 0x89, 0x01]);
    }

    #[tokio::test]
    async fn slcan_drops_the_response_a_power_cut_overtakes() {
        let ecu = Scripted::new(&[(300, &FINAL)]);
        let frames = slcan_frames(ecu.clone(), Some(Duration::from_millis(100))).await;
        assert_eq!(frames, []);
        assert_eq!(ecu.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unpowered_ecu_sees_no_frames_on_slcan() {
        let ecu = Scripted::new(&[(0, &FINAL)]);
        ecu.set_power(false);
        let frames = slcan_frames(ecu.clone(), None).await;
        assert_eq!(frames, []);
        assert_eq!(ecu.requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_relay_switches_the_hosted_ecu() {
        let (ecu, stop, _task) = crate::host::tests::hosted(crate::host::Pace::Max);
        let (mut host, device) = tokio::io::duplex(64);
        let relay = tokio::spawn(serve_relay(device, RelayBoard::default(), ecu.clone()));
        host.write_all(&[0x00, 0xA0, 0x01]).await.unwrap();
        host.write_all(&[0x00, 0xA1]).await.unwrap();
        let off = PowerState { on: false, cuts: 1 };
        wait_for_power(&ecu, off).await;
        host.write_all(&crate::proto::relay::LCUS_ON).await.unwrap();
        wait_for_power(&ecu, PowerState { on: true, cuts: 1 }).await;
        // The relay task ends with its stream.
        drop(host);
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay task ends when its stream does")
            .unwrap();
        let _ = stop.send(());
    }

    async fn wait_for_power(ecu: &EcuHandle, want: PowerState) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while ecu.power() != want {
            assert!(
                Instant::now() < deadline,
                "power {:?}, not {want:?}",
                ecu.power()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
