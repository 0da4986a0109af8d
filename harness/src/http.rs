//! The subset of HTTP/1.1 (RFC 9110/9112) the artifact server and the downloader speak:
//! request and response heads, `Range`/`Content-Range` for one byte range, and
//! `http://` URLs. Sans-IO: parsers take bytes, return `Ok(None)` while a head is
//! incomplete, and never panic on any input.
//!
//! | item | accepted |
//! |---|---|
//! | line ends | `CRLF`, or a bare `LF` (RFC 9112 §2.2) |
//! | head size | at most [`MAX_HEAD`] bytes including the blank line |
//! | header lines | `token ":" OWS value OWS`, UTF-8 values; obs-fold (a line starting with SP/HTAB) is refused |
//! | versions | `HTTP/1.0`, `HTTP/1.1` |
//! | `Range` | `bytes=a-b`, `bytes=a-`, `bytes=-n`; several ranges or a bad spec are ignored (full body) |

use std::fmt;

/// Longest head (start line, headers, blank line) either side accepts.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why bytes are no acceptable HTTP head.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("head longer than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("bad request line {0:?}")]
    BadRequestLine(String),
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
    #[error("unsupported http version {0:?}")]
    BadVersion(String),
    #[error("bad header line {0:?}")]
    BadHeader(String),
    #[error("bad content-length {0:?}")]
    BadContentLength(String),
    #[error("bad content-range {0:?}")]
    BadContentRange(String),
    #[error("unsupported transfer-encoding {0:?}")]
    TransferEncoding(String),
}

/// Header fields in the order received; names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// Every value of `name`.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Length`: absent, or one decimal value (repeats must agree).
    pub fn content_length(&self) -> Result<Option<u64>, HttpError> {
        let mut found: Option<u64> = None;
        for value in self.all("content-length") {
            for part in value.split(',') {
                let part = part.trim();
                let n =
                    digits(part).ok_or_else(|| HttpError::BadContentLength(value.to_string()))?;
                if found.is_some_and(|f| f != n) {
                    return Err(HttpError::BadContentLength(value.to_string()));
                }
                found = Some(n);
            }
        }
        Ok(found)
    }
}

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As sent, e.g. `/v2.bin?x=1`.
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
}

/// A response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub minor_version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

/// The lines of a head and the bytes it took.
type HeadLines<'a> = (Vec<&'a [u8]>, usize);

/// Split a head into its lines (without line ends); `Ok(None)` until the blank line
/// arrived. Returns the lines and the bytes consumed (the body starts there). Empty
/// lines before the start line are skipped.
fn head_lines(buf: &[u8]) -> Result<Option<HeadLines<'_>>, HttpError> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let end = start + i;
        if end >= MAX_HEAD {
            return Err(HttpError::HeadTooLarge { limit: MAX_HEAD });
        }
        let line = &buf[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some((lines, start)));
        }
        lines.push(line);
    }
    if buf.len() >= MAX_HEAD {
        return Err(HttpError::HeadTooLarge { limit: MAX_HEAD });
    }
    Ok(None)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

fn parse_headers(lines: &[&[u8]]) -> Result<Headers, HttpError> {
    let mut headers = Vec::with_capacity(lines.len());
    for &line in lines {
        let bad = || HttpError::BadHeader(lossy(line));
        let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Err(bad());
        }
        let value = std::str::from_utf8(value).map_err(|_| bad())?;
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad());
        }
        // `name` is a token: ASCII.
        headers.push((lossy(name), value.to_string()));
    }
    Ok(Headers(headers))
}

fn version(v: &[u8]) -> Result<u8, HttpError> {
    match v {
        b"HTTP/1.0" => Ok(0),
        b"HTTP/1.1" => Ok(1),
        _ => Err(HttpError::BadVersion(lossy(v))),
    }
}

/// Parse a request head from the start of `buf`: `Ok(None)` while incomplete,
/// otherwise the request and the bytes it took.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let Some((lines, used)) = head_lines(buf)? else {
        return Ok(None);
    };
    let first = lines[0];
    let bad = || HttpError::BadRequestLine(lossy(first));
    let mut parts = first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(ver), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_token(method) || target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    let minor_version = version(ver)?;
    let headers = parse_headers(&lines[1..])?;
    let request = Request {
        method: lossy(method),
        target: lossy(target),
        minor_version,
        headers,
    };
    Ok(Some((request, used)))
}

/// Parse a response head from the start of `buf`: `Ok(None)` while incomplete,
/// otherwise the head and the bytes it took (the body starts there).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let Some((lines, used)) = head_lines(buf)? else {
        return Ok(None);
    };
    let first = lines[0];
    let bad = || HttpError::BadStatusLine(lossy(first));
    let mut parts = first.splitn(3, |&b| b == b' ');
    let (Some(ver), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let minor_version = version(ver)?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    let reason = parts.next().map(lossy).unwrap_or_default();
    let headers = parse_headers(&lines[1..])?;
    let head = ResponseHead {
        minor_version,
        status,
        reason,
        headers,
    };
    Ok(Some((head, used)))
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

/// A `Content-Range` value: `bytes a-b/len`, `bytes a-b/*` or `bytes */len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// `a..=b`; `None` for `*` (the unsatisfied form of a `416`).
    pub range: Option<(u64, u64)>,
    /// The whole resource's length, when given.
    pub complete_length: Option<u64>,
}

pub fn parse_content_range(value: &str) -> Result<ContentRange, HttpError> {
    let bad = || HttpError::BadContentRange(value.to_string());
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

/// The standard reason phrase of the statuses this crate sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Why a string is no `http://` URL this client can fetch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("https is not supported, only http://host:port/path")]
    Https,
    #[error("unsupported scheme {0:?}, only http://host:port/path")]
    Scheme(String),
    #[error("no scheme, expected http://host:port/path")]
    NoScheme,
    #[error("no host")]
    NoHost,
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("user info (user@host) is not supported")]
    UserInfo,
    #[error("invalid character {0:?}")]
    BadChar(char),
}

/// An `http://host[:port]/path` URL; the fragment is dropped, the query kept in `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Origin-form request target, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, UrlError> {
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(UrlError::BadChar(c));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(UrlError::NoScheme);
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Https);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(UrlError::Scheme(scheme.to_string()));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::BadChar('['))?;
            if !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(UrlError::BadChar('['));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or(UrlError::BadChar(']'))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if let Some(c) = host
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || "-._:".contains(c)))
        {
            return Err(UrlError::BadChar(c));
        }
        let port = match port {
            None => 80,
            Some(p) => match digits(p) {
                Some(n @ 1..=65535) => n as u16,
                _ => return Err(UrlError::BadPort(p.to_string())),
            },
        };
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(Url {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host:port`, IPv6 in brackets: the `Host` header and the connect address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let buf = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\ncontent-range: bytes 5-14/15\r\n\r\nBODY";
        let (head, used) = parse_response_head(buf).unwrap().unwrap();
        assert_eq!(&buf[used..], b"BODY");
        assert_eq!(head.status, 206);
        assert_eq!(head.reason, "Partial Content");
        assert_eq!(head.headers.content_length(), Ok(Some(10)));
        assert_eq!(head.headers.get("Content-Range"), Some("bytes 5-14/15"));
        // Python's http.server: HTTP/1.0, LF-only also accepted.
        let (head, _) = parse_response_head(b"HTTP/1.0 200 OK\nServer: x\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.minor_version, head.status), (0, 200));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nA: b\r\n"),
            Ok(None)
        );
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 999 Hm\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(parse_response_head(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(
            parse_response_head(&long),
            Err(HttpError::HeadTooLarge { limit: MAX_HEAD })
        );
    }

    #[test]
    fn content_lengths() {
        let h = |v: &[&str]| {
            Headers(
                v.iter()
                    .map(|v| ("Content-Length".to_string(), v.to_string()))
                    .collect(),
            )
            .content_length()
        };
        assert_eq!(h(&[]), Ok(None));
        assert_eq!(h(&["42"]), Ok(Some(42)));
        assert_eq!(h(&["42", "42, 42"]), Ok(Some(42)));
        assert!(h(&["42", "43"]).is_err());
        assert!(h(&["-1"]).is_err());
        assert!(h(&["+1"]).is_err());
        assert!(h(&["99999999999999999999999"]).is_err());
    }

    #[test]
    fn requests() {
        let buf = b"\r\nGET /a/b.bin?x HTTP/1.1\r\nHost: h\r\nRange: bytes=5-\r\n\r\n";
        let (r, used) = parse_request(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("GET", "/a/b.bin?x")
        );
        assert_eq!(r.headers.get("range"), Some("bytes=5-"));
        for bad in [
            &b"GET /a HTTP/1.1 x\r\n\r\n"[..],
            b"GET  /a HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/3\r\n\r\n",
            b"G(T /a HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

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
        let u = Url::parse("http://127.0.0.1:8080/a/v2.bin?x=1#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/a/v2.bin?x=1")
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/a/v2.bin?x=1");
        let u = Url::parse("HTTP://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.authority()), ("::1", "[::1]:9".into()));
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
        assert_eq!(Url::parse("http://h").unwrap().port, 80);
        let table = [
            ("https://h/a", UrlError::Https),
            ("ftp://h/a", UrlError::Scheme("ftp".into())),
            ("h:80/a", UrlError::NoScheme),
            ("http:///a", UrlError::NoHost),
            ("http://h:0/a", UrlError::BadPort("0".into())),
            ("http://h:99999/a", UrlError::BadPort("99999".into())),
            ("http://h:/a", UrlError::BadPort("".into())),
            ("http://u@h/a", UrlError::UserInfo),
            ("http://h/a b", UrlError::BadChar(' ')),
            ("http://h$/a", UrlError::BadChar('$')),
        ];
        for (url, want) in table {
            assert_eq!(Url::parse(url), Err(want), "{url}");
        }
    }
}
