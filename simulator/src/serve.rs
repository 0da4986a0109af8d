//! DoIP on real sockets: the I/O layer around [`crate::proto::doip`] for `ecu-sim serve`.
//!
//! - TCP: one task per connection drives a sans-IO [`doip::Connection`] with the wall clock;
//!   diagnostic requests go to the ECU task ([`EcuHandle`]) and its responses are sent when
//!   they are due. The connection stays up across ECU resets (the DoIP entity is a gateway in
//!   front of the ECU, which reboots behind it); requests sent while the ECU boots get no
//!   answer, as on a vehicle.
//! - UDP on the same port: vehicle identification, entity status and power mode requests.
//! - slcan on a byte stream (a pty's master): ISO-TP frames through a sans-IO adapter.
//!
//! What answers the requests is a [`Backend`]: the ECU task of `ecu-sim serve`
//! ([`EcuHandle`]), or a scenario world that injects faults on the way (the harness).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::host::EcuHandle;
use crate::proto::doip::{self, Connection, Event};
use crate::proto::uds::server::Addressing;

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
}

impl Backend for EcuHandle {
    async fn request(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> Result<Vec<(Instant, Vec<u8>)>, Disconnect> {
        Ok(EcuHandle::request(self, bytes, addressing).await)
    }
}

/// Accept DoIP connections until the listener fails; each runs in its own task.
pub async fn serve_tcp<B: Backend>(listener: TcpListener, ecu: B, config: doip::Config) {
    let open = Arc::new(AtomicU8::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("doip: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::info!("doip: connection from {peer}");
        let (ecu, mut config, open) = (ecu.clone(), config.clone(), Arc::clone(&open));
        config.entity.open_sockets = open.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ecu, config).await {
                tracing::warn!("doip: connection from {peer}: {e}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::info!("doip: {peer} disconnected");
        });
    }
}

/// Answer UDP vehicle identification (and status) requests.
pub async fn serve_udp(socket: UdpSocket, entity: doip::EntityInfo) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("doip udp: {e}");
                continue;
            }
        };
        if let Some(reply) = doip::udp_response(&buf[..n], &entity)
            && let Err(e) = socket.send_to(&reply, peer).await
        {
            tracing::warn!("doip udp: reply to {peer}: {e}");
        }
    }
}

async fn flush(conn: &mut Connection, wr: &mut OwnedWriteHalf) -> std::io::Result<()> {
    while let Some(bytes) = conn.poll_transmit() {
        wr.write_all(&bytes).await?;
    }
    Ok(())
}

async fn connection<B: Backend>(
    stream: TcpStream,
    ecu: B,
    config: doip::Config,
) -> std::io::Result<()> {
    let start = Instant::now();
    let now = move || start.elapsed().as_micros() as u64;
    let ecu_address = config.ecu_address;
    let mut conn = Connection::new(now(), config);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        flush(&mut conn, &mut wr).await?;
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Diagnostic { target, data, .. } => {
                    let addressing = if target == ecu_address {
                        Addressing::Physical
                    } else {
                        Addressing::Functional
                    };
                    let Ok(responses) = ecu.request(data, addressing).await else {
                        tracing::info!("doip: connection closed in front of the ecu");
                        return wr.shutdown().await;
                    };
                    for (due, bytes) in responses {
                        // A deadline that has passed still costs a timer tick in tokio:
                        // only sleep for responses that are really due later.
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        if let Err(e) = conn.send_diagnostic(now(), &bytes) {
                            tracing::warn!("doip: response not sent: {e}");
                        }
                        flush(&mut conn, &mut wr).await?;
                    }
                }
                Event::RoutingActivated { source, .. } => {
                    tracing::info!("doip: routing activated for tester 0x{source:04x}");
                }
                Event::Closed(reason) => tracing::info!("doip: closing: {reason}"),
                other => tracing::debug!("doip: {other:?}"),
            }
        }
        if conn.is_closed() {
            flush(&mut conn, &mut wr).await?;
            return wr.shutdown().await;
        }
        let deadline = conn
            .poll_timeout()
            .map(|t| start + Duration::from_micros(t))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                conn.handle_bytes(now(), &buf[..n]);
            }
            () = tokio::time::sleep_until(deadline.into()) => conn.handle_timeout(now()),
        }
    }
}

/// UDS over ISO-TP over CAN behind an slcan adapter on a byte stream (a pty's master): frames
/// the host sends go through the ISO-TP endpoint to the ECU; its answers go back as frames.
/// `max_message`: the largest request accepted (at least the block length RequestDownload
/// announces; ISO-TP's escaped first frame carries more than 4095 bytes on classic CAN).
/// Runs until the stream ends or fails.
pub async fn serve_slcan<S, B: Backend>(
    mut io: S,
    ecu: B,
    ids: crate::proto::uds_can::CanIds,
    max_message: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::proto::isotp;
    use crate::proto::slcan::SlcanDevice;
    use crate::proto::uds_can::{DiagEndpoint, EndpointEvent};

    let start = Instant::now();
    let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    let template = isotp::Config {
        padding: Some(0xAA),
        max_message: max_message.max(4095),
        ..isotp::Config::new(ids.response, ids.request)
    };
    let mut ep = DiagEndpoint::new(ids, template);
    let mut dev = SlcanDevice::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let wake = ep
            .poll_timeout()
            .map_or(Instant::now() + Duration::from_secs(3600), |t| {
                start + Duration::from_micros(t)
            });
        tokio::select! {
            r = io.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    dev.handle_bytes(&buf[..n]);
                    let now = us(Instant::now());
                    for f in dev.take_to_bus() {
                        ep.handle_frame(now, &f.to_isotp());
                    }
                }
            },
            () = tokio::time::sleep_until(wake.into()) => ep.handle_timeout(us(Instant::now())),
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Request { data, addressing } => {
                    // CAN has no connection to close: a disconnect loses the request.
                    for (at, bytes) in ecu.request(data, addressing).await.unwrap_or_default() {
                        ep.respond(us(Instant::now()), us(at), bytes);
                    }
                }
                EndpointEvent::TransportError(e) => tracing::debug!("slcan: iso-tp: {e}"),
            }
        }
        let now = us(Instant::now());
        while let Some(f) = ep.poll_transmit(now) {
            dev.handle_frame(&crate::can::frame::Frame::from_isotp(f, false));
        }
        let out = dev.take_to_host();
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The master side of a pseudo-terminal as one async stream. Reads and writes go through two
/// handles of the same master: a `tokio::fs::File` runs one operation at a time, so with a
/// single handle an answer would wait behind a read that waits for the host.
pub type PtyStream = tokio::io::Join<tokio::fs::File, tokio::fs::File>;

/// A new pseudo-terminal in raw mode for an slcan adapter: (the master as a stream, the
/// slave, the slave's path). Keep the slave open while serving, so tools can open and close
/// the path without the master seeing a hang-up; drop it to end a pending read.
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
