//! Simulated mode: the same driver and manager as live, with the ECU in this process and
//! virtual time.
//!
//! Run it on a current-thread tokio runtime with a paused clock
//! (`Builder::new_current_thread().enable_time().start_paused(true)`): every wait — P2, the
//! ECU's erase, the download's bandwidth — then costs no wall time, and the same inputs give
//! the same job history, timestamps included.
//!
//! | part | live | simulated |
//! |---|---|---|
//! | clock | wall clock | tokio's paused clock, microseconds since the world was made |
//! | artifact | HTTP with Range resume | bytes held in memory, served at a set bandwidth, resumed from the bytes on disk |
//! | ECU | `ecu-sim serve` over DoIP | [`Ecu`] + [`DiagServer`] behind [`InProcess`]: requests go straight to the UDS server, responses come out when they are due |
//! | CAN | hil's ISO-TP transport on slcan or SocketCAN | the hooks' virtual bus (a scenario's `transport: can\|canfd`): [`RequestFate::Sent`] holds the send until the tester's core handed its last frame over, [`RequestFate::SendFailed`] fails it after N_Bs, responses arrive when their last frame does |

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::ecu::Ecu;
use ecu_sim::flash::SimFlash;
use ecu_sim::proto::uds::server::{Addressing, DiagServer, Incoming};
use ecu_sim::serve::{Backend, Disconnect};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::live::{DownloadFailure, Progress, Workers};
use super::manifest::{Manifest, Target};
use crate::download::DownloadEvent;
use crate::transport::{Transport, TransportError};
use crate::uds_client::{UdsClient, UdsConfig};

/// The simulated ECU and its diagnostic server (cheap to clone: the flash is copy-on-write).
#[derive(Clone, Debug)]
pub struct SimEcu {
    pub ecu: Ecu<SimFlash>,
    pub server: DiagServer,
}

/// What happens to a request on its way to the ECU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestFate {
    /// The ECU gets it `after_us` from now (time on the wire) and starts on it `held_us`
    /// after that (a responsePending storm): in progress from its arrival, so the ECU's S3
    /// timer does not run meanwhile.
    Deliver { after_us: u64, held_us: u64 },
    /// Lost on the way: no answer.
    Lost,
    /// Answered by someone else (responses at absolute times, µs).
    Answer(Vec<(u64, Vec<u8>)>),
    /// The connection breaks.
    Closed,
    /// The tester's transport needs `us` to hand the request over (on CAN: until its ISO-TP
    /// core handed the last frame to the controller; its send returns then, and P2 starts),
    /// then `fate`.
    Sent { us: u64, fate: Box<RequestFate> },
    /// The tester's transport gives up after `after_us` (ISO-TP: no flow control within
    /// N_Bs): its send fails with `error`; the ECU never gets the request.
    SendFailed {
        after_us: u64,
        error: ecu_sim::proto::isotp::IsoTpError,
    },
}

/// What became of a request handed to [`deliver_timed`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// How long the tester's send took (µs; 0 in-process, the frames' time on CAN).
    pub sent_us: u64,
    /// The send failed then (ISO-TP: no flow control within N_Bs).
    pub failed: Option<ecu_sim::proto::isotp::IsoTpError>,
    /// The responses, at absolute times (µs).
    pub responses: Vec<(u64, Vec<u8>)>,
}

/// What happens to the next chunk of a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkFate {
    Send,
    /// Send it with the byte at this offset into the chunk inverted.
    Flip(usize),
    /// The server closes the connection before the chunk.
    Close,
    /// The server stalls for this long, then the client's idle timeout ends the request.
    Stall(u64),
    /// The request is answered with this HTTP status instead.
    Status(u16),
    /// The server ignores the Range header: the client starts over from byte 0.
    IgnoreRange,
}

/// Where a simulation can be watched and attacked (the scenario engine implements it; the
/// default does nothing).
pub trait Hooks: Send + 'static {
    /// A request on its way to the ECU; it may be changed in place.
    fn on_request(
        &mut self,
        _sim: &mut SimEcu,
        _now_us: u64,
        _request: &mut Vec<u8>,
    ) -> RequestFate {
        RequestFate::Deliver {
            after_us: 0,
            held_us: 0,
        }
    }
    /// The ECU's responses on their way back (absolute times, µs); they may be delayed or
    /// dropped.
    fn on_responses(&mut self, _now_us: u64, _responses: &mut Vec<(u64, Vec<u8>)>) {}
    /// After the ECU handled a request.
    fn after_request(&mut self, _sim: &mut SimEcu, _now_us: u64) {}
    /// Before a download chunk of `len` bytes at `offset` (of `total`) goes out; `first`: the
    /// first chunk of a request.
    fn on_chunk(
        &mut self,
        _sim: &mut SimEcu,
        _now_us: u64,
        _offset: u64,
        _len: usize,
        _total: u64,
        _first: bool,
    ) -> ChunkFate {
        ChunkFate::Send
    }
    /// Where the download's chunk at `offset` (of `total` bytes) must end, if before its
    /// usual length: the byte where something acts (a fault at a byte), so that the next
    /// chunk starts exactly there.
    fn chunk_end(&mut self, _offset: u64, _total: u64) -> Option<u64> {
        None
    }
    /// The download bandwidth from now on, bytes per second.
    fn bandwidth(&mut self, configured: u64) -> u64 {
        configured
    }
    /// The bytes the server serves for `url` now, if not the original ones.
    fn artifact(&mut self, _url: &str) -> Option<Vec<u8>> {
        None
    }
    /// What the download did (requested, resumed, restarted), or a failure it reports
    /// ([`Progress::Download`], [`Progress::DownloadFailed`]), when it happens.
    fn on_download(&mut self, _now_us: u64, _what: &Progress) {}
}

/// No hooks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl Hooks for NoHooks {}

/// The ECU and the hooks around it, behind one lock.
#[derive(Debug)]
pub struct SimWorld<H> {
    pub sim: SimEcu,
    pub hooks: H,
}

/// Workers for simulated jobs.
#[derive(Debug)]
pub struct SimWorkers<H = NoHooks> {
    pub world: Arc<Mutex<SimWorld<H>>>,
    /// Time zero of the simulation (the ECU's clock counts from here).
    pub epoch: Instant,
    /// Artifacts by URL.
    pub artifacts: BTreeMap<String, Vec<u8>>,
    /// Download bandwidth, bytes per second.
    pub bandwidth: u64,
}

impl SimWorkers<NoHooks> {
    pub fn new(ecu: SimEcu, bandwidth: u64) -> SimWorkers<NoHooks> {
        SimWorkers::with_hooks(ecu, NoHooks, bandwidth)
    }
}

impl<H: Hooks> SimWorkers<H> {
    pub fn with_hooks(sim: SimEcu, hooks: H, bandwidth: u64) -> SimWorkers<H> {
        SimWorkers {
            world: Arc::new(Mutex::new(SimWorld { sim, hooks })),
            epoch: Instant::now(),
            artifacts: BTreeMap::new(),
            bandwidth,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimWorld<H>> {
        self.world.lock().expect("the simulated world lock")
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl<H: Hooks> Workers for SimWorkers<H> {
    type Transport = InProcess<H>;

    fn now_us(&self) -> u64 {
        us(self.epoch.elapsed())
    }

    async fn download(
        &self,
        m: &Manifest,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
        event: &mut (dyn FnMut(&DownloadEvent) + Send),
    ) -> Result<(), DownloadFailure> {
        let fail = |reason: String, retryable| DownloadFailure {
            reason,
            retryable,
            corrupt: false,
        };
        let swapped = self.lock().hooks.artifact(&m.artifact.url);
        let Some(bytes) = swapped
            .as_ref()
            .or_else(|| self.artifacts.get(&m.artifact.url))
        else {
            return Err(fail(format!("{}: 404 not found", m.artifact.url), false));
        };
        let file_name = dest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let io = |e: std::io::Error| fail(format!("{file_name}: {e}"), false);
        let epoch = self.epoch;
        let mut say = |e: DownloadEvent, hooks: &mut H| {
            hooks.on_download(us(epoch.elapsed()), &Progress::Download(e.clone()));
            event(&e);
        };
        let mut have = std::fs::metadata(dest).map_or(0, |md| md.len()) as usize;
        if have > bytes.len() {
            say(
                DownloadEvent::RestartedFromZero {
                    reason: "the partial artifact is longer than the artifact".into(),
                },
                &mut self.lock().hooks,
            );
            have = 0;
        }
        let mut first = true;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(dest)
            .map_err(io)?;
        file.set_len(have as u64).map_err(io)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(have as u64)).map_err(io)?;
        let mut file = std::io::BufWriter::new(file);
        /// The usual length of a chunk (the hooks may end one earlier).
        const CHUNK: usize = 16 * 1024;
        while have < bytes.len() {
            let (n, fate, bandwidth) = {
                let mut world = self.lock();
                let SimWorld { sim, hooks } = &mut *world;
                let total = bytes.len() as u64;
                let mut n = CHUNK.min(bytes.len() - have);
                if let Some(end) = hooks
                    .chunk_end(have as u64, total)
                    .filter(|&e| e > have as u64)
                {
                    n = n.min(usize::try_from(end - have as u64).unwrap_or(usize::MAX));
                }
                let now = us(self.epoch.elapsed());
                let fate = hooks.on_chunk(sim, now, have as u64, n, total, first);
                (n, fate, hooks.bandwidth(self.bandwidth))
            };
            if first {
                first = false;
                let resumed = have > 0 && fate != ChunkFate::IgnoreRange;
                let e = DownloadEvent::Started {
                    offset: if resumed { have as u64 } else { 0 },
                    resumed,
                };
                say(e, &mut self.lock().hooks);
            }
            let mut chunk = bytes[have..have + n].to_vec();
            match fate {
                ChunkFate::Send => {}
                ChunkFate::Flip(i) => {
                    if let Some(b) = chunk.get_mut(i) {
                        *b = !*b;
                    }
                }
                ChunkFate::Close => {
                    file.flush().map_err(io)?;
                    return Err(fail(
                        format!("connection closed by the server at byte {have}"),
                        true,
                    ));
                }
                ChunkFate::Stall(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms.min(STALL_TIMEOUT_MS))).await;
                    if ms >= STALL_TIMEOUT_MS {
                        file.flush().map_err(io)?;
                        return Err(fail(
                            format!(
                                "no byte from the server for {STALL_TIMEOUT_MS} ms at byte {have}"
                            ),
                            true,
                        ));
                    }
                }
                ChunkFate::Status(status) => {
                    file.flush().map_err(io)?;
                    return Err(fail(format!("http status {status}"), true));
                }
                ChunkFate::IgnoreRange => {
                    if have > 0 {
                        say(
                            DownloadEvent::RestartedFromZero {
                                reason: "the server ignored Range".into(),
                            },
                            &mut self.lock().hooks,
                        );
                        file.flush().map_err(io)?;
                        let f = file.get_mut();
                        f.set_len(0).map_err(io)?;
                        std::io::Seek::seek(f, std::io::SeekFrom::Start(0)).map_err(io)?;
                        have = 0;
                        continue;
                    }
                }
            }
            let secs = n as f64 / bandwidth.max(1) as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            file.write_all(&chunk).map_err(io)?;
            have += n;
            progress(have as u64);
        }
        file.flush().map_err(io)?;
        drop(file);
        let on_disk = std::fs::read(dest).map_err(io)?;
        if on_disk.len() as u64 != m.artifact.size || Sha256::digest(&on_disk)[..] != m.sha256() {
            let _ = std::fs::remove_file(dest);
            let reason = "sha-256 mismatch: the file was deleted".to_string();
            self.lock().hooks.on_download(
                us(epoch.elapsed()),
                &Progress::DownloadFailed {
                    reason: reason.clone(),
                    corrupt: true,
                },
            );
            return Err(DownloadFailure {
                reason,
                retryable: true,
                corrupt: true,
            });
        }
        Ok(())
    }

    async fn connect(&self, _target: &Target) -> Result<UdsClient<InProcess<H>>, String> {
        Ok(UdsClient::new(
            InProcess {
                world: Arc::clone(&self.world),
                epoch: self.epoch,
                pending: VecDeque::new(),
            },
            UdsConfig::default(),
        ))
    }
}

/// The simulated world behind real sockets (`ecu_sim::serve`): an external program talks to
/// the in-process ECU, faults included, in the runtime's time (run it on a real clock).
#[derive(Debug)]
pub struct WorldBackend<H> {
    pub world: Arc<Mutex<SimWorld<H>>>,
    /// Time zero of the simulation.
    pub epoch: Instant,
}

impl<H> Clone for WorldBackend<H> {
    fn clone(&self) -> Self {
        WorldBackend {
            world: Arc::clone(&self.world),
            epoch: self.epoch,
        }
    }
}

impl<H: Hooks> Backend for WorldBackend<H> {
    async fn request(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> Result<Vec<(std::time::Instant, Vec<u8>)>, Disconnect> {
        let now = us(self.epoch.elapsed());
        let mut world = self.world.lock().expect("the simulated world lock");
        let epoch = self.epoch.into_std();
        Ok(deliver(&mut world, now, &bytes, addressing)?
            .into_iter()
            .map(|(at, r)| (epoch + Duration::from_micros(at), r))
            .collect())
    }
}

/// The idle timeout of the simulated HTTP client.
pub const STALL_TIMEOUT_MS: u64 = 10_000;

/// A transport to the ECU in this process, in the runtime's time.
#[derive(Debug)]
pub struct InProcess<H = NoHooks> {
    world: Arc<Mutex<SimWorld<H>>>,
    epoch: Instant,
    pending: VecDeque<(u64, Vec<u8>)>,
}

/// A request on its way through the hooks to the ECU: the responses (absolute µs), or
/// `Err(Disconnect)` if the connection breaks instead.
pub fn deliver<H: Hooks>(
    world: &mut SimWorld<H>,
    now: u64,
    request: &[u8],
    addressing: Addressing,
) -> Result<Vec<(u64, Vec<u8>)>, Disconnect> {
    deliver_timed(world, now, request, addressing).map(|d| d.responses)
}

/// [`deliver`], with how long the tester's send takes and whether it fails.
pub fn deliver_timed<H: Hooks>(
    world: &mut SimWorld<H>,
    now: u64,
    request: &[u8],
    addressing: Addressing,
) -> Result<Delivered, Disconnect> {
    let SimWorld { sim, hooks } = world;
    let mut request = request.to_vec();
    let mut out = Delivered::default();
    let mut fate = hooks.on_request(sim, now, &mut request);
    loop {
        match fate {
            RequestFate::Sent { us, fate: then } => {
                out.sent_us = us;
                fate = *then;
                continue;
            }
            RequestFate::Deliver { after_us, held_us } => {
                let incoming = Incoming::new(addressing).held(held_us);
                sim.server
                    .handle(&mut sim.ecu, now + after_us, &request, incoming);
                while let Some(r) = sim.server.poll_transmit() {
                    out.responses.push((r.at_us, r.bytes));
                }
            }
            RequestFate::Lost => {}
            RequestFate::Answer(r) => out.responses = r,
            RequestFate::Closed => {
                hooks.after_request(sim, now);
                return Err(Disconnect);
            }
            RequestFate::SendFailed { after_us, error } => {
                out.sent_us = after_us;
                out.failed = Some(error);
            }
        }
        break;
    }
    hooks.on_responses(now, &mut out.responses);
    hooks.after_request(sim, now);
    Ok(out)
}

impl<H: Hooks> Transport for InProcess<H> {
    async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
        let now = us(self.epoch.elapsed());
        let delivered = {
            let mut world = self.world.lock().expect("the simulated world lock");
            deliver_timed(&mut world, now, request, Addressing::Physical)
                .map_err(|Disconnect| TransportError::Closed)?
        };
        // Responses to earlier requests may still be on their way: keep them in time order.
        self.pending.extend(delivered.responses);
        self.pending.make_contiguous().sort_by_key(|(at, _)| *at);
        if delivered.sent_us > 0 {
            tokio::time::sleep_until(self.epoch + Duration::from_micros(now + delivered.sent_us))
                .await;
        }
        match delivered.failed {
            Some(e) => Err(TransportError::IsoTp(e)),
            None => Ok(()),
        }
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
        if let Some((at, _)) = self.pending.front() {
            let due = self.epoch + Duration::from_micros(*at);
            if due <= deadline {
                tokio::time::sleep_until(due).await;
                return Ok(self.pending.pop_front().map(|(_, r)| r));
            }
        }
        tokio::time::sleep_until(deadline).await;
        Ok(None)
    }

    async fn reconnect(&mut self) -> Result<(), TransportError> {
        self.pending.clear();
        Ok(())
    }
}
