//! ECU life cycles beyond one update: chains of updates, downgrades, unsigned and corrupt
//! images, bit rot, watchdog and crash reverts, and the updater refusing illegal calls.

use ecu_sim::boot::{BootConfig, BootDecision, BootMode, Layout, Slot, UpdateError};
use ecu_sim::ecu::{Ecu, EcuConfig, EcuError, provision};
use ecu_sim::event::{EventKind, RevertReason};
use ecu_sim::flash::{Flash, Geometry, SimFlash};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};

fn image(major: u8, counter: u32, behaviour: Behaviour) -> Vec<u8> {
    ImageBuilder::new(
        Version::new(major, 0, 0),
        vec![major; 6000 + usize::from(major) * 100],
    )
    .security_counter(counter)
    .behaviour(behaviour)
    .sign(&dev_key("oem"))
}

fn healthy(major: u8) -> Vec<u8> {
    image(
        major,
        u32::from(major),
        Behaviour::Healthy {
            confirm_after_ms: 100,
        },
    )
}

fn ecu(mode: BootMode, attempts: u8) -> Ecu {
    let geometry = Geometry::uniform(4096, 3 + 2 * 4 + 1, 8).unwrap();
    let layout = Layout::auto(&geometry, mode).unwrap();
    let mut flash = SimFlash::new(geometry, 1);
    provision(&mut flash, &layout, &healthy(1)).unwrap();
    let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
    let config = EcuConfig::new(
        layout,
        BootConfig {
            defect: None,
            max_boot_attempts: attempts,
            keys,
        },
    );
    let mut ecu = Ecu::new(config, flash);
    ecu.power_on().unwrap();
    ecu
}

fn version(ecu: &Ecu) -> u8 {
    ecu.running()
        .expect("firmware runs")
        .image
        .header
        .version
        .major
}

/// Stage, reset, let it run, power-cycle: the field's update cycle.
fn update(ecu: &mut Ecu, img: &[u8], permanent: bool) -> Vec<EventKind> {
    ecu.drain_events();
    ecu.stage_update(img, permanent).unwrap();
    ecu.reset().unwrap();
    ecu.advance(2_000_000).unwrap();
    ecu.power_cycle().unwrap();
    ecu.advance(2_000_000).unwrap();
    ecu.drain_events().into_iter().map(|e| e.kind).collect()
}

#[test]
fn chains_of_updates_in_both_modes() {
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
        let mut e = ecu(mode, 1);
        assert_eq!(version(&e), 1);
        for v in 2..=5u8 {
            let ev = update(&mut e, &healthy(v), v % 2 == 0);
            assert_eq!(version(&e), v, "{mode}: {ev:?}");
            assert!(!e.running().unwrap().test);
            assert_eq!(e.status().unwrap().stored_counter, u32::from(v));
        }
        // A never-confirming v6 is reverted to v5 at the next reset.
        let ev = update(&mut e, &image(6, 6, Behaviour::NeverConfirm), false);
        assert_eq!(version(&e), 5, "{mode}: {ev:?}");
        assert!(
            ev.iter().any(|k| matches!(
                k,
                EventKind::RevertStarted {
                    reason: RevertReason::NotConfirmed { attempts: 1 },
                    ..
                }
            )),
            "{mode}: {ev:?}"
        );
        assert_eq!(
            e.status().unwrap().stored_counter,
            5,
            "a test boot never raises the counter"
        );
        // And the next good update still works after a revert.
        update(&mut e, &healthy(7), false);
        assert_eq!(version(&e), 7, "{mode}");
    }
}

#[test]
fn downgrade_unsigned_and_foreign_images_are_refused() {
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
        let mut e = ecu(mode, 1);
        update(&mut e, &healthy(3), false);
        assert_eq!(version(&e), 3);
        let refused = |ev: &[EventKind]| {
            ev.iter()
                .find_map(|k| match k {
                    EventKind::ImageRejected { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no rejection in {ev:?}"))
        };
        // Version 4 but security counter 2 < stored 3: a downgrade in disguise.
        let ev = update(&mut e, &image(4, 2, Behaviour::DEFAULT), false);
        assert_eq!(
            refused(&ev),
            "security counter 2 is lower than the stored 3 (downgrade)"
        );
        assert_eq!(version(&e), 3);
        let unsigned = ImageBuilder::new(Version::new(5, 0, 0), vec![5; 3000])
            .security_counter(5)
            .build_unsigned();
        let ev = update(&mut e, &unsigned, false);
        assert_eq!(
            refused(&ev),
            "no signature (key + signature tlvs) but keys are configured"
        );
        let foreign =
            ImageBuilder::new(Version::new(5, 0, 0), vec![5; 3000]).sign(&dev_key("attacker"));
        let ev = update(&mut e, &foreign, false);
        assert!(
            refused(&ev).starts_with("signed with an unknown key"),
            "{mode}"
        );
        assert_eq!(version(&e), 3, "{mode}");
    }
}

#[test]
fn crash_and_hang_are_reverted_by_the_bootloader() {
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
        for (bad, what) in [
            (Behaviour::CrashOnBoot, "crashed"),
            (Behaviour::Hang { watchdog_ms: 300 }, "watchdog"),
        ] {
            let mut e = ecu(mode, 2);
            let ev = update(&mut e, &image(2, 2, bad), false);
            assert_eq!(version(&e), 1, "{mode} {what}: {ev:?}");
            let tries = ev
                .iter()
                .filter(|k| matches!(k, EventKind::Booted { test: true, .. }))
                .count();
            assert_eq!(
                tries, 2,
                "{mode} {what}: max_boot_attempts 2 means two tries: {ev:?}"
            );
            let resets = ev
                .iter()
                .filter(|k| {
                    matches!(
                        k,
                        EventKind::FirmwareCrashed { .. } | EventKind::WatchdogReset { .. }
                    )
                })
                .count();
            assert_eq!(resets, 2, "{mode} {what}: {ev:?}");
        }
    }
}

#[test]
fn bit_rot_in_a_test_image_reverts_and_in_the_only_image_bricks_loudly() {
    // Swap mode, test image on probation with 2 attempts: rot it, reset → reverted as invalid.
    let mut e = ecu(BootMode::SwapScratch, 2);
    e.stage_update(&healthy(2), false).unwrap();
    e.reset().unwrap();
    assert!(e.running().unwrap().test);
    let at = e.config().layout.primary.region.offset + 0x300;
    e.flash_mut().flip_bits(at, 0x10).unwrap();
    e.drain_events();
    e.dtcs_mut().clear(0xFF_FFFF);
    e.reset().unwrap();
    assert_eq!(version(&e), 1);
    // The bootloader rejected the image on probation (D00100) and reverted it (D00200).
    let codes: Vec<u32> = e.dtcs().iter().map(|(d, _)| d.code()).collect();
    assert_eq!(
        codes,
        [0xD0_0100, 0xD0_0200],
        "dtcs after the invalid test image"
    );
    let ev: Vec<_> = e.drain_events().into_iter().map(|e| e.kind).collect();
    assert!(
        ev.iter().any(|k| matches!(
            k,
            EventKind::RevertStarted {
                reason: RevertReason::Invalid { .. },
                ..
            }
        )),
        "{ev:?}"
    );
    // Rot the confirmed only image: nothing may boot, and the ECU says why.
    let at = e.config().layout.primary.region.offset + 0x300;
    e.flash_mut().flip_bits(at, 0x01).unwrap();
    e.dtcs_mut().clear(0xFF_FFFF);
    e.reset().unwrap();
    assert!(e.running().is_none());
    // Recorded, though nothing answers diagnostics now: the bootloader rejected the running
    // image (bit rot) — the DTC is there for whoever reflashes the ECU.
    let codes: Vec<u32> = e.dtcs().iter().map(|(d, _)| d.code()).collect();
    assert_eq!(codes, [0xD0_0100], "dtcs after bit rot in the only image");
    match e.last_decision() {
        Some(BootDecision::NoBootableImage { reasons }) => {
            assert_eq!(
                reasons[0],
                (
                    Slot::Primary,
                    "hash mismatch: the image is not what was signed".into()
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.with_updater(|u| u.confirm()),
        Err(EcuError::NotRunning)
    ));
}

#[test]
fn updater_refuses_illegal_calls() {
    let mut e = ecu(BootMode::SwapScratch, 1);
    let cap = e.with_updater(|u| Ok(u.staging_area().1)).unwrap();
    let err = e.with_updater(|u| u.write(cap, &[0; 8])).unwrap_err();
    assert!(
        matches!(err, EcuError::Update(UpdateError::OutOfSlot { .. })),
        "{err}"
    );
    let err = e.with_updater(|u| u.write(3, &[0; 8])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "offset 0x3 is not aligned to the 8-byte write unit"
    );
    e.stage_update(&healthy(2), false).unwrap();
    let err = e.with_updater(|u| u.mark_pending(true)).unwrap_err();
    assert!(
        matches!(
            err,
            EcuError::Update(UpdateError::TrailerNotErased {
                slot: Slot::Secondary
            })
        ),
        "{err}"
    );
    // Writing over staged data without erasing is a flash error naming the address.
    let err = e.with_updater(|u| u.write(0, &[0; 8])).unwrap_err();
    assert!(
        err.to_string()
            .contains("which was programmed and not erased since"),
        "{err}"
    );
    assert_eq!(
        e.with_updater(|u| u.verify_staged(
            &Keyring::new().with_key(dev_key("oem").verifying_key()),
            None
        ))
        .unwrap()
        .header
        .version,
        Version::new(2, 0, 0)
    );
    // The factory image is already confirmed: confirming again changes nothing.
    let ops = e.flash().ops();
    assert!(!e.with_updater(|u| u.confirm()).unwrap());
    assert_eq!(e.flash().ops(), ops);
    e.power_off();
    assert!(matches!(
        e.stage_update(&healthy(3), false),
        Err(EcuError::PoweredOff)
    ));
}

#[test]
fn same_seed_same_trace() {
    let run = || {
        let mut e = ecu(BootMode::SwapScratch, 1);
        let at = e.flash().ops() + 40;
        e.flash_mut().arm_cut(at, ecu_sim::flash::CutVariant::Torn);
        let _ = e.stage_update(&healthy(2), false).and_then(|_| e.reset());
        for _ in 0..3 {
            let _ = e.power_on();
            let _ = e.advance(1_000_000);
            e.power_off();
        }
        e.drain_events()
            .iter()
            .map(|e| format!("{e}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let a = run();
    assert!(a.contains("power lost at flash op"), "{a}");
    assert_eq!(a, run());
}

#[test]
fn the_rollback_image_is_untouchable_during_probation() {
    for mode in [BootMode::SwapScratch, BootMode::DirectXip] {
        let mut e = ecu(mode, 1);
        e.stage_update(&image(2, 2, Behaviour::NeverConfirm), false)
            .unwrap();
        e.reset().unwrap();
        assert!(e.running().unwrap().test);
        let ops = e.flash().ops();
        let err = e.stage_update(&healthy(3), false).unwrap_err();
        assert!(
            matches!(err, EcuError::Update(UpdateError::OnProbation { .. })),
            "{mode}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("the running image is on probation"),
            "{err}"
        );
        assert_eq!(e.flash().ops(), ops, "{mode}: nothing was written");
        // The revert still finds v1 intact.
        e.reset().unwrap();
        assert_eq!(version(&e), 1, "{mode}");
        // Once reverted (v1 confirmed), staging works again.
        update(&mut e, &healthy(3), false);
        assert_eq!(version(&e), 3, "{mode}");
    }
}

/// A revert cut by a power loss is resumed from the journal at the next boot; that boot
/// reports the revert (DID 0xFD00 outcome 4, 0xFD04 reason) and records D00200 in its own
/// operation cycle, so a tester that reads the ECU only afterwards learns the image was reverted.
#[test]
fn a_revert_resumed_after_a_power_cut_is_reported_as_a_revert() {
    let never = image(2, 2, Behaviour::NeverConfirm);
    let mut e = ecu(BootMode::SwapScratch, 1);
    e.stage_update(&never, false).unwrap();
    e.reset().unwrap();
    assert!(e.running().unwrap().test);
    // The next reset reverts; cut power in the middle of that revert swap.
    let at = e.flash().ops() + 30;
    e.flash_mut().arm_cut(at, ecu_sim::flash::CutVariant::Torn);
    assert!(e.reset().is_err(), "the armed cut lands inside the revert");
    e.power_off();
    e.dtcs_mut().clear(0xFF_FFFF);
    e.drain_events();
    e.power_on().unwrap();
    assert_eq!(version(&e), 1);
    let ev: Vec<_> = e.drain_events().into_iter().map(|e| e.kind).collect();
    assert!(
        ev.iter().any(|k| matches!(
            k,
            EventKind::SwapResumed {
                kind: ecu_sim::boot::SwapType::Revert,
                ..
            }
        )),
        "{ev:?}"
    );
    let outcome = e.last_boot().expect("a boot outcome");
    assert_eq!(outcome.code(), 0x04, "{outcome:?}");
    assert_eq!(
        outcome.reason(),
        "reverted: an interrupted revert was resumed and completed"
    );
    let dtcs: Vec<(u32, u8)> = e.dtcs().iter().map(|(d, s)| (d.code(), s)).collect();
    assert_eq!(dtcs, [(0xD0_0200, 0x0B)], "recorded in this boot's cycle");
}

#[test]
fn an_event_cut_lands_at_the_flash_operation_after_its_boot_event() {
    let never = image(2, 2, Behaviour::NeverConfirm);
    let mut e = ecu(BootMode::SwapScratch, 1);
    e.stage_update(&never, false).unwrap();
    e.reset().unwrap();
    e.drain_events();
    // Cut at the operation that follows the revert's first progress report.
    e.add_event_cut(ecu_sim::flash::EventCut {
        id: 7,
        matches: std::sync::Arc::new(|k| matches!(k, EventKind::SwapProgress { .. })),
        variant: ecu_sim::flash::CutVariant::After,
    });
    assert!(matches!(e.reset(), Err(EcuError::PowerLost { .. })));
    let ev = e.drain_events();
    let progress = ev
        .iter()
        .find(|x| matches!(x.kind, EventKind::SwapProgress { .. }))
        .expect("the revert reported progress");
    let lost = ev.last().expect("events");
    assert!(
        matches!(lost.kind, EventKind::PowerLost { op, .. } if op == progress.flash_ops),
        "{ev:?}"
    );
    assert!(e.event_cuts().is_empty() && e.flash().cut_rules().is_empty());
    assert!(
        !ev.iter()
            .any(|x| matches!(x.kind, EventKind::SwapFinished { .. })),
        "the revert did not finish: {ev:?}"
    );
    // An event the boot never emits leaves its cut waiting.
    e.add_event_cut(ecu_sim::flash::EventCut {
        id: 8,
        matches: std::sync::Arc::new(|k| matches!(k, EventKind::NoBootableImage { .. })),
        variant: ecu_sim::flash::CutVariant::After,
    });
    e.power_on().unwrap();
    assert_eq!(version(&e), 1);
    assert_eq!(e.event_cuts().len(), 1);
}
