//! Reading bench files: every problem as `file:line:col: message`, with a hint where one helps,
//! exactly like scenario files ([`crate::scenario::validate`], whose [`Invalid`] and
//! [`Problem`] these are).
//!
//! Two passes. Serde (`deny_unknown_fields`, enums as one-key maps) reports the first syntax,
//! type, unknown-field or unknown-variant error with its position. It reads `target` as a flat
//! record of every transport's fields rather than as the tagged [`Target`]: serde buffers an
//! internally tagged enum before reading it, and errors inside the buffer lose their position.
//! The second pass checks the whole bench — which fields the transport takes and needs, relay
//! bytes, capability names, the security command — and locates each problem by walking the
//! YAML to its path ([`locate`]).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::realise;
use super::schema::{Bench, Capability, KeyAlgorithm, PowerSpec, Target};
pub use crate::scenario::validate::{Invalid, Problem};
use crate::scenario::validate::{closest, dotted, locate, strip_location, with_hint};

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
            .map(|(path, message)| {
                // A problem with a default (a field the file leaves out) goes to its parent.
                let (line, column) = (0..=path.len())
                    .rev()
                    .find_map(|n| locate(text, &path[..n]))
                    .unwrap_or((1, 1));
                Problem {
                    file: file.into(),
                    line,
                    column,
                    message: format!("{}: {message}", dotted(&path)),
                }
            })
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Transport {
    Doip,
    Slcan,
    Socketcan,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Doip => "doip",
            Transport::Slcan => "slcan",
            Transport::Socketcan => "socketcan",
        }
    }

    /// The fields the transport takes, and the one it needs (with what it is).
    fn fields(self) -> (&'static [&'static str], &'static str, &'static str) {
        match self {
            Transport::Doip => (
                &["host", "port", "logical_address", "tester_address"],
                "host",
                "the ECU's IP address or host name",
            ),
            Transport::Slcan => (
                &[
                    "device",
                    "serial_baud",
                    "bitrate",
                    "tx_id",
                    "rx_id",
                    "padding",
                ],
                "device",
                "the adapter's serial port, e.g. /dev/ttyACM0",
            ),
            Transport::Socketcan => (
                &["interface", "fd", "tx_id", "rx_id", "padding"],
                "interface",
                "the CAN interface, e.g. can0",
            ),
        }
    }
}

/// `target` with every transport's fields, all optional; serializes to what [`Target`] reads
/// (which supplies the defaults).
#[derive(Debug, Deserialize, Serialize)]
#[serde(
    expecting = "a target (a mapping with `transport` and its settings)",
    deny_unknown_fields
)]
struct RawTarget {
    transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(
        default,
        deserialize_with = "number::u16",
        skip_serializing_if = "Option::is_none"
    )]
    logical_address: Option<u16>,
    #[serde(
        default,
        deserialize_with = "number::u16",
        skip_serializing_if = "Option::is_none"
    )]
    tester_address: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial_baud: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bitrate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fd: Option<bool>,
    #[serde(
        default,
        deserialize_with = "number::can_id",
        skip_serializing_if = "Option::is_none"
    )]
    tx_id: Option<u32>,
    #[serde(
        default,
        deserialize_with = "number::can_id",
        skip_serializing_if = "Option::is_none"
    )]
    rx_id: Option<u32>,
    /// `Some(None)`: `padding: null`, no padding.
    #[serde(
        default,
        deserialize_with = "number::padding",
        skip_serializing_if = "Option::is_none"
    )]
    padding: Option<Option<u8>>,
}

impl RawTarget {
    /// The fields the file sets, besides `transport`.
    fn given(&self) -> Vec<&'static str> {
        [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("logical_address", self.logical_address.is_some()),
            ("tester_address", self.tester_address.is_some()),
            ("device", self.device.is_some()),
            ("serial_baud", self.serial_baud.is_some()),
            ("bitrate", self.bitrate.is_some()),
            ("interface", self.interface.is_some()),
            ("fd", self.fd.is_some()),
            ("tx_id", self.tx_id.is_some()),
            ("rx_id", self.rx_id.is_some()),
            ("padding", self.padding.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
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

fn check_target(raw: &RawTarget, found: &mut Found) -> Option<Target> {
    let transport = raw.transport;
    let name = transport.name();
    let (takes, needs, what) = transport.fields();
    let before = found.len();
    for field in raw.given() {
        if !takes.contains(&field) {
            found.push((
                at(&["target", field]),
                format!(
                    "`{field}` is not a {name} setting ({name} takes {})",
                    takes.join(", ")
                ),
            ));
        }
    }
    if !raw.given().contains(&needs) {
        found.push((
            at(&["target"]),
            format!("transport {name} needs `{needs}` ({what})"),
        ));
    }
    if found.len() > before {
        return None;
    }
    // The fields are the right ones: `Target` supplies the defaults and its own checks.
    let target: Target = match serde_yaml::to_value(raw).and_then(serde_yaml::from_value) {
        Ok(t) => t,
        Err(e) => {
            found.push((at(&["target"]), e.to_string()));
            return None;
        }
    };
    if let Some((field, message)) = target.check() {
        found.push((at(&["target", field]), message));
    }
    match &target {
        Target::Doip {
            logical_address,
            tester_address,
            ..
        } if logical_address == tester_address => {
            found.push(same(
                ("logical_address", raw.logical_address.is_some()),
                ("tester_address", raw.tester_address.is_some()),
                u32::from(*logical_address),
            ));
        }
        Target::Slcan { tx_id, rx_id, .. } | Target::Socketcan { tx_id, rx_id, .. }
            if tx_id == rx_id =>
        {
            found.push(same(
                ("tx_id", raw.tx_id.is_some()),
                ("rx_id", raw.rx_id.is_some()),
                *tx_id,
            ));
        }
        _ => {}
    }
    Some(target)
}

/// Two identifiers that must differ but do not, (field, set in the file) each: the problem goes
/// where the file sets one.
fn same(a: (&str, bool), b: (&str, bool), value: u32) -> (Vec<String>, String) {
    let field = if a.1 && !b.1 { a.0 } else { b.0 };
    (
        at(&["target", field]),
        format!("{} and {} are both {value:#x}", a.0, b.0),
    )
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

/// Integers in bench files: YAML numbers (`0x7E0`, `2016`) or strings holding one (`"0x7E0"`),
/// checked against their width as they are read, so that problems carry their position.
mod number {
    use super::*;

    struct Num {
        bits: u32,
        null: bool,
    }

    /// `None`: `null`, where allowed.
    impl<'de> Visitor<'de> for Num {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a {}-bit number (hex like 0x7E0, or decimal){}",
                self.bits,
                if self.null { " or null" } else { "" }
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            if v >> self.bits != 0 {
                return Err(E::custom(format!("{v:#x} does not fit {} bits", self.bits)));
            }
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("{v} is negative"))),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u64>, E> {
            let t = v.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            match parsed {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!(
                    "{v:?} is not a number (hex like 0x7E0, or decimal)"
                ))),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            if self.null {
                Ok(None)
            } else {
                Err(E::invalid_type(de::Unexpected::Unit, &self))
            }
        }
    }

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        bits: u32,
        null: bool,
    ) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(Num { bits, null })
    }

    const CHECKED: &str = "checked against its width when read";

    pub(super) fn u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        Ok(read(d, 16, false)?.map(|v| u16::try_from(v).expect(CHECKED)))
    }

    /// 11-bit or 29-bit CAN identifiers.
    pub(super) fn can_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Ok(read(d, 29, false)?.map(|v| u32::try_from(v).expect(CHECKED)))
    }

    /// A byte, or `null` for no padding.
    pub(super) fn padding<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u8>>, D::Error> {
        Ok(Some(
            read(d, 8, true)?.map(|v| u8::try_from(v).expect(CHECKED)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
