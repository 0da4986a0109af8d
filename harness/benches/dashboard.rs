//! What the dashboard costs the simulation: the scenario library run N times without a live
//! view, and with the dashboard's loop (drain the live events, draw at most 20 frames a second
//! into ratatui's TestBackend, the same rendering as on a terminal) on a thread beside it.
//!
//! `cargo bench -p hil --bench dashboard` (release). ROUNDS (default 30) sets N, JOBS the
//! simulation threads (default: one per core).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hil::scenario::report;
use hil::ui::dashboard::{self, MAX_FPS};
use hil::ui::state::UiState;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let one = report::discover(&[dir]).unwrap();
    let files: Vec<_> = (0..rounds).flat_map(|_| one.iter().cloned()).collect();
    let names: Vec<String> = files.iter().map(|f| report::name_of(f)).collect();
    let jobs = std::env::var("JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let mut plain = Vec::new();
    let mut with_ui = Vec::new();
    let mut frames = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let o = report::run_all(&files, None, jobs, &|_| {}, None, None, None);
        assert!(o.iter().all(|o| o.status == report::Status::Passed));
        plain.push(t.elapsed().as_secs_f64());

        let (tx, rx) = std::sync::mpsc::channel();
        let buffers = report::live_buffers(files.len());
        let done = AtomicBool::new(false);
        let t = Instant::now();
        std::thread::scope(|s| {
            let frames = &mut frames;
            let (names, done, buffers_ui) = (&names, &done, &buffers);
            s.spawn(move || {
                let mut state = UiState::new("hil run", names);
                let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
                let frame = Duration::from_millis(1000 / MAX_FPS);
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    while let Ok(ev) = rx.try_recv() {
                        state.on_live(ev);
                    }
                    state.sample(buffers_ui);
                    term.draw(|f| dashboard::render(f, &state)).unwrap();
                    *frames += 1;
                    if finished {
                        return;
                    }
                    std::thread::sleep(frame);
                }
            });
            let live = report::Live {
                tx,
                buffers: Some(std::sync::Arc::clone(&buffers)),
            };
            let o = report::run_all(&files, None, jobs, &|_| {}, Some(live), None, None);
            assert!(o.iter().all(|o| o.status == report::Status::Passed));
            done.store(true, Ordering::SeqCst);
        });
        with_ui.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, u) = (median(&mut plain), median(&mut with_ui));
    println!(
        "{} scenario runs on {jobs} threads, median of 7, alternating: without a view {p:.3} s, with the dashboard {u:.3} s ({frames} frames drawn in all): overhead {:+.1} %",
        files.len(),
        (u / p - 1.0) * 100.0
    );
}
