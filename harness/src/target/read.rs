//! Reading a [`Target`] from a YAML file (bench files, manifests) so that every problem has
//! its position: serde buffers an internally tagged enum before reading it, and errors inside
//! the buffer lose their position. So `target` is read as a flat record of every transport's
//! fields ([`RawTarget`], each number checked against its width as it is read), then checked
//! as a whole ([`check_target`]: which fields the transport takes and needs, then
//! [`Target::check`]), each problem as (path, message) for the caller to locate.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::Target;

/// Problems as (path, message).
pub(crate) type Found = Vec<(Vec<String>, String)>;

fn at(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| s.to_string()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transport {
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
pub(crate) struct RawTarget {
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

pub(crate) fn check_target(raw: &RawTarget, found: &mut Found) -> Option<Target> {
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
