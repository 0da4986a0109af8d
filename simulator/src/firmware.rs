//! What a booted image does, from its simulation TLV ([`Behaviour`]).
//!
//! | behaviour | after boot | diagnostics |
//! |---|---|---|
//! | `healthy { confirm_after_ms }` | confirms itself after the delay (if on probation) | yes |
//! | `crash_on_boot` | crashes [`CRASH_AFTER_US`] after boot; the ECU resets | no |
//! | `hang { watchdog_ms }` | hangs; the watchdog resets the ECU after the timeout | no |
//! | `never_confirm` | runs, never confirms | yes |
//! | `no_diagnostics` | runs and confirms like `healthy` with the default delay, but never answers diagnostics | no |
//!
//! Images without the TLV (e.g. signed by imgtool) behave as [`Behaviour::DEFAULT`].

use crate::image::Behaviour;

/// How long a crashing image runs before it faults.
pub const CRASH_AFTER_US: u64 = 50_000;

/// Something the firmware does on its own at a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Confirm,
    Crash,
    WatchdogReset,
}

/// The next thing the firmware will do by itself, and when (simulated µs).
pub fn next_action(
    behaviour: Behaviour,
    booted_at_us: u64,
    confirmed: bool,
) -> Option<(u64, Action)> {
    let confirm_after =
        |ms: u32| (!confirmed).then_some((booted_at_us + u64::from(ms) * 1000, Action::Confirm));
    match behaviour {
        Behaviour::Healthy { confirm_after_ms } => confirm_after(confirm_after_ms),
        Behaviour::NoDiagnostics => match Behaviour::DEFAULT {
            Behaviour::Healthy { confirm_after_ms } => confirm_after(confirm_after_ms),
            _ => None,
        },
        Behaviour::NeverConfirm => None,
        Behaviour::CrashOnBoot => Some((booted_at_us + CRASH_AFTER_US, Action::Crash)),
        Behaviour::Hang { watchdog_ms } => Some((
            booted_at_us + u64::from(watchdog_ms) * 1000,
            Action::WatchdogReset,
        )),
    }
}

/// Whether the running image answers diagnostic requests.
pub fn answers_diagnostics(behaviour: Behaviour) -> bool {
    matches!(
        behaviour,
        Behaviour::Healthy { .. } | Behaviour::NeverConfirm
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_per_behaviour() {
        let h = Behaviour::Healthy {
            confirm_after_ms: 200,
        };
        assert_eq!(
            next_action(h, 1000, false),
            Some((201_000, Action::Confirm))
        );
        assert_eq!(next_action(h, 1000, true), None);
        assert_eq!(next_action(Behaviour::NeverConfirm, 0, false), None);
        assert_eq!(
            next_action(Behaviour::CrashOnBoot, 10, true),
            Some((10 + CRASH_AFTER_US, Action::Crash))
        );
        assert_eq!(
            next_action(Behaviour::Hang { watchdog_ms: 100 }, 0, false),
            Some((100_000, Action::WatchdogReset))
        );
        assert!(next_action(Behaviour::NoDiagnostics, 0, false).is_some());
        assert!(!answers_diagnostics(Behaviour::NoDiagnostics));
        assert!(answers_diagnostics(h));
    }
}
