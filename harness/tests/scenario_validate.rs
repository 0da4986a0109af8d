//! A table of bad scenario texts and the exact problems `hil validate` reports for them.

use hil::scenario::validate;
use proptest::prelude::*;

const GOOD: &str = "description: ok\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_percent: 50}\n    do: {power_cut: {restore_after_ms: 5}}\nexpect: {outcome: committed, version: 2.0.0}\n";

#[test]
fn bad_scenarios_get_exact_file_line_col_messages() {
    let table: &[(&str, &[&str])] = &[
        (
            // unknown-action
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_percent: 50}\n    do: {powr_cut: {restore_after_ms: 5}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:5:10: faults[0].do: unknown variant `powr_cut`, expected one of `power_cut`, `reset`, `can`, `drop_connection`, `download`, `flip_transfer_bits`, `bit_rot`, `inject_nrc`, `corrupt_request`, `kill_manager`, `swap_artifact` (did you mean `power_cut`?)",
            ],
        ),
        (
            // unknown-field
            "description: x\nupdate: {version: 2.0.0, sise: 4}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:26: update: unknown field `sise`, expected one of `version`, `size`, `behaviour`, `signing`, `security_counter`, `tampered`, `encrypt` (did you mean `size`?)",
            ],
        ),
        (
            // missing-expect
            "description: x\nupdate: {version: 2.0.0}\n",
            &["s.yaml:1:1: missing field `expect`"],
        ),
        (
            // bad-outcome
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: comitted}\n",
            &[
                "s.yaml:3:19: expect.outcome: unknown variant `comitted`, expected one of `committed`, `rolled_back`, `rejected`, `failed` (did you mean `committed`?)",
            ],
        ),
        (
            // bad-version
            "description: x\nupdate: {version: two}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:19: update.version: \"two\" is not a version (major.minor.revision[+build], e.g. 2.1.0)",
            ],
        ),
        (
            // bad-state
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {state: transfering}\n    do: reset\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:4:19: faults[0].when.state: unknown job state `transfering`; did you mean `transferring`? states: submitted, downloading, downloaded, verifying, transferring, transferring:session, transferring:security, transferring:erase, transferring:request_download, transferring:block, transferring:exit, transferring:check, applying, applying:reset, applying:await_boot, applying:await_confirm, committed, rolled_back, failed",
            ],
        ),
        (
            // can-on-doip
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: drop}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:5:15: faults[0].do.can: CAN frame faults need `ecu.transport: can` or `canfd`",
            ],
        ),
        (
            // can-frame-unselected
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:22: faults[0].do.can.drop: say which frame: `frame` (single, first, consecutive, flow_control), `id` or `n` (e.g. `{drop: {frame: consecutive, n: 3}}`), or write the short form `can: drop`",
            ],
        ),
        (
            // can-frame-n-0
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {frame: consecutive, n: 0}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:46: faults[0].do.can.drop.n: frames count from 1 (n: 1 is the first matching frame of the exchange)",
            ],
        ),
        (
            // can-frame-foreign-id
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {id: 0x7E9}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:27: faults[0].do.can.drop.id: no frame on the bus has id 0x7e9: the tester sends on 0x7e0, the ECU on 0x7e8",
            ],
        ),
        (
            // can-frame-kind
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {frame: consecutiv}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:30: faults[0].do.can.drop.frame: unknown variant `consecutiv`, expected one of `single`, `first`, `consecutive`, `flow_control` (did you mean `consecutive`?)",
            ],
        ),
        (
            // can-form
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {dorp: {n: 1}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:15: faults[0].do.can: unknown variant `dorp`, expected one of `drop`, `corrupt`, `duplicate`, `delay_ms`, `delay` (did you mean `drop`?)",
            ],
        ),
        (
            // can-delay-bare
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: delay}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:15: faults[0].do.can: `delay` needs its frame and time: `{delay: {ms: N, frame: …}}`",
            ],
        ),
        (
            // can-delay-0
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {delay: {ms: 0, frame: first}}}\nexpect: {outcome: committed}\n",
            &["s.yaml:6:28: faults[0].do.can.delay.ms: must be above 0"],
        ),
        (
            // can-two-keys
            "description: x\necu: {transport: can}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {n: 1}, corrupt: {n: 2}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:6:15: faults[0].do.can: `corrupt`: a CAN fault is one key (`drop` was given already)",
            ],
        ),
        (
            // can-external
            "description: x\necu: {transport: can}\nclient: {external: {command: \"flash {image}\"}}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_block: 2}\n    do: {can: {drop: {frame: first}}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:7:15: faults[0].do.can: `can: {drop: {frame: first}}` needs the project's OTA manager: an external client's frames travel on a real slcan pty, which the scenario cannot reach frame by frame (with an external client `can: drop` and `can: duplicate` lose the whole request, `can: {delay_ms: N}` delays it)",
            ],
        ),
        (
            // percent
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {download_percent: 150}\n    do: {download: close}\nexpect: {outcome: committed}\n",
            &["s.yaml:4:11: faults[0].when: 150 is not a percentage (0–100)"],
        ),
        (
            // type
            "description: x\nseed: many\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &["s.yaml:2:7: seed: invalid type: string \"many\", expected u64"],
        ),
        (
            // syntax
            "description: x\nupdate: {version: 2.0.0\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:3:7: did not find expected ',' or '}', while parsing a flow mapping at line 2 column 9",
            ],
        ),
        (
            // transport
            "description: x\necu: {transport: flexray}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:18: ecu.transport: unknown variant `flexray`, expected one of `doip`, `can`, `canfd`",
            ],
        ),
        (
            // scratch-ab
            "description: x\necu: {boot_mode: ab}\nupdate: {version: 2.0.0}\nfaults:\n  - when: {flash_op: {n: 1, region: scratch}}\n    do: {power_cut: {}}\nexpect: {outcome: committed}\n",
            &["s.yaml:5:37: faults[0].when.flash_op.region: A/B mode has no scratch sector"],
        ),
        (
            // two-problems
            "description: x\necu: {align: 3}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed, dtcs: [XYZ], version: v2}\n",
            &[
                "s.yaml:2:14: ecu.align: 3 is not a write unit the flash model has (1, 2, 4, 8, 16 or 32)",
                "s.yaml:4:37: expect.dtcs[0]: \"XYZ\" is not a DTC (six hex digits like D00300)",
                "s.yaml:4:52: expect.version: \"v2\" is not a version (major.minor.revision[+build], e.g. 2.1.0)",
            ],
        ),
        (
            // unit-with-data
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {boot: 2}\n    do: {reset: {now: true}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:5:9: faults[0].do: invalid type: map, expected unit variant (this one takes no settings: write just its name)",
            ],
        ),
        (
            // data-without
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {boot: 2}\n    do: power_cut\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:5:9: faults[0].do: invalid type: unit variant, expected newtype variant (this one takes settings: write `name: {...}`, e.g. `power_cut: {restore_after_ms: 500}`)",
            ],
        ),
        (
            // duplicate-top-level-key: at the second key, not at 1:1
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\ndescription: y\n",
            &["s.yaml:4:1: duplicate field `description`"],
        ),
        (
            // duplicate-nested-key: at the key, not at the start of its mapping
            "description: x\nupdate: {version: 2.0.0, version: 3.0.0}\nexpect: {outcome: committed}\n",
            &["s.yaml:2:26: update: duplicate field `version`"],
        ),
        (
            // duplicate-key-in-a-fault (block style, inside a list)
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {transfer_percent: 50}\n    do: reset\n    when: {boot: 1}\nexpect: {outcome: committed}\n",
            &["s.yaml:6:5: faults[0]: duplicate field `when`"],
        ),
        (
            // duplicate-key-in-a-free-map: client env, which serde would silently overwrite
            "description: x\nupdate: {version: 2.0.0}\nclient:\n  external:\n    command: flash {image}\n    env: {A: '1', A: '2'}\nexpect: {outcome: committed}\n",
            &["s.yaml:6:19: client.external.env: duplicate field `A`"],
        ),
        (
            // misspelt-never: a check that could never fail
            "description: x\nupdate: {version: 2.0.0}\nexpect:\n  outcome: committed\n  never: [no_bootable_imag]\n",
            &[
                "s.yaml:5:11: expect.never[0]: unknown event `no_bootable_imag` (did you mean `no_bootable_image`?); the event names are listed in the README's event table, plus `state:<job state>`",
            ],
        ),
        (
            // misspelt-events and a bad job state
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: committed, events: [swap_startd, state:comitted]}\n",
            &[
                "s.yaml:3:39: expect.events[0]: unknown event `swap_startd` (did you mean `swap_started`?); the event names are listed in the README's event table, plus `state:<job state>`",
                "s.yaml:3:52: expect.events[1]: unknown job state `comitted` in `state:comitted`; did you mean `state:committed`? states: submitted, downloading, downloaded, verifying, transferring, transferring:session, transferring:security, transferring:erase, transferring:request_download, transferring:block, transferring:exit, transferring:check, applying, applying:reset, applying:await_boot, applying:await_confirm, committed, rolled_back, failed",
            ],
        ),
        (
            // request-in-expect: requests are triggers, not trace events
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: committed, never: ['request:0x31']}\n",
            &[
                "s.yaml:3:38: expect.never[0]: `request:0x31` is a trigger (`when: {event: request:0x31}`), not an event a trace holds: name the ECU's answer instead (e.g. `negative_response`, `routine_finished`)",
            ],
        ),
        (
            // misspelt-event-trigger
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {event: revert_startd}\n    do: reset\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:4:19: faults[0].when.event: unknown event `revert_startd` (did you mean `revert_started`?); the event names are listed in the README's event table, plus `state:<job state>` and `request:0xNN`",
            ],
        ),
        (
            // harness-event-trigger: fires on ECU events only
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {event: fault_fired}\n    do: reset\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:4:19: faults[0].when.event: `fault_fired` is the harness's own event, not the ECU's: a `when: {event}` trigger fires on ECU events, `state:NAME` and `request:0xNN` only",
            ],
        ),
        (
            // request-trigger-decimal
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {event: 'request:49'}\n    do: reset\n  - when: {event: 'request:0x3E'}\n    do: reset\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:4:19: faults[0].when.event: `49` is not a service id: write `request:0x` and two hex digits, e.g. `request:0x31`",
                "s.yaml:6:19: faults[1].when.event: write the service as two lowercase hex digits: `request:0x3e`",
            ],
        ),
        (
            // max-boot-attempts beyond the trailer
            "description: x\necu: {max_boot_attempts: 17}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:26: ecu.max_boot_attempts: 17 is above the 16 boot attempts the trailer can count (use 1..=16)",
            ],
        ),
        (
            // journal-too-small for the swap
            "description: x\necu: {sector_size: 512, slot_sectors: 1024}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:20: ecu.sector_size: this ECU's layout does not resolve: journal sector (512 bytes) holds 32 records, a swap needs 3089: the swap journal is one sector; use `sector_size: 65536` or fewer slot_sectors",
            ],
        ),
        (
            // device beyond the simulator's memory
            "description: x\necu: {sector_size: 1073741824, slot_sectors: 4}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:20: ecu.sector_size: bad flash geometry: 12 sectors of 1073741824 bytes exceed the simulated device's limits (65536 sectors, 1024 MiB) (the device is 3 + 2 × slot_sectors + 1 sectors of sector_size bytes): use a smaller sector_size or fewer slot_sectors",
            ],
        ),
        (
            // duration min above max
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: committed, duration_s: {min: 10, max: 5}}\n",
            &[
                "s.yaml:3:42: expect.duration_s: min 10 is above max 5: no run can pass (swap them?)",
            ],
        ),
        (
            // update-size beyond usize arithmetic (hil run panicked: capacity overflow)
            "description: x\nupdate: {version: 2.0.0, size: 18446744073709551615}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:32: update.size: 18446744073709551615 payload bytes do not fit the slot: its image area holds 126976 bytes, 677 of them header and TLVs, so at most 126299 (raise ecu.slot_sectors or ecu.sector_size)",
            ],
        ),
        (
            // installed-size of 4 GB (hil run took 7.7 GiB)
            "description: x\ninstalled: {version: 1.0.0, size: 4000000000}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:35: installed.size: 4000000000 payload bytes do not fit the slot: its image area holds 126976 bytes, 677 of them header and TLVs, so at most 126299 (raise ecu.slot_sectors or ecu.sector_size)",
            ],
        ),
        (
            // bit-rot outside its region
            "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {boot: 2}\n    do: {bit_rot: {region: primary, offset: 0x20000, mask: 1}}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:5:45: faults[0].do.bit_rot.offset: 0x20000 is outside the primary region (0x20000 bytes): use an offset below 0x20000",
            ],
        ),
        (
            // duplicate-key and a bad value: both at once
            "description: x\nupdate: {version: 2.0.0}\nexpect: {outcome: comitted}\ndescription: y\n",
            &[
                "s.yaml:3:19: expect.outcome: unknown variant `comitted`, expected one of `committed`, `rolled_back`, `rejected`, `failed` (did you mean `committed`?)",
                "s.yaml:4:1: duplicate field `description`",
            ],
        ),
        (
            // duplicate key in a free map and a check problem: both at once
            "description: x\necu: {align: 3}\nupdate: {version: 2.0.0}\nclient:\n  external:\n    command: flash {image}\n    env: {A: '1', A: '2'}\nexpect: {outcome: committed}\n",
            &[
                "s.yaml:2:14: ecu.align: 3 is not a write unit the flash model has (1, 2, 4, 8, 16 or 32)",
                "s.yaml:7:19: client.external.env: duplicate field `A`",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in table {
        let got = messages(text);
        if got != *expected {
            wrong.push(format!("for:\n{text}got:\n{}\n", got.join("\n")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What `hil validate` says of `text` as `s.yaml`: each problem, or `(valid)`.
fn messages(text: &str) -> Vec<String> {
    match validate::parse(text, "s.yaml") {
        Ok(_) => vec!["(valid)".into()],
        Err(problems) => problems.0.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn the_good_one_parses() {
    let s = validate::parse(GOOD, "s.yaml").unwrap();
    assert_eq!(s.faults.len(), 1);
}

proptest! {
    /// Any edit of a valid file is a scenario or a list of located problems, never a panic.
    #[test]
    fn edited_scenarios_never_panic(edits in proptest::collection::vec((0usize..400, 0u8..128, 0u8..3), 1..6)) {
        let mut text = GOOD.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at % (text.len() + 1);
            match op {
                0 if at < text.len() => text[at] = byte,
                1 => text.insert(at, byte),
                _ if at < text.len() => { text.remove(at); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = validate::parse(&text, "s.yaml") {
            for p in &e.0 {
                prop_assert!(p.line >= 1 && p.column >= 1);
                prop_assert!(p.to_string().starts_with("s.yaml:"));
            }
        }
    }
}

#[test]
fn event_names_that_can_occur_validate() {
    let text = "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {state: committed}\n    do: reset\n  - when: {event: 'request:0x31'}\n    do: reset\n  - when: {event: 'state:transferring'}\n    do: reset\n  - when: {event: swap_started}\n    do: reset\nexpect: {outcome: committed, events: [power_off, artifact_swapped, state:applying, state:committed], never: [no_bootable_image]}\n";
    validate::parse(text, "s.yaml").unwrap();
}

#[test]
fn pathological_nesting_is_refused_before_the_yaml_parser() {
    let deep = format!("description: x\nupdate: {}\n", "[".repeat(100_000));
    let e = validate::parse(&deep, "s.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "s.yaml:2:41: nested more than 32 levels deep: a scenario needs a few (refused before parsing)"
    );
    // Brackets inside quotes and comments are text, not nesting.
    let quoted = GOOD.replace(
        "description: ok",
        &format!("description: '{}' # {}", "[".repeat(100), "{".repeat(100)),
    );
    validate::parse(&quoted, "s.yaml").unwrap();
}

/// The README's event table lists exactly the names the code knows, with their sources and
/// which of them a `when: {event}` trigger may name.
#[test]
fn the_readme_event_table_is_the_codes_event_list() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut rows = readme
        .lines()
        .skip_while(|l| !l.starts_with("| event | source | `when` | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    assert_eq!(
        rows.next(),
        Some(
            "| `state:NAME` | `ota` | yes | the job entered that state (the job states table above) |"
        )
    );
    let readme: Vec<(String, String, bool)> = rows
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                cells[2].trim_matches('`').to_string(),
                cells[3] == "yes",
            )
        })
        .collect();
    let code: Vec<(String, String, bool)> = hil::scenario::trace::EVENTS
        .iter()
        .map(|e| (e.name.to_string(), e.source.to_string(), e.ecu_kind))
        .collect();
    assert_eq!(readme, code);
}

/// MCUboot's strategy names (and the old ones) parse; a geometry that cannot host a strategy
/// is a located problem with a hint; a misspelt strategy lists the names.
#[test]
fn boot_modes_by_mcuboots_names() {
    for mode in [
        "swap-scratch",
        "swap-move",
        "swap-offset",
        "overwrite",
        "direct-xip",
        "swap",
        "ab",
        "overwrite-only",
    ] {
        let text = format!(
            "description: x\necu: {{boot_mode: {mode}}}\nupdate: {{version: 2.0.0}}\nexpect: {{outcome: committed}}\n"
        );
        validate::parse(&text, "s.yaml").unwrap_or_else(|e| panic!("{mode}: {e:?}"));
    }
    let problems = |text: &str| -> Vec<String> {
        match validate::parse(text, "s.yaml") {
            Ok(_) => vec!["(valid)".into()],
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    };
    assert_eq!(
        problems(
            "description: x\necu: {boot_mode: swap-move, sector_size: 512, slot_sectors: 2, align: 32}\nupdate: {version: 2.0.0, size: 10}\nexpect: {outcome: committed}\n"
        ),
        [
            "s.yaml:2:42: ecu.sector_size: this ECU's layout does not resolve: the slots cannot hold the swap-move trailer at their end: it needs 1024 bytes (MCUboot's 512 + 512 of boot attempts), the last sectors that leave an image sector give 512: MCUboot's trailer grows with slot_sectors and align; use `sector_size: 1024`, fewer slot_sectors or a smaller align"
        ]
    );
    let got = problems(
        "description: x\necu: {boot_mode: swap-mov}\nupdate: {version: 2.0.0}\nexpect: {outcome: committed}\n",
    );
    assert_eq!(
        got,
        [
            "s.yaml:2:18: ecu.boot_mode: unknown variant `swap-mov`, expected one of `swap`, `swap-scratch`, `swap-move`, `swap-offset`, `overwrite`, `overwrite-only`, `ab`, `direct-xip` (did you mean `swap-move`?)"
        ]
    );
}

/// `ecu.enc_key` names the ECU's image decryption key file, relative to the scenario file: it
/// reaches the virtual ECU's configuration; a file that is missing or no decryption key is a
/// located problem naming what is wrong.
#[test]
fn enc_key_is_read_relative_to_the_scenario_file() {
    use ecu_sim::image::{EncKeyFamily, KeyKind, dev_private_key};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = dev_private_key(KeyKind::X25519, "scenario");
    std::fs::create_dir(d.join("keys")).unwrap();
    std::fs::write(d.join("keys/enc.pem"), key.to_pem()).unwrap();
    std::fs::write(d.join("keys/enc.pub.pem"), key.public_pem()).unwrap();
    let file = d.join("s.yaml");
    let file = file.to_str().unwrap();
    let scenario = |enc_key: &str| {
        format!(
            "description: x\necu: {{enc_key: {enc_key}}}\nupdate: {{version: 2.0.0}}\nexpect: {{outcome: committed}}\n"
        )
    };
    let s = validate::parse(&scenario("keys/enc.pem"), file).unwrap();
    assert_eq!(
        s.ecu.enc_key.as_deref(),
        Some(std::path::Path::new("keys/enc.pem"))
    );
    let prepared = hil::scenario::prepare::prepare(&Arc::new(s)).unwrap();
    let config = prepared.sim.ecu.config();
    assert_eq!(
        config.enc_key.as_ref().map(|k| k.family()),
        Some(EncKeyFamily::X25519)
    );
    assert_eq!(
        config.enc_key.as_ref().map(|k| k.public()),
        Some(ecu_sim::image::EncPublicKey::from_pem(&key.public_pem()).unwrap())
    );
    // Without it, none.
    let s = validate::parse(GOOD, file).unwrap();
    let prepared = hil::scenario::prepare::prepare(&Arc::new(s)).unwrap();
    assert!(prepared.sim.ecu.config().enc_key.is_none());

    let dir_text = d.display();
    for (enc_key, wanted) in [
        (
            "keys/missing.pem",
            format!(
                "{file}:2:16: ecu.enc_key: reading {dir_text}/keys/missing.pem: No such file or directory (os error 2)"
            ),
        ),
        (
            "keys/enc.pub.pem",
            format!(
                "{file}:2:16: ecu.enc_key: {dir_text}/keys/enc.pub.pem: a public key: decrypting needs the private key (what imgtool keygen writes)"
            ),
        ),
    ] {
        let problems = validate::parse(&scenario(enc_key), file).unwrap_err();
        let got: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, vec![wanted]);
    }
}

/// `update.encrypt` needs the ECU's key and a key size MCUboot has; the installed image is
/// never encrypted; each problem located at its field.
#[test]
fn encryption_problems_are_located() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/keys");
    let x25519 = keys.join("enc-x25519.pem");
    let ec256 = keys.join("enc-ec256.pem");
    let table = [
        (
            "description: x\nupdate: {version: 2.0.0, encrypt: {}}\nexpect: {outcome: committed}\n".to_string(),
            vec!["s.yaml:2:35: update.encrypt: no key to encrypt for: set ecu.enc_key".to_string()],
        ),
        (
            format!("description: x\necu: {{enc_key: {}}}\ninstalled: {{version: 1.0.0, encrypt: {{}}}}\nupdate: {{version: 2.0.0}}\nexpect: {{outcome: committed}}\n", x25519.display()),
            vec!["s.yaml:3:38: installed.encrypt: the installed image lies decrypted in the primary slot, as the bootloader leaves it: only the update is encrypted".to_string()],
        ),
        (
            format!("description: x\necu: {{enc_key: {}}}\nupdate: {{version: 2.0.0, encrypt: {{aes: 192}}}}\nexpect: {{outcome: committed}}\n", x25519.display()),
            vec!["s.yaml:3:35: update.encrypt: AES-192 is not an AES key size MCUboot has (128 or 256)".to_string()],
        ),
        (
            format!("description: x\necu: {{enc_key: {}}}\nupdate: {{version: 2.0.0, encrypt: {{hmac_sha512: true}}}}\nexpect: {{outcome: committed}}\n", ec256.display()),
            vec!["s.yaml:3:35: update.encrypt: encrypted image: HMAC-SHA512 (ENC_X25519_SHA512) needs an X25519 key, not an EC P-256 key".to_string()],
        ),
        (
            "description: x\nupdate: {version: 2.0.0, encrypt: {aes: 128, mode: ctr}}\nexpect: {outcome: committed}\n".to_string(),
            vec!["s.yaml:2:46: update.encrypt: unknown field `mode`, expected `aes` or `hmac_sha512`".to_string()],
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in &table {
        let got = messages(text);
        if got != *expected {
            wrong.push(format!("for:\n{text}got:\n{}\n", got.join("\n")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
