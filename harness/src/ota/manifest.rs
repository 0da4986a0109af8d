//! The update manifest: what to install where (YAML or JSON; JSON is YAML too).
//!
//! ```yaml
//! artifact:
//!   url: http://127.0.0.1:8080/v2.bin   # http only
//!   size: 100677                         # bytes
//!   sha256: 3f5c…                        # 64 hex digits
//! version: 2.0.0                         # must match the image header
//! target:
//!   transport: doip
//!   host: 127.0.0.1
//!   port: 13400                          # default 13400
//!   logical_address: 0x0010              # default 0x0010
//!   tester_address: 0x0E00               # default 0x0E00
//!   # or {transport: slcan, device: …} / {transport: socketcan, interface: …}: see crate::target
//! key_id: 9a1b…                          # optional: hex prefix (≥ 8 digits) of the signing key's hash
//! permanent: false                       # optional: permanent instead of test upgrade
//! ```
//!
//! Unknown fields are errors. Every error names the field (and, for syntax and type errors,
//! the line and column).

use serde::{Deserialize, Serialize};

use ecu_sim::image::Version;

pub use crate::target::Target;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub artifact: Artifact,
    pub version: String,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default)]
    pub permanent: bool,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Syntax or type error, with its position when known.
    #[error("{origin}:{line}:{column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    /// A field that parses but makes no sense.
    #[error("{origin}: field `{field}`: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
}

impl Manifest {
    /// Parse and check `text`; `origin` names it in errors (a file name).
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(loc) => ManifestError::Syntax {
                origin: origin.to_string(),
                line: loc.line(),
                column: loc.column(),
                message: strip_location(&e.to_string()),
            },
            None => ManifestError::Invalid {
                origin: origin.to_string(),
                message: e.to_string(),
            },
        })?;
        m.check(origin)?;
        Ok(m)
    }

    fn check(&self, origin: &str) -> Result<(), ManifestError> {
        let field = |field: &str, message: String| ManifestError::Field {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let url = &self.artifact.url;
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(field(
                "artifact.url",
                format!("{url:?} is not an http:// url"),
            ));
        }
        if self.artifact.size == 0 {
            return Err(field("artifact.size", "must be more than 0".into()));
        }
        let sha = &self.artifact.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field(
                "artifact.sha256",
                format!("expected 64 hex digits, got {:?}", sha),
            ));
        }
        self.version
            .parse::<Version>()
            .map_err(|e| field("version", e.to_string()))?;
        if let Some(k) = &self.key_id
            && (k.len() < 8 || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(field(
                "key_id",
                format!("expected 8 to 64 hex digits, got {k:?}"),
            ));
        }
        if let Some((name, message)) = self.target.check() {
            return Err(field(&format!("target.{name}"), message));
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        self.version.parse().expect("checked when parsed")
    }

    /// The expected SHA-256 as bytes.
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&self.artifact.sha256[2 * i..2 * i + 2], 16)
                .expect("checked when parsed");
        }
        out
    }
}

/// serde_yaml appends " at line L column C"; we print the position first instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "artifact:
  url: http://127.0.0.1:8080/v2.bin
  size: 100677
  sha256: 3f5c000000000000000000000000000000000000000000000000000000000001
version: 2.0.0
target:
  transport: doip
  host: 127.0.0.1
  logical_address: 0x0010
";

    #[test]
    fn good_manifest_with_defaults() {
        let m = Manifest::parse(GOOD, "m.yaml").unwrap();
        assert_eq!(
            m.target,
            Target::Doip {
                host: "127.0.0.1".into(),
                port: 13400,
                logical_address: 0x10,
                tester_address: 0x0E00
            }
        );
        assert_eq!(m.sha256()[31], 1);
        assert_eq!(m.version().major, 2);
        // JSON is accepted too, and round-trips.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(Manifest::parse(&json, "m.json").unwrap(), m);
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                "artifact:\n  url: http://h/x\n  size: 1\nversion: 2.0.0\ntarget:\n  transport: doip\n  host: h\n",
                "m.yaml:2:3: artifact: missing field `sha256`",
            ),
            (
                &GOOD.replace("size: 100677", "size: big"),
                "m.yaml:3:9: artifact.size: invalid type: string \"big\", expected u64",
            ),
            (
                &GOOD.replace("transport: doip", "transport: can-fd"),
                "m.yaml:7:14: target.transport: unknown variant `can-fd`, expected one of `doip`, `slcan`, `socketcan`",
            ),
            (
                &format!("{GOOD}colour: red\n"),
                "m.yaml:10:1: unknown field `colour`, expected one of `artifact`, `version`, `target`, `key_id`, `permanent`",
            ),
            (
                &GOOD.replace("http://127.0.0.1:8080/v2.bin", "ftp://x/v2.bin"),
                "m.yaml: field `artifact.url`: \"ftp://x/v2.bin\" is not an http:// url",
            ),
            (
                &GOOD.replace("size: 100677", "size: 0"),
                "m.yaml: field `artifact.size`: must be more than 0",
            ),
            (
                &GOOD.replace("3f5c00", "3f5c0"),
                "m.yaml: field `artifact.sha256`: expected 64 hex digits, got \"3f5c0000",
            ),
            (
                &GOOD.replace("version: 2.0.0", "version: two"),
                "m.yaml: field `version`: ",
            ),
            (
                &format!("{GOOD}key_id: xyz\n"),
                "m.yaml: field `key_id`: expected 8 to 64 hex digits, got \"xyz\"",
            ),
            (
                "[1, 2]",
                "m.yaml:1:1: invalid type: sequence, expected struct Manifest",
            ),
            (
                "artifact:\n  url: 'x\n",
                "m.yaml:3:1: found unexpected end of stream",
            ),
        ];
        for (text, want) in cases {
            let got = Manifest::parse(text, "m.yaml").unwrap_err().to_string();
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
        }
    }

    proptest::proptest! {
        /// Any text is a manifest or an error, never a panic.
        #[test]
        fn any_text_is_a_manifest_or_an_error(text in "(artifact|url|size|sha256|version|target|transport|doip|host|port|key_id|[:{}\\[\\], \\n'\"0-9a-f.-]){0,40}") {
            let _ = Manifest::parse(&text, "m.yaml");
        }
    }
}
