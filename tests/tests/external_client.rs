//! External flashers as the OTA client (`client: {external: ...}`): a small udsoncan script
//! (`examples/external-client/udsoncan_flasher.py`, a team's own tool) programs the virtual ECU
//! over a real DoIP socket and through a real slcan pty while the scenario cuts the ECU's power
//! mid-transfer. Python and its packages come from `.venv` (`ci/install.sh`); `HIL_PYTHON`
//! overrides the interpreter.

use std::path::{Path, PathBuf};

use hil::scenario::runner::{self, RunResult};
use hil::scenario::schema::OutcomeSpec;
use hil::scenario::validate;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/external-client")
}

fn python() -> PathBuf {
    let path = std::env::var_os("HIL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run ci/install.sh (it installs udsoncan, doipclient, python-can and can-isotp into .venv)",
        path.display()
    );
    path
}

/// Run an example scenario with the venv's Python as `$HIL_PYTHON`.
fn run(name: &str) -> RunResult {
    let path = examples().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut scenario =
        validate::parse(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let hil::scenario::schema::Client::External(client) = &mut scenario.client else {
        panic!("{name} has no external client");
    };
    client
        .env
        .insert("HIL_PYTHON".into(), python().display().to_string());
    runner::run(&scenario, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn texts(r: &RunResult) -> Vec<String> {
    r.trace.events.iter().map(|e| e.text.to_string()).collect()
}

fn position(r: &RunResult, what: &str) -> usize {
    texts(r)
        .iter()
        .position(|t| t.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in the trace:\n{}", texts(r).join("\n")))
}

#[test]
fn udsoncan_over_doip_survives_a_power_cut_mid_transfer() {
    let r = run("power-cut-mid-transfer-doip.yaml");
    assert!(
        r.failures.is_empty(),
        "{:#?}\n{}",
        r.failures,
        texts(&r).join("\n")
    );
    assert_eq!(r.end.outcome, OutcomeSpec::Committed);
    assert!(r.end.confirmed);
    assert_eq!(
        r.end.version.map(|v| v.to_string()).as_deref(),
        Some("2.0.0")
    );
    // The cut landed mid-transfer (the fault counts the client's blocks), the client saw the
    // ECU go away and started over, and exited 0 once 2.0.0 ran confirmed.
    let cut = position(&r, "fault 1 fired at transfer block");
    let gone = position(&r, "the ECU went away");
    let again = position(&r, "attempt 2: programming");
    let done = position(&r, "2.0.0 runs confirmed");
    assert!(
        cut < gone && gone < again && again < done,
        "{}",
        texts(&r).join("\n")
    );
    assert!(
        texts(&r)
            .iter()
            .any(|t| t == "the client exited with status 0")
    );
    assert!(r.job.is_none(), "no manager job with an external client");
}

#[test]
fn udsoncan_through_the_slcan_pty_survives_a_power_cut_mid_transfer() {
    let r = run("power-cut-mid-transfer-slcan.yaml");
    assert!(
        r.failures.is_empty(),
        "{:#?}\n{}",
        r.failures,
        texts(&r).join("\n")
    );
    assert_eq!(r.end.outcome, OutcomeSpec::Committed);
    let cut = position(&r, "fault 1 fired at transfer block");
    let done = position(&r, "2.0.0 runs confirmed");
    assert!(cut < done);
}

#[test]
fn a_client_that_gives_up_fails_the_update_but_the_ecu_runs_the_old_image() {
    let r = run("gives-up.yaml");
    assert!(
        r.failures.is_empty(),
        "{:#?}\n{}",
        r.failures,
        texts(&r).join("\n")
    );
    assert_eq!(r.end.outcome, OutcomeSpec::Failed);
    let reason = r.end.reason.clone().unwrap_or_default();
    assert!(reason.contains("exited with status 1"), "{reason}");
    assert!(reason.contains("the ECU runs v1.0.0"), "{reason}");
    assert_eq!(
        r.end.version.map(|v| v.to_string()).as_deref(),
        Some("1.0.0")
    );
}

#[test]
fn a_hanging_client_is_killed_at_its_timeout() {
    let text = "description: a client that never ends\nupdate: {version: 2.0.0}\nclient:\n  external: {command: 'sleep 30; echo {port}', timeout_s: 0.5}\nexpect: {outcome: failed, reason_contains: did not finish within 0.5 s}\n";
    let scenario = validate::parse(text, "hang.yaml").unwrap();
    let start = std::time::Instant::now();
    let r = runner::run(&scenario, None).unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    // Killed with its process group (the `sleep` too), not waited for.
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

#[test]
fn external_client_problems_are_located() {
    let text = "description: x\nupdate: {version: 2.0.0}\nclient:\n  external:\n    command: 'flash --host {hots} --port {port}'\nfaults:\n  - when: {state: transferring}\n    do: {power_cut: {}}\n  - when: {transfer_block: 2}\n    do: kill_manager\nexpect: {outcome: committed, download_resumed: false}\n";
    let e = validate::parse(text, "x.yaml").unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert!(
        lines[0].starts_with("x.yaml:5:14: client.external.command: unknown placeholder `{hots}` (did you mean `{host}`?)"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("x.yaml:7:19: faults[0].when.state: needs the project's OTA manager"),
        "{e}"
    );
    assert!(
        lines[2].starts_with("x.yaml:10:9: faults[1].do: needs the project's OTA manager"),
        "{e}"
    );
    assert!(
        lines[3].starts_with(
            "x.yaml:11:48: expect.download_resumed: an external client gets the image as a file"
        ),
        "{e}"
    );
}
