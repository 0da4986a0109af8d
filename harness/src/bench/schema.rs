//! The bench file format (YAML): a real ECU on a test bench — how the harness reaches it, how
//! it computes security keys, how it switches power, and which faults it can inject.
//!
//! ```yaml
//! name: rack 3 (VCU)                 # required, one line
//! target:                            # how the harness reaches the ECU, tagged by `transport`
//!   transport: doip
//!   host: 192.168.10.20
//! security: builtin                  # | {command: "keygen --level {level} --seed {seed}"}
//! power:                             # relay | command | manual | none (the default)
//!   relay: {port: /dev/ttyUSB0, baud: 9600, on: "A0 01 01 A2", off: "A0 01 00 A1"}
//! faults: [power_cut, download, kill_manager]
//! boot_timeout_s: 30                 # optional: overrides the scenario's manager limits
//! confirm_timeout_s: 10
//! images: {2.0.0: fw/vcu-2.0.0.signed.bin}   # optional: the team's images by version
//! ```
//!
//! | field | values (defaults) |
//! |---|---|
//! | `name` | one line, required |
//! | `target` | [`Target`]: `doip` (`host`, `port` 13400, `logical_address` 0x0010, `tester_address` 0x0E00), `slcan` (`device`, `serial_baud` 115200, `bitrate` 500000, `tx_id` 0x7E0, `rx_id` 0x7E8, `padding` 0xCC or `null`), `socketcan` (`interface`, `fd` false, `tx_id`, `rx_id`, `padding`); addresses, ids and `padding` are numbers (`0x7E0` or `2016`, quoted or not) |
//! | `security` | [`KeyAlgorithm`]: `builtin` (default) or `{command: "..."}`, which must contain `{seed}` |
//! | `power` | [`PowerSpec`]: `{relay: {port, baud (9600), on, off}}`, `{command: {on, off}}`, `manual`, `none` (default) |
//! | `faults` | [`Capability`] names: `power_cut` (needs power control), `download`, `kill_manager` (default: none) |
//! | `boot_timeout_s`, `confirm_timeout_s` | seconds above 0, optional |
//! | `images` | version → signed image file (relative to the bench file): served instead of an image built from the scenario |
//!
//! Unknown fields are errors; [`super::validate`] reads files and reports every problem as
//! `file:line:col: message`. These types are what a file becomes once it validated; they
//! serialize back to the file format ([`Bench::to_yaml`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

pub use crate::target::Target;
pub use crate::uds_client::KeyAlgorithm;

use crate::scenario::schema::ManagerSpec;
use crate::uds_client::UdsConfig;

/// One bench: a real ECU and what the harness can do to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bench {
    /// One line, for reports.
    pub name: String,
    /// How the harness reaches the ECU.
    pub target: Target,
    /// How SecurityAccess keys are computed.
    pub security: KeyAlgorithm,
    /// How the harness switches the ECU's supply.
    pub power: PowerSpec,
    /// The faults this bench can realise.
    pub faults: BTreeSet<Capability>,
    /// Seconds the ECU may stay silent after a reset (overrides the scenario's manager).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_timeout_s: Option<f64>,
    /// Seconds a new image may stay on probation (overrides the scenario's manager).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_timeout_s: Option<f64>,
    /// The team's signed images by version (paths relative to the bench file): the update of
    /// a scenario whose `update.version` is here is this file, not an image built from the
    /// scenario's spec (a real ECU boots only its real firmware, signed with its keys).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub images: std::collections::BTreeMap<String, PathBuf>,
    /// The file it was read from (for replay commands).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Bench {
    /// Whether the bench lists `capability` in its faults.
    pub fn can(&self, capability: Capability) -> bool {
        self.faults.contains(&capability)
    }

    /// The UDS client settings for this bench: its key algorithm, the rest default.
    pub fn uds_config(&self) -> UdsConfig {
        UdsConfig {
            key: self.security.clone(),
            ..UdsConfig::default()
        }
    }

    /// A scenario's manager limits with this bench's timeouts put in their place.
    pub fn manager_spec(&self, scenario: &ManagerSpec) -> ManagerSpec {
        ManagerSpec {
            boot_timeout_s: self.boot_timeout_s.unwrap_or(scenario.boot_timeout_s),
            confirm_timeout_s: self.confirm_timeout_s.unwrap_or(scenario.confirm_timeout_s),
            ..scenario.clone()
        }
    }

    /// The bench in the file format (parses back to an equal bench).
    pub fn to_yaml(&self) -> String {
        let mut out = Vec::new();
        let mut ser = serde_yaml::Serializer::new(&mut out);
        serde_yaml::with::singleton_map_recursive::serialize(self, &mut ser)
            .expect("a bench serializes: strings, numbers, sets and enums");
        String::from_utf8(out).expect("serde_yaml writes UTF-8")
    }
}

/// How the harness switches the ECU's supply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSpec {
    /// A relay board on a serial port ([`crate::power::SerialRelay`]).
    Relay {
        port: PathBuf,
        baud: u32,
        /// What switches the relay on, e.g. `A0 01 01 A2`.
        #[serde(serialize_with = "hex_bytes")]
        on: Vec<u8>,
        #[serde(serialize_with = "hex_bytes")]
        off: Vec<u8>,
    },
    /// Shell commands ([`crate::power::ExternalCommand`]).
    Command { on: String, off: String },
    /// The operator switches it when prompted ([`crate::power::Manual`]).
    Manual,
    /// No power control: power cuts cannot be realised.
    None,
}

impl PowerSpec {
    /// Whether the harness can switch power at all.
    pub fn switchable(&self) -> bool {
        !matches!(self, PowerSpec::None)
    }

    /// One line, for reports: `relay on /dev/ttyUSB0`.
    pub fn describe(&self) -> String {
        match self {
            PowerSpec::Relay { port, .. } => format!("relay on {}", port.display()),
            PowerSpec::Command { on, off } => format!("commands `{on}` / `{off}`"),
            PowerSpec::Manual => "manual (operator)".into(),
            PowerSpec::None => "none".into(),
        }
    }
}

/// `[0xA0, 0x01]` → `"A0 01"` (what [`crate::power::parse_bytes`] reads).
fn hex_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ecu_sim::proto::relay::format_bytes(bytes))
}

/// A kind of fault a bench can realise. The set is closed: other scenario faults need a
/// gateway between tester and ECU, or the virtual ECU's insides (see [`super::realise`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Cut the ECU's supply and restore it (`power_cut` actions); needs power control.
    PowerCut,
    /// The harness's own artifact server misbehaves: stalls, closes, HTTP errors, flipped
    /// bytes, swapped artifacts, throttling (`download` and `swap_artifact` actions).
    Download,
    /// Kill the harness's OTA manager and start it again on its store (`kill_manager`, and
    /// `power_cut` with `kill_manager: true`).
    KillManager,
}

impl Capability {
    pub const ALL: [Capability; 3] = [
        Capability::PowerCut,
        Capability::Download,
        Capability::KillManager,
    ];

    /// The name in bench files.
    pub fn name(self) -> &'static str {
        match self {
            Capability::PowerCut => "power_cut",
            Capability::Download => "download",
            Capability::KillManager => "kill_manager",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_their_serde_names() {
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
        assert_eq!(Capability::from_name("reset"), None);
    }

    #[test]
    fn bench_timeouts_override_the_scenario_manager() {
        let bench = Bench {
            name: "b".into(),
            target: Target::Doip {
                host: "h".into(),
                port: 13400,
                logical_address: 0x10,
                tester_address: 0xE00,
            },
            security: KeyAlgorithm::Command("k {seed}".into()),
            power: PowerSpec::None,
            faults: BTreeSet::new(),
            boot_timeout_s: Some(60.0),
            confirm_timeout_s: None,
            images: Default::default(),
            file: None,
        };
        let spec = ManagerSpec {
            download_attempts: 2,
            confirm_timeout_s: 5.0,
            ..ManagerSpec::default()
        };
        let merged = bench.manager_spec(&spec);
        assert_eq!(
            (
                merged.download_attempts,
                merged.boot_timeout_s,
                merged.confirm_timeout_s
            ),
            (2, 60.0, 5.0)
        );
        assert_eq!(
            bench.uds_config().key,
            KeyAlgorithm::Command("k {seed}".into())
        );
        assert!(!bench.power.switchable());
    }
}
