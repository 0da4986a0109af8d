//! Bench files: a table of bad texts with the exact problems they get, the example benches in
//! `benches/`, and arbitrary input never panicking the parser.

use std::path::{Path, PathBuf};

use hil::bench::schema::{Capability, KeyAlgorithm, PowerSpec, Target};
use hil::bench::validate;
use proptest::prelude::*;

const FIELDS: &str = "`transport`, `host`, `port`, `logical_address`, `tester_address`, `device`, `serial_baud`, `bitrate`, `interface`, `fd`, `tx_id`, `rx_id`, `padding`";

fn problems(text: &str) -> Vec<String> {
    match validate::parse(text, "b.yaml") {
        Ok(bench) => panic!("parsed:\n{text}\nas {bench:?}"),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn bad_benches_get_exact_file_line_col_messages() {
    let unknown_field = format!(
        "b.yaml:2:27: target: unknown field `hots`, expected one of {FIELDS} (did you mean `host`?)"
    );
    let table: &[(&str, &[&str])] = &[
        (
            // unknown-field
            "name: x\ntarget: {transport: doip, hots: 10.0.0.2}\n",
            &[&unknown_field],
        ),
        (
            // unknown-top-level-field
            "name: x\ntarget: {transport: doip, host: h}\nfault: [download]\n",
            &[
                "b.yaml:3:1: unknown field `fault`, expected one of `name`, `target`, `security`, `power`, `faults`, `boot_timeout_s`, `confirm_timeout_s`, `images` (did you mean `faults`?)",
            ],
        ),
        (
            // image-version
            "name: x\ntarget: {transport: doip, host: h}\nimages: {2.0: fw.bin}\n",
            &[
                "b.yaml:3:15: images.2.0: \"2.0\" is not a version (major.minor.revision, e.g. 2.1.0)",
            ],
        ),
        (
            // wrong-transport
            "name: x\ntarget:\n  transport: dopi\n  host: h\n",
            &[
                "b.yaml:3:14: target.transport: unknown variant `dopi`, expected one of `doip`, `slcan`, `socketcan` (did you mean `doip`?)",
            ],
        ),
        (
            // missing-host
            "name: x\ntarget: {transport: doip, port: 13400}\n",
            &[
                "b.yaml:2:9: target: transport doip needs `host` (the ECU's IP address or host name)",
            ],
        ),
        (
            // a field of another transport
            "name: x\ntarget:\n  transport: doip\n  host: h\n  device: /dev/ttyACM0\n",
            &[
                "b.yaml:5:11: target.device: `device` is not a doip setting (doip takes host, port, logical_address, tester_address)",
            ],
        ),
        (
            // missing-name
            "target: {transport: doip, host: h}\n",
            &["b.yaml:1:1: missing field `name`"],
        ),
        (
            // two-line-name
            "name: \"rack 3\\nVCU\"\ntarget: {transport: doip, host: h}\n",
            &["b.yaml:1:7: name: must be one line"],
        ),
        (
            // bad-relay-bytes
            "name: x\ntarget: {transport: doip, host: h}\npower:\n  relay: {port: /dev/ttyUSB0, on: \"A0 01 0G A2\", off: \"A0 01 00 A1\"}\nfaults: [power_cut]\n",
            &[
                "b.yaml:4:35: power.relay.on: relay bytes \"A0 01 0G A2\": \"0G\": invalid digit found in string (expected hex bytes like \"A0 01 01 A2\")",
            ],
        ),
        (
            // relay-without-settings
            "name: x\ntarget: {transport: doip, host: h}\npower: relay\n",
            &[
                "b.yaml:3:8: power: invalid type: unit variant, expected newtype variant (this one takes settings: write `name: {...}`, e.g. `power: {relay: {port: /dev/ttyUSB0, on: \"A0 01 01 A2\", off: \"A0 01 00 A1\"}}`)",
            ],
        ),
        (
            // relay-missing-off
            "name: x\ntarget: {transport: doip, host: h}\npower: {relay: {port: /dev/ttyUSB0, on: \"A0 01 01 A2\"}}\n",
            &["b.yaml:3:16: power.relay: missing field `off`"],
        ),
        (
            // unknown-power
            "name: x\ntarget: {transport: doip, host: h}\npower: manuel\n",
            &[
                "b.yaml:3:8: power: unknown variant `manuel`, expected one of `relay`, `command`, `manual`, `none` (did you mean `manual`?)",
            ],
        ),
        (
            // power-cut-without-power
            "name: x\ntarget: {transport: doip, host: h}\nfaults: [download, power_cut]\n",
            &[
                "b.yaml:3:20: faults[1]: power_cut needs power control, but `power` is none (give a relay, a command or manual)",
            ],
        ),
        (
            // unknown-capability
            "name: x\ntarget: {transport: doip, host: h}\npower: manual\nfaults: [powercut]\n",
            &[
                "b.yaml:4:10: faults[0]: unknown capability `powercut`, expected one of `power_cut`, `download`, `kill_manager` (did you mean `power_cut`?)",
            ],
        ),
        (
            // a fault no bench can drive, and one that is part of another
            "name: x\ntarget: {transport: doip, host: h}\nfaults:\n  - can\n  - swap_artifact\n",
            &[
                "b.yaml:4:5: faults[0]: `can` cannot be realised on a bench: CAN frame faults need a gateway between tester and ECU; benches have none",
                "b.yaml:5:5: faults[1]: `swap_artifact` is part of `download` (the harness's artifact server)",
            ],
        ),
        (
            // bitrate-not-in-the-list
            "name: x\ntarget: {transport: slcan, device: /dev/ttyACM0, bitrate: 83333}\n",
            &[
                "b.yaml:2:59: target.bitrate: 83333 is not an slcan bit rate (one of 10000, 20000, 50000, 100000, 125000, 250000, 500000, 800000, 1000000)",
            ],
        ),
        (
            // security-command-without-seed
            "name: x\ntarget: {transport: doip, host: h}\nsecurity: {command: \"keygen --level {level}\"}\n",
            &[
                "b.yaml:3:21: security.command: `keygen --level {level}` does not contain `{seed}` (replaced by the seed, in hex)",
            ],
        ),
        (
            // security-command-without-its-command
            "name: x\ntarget: {transport: doip, host: h}\nsecurity: command\n",
            &[
                "b.yaml:3:11: security: invalid type: unit variant, expected newtype variant (this one takes settings: write `name: ...`, e.g. `security: {command: \"keygen --level {level} --seed {seed}\"}`)",
            ],
        ),
        (
            // bad-hex-address
            "name: x\ntarget:\n  transport: doip\n  host: h\n  logical_address: 0xZZ10\n",
            &[
                "b.yaml:5:20: target.logical_address: \"0xZZ10\" is not a number (hex like 0x7E0, or decimal)",
            ],
        ),
        (
            // address-too-wide
            "name: x\ntarget:\n  transport: doip\n  host: h\n  tester_address: 0x10E00\n",
            &["b.yaml:5:19: target.tester_address: 0x10e00 does not fit 16 bits"],
        ),
        (
            // underscores are not YAML 1.2 numbers
            "name: x\ntarget: {transport: socketcan, interface: can0, tx_id: 0x2000_0000}\n",
            &[
                "b.yaml:2:56: target.tx_id: \"0x2000_0000\" is not a number (hex like 0x7E0, or decimal)",
            ],
        ),
        (
            // can-id-too-wide
            "name: x\ntarget: {transport: socketcan, interface: can0, rx_id: 0x20000000}\n",
            &["b.yaml:2:56: target.rx_id: 0x20000000 does not fit 29 bits"],
        ),
        (
            // same-ids
            "name: x\ntarget: {transport: slcan, device: /dev/ttyACM0, rx_id: 0x7E0}\n",
            &["b.yaml:2:57: target.rx_id: tx_id and rx_id are both 0x7e0"],
        ),
        (
            // timeouts
            "name: x\ntarget: {transport: doip, host: h}\nboot_timeout_s: 0\nconfirm_timeout_s: .nan\n",
            &[
                "b.yaml:3:17: boot_timeout_s: 0 is not a number of seconds above 0",
                "b.yaml:4:20: confirm_timeout_s: NaN is not a number of seconds above 0",
            ],
        ),
        (
            // syntax
            "name: x\ntarget: {transport: doip, host: h\n",
            &[
                "b.yaml:3:1: did not find expected ',' or '}', while parsing a flow mapping at line 2 column 9",
            ],
        ),
        (
            // not-a-mapping
            "- name: x\n",
            &[
                "b.yaml:1:1: invalid type: sequence, expected a bench (a mapping with `name` and `target`)",
            ],
        ),
        (
            // duplicate-top-level-key
            "name: x\ntarget: {transport: doip, host: h}\nname: y\n",
            &["b.yaml:3:1: duplicate field `name`"],
        ),
        (
            // duplicate-target-key
            "name: x\ntarget:\n  transport: doip\n  host: h\n  host: h2\n",
            &["b.yaml:5:3: target: duplicate field `host`"],
        ),
        (
            // duplicate-image-version, which serde would silently overwrite
            "name: x\ntarget: {transport: doip, host: h}\nimages:\n  2.0.0: a.bin\n  2.0.0: b.bin\n",
            &["b.yaml:5:3: images: duplicate field `2.0.0`"],
        ),
        (
            // port-out-of-range
            "name: x\ntarget:\n  transport: doip\n  host: h\n  port: 70000\n",
            &["b.yaml:5:9: target.port: invalid value: integer `70000`, expected u16"],
        ),
    ];
    let mut failures = Vec::new();
    for (text, want) in table {
        let got = problems(text);
        if got != *want {
            failures.push(format!("{text}\n  got:  {got:#?}\n  want: {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_file_that_cannot_be_read_is_one_problem() {
    let e = validate::load(Path::new("/nonexistent/bench.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/bench.yaml:1:1: cannot read the bench file: "),
        "{e}"
    );
}

fn example_benches() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_benches_parse_and_round_trip() {
    let files = example_benches();
    assert!(files.len() >= 2, "{files:?}");
    for path in &files {
        let bench = validate::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bench.file.as_deref(), Some(path.as_path()));
        let yaml = bench.to_yaml();
        let again = validate::parse(&yaml, "again.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again.file, None, "parsed text has no file");
        assert_eq!(
            hil::bench::schema::Bench {
                file: None,
                ..bench.clone()
            },
            again,
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_doip_relay_example_reads_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/doip-relay.yaml");
    let bench = validate::load(&path).unwrap();
    assert_eq!(bench.name, "rack 3 (VCU)");
    assert_eq!(
        bench.target,
        Target::Doip {
            host: "192.168.10.20".into(),
            port: 13400,
            logical_address: 0x0010,
            tester_address: 0x0E00,
        }
    );
    assert_eq!(bench.security, KeyAlgorithm::Builtin);
    assert_eq!(
        bench.power,
        PowerSpec::Relay {
            port: "/dev/ttyUSB0".into(),
            baud: 9600,
            on: vec![0xA0, 0x01, 0x01, 0xA2],
            off: vec![0xA0, 0x01, 0x00, 0xA1],
        }
    );
    assert_eq!(
        bench.faults.iter().copied().collect::<Vec<_>>(),
        Capability::ALL
    );
    assert_eq!(
        (bench.boot_timeout_s, bench.confirm_timeout_s),
        (Some(30.0), Some(10.0))
    );
    let slcan = validate::load(&path.with_file_name("slcan-command.yaml")).unwrap();
    assert_eq!(
        slcan.uds_config().key,
        KeyAlgorithm::Command("oem-keygen --level {level} --seed {seed}".into())
    );
}

proptest! {
    /// Any text is a bench or problems, never a panic.
    #[test]
    fn any_text_is_a_bench_or_problems(
        text in "(name|target|transport|doip|slcan|socketcan|host|port|device|bitrate|tx_id|padding|null|security|command|\\{seed\\}|power|relay|on|off|manual|none|faults|power_cut|download|kill_manager|boot_timeout_s|0x[0-9A-F]{1,9}|[:{}\\[\\], \\n'\"0-9a-z._-]){0,60}"
    ) {
        let _ = validate::parse(&text, "b.yaml");
    }

    /// Any bytes (read as a file would be, lossily) never panic either.
    #[test]
    fn any_bytes_are_a_bench_or_problems(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate::parse(&String::from_utf8_lossy(&bytes), "b.yaml");
    }

    /// Damaged example files: every problem has a position inside the text.
    #[test]
    fn damaged_examples_report_positions_inside_the_text(
        file in 0usize..3,
        at in any::<prop::sample::Index>(),
        cut in 0usize..8,
        insert in "[ :{}\\[\\],\\n'\"a-z0-9]{0,6}",
    ) {
        let files = example_benches();
        let text = std::fs::read_to_string(&files[file % files.len()]).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len());
        let end = (i + cut).min(chars.len());
        chars.splice(i..end, insert.chars());
        let damaged: String = chars.into_iter().collect();
        if let Err(invalid) = validate::parse(&damaged, "b.yaml") {
            let lines = damaged.lines().count().max(1) + 1;
            for p in &invalid.0 {
                prop_assert!(p.line >= 1 && p.line <= lines, "{p} in\n{damaged}");
                prop_assert!(p.column >= 1, "{p}");
            }
        }
    }
}
