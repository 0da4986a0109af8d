//! Hosting the virtual ECU in real time: the I/O side of `ecu-sim serve`.
//!
//! One task owns the [`Ecu`] and its [`DiagServer`]; transports (DoIP connections, slcan) send
//! it requests over a channel and get back the responses with the wall-clock instant each is
//! due. Between requests the task lets the firmware act on time (confirm itself, crash, hang).
//!
//! ## Clocks
//!
//! The ECU keeps simulated time. [`Pace`] maps it to the wall clock:
//!
//! | pace | simulated time | a response due at simulated `t` leaves |
//! |---|---|---|
//! | `Realtime { speed }` | `speed` × wall time since start | at the wall time of `t` (erases take as long as on the bench ÷ speed) |
//! | `Max` | advances with the wall clock, and jumps ahead by the ECU's work | at once: the ECU is never the bottleneck |

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dtc::Dtc;
use crate::ecu::Ecu;
use crate::flash::Flash;
use crate::proto::uds::server::{Addressing, DiagServer};

/// How simulated time relates to the wall clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    Realtime { speed: f64 },
    Max,
}

impl std::str::FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Pace::Max);
        }
        match s.parse::<f64>() {
            Ok(speed) if speed > 0.0 && speed.is_finite() => Ok(Pace::Realtime { speed }),
            _ => Err(format!(
                "speed must be a positive number or `max`, not {s:?}"
            )),
        }
    }
}

/// The mapping between the ECU's simulated microseconds and wall-clock instants.
#[derive(Clone, Debug)]
pub struct SimClock {
    pace: Pace,
    base_real: Instant,
    base_sim: u64,
}

impl SimClock {
    pub fn new(pace: Pace, sim_now: u64) -> Self {
        SimClock {
            pace,
            base_real: Instant::now(),
            base_sim: sim_now,
        }
    }

    /// Simulated time at wall-clock `real`, given the ECU's own clock.
    pub fn sim_now(&mut self, ecu_now: u64, real: Instant) -> u64 {
        let elapsed = real.saturating_duration_since(self.base_real);
        match self.pace {
            Pace::Realtime { speed } => {
                self.base_sim + (elapsed.as_secs_f64() * 1e6 * speed) as u64
            }
            Pace::Max => {
                let t = ecu_now.max(self.base_sim + elapsed.as_micros() as u64);
                self.base_real = real;
                self.base_sim = t;
                t
            }
        }
    }

    /// When to wake up for something the ECU does on its own at simulated `at` (a firmware
    /// action): with [`Pace::Max`] simulated time runs at wall speed between the ECU's jumps.
    pub fn wake_at(&self, at: u64) -> Instant {
        match self.pace {
            Pace::Realtime { .. } => self.real_at(at),
            Pace::Max => self.base_real + Duration::from_micros(at.saturating_sub(self.base_sim)),
        }
    }

    /// The wall-clock instant a response due at simulated `at` leaves (now, if that has passed).
    pub fn real_at(&self, at: u64) -> Instant {
        match self.pace {
            Pace::Realtime { speed } => {
                let ahead = at.saturating_sub(self.base_sim) as f64 / speed;
                self.base_real + Duration::from_secs_f64(ahead / 1e6)
            }
            Pace::Max => Instant::now(),
        }
    }
}

/// A diagnostic request for the ECU task.
#[derive(Debug)]
pub struct Request {
    pub bytes: Vec<u8>,
    pub addressing: Addressing,
    /// Every response, with the instant it is due (empty: the ECU did not answer).
    pub reply: oneshot::Sender<Vec<(Instant, Vec<u8>)>>,
}

/// A handle transports use to reach the ECU task.
#[derive(Clone, Debug)]
pub struct EcuHandle {
    tx: mpsc::Sender<Request>,
}

impl EcuHandle {
    /// Send a request; returns the responses with their due instants.
    pub async fn request(&self, bytes: Vec<u8>, addressing: Addressing) -> Vec<(Instant, Vec<u8>)> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            bytes,
            addressing,
            reply,
        };
        if self.tx.send(req).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// The ECU and its diagnostic server, with where their non-volatile data is kept.
#[derive(Debug)]
pub struct Host<F: Flash> {
    pub ecu: Ecu<F>,
    pub server: DiagServer,
    /// File for the VIN and the DTC memory (the ECU's EEPROM), if persisted.
    pub nvm_path: Option<PathBuf>,
}

impl<F: Flash + Send + 'static> Host<F> {
    /// Start the ECU task. It runs until `stop` fires or every [`EcuHandle`] is dropped, and
    /// then hands the host back (to flush its flash).
    pub fn spawn(
        self,
        pace: Pace,
        stop: oneshot::Receiver<()>,
    ) -> (EcuHandle, tokio::task::JoinHandle<Host<F>>) {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(self.run(pace, rx, stop));
        (EcuHandle { tx }, task)
    }

    async fn run(
        mut self,
        pace: Pace,
        mut rx: mpsc::Receiver<Request>,
        mut stop: oneshot::Receiver<()>,
    ) -> Host<F> {
        let mut clock = SimClock::new(pace, self.ecu.now_us());
        let mut nvm = self.nvm_text();
        loop {
            // Rebase (Pace::Max): the ECU's own work may have moved its clock ahead.
            clock.sim_now(self.ecu.now_us(), Instant::now());
            let wake = self
                .ecu
                .next_action_at()
                .map(|t| clock.wake_at(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stop => break,
                req = rx.recv() => {
                    let Some(req) = req else { break };
                    let now = clock.sim_now(self.ecu.now_us(), Instant::now());
                    self.server.handle_request(&mut self.ecu, now, &req.bytes, req.addressing);
                    let out = std::iter::from_fn(|| self.server.poll_transmit())
                        .map(|r| (clock.real_at(r.at_us), r.bytes))
                        .collect();
                    let _ = req.reply.send(out);
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = clock.sim_now(self.ecu.now_us(), Instant::now());
                    if let Err(e) = self.ecu.advance_to(now) {
                        tracing::warn!("ecu: {e}");
                    }
                }
            }
            for e in self.ecu.drain_events() {
                tracing::info!(target: "ecu", "{e}");
            }
            let text = self.nvm_text();
            if text != nvm {
                nvm = text;
                if let Some(path) = &self.nvm_path
                    && let Err(e) = write_atomically(path, nvm.as_bytes())
                {
                    tracing::error!("saving {}: {e}", path.display());
                }
            }
        }
        self
    }

    /// The non-volatile data as text: `vin=…` and `dtc=D00200 0b` lines.
    pub fn nvm_text(&self) -> String {
        let mut out = format!("vin={}\n", String::from_utf8_lossy(&self.server.vin()));
        for (dtc, status) in self.ecu.dtcs().iter() {
            out += &format!("dtc={:06X} {status:02x}\n", dtc.code());
        }
        out
    }

    /// Restore what [`Host::nvm_text`] saved. Lines that do not parse are reported by number.
    pub fn load_nvm(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let bad = || format!("line {}: cannot parse {line:?}", n + 1);
            if let Some(vin) = line.strip_prefix("vin=") {
                let vin: [u8; 17] = vin.as_bytes().try_into().map_err(|_| bad())?;
                self.server.set_vin(vin);
            } else if let Some(rest) = line.strip_prefix("dtc=") {
                let (code, status) = rest.split_once(' ').ok_or_else(bad)?;
                let code = u32::from_str_radix(code, 16).map_err(|_| bad())?;
                let status = u8::from_str_radix(status, 16).map_err(|_| bad())?;
                let dtc = Dtc::from_code(code).ok_or_else(bad)?;
                self.ecu.dtcs_mut().set(dtc, status);
            } else if !line.trim().is_empty() {
                return Err(bad());
            }
        }
        Ok(())
    }
}

/// Write a file so that a crash leaves the old or the new content: temp file, fsync, rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parsing() {
        assert_eq!("max".parse::<Pace>(), Ok(Pace::Max));
        assert_eq!("2.5".parse::<Pace>(), Ok(Pace::Realtime { speed: 2.5 }));
        assert!("0".parse::<Pace>().is_err());
        assert!("fast".parse::<Pace>().is_err());
    }

    #[test]
    fn realtime_clock_maps_both_ways() {
        let clock = SimClock::new(Pace::Realtime { speed: 10.0 }, 1_000);
        let at = clock.real_at(1_000 + 10_000_000);
        let d = at - clock.base_real;
        assert_eq!(d, Duration::from_secs(1));
        let mut c = clock.clone();
        assert_eq!(
            c.sim_now(0, clock.base_real + Duration::from_secs(2)),
            20_001_000
        );
    }

    #[test]
    fn max_clock_never_goes_back_and_follows_the_ecu() {
        let mut clock = SimClock::new(Pace::Max, 0);
        let start = clock.base_real;
        let t1 = clock.sim_now(5_000_000, start + Duration::from_millis(1));
        assert_eq!(t1, 5_000_000);
        let t2 = clock.sim_now(0, start + Duration::from_millis(3));
        assert_eq!(t2, 5_002_000);
    }
}
