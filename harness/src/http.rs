//! The little HTTP glue hyper and reqwest leave to us: which URLs an artifact may have, how a
//! `Range` header selects bytes of a file (the artifact server), and what a `Content-Range`
//! says (the downloader). Never panics on any input.
//!
//! | item | accepted |
//! |---|---|
//! | URLs | `http://` and `https://` (parsed by the `url` crate, WHATWG), only visible ASCII (no space, tab, CR, LF: the `url` crate would drop or encode them silently), a host, no user info, a port in 1–65535 |
//! | `Range` | `bytes=a-b`, `bytes=a-`, `bytes=-n`; several ranges or a bad spec are ignored (full body) |
//! | `Content-Range` | `bytes a-b/len`, `bytes a-b/*`, `bytes */len` |

pub use reqwest::Url;

/// Why a string is no URL an artifact can be downloaded from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("unsupported scheme {0:?}, only http:// and https://")]
    Scheme(String),
    #[error("no scheme, expected http://host:port/path or https://…")]
    NoScheme,
    #[error("no host")]
    NoHost,
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("user info (user@host) is not supported")]
    UserInfo,
    #[error("invalid character {0:?}")]
    BadChar(char),
    #[error("{0}")]
    Invalid(String),
}

/// Check `s` as an artifact URL and parse it.
pub fn parse_url(s: &str) -> Result<Url, UrlError> {
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(UrlError::BadChar(c));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(UrlError::NoScheme);
    };
    if !["http", "https"]
        .iter()
        .any(|k| scheme.eq_ignore_ascii_case(k))
    {
        return Err(UrlError::Scheme(scheme.to_string()));
    }
    // WHATWG skips extra slashes (`http:///a` is host `a`): here no authority is no host.
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let port_text = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') && !host.is_empty() => Some(port),
        _ => None,
    };
    if authority.is_empty() || authority.starts_with(':') {
        return Err(UrlError::NoHost);
    }
    // WHATWG takes `h:` as the default port; here it is a port left out by mistake.
    if port_text == Some("") {
        return Err(UrlError::BadPort(String::new()));
    }
    let url = Url::parse(s).map_err(|e| match e {
        url::ParseError::EmptyHost => UrlError::NoHost,
        url::ParseError::InvalidPort => UrlError::BadPort(port_text.unwrap_or_default().into()),
        e => UrlError::Invalid(e.to_string()),
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if url.port() == Some(0) {
        return Err(UrlError::BadPort("0".into()));
    }
    Ok(url)
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a `Range` header asks of a resource of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable range (absent, another unit, several ranges, a bad spec): send it all.
    Full,
    /// Bytes `start..=end`, both within the resource.
    Partial { start: u64, end: u64 },
    /// A valid range that selects no byte: `416`.
    Unsatisfiable,
}

/// Resolve a `Range` header value against a resource of `len` bytes. Only one range is
/// served; several (which would need `multipart/byteranges`) are ignored, as RFC 9110
/// §14.2 allows.
pub fn resolve_range(value: &str, len: u64) -> RangeOutcome {
    let value = value.trim();
    let Some((unit, specs)) = value.split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let mut specs = specs.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeOutcome::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeOutcome::Full;
    };
    match (first, last) {
        ("", suffix) => match digits(suffix) {
            None => RangeOutcome::Full,
            Some(0) => RangeOutcome::Unsatisfiable,
            Some(_) if len == 0 => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (first, last) => {
            let Some(start) = digits(first) else {
                return RangeOutcome::Full;
            };
            let end = if last.is_empty() {
                None
            } else {
                match digits(last) {
                    Some(e) if e >= start => Some(e),
                    _ => return RangeOutcome::Full,
                }
            };
            if start >= len {
                return RangeOutcome::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeOutcome::Partial { start, end }
        }
    }
}

/// A `Content-Range` value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad content-range {0:?}")]
pub struct BadContentRange(pub String);

/// A `Content-Range` value: `bytes a-b/len`, `bytes a-b/*` or `bytes */len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// `a..=b`; `None` for `*` (the unsatisfied form of a `416`).
    pub range: Option<(u64, u64)>,
    /// The whole resource's length, when given.
    pub complete_length: Option<u64>,
}

pub fn parse_content_range(value: &str) -> Result<ContentRange, BadContentRange> {
    let bad = || BadContentRange(value.to_string());
    let rest = value.trim();
    let (unit, rest) = rest.split_once(' ').ok_or_else(bad)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(bad());
    }
    let (range, complete) = rest.trim().split_once('/').ok_or_else(bad)?;
    let complete_length = match complete {
        "*" => None,
        n => Some(digits(n).ok_or_else(bad)?),
    };
    let range = match range {
        "*" if complete_length.is_some() => None,
        r => {
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (a, b) = (digits(a).ok_or_else(bad)?, digits(b).ok_or_else(bad)?);
            if a > b || complete_length.is_some_and(|len| b >= len) {
                return Err(bad());
            }
            Some((a, b))
        }
    };
    Ok(ContentRange {
        range,
        complete_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        let table = [
            ("bytes=0-9", 100, Partial { start: 0, end: 9 }),
            ("bytes=90-", 100, Partial { start: 90, end: 99 }),
            ("bytes=90-1000", 100, Partial { start: 90, end: 99 }),
            ("bytes=-10", 100, Partial { start: 90, end: 99 }),
            ("bytes=-1000", 100, Partial { start: 0, end: 99 }),
            ("BYTES = 1-2", 100, Partial { start: 1, end: 2 }),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=5-1", 100, Full),
            ("bytes=0-1,5-6", 100, Full),
            ("items=0-1", 100, Full),
            ("bytes=x-", 100, Full),
            ("bytes=-", 100, Full),
            ("bytes", 100, Full),
        ];
        for (value, len, want) in table {
            assert_eq!(resolve_range(value, len), want, "{value} of {len}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 5-9/10"),
            Ok(ContentRange {
                range: Some((5, 9)),
                complete_length: Some(10)
            })
        );
        assert_eq!(
            parse_content_range("bytes */10"),
            Ok(ContentRange {
                range: None,
                complete_length: Some(10)
            })
        );
        for bad in [
            "bytes 5-10/10",
            "bytes 9-5/10",
            "bytes */*",
            "items 1-2/3",
            "5-9/10",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/a/v2.bin?x=1#frag").unwrap();
        assert_eq!(
            (u.host_str(), u.port(), u.path(), u.query()),
            (Some("127.0.0.1"), Some(8080), "/a/v2.bin", Some("x=1"))
        );
        let u = parse_url("HTTPS://[::1]:9/").unwrap();
        assert_eq!(
            (u.scheme(), u.host_str(), u.port()),
            ("https", Some("[::1]"), Some(9))
        );
        assert_eq!(parse_url("http://h").unwrap().path(), "/");
        assert_eq!(
            parse_url("https://h/a").unwrap().port_or_known_default(),
            Some(443)
        );
        let table = [
            ("ftp://h/a", UrlError::Scheme("ftp".into())),
            ("h:80/a", UrlError::NoScheme),
            ("http:///a", UrlError::NoHost),
            ("http://:80/a", UrlError::NoHost),
            ("http://h:0/a", UrlError::BadPort("0".into())),
            ("http://h:99999/a", UrlError::BadPort("99999".into())),
            ("http://h:x/a", UrlError::BadPort("x".into())),
            ("http://h:/a", UrlError::BadPort("".into())),
            ("http://u@h/a", UrlError::UserInfo),
            ("https://u:p@h/a", UrlError::UserInfo),
            ("http://h/a b", UrlError::BadChar(' ')),
            ("http://h/a\tb", UrlError::BadChar('\t')),
            ("http://h/\u{e9}", UrlError::BadChar('\u{e9}')),
            (
                "http://h<>/a",
                UrlError::Invalid("invalid international domain name".into()),
            ),
        ];
        for (url, want) in table {
            assert_eq!(parse_url(url), Err(want), "{url}");
        }
    }
}
