//! The world's part of a sweep fork's fingerprint (see `sweep::converge`).

use ecu_sim::fingerprint::{Fingerprint, Unfingerprintable};

use super::{ImageEvent, World};

impl World {
    /// Write what decides the world's future into `f`, times relative to `now`. A world
    /// whose scenario still has a fault that can fire, or with a CAN bus, has no fingerprint
    /// (the counters its triggers read, and the bus's frames in flight, are not in it).
    ///
    /// Left out, as they cannot change what happens next (see `sweep::converge`): the trace,
    /// the violations and the times of test boots and reverts (history), the request
    /// counter and the ids of armed rules (read only by triggers: all spent), the time the
    /// manager was killed (a trace stamp), the scenario, images and layout (the same for the
    /// states compared, but for the fork's own fault, spent).
    pub fn fingerprint(&self, f: &mut Fingerprint, now: u64) -> Result<(), Unfingerprintable> {
        if (0..self.engine.fired().len()).any(|i| self.engine.has_times_left(i)) {
            return Err(Unfingerprintable("a fault of the scenario can still fire"));
        }
        if self.can.is_some() {
            return Err(Unfingerprintable("a CAN bus"));
        }
        f.tag("world");
        f.bool(self.manager_running);
        f.deadline(self.manager_down_until, now);
        let mut restores = self.restore_at.clone();
        restores.sort_unstable();
        f.u64(restores.len() as u64);
        for t in restores {
            // Compared only as `t <= now` (and a passed one wakes the ticker at once).
            f.deadline(t, now);
        }
        f.debug(&(&self.flash_cuts, &self.event_cuts));
        f.debug(&(
            &self.download_next,
            self.throttle,
            &self.nrc,
            &self.corrupt,
            self.flip_next_block,
            self.storm,
            self.storm_now,
            &self.can_next,
            self.drop_next,
        ));
        f.debug(&(
            self.blocks_sent,
            self.blocks_total,
            self.download_size,
            self.download_resumed,
            self.download_restarted,
        ));
        f.u64(self.rollbacks);
        f.u64(self.boots);
        f.u64(self.current_boot);
        f.tag(&self.job_state);
        match &self.swapped {
            None => f.tag("served: update"),
            Some(b) => f.bytes(b),
        }
        f.u64(self.image_events.len() as u64);
        for e in &self.image_events {
            match e {
                ImageEvent::TestBoot { slot, image, .. } => f.debug(&("test", slot, image)),
                ImageEvent::Revert {
                    slot,
                    image,
                    reason,
                    ..
                } => f.debug(&("revert", slot, image, reason)),
            }
        }
        Ok(())
    }
}
