//! The terminal dashboard (ratatui): [`render`] draws a [`UiState`] and never changes it;
//! [`run`] owns the terminal, samples the live events at most 20 times a second, and maps keys
//! to actions. A panic hook puts the terminal back.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Gauge, List, ListItem, ListState, Paragraph, Wrap};

use super::state::{Key, RunStatus, ScenarioView, UiState};
use crate::scenario::report::{LiveBuffers, LiveEvent, RunControl, Status};
use crate::scenario::trace::Source;

/// Frames per second at most: the simulation never waits for drawing.
pub const MAX_FPS: u64 = 20;

fn status_style(s: RunStatus) -> (&'static str, Style) {
    match s {
        RunStatus::Pending => ("  ·  ", Style::default().fg(Color::DarkGray)),
        RunStatus::Running => (" RUN ", Style::default().fg(Color::Yellow)),
        RunStatus::Done(Status::Passed) => ("PASS ", Style::default().fg(Color::Green)),
        RunStatus::Done(Status::Failed) => ("FAIL ", Style::default().fg(Color::Red)),
        RunStatus::Done(Status::Error) => ("ERROR", Style::default().fg(Color::Magenta)),
        RunStatus::Done(Status::Invalid) => ("INVAL", Style::default().fg(Color::Magenta)),
        RunStatus::Done(Status::Skipped) => ("SKIP ", Style::default().fg(Color::Blue)),
    }
}

fn phase_colour(p: &str) -> Color {
    match p {
        "downloading" | "downloaded" => Color::Blue,
        "verifying" => Color::Cyan,
        "transferring" => Color::Yellow,
        "applying" => Color::LightYellow,
        "committed" => Color::Green,
        "rolled_back" => Color::Magenta,
        "failed" => Color::Red,
        _ => Color::Gray,
    }
}

/// Draw `state` (read only).
pub fn render(f: &mut Frame, state: &UiState) {
    let area = f.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(5)])
        .split(area);
    let (done, bad) = state.counts();
    let mut header = vec![
        Span::styled(
            format!(" {} ", state.title),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " {done}/{} done, {bad} failed",
            state.scenarios.len()
        )),
    ];
    if let Some(sw) = &state.sweep {
        header.push(Span::raw(format!(
            " | sweep {}/{} points, {} failed, {:.0} points/s",
            sw.done, sw.total, sw.failed, sw.points_per_s
        )));
    }
    if state.finished {
        header.push(Span::styled(
            "  FINISHED (q to exit)",
            Style::default()
                .fg(Color::Green)
                .add_modifier(Modifier::BOLD),
        ));
    }
    if state.paused {
        header.push(Span::styled(
            "  PAUSED",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    header.push(Span::styled(
        "   q quit  p pause  ↑↓ select  Enter details  / filter  ? help",
        Style::default().fg(Color::DarkGray),
    ));
    f.render_widget(Paragraph::new(Line::from(header)), rows[0]);

    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Length(38), Constraint::Min(40)])
        .split(rows[1]);
    render_list(f, state, cols[0]);
    if let Some(s) = state.scenarios.get(state.selected) {
        render_scenario(f, state, s, cols[1]);
    }
    if state.help {
        render_help(f, area);
    }
}

fn render_list(f: &mut Frame, state: &UiState, area: Rect) {
    let items: Vec<ListItem> = state
        .scenarios
        .iter()
        .map(|s| {
            let (label, style) = status_style(s.status);
            ListItem::new(Line::from(vec![
                Span::styled(label, style),
                Span::raw(format!(" {:<22.22}", s.name)),
                Span::styled(
                    if s.sim_us > 0 {
                        format!(" {:>5.1}s", s.sim_us as f64 / 1e6)
                    } else {
                        String::new()
                    },
                    Style::default().fg(Color::DarkGray),
                ),
            ]))
        })
        .collect();
    let mut list_state = ListState::default().with_selected(Some(state.selected));
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title("scenarios"))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(list, area, &mut list_state);
}

fn render_scenario(f: &mut Frame, state: &UiState, s: &ScenarioView, area: Rect) {
    let log_min = if state.details { 20 } else { 6 };
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints(if state.details {
            vec![Constraint::Length(3), Constraint::Min(log_min)]
        } else {
            vec![
                Constraint::Length(3),
                Constraint::Length(3),
                Constraint::Length(9),
                Constraint::Min(log_min),
            ]
        })
        .split(area);

    // Phase timeline.
    let mut spans = vec![];
    for (i, (at, phase)) in s.phases.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" → "));
        }
        spans.push(Span::styled(
            format!("{phase} {:.1}s", *at as f64 / 1e6),
            Style::default().fg(phase_colour(phase)),
        ));
    }
    let title = if s.line.is_empty() {
        s.name.clone()
    } else {
        s.line.clone()
    };
    f.render_widget(
        Paragraph::new(Line::from(spans))
            .block(Block::default().borders(Borders::ALL).title(title)),
        parts[0],
    );
    if !state.details {
        render_gauges(f, s, parts[1]);
        render_ecu(f, s, parts[2]);
    }
    render_log(f, state, s, *parts.last().unwrap_or(&area));
}

fn ratio(pair: Option<(u64, u64)>) -> (f64, String) {
    match pair {
        Some((n, of)) if of > 0 => ((n as f64 / of as f64).clamp(0.0, 1.0), format!("{n}/{of}")),
        Some(_) => (0.0, "starting".into()),
        None => (0.0, "-".into()),
    }
}

fn render_gauges(f: &mut Frame, s: &ScenarioView, area: Rect) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
        ])
        .split(area);
    let downloaded = s
        .phases
        .iter()
        .any(|p| p.1 != "downloading" && p.1 != "submitted");
    let download = Gauge::default()
        .block(Block::default().borders(Borders::ALL).title("download"))
        .gauge_style(Style::default().fg(Color::Blue))
        .ratio(if downloaded { 1.0 } else { 0.0 })
        .label(s.download.clone().unwrap_or_else(|| "-".into()));
    f.render_widget(download, cols[0]);
    let (r, label) = ratio(s.blocks);
    f.render_widget(
        Gauge::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("transfer blocks"),
            )
            .gauge_style(Style::default().fg(Color::Yellow))
            .ratio(r)
            .label(label),
        cols[1],
    );
    let (r, label) = ratio(s.swap);
    f.render_widget(
        Gauge::default()
            .block(Block::default().borders(Borders::ALL).title("swap"))
            .gauge_style(Style::default().fg(Color::Magenta))
            .ratio(r)
            .label(label),
        cols[2],
    );
}

fn render_ecu(f: &mut Frame, s: &ScenarioView, area: Rect) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(area);
    let e = &s.ecu;
    let slot = |i: usize, name: &str| {
        let v = &e.slots[i];
        Line::from(format!(
            "{name:<9} {:<10} {}",
            v.version.clone().unwrap_or_else(|| "-".into()),
            v.flags.join(" ")
        ))
    };
    let running = match &e.running {
        Some((slot, v, true)) => format!("{v} from {slot}, on probation"),
        Some((slot, v, false)) => format!("{v} from {slot}"),
        None => "nothing".into(),
    };
    let lines = vec![
        Line::from(vec![
            Span::raw("power    "),
            if e.powered {
                Span::styled("ON", Style::default().fg(Color::Green))
            } else {
                Span::styled("OFF", Style::default().fg(Color::Red))
            },
        ]),
        Line::from(format!(
            "session  {}   security {}",
            if e.session.is_empty() {
                "-"
            } else {
                &e.session
            },
            if e.unlocked { "unlocked" } else { "locked" }
        )),
        Line::from(format!("running  {running}")),
        Line::from(format!("boots    {}", e.boots)),
        slot(0, "primary"),
        slot(1, "secondary"),
        Line::from(format!(
            "DTCs     {}",
            if e.dtcs.is_empty() {
                "none".to_string()
            } else {
                e.dtcs.join(" ")
            }
        )),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("ECU")),
        cols[0],
    );
    let faults: Vec<Line> = s
        .faults
        .iter()
        .rev()
        .take(7)
        .map(|(at, t)| {
            Line::from(vec![
                Span::styled(
                    format!("{:>7.3}s ", *at as f64 / 1e6),
                    Style::default().fg(Color::Red),
                ),
                Span::raw(t.clone()),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(faults)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title("faults")),
        cols[1],
    );
}

fn render_log(f: &mut Frame, state: &UiState, s: &ScenarioView, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let matching: Vec<Line> = s
        .log
        .iter()
        .filter(|e| {
            state.filter.is_empty()
                || e.text.contains(&state.filter)
                || e.event.contains(&state.filter)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(height)
        .rev()
        .map(|e| {
            let colour = match e.source {
                Source::Fault => Color::Red,
                Source::Ota | Source::Client => Color::Cyan,
                Source::Download => Color::Blue,
                Source::Runner => Color::Magenta,
                Source::Ecu => Color::Reset,
            };
            Line::from(vec![
                Span::styled(
                    format!(
                        "{:>10.6} {:<8} ",
                        e.at_us as f64 / 1e6,
                        e.source.to_string()
                    ),
                    Style::default().fg(Color::DarkGray),
                ),
                Span::styled(e.text.to_string(), Style::default().fg(colour)),
            ])
        })
        .collect();
    let title = if state.editing_filter {
        format!("events  filter: {}_", state.filter)
    } else if state.filter.is_empty() {
        "events".to_string()
    } else {
        format!("events  filter: {}", state.filter)
    };
    f.render_widget(
        Paragraph::new(matching).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn render_help(f: &mut Frame, area: Rect) {
    let w = 48.min(area.width);
    let h = 11.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let text = vec![
        Line::from("q       quit (running scenarios finish)"),
        Line::from("p       pause / resume the runs"),
        Line::from("↑ ↓     select a scenario"),
        Line::from("Enter   details: the event log only"),
        Line::from("/       filter the event log (Esc clears)"),
        Line::from("?       this help"),
    ];
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title("help")),
        r,
    );
}

fn key_of(code: crossterm::event::KeyCode) -> Option<Key> {
    use crossterm::event::KeyCode;
    Some(match code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

use ratatui::crossterm;

/// Own the terminal until `finished` is set and the user quits, or the user quits: draw
/// `state` from `rx` at most [`MAX_FPS`] times a second, keys to actions, `control` told of
/// pause and quit.
pub fn run(
    mut state: UiState,
    rx: &Receiver<LiveEvent>,
    buffers: Option<&LiveBuffers>,
    control: &Arc<RunControl>,
    finished: &AtomicBool,
) -> io::Result<UiState> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ratatui::restore();
        previous(info);
    }));
    let mut terminal = ratatui::init();
    let frame = Duration::from_millis(1000 / MAX_FPS);
    let result = (|| -> io::Result<()> {
        loop {
            while let Ok(ev) = rx.try_recv() {
                state.on_live(ev);
            }
            if let Some(b) = buffers {
                state.sample(b);
            }
            terminal.draw(|f| render(f, &state))?;
            if state.quit {
                return Ok(());
            }
            state.finished = finished.load(Ordering::SeqCst);
            if crossterm::event::poll(frame)?
                && let crossterm::event::Event::Key(k) = crossterm::event::read()?
                && k.kind == crossterm::event::KeyEventKind::Press
                && let Some(key) = key_of(k.code)
                && let Some(a) = state.action_for(key)
            {
                state.apply(a);
                control.paused.store(state.paused, Ordering::SeqCst);
                if state.quit {
                    control.stop.store(true, Ordering::SeqCst);
                    control.paused.store(false, Ordering::SeqCst);
                }
            }
        }
    })();
    ratatui::restore();
    let _ = std::panic::take_hook();
    result.map(|()| state)
}
