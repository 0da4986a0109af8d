//! UDS on CAN: the ECU's ISO-TP endpoints in front of its UDS server, sans-IO.
//!
//! | direction | CAN id (default) | ISO-TP |
//! |---|---|---|
//! | tester → ECU, physical | `0x7E0` | full (segmented requests, flow control from the ECU) |
//! | tester → ECU, functional | `0x7DF` | single frames only (multi-frame functional requests are ignored) |
//! | ECU → tester | `0x7E8` | full (segmented responses, flow control from the tester) |
//!
//! ## Driving it
//!
//! 1. feed every CAN frame seen on the bus to [`DiagEndpoint::handle_frame`];
//! 2. take complete requests from [`DiagEndpoint::poll_event`], hand them to the UDS server
//!    and queue each of its responses with [`DiagEndpoint::respond`] (with the time it is due);
//! 3. call [`DiagEndpoint::handle_timeout`] when [`DiagEndpoint::poll_timeout`] says, and
//!    drain [`DiagEndpoint::poll_transmit`] after each of these steps.
//!
//! Responses leave in the order they are due; one that is due while a segmented response is
//! still being sent waits for it.

use std::collections::VecDeque;

use super::isotp::{self, Frame, IsoTp, IsoTpError};
use super::uds::server::Addressing;

/// CAN identifiers of the diagnostic connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanIds {
    pub request: u32,
    pub response: u32,
    pub functional: u32,
}

impl Default for CanIds {
    fn default() -> Self {
        CanIds {
            request: 0x7E0,
            response: 0x7E8,
            functional: 0x7DF,
        }
    }
}

/// The ECU's padding byte on CAN.
pub const ECU_PADDING: u8 = 0xAA;

/// The block size the ECU asks a tester for on a CAN bus (a Linux interface, the virtual
/// bus): a sender puts frames back to back, and blocks of 16 keep a long TransferData from
/// overrunning a receive buffer while the ECU works on each frame (a real ECU's flow control
/// does the same). Behind an slcan adapter the serial line paces the frames: 0 (no limit).
pub const BUS_BLOCK_SIZE: u8 = 16;

/// The ISO-TP settings of the ECU's physical endpoint, as `ecu-sim serve` and the scenario
/// world use them: ECU padding, `block_size`, STmin 0 (frames back to back), the ISO default
/// N_Bs/N_Cr (1 s), requests of up to `max_message` bytes (at least 4095).
pub fn ecu_isotp_config(
    ids: CanIds,
    fd: bool,
    block_size: u8,
    max_message: usize,
) -> isotp::Config {
    isotp::Config {
        fd,
        block_size,
        padding: Some(ECU_PADDING),
        max_message: max_message.max(4095),
        ..isotp::Config::new(ids.response, ids.request)
    }
}

/// What the endpoint reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A complete request for the UDS server.
    Request {
        data: Vec<u8>,
        addressing: Addressing,
        /// When it began to arrive (µs, the endpoint's clock): its single frame, or the first
        /// frame of a segmented request, which is in progress from then on (ISO 14229-2).
        started: u64,
    },
    /// The transport failed (a timeout, a sequence error, an overflow); the message is lost.
    TransportError(IsoTpError),
}

/// The ECU's diagnostic endpoints on one CAN bus.
#[derive(Clone, Debug)]
pub struct DiagEndpoint {
    ids: CanIds,
    phys: IsoTp,
    fd: bool,
    responses: VecDeque<(u64, Vec<u8>)>,
    events: VecDeque<EndpointEvent>,
}

impl DiagEndpoint {
    /// `template` supplies the ISO-TP settings (FD, padding, block size, STmin, timeouts,
    /// largest message); its ids are replaced by `ids`.
    pub fn new(ids: CanIds, template: isotp::Config) -> Self {
        let fd = template.fd;
        let cfg = isotp::Config {
            tx_id: ids.response,
            rx_id: ids.request,
            ..template
        };
        DiagEndpoint {
            ids,
            phys: IsoTp::new(cfg),
            fd,
            responses: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn ids(&self) -> CanIds {
        self.ids
    }

    /// Feed a frame seen on the bus at `now`.
    pub fn handle_frame(&mut self, now: u64, frame: &Frame) {
        if frame.id == self.ids.functional {
            if let Some(data) = single_frame(&frame.data, self.fd) {
                self.events.push_back(EndpointEvent::Request {
                    data,
                    addressing: Addressing::Functional,
                    started: now,
                });
            }
            return;
        }
        self.phys.handle_frame(now, frame);
        self.pump(now);
    }

    /// Queue a response due at `at_us`.
    pub fn respond(&mut self, now: u64, at_us: u64, bytes: Vec<u8>) {
        let pos = self.responses.partition_point(|(at, _)| *at <= at_us);
        self.responses.insert(pos, (at_us, bytes));
        self.pump(now);
    }

    /// Drop queued responses (the ECU lost power or reset).
    pub fn clear(&mut self) {
        self.responses.clear();
        self.phys = IsoTp::new(self.phys.config().clone());
    }

    /// When [`DiagEndpoint::handle_timeout`] or [`DiagEndpoint::poll_transmit`] has work next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let due = self.responses.front().map(|(at, _)| *at);
        self.phys.poll_timeout().into_iter().chain(due).min()
    }

    pub fn handle_timeout(&mut self, now: u64) {
        self.phys.handle_timeout(now);
        self.pump(now);
    }

    /// The next frame to put on the bus at `now`.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Frame> {
        let frame = self.phys.poll_transmit(now);
        self.pump(now);
        frame
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// Move ISO-TP events to ours and start due responses when the sender is free.
    fn pump(&mut self, now: u64) {
        loop {
            while let Some(e) = self.phys.poll_event() {
                match e {
                    isotp::Event::Received(data) => self.events.push_back(EndpointEvent::Request {
                        data,
                        addressing: Addressing::Physical,
                        started: self.phys.rx_started(),
                    }),
                    isotp::Event::Sent => {}
                    isotp::Event::Error(e) => {
                        self.events.push_back(EndpointEvent::TransportError(e))
                    }
                }
            }
            match self.responses.front() {
                Some((at, bytes)) if *at <= now => match self.phys.send(now, bytes) {
                    Ok(()) => {
                        self.responses.pop_front();
                    }
                    Err(IsoTpError::Busy) => return,
                    Err(e) => {
                        self.responses.pop_front();
                        self.events.push_back(EndpointEvent::TransportError(e));
                    }
                },
                _ => return,
            }
        }
    }
}

/// The payload of an ISO-TP single frame, if `d` is one.
fn single_frame(d: &[u8], fd: bool) -> Option<Vec<u8>> {
    let (&pci, rest) = d.split_first()?;
    if pci >> 4 != 0 {
        return None;
    }
    let (len, rest) = match pci & 0x0F {
        0 if fd => {
            let (&len, rest) = rest.split_first()?;
            (usize::from(len), rest)
        }
        0 => return None,
        n => (usize::from(n), rest),
    };
    rest.get(..len).filter(|_| len > 0).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn tester() -> IsoTp {
        IsoTp::new(isotp::Config::new(0x7E0, 0x7E8))
    }

    /// Frames go back and forth until both sides are quiet; returns the time.
    fn settle(ep: &mut DiagEndpoint, t: &mut IsoTp, mut now: u64) -> u64 {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(f) = t.poll_transmit(now) {
                ep.handle_frame(now, &f);
                moved = true;
            }
            while let Some(f) = ep.poll_transmit(now) {
                t.handle_frame(now, &f);
                moved = true;
            }
            if !moved {
                match ep.poll_timeout().into_iter().chain(t.poll_timeout()).min() {
                    Some(next) if next > now => now = next,
                    Some(_) => {}
                    None => return now,
                }
                ep.handle_timeout(now);
                t.handle_timeout(now);
            }
        }
        panic!("no progress");
    }

    #[test]
    fn requests_in_responses_out_in_due_order() {
        let mut ep = DiagEndpoint::new(CanIds::default(), isotp::Config::new(0, 0));
        let mut t = tester();
        t.send(0, &hex!("22 f1 90")).unwrap();
        settle(&mut ep, &mut t, 0);
        assert_eq!(
            ep.poll_event(),
            Some(EndpointEvent::Request {
                data: hex!("22 f1 90").to_vec(),
                addressing: Addressing::Physical,
                started: 0
            })
        );
        // A long response queued after a pending one, both due later.
        let mut long = hex!("62 f1 90").to_vec();
        long.extend_from_slice(b"WSIM0000000000001");
        ep.respond(0, 2_000, long.clone());
        ep.respond(0, 1_000, hex!("7f 22 78").to_vec());
        assert_eq!(ep.poll_transmit(0), None, "nothing is due yet");
        assert_eq!(ep.poll_timeout(), Some(1_000));
        settle(&mut ep, &mut t, 0);
        let got: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(
            got,
            vec![
                isotp::Event::Sent,
                isotp::Event::Received(hex!("7f 22 78").to_vec()),
                isotp::Event::Received(long)
            ]
        );
    }

    #[test]
    fn a_segmented_request_started_with_its_first_frame() {
        let mut ep = DiagEndpoint::new(CanIds::default(), isotp::Config::new(0, 0));
        let frame = |data: &[u8]| Frame {
            id: 0x7E0,
            data: data.to_vec(),
        };
        ep.handle_frame(100, &frame(&hex!("10 0a 36 01 11 22 33 44")));
        assert_eq!(ep.poll_event(), None, "still arriving");
        // The last consecutive frame seconds later (a slow sender).
        ep.handle_frame(4_000_100, &frame(&hex!("21 55 66 77 88 cc cc cc")));
        assert_eq!(
            ep.poll_event(),
            Some(EndpointEvent::Request {
                data: hex!("36 01 11 22 33 44 55 66 77 88").to_vec(),
                addressing: Addressing::Physical,
                started: 100
            })
        );
    }

    #[test]
    fn functional_single_frames_only() {
        let mut ep = DiagEndpoint::new(CanIds::default(), isotp::Config::new(0, 0));
        ep.handle_frame(
            5,
            &Frame {
                id: 0x7DF,
                data: hex!("02 3e 80 cc cc cc cc cc").to_vec(),
            },
        );
        assert_eq!(
            ep.poll_event(),
            Some(EndpointEvent::Request {
                data: hex!("3e 80").to_vec(),
                addressing: Addressing::Functional,
                started: 5
            })
        );
        for data in [
            &hex!("10 14 22 f1 90 f1 8c f1")[..],
            &hex!("00 02 3e 80"),
            &[],
            &hex!("05 3e"),
        ] {
            ep.handle_frame(
                6,
                &Frame {
                    id: 0x7DF,
                    data: data.to_vec(),
                },
            );
        }
        assert_eq!(ep.poll_event(), None);
        assert_eq!(
            ep.poll_transmit(6),
            None,
            "no flow control on the functional id"
        );
    }
}
