//! What a download can fail with, and how reqwest's and rustls's errors map onto it.

use std::error::Error as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::http::UrlError;

/// Why a TLS handshake failed, as far as the client can tell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// No trusted root signed the server's chain (`UnknownIssuer`): a self-signed or private
    /// CA that is not in the roots.
    #[error(
        "unknown certificate authority: no trusted ca signed the server's certificate (give it with ca_file or --ca-file)"
    )]
    UnknownCa,
    /// A certificate the roots vouch for that is still not acceptable (expired, for another
    /// name, revoked, …).
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// Anything else rustls refused (a plain-HTTP server, no common protocol version, an alert).
    #[error("{0}")]
    Handshake(String),
}

impl TlsFailure {
    pub(super) fn of(e: &rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                TlsFailure::UnknownCa
            }
            rustls::Error::InvalidCertificate(c) => TlsFailure::BadCertificate(format!("{c:?}")),
            other => TlsFailure::Handshake(other.to_string()),
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("bad url {url:?}: {source}")]
    BadUrl { url: String, source: UrlError },
    #[error("ca file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("tls handshake with {host} failed: {failure}")]
    Tls { host: String, failure: TlsFailure },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connecting to {addr}: no connection within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("{op}: {reason}")]
    Io { op: &'static str, reason: String },
    #[error("no byte from the server for {idle:?} at byte {at}")]
    Stalled { idle: Duration, at: u64 },
    #[error("the connection closed before the response head")]
    NoResponse,
    #[error("the connection closed at byte {at} of {size}")]
    Truncated { at: u64, size: u64 },
    #[error("malformed response: {0}")]
    Malformed(String),
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
    /// a bad URL or CA file, a refused certificate, a 4xx, a server whose artifact has another
    /// size, a local file error.
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::HashMismatch { .. } => true,
            DownloadError::GaveUp { last, .. } => last.is_retryable(),
            e => e.is_transient(),
        }
    }

    /// Retried within one call, resuming from the bytes on disk.
    pub(super) fn is_transient(&self) -> bool {
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

/// An error and its sources, `a: b: c`, each message once.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The first error of type `E` in `e`'s chain. An `io::Error` hides the error it wraps from
/// `source()` (it returns the wrapped error's source), so the walk goes through `get_ref`.
pub(super) fn find<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cur = match err.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// A failed request (no response head), named.
pub(super) fn request_error(
    url: &Url,
    e: &reqwest::Error,
    connect_timeout: Duration,
) -> DownloadError {
    let addr = authority(url);
    if let Some(tls) = find::<rustls::Error>(e) {
        return DownloadError::Tls {
            host: addr,
            failure: TlsFailure::of(tls),
        };
    }
    if e.is_connect() {
        if e.is_timeout() {
            return DownloadError::ConnectTimeout {
                addr,
                timeout: connect_timeout,
            };
        }
        let reason = e.source().map_or_else(|| e.to_string(), chain);
        return DownloadError::Connect { addr, reason };
    }
    if find::<hyper::Error>(e).is_some_and(|h| h.is_incomplete_message()) {
        return DownloadError::NoResponse;
    }
    DownloadError::Io {
        op: "request",
        reason: chain(e),
    }
}

/// A body that failed at `at`: a short body is [`DownloadError::Truncated`].
pub(super) fn body_error(e: &reqwest::Error, at: u64, size: u64) -> DownloadError {
    // hyper: "end of file before message length reached" (an io UnexpectedEof), or a
    // connection closed before the message completed.
    let short = find::<hyper::Error>(e).is_some_and(|h| h.is_incomplete_message())
        || find::<io::Error>(e).is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof);
    if short {
        DownloadError::Truncated { at, size }
    } else {
        DownloadError::Io {
            op: "reading the body",
            reason: chain(e),
        }
    }
}

/// `host:port` of a URL, IPv6 in brackets.
pub(super) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or_default();
    format!("{host}:{port}")
}
