//! The update manifest: what to install where (YAML or JSON; JSON is YAML too).
//!
//! ```yaml
//! artifact:
//!   url: https://127.0.0.1:8443/v2.bin  # http:// or https://
//!   size: 100677                         # bytes
//!   sha256: 3f5c…                        # 64 hex digits
//!   ca_file: ca.pem                      # optional, https only: the CAs to trust (PEM),
//!                                        # relative to the manifest; default: Mozilla's roots
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
//! Unknown fields are errors. Every error is `FILE:LINE:COL: field: message`, located at the
//! field's own value (or key, for a key written twice), like scenario and bench files: `target`
//! is read as a flat record ([`crate::target::read`]) so that its errors keep their position,
//! and checks after parsing are located by walking the YAML to the field. The URL is checked
//! here as the downloader will parse it ([`parse_url`]): spaces, control characters, user
//! info, a missing host or a port outside 1–65535 are refused at submit, not at run. So is a
//! `ca_file` with an `http://` URL; at submit ([`Manifest::resolve_files`]) the `ca_file` is made
//! absolute against the manifest's folder and must hold at least one PEM certificate.

use serde::{Deserialize, Serialize};

use ecu_sim::image::Version;

use crate::http::parse_url;
use crate::scenario::validate::{dotted, duplicate_key, locate_or_parent, strip_location};
pub use crate::target::Target;
use crate::target::read::{Found, RawTarget, check_target};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    pub size: u64,
    pub sha256: String,
    /// PEM certificate authorities trusted for an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
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

/// A manifest as serde reads it from a file (see the module doc).
#[derive(Deserialize)]
#[serde(
    expecting = "a manifest (a mapping with `artifact`, `version` and `target`)",
    deny_unknown_fields
)]
struct RawManifest {
    artifact: Artifact,
    version: String,
    target: RawTarget,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    permanent: bool,
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
    /// A field that parses but makes no sense, at its value.
    #[error("{origin}:{line}:{column}: {field}: {message}")]
    Field {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
}

impl Manifest {
    /// Parse and check `text`; `origin` names it in errors (a file name). The first problem
    /// in the file (by position) is the error.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        if let Some(dup) = duplicate_key(text) {
            return Err(ManifestError::Syntax {
                origin: origin.to_string(),
                line: dup.line,
                column: dup.column,
                message: dup.message(),
            });
        }
        let raw: RawManifest = serde_yaml::from_str(text).map_err(|e| match e.location() {
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
        let mut found = check_fields(&raw);
        let target = check_target(&raw.target, &mut found);
        let first = found
            .into_iter()
            .map(|(path, message)| (locate_or_parent(text, &path), path, message))
            .min_by_key(|(at, ..)| *at);
        match (first, target) {
            (Some(((line, column), path, message)), _) => Err(ManifestError::Field {
                origin: origin.to_string(),
                line,
                column,
                field: dotted(&path),
                message,
            }),
            (None, Some(target)) => Ok(Manifest {
                artifact: raw.artifact,
                version: raw.version,
                target,
                key_id: raw.key_id,
                permanent: raw.permanent,
            }),
            // check_target always says why it has no target; never a panic if it did not.
            (None, None) => Err(ManifestError::Invalid {
                origin: origin.to_string(),
                message: "target: not a usable target".into(),
            }),
        }
    }

    /// Make `artifact.ca_file` absolute against `base` (the manifest's folder) and check that
    /// it holds CA certificates; `text` and `origin` locate the error like [`Manifest::parse`].
    pub fn resolve_files(
        &mut self,
        text: &str,
        origin: &str,
        base: &std::path::Path,
    ) -> Result<(), ManifestError> {
        let Some(ca) = &self.artifact.ca_file else {
            return Ok(());
        };
        let ca = base.join(ca);
        if let Err(e) = crate::download::load_ca_file(&ca) {
            let path = ["artifact".to_string(), "ca_file".to_string()];
            let (line, column) = locate_or_parent(text, &path);
            return Err(ManifestError::Field {
                origin: origin.to_string(),
                line,
                column,
                field: dotted(&path),
                message: e.to_string(),
            });
        }
        self.artifact.ca_file = Some(std::path::absolute(&ca).unwrap_or(ca));
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

/// The problems of the fields besides `target`, as (path, message).
fn check_fields(m: &RawManifest) -> Found {
    let mut found = Found::new();
    let mut problem = |path: &[&str], message: String| {
        found.push((path.iter().map(|s| s.to_string()).collect(), message));
    };
    let url = &m.artifact.url;
    match parse_url(url) {
        Err(e) => problem(
            &["artifact", "url"],
            format!("{url:?} is not a usable url: {e}"),
        ),
        Ok(u) if u.scheme() != "https" && m.artifact.ca_file.is_some() => problem(
            &["artifact", "ca_file"],
            format!("only for https:// urls, the url is {url:?}"),
        ),
        Ok(_) => {}
    }
    if m.artifact
        .ca_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        problem(&["artifact", "ca_file"], "an empty path".into());
    }
    if m.artifact.size == 0 {
        problem(&["artifact", "size"], "must be more than 0".into());
    }
    let sha = &m.artifact.sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        problem(
            &["artifact", "sha256"],
            format!("expected 64 hex digits, got {sha:?}"),
        );
    }
    if let Err(e) = m.version.parse::<Version>() {
        problem(&["version"], e.to_string());
    }
    if let Some(k) = &m.key_id
        && (k.len() < 8 || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problem(
            &["key_id"],
            format!("expected 8 to 64 hex digits, got {k:?}"),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
                "m.yaml:2:8: artifact.url: \"ftp://x/v2.bin\" is not a usable url: unsupported scheme \"ftp\", only http:// and https://",
            ),
            (
                &GOOD.replace("  size: 100677", "  ca_file: ca.pem\n  size: 100677"),
                "m.yaml:3:12: artifact.ca_file: only for https:// urls, the url is \"http://127.0.0.1:8080/v2.bin\"",
            ),
            (
                &GOOD
                    .replace("  size: 100677", "  ca_file: ''\n  size: 100677")
                    .replace("http:", "https:"),
                "m.yaml:3:12: artifact.ca_file: an empty path",
            ),
            (
                &GOOD.replace("size: 100677", "size: 0"),
                "m.yaml:3:9: artifact.size: must be more than 0",
            ),
            (
                &GOOD.replace("3f5c00", "3f5c0"),
                "m.yaml:4:11: artifact.sha256: expected 64 hex digits, got \"3f5c0000",
            ),
            (
                &GOOD.replace("version: 2.0.0", "version: two"),
                "m.yaml:5:10: version: ",
            ),
            (
                &format!("{GOOD}key_id: xyz\n"),
                "m.yaml:10:9: key_id: expected 8 to 64 hex digits, got \"xyz\"",
            ),
            (
                "[1, 2]",
                "m.yaml:1:1: invalid type: sequence, expected a manifest (a mapping with `artifact`, `version` and `target`)",
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

    /// Every bad URL is refused when the manifest is read (at submit), located at the value.
    #[test]
    fn bad_urls_are_refused_at_the_url() {
        let table: &[(&str, &str)] = &[
            (
                "http://h/a b",
                r#""http://h/a b" is not a usable url: invalid character ' '"#,
            ),
            (
                r#""http://h/a\r\nb""#,
                r#""http://h/a\r\nb" is not a usable url: invalid character '\r'"#,
            ),
            (
                r#""http://h/a\nb""#,
                r#""http://h/a\nb" is not a usable url: invalid character '\n'"#,
            ),
            (
                r#""http://h/\ta""#,
                r#""http://h/\ta" is not a usable url: invalid character '\t'"#,
            ),
            (
                "http://user:pw@h/a",
                r#""http://user:pw@h/a" is not a usable url: user info (user@host) is not supported"#,
            ),
            (
                "http://h:0/a",
                r#""http://h:0/a" is not a usable url: bad port "0""#,
            ),
            (
                "http://h:65536/a",
                r#""http://h:65536/a" is not a usable url: bad port "65536""#,
            ),
            (
                "http://h:/a",
                r#""http://h:/a" is not a usable url: bad port """#,
            ),
            ("http:///a", r#""http:///a" is not a usable url: no host"#),
            (
                "http://:8080/a",
                r#""http://:8080/a" is not a usable url: no host"#,
            ),
            (
                "ftp://h/a",
                r#""ftp://h/a" is not a usable url: unsupported scheme "ftp", only http:// and https://"#,
            ),
            (
                "h:8080/a",
                r#""h:8080/a" is not a usable url: no scheme, expected http://host:port/path or https://…"#,
            ),
        ];
        for (url, want) in table {
            let text = GOOD.replace("http://127.0.0.1:8080/v2.bin", url);
            let got = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
            assert_eq!(got, format!("m.yaml:2:8: artifact.url: {want}"), "{url}");
        }
        for good in [
            "http://h/a",
            "http://[::1]:8080/a.bin",
            "http://h:65535/x?y=1",
            "https://h/a",
            "HTTPS://127.0.0.1:8443/v2.bin",
        ] {
            let text = GOOD.replace("http://127.0.0.1:8080/v2.bin", good);
            Manifest::parse(&text, "m.yaml").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    /// `ca_file` is resolved against the manifest's folder at submit and must hold a CA
    /// certificate; a missing or empty file is an error at the field.
    #[test]
    fn ca_files_are_resolved_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["test ca".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let text = |ca: &str| {
            GOOD.replace("http:", "https:").replace(
                "  size: 100677",
                &format!("  ca_file: {ca}\n  size: 100677"),
            )
        };
        let good = text("certs/ca.pem");
        let mut m = Manifest::parse(&good, "m.yaml").unwrap();
        m.resolve_files(&good, "m.yaml", dir.path()).unwrap();
        assert_eq!(m.artifact.ca_file, Some(dir.path().join("certs/ca.pem")));
        for (ca, want) in [
            ("missing.pem", "m.yaml:3:12: artifact.ca_file: ca file "),
            ("empty.pem", "m.yaml:3:12: artifact.ca_file: ca file "),
        ] {
            let bad = text(ca);
            let mut m = Manifest::parse(&bad, "m.yaml").unwrap();
            let e = m
                .resolve_files(&bad, "m.yaml", dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{ca}: {e}");
            assert!(e.contains(ca), "{e}");
        }
        // Without ca_file nothing is read.
        let mut m = Manifest::parse(GOOD, "m.yaml").unwrap();
        m.resolve_files(GOOD, "m.yaml", Path::new("/nonexistent"))
            .unwrap();
        assert_eq!(m.artifact.ca_file, None);
    }

    /// Errors inside `target` and duplicate keys are located at their own line and column.
    #[test]
    fn target_fields_and_duplicate_keys_are_located_where_they_are() {
        let host = "  host: 127.0.0.1\n";
        let table: &[(String, &str)] = &[
            (
                GOOD.replace(host, &format!("{host}  port: 70000\n")),
                "m.yaml:9:9: target.port: invalid value: integer `70000`, expected u16",
            ),
            (
                GOOD.replace(host, &format!("{host}  port: 0\n")),
                "m.yaml:9:9: target.port: 0 is not a TCP port",
            ),
            (
                GOOD.replace(host, &format!("{host}  port: x\n")),
                "m.yaml:9:9: target.port: invalid type: string \"x\", expected u16",
            ),
            (
                GOOD.replace("0x0010", "0x10000"),
                "m.yaml:9:20: target.logical_address: 0x10000 does not fit 16 bits",
            ),
            (
                GOOD.replace("0x0010", "-1"),
                "m.yaml:9:20: target.logical_address: -1 is negative",
            ),
            (
                format!("{GOOD}  host: h2\n"),
                "m.yaml:10:3: target: duplicate field `host`",
            ),
            (
                format!("{GOOD}version: 3.0.0\n"),
                "m.yaml:10:1: duplicate field `version`",
            ),
            (
                GOOD.replace("  size: 100677\n", "  size: 100677\n  size: 5\n"),
                "m.yaml:4:3: artifact: duplicate field `size`",
            ),
            (
                GOOD.replace(host, "  host: 127.0.0.1\n  device: /dev/ttyACM0\n"),
                "m.yaml:9:11: target.device: `device` is not a doip setting (doip takes host, port, logical_address, tester_address)",
            ),
        ];
        for (text, want) in table {
            let got = Manifest::parse(text, "m.yaml").unwrap_err().to_string();
            assert_eq!(&got, want, "{text}");
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
