//! The names job states and ECU events have in traces and scenario files.

use ecu_sim::event::EventKind;

/// A transition that only reports progress (bytes downloaded, blocks sent) within a state.
pub fn progress_only(state: &crate::ota::job::State) -> bool {
    use crate::ota::job::{State, TransferStep};
    matches!(
        state,
        State::Transferring {
            step: TransferStep::Block { n, .. }
        } if *n > 0
    ) || matches!(state, State::Downloading { bytes } if *bytes > 0)
}

/// `transferring:block`, `applying:await_boot`, `committed`, ...
pub fn state_name(state: &crate::ota::job::State) -> String {
    let v = serde_json::to_value(state).unwrap_or_default();
    let phase = v["state"].as_str().unwrap_or_default().to_string();
    match &v["step"] {
        serde_json::Value::String(s) => format!("{phase}:{s}"),
        serde_json::Value::Object(o) => match o.get("step").and_then(|s| s.as_str()) {
            Some(s) => format!("{phase}:{s}"),
            None => phase,
        },
        _ => phase,
    }
}

/// `swap_started` for `EventKind::SwapStarted { .. }` (the names: [`crate::scenario::trace::EVENTS`]).
pub fn event_name(kind: &EventKind) -> String {
    crate::scenario::trace::ecu_event_name(kind).to_string()
}
