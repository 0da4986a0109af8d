//! Reading bench files: every problem as `file:line:col: message`, with a hint where one helps,
//! exactly like scenario files ([`crate::scenario::validate`], whose [`Invalid`] and
//! [`Problem`] these are).
//!
//! Two passes. Serde (`deny_unknown_fields`, enums as one-key maps) reports the first syntax,
//! type, unknown-field or unknown-variant error with its position. It reads `target` as a flat
//! record of every transport's fields rather than as the tagged [`crate::target::Target`]
//! ([`crate::target::read`], shared with manifests): serde buffers an internally tagged enum
//! before reading it, and errors inside the buffer lose their position.
//! The second pass checks the whole bench — which fields the transport takes and needs, relay
//! bytes, capability names, the security command — and locates each problem by walking the
//! YAML to its path ([`located`](crate::scenario::validate::located)).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::realise;
use super::schema::{Bench, Capability, KeyAlgorithm, PowerSpec};
pub use crate::scenario::validate::{Invalid, Problem};
use crate::scenario::validate::{closest, duplicate_key, located, strip_location, with_hint};
use crate::target::read::{RawTarget, check_target};

/// Read and check the bench file at `path`; a file that cannot be read is one problem at 1:1.
pub fn load(path: &Path) -> Result<Bench, Invalid> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file).map(|b| {
            // Image paths are relative to the bench file.
            let dir = path.parent().unwrap_or(Path::new("."));
            Bench {
                file: Some(path.to_path_buf()),
                images: b
                    .images
                    .into_iter()
                    .map(|(v, p)| (v, dir.join(p)))
                    .collect(),
                ..b
            }
        }),
        Err(e) => Err(Invalid(vec![Problem {
            file,
            line: 1,
            column: 1,
            message: format!("cannot read the bench file: {e}"),
        }])),
    }
}

/// Parse and check `text` (from `file`).
pub fn parse(text: &str, file: &str) -> Result<Bench, Invalid> {
    if let Some(dup) = duplicate_key(text) {
        return Err(Invalid(vec![dup.problem(file)]));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawBench = match serde_yaml::with::singleton_map_recursive::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            return Err(Invalid(vec![Problem {
                file: file.into(),
                line,
                column,
                message: hint(&strip_location(&e.to_string())),
            }]));
        }
    };
    check(raw).map_err(|found| {
        let mut problems: Vec<Problem> = found
            .into_iter()
            // A problem with a default (a field the file leaves out) goes to its parent.
            .map(|(path, message)| located(file, text, &path, &message))
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        Invalid(problems)
    })
}

/// The scenario parser's hints, with examples from bench files for variants that take
/// settings (`security: command`, `power: relay`).
fn hint(message: &str) -> String {
    let takes_settings =
        message.contains("expected newtype variant") || message.contains("expected struct variant");
    if takes_settings && message.starts_with("security") {
        format!(
            "{message} (this one takes settings: write `name: ...`, e.g. `security: {{command: \"keygen --level {{level}} --seed {{seed}}\"}}`)"
        )
    } else if takes_settings && message.starts_with("power") {
        format!(
            "{message} (this one takes settings: write `name: {{...}}`, e.g. `power: {{relay: {{port: /dev/ttyUSB0, on: \"A0 01 01 A2\", off: \"A0 01 00 A1\"}}}}`)"
        )
    } else {
        with_hint(message)
    }
}

/// The file as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(
    expecting = "a bench (a mapping with `name` and `target`)",
    deny_unknown_fields
)]
struct RawBench {
    name: String,
    target: RawTarget,
    #[serde(default)]
    security: KeyAlgorithm,
    #[serde(default)]
    power: RawPower,
    #[serde(default)]
    faults: Vec<String>,
    #[serde(default)]
    boot_timeout_s: Option<f64>,
    #[serde(default)]
    confirm_timeout_s: Option<f64>,
    #[serde(default)]
    images: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "power control (relay, command, manual or none)",
    rename_all = "snake_case",
    deny_unknown_fields
)]
enum RawPower {
    Relay(RawRelay),
    Command(RawCommand),
    Manual,
    #[default]
    None,
}

#[derive(Debug, Deserialize)]
#[serde(
    expecting = "relay settings (`port`, `baud`, `on`, `off`)",
    deny_unknown_fields
)]
struct RawRelay {
    port: PathBuf,
    #[serde(default = "default_relay_baud")]
    baud: u32,
    on: String,
    off: String,
}

fn default_relay_baud() -> u32 {
    9600
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "power commands (`on`, `off`)", deny_unknown_fields)]
struct RawCommand {
    on: String,
    off: String,
}

/// Problems as (path, message).
type Found = Vec<(Vec<String>, String)>;

fn at(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| s.to_string()).collect()
}

/// The bench, or every problem of a file that parsed.
fn check(raw: RawBench) -> Result<Bench, Found> {
    let mut found = Found::new();
    if raw.name.trim().is_empty() {
        found.push((at(&["name"]), "must not be empty".into()));
    } else if raw.name.contains(['\n', '\r']) {
        found.push((at(&["name"]), "must be one line".into()));
    }
    let target = check_target(&raw.target, &mut found);
    if let KeyAlgorithm::Command(command) = &raw.security
        && !command.contains("{seed}")
    {
        found.push((
            at(&["security", "command"]),
            format!("`{command}` does not contain `{{seed}}` (replaced by the seed, in hex)"),
        ));
    }
    let power = check_power(raw.power, &mut found);
    let faults = check_faults(&raw.faults, &power, &mut found);
    for (name, value) in [
        ("boot_timeout_s", raw.boot_timeout_s),
        ("confirm_timeout_s", raw.confirm_timeout_s),
    ] {
        if let Some(v) = value
            && !(v.is_finite() && v > 0.0)
        {
            found.push((
                at(&[name]),
                format!("{v} is not a number of seconds above 0"),
            ));
        }
    }
    for version in raw.images.keys() {
        if version.parse::<ecu_sim::image::Version>().is_err() {
            found.push((
                at(&["images", version]),
                format!("{version:?} is not a version (major.minor.revision, e.g. 2.1.0)"),
            ));
        }
    }
    match target {
        Some(target) if found.is_empty() => Ok(Bench {
            name: raw.name,
            target,
            security: raw.security,
            power,
            faults,
            boot_timeout_s: raw.boot_timeout_s,
            confirm_timeout_s: raw.confirm_timeout_s,
            images: raw.images,
            file: None,
        }),
        _ => Err(found),
    }
}

fn check_power(raw: RawPower, found: &mut Found) -> PowerSpec {
    match raw {
        RawPower::Relay(r) => {
            if r.port.as_os_str().is_empty() {
                found.push((at(&["power", "relay", "port"]), "must not be empty".into()));
            }
            if r.baud == 0 {
                found.push((at(&["power", "relay", "baud"]), "must be above 0".into()));
            }
            let mut bytes = |field: &str, text: &str| match crate::power::parse_bytes(text) {
                Ok(b) => b,
                Err(e) => {
                    found.push((at(&["power", "relay", field]), e.to_string()));
                    Vec::new()
                }
            };
            PowerSpec::Relay {
                on: bytes("on", &r.on),
                off: bytes("off", &r.off),
                port: r.port,
                baud: r.baud,
            }
        }
        RawPower::Command(c) => {
            for (field, command) in [("on", &c.on), ("off", &c.off)] {
                if command.trim().is_empty() {
                    found.push((at(&["power", "command", field]), "must not be empty".into()));
                }
            }
            PowerSpec::Command {
                on: c.on,
                off: c.off,
            }
        }
        RawPower::Manual => PowerSpec::Manual,
        RawPower::None => PowerSpec::None,
    }
}

fn check_faults(names: &[String], power: &PowerSpec, found: &mut Found) -> BTreeSet<Capability> {
    let mut faults = BTreeSet::new();
    let valid: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
    for (i, name) in names.iter().enumerate() {
        let path = vec!["faults".to_string(), i.to_string()];
        let Some(capability) = Capability::from_name(name) else {
            let message = if let Some(why) = realise::never_on_a_bench(name) {
                format!("`{name}` cannot be realised on a bench: {why}")
            } else if name == "swap_artifact" {
                "`swap_artifact` is part of `download` (the harness's artifact server)".into()
            } else {
                let hint = closest(name, &valid)
                    .map(|best| format!(" (did you mean `{best}`?)"))
                    .unwrap_or_default();
                format!(
                    "unknown capability `{name}`, expected one of {}{hint}",
                    valid
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            found.push((path, message));
            continue;
        };
        if !faults.insert(capability) {
            found.push((path, format!("`{name}` is listed twice")));
        } else if capability == Capability::PowerCut && !power.switchable() {
            found.push((
                path,
                "power_cut needs power control, but `power` is none (give a relay, a command or manual)"
                    .into(),
            ));
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "b.yaml") {
            Ok(b) => panic!("parsed: {b:?}"),
            Err(Invalid(p)) => p.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn transports_get_their_defaults_from_target() {
        let b = parse(
            "name: n\ntarget: {transport: slcan, device: /dev/ttyACM0, padding: null}\n",
            "b.yaml",
        )
        .unwrap();
        assert_eq!(
            b.target,
            Target::Slcan {
                device: "/dev/ttyACM0".into(),
                serial_baud: 115_200,
                bitrate: 500_000,
                tx_id: 0x7E0,
                rx_id: 0x7E8,
                padding: None,
            }
        );
        assert_eq!(b.security, KeyAlgorithm::Builtin);
        assert_eq!(b.power, PowerSpec::None);
        assert!(b.faults.is_empty());
        let b = parse(
            "name: n\ntarget: {transport: socketcan, interface: vcan0, fd: true, tx_id: '0x18DA10F1', rx_id: 0x18DAF110, padding: 0x55}\n",
            "b.yaml",
        )
        .unwrap();
        assert_eq!(
            b.target,
            Target::Socketcan {
                interface: "vcan0".into(),
                fd: true,
                tx_id: 0x18DA_10F1,
                rx_id: 0x18DA_F110,
                padding: Some(0x55),
            }
        );
    }

    #[test]
    fn several_problems_come_in_file_order() {
        assert_eq!(
            problems(
                "name: ''\ntarget: {transport: doip, host: h, tester_address: 0x10}\nfaults: [download, download]\nboot_timeout_s: -1\n"
            ),
            [
                "b.yaml:1:7: name: must not be empty",
                "b.yaml:2:52: target.tester_address: logical_address and tester_address are both 0x10",
                "b.yaml:3:20: faults[1]: `download` is listed twice",
                "b.yaml:4:17: boot_timeout_s: -1 is not a number of seconds above 0",
            ]
        );
    }

    #[test]
    fn numbers_read_as_hex_or_decimal_within_their_width() {
        let ok = |v: &str| {
            parse(
                &format!("name: n\ntarget: {{transport: doip, host: h, logical_address: {v}}}\n"),
                "b.yaml",
            )
            .map(|b| match b.target {
                Target::Doip {
                    logical_address, ..
                } => logical_address,
                _ => unreachable!("doip"),
            })
            .map_err(|e| e.to_string())
        };
        assert_eq!(ok("0x0010"), Ok(0x10));
        assert_eq!(ok("'0x0E01'"), Ok(0xE01));
        assert_eq!(ok("16"), Ok(16));
        assert_eq!(ok("\"16\""), Ok(16));
        assert_eq!(
            ok("-1"),
            Err("b.yaml:2:53: target.logical_address: -1 is negative".into())
        );
        assert_eq!(
            ok("null"),
            Err("b.yaml:2:53: target.logical_address: invalid type: unit value, expected a 16-bit number (hex like 0x7E0, or decimal)".into())
        );
    }
}
