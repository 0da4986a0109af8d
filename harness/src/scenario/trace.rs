//! The one event stream of a scenario run: job transitions, worker notes, ECU events, fault
//! firings, in simulated time. Every view (plain output, JSON lines, snapshots, the
//! dashboard) reads it; nothing in it depends on the wall clock or the machine.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

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
        self.events.push(TraceEvent {
            at_us,
            source,
            event: Arc::from(event),
            text: Arc::from(text.into()),
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
