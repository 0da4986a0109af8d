//! The OTA job store under concurrent and careless use, process by process: two runners on one
//! store, many submits at once, deleted job files, a corrupt job beside a good one, a job file
//! renamed by hand.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Bench, Proc, submit, text};
use ecu_sim::image::Behaviour;

fn hil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hil"))
}

/// A manifest file that parses (nothing is fetched at submit).
fn manifest(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("m.yaml");
    std::fs::write(
        &path,
        format!(
            "artifact: {{url: 'http://127.0.0.1:9/a.bin', size: 5, sha256: '{}'}}\nversion: 2.0.0\ntarget: {{transport: doip, host: 127.0.0.1}}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    path
}

fn submit_to(store: &Path, manifest: &Path) -> String {
    let o = hil()
        .args(["ota", "submit"])
        .arg(manifest)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_second_runner_on_the_same_store_is_refused_and_the_first_commits() {
    // A throttled server keeps the first runner in its download while the second starts.
    let b = Bench::start("max", &["--throttle", "20000"]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        60_000,
    );
    assert_eq!(submit(&b, &v2), "job-0001");
    let mut first = b.hil_command(&["ota", "run", "--confirm-timeout", "3"]);
    let mut child = first.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let first = Proc(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("job-0001: downloading"), "{line:?}");

    let second = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let second_out = text(&second);
    assert_eq!(second.status.code(), Some(2), "{second_out}");
    assert!(
        second_out.contains(&format!(
            "error: store {} is in use by another `hil ota run`/`resume`",
            b.store().display()
        )),
        "{second_out}"
    );
    let second = b.hil(&["ota", "resume", "--confirm-timeout", "3", "job-0001"]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut first = first;
    let status = first.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{line}{rest}");
    assert!(rest.contains("job-0001: COMMITTED v2.0.0"), "{rest}");

    // One runner's history: one download, one transfer, no failure anywhere.
    let o = b.hil(&["ota", "status", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jobs[0]["state"]["state"], "committed");
    assert_eq!(jobs[0]["attempts"]["transfer"], 1, "{jobs:#}");
    let history = jobs[0]["history"].as_array().unwrap();
    assert!(
        history.iter().all(|t| t["state"]["state"] != "failed"),
        "{jobs:#}"
    );
    // Once the runner is gone the store is free again.
    let o = b.hil(&["ota", "run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn concurrent_submits_all_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (m, store) = (manifest(dir.path()), dir.path().join("store"));
    const N: usize = 16;
    let children: Vec<_> = (0..N)
        .map(|_| {
            hil()
                .args(["ota", "submit"])
                .arg(&m)
                .arg("--store")
                .arg(&store)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect();
    ids.sort();
    let want: Vec<String> = (1..=N).map(|n| format!("job-{n:04}")).collect();
    assert_eq!(ids, want);
    // Every id has its own job file, and each file holds its own id.
    for id in &ids {
        let text = std::fs::read_to_string(store.join("jobs").join(format!("{id}.json"))).unwrap();
        let job: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(job["id"], id.as_str());
    }
    let o = hil()
        .args(["ota", "status", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2 * N);
}

#[test]
fn an_id_is_never_reused_after_its_job_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (m, store) = (manifest(dir.path()), dir.path().join("store"));
    assert_eq!(submit_to(&store, &m), "job-0001");
    assert_eq!(submit_to(&store, &m), "job-0002");
    let jobs = store.join("jobs");
    let second = std::fs::read_to_string(jobs.join("job-0002.json")).unwrap();
    std::fs::remove_file(jobs.join("job-0001.json")).unwrap();
    // Not job-0002 again (which would overwrite it).
    assert_eq!(submit_to(&store, &m), "job-0003");
    assert_eq!(
        std::fs::read_to_string(jobs.join("job-0002.json")).unwrap(),
        second
    );
    // Nor the highest id, once its file is gone.
    std::fs::remove_file(jobs.join("job-0003.json")).unwrap();
    assert_eq!(submit_to(&store, &m), "job-0004");
}

#[test]
fn a_corrupt_job_is_reported_and_the_other_jobs_still_run_and_show() {
    let b = Bench::start("max", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        20_000,
    );
    assert_eq!(submit(&b, &v2), "job-0001");
    assert_eq!(submit(&b, &v2), "job-0002");
    let bad = b.store().join("jobs/job-0001.json");
    std::fs::write(&bad, "{\"format\": 1,\n  \"id\": ").unwrap();
    let named = format!(
        "error: job file {} is corrupt at line 2 column",
        bad.display()
    );

    let o = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let out = text(&o);
    // Exit 2: the harness could not read a job; the good one ran all the same.
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains(&named), "{out}");
    assert!(out.contains("job-0002: COMMITTED v2.0.0"), "{out}");

    let o = b.hil(&["ota", "status"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains(&named), "{out}");
    assert!(out.contains("job-0002  v2.0.0"), "{out}");
    let o = b.hil(&["ota", "status", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs:#}");
    assert_eq!(jobs[0]["id"], "job-0002");
    assert_eq!(jobs[0]["state"]["state"], "committed");
}

#[test]
fn a_job_file_whose_id_disagrees_with_its_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (m, store) = (manifest(dir.path()), dir.path().join("store"));
    assert_eq!(submit_to(&store, &m), "job-0001");
    let jobs = store.join("jobs");
    std::fs::rename(jobs.join("job-0001.json"), jobs.join("job-0007.json")).unwrap();
    let o = hil()
        .args(["ota", "status", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "error: job file {} holds job job-0001, its name says job-0007",
            jobs.join("job-0007.json").display()
        )),
        "{out}"
    );
}
