//! MCUboot's image trailer against MCUboot's own `imgtool` (the project's `.venv`;
//! `HIL_IMGTOOL` overrides the path): an image signed with `imgtool sign --pad` (a test
//! upgrade) or `--pad --confirm` (permanent) carries the trailer at the end of the slot; our
//! parser recognises it (magic for BOOT_MAX_ALIGN 8, 16 and 32, image_ok), and written raw
//! into the staging slot over UDS (RequestDownload/TransferData, no check-programming-
//! dependencies routine) it is installed at the next reset in every strategy, as MCUboot
//! would.
//!
//! Without imgtool these tests fail (they never skip): run `ci/install.sh`.

mod common;

use common::run;
use std::path::Path;

use ecu_sim::boot::{self, BootConfig, BootMode, Flag, Layout, Slot, SwapType};
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::{Flash, Geometry, SimFlash};
use ecu_sim::image::{Keyring, Version};
use ecu_sim::proto::uds::codec::StagingRecord;
use ecu_sim::proto::uds::security::{compute_key, default_secrets};
use ecu_sim::proto::uds::server::{Addressing, DiagServer, Incoming, ServerConfig};

/// A fresh ed25519 key at `dir/key.pem` and a keyring with its public half.
fn key(dir: &Path) -> Keyring {
    run(&["keygen", "-k", "key.pem", "-t", "ed25519"], dir);
    let pem = run(&["getpub", "-k", "key.pem", "-e", "pem"], dir);
    let mut keys = Keyring::new();
    keys.add_pem(&pem).unwrap();
    keys
}

/// `imgtool sign --pad --slot-size SLOT --align ALIGN [--confirm]` of a payload.
fn sign_padded(dir: &Path, version: &str, slot: u32, align: usize, confirm: bool) -> Vec<u8> {
    let tag = format!("{version}-{slot}-{align}-{confirm}");
    let input = dir.join(format!("in-{tag}.bin"));
    let output = dir.join(format!("out-{tag}.bin"));
    let payload: Vec<u8> = (0..12_000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&input, payload).unwrap();
    let (slot, align) = (format!("{slot:#x}"), align.to_string());
    let mut args = vec![
        "sign",
        "-k",
        "key.pem",
        "--header-size",
        "0x200",
        "--pad-header",
        "--align",
        &align,
        "--version",
        version,
        "--slot-size",
        &slot,
        "--security-counter",
        "auto",
        "--pad",
    ];
    if confirm {
        args.push("--confirm");
    }
    args.push(input.to_str().unwrap());
    args.push(output.to_str().unwrap());
    run(&args, dir);
    std::fs::read(output).unwrap()
}

fn geometry(mode: BootMode, align: usize) -> Geometry {
    let (scratch, p, s) = mode.extra_sectors();
    Geometry::uniform(4096, 3 + 2 * 8 + scratch + p + s, align).unwrap()
}

/// Bytes from the staging address to the end of the staging slot.
fn staging_slot_size(layout: &Layout, slot: Slot) -> u32 {
    let area = layout.slot(slot);
    area.trailer_offset + area.trailer_size - area.image_offset()
}

#[test]
fn imgtool_padded_trailers_are_recognised_at_every_max_align() {
    let dir = tempfile::tempdir().unwrap();
    key(dir.path());
    for mode in BootMode::ALL {
        for align in [1, 2, 4, 8, 16, 32] {
            let g = geometry(mode, align);
            let layout = Layout::auto(&g, mode).unwrap();
            let size = staging_slot_size(&layout, Slot::Secondary);
            for confirm in [false, true] {
                let img = sign_padded(dir.path(), "2.0.0", size, align, confirm);
                assert_eq!(img.len() as u32, size, "--pad fills the slot");
                // The magic ends the slot: MCUboot's for BOOT_MAX_ALIGN 8, the aligned one
                // above (imgtool's max_align = max(8, align), as ours).
                let unit = align.max(8) as u32;
                assert_eq!(
                    img[img.len() - 16..],
                    boot::boot_magic(unit),
                    "align {align}"
                );
                let mut flash = SimFlash::new(g.clone(), 1);
                let area = layout.slot(Slot::Secondary);
                flash.erase(area.region.offset, area.region.size).unwrap();
                flash.write(area.image_offset(), &img).unwrap();
                let t = boot::trailers::read(&flash, &layout, Slot::Secondary).unwrap();
                let what = format!("{mode} align {align} confirm {confirm}: {t:?}");
                assert!(t.magic, "{what}");
                assert_eq!(
                    t.image_ok,
                    if confirm { Flag::Set } else { Flag::Unset },
                    "{what}"
                );
                assert_eq!(t.copy_done, Flag::Unset, "{what}");
                assert_eq!(t.swap_type, None, "{what}: imgtool leaves swap info erased");
                let request = if confirm {
                    SwapType::Perm
                } else {
                    SwapType::Test
                };
                assert_eq!(t.request(), Some(request), "{what}");
            }
        }
    }
}

/// The ECU and a diagnostic server on the bench clock.
struct Bench {
    ecu: Ecu,
    server: DiagServer,
    now: u64,
}

impl Bench {
    fn ask(&mut self, req: &[u8]) -> Vec<u8> {
        self.server.handle(
            &mut self.ecu,
            self.now,
            req,
            Incoming::new(Addressing::Physical),
        );
        let out: Vec<_> = std::iter::from_fn(|| self.server.poll_transmit()).collect();
        let last = out
            .last()
            .unwrap_or_else(|| {
                panic!(
                    "no response to {req:02x?}; events {:?}; a reset now: {:?}",
                    self.ecu.drain_events(),
                    self.ecu.reset()
                )
            })
            .clone();
        self.now = self.now.max(last.at_us);
        last.bytes
    }

    fn expect(&mut self, req: &[u8], resp: &[u8]) {
        assert_eq!(self.ask(req), resp, "request {req:02x?}");
    }

    fn programming(&mut self) {
        self.expect(&[0x10, 0x02], &[0x50, 0x02, 0x00, 0x32, 0x01, 0xf4]);
        let seed = self.ask(&[0x27, 0x01]);
        let key = compute_key(&default_secrets()[&1], &seed[2..]);
        let mut req = vec![0x27, 0x02];
        req.extend_from_slice(&key);
        self.expect(&req, &[0x67, 0x02]);
    }

    /// Erase the staging area, download `img` raw at its start, exit, reset: no 0xFF01.
    fn flash_raw(&mut self, img: &[u8]) -> StagingRecord {
        let r = self.ask(&[0x22, 0xfd, 0x03]);
        let st = StagingRecord::decode(&r[3..]).unwrap();
        let mut erase = [0x31, 0x01, 0xff, 0x00, 0x44].to_vec();
        erase.extend_from_slice(&st.address.to_be_bytes());
        erase.extend_from_slice(&st.size.to_be_bytes());
        self.expect(&erase, &[0x71, 0x01, 0xff, 0x00, 0x00]);
        let mut req = [0x34, 0x00, 0x44].to_vec();
        req.extend_from_slice(&st.address.to_be_bytes());
        req.extend_from_slice(&(img.len() as u32).to_be_bytes());
        assert_eq!(self.ask(&req)[0], 0x74);
        for (i, chunk) in img.chunks(4096).enumerate() {
            let seq = (i + 1) as u8;
            self.expect(&[&[0x36, seq][..], chunk].concat(), &[0x76, seq]);
        }
        self.expect(&[0x37], &[0x77]);
        self.expect(&[0x11, 0x01], &[0x51, 0x01]);
        // The bootloader runs (and swaps): a request meanwhile gets no answer.
        self.server.handle(
            &mut self.ecu,
            self.now,
            &[0x3e, 0x00],
            Incoming::new(Addressing::Physical),
        );
        assert!(self.server.poll_transmit().is_none());
        self.now += 5_000_000;
        assert_eq!(self.ask(&[0x22, 0xf1, 0x86]), [0x62, 0xf1, 0x86, 0x01]);
        st
    }
}

fn running(ecu: &Ecu) -> (Version, Slot, bool) {
    let r = ecu.running().expect("firmware runs");
    (r.image.header.version, r.slot, r.test)
}

#[test]
fn imgtool_padded_images_written_raw_install_in_every_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key(dir.path());
    for mode in BootMode::ALL {
        for align in [8, 32] {
            let g = geometry(mode, align);
            let layout = Layout::auto(&g, mode).unwrap();
            let size = staging_slot_size(&layout, Slot::Secondary);
            let v1 = sign_padded(dir.path(), "1.0.0", size, align, true);
            let factory = &v1[..layout.secondary.image_capacity() as usize];
            let boot = BootConfig {
                defect: None,
                max_boot_attempts: 1,
                keys: keys.clone(),
            };
            let ecu = Ecu::factory(g, mode, factory, boot, 1).unwrap();
            let mut b = Bench {
                now: ecu.now_us(),
                ecu,
                server: DiagServer::new(ServerConfig::default()),
            };
            let what = format!("{mode} align {align}");
            // A test upgrade (`--pad`): taken at the reset, on probation; imgtool images
            // carry no behaviour TLV, so it confirms itself and stays.
            b.programming();
            let v2 = sign_padded(dir.path(), "2.0.0", size, align, false);
            let st = b.flash_raw(&v2);
            assert_eq!(st.size, size, "{what}: FD03 is imgtool's --slot-size");
            let staged = if mode == BootMode::DirectXip {
                Slot::Secondary
            } else {
                Slot::Primary
            };
            assert_eq!(
                running(&b.ecu),
                (Version::new(2, 0, 0), staged, mode.can_revert()),
                "{what}: a test image (overwrite: installed for good)"
            );
            b.ecu.advance(2_000_000).unwrap();
            b.ecu.power_cycle().unwrap();
            assert_eq!(
                running(&b.ecu),
                (Version::new(2, 0, 0), staged, false),
                "{what}: confirmed"
            );
            // A permanent upgrade (`--pad --confirm`): never on probation.
            b.now = b.ecu.now_us();
            b.programming();
            let v3 = sign_padded(dir.path(), "3.0.0", size, align, true);
            b.flash_raw(&v3);
            let (v, _, test) = running(&b.ecu);
            assert_eq!((v, test), (Version::new(3, 0, 0), false), "{what}");
            b.ecu.power_cycle().unwrap();
            assert_eq!(running(&b.ecu).0, Version::new(3, 0, 0), "{what}");
        }
    }
}
