//! The scenario's expectations against what happened. Each unmet one is a sentence that
//! says what was expected and what happened.

use super::outcome::{EndState, dtc_code};
use super::schema::{Expect, OutcomeSpec};
use super::trace::Trace;

fn outcome_name(o: OutcomeSpec) -> &'static str {
    match o {
        OutcomeSpec::Committed => "committed",
        OutcomeSpec::RolledBack => "rolled_back",
        OutcomeSpec::Rejected => "rejected",
        OutcomeSpec::Failed => "failed",
    }
}

/// Unmet expectations, in the order of the schema (outcome first). `full`: also the ones
/// about the whole trace (events, boots, rollbacks, download, duration); a fork's trace starts
/// at the fork, so only the end state is checked there.
pub fn check(x: &Expect, end: &EndState, trace: &Trace, full: bool) -> Vec<String> {
    let mut unmet = Vec::new();
    if x.or_rolled_back
        && x.outcome == OutcomeSpec::Committed
        && end.outcome == OutcomeSpec::RolledBack
    {
        // The other acceptable end: the old image back, confirmed.
        if end.version != end.installed || !end.confirmed {
            unmet.push(format!(
                "rolled back, but the ECU runs {}, not the installed image confirmed",
                end.running()
            ));
        }
        return unmet;
    }
    if x.outcome == OutcomeSpec::Committed
        && end.outcome == OutcomeSpec::Committed
        && !end.confirmed
    {
        unmet.push("committed, but the running image is not confirmed".into());
    }
    if x.outcome != end.outcome {
        unmet.push(format!(
            "outcome: expected {}, got {}{}",
            outcome_name(x.outcome),
            outcome_name(end.outcome),
            end.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    if let Some(v) = &x.version {
        let got = end
            .version
            .map_or_else(|| "nothing".to_string(), |v| v.to_string());
        if v.parse().ok() != end.version {
            unmet.push(format!("version: expected {v} running, got {got}"));
        }
    }
    if let Some(slot) = x.slot
        && Some(slot.slot()) != end.slot
    {
        unmet.push(format!(
            "slot: expected {}, got {}",
            slot.slot(),
            end.slot
                .map_or_else(|| "none".to_string(), |s| s.to_string())
        ));
    }
    if !full {
        return unmet;
    }
    if let Some(min) = x.boots.min
        && end.boots < min
    {
        unmet.push(format!("boots: expected at least {min}, got {}", end.boots));
    }
    if let Some(max) = x.boots.max
        && end.boots > max
    {
        unmet.push(format!("boots: expected at most {max}, got {}", end.boots));
    }
    if let Some(n) = x.rollbacks
        && end.rollbacks != n
    {
        unmet.push(format!("rollbacks: expected {n}, got {}", end.rollbacks));
    }
    for d in &x.dtcs {
        if let Some(code) = dtc_code(d)
            && !end.dtcs.contains(&code)
        {
            let stored: Vec<String> = end.dtcs.iter().map(|c| format!("{c:06X}")).collect();
            unmet.push(format!(
                "dtcs: expected {d} stored, the ECU has [{}]",
                stored.join(", ")
            ));
        }
    }
    let mut from = 0;
    for name in &x.events {
        match trace.events[from..]
            .iter()
            .position(|e| Trace::matches(&e.event, name))
        {
            Some(i) => from += i + 1,
            None => {
                let anywhere = trace.events.iter().any(|e| Trace::matches(&e.event, name));
                unmet.push(if anywhere {
                    format!("events: `{name}` happened, but not after the events listed before it")
                } else {
                    format!("events: `{name}` never happened")
                });
                break;
            }
        }
    }
    for name in &x.never {
        if let Some(e) = trace.events.iter().find(|e| Trace::matches(&e.event, name)) {
            unmet.push(format!("never: `{name}` happened: {e}"));
        }
    }
    if let Some(want) = x.download_resumed
        && want != end.download_resumed
    {
        unmet.push(if want {
            "download_resumed: expected the download to resume from the bytes on disk; it never did"
                .into()
        } else {
            "download_resumed: expected no resumed download, but one resumed".into()
        });
    }
    if let Some(text) = &x.reason_contains {
        match &end.reason {
            Some(r) if r.contains(text.as_str()) => {}
            Some(r) => unmet.push(format!(
                "reason: expected it to contain {text:?}, got {r:?}"
            )),
            None => unmet.push(format!(
                "reason: expected one containing {text:?}, there is none"
            )),
        }
    }
    if let Some(d) = &x.duration_s {
        let s = end.simulated_us as f64 / 1e6;
        if d.min.is_some_and(|m| s < m) || d.max.is_some_and(|m| s > m) {
            unmet.push(format!(
                "duration: expected {}..{} s simulated, took {s:.1} s",
                d.min.map_or(String::new(), |m| m.to_string()),
                d.max.map_or(String::new(), |m| m.to_string())
            ));
        }
    }
    unmet
}
