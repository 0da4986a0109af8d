//! The virtual ECU's UDS server (ISO 14229-1), sans-IO: a request's bytes and its arrival time
//! in, timestamped response bytes out. It acts on an [`Ecu`] (flash, bootloader, DTC memory)
//! and reports through the ECU's event stream. It never reads a clock or touches a socket.
//!
//! ## Driving it
//!
//! 1. [`DiagServer::handle_request`] with the request and the (virtual or real) time it
//!    arrived; the ECU's clock is advanced to that time first.
//! 2. drain [`DiagServer::poll_transmit`]: responses, each with the time it is due. A long
//!    operation (erase, check) produces `7F SID 78` (responsePending) within P2, again every
//!    [`ServerConfig::pending_interval_us`], and the final response when the simulated work is
//!    done, all from one call.
//!
//! The ECU only answers while firmware that answers diagnostics runs (not while powered off,
//! booting, hung or bricked). A request that arrives while the ECU is still busy with the
//! previous one is handled when that one is done (one request at a time, like a real ECU).
//!
//! ## Services, sessions and security
//!
//! | SID | service | sessions | security |
//! |---|---|---|---|
//! | 0x10 | DiagnosticSessionControl 01/02/03 | all | — |
//! | 0x11 | ECUReset 01 hard, 02 key off/on (power cycle), 03 soft | all | — |
//! | 0x14 | ClearDiagnosticInformation | all | — |
//! | 0x19 | ReadDTCInformation 01, 02, 0A | all | — |
//! | 0x22 | ReadDataByIdentifier (several DIDs per request) | all | — |
//! | 0x27 | SecurityAccess 01/02 (programming session), 03/04 (extended session) | 02, 03 | — |
//! | 0x28 | CommunicationControl 00–03 | 02, 03 | — |
//! | 0x2E | WriteDataByIdentifier (0xF190 VIN) | 02, 03 | any level |
//! | 0x31 | RoutineControl 0xFF00, 0xFF01, 0x0202 (start, results) | 02 | level 1 |
//! | 0x34/0x36/0x37 | RequestDownload, TransferData, RequestTransferExit | 02 | level 1 |
//! | 0x3E | TesterPresent | all | — |
//! | 0x85 | ControlDTCSetting 01 on / 02 off | 02, 03 | — |
//!
//! Checks run in the order of ISO 14229-1's general response behaviour: service supported
//! (0x11), in this session (0x7F), length and sub-function (0x13, 0x12, 0x7E), security (0x33),
//! sequence (0x24), then the request's own conditions (0x22, 0x31, 0x70, 0x72, 0x73). With
//! functional addressing, 0x11, 0x12, 0x31, 0x7E and 0x7F are not sent.
//!
//! Any session change re-locks security and abandons a download; returning to the default
//! session (explicitly or after S3 without requests) also turns DTC setting and communication
//! back on. An ECU reset does all of that; the count of invalid keys and the lockout after
//! the last allowed one survive resets (otherwise a reset would bypass the delay).
//!
//! ## Testers and S3
//!
//! | state | belongs to |
//! |---|---|
//! | session, S3 timer, security level and seed, erased range, open download, routine results | the tester ([`TesterId`], one per DoIP connection); ends with [`DiagServer::tester_gone`] |
//! | invalid key count and lockout, VIN, DTC memory, flash | the ECU |
//!
//! An erase by one tester drops the others' open downloads; a download or an upgrade
//! request by one also their erased ranges. The S3 timer is checked when a request begins to
//! arrive (the first frame of a segmented ISO-TP request: [`Incoming::receiving_us`]) and does
//! not run while it is in progress (also while [`Incoming::held_us`] holds it): it restarts
//! when the final response is due (ISO 14229-2).

mod programming;

pub use programming::image_error_code;
use programming::staging;

use std::collections::{BTreeMap, VecDeque};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::Sha256;

use super::codec::{
    self, BootStatusRecord, MemoryRange, Nrc, Session, SessionTiming, SlotRecord, StagingRecord,
    did, sid,
};
use super::security;
use crate::boot::SwapType;
use crate::dtc::{Dtc, STATUS_AVAILABILITY_MASK};
use crate::ecu::{Ecu, EcuError};
use crate::event::EventKind;
use crate::flash::Flash;

/// Settings of the diagnostic server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub part_number: String,
    pub serial_number: String,
    /// VIN at first start (0xF190 can overwrite it).
    pub vin: [u8; 17],
    /// Secret per security level (the odd requestSeed sub-function).
    pub secrets: BTreeMap<u8, Vec<u8>>,
    /// Invalid keys allowed before the lockout (the last one gets 0x36).
    pub max_key_attempts: u8,
    /// Lockout after too many invalid keys, µs (requestSeed gets 0x37 meanwhile).
    pub lockout_us: u64,
    /// P2server_max and P2*server_max, reported in the session response.
    pub timing: SessionTiming,
    /// Interval of repeated 0x78 responses during a long operation (below P2*).
    pub pending_interval_us: u64,
    /// S3server: a non-default session ends after this long without requests.
    pub s3_us: u64,
    /// maxNumberOfBlockLength for RequestDownload (SID and counter included).
    pub max_block_len: u32,
    /// Time to process an ordinary request, µs.
    pub response_time_us: u64,
    /// Hashing speed of the ECU's CPU for image checks, bytes per second.
    pub hash_bytes_per_sec: u64,
    /// Time of one signature verification, µs.
    pub signature_check_us: u64,
    /// Seed of the security seeds.
    pub rng_seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            part_number: "ECUSIM-0001".into(),
            serial_number: "SIM0000000001".into(),
            vin: *b"WSIM0000000000001",
            secrets: security::default_secrets(),
            max_key_attempts: 3,
            lockout_us: 10_000_000,
            timing: SessionTiming {
                p2_us: 50_000,
                p2_star_us: 5_000_000,
            },
            pending_interval_us: 2_000_000,
            s3_us: 5_000_000,
            max_block_len: 4096 + 2,
            response_time_us: 1_000,
            hash_bytes_per_sec: 4_000_000,
            signature_check_us: 30_000,
            rng_seed: 0,
        }
    }
}

/// How a request was addressed (functional requests suppress some negative responses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    Physical,
    Functional,
}

/// A response and the time it is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub at_us: u64,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Download {
    range: MemoryRange,
    /// Offset of `range.address` in the staging slot.
    slot_offset: u32,
    received: u32,
    /// Bytes programmed so far (a multiple of the write unit).
    written: u32,
    /// Received bytes not yet programmed (less than one write unit, or the tail).
    tail: Vec<u8>,
    next_seq: u8,
    last_seq: Option<u8>,
    hash: Sha256,
}

#[derive(Clone, Debug)]
struct Downloaded {
    size: u32,
    sha256: [u8; 32],
}

/// What handling a request led to.
enum Outcome {
    Reply(Vec<u8>),
    /// A positive response suppressed by the sub-function's bit 7.
    Suppressed,
    /// Power was lost (or the ECU went away) while acting: nothing is sent.
    Silent,
}

type Handled = Result<Outcome, Nrc>;

/// The diagnostic server. Clone it with the ECU to fork a simulation.
#[derive(Clone, Debug)]
pub struct DiagServer {
    config: ServerConfig,
    rng: ChaCha8Rng,
    // Non-volatile.
    vin: [u8; 17],
    failed_keys: u8,
    locked_until_us: u64,
    // Volatile: reset by a boot.
    boot_seen: u64,
    available_from_us: u64,
    /// The tester of the request being handled, and its state.
    current: TesterId,
    t: Tester,
    /// The other testers' states.
    others: BTreeMap<TesterId, Tester>,
    outbox: VecDeque<Response>,
}

/// Who sent a request. Each tester (a DoIP connection; CAN and in-process callers are
/// [`TesterId::LOCAL`]) has its own session, security level, seed, erased range, download
/// and routine results: what one tester unlocked or opened another cannot use, and it ends
/// with [`DiagServer::tester_gone`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TesterId(pub u64);

impl TesterId {
    /// The tester of [`DiagServer::handle_request`]: the CAN bus, an in-process client.
    pub const LOCAL: TesterId = TesterId(0);
}

/// How a request reached the server ([`DiagServer::handle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub addressing: Addressing,
    pub tester: TesterId,
    /// How long after its arrival the server starts on the request, µs: a fault in front of
    /// the ECU holding it while responsePending answers go out (a harness's storm). The
    /// request is in progress from its arrival, so the S3 timer does not run meanwhile.
    pub held_us: u64,
    /// How long the request took to arrive before it was complete, µs: a segmented ISO-TP
    /// request is in progress from its first frame (ISO 14229-2 stops S3 there), so the S3
    /// timer is checked at its start, not when a slow sender's last frame came in.
    pub receiving_us: u64,
}

impl Incoming {
    /// From [`TesterId::LOCAL`], handled at once.
    pub fn new(addressing: Addressing) -> Self {
        Incoming {
            addressing,
            tester: TesterId::LOCAL,
            held_us: 0,
            receiving_us: 0,
        }
    }

    pub fn from(self, tester: TesterId) -> Self {
        Incoming { tester, ..self }
    }

    pub fn held(self, held_us: u64) -> Self {
        Incoming { held_us, ..self }
    }

    pub fn received_over(self, receiving_us: u64) -> Self {
        Incoming {
            receiving_us,
            ..self
        }
    }
}

/// One tester's volatile diagnostic state.
#[derive(Clone, Debug)]
struct Tester {
    session: Session,
    /// When the S3 timer last (re)started: the end of this tester's last request (its final
    /// response). It does not run while a request is in progress (ISO 14229-2).
    s3_from_us: u64,
    unlocked: Option<u8>,
    seed: Option<(u8, [u8; 4])>,
    comm_control: u8,
    /// This tester turned DTC setting off (back on when its session ends).
    dtc_off: bool,
    erased: Option<MemoryRange>,
    download: Option<Download>,
    downloaded: Option<Downloaded>,
    results: BTreeMap<u16, Vec<u8>>,
}

impl Default for Tester {
    /// The state at power-on, and of a tester never seen: default session, locked.
    fn default() -> Self {
        Tester {
            session: Session::Default,
            s3_from_us: 0,
            unlocked: None,
            seed: None,
            comm_control: 0,
            dtc_off: false,
            erased: None,
            download: None,
            downloaded: None,
            results: BTreeMap::new(),
        }
    }
}

impl DiagServer {
    pub fn new(config: ServerConfig) -> Self {
        DiagServer {
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed),
            vin: config.vin,
            failed_keys: 0,
            locked_until_us: 0,
            boot_seen: 0,
            available_from_us: 0,
            current: TesterId::LOCAL,
            t: Tester::default(),
            others: BTreeMap::new(),
            outbox: VecDeque::new(),
            config,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
    /// `tester`'s session (default for a tester never seen).
    pub fn session(&self, tester: TesterId) -> Session {
        self.tester(tester).map_or(Session::Default, |t| t.session)
    }
    /// The security level `tester` unlocked, if any.
    pub fn unlocked(&self, tester: TesterId) -> Option<u8> {
        self.tester(tester).and_then(|t| t.unlocked)
    }
    fn tester(&self, tester: TesterId) -> Option<&Tester> {
        if tester == self.current {
            Some(&self.t)
        } else {
            self.others.get(&tester)
        }
    }

    /// `tester` is gone (its connection closed): its session ends (DTC setting back on if it
    /// turned it off), its security level, seed and download with it. A tester with the same
    /// id later starts in the default session, locked.
    pub fn tester_gone<F: Flash>(&mut self, ecu: &mut Ecu<F>, tester: TesterId) {
        if tester != self.current {
            let Some(t) = self.others.remove(&tester) else {
                return;
            };
            let was = std::mem::replace(&mut self.t, t);
            let current = std::mem::replace(&mut self.current, tester);
            self.change_session(ecu, Session::Default);
            self.t = was;
            self.current = current;
        } else {
            self.change_session(ecu, Session::Default);
            self.t = Tester::default();
        }
    }

    /// Write the state that decides this server's future into `f`, its times relative to
    /// `now_us` (see [`crate::fingerprint`]): the seed generator's position, VIN, failed
    /// keys, the lockout's time left, the responses not sent yet (their times relative) and,
    /// unless a boot comes before the server handles another request (`ecu` is off, or
    /// booted since the server last saw it: [`DiagServer::handle`] then resets all of it),
    /// the boot it last saw, when it answers again and every tester's session, security, S3
    /// time left, erased range, download and routine results. Left out: the configuration.
    pub fn fingerprint(
        &self,
        f: &mut crate::fingerprint::Fingerprint,
        now_us: u64,
        ecu: &Ecu<crate::flash::SimFlash>,
    ) {
        // Off: a request is dropped until the ECU runs again, which takes a boot.
        let boot_first = !ecu.is_powered() || ecu.boot_count() != self.boot_seen;
        f.tag("server");
        f.bytes(&self.rng.get_seed());
        f.u64(self.rng.get_stream());
        f.bytes(&self.rng.get_word_pos().to_le_bytes());
        f.bytes(&self.vin);
        f.u64(u64::from(self.failed_keys));
        f.deadline(self.locked_until_us, now_us);
        f.u64(self.outbox.len() as u64);
        for r in &self.outbox {
            f.rel(r.at_us, now_us);
            f.bytes(&r.bytes);
        }
        f.bool(boot_first);
        if boot_first {
            return;
        }
        f.u64(self.boot_seen);
        if self.available_from_us == u64::MAX {
            f.tag("unavailable");
        } else {
            f.deadline(self.available_from_us, now_us);
        }
        let s3 = self.config.s3_us;
        let tester = |f: &mut crate::fingerprint::Fingerprint, t: &Tester| {
            f.debug(&t.session);
            if t.session != Session::Default {
                // Expired (`now > from + s3`) for every later request once it is: −1.
                let left = i128::from(t.s3_from_us + s3) - i128::from(now_us);
                f.bytes(&left.max(-1).to_le_bytes());
            }
            f.debug(&(
                t.unlocked,
                t.seed,
                t.comm_control,
                t.dtc_off,
                &t.erased,
                &t.download,
                &t.downloaded,
                &t.results,
            ));
        };
        f.debug(&self.current);
        tester(f, &self.t);
        f.u64(self.others.len() as u64);
        for (id, t) in &self.others {
            f.debug(id);
            tester(f, t);
        }
    }

    /// Make `tester`'s state the current one.
    fn select(&mut self, tester: TesterId) {
        if tester != self.current {
            let t = self.others.remove(&tester).unwrap_or_default();
            let was = std::mem::replace(&mut self.t, t);
            self.others.insert(self.current, was);
            self.current = tester;
        }
    }

    /// This tester changes the staging area: what the others downloaded there is gone, and
    /// (unless it only erases) what they erased no longer is.
    fn staging_changed(&mut self, only_erased: bool) {
        for t in self.others.values_mut() {
            if !only_erased {
                t.erased = None;
            }
            t.download = None;
            t.downloaded = None;
        }
    }
    pub fn vin(&self) -> [u8; 17] {
        self.vin
    }
    /// Restore the VIN from saved non-volatile memory.
    pub fn set_vin(&mut self, vin: [u8; 17]) {
        self.vin = vin;
    }

    /// The next response due, if any (in the order they are due).
    pub fn poll_transmit(&mut self) -> Option<Response> {
        self.outbox.pop_front()
    }

    /// Handle one request from [`TesterId::LOCAL`] that arrived at `now_us`.
    pub fn handle_request<F: Flash>(
        &mut self,
        ecu: &mut Ecu<F>,
        now_us: u64,
        request: &[u8],
        addressing: Addressing,
    ) {
        self.handle(ecu, now_us, request, Incoming::new(addressing));
    }

    /// Handle one request that arrived at `now_us`, from `incoming.tester`, started
    /// `incoming.held_us` later.
    pub fn handle<F: Flash>(
        &mut self,
        ecu: &mut Ecu<F>,
        now_us: u64,
        request: &[u8],
        incoming: Incoming,
    ) {
        let addressing = incoming.addressing;
        if ecu.advance_to(now_us).is_err() {
            return;
        }
        if ecu.boot_count() != self.boot_seen {
            // The ECU rebooted since the last request (crash, watchdog, power cycle).
            self.after_boot(ecu);
        }
        if now_us < self.available_from_us || !ecu.answers_diagnostics() {
            return;
        }
        self.select(incoming.tester);
        // S3 is checked when the request began to arrive (its first frame on ISO-TP) and
        // stopped until its final response.
        self.check_s3(ecu, ecu.now_us().saturating_sub(incoming.receiving_us));
        if incoming.held_us > 0 {
            let _ = ecu.advance_to(ecu.now_us() + incoming.held_us);
            if ecu.boot_count() != self.boot_seen {
                // The ECU rebooted while the request was held: it is lost.
                return self.after_boot(ecu);
            }
            if !ecu.answers_diagnostics() {
                return;
            }
        }
        let start = ecu.now_us();
        let Some(&service) = request.first() else {
            self.t.s3_from_us = start;
            return;
        };
        let outcome = self.dispatch(ecu, service, request);
        let end = ecu.now_us();
        let due = end.max(start) + self.config.response_time_us;
        // Restarted when the final response goes out (or when the work ends, if none does).
        self.t.s3_from_us = end;
        let bytes = match outcome {
            Ok(Outcome::Reply(bytes)) => bytes,
            Ok(Outcome::Silent) => return,
            Ok(Outcome::Suppressed) if due - start <= self.config.timing.p2_us => return,
            // After responsePending the final response is always sent.
            Ok(Outcome::Suppressed) => positive_sid_only(request),
            Err(nrc) => {
                if addressing == Addressing::Functional
                    && matches!(
                        nrc,
                        Nrc::ServiceNotSupported
                            | Nrc::SubFunctionNotSupported
                            | Nrc::RequestOutOfRange
                            | Nrc::SubFunctionNotSupportedInActiveSession
                            | Nrc::ServiceNotSupportedInActiveSession
                    )
                {
                    return;
                }
                ecu.emit(EventKind::NegativeResponse {
                    sid: service,
                    nrc: nrc as u8,
                });
                codec::negative(service, nrc)
            }
        };
        if due - start > self.config.timing.p2_us {
            let mut at = start + self.config.response_time_us;
            while at < due {
                self.outbox.push_back(Response {
                    at_us: at,
                    bytes: codec::negative(service, Nrc::ResponsePending),
                });
                at += self.config.pending_interval_us;
            }
        }
        self.outbox.push_back(Response { at_us: due, bytes });
        self.t.s3_from_us = due;
    }

    /// Volatile state back to power-on values.
    fn after_boot<F: Flash>(&mut self, ecu: &mut Ecu<F>) {
        self.boot_seen = ecu.boot_count();
        self.available_from_us = ecu.now_us();
        self.t = Tester::default();
        self.others.clear();
        ecu.dtcs_mut().recording_off = false;
    }

    fn check_s3<F: Flash>(&mut self, ecu: &mut Ecu<F>, now: u64) {
        if self.t.session != Session::Default && now > self.t.s3_from_us + self.config.s3_us {
            self.change_session(ecu, Session::Default);
        }
    }

    fn change_session<F: Flash>(&mut self, ecu: &mut Ecu<F>, to: Session) {
        let from = self.t.session;
        if from == Session::Default && to == Session::Default {
            return;
        }
        self.t.session = to;
        self.t.unlocked = None;
        self.t.seed = None;
        self.t.download = None;
        if to == Session::Default {
            self.t.comm_control = 0;
            if std::mem::take(&mut self.t.dtc_off) {
                ecu.dtcs_mut().recording_off = false;
            }
        }
        if from != to {
            ecu.emit(EventKind::SessionChanged { session: to as u8 });
        }
    }

    fn service_allowed(&self, service: u8) -> Result<(), Nrc> {
        let ok = match service {
            sid::DIAGNOSTIC_SESSION_CONTROL
            | sid::ECU_RESET
            | sid::CLEAR_DIAGNOSTIC_INFORMATION
            | sid::READ_DTC_INFORMATION
            | sid::READ_DATA_BY_IDENTIFIER
            | sid::TESTER_PRESENT => true,
            sid::SECURITY_ACCESS
            | sid::COMMUNICATION_CONTROL
            | sid::WRITE_DATA_BY_IDENTIFIER
            | sid::CONTROL_DTC_SETTING => self.t.session != Session::Default,
            sid::ROUTINE_CONTROL
            | sid::REQUEST_DOWNLOAD
            | sid::TRANSFER_DATA
            | sid::REQUEST_TRANSFER_EXIT => self.t.session == Session::Programming,
            _ => return Err(Nrc::ServiceNotSupported),
        };
        if ok {
            Ok(())
        } else {
            Err(Nrc::ServiceNotSupportedInActiveSession)
        }
    }

    fn require_programming_unlock(&self) -> Result<(), Nrc> {
        if self.t.unlocked == Some(security::LEVEL_PROGRAMMING) {
            Ok(())
        } else {
            Err(Nrc::SecurityAccessDenied)
        }
    }

    fn dispatch<F: Flash>(&mut self, ecu: &mut Ecu<F>, service: u8, req: &[u8]) -> Handled {
        self.service_allowed(service)?;
        match service {
            sid::DIAGNOSTIC_SESSION_CONTROL => self.session_control(ecu, req),
            sid::ECU_RESET => self.ecu_reset(ecu, req),
            sid::CLEAR_DIAGNOSTIC_INFORMATION => clear_dtcs(ecu, req),
            sid::READ_DTC_INFORMATION => read_dtcs(ecu, req),
            sid::READ_DATA_BY_IDENTIFIER => self.read_dids(ecu, req),
            sid::SECURITY_ACCESS => self.security_access(ecu, req),
            sid::COMMUNICATION_CONTROL => self.communication_control(req),
            sid::WRITE_DATA_BY_IDENTIFIER => self.write_did(req),
            sid::ROUTINE_CONTROL => self.routine_control(ecu, req),
            sid::REQUEST_DOWNLOAD => self.request_download(ecu, req),
            sid::TRANSFER_DATA => self.transfer_data(ecu, req),
            sid::REQUEST_TRANSFER_EXIT => self.transfer_exit(ecu),
            sid::TESTER_PRESENT => tester_present(req),
            sid::CONTROL_DTC_SETTING => {
                let handled = control_dtc_setting(ecu, req);
                if handled.is_ok() {
                    self.t.dtc_off = ecu.dtcs().recording_off;
                }
                handled
            }
            _ => Err(Nrc::ServiceNotSupported),
        }
    }

    fn session_control<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        let sub = sub_function(req)?;
        let to = Session::from_u8(sub & 0x7F).ok_or(Nrc::SubFunctionNotSupported)?;
        exact_len(req, 2)?;
        self.change_session(ecu, to);
        let mut out = vec![0x50, to as u8];
        out.extend_from_slice(&self.config.timing.encode());
        Ok(reply(req[1], out))
    }

    fn ecu_reset<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        let sub = sub_function(req)?;
        let kind = sub & 0x7F;
        if !matches!(kind, 0x01..=0x03) {
            return Err(Nrc::SubFunctionNotSupported);
        }
        exact_len(req, 2)?;
        // The response leaves before the reset takes effect.
        let answer = reply(req[1], vec![0x51, kind]);
        let at = ecu.now_us() + self.config.response_time_us;
        if let Outcome::Reply(bytes) = answer {
            self.outbox.push_back(Response { at_us: at, bytes });
        }
        let _ = ecu.advance_to(at);
        let result = match kind {
            0x03 => ecu.reset(),
            _ => ecu.power_cycle(),
        };
        self.after_boot(ecu);
        if let Err(EcuError::PowerLost { .. }) = result {
            self.available_from_us = u64::MAX;
        }
        Ok(Outcome::Silent)
    }

    fn security_access<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        let sub = sub_function(req)?;
        let level_sub = sub & 0x7F;
        let level = if level_sub % 2 == 1 {
            level_sub
        } else {
            level_sub.wrapping_sub(1)
        };
        let Some(secret) = self.config.secrets.get(&level).cloned() else {
            return Err(Nrc::SubFunctionNotSupported);
        };
        let session_ok = match level {
            security::LEVEL_PROGRAMMING => self.t.session == Session::Programming,
            _ => self.t.session == Session::Extended,
        };
        if !session_ok {
            return Err(Nrc::SubFunctionNotSupportedInActiveSession);
        }
        let now = ecu.now_us();
        if level_sub % 2 == 1 {
            // requestSeed (an optional securityAccessDataRecord is ignored).
            if now < self.locked_until_us {
                return Err(Nrc::RequiredTimeDelayNotExpired);
            }
            let seed = if self.t.unlocked == Some(level) {
                [0; 4]
            } else {
                let mut s = [0u8; 4];
                while s == [0; 4] {
                    self.rng.fill_bytes(&mut s);
                }
                self.t.seed = Some((level, s));
                s
            };
            let mut out = vec![0x67, level_sub];
            out.extend_from_slice(&seed);
            return Ok(reply(req[1], out));
        }
        exact_len(req, 6)?;
        let seed = match self.t.seed.take() {
            Some((l, seed)) if l == level => seed,
            _ => return Err(Nrc::RequestSequenceError),
        };
        if req[2..6] == security::compute_key(&secret, &seed) {
            self.t.unlocked = Some(level);
            self.failed_keys = 0;
            ecu.emit(EventKind::SecurityUnlocked { level });
            return Ok(reply(req[1], vec![0x67, level_sub]));
        }
        self.failed_keys += 1;
        let locked_out = self.failed_keys >= self.config.max_key_attempts;
        ecu.emit(EventKind::SecurityKeyRejected {
            level,
            attempts: self.failed_keys,
            locked_out,
        });
        if locked_out {
            self.failed_keys = 0;
            self.locked_until_us = now + self.config.lockout_us;
            Err(Nrc::ExceededNumberOfAttempts)
        } else {
            Err(Nrc::InvalidKey)
        }
    }

    fn communication_control(&mut self, req: &[u8]) -> Handled {
        let sub = sub_function(req)?;
        let control = sub & 0x7F;
        if control > 0x03 {
            return Err(Nrc::SubFunctionNotSupported);
        }
        exact_len(req, 3)?;
        if !matches!(req[2] & 0x03, 0x01..=0x03) {
            return Err(Nrc::RequestOutOfRange);
        }
        self.t.comm_control = control;
        Ok(reply(req[1], vec![0x68, control]))
    }

    fn read_dids<F: Flash>(&mut self, ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
        if req.len() < 3 || req.len() % 2 == 0 {
            return Err(Nrc::IncorrectMessageLength);
        }
        let mut out = vec![0x62];
        let mut any = false;
        for pair in req[1..].chunks_exact(2) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let Some(value) = self.read_did(ecu, id) else {
                continue;
            };
            any = true;
            out.extend_from_slice(pair);
            out.extend_from_slice(&value);
        }
        if !any {
            return Err(Nrc::RequestOutOfRange);
        }
        Ok(Outcome::Reply(out))
    }

    fn read_did<F: Flash>(&mut self, ecu: &mut Ecu<F>, id: u16) -> Option<Vec<u8>> {
        let running = ecu.running().cloned();
        Some(match id {
            did::BOOT_SOFTWARE_ID => {
                format!("ECU-SIM BOOT {}", env!("CARGO_PKG_VERSION")).into_bytes()
            }
            did::ACTIVE_SESSION => vec![self.t.session as u8],
            did::PART_NUMBER => self.config.part_number.clone().into_bytes(),
            did::APPLICATION_VERSION => running
                .map(|r| r.image.header.version.to_string())
                .unwrap_or_default()
                .into_bytes(),
            did::SERIAL_NUMBER => self.config.serial_number.clone().into_bytes(),
            did::VIN => self.vin.to_vec(),
            did::BOOT_STATUS => {
                let r = running?;
                BootStatusRecord {
                    slot: r.slot.index(),
                    version: Some(r.image.header.version),
                    on_probation: r.test && !r.confirmed,
                    confirmed: r.confirmed,
                    attempt: r.attempt,
                    boot_count: ecu.boot_count().min(u64::from(u32::MAX)) as u32,
                    outcome: ecu.last_boot().map_or(0, |o| o.code()),
                }
                .encode()
            }
            did::PRIMARY_SLOT | did::SECONDARY_SLOT => {
                let status = ecu.status().ok()?;
                let s = &status.slots[usize::from(id == did::SECONDARY_SLOT)];
                let t = &s.trailer;
                let mut flags = 0;
                if t.magic {
                    flags |= SlotRecord::TRAILER_MAGIC;
                }
                // A raw `imgtool sign --pad` trailer has no swap info: its image_ok says.
                match t.swap_type.or_else(|| t.request()) {
                    Some(SwapType::Test) => flags |= SlotRecord::TRAILER_TEST,
                    Some(SwapType::Perm) => flags |= SlotRecord::TRAILER_PERMANENT,
                    _ => {}
                }
                if t.image_ok.is_set() {
                    flags |= SlotRecord::TRAILER_IMAGE_OK;
                }
                if t.copy_done.is_set() {
                    flags |= SlotRecord::TRAILER_COPY_DONE;
                }
                SlotRecord {
                    version: s.version,
                    image: match (&s.version, &s.invalid) {
                        (None, _) => 0,
                        (Some(_), None) => 1,
                        (Some(_), Some(_)) => 2,
                    },
                    trailer: flags,
                }
                .encode()
            }
            did::STAGING_AREA => {
                let (slot, address, size) = staging(ecu)?;
                let geometry = ecu.flash().geometry();
                let erase_sector = geometry
                    .sectors()
                    .iter()
                    .filter(|s| s.offset >= address && s.offset < address + size)
                    .map(|s| s.size)
                    .max()
                    .unwrap_or(0);
                StagingRecord {
                    slot: slot.index(),
                    address,
                    size,
                    erase_sector,
                    write_align: geometry.write_align() as u8,
                }
                .encode()
            }
            did::LAST_BOOT_REASON => ecu
                .last_boot()
                .map(|o| o.reason())
                .unwrap_or_default()
                .into_bytes(),
            did::SECURITY_COUNTER => ecu.status().ok()?.stored_counter.to_be_bytes().to_vec(),
            _ => return None,
        })
    }

    fn write_did(&mut self, req: &[u8]) -> Handled {
        if req.len() < 4 {
            return Err(Nrc::IncorrectMessageLength);
        }
        let id = u16::from_be_bytes([req[1], req[2]]);
        if id != did::VIN {
            return Err(Nrc::RequestOutOfRange);
        }
        if self.t.unlocked.is_none() {
            return Err(Nrc::SecurityAccessDenied);
        }
        let vin: [u8; 17] = req[3..]
            .try_into()
            .map_err(|_| Nrc::IncorrectMessageLength)?;
        if !vin.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Nrc::RequestOutOfRange);
        }
        self.vin = vin;
        Ok(Outcome::Reply(vec![0x6E, req[1], req[2]]))
    }
}

fn tester_present(req: &[u8]) -> Handled {
    let sub = sub_function(req)?;
    if sub & 0x7F != 0 {
        return Err(Nrc::SubFunctionNotSupported);
    }
    exact_len(req, 2)?;
    Ok(reply(sub, vec![0x7E, 0x00]))
}

fn control_dtc_setting<F: Flash>(ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
    let sub = sub_function(req)?;
    let setting = sub & 0x7F;
    let off = match setting {
        0x01 => false,
        0x02 => true,
        _ => return Err(Nrc::SubFunctionNotSupported),
    };
    ecu.dtcs_mut().recording_off = off;
    Ok(reply(sub, vec![0xC5, setting]))
}

fn read_dtcs<F: Flash>(ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
    let sub = sub_function(req)?;
    match sub {
        0x01 | 0x02 => exact_len(req, 3)?,
        0x0A => exact_len(req, 2)?,
        _ => return Err(Nrc::SubFunctionNotSupported),
    }
    let mut out = vec![0x59, sub, STATUS_AVAILABILITY_MASK];
    match sub {
        0x01 => {
            let n = ecu.dtcs().matching(req[2]).len() as u16;
            out.push(0x01); // ISO 14229-1 DTC format
            out.extend_from_slice(&n.to_be_bytes());
        }
        0x02 => {
            for (code, status) in ecu.dtcs().matching(req[2]) {
                out.extend_from_slice(&code.to_be_bytes()[1..]);
                out.push(status);
            }
        }
        _ => {
            for dtc in Dtc::ALL {
                let status = ecu
                    .dtcs()
                    .iter()
                    .find(|(d, _)| *d == dtc)
                    .map_or(0, |(_, s)| s);
                out.extend_from_slice(&dtc.code().to_be_bytes()[1..]);
                out.push(status);
            }
        }
    }
    Ok(Outcome::Reply(out))
}

fn clear_dtcs<F: Flash>(ecu: &mut Ecu<F>, req: &[u8]) -> Handled {
    exact_len(req, 4)?;
    let group = u32::from_be_bytes([0, req[1], req[2], req[3]]);
    if !ecu.dtcs_mut().clear(group) {
        return Err(Nrc::RequestOutOfRange);
    }
    ecu.emit(EventKind::DtcsCleared);
    Ok(Outcome::Reply(vec![0x54]))
}

/// The sub-function byte (length 0x13 if missing).
fn sub_function(req: &[u8]) -> Result<u8, Nrc> {
    req.get(1).copied().ok_or(Nrc::IncorrectMessageLength)
}

fn exact_len(req: &[u8], len: usize) -> Result<(), Nrc> {
    if req.len() == len {
        Ok(())
    } else {
        Err(Nrc::IncorrectMessageLength)
    }
}

/// A positive response, unless the sub-function byte asks to suppress it.
fn reply(sub: u8, bytes: Vec<u8>) -> Outcome {
    if sub & codec::SUPPRESS_POSITIVE_RESPONSE != 0 {
        Outcome::Suppressed
    } else {
        Outcome::Reply(bytes)
    }
}

/// The final positive response to a suppressed request that needed responsePending:
/// `SID+0x40` and the sub-function without bit 7.
fn positive_sid_only(req: &[u8]) -> Vec<u8> {
    let mut out = vec![req[0] + codec::POSITIVE_RESPONSE_OFFSET];
    if let Some(sub) = req.get(1) {
        out.push(sub & 0x7F);
    }
    out
}
