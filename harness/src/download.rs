//! Resumable download of one artifact over plain HTTP/1.1, with streaming SHA-256, bounded
//! retries and typed progress events.
//!
//! [`download`] fetches `url` into `dest` and returns only when `dest` holds exactly
//! `expected_size` bytes whose SHA-256 is `expected_sha256`; a file that fails the check is
//! deleted, never handed on.
//!
//! ## One call
//!
//! | step | what happens |
//! |---|---|
//! | 1 | parse the URL (`http://host[:port]/path` only; anything else is [`DownloadError::BadUrl`]) |
//! | 2 | open `dest` (created if missing) and re-hash the bytes already there: they are the resume offset |
//! | 3 | longer than the artifact: truncate to 0 ([`DownloadEvent::RestartedFromZero`]); exactly as long: verify, no request |
//! | 4 | `GET` with `Range: bytes=<offset>-` when `offset > 0`; append the body, hashing as it is written |
//! | 5 | on a transient failure (table below) wait with exponential backoff and seeded jitter, go to 4 |
//! | 6 | check size and SHA-256; a mismatch deletes `dest` ([`DownloadError::HashMismatch`], [`DownloadError::SizeMismatch`]) |
//!
//! ## What each answer means
//!
//! | the server | the client |
//! |---|---|
//! | `206` with `Content-Range: bytes <offset>-<last>/<size>` | appends |
//! | `206` starting elsewhere | [`DownloadError::UnexpectedRange`], no retry |
//! | `200` to a `Range` request (Range ignored) | truncates `dest`, takes the body from byte 0, [`DownloadEvent::RestartedFromZero`] |
//! | `416` | truncates `dest` (it does not fit the artifact), retries from 0 |
//! | `408`, `429`, `5xx` | retry |
//! | any other status (`3xx` redirects are not followed, `404`, …) | [`DownloadError::Status`] at once, no retry |
//! | a refused or timed-out connection, a body that ends early, no byte for `idle_timeout_ms` | retry, resuming from the bytes on disk |
//! | a size other than `expected_size` (`Content-Length`, `Content-Range`, or the body) | [`DownloadError::SizeMismatch`], `dest` deleted |
//!
//! Retries are bounded by [`DownloadConfig::retries`] over the whole call (progress does not
//! refill them). The delay before retry `n` (1-based) is `d = min(max, base·2^(n-1))`, then
//! `d/2 + uniform(0..=d/2)` drawn from `ChaCha8Rng::seed_from_u64(jitter_seed)`: the same
//! seed gives the same delays.
//!
//! ## What is on disk when the process dies
//!
//! `dest` is opened in append mode and only ever receives bytes in the order they arrived
//! from the server, after any truncation; received bytes are written in batches of at most
//! 64 KiB and `fdatasync`ed every [`DownloadConfig::sync_every_bytes`] and at the end.
//! A `kill -9` therefore leaves a correct prefix of the artifact (the kernel keeps what
//! `write` accepted), and the next call resumes from its length. A crash of the *machine* may
//! leave an unsynced tail with garbage; no side file tracks the synced length, because the
//! next call re-hashes whatever is there and the final SHA-256 check deletes a bad file, so
//! the worst case is one download from zero, never a bad artifact. `If-Range` is not sent:
//! the expected SHA-256 is what detects an artifact that changed between two requests.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use self::http::{HttpError, ResponseHead, Url, UrlError};

pub mod http {
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
                    let n = digits(part)
                        .ok_or_else(|| HttpError::BadContentLength(value.to_string()))?;
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
}

/// Bytes received in one go before they are written to the file.
const WRITE_BATCH: usize = 64 * 1024;

/// Retries, backoff and timeouts of [`download`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadConfig {
    /// Retries after the first attempt, over the whole call.
    pub retries: u32,
    /// Backoff before the first retry, before jitter.
    pub backoff_base_ms: u64,
    /// Cap of the exponential backoff, before jitter.
    pub backoff_max_ms: u64,
    /// Seed of the jitter drawn for each backoff.
    pub jitter_seed: u64,
    /// No byte from the server for this long (head or body): the attempt failed (stall).
    pub idle_timeout_ms: u64,
    /// Time allowed to open the TCP connection.
    pub connect_timeout_ms: u64,
    /// `fdatasync` the partial file each time this many bytes were appended.
    pub sync_every_bytes: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            retries: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            jitter_seed: 0,
            idle_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            sync_every_bytes: 256 * 1024,
        }
    }
}

impl DownloadConfig {
    fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Delay before retry `n` (1-based): exponential, capped, half of it jittered.
    fn backoff_ms(&self, n: u32, rng: &mut ChaCha8Rng) -> u64 {
        let exp = self
            .backoff_base_ms
            .saturating_mul(1u64 << n.saturating_sub(1).min(32))
            .min(self.backoff_max_ms);
        exp / 2 + rng.gen_range(0..=exp - exp / 2)
    }
}

/// What a download is doing, for progress output and job state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadEvent {
    /// A request goes out for the bytes from `offset` on (`resumed`: `offset > 0`).
    Started { offset: u64, resumed: bool },
    /// `bytes` of `total` are in the file.
    Progress { bytes: u64, total: u64 },
    /// Attempt `attempt` (2 = the first retry) starts in `after_ms` because of `reason`.
    Retrying {
        attempt: u32,
        after_ms: u64,
        reason: String,
    },
    /// The file was truncated to zero bytes and the download starts over.
    RestartedFromZero { reason: String },
    /// The file is complete and verified.
    Done { bytes: u64, sha256: [u8; 32] },
}

impl fmt::Display for DownloadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadEvent::Started { offset, resumed } if *resumed => {
                write!(f, "resuming at byte {offset}")
            }
            DownloadEvent::Started { .. } => write!(f, "requesting the whole artifact"),
            DownloadEvent::Progress { bytes, total } => write!(f, "{bytes}/{total} bytes"),
            DownloadEvent::Retrying {
                attempt,
                after_ms,
                reason,
            } => write!(f, "{reason}; attempt {attempt} in {after_ms} ms"),
            DownloadEvent::RestartedFromZero { reason } => {
                write!(f, "restarting from byte 0: {reason}")
            }
            DownloadEvent::Done { bytes, sha256 } => {
                write!(f, "done: {bytes} bytes, sha-256 {}", hex(sha256))
            }
        }
    }
}

/// What a successful [`download`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReport {
    /// Size of the verified file.
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// Bytes already on disk when the call started (kept unless `restarted_from_zero`).
    pub resumed_from: u64,
    /// The file was truncated to zero on the way (server ignored `Range`, `416`, or the file
    /// on disk was longer than the artifact).
    pub restarted_from_zero: bool,
    /// The file on disk was complete already: verified, no request made.
    pub already_complete: bool,
    /// HTTP requests made.
    pub requests: u32,
    /// Body bytes read from the network over all requests.
    pub bytes_received: u64,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("bad url {url:?}: {source}")]
    BadUrl { url: String, source: UrlError },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connecting to {addr}: no connection within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("socket {op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("no byte from the server for {idle:?} at byte {at}")]
    Stalled { idle: Duration, at: u64 },
    #[error("the connection closed before the response head")]
    NoResponse,
    #[error("the connection closed at byte {at} of {size}")]
    Truncated { at: u64, size: u64 },
    #[error("malformed response: {0}")]
    Malformed(#[from] HttpError),
    #[error("{url}: server answered {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("{url}: server answered 416 to bytes={offset}-; the partial file was discarded")]
    RangeNotSatisfiable { url: String, offset: u64 },
    #[error("asked for bytes {offset}- and got content-range {content_range:?}")]
    UnexpectedRange { offset: u64, content_range: String },
    #[error(
        "size mismatch: expected {expected} bytes, the server has {actual}; the file was deleted"
    )]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("sha-256 mismatch: expected {expected}, got {actual}; the file was deleted")]
    HashMismatch { expected: String, actual: String },
    #[error("{op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<DownloadError>,
    },
}

impl DownloadError {
    /// Worth another [`download`] call later: the network or the server may recover, or
    /// (hash mismatch) the file was deleted and a fresh download may get clean bytes. Not:
    /// a bad URL, a 4xx, a server whose artifact has another size, a local file error.
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::HashMismatch { .. } => true,
            DownloadError::GaveUp { last, .. } => last.is_retryable(),
            e => e.is_transient(),
        }
    }

    /// Retried within one call, resuming from the bytes on disk.
    fn is_transient(&self) -> bool {
        match self {
            DownloadError::Connect { .. }
            | DownloadError::ConnectTimeout { .. }
            | DownloadError::Io { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::NoResponse
            | DownloadError::Truncated { .. }
            | DownloadError::RangeNotSatisfiable { .. } => true,
            DownloadError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..=599).contains(status)
            }
            _ => false,
        }
    }
}

/// Download `url` into `dest`, resuming from the bytes already there; see the module doc.
/// `progress` sees every [`DownloadEvent`] as it happens.
pub async fn download(
    url: &str,
    dest: &Path,
    expected_size: u64,
    expected_sha256: &[u8; 32],
    config: &DownloadConfig,
    mut progress: impl FnMut(&DownloadEvent),
) -> Result<DownloadReport, DownloadError> {
    let parsed = Url::parse(url).map_err(|source| DownloadError::BadUrl {
        url: url.to_string(),
        source,
    })?;
    let mut part = PartFile::open(dest, config.sync_every_bytes).await?;
    let mut report = DownloadReport {
        bytes: 0,
        sha256: [0; 32],
        resumed_from: part.len,
        restarted_from_zero: false,
        already_complete: false,
        requests: 0,
        bytes_received: 0,
    };
    if part.len > expected_size {
        let reason = format!(
            "the file on disk has {} bytes, the artifact {expected_size}",
            part.len
        );
        part.truncate().await?;
        report.restarted_from_zero = true;
        progress(&DownloadEvent::RestartedFromZero { reason });
    }
    if part.len == expected_size {
        report.already_complete = true;
        return finish(part, expected_sha256, report, &mut progress).await;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.jitter_seed);
    let mut attempt = 1;
    loop {
        let result = Fetch {
            url: &parsed,
            part: &mut part,
            size: expected_size,
            config,
            report: &mut report,
            progress: &mut progress,
        }
        .run()
        .await;
        match result {
            Ok(()) => return finish(part, expected_sha256, report, &mut progress).await,
            Err(e) if e.is_transient() && attempt <= config.retries => {
                let after_ms = config.backoff_ms(attempt, &mut rng);
                attempt += 1;
                tracing::debug!("download {url}: {e}; attempt {attempt} in {after_ms} ms");
                progress(&DownloadEvent::Retrying {
                    attempt,
                    after_ms,
                    reason: e.to_string(),
                });
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
            }
            Err(e) if e.is_transient() && attempt > 1 => {
                return Err(DownloadError::GaveUp {
                    attempts: attempt,
                    last: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sync, check size and hash, report; a bad file is deleted.
async fn finish(
    mut part: PartFile,
    expected_sha256: &[u8; 32],
    mut report: DownloadReport,
    progress: &mut impl FnMut(&DownloadEvent),
) -> Result<DownloadReport, DownloadError> {
    part.sync().await?;
    let sha256: [u8; 32] = part.hasher.clone().finalize().into();
    if sha256 != *expected_sha256 {
        part.remove().await?;
        return Err(DownloadError::HashMismatch {
            expected: hex(expected_sha256),
            actual: hex(&sha256),
        });
    }
    report.bytes = part.len;
    report.sha256 = sha256;
    progress(&DownloadEvent::Done {
        bytes: part.len,
        sha256,
    });
    Ok(report)
}

/// One request: from the bytes on disk to the end of the artifact (`Ok`) or a failure.
struct Fetch<'a, P> {
    url: &'a Url,
    part: &'a mut PartFile,
    size: u64,
    config: &'a DownloadConfig,
    report: &'a mut DownloadReport,
    progress: &'a mut P,
}

impl<P: FnMut(&DownloadEvent)> Fetch<'_, P> {
    async fn run(self) -> Result<(), DownloadError> {
        let Fetch {
            url,
            part,
            size,
            config,
            report,
            progress,
        } = self;
        let offset = part.len;
        progress(&DownloadEvent::Started {
            offset,
            resumed: offset > 0,
        });
        report.requests += 1;
        let idle = config.idle();
        let mut stream = connect(url, Duration::from_millis(config.connect_timeout_ms)).await?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hil/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n",
            url.path,
            url.authority(),
            env!("CARGO_PKG_VERSION")
        );
        if offset > 0 {
            request.push_str(&format!("Range: bytes={offset}-\r\n"));
        }
        request.push_str("\r\n");
        match tokio::time::timeout(idle, stream.write_all(request.as_bytes())).await {
            Err(_) => return Err(DownloadError::Stalled { idle, at: offset }),
            Ok(Err(source)) => {
                return Err(DownloadError::Io {
                    op: "write",
                    source,
                });
            }
            Ok(Ok(())) => {}
        }

        let mut buf = vec![0u8; WRITE_BATCH];
        let mut head_buf = Vec::new();
        let (head, used) = loop {
            if let Some(h) = http::parse_response_head(&head_buf)? {
                break h;
            }
            match read(&mut stream, &mut buf, idle, offset).await? {
                0 => return Err(DownloadError::NoResponse),
                n => head_buf.extend_from_slice(&buf[..n]),
            }
        };
        let body_start = head_buf.split_off(used);
        let body_len = Self::check_head(url, part, size, report, progress, offset, &head).await?;

        // The body, appended in batches; what arrived is on disk before any error returns.
        let end = body_len.map(|n| part.len + n);
        let mut batch = body_start;
        if let Some(end) = end {
            batch.truncate((end - part.len).try_into().unwrap_or(usize::MAX));
        }
        report.bytes_received += batch.len() as u64;
        let outcome = loop {
            let have = part.len + batch.len() as u64;
            if have > size {
                // Only without Content-Length: more bytes than the artifact has.
                part.remove().await?;
                return Err(DownloadError::SizeMismatch {
                    expected: size,
                    actual: have,
                });
            }
            if end == Some(have) {
                break Ok(());
            }
            if batch.len() >= WRITE_BATCH {
                part.append(std::mem::take(&mut batch)).await?;
                progress(&DownloadEvent::Progress {
                    bytes: part.len,
                    total: size,
                });
            }
            let room = end.map_or(buf.len() as u64, |e| (e - have).min(buf.len() as u64));
            let want = room as usize;
            match read(&mut stream, &mut buf[..want], idle, have).await {
                Ok(0) if end.is_none() => break Ok(()),
                Ok(0) => break Err(DownloadError::Truncated { at: have, size }),
                Ok(n) => {
                    report.bytes_received += n as u64;
                    batch.extend_from_slice(&buf[..n]);
                }
                Err(e) => break Err(e),
            }
        };
        if !batch.is_empty() {
            part.append(batch).await?;
            progress(&DownloadEvent::Progress {
                bytes: part.len,
                total: size,
            });
        }
        part.sync().await?;
        outcome?;
        if part.len < size {
            // A server may send less than the open-ended range asked for (or an EOF-delimited
            // body ended early): resume from here.
            return Err(DownloadError::Truncated { at: part.len, size });
        }
        Ok(())
    }

    /// Act on the status: the body's length (`None`: until the connection closes), after
    /// truncating the file if the body starts at 0 again.
    async fn check_head(
        url: &Url,
        part: &mut PartFile,
        size: u64,
        report: &mut DownloadReport,
        progress: &mut P,
        offset: u64,
        head: &ResponseHead,
    ) -> Result<Option<u64>, DownloadError> {
        if let Some(te) = head.headers.get("transfer-encoding") {
            if !te.eq_ignore_ascii_case("identity") {
                return Err(HttpError::TransferEncoding(te.to_string()).into());
            }
        }
        let content_length = head.headers.content_length()?;
        match head.status {
            206 => {
                let value = head.headers.get("content-range").unwrap_or_default();
                let cr = http::parse_content_range(value)?;
                if let Some(total) = cr.complete_length.filter(|&t| t != size) {
                    part.remove().await?;
                    return Err(DownloadError::SizeMismatch {
                        expected: size,
                        actual: total,
                    });
                }
                match cr.range {
                    Some((start, last)) if start == offset => {
                        let n = last - start + 1;
                        if content_length.is_some_and(|cl| cl != n) {
                            return Err(HttpError::BadContentLength(format!(
                                "{content_length:?} for content-range {value}"
                            ))
                            .into());
                        }
                        Ok(Some(n))
                    }
                    _ => Err(DownloadError::UnexpectedRange {
                        offset,
                        content_range: value.to_string(),
                    }),
                }
            }
            200 => {
                if let Some(cl) = content_length.filter(|&cl| cl != size) {
                    part.remove().await?;
                    return Err(DownloadError::SizeMismatch {
                        expected: size,
                        actual: cl,
                    });
                }
                if offset > 0 {
                    part.truncate().await?;
                    report.restarted_from_zero = true;
                    progress(&DownloadEvent::RestartedFromZero {
                        reason: format!(
                            "the server ignored Range: bytes={offset}- (200 instead of 206)"
                        ),
                    });
                }
                Ok(content_length)
            }
            416 if offset > 0 => {
                part.truncate().await?;
                report.restarted_from_zero = true;
                progress(&DownloadEvent::RestartedFromZero {
                    reason: format!("the server answered 416 to Range: bytes={offset}-"),
                });
                Err(DownloadError::RangeNotSatisfiable {
                    url: url.to_string(),
                    offset,
                })
            }
            status => Err(DownloadError::Status {
                url: url.to_string(),
                status,
                reason: if head.reason.is_empty() {
                    http::reason(status).to_string()
                } else {
                    head.reason.clone()
                },
            }),
        }
    }
}

async fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, DownloadError> {
    let addr = url.authority();
    let stream = tokio::time::timeout(timeout, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| DownloadError::ConnectTimeout {
            addr: addr.clone(),
            timeout,
        })?
        .map_err(|source| DownloadError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| DownloadError::Io {
            op: "set_nodelay",
            source,
        })?;
    Ok(stream)
}

/// One read, bounded by the idle timeout; `at` names the artifact offset in a stall error.
async fn read(
    stream: &mut TcpStream,
    buf: &mut [u8],
    idle: Duration,
    at: u64,
) -> Result<usize, DownloadError> {
    match tokio::time::timeout(idle, stream.read(buf)).await {
        Err(_) => Err(DownloadError::Stalled { idle, at }),
        Ok(Err(source)) => Err(DownloadError::Io { op: "read", source }),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Run blocking file I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// The partial file: length and running hash of exactly the bytes in it.
struct PartFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Length at the last `fdatasync`.
    synced: u64,
    hasher: Sha256,
    sync_every: u64,
}

impl PartFile {
    /// Open (create) `path` for appending and hash what is there.
    async fn open(path: &Path, sync_every: u64) -> Result<PartFile, DownloadError> {
        let p = path.to_path_buf();
        let (file, len, hasher) = blocking(move || {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&p)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; WRITE_BATCH];
            let mut len = 0u64;
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        len += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((file, len, hasher))
        })
        .await
        .map_err(|source| DownloadError::File {
            op: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PartFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
            synced: len,
            hasher,
            sync_every: sync_every.max(1),
        })
    }

    fn error(&self, op: &'static str) -> impl FnOnce(io::Error) -> DownloadError + use<> {
        let path = self.path.clone();
        move |source| DownloadError::File { op, path, source }
    }

    async fn append(&mut self, data: Vec<u8>) -> Result<(), DownloadError> {
        let file = Arc::clone(&self.file);
        self.hasher.update(&data);
        let n = data.len() as u64;
        blocking(move || (&*file).write_all(&data))
            .await
            .map_err(self.error("writing"))?;
        self.len += n;
        if self.len - self.synced >= self.sync_every {
            self.sync().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), DownloadError> {
        if self.synced != self.len {
            let file = Arc::clone(&self.file);
            blocking(move || file.sync_data())
                .await
                .map_err(self.error("syncing"))?;
            self.synced = self.len;
        }
        Ok(())
    }

    async fn truncate(&mut self) -> Result<(), DownloadError> {
        let file = Arc::clone(&self.file);
        blocking(move || {
            file.set_len(0)?;
            file.sync_data()
        })
        .await
        .map_err(self.error("truncating"))?;
        self.len = 0;
        self.synced = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    /// Delete the file (a missing file is fine). The handle stays open until `self` is
    /// dropped, which POSIX allows; nothing is written to it afterwards.
    async fn remove(&mut self) -> Result<(), DownloadError> {
        let path = self.path.clone();
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(self.error("deleting"))?;
        self.len = 0;
        self.synced = 0;
        self.hasher = Sha256::new();
        Ok(())
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_capped_and_seeded() {
        let config = DownloadConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..DownloadConfig::default()
        };
        let delays = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=8)
                .map(|n| config.backoff_ms(n, &mut rng))
                .collect::<Vec<_>>()
        };
        let d = delays(7);
        assert_eq!(d, delays(7));
        assert_ne!(d, delays(8));
        for (i, (&ms, cap)) in d
            .iter()
            .zip([100u64, 200, 400, 800, 1000, 1000, 1000, 1000])
            .enumerate()
        {
            assert!((cap / 2..=cap).contains(&ms), "retry {}: {ms} ms", i + 1);
        }
        // No overflow for absurd attempt numbers.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(config.backoff_ms(u32::MAX, &mut rng) <= 1_000);
    }

    #[test]
    fn retryable_errors() {
        let status = |status| DownloadError::Status {
            url: "u".into(),
            status,
            reason: "Service Unavailable".into(),
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(301).is_retryable());
        assert!(
            DownloadError::HashMismatch {
                expected: String::new(),
                actual: String::new()
            }
            .is_retryable()
        );
        assert!(
            !DownloadError::SizeMismatch {
                expected: 1,
                actual: 2
            }
            .is_retryable()
        );
        let gave_up = DownloadError::GaveUp {
            attempts: 3,
            last: Box::new(status(503)),
        };
        assert!(gave_up.is_retryable());
        assert_eq!(
            gave_up.to_string(),
            "gave up after 3 attempts: u: server answered 503 Service Unavailable"
        );
    }
}
