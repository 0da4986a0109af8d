//! The bootloader with encrypted images, strategy by strategy: what each slot holds after an
//! install and after a revert (plaintext in the primary, the very ciphertext in the
//! secondary), the keys saved in the primary trailer before the first step, and the refusals
//! (no key, another key, direct-xip) with their reasons and DTC.

use ecu_sim::boot::{self, BootMode, Slot, SwapState};
use ecu_sim::dtc::Dtc;
use ecu_sim::event::EventKind;
use ecu_sim::flash::{CutVariant, Flash, Geometry};
use ecu_sim::image::{self, EncError, EncKey, ImageError, ImageKey, KeyKind, dev_private_key};
use ecu_sim::powercut::{Flow, Setup};

const COPYING: [BootMode; 4] = [
    BootMode::SwapScratch,
    BootMode::SwapMove,
    BootMode::SwapOffset,
    BootMode::Overwrite,
];

fn geometry(mode: BootMode) -> Geometry {
    let (scratch, p, s) = mode.extra_sectors();
    Geometry::uniform(4096, 3 + 2 * 5 + scratch + p + s, 8).unwrap()
}

fn setup(mode: BootMode, flow: Flow) -> Setup {
    Setup::new_encrypted(geometry(mode), mode, flow, 1, 9 * 1024, 5).unwrap()
}

/// The image in `slot`, as many bytes as `like`.
fn slot_image(setup: &Setup, ecu: &mut ecu_sim::ecu::Ecu, slot: Slot, len: usize) -> Vec<u8> {
    ecu.flash_mut().set_powered(true);
    let layout = &setup.ecu.config().layout;
    let base = boot::image_base(ecu.flash(), layout, slot).unwrap();
    let mut bytes = vec![0; len];
    ecu.flash().read(base, &mut bytes).unwrap();
    bytes
}

fn image_key(plain: &[u8]) -> ImageKey {
    image::image_key(&image::parse(plain).unwrap(), &Setup::enc_key()).unwrap()
}

/// `plain` (an image with its encryption flag) with its payload encrypted again.
fn encrypted(plain: &[u8]) -> Vec<u8> {
    let parsed = image::parse(plain).unwrap();
    let (start, len) = (
        usize::from(parsed.header.hdr_size),
        parsed.header.img_size as usize,
    );
    let mut out = plain.to_vec();
    image_key(plain).apply_keystream(0, &mut out[start..start + len]);
    out
}

fn rejected(ecu: &mut ecu_sim::ecu::Ecu) -> Vec<String> {
    ecu.drain_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ImageRejected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn swaps_keep_the_secondary_encrypted_and_a_revert_decrypts_it_again() {
    for mode in COPYING {
        let s = setup(mode, Flow::TestNeverConfirm);
        assert_ne!(s.staged, s.new, "the staged image is ciphertext");
        let mut ecu = s.ecu.clone();
        ecu.power_on().unwrap();
        ecu.stage_update(&s.staged, false).unwrap();
        ecu.reset().unwrap();
        let r = ecu.running().unwrap().clone();
        assert_eq!(
            (r.image.header.version, r.slot),
            (s.new_version, Slot::Primary)
        );
        assert_eq!(slot_image(&s, &mut ecu, Slot::Primary, s.new.len()), s.new);
        if mode == BootMode::Overwrite {
            // Overwrite decrypted the new image into the primary and took the request away.
            assert!(rejected(&mut ecu).is_empty(), "{mode}");
            continue;
        }
        // The old image went to the secondary encrypted with its own key: its ciphertext.
        let old_there = slot_image(&s, &mut ecu, Slot::Secondary, s.old.len());
        assert_ne!(
            old_there, s.old,
            "{mode}: the old image is not stored in plaintext"
        );
        assert_eq!(old_there, encrypted(&s.old), "{mode}");
        // Never confirmed: the revert decrypts the old image back into the primary and puts
        // the new one's ciphertext back where it was staged, byte for byte.
        ecu.reset().unwrap();
        let r = ecu.running().unwrap().clone();
        assert_eq!(
            (r.image.header.version, r.test),
            (s.old_version, false),
            "{mode}"
        );
        assert_eq!(slot_image(&s, &mut ecu, Slot::Primary, s.old.len()), s.old);
        assert_eq!(
            slot_image(&s, &mut ecu, Slot::Secondary, s.staged.len()),
            s.staged,
            "{mode}"
        );
        let status = ecu.status().unwrap();
        assert_eq!(
            status.slots[1].invalid, None,
            "{mode}: the secondary verifies decrypted"
        );
        assert!(rejected(&mut ecu).is_empty(), "{mode}");
    }
}

#[test]
fn the_keys_are_in_the_primary_trailer_before_the_first_step() {
    for mode in [
        BootMode::SwapScratch,
        BootMode::SwapMove,
        BootMode::SwapOffset,
    ] {
        let s = setup(mode, Flow::TestConfirm);
        let layout = s.ecu.config().layout.clone();
        let mut staged = s.ecu.clone();
        staged.power_on().unwrap();
        staged.stage_update(&s.staged, false).unwrap();
        let base = staged.flash().ops();
        let mut checked = false;
        for k in 0..200 {
            let mut ecu = staged.clone();
            ecu.flash_mut().arm_cut(base + k, CutVariant::After);
            assert!(ecu.reset().is_err(), "{mode}: the cut at op {k} fires");
            ecu.flash_mut().set_powered(true);
            let SwapState::InProgress { keys, last, .. } =
                boot::swap_state(ecu.flash(), &layout).unwrap()
            else {
                continue;
            };
            let [Some(k0), Some(k1)] = keys else {
                assert_eq!(last, None, "{mode}: no step before both keys are saved");
                continue;
            };
            assert_eq!((k0.slot, k1.slot), (Slot::Primary, Slot::Secondary));
            for (record, plain) in [(k0, &s.old), (k1, &s.new)] {
                let saved = boot::PayloadKey::read_field(ecu.flash(), &layout, &record).unwrap();
                assert_eq!(saved.key, image_key(plain), "{mode} {:?}", record.slot);
                let h = image::Header::parse(plain).unwrap();
                assert_eq!((saved.hdr_size, saved.img_size), (h.hdr_size, h.img_size));
            }
            assert_eq!(k0.aes.key_len(), 16);
            assert_eq!(k1.aes.key_len(), 32);
            checked = true;
            break;
        }
        assert!(
            checked,
            "{mode}: a swap in progress with both keys saved was seen"
        );
    }
}

#[test]
fn a_missing_or_wrong_key_rejects_the_image_with_a_dtc() {
    let stranger = EncKey::from_private(dev_private_key(KeyKind::X25519, "stranger")).unwrap();
    for mode in COPYING {
        for (key, expect) in [
            (None, "the ecu has no decryption key"),
            (Some(stranger.clone()), "unwrapping the image's AES key"),
        ] {
            let s = setup(mode, Flow::TestConfirm);
            let config = s.ecu.config().clone().with_enc_key(key);
            let mut ecu = ecu_sim::ecu::Ecu::new(config, s.ecu.flash().clone());
            // The factory image runs: in the primary it is plaintext, no key needed.
            ecu.power_on().unwrap();
            assert_eq!(ecu.running().unwrap().image.header.version, s.old_version);
            ecu.stage_update(&s.staged, false).unwrap();
            ecu.drain_events();
            ecu.reset().unwrap();
            let reasons = rejected(&mut ecu);
            assert!(
                reasons.len() == 1 && reasons[0].contains(expect),
                "{mode}: {reasons:?}"
            );
            let r = ecu.running().unwrap();
            assert_eq!((r.image.header.version, r.test), (s.old_version, false));
            assert_eq!(slot_image(&s, &mut ecu, Slot::Primary, s.old.len()), s.old);
            assert!(ecu.dtcs().contains(Dtc::ImageRejected), "{mode}: dtc");
            // The request is gone: the next boot does not try again.
            ecu.reset().unwrap();
            assert!(rejected(&mut ecu).is_empty());
        }
    }
}

#[test]
fn a_changed_ciphertext_byte_is_a_hash_mismatch() {
    for mode in COPYING {
        let s = setup(mode, Flow::TestConfirm);
        let mut ecu = s.ecu.clone();
        ecu.power_on().unwrap();
        let mut bad = s.staged.clone();
        let at = usize::from(image::Header::parse(&bad).unwrap().hdr_size) + 100;
        bad[at] ^= 0x10;
        ecu.stage_update(&bad, false).unwrap();
        ecu.drain_events();
        ecu.reset().unwrap();
        assert_eq!(
            rejected(&mut ecu),
            vec![ImageError::HashMismatch.to_string()],
            "{mode}"
        );
        assert_eq!(ecu.running().unwrap().image.header.version, s.old_version);
    }
}

#[test]
fn direct_xip_refuses_an_encrypted_image() {
    let mode = BootMode::DirectXip;
    let s = Setup::new(geometry(mode), mode, Flow::TestConfirm, 1, 9 * 1024, 5).unwrap();
    let enc = setup(BootMode::SwapScratch, Flow::TestConfirm);
    let config = s.ecu.config().clone().with_enc_key(Some(Setup::enc_key()));
    let mut ecu = ecu_sim::ecu::Ecu::new(config, s.ecu.flash().clone());
    ecu.power_on().unwrap();
    ecu.stage_update(&enc.staged, false).unwrap();
    ecu.drain_events();
    ecu.reset().unwrap();
    assert_eq!(
        rejected(&mut ecu),
        vec![ImageError::Encryption(EncError::RunsInPlace).to_string()]
    );
    let r = ecu.running().unwrap();
    assert_eq!(
        (r.image.header.version, r.slot),
        (s.old_version, Slot::Primary)
    );
}
