//! MCUboot's upgrade strategies one by one: each installs and (where it can) reverts, each
//! leaves the old image where MCUboot's design says, overwrite installs a test image for good,
//! direct-xip picks the newest version, and a geometry that cannot host a strategy is a named
//! layout error.

use ecu_sim::boot::{
    self, BootConfig, BootMode, Layout, LayoutError, LayoutSpec, Slot, UnknownBootMode,
};
use ecu_sim::ecu::{Ecu, EcuConfig, provision};
use ecu_sim::event::EventKind;
use ecu_sim::flash::{Flash, Geometry, SimFlash};
use ecu_sim::image::{self, Behaviour, ImageBuilder, Keyring, Version, dev_key};

fn image(major: u8, behaviour: Behaviour) -> Vec<u8> {
    ImageBuilder::new(
        Version::new(major, 0, 0),
        vec![major; 9000 + usize::from(major) * 100],
    )
    .security_counter(u32::from(major))
    .behaviour(behaviour)
    .sign(&dev_key("oem"))
}

const HEALTHY: Behaviour = Behaviour::Healthy {
    confirm_after_ms: 100,
};

/// 4 KiB sectors: two slots of 5 and the mode's extra sector.
fn geometry(mode: BootMode) -> Geometry {
    let (scratch, p, s) = mode.extra_sectors();
    Geometry::uniform(4096, 3 + 2 * 5 + scratch + p + s, 8).unwrap()
}

fn ecu(mode: BootMode) -> Ecu {
    let geometry = geometry(mode);
    let layout = Layout::auto(&geometry, mode).unwrap();
    let mut flash = SimFlash::new(geometry, 1);
    provision(&mut flash, &layout, &image(1, HEALTHY)).unwrap();
    let config = EcuConfig::new(
        layout,
        BootConfig {
            defect: None,
            max_boot_attempts: 1,
            keys: Keyring::new().with_key(dev_key("oem").verifying_key()),
        },
    );
    let mut ecu = Ecu::new(config, flash);
    ecu.power_on().unwrap();
    ecu
}

fn running(ecu: &Ecu) -> (u8, Slot, bool) {
    let r = ecu.running().expect("firmware runs");
    (r.image.header.version.major, r.slot, r.test)
}

/// The version of the image in `slot` (where the bootloader looks for it).
fn slot_version(ecu: &mut Ecu, slot: Slot) -> Option<u8> {
    ecu.flash_mut().set_powered(true);
    let bytes = boot::slot_bytes(ecu.flash(), &ecu.config().layout, slot).unwrap();
    image::Header::parse(&bytes).ok().map(|h| h.version.major)
}

#[test]
fn mode_names_are_mcuboots_and_the_old_ones_are_aliases() {
    for mode in BootMode::ALL {
        assert_eq!(mode.to_string().parse::<BootMode>(), Ok(mode));
    }
    assert_eq!("swap".parse(), Ok(BootMode::SwapScratch));
    assert_eq!("ab".parse(), Ok(BootMode::DirectXip));
    assert_eq!("overwrite-only".parse(), Ok(BootMode::Overwrite));
    assert_eq!(
        "ram-load".parse::<BootMode>().unwrap_err().to_string(),
        UnknownBootMode("ram-load".into()).to_string()
    );
    assert!(
        "ram-load"
            .parse::<BootMode>()
            .unwrap_err()
            .to_string()
            .starts_with("unknown boot mode `ram-load`: expected swap-scratch, swap-move")
    );
}

#[test]
fn a_test_image_that_never_confirms_is_reverted_where_mcuboot_can_revert() {
    for mode in BootMode::ALL.into_iter().filter(|m| m.can_revert()) {
        let mut e = ecu(mode);
        e.stage_update(&image(2, Behaviour::NeverConfirm), false)
            .unwrap();
        e.reset().unwrap();
        let (v, slot, test) = running(&e);
        assert_eq!((v, test), (2, true), "{mode}");
        let staged = if mode == BootMode::DirectXip {
            Slot::Secondary
        } else {
            Slot::Primary
        };
        assert_eq!(slot, staged, "{mode}");
        if mode.is_swap() {
            // The old image waits in the secondary slot (swap-offset: one sector earlier).
            assert_eq!(slot_version(&mut e, Slot::Secondary), Some(1), "{mode}");
        }
        e.advance(2_000_000).unwrap();
        e.power_cycle().unwrap();
        let events: Vec<_> = e.drain_events().into_iter().map(|e| e.kind).collect();
        assert!(
            events
                .iter()
                .any(|k| matches!(k, EventKind::RevertStarted { .. })),
            "{mode}: {events:?}"
        );
        assert_eq!(running(&e), (1, Slot::Primary, false), "{mode}");
        if mode.is_swap() {
            assert_eq!(slot_version(&mut e, Slot::Secondary), Some(2), "{mode}");
        }
        // A healthy update afterwards installs and confirms.
        e.stage_update(&image(3, HEALTHY), false).unwrap();
        e.reset().unwrap();
        e.advance(2_000_000).unwrap();
        e.power_cycle().unwrap();
        let (v, _, test) = running(&e);
        assert_eq!((v, test), (3, false), "{mode}");
    }
}

#[test]
fn overwrite_installs_a_test_image_for_good() {
    let mut e = ecu(BootMode::Overwrite);
    e.stage_update(&image(2, Behaviour::NeverConfirm), false)
        .unwrap();
    e.reset().unwrap();
    // Not on probation: overwrite-only has nothing to revert to.
    assert_eq!(running(&e), (2, Slot::Primary, false));
    for _ in 0..3 {
        e.advance(2_000_000).unwrap();
        e.power_cycle().unwrap();
        assert_eq!(running(&e), (2, Slot::Primary, false));
    }
    let events: Vec<_> = e.drain_events().into_iter().map(|e| e.kind).collect();
    assert!(
        !events
            .iter()
            .any(|k| matches!(k, EventKind::RevertStarted { .. })),
        "{events:?}"
    );
    // The request is gone (secondary header sector and trailer erased), the primary trailer
    // says installed for good.
    let status = e.status().unwrap();
    assert_eq!(slot_version(&mut e, Slot::Secondary), None);
    assert!(!status.slots[1].trailer.magic);
    assert!(status.slots[0].trailer.is_confirmed());
    assert_eq!(status.stored_counter, 2);

    // An image that crashes at every boot keeps crashing: no revert.
    e.stage_update(&image(3, Behaviour::CrashOnBoot), false)
        .unwrap();
    e.reset().unwrap();
    e.advance(2_000_000).unwrap();
    e.power_cycle().unwrap();
    assert_eq!(running(&e).0, 3);
}

#[test]
fn direct_xip_boots_the_newest_version() {
    let mut e = ecu(BootMode::DirectXip);
    e.stage_update(&image(2, HEALTHY), true).unwrap();
    e.reset().unwrap();
    // A permanent request: the newest confirmed slot runs.
    assert_eq!(running(&e), (2, Slot::Secondary, false));
    e.power_cycle().unwrap();
    assert_eq!(running(&e), (2, Slot::Secondary, false));
    // The staging slot is now the primary; v3 goes there and wins by version.
    e.stage_update(&image(3, HEALTHY), false).unwrap();
    e.reset().unwrap();
    assert_eq!(running(&e), (3, Slot::Primary, true));
}

#[test]
fn the_staging_area_follows_the_strategy() {
    for mode in BootMode::ALL {
        let mut e = ecu(mode);
        let (addr, size) = e.with_updater(|u| Ok(u.staging_area())).unwrap();
        let l = e.config().layout.clone();
        // Direct-xip stages in the slot not running: the secondary, as v1 runs in the primary.
        let staged = &l.secondary;
        let sector = 4096;
        let expected = match mode {
            // The new image starts at the secondary slot's second sector.
            BootMode::SwapOffset => staged.region.offset + sector,
            _ => staged.region.offset,
        };
        assert_eq!(addr, expected, "{mode}");
        assert_eq!(
            size,
            staged.region.offset + staged.region.size - addr,
            "{mode}"
        );
        let capacity = staged.image_capacity();
        assert_eq!(capacity, 4 * sector, "{mode}: 5 slot sectors, 1 trailer");
        if mode == BootMode::SwapMove {
            assert_eq!(l.primary.region.size, 6 * sector);
            assert_eq!(l.primary.spare.map(|(_, s)| s), Some(sector));
        }
    }
}

fn spec(primary: std::ops::Range<usize>, secondary: std::ops::Range<usize>) -> LayoutSpec {
    LayoutSpec {
        journal: [0, 1],
        counter: 2,
        scratch: None,
        primary,
        secondary,
    }
}

#[test]
fn geometries_that_cannot_host_a_strategy_are_named_errors() {
    let g = Geometry::uniform(4096, 16, 8).unwrap();
    // swap-move needs the primary one sector larger, swap-offset the secondary.
    assert_eq!(
        Layout::new(&g, BootMode::SwapMove, &spec(3..8, 8..13)).unwrap_err(),
        LayoutError::NoExtraSector {
            mode: BootMode::SwapMove,
            bigger: Slot::Primary,
            primary: 5,
            secondary: 5
        }
    );
    assert_eq!(
        Layout::new(&g, BootMode::SwapOffset, &spec(3..8, 8..13))
            .unwrap_err()
            .to_string(),
        "swap-offset needs the secondary slot exactly one sector larger than the other: primary 5 sectors, secondary 5"
    );
    assert!(Layout::new(&g, BootMode::SwapOffset, &spec(3..8, 8..14)).is_ok());
    assert!(Layout::new(&g, BootMode::SwapMove, &spec(3..9, 9..14)).is_ok());
    // Uneven sectors: swap-move and swap-offset need one sector size.
    let uneven = Geometry::from_sizes(
        "uneven",
        &[4096, 4096, 4096, 4096, 8192, 4096, 4096, 8192, 4096],
        8,
    )
    .unwrap();
    assert!(matches!(
        Layout::new(&uneven, BootMode::SwapMove, &spec(3..6, 6..8)),
        Err(LayoutError::UnevenSectors {
            mode: BootMode::SwapMove,
            ..
        })
    ));
    assert_eq!(
        Layout::auto(&uneven, BootMode::SwapOffset)
            .unwrap_err()
            .to_string(),
        "no two runs of sectors in this geometry can be swap-offset's slots (uniform sectors, the secondary one sector larger)"
    );
    // A trailer that leaves no image sector: MCUboot's 3 × 32-byte status entries per sector,
    // keys and fields at BOOT_MAX_ALIGN 32, and the attempt units, in 512-byte sectors.
    let tiny = Geometry::uniform(512, 3 + 2 * 2 + 1, 32).unwrap();
    let err = Layout::auto(&tiny, BootMode::SwapScratch).unwrap_err();
    assert!(
        matches!(
            err,
            LayoutError::TrailerTooLarge {
                mode: BootMode::SwapScratch,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_old_image_of_a_swap_offset_sits_one_sector_earlier() {
    let mut e = ecu(BootMode::SwapOffset);
    let old = image(1, HEALTHY);
    e.stage_update(&image(2, HEALTHY), true).unwrap();
    e.reset().unwrap();
    assert_eq!(running(&e), (2, Slot::Primary, false));
    let spare = e.config().layout.secondary.spare.unwrap().0;
    let mut bytes = vec![0; old.len()];
    e.flash_mut().set_powered(true);
    e.flash().read(spare, &mut bytes).unwrap();
    assert_eq!(
        bytes, old,
        "the old image starts at the secondary's first sector"
    );
}
