//! Live views of running scenarios and sweeps: the terminal dashboard, and how `--ui` is
//! chosen.

pub mod dashboard;
pub mod state;

use std::io::IsTerminal;

/// How `hil run` and `hil sweep` show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    /// The ratatui dashboard.
    Tui,
    /// A line per milestone, a progress bar on a terminal, a summary.
    Plain,
    /// One JSON object per event.
    Json,
}

impl UiMode {
    /// `--ui` if given; else the dashboard when stdout is a terminal and `CI` is not set.
    pub fn choose(given: Option<UiMode>) -> UiMode {
        given.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() && std::env::var_os("CI").is_none() {
                UiMode::Tui
            } else {
                UiMode::Plain
            }
        })
    }
}
