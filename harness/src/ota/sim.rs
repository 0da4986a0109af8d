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

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::ecu::Ecu;
use ecu_sim::flash::SimFlash;
use ecu_sim::proto::uds::server::{Addressing, DiagServer};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::live::{DownloadFailure, Workers};
use super::manifest::{Manifest, Target};
use crate::transport::{Transport, TransportError};
use crate::uds_client::{UdsClient, UdsConfig};

/// The simulated ECU and its diagnostic server.
#[derive(Debug)]
pub struct SimEcu {
    pub ecu: Ecu<SimFlash>,
    pub server: DiagServer,
}

/// Workers for simulated jobs.
#[derive(Clone, Debug)]
pub struct SimWorkers {
    pub ecu: Arc<Mutex<SimEcu>>,
    /// Time zero of the simulation (the ECU's clock counts from here).
    pub epoch: Instant,
    /// Artifacts by URL.
    pub artifacts: BTreeMap<String, Vec<u8>>,
    /// Download bandwidth, bytes per second.
    pub bandwidth: u64,
}

impl SimWorkers {
    pub fn new(ecu: SimEcu, bandwidth: u64) -> SimWorkers {
        SimWorkers {
            ecu: Arc::new(Mutex::new(ecu)),
            epoch: Instant::now(),
            artifacts: BTreeMap::new(),
            bandwidth,
        }
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Workers for SimWorkers {
    type Transport = InProcess;

    fn now_us(&self) -> u64 {
        us(self.epoch.elapsed())
    }

    async fn download(
        &self,
        m: &Manifest,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
        note: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), DownloadFailure> {
        let fail = |reason: String, retryable| DownloadFailure { reason, retryable };
        let Some(bytes) = self.artifacts.get(&m.artifact.url) else {
            return Err(fail(format!("{}: 404 not found", m.artifact.url), false));
        };
        let io = |e: std::io::Error| fail(format!("{}: {e}", dest.display()), false);
        let mut have = std::fs::metadata(dest).map_or(0, |md| md.len()) as usize;
        if have > bytes.len() || bytes[..have] != std::fs::read(dest).unwrap_or_default()[..] {
            note("the partial artifact does not match; starting over".into());
            have = 0;
        }
        if have > 0 {
            note(format!("resuming at byte {have}"));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(dest)
            .map_err(io)?;
        file.set_len(have as u64).map_err(io)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(have as u64)).map_err(io)?;
        let mut file = std::io::BufWriter::new(file);
        const CHUNK: usize = 16 * 1024;
        while have < bytes.len() {
            let n = CHUNK.min(bytes.len() - have);
            let secs = n as f64 / self.bandwidth.max(1) as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            file.write_all(&bytes[have..have + n]).map_err(io)?;
            have += n;
            progress(have as u64);
        }
        file.flush().map_err(io)?;
        drop(file);
        let on_disk = std::fs::read(dest).map_err(io)?;
        if on_disk.len() as u64 != m.artifact.size || Sha256::digest(&on_disk)[..] != m.sha256() {
            let _ = std::fs::remove_file(dest);
            return Err(fail(
                "size or sha-256 differs from the manifest".into(),
                true,
            ));
        }
        Ok(())
    }

    async fn connect(&self, _target: &Target) -> Result<UdsClient<InProcess>, String> {
        Ok(UdsClient::new(
            InProcess {
                ecu: Arc::clone(&self.ecu),
                epoch: self.epoch,
                pending: VecDeque::new(),
            },
            UdsConfig::default(),
        ))
    }
}

/// A transport to the ECU in this process, in the runtime's time.
#[derive(Debug)]
pub struct InProcess {
    ecu: Arc<Mutex<SimEcu>>,
    epoch: Instant,
    pending: VecDeque<(u64, Vec<u8>)>,
}

impl Transport for InProcess {
    async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
        let now = us(self.epoch.elapsed());
        let mut sim = self.ecu.lock().expect("the simulated ecu lock");
        let SimEcu { ecu, server } = &mut *sim;
        server.handle_request(ecu, now, request, Addressing::Physical);
        while let Some(r) = server.poll_transmit() {
            self.pending.push_back((r.at_us, r.bytes));
        }
        Ok(())
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
