//! The simulated world as a [`Place`]: the end of a run read from the virtual ECU itself
//! (what it runs, its DTCs, the boots and reverts the world counted) and the world's own
//! findings (invariants broken at a boot, an image installed twice).

use ecu_sim::image;

use super::World;
use crate::ota::job::{Job, State};
use crate::ota::sim::{SimEcu, SimWorld};
use crate::scenario::outcome::{EndState, outcome_of};
use crate::scenario::place::{Finish, Place, PlaceKind};
use crate::scenario::schema::Client;

impl Place for SimWorld<World> {
    fn kind(&self) -> PlaceKind {
        match self.hooks.scenario.client {
            Client::Manager(_) => PlaceKind::Simulation,
            Client::External(_) => PlaceKind::External,
        }
    }

    fn finish(&mut self, job: Option<&Job>, now_us: u64) -> Finish {
        let SimWorld { sim, hooks } = self;
        hooks.recorder = None;
        hooks.tick(sim, now_us);
        // Events are reported as they become known: the ECU stamps them with its own clock,
        // which runs ahead while it is busy. In time order they tell the story.
        hooks.trace.events.sort_by_key(|e| e.at_us);
        let end = end_state(job, sim, hooks, now_us);
        let mut findings: Vec<String> = hooks.violations.iter().map(ToString::to_string).collect();
        if sim.ecu.running().is_none() {
            findings.insert(
                0,
                format!(
                    "the ECU runs nothing at the end (powered: {})",
                    sim.ecu.is_powered()
                ),
            );
        }
        let evidence = hooks.evidence();
        findings.extend(evidence.installs(job).problems);
        Finish {
            end,
            findings,
            unfired: hooks.engine.unfired(),
            trace: hooks.trace.clone(),
            evidence: Some(evidence),
        }
    }
}

/// The end state; the outcome from `job` (without one, `failed` until the caller decides).
pub fn end_state(job: Option<&Job>, sim: &SimEcu, world: &World, now: u64) -> EndState {
    let unfinished = State::Submitted;
    let (outcome, reason) = outcome_of(job.map_or(&unfinished, |j| &j.state));
    let running = sim.ecu.running();
    EndState {
        outcome,
        reason,
        version: running.map(|r| r.image.header.version),
        slot: running.map(|r| r.slot),
        confirmed: running.is_some_and(|r| r.confirmed),
        boots: world.boots,
        rollbacks: world.rollbacks,
        dtcs: sim
            .ecu
            .dtcs()
            .matching(0xFF)
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
        simulated_us: now,
        download_resumed: world.download_resumed,
        installed: world.images[0]
            .bytes
            .get(..)
            .and_then(|b| image::parse(b).ok())
            .map(|p| p.header.version),
    }
}
