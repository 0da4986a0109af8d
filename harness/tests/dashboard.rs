//! The dashboard drawn into ratatui's TestBackend at key moments (insta snapshots), keys
//! driving its state; JUnit XML and SVG timelines parsed back; plain output chosen by itself
//! when stdout is not a terminal.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hil::scenario::report::{self, LiveEvent, RunControl, Status};
use hil::scenario::trace::TraceEvent;
use hil::scenario::world::Tap;
use hil::scenario::{junit, runner, timeline};
use hil::ui::dashboard;
use hil::ui::state::{Action, Key, UiState};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The events of a scenario file, as the tap sees them live.
fn live_events(file: &str) -> Vec<TraceEvent> {
    let s = report::load(&workspace().join("scenarios").join(file)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let tap = Tap(Arc::new(move |e: &TraceEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    runner::run_tapped(&s, None, Some(tap)).unwrap();
    seen.lock().unwrap().clone()
}

fn draw(state: &UiState) -> String {
    let mut t = Terminal::new(TestBackend::new(120, 36)).unwrap();
    t.draw(|f| dashboard::render(f, state)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn names() -> Vec<String> {
    [
        "power-cut-transfer-50",
        "wrong-expectation",
        "healthy-ab-doip",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn frames_at_the_start_mid_transfer_with_a_fault_and_at_a_failure() {
    let mut state = UiState::new("hil run", &names());
    insta::assert_snapshot!("dashboard-start", draw(&state));

    // Mid-transfer, just after the power cut fired.
    state.on_live(LiveEvent::Started { idx: 0 });
    let events = live_events("power-cut-transfer-50.yaml");
    let cut = events
        .iter()
        .position(|e| &*e.event == "fault_fired")
        .unwrap();
    for e in &events[..cut + 4] {
        state.on_live(LiveEvent::Events {
            idx: 0,
            events: vec![e.clone()],
        });
    }
    let frame = draw(&state);
    assert!(frame.contains("fault 1 fired"), "{frame}");
    assert!(frame.contains("transferring"), "{frame}");
    insta::assert_snapshot!("dashboard-mid-transfer-fault", frame);

    // The rest of it, then a failed scenario, selected.
    for e in &events[cut + 4..] {
        state.on_live(LiveEvent::Events {
            idx: 0,
            events: vec![e.clone()],
        });
    }
    state.on_live(LiveEvent::Finished {
        idx: 0,
        status: Status::Passed,
        line: "PASS  power-cut-transfer-50   committed, v2.0.0 running in 13.1 s simulated (doip)"
            .into(),
    });
    state.on_live(LiveEvent::Started { idx: 1 });
    for e in live_events("healthy-swap-doip.yaml") {
        state.on_live(LiveEvent::Events {
            idx: 1,
            events: vec![e],
        });
    }
    state.on_live(LiveEvent::Finished {
        idx: 1,
        status: Status::Failed,
        line: "FAIL  wrong-expectation   outcome: expected rolled_back, got committed".into(),
    });
    state.apply(state.action_for(Key::Down).unwrap());
    state.finished = true;
    let frame = draw(&state);
    assert!(frame.contains("FAIL"), "{frame}");
    assert!(frame.contains("1 failed"), "{frame}");
    insta::assert_snapshot!("dashboard-finished-with-a-failure", frame);
}

#[test]
fn keys_drive_the_state() {
    let mut s = UiState::new("hil run", &names());
    let press = |s: &mut UiState, k: Key| {
        if let Some(a) = s.action_for(k) {
            s.apply(a);
        }
    };
    press(&mut s, Key::Down);
    press(&mut s, Key::Down);
    press(&mut s, Key::Down);
    assert_eq!(s.selected, 2, "stops at the last");
    press(&mut s, Key::Up);
    assert_eq!(s.selected, 1);
    press(&mut s, Key::Char('p'));
    assert!(s.paused);
    press(&mut s, Key::Char('p'));
    assert!(!s.paused);
    press(&mut s, Key::Char('/'));
    assert!(s.editing_filter);
    // While typing a filter, q and p are letters.
    for c in "power".chars() {
        press(&mut s, Key::Char(c));
    }
    press(&mut s, Key::Backspace);
    press(&mut s, Key::Enter);
    assert_eq!(
        (s.filter.as_str(), s.editing_filter, s.quit),
        ("powe", false, false)
    );
    press(&mut s, Key::Esc);
    assert!(s.filter.is_empty());
    press(&mut s, Key::Char('?'));
    assert!(s.help);
    assert!(draw(&s).contains("this help"));
    press(&mut s, Key::Esc);
    assert!(!s.help);
    press(&mut s, Key::Enter);
    assert!(s.details);
    assert_eq!(s.action_for(Key::Char('q')), Some(Action::Quit));
    press(&mut s, Key::Char('q'));
    assert!(s.quit);
}

#[test]
fn junit_has_the_structure_ci_systems_read() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = vec![
        write(
            "good.yaml",
            "description: passes\nupdate: {version: 2.0.0, size: 20000}\nexpect: {outcome: committed}\n",
        ),
        write(
            "bad <&> expectation.yaml",
            "description: fails\nupdate: {version: 2.0.0, size: 20000}\nexpect: {outcome: rolled_back}\n",
        ),
        write(
            "broken.yaml",
            "description: invalid\nupdate: {version: 2.0.0}\nexpect: {outcome: comitted}\n",
        ),
    ];
    let mut outcomes = report::run_all(&files, None, 2, &|_| {}, None, None, None);
    // And one the user stopped before it started.
    let stop = Arc::new(RunControl::default());
    stop.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    outcomes.extend(report::run_all(
        &files[..1],
        None,
        1,
        &|_| {},
        None,
        Some(stop),
        None,
    ));
    let xml = junit::render("scenarios", &outcomes);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("tests"), Some("4"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    assert_eq!(suite.attribute("errors"), Some("1"));
    assert_eq!(suite.attribute("skipped"), Some("1"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 4);
    let failed = cases
        .iter()
        .find(|c| c.attribute("name") == Some("bad <&> expectation"))
        .unwrap();
    let failure = failed
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(
        failure
            .attribute("message")
            .unwrap()
            .starts_with("outcome: expected rolled_back")
    );
    assert!(failure.text().unwrap().contains("replay: hil run"));
    let broken = cases
        .iter()
        .find(|c| c.attribute("name") == Some("broken"))
        .unwrap();
    let error = broken.children().find(|n| n.has_tag_name("error")).unwrap();
    assert!(
        error
            .attribute("message")
            .unwrap()
            .contains("broken.yaml:3:19")
    );
    let skipped = cases
        .iter()
        .filter_map(|c| c.children().find(|n| n.has_tag_name("skipped")))
        .next()
        .unwrap();
    assert_eq!(
        skipped.attribute("message"),
        Some("stopped by the user before it started")
    );
}

#[test]
fn the_svg_timeline_has_its_lanes_and_a_marker_per_fault() {
    let s = report::load(&workspace().join("scenarios/three-power-cuts.yaml")).unwrap();
    let r = runner::run(&s, None).unwrap();
    let svg = timeline::render("three-power-cuts", &s.description, &r.trace);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let lane = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no lane {id}"))
    };
    let class_count = |id: &str, class: &str| {
        lane(id)
            .descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    };
    assert_eq!(class_count("lane-faults", "fault"), 3, "three cuts fired");
    assert!(class_count("lane-power", "power-off") >= 3);
    let phases: Vec<_> = lane("lane-ota")
        .descendants()
        .filter_map(|n| n.attribute("data-phase"))
        .collect();
    assert_eq!(
        phases,
        [
            "downloading",
            "downloaded",
            "verifying",
            "transferring",
            "applying",
            "committed"
        ]
        .iter()
        .filter(|p| phases.contains(p))
        .copied()
        .collect::<Vec<_>>()
    );
    assert_eq!(phases.last(), Some(&"committed"));
    assert!(class_count("lane-boots", "boot") >= 4);
    assert!(class_count("lane-boots", "swap") >= 1);
    assert!(lane("axis").descendants().any(|n| n.text() == Some("0 s")));
}

#[test]
fn plain_output_is_chosen_when_stdout_is_not_a_terminal() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "scenarios/power-cut-during-swap.yaml"])
        .current_dir(workspace())
        .env_remove("CI")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no terminal control codes: {out:?}"
    );
    // A line per milestone, not per block.
    assert!(out.contains("power lost at flash op"), "{out}");
    assert!(out.contains("transferring: session"), "{out}");
    assert!(!out.contains("block 3/"), "{out}");
    assert!(out.contains("PASS  power-cut-during-swap"), "{out}");
}

#[test]
fn a_sweep_shows_points_failures_and_rate() {
    let mut state = UiState::new("hil sweep", &["healthy-swap-doip".to_string()]);
    state.on_live(LiveEvent::Sweep {
        done: 120,
        total: 400,
        failed: 2,
        points_per_s: 812.4,
    });
    let frame = draw(&state);
    assert!(
        frame.contains("sweep 120/400 points, 2 failed, 812 points/s"),
        "{frame}"
    );
    assert!(frame.contains("RUN  healthy-swap-doip"), "{frame}");
}

#[test]
fn sampling_folds_the_selected_scenario_and_only_clocks_the_others() {
    let buffers = report::live_buffers(2);
    let events = live_events("power-cut-during-swap.yaml");
    buffers[0].lock().unwrap().extend(events.iter().cloned());
    buffers[1].lock().unwrap().extend(events.iter().cloned());
    let mut s = UiState::new("hil run", &["a".to_string(), "b".to_string()]);
    s.sample(&buffers);
    assert_eq!(s.scenarios[0].log.len(), events.len());
    assert!(s.scenarios[0].ecu.boots >= 3);
    assert!(s.scenarios[1].log.is_empty(), "not selected: not folded");
    assert_eq!(s.scenarios[1].sim_us, events.last().unwrap().at_us);
    // Selecting it folds what it missed; a second look adds nothing twice.
    s.apply(Action::Down);
    s.sample(&buffers);
    s.sample(&buffers);
    assert_eq!(s.scenarios[1].log.len(), events.len());
    assert_eq!(s.scenarios[1].ecu, s.scenarios[0].ecu);
}
