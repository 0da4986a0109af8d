use std::sync::Arc;

use super::*;

fn small(align: usize) -> SimFlash {
    SimFlash::new(Geometry::uniform(256, 4, align).unwrap(), 1)
}

#[test]
fn write_then_read_back() {
    let mut f = small(4);
    f.write(0x104, &[1, 2, 3, 4]).unwrap();
    let mut buf = [0; 8];
    f.read(0x100, &mut buf).unwrap();
    assert_eq!(buf, [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
    assert_eq!(f.ops(), 1);
    assert_eq!(f.stats().writes, 1);
}

#[test]
fn rejects_unaligned_write_naming_address() {
    let mut f = small(8);
    let e = f.write(0x04, &[0; 8]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "write 0x00000004+8 is not aligned to the 8-byte write unit"
    );
    let e = f.write(0x08, &[0; 4]).unwrap_err();
    assert!(matches!(
        e,
        FlashError::Unaligned {
            addr: 8,
            len: 4,
            align: 8
        }
    ));
    assert_eq!(f.ops(), 0, "rejected writes are not operations");
}

#[test]
fn rejects_write_to_programmed_byte() {
    let mut f = small(1);
    f.write(0x10, &[0xF0]).unwrap();
    let e = f.write(0x0F, &[0xAA, 0xAA]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "write to 0x00000010, which was programmed and not erased since"
    );
    // Even writing the erased value counts as programming.
    f.write(0x20, &[0xFF]).unwrap();
    assert!(matches!(
        f.write(0x20, &[0x00]),
        Err(FlashError::NotErased { addr: 0x20 })
    ));
    f.erase(0, 256).unwrap();
    f.write(0x10, &[0x0F]).unwrap();
}

#[test]
fn program_only_moves_bits_away_from_erased() {
    // With 0x00 erased, programming ORs.
    let g = Geometry::uniform(64, 2, 1)
        .unwrap()
        .with_erased(0x00)
        .unwrap();
    let mut f = SimFlash::new(g, 0);
    let mut b = [0xAA];
    f.read(0, &mut b).unwrap();
    assert_eq!(b, [0x00]);
    f.write(0, &[0x5A]).unwrap();
    f.read(0, &mut b).unwrap();
    assert_eq!(b, [0x5A]);
    assert!(
        Geometry::uniform(64, 2, 1)
            .unwrap()
            .with_erased(0x55)
            .is_err()
    );
}

#[test]
fn rejects_out_of_bounds_and_partial_sector_erase() {
    let mut f = small(1);
    assert_eq!(
        f.write(0x3FF, &[0, 0]).unwrap_err().to_string(),
        "access 0x000003ff+2 is outside the flash (size 0x400)"
    );
    assert_eq!(
        f.erase(0x80, 0x100).unwrap_err().to_string(),
        "erase 0x00000080+256 does not cover whole sectors"
    );
    let mut buf = [0; 2];
    assert!(matches!(
        f.read(0x3FF, &mut buf),
        Err(FlashError::OutOfBounds { .. })
    ));
    assert!(matches!(
        f.read(u32::MAX, &mut buf),
        Err(FlashError::OutOfBounds { .. })
    ));
}

#[test]
fn bad_geometries_are_refused() {
    assert!(Geometry::uniform(256, 4, 3).is_err());
    assert!(Geometry::from_sizes("x", &[256, 100], 8).is_err());
    assert!(Geometry::from_sizes("x", &[], 8).is_err());
}

#[test]
fn uneven_map_lookups() {
    let g = Geometry::stm32f4_1mib(4).unwrap();
    assert_eq!(g.size(), 1024 * 1024);
    assert_eq!(g.sectors().len(), 12);
    assert_eq!(g.sector_index(0x0000_3FFF), Some(0));
    assert_eq!(g.sector_index(0x0001_0000), Some(4));
    assert_eq!(g.sector_index(0x0002_0000), Some(5));
    assert_eq!(g.sector_index(0x000F_FFFF), Some(11));
    assert_eq!(g.sector_index(0x0010_0000), None);
    assert_eq!(g.sectors_covering(0x0001_0000, 0x3_0000).unwrap(), 4..6);
    assert!(g.sectors_covering(0x0001_0000, 0x1_0000 + 0x1000).is_err());
}

#[test]
fn each_sector_erase_is_one_operation() {
    let mut f = small(1);
    f.erase(0, 0x300).unwrap();
    assert_eq!(f.ops(), 3);
    assert_eq!(f.stats().erases, 3);
    assert!(f.stats().busy_us > 0);
}

#[test]
fn cut_before_leaves_cells_untouched() {
    let mut f = small(4);
    f.arm_cut(0, CutVariant::Before);
    assert!(matches!(
        f.write(0, &[0; 8]),
        Err(FlashError::PowerLost { op: 0 })
    ));
    assert_eq!(f.take_fired().unwrap().variant, CutVariant::Before);
    assert!(matches!(
        f.read(0, &mut [0; 1]),
        Err(FlashError::PowerLost { .. })
    ));
    f.restore_power();
    assert!(f.is_erased(0, 8).unwrap());
}

#[test]
fn cut_after_completes_the_operation() {
    let mut f = small(4);
    f.arm_cut(0, CutVariant::After);
    assert!(f.write(0, &[0; 8]).is_err());
    f.restore_power();
    let mut b = [0xEE; 8];
    f.read(0, &mut b).unwrap();
    assert_eq!(b, [0; 8]);
}

#[test]
fn torn_write_lands_a_prefix_and_is_seeded() {
    let torn = |seed| {
        let mut f = SimFlash::new(Geometry::uniform(256, 1, 4).unwrap(), seed);
        f.arm_cut(0, CutVariant::Torn);
        assert!(f.write(0, &[0u8; 64]).is_err());
        f.restore_power();
        let mut b = [0; 64];
        f.read(0, &mut b).unwrap();
        b
    };
    let a = torn(7);
    assert_eq!(a, torn(7), "same seed, same tear");
    // A prefix of whole zero units, then at most one half-programmed unit, then erased cells.
    let first_not_zero = a.iter().position(|&b| b != 0).unwrap();
    let unit = first_not_zero / 4;
    assert!(a[(unit + 1) * 4..].iter().all(|&b| b == 0xFF), "{a:?}");
    let differs = (0..64u64).any(|s| torn(s) != a);
    assert!(differs, "tear point depends on the seed");
}

#[test]
fn torn_erase_needs_a_new_erase() {
    let mut f = small(1);
    f.write(0, &[0u8; 256]).unwrap();
    f.arm_cut(1, CutVariant::Torn);
    assert!(f.erase(0, 256).is_err());
    f.restore_power();
    let mut b = [0; 256];
    f.read(0, &mut b).unwrap();
    assert!(
        b.contains(&0xFF) && b.contains(&0x00),
        "neither erased nor intact"
    );
    assert!(matches!(
        f.write(0, &[0]),
        Err(FlashError::NotErased { .. })
    ));
    let pos = b.iter().position(|&x| x == 0xFF).unwrap() as u32;
    assert!(
        f.write(pos, &[0]).is_err(),
        "even cells that read erased need an erase"
    );
    f.erase(0, 256).unwrap();
    f.write(0, &[1]).unwrap();
}

#[test]
fn armed_cut_fires_once_at_its_index() {
    let mut f = small(1);
    f.arm_cut(2, CutVariant::Before);
    f.write(0, &[1]).unwrap();
    f.write(1, &[1]).unwrap();
    assert!(f.write(2, &[1]).is_err());
    assert_eq!(f.take_fired().unwrap().op.index, 2);
    f.restore_power();
    f.write(3, &[1]).unwrap();
    assert_eq!(f.take_fired(), None);
}

#[test]
fn cut_rules_count_matching_operations_only() {
    let mut f = small(1);
    // The 2nd write at or above address 4, during boot 3.
    f.add_cut_rule(CutRule {
        id: 1,
        kind: Some(OpKind::Write),
        ranges: std::iter::once(4..u32::MAX).collect(),
        boot: Some(Some(3)),
        firmware_only: false,
        nth: 2,
        variant: CutVariant::After,
    });
    f.write(4, &[1]).unwrap(); // firmware: not counted
    f.set_context(OpContext::Boot(2));
    f.write(5, &[1]).unwrap(); // boot 2: not counted
    f.set_context(OpContext::Boot(3));
    f.write(0, &[1]).unwrap(); // below the range
    f.write(6, &[1]).unwrap(); // 1st match
    f.erase(0, 256).unwrap(); // an erase
    assert_eq!(f.cut_rules().len(), 1);
    assert!(f.write(7, &[1]).is_err(), "2nd match fires");
    let fired = f.take_fired().unwrap();
    assert_eq!((fired.op.index, fired.variant), (5, CutVariant::After));
    assert!(f.cut_rules().is_empty(), "a rule fires once");
    f.restore_power();
    f.write(8, &[1]).unwrap();
    // Firmware-only rules ignore the bootloader.
    f.add_cut_rule(CutRule {
        id: 2,
        kind: None,
        ranges: Vec::new(),
        boot: None,
        firmware_only: true,
        nth: 1,
        variant: CutVariant::Before,
    });
    f.write(9, &[1]).unwrap();
    f.set_context(OpContext::Firmware);
    assert!(f.write(10, &[1]).is_err());
}

#[test]
fn bit_rot_flips_without_counting() {
    let mut f = small(1);
    f.write(0, &[0x0F]).unwrap();
    f.flip_bits(0, 0x01).unwrap();
    let mut b = [0];
    f.read(0, &mut b).unwrap();
    assert_eq!(b, [0x0E]);
    assert_eq!(f.ops(), 1);
}

#[test]
fn clones_are_independent_and_share_untouched_sectors() {
    let mut a = small(1);
    a.write(0, &[1]).unwrap();
    let mut b = a.clone();
    b.write(1, &[2]).unwrap();
    let mut x = [0; 2];
    a.read(0, &mut x).unwrap();
    assert_eq!(x, [1, 0xFF]);
    assert!(Arc::ptr_eq(&a.sectors[3], &b.sectors[3]));
}

#[test]
fn random_factory_contents_must_be_erased_first() {
    let mut f = SimFlash::new_random(Geometry::uniform(256, 2, 4).unwrap(), 3);
    assert!(matches!(
        f.write(0, &[0; 4]),
        Err(FlashError::NotErased { addr: 0 })
    ));
    f.erase(0, 256).unwrap();
    f.write(0, &[0; 4]).unwrap();
}

#[test]
fn file_backing_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    let g = Geometry::uniform(256, 4, 4).unwrap();
    {
        let mut f = FileFlash::open(&path, g.clone(), 0).unwrap();
        f.write(0x100, &[1, 2, 3, 4]).unwrap();
        f.sim_mut().arm_cut(1, CutVariant::After);
        assert!(f.write(0x200, &[5, 6, 7, 8]).is_err());
    }
    let mut f = FileFlash::open(&path, g.clone(), 0).unwrap();
    let mut b = [0; 4];
    f.read(0x100, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    f.read(0x200, &mut b).unwrap();
    assert_eq!(b, [5, 6, 7, 8], "an op completed before the cut is on disk");
    assert!(matches!(
        f.write(0x100, &[0; 4]),
        Err(FlashError::NotErased { .. })
    ));
    f.erase(0x100, 0x100).unwrap();
    drop(f);
    let f = FileFlash::open(&path, g, 0).unwrap();
    f.read(0x100, &mut b).unwrap();
    assert_eq!(b, [0xFF; 4]);
    let wrong = Geometry::uniform(256, 8, 4).unwrap();
    assert!(matches!(
        FileFlash::open(&path, wrong, 0),
        Err(FlashError::BadGeometry(_))
    ));
}

/// The fingerprint a flash would have if every sector were hashed afresh.
fn fresh_fingerprint(f: &SimFlash) -> [u8; 32] {
    let mut copy = SimFlash::new(f.geometry().clone(), 0);
    for (s, cells) in f.sectors.iter().enumerate() {
        let mine = super::sim::cells_mut(&mut copy.sectors, s);
        mine.bytes.clone_from(&cells.bytes);
        mine.programmed.clone_from(&cells.programmed);
    }
    copy.contents_fingerprint()
}

#[test]
fn fingerprint_follows_every_change_and_is_shared_by_copies() {
    let mut a = small(4);
    let empty = a.contents_fingerprint();
    a.write(0, &[1, 2, 3, 4]).unwrap();
    let written = a.contents_fingerprint();
    assert_ne!(written, empty);
    assert_eq!(written, fresh_fingerprint(&a));
    // A copy shares the sectors' hashes; its own change is its own.
    let mut b = a.clone();
    assert_eq!(b.contents_fingerprint(), written);
    b.write(256, &[0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    // Writing erased values changes no byte but marks the cells programmed: a later write
    // there is refused, so the state differs.
    assert_ne!(b.contents_fingerprint(), written);
    assert_eq!(b.contents_fingerprint(), fresh_fingerprint(&b));
    assert_eq!(a.contents_fingerprint(), written);
    assert!(Arc::ptr_eq(&a.sectors[0], &b.sectors[0]));
    // Erasing brings back the empty sector's hash; bit rot is a change too.
    b.erase(256, 256).unwrap();
    b.erase(0, 256).unwrap();
    assert_eq!(b.contents_fingerprint(), empty);
    b.flip_bits(3, 0x01).unwrap();
    assert_ne!(b.contents_fingerprint(), empty);
    assert_eq!(b.contents_fingerprint(), fresh_fingerprint(&b));
}

#[test]
fn torn_operations_change_the_fingerprint_as_they_change_the_cells() {
    let mut a = small(4);
    a.write(0, &[0; 8]).unwrap();
    let before = a.contents_fingerprint();
    let mut torn = a.clone();
    torn.arm_cut(torn.ops(), CutVariant::Torn);
    assert!(torn.erase(0, 256).is_err());
    torn.restore_power();
    assert_ne!(torn.contents_fingerprint(), before);
    assert_eq!(torn.contents_fingerprint(), fresh_fingerprint(&torn));
    let mut cut_before = a.clone();
    cut_before.arm_cut(cut_before.ops(), CutVariant::Before);
    assert!(cut_before.erase(0, 256).is_err());
    assert_eq!(cut_before.contents_fingerprint(), before);
}
