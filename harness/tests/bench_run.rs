//! `hil run --bench`: scenarios against a "real" ECU — `ecu-sim serve` as a separate process,
//! reached over DoIP and through its slcan pty — with its power switched by an emulated USB
//! relay board on a pseudo-terminal (`ecu-sim serve --relay-pty`), driven by the bench file's
//! `relay:` through `hil::power::SerialRelay`, or by its `command:` power switch. Realisable scenarios pass, the rest are SKIPPED
//! with the reason (in the output and in JUnit), never passed and never failed.

mod common;

use common::{Bench, text};
use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};

/// A bench file for the served ECU; `extra` is appended (e.g. `images:`).
fn bench_file(b: &Bench, target: &str, extra: &str) -> std::path::PathBuf {
    let relay = b.relay_pty.as_deref().expect("a relay pty");
    let path = b.dir.path().join(format!("bench-{}.yaml", target.len()));
    std::fs::write(
        &path,
        format!(
            "name: ecu-sim on loopback\ntarget: {target}\npower:\n  relay: {{port: {relay}, baud: 9600, on: \"A0 01 01 A2\", off: \"A0 01 00 A1\"}}\nfaults: [power_cut, download, kill_manager]\nboot_timeout_s: 20\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn scenario(b: &Bench, name: &str, body: &str) -> std::path::PathBuf {
    let dir = b.dir.path().join("scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn scenarios_run_on_the_bench_and_unrealisable_ones_are_skipped_with_the_reason() {
    let b = Bench::start_ecu("max", true, true);
    // The team's own 3.0.0 (here: built with the ECU's development key), by version, relative
    // to the bench file.
    let v3 = ImageBuilder::new(Version::new(3, 0, 0), vec![0x33; 45_000])
        .security_counter(3)
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 200,
        })
        .sign(&dev_key("oem"));
    std::fs::write(b.dir.path().join("fw-3.0.0.bin"), &v3).unwrap();
    let bench = bench_file(
        &b,
        &format!("{{transport: doip, host: 127.0.0.1, port: {}}}", b.ecu_port),
        "images: {3.0.0: fw-3.0.0.bin}\n",
    );
    let (before, _) = b.ecu_state();
    scenario(
        &b,
        "1-power-cut-mid-transfer",
        "description: the relay cuts power at 50 % of the transfer; the manager starts over and commits\nseed: 3\nupdate: {version: 2.0.0, size: 60000}\nfaults:\n  - when: {transfer_percent: 50}\n    do: {power_cut: {restore_after_ms: 500}}\nexpect:\n  outcome: committed\n  version: 2.0.0\n  events: [power_off, power_on, state:transferring:session, state:committed]\n",
    );
    scenario(
        &b,
        "2-download-cut",
        "description: the artifact server closes at 50 %; the download resumes there\nseed: 4\ninstalled: {version: 2.0.0}\nupdate: {version: 3.0.0, size: 60000}\nfaults:\n  - when: {download_percent: 50}\n    do: {download: close}\nexpect:\n  outcome: committed\n  version: 3.0.0\n  download_resumed: true\n  events: [download_requested, download_resumed, state:committed]\n",
    );
    scenario(
        &b,
        "3-can-frame-loss",
        "description: needs a gateway\necu: {transport: can}\nupdate: {version: 4.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: drop}\nexpect: {outcome: committed}\n",
    );
    scenario(
        &b,
        "4-cut-in-erase",
        "description: needs the flash model\nupdate: {version: 4.0.0}\nfaults:\n  - when: {flash_op: {n: 3, kind: erase}}\n    do: {power_cut: {}}\nexpect: {outcome: committed}\n",
    );
    let junit = b.dir.path().join("junit.xml");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--ui", "plain", "--bench"])
        .arg(&bench)
        .arg(b.dir.path().join("scenarios"))
        .arg("--junit")
        .arg(&junit)
        .arg("--trace")
        .arg(b.dir.path().join("traces"))
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // Scenario 2 updated to the bench's own 3.0.0 file, not one built from its spec.
    let trace = std::fs::read_to_string(b.dir.path().join("traces/2-download-cut.jsonl")).unwrap();
    assert!(
        trace.contains(&format!("done: {} bytes", v3.len())),
        "{trace}"
    );
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name) && (l.starts_with("PASS") || l.starts_with("SKIP")))
            .unwrap_or_else(|| panic!("no result line for {name}:\n{out}"))
            .to_string()
    };
    assert!(
        line("1-power-cut-mid-transfer").starts_with("PASS"),
        "{out}"
    );
    assert!(line("2-download-cut").starts_with("PASS"), "{out}");
    let skip = line("3-can-frame-loss");
    assert!(skip.starts_with("SKIP"), "{out}");
    assert!(
        skip.contains("fault 1 (can: drop): CAN frame faults need a gateway"),
        "{skip}"
    );
    let skip = line("4-cut-in-erase");
    assert!(skip.starts_with("SKIP"), "{out}");
    assert!(skip.contains("flash operations cannot be seen"), "{skip}");
    assert!(
        out.contains("4 scenario(s): 2 passed, 0 failed, 0 error(s), 0 invalid, 2 skipped"),
        "{out}"
    );

    // The relay really switched the ECU: it booted for the cut as well as for each update.
    let (after, _) = b.ecu_state();
    assert_eq!(
        after.version.map(|v| v.to_string()).as_deref(),
        Some("3.0.0")
    );
    assert!(
        after.boot_count >= before.boot_count + 3,
        "boots {} -> {}",
        before.boot_count,
        after.boot_count
    );

    // JUnit: skipped with the reason, never passed or failed.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("skipped=\"2\""), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(xml.contains("CAN frame faults need a gateway"), "{xml}");
}

#[test]
fn a_bench_reached_through_slcan_with_power_commands_cuts_power_mid_transfer() {
    let b = Bench::start_ecu("max", true, true);
    let pty = b.slcan_pty.clone().expect("an slcan pty");
    let relay = b.relay_pty.clone().expect("a relay pty");
    // Power through shell commands (labgrid's ExternalPowerDriver style) that write the relay
    // board's bytes themselves (octal escapes: A0 01 01 A2 / A0 01 00 A1).
    let bench = b.dir.path().join("bench-slcan.yaml");
    std::fs::write(
        &bench,
        format!(
            "name: ecu-sim through slcan\ntarget: {{transport: slcan, device: {pty}, bitrate: 500000}}\npower:\n  command:\n    on: printf '\\240\\001\\001\\242' > {relay}\n    off: printf '\\240\\001\\000\\241' > {relay}\nfaults: [power_cut]\nboot_timeout_s: 20\n"
        ),
    )
    .unwrap();
    let (before, _) = b.ecu_state();
    let s = scenario(
        &b,
        "slcan-power-cut",
        "description: power cut at transfer block 2 of an update through an slcan adapter\nseed: 5\nupdate: {version: 2.0.0, size: 30000}\nfaults:\n  - when: {transfer_block: 2}\n    do: {power_cut: {restore_after_ms: 300}}\nexpect:\n  outcome: committed\n  version: 2.0.0\n  events: [power_off, power_on, state:committed]\n",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--ui", "plain", "--bench"])
        .arg(&bench)
        .arg(&s)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("PASS  slcan-power-cut"), "{out}");
    assert!(out.contains(&format!("slcan {pty}")), "{out}");
    // The commands really switched the ECU: a boot for the cut and one for the update.
    let (after, _) = b.ecu_state();
    assert!(
        after.boot_count >= before.boot_count + 2,
        "boots {} -> {}",
        before.boot_count,
        after.boot_count
    );
}

#[test]
fn a_bench_that_is_not_in_the_starting_state_is_an_error_and_bad_bench_files_are_located() {
    let b = Bench::start_ecu("max", false, true);
    let bench = bench_file(
        &b,
        &format!("{{transport: doip, host: 127.0.0.1, port: {}}}", b.ecu_port),
        "",
    );
    let s = scenario(
        &b,
        "from-v5",
        "description: starts from 5.0.0\ninstalled: {version: 5.0.0}\nupdate: {version: 6.0.0}\nexpect: {outcome: committed}\n",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--ui", "plain", "--bench"])
        .arg(&bench)
        .arg(&s)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("the bench ECU runs 1.0.0, the scenario starts from 5.0.0"),
        "{out}"
    );
    assert!(
        out.contains("replay: hil run --bench "),
        "the replay names the bench: {out}"
    );

    let bad = b.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\ntarget: {transport: doip, host: h}\nfaults: [power_cut]\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--bench"])
        .arg(&bad)
        .arg(&s)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("bad.yaml:3:"), "{out}");
    assert!(out.contains("power"), "{out}");
}

/// The fault engine's firing points, one table for every place: each trigger in a scenario
/// run in-process (virtual time) and on the bench (`ecu-sim serve` behind the relay, real
/// time) fires at the same point — `transfer_percent: 0` at block 1 and `download_bytes:
/// 50000` at byte 50 000 on the bench too (the downloader stops at the trigger's byte).
#[test]
fn the_same_triggers_fire_at_the_same_points_in_simulation_and_on_a_bench() {
    let b = Bench::start_ecu("max", false, true);
    let bench = bench_file(
        &b,
        &format!("{{transport: doip, host: 127.0.0.1, port: {}}}", b.ecu_port),
        "",
    );
    // (trigger, the point it must fire at in both places; `{N}`: the transfer's blocks)
    let table = [
        ("{transfer_percent: 0}", "at transfer block 1/{N}"),
        ("{transfer_percent: 50}", "at transfer block 2/{N}"),
        ("{transfer_block: 3}", "at transfer block 3/{N}"),
        ("{download_bytes: 50000}", "at download byte 50000"),
        // (40 % of the signed image, header and TLVs included: the same byte in both.)
        ("{download_percent: 40}", "at download byte {40%}"),
        (
            "{state: transferring:erase}",
            "on entering transferring:erase",
        ),
        ("{event: \"state:verifying\"}", "on entering verifying"),
    ];
    // The cut takes the manager down with the ECU (a car's telematics unit on the same rail):
    // on a bench the relay's switching is not in step with the manager's next request, and a
    // manager left running could finish the transfer before the relay opens. Each scenario
    // starts from the version the previous one committed; the virtual ECU
    // announces the served one's block length, so that both transfers have the same blocks.
    for (k, (when, _)) in table.iter().enumerate() {
        scenario(
            &b,
            &format!("{k}-trigger"),
            &format!(
                "description: 'a power cut at {when}'\nseed: {k}\necu: {{block_len: 16386}}\ninstalled: {{version: {}.0.0}}\nupdate: {{version: {}.0.0, size: 60000}}\nfaults:\n  - when: {when}\n    do: {{power_cut: {{restore_after_ms: 300, kill_manager: true}}}}\nexpect:\n  outcome: committed\n  version: {}.0.0\n",
                k + 1,
                k + 2,
                k + 2
            ),
        );
    }
    let run = |extra: &[&std::ffi::OsStr], traces: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
            .args(["run", "--ui", "plain"])
            .args(extra)
            .arg(b.dir.path().join("scenarios"))
            .arg("--trace")
            .arg(b.dir.path().join(traces))
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert!(
            out.contains(&format!(
                "{} scenario(s): {} passed",
                table.len(),
                table.len()
            )),
            "{out}"
        );
    };
    run(&[], "sim");
    run(&["--bench".as_ref(), bench.as_os_str()], "bench");
    // The firing point (`fault 1 fired WHERE: …`) and the transfer's length in blocks.
    let fired = |traces: &str, k: usize| {
        let path = b.dir.path().join(format!("{traces}/{k}-trigger.jsonl"));
        let trace = std::fs::read_to_string(&path).unwrap();
        let events: Vec<serde_json::Value> = trace
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let points: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == "fault_fired")
            .map(|e| {
                let t = e["text"].as_str().unwrap();
                let t = t.strip_prefix("fault 1 fired ").unwrap_or(t);
                t.split(": ").next().unwrap().to_string()
            })
            .collect();
        let blocks = events
            .iter()
            .filter_map(|e| e["text"].as_str())
            .find_map(|t| {
                t.strip_prefix("transferring: block 0/")
                    .or_else(|| t.split("block 0/").nth(1))
                    .map(|n| {
                        n.split(|c: char| !c.is_ascii_digit())
                            .next()
                            .unwrap()
                            .to_string()
                    })
            });
        (points, blocks, trace)
    };
    for (k, (when, point)) in table.iter().enumerate() {
        let (sim, sim_blocks, sim_trace) = fired("sim", k);
        let (bench, bench_blocks, bench_trace) = fired("bench", k);
        let n = sim_blocks.clone().unwrap_or_default();
        // (The live downloader's last note: `done: N bytes`.)
        let size = bench_trace
            .split("done: ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or_default();
        let want = point
            .replace("{N}", &n)
            .replace("{40%}", &(size * 40 / 100).to_string());
        assert_eq!(
            sim,
            vec![want.clone()],
            "{when} in simulation:\n{sim_trace}"
        );
        assert_eq!(bench, vec![want], "{when} on the bench:\n{bench_trace}");
        assert_eq!(sim_blocks, bench_blocks, "{when}: the same transfer");
    }
}
