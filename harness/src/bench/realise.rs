//! Can this bench realise this scenario? A scenario a bench cannot realise is SKIPPED with the
//! reason — never passed, never failed.
//!
//! On a bench the harness runs its own OTA manager and its own artifact server against a real
//! ECU it reaches over the bench's target, with nothing in between: it can act on what it owns
//! (the manager, the server, the power supply if the bench switches it) and trigger on what it
//! sees (the manager's job states and progress, the clock).
//!
//! | scenario part | realisable | why not |
//! |---|---|---|
//! | `do: power_cut` | with `power_cut` (and `kill_manager` for `kill_manager: true`) | — |
//! | `do: download`, `swap_artifact` | with `download` | — |
//! | `do: kill_manager` | with `kill_manager` | — |
//! | `do: reset`, `can`, `drop_connection`, `flip_transfer_bits`, `inject_nrc`, `corrupt_request` | never | they need a gateway (a man in the middle) between tester and ECU |
//! | `do: bit_rot` | never | a real ECU's flash contents cannot be changed from outside |
//! | `when: state`, `download_bytes`, `download_percent`, `transfer_block`, `transfer_percent`, `at_ms` | yes | the harness's own manager reports these |
//! | `when: flash_op`, `boot`, `request`, `event`, `probability` | never | see [`trigger_reason`] |
//! | `expect: outcome`, `version`, `slot`, `dtcs`, `download_resumed`, `reason_contains`, `duration_s` | yes | read from the ECU (DIDs, DTCs) or the manager |
//! | `expect: boots`, `rollbacks` | never | a real ECU's boots and reverts cannot be counted from outside |
//! | `expect: events`, `never` | with the harness's own events only (`state:…`, `power_off`, `power_on`, `manager_killed`, `fault_fired`, `artifact_swapped`, `download_requested`/`resumed`/`restarted`/`corrupt`) | the ECU's internal events (`booted`, `swap_started`, …) cannot be observed from outside |
//! | `ecu.bootloader_defect` | never | a deliberate bug of the virtual bootloader |
//! | `client` other than `manager` | not yet | external clients run against the virtual ECU |
//!
//! The other `ecu:` fields (boot mode, transport, bit rates, flash geometry, keys, block
//! length) describe the virtual ECU: on a bench they are ignored — the real ECU is what it is,
//! and the bench's `target` says how to reach it.

use serde::Serialize;

use super::schema::{Bench, Capability};
use crate::scenario::schema::{
    Action, ArtifactSwap, Client, DefectSpec, DownloadFault, Expect, Fault, Scenario, Trigger,
};

pub use crate::scenario::place::never_on_a_bench;
use crate::scenario::place::{PlaceKind, action_gap, trigger_gap};

/// `None` if `bench` can run `scenario`, else why not (the first reason of [`reasons`]).
pub fn unrealisable(scenario: &Scenario, bench: &Bench) -> Option<String> {
    reasons(scenario, bench).into_iter().next()
}

/// Why `bench` cannot run `scenario`, in file order, at most one reason per fault (empty: it
/// can).
pub fn reasons(scenario: &Scenario, bench: &Bench) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(defect) = scenario.ecu.bootloader_defect {
        let name = match defect {
            DefectSpec::JournalBeforeCopy => "journal_before_copy",
            DefectSpec::NoStepRecords => "no_step_records",
        };
        out.push(format!(
            "ecu.bootloader_defect: {name} is a deliberate bug of the virtual bootloader"
        ));
    }
    if !matches!(scenario.client, Client::Manager(_)) {
        out.push(format!(
            "client `{}`: external clients run against the virtual ECU",
            variant_name(&scenario.client)
        ));
    }
    for (i, fault) in scenario.faults.iter().enumerate() {
        out.extend(
            fault_reason(fault, bench)
                .map(|why| format!("fault {} ({}): {why}", i + 1, action_kind(&fault.action))),
        );
    }
    out.extend(expect_reasons(&scenario.expect));
    out
}

fn fault_reason(fault: &Fault, bench: &Bench) -> Option<String> {
    let needs = match action_needs(&fault.action) {
        Ok(needs) => needs,
        Err(why) => return Some(why.to_string()),
    };
    if let Some(missing) = needs.into_iter().find(|c| !bench.can(*c)) {
        let what = match missing {
            Capability::PowerCut => "cutting power needs",
            Capability::Download => "artifact server faults need",
            Capability::KillManager => "killing the manager needs",
        };
        return Some(format!(
            "{what} `{missing}` in the bench's faults; this bench has [{}]",
            bench
                .faults
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    trigger_reason(&fault.when).map(|(name, why)| format!("when {name}: {why}"))
}

/// The capabilities an action needs, or why no bench realises it.
fn action_needs(action: &Action) -> Result<Vec<Capability>, &'static str> {
    if let Some(gap) = action_gap(PlaceKind::Bench, action) {
        return Err(gap.why);
    }
    Ok(match action {
        Action::PowerCut(p) if p.kill_manager => {
            vec![Capability::PowerCut, Capability::KillManager]
        }
        Action::PowerCut(_) => vec![Capability::PowerCut],
        Action::Download(_) | Action::SwapArtifact(_) => vec![Capability::Download],
        Action::KillManager => vec![Capability::KillManager],
        _ => Vec::new(),
    })
}

/// The trigger's name and why no bench realises it; `None`: the harness sees it (the table
/// of [`crate::scenario::place`]).
pub fn trigger_reason(trigger: &Trigger) -> Option<(&'static str, &'static str)> {
    trigger_gap(PlaceKind::Bench, trigger).map(|g| (g.name, g.why))
}

fn expect_reasons(x: &Expect) -> Vec<String> {
    let mut out = Vec::new();
    if !x.boots.is_empty() {
        out.push("expect.boots: a real ECU's boots cannot be counted from outside".to_string());
    }
    if x.rollbacks.is_some() {
        out.push(
            "expect.rollbacks: a real ECU's bootloader reverts cannot be counted from outside"
                .to_string(),
        );
    }
    for (field, given) in [("events", &x.events), ("never", &x.never)] {
        if let Some(name) = given.iter().find(|n| !observable_event(n)) {
            out.push(format!(
                "expect.{field}: `{name}` is an event of the virtual ECU; on a bench only the harness's own events can be checked (state:…, power_off, power_on, manager_killed, fault_fired, artifact_swapped, download_…)"
            ));
        }
    }
    out
}

/// Events a bench run records itself ([`super::run`]): job states, its power switching, the
/// manager's restarts, faults firing.
pub fn observable_event(name: &str) -> bool {
    name.starts_with("state:")
        || matches!(
            name,
            "power_off"
                | "power_on"
                | "manager_killed"
                | "fault_fired"
                | "artifact_swapped"
                | "download_requested"
                | "download_resumed"
                | "download_restarted"
                | "download_corrupt"
        )
}

/// What a fault does, in the scenario file's words: `power_cut`, `can: corrupt`,
/// `download: stall_ms`, `swap_artifact: tampered`.
pub fn action_kind(action: &Action) -> String {
    let (name, detail) = match action {
        Action::PowerCut(_) => ("power_cut", None),
        Action::Reset => ("reset", None),
        Action::Can(f) => ("can", Some(f.form())),
        Action::DropConnection => ("drop_connection", None),
        Action::Download(f) => (
            "download",
            Some(match f {
                DownloadFault::Close => "close",
                DownloadFault::StallMs(_) => "stall_ms",
                DownloadFault::Throttle(_) => "throttle",
                DownloadFault::HttpError(_) => "http_error",
                DownloadFault::IgnoreRange => "ignore_range",
                DownloadFault::FlipByte => "flip_byte",
            }),
        ),
        Action::FlipTransferBits(_) => ("flip_transfer_bits", None),
        Action::BitRot(_) => ("bit_rot", None),
        Action::InjectNrc(_) => ("inject_nrc", None),
        Action::CorruptRequest(_) => ("corrupt_request", None),
        Action::KillManager => ("kill_manager", None),
        Action::SwapArtifact(s) => (
            "swap_artifact",
            Some(match s {
                ArtifactSwap::Tampered => "tampered",
                ArtifactSwap::Unsigned => "unsigned",
                ArtifactSwap::Downgraded => "downgraded",
            }),
        ),
    };
    match detail {
        Some(d) => format!("{name}: {d}"),
        None => name.to_string(),
    }
}

/// The serde name of an externally tagged enum value (`manager` for `Client::Manager(..)`).
fn variant_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            map.keys().next().cloned().unwrap_or_default()
        }
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::validate as bench_file;
    use crate::scenario::schema::{
        BitRot, CanDelay, CanFault, CorruptRequest, FrameKind, FrameTarget, InjectNrc, PowerCut,
        Region,
    };
    use crate::scenario::validate as scenario_file;

    const FULL: &str = "name: full\ntarget: {transport: doip, host: ecu}\npower: manual\nfaults: [power_cut, download, kill_manager]\n";

    fn bench(faults: &str) -> Bench {
        let power = if faults.contains("power_cut") {
            "manual"
        } else {
            "none"
        };
        bench_file::parse(
            &format!(
                "name: b\ntarget: {{transport: doip, host: ecu}}\npower: {power}\nfaults: [{faults}]\n"
            ),
            "b.yaml",
        )
        .unwrap()
    }

    fn library(name: &str) -> Scenario {
        let path = format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        scenario_file::parse(&text, &path).unwrap()
    }

    #[test]
    fn library_scenarios_on_benches() {
        let full = bench_file::parse(FULL, "full.yaml").unwrap();
        let no_download = bench("power_cut, kill_manager");
        let no_kill = bench("power_cut, download");
        let gateway = "needs a gateway between tester and ECU; benches have none";
        let table: &[(&str, &Bench, Option<&str>)] = &[
            ("downgrade-refused", &full, None),
            ("tampered-image", &full, None),
            // A CAN FD virtual ECU: `ecu:` is ignored on a bench.
            ("healthy-ab-canfd", &full, None),
            (
                "healthy-swap-doip",
                &full,
                Some(
                    "expect.rollbacks: a real ECU's bootloader reverts cannot be counted from outside",
                ),
            ),
            (
                "power-cut-during-swap",
                &full,
                Some(
                    "fault 1 (power_cut): when flash_op: a real ECU's flash operations cannot be seen from outside",
                ),
            ),
            (
                "power-cut-after-confirm",
                &full,
                Some(
                    "fault 1 (power_cut): when event: ECU events (swap_started, booted, …) are the virtual ECU's insides; for a job state use `state`",
                ),
            ),
            (
                "can-frame-loss",
                &full,
                Some(
                    "fault 1 (can: drop): CAN frame faults need a gateway between tester and ECU; benches have none",
                ),
            ),
            (
                "bit-rot-staged-image",
                &full,
                Some(
                    "fault 1 (bit_rot): a real ECU's flash contents cannot be changed from outside",
                ),
            ),
            (
                "compromised-mirror",
                &no_download,
                Some(
                    "fault 1 (swap_artifact: tampered): artifact server faults need `download` in the bench's faults; this bench has [power_cut, kill_manager]",
                ),
            ),
            (
                "download-server-errors",
                &no_download,
                Some(
                    "fault 1 (download: stall_ms): artifact server faults need `download` in the bench's faults; this bench has [power_cut, kill_manager]",
                ),
            ),
            (
                "manager-killed-mid-transfer",
                &no_kill,
                Some(
                    "fault 1 (kill_manager): killing the manager needs `kill_manager` in the bench's faults; this bench has [power_cut, download]",
                ),
            ),
            // Its expected events are all the harness's own.
            ("manager-killed-mid-transfer", &full, None),
            (
                "healthy-swap-can",
                &full,
                Some(
                    "expect.events: `swap_started` is an event of the virtual ECU; on a bench only the harness's own events can be checked (state:…, power_off, power_on, manager_killed, fault_fired, artifact_swapped, download_…)",
                ),
            ),
        ];
        for (name, bench, want) in table {
            assert_eq!(
                unrealisable(&library(name), bench).as_deref(),
                *want,
                "{name} on {}",
                bench.name
            );
        }
        for (name, why) in [
            ("transfer-bit-flip", "flip_transfer_bits"),
            ("response-pending-storm", "inject_nrc"),
            ("security-lockout", "corrupt_request"),
            ("doip-connection-drop", "drop_connection"),
        ] {
            let got = unrealisable(&library(name), &full).unwrap();
            assert!(
                got.starts_with(&format!("fault 1 ({why}")) && got.ends_with(gateway),
                "{name}: {got}"
            );
        }
    }

    /// A scenario from its faults and expectations.
    fn scenario(faults: &str, expect: &str) -> Scenario {
        let text = format!(
            "description: t\nupdate: {{version: 2.0.0}}\nfaults:\n{faults}expect: {{outcome: committed{expect}}}\n"
        );
        scenario_file::parse(&text, "t.yaml").unwrap()
    }

    #[test]
    fn triggers_the_harness_sees_are_realisable() {
        let full = bench_file::parse(FULL, "full.yaml").unwrap();
        for when in [
            "{state: \"transferring:erase\"}",
            "{download_bytes: 100}",
            "{download_percent: 50}",
            "{transfer_block: 3}",
            "{transfer_percent: 50}",
            "{at_ms: 1500}",
        ] {
            let s = scenario(
                &format!("  - when: {when}\n    do: {{power_cut: {{restore_after_ms: 500}}}}\n"),
                ", version: 2.0.0, slot: primary, dtcs: [D00200], download_resumed: false, duration_s: {max: 90}",
            );
            assert_eq!(unrealisable(&s, &full), None, "{when}");
        }
        for (when, name) in [
            ("{flash_op: {n: 3}}", "flash_op"),
            ("{boot: 2}", "boot"),
            ("{request: 7}", "request"),
            ("{event: swap_started}", "event"),
            ("{probability: {p: 0.1, per: request}}", "probability"),
        ] {
            let s = scenario(&format!("  - when: {when}\n    do: kill_manager\n"), "");
            let got = unrealisable(&s, &full).unwrap();
            assert!(
                got.starts_with(&format!("fault 1 (kill_manager): when {name}: ")),
                "{got}"
            );
        }
    }

    #[test]
    fn actions_need_their_capability() {
        let cut_only = bench("power_cut");
        let s = scenario(
            "  - when: {transfer_percent: 10}\n    do: {power_cut: {restore_after_ms: 100}}\n  - when: {transfer_percent: 60}\n    do: {power_cut: {kill_manager: true}}\n",
            "",
        );
        assert_eq!(
            reasons(&s, &cut_only),
            [
                "fault 2 (power_cut): killing the manager needs `kill_manager` in the bench's faults; this bench has [power_cut]"
            ]
        );
        assert_eq!(
            unrealisable(&s, &bench("download, kill_manager")).as_deref(),
            Some(
                "fault 1 (power_cut): cutting power needs `power_cut` in the bench's faults; this bench has [download, kill_manager]"
            )
        );
        assert_eq!(unrealisable(&s, &bench("kill_manager, power_cut")), None);
    }

    #[test]
    fn every_reason_is_listed_in_file_order() {
        let text = "description: t\necu: {bootloader_defect: no_step_records, transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {state: downloading}\n    do: {download: {throttle: 1000}}\n  - when: {transfer_block: 2}\n    do: {can: {delay_ms: 5}}\n  - when: {boot: 2}\n    do: reset\nexpect: {outcome: committed, boots: {max: 3}, rollbacks: 0, events: [booted], never: [swap_started]}\n";
        let s = scenario_file::parse(text, "t.yaml").unwrap();
        let got = reasons(&s, &bench("download"));
        assert_eq!(
            got,
            [
                "ecu.bootloader_defect: no_step_records is a deliberate bug of the virtual bootloader",
                "fault 2 (can: delay_ms): CAN frame faults need a gateway between tester and ECU; benches have none",
                "fault 3 (reset): an ECU reset behind the manager's back needs a gateway between tester and ECU; benches have none",
                "expect.boots: a real ECU's boots cannot be counted from outside",
                "expect.rollbacks: a real ECU's bootloader reverts cannot be counted from outside",
                "expect.events: `booted` is an event of the virtual ECU; on a bench only the harness's own events can be checked (state:…, power_off, power_on, manager_killed, fault_fired, artifact_swapped, download_…)",
                "expect.never: `swap_started` is an event of the virtual ECU; on a bench only the harness's own events can be checked (state:…, power_off, power_on, manager_killed, fault_fired, artifact_swapped, download_…)",
            ]
        );
        assert_eq!(unrealisable(&s, &bench("download")), Some(got[0].clone()));
    }

    #[test]
    fn every_library_scenario_gets_a_verdict() {
        let full = bench_file::parse(FULL, "full.yaml").unwrap();
        let dir = format!("{}/../scenarios", env!("CARGO_MANIFEST_DIR"));
        let mut realisable = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let s = scenario_file::parse(&text, &path.display().to_string()).unwrap();
                if unrealisable(&s, &full).is_none() {
                    realisable.push(path.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        realisable.sort();
        assert!(
            realisable.contains(&"downgrade-refused".to_string()),
            "{realisable:?}"
        );
        assert!(!realisable.contains(&"can-frame-loss".to_string()));
        // A fault on one CAN frame: SKIPPED, with the reason in the file's words.
        for name in [
            "can-drop-third-consecutive-frame",
            "canfd-drop-last-frame-of-a-block",
        ] {
            assert!(!realisable.contains(&name.to_string()), "{name}");
            let path = format!("{dir}/{name}.yaml");
            let text = std::fs::read_to_string(&path).unwrap();
            let s = scenario_file::parse(&text, &path).unwrap();
            assert_eq!(
                unrealisable(&s, &full).as_deref(),
                Some(
                    "fault 1 (can: drop): CAN frame faults need a gateway between tester and ECU; benches have none"
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn action_kinds_use_the_scenario_file_names() {
        let actions = [
            Action::PowerCut(PowerCut::default()),
            Action::Reset,
            Action::Can(CanFault::Drop),
            Action::Can(CanFault::Corrupt),
            Action::Can(CanFault::DelayMs(3)),
            Action::Can(CanFault::Duplicate),
            Action::Can(CanFault::DropFrame(FrameTarget::nth(
                FrameKind::Consecutive,
                3,
            ))),
            Action::Can(CanFault::CorruptFrame(FrameTarget::nth(
                FrameKind::First,
                1,
            ))),
            Action::Can(CanFault::DuplicateFrame(FrameTarget::nth(
                FrameKind::Single,
                1,
            ))),
            Action::Can(CanFault::DelayFrame(CanDelay {
                ms: 1500,
                frame: Some(FrameKind::FlowControl),
                id: None,
                n: None,
            })),
            Action::DropConnection,
            Action::Download(DownloadFault::Close),
            Action::Download(DownloadFault::StallMs(1)),
            Action::Download(DownloadFault::Throttle(1)),
            Action::Download(DownloadFault::HttpError(503)),
            Action::Download(DownloadFault::IgnoreRange),
            Action::Download(DownloadFault::FlipByte),
            Action::FlipTransferBits(1),
            Action::BitRot(BitRot {
                region: Region::Primary,
                offset: 0,
                mask: 1,
            }),
            Action::InjectNrc(InjectNrc {
                service: 0x31,
                nrc: 0x78,
                count: 1,
            }),
            Action::CorruptRequest(CorruptRequest {
                service: 0x27,
                subfunction: None,
                count: 1,
            }),
            Action::KillManager,
            Action::SwapArtifact(ArtifactSwap::Tampered),
            Action::SwapArtifact(ArtifactSwap::Unsigned),
            Action::SwapArtifact(ArtifactSwap::Downgraded),
        ];
        for action in actions {
            let json = serde_json::to_string(&action).unwrap();
            let kind = action_kind(&action);
            for word in kind.split(": ") {
                assert!(json.contains(&format!("\"{word}\"")), "{kind} vs {json}");
            }
            if let Err(why) = action_needs(&action) {
                assert_eq!(never_on_a_bench(&variant_name(&action)), Some(why));
            }
        }
        assert_eq!(variant_name(&Client::default()), "manager");
    }
}
