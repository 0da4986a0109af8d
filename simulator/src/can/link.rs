//! Two ISO-TP endpoints talking over a [`Bus`]: the pump that tests, benchmarks and
//! scenarios use to move whole messages through the virtual bus.
//!
//! Each endpoint has one transmit mailbox, as a CAN controller does: the link takes the next
//! frame from [`IsoTp::poll_transmit`] only once the previous one is TX complete, so the bus
//! queue never holds a whole message. STmin runs on the ISO-TP core's clock, from the moment a
//! consecutive frame is handed to the mailbox (on an idle bus: its start of frame); a frame
//! longer than STmin therefore delays the next one by its own length only.
//!
//! ## One step of [`Link::run`]
//!
//! | order | action |
//! |---|---|
//! | 1 | each endpoint with a free mailbox: next frame due → [`Bus::send`] |
//! | 2 | bus events: TX complete frees the mailbox; faults are kept ([`Link::faults`]) |
//! | 3 | bus deliveries → the receiving endpoint's [`IsoTp::handle_frame`] |
//! | 4 | endpoint events → the log, stamped with the current time |
//! | 5 | nothing moved: advance to the earliest of the bus's and the endpoints' timeouts and call every `handle_timeout`; no timeout left: quiescent, return |

use super::bus::{Bus, BusEvent, NodeId};
use super::frame::Frame;
use crate::proto::isotp::{self, IsoTp, IsoTpError};

/// One of the two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    A,
    B,
}

/// A frame that reached an endpoint (recorded with [`Link::record_frames`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSeen {
    pub at_us: u64,
    /// The receiving side.
    pub to: Side,
    pub id: u32,
    /// The frame's first data byte (an ISO-TP frame's N_PCI).
    pub first_byte: Option<u8>,
}

/// An endpoint event with the time and side it happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    pub at_us: u64,
    pub side: Side,
    pub event: isotp::Event,
}

#[derive(Clone, Debug)]
struct End {
    node: NodeId,
    tp: IsoTp,
    /// A frame is on the bus or waiting for it.
    busy: bool,
}

/// Two ISO-TP endpoints on one bus.
#[derive(Clone, Debug)]
pub struct Link {
    bus: Bus,
    ends: [End; 2],
    now: u64,
    faults: Vec<BusEvent>,
    /// Deliveries, when recording ([`Link::record_frames`]).
    seen: Option<Vec<FrameSeen>>,
}

impl Link {
    /// Attach `a` and `b` to `bus` as two new nodes.
    pub fn new(mut bus: Bus, a: IsoTp, b: IsoTp) -> Self {
        let now = bus.now();
        let end = |tp: IsoTp, bus: &mut Bus| End {
            node: bus.attach(),
            tp,
            busy: false,
        };
        let a = end(a, &mut bus);
        let b = end(b, &mut bus);
        Link {
            bus,
            ends: [a, b],
            now,
            faults: Vec::new(),
            seen: None,
        }
    }

    /// From now on, keep every delivered frame for [`Link::take_frames`].
    pub fn record_frames(&mut self) {
        self.seen.get_or_insert_with(Vec::new);
    }

    /// The frames delivered since the last call (empty unless recording).
    pub fn take_frames(&mut self) -> Vec<FrameSeen> {
        self.seen.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The bus, to change its fault rules between messages.
    pub fn bus_mut(&mut self) -> &mut Bus {
        &mut self.bus
    }

    /// Run everything due until `t`, then move the clock to `t` (if it is not past it): a
    /// message sent next starts at `t`.
    pub fn advance_to(&mut self, t: u64) -> Vec<LinkEvent> {
        let log = self.run_until(t);
        self.now = self.now.max(t);
        log
    }

    fn idx(side: Side) -> usize {
        match side {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// Start sending `msg` from `side` at the current time.
    pub fn send(&mut self, side: Side, msg: &[u8]) -> Result<(), IsoTpError> {
        self.ends[Self::idx(side)].tp.send(self.now, msg)
    }

    /// Current virtual time (µs).
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn endpoint(&self, side: Side) -> &IsoTp {
        &self.ends[Self::idx(side)].tp
    }

    pub fn node(&self, side: Side) -> NodeId {
        self.ends[Self::idx(side)].node
    }

    /// Every [`BusEvent::FaultApplied`] so far.
    pub fn faults(&self) -> &[BusEvent] {
        &self.faults
    }

    /// Run until nothing is left to do; returns the endpoint events in order.
    pub fn run(&mut self) -> Vec<LinkEvent> {
        self.run_until(u64::MAX)
    }

    /// Run until quiescent or until the next thing to do lies after `deadline` (µs).
    pub fn run_until(&mut self, deadline: u64) -> Vec<LinkEvent> {
        let mut log = Vec::new();
        loop {
            if self.step(&mut log) {
                continue;
            }
            let now = self.now;
            let next = self
                .ends
                .iter()
                .filter_map(|e| {
                    // A due transmission waits for the mailbox; TX complete wakes us.
                    e.tp.poll_timeout().filter(|&t| t > now || !e.busy)
                })
                .chain(self.bus.poll_timeout())
                .min();
            match next {
                Some(t) if t <= deadline => {
                    self.now = t.max(now);
                    for e in &mut self.ends {
                        e.tp.handle_timeout(self.now);
                    }
                    self.bus.handle_timeout(self.now);
                }
                _ => return log,
            }
        }
    }

    /// Steps 1–4 at the current time; whether anything moved.
    fn step(&mut self, log: &mut Vec<LinkEvent>) -> bool {
        let now = self.now;
        let mut moved = false;
        for e in &mut self.ends {
            if e.busy {
                continue;
            }
            if let Some(f) = e.tp.poll_transmit(now) {
                let frame = Frame::from_isotp(f, e.tp.config().fd);
                // ISO-TP frames are valid CAN frames (ids are the caller's to choose well).
                self.bus
                    .send(now, e.node, frame)
                    .expect("ISO-TP produced a frame the bus refuses");
                e.busy = true;
                moved = true;
            }
        }
        while let Some(ev) = self.bus.poll_event() {
            moved = true;
            match ev {
                BusEvent::Transmitted { node, .. } => {
                    if let Some(e) = self.ends.iter_mut().find(|e| e.node == node) {
                        e.busy = false;
                    }
                }
                fault @ BusEvent::FaultApplied { .. } => self.faults.push(fault),
            }
        }
        while let Some((node, at, frame)) = self.bus.poll_delivery() {
            moved = true;
            if let Some((e, side)) = self
                .ends
                .iter_mut()
                .zip([Side::A, Side::B])
                .find(|(e, _)| e.node == node)
            {
                if let Some(seen) = &mut self.seen {
                    seen.push(FrameSeen {
                        at_us: at,
                        to: side,
                        id: frame.id,
                        first_byte: frame.data.first().copied(),
                    });
                }
                e.tp.handle_frame(at, &frame.into_isotp());
            }
        }
        for (e, side) in self.ends.iter_mut().zip([Side::A, Side::B]) {
            while let Some(event) = e.tp.poll_event() {
                moved = true;
                log.push(LinkEvent {
                    at_us: now,
                    side,
                    event,
                });
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::super::bus::BusConfig;
    use super::super::fault::{Fault, FaultRule};
    use super::super::timing::frame_bits;
    use super::*;
    use crate::proto::isotp::{Config, Event};

    /// Tester on 0x7E0 (side A), ECU on 0x7E8 (side B).
    fn link(bus: BusConfig, fd: bool, bs: u8, st: u8) -> Link {
        let cfg = |tx, rx| {
            let mut c = Config::new(tx, rx);
            c.fd = fd;
            c.block_size = bs;
            c.st_min = st;
            c.max_message = 1 << 20;
            IsoTp::new(c)
        };
        Link::new(Bus::new(bus), cfg(0x7E0, 0x7E8), cfg(0x7E8, 0x7E0))
    }

    fn faulty(rule: FaultRule) -> BusConfig {
        BusConfig {
            faults: vec![rule],
            ..BusConfig::classic(500_000)
        }
    }

    fn msg(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// When B received a message, if it did.
    fn received_at(log: &[LinkEvent]) -> Option<u64> {
        log.iter()
            .find(|e| e.side == Side::B && matches!(e.event, Event::Received(_)))
            .map(|e| e.at_us)
    }

    /// A 20-byte request: FF (`10 14` + 6), FC back, CF1 (`21` + 7), CF2 (`22` + 7).
    fn request(bus: BusConfig) -> (Link, Vec<LinkEvent>) {
        let mut l = link(bus, false, 0, 0);
        l.send(Side::A, &msg(20)).unwrap();
        let log = l.run();
        (l, log)
    }

    #[test]
    fn clean_request_timing() {
        let (l, log) = request(BusConfig::classic(500_000));
        assert_eq!(
            log.iter()
                .map(|e| (e.side, e.event.clone()))
                .collect::<Vec<_>>(),
            vec![(Side::A, Event::Sent), (Side::B, Event::Received(msg(20)))]
        );
        // Four back-to-back frames: the link's time is the bus's busy time.
        assert_eq!(l.bus().stats().frames, 4);
        assert_eq!(received_at(&log), Some(l.bus().stats().busy_ns / 1000));
    }

    #[test]
    fn dropped_consecutive_frame_ends_in_n_cr_timeout() {
        let (_, clean_log) = request(BusConfig::classic(500_000));
        let (l, log) = request(faulty(FaultRule::new(Fault::Drop).on_id(0x7E0).nth(2)));
        let [
            BusEvent::FaultApplied {
                at_us: dropped_at,
                fault: Fault::Drop,
                ..
            },
        ] = l.faults()[..]
        else {
            panic!("{:?}", l.faults());
        };
        assert_eq!(Some(dropped_at), received_at(&clean_log));
        // The sender thinks all went well; the receiver waits N_Cr after CF1 and gives up.
        let last = log.last().unwrap();
        assert_eq!(log[0].event, Event::Sent);
        assert_eq!(last.event, Event::Error(IsoTpError::ConsecutiveTimeout));
        let cf1_end = dropped_at
            - frame_bits(
                &Frame::classic(0x7E0, {
                    let mut d = vec![0x22];
                    d.extend(&msg(20)[13..]);
                    d.resize(8, 0xCC);
                    d
                }),
                false,
            )
            .total() as u64
                * 2;
        assert_eq!((last.side, last.at_us), (Side::B, cf1_end + 1_000_000));
    }

    #[test]
    fn a_rule_can_aim_at_a_frame_type_and_deliveries_are_recorded() {
        // Only consecutive frames count: `nth(1)` is CF2 (`22`), not the FF or the FC.
        let mut l = link(
            faulty(FaultRule::new(Fault::Drop).first_byte(0xF0, 0x20).nth(1)),
            false,
            0,
            0,
        );
        l.record_frames();
        l.send(Side::A, &msg(20)).unwrap();
        let log = l.run();
        let [BusEvent::FaultApplied { first_byte, .. }] = l.faults()[..] else {
            panic!("{:?}", l.faults());
        };
        assert_eq!(first_byte, Some(0x22));
        assert_eq!(
            log.last().unwrap().event,
            Event::Error(IsoTpError::ConsecutiveTimeout)
        );
        let seen: Vec<_> = l
            .take_frames()
            .into_iter()
            .map(|f| (f.to, f.id, f.first_byte))
            .collect();
        assert_eq!(
            seen,
            [
                (Side::B, 0x7E0, Some(0x10)),
                (Side::A, 0x7E8, Some(0x30)),
                (Side::B, 0x7E0, Some(0x21)),
            ]
        );
        assert!(l.take_frames().is_empty());
        // New rules start counting afresh; none: the next message arrives.
        l.bus_mut().set_faults(Vec::new());
        let t = l.now() + 5_000;
        l.advance_to(t);
        assert_eq!(l.now(), t);
        l.send(Side::A, &msg(20)).unwrap();
        let log = l.run();
        assert!(received_at(&log).unwrap() > t);
        assert_eq!(l.faults().len(), 1);
    }

    #[test]
    fn error_frame_costs_time_but_the_message_arrives() {
        let (_, clean) = request(BusConfig::classic(500_000));
        let (l, log) = request(faulty(
            FaultRule::new(Fault::ErrorFrame).on_id(0x7E0).nth(1),
        ));
        assert_eq!(l.faults().len(), 1);
        let mut cf1 = vec![0x21];
        cf1.extend(&msg(20)[6..13]);
        let cf1 = Frame::classic(0x7E0, cf1);
        // The destroyed attempt: CF1's bits + 7 (error flag, delimiter, intermission), 2 µs each.
        let extra = u64::from(frame_bits(&cf1, false).with_error_frame().total()) * 2;
        assert_eq!(
            received_at(&log),
            Some(received_at(&clean).unwrap() + extra)
        );
        assert_eq!(l.bus().stats().error_frames, 1);
    }

    #[test]
    fn corrupted_sequence_number_is_detected() {
        // Bit 7 is the low bit of the first byte: CF1's `21` becomes `20`.
        let (l, log) = request(faulty(
            FaultRule::new(Fault::Corrupt { bit: Some(7) })
                .on_id(0x7E0)
                .nth(1),
        ));
        assert_eq!(l.faults().len(), 1);
        assert!(log.iter().any(|e| e.side == Side::B
            && e.event
                == Event::Error(IsoTpError::WrongSequence {
                    expected: 1,
                    got: 0
                })));
        assert_eq!(received_at(&log), None);
    }

    #[test]
    fn delayed_flow_control_delays_the_message() {
        let (_, clean) = request(BusConfig::classic(500_000));
        let (l, log) = request(faulty(
            FaultRule::new(Fault::Delay { us: 700 }).on_id(0x7E8),
        ));
        assert_eq!(l.faults().len(), 1);
        assert_eq!(received_at(&log), Some(received_at(&clean).unwrap() + 700));
    }

    #[test]
    fn duplicated_single_frame_arrives_twice() {
        let mut l = link(faulty(FaultRule::new(Fault::Duplicate)), false, 0, 0);
        l.send(Side::A, &[0x3E, 0x00]).unwrap();
        let log = l.run();
        let got: Vec<_> = log
            .iter()
            .filter(|e| e.side == Side::B)
            .map(|e| (e.at_us, e.event.clone()))
            .collect();
        let t = BusConfig::default()
            .frame_time_ns(&Frame::classic(
                0x7E0,
                vec![0x02, 0x3E, 0x00, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC],
            ))
            .0
            / 1000;
        let rx = Event::Received(vec![0x3E, 0x00]);
        assert_eq!(got, vec![(t, rx.clone()), (2 * t, rx)]);
    }

    #[test]
    fn st_min_runs_from_handing_over_a_frame() {
        // STmin 10 ms: CF2 starts 10 ms after CF1 started (both went on an idle bus).
        let mut l = link(BusConfig::classic(500_000), false, 0, 10);
        l.send(Side::A, &msg(20)).unwrap();
        let log = l.run();
        let busy = l.bus().stats().busy_ns / 1000;
        let mut cf1 = vec![0x21];
        cf1.extend(&msg(20)[6..13]);
        let cf1_us = BusConfig::default()
            .frame_time_ns(&Frame::classic(0x7E0, cf1))
            .0
            / 1000;
        assert_eq!(received_at(&log), Some(busy - cf1_us + 10_000));
    }

    /// Classic: FF (6 bytes) + 585 CFs (7 bytes, the last 2) + FC = 587 eight-byte frames,
    /// sent back to back. Each is 111 bits before stuffing and at most 135 after, so at
    /// 2 µs a bit the transfer takes 130 314..=158 490 µs.
    #[test]
    fn four_kib_over_500k_takes_the_expected_time() {
        let mut l = link(BusConfig::classic(500_000), false, 0, 0);
        let m = msg(4096);
        l.send(Side::A, &m).unwrap();
        let log = l.run();
        assert_eq!(l.bus().stats().frames, 587);
        let t = received_at(&log).unwrap();
        assert!((587 * 111 * 2..=587 * 135 * 2).contains(&t), "{t} µs");
        assert_eq!(t, l.bus().stats().busy_ns / 1000, "no idle gaps");
        assert_eq!(log.last().unwrap().event, Event::Received(m));
        // CAN FD 500k/2M: FF (62) + 65 CFs (63, the last 2) + FC = 67 frames.
        let mut l = link(BusConfig::fd(500_000, 2_000_000), true, 0, 0);
        l.send(Side::A, &msg(4096)).unwrap();
        let log = l.run();
        assert_eq!(l.bus().stats().frames, 67);
        let fd = received_at(&log).unwrap();
        assert!(fd * 5 < t, "FD is over 5x faster: {fd} µs vs {t} µs");
    }

    #[test]
    fn same_seed_same_transfer() {
        let trace = |seed| {
            let mut l = link(
                BusConfig {
                    seed,
                    faults: vec![
                        FaultRule::new(Fault::ErrorFrame).probability(0.02),
                        FaultRule::new(Fault::Drop).on_id(0x7E0).probability(0.002),
                        FaultRule::new(Fault::Corrupt { bit: None }).probability(0.002),
                        FaultRule::new(Fault::Delay { us: 50 }).probability(0.01),
                    ],
                    ..BusConfig::classic(500_000)
                },
                false,
                8,
                0,
            );
            let mut log = Vec::new();
            for i in 0..6 {
                l.send(Side::A, &msg(1000 + i)).unwrap();
                log.extend(l.run());
                l.send(Side::B, &msg(10 + i)).unwrap();
                log.extend(l.run());
            }
            (log, l.faults().to_vec(), *l.bus().stats())
        };
        let a = trace(42);
        assert!(a.1.len() > 10, "faults fired: {}", a.1.len());
        assert_eq!(a, trace(42));
        assert_ne!(a.1, trace(43).1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn fault() -> impl Strategy<Value = Fault> {
            prop_oneof![
                Just(Fault::Drop),
                Just(Fault::ErrorFrame),
                Just(Fault::Duplicate),
                (0u32..512).prop_map(|b| Fault::Corrupt { bit: Some(b) }),
                (0u64..3_000_000).prop_map(|us| Fault::Delay { us }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever the faults, the pump comes to rest, and without corruption a message
            /// that arrives is the one sent.
            #[test]
            fn faulty_transfers_terminate_and_never_mangle_silently(
                len in 1usize..3000,
                fd in any::<bool>(),
                bs in 0u8..4,
                st in prop_oneof![Just(0u8), Just(0xF1), Just(1)],
                faults in proptest::collection::vec(
                    (fault(), proptest::option::of(0u64..40), 0.0f64..0.3),
                    0..4,
                ),
                seed in any::<u64>(),
            ) {
                let rules = faults
                    .into_iter()
                    .map(|(f, nth, p)| match nth {
                        Some(n) => FaultRule::new(f).nth(n),
                        None => FaultRule::new(f).probability(p),
                    })
                    .collect();
                let bus = BusConfig { seed, faults: rules, ..BusConfig::default() };
                let mut l = link(bus, fd, bs, st);
                l.send(Side::A, &msg(len)).unwrap();
                let log = l.run();
                let corrupted = l
                    .faults()
                    .iter()
                    .any(|f| matches!(f, BusEvent::FaultApplied { fault: Fault::Corrupt { .. }, .. }));
                for e in &log {
                    if let (Side::B, Event::Received(m)) = (e.side, &e.event) {
                        prop_assert!(corrupted || *m == msg(len));
                    }
                }
                prop_assert!(l.endpoint(Side::A).poll_timeout().is_none());
                prop_assert!(l.bus().poll_timeout().is_none());
            }
        }
    }
}
