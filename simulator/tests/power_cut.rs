//! The exhaustive power-cut test: for every MCUboot strategy (swap-scratch, swap-move,
//! swap-offset, overwrite, direct-xip), several geometries (uniform, uneven, erased-zero) and
//! two write units, an update (test + confirm, test + never confirm, test +
//! crash, test + hang, permanent) is interrupted at every flash operation in all three cut
//! variants, then driven to a stable state. Every run checks the invariant (never bricked,
//! never a mixed image), the expected final image, consistent trailers and counter, and that
//! the cut fired exactly where it was armed. Then seeded random chains of up to 5 cuts.
//! Overwrite cannot revert: there every flow must end with the new image, and once the copy
//! has begun the old image must never boot again (see `ecu_sim::powercut`).
//!
//! Replay one case: `cargo nextest run -p ecu-sim --test power_cut <name> --no-capture`; each
//! failure names the geometry, flow, operation index and variant.

use ecu_sim::boot::BootMode;
use ecu_sim::flash::Geometry;
use ecu_sim::powercut::{self, CutPlan, Flow, Setup};

const IMAGE_SIZE: usize = 9 * 1024;
/// Different tears tried at every torn point.
const TEAR_SEEDS: u64 = 4;

fn geometries(align: usize, mode: BootMode) -> Vec<Geometry> {
    let k = 1024;
    if matches!(mode, BootMode::SwapMove | BootMode::SwapOffset) {
        // Uniform slot sectors, one more sector for the larger slot (no scratch).
        return vec![
            Geometry::uniform(4 * k, 3 + 2 * 5 + 1, align).unwrap(),
            Geometry::from_sizes(
                "1Kx25",
                &[[4 * k; 3].as_slice(), &[k; 2 * 12 + 1]].concat(),
                align,
            )
            .unwrap()
            .with_erased(0x00)
            .unwrap(),
            Geometry::uniform(2 * k, 3 + 2 * 8 + 1, align).unwrap(),
            // STM32F4-like: the slots are the 128 KiB sectors (4 + 3 of them).
            Geometry::stm32f4_1mib(align).unwrap(),
        ];
    }
    vec![
        // 3 metadata sectors, 2 slots of 5 × 4 KiB, 1 scratch.
        Geometry::uniform(4 * k, 3 + 2 * 5 + 1, align).unwrap(),
        // Small 1 KiB slot sectors, many of them; 0x00 as the erased value.
        Geometry::from_sizes(
            "1Kx24",
            &[[4 * k; 3].as_slice(), &[k; 2 * 12 + 1]].concat(),
            align,
        )
        .unwrap()
        .with_erased(0x00)
        .unwrap(),
        // Uneven slots: 2+2+4+8 KiB image sectors and a 4 KiB trailer sector.
        Geometry::from_sizes(
            "mixed",
            &[
                4 * k,
                4 * k,
                4 * k,
                2 * k,
                2 * k,
                4 * k,
                8 * k,
                4 * k,
                2 * k,
                2 * k,
                4 * k,
                8 * k,
                4 * k,
                8 * k,
            ],
            align,
        )
        .unwrap(),
        // STM32F4-like 16/64/128 KiB map.
        Geometry::stm32f4_1mib(align).unwrap(),
    ]
}

fn sweep(mode: BootMode, align: usize) {
    sweep_images(mode, align, false);
}

/// The same sweep with encrypted images ([`Setup::new_encrypted`]): the new image staged
/// encrypted, the old one re-encrypted when a swap moves it into the secondary slot.
fn sweep_encrypted(mode: BootMode, align: usize) {
    sweep_images(mode, align, true);
}

fn sweep_images(mode: BootMode, align: usize, encrypted: bool) {
    let mut total_points = 0;
    let mut report = Vec::new();
    for geometry in geometries(align, mode) {
        let name = format!(
            "{}/align {align}/erased {:#04x}",
            geometry.name(),
            geometry.erased()
        );
        let flows = Flow::ALL
            .iter()
            .map(|&f| (f, 1))
            .chain([(Flow::TestConfirm, 3)]);
        for (flow, attempts) in flows {
            let build = if encrypted {
                Setup::new_encrypted
            } else {
                Setup::new
            };
            let setup = build(geometry.clone(), mode, flow, attempts, IMAGE_SIZE, 42).unwrap();
            let s = powercut::sweep(&setup, TEAR_SEEDS)
                .unwrap_or_else(|v| panic!("{mode} {name} {flow:?}: clean run: {v}"));
            assert!(
                s.failures.is_empty(),
                "{mode} {name} {flow:?} (max attempts {attempts}): {} failure(s):\n{}",
                s.failures.len(),
                s.failures.join("\n")
            );
            assert_eq!(
                s.points,
                (2 + TEAR_SEEDS) * s.ops,
                "one point per op, variant and tear"
            );
            assert_eq!(s.fired, s.points, "every armed cut fired at its op");
            assert!(
                s.ops > 10,
                "{name} {flow:?}: suspiciously few ops ({})",
                s.ops
            );
            total_points += s.points;
            report.push(format!("{name} {flow:?}/{attempts}: {} ops", s.ops));
        }
    }
    let images = if encrypted { "encrypted" } else { "plain" };
    println!(
        "{mode} align {align} {images}: {total_points} cut points checked, all fired, 0 failures"
    );
    for line in report {
        println!("  {line}");
    }
}

#[test]
fn every_flash_op_swap_align1() {
    sweep(BootMode::SwapScratch, 1);
}

#[test]
fn every_flash_op_swap_align32() {
    sweep(BootMode::SwapScratch, 32);
}

#[test]
fn every_flash_op_swap_move_align1() {
    sweep(BootMode::SwapMove, 1);
}

#[test]
fn every_flash_op_swap_move_align32() {
    sweep(BootMode::SwapMove, 32);
}

#[test]
fn every_flash_op_swap_offset_align1() {
    sweep(BootMode::SwapOffset, 1);
}

#[test]
fn every_flash_op_swap_offset_align32() {
    sweep(BootMode::SwapOffset, 32);
}

#[test]
fn every_flash_op_overwrite_align1() {
    sweep(BootMode::Overwrite, 1);
}

#[test]
fn every_flash_op_overwrite_align32() {
    sweep(BootMode::Overwrite, 32);
}

#[test]
fn every_flash_op_ab_align1() {
    sweep(BootMode::DirectXip, 1);
}

#[test]
fn every_flash_op_ab_align32() {
    sweep(BootMode::DirectXip, 32);
}

#[test]
fn every_flash_op_swap_encrypted_align1() {
    sweep_encrypted(BootMode::SwapScratch, 1);
}

#[test]
fn every_flash_op_swap_encrypted_align32() {
    sweep_encrypted(BootMode::SwapScratch, 32);
}

#[test]
fn every_flash_op_swap_move_encrypted_align1() {
    sweep_encrypted(BootMode::SwapMove, 1);
}

#[test]
fn every_flash_op_swap_move_encrypted_align32() {
    sweep_encrypted(BootMode::SwapMove, 32);
}

#[test]
fn every_flash_op_swap_offset_encrypted_align1() {
    sweep_encrypted(BootMode::SwapOffset, 1);
}

#[test]
fn every_flash_op_swap_offset_encrypted_align32() {
    sweep_encrypted(BootMode::SwapOffset, 32);
}

#[test]
fn every_flash_op_overwrite_encrypted_align1() {
    sweep_encrypted(BootMode::Overwrite, 1);
}

#[test]
fn every_flash_op_overwrite_encrypted_align32() {
    sweep_encrypted(BootMode::Overwrite, 32);
}

fn random_chains(mode: BootMode) {
    let mut runs = 0;
    let mut cuts = 0;
    for (g, geometry) in geometries(8, mode).into_iter().enumerate() {
        for flow in Flow::ALL {
            let setup = Setup::new(geometry.clone(), mode, flow, 2, IMAGE_SIZE, 7).unwrap();
            // Each cut lands within one clean update's worth of operations after power returns.
            let window = powercut::run(&setup, CutPlan::None).unwrap().ops;
            for seed in 0..12u64 {
                let seed = seed + 1000 * g as u64;
                let report = powercut::run(&setup, CutPlan::random(seed, 5, window))
                    .unwrap_or_else(|v| {
                        panic!(
                            "{mode} {} {flow:?} random chain seed {seed}: {v}",
                            geometry.name()
                        )
                    });
                let expected = match flow {
                    Flow::Permanent => Some(setup.new_version),
                    Flow::TestConfirm => None,
                    // Overwrite cannot revert: a test image is installed for good.
                    _ if !mode.can_revert() => Some(setup.new_version),
                    _ => Some(setup.old_version),
                };
                if let Some(v) = expected {
                    assert_eq!(
                        report.final_version,
                        v,
                        "{mode} {} {flow:?} seed {seed}",
                        geometry.name()
                    );
                }
                assert!(report.cuts.len() <= 5);
                runs += 1;
                cuts += report.cuts.len();
            }
        }
    }
    println!("{mode}: {runs} random chains, {cuts} cuts fired, 0 failures");
    assert!(
        cuts > runs,
        "chains should fire more than one cut on average"
    );
}

#[test]
fn random_cut_chains_swap_mode() {
    random_chains(BootMode::SwapScratch);
}

#[test]
fn random_cut_chains_ab_mode() {
    random_chains(BootMode::DirectXip);
}

#[test]
fn random_cut_chains_swap_move() {
    random_chains(BootMode::SwapMove);
}

#[test]
fn random_cut_chains_swap_offset() {
    random_chains(BootMode::SwapOffset);
}

#[test]
fn random_cut_chains_overwrite() {
    random_chains(BootMode::Overwrite);
}
