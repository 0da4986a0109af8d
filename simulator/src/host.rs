//! Hosting the virtual ECU in real time: the I/O side of `ecu-sim serve`.
//!
//! One task owns the [`Ecu`] and its [`DiagServer`]; transports (DoIP connections, slcan) send
//! it requests over a channel and get back the responses with the wall-clock instant each is
//! due. Between requests the task lets the firmware act on time (confirm itself, crash, hang).
//! Each DoIP connection is its own tester ([`EcuHandle::request_from`]): its session,
//! security and download end with [`EcuHandle::tester_gone`].
//!
//! ## Clocks
//!
//! The ECU keeps simulated time. [`Pace`] maps it to the wall clock:
//!
//! | pace | simulated time | a response due at simulated `t` leaves |
//! |---|---|---|
//! | `Realtime { speed }` | `speed` × wall time since start | at the wall time of `t` (erases take as long as on the bench ÷ speed) |
//! | `Max` | advances with the wall clock, and jumps ahead by the ECU's work | at once: the ECU is never the bottleneck |
//!
//! ## Power
//!
//! [`EcuHandle::set_power`] switches the ECU's supply (a relay in front of it, see
//! [`crate::proto::relay`]). The task lets simulated time reach the switch's moment, then
//! powers the ECU off (the firmware stops where it is) or on (the bootloader runs, taking its
//! simulated time). While it is off the ECU answers nothing.
//!
//! | what | when a power cut lands | what is lost |
//! |---|---|---|
//! | the ECU idles or runs firmware | at the cut's simulated time | volatile state: session, security, a download in progress |
//! | the ECU works on a request (an erase, a write) | when that request's flash work is done: requests are atomic here (cuts inside a flash operation, with torn cells, are the flash model's armed cuts) | the request's responses not sent yet: transports drop them ([`PowerState::cuts`]) |
//!
//! Flash contents, the VIN and the DTC memory survive (the flash file is written through, the
//! NVM file is saved after every change).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::dtc::Dtc;
use crate::ecu::Ecu;
use crate::flash::Flash;
use crate::proto::uds::server::{Addressing, DiagServer, Incoming, TesterId};

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

    /// A wall-clock span in simulated µs (with [`Pace::Max`] simulated time runs at wall speed
    /// while the ECU does no work of its own).
    pub fn sim_span(&self, real: Duration) -> u64 {
        match self.pace {
            Pace::Realtime { speed } => (real.as_secs_f64() * 1e6 * speed) as u64,
            Pace::Max => real.as_micros() as u64,
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
    /// The tester (connection) it comes from: each has its own session and security.
    pub tester: TesterId,
    /// How long it took to arrive before it was complete (a segmented ISO-TP request, from
    /// its first frame; zero over DoIP): the server checks S3 at its start.
    pub receiving: Duration,
    /// Every response, with the instant it is due (empty: the ECU did not answer).
    pub reply: oneshot::Sender<Vec<(Instant, Vec<u8>)>>,
}

/// The ECU's supply as transports see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerState {
    /// Whether the ECU is powered (it may still be booting).
    pub on: bool,
    /// How many times the ECU lost power so far. A response is sent only while this is what it
    /// was when its request was sent: what an ECU computed before a cut never leaves it.
    pub cuts: u64,
}

impl PowerState {
    /// A supply nobody switches (the default of [`crate::serve::Backend::power`]).
    pub const ALWAYS_ON: PowerState = PowerState { on: true, cuts: 0 };
}

/// The ECU task is gone (stopped, or it panicked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the ecu task has stopped")]
pub struct HostStopped;

/// What the ECU task is asked to do, in the order asked.
#[derive(Debug)]
enum Message {
    Request(Request),
    Power {
        on: bool,
        done: oneshot::Sender<PowerState>,
    },
    /// The tester's connection closed: its session, security and download end.
    TesterGone(TesterId),
}

/// A handle transports use to reach the ECU task.
#[derive(Clone, Debug)]
pub struct EcuHandle {
    tx: mpsc::Sender<Message>,
    power: watch::Receiver<PowerState>,
}

impl EcuHandle {
    /// Send a request from [`TesterId::LOCAL`]; returns the responses with their due instants.
    pub async fn request(&self, bytes: Vec<u8>, addressing: Addressing) -> Vec<(Instant, Vec<u8>)> {
        self.request_from(TesterId::LOCAL, bytes, addressing).await
    }

    /// Send a request from `tester`; returns the responses with their due instants.
    pub async fn request_from(
        &self,
        tester: TesterId,
        bytes: Vec<u8>,
        addressing: Addressing,
    ) -> Vec<(Instant, Vec<u8>)> {
        self.send(tester, bytes, addressing, Duration::ZERO).await
    }

    /// Send a request from [`TesterId::LOCAL`] that took `receiving` to arrive (a segmented
    /// ISO-TP request, from its first frame): the ECU's S3 timer did not run meanwhile.
    pub async fn request_received_over(
        &self,
        bytes: Vec<u8>,
        addressing: Addressing,
        receiving: Duration,
    ) -> Vec<(Instant, Vec<u8>)> {
        self.send(TesterId::LOCAL, bytes, addressing, receiving)
            .await
    }

    async fn send(
        &self,
        tester: TesterId,
        bytes: Vec<u8>,
        addressing: Addressing,
        receiving: Duration,
    ) -> Vec<(Instant, Vec<u8>)> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            bytes,
            addressing,
            tester,
            receiving,
            reply,
        };
        if self.tx.send(Message::Request(req)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Switch the ECU's supply now (in the order of the requests sent before and after);
    /// returns once it is switched: off at once, on when the bootloader has run (the firmware
    /// may still need its own start-up time before it answers). Switching to the position the
    /// supply is already in does nothing.
    pub async fn set_power(&self, on: bool) -> Result<PowerState, HostStopped> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Message::Power { on, done })
            .await
            .map_err(|_| HostStopped)?;
        rx.await.map_err(|_| HostStopped)
    }

    /// `tester`'s connection closed ([`DiagServer::tester_gone`]), in the order of its
    /// requests.
    pub async fn tester_gone(&self, tester: TesterId) {
        let _ = self.tx.send(Message::TesterGone(tester)).await;
    }

    /// The supply as the ECU task last left it.
    pub fn power(&self) -> PowerState {
        *self.power.borrow()
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
        let (power_tx, power) = watch::channel(PowerState {
            on: self.ecu.is_powered(),
            cuts: 0,
        });
        let task = tokio::spawn(self.run(pace, rx, stop, power_tx));
        (EcuHandle { tx, power }, task)
    }

    async fn run(
        mut self,
        pace: Pace,
        mut rx: mpsc::Receiver<Message>,
        mut stop: oneshot::Receiver<()>,
        power: watch::Sender<PowerState>,
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
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Message::Request(req)) => {
                        let now = clock.sim_now(self.ecu.now_us(), Instant::now());
                        let incoming = Incoming::new(req.addressing)
                            .from(req.tester)
                            .received_over(clock.sim_span(req.receiving));
                        self.server.handle(&mut self.ecu, now, &req.bytes, incoming);
                        let out = std::iter::from_fn(|| self.server.poll_transmit())
                            .map(|r| (clock.real_at(r.at_us), r.bytes))
                            .collect();
                        let _ = req.reply.send(out);
                    }
                    Some(Message::Power { on, done }) => {
                        let now = clock.sim_now(self.ecu.now_us(), Instant::now());
                        self.switch_power(now, on);
                        publish_power(&power, self.ecu.is_powered());
                        let _ = done.send(*power.borrow());
                    }
                    Some(Message::TesterGone(tester)) => {
                        self.server.tester_gone(&mut self.ecu, tester);
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = clock.sim_now(self.ecu.now_us(), Instant::now());
                    if let Err(e) = self.ecu.advance_to(now) {
                        tracing::warn!("ecu: {e}");
                    }
                }
            }
            // The ECU also loses power by itself (a cut armed in its flash).
            publish_power(&power, self.ecu.is_powered());
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

    /// Switch the supply at simulated `now_us` (or when the ECU's current work is done, if its
    /// clock is ahead): the firmware acts on time up to then.
    fn switch_power(&mut self, now_us: u64, on: bool) {
        if let Err(e) = self.ecu.advance_to(now_us) {
            tracing::warn!("ecu: {e}");
        }
        // Both are logged with the ECU's events.
        if !on {
            self.ecu.power_off();
        } else if let Err(e) = self.ecu.power_on() {
            tracing::warn!("ecu: power on: {e}");
        }
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

/// Tell transports whether the ECU is powered; a change from on to off counts a cut.
fn publish_power(tx: &watch::Sender<PowerState>, on: bool) {
    tx.send_if_modified(|state| {
        if state.on == on {
            return false;
        }
        state.cuts += u64::from(!on);
        state.on = on;
        true
    });
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
pub(crate) mod tests {
    use super::*;
    use crate::flash::SimFlash;

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

    /// A factory-fresh ECU (v1.0.0, healthy) hosted at `pace`.
    pub(crate) fn hosted(
        pace: Pace,
    ) -> (
        EcuHandle,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Host<SimFlash>>,
    ) {
        use crate::boot::{BootConfig, BootMode};
        use crate::image::{ImageBuilder, Keyring, Version, dev_key};
        let image =
            ImageBuilder::new(Version::new(1, 0, 0), vec![0x5A; 9000]).sign(&dev_key("oem"));
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys: Keyring::new().with_key(dev_key("oem").verifying_key()),
        };
        let geometry = crate::flash::Geometry::uniform(4096, 3 + 2 * 8 + 1, 8).unwrap();
        let ecu = Ecu::factory(geometry, BootMode::SwapScratch, &image, boot, 1).unwrap();
        let host = Host {
            ecu,
            server: DiagServer::new(crate::proto::uds::server::ServerConfig::default()),
            nvm_path: None,
        };
        let (stop, stop_rx) = oneshot::channel();
        let (handle, task) = host.spawn(pace, stop_rx);
        (handle, stop, task)
    }

    async fn boot_count(ecu: &EcuHandle) -> Option<u32> {
        let out = ecu
            .request(vec![0x22, 0xFD, 0x00], Addressing::Physical)
            .await;
        let (_, r) = out.last()?;
        assert_eq!(&r[..3], &[0x62, 0xFD, 0x00], "{r:02x?}");
        let record = crate::proto::uds::codec::BootStatusRecord::decode(&r[3..]).unwrap();
        Some(record.boot_count)
    }

    #[tokio::test]
    async fn power_off_silences_the_ecu_and_power_on_boots_it_again() {
        let (ecu, stop, task) = hosted(Pace::Max);
        assert_eq!(ecu.power(), PowerState { on: true, cuts: 0 });
        assert_eq!(boot_count(&ecu).await, Some(1));

        let off = PowerState { on: false, cuts: 1 };
        assert_eq!(ecu.set_power(false).await, Ok(off));
        assert_eq!(ecu.power(), off);
        assert_eq!(
            boot_count(&ecu).await,
            None,
            "an unpowered ECU answers nothing"
        );
        // Functional requests too (TesterPresent).
        let out = ecu.request(vec![0x3E, 0x00], Addressing::Functional).await;
        assert!(out.is_empty(), "{out:?}");
        // Off again: no second cut.
        assert_eq!(ecu.set_power(false).await, Ok(off));

        let on = PowerState { on: true, cuts: 1 };
        assert_eq!(ecu.set_power(true).await, Ok(on));
        assert_eq!(boot_count(&ecu).await, Some(2));
        // On again: no second boot.
        assert_eq!(ecu.set_power(true).await, Ok(on));
        assert_eq!(boot_count(&ecu).await, Some(2));

        let _ = stop.send(());
        let host = task.await.unwrap();
        assert_eq!(host.ecu.boot_count(), 2);
        assert!(host.ecu.is_powered());
        assert_eq!(ecu.set_power(false).await, Err(HostStopped));
    }

    #[tokio::test]
    async fn power_switches_at_the_simulated_time_and_the_clock_runs_while_off() {
        let (ecu, stop, task) = hosted(Pace::Realtime { speed: 100.0 });
        assert_eq!(boot_count(&ecu).await, Some(1));
        ecu.set_power(false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        ecu.set_power(true).await.unwrap();
        let _ = stop.send(());
        let host = task.await.unwrap();
        // 50 ms at speed 100: the ECU was off for 5 simulated seconds, then booted.
        assert!(host.ecu.now_us() >= 5_000_000, "{}", host.ecu.now_us());
        assert_eq!(host.ecu.boot_count(), 2);
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
