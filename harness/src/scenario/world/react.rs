//! The world reacting: faults firing on observations and their actions applied, ECU events,
//! the invariants checked at every boot, job states and the clock.

use std::sync::Arc;

use ecu_sim::boot::Slot;
use ecu_sim::ecu::{BootedBytes, EcuError};
use ecu_sim::event::{Event, EventKind};

use super::{Evidence, ImageEvent, Step, Violation, World, event_name, progress_only, state_name};
use crate::ota::sim::SimEcu;
use crate::scenario::engine::{Match, Observation};
use crate::scenario::schema::{Action, DownloadFault, Trigger};
use crate::scenario::trace::{Source, TraceKind};

impl World {
    /// Fire the faults `obs` triggers and that can act now; returns their actions, for
    /// [`World::apply`].
    pub(super) fn fire(&mut self, now: u64, obs: Observation<'_>) -> Vec<Action> {
        self.fire_except(now, obs, &[])
            .into_iter()
            .map(|m| m.action)
            .collect()
    }

    /// [`World::fire`] without the faults in `skip` (event cuts that landed in a boot); the
    /// matches that fired.
    pub(super) fn fire_except(
        &mut self,
        now: u64,
        obs: Observation<'_>,
        skip: &[usize],
    ) -> Vec<Match> {
        let mut fired = Vec::new();
        for m in self.engine.matches(&obs) {
            if skip.contains(&m.fault) || !self.can_act(now, m.fault, &m.action) {
                continue;
            }
            let text = self.engine.fire(m.fault, &m.what);
            self.push_fired(now, m.fault, text);
            fired.push(m);
        }
        fired
    }

    /// Power went off at `at_us` (the world cut it, or a cut armed in the flash fired): it comes
    /// back `restore_us` later; with `kill_manager` the OTA manager loses power too and resumes
    /// from its store then.
    pub(super) fn power_cut_at(&mut self, at_us: u64, restore_us: u64, kill_manager: bool) {
        self.restore_at.push(at_us + restore_us);
        self.wake.notify_one();
        if kill_manager {
            self.manager_down_until = at_us + restore_us;
            self.killed_at = at_us;
            self.kill.notify_one();
            self.kill_pending = true;
        }
    }

    /// Carry out actions now.
    pub(super) fn apply(&mut self, sim: &mut SimEcu, now: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::PowerCut(p) => {
                    if sim.ecu.is_powered() {
                        let _ = sim.ecu.advance_to(now);
                        sim.ecu.power_off();
                    }
                    self.power_cut_at(now, p.restore_after_ms * 1000, p.kill_manager);
                }
                Action::Reset => {
                    let _ = sim.ecu.advance_to(now);
                    if let Err(e) = sim.ecu.reset()
                        && !matches!(e, EcuError::PowerLost { .. })
                    {
                        self.push(now, Source::Ecu, "reset_failed", format!("reset: {e}"));
                    }
                }
                Action::Can(f) => self.can_next.push_back(f),
                Action::DropConnection => self.drop_next = true,
                Action::Download(DownloadFault::Throttle(bps)) => self.throttle = Some(bps),
                Action::Download(f) => self.download_next.push_back(f),
                Action::FlipTransferBits(mask) => self.flip_next_block = Some(mask),
                Action::BitRot(b) => {
                    let Ok(addr) = self.bit_rot_target(&b) else {
                        continue;
                    };
                    let r = sim.ecu.flash_mut().flip_bits(addr, b.mask);
                    self.push(
                        now,
                        Source::Fault,
                        "bit_rot",
                        match r {
                            Ok(()) => format!("bits {:#04x} flipped at {addr:#x}", b.mask),
                            Err(e) => format!("bit rot at {addr:#x} failed: {e}"),
                        },
                    );
                }
                Action::InjectNrc(n) if n.nrc == 0x78 => self.storm = Some((n.service, n.count)),
                Action::InjectNrc(n) => self.nrc.push((n.service, n.nrc, n.count)),
                Action::CorruptRequest(c) => self.corrupt.push((c.service, c.subfunction, c.count)),
                Action::KillManager => {
                    self.killed_at = now;
                    self.kill.notify_one();
                    self.kill_pending = true;
                    self.kill_pending = true;
                }
                Action::SwapArtifact(kind) => {
                    self.swapped = self
                        .swaps
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, b)| b.clone());
                    if self.swapped.is_some() {
                        self.push(
                            now,
                            Source::Fault,
                            "artifact_swapped",
                            format!("the server now serves the {} image", kind.name()),
                        );
                    }
                }
            }
        }
    }

    /// Read the ECU's events: trace them, check the invariants, fire event triggers.
    pub fn observe(&mut self, sim: &mut SimEcu, now: u64) {
        loop {
            let events = sim.ecu.drain_events();
            if events.is_empty() {
                return;
            }
            let booted = sim.ecu.drain_booted();
            for e in events {
                self.on_event(sim, now, e, &booted);
            }
        }
    }

    pub(super) fn on_event(
        &mut self,
        sim: &mut SimEcu,
        now: u64,
        e: Event,
        booted: &[BootedBytes],
    ) {
        let name = event_name(&e.kind);
        let kind = TraceKind::Ecu(Arc::new(e.kind.clone()));
        self.push_kind(e.at_us, Source::Ecu, &name, e.kind.to_string(), kind);
        match &e.kind {
            EventKind::BootStarted { boot } => {
                self.boots += 1;
                self.current_boot = *boot;
                let actions = self.fire(e.at_us, Observation::Boot(*boot));
                self.apply(sim, now.max(e.at_us), actions);
            }
            EventKind::Booted {
                slot,
                version,
                test,
                ..
            } => {
                let boot = self.current_boot;
                let image = self.check_booted(booted, boot, *slot, &version.to_string(), e.at_us);
                if *test {
                    self.image_events.push(ImageEvent::TestBoot {
                        at_us: e.at_us,
                        slot: *slot,
                        image,
                    });
                }
            }
            EventKind::NoBootableImage { reasons } => {
                self.violations.push(Violation::NoBootableImage {
                    at_us: e.at_us,
                    reasons: reasons.clone(),
                });
            }
            EventKind::RevertStarted { slot, reason } => {
                // A revert started again before the image booted on probation again (a cut
                // before its journal's start record) is the same revert.
                let again = matches!(
                    self.image_events.iter().rev().find(|i| match i {
                        ImageEvent::TestBoot { slot: s, .. }
                        | ImageEvent::Revert { slot: s, .. } => s == slot,
                    }),
                    Some(ImageEvent::Revert { .. })
                );
                if !again {
                    self.rollbacks += 1;
                }
                let image = self.image_events.iter().rev().find_map(|i| match i {
                    ImageEvent::TestBoot { slot: s, image, .. } if s == slot => Some(*image),
                    _ => None,
                });
                self.image_events.push(ImageEvent::Revert {
                    at_us: e.at_us,
                    slot: *slot,
                    image: image.flatten(),
                    reason: reason.clone(),
                });
            }
            EventKind::PowerLost { op, .. } => {
                // A cut armed in the flash model fired: the rule that is gone.
                let left: Vec<u64> = sim.ecu.flash().cut_rules().iter().map(|r| r.id).collect();
                let waiting: Vec<u64> = sim.ecu.event_cuts().iter().map(|c| c.id).collect();
                if let Some(k) = self
                    .event_cuts
                    .iter()
                    .position(|(id, ..)| !left.contains(id) && !waiting.contains(id))
                {
                    let (_, fault, restore_us) = self.event_cuts.remove(k);
                    let f = self.scenario.faults[fault].clone();
                    let on = match &f.when {
                        Trigger::Event(n) => n.clone(),
                        _ => String::new(),
                    };
                    let text = self
                        .engine
                        .fire(fault, &format!("on {on} at flash op {op}"));
                    self.push_fired(e.at_us, fault, text);
                    let kill = matches!(&f.action, Action::PowerCut(p) if p.kill_manager);
                    self.power_cut_at(e.at_us, restore_us, kill);
                    self.rearm_event_cuts(sim);
                } else if let Some(k) = self
                    .flash_cuts
                    .iter()
                    .position(|(id, ..)| !left.contains(id))
                {
                    let (_, fault, restore_us) = self.flash_cuts.remove(k);
                    let f = self.scenario.faults[fault].clone();
                    let acts = self.can_act(e.at_us, fault, &f.action);
                    let what = format!("at flash op {op}");
                    let text = if acts {
                        self.engine.fire(fault, &what)
                    } else {
                        self.engine.describe(fault, &what)
                    };
                    self.push_fired(e.at_us, fault, text);
                    let kill = matches!(&f.action, Action::PowerCut(p) if p.kill_manager);
                    self.power_cut_at(e.at_us, restore_us, kill);
                    if self.engine.has_times_left(fault) {
                        self.arm_flash_fault(sim, fault, &f);
                    }
                    if acts && !matches!(f.action, Action::PowerCut(_)) {
                        self.apply(sim, now.max(e.at_us), vec![f.action.clone()]);
                    }
                }
            }
            _ => {}
        }
        let at = e.at_us;
        let landed = self.event_cuts_in_boot(sim, &name);
        let actions = self
            .fire_except(at, Observation::EcuEvent(&name), &landed)
            .into_iter()
            .map(|m| m.action)
            .collect();
        self.apply(sim, now.max(at), actions);
        self.rearm_event_cuts(sim);
    }

    /// Let the event cuts that fired wait again, as long as their fault has times left.
    pub(super) fn rearm_event_cuts(&mut self, sim: &mut SimEcu) {
        let faults = self.scenario.faults.clone();
        for (i, f) in faults.iter().enumerate() {
            if matches!(
                (&f.when, &f.action),
                (Trigger::Event(_), Action::PowerCut(_))
            ) && self.engine.has_times_left(i)
                && !self.event_cuts.iter().any(|&(_, fault, _)| fault == i)
            {
                self.arm_event_cut(sim, i, f);
            }
        }
    }

    /// Every boot started an image that is byte for byte one of the two, and verifies (the ECU
    /// hashed the slot's bytes at the moment of the boot). Returns the name of the image it
    /// booted, if it is one of the two.
    pub(super) fn check_booted(
        &mut self,
        booted: &[BootedBytes],
        boot: u64,
        slot: Slot,
        version: &str,
        at_us: u64,
    ) -> Option<&'static str> {
        let Some(b) = booted.iter().find(|b| b.boot == boot) else {
            self.violations.push(Violation::BootUnread {
                at_us,
                boot,
                slot,
                version: version.to_string(),
            });
            return None;
        };
        let image = self.images.iter().find(|img| img.sha256 == b.sha256);
        match image {
            None => self.violations.push(Violation::ForeignImage {
                at_us,
                slot,
                version: version.to_string(),
            }),
            Some(img) if !img.verifies => self.violations.push(Violation::Unverified {
                at_us,
                slot,
                image: img.name,
            }),
            Some(_) => {}
        }
        image.map(|img| img.name)
    }

    /// The typed record of the run so far.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            violations: self.violations.clone(),
            fired: self.engine.fired().to_vec(),
            images: self.image_events.clone(),
        }
    }

    /// The runner reports a job transition.
    pub fn on_state(&mut self, sim: &mut SimEcu, now: u64, state: &crate::ota::job::State) {
        use crate::ota::job::{State, TransferStep};
        let name = state_name(state);
        let progress_only = progress_only(state);
        if let State::Transferring {
            step: TransferStep::Block { of, .. },
        } = state
        {
            self.blocks_total = *of;
        }
        self.push_kind(
            now,
            Source::Ota,
            &format!("state:{name}"),
            state.to_string(),
            TraceKind::Job(Arc::new(state.clone())),
        );
        self.job_state = name.clone();
        if progress_only {
            return;
        }
        let actions = self.fire(now, Observation::State(&name));
        self.apply(sim, now, actions);
    }

    /// A note from a worker (download resumed, transfer failed, ...).
    pub fn on_note(&mut self, now: u64, note: &str) {
        self.push(now, Source::Ota, "note", note.to_string());
    }

    /// Time passed (the runner's ticker): restore power, fire time triggers, let the ECU run.
    pub fn tick(&mut self, sim: &mut SimEcu, now: u64) {
        self.begin_step(sim, now, Step::Tick);
        self.tick_inner(sim, now);
        self.end_step(sim);
    }

    pub(super) fn tick_inner(&mut self, sim: &mut SimEcu, now: u64) {
        let _ = sim.ecu.advance_to(now);
        self.observe(sim, now);
        let due: Vec<u64> = self
            .restore_at
            .iter()
            .copied()
            .filter(|&t| t <= now)
            .collect();
        if !due.is_empty() {
            self.restore_at.retain(|&t| t > now);
            if !sim.ecu.is_powered()
                && !self.manager_running
                && !self.kill_pending
                && let Some(watch) = self.checkpoint.clone()
                && watch.check(self, sim, now, crate::sweep::converge::Checkpoint::PowerOn)
            {
                // A sweep's fork converged: it ends here, with a known end.
                return;
            }
            if !sim.ecu.is_powered() {
                // (A cut inside the boot is its own `power_lost` event.)
                if let Err(e) = sim.ecu.power_on()
                    && !matches!(e, EcuError::PowerLost { .. })
                {
                    self.push(
                        now,
                        Source::Ecu,
                        "power_on_failed",
                        format!("power on: {e}"),
                    );
                }
                self.observe(sim, now);
            }
        }
        let actions = self.fire(now, Observation::Tick { now_us: now });
        self.apply(sim, now, actions);
        self.observe(sim, now);
    }

    /// When the ticker should look again (µs).
    pub fn next_wake(&self, sim: &SimEcu, now: u64) -> u64 {
        let mut t = now + 1_000_000;
        for &r in &self.restore_at {
            t = t.min(r);
        }
        if let Some(a) = sim.ecu.next_action_at() {
            t = t.min(a);
        }
        if let Some(d) = self.engine.next_deadline_us() {
            t = t.min(d);
        }
        t.max(now + 1)
    }

    /// Whether a power restore is still pending.
    pub fn power_pending(&self) -> bool {
        !self.restore_at.is_empty()
    }
}
