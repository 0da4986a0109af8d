//! A virtual vehicle: a DoIP gateway with several ECUs behind it, described by a vehicle file
//! (`ecu-sim serve --vehicle vehicle.yaml`).
//!
//! ```yaml
//! vin: WVWZZZ1KZAW000001        # optional: the VIN every ECU and the gateway report
//! gateway:
//!   logical_address: 0x0001     # the DoIP entity's own address (it has no UDS server)
//! ecus:
//!   - name: bcm                 # also its state directory under --state
//!     logical_address: 0x0010
//!     boot_mode: swap-scratch   # every other field: `ecu-sim`'s option of the same name
//!   - name: eps
//!     logical_address: 0x0011
//!     boot_mode: direct-xip
//!     sector_size: 16384
//!     sectors: 40
//!     keys: [eps-pub.pem]       # relative to the vehicle file
//!     factory: eps-v1.bin
//! ```
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `vin` | 17 characters, the vehicle's identification number | `ECUSIM0000000000` + `1` |
//! | `gateway.logical_address` | the entity's logical address (vehicle identification) | required |
//! | `ecus[].name` | `[a-z0-9_-]+`, unique; the ECU's state directory `DIR/NAME` | required |
//! | `ecus[].logical_address` | 0x0001-0x0DFF, unique, not the gateway's | required |
//! | `ecus[].boot_mode` | MCUboot strategy (`swap-scratch`, `swap-move`, `swap-offset`, `overwrite`, `direct-xip`) | `swap-scratch` |
//! | `ecus[].sector_size`, `sectors`, `align` | the flash geometry (uniform sectors) | 4096, 132, 8 |
//! | `ecus[].keys` | trusted public key PEM files | — |
//! | `ecus[].dev_keys` | trusted development keys by name | `[oem]` without `keys` |
//! | `ecus[].enc_key` | the image decryption key file | — |
//! | `ecus[].factory` | the image installed into a new flash | built-in v1.0.0 signed by `oem` |
//! | `ecus[].max_boot_attempts` | boots of a test image before the revert | 1 |
//! | `ecus[].block_len` | maxNumberOfBlockLength of RequestDownload | 16386 |
//! | `ecus[].seed` | security-access seed | from the clock |
//!
//! Unknown fields are errors; every error names the file, line and column (syntax, types) or
//! the ECU and field (addresses, names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::boot::BootMode;

/// Where a vehicle file is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VehicleError {
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Syntax, a type, an unknown field.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A rule across fields: `what` says which ECU and field.
    #[error("{path}:{line}: {what}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        what: String,
        message: String,
    },
}

/// A vehicle file, as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VehicleFile {
    #[serde(default)]
    pub vin: Option<String>,
    pub gateway: GatewaySpec,
    pub ecus: Vec<VehicleEcu>,
}

/// The DoIP gateway.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    pub logical_address: u16,
}

/// One ECU behind the gateway, on DoIP.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VehicleEcu {
    pub name: String,
    pub logical_address: u16,
    #[serde(default = "default_mode", deserialize_with = "boot_mode")]
    pub boot_mode: BootMode,
    #[serde(default = "default_sector_size")]
    pub sector_size: u32,
    #[serde(default = "default_sectors")]
    pub sectors: usize,
    #[serde(default = "default_align")]
    pub align: usize,
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    #[serde(default)]
    pub dev_keys: Vec<String>,
    #[serde(default)]
    pub enc_key: Option<PathBuf>,
    #[serde(default)]
    pub factory: Option<PathBuf>,
    #[serde(default = "default_attempts")]
    pub max_boot_attempts: u8,
    #[serde(default = "default_block_len")]
    pub block_len: u32,
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_mode() -> BootMode {
    BootMode::SwapScratch
}
fn default_sector_size() -> u32 {
    4096
}
fn default_sectors() -> usize {
    132
}
fn default_align() -> usize {
    8
}
fn default_attempts() -> u8 {
    1
}
fn default_block_len() -> u32 {
    16 * 1024 + 2
}

fn boot_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BootMode, D::Error> {
    struct Mode;
    impl serde::de::Visitor<'_> for Mode {
        type Value = BootMode;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an MCUboot strategy name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BootMode, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Mode)
}

/// The VIN of a vehicle file without one.
pub const DEFAULT_VIN: &[u8; 17] = b"ECUSIM00000000001";

/// A checked vehicle: paths resolved against the file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vehicle {
    pub vin: [u8; 17],
    pub gateway_address: u16,
    /// In file order.
    pub ecus: Vec<VehicleEcu>,
}

impl Vehicle {
    /// Read and check the vehicle file at `path`.
    pub fn load(path: &Path) -> Result<Vehicle, VehicleError> {
        let text = std::fs::read_to_string(path).map_err(|e| VehicleError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Vehicle::parse(&text, path, base)
    }

    /// Parse and check `text` (read from `path`; relative paths in it are against `base`).
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Vehicle, VehicleError> {
        let file: VehicleFile = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = e.to_string();
            // serde_yaml appends " at line L column C": the location is in front already.
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            VehicleError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        let invalid = |ecu: Option<&str>, what: String, message: String| {
            let line = ecu.and_then(|name| line_of(text, name)).unwrap_or(1);
            VehicleError::Invalid {
                path: path.to_path_buf(),
                line,
                what,
                message,
            }
        };
        let vin = match &file.vin {
            None => *DEFAULT_VIN,
            Some(v) => v.as_bytes().try_into().map_err(|_| {
                invalid(
                    None,
                    "vin".into(),
                    format!("{v:?} has {} characters, a VIN has 17", v.len()),
                )
            })?,
        };
        if file.ecus.is_empty() {
            return Err(invalid(
                None,
                "ecus".into(),
                "a vehicle needs at least one ECU".into(),
            ));
        }
        let mut names: BTreeMap<&str, ()> = BTreeMap::new();
        let mut addresses: BTreeMap<u16, &str> = BTreeMap::new();
        for ecu in &file.ecus {
            let name = ecu.name.as_str();
            let at = |field: &str| format!("ecu {name}: {field}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    Some(name),
                    "ecus[].name".into(),
                    format!("{name:?}: use lowercase letters, digits, '_' and '-'"),
                ));
            }
            if names.insert(name, ()).is_some() {
                return Err(invalid(Some(name), at("name"), "named twice".into()));
            }
            let a = ecu.logical_address;
            if !(0x0001..=0x0DFF).contains(&a) {
                return Err(invalid(
                    Some(name),
                    at("logical_address"),
                    format!("0x{a:04x} is not an ECU address (0x0001-0x0DFF, ISO 13400-2)"),
                ));
            }
            if a == file.gateway.logical_address {
                return Err(invalid(
                    Some(name),
                    at("logical_address"),
                    format!("0x{a:04x} is the gateway's"),
                ));
            }
            if let Some(other) = addresses.insert(a, name) {
                return Err(invalid(
                    Some(name),
                    at("logical_address"),
                    format!("0x{a:04x} is {other}'s already"),
                ));
            }
        }
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let ecus = file
            .ecus
            .iter()
            .map(|e| VehicleEcu {
                keys: e.keys.iter().map(resolve).collect(),
                enc_key: e.enc_key.as_ref().map(resolve),
                factory: e.factory.as_ref().map(resolve),
                ..e.clone()
            })
            .collect();
        Ok(Vehicle {
            vin,
            gateway_address: file.gateway.logical_address,
            ecus,
        })
    }
}

/// The line of the ECU entry `name: NAME` in `text` (1-based).
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vehicle, VehicleError> {
        Vehicle::parse(text, Path::new("v.yaml"), Path::new("/cfg"))
    }

    const GOOD: &str = "\
gateway: {logical_address: 0x0001}
ecus:
  - name: bcm
    logical_address: 0x0010
  - name: eps
    logical_address: 0x0011
    boot_mode: direct-xip
    keys: [eps.pem]
";

    #[test]
    fn a_good_file_resolves_paths_and_keeps_the_order() {
        let v = parse(GOOD).unwrap();
        assert_eq!(v.gateway_address, 1);
        assert_eq!(&v.vin, DEFAULT_VIN);
        let names: Vec<_> = v.ecus.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bcm", "eps"]);
        assert_eq!(v.ecus[1].boot_mode, BootMode::DirectXip);
        assert_eq!(v.ecus[1].keys, [PathBuf::from("/cfg/eps.pem")]);
        assert_eq!(v.ecus[0].sector_size, 4096);
    }

    #[test]
    fn bad_files_get_located_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 16\n    colour: red\n",
                "v.yaml:5:5: ecus[0]: unknown field `colour`",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 16\n    boot_mode: swap-twice\n",
                "v.yaml:5:16: ecus[0].boot_mode: unknown boot mode",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 16\n  - name: b\n    logical_address: 0x10\n",
                "v.yaml:5: ecu b: logical_address: 0x0010 is a's already",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 1\n",
                "v.yaml:3: ecu a: logical_address: 0x0001 is the gateway's",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 0x0E00\n",
                "v.yaml:3: ecu a: logical_address: 0x0e00 is not an ECU address",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 16\n  - name: a\n    logical_address: 17\n",
                "ecu a: name: named twice",
            ),
            (
                "gateway: {logical_address: 1}\necus:\n  - name: Body ECU\n    logical_address: 16\n",
                "v.yaml:3: ecus[].name: \"Body ECU\": use lowercase letters",
            ),
            (
                "vin: SHORT\ngateway: {logical_address: 1}\necus:\n  - name: a\n    logical_address: 16\n",
                "v.yaml:1: vin: \"SHORT\" has 5 characters, a VIN has 17",
            ),
            (
                "gateway: {logical_address: 1}\necus: []\n",
                "v.yaml:1: ecus: a vehicle needs at least one ECU",
            ),
            (
                "gateway: {logical_address: 70000}\necus: []\n",
                "v.yaml:1:28: gateway.logical_address: invalid value",
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err().to_string();
            assert!(got.contains(want), "{text}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // A cheap fuzz over mutations of a good file: every outcome is Ok or a located error.
        let base = GOOD.as_bytes();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut b = base.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % b.len();
                b[i] = (state >> 32) as u8 & 0x7F;
            }
            let text = String::from_utf8_lossy(&b);
            let _ = parse(&text);
        }
    }
}
