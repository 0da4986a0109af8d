//! A virtual CAN / CAN FD bus, sans-IO, in virtual time.
//!
//! Nodes [`Bus::attach`]; frames are queued with [`Bus::send`]; the bus arbitrates, occupies
//! itself for each frame's exact transmission time ([`super::timing`]) and delivers every
//! frame to all other attached nodes at the end of its slot. Faults from
//! [`super::fault::FaultRule`]s are applied per frame and each one is reported.
//!
//! ## Driving it
//!
//! 1. [`Bus::send`] frames as the nodes produce them (`now` never goes back);
//! 2. call [`Bus::handle_timeout`] when the time from [`Bus::poll_timeout`] has come;
//! 3. after each of these, drain [`Bus::poll_delivery`] (frames arriving at nodes, in time
//!    order) and [`Bus::poll_event`] (TX complete, faults applied).
//!
//! ## Rules
//!
//! | aspect | behaviour |
//! |---|---|
//! | time | `u64` microseconds outside, nanoseconds inside: frames follow each other exactly, reported times are rounded up to the next µs |
//! | arbitration | when the bus falls idle, the waiting frame with the lowest arbitration field wins (11-bit before 29-bit with the same base id); equal ids: first submitted first |
//! | simultaneity | everything due before `now` happens before a frame sent at `now` joins; frames sent at the same `now` while the bus is idle all take part in the next arbitration |
//! | delivery | to every attached node but the sender, at the end of the slot; the sender gets [`BusEvent::Transmitted`] |
//! | faults | judged when a frame first wins arbitration; see [`super::fault`] |
//! | randomness | one ChaCha8 generator seeded from [`BusConfig::seed`], drawn only for probabilistic rules and random bits: same inputs and seed, same deliveries |

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fault::{Fault, FaultRule, RuleState};
use super::frame::{Frame, FrameError};
use super::timing::{FrameBits, frame_bits};

/// A node attached to the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// A frame arriving at a node: (receiver, time µs, frame).
pub type Delivery = (NodeId, u64, Frame);

/// Bus settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// Nominal (arbitration) bit rate, bit/s.
    pub bitrate: u32,
    /// CAN FD data-phase bit rate; None: FD frames do not switch (BRS clear).
    pub fd_data_bitrate: Option<u32>,
    /// Seed of the fault RNG.
    pub seed: u64,
    pub faults: Vec<FaultRule>,
}

impl Default for BusConfig {
    /// 500 kbit/s, CAN FD data phase at 2 Mbit/s, seed 0, no faults.
    fn default() -> Self {
        BusConfig {
            bitrate: 500_000,
            fd_data_bitrate: Some(2_000_000),
            seed: 0,
            faults: Vec::new(),
        }
    }
}

impl BusConfig {
    /// Classic CAN at `bitrate` (FD frames would not switch rate).
    pub fn classic(bitrate: u32) -> Self {
        BusConfig {
            bitrate,
            fd_data_bitrate: None,
            ..BusConfig::default()
        }
    }

    /// CAN FD with nominal and data bit rates.
    pub fn fd(bitrate: u32, data_bitrate: u32) -> Self {
        BusConfig {
            bitrate,
            fd_data_bitrate: Some(data_bitrate),
            ..BusConfig::default()
        }
    }

    /// How long `frame` occupies this bus, in nanoseconds, and its bits.
    pub fn frame_time_ns(&self, frame: &Frame) -> (u64, FrameBits) {
        let brs = frame.fd && self.fd_data_bitrate.is_some();
        let bits = frame_bits(frame, brs);
        let data_rate = self.fd_data_bitrate.unwrap_or(self.bitrate);
        (bits.duration_ns(self.bitrate, data_rate), bits)
    }
}

/// Why the bus refused a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("{0} is not attached")]
    UnknownNode(NodeId),
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    #[error("time went back: sent at {now} µs, bus is at {bus_us} µs")]
    TimeWentBack { now: u64, bus_us: u64 },
}

/// What the bus reports besides deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A frame left its sender (TX complete), at the end of its slot.
    Transmitted {
        at_us: u64,
        node: NodeId,
        /// Submission number (0-based, over the whole bus).
        seq: u64,
        id: u32,
    },
    /// A fault rule fired on a frame; `at_us` is the end of the harmed transmission.
    FaultApplied {
        at_us: u64,
        node: NodeId,
        seq: u64,
        id: u32,
        /// The frame's first data byte (an ISO-TP frame's N_PCI), if it has data.
        first_byte: Option<u8>,
        /// Index of the rule in the bus's rule list.
        rule: usize,
        /// The fault as applied (`Corrupt` names the flipped bit).
        fault: Fault,
    },
}

/// Counters since the bus was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Frames transmitted in full (retransmissions and duplicate copies included).
    pub frames: u64,
    /// Transmission attempts destroyed by an error frame.
    pub error_frames: u64,
    /// Bits on the bus, stuff bits and error frames included.
    pub bits: u64,
    pub stuff_bits: u64,
    /// Time the bus was occupied, ns.
    pub busy_ns: u64,
    /// Frames handed to receiving nodes.
    pub deliveries: u64,
    /// Faults applied.
    pub faults: u64,
}

/// A frame waiting for the bus.
#[derive(Clone, Debug)]
struct Pending {
    /// Arbitration field as a number: lower wins.
    key: u64,
    seq: u64,
    node: NodeId,
    frame: Frame,
    /// Faults decided already (retransmission or duplicate copy).
    judged: bool,
    /// A copy made by `Fault::Duplicate`: no second TX complete.
    copy: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed, so that the max-heap yields the arbitration winner.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.key, other.seq).cmp(&(self.key, self.seq))
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    p: Pending,
    end_ns: u64,
    /// The fault decided for this transmission and the rule that fired.
    fault: Option<(usize, Fault)>,
}

/// The virtual bus.
#[derive(Clone, Debug)]
pub struct Bus {
    cfg: BusConfig,
    rules: Vec<RuleState>,
    rng: ChaCha8Rng,
    nodes: u32,
    /// Latest time seen (µs).
    now_us: u64,
    /// The bus is free from this time on (ns).
    idle_ns: u64,
    /// Latest submission time (ns): no arbitration before it.
    last_submit_ns: u64,
    next_seq: u64,
    pending: BinaryHeap<Pending>,
    in_flight: Option<InFlight>,
    /// Delayed deliveries by (time ns, order): sender and frame.
    delayed: BTreeMap<(u64, u64), (NodeId, Frame)>,
    delayed_seq: u64,
    ready: VecDeque<Delivery>,
    events: VecDeque<BusEvent>,
    stats: BusStats,
}

/// ns → µs, rounded up.
fn to_us(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

/// The arbitration field (id, SRR/RTR, IDE, extension) as a number; lower wins.
fn arbitration_key(frame: &Frame) -> u64 {
    let id = u64::from(frame.id);
    if frame.extended {
        (id >> 18) << 21 | 1 << 20 | 1 << 19 | (id & 0x3_FFFF) << 1
    } else {
        id << 21
    }
}

impl Bus {
    pub fn new(cfg: BusConfig) -> Self {
        let rules = cfg.faults.iter().cloned().map(RuleState::new).collect();
        Bus {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            rules,
            nodes: 0,
            now_us: 0,
            idle_ns: 0,
            last_submit_ns: 0,
            next_seq: 0,
            pending: BinaryHeap::new(),
            in_flight: None,
            delayed: BTreeMap::new(),
            delayed_seq: 0,
            ready: VecDeque::new(),
            events: VecDeque::new(),
            stats: BusStats::default(),
        }
    }

    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// Attach a node; it receives every frame other nodes send from now on.
    pub fn attach(&mut self) -> NodeId {
        self.nodes += 1;
        NodeId(self.nodes - 1)
    }

    /// Add a fault rule after the configured ones.
    pub fn add_fault(&mut self, rule: FaultRule) {
        self.cfg.faults.push(rule.clone());
        self.rules.push(RuleState::new(rule));
    }

    /// Replace every fault rule (and its counters) with `rules`.
    pub fn set_faults(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules.iter().cloned().map(RuleState::new).collect();
        self.cfg.faults = rules;
    }

    /// How often each rule has fired, in rule order.
    pub fn fault_counts(&self) -> Vec<u64> {
        self.rules.iter().map(|r| r.fired).collect()
    }

    pub fn stats(&self) -> &BusStats {
        &self.stats
    }

    /// The latest time the bus has been told about (µs).
    pub fn now(&self) -> u64 {
        self.now_us
    }

    /// Queue `frame` from `node` at `now`; returns its submission number.
    pub fn send(&mut self, now: u64, node: NodeId, frame: Frame) -> Result<u64, BusError> {
        if node.0 >= self.nodes {
            return Err(BusError::UnknownNode(node));
        }
        if now < self.now_us {
            return Err(BusError::TimeWentBack {
                now,
                bus_us: self.now_us,
            });
        }
        frame.validate()?;
        // Everything that happens strictly before `now` comes first.
        if now > 0 {
            self.run_until(now.saturating_mul(1000) - 1);
        }
        self.now_us = now;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_submit_ns = now.saturating_mul(1000);
        self.pending.push(Pending {
            key: arbitration_key(&frame),
            seq,
            node,
            frame,
            judged: false,
            copy: false,
        });
        Ok(seq)
    }

    /// When [`Bus::handle_timeout`] next has work: a frame ends, a delayed delivery is due, or
    /// a waiting frame can start.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_ns().map(to_us)
    }

    /// Run everything due at or before `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now_us = self.now_us.max(now);
        self.run_until(now.saturating_mul(1000));
    }

    /// The next frame arriving at a node: (receiver, time µs, frame), in time order.
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.ready.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<BusEvent> {
        self.events.pop_front()
    }

    fn start_ns(&self) -> Option<u64> {
        (self.in_flight.is_none() && !self.pending.is_empty())
            .then(|| self.idle_ns.max(self.last_submit_ns))
    }

    fn next_ns(&self) -> Option<u64> {
        let end = self.in_flight.as_ref().map(|f| f.end_ns);
        let delayed = self.delayed.keys().next().map(|k| k.0);
        [end, delayed, self.start_ns()].into_iter().flatten().min()
    }

    /// Process, in time order, every end of frame, delayed delivery and start of frame at or
    /// before `limit` ns. At equal times: end of frame, then delayed deliveries, then start.
    fn run_until(&mut self, limit: u64) {
        loop {
            let end = self.in_flight.as_ref().map(|f| f.end_ns);
            let delayed = self.delayed.keys().next().map(|k| k.0);
            let start = self.start_ns();
            let next = [end, delayed, start].into_iter().flatten().min();
            match next {
                Some(t) if t <= limit => {
                    if end == Some(t) {
                        self.finish();
                    } else if delayed == Some(t) {
                        let (_, (from, frame)) = self.delayed.pop_first().unwrap();
                        self.deliver(from, t, frame);
                    } else {
                        self.start(t);
                    }
                }
                _ => return,
            }
        }
    }

    /// The arbitration winner takes the bus at `t` ns.
    fn start(&mut self, t: u64) {
        let Some(mut p) = self.pending.pop() else {
            return;
        };
        let fault = if p.judged {
            None
        } else {
            p.judged = true;
            self.judge(&mut p.frame)
        };
        let (mut ns, mut bits) = self.cfg.frame_time_ns(&p.frame);
        if matches!(fault, Some((_, Fault::ErrorFrame))) {
            bits = bits.with_error_frame();
            let data_rate = self.cfg.fd_data_bitrate.unwrap_or(self.cfg.bitrate);
            ns = bits.duration_ns(self.cfg.bitrate, data_rate);
        }
        self.stats.bits += u64::from(bits.total());
        self.stats.stuff_bits += u64::from(bits.stuff);
        self.stats.busy_ns += ns;
        self.in_flight = Some(InFlight {
            p,
            end_ns: t + ns,
            fault,
        });
    }

    /// Decide the fate of a frame winning arbitration for the first time; `Corrupt` alters it
    /// right here so that its timing is that of the altered frame.
    fn judge(&mut self, frame: &mut Frame) -> Option<(usize, Fault)> {
        let mut chosen = None;
        for (i, r) in self.rules.iter_mut().enumerate() {
            if r.rule.id.is_some_and(|id| id != frame.id) {
                continue;
            }
            if let Some((mask, value)) = r.rule.first_byte
                && frame.data.first().is_none_or(|b| b & mask != value)
            {
                continue;
            }
            let n = r.seen;
            r.seen += 1;
            if chosen.is_some()
                || r.rule.nth.is_some_and(|k| k != n)
                || r.rule.times.is_some_and(|t| r.fired >= t)
            {
                continue;
            }
            let data_bits = frame.data.len() as u32 * 8;
            if matches!(r.rule.fault, Fault::Corrupt { .. }) && data_bits == 0 {
                continue;
            }
            if r.rule.per_million < 1_000_000
                && self.rng.gen_range(0..1_000_000) >= r.rule.per_million
            {
                continue;
            }
            let fault = match r.rule.fault {
                Fault::Corrupt { bit } => {
                    let bit = match bit {
                        Some(b) => b % data_bits,
                        None => self.rng.gen_range(0..data_bits),
                    };
                    frame.data[(bit / 8) as usize] ^= 0x80 >> (bit % 8);
                    Fault::Corrupt { bit: Some(bit) }
                }
                f => f,
            };
            r.fired += 1;
            chosen = Some((i, fault));
        }
        chosen
    }

    /// The frame on the bus reaches its end.
    fn finish(&mut self) {
        let Some(InFlight { p, end_ns, fault }) = self.in_flight.take() else {
            return;
        };
        self.idle_ns = end_ns;
        let at_us = to_us(end_ns);
        if let Some((rule, fault)) = fault {
            self.stats.faults += 1;
            self.events.push_back(BusEvent::FaultApplied {
                at_us,
                node: p.node,
                seq: p.seq,
                id: p.frame.id,
                first_byte: p.frame.data.first().copied(),
                rule,
                fault,
            });
        }
        if matches!(fault, Some((_, Fault::ErrorFrame))) {
            self.stats.error_frames += 1;
            self.pending.push(p);
            return;
        }
        self.stats.frames += 1;
        if !p.copy {
            self.events.push_back(BusEvent::Transmitted {
                at_us,
                node: p.node,
                seq: p.seq,
                id: p.frame.id,
            });
        }
        match fault {
            Some((_, Fault::Drop)) => {}
            Some((_, Fault::Delay { us })) => {
                let at = end_ns + us.saturating_mul(1000);
                self.delayed
                    .insert((at, self.delayed_seq), (p.node, p.frame));
                self.delayed_seq += 1;
            }
            Some((_, Fault::Duplicate)) => {
                let copy = Pending {
                    copy: true,
                    ..p.clone()
                };
                self.deliver(p.node, end_ns, p.frame);
                self.pending.push(copy);
            }
            _ => self.deliver(p.node, end_ns, p.frame),
        }
    }

    /// Hand `frame` from `from` to every other node at `t` ns.
    fn deliver(&mut self, from: NodeId, t: u64, frame: Frame) {
        let at = to_us(t);
        let mut receivers = (0..self.nodes)
            .map(NodeId)
            .filter(|&n| n != from)
            .peekable();
        while let Some(n) = receivers.next() {
            self.stats.deliveries += 1;
            if receivers.peek().is_some() {
                self.ready.push_back((n, at, frame.clone()));
            } else {
                self.ready.push_back((n, at, frame));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// 0x7E8 `02 10 03 cc cc cc cc cc`: 117 bits (111 + 6 stuff), 234 µs at 500 kbit/s.
    fn diag_frame() -> Frame {
        Frame::classic(0x7E8, hex!("02 10 03 cc cc cc cc cc").to_vec())
    }

    /// Run the bus to quiescence; every delivery and event in order.
    fn drain(bus: &mut Bus) -> (Vec<Delivery>, Vec<BusEvent>) {
        let (mut d, mut e) = (Vec::new(), Vec::new());
        loop {
            d.extend(std::iter::from_fn(|| bus.poll_delivery()));
            e.extend(std::iter::from_fn(|| bus.poll_event()));
            match bus.poll_timeout() {
                Some(t) => bus.handle_timeout(t),
                None => return (d, e),
            }
        }
    }

    fn bus_with(nodes: usize, faults: Vec<FaultRule>) -> (Bus, Vec<NodeId>) {
        let mut bus = Bus::new(BusConfig {
            faults,
            ..BusConfig::default()
        });
        let ids = (0..nodes).map(|_| bus.attach()).collect();
        (bus, ids)
    }

    #[test]
    fn classic_frame_takes_its_exact_bit_time() {
        let (mut bus, n) = bus_with(3, vec![]);
        bus.send(0, n[0], diag_frame()).unwrap();
        assert_eq!(bus.poll_timeout(), Some(0), "idle bus: starts at once");
        bus.handle_timeout(0);
        // 117 bits · 2 µs.
        assert_eq!(bus.poll_timeout(), Some(234));
        bus.handle_timeout(233);
        assert_eq!(bus.poll_delivery(), None);
        bus.handle_timeout(234);
        // Every node but the sender, which gets TX complete instead.
        assert_eq!(bus.poll_delivery(), Some((n[1], 234, diag_frame())));
        assert_eq!(bus.poll_delivery(), Some((n[2], 234, diag_frame())));
        assert_eq!(bus.poll_delivery(), None);
        assert_eq!(
            bus.poll_event(),
            Some(BusEvent::Transmitted {
                at_us: 234,
                node: n[0],
                seq: 0,
                id: 0x7E8
            })
        );
        assert_eq!(
            *bus.stats(),
            BusStats {
                frames: 1,
                bits: 117,
                stuff_bits: 6,
                busy_ns: 234_000,
                deliveries: 2,
                ..BusStats::default()
            }
        );
        // Back to back: a second frame queued while busy follows without a gap.
        bus.send(300, n[0], diag_frame()).unwrap();
        bus.send(301, n[0], diag_frame()).unwrap();
        let (d, _) = drain(&mut bus);
        let times: Vec<u64> = d.iter().filter(|x| x.0 == n[1]).map(|x| x.1).collect();
        assert_eq!(times, vec![534, 768]);
    }

    #[test]
    fn fd_frame_switches_bit_rate() {
        let (mut bus, n) = bus_with(2, vec![]);
        // 30 nominal bits · 2 µs + 549 data bits · 0.5 µs = 334.5 µs; reported rounded up,
        // but the next frame starts at exactly 334.5 µs.
        let f = Frame::fd(0x555, vec![0x55; 64]);
        bus.send(0, n[0], f.clone()).unwrap();
        bus.send(0, n[0], f.clone()).unwrap();
        let (d, _) = drain(&mut bus);
        assert_eq!(d.iter().map(|x| x.1).collect::<Vec<_>>(), vec![335, 669]);
        assert_eq!(bus.stats().busy_ns, 669_000);
        // Without a data bit rate the same frame is 579 bits at 2 µs.
        let mut slow = Bus::new(BusConfig::classic(500_000));
        let (a, _b) = (slow.attach(), slow.attach());
        slow.send(0, a, f).unwrap();
        assert_eq!(drain(&mut slow).0[0].1, 1158);
    }

    #[test]
    fn arbitration_lowest_id_first_then_submission_order() {
        let (mut bus, n) = bus_with(4, vec![]);
        // Sent at the same instant on an idle bus: both take part in arbitration.
        bus.send(0, n[0], Frame::classic(0x300, vec![1])).unwrap();
        bus.send(0, n[1], Frame::classic(0x100, vec![2])).unwrap();
        bus.handle_timeout(0);
        // While 0x100 is on the bus, more frames queue up.
        bus.send(10, n[2], Frame::classic(0x200, vec![3])).unwrap();
        bus.send(20, n[3], Frame::classic(0x100, vec![4])).unwrap();
        bus.send(30, n[1], Frame::classic(0x100, vec![5])).unwrap();
        // 11-bit beats 29-bit with the same base id; a lower base id beats both.
        bus.send(40, n[2], Frame::classic(0x123 << 18, vec![6]))
            .unwrap();
        bus.send(40, n[2], Frame::classic(0x123, vec![7])).unwrap();
        bus.send(40, n[3], Frame::classic(0x122 << 18 | 0x3_FFFF, vec![8]))
            .unwrap();
        let (d, _) = drain(&mut bus);
        let order: Vec<u8> = d
            .iter()
            .filter(|x| x.0 == n[0])
            .map(|x| x.2.data[0])
            .collect();
        assert_eq!(order, vec![2, 4, 5, 8, 7, 6, 3]);
        // n1 sees everything but its own frames, 0x300 (sent first, highest id) last.
        let at_n1: Vec<u8> = d
            .iter()
            .filter(|x| x.0 == n[1])
            .map(|x| x.2.data[0])
            .collect();
        assert_eq!(at_n1, vec![4, 8, 7, 6, 3, 1]);
    }

    #[test]
    fn refusals_are_named() {
        let (mut bus, n) = bus_with(1, vec![]);
        assert_eq!(
            bus.send(0, NodeId(7), diag_frame()),
            Err(BusError::UnknownNode(NodeId(7)))
        );
        assert_eq!(
            bus.send(0, n[0], Frame::classic(1, vec![0; 9]))
                .unwrap_err()
                .to_string(),
            "invalid frame: 9 data bytes is not a valid classic CAN length"
        );
        bus.send(100, n[0], diag_frame()).unwrap();
        assert_eq!(
            bus.send(99, n[0], diag_frame()),
            Err(BusError::TimeWentBack {
                now: 99,
                bus_us: 100
            })
        );
    }

    /// (time µs, data) of each frame a node received.
    type Received = Vec<(u64, Vec<u8>)>;

    /// One frame through a bus with `rule`: deliveries to n1 and events.
    fn one_frame(rule: FaultRule) -> (Received, Vec<BusEvent>, BusStats) {
        let (mut bus, n) = bus_with(2, vec![rule]);
        bus.send(0, n[0], diag_frame()).unwrap();
        let (d, e) = drain(&mut bus);
        (
            d.into_iter().map(|x| (x.1, x.2.data)).collect(),
            e,
            *bus.stats(),
        )
    }

    fn fault_of(e: &[BusEvent]) -> Vec<(u64, Fault)> {
        e.iter()
            .filter_map(|e| match e {
                BusEvent::FaultApplied { at_us, fault, .. } => Some((*at_us, *fault)),
                BusEvent::Transmitted { .. } => None,
            })
            .collect()
    }

    fn tx_times(e: &[BusEvent]) -> Vec<u64> {
        e.iter()
            .filter_map(|e| match e {
                BusEvent::Transmitted { at_us, .. } => Some(*at_us),
                BusEvent::FaultApplied { .. } => None,
            })
            .collect()
    }

    #[test]
    fn every_fault_kind_fires_and_has_its_effect() {
        let data = diag_frame().data;
        // Drop: the bus is busy, nobody receives, the sender sees TX complete.
        let (d, e, s) = one_frame(FaultRule::new(Fault::Drop));
        assert_eq!(d, vec![]);
        assert_eq!(fault_of(&e), vec![(234, Fault::Drop)]);
        assert_eq!((tx_times(&e), s.busy_ns, s.faults), (vec![234], 234_000, 1));
        // Corrupt bit 4: 0x02 → 0x0A in the first byte; the altered frame is timed.
        let (d, e, _) = one_frame(FaultRule::new(Fault::Corrupt { bit: Some(4) }));
        let mut bad = data.clone();
        bad[0] = 0x0A;
        let t = BusConfig::default()
            .frame_time_ns(&Frame::classic(0x7E8, bad.clone()))
            .0;
        assert_eq!(d, vec![(t / 1000, bad)]);
        assert_eq!(
            fault_of(&e),
            vec![(t / 1000, Fault::Corrupt { bit: Some(4) })]
        );
        // Corrupt at random: the event names the bit, the data differs in exactly that bit.
        let (d, e, _) = one_frame(FaultRule::new(Fault::Corrupt { bit: None }));
        let [(_, Fault::Corrupt { bit: Some(bit) })] = fault_of(&e)[..] else {
            panic!("{e:?}");
        };
        let mut want = data.clone();
        want[(bit / 8) as usize] ^= 0x80 >> (bit % 8);
        assert_eq!(d[0].1, want);
        // Error frame: (117 + 7) bits destroyed, then the 117-bit retransmission.
        let (d, e, s) = one_frame(FaultRule::new(Fault::ErrorFrame));
        assert_eq!(d, vec![(248 + 234, data.clone())]);
        assert_eq!(fault_of(&e), vec![(248, Fault::ErrorFrame)]);
        assert_eq!(tx_times(&e), vec![482]);
        assert_eq!((s.error_frames, s.frames, s.bits), (1, 1, 124 + 117));
        // Delay: on time on the bus, 1 ms late at the receiver.
        let (d, e, _) = one_frame(FaultRule::new(Fault::Delay { us: 1000 }));
        assert_eq!(d, vec![(1234, data.clone())]);
        assert_eq!(tx_times(&e), vec![234]);
        // Duplicate: the frame twice, back to back; one TX complete.
        let (d, e, s) = one_frame(FaultRule::new(Fault::Duplicate));
        assert_eq!(d, vec![(234, data.clone()), (468, data.clone())]);
        assert_eq!((tx_times(&e), s.frames), (vec![234], 2));
    }

    #[test]
    fn rules_match_on_id_nth_times_and_probability() {
        let rules = vec![
            FaultRule::new(Fault::Drop).on_id(0x100).nth(2),
            FaultRule::new(Fault::Delay { us: 5 }).on_id(0x200).times(2),
            FaultRule::new(Fault::Duplicate)
                .on_id(0x300)
                .probability(0.0),
            FaultRule::new(Fault::Corrupt { bit: Some(0) })
                .on_id(0x400)
                .probability(0.5),
        ];
        let (mut bus, n) = bus_with(2, rules);
        for i in 0..200u64 {
            for id in [0x100, 0x200, 0x300, 0x400] {
                bus.send(i * 10_000, n[0], Frame::classic(id, vec![i as u8]))
                    .unwrap();
            }
        }
        let (d, e) = drain(&mut bus);
        let counts = bus.fault_counts();
        assert_eq!(counts[..3], [1, 2, 0]);
        assert!(
            (70..=130).contains(&counts[3]),
            "p = 0.5 of 200: {}",
            counts[3]
        );
        assert_eq!(fault_of(&e).len() as u64, counts.iter().sum::<u64>());
        // The dropped one is the third 0x100 frame.
        let got_100: Vec<u8> = d
            .iter()
            .filter(|x| x.2.id == 0x100)
            .map(|x| x.2.data[0])
            .collect();
        assert_eq!(got_100.len(), 199);
        assert!(!got_100.contains(&2));
    }

    #[test]
    fn same_seed_same_deliveries() {
        let trace = |seed: u64| {
            let mut bus = Bus::new(BusConfig {
                seed,
                faults: vec![
                    FaultRule::new(Fault::ErrorFrame).probability(0.1),
                    FaultRule::new(Fault::Corrupt { bit: None }).probability(0.1),
                    FaultRule::new(Fault::Drop).probability(0.05),
                    FaultRule::new(Fault::Delay { us: 300 }).probability(0.05),
                    FaultRule::new(Fault::Duplicate).probability(0.05),
                ],
                ..BusConfig::default()
            });
            let n: Vec<_> = (0..3).map(|_| bus.attach()).collect();
            let mut x = 0x1234_5678u32;
            let mut now = 0;
            for _ in 0..500 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                now += u64::from(x % 300);
                let len = (x >> 8) as usize % 9;
                let frame = Frame::classic((x >> 12) & 0x7FF, vec![x as u8; len]);
                bus.send(now, n[(x >> 4) as usize % 3], frame).unwrap();
                while bus.poll_timeout().is_some_and(|t| t <= now) {
                    bus.handle_timeout(now);
                }
            }
            drain(&mut bus)
        };
        let (d1, e1) = trace(7);
        let (d2, e2) = trace(7);
        assert_eq!((&d1, &e1), (&d2, &e2));
        assert!(
            fault_of(&e1).len() > 50,
            "faults fired: {}",
            fault_of(&e1).len()
        );
        let (d3, _) = trace(8);
        assert_ne!(d1, d3, "another seed, other faults");
        // Deliveries come out in time order.
        assert!(d1.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
