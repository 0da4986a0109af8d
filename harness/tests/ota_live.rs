//! The OTA flow live, process by process: `ecu-sim serve` (DoIP on loopback), `hil
//! serve-artifacts` (HTTP on loopback) and `hil ota submit/run/status`, like a user runs them.

mod common;

use common::{Bench, submit, text};
use ecu_sim::image::Behaviour;

#[test]
fn update_commits_then_a_never_confirming_image_rolls_back() {
    let b = Bench::start("max", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        60_000,
    );
    assert_eq!(submit(&b, &v2), "job-0001");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for line in [
        "job-0001: downloading (0 bytes)",
        "job-0001: downloaded",
        "job-0001: verifying",
        "job-0001: transferring: session",
        "job-0001: transferring: erase",
        "job-0001: applying: reset",
        "job-0001: applying: await_confirm",
        "job-0001: COMMITTED v2.0.0 to doip 127.0.0.1:",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    let v3 = b.publish(3, Behaviour::NeverConfirm, 50_000);
    assert_eq!(submit(&b, &v3), "job-0002");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("job-0002: ROLLED BACK (reverted: not confirmed after 1 boot attempt(s))"),
        "{out}"
    );

    let o = b.hil(&["ota", "status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jobs[0]["state"]["state"], "committed");
    assert_eq!(jobs[1]["state"]["state"], "rolled_back");
    let o = b.hil(&["ota", "status"]);
    assert!(text(&o).contains("job-0002  v3.0.0"), "{}", text(&o));
}

#[test]
fn bad_manifests_and_stores_are_clear_errors() {
    let b = Bench::start("max", &[]);
    let m = b.dir.path().join("bad.yaml");
    std::fs::write(
        &m,
        "artifact: {url: 'http://x/a', size: 1}\nversion: 1.0.0\n",
    )
    .unwrap();
    let o = b.hil(&["ota", "submit", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.yaml:1:11: artifact: missing field `sha256`"),
        "{}",
        text(&o)
    );
    let v2 = b.publish(2, Behaviour::DEFAULT, 20_000);
    submit(&b, &v2);
    std::fs::write(
        b.store().join("jobs/job-0001.json"),
        "{\"format\": 1, \"id\": ",
    )
    .unwrap();
    let o = b.hil(&["ota", "run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("job-0001.json is corrupt at line 1"),
        "{}",
        text(&o)
    );
}

/// A v2 update through an artifact server with `faults`; returns the bench, the exit code and
/// the output of `hil ota run ARGS`.
fn update_through(faults: &[&str], args: &[&str]) -> (Bench, Option<i32>, String) {
    let b = Bench::start("max", faults);
    let v2 = b.publish(2, Behaviour::DEFAULT, 120_000);
    assert_eq!(submit(&b, &v2), "job-0001");
    let mut all = vec!["ota", "run", "--confirm-timeout", "3"];
    all.extend_from_slice(args);
    let o = b.hil(&all);
    let out = text(&o);
    (b, o.status.code(), out)
}

fn assert_in_order(out: &str, lines: &[&str]) {
    let mut rest = out;
    for line in lines {
        match rest.find(line) {
            Some(i) => rest = &rest[i + line.len()..],
            None => panic!("no {line:?} (in this order) in:\n{out}"),
        }
    }
}

#[test]
fn a_download_cut_at_n_bytes_resumes_from_there() {
    let (_b, code, out) = update_through(&["--close-after", "50000", "--once"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_in_order(
        &out,
        &[
            "download: requesting the whole artifact",
            "download: resuming at byte 50000",
            "job-0001: downloaded",
            "job-0001: COMMITTED v2.0.0",
        ],
    );
    assert!(!out.contains("restarting from byte 0"), "{out}");
}

#[test]
fn a_stalled_download_times_out_and_the_retry_resumes() {
    let (_b, code, out) = update_through(
        &["--stall-after", "30000", "--stall-ms", "5000", "--once"],
        &["--idle-timeout", "0.5"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_in_order(
        &out,
        &[
            "download: requesting the whole artifact",
            "no byte from the server for 500ms at byte 30000; attempt 2 in",
            "download: resuming at byte 30000",
            "job-0001: COMMITTED v2.0.0",
        ],
    );
}

#[test]
fn a_server_failing_every_second_request_is_retried() {
    // Request 1 is cut at 40000 bytes, request 2 gets a 503, request 3 resumes at 40000.
    let (_b, code, out) = update_through(
        &[
            "--close-after",
            "40000",
            "--fail-every",
            "2",
            "--fail-status",
            "503",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_in_order(
        &out,
        &[
            "download: requesting the whole artifact",
            "503",
            "download: resuming at byte 40000",
            "job-0001: COMMITTED v2.0.0",
        ],
    );
}

#[test]
fn a_flipped_byte_is_downloaded_again_and_never_flashed() {
    // Once: the hash check fails, the artifact is fetched again from byte 0, then flashed.
    let (b, code, out) = update_through(&["--flip-byte", "1000", "--once"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_in_order(
        &out,
        &[
            "download: requesting the whole artifact",
            "download: sha-256 mismatch",
            "the file was deleted",
            "download: requesting the whole artifact",
            "job-0001: downloaded",
            "job-0001: transferring: session",
            "job-0001: COMMITTED v2.0.0",
        ],
    );
    let o = b.hil(&["ota", "status"]);
    assert!(text(&o).contains("transfers 1"), "{}", text(&o));

    // Always: the job fails in the download, and the ECU never saw a byte of it.
    let (b, code, out) = update_through(&["--flip-byte", "1000"], &["--http-retries", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("job-0001: FAILED (download: "), "{out}");
    assert!(out.contains("sha-256"), "{out}");
    assert!(!out.contains("transferring"), "{out}");
    let (status, _) = b.ecu_state();
    assert_eq!(status.version, Some(ecu_sim::image::Version::new(1, 0, 0)));
}

/// A download that gives up says why, whatever the server did: the job's reason names the
/// attempts' errors (a hash mismatch, a 503, a closed connection), not just "gave up".
#[test]
fn a_download_that_gives_up_names_the_last_errors() {
    for (faults, want) in [
        (&["--flip-byte", "1000"][..], "sha-256 mismatch"),
        (&["--fail-every", "1", "--fail-status", "503"][..], "503"),
        (&["--close-after", "0"][..], "closed"),
    ] {
        let (_b, code, out) =
            update_through(faults, &["--download-attempts", "2", "--http-retries", "1"]);
        assert_eq!(code, Some(1), "{out}");
        let failed = out
            .lines()
            .find(|l| l.contains("job-0001: FAILED"))
            .unwrap_or_else(|| panic!("no FAILED line in:\n{out}"));
        println!("{failed}");
        assert!(
            failed.contains("gave up after 2 attempts") && failed.contains(want),
            "{faults:?}: {failed}"
        );
    }
}
