//! UDS over ISO-TP over the virtual CAN bus, in virtual time: a tester programs the ECU with
//! the full sequence at 500 kbit/s (classic) and 500k/2M (CAN FD), the simulated duration is
//! what the bus and the flash make it, and a frame lost on the bus costs a retry, not the
//! update.

use std::collections::VecDeque;

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::can::bus::{Bus, BusConfig, BusEvent, NodeId};
use ecu_sim::can::fault::{Fault, FaultRule};
use ecu_sim::can::frame::Frame;
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::Geometry;
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::isotp::{self, IsoTp};
use ecu_sim::proto::uds::codec::{self, BootStatusRecord, MemoryRange, Reply, StagingRecord};
use ecu_sim::proto::uds::security::{compute_key, default_secrets};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};
use ecu_sim::proto::uds_can::{CanIds, DiagEndpoint, EndpointEvent};

/// A tester and the ECU on one bus, driven in virtual time.
struct CanBench {
    bus: Bus,
    fd: bool,
    nodes: [NodeId; 2],
    busy: [bool; 2],
    tester: IsoTp,
    ep: DiagEndpoint,
    ecu: Ecu,
    server: DiagServer,
    now: u64,
    inbox: VecDeque<Vec<u8>>,
    transport_errors: usize,
}

impl CanBench {
    fn new(bus: BusConfig, fd: bool) -> CanBench {
        let v1 = ImageBuilder::new(Version::new(1, 0, 0), vec![1; 8000])
            .security_counter(1)
            .sign(&dev_key("oem"));
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys,
        };
        let geometry = Geometry::uniform(4096, 3 + 2 * 20 + 1, 8).unwrap();
        let ecu = Ecu::factory(geometry, BootMode::SwapScratch, &v1, boot, 1).unwrap();
        let mut bus = Bus::new(bus);
        let nodes = [bus.attach(), bus.attach()];
        let template = isotp::Config {
            fd,
            max_message: 8192,
            ..isotp::Config::new(0, 0)
        };
        let tester = IsoTp::new(isotp::Config {
            tx_id: 0x7E0,
            rx_id: 0x7E8,
            ..template.clone()
        });
        let now = ecu.now_us();
        CanBench {
            bus,
            fd,
            nodes,
            busy: [false; 2],
            tester,
            ep: DiagEndpoint::new(CanIds::default(), template),
            ecu,
            server: DiagServer::new(ServerConfig::default()),
            now,
            inbox: VecDeque::new(),
            transport_errors: 0,
        }
    }

    /// Move frames and messages at the current time; whether anything moved.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for side in 0..2 {
            if self.busy[side] {
                continue;
            }
            let f = if side == 0 {
                self.tester.poll_transmit(now)
            } else {
                self.ep.poll_transmit(now)
            };
            if let Some(f) = f {
                self.bus
                    .send(now, self.nodes[side], Frame::from_isotp(f, self.fd))
                    .unwrap();
                self.busy[side] = true;
                moved = true;
            }
        }
        while let Some(ev) = self.bus.poll_event() {
            moved = true;
            if let BusEvent::Transmitted { node, .. } = ev {
                self.busy[usize::from(node == self.nodes[1])] = false;
            }
        }
        while let Some((node, at, frame)) = self.bus.poll_delivery() {
            moved = true;
            if node == self.nodes[0] {
                self.tester.handle_frame(at, &frame.into_isotp());
            } else {
                self.ep.handle_frame(at, &frame.into_isotp());
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            moved = true;
            match ev {
                EndpointEvent::Request {
                    data, addressing, ..
                } => {
                    self.server
                        .handle_request(&mut self.ecu, now, &data, addressing);
                    while let Some(r) = self.server.poll_transmit() {
                        self.ep.respond(now, r.at_us, r.bytes);
                    }
                }
                EndpointEvent::TransportError(_) => self.transport_errors += 1,
            }
        }
        while let Some(ev) = self.tester.poll_event() {
            moved = true;
            match ev {
                isotp::Event::Received(r) => self.inbox.push_back(r),
                isotp::Event::Error(_) => self.transport_errors += 1,
                isotp::Event::Sent => {}
            }
        }
        moved
    }

    /// Run until something is in the inbox or `deadline` passes.
    fn run_until(&mut self, deadline: u64) {
        loop {
            while self.step() {}
            if !self.inbox.is_empty() {
                return;
            }
            let now = self.now;
            let next = [
                self.tester
                    .poll_timeout()
                    .filter(|&t| t > now || !self.busy[0]),
                self.ep.poll_timeout().filter(|&t| t > now || !self.busy[1]),
                self.bus.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= deadline => {
                    self.now = t.max(now);
                    self.tester.handle_timeout(self.now);
                    self.ep.handle_timeout(self.now);
                    self.bus.handle_timeout(self.now);
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return;
                }
            }
        }
    }

    /// A request; waits P2 (then P2* after each responsePending) and retries once on silence.
    fn ask(&mut self, req: &[u8]) -> Vec<u8> {
        for _attempt in 0..3 {
            self.tester.send(self.now, req).unwrap();
            let mut deadline = self.now + 1_000_000;
            loop {
                self.run_until(deadline);
                let Some(r) = self.inbox.pop_front() else {
                    break; // timeout: send again
                };
                if r == codec::negative(req[0], codec::Nrc::ResponsePending) {
                    deadline = self.now + 5_000_000;
                    continue;
                }
                return r;
            }
        }
        panic!("no answer to {req:02x?}");
    }

    fn positive(&mut self, req: &[u8]) -> Vec<u8> {
        let r = self.ask(req);
        match codec::parse_reply(&r).unwrap() {
            Reply::Positive { sid, params } if sid == req[0] => params.to_vec(),
            other => panic!("{req:02x?}: {other:?}"),
        }
    }

    /// The whole programming sequence; returns the simulated time it took (µs).
    fn program(&mut self, image: &[u8]) -> u64 {
        let start = self.now;
        self.positive(&[0x10, 0x02]);
        let seed = self.positive(&[0x27, 0x01]);
        let key = compute_key(&default_secrets()[&1], &seed[1..]);
        let mut req = vec![0x27, 0x02];
        req.extend_from_slice(&key);
        self.positive(&req);
        let st = StagingRecord::decode(&self.positive(&[0x22, 0xFD, 0x03])[2..]).unwrap();
        let mut erase = vec![0x31, 0x01, 0xFF, 0x00];
        erase.extend(codec::encode_memory(MemoryRange {
            address: st.address,
            size: st.size,
        }));
        assert_eq!(self.positive(&erase), [0x01, 0xFF, 0x00, 0x00]);
        let mut rd = vec![0x34, 0x00];
        rd.extend(codec::encode_memory(MemoryRange {
            address: st.address,
            size: image.len() as u32,
        }));
        let r = self.positive(&rd);
        let max = u16::from_be_bytes([r[1], r[2]]) as usize;
        for (i, chunk) in image.chunks(max - 2).enumerate() {
            let seq = (i + 1) as u8;
            let mut td = vec![0x36, seq];
            td.extend_from_slice(chunk);
            assert_eq!(self.positive(&td), [seq]);
        }
        self.positive(&[0x37]);
        assert_eq!(
            self.positive(&[0x31, 0x01, 0xFF, 0x01]),
            [0x01, 0xFF, 0x01, 0x00]
        );
        self.now - start
    }

    fn boot_status(&mut self) -> BootStatusRecord {
        BootStatusRecord::decode(&self.positive(&[0x22, 0xFD, 0x00])[2..]).unwrap()
    }
}

fn v2() -> Vec<u8> {
    ImageBuilder::new(Version::new(2, 0, 0), vec![2; 40_000])
        .security_counter(2)
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 100,
        })
        .sign(&dev_key("oem"))
}

#[test]
fn programming_over_classic_and_fd_can_takes_bus_time() {
    let img = v2();
    let mut times = Vec::new();
    for (bus, fd) in [
        (BusConfig::classic(500_000), false),
        (BusConfig::fd(500_000, 2_000_000), true),
    ] {
        let mut b = CanBench::new(bus, fd);
        let took = b.program(&img);
        let busy_us = b.bus.stats().busy_ns / 1000;
        // The bus carried at least the image: on classic CAN, 7 bytes per ~130-bit frame.
        if !fd {
            let min_us = (img.len() as u64 / 7) * 111 * 2;
            assert!(busy_us > min_us, "bus busy {busy_us} µs < {min_us}");
        }
        assert!(took > busy_us, "the sequence includes the bus time");
        b.positive(&[0x11, 0x01]);
        b.run_until(b.now + 3_000_000);
        let s = b.boot_status();
        assert_eq!(s.version, Some(Version::new(2, 0, 0)));
        assert_eq!(b.transport_errors, 0);
        println!(
            "{}: {} bytes programmed in {:.2} s simulated (bus busy {:.2} s)",
            if fd { "CAN FD 500k/2M" } else { "classic 500k" },
            img.len(),
            took as f64 / 1e6,
            busy_us as f64 / 1e6
        );
        times.push((took, busy_us));
    }
    // Erase and programming time are the same; the bus time is not.
    assert!(times[1].0 < times[0].0, "{times:?}");
    assert!(
        times[1].1 * 4 < times[0].1,
        "FD moves the bytes 4× faster: {times:?}"
    );
}

#[test]
fn a_frame_lost_on_the_bus_costs_a_retry_not_the_update() {
    let img = v2();
    let mut b = CanBench::new(BusConfig::classic(500_000), false);
    // The 300th consecutive frame from the tester disappears.
    b.bus
        .add_fault(FaultRule::new(Fault::Drop).on_id(0x7E0).nth(300));
    b.program(&img);
    assert_eq!(b.bus.fault_counts(), vec![1], "the fault fired");
    assert!(
        b.transport_errors >= 1,
        "the ECU saw the incomplete message"
    );
    b.positive(&[0x11, 0x01]);
    b.run_until(b.now + 3_000_000);
    assert_eq!(b.boot_status().version, Some(Version::new(2, 0, 0)));
}
