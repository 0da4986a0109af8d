//! `hil run --junit PATH`: JUnit XML as CI systems read it (one `testsuite`, a `testcase` per
//! scenario; `failure` for FAIL with the first unmet expectation and the replay command,
//! `error` for ERROR, `skipped` with the reason).

use std::fmt::Write as _;

use super::report::{Outcome, Status};

/// XML text and attribute escaping.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The report for `outcomes`.
pub fn render(suite: &str, outcomes: &[Outcome]) -> String {
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let time: f64 = outcomes.iter().map(|o| o.wall_s).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\"",
        outcomes.len(),
        count(Status::Failed),
        count(Status::Error) + count(Status::Invalid),
        count(Status::Skipped)
    );
    let _ = writeln!(x, "<testsuites name=\"hil\" {counts}>");
    let _ = writeln!(x, "  <testsuite name=\"{}\" {counts}>", escape(suite));
    for o in outcomes {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{:.3}\"",
            escape(&o.name),
            escape(suite),
            escape(&o.path.display().to_string()),
            o.wall_s
        );
        let first = escape(o.messages.first().map_or("", String::as_str));
        match o.status {
            Status::Passed => {
                let _ = writeln!(x, "/>");
                continue;
            }
            Status::Failed => {
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{first}\" type=\"expectation\">{}</failure>",
                    escape(&o.explain())
                );
            }
            Status::Error | Status::Invalid => {
                let kind = if o.status == Status::Invalid {
                    "invalid"
                } else {
                    "engine"
                };
                let _ = writeln!(
                    x,
                    ">\n      <error message=\"{first}\" type=\"{kind}\">{}</error>",
                    escape(&o.explain())
                );
            }
            Status::Skipped => {
                let _ = writeln!(x, ">\n      <skipped message=\"{first}\"/>");
            }
        }
        let _ = writeln!(
            x,
            "      <system-out>{}</system-out>\n    </testcase>",
            escape(&format!("{}\nreplay: {}", o.description, o.replay()))
        );
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}
