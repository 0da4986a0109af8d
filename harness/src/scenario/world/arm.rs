//! Arming the faults that act inside the ECU: flash-operation cuts (rules in the flash model),
//! cuts on an ECU event inside a boot (at the boot's next flash operation), what a fault can
//! act on at all (a bit rot needs its region), and the regions' address ranges.

use std::sync::Arc;

use ecu_sim::boot::Layout;
use ecu_sim::flash::{CutRule, CutVariant, EventCut, OpKind};

use super::{World, event_name};
use crate::ota::sim::SimEcu;
use crate::scenario::schema::{Action, BitRot, CutVariantSpec, Fault, OpKindSpec, Region, Trigger};
use crate::scenario::trace::Source;

impl World {
    /// Apply a fault's action now (a sweep's fork); counts as fault `index` firing.
    pub fn fire_now(&mut self, sim: &mut SimEcu, now: u64, index: usize) {
        let f = self.scenario.faults[index].clone();
        if !self.can_act(now, index, &f.action) {
            return;
        }
        let text = self.engine.fire(index, "");
        self.push_fired(now, index, text);
        self.apply(sim, now, vec![f.action]);
    }

    /// Arm the faults that live in the flash model: `flash_op` triggers, and power cuts on an
    /// ECU event (armed by a boot's event at the boot's next flash operation, so that the cut
    /// lands inside the bootloader's work).
    pub fn arm_flash_faults(&mut self, sim: &mut SimEcu) {
        let faults = self.scenario.faults.clone();
        for (i, f) in faults.iter().enumerate() {
            match f.when {
                Trigger::FlashOp(_) => self.arm_flash_fault(sim, i, f),
                Trigger::Event(_) => self.arm_event_cut(sim, i, f),
                _ => {}
            }
        }
    }

    /// Let fault `i` (an `event` trigger with a power cut) wait in the ECU for its event.
    pub(super) fn arm_event_cut(&mut self, sim: &mut SimEcu, i: usize, f: &Fault) {
        let (Trigger::Event(name), Action::PowerCut(p)) = (&f.when, &f.action) else {
            return;
        };
        let id = self.next_rule;
        self.next_rule += 1;
        let name = name.clone();
        sim.ecu.add_event_cut(EventCut {
            id,
            matches: Arc::new(move |k| event_name(k) == name),
            variant: cut_variant(p.variant),
        });
        self.event_cuts.push((id, i, p.restore_after_ms * 1000));
    }

    /// The faults of event cuts that an event of the boot just observed armed and that fired
    /// in it (their `power_lost` follows). The ones the event did not arm in a boot (a
    /// firmware's event) or that found no flash operation after it in the boot are taken
    /// out of the ECU: they fire when their event is seen, as any other event trigger.
    pub(super) fn event_cuts_in_boot(&mut self, sim: &mut SimEcu, name: &str) -> Vec<usize> {
        let mut landed = Vec::new();
        let mut k = 0;
        while k < self.event_cuts.len() {
            let (id, fault, _) = self.event_cuts[k];
            if !matches!(&self.scenario.faults[fault].when, Trigger::Event(n) if n == name) {
                k += 1;
                continue;
            }
            let waiting = sim.ecu.remove_event_cut(id);
            let armed = sim.ecu.flash().cut_rules().iter().any(|r| r.id == id);
            if !waiting && !armed {
                landed.push(fault);
                k += 1;
            } else {
                sim.ecu.flash_mut().remove_cut_rule(id);
                self.event_cuts.remove(k);
            }
        }
        landed
    }

    /// Arm fault `i` (a `flash_op` trigger) in the flash model; `n` counts from now.
    pub fn arm_flash_fault(&mut self, sim: &mut SimEcu, i: usize, f: &Fault) {
        let Trigger::FlashOp(op) = &f.when else {
            return;
        };
        let (variant, restore_ms) = match &f.action {
            Action::PowerCut(p) => (cut_variant(p.variant), p.restore_after_ms),
            // Other actions at a flash op: cut `after` and restore at once, then act.
            _ => (CutVariant::After, 0),
        };
        let ranges = op.region.map(|r| self.region_ranges(r)).unwrap_or_default();
        let id = self.next_rule;
        self.next_rule += 1;
        let rule = CutRule {
            id,
            kind: op.kind.map(|k| match k {
                OpKindSpec::Erase => OpKind::Erase,
                OpKindSpec::Write => OpKind::Write,
            }),
            ranges,
            boot: match (op.boot, op.in_boot) {
                (Some(n), _) => Some(Some(n)),
                (None, true) => Some(None),
                (None, false) => None,
            },
            firmware_only: op.in_firmware,
            nth: op.n,
            variant,
        };
        sim.ecu.flash_mut().add_cut_rule(rule);
        self.flash_cuts.push((id, i, restore_ms * 1000));
    }

    /// Whether fault `i`'s action can do something now; if not, the trace says why and the
    /// fault does not fire (a check of faults that never fired then fails the run).
    pub(super) fn can_act(&mut self, now: u64, i: usize, action: &Action) -> bool {
        let Action::BitRot(b) = action else {
            return true;
        };
        match self.bit_rot_target(b) {
            Ok(_) => true,
            Err(why) => {
                self.push(
                    now,
                    Source::Fault,
                    "bit_rot",
                    format!("the bit rot of fault {} did nothing: {why}", i + 1),
                );
                self.engine.idle(i, why);
                false
            }
        }
    }

    /// The address a bit rot flips bits at: inside its region, or why not.
    pub(super) fn bit_rot_target(&self, b: &BitRot) -> Result<u32, String> {
        let region = format!("{:?}", b.region).to_lowercase();
        let Some(r) = self.region_ranges(b.region).into_iter().next() else {
            return Err(format!("this layout has no {region} region"));
        };
        if b.mask == 0 {
            return Err("mask 0x00 flips no bit".into());
        }
        match r.start.checked_add(b.offset) {
            Some(addr) if addr < r.end => Ok(addr),
            _ => Err(format!(
                "offset {:#x} is outside the {region} region ({:#x} bytes at {:#x})",
                b.offset,
                r.end - r.start,
                r.start
            )),
        }
    }

    /// The absolute address ranges of a region.
    pub fn region_ranges(&self, r: Region) -> Vec<std::ops::Range<u32>> {
        region_ranges(&self.layout, r)
    }
}

/// The absolute address ranges of a region of `l`.
pub fn region_ranges(l: &Layout, r: Region) -> Vec<std::ops::Range<u32>> {
    let span = |offset: u32, size: u32| offset..offset + size;
    match r {
        Region::Primary => vec![span(l.primary.region.offset, l.primary.region.size)],
        Region::Secondary => vec![span(l.secondary.region.offset, l.secondary.region.size)],
        Region::Scratch => l.scratch.iter().map(|s| span(s.offset, s.size)).collect(),
        Region::Trailer => vec![
            span(l.primary.trailer_offset, l.primary.trailer_size),
            span(l.secondary.trailer_offset, l.secondary.trailer_size),
        ],
        Region::Journal => l.journal.iter().map(|j| span(j.offset, j.size)).collect(),
    }
}

fn cut_variant(v: CutVariantSpec) -> CutVariant {
    match v {
        CutVariantSpec::Before => CutVariant::Before,
        CutVariantSpec::Torn => CutVariant::Torn,
        CutVariantSpec::After => CutVariant::After,
    }
}
