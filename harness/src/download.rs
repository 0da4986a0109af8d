//! Resumable download of one artifact over HTTP/1.1 or HTTPS (reqwest on hyper, rustls),
//! with streaming SHA-256, bounded retries and typed progress events.
//!
//! [`download`] fetches `url` into `dest` and returns only when `dest` holds exactly
//! `expected_size` bytes whose SHA-256 is `expected_sha256`; a file that fails the check is
//! deleted, never handed on.
//!
//! ## One call
//!
//! | step | what happens |
//! |---|---|
//! | 1 | check the URL (`http://` or `https://`, [`crate::http::parse_url`]; anything else is [`DownloadError::BadUrl`]) and build the client: for `https://` the roots are [`DownloadConfig::ca_file`] alone when given (a bad file is [`DownloadError::CaFile`]), else the Mozilla roots of `webpki-roots` |
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
//! | a certificate no root vouches for, a name it does not cover, a failed handshake | [`DownloadError::Tls`] with a [`TlsFailure`], no retry |
//! | a size other than `expected_size` (`Content-Length`, `Content-Range`, or the body) | [`DownloadError::SizeMismatch`], `dest` deleted |
//!
//! Retries are bounded by [`DownloadConfig::retries`] over the whole call (progress does not
//! refill them). The delay before retry `n` (1-based) is `d = min(max, base·2^(n-1))`, then
//! `d/2 + uniform(0..=d/2)` drawn from `ChaCha8Rng::seed_from_u64(jitter_seed)`: the same
//! seed gives the same delays. The client never uses a proxy from the environment, never
//! reuses a connection, and asks for `identity` encoding.
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
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::http::{self};

mod error;
mod part;

pub use error::{DownloadError, TlsFailure};
use error::{body_error, chain, request_error};
use part::PartFile;

/// Bytes received in one go before they are written to the file.
const WRITE_BATCH: usize = 64 * 1024;

/// Retries, backoff, timeouts and trust of [`download`].
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
    /// Time allowed to open the TCP connection (and, for HTTPS, finish the handshake).
    pub connect_timeout_ms: u64,
    /// `fdatasync` the partial file each time this many bytes were appended.
    pub sync_every_bytes: u64,
    /// Byte offsets the download also stops at and reports [`DownloadEvent::Progress`] for,
    /// whatever the batches (a scenario's fault at a download byte fires at that byte).
    pub stops: Vec<u64>,
    /// PEM file of the certificate authorities trusted for `https://` (instead of the
    /// built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
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
            stops: Vec::new(),
            ca_file: None,
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

/// The certificates of a PEM file of CA certificates (at least one).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, DownloadError> {
    use rustls::pki_types::pem::PemObject as _;
    let bad = |reason: String| DownloadError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// rustls on ring, the roots of `ca_file` or else Mozilla's.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, DownloadError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_ca_file(path)? {
                roots.add(cert).map_err(|e| DownloadError::CaFile {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DownloadError::Io {
            op: "setting up tls",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn client(url: &Url, config: &DownloadConfig) -> Result<reqwest::Client, DownloadError> {
    let ca = (url.scheme() == "https")
        .then_some(config.ca_file.as_deref())
        .flatten();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca)?)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .user_agent(concat!("hil/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DownloadError::Io {
            op: "building the http client",
            reason: chain(&e),
        })
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
    let parsed = http::parse_url(url).map_err(|source| DownloadError::BadUrl {
        url: url.to_string(),
        source,
    })?;
    let client = client(&parsed, config)?;
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
            client: &client,
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
    client: &'a reqwest::Client,
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
            client,
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
        let mut request = client
            .get(url.clone())
            .header(header::ACCEPT, "*/*")
            .header(header::ACCEPT_ENCODING, "identity");
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let connect = Duration::from_millis(config.connect_timeout_ms);
        // The head may take the connection time plus the idle time.
        let mut response = match tokio::time::timeout(connect + idle, request.send()).await {
            Err(_) => return Err(DownloadError::Stalled { idle, at: offset }),
            Ok(Err(e)) => return Err(request_error(url, &e, connect)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body_len = Self::check_head(
            url,
            part,
            size,
            report,
            progress,
            offset,
            status,
            response.headers(),
        )
        .await?;

        // The body, appended in batches; what arrived is on disk before any error returns.
        let end = body_len.map(|n| part.len + n);
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let outcome = loop {
            // Out to every stop the batch reaches, reported there.
            while let Some(stop) = config
                .stops
                .iter()
                .copied()
                .find(|&b| b > part.len && b <= part.len + batch.len() as u64)
            {
                let rest = batch.split_off(usize::try_from(stop - part.len).unwrap_or(0));
                part.append(std::mem::replace(&mut batch, rest)).await?;
                progress(&DownloadEvent::Progress {
                    bytes: part.len,
                    total: size,
                });
            }
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
            match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => break Err(DownloadError::Stalled { idle, at: have }),
                Ok(Ok(None)) if end.is_none() => break Ok(()),
                Ok(Ok(None)) => break Err(DownloadError::Truncated { at: have, size }),
                Ok(Ok(Some(chunk))) => {
                    report.bytes_received += chunk.len() as u64;
                    let room = end.map_or(usize::MAX, |e| {
                        usize::try_from(e - have).unwrap_or(usize::MAX)
                    });
                    batch.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(Err(e)) => break Err(body_error(&e, have, size)),
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
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one fetch, borrowed apart"
    )]
    async fn check_head(
        url: &Url,
        part: &mut PartFile,
        size: u64,
        report: &mut DownloadReport,
        progress: &mut P,
        offset: u64,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Option<u64>, DownloadError> {
        let content_length = match headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| DownloadError::Malformed(format!("content-length {v:?}")))?,
            ),
        };
        match status.as_u16() {
            206 => {
                let value = headers
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let cr = http::parse_content_range(value)
                    .map_err(|e| DownloadError::Malformed(e.to_string()))?;
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
                            return Err(DownloadError::Malformed(format!(
                                "content-length {content_length:?} for content-range {value}"
                            )));
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
            code => Err(DownloadError::Status {
                url: url.to_string(),
                status: code,
                reason: status.canonical_reason().unwrap_or("Unknown").to_string(),
            }),
        }
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
