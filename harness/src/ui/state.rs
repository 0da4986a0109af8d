//! What the dashboard shows, built from the live event stream (the same trace events every
//! other view reads). Keys map to [`Action`]s that change the state; rendering only reads it.

use std::collections::VecDeque;

use crate::scenario::report::{LiveEvent, Status};
use ecu_sim::boot::Slot;
use ecu_sim::event::EventKind;

use crate::ota::job::{State, TransferStep};
use crate::scenario::trace::{Source, TraceEvent, TraceKind};

/// Events kept per scenario for the log.
const LOG_LEN: usize = 2000;
/// Events kept for a finished scenario that is not selected.
const FINISHED_LOG_LEN: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Pending,
    Running,
    Done(Status),
}

/// One slot as the ECU's events describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotView {
    pub version: Option<String>,
    /// `valid`, `pending` (upgrade requested), `test` (on probation), `confirmed`.
    pub flags: Vec<&'static str>,
}

/// The ECU panel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EcuView {
    pub powered: bool,
    pub session: String,
    pub unlocked: bool,
    pub boots: u64,
    /// (slot, version, on probation).
    pub running: Option<(String, String, bool)>,
    pub slots: [SlotView; 2],
    pub dtcs: Vec<String>,
}

/// One scenario.
#[derive(Clone, Debug)]
pub struct ScenarioView {
    pub name: String,
    pub status: RunStatus,
    /// The result line once finished.
    pub line: String,
    /// Simulated time of the latest event, µs.
    pub sim_us: u64,
    /// Phase changes: (time, phase).
    pub phases: Vec<(u64, String)>,
    pub blocks: Option<(u64, u64)>,
    pub swap: Option<(u64, u64)>,
    pub download: Option<String>,
    pub ecu: EcuView,
    pub faults: Vec<(u64, String)>,
    pub log: VecDeque<TraceEvent>,
}

impl ScenarioView {
    pub fn new(name: &str) -> ScenarioView {
        ScenarioView {
            name: name.to_string(),
            status: RunStatus::Pending,
            line: String::new(),
            sim_us: 0,
            phases: Vec::new(),
            blocks: None,
            swap: None,
            download: None,
            ecu: EcuView::default(),
            faults: Vec::new(),
            log: VecDeque::new(),
        }
    }

    /// Fold one event into the view.
    pub fn apply(&mut self, e: TraceEvent) {
        self.fold(&e);
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(e);
    }

    fn fold(&mut self, e: &TraceEvent) {
        self.sim_us = self.sim_us.max(e.at_us);
        match &e.kind {
            TraceKind::Job(state) => self.fold_job(e.at_us, state),
            TraceKind::Ecu(kind) => self.fold_ecu(kind),
            TraceKind::FaultFired { .. } => self.faults.push((e.at_us, e.text.to_string())),
            TraceKind::Other => match e.source {
                Source::Download => self.download = Some(e.text.to_string()),
                Source::Fault => self.faults.push((e.at_us, e.text.to_string())),
                _ => {}
            },
        }
    }

    fn fold_job(&mut self, at_us: u64, state: &State) {
        let phase = state.phase().name();
        if self.phases.last().map(|p| p.1.as_str()) != Some(phase) {
            self.phases.push((at_us, phase.to_string()));
        }
        if let State::Transferring {
            step: TransferStep::Block { n, of },
        } = state
        {
            self.blocks = Some((u64::from(*n), u64::from(*of)));
        }
    }

    fn fold_ecu(&mut self, kind: &EventKind) {
        let index = |slot: &Slot| usize::from(*slot == Slot::Secondary);
        match kind {
            EventKind::PowerOn => self.ecu.powered = true,
            EventKind::PowerOff | EventKind::PowerLost { .. } => {
                self.ecu.powered = false;
                self.ecu.unlocked = false;
                self.ecu.running = None;
            }
            EventKind::BootStarted { .. } => {
                self.ecu.boots += 1;
                self.ecu.session = "0x01".into();
                self.ecu.unlocked = false;
            }
            EventKind::SessionChanged { session } => self.ecu.session = format!("0x{session:02x}"),
            EventKind::SecurityUnlocked { .. } => self.ecu.unlocked = true,
            EventKind::Booted {
                slot,
                version,
                test,
                ..
            } => {
                let i = index(slot);
                self.ecu.slots[i].version = Some(version.to_string());
                self.ecu.slots[i].flags = if *test {
                    vec!["valid", "test"]
                } else {
                    vec!["valid", "confirmed"]
                };
                self.ecu.running = Some((slot.to_string(), version.to_string(), *test));
            }
            EventKind::Confirmed { slot, .. } => {
                self.ecu.slots[index(slot)].flags = vec!["valid", "confirmed"];
                if let Some(r) = &mut self.ecu.running {
                    r.2 = false;
                }
            }
            EventKind::UpgradeRequested { slot, .. } => {
                self.ecu.slots[index(slot)].flags = vec!["pending"];
            }
            EventKind::DownloadStarted { .. } => {
                let running = self.ecu.running.as_ref();
                let i = 1 - running.map_or(0, |r| usize::from(r.0 == "secondary"));
                self.ecu.slots[i] = SlotView {
                    version: None,
                    flags: vec!["receiving"],
                };
            }
            EventKind::SwapStarted { .. } | EventKind::SwapResumed { .. } => {
                self.swap = Some((0, 0));
            }
            EventKind::SwapProgress { sector, of, .. } => {
                self.swap = Some((u64::from(*sector) + 1, u64::from(*of)));
            }
            EventKind::DtcRecorded { code } => {
                let code = format!("{code:06X}");
                if !self.ecu.dtcs.contains(&code) {
                    self.ecu.dtcs.push(code);
                }
            }
            _ => {}
        }
    }
}

/// A sweep's progress.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepView {
    pub done: usize,
    pub total: usize,
    pub failed: usize,
    pub points_per_s: f64,
}

/// Everything the dashboard shows.
#[derive(Clone, Debug)]
pub struct UiState {
    pub title: String,
    pub scenarios: Vec<ScenarioView>,
    pub selected: usize,
    pub paused: bool,
    pub details: bool,
    pub help: bool,
    pub quit: bool,
    /// The log filter, and whether it is being typed.
    pub filter: String,
    pub editing_filter: bool,
    pub sweep: Option<SweepView>,
    /// Every run ended (the dashboard stays until `q`).
    pub finished: bool,
    /// Per scenario: events of its live buffer already folded in.
    pub cursors: Vec<usize>,
}

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    TogglePause,
    Up,
    Down,
    ToggleDetails,
    ToggleHelp,
    StartFilter,
    FilterChar(char),
    FilterBackspace,
    /// Enter while typing: keep the filter; Esc: drop it.
    FilterDone,
    FilterCancel,
}

/// A key as the dashboard sees it (so tests need no terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Enter,
    Esc,
    Backspace,
}

impl UiState {
    pub fn new(title: &str, names: &[String]) -> UiState {
        UiState {
            title: title.to_string(),
            scenarios: names.iter().map(|n| ScenarioView::new(n)).collect(),
            selected: 0,
            paused: false,
            details: false,
            help: false,
            quit: false,
            filter: String::new(),
            editing_filter: false,
            sweep: None,
            finished: false,
            cursors: vec![0; names.len()],
        }
    }

    /// The action of `key` in the current state (typing a filter takes every character).
    pub fn action_for(&self, key: Key) -> Option<Action> {
        if self.editing_filter {
            return Some(match key {
                Key::Char(c) => Action::FilterChar(c),
                Key::Backspace => Action::FilterBackspace,
                Key::Enter => Action::FilterDone,
                Key::Esc => Action::FilterCancel,
                Key::Up => Action::Up,
                Key::Down => Action::Down,
            });
        }
        Some(match key {
            Key::Char('q') => Action::Quit,
            Key::Char('p') => Action::TogglePause,
            Key::Char('?') => Action::ToggleHelp,
            Key::Char('/') => Action::StartFilter,
            Key::Char('k') | Key::Up => Action::Up,
            Key::Char('j') | Key::Down => Action::Down,
            Key::Enter => Action::ToggleDetails,
            Key::Esc if self.help => Action::ToggleHelp,
            Key::Esc if !self.filter.is_empty() => Action::FilterCancel,
            _ => return None,
        })
    }

    pub fn apply(&mut self, a: Action) {
        match a {
            Action::Quit => self.quit = true,
            Action::TogglePause => self.paused = !self.paused,
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => {
                self.selected = (self.selected + 1).min(self.scenarios.len().saturating_sub(1))
            }
            Action::ToggleDetails => self.details = !self.details,
            Action::ToggleHelp => self.help = !self.help,
            Action::StartFilter => self.editing_filter = true,
            Action::FilterChar(c) => self.filter.push(c),
            Action::FilterBackspace => {
                self.filter.pop();
            }
            Action::FilterDone => self.editing_filter = false,
            Action::FilterCancel => {
                self.editing_filter = false;
                self.filter.clear();
            }
        }
    }

    /// Fold a live event in.
    pub fn on_live(&mut self, ev: LiveEvent) {
        match ev {
            LiveEvent::Started { idx } => {
                if let Some(s) = self.scenarios.get_mut(idx) {
                    s.status = RunStatus::Running;
                }
            }
            LiveEvent::Events { idx, events } => {
                if let Some(s) = self.scenarios.get_mut(idx) {
                    for e in events {
                        s.apply(e);
                    }
                }
            }
            LiveEvent::Sweep {
                done,
                total,
                failed,
                points_per_s,
            } => {
                self.sweep = Some(SweepView {
                    done,
                    total,
                    failed,
                    points_per_s,
                });
                if let Some(s) = self.scenarios.first_mut() {
                    s.status = RunStatus::Running;
                }
            }
            LiveEvent::Finished { idx, status, line } => {
                let selected = idx == self.selected;
                if let Some(s) = self.scenarios.get_mut(idx) {
                    s.status = RunStatus::Done(status);
                    s.line = line;
                    // Finished and not looked at: its last events are enough (long runs
                    // keep the dashboard small).
                    if !selected && s.log.len() > FINISHED_LOG_LEN {
                        s.log.drain(..s.log.len() - FINISHED_LOG_LEN);
                        s.log.shrink_to_fit();
                    }
                }
            }
        }
    }

    /// Take in what the runs wrote to their buffers since the last look: the selected
    /// scenario's events are folded into its view; the others only move their clocks (they
    /// are folded when selected). What a frame needs, nothing more.
    pub fn sample(&mut self, buffers: &[std::sync::Mutex<Vec<TraceEvent>>]) {
        for (i, b) in buffers.iter().enumerate() {
            let Some(view) = self.scenarios.get_mut(i) else {
                break;
            };
            let b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if i == self.selected {
                for e in &b[self.cursors[i]..] {
                    view.apply(e.clone());
                }
                self.cursors[i] = b.len();
            } else if let Some(last) = b.last() {
                view.sim_us = view.sim_us.max(last.at_us);
            }
        }
    }

    /// (finished, failed or errored).
    pub fn counts(&self) -> (usize, usize) {
        let done = self
            .scenarios
            .iter()
            .filter(|s| matches!(s.status, RunStatus::Done(_)))
            .count();
        let bad = self
            .scenarios
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    RunStatus::Done(Status::Failed | Status::Error | Status::Invalid)
                )
            })
            .count();
        (done, bad)
    }
}
