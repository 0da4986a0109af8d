//! Crash safety, the aktualizr/Mender way: `hil ota resume` is killed with SIGKILL at seeded
//! instants spread over every phase of a live update (real HTTP, real DoIP, the ECU served by
//! `ecu-sim serve`), and restarted each time — well over 100 kills per run, over a committing,
//! a never-confirming and a crashing image. Half the instants are aimed at phase boundaries
//! (the moment a state is persisted), half are random inside phases; some wait out the
//! confirm timeout so that the manager dies while the bootloader reverts the image.
//!
//! After every kill: the job file is valid and loadable, the ECU runs a verified image (old or
//! new), a resumed download continues from the bytes on disk. At the end: the job's outcome is
//! the outcome of the same update run without kills (a reference bench), and no job ever
//! transferred its image again after the ECU booted it (an image the bootloader reverted is
//! never installed twice).
//!
//! Replay: the seed is printed at the start; `OTA_CRASH_SEED=N cargo nextest run -p hil
//! --test ota_crash` runs the same kill plan (the instants are seeded; how far the job got by
//! then depends on the machine's speed, which is the point of killing a real process).

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Bench, submit};
use ecu_sim::image::{Behaviour, Version};
use hil::ota::store::Store;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Where a job is, as a number that only grows along the happy path: the phase, the fraction
/// of the artifact on disk, the transfer step with the fraction of blocks sent, the apply step.
fn rank(job: &serde_json::Value, on_disk: u64) -> f64 {
    let state = &job["state"];
    match state["state"].as_str().unwrap_or_default() {
        "submitted" => 0.0,
        "downloading" => {
            let size = job["manifest"]["artifact"]["size"].as_f64().unwrap_or(1.0);
            1.0 + on_disk as f64 / size.max(1.0)
        }
        "downloaded" => 2.0,
        "verifying" => 3.0,
        "transferring" => match state["step"]["step"].as_str().unwrap_or_default() {
            "session" => 4.0,
            "security" => 5.0,
            "erase" => 6.0,
            "request_download" => 7.0,
            "block" => {
                let n = state["step"]["n"].as_f64().unwrap_or(0.0);
                let of = state["step"]["of"].as_f64().unwrap_or(1.0).max(1.0);
                8.0 + n / of
            }
            "exit" => 9.0,
            _ => 10.0,
        },
        "applying" => match state["step"].as_str().unwrap_or_default() {
            "reset" => 11.0,
            "await_boot" => 12.0,
            _ => 13.0,
        },
        _ => 14.0,
    }
}

fn describe(job: &serde_json::Value, on_disk: u64) -> String {
    let state = &job["state"];
    match state["state"].as_str().unwrap_or_default() {
        "downloading" => format!("downloading ({on_disk} bytes on disk)"),
        "transferring" => match state["step"]["step"].as_str().unwrap_or_default() {
            "block" => format!(
                "transferring block {}/{}",
                state["step"]["n"], state["step"]["of"]
            ),
            s => format!("transferring {s}"),
        },
        // The manager reset the ECU again after probation: the bootloader reverts.
        "applying" if reverting(job) => {
            format!("reverting ({})", state["step"].as_str().unwrap_or_default())
        }
        "applying" => format!("applying {}", state["step"].as_str().unwrap_or_default()),
        s => s.to_string(),
    }
}

/// Whether the job is past probation and the manager reset the ECU again (the revert).
fn reverting(job: &serde_json::Value) -> bool {
    let history = job["history"].as_array().map_or(&[][..], Vec::as_slice);
    let probation = history
        .iter()
        .position(|t| t["state"]["step"] == "await_confirm");
    probation.is_some_and(|at| {
        history[at..]
            .iter()
            .any(|t| t["state"]["step"] == "reset" || t["state"]["step"] == "await_boot")
    })
}

/// The job file, which must be valid JSON and a loadable job whenever it is read.
fn read_job(bench: &Bench, id: &str) -> serde_json::Value {
    let store = Store::open(&bench.store()).unwrap();
    let path = store.job_path(id);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON ({e}):\n{text}", path.display()));
    store
        .load(id)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    value
}

/// One kill of the plan: once the job has got at least as far as `rank` (or, with
/// `reverting`, once the manager has reset the ECU after probation), wait `delay`, kill.
#[derive(Debug)]
struct Kill {
    rank: f64,
    reverting: bool,
    delay: Duration,
}

/// Phase entries (see [`rank`]): the instants a state is persisted.
const BOUNDARIES: [f64; 13] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0,
];

/// `kills` instants over the whole update, in the order they can happen: every phase
/// boundary once (a kill right after the state is persisted, before or while its side effect
/// runs), the rest random — a quarter while downloading, half while transferring, a quarter
/// while applying. `reverts`: that many more kills once the image is past probation and the
/// manager has sent the reset that makes the bootloader revert it.
fn plan(rng: &mut ChaCha8Rng, kills: usize, reverts: usize) -> Vec<Kill> {
    let mut plan: Vec<Kill> = BOUNDARIES
        .iter()
        .map(|&rank| Kill {
            rank,
            reverting: false,
            delay: Duration::from_millis(rng.gen_range(0..3)),
        })
        .collect();
    let random = kills.saturating_sub(BOUNDARIES.len());
    plan.extend((0..random).map(|i| {
        let range = match i * 4 / random.max(1) {
            0 => 1.0..2.0,
            1 | 2 => 3.0..10.0,
            _ => 11.0..13.5,
        };
        Kill {
            rank: rng.gen_range(range),
            reverting: false,
            delay: Duration::from_millis(rng.gen_range(0..120)),
        }
    }));
    plan.sort_by(|a, b| a.rank.total_cmp(&b.rank));
    // The revert: the confirm timeout runs out, the manager resets the ECU, the bootloader
    // swaps back (about 1.6 s at 5x for these images). The first kill lands while the ECU
    // reverts; the next ones kill the resumed manager while it waits for the reverting ECU.
    plan.extend((0..reverts).map(|i| Kill {
        rank: 0.0,
        reverting: i == 0,
        delay: Duration::from_millis(rng.gen_range(20..600)),
    }));
    plan
}

/// No `transferring` entry after the ECU booted the new image (`applying: await_boot`): an
/// image the ECU already took is never programmed again.
fn assert_never_transferred_after_boot(job: &serde_json::Value) {
    let history = job["history"].as_array().expect("a history");
    let booted = history
        .iter()
        .position(|t| t["state"]["state"] == "applying" && t["state"]["step"] == "await_boot");
    if let Some(at) = booted {
        let again: Vec<_> = history[at..]
            .iter()
            .filter(|t| t["state"]["state"] == "transferring")
            .collect();
        assert!(
            again.is_empty(),
            "the image was transferred again after the ecu booted it: {job:#}"
        );
    }
}

/// The manager's confirm timeout (probation before it makes the bootloader revert).
const CONFIRM_TIMEOUT_S: &str = "4";

fn resume(bench: &Bench, log: &Path) -> Child {
    bench
        .hil_command(&[
            "ota",
            "resume",
            "--confirm-timeout",
            CONFIRM_TIMEOUT_S,
            "--download-attempts",
            "40",
            "--transfer-attempts",
            "40",
        ])
        .stdout(Stdio::from(File::create(log).unwrap()))
        .stderr(Stdio::from(
            File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .unwrap()
}

/// Runs job `id` under the kill plan, then to its end; returns the phases the kills hit.
fn run_under_kills(
    bench: &Bench,
    id: &str,
    plan: &[Kill],
    old: Version,
    new: Version,
) -> (Vec<String>, usize) {
    let artifact = Store::open(&bench.store()).unwrap().artifact_path(id);
    let mut hit = Vec::new();
    let mut resumed = 0;
    for (i, kill) in plan.iter().enumerate() {
        let log = bench.dir.path().join(format!("{id}-run{i}.log"));
        let disk = || std::fs::metadata(&artifact).map_or(0, |m| m.len());
        let on_disk = disk();
        let before = read_job(bench, id);
        if rank(&before, on_disk) >= 14.0 {
            break;
        }
        let mut child = resume(bench, &log);
        // Wait until the job got as far as the plan says (or the run ended).
        let started = Instant::now();
        let mut exited = false;
        let far_enough = |job: &serde_json::Value| {
            let r = rank(job, disk());
            r >= 14.0 || (r >= kill.rank && (!kill.reverting || reverting(job)))
        };
        while !far_enough(&read_job(bench, id)) && started.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !exited {
            std::thread::sleep(kill.delay);
            // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no goodbye.
            exited = child.kill().is_err();
        }
        child.wait().unwrap();
        let after = read_job(bench, id);
        let out = std::fs::read_to_string(&log).unwrap();
        let err = std::fs::read_to_string(log.with_extension("err")).unwrap();
        if !exited && rank(&after, 0) < 14.0 {
            hit.push(describe(&after, disk()));
        }
        eprintln!(
            "{id} kill {i}: target rank {:.2} + {:?}: {} -> {}{}",
            kill.rank,
            kill.delay,
            describe(&before, on_disk),
            describe(&after, disk()),
            if exited {
                " (finished first)"
            } else {
                " (killed)"
            }
        );
        // A download with bytes on disk continues from them.
        if on_disk > 0 && before["state"]["state"] == "downloading" {
            assert!(
                !out.contains("requesting the whole artifact")
                    && !out.contains("restarting from byte 0"),
                "the download restarted from byte 0 with {on_disk} bytes on disk:\n{out}{err}"
            );
            let size = before["manifest"]["artifact"]["size"].as_u64().unwrap();
            if out.contains("download:") && on_disk < size {
                assert!(
                    out.contains(&format!("download: resuming at byte {on_disk}")),
                    "no resume from the {on_disk} bytes on disk:\n{out}{err}"
                );
                resumed += 1;
            }
        }
        assert!(!err.contains("error:"), "{id} run {i} broke:\n{out}{err}");
        // The ECU runs an image that verifies, old or new.
        let (status, slot) = bench.ecu_state();
        assert_eq!(
            slot.image, 1,
            "the ecu runs an unverified image: {status:?} {slot:?}"
        );
        assert!(
            status.version == Some(old) || status.version == Some(new),
            "the ecu runs {:?}, neither {old} nor {new}",
            status.version
        );
    }
    // No more kills: let it finish.
    let log = bench.dir.path().join(format!("{id}-final.log"));
    let status = resume(bench, &log).wait().unwrap();
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(status.code().is_some_and(|c| c < 2), "{out}");
    eprintln!("{id}: {resumed} downloads resumed from the bytes on disk");
    (hit, resumed)
}

/// The three updates, in order, on one ECU: (image, outcome, old version, new version).
fn updates() -> [(u8, Behaviour, usize, &'static str); 3] {
    [
        (
            2,
            Behaviour::Healthy {
                confirm_after_ms: 8_000,
            },
            200_000,
            "committed",
        ),
        (3, Behaviour::NeverConfirm, 160_000, "rolled_back"),
        (4, Behaviour::CrashOnBoot, 160_000, "rolled_back"),
    ]
}

/// The final state of each update without kills, on a bench of its own.
fn reference() -> Vec<serde_json::Value> {
    let bench = Bench::start("5", &["--throttle", "200000"]);
    updates()
        .into_iter()
        .map(|(major, behaviour, len, _)| {
            let id = submit(&bench, &bench.publish(major, behaviour, len));
            let log = bench.dir.path().join(format!("{id}-reference.log"));
            let status = resume(&bench, &log).wait().unwrap();
            assert!(status.code().is_some_and(|c| c < 2));
            let job = read_job(&bench, &id);
            assert_eq!(
                job["attempts"]["transfer"], 1,
                "without kills one transfer: {job:#}"
            );
            job["state"].clone()
        })
        .collect()
}

#[test]
fn sigkill_at_seeded_instants_in_every_phase_never_loses_the_update() {
    let seed = std::env::var("OTA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0004_u64);
    eprintln!(
        "seed {seed} (replay: OTA_CRASH_SEED={seed} cargo nextest run -p hil --test ota_crash)"
    );
    let reference = reference();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A slow link and an ECU at 5x real time, so that every phase lasts long enough to be hit.
    let bench = Bench::start("5", &["--throttle", "200000"]);
    let mut hit = Vec::new();
    let mut resumed = 0;
    let mut old = Version::new(1, 0, 0);
    for ((major, behaviour, len, outcome), want) in updates().into_iter().zip(&reference) {
        let new = Version::new(major, 0, 0);
        let id = submit(&bench, &bench.publish(major, behaviour, len));
        // The reverting images get kills during the revert as well.
        let reverts = if outcome == "rolled_back" { 3 } else { 0 };
        let (more, more_resumed) =
            run_under_kills(&bench, &id, &plan(&mut rng, 40, reverts), old, new);
        hit.extend(more);
        resumed += more_resumed;
        let job = read_job(&bench, &id);
        assert_eq!(job["state"]["state"], outcome, "{job:#}");
        assert_eq!(
            job["state"]["state"], want["state"],
            "the outcome without kills was {want}: {job:#}"
        );
        assert_never_transferred_after_boot(&job);
        let (status, slot) = bench.ecu_state();
        let running = if outcome == "committed" { new } else { old };
        assert_eq!(
            (status.version, status.confirmed, slot.image),
            (Some(running), true, 1),
            "{job:#}"
        );
        old = running;
    }

    eprintln!("{} kills: {hit:#?}", hit.len());
    assert!(
        hit.len() >= 100,
        "only {} kills landed before the end of a job",
        hit.len()
    );
    assert!(resumed > 0, "no kill left a partial download to resume");
    for phase in ["downloading", "transferring", "applying", "reverting"] {
        assert!(
            hit.iter().any(|h| h.starts_with(phase)),
            "no kill landed while {phase}: {hit:?}"
        );
    }
}
