//! The artifact server for tests and demos, on hyper 1.x (HTTP/1.1, optionally over rustls):
//! serves the files of one directory, with single byte ranges and fault hooks that a test or
//! the scenario engine can change while it runs. Every fault is a property of the response
//! body (a [`hyper::body::Body`] that pauses, throttles, flips or cuts) or of its status; the
//! cut is the one place that reaches below hyper (see [`CutIo`]).
//!
//! ## What it answers
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /name` of a regular file under the root (through symlinks that stay under it) | `200`, `Content-Length`, `Accept-Ranges: bytes` |
//! | … with `Range: bytes=a-b`, `bytes=a-`, `bytes=-n` | `206` with `Content-Range: bytes a-b/len` |
//! | … with a range past the end (`bytes=len-`, `bytes=-0`) | `416` with `Content-Range: bytes */len` |
//! | … with several ranges, another unit or a bad spec | `200`, the whole file (RFC 9110 §14.2 allows ignoring it) |
//! | a missing file, a directory, a FIFO, socket or device | `404` (never opened for reading: nothing blocks) |
//! | a name whose real path (symlinks resolved) leaves the root | `403` |
//! | a `..` segment (also `%2e%2e`), an encoded `/` or `\` in a segment, a bad `%` escape | `400` |
//! | another method | `405` with `Allow: GET, HEAD` |
//! | a head that does not parse (hyper's parser) | `400` (`431` when too large), [`ArtifactEvent::Malformed`] |
//!
//! Every response carries `Connection: close`; one request per connection (keep-alive off).
//! A client has 10 s to send its head. Names are percent-decoded per segment; the query is
//! ignored. With [`ServerTls`] (`--tls-cert/--tls-key`) the same is served over TLS 1.2/1.3.
//!
//! ## Fault hooks
//!
//! Offsets are **absolute file offsets**, not counts within one response: "the connection
//! drops when the download reaches byte N", whether the response started at 0 or at a
//! resume offset. A fault set installed with [`ArtifactServer::set_faults`] starts with
//! fresh counters. Faults apply to `GET` responses with a body; `fail_every_kth` also counts
//! and fails `HEAD`.
//!
//! | field | fires in a response for body bytes `[start, end)` when | effect |
//! |---|---|---|
//! | `close_after_bytes: N` | `start <= N < end`, and `start < N` or `N == 0` | bytes `[start, N)` are sent, then the server shuts the connection down (FIN; over TLS `close_notify` first): the client sees a short body |
//! | `stall_after_bytes: N`, `stall_ms` | as `close_after_bytes` | bytes `[start, N)` are sent, then nothing for `stall_ms`, then the rest (if the client is still there) |
//! | `throttle_bytes_per_sec: B` | the body is not empty | the body goes out at most at `B` bytes/s (pieces of `B/20` bytes) |
//! | `fail_every_kth: (k, status)` | the request is the k-th, 2k-th, … since the fault set was installed (every parsed request counts, any path; `k = 0` never fires) | `status` with a short text body, before the path is looked at |
//! | `ignore_range: true` | the request's `Range` would have given a `206` or `416` | `200` with the whole file, as servers without range support do |
//! | `flip_byte_at: N` | `start <= N < end` | byte `N` is sent XOR `0xFF` (every bit flipped, so it always differs) |
//! | `once: true` | — | each fault kind fires in at most one response of this fault set (the first it matches) |
//!
//! The exception in the `close_after_bytes`/`stall_after_bytes` rule lets a resume from the
//! cut point through: with `once: false` a client that restarts from 0 is cut every time,
//! one that resumes finishes. A fault counts as used (for `once`) when a response is planned
//! that reaches it; [`ArtifactEvent::FaultFired`] is sent when it actually happens, before
//! the client can observe it.
//!
//! Bodies go out in frames of seeded random size (1 B to 16 KiB) from
//! `ChaCha8Rng::seed_from_u64(seed)` on stream `n` for the n-th request of the fault set,
//! with `TCP_NODELAY`, so clients meet varied read boundaries, reproducibly.
//!
//! ## How the cut reaches the socket
//!
//! hyper drops whatever it still buffers when a body fails, so a body cannot simply end
//! early. Instead, at the cut the body stops yielding and flags the connection; the
//! connection's I/O ([`CutIo`]) waits for hyper's next flush — hyper flushes its own buffer
//! before it flushes the I/O, so every byte before the cut has been written — then shuts the
//! socket down and wakes the body, which fails and ends the connection.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use futures_util::Stream;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

use crate::http::{self, RangeOutcome};

/// Time a client has to finish the TLS handshake and send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the file at once.
const READ_CHUNK: u64 = 64 * 1024;
/// Largest body frame.
const MAX_SEGMENT: usize = 16 * 1024;

/// Faults the server injects; see the module doc for when each fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Close the connection when the body reaches this absolute file offset.
    pub close_after_bytes: Option<u64>,
    /// Pause the body at this absolute file offset for `stall_ms`.
    pub stall_after_bytes: Option<u64>,
    pub stall_ms: u64,
    /// Send bodies at most this fast.
    pub throttle_bytes_per_sec: Option<u64>,
    /// Answer every k-th request with this status: `(k, status)`.
    pub fail_every_kth: Option<(u32, u16)>,
    /// Answer `Range` requests with the whole file (`200`).
    pub ignore_range: bool,
    /// Send the byte at this absolute file offset with every bit flipped.
    pub flip_byte_at: Option<u64>,
    /// Each fault fires in one response only.
    pub once: bool,
    /// Seed of the write segmentation.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            close_after_bytes: None,
            stall_after_bytes: None,
            stall_ms: 1_000,
            throttle_bytes_per_sec: None,
            fail_every_kth: None,
            ignore_range: false,
            flip_byte_at: None,
            once: false,
            seed: 0,
        }
    }
}

/// Which fault fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    CloseAfter,
    Stall,
    Throttle,
    Fail { status: u16 },
    IgnoreRange,
    FlipByte,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::CloseAfter => write!(f, "close"),
            FaultKind::Stall => write!(f, "stall"),
            FaultKind::Throttle => write!(f, "throttle"),
            FaultKind::Fail { status } => write!(f, "fail {status}"),
            FaultKind::IgnoreRange => write!(f, "ignore range"),
            FaultKind::FlipByte => write!(f, "flip byte"),
        }
    }
}

/// What the server did, in the order it did it (per connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactEvent {
    /// A request was answered (sent before the response goes out).
    Request {
        method: String,
        /// The request target without the query.
        path: String,
        /// The `Range` header as received.
        range: Option<String>,
        status: u16,
    },
    /// A fault took effect. `offset`: the absolute file offset where it acted (for `Fail`
    /// and `IgnoreRange`: the requested start, 0 without a range; for `Throttle`: the
    /// response's start).
    FaultFired { kind: FaultKind, offset: u64 },
    /// A request head that did not parse.
    Malformed { reason: String },
    /// A TLS handshake that failed (the client refused the certificate, spoke plain HTTP…).
    TlsFailed { reason: String },
}

impl fmt::Display for ArtifactEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactEvent::Request {
                method,
                path,
                range,
                status,
            } => {
                write!(f, "{method} {path}")?;
                if let Some(r) = range {
                    write!(f, " (range {r})")?;
                }
                write!(f, " -> {status}")
            }
            ArtifactEvent::FaultFired { kind, offset } => {
                write!(f, "fault: {kind} at byte {offset}")
            }
            ArtifactEvent::Malformed { reason } => write!(f, "malformed request: {reason}"),
            ArtifactEvent::TlsFailed { reason } => write!(f, "tls handshake failed: {reason}"),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact directory {}: {source}", path.display())]
    Root { path: PathBuf, source: io::Error },
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("tls {what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("writing the address line: {0}")]
    Output(io::Error),
    #[error("installing signal handlers: {0}")]
    Signal(io::Error),
}

/// The server's certificate chain and key: HTTPS instead of HTTP.
#[derive(Clone)]
pub struct ServerTls(Arc<rustls::ServerConfig>);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// A PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, ArtifactError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what, path: &Path, reason: String| ArtifactError::Tls {
            what,
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad("certificate", cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(
                "certificate",
                cert,
                "no CERTIFICATE in the file".into(),
            ));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| bad("key", key, e.to_string()))?;
        Ok(ServerTls(Arc::new(config)))
    }
}

/// The running server; dropping it stops the listener and every open connection.
#[derive(Debug)]
pub struct ArtifactServer {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// `root` with every symlink resolved: what served paths must stay under.
    real_root: PathBuf,
    faults: Mutex<FaultState>,
    events: mpsc::UnboundedSender<ArtifactEvent>,
    body_bytes: AtomicU64,
}

/// A fault set and what it has done so far.
#[derive(Debug, Default)]
struct FaultState {
    faults: Faults,
    /// Parsed requests since the fault set was installed.
    requests: u64,
    spent: Spent,
}

/// Fault kinds that fired already (for `once`).
#[derive(Debug, Default)]
struct Spent {
    close: bool,
    stall: bool,
    throttle: bool,
    fail: bool,
    ignore_range: bool,
    flip: bool,
}

/// May a fault fire now? Marks it used.
fn claim(once: bool, spent: &mut bool) -> bool {
    if once && *spent {
        return false;
    }
    *spent = true;
    true
}

/// Does a cut/stall at `n` fire in a response for `[start, end)`?
fn reaches(n: u64, start: u64, end: u64) -> bool {
    start <= n && n < end && (start < n || n == 0)
}

/// The body faults of one response.
#[derive(Debug, Default)]
struct Plan {
    seq: u64,
    seed: u64,
    close_at: Option<u64>,
    stall_at: Option<(u64, Duration)>,
    flip_at: Option<u64>,
    throttle: Option<u64>,
}

impl ArtifactServer {
    /// Listen on `addr` (`127.0.0.1:0` picks a free port) and serve the files under `root`
    /// over plain HTTP. The receiver gets every [`ArtifactEvent`]; drop it if nobody listens.
    pub async fn bind(
        addr: &str,
        root: impl Into<PathBuf>,
        faults: Faults,
    ) -> Result<(ArtifactServer, mpsc::UnboundedReceiver<ArtifactEvent>), ArtifactError> {
        ArtifactServer::bind_with(addr, root, faults, None).await
    }

    /// [`ArtifactServer::bind`], over TLS when `tls` is given.
    pub async fn bind_with(
        addr: &str,
        root: impl Into<PathBuf>,
        faults: Faults,
        tls: Option<ServerTls>,
    ) -> Result<(ArtifactServer, mpsc::UnboundedReceiver<ArtifactEvent>), ArtifactError> {
        let root = root.into();
        let meta = std::fs::metadata(&root).map_err(|source| ArtifactError::Root {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ArtifactError::Root {
                path: root,
                source: io::Error::other("not a directory"),
            });
        }
        let real_root = std::fs::canonicalize(&root).map_err(|source| ArtifactError::Root {
            path: root.clone(),
            source,
        })?;
        let bind_err = |source| ArtifactError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            root,
            real_root,
            faults: Mutex::new(FaultState {
                faults,
                ..FaultState::default()
            }),
            events: tx,
            body_bytes: AtomicU64::new(0),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.0));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), acceptor));
        Ok((
            ArtifactServer {
                addr: local,
                scheme,
                shared,
                task,
            },
            rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/name` (`https://` over TLS).
    pub fn url(&self, name: &str) -> String {
        format!(
            "{}://{}/{}",
            self.scheme,
            self.addr,
            name.trim_start_matches('/')
        )
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Install a new fault set (request count and `once` memory start over).
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.lock() = FaultState {
            faults,
            ..FaultState::default()
        };
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Body bytes handed to hyper since the server started (counted as each frame is
    /// yielded, before hyper writes it, so a client never saw more).
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for ArtifactServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // The state stays consistent across a panic elsewhere: plain counters and flags.
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: ArtifactEvent) {
        tracing::debug!("artifact server: {event}");
        let _ = self.events.send(event);
    }

    fn fired(&self, kind: FaultKind, offset: u64) {
        self.emit(ArtifactEvent::FaultFired { kind, offset });
    }
}

/// `hil serve-artifacts`: bind, print `serving DIR on http://ADDR/` (`https://` with `tls`)
/// as the first line of `out`, then one line per event, until SIGINT or SIGTERM. Lines after
/// the first are best effort (a closed stdout does not stop the server).
pub async fn serve_until_signal(
    root: &Path,
    addr: &str,
    faults: Faults,
    tls: Option<ServerTls>,
    out: &mut impl io::Write,
) -> Result<(), ArtifactError> {
    let mut stop = Box::pin(shutdown_signal().map_err(ArtifactError::Signal)?);
    let (server, mut events) = ArtifactServer::bind_with(addr, root, faults, tls).await?;
    writeln!(out, "serving {} on {}", root.display(), server.url(""))
        .and_then(|()| out.flush())
        .map_err(ArtifactError::Output)?;
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                let _ = writeln!(out, "{event}").and_then(|()| out.flush());
            }
            signal = &mut stop => {
                let _ = writeln!(out, "stopping on {signal}").and_then(|()| out.flush());
                return Ok(());
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed before this returns.
fn shutdown_signal() -> io::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(Arc::clone(&shared), stream, tls.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("artifact server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve(shared, stream).await;
    };
    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve(shared, stream).await,
        Ok(Err(e)) => shared.emit(ArtifactEvent::TlsFailed {
            reason: e.to_string(),
        }),
        Err(_) => shared.emit(ArtifactEvent::TlsFailed {
            reason: format!("no handshake within {HEAD_TIMEOUT:?}"),
        }),
    }
}

/// One HTTP/1.1 exchange on `io` (plain TCP or TLS).
async fn serve<T>(shared: Arc<Shared>, io: T)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cut = Arc::new(Cut::default());
    let io = TokioIo::new(CutIo {
        inner: io,
        cut: Arc::clone(&cut),
        stuck: None,
    });
    let events = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |request| {
        let (shared, cut) = (Arc::clone(&shared), Arc::clone(&cut));
        async move { Ok::<_, std::convert::Infallible>(respond(shared, cut, request).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(io, service)
        .await;
    match served {
        Err(e) if e.is_parse() || e.is_parse_too_large() => {
            events.emit(ArtifactEvent::Malformed {
                reason: e.to_string(),
            });
        }
        Err(e) => tracing::debug!("artifact server: connection: {e}"),
        Ok(()) => {}
    }
}

/// Decide the response: faults first, then the path, then the range.
async fn respond(
    shared: Arc<Shared>,
    cut: Arc<Cut>,
    request: Request<Incoming>,
) -> Response<ArtifactBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let head_only = method == Method::HEAD;
    let answer = |status: u16| ArtifactEvent::Request {
        method: method.to_string(),
        path: path.clone(),
        range: range.clone(),
        status,
    };

    let (seq, seed, fail) = {
        let mut state = shared.lock();
        state.requests += 1;
        let seq = state.requests;
        let once = state.faults.once;
        let every = state.faults.fail_every_kth;
        let fail = match every {
            Some((k, status))
                if k > 0 && seq % u64::from(k) == 0 && claim(once, &mut state.spent.fail) =>
            {
                Some(status)
            }
            _ => None,
        };
        (seq, state.faults.seed, fail)
    };
    if let Some(status) = fail {
        shared.emit(answer(status));
        let offset = match range.as_deref().map(|r| http::resolve_range(r, u64::MAX)) {
            Some(RangeOutcome::Partial { start, .. }) => start,
            _ => 0,
        };
        shared.fired(FaultKind::Fail { status }, offset);
        return simple(status, &[], head_only);
    }
    if method != Method::GET && method != Method::HEAD {
        shared.emit(answer(405));
        return simple(405, &[(header::ALLOW, "GET, HEAD".into())], false);
    }
    let Some(relative) = resolve_path(&path) else {
        shared.emit(answer(400));
        return simple(400, &[], head_only);
    };
    let full = shared.root.join(relative);
    let real_root = shared.real_root.clone();
    let (file, len) = match tokio::task::spawn_blocking(move || open_below(&real_root, &full)).await
    {
        Ok(Ok(opened)) => opened,
        Ok(Err(refused)) => {
            let status = refused.status();
            shared.emit(answer(status));
            return simple(status, &[], head_only);
        }
        Err(e) => {
            tracing::warn!("artifact server: opening {path}: {e}");
            shared.emit(answer(500));
            return simple(500, &[], head_only);
        }
    };

    let mut outcome = range
        .as_deref()
        .map_or(RangeOutcome::Full, |r| http::resolve_range(r, len));
    let mut ignored_at = None;
    let mut plan = Plan {
        seq,
        seed,
        ..Plan::default()
    };
    {
        let mut state = shared.lock();
        let FaultState { faults, spent, .. } = &mut *state;
        if outcome != RangeOutcome::Full
            && faults.ignore_range
            && claim(faults.once, &mut spent.ignore_range)
        {
            ignored_at = Some(match outcome {
                RangeOutcome::Partial { start, .. } => start,
                _ => len,
            });
            outcome = RangeOutcome::Full;
        }
        let (start, end) = match outcome {
            RangeOutcome::Partial { start, end } => (start, end + 1),
            RangeOutcome::Full => (0, len),
            RangeOutcome::Unsatisfiable => (0, 0),
        };
        if !head_only && start < end {
            if let Some(n) = faults.close_after_bytes
                && reaches(n, start, end)
                && claim(faults.once, &mut spent.close)
            {
                plan.close_at = Some(n);
            }
            if let Some(n) = faults.stall_after_bytes
                && reaches(n, start, end)
                && claim(faults.once, &mut spent.stall)
            {
                plan.stall_at = Some((n, Duration::from_millis(faults.stall_ms)));
            }
            if let Some(n) = faults.flip_byte_at
                && (start..end).contains(&n)
                && claim(faults.once, &mut spent.flip)
            {
                plan.flip_at = Some(n);
            }
            if let Some(bps) = faults.throttle_bytes_per_sec.filter(|&b| b > 0)
                && claim(faults.once, &mut spent.throttle)
            {
                plan.throttle = Some(bps);
            }
        }
    }

    let (status, start, end) = match outcome {
        RangeOutcome::Unsatisfiable => {
            shared.emit(answer(416));
            let cr = [(header::CONTENT_RANGE, format!("bytes */{len}"))];
            return simple(416, &cr, head_only);
        }
        RangeOutcome::Full => (StatusCode::OK, 0, len),
        RangeOutcome::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
    };
    shared.emit(answer(status.as_u16()));
    if let Some(offset) = ignored_at {
        shared.fired(FaultKind::IgnoreRange, offset);
    }
    let body = if head_only {
        ArtifactBody::text(Bytes::new())
    } else {
        ArtifactBody::file(shared, cut, Arc::new(file), start, end, plan)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        headers.insert(header::CONTENT_RANGE, header_value(value));
    }
    response
}

fn header_value(value: String) -> HeaderValue {
    // Only built from digits and ASCII words here.
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A complete response without a file body: `STATUS REASON\n` as text.
fn simple(
    status: u16,
    extra: &[(header::HeaderName, String)],
    head_only: bool,
) -> Response<ArtifactBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("Unknown")
    );
    let length = text.len() as u64;
    let body = if head_only {
        Bytes::new()
    } else {
        Bytes::from(text)
    };
    let mut response = Response::new(ArtifactBody::text(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    for (name, value) in extra {
        headers.insert(name.clone(), header_value(value.clone()));
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// What the file producer yields: body bytes, or the cut of `close_after_bytes`.
enum Piece {
    Data(Bytes),
    Cut,
}

/// A response body: a short text, or a file range with its planned faults.
struct ArtifactBody(BodyKind);

enum BodyKind {
    Text(Option<Bytes>),
    File {
        pieces: Pin<Box<dyn Stream<Item = io::Result<Piece>> + Send>>,
        shared: Arc<Shared>,
        cut: Arc<Cut>,
        left: u64,
    },
}

impl ArtifactBody {
    fn text(bytes: Bytes) -> ArtifactBody {
        ArtifactBody(BodyKind::Text(Some(bytes).filter(|b| !b.is_empty())))
    }

    fn file(
        shared: Arc<Shared>,
        cut: Arc<Cut>,
        file: Arc<File>,
        start: u64,
        end: u64,
        plan: Plan,
    ) -> ArtifactBody {
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
        rng.set_stream(plan.seq);
        let producer = Producer {
            shared: Arc::clone(&shared),
            file,
            start,
            pos: start,
            end,
            plan,
            rng,
            began: Instant::now(),
            sent: 0,
            stalled: false,
            announced: false,
            pending: Bytes::new(),
        };
        let pieces = futures_util::stream::unfold(Some(producer), |state| async move {
            let mut p = state?;
            match p.next().await {
                Ok(Some(piece)) => Some((Ok(piece), Some(p))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        ArtifactBody(BodyKind::File {
            pieces: Box::pin(pieces),
            shared,
            cut,
            left: end - start,
        })
    }
}

impl Body for ArtifactBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            BodyKind::Text(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::File {
                pieces,
                shared,
                cut,
                left,
            } => {
                {
                    let mut state = cut.lock();
                    if state.done {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "connection cut by close_after_bytes",
                        ))));
                    }
                    if state.requested {
                        state.body = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
                match ready!(pieces.as_mut().poll_next(cx)) {
                    Some(Ok(Piece::Data(bytes))) => {
                        let n = bytes.len() as u64;
                        shared.body_bytes.fetch_add(n, Ordering::SeqCst);
                        *left = left.saturating_sub(n);
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    Some(Ok(Piece::Cut)) => {
                        let mut state = cut.lock();
                        state.requested = true;
                        state.body = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Text(bytes) => bytes.is_none(),
            BodyKind::File { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Text(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len()) as u64)
            }
            BodyKind::File { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

/// Produces the bytes `[start, end)` of a file as body pieces, acting out the plan.
struct Producer {
    shared: Arc<Shared>,
    file: Arc<File>,
    start: u64,
    /// The next file offset to read.
    pos: u64,
    end: u64,
    plan: Plan,
    rng: ChaCha8Rng,
    began: Instant,
    /// Bytes yielded so far (the throttle's clock).
    sent: u64,
    stalled: bool,
    announced: bool,
    /// Read from the file, not yet yielded: the bytes `[pos - pending.len(), pos)`.
    pending: Bytes,
}

impl Producer {
    async fn next(&mut self) -> io::Result<Option<Piece>> {
        if !self.announced {
            self.announced = true;
            if let Some(bps) = self.plan.throttle {
                self.shared.fired(FaultKind::Throttle, self.start);
                tracing::debug!("artifact server: throttling to {bps} B/s");
            }
        }
        if self.pending.is_empty() {
            let pos = self.pos;
            if pos >= self.end {
                return Ok(None);
            }
            if self.plan.close_at == Some(pos) {
                self.shared.fired(FaultKind::CloseAfter, pos);
                return Ok(Some(Piece::Cut));
            }
            if let Some((at, pause)) = self.plan.stall_at
                && at == pos
                && !self.stalled
            {
                self.shared.fired(FaultKind::Stall, pos);
                tokio::time::sleep(pause).await;
                self.stalled = true;
            }
            // Reads stop at the cut and the stall, so that both act at their exact byte.
            let stop = [self.plan.close_at, self.plan.stall_at.map(|(at, _)| at)]
                .into_iter()
                .flatten()
                .filter(|&p| p > pos)
                .fold(self.end, u64::min);
            let n = (stop - pos).min(READ_CHUNK) as usize;
            let file = Arc::clone(&self.file);
            let mut data = tokio::task::spawn_blocking(move || {
                let mut f = &*file;
                f.seek(SeekFrom::Start(pos))?;
                let mut data = vec![0u8; n];
                f.read_exact(&mut data)?;
                Ok::<_, io::Error>(data)
            })
            .await
            .map_err(io::Error::other)??;
            if let Some(at) = self
                .plan
                .flip_at
                .filter(|&at| (pos..pos + n as u64).contains(&at))
            {
                data[(at - pos) as usize] ^= 0xFF;
                self.shared.fired(FaultKind::FlipByte, at);
            }
            self.pending = Bytes::from(data);
            self.pos += n as u64;
        }
        let mut piece = self.rng.gen_range(1..=MAX_SEGMENT).min(self.pending.len());
        if let Some(bps) = self.plan.throttle {
            piece = piece.min((bps / 20).max(1) as usize);
            let due = Duration::from_secs_f64((self.sent + piece as u64) as f64 / bps as f64);
            tokio::time::sleep_until(self.began + due).await;
        }
        self.sent += piece as u64;
        Ok(Some(Piece::Data(self.pending.split_to(piece))))
    }
}

/// The cut of one connection, shared by its body and its I/O.
#[derive(Debug, Default)]
struct Cut(Mutex<CutState>);

#[derive(Debug, Default)]
struct CutState {
    /// The body reached the cut and yields nothing more.
    requested: bool,
    /// The socket is shut down.
    done: bool,
    /// The body, waiting for `done`.
    body: Option<Waker>,
}

impl Cut {
    fn lock(&self) -> MutexGuard<'_, CutState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The I/O hyper serves a connection on: the socket (or TLS stream), shut down at a
/// requested cut once hyper flushed, and with a bound on how long a write may block.
struct CutIo<T> {
    inner: T,
    cut: Arc<Cut>,
    /// Since when a write waits for a client that does not read.
    stuck: Option<Pin<Box<Sleep>>>,
}

impl<T> CutIo<T> {
    fn bounded<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stuck = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = self
                    .stuck
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client does not read",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.lock().done
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CutIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_cut() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bounded(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_cut() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bounded(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper calls this only with its own buffer empty: at a requested cut, everything
    /// before the cut is in the socket, so shut it down here.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut() {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        ready!(this.bounded(cx, poll))?;
        if !this.cut.lock().requested {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        let shut = ready!(this.bounded(cx, poll));
        let mut state = this.cut.lock();
        state.done = true;
        if let Some(body) = state.body.take() {
            body.wake();
        }
        Poll::Ready(shut)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut() {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.bounded(cx, poll)
    }
}

/// Decode `%XX` escapes; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path below the root that `target` names; `None` for anything that could leave it.
pub fn resolve_path(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in path.split('/') {
        let segment = percent_decode(segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['/', '\\', '\0']) => return None,
            s => out.push(s),
        }
    }
    Some(out)
}

/// Why a path below the root is not served.
#[derive(Debug)]
enum Refusal {
    /// Missing, unreadable, or not a regular file.
    NotFound,
    /// Its real path (symlinks resolved) is outside the root.
    Outside,
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::Outside => 403,
        }
    }
}

/// Open `path` for reading if its real path is under `real_root` and it is a regular file.
/// The type is checked before opening, and the open is non-blocking and does not follow a
/// final symlink (the path is already resolved), so a FIFO or a device is never waited on,
/// nor a file swapped in for a link between the check and the open.
fn open_below(real_root: &Path, path: &Path) -> Result<(File, u64), Refusal> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let real = std::fs::canonicalize(path).map_err(|_| Refusal::NotFound)?;
    if !real.starts_with(real_root) {
        return Err(Refusal::Outside);
    }
    let is_file = |meta: &std::fs::Metadata| meta.file_type().is_file();
    if !std::fs::symlink_metadata(&real).is_ok_and(|m| is_file(&m)) {
        return Err(Refusal::NotFound);
    }
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(&real)
        .map_err(|_| Refusal::NotFound)?;
    match file.metadata() {
        Ok(meta) if is_file(&meta) => Ok((file, meta.len())),
        _ => Err(Refusal::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        let ok = [
            ("/v2.bin", "v2.bin"),
            ("/a/./b//c.bin?x=..", "a/b/c.bin"),
            ("/sp%20ace", "sp ace"),
            ("/", ""),
        ];
        for (target, want) in ok {
            assert_eq!(resolve_path(target), Some(PathBuf::from(want)), "{target}");
        }
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/a%2f..%2fb",
            "/a%5cb",
            "/%00",
            "/%zz",
            "/%e2%28",
            "v2.bin",
            "http://h/v2.bin",
        ] {
            assert_eq!(resolve_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn cuts_fire_inside_the_response_but_let_a_resume_from_the_cut_through() {
        assert!(reaches(100, 0, 200));
        assert!(reaches(0, 0, 200));
        assert!(!reaches(100, 100, 200));
        assert!(!reaches(100, 150, 200));
        assert!(!reaches(200, 0, 200));
        assert!(!reaches(0, 5, 200));
    }

    #[test]
    fn once_fires_one_time() {
        let mut spent = false;
        assert!(claim(true, &mut spent));
        assert!(!claim(true, &mut spent));
        assert!(claim(false, &mut spent));
    }
}
