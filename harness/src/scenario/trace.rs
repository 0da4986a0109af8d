//! The one event stream of a scenario run: job transitions, worker notes, ECU events, fault
//! firings, in simulated time. Every view (plain output, JSON lines, snapshots, the
//! dashboard) reads it; nothing in it depends on the wall clock or the machine.

use std::fmt;
use std::sync::Arc;

use ecu_sim::event::EventKind;
use serde::Serialize;

use crate::ota::job::State;

/// Who reported an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The OTA job (transitions) and its workers (notes).
    Ota,
    /// The simulated artifact server and the download.
    Download,
    /// The virtual ECU (bootloader, firmware, diagnostic server).
    Ecu,
    /// The scenario engine (faults firing).
    Fault,
    /// The runner itself (manager killed and resumed, settling).
    Runner,
    /// An external OTA client (its output, its exit).
    Client,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Ota => "ota",
            Source::Download => "download",
            Source::Ecu => "ecu",
            Source::Fault => "fault",
            Source::Runner => "runner",
            Source::Client => "client",
        })
    }
}

/// What an event is, typed: views (the dashboard, the SVG timeline) match on this, never on
/// the text. Not in the JSON lines, whose `event` and `text` stay the stable interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TraceKind {
    /// A job transition (progress-only ones included: bytes downloaded, blocks sent).
    Job(Arc<State>),
    /// One of the virtual ECU's events.
    Ecu(Arc<EventKind>),
    /// Fault `fault` (0-based index into the scenario's faults) fired.
    FaultFired { fault: usize },
    /// Anything else (notes, power switching, the server, the runner, a client's output):
    /// named by `event`, told by `text`.
    #[default]
    Other,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceEvent {
    /// Simulated microseconds since the scenario started.
    pub at_us: u64,
    pub source: Source,
    /// Machine name, e.g. `state:transferring:erase`, `booted`, `fault_fired`. (Shared
    /// strings: live views get a copy of every event, which then costs two counters.)
    pub event: Arc<str>,
    /// What a person reads.
    pub text: Arc<str>,
    /// The event, typed.
    #[serde(skip)]
    pub kind: TraceKind,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>11.6} {:<8} {}",
            self.at_us as f64 / 1e6,
            self.source.to_string(),
            self.text
        )
    }
}

/// Events in the order they were reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub events: Vec<TraceEvent>,
}

impl Trace {
    pub fn push(&mut self, at_us: u64, source: Source, event: &str, text: impl Into<String>) {
        self.push_kind(at_us, source, event, text, TraceKind::Other);
    }

    /// [`Trace::push`] with the event's typed `kind`.
    pub fn push_kind(
        &mut self,
        at_us: u64,
        source: Source,
        event: &str,
        text: impl Into<String>,
        kind: TraceKind,
    ) {
        self.events.push(TraceEvent {
            at_us,
            source,
            event: Arc::from(event),
            text: Arc::from(text.into()),
            kind,
        });
    }

    /// JSON lines, one event per line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// Whether an event named `name` occurred: exact, or `name` is a prefix ending at a `:`
    /// (`state:applying` matches `state:applying:reset`).
    pub fn matches(event: &str, name: &str) -> bool {
        event == name
            || event
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(':'))
    }

    /// The last `n` events, formatted.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let start = self.events.len().saturating_sub(n);
        self.events[start..].iter().map(|e| e.to_string()).collect()
    }
}

/// One event name a trace can hold: who reports it and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventName {
    pub name: &'static str,
    pub source: Source,
    pub meaning: &'static str,
    /// One of the virtual ECU's own events ([`ecu_event_name`]): a `when: {event}` trigger
    /// may name it.
    pub ecu_kind: bool,
}

const fn ev(name: &'static str, source: Source, meaning: &'static str) -> EventName {
    EventName {
        name,
        source,
        meaning,
        ecu_kind: false,
    }
}

const fn kind(name: &'static str, meaning: &'static str) -> EventName {
    EventName {
        name,
        source: Source::Ecu,
        meaning,
        ecu_kind: true,
    }
}

/// Every event name a trace holds besides `state:<job state>` (the job entered that state):
/// the closed list that `expect.events`, `expect.never` and `when: {event: …}` may name. The
/// README's event table lists exactly these (a test compares the two).
pub const EVENTS: &[EventName] = &[
    ev(
        "note",
        Source::Ota,
        "a worker's note (transfer retried, block resent, …)",
    ),
    ev(
        "download_requested",
        Source::Download,
        "the download asked the artifact server for the image (or a range of it)",
    ),
    ev(
        "download_resumed",
        Source::Download,
        "the download continues from the bytes already on disk",
    ),
    ev(
        "download_restarted",
        Source::Download,
        "the download starts again from byte 0",
    ),
    ev(
        "download_corrupt",
        Source::Download,
        "the downloaded image's SHA-256 does not match the manifest",
    ),
    ev(
        "download_note",
        Source::Download,
        "another note of the download",
    ),
    ev(
        "server",
        Source::Download,
        "bench: a request the artifact server answered",
    ),
    kind(
        "power_on",
        "power came back (virtual ECU); bench: the harness switched power on (source `fault`)",
    ),
    kind(
        "power_off",
        "power went off outside a flash operation (a `power_cut` not at a `flash_op` trigger); bench: the harness switched power off (source `fault`)",
    ),
    kind(
        "power_lost",
        "power was lost inside a flash operation (a `power_cut` at a `flash_op` trigger)",
    ),
    ev(
        "power_on_failed",
        Source::Ecu,
        "the virtual ECU could not be powered on again",
    ),
    ev(
        "reset_failed",
        Source::Ecu,
        "a `reset` fault could not reset the virtual ECU",
    ),
    kind(
        "boot_started",
        "the bootloader started boot N (1 is the factory boot)",
    ),
    kind("swap_started", "the bootloader started swapping the slots"),
    kind(
        "swap_resumed",
        "a swap cut by a power loss continues from the journal",
    ),
    kind("swap_progress", "one more sector swapped"),
    kind("swap_finished", "the swap is complete"),
    kind(
        "image_rejected",
        "the bootloader refused an image before booting it",
    ),
    kind(
        "revert_started",
        "the bootloader takes a test image out again",
    ),
    kind("booted", "the bootloader started an image"),
    kind(
        "no_bootable_image",
        "the bootloader found nothing it may boot: the ECU is bricked",
    ),
    kind(
        "counter_raised",
        "the anti-rollback security counter was raised",
    ),
    kind("firmware_crashed", "the running image crashed"),
    kind("watchdog_reset", "the watchdog reset a hanging image"),
    kind("confirmed", "the running image confirmed itself"),
    kind("staging_erased", "the staging slot was erased"),
    kind(
        "flash_activity",
        "a summary of the flash work of one boot or one staging",
    ),
    kind(
        "upgrade_requested",
        "the staged image was marked for test (or permanent) boot",
    ),
    kind("dtc_recorded", "a diagnostic trouble code was stored"),
    kind("session_changed", "the diagnostic session changed"),
    kind("security_unlocked", "a security level was unlocked"),
    kind("security_key_rejected", "a wrong security key was sent"),
    kind("negative_response", "a request was answered negatively"),
    kind("download_started", "RequestDownload accepted a region"),
    kind(
        "download_finished",
        "RequestTransferExit ended the download",
    ),
    kind("routine_finished", "a routine ran"),
    kind("dtcs_cleared", "the stored DTCs were cleared"),
    ev(
        "ecu_read",
        Source::Ecu,
        "bench: what the real ECU runs at the end",
    ),
    ev(
        "fault_fired",
        Source::Fault,
        "a fault's trigger matched and its action was applied",
    ),
    ev(
        "bit_rot",
        Source::Fault,
        "bits flipped in flash (a `bit_rot` action)",
    ),
    ev(
        "connection_dropped",
        Source::Fault,
        "the ECU closed the DoIP connection (a `drop_connection` action)",
    ),
    ev(
        "request_corrupted",
        Source::Fault,
        "a request's last byte arrived inverted (a `corrupt_request` action)",
    ),
    ev(
        "can_frame_dropped",
        Source::Fault,
        "a `can:` fault dropped a CAN frame: its id, ISO-TP frame type and sequence number",
    ),
    ev(
        "can_error_frame",
        Source::Fault,
        "a `can: corrupt` fault destroyed a CAN frame with an error frame; the controller sent it again",
    ),
    ev(
        "can_frame_delayed",
        Source::Fault,
        "a `can: delay` fault held a CAN frame back",
    ),
    ev(
        "can_frame_duplicated",
        Source::Fault,
        "a `can: duplicate` fault delivered a CAN frame twice",
    ),
    ev(
        "isotp_timeout",
        Source::Fault,
        "an ISO-TP timer expired after a CAN fault: N_Cr (a receiver dropped a message) or N_Bs (a sender gave up)",
    ),
    ev(
        "isotp_sequence_error",
        Source::Fault,
        "an ISO-TP receiver got a consecutive frame out of sequence and dropped the message",
    ),
    ev(
        "isotp_error",
        Source::Fault,
        "another ISO-TP error after a CAN fault (a message received twice, a frame the core refused)",
    ),
    ev(
        "can_message_lost",
        Source::Fault,
        "a UDS request or response never arrived whole (after a `can:` fault)",
    ),
    ev(
        "can_fault_idle",
        Source::Fault,
        "a `can:` fault's frame was not in the exchange (e.g. a 3rd consecutive frame of a single-frame request): it did not fire",
    ),
    ev(
        "response_pending_storm",
        Source::Fault,
        "responsePending answers precede the real one (an `inject_nrc` with 0x78)",
    ),
    ev(
        "artifact_swapped",
        Source::Fault,
        "the artifact server serves another image (a `swap_artifact` action)",
    ),
    ev(
        "power_failed",
        Source::Fault,
        "bench: the power switch did not switch",
    ),
    ev(
        "fault_unrealised",
        Source::Fault,
        "bench: a fault the bench cannot carry out",
    ),
    ev(
        "manager_killed",
        Source::Runner,
        "the OTA manager died and was started again on its store",
    ),
    ev(
        "bench",
        Source::Runner,
        "bench: which ECU and power switch the run uses",
    ),
    ev(
        "client_started",
        Source::Client,
        "the external OTA client was started",
    ),
    ev(
        "client_stdout",
        Source::Client,
        "a line the external client wrote to stdout",
    ),
    ev(
        "client_stderr",
        Source::Client,
        "a line the external client wrote to stderr",
    ),
    ev(
        "client_exited",
        Source::Client,
        "the external client exited",
    ),
    ev(
        "client_failed",
        Source::Client,
        "the external client could not be run",
    ),
];

/// The names in [`EVENTS`].
pub fn event_names() -> impl Iterator<Item = &'static str> {
    EVENTS.iter().map(|e| e.name)
}

/// The trace name of an ECU event: one explicit name per kind (a new kind needs one here).
pub fn ecu_event_name(kind: &ecu_sim::event::EventKind) -> &'static str {
    use ecu_sim::event::EventKind as K;
    match kind {
        K::PowerOn => "power_on",
        K::PowerOff => "power_off",
        K::PowerLost { .. } => "power_lost",
        K::BootStarted { .. } => "boot_started",
        K::SwapStarted { .. } => "swap_started",
        K::SwapResumed { .. } => "swap_resumed",
        K::SwapProgress { .. } => "swap_progress",
        K::SwapFinished { .. } => "swap_finished",
        K::ImageRejected { .. } => "image_rejected",
        K::RevertStarted { .. } => "revert_started",
        K::Booted { .. } => "booted",
        K::NoBootableImage { .. } => "no_bootable_image",
        K::CounterRaised { .. } => "counter_raised",
        K::FirmwareCrashed { .. } => "firmware_crashed",
        K::WatchdogReset { .. } => "watchdog_reset",
        K::Confirmed { .. } => "confirmed",
        K::StagingErased { .. } => "staging_erased",
        K::FlashActivity { .. } => "flash_activity",
        K::UpgradeRequested { .. } => "upgrade_requested",
        K::DtcRecorded { .. } => "dtc_recorded",
        K::SessionChanged { .. } => "session_changed",
        K::SecurityUnlocked { .. } => "security_unlocked",
        K::SecurityKeyRejected { .. } => "security_key_rejected",
        K::NegativeResponse { .. } => "negative_response",
        K::DownloadStarted { .. } => "download_started",
        K::DownloadFinished { .. } => "download_finished",
        K::RoutineFinished { .. } => "routine_finished",
        K::DtcsCleared => "dtcs_cleared",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecu_sim::boot::{Slot, SwapType};
    use ecu_sim::event::{EventKind as K, RevertReason};
    use ecu_sim::flash::CutVariant;
    use ecu_sim::image::Version;

    /// The table marks exactly the names [`ecu_event_name`] gives as the ECU's own.
    #[test]
    fn the_table_holds_every_ecu_event_kind() {
        let v: Version = "1.0.0".parse().unwrap();
        let (slot, kind) = (Slot::Primary, SwapType::Test);
        let kinds = [
            K::PowerOn,
            K::PowerOff,
            K::PowerLost {
                op: 1,
                variant: CutVariant::Torn,
            },
            K::BootStarted { boot: 1 },
            K::SwapStarted {
                kind,
                seq: 1,
                sectors: 1,
            },
            K::SwapResumed {
                kind,
                seq: 1,
                next: None,
            },
            K::SwapProgress {
                kind,
                sector: 0,
                of: 1,
            },
            K::SwapFinished { kind, seq: 1 },
            K::ImageRejected {
                slot,
                reason: String::new(),
            },
            K::RevertStarted {
                slot,
                reason: RevertReason::Resumed,
            },
            K::Booted {
                slot,
                version: v,
                test: false,
                attempt: 1,
            },
            K::NoBootableImage {
                reasons: Vec::new(),
            },
            K::CounterRaised { from: 1, to: 2 },
            K::FirmwareCrashed { version: v },
            K::WatchdogReset { version: v },
            K::Confirmed { slot, version: v },
            K::StagingErased { slot },
            K::FlashActivity {
                erases: 0,
                writes: 0,
                bytes_written: 0,
            },
            K::UpgradeRequested {
                slot,
                permanent: false,
            },
            K::DtcRecorded { code: 0 },
            K::SessionChanged { session: 1 },
            K::SecurityUnlocked { level: 1 },
            K::SecurityKeyRejected {
                level: 1,
                attempts: 1,
                locked_out: false,
            },
            K::NegativeResponse {
                sid: 0x31,
                nrc: 0x22,
            },
            K::DownloadStarted {
                address: 0,
                size: 0,
            },
            K::DownloadFinished { bytes: 0 },
            K::RoutineFinished { id: 0, ok: true },
            K::DtcsCleared,
        ];
        let mut from_kinds: Vec<&str> = kinds.iter().map(ecu_event_name).collect();
        let mut in_table: Vec<&str> = EVENTS
            .iter()
            .filter(|e| e.ecu_kind)
            .map(|e| e.name)
            .collect();
        from_kinds.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(from_kinds, in_table);
        let mut all: Vec<&str> = event_names().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), EVENTS.len(), "a name twice in the table");
    }
}
