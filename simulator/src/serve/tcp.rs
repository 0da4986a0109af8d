//! DoIP on TCP and UDP: one task per TCP connection drives a sans-IO [`doip::Connection`] with
//! the wall clock and hands diagnostic requests to the ECUs behind the entity ([`Routes`]): one
//! for `ecu-sim serve`, several behind a vehicle's gateway (`ecu-sim serve --vehicle`).
//!
//! ## One connection, several ECUs
//!
//! | what | how |
//! |---|---|
//! | request to a routed logical address | queued for that ECU; acknowledged at once (DoIP diagnostic ACK) |
//! | request to a functional address | queued for every ECU, each answering with its own address as the source |
//! | request to any other address | diagnostic NACK 0x03 (unknown target address), the connection lives on |
//! | one ECU | one request at a time: the next when the previous one's responses are out (a UDS server answers in order) |
//! | several ECUs | each ECU's queue runs on its own, concurrently: a tester flashes two ECUs over one connection |
//! | responses | sent when due, from the ECU's logical address; dropped if that ECU lost power since the request |

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{Backend, Disconnect};
use crate::host::PowerState;
use crate::proto::doip::{
    self, Admission, Connection, Event, Registry, RoutingActivationCode, SocketId,
};
use crate::proto::uds::server::{Addressing, TesterId};

/// The ECUs behind one DoIP entity, by logical address, and the functional addresses that reach
/// all of them.
#[derive(Clone, Debug)]
pub struct Routes<B> {
    ecus: BTreeMap<u16, B>,
    functional: Vec<u16>,
}

impl<B: Backend> Routes<B> {
    /// One ECU at `address` (the entity fronts it alone), functional addresses `functional`.
    pub fn single(address: u16, ecu: B, functional: Vec<u16>) -> Self {
        Routes {
            ecus: BTreeMap::from([(address, ecu)]),
            functional,
        }
    }

    /// Several ECUs (a gateway); `None` if `ecus` is empty.
    pub fn new(ecus: BTreeMap<u16, B>, functional: Vec<u16>) -> Option<Self> {
        (!ecus.is_empty()).then_some(Routes { ecus, functional })
    }

    /// The logical addresses routed, ascending.
    pub fn addresses(&self) -> impl Iterator<Item = u16> + '_ {
        self.ecus.keys().copied()
    }

    /// The ECU at `address`.
    pub fn ecu(&self, address: u16) -> Option<&B> {
        self.ecus.get(&address)
    }

    /// The supply the entity reports in its power mode: on while any ECU behind it is powered
    /// (a vehicle's ECUs share the rail by default).
    fn powered(&self) -> bool {
        self.ecus.values().any(|e| e.power().on)
    }

    /// The connection settings for these routes: `config` with the first address as the
    /// ECU's and the rest routed.
    fn connection_config(&self, mut config: doip::Config) -> doip::Config {
        let mut addresses = self.addresses();
        if let Some(first) = addresses.next() {
            config.ecu_address = first;
        }
        config.routed_addresses = addresses.collect();
        config.functional_addresses = self.functional.clone();
        config
    }
}

/// An alive check asked of a socket: answered `()` when its tester responds; dropped when the
/// socket closes instead.
type AliveCheck = oneshot::Sender<()>;

#[derive(Debug)]
struct SocketsInner {
    registry: Registry,
    checks: BTreeMap<SocketId, mpsc::UnboundedSender<AliveCheck>>,
}

/// The entity's TCP sockets, shared by the connection tasks and the UDP entity status: a
/// [`Registry`] and a way to ask each socket for an alive check.
#[derive(Clone, Debug)]
pub struct Sockets(Arc<Mutex<SocketsInner>>);

impl Sockets {
    /// For an entity announcing `max_sockets` concurrent TCP_DATA sockets.
    pub fn new(max_sockets: u8) -> Self {
        Sockets(Arc::new(Mutex::new(SocketsInner {
            registry: Registry::new(max_sockets),
            checks: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SocketsInner> {
        // The registry stays consistent even if a task panicked while holding it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open TCP connections now (the entity status's "currently open sockets").
    pub fn open_sockets(&self) -> u8 {
        self.lock().registry.open_sockets()
    }

    fn open(&self) -> Option<(SocketId, mpsc::UnboundedReceiver<AliveCheck>)> {
        let mut inner = self.lock();
        let id = inner.registry.open()?;
        let (tx, rx) = mpsc::unbounded_channel();
        inner.checks.insert(id, tx);
        Some((id, rx))
    }

    fn close(&self, id: SocketId) {
        let mut inner = self.lock();
        inner.registry.close(id);
        inner.checks.remove(&id);
    }

    /// The verdict on a routing activation for `source` on `socket`, after the alive checks
    /// the registry asks for (each waited for at most `timeout`).
    async fn admit(
        &self,
        socket: SocketId,
        source: u16,
        timeout: Duration,
    ) -> RoutingActivationCode {
        let mut checked = false;
        loop {
            let answers: Vec<oneshot::Receiver<()>> = {
                let mut inner = self.lock();
                match inner.registry.admit(socket, source) {
                    Admission::Accepted => return RoutingActivationCode::Success,
                    Admission::AliveCheck { refusal, .. } if checked => return refusal,
                    Admission::AliveCheck { sockets, .. } => sockets
                        .iter()
                        .filter_map(|id| {
                            let (tx, rx) = oneshot::channel();
                            inner.checks.get(id)?.send(tx).ok()?;
                            Some(rx)
                        })
                        .collect(),
                }
            };
            tracing::info!(
                "doip: routing activation for 0x{source:04x}: alive check of {} socket(s)",
                answers.len()
            );
            let deadline = tokio::time::Instant::now() + timeout;
            for answer in answers {
                let _ = tokio::time::timeout_at(deadline, answer).await;
            }
            checked = true;
        }
    }
}

/// Accept DoIP connections until the listener fails; each runs in its own task. At most
/// `config.entity.max_sockets` are registered for a tester at a time ([`Registry`]). The ECU
/// answers at `config.ecu_address` and at `config.functional_addresses`.
pub async fn serve_tcp<B: Backend>(listener: TcpListener, ecu: B, config: doip::Config) {
    let sockets = Sockets::new(config.entity.max_sockets);
    let routes = Routes::single(config.ecu_address, ecu, config.functional_addresses.clone());
    serve_tcp_with(listener, routes, config, sockets).await;
}

/// [`serve_tcp`] for the ECUs of `routes`, with the sockets shared with the UDP side
/// ([`serve_udp`]).
pub async fn serve_tcp_with<B: Backend>(
    listener: TcpListener,
    routes: Routes<B>,
    config: doip::Config,
    sockets: Sockets,
) {
    let mut config = routes.connection_config(config);
    // The registry decides every activation (codes 0x01 and 0x03 after alive checks).
    config.defer_activation = true;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("doip: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((id, checks)) = sockets.open() else {
            tracing::warn!(
                "doip: connection from {peer} closed: {} sockets open already",
                sockets.open_sockets()
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracing::info!("doip: connection {id} from {peer}");
        let (routes, config, sockets) = (routes.clone(), config.clone(), sockets.clone());
        tokio::spawn(async move {
            let mut asked = Vec::new();
            let mut link = Link {
                id,
                sockets: sockets.clone(),
                checks,
            };
            if let Err(e) = connection(stream, &routes, config, &mut link, &mut asked).await {
                tracing::warn!("doip: connection from {peer}: {e}");
            }
            // Unregistered before the alive checks asked of it (under way or still queued)
            // fail: whoever waits on them finds the address free.
            sockets.close(id);
            drop(asked);
            drop(link);
            for ecu in routes.ecus.values() {
                ecu.tester_gone(TesterId(id)).await;
            }
            tracing::info!("doip: {peer} disconnected");
        });
    }
}

/// Answer UDP vehicle identification (and status) requests; the diagnostic power mode is
/// `NotReady` while no ECU behind the entity has power, the open sockets are `sockets`'.
pub async fn serve_udp<B: Backend>(
    socket: UdpSocket,
    entity: doip::EntityInfo,
    routes: Routes<B>,
    sockets: Sockets,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("doip udp: {e}");
                continue;
            }
        };
        let now = doip::EntityInfo {
            power_mode: if routes.powered() {
                entity.power_mode
            } else {
                doip::PowerMode::NotReady
            },
            open_sockets: sockets.open_sockets(),
            ..entity.clone()
        };
        if let Some(reply) = doip::udp_response(&buf[..n], &now)
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

/// A connection's place among the entity's sockets.
struct Link {
    id: SocketId,
    sockets: Sockets,
    /// Alive checks other connections ask of this one.
    checks: mpsc::UnboundedReceiver<AliveCheck>,
}

/// What one connection has under way with one ECU.
#[derive(Debug, Default)]
struct Lane {
    /// Requests waiting for the ECU.
    requests: VecDeque<(Vec<u8>, Addressing)>,
    /// A request is with the ECU.
    asking: bool,
    /// The responses of the request it answered, when due, and the power cut count they were
    /// computed under.
    responses: VecDeque<(Instant, Vec<u8>)>,
    cuts: u64,
}

impl Lane {
    fn idle(&self) -> bool {
        !self.asking && self.responses.is_empty()
    }
}

/// An ECU's answer to one request: its address, the power cut count when it was asked.
type Answer = (u16, u64, Result<Vec<(Instant, Vec<u8>)>, Disconnect>);

/// One TCP connection. Requests go to each ECU one at a time: the next when the previous one's
/// responses are out; ECUs answer concurrently. Alive checks asked by other connections are
/// served meanwhile. `asked`: the alive checks under way, answered when the tester responds
/// (the caller drops the rest, and `link` with the queued ones, after unregistering the
/// socket).
async fn connection<B: Backend>(
    stream: TcpStream,
    routes: &Routes<B>,
    config: doip::Config,
    link: &mut Link,
    asked: &mut Vec<AliveCheck>,
) -> std::io::Result<()> {
    let start = Instant::now();
    let now = move || start.elapsed().as_micros() as u64;
    // The checked sockets close themselves when their timeout expires; waiting longer is a
    // safety net against a stuck task, never what decides.
    let alive_timeout = Duration::from_micros(config.alive_check_timeout_us) * 2;
    let tester = TesterId(link.id);
    let mut conn = Connection::new(now(), config);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lanes: BTreeMap<u16, Lane> = routes.addresses().map(|a| (a, Lane::default())).collect();
    // Requests with the ECUs; dropped (aborted) with the connection.
    let mut asking: JoinSet<Answer> = JoinSet::new();
    loop {
        flush(&mut conn, &mut wr).await?;
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Diagnostic { target, data, .. } => {
                    if let Some(lane) = lanes.get_mut(&target) {
                        lane.requests.push_back((data, Addressing::Physical));
                    } else {
                        // Functional: every ECU behind the entity.
                        for lane in lanes.values_mut() {
                            lane.requests
                                .push_back((data.clone(), Addressing::Functional));
                        }
                    }
                }
                Event::ActivationRequested { source, .. } => {
                    let code = link.sockets.admit(link.id, source, alive_timeout).await;
                    if code != RoutingActivationCode::Success {
                        tracing::info!(
                            "doip: routing activation for 0x{source:04x} refused: {code:?}"
                        );
                    }
                    let _ = conn.complete_activation(now(), code);
                }
                Event::AliveCheckPassed { .. } => {
                    for check in asked.drain(..) {
                        let _ = check.send(());
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
            // Free the socket before the tester sees it close (it may connect again at once).
            link.sockets.close(link.id);
            return wr.shutdown().await;
        }
        // Each idle ECU takes its next request.
        for (&address, lane) in &mut lanes {
            if !lane.idle() {
                continue;
            }
            let Some((data, addressing)) = lane.requests.pop_front() else {
                continue;
            };
            let Some(ecu) = routes.ecu(address).cloned() else {
                continue;
            };
            lane.asking = true;
            asking.spawn(async move {
                let cuts = ecu.power().cuts;
                let out = ecu.request_from(tester, data, addressing).await;
                (address, cuts, out)
            });
        }
        // What the events produced (an activation's verdict).
        flush(&mut conn, &mut wr).await?;
        let timer = conn
            .poll_timeout()
            .map(|t| start + Duration::from_micros(t))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let due = lanes
            .values()
            .filter_map(|l| l.responses.front().map(|(at, _)| *at))
            .min();
        // A deadline that has passed still costs a timer tick in tokio: send what is due now.
        if due.is_some_and(|at| at <= Instant::now()) {
            send_due(&mut conn, routes, &mut lanes, now());
            continue;
        }
        let deadline = due.map_or(timer, |d| d.min(timer));
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                // Current for an entity status request in these bytes.
                conn.entity_mut().open_sockets = link.sockets.open_sockets();
                conn.handle_bytes(now(), &buf[..n]);
            }
            Some(answer) = asking.join_next(), if !asking.is_empty() => {
                let Ok((address, cuts, out)) = answer else {
                    continue;
                };
                let Ok(out) = out else {
                    tracing::info!("doip: connection closed in front of the ecu 0x{address:04x}");
                    return wr.shutdown().await;
                };
                if let Some(lane) = lanes.get_mut(&address) {
                    lane.asking = false;
                    lane.cuts = cuts;
                    lane.responses.extend(out);
                }
            }
            Some(check) = link.checks.recv() => {
                if conn.start_alive_check(now()).is_ok() {
                    asked.push(check);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                send_due(&mut conn, routes, &mut lanes, now());
                conn.handle_timeout(now());
            }
        }
    }
}

/// Send every response that is due, ECU by ECU in due order; drop an ECU's responses if it
/// lost power since the request was sent.
fn send_due<B: Backend>(
    conn: &mut Connection,
    routes: &Routes<B>,
    lanes: &mut BTreeMap<u16, Lane>,
    now: u64,
) {
    let at = Instant::now();
    loop {
        let next = lanes
            .iter()
            .filter_map(|(a, l)| l.responses.front().map(|(due, _)| (*due, *a)))
            .filter(|(due, _)| *due <= at)
            .min();
        let Some((_, address)) = next else {
            return;
        };
        let Some(lane) = lanes.get_mut(&address) else {
            return;
        };
        let power: PowerState = routes
            .ecu(address)
            .map_or(PowerState::ALWAYS_ON, Backend::power);
        if power.cuts != lane.cuts {
            tracing::info!("doip: the ecu 0x{address:04x} lost power before it answered");
            lane.responses.clear();
            continue;
        }
        if let Some((_, bytes)) = lane.responses.pop_front()
            && let Err(e) = conn.send_diagnostic_from(now, address, &bytes)
        {
            tracing::warn!("doip: response not sent: {e}");
        }
    }
}
