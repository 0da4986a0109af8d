//! The UDS server, service by service: positive and negative responses spelled as hex bytes,
//! the programming sequence end to end, and arbitrary requests that must never panic.

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::dtc::Dtc;
use ecu_sim::ecu::Ecu;
use ecu_sim::event::EventKind;
use ecu_sim::flash::{Flash, Geometry};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::uds::codec::{BootStatusRecord, SlotRecord, StagingRecord};
use ecu_sim::proto::uds::security::{compute_key, default_secrets};
use ecu_sim::proto::uds::server::{
    Addressing, DiagServer, Incoming, Response, ServerConfig, TesterId,
};
use hex_literal::hex;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn image(major: u8, counter: u32, len: usize) -> Vec<u8> {
    ImageBuilder::new(Version::new(major, 0, 0), vec![0xA0 | major; len])
        .security_counter(counter)
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 200,
        })
        .sign(&dev_key("oem"))
}

/// An ECU on a test bench: the tester's clock follows the responses.
struct Bench {
    ecu: Ecu,
    server: DiagServer,
    now: u64,
    /// Who sends the next requests.
    tester: TesterId,
    /// The next request is held that long before the server starts on it.
    hold_next: u64,
    /// The next request took that long to arrive (a segmented ISO-TP request).
    receiving_next: u64,
}

impl Bench {
    fn new(mode: BootMode) -> Bench {
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let boot = BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys,
        };
        let geometry = Geometry::uniform(4096, 3 + 2 * 8 + 1, 8).unwrap();
        let ecu = Ecu::factory(geometry, mode, &image(1, 1, 9000), boot, 1).unwrap();
        let now = ecu.now_us();
        Bench {
            ecu,
            server: DiagServer::new(ServerConfig::default()),
            now,
            tester: TesterId::LOCAL,
            hold_next: 0,
            receiving_next: 0,
        }
    }

    /// Send a request; return every response, and move the clock to the last one.
    fn send(&mut self, req: &[u8], addressing: Addressing) -> Vec<Response> {
        let incoming = Incoming::new(addressing)
            .from(self.tester)
            .held(std::mem::take(&mut self.hold_next))
            .received_over(std::mem::take(&mut self.receiving_next));
        self.server.handle(&mut self.ecu, self.now, req, incoming);
        let out: Vec<Response> = std::iter::from_fn(|| self.server.poll_transmit()).collect();
        if let Some(last) = out.last() {
            self.now = self.now.max(last.at_us);
        }
        out
    }

    /// The single (final) response to a request, `None` if there is none.
    fn ask(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        let mut out = self.send(req, Addressing::Physical);
        assert!(out.len() <= 1, "more than one response: {out:?}");
        out.pop().map(|r| r.bytes)
    }

    fn expect(&mut self, req: &[u8], resp: &[u8]) {
        assert_eq!(
            self.ask(req).as_deref(),
            Some(resp),
            "request {}",
            hex_str(req)
        );
    }

    fn wait(&mut self, us: u64) {
        self.now += us;
    }

    fn unlock(&mut self, level: u8) {
        let seed = self.ask(&[0x27, level]).unwrap();
        assert_eq!(seed[..2], [0x67, level]);
        let key = compute_key(&default_secrets()[&level], &seed[2..]);
        let mut req = vec![0x27, level + 1];
        req.extend_from_slice(&key);
        self.expect(&req, &[0x67, level + 1]);
    }

    fn programming(&mut self) {
        self.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
        self.unlock(1);
    }

    fn staging(&mut self) -> StagingRecord {
        let r = self.ask(&hex!("22 fd 03")).unwrap();
        assert_eq!(r[..3], hex!("62 fd 03"));
        StagingRecord::decode(&r[3..]).unwrap()
    }

    fn boot_status(&mut self) -> BootStatusRecord {
        let r = self.ask(&hex!("22 fd 00")).unwrap();
        assert_eq!(r[..3], hex!("62 fd 00"));
        BootStatusRecord::decode(&r[3..]).unwrap()
    }

    fn erase(&mut self, address: u32, size: u32) -> Vec<Response> {
        let mut req = hex!("31 01 ff 00 44").to_vec();
        req.extend_from_slice(&address.to_be_bytes());
        req.extend_from_slice(&size.to_be_bytes());
        self.send(&req, Addressing::Physical)
    }

    fn request_download(&mut self, address: u32, size: u32) -> Option<Vec<u8>> {
        let mut req = hex!("34 00 44").to_vec();
        req.extend_from_slice(&address.to_be_bytes());
        req.extend_from_slice(&size.to_be_bytes());
        self.ask(&req)
    }

    fn transfer(&mut self, seq: u8, data: &[u8]) -> Option<Vec<u8>> {
        let mut req = vec![0x36, seq];
        req.extend_from_slice(data);
        self.ask(&req)
    }

    /// Erase, download in `block`-byte blocks, exit. Returns the staging address.
    fn download(&mut self, img: &[u8], block: usize) -> u32 {
        let st = self.staging();
        let last = self.erase(st.address, st.size).pop().unwrap();
        assert_eq!(last.bytes, hex!("71 01 ff 00 00"));
        self.request_download(st.address, img.len() as u32).unwrap();
        for (i, chunk) in img.chunks(block).enumerate() {
            let seq = (i + 1) as u8;
            assert_eq!(self.transfer(seq, chunk), Some(vec![0x76, seq]));
        }
        self.expect(&hex!("37"), &hex!("77"));
        st.address
    }
}

fn hex_str(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn session_control_and_tester_present() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("10 01"), &hex!("50 01 00 32 01 f4"));
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 03"));
    assert_eq!(b.ask(&hex!("10 82")), None, "suppressed positive response");
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    b.expect(&hex!("10 04"), &hex!("7f 10 12"));
    b.expect(&hex!("10"), &hex!("7f 10 13"));
    b.expect(&hex!("10 01 00"), &hex!("7f 10 13"));
    b.expect(&hex!("3e 00"), &hex!("7e 00"));
    assert_eq!(b.ask(&hex!("3e 80")), None);
    b.expect(&hex!("3e 01"), &hex!("7f 3e 12"));
    b.expect(&hex!("3e 00 00"), &hex!("7f 3e 13"));
    // S3: TesterPresent keeps the session; silence ends it.
    for _ in 0..4 {
        b.wait(3_000_000);
        assert_eq!(b.ask(&hex!("3e 80")), None);
    }
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    b.wait(5_100_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
}

#[test]
fn unknown_services_and_functional_addressing() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("23 00"), &hex!("7f 23 11"));
    b.expect(&hex!("34 00 44 00 00 00 00 00 00 00 10"), &hex!("7f 34 7f"));
    b.expect(&hex!("27 01"), &hex!("7f 27 7f"));
    assert!(b.send(&hex!("23 00"), Addressing::Functional).is_empty());
    assert!(b.send(&hex!("27 01"), Addressing::Functional).is_empty());
    assert!(b.send(&hex!("3e 80"), Addressing::Functional).is_empty());
    let r = b.send(&hex!("3e 00"), Addressing::Functional);
    assert_eq!(r[0].bytes, hex!("7e 00"));
    // Not sent functionally but sent physically: a length error still is.
    let r = b.send(&hex!("3e"), Addressing::Functional);
    assert_eq!(r[0].bytes, hex!("7f 3e 13"));
}

#[test]
fn security_access_seed_key_attempts_and_delay() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    b.expect(&hex!("27 01"), &hex!("7f 27 7e"));
    b.expect(&hex!("27 05"), &hex!("7f 27 12"));
    b.expect(&hex!("27 04 00 00 00 00"), &hex!("7f 27 24"));
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    let seed = b.ask(&hex!("27 01")).unwrap();
    assert_eq!(seed.len(), 6);
    assert_ne!(seed[2..], [0, 0, 0, 0]);
    b.expect(&hex!("27 02 00 00"), &hex!("7f 27 13"));
    // The seed was not consumed by a malformed key; two wrong keys, then the lockout.
    b.expect(&hex!("27 02 de ad be ef"), &hex!("7f 27 35"));
    b.ask(&hex!("27 01")).unwrap();
    b.expect(&hex!("27 02 de ad be ef"), &hex!("7f 27 35"));
    b.ask(&hex!("27 01")).unwrap();
    b.expect(&hex!("27 02 de ad be ef"), &hex!("7f 27 36"));
    b.expect(&hex!("27 01"), &hex!("7f 27 37"));
    b.wait(5_000_000);
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    b.expect(&hex!("27 01"), &hex!("7f 27 37"));
    b.wait(5_100_000);
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    b.unlock(1);
    // Unlocked: the seed is zero.
    b.expect(&hex!("27 01"), &hex!("67 01 00 00 00 00"));
    // A session change locks again.
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    b.expect(&hex!("31 01 02 02"), &hex!("7f 31 33"));
    let kinds: Vec<_> = b.ecu.drain_events().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::SecurityKeyRejected {
        level: 1,
        attempts: 3,
        locked_out: true
    }));
    assert!(kinds.contains(&EventKind::SecurityUnlocked { level: 1 }));
}

#[test]
fn read_and_write_data_by_identifier() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("22 f1 89"), b"\x62\xf1\x891.0.0");
    b.expect(
        &hex!("22 f1 87 f1 8c"),
        b"\x62\xf1\x87ECUSIM-0001\xf1\x8cSIM0000000001",
    );
    b.expect(&hex!("22 f1 90"), b"\x62\xf1\x90WSIM0000000000001");
    // Unknown DIDs are left out; only unknown ones is out of range.
    b.expect(&hex!("22 12 34 f1 86"), &hex!("62 f1 86 01"));
    b.expect(&hex!("22 12 34"), &hex!("7f 22 31"));
    b.expect(&hex!("22 f1"), &hex!("7f 22 13"));
    b.expect(&hex!("22 f1 86 f1"), &hex!("7f 22 13"));
    let r = b.ask(&hex!("22 f1 80")).unwrap();
    assert!(r.starts_with(b"\x62\xf1\x80ECU-SIM BOOT "));

    let s = b.boot_status();
    assert_eq!((s.slot, s.version.unwrap().major), (0, 1));
    assert!(s.confirmed && !s.on_probation);
    assert_eq!((s.boot_count, s.outcome), (1, 1));
    let r = b.ask(&hex!("22 fd 01 fd 02")).unwrap();
    let primary = SlotRecord::decode(&r[3..13]).unwrap();
    assert_eq!(r[13..15], hex!("fd 02"));
    let secondary = SlotRecord::decode(&r[15..]).unwrap();
    assert_eq!(primary.image, 1);
    assert_ne!(primary.trailer & SlotRecord::TRAILER_IMAGE_OK, 0);
    assert_eq!((secondary.version, secondary.image), (None, 0));
    let st = b.staging();
    let area = b.ecu.config().layout.secondary.clone();
    assert_eq!(st.address, area.region.offset);
    // The image sectors and the trailer sector: what `imgtool sign --pad --slot-size` takes.
    assert_eq!(st.size, area.image_capacity() + area.trailer_size);
    assert_eq!((st.erase_sector, st.write_align), (4096, 8));
    b.expect(&hex!("22 fd 05"), &hex!("62 fd 05 00 00 00 01"));
    b.expect(&hex!("22 fd 04"), &hex!("62 fd 04"));

    let write_vin = b"\x2e\xf1\x90WSIM0000000000042";
    b.expect(write_vin, &hex!("7f 2e 7f"));
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    b.expect(write_vin, &hex!("7f 2e 33"));
    b.unlock(3);
    b.expect(write_vin, &hex!("6e f1 90"));
    b.expect(&hex!("2e f1 90 41"), &hex!("7f 2e 13"));
    b.expect(b"\x2e\xf1\x87ABC", &hex!("7f 2e 31"));
    b.expect(&hex!("2e f1"), &hex!("7f 2e 13"));
    // The VIN survives a reset.
    b.expect(&hex!("11 01"), &hex!("51 01"));
    b.wait(1_000_000);
    b.expect(&hex!("22 f1 90"), b"\x62\xf1\x90WSIM0000000000042");
}

#[test]
fn programming_sequence_installs_a_test_image_that_confirms() {
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
        let mut b = Bench::new(mode);
        b.programming();
        let img = image(2, 2, 20_000);
        let st = b.staging();
        // Erasing 8 sectors takes ~393 ms: responsePending first, then the result.
        let t0 = b.now;
        let erase = b.erase(st.address, st.size);
        assert_eq!(erase.len(), 2, "{erase:?}");
        assert_eq!(erase[0].bytes, hex!("7f 31 78"));
        assert_eq!(erase[1].bytes, hex!("71 01 ff 00 00"));
        assert!(erase[0].at_us - t0 <= 50_000, "pending within P2");
        assert!(erase[1].at_us - t0 > 300_000, "erase time scales with size");
        assert_eq!(
            b.request_download(st.address, img.len() as u32),
            Some(hex!("74 20 10 02").to_vec())
        );
        for (i, chunk) in img.chunks(4096).enumerate() {
            let seq = (i + 1) as u8;
            assert_eq!(b.transfer(seq, chunk), Some(vec![0x76, seq]));
        }
        b.expect(&hex!("37"), &hex!("77"));
        let mut check = hex!("31 01 02 02").to_vec();
        check.extend_from_slice(&Sha256::digest(&img));
        b.expect(&check, &hex!("71 01 02 02 00"));
        check[10] ^= 1;
        b.expect(&check, &hex!("71 01 02 02 01"));
        b.expect(&hex!("31 03 02 02"), &hex!("71 03 02 02 01"));
        let r = b.send(&hex!("31 01 ff 01"), Addressing::Physical);
        assert_eq!(r.last().unwrap().bytes, hex!("71 01 ff 01 00"), "{mode}");
        b.expect(&hex!("31 03 ff 01"), &hex!("71 03 ff 01 00"));
        let r = b.ask(&hex!("22 fd 02")).unwrap();
        let staged = SlotRecord::decode(&r[3..]).unwrap();
        if mode == BootMode::SwapScratch {
            assert_eq!(staged.image, 1);
            assert_eq!(staged.version.unwrap().major, 2);
            assert_ne!(staged.trailer & SlotRecord::TRAILER_TEST, 0);
        }
        b.expect(&hex!("11 01"), &hex!("51 01"));
        // Booting (the swap) takes a while: the ECU does not answer meanwhile.
        assert_eq!(b.ask(&hex!("3e 00")), None);
        b.wait(3_000_000);
        b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
        let s = b.boot_status();
        assert_eq!(s.version.unwrap().major, 2, "{mode}");
        assert_eq!(s.outcome, 2);
        b.wait(300_000);
        let s = b.boot_status();
        assert!(s.confirmed && !s.on_probation, "{mode}: {s:?}");
        if mode == BootMode::SwapScratch {
            // The README's example, byte for byte.
            b.expect(
                &hex!("22 fd 00"),
                &hex!("62 fd 00 00 02 00 00 00 00 00 00 00 02 01 00 00 00 02 02"),
            );
        }
        b.expect(&hex!("22 f1 89"), b"\x62\xf1\x892.0.0");
    }
}

#[test]
fn flashing_needs_programming_session_and_security() {
    let mut b = Bench::new(BootMode::SwapScratch);
    for req in [
        &hex!("34 00 44 00 00 00 00 00 00 00 10")[..],
        &hex!("36 01 00"),
        &hex!("37"),
        &hex!("31 01 ff 00 44 00 00 00 00 00 00 00 10"),
    ] {
        b.expect(req, &[0x7f, req[0], 0x7f]);
    }
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    b.expect(&hex!("34 00 44 00 00 00 00 00 00 00 10"), &hex!("7f 34 7f"));
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    for req in [
        &hex!("34 00 44 00 00 00 00 00 00 00 10")[..],
        &hex!("36 01 00"),
        &hex!("37"),
        &hex!("31 01 ff 00 44 00 00 00 00 00 00 00 10"),
        &hex!("31 01 ff 01"),
    ] {
        b.expect(req, &[0x7f, req[0], 0x33]);
    }
}

#[test]
fn download_refusals() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.programming();
    let st = b.staging();
    b.expect(&hex!("36 01 00"), &hex!("7f 36 24"));
    b.expect(&hex!("37"), &hex!("7f 37 24"));
    b.expect(&hex!("31 01 ff 01"), &hex!("7f 31 24"));
    b.expect(&hex!("31 03 ff 00"), &hex!("7f 31 24"));
    b.expect(&hex!("31 02 ff 00"), &hex!("7f 31 12"));
    b.expect(&hex!("31 01 12 34"), &hex!("7f 31 31"));
    b.expect(&hex!("31 01 ff"), &hex!("7f 31 13"));
    // Not erased yet.
    assert_eq!(
        b.request_download(st.address, 100),
        Some(hex!("7f 34 70").to_vec())
    );
    // Outside the staging area: the running image, and past its end.
    assert_eq!(b.request_download(0, 100), Some(hex!("7f 34 31").to_vec()));
    assert_eq!(
        b.request_download(st.address + st.size - 10, 100),
        Some(hex!("7f 34 31").to_vec())
    );
    let r = b.erase(0, 4096);
    assert_eq!(r.last().unwrap().bytes, hex!("7f 31 31"));
    b.erase(st.address, 8192);
    // Erased, but only 8 KiB of it.
    assert_eq!(
        b.request_download(st.address, 10_000),
        Some(hex!("7f 34 70").to_vec())
    );
    b.expect(&hex!("34 11 44 00 00 00 00 00 00 00 10"), &hex!("7f 34 31"));
    b.expect(
        &hex!("34 00 45 00 00 00 00 00 00 00 00 10"),
        &hex!("7f 34 31"),
    );
    b.expect(&hex!("34 00 44 00 00"), &hex!("7f 34 13"));
    assert_eq!(
        b.request_download(st.address, 600),
        Some(hex!("74 20 10 02").to_vec())
    );
    assert_eq!(
        b.request_download(st.address, 600),
        Some(hex!("7f 34 22").to_vec())
    );
    assert_eq!(b.transfer(2, &[1; 100]), Some(hex!("7f 36 73").to_vec()));
    assert_eq!(b.transfer(1, &[1; 100]), Some(hex!("76 01").to_vec()));
    // The tester lost our response and repeats block 1: accepted, not written twice.
    let writes = b.ecu.flash().stats().writes;
    assert_eq!(b.transfer(1, &[1; 100]), Some(hex!("76 01").to_vec()));
    assert_eq!(b.ecu.flash().stats().writes, writes);
    b.expect(&hex!("37"), &hex!("7f 37 24"));
    assert_eq!(b.transfer(2, &[2; 501]), Some(hex!("7f 36 31").to_vec()));
    assert_eq!(b.transfer(2, &[]), Some(hex!("7f 36 13").to_vec()));
    let mut too_long = vec![0x36, 0x02];
    too_long.extend_from_slice(&[0; 4097]);
    assert_eq!(b.ask(&too_long), Some(hex!("7f 36 13").to_vec()));
    assert_eq!(b.transfer(2, &[2; 500]), Some(hex!("76 02").to_vec()));
    b.expect(&hex!("37"), &hex!("77"));
    b.expect(&hex!("37"), &hex!("7f 37 24"));
    // Not an image: the check names the failed check (format) and records a DTC.
    b.expect(&hex!("31 01 ff 01"), &hex!("71 01 ff 01 01 01"));
    b.expect(&hex!("31 01 ff 01 07"), &hex!("7f 31 31"));
    assert!(b.ecu.dtcs().contains(Dtc::CheckFailed));
}

#[test]
fn block_counter_wraps_and_odd_block_sizes_are_programmed_correctly() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.programming();
    // 300 blocks of 37 bytes: the counter wraps 0xff -> 0x00, and no block is write-aligned.
    let img = image(3, 3, 11_000);
    assert!(img.len() / 37 > 256);
    let st = b.staging();
    b.erase(st.address, st.size);
    b.request_download(st.address, img.len() as u32).unwrap();
    for (i, chunk) in img.chunks(37).enumerate() {
        let seq = (i + 1) as u8;
        assert_eq!(b.transfer(seq, chunk), Some(vec![0x76, seq]), "block {i}");
    }
    b.expect(&hex!("37"), &hex!("77"));
    let r = b.send(&hex!("31 01 ff 01"), Addressing::Physical);
    assert_eq!(r.last().unwrap().bytes, hex!("71 01 ff 01 00"));
}

#[test]
fn bad_images_are_refused_with_the_failed_check() {
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "hash",
            {
                let mut i = image(2, 2, 5000);
                i[600] ^= 0x01;
                i
            },
            0x02,
        ),
        (
            "unsigned",
            ImageBuilder::new(Version::new(2, 0, 0), vec![1; 5000]).build_unsigned(),
            0x03,
        ),
        (
            "foreign key",
            ImageBuilder::new(Version::new(2, 0, 0), vec![1; 5000]).sign(&dev_key("rogue")),
            0x04,
        ),
        ("downgrade", image(2, 0, 5000), 0x05),
    ];
    for (name, img, code) in cases {
        let mut b = Bench::new(BootMode::SwapScratch);
        b.programming();
        b.download(&img, 4096);
        let r = b.send(&hex!("31 01 ff 01"), Addressing::Physical);
        assert_eq!(
            r.last().unwrap().bytes,
            [0x71, 0x01, 0xff, 0x01, 0x01, code],
            "{name}"
        );
        b.expect(&hex!("19 02 ff"), &hex!("59 02 0b d0 05 00 0b"));
        // Nothing was requested: a reset boots the old image.
        b.expect(&hex!("11 01"), &hex!("51 01"));
        b.wait(1_000_000);
        assert_eq!(b.boot_status().version.unwrap().major, 1, "{name}");
    }
}

#[test]
fn dtcs_read_clear_and_control() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("19 01 ff"), &hex!("59 01 0b 01 00 00"));
    b.expect(&hex!("19 02 ff"), &hex!("59 02 0b"));
    // A never-confirming test image is reverted: D0 02 00.
    b.programming();
    let img = ImageBuilder::new(Version::new(2, 0, 0), vec![2; 5000])
        .security_counter(2)
        .behaviour(Behaviour::NeverConfirm)
        .sign(&dev_key("oem"));
    b.download(&img, 4096);
    let r = b.send(&hex!("31 01 ff 01"), Addressing::Physical);
    assert_eq!(r.last().unwrap().bytes, hex!("71 01 ff 01 00"));
    b.expect(&hex!("11 01"), &hex!("51 01"));
    b.wait(2_000_000);
    assert_eq!(b.boot_status().version.unwrap().major, 2);
    b.expect(&hex!("11 01"), &hex!("51 01"));
    b.wait(2_000_000);
    let s = b.boot_status();
    assert_eq!((s.version.unwrap().major, s.outcome), (1, 4));
    b.expect(
        &hex!("22 fd 04"),
        b"\x62\xfd\x04reverted: not confirmed after 1 boot attempt(s)",
    );
    // No request survives the revert: a restarted update agent must not reset into it again.
    let r = b.ask(&hex!("22 fd 02")).unwrap();
    let staged = SlotRecord::decode(&r[3..]).unwrap();
    assert_eq!(
        staged.trailer & (SlotRecord::TRAILER_TEST | SlotRecord::TRAILER_PERMANENT),
        0,
        "{staged:?}"
    );
    b.expect(&hex!("19 01 ff"), &hex!("59 01 0b 01 00 01"));
    b.expect(&hex!("19 02 ff"), &hex!("59 02 0b d0 02 00 0b"));
    b.expect(&hex!("19 02 02"), &hex!("59 02 0b d0 02 00 0b"));
    b.expect(&hex!("19 03 ff"), &hex!("7f 19 12"));
    b.expect(&hex!("19 02"), &hex!("7f 19 13"));
    let supported = b.ask(&hex!("19 0a")).unwrap();
    assert_eq!(supported.len(), 3 + 4 * Dtc::ALL.len());
    b.expect(&hex!("14 12 34 56"), &hex!("7f 14 31"));
    b.expect(&hex!("14 ff ff"), &hex!("7f 14 13"));
    b.expect(&hex!("14 ff ff ff"), &hex!("54"));
    b.expect(&hex!("19 02 ff"), &hex!("59 02 0b"));
    // ControlDTCSetting off: a new fault is not stored.
    b.expect(&hex!("85 02"), &hex!("7f 85 7f"));
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    b.expect(&hex!("85 02"), &hex!("c5 02"));
    b.expect(&hex!("85 03"), &hex!("7f 85 12"));
    assert_eq!(b.ask(&hex!("85 81")), None);
    b.expect(&hex!("28 03 01"), &hex!("68 03"));
    b.expect(&hex!("28 00 00"), &hex!("7f 28 31"));
    b.expect(&hex!("28 04 01"), &hex!("7f 28 12"));
    b.expect(&hex!("28 00"), &hex!("7f 28 13"));
}

#[test]
fn ecu_reset_kinds_and_silence_while_booting() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.expect(&hex!("10 03"), &hex!("50 03 00 32 01 f4"));
    let boots = b.ecu.boot_count();
    b.expect(&hex!("11 03"), &hex!("51 03"));
    assert_eq!(b.ecu.boot_count(), boots + 1);
    assert!(b.ecu.is_powered());
    b.wait(100_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    assert_eq!(b.ask(&hex!("11 81")), None);
    assert_eq!(b.ecu.boot_count(), boots + 2);
    b.wait(100_000);
    b.expect(&hex!("11 04"), &hex!("7f 11 12"));
    b.expect(&hex!("11 01 00"), &hex!("7f 11 13"));
    b.wait(100_000);
    b.expect(&hex!("11 02"), &hex!("51 02"));
    let kinds: Vec<_> = b.ecu.drain_events().into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EventKind::PowerOff),
        "key off/on cycles power"
    );
    // A powered-off ECU does not answer.
    b.ecu.power_off();
    b.wait(100_000);
    assert_eq!(b.ask(&hex!("3e 00")), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Arbitrary requests in any session never panic, and every answer is well formed:
    /// a positive response to the request's SID or `7F SID NRC`.
    #[test]
    fn arbitrary_requests_never_panic(
        session in 1u8..=3,
        unlock in any::<bool>(),
        requests in proptest::collection::vec(
            (prop_oneof![
                Just(0x10u8), Just(0x11), Just(0x14), Just(0x19), Just(0x22), Just(0x27),
                Just(0x28), Just(0x2e), Just(0x31), Just(0x34), Just(0x36), Just(0x37),
                Just(0x3e), Just(0x85), any::<u8>()
            ], proptest::collection::vec(any::<u8>(), 0..40)),
            1..12,
        ),
    ) {
        let mut b = Bench::new(BootMode::SwapScratch);
        b.ask(&[0x10, session]);
        if unlock && session == 2 {
            b.unlock(1);
        }
        for (sid, params) in requests {
            let mut req = vec![sid];
            req.extend_from_slice(&params);
            for r in b.send(&req, Addressing::Physical) {
                let ok = r.bytes.len() == 3 && r.bytes[0] == 0x7f && r.bytes[1] == sid
                    || r.bytes.first() == Some(&sid.wrapping_add(0x40));
                prop_assert!(ok, "request {} answered {}", hex_str(&req), hex_str(&r.bytes));
            }
            b.wait(10_000);
        }
    }
}

/// ISO 14229-2: the S3 timer does not run while a request is in progress. A request held in
/// front of the server for 8 s (a storm of four responsePending, 2 s apart) is answered in
/// the programming session it arrived in; S3 restarts at its final response.
#[test]
fn s3_does_not_run_while_a_request_is_in_progress() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.programming();
    let st = b.staging();
    b.wait(1_000_000);
    b.hold_next = 4 * 2_000_000;
    let out = b.erase(st.address, 4096);
    assert_eq!(
        out.last().map(|r| r.bytes.clone()),
        Some(hex!("71 01 ff 00 00").to_vec()),
        "{out:?}"
    );
    // 4.9 s after the final response: still in the session.
    b.wait(4_900_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    // A long request of the server's own (an erase of the whole area) does not end it either.
    let out = b.erase(st.address, st.size);
    assert_eq!(out.last().unwrap().bytes, hex!("71 01 ff 00 00"));
    b.wait(4_900_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    // Silence does.
    b.wait(5_100_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
}

/// ISO 14229-2: S3 stops when a request begins to arrive. A segmented request whose first
/// frame came 1 s after the last response and whose last frame 5 s later (a slow sender) is
/// still in the programming session; a request arriving 6 s after the last response, all at
/// once, is not.
#[test]
fn s3_is_checked_when_a_segmented_request_begins_to_arrive() {
    let mut b = Bench::new(BootMode::SwapScratch);
    b.programming();
    b.wait(6_000_000);
    b.receiving_next = 5_000_000;
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    b.wait(6_000_000);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
}

/// Session, security and download belong to the tester that made them.
#[test]
fn each_tester_has_its_own_session_security_and_download() {
    let (a, other) = (TesterId(1), TesterId(2));
    let mut b = Bench::new(BootMode::SwapScratch);
    b.tester = a;
    b.programming();
    let st = b.staging();
    // Another tester is in the default session, locked: it cannot erase what A unlocked.
    b.tester = other;
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    let out = b.erase(st.address, 4096);
    assert_eq!(out.last().unwrap().bytes, hex!("7f 31 7f"));
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    let out = b.erase(st.address, 4096);
    assert_eq!(out.last().unwrap().bytes, hex!("7f 31 33"));
    // A's session and security are untouched; it opens a download.
    b.tester = a;
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
    assert_eq!(
        b.erase(st.address, 4096).last().unwrap().bytes,
        hex!("71 01 ff 00 00")
    );
    assert_eq!(
        b.request_download(st.address, 16),
        Some(hex!("74 20 10 02").to_vec())
    );
    // The other tester has no download to add to.
    b.tester = other;
    b.unlock(1);
    assert_eq!(b.transfer(1, &[0; 16]), Some(hex!("7f 36 24").to_vec()));
    // A goes away: its download and session end with it; the same id starts afresh.
    b.server.tester_gone(&mut b.ecu, a);
    b.tester = a;
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    assert_eq!(b.transfer(1, &[0; 16]), Some(hex!("7f 36 33").to_vec()));
    b.unlock(1);
    assert_eq!(b.transfer(1, &[0; 16]), Some(hex!("7f 36 24").to_vec()));
    // The other tester kept its own unlock.
    b.tester = other;
    assert_eq!(b.server.unlocked(other), Some(1));
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
}

/// One tester's writes to the staging area invalidate what another erased or downloaded.
#[test]
fn one_testers_flash_work_invalidates_another_testers_download() {
    let (a, other) = (TesterId(1), TesterId(2));
    let mut b = Bench::new(BootMode::SwapScratch);
    b.tester = a;
    b.programming();
    let st = b.staging();
    let erased = |b: &mut Bench| b.erase(st.address, 4096).last().unwrap().bytes.clone();
    assert_eq!(erased(&mut b), hex!("71 01 ff 00 00"));
    assert_eq!(
        b.request_download(st.address, 16),
        Some(hex!("74 20 10 02").to_vec())
    );
    // An erase by the other tester wipes A's open download.
    b.tester = other;
    b.programming();
    assert_eq!(erased(&mut b), hex!("71 01 ff 00 00"));
    b.tester = a;
    assert_eq!(b.transfer(1, &[0; 16]), Some(hex!("7f 36 24").to_vec()));
    // A download by the other tester: what A erased is being written.
    assert_eq!(erased(&mut b), hex!("71 01 ff 00 00"));
    b.tester = other;
    assert_eq!(erased(&mut b), hex!("71 01 ff 00 00"));
    assert_eq!(
        b.request_download(st.address, 16),
        Some(hex!("74 20 10 02").to_vec())
    );
    b.tester = a;
    assert_eq!(
        b.request_download(st.address, 16),
        Some(hex!("7f 34 70").to_vec())
    );
}
