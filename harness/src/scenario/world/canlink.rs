//! The CAN bus of a `transport: can|canfd` scenario: every UDS request and response goes
//! through the tester's and the ECU's ISO-TP cores ([`ecu_sim::proto::isotp`]) over the timed
//! virtual bus ([`ecu_sim::can::link::Link`]), in virtual time, and `can:` faults are fault
//! rules of that bus aimed at one frame.
//!
//! | side | CAN id | ISO-TP settings |
//! |---|---|---|
//! | tester ([`Side::A`]) | sends `0x7E0`, receives `0x7E8` | hil's own ([`IsoTpSettings::core`]): padding `0xCC`, block size 0, STmin 0, N_Bs = N_Cr = 1 s |
//! | ECU ([`Side::B`]) | sends `0x7E8`, receives `0x7E0` | as `ecu-sim serve` on a CAN bus ([`ecu_isotp_config`]): padding `0xAA`, block size [`BUS_BLOCK_SIZE`] (16), STmin 0, N_Bs = N_Cr = 1 s |
//!
//! Frame times are exact ([`ecu_sim::can::timing`]): arbitration and data bit rates, bit
//! stuffing, interframe space, error frames. STmin and block size come from each side's flow
//! control; a frame waits for its sender's mailbox (one frame at a time, as a controller).
//!
//! ## One exchange
//!
//! A request and the ECU's answers to it are one exchange; a `can:` fault that fired is armed
//! as a bus fault rule for the next exchange (the request the trigger fired on) and removed
//! when it ends. Messages take the bus one at a time: a request starts when the tester sends
//! it or, if an answer to an earlier request is still on the bus, after it.
//!
//! | step | what happens |
//! |---|---|
//! | [`CanLink::request`] | the tester's core sends the request at `now`; the link runs until both cores are idle (flow control, STmin, timeouts included) |
//! | [`CanLink::response`] | the ECU's core sends one answer at the time it is due; the same |
//! | [`CanLink::finish`] | the rule is removed; a fault whose rule matched no frame did nothing |
//!
//! Each step returns [`Note`]s for the trace: the frame a fault hit (id, frame type, sequence
//! number) and what the ISO-TP cores did about it (N_Cr or N_Bs expired, a sequence error,
//! the message lost).

use ecu_sim::can::bus::{Bus, BusConfig, BusEvent};
use ecu_sim::can::fault::{Fault, FaultRule};
use ecu_sim::can::link::{FrameSeen, Link, LinkEvent, Side};
use ecu_sim::proto::isotp::{Event, IsoTp, IsoTpError};
use ecu_sim::proto::uds_can::{BUS_BLOCK_SIZE, CanIds, ecu_isotp_config};

use crate::can::IsoTpSettings;
use crate::scenario::schema::{CanFault, EcuSpec, FrameKind, FrameTarget, TransportSpec};

/// A trace event the link reports: (time µs, event name, text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub at_us: u64,
    pub event: &'static str,
    pub text: String,
}

/// What became of a request on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The ECU's core received it at `at_us`; the tester's send returned at `sent_us` (its
    /// core handed the last frame to the controller).
    Delivered { at_us: u64, sent_us: u64 },
    /// The ECU never got it whole; the tester's send was complete at `sent_us` (it waits P2).
    Lost { sent_us: u64 },
    /// The tester's core gave up at `at_us` (no flow control within N_Bs).
    SendFailed { at_us: u64, error: IsoTpError },
}

/// The fault rule of the exchange in progress.
#[derive(Clone, Debug)]
struct Armed {
    fault: CanFault,
    /// The frame selection as applied: type, id, n (from 1).
    kind: Option<FrameKind>,
    id: Option<u32>,
    n: u32,
    hit: bool,
}

/// The tester and the ECU on one virtual CAN bus.
#[derive(Clone, Debug)]
pub struct CanLink {
    link: Link,
    ids: CanIds,
    fd: bool,
    /// N_Bs and N_Cr of both sides (µs), for the trace's words.
    n_bs_us: u64,
    n_cr_us: u64,
    armed: Option<Armed>,
    /// Faults the bus applied so far ([`Link::faults`] is cumulative).
    faults_seen: usize,
    /// What is in flight: "the request to 0x36".
    what: String,
}

impl CanLink {
    /// The bus of `ecu` (None on DoIP).
    pub fn new(ecu: &EcuSpec) -> Option<CanLink> {
        let (bus, fd) = match ecu.transport {
            TransportSpec::Doip => return None,
            TransportSpec::Can => (BusConfig::classic(ecu.bitrate), false),
            TransportSpec::Canfd => (BusConfig::fd(ecu.bitrate, ecu.data_bitrate), true),
        };
        let ids = CanIds::default();
        let tester = IsoTpSettings {
            tx_id: ids.request,
            rx_id: ids.response,
            fd,
            ..IsoTpSettings::default()
        }
        .core();
        let ecu_cfg = ecu_isotp_config(ids, fd, BUS_BLOCK_SIZE, ecu.block_len as usize);
        let (n_bs_us, n_cr_us) = (ecu_cfg.n_bs_us, ecu_cfg.n_cr_us);
        let mut link = Link::new(Bus::new(bus), IsoTp::new(tester), IsoTp::new(ecu_cfg));
        link.record_frames();
        Some(CanLink {
            link,
            ids,
            fd,
            n_bs_us,
            n_cr_us,
            armed: None,
            faults_seen: 0,
            what: String::new(),
        })
    }

    /// Send `request` from the tester at `now` with `fault` armed for this exchange.
    pub fn request(
        &mut self,
        now: u64,
        request: &[u8],
        fault: Option<CanFault>,
        notes: &mut Vec<Note>,
    ) -> RequestOutcome {
        let sid = request.first().copied().unwrap_or(0);
        self.what = format!("the request to {sid:#04x}");
        self.settle(now, notes);
        let rule = fault.map(|f| self.arm(f, request.len()));
        self.link.bus_mut().set_faults(rule.into_iter().collect());
        let start = self.link.now();
        if let Err(e) = self.link.send(Side::A, request) {
            notes.push(Note {
                at_us: start,
                event: "isotp_error",
                text: format!("the tester could not send {}: {e}", self.what),
            });
            return RequestOutcome::Lost { sent_us: start };
        }
        let log = self.link.run();
        let frames = self.link.take_frames();
        self.report_faults(notes);
        let mut sent_us = start;
        let mut received = None;
        let mut failed = None;
        for e in &log {
            match (&e.side, &e.event) {
                (Side::A, Event::Sent) => sent_us = e.at_us,
                (Side::B, Event::Received(_)) if received.is_none() => received = Some(e.at_us),
                (Side::B, Event::Received(_)) => notes.push(Note {
                    at_us: e.at_us,
                    event: "isotp_error",
                    text: format!(
                        "the ECU's receiver got {} a second time (the ECU acts on the first)",
                        self.what
                    ),
                }),
                (Side::A, Event::Error(err @ IsoTpError::FlowControlTimeout)) => {
                    notes.push(self.timeout_note(e, &frames));
                    failed.get_or_insert((e.at_us, err.clone()));
                }
                (_, Event::Error(_)) => notes.push(self.timeout_note(e, &frames)),
                _ => {}
            }
        }
        if let Some((at_us, error)) = failed {
            return RequestOutcome::SendFailed { at_us, error };
        }
        match received {
            Some(at_us) => RequestOutcome::Delivered { at_us, sent_us },
            None => {
                notes.push(Note {
                    at_us: log.last().map_or(sent_us, |e| e.at_us),
                    event: "can_message_lost",
                    text: format!("{} never reached the ECU", self.what),
                });
                RequestOutcome::Lost { sent_us }
            }
        }
    }

    /// Send one answer from the ECU, due at `at`; when the tester's core has it whole (None:
    /// lost on the way).
    pub fn response(&mut self, at: u64, bytes: &[u8], notes: &mut Vec<Note>) -> Option<u64> {
        let sid = request_sid(bytes);
        self.what = format!("the response to {sid:#04x}");
        self.settle(at, notes);
        if let Err(e) = self.link.send(Side::B, bytes) {
            notes.push(Note {
                at_us: self.link.now(),
                event: "isotp_error",
                text: format!("the ECU could not send {}: {e}", self.what),
            });
            return None;
        }
        let log = self.link.run();
        let frames = self.link.take_frames();
        self.report_faults(notes);
        let mut received = None;
        for e in &log {
            match (&e.side, &e.event) {
                (Side::A, Event::Received(_)) if received.is_none() => received = Some(e.at_us),
                (_, Event::Error(_)) => notes.push(self.timeout_note(e, &frames)),
                _ => {}
            }
        }
        if received.is_none() {
            notes.push(Note {
                at_us: log.last().map_or(self.link.now(), |e| e.at_us),
                event: "can_message_lost",
                text: format!("{} never reached the tester", self.what),
            });
        }
        received
    }

    /// The exchange is over: the rule goes; a fault whose rule hit no frame, with why.
    pub fn finish(&mut self) -> Option<(CanFault, String)> {
        self.link.bus_mut().set_faults(Vec::new());
        let a = self.armed.take()?;
        if a.hit {
            return None;
        }
        let mut which = match a.kind {
            Some(k) => format!("{} {}", ordinal(a.n), k.name()),
            None => format!("{} frame", ordinal(a.n)),
        };
        if let Some(id) = a.id {
            which.push_str(&format!(" on {id:#05x}"));
        }
        Some((a.fault, format!("the exchange had no {which}")))
    }

    /// Run what is left before `t` (nothing, unless a fault kept a core busy) and move the
    /// clock there.
    fn settle(&mut self, t: u64, notes: &mut Vec<Note>) {
        let log = self.link.advance_to(t);
        let frames = self.link.take_frames();
        for e in &log {
            if let Event::Error(_) = e.event {
                notes.push(self.timeout_note(e, &frames));
            }
        }
    }

    /// The bus rule of `fault` for a request of `len` bytes.
    fn arm(&mut self, fault: CanFault, len: usize) -> FaultRule {
        let tester = self.ids.request;
        let cfs = consecutive_frames(len, self.fd);
        let (kind, id, n) = match &fault {
            // The request's last frame.
            CanFault::Drop if cfs == 0 => (Some(FrameKind::Single), Some(tester), 1),
            CanFault::Drop => (Some(FrameKind::Consecutive), Some(tester), cfs),
            // The request's first frame.
            CanFault::Corrupt | CanFault::DelayMs(_) => (None, Some(tester), 1),
            CanFault::Duplicate if cfs == 0 => (Some(FrameKind::Single), Some(tester), 1),
            CanFault::Duplicate => (Some(FrameKind::Consecutive), Some(tester), 1),
            f => {
                let t = f.target().unwrap_or_else(FrameTarget::default);
                (t.frame, t.id, t.n.unwrap_or(1).max(1))
            }
        };
        let what = match &fault {
            CanFault::Drop | CanFault::DropFrame(_) => Fault::Drop,
            CanFault::Corrupt | CanFault::CorruptFrame(_) => Fault::ErrorFrame,
            CanFault::DelayMs(ms) => Fault::Delay { us: ms * 1000 },
            CanFault::DelayFrame(d) => Fault::Delay { us: d.ms * 1000 },
            CanFault::Duplicate | CanFault::DuplicateFrame(_) => Fault::Duplicate,
        };
        let mut rule = FaultRule::new(what).nth(u64::from(n) - 1).times(1);
        if let Some(id) = id {
            rule = rule.on_id(id);
        }
        if let Some(k) = kind {
            rule = rule.first_byte(0xF0, k.pci());
        }
        self.armed = Some(Armed {
            fault,
            kind,
            id,
            n,
            hit: false,
        });
        rule
    }

    /// A note for each fault the bus applied since the last call.
    fn report_faults(&mut self, notes: &mut Vec<Note>) {
        let faults = self.link.faults()[self.faults_seen..].to_vec();
        self.faults_seen = self.link.faults().len();
        for f in faults {
            let BusEvent::FaultApplied {
                at_us,
                id,
                first_byte,
                fault,
                ..
            } = f
            else {
                continue;
            };
            let by_kind = self.armed.as_ref().is_some_and(|a| a.kind.is_some());
            let n = self.armed.as_mut().map_or(1, |a| {
                a.hit = true;
                a.n
            });
            let which = describe_frame(first_byte, id, self.ids, by_kind.then_some(n));
            let (event, text) = match fault {
                Fault::Drop => (
                    "can_frame_dropped",
                    format!("{which} of {} dropped", self.what),
                ),
                Fault::ErrorFrame => (
                    "can_error_frame",
                    format!(
                        "{which} of {} destroyed by an error frame; the controller sends it again",
                        self.what
                    ),
                ),
                Fault::Delay { us } => (
                    "can_frame_delayed",
                    format!("{which} of {} held back {} ms", self.what, us / 1000),
                ),
                Fault::Duplicate => (
                    "can_frame_duplicated",
                    format!("{which} of {} delivered twice", self.what),
                ),
                Fault::Corrupt { .. } => (
                    "can_error_frame",
                    format!("{which} of {} altered", self.what),
                ),
            };
            notes.push(Note { at_us, event, text });
        }
    }

    /// What a core's error means, in the trace's words.
    fn timeout_note(&self, e: &LinkEvent, frames: &[FrameSeen]) -> Note {
        let Event::Error(err) = &e.event else {
            unreachable!("only errors are described");
        };
        let (who, peer) = match e.side {
            Side::A => ("tester", "ECU"),
            Side::B => ("ECU", "tester"),
        };
        let cfs = frames
            .iter()
            .filter(|f| {
                f.to == e.side
                    && f.at_us <= e.at_us
                    && f.first_byte.and_then(FrameKind::of) == Some(FrameKind::Consecutive)
            })
            .count();
        let after = match cfs {
            0 => "after the first frame".to_string(),
            n => format!("after CF {n}"),
        };
        let (event, text) = match err {
            IsoTpError::ConsecutiveTimeout => (
                "isotp_timeout",
                format!(
                    "N_Cr expired: the {who}'s receiver dropped {} {after} (no consecutive frame within {} ms)",
                    self.what,
                    self.n_cr_us / 1000
                ),
            ),
            IsoTpError::FlowControlTimeout => (
                "isotp_timeout",
                format!(
                    "N_Bs expired: the {who}'s sender gave up on {} (no flow control from the {peer} within {} ms)",
                    self.what,
                    self.n_bs_us / 1000
                ),
            ),
            IsoTpError::WrongSequence { expected, got } => (
                "isotp_sequence_error",
                format!(
                    "the {who}'s receiver dropped {}: consecutive frame SN {got}, expected SN {expected}",
                    self.what
                ),
            ),
            other => (
                "isotp_error",
                format!("the {who}'s ISO-TP core, during {}: {other}", self.what),
            ),
        };
        Note {
            at_us: e.at_us,
            event,
            text,
        }
    }
}

/// The service a response answers (`7F SID NRC`: SID; positive: SID − 0x40).
fn request_sid(response: &[u8]) -> u8 {
    match response {
        [0x7F, sid, ..] => *sid,
        [r, ..] => r.wrapping_sub(0x40),
        [] => 0,
    }
}

/// Consecutive frames the tester's core sends for a message of `len` bytes (0: a single
/// frame), as [`IsoTp::send`] segments it with normal addressing.
fn consecutive_frames(len: usize, fd: bool) -> u32 {
    let frame = if fd { 64 } else { 8 };
    if len < 8 || (fd && len <= frame - 2) {
        return 0;
    }
    let header = if len <= 4095 { 2 } else { 6 };
    let rest = len.saturating_sub(frame - header);
    u32::try_from(rest.div_ceil(frame - 1)).unwrap_or(u32::MAX)
}

/// `the 3rd consecutive frame (SN 3, id 0x7e0, tester)` (`nth`: its rank among its kind),
/// `a flow control frame (id 0x7e8, ECU)`.
fn describe_frame(first_byte: Option<u8>, id: u32, ids: CanIds, nth: Option<u32>) -> String {
    let owner = if id == ids.request {
        ", tester"
    } else if id == ids.response {
        ", ECU"
    } else {
        ""
    };
    let kind = first_byte.and_then(FrameKind::of);
    let sn = match (kind, first_byte) {
        (Some(FrameKind::Consecutive), Some(b)) => format!("SN {}, ", b & 0x0F),
        _ => String::new(),
    };
    let name = kind.map_or("frame", FrameKind::name);
    let lead = match nth {
        Some(n) => format!("the {} ", ordinal(n)),
        None if name.starts_with(['a', 'e', 'i', 'o', 'u']) => "an ".into(),
        None => "a ".into(),
    };
    format!("{lead}{name} ({sn}id {id:#05x}{owner})")
}

/// `1st`, `2nd`, `3rd`, `4th`, … `11th`, `21st`.
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecu_sim::proto::isotp;

    fn classic() -> CanLink {
        CanLink::new(&EcuSpec {
            transport: TransportSpec::Can,
            ..EcuSpec::default()
        })
        .unwrap()
    }

    fn block(len: usize) -> Vec<u8> {
        let mut b = vec![0x36, 0x01];
        b.extend((0..len - 2).map(|i| i as u8));
        b
    }

    #[test]
    fn segmentation_counts_match_the_core() {
        for fd in [false, true] {
            for len in [1, 7, 8, 20, 62, 63, 100, 4095, 4096, 5000] {
                let mut cfg = isotp::Config::new(0x7E0, 0x7E8);
                cfg.fd = fd;
                cfg.max_message = 1 << 20;
                let mut tx = IsoTp::new(cfg.clone());
                tx.send(0, &vec![0u8; len]).unwrap();
                let mut cfs = 0;
                // Pretend the peer allows everything at once.
                let _first = tx.poll_transmit(0);
                tx.handle_frame(
                    0,
                    &isotp::Frame {
                        id: 0x7E8,
                        data: vec![0x30, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC],
                    },
                );
                while tx.poll_transmit(0).is_some() {
                    cfs += 1;
                }
                assert_eq!(consecutive_frames(len, fd), cfs, "len {len} fd {fd}");
            }
        }
    }

    #[test]
    fn clean_request_takes_the_bus_time_and_arrives() {
        let mut l = classic();
        let mut notes = Vec::new();
        let out = l.request(1_000, &block(4002), None, &mut notes);
        let RequestOutcome::Delivered { at_us, sent_us } = out else {
            panic!("{out:?}");
        };
        assert!(notes.is_empty(), "{notes:?}");
        // The tester's send returns when its core hands the last frame to the controller,
        // as hil's transport does: one frame before the ECU has it.
        assert!(
            sent_us < at_us && at_us - sent_us < 300,
            "{sent_us} {at_us}"
        );
        // 4002 bytes: FF + 571 CFs, 36 flow controls (BS 16): 608 frames of 111..=135 bits
        // at 2 µs, plus the gaps while the tester waits for each flow control.
        assert_eq!(l.link.bus().stats().frames, 608);
        let busy = l.link.bus().stats().busy_ns / 1000;
        assert!(at_us - 1_000 >= busy, "{at_us} vs busy {busy}");
        assert!((608 * 111 * 2..=608 * 135 * 2 + 1_000).contains(&(at_us - 1_000)));
        assert_eq!(l.finish(), None);
    }

    fn names(notes: &[Note]) -> Vec<&'static str> {
        notes.iter().map(|n| n.event).collect()
    }

    #[test]
    fn third_consecutive_frame_dropped_is_a_sequence_error() {
        // 100 bytes: FF + 14 CFs, one block. CF 4 arrives where CF 3 was expected: the ECU's
        // receiver aborts (N_WRONG_SN); the tester sends on and returns.
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DropFrame(FrameTarget::nth(FrameKind::Consecutive, 3));
        let out = l.request(0, &block(100), Some(f), &mut notes);
        assert!(matches!(out, RequestOutcome::Lost { .. }), "{out:?}");
        assert_eq!(
            names(&notes),
            [
                "can_frame_dropped",
                "isotp_sequence_error",
                "can_message_lost"
            ]
        );
        assert_eq!(
            notes[0].text,
            "the 3rd consecutive frame (SN 3, id 0x7e0, tester) of the request to 0x36 dropped"
        );
        assert_eq!(
            notes[1].text,
            "the ECU's receiver dropped the request to 0x36: consecutive frame SN 4, expected SN 3"
        );
        assert_eq!(l.finish(), None);
        // The next exchange has no fault.
        let out = l.request(3_000_000, &block(100), None, &mut notes);
        assert!(matches!(out, RequestOutcome::Delivered { .. }), "{out:?}");
    }

    #[test]
    fn a_lost_frame_in_a_long_block_ends_in_the_senders_n_bs() {
        // 4002 bytes: after the sequence error the ECU sends no flow control for the
        // tester's second block (BS 16): the tester's N_Bs expires, its send fails.
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DropFrame(FrameTarget::nth(FrameKind::Consecutive, 3));
        let out = l.request(0, &block(4002), Some(f), &mut notes);
        let RequestOutcome::SendFailed { at_us, error } = out else {
            panic!("{out:?}");
        };
        assert_eq!(error, IsoTpError::FlowControlTimeout);
        assert_eq!(
            names(&notes),
            ["can_frame_dropped", "isotp_sequence_error", "isotp_timeout"]
        );
        assert!(
            notes[2]
                .text
                .starts_with("N_Bs expired: the tester's sender")
        );
        // N_Bs runs from handing over CF 16 (17 frames of at most 270 µs, plus the FC).
        assert!(
            (1_000_000..1_000_000 + 18 * 270).contains(&at_us),
            "{at_us}"
        );
    }

    #[test]
    fn the_last_frame_of_a_block_lost_is_the_receivers_n_cr() {
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DropFrame(FrameTarget::nth(FrameKind::Consecutive, 16));
        let out = l.request(0, &block(4002), Some(f), &mut notes);
        assert!(matches!(out, RequestOutcome::SendFailed { .. }), "{out:?}");
        assert_eq!(
            names(&notes),
            ["can_frame_dropped", "isotp_timeout", "isotp_timeout"]
        );
        // N_Cr runs from CF 15's arrival, N_Bs from handing over CF 16 at that same instant:
        // both sides give up together.
        assert!(notes.iter().any(|n| n.text
            == "N_Cr expired: the ECU's receiver dropped the request to 0x36 after CF 15 (no consecutive frame within 1000 ms)"));
        assert!(notes[2].text.starts_with("N_") && notes[1].at_us == notes[2].at_us);
    }

    #[test]
    fn delayed_flow_control_beyond_n_bs_fails_the_send() {
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DelayFrame(crate::scenario::schema::CanDelay {
            ms: 1_500,
            frame: Some(FrameKind::FlowControl),
            id: None,
            n: None,
        });
        let out = l.request(0, &block(40), Some(f), &mut notes);
        let RequestOutcome::SendFailed { at_us, error } = out else {
            panic!("{out:?}");
        };
        assert_eq!(error, IsoTpError::FlowControlTimeout);
        // N_Bs runs from handing over the first frame.
        assert_eq!(at_us, 1_000_000);
        assert_eq!(notes[0].event, "can_frame_delayed");
        assert_eq!(
            notes[1].text,
            "N_Bs expired: the tester's sender gave up on the request to 0x36 (no flow control from the ECU within 1000 ms)"
        );
    }

    #[test]
    fn a_last_consecutive_frame_held_past_n_cr_is_the_receivers_timeout() {
        // 20 bytes: FF + 2 CFs. CF 2 comes 1.2 s late: the ECU's N_Cr (1 s after CF 1)
        // expires first; the late frame then finds an idle receiver and is ignored.
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DelayFrame(crate::scenario::schema::CanDelay {
            ms: 1_200,
            frame: Some(FrameKind::Consecutive),
            id: None,
            n: Some(2),
        });
        let out = l.request(0, &block(20), Some(f), &mut notes);
        assert!(matches!(out, RequestOutcome::Lost { .. }), "{out:?}");
        assert_eq!(
            names(&notes),
            ["can_frame_delayed", "isotp_timeout", "can_message_lost"]
        );
        assert_eq!(
            notes[1].text,
            "N_Cr expired: the ECU's receiver dropped the request to 0x36 after CF 1 (no consecutive frame within 1000 ms)"
        );
    }

    #[test]
    fn error_frame_costs_time_only() {
        let mut clean = classic();
        let mut notes = Vec::new();
        let RequestOutcome::Delivered { at_us: t0, .. } =
            clean.request(0, &[0x3E, 0x00], None, &mut notes)
        else {
            panic!()
        };
        let mut l = classic();
        let out = l.request(0, &[0x3E, 0x00], Some(CanFault::Corrupt), &mut notes);
        let RequestOutcome::Delivered { at_us, .. } = out else {
            panic!("{out:?}");
        };
        assert!(at_us > t0 && at_us < 2 * t0 + 40, "{at_us} vs {t0}");
        assert_eq!(notes[0].event, "can_error_frame");
        assert_eq!(l.link.bus().stats().error_frames, 1);
    }

    #[test]
    fn short_duplicate_is_a_sequence_error() {
        let mut l = classic();
        let mut notes = Vec::new();
        let out = l.request(0, &block(30), Some(CanFault::Duplicate), &mut notes);
        assert!(matches!(out, RequestOutcome::Lost { .. }), "{out:?}");
        assert_eq!(
            names(&notes),
            [
                "can_frame_duplicated",
                "isotp_sequence_error",
                "can_message_lost"
            ]
        );
    }

    #[test]
    fn a_fault_without_its_frame_did_nothing() {
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DropFrame(FrameTarget::nth(FrameKind::Consecutive, 3));
        let out = l.request(0, &[0x3E, 0x00], Some(f.clone()), &mut notes);
        assert!(matches!(out, RequestOutcome::Delivered { .. }));
        assert_eq!(
            l.finish(),
            Some((f, "the exchange had no 3rd consecutive frame".into()))
        );
    }

    #[test]
    fn response_frames_can_be_hit_by_id() {
        let mut l = classic();
        let mut notes = Vec::new();
        let f = CanFault::DropFrame(FrameTarget {
            frame: None,
            id: Some(0x7E8),
            n: Some(1),
        });
        assert!(matches!(
            l.request(0, &[0x22, 0xF1, 0x90], Some(f), &mut notes),
            RequestOutcome::Delivered { .. }
        ));
        assert_eq!(
            l.response(5_000, &[0x62, 0xF1, 0x90, 1, 2], &mut notes),
            None
        );
        assert_eq!(notes[0].event, "can_frame_dropped");
        assert_eq!(
            notes[1].text,
            "the response to 0x22 never reached the tester"
        );
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn ordinals() {
        let got: Vec<_> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(ordinal).to_vec();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
            ]
        );
    }
}
