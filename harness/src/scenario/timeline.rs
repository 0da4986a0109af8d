//! `hil run --timeline DIR`: an SVG per scenario, drawn from its trace. Lanes, top to
//! bottom, on one simulated-time axis:
//!
//! | lane (`<g id>`) | shows |
//! |---|---|
//! | `lane-ota` | the OTA job's phases as coloured bars (downloading, verifying, transferring, applying, and the outcome) |
//! | `lane-power` | ECU power: on (green) and off (grey) |
//! | `lane-boots` | each boot as a tick, the image it booted as a label, swaps as shaded spans |
//! | `lane-faults` | each fault that fired as a red marker, its action in the tooltip |
//! | `axis` | simulated seconds |
//!
//! Every mark carries a `<title>` with the event's text, so a browser shows it on hover.

use std::fmt::Write as _;

use super::junit::escape;
use super::trace::{Trace, TraceKind};
use ecu_sim::event::EventKind;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 46.0;
const TOP: f64 = 44.0;

fn phase_colour(phase: &str) -> &'static str {
    match phase {
        "submitted" => "#bbbbbb",
        "downloading" | "downloaded" => "#4e79a7",
        "verifying" => "#76b7b2",
        "transferring" => "#f28e2b",
        "applying" => "#edc948",
        "committed" => "#59a14f",
        "rolled_back" => "#b07aa1",
        _ => "#e15759",
    }
}

/// A nice step for about eight ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The SVG for one scenario's trace.
pub fn render(name: &str, description: &str, trace: &Trace) -> String {
    // A little room after the last event, so the outcome shows.
    let last = trace
        .events
        .iter()
        .map(|e| e.at_us)
        .max()
        .unwrap_or(0)
        .max(1);
    let end_us = last + last / 25;
    let span = end_us as f64 / 1e6;
    let x = |us: u64| LEFT + (WIDTH - LEFT - RIGHT) * (us as f64 / end_us as f64);
    let lane_y = |i: usize| TOP + LANE * i as f64;
    let height = lane_y(4) + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text><text x=\"10\" y=\"32\" fill=\"#555\">{}</text>",
        escape(name),
        escape(name),
        escape(description)
    );
    for (i, label) in ["OTA job", "ECU power", "boots, slots", "faults"]
        .iter()
        .enumerate()
    {
        let y = lane_y(i);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" fill=\"#333\">{label}</text><line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#eee\"/>",
            y + 22.0,
            y + 36.0,
            WIDTH - RIGHT,
            y + 36.0
        );
    }

    // OTA phases: a bar from each phase change to the next.
    let _ = writeln!(s, "<g id=\"lane-ota\">");
    let phases: Vec<(u64, String, String)> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::Job(state) => Some((
                e.at_us,
                state.phase().name().to_string(),
                e.text.to_string(),
            )),
            _ => None,
        })
        .collect();
    let mut i = 0;
    while i < phases.len() {
        let (start, phase, text) = &phases[i];
        let mut j = i + 1;
        while j < phases.len() && phases[j].1 == *phase {
            j += 1;
        }
        let stop = phases.get(j).map_or(end_us, |p| p.0);
        let (x0, x1) = (x(*start), x(stop).max(x(*start) + 4.0));
        let _ = writeln!(
            s,
            "<rect class=\"phase\" data-phase=\"{phase}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"26\" fill=\"{}\"><title>{:.3} s {}</title></rect>",
            lane_y(0) + 8.0,
            x1 - x0,
            phase_colour(phase),
            *start as f64 / 1e6,
            escape(text)
        );
        if x1 - x0 > 60.0 || j == phases.len() {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" fill=\"white\">{phase}</text>",
                x0 + 4.0,
                lane_y(0) + 25.0
            );
        }
        i = j;
    }
    let _ = writeln!(s, "</g>");

    // Power: on from power_on to power_off.
    let _ = writeln!(s, "<g id=\"lane-power\">");
    let mut on_since: Option<u64> = None;
    let mut last_off = 0;
    let bar = |s: &mut String, from: u64, to: u64, on: bool| {
        let (x0, x1) = (x(from), x(to).max(x(from) + 1.0));
        let _ = writeln!(
            s,
            "<rect class=\"{}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"18\" fill=\"{}\"><title>{} {:.3}–{:.3} s</title></rect>",
            if on { "power-on" } else { "power-off" },
            lane_y(1) + 12.0,
            x1 - x0,
            if on { "#59a14f" } else { "#cccccc" },
            if on { "powered" } else { "no power" },
            from as f64 / 1e6,
            to as f64 / 1e6
        );
    };
    for e in &trace.events {
        let TraceKind::Ecu(kind) = &e.kind else {
            continue;
        };
        match &**kind {
            EventKind::PowerOn if on_since.is_none() => {
                if e.at_us > last_off {
                    bar(&mut s, last_off, e.at_us, false);
                }
                on_since = Some(e.at_us);
            }
            EventKind::PowerOff | EventKind::PowerLost { .. } => {
                if let Some(from) = on_since.take() {
                    bar(&mut s, from, e.at_us, true);
                    last_off = e.at_us;
                }
            }
            _ => {}
        }
    }
    if let Some(from) = on_since {
        bar(&mut s, from, end_us, true);
    }
    let _ = writeln!(s, "</g>");

    // Boots and swaps.
    let _ = writeln!(s, "<g id=\"lane-boots\">");
    let mut swap_from = None;
    let mut boots_seen = 0;
    for e in &trace.events {
        let TraceKind::Ecu(kind) = &e.kind else {
            continue;
        };
        let y = lane_y(2);
        match &**kind {
            EventKind::SwapStarted { .. } | EventKind::SwapResumed { .. } => {
                swap_from = Some(e.at_us)
            }
            EventKind::SwapFinished { .. } => {
                if let Some(from) = swap_from.take() {
                    let _ = writeln!(
                        s,
                        "<rect class=\"swap\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"8\" fill=\"#9c755f\" opacity=\"0.6\"><title>{}</title></rect>",
                        x(from),
                        y + 30.0,
                        (x(e.at_us) - x(from)).max(1.0),
                        escape(&e.text)
                    );
                }
            }
            EventKind::BootStarted { .. } => {
                let _ = writeln!(
                    s,
                    "<line class=\"boot\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#333\"><title>{3:.3} s {4}</title></line>",
                    x(e.at_us),
                    y + 8.0,
                    y + 38.0,
                    e.at_us as f64 / 1e6,
                    escape(&e.text)
                );
            }
            EventKind::Booted {
                slot,
                version,
                test,
                attempt,
            } => {
                boots_seen += 1;
                let label = if *test {
                    format!("{version} {slot} (test, attempt {attempt})")
                } else {
                    format!("{version} {slot}")
                };
                // Alternate rows so labels of close boots do not overlap; near the right
                // edge, end the label at the tick.
                let ty = if boots_seen % 2 == 1 {
                    y + 16.0
                } else {
                    y + 27.0
                };
                let (tx, anchor) = if x(e.at_us) > WIDTH - 160.0 {
                    (x(e.at_us) - 2.0, "end")
                } else {
                    (x(e.at_us) + 2.0, "start")
                };
                let _ = writeln!(
                    s,
                    "<text class=\"booted\" x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"{anchor}\" fill=\"#333\" font-size=\"10\">{}<title>{:.3} s {}</title></text>",
                    escape(&label),
                    e.at_us as f64 / 1e6,
                    escape(&e.text)
                );
            }
            EventKind::NoBootableImage { .. } => {
                let _ = writeln!(
                    s,
                    "<text class=\"bricked\" x=\"{:.1}\" y=\"{}\" fill=\"#e15759\" font-weight=\"bold\">BRICKED<title>{}</title></text>",
                    x(e.at_us),
                    y + 20.0,
                    escape(&e.text)
                );
            }
            _ => {}
        }
    }
    let _ = writeln!(s, "</g>");

    // Faults.
    let _ = writeln!(s, "<g id=\"lane-faults\">");
    for e in trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::FaultFired { .. }))
    {
        let (cx, y) = (x(e.at_us), lane_y(3) + 14.0);
        let _ = writeln!(
            s,
            "<path class=\"fault\" d=\"M{:.1} {y} l-6 14 h12 z\" fill=\"#e15759\"><title>{:.3} s {}</title></path><line x1=\"{cx:.1}\" y1=\"{}\" x2=\"{cx:.1}\" y2=\"{}\" stroke=\"#e15759\" stroke-dasharray=\"3 3\"/>",
            cx,
            e.at_us as f64 / 1e6,
            escape(&e.text),
            TOP,
            y
        );
    }
    let _ = writeln!(s, "</g>");

    // Axis.
    let y = lane_y(4) + 4.0;
    let _ = writeln!(
        s,
        "<g id=\"axis\"><line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333\"/>",
        WIDTH - RIGHT
    );
    let step = tick_step(span);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let tx = x((t * 1e6) as u64);
        let _ = writeln!(
            s,
            "<line x1=\"{tx:.1}\" y1=\"{y}\" x2=\"{tx:.1}\" y2=\"{}\" stroke=\"#333\"/><text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y + 5.0,
            y + 17.0,
            if step < 1.0 {
                format!("{t:.1} s")
            } else {
                format!("{t:.0} s")
            }
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"{}\">simulated time</text></g>",
        y + 17.0
    );
    s.push_str("</svg>\n");
    s
}
