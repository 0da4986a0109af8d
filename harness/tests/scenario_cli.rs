//! `hil run`, `hil validate`, `hil list` as a user runs them (output piped, so plain mode).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_passing_scenario_prints_one_line_a_summary_and_its_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("traces");
    let o = hil(&[
        "run",
        "scenarios/healthy-swap-doip.yaml",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PASS  healthy-swap-doip")
            && l.contains("committed, v2.0.0 running in")),
        "{out}"
    );
    assert!(
        out.contains("1 scenario(s): 1 passed, 0 failed, 0 error(s), 0 invalid, 0 skipped"),
        "{out}"
    );
    let jsonl = std::fs::read_to_string(trace.join("healthy-swap-doip.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["event"] == "confirmed"), "{jsonl}");
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["at_us"].as_u64() <= w[1]["at_us"].as_u64())
    );
}

#[test]
fn same_named_scenarios_of_different_folders_keep_their_own_traces() {
    let dir = tempfile::tempdir().unwrap();
    for (folder, from) in [("a", "healthy-swap-doip"), ("b", "healthy-ab-doip")] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        std::fs::copy(
            workspace().join(format!("scenarios/{from}.yaml")),
            dir.path().join(folder).join("x.yaml"),
        )
        .unwrap();
    }
    let trace = dir.path().join("traces");
    let timeline = dir.path().join("timelines");
    let o = hil(&[
        "run",
        dir.path().join("a/x.yaml").to_str().unwrap(),
        dir.path().join("b/x.yaml").to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let read = |p: &str| std::fs::read_to_string(trace.join(p)).unwrap();
    // The A/B layout swaps nothing; the swap layout does.
    assert!(read("a/x.jsonl").contains("\"swap_started\""));
    assert!(!read("b/x.jsonl").contains("\"swap_started\""));
    assert!(!trace.join("x.jsonl").exists());
    assert!(timeline.join("a/x.svg").is_file() && timeline.join("b/x.svg").is_file());
}

#[test]
fn a_failing_scenario_explains_itself_and_replays_identically() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong-expectation.yaml");
    std::fs::write(
        &file,
        "description: expects a rollback from a healthy image\nseed: 99\nupdate: {version: 2.0.0, size: 30000}\nexpect: {outcome: rolled_back}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let traces = |n: &str| dir.path().join(n);
    let o = hil(&["run", path, "--trace", traces("a").to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  wrong-expectation"), "{out}");
    assert!(
        out.contains("--- wrong-expectation (FAIL) seed 99"),
        "{out}"
    );
    assert!(
        out.contains("outcome: expected rolled_back, got committed"),
        "{out}"
    );
    assert!(out.contains("last events:"), "{out}");
    let replay = format!("replay: hil run {path} --seed 99");
    assert!(out.contains(&replay), "{out}");
    // The replay command, in another process: the same trace, byte for byte.
    let o = hil(&[
        "run",
        path,
        "--seed",
        "99",
        "--trace",
        traces("b").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let a = std::fs::read(traces("a/wrong-expectation.jsonl")).unwrap();
    let b = std::fs::read(traces("b/wrong-expectation.jsonl")).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a, b, "same file and seed, same trace");
}

#[test]
fn invalid_input_exits_2_and_engine_errors_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: comitted}\n",
    )
    .unwrap();
    let o = hil(&["run", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("bad.yaml:3:19: expect.outcome: unknown variant `comitted`"),
        "{}",
        text(&o)
    );
    let o = hil(&["run", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Invalid is a status of its own, not guessed from the message: a file named on the
    // command line without `.yaml` (whose errors never contain ".yaml:") is invalid too
    // (it was an engine error, exit 3).
    let odd = dir.path().join("bad.scenario");
    std::fs::copy(&bad, &odd).unwrap();
    let o = hil(&["run", odd.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("INVALID"), "{}", text(&o));
    assert!(text(&o).contains("0 error(s), 1 invalid"), "{}", text(&o));

    // An installed image larger than its slot is invalid input, found before anything is
    // allocated (it used to be an engine error; `size: 18446744073709551615` panicked, 101).
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        "description: x\ninstalled: {version: 1.0.0, size: 18446744073709551615}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
    )
    .unwrap();
    for verb in ["validate", "run"] {
        let o = hil(&[verb, big.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", text(&o));
        assert!(
            text(&o).contains("big.yaml:2:35: installed.size: 18446744073709551615 payload bytes do not fit the slot"),
            "{}",
            text(&o)
        );
    }

    // Valid, but the harness cannot write its output: 3.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "description: x\nupdate: {version: 2.0.0, size: 2000}\nexpect: {outcome: committed}\n",
    )
    .unwrap();
    let o = hil(&["run", good.to_str().unwrap(), "--trace", "/dev/null/traces"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn validate_refuses_an_empty_directory_and_fifos_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let o = hil(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("error: no scenario files (*.yaml) in the given paths"),
        "{}",
        text(&o)
    );
    let fifo = dir.path().join("pipe.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for verb in ["validate", "run"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hil"))
            .args([verb, dir.path().to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("hil {verb} hangs on a FIFO named *.yaml");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", text(&o));
        assert!(
            text(&o).contains("pipe.yaml:1:1: not a regular file"),
            "{verb}: {}",
            text(&o)
        );
    }
}

#[test]
fn a_fault_that_never_fired_is_named_in_the_files_words_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unfired.yaml");
    std::fs::write(
        &file,
        "description: x\nupdate: {version: 2.0.0, size: 2000}\nfaults:\n  - when: {boot: 2}\n    do: reset\n    optional: true\n  - when: {flash_op: {n: 900000, region: primary}}\n    do: {power_cut: {}}\nexpect: {outcome: committed}\n",
    )
    .unwrap();
    let o = hil(&["run", file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let want = format!(
        "{}:7:5: fault 2 (when: {{flash_op: {{n: 900000, region: primary}}}}) never fired",
        file.display()
    );
    assert!(out.contains(&want), "{want} in:\n{out}");
    assert!(!out.contains("FlashOp"), "{out}");
}

#[test]
fn validate_and_list_cover_the_library() {
    let o = hil(&["validate", "scenarios"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = hil(&["list", "scenarios"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().count() >= 25, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("power-cut-during-swap") && l.contains("swap resumes")),
        "{out}"
    );
}

#[test]
fn state_triggers_fire_on_terminal_states_and_event_state_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("states.yaml");
    std::fs::write(
        &file,
        "description: x\nupdate: {version: 2.0.0, size: 2000}\nfaults:\n  - when: {state: committed}\n    do: {inject_nrc: {service: 0x22, nrc: 0x22, count: 1}}\n  - when: {event: 'state:transferring'}\n    do: {inject_nrc: {service: 0x3e, nrc: 0x22, count: 1}}\nexpect: {outcome: committed}\n",
    )
    .unwrap();
    let o = hil(&["run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
