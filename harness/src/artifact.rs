//! An HTTP/1.1 artifact server for tests and demos: serves the files of one directory, with
//! single byte ranges and fault hooks that a test or the scenario engine can change while
//! it runs.
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
//! | a head that does not parse | `400` (`431` when over 16 KiB), [`ArtifactEvent::Malformed`] |
//!
//! Every response carries `Connection: close`; one request per connection. Names are
//! percent-decoded per segment; the query is ignored.
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
//! | `close_after_bytes: N` | `start <= N < end`, and `start < N` or `N == 0` | bytes `[start, N)` are sent, then the server shuts the connection down (FIN): the client sees a short body |
//! | `stall_after_bytes: N`, `stall_ms` | as `close_after_bytes` | bytes `[start, N)` are sent, then nothing for `stall_ms`, then the rest (if the client is still there) |
//! | `throttle_bytes_per_sec: B` | the body is not empty | the body goes out at most at `B` bytes/s (pieces of `B/20` bytes) |
//! | `fail_every_kth: (k, status)` | the request is the k-th, 2k-th, … since the fault set was installed (every parsed request counts, any path; `k = 0` never fires) | `status` with an empty body, before the path is looked at |
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
//! All randomness is seeded: heads and bodies go out in pieces of random size (1 B to 16 KiB
//! for bodies, the head in two pieces) from `ChaCha8Rng::seed_from_u64(seed)` on stream
//! `n` for the n-th request of the fault set, with `TCP_NODELAY`, so clients meet varied
//! read boundaries, reproducibly.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::http::{self, HttpError, RangeOutcome, Request};

/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the file at once.
const READ_CHUNK: u64 = 64 * 1024;
/// Largest piece of body written at once.
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
    #[error("writing the address line: {0}")]
    Output(io::Error),
    #[error("installing signal handlers: {0}")]
    Signal(io::Error),
}

/// The running server; dropping it stops the listener and every open connection.
#[derive(Debug)]
pub struct ArtifactServer {
    addr: SocketAddr,
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
    /// Listen on `addr` (`127.0.0.1:0` picks a free port) and serve the files under `root`.
    /// The receiver gets every [`ArtifactEvent`]; drop it if nobody listens.
    pub async fn bind(
        addr: &str,
        root: impl Into<PathBuf>,
        faults: Faults,
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
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok((
            ArtifactServer {
                addr: local,
                shared,
                task,
            },
            rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
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

    /// Body bytes handed to sockets since the server started (counted before each write, so
    /// a client never saw more).
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

/// `hil serve-artifacts`: bind, print `serving DIR on http://ADDR/` as the first line of
/// `out`, then one line per event, until SIGINT or SIGTERM. Lines after the first are best
/// effort (a closed stdout does not stop the server).
pub async fn serve_until_signal(
    root: &Path,
    addr: &str,
    faults: Faults,
    out: &mut impl io::Write,
) -> Result<(), ArtifactError> {
    let mut stop = Box::pin(shutdown_signal().map_err(ArtifactError::Signal)?);
    let (server, mut events) = ArtifactServer::bind(addr, root, faults).await?;
    writeln!(
        out,
        "serving {} on http://{}/",
        root.display(),
        server.local_addr()
    )
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(Arc::clone(&shared), stream));
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

async fn connection(shared: Arc<Shared>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let request = match read_request(&mut stream).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            shared.emit(ArtifactEvent::Malformed {
                reason: e.to_string(),
            });
            let status = match e {
                HttpError::HeadTooLarge { .. } => 431,
                _ => 400,
            };
            let _ = write_all(&mut stream, &simple(status, &[], false)).await;
            linger(stream).await;
            return;
        }
    };
    match respond(&shared, &mut stream, request).await {
        Ok(()) => linger(stream).await,
        Err(e) => tracing::debug!("artifact server: connection: {e}"),
    }
}

/// The request head; `Ok(None)` if the client closed, failed or was too slow.
async fn read_request(stream: &mut TcpStream) -> Result<Option<Request>, HttpError> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((request, _)) = http::parse_request(&buf)? {
            return Ok(Some(request));
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Ok(None),
        }
    }
}

/// Close our side, then read until the client closes (or 2 s), so that unread request
/// bytes do not turn our close into a reset that could destroy the response in flight.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
}

/// A complete response without a file body.
fn simple(status: u16, extra: &[(&str, String)], head_only: bool) -> Vec<u8> {
    let body = format!("{status} {}\n", http::reason(status));
    let mut out = format!("HTTP/1.1 {status} {}\r\n", http::reason(status));
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    if !head_only {
        out.push_str(&body);
    }
    out.into_bytes()
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

/// Run blocking file I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

async fn respond(shared: &Shared, stream: &mut TcpStream, request: Request) -> io::Result<()> {
    let method = request.method.clone();
    let path = request
        .target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    let range = request.headers.get("range").map(str::to_string);
    let head_only = method == "HEAD";
    let answer = |status: u16| ArtifactEvent::Request {
        method: method.clone(),
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
        return write_all(stream, &simple(status, &[], head_only)).await;
    }
    if method != "GET" && method != "HEAD" {
        shared.emit(answer(405));
        let allow = [("Allow", "GET, HEAD".to_string())];
        return write_all(stream, &simple(405, &allow, false)).await;
    }
    let Some(relative) = resolve_path(&request.target) else {
        shared.emit(answer(400));
        return write_all(stream, &simple(400, &[], head_only)).await;
    };
    let full = shared.root.join(relative);
    let real_root = shared.real_root.clone();
    let (file, len) = match blocking(move || Ok(open_below(&real_root, &full))).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(refused)) => {
            let status = refused.status();
            shared.emit(answer(status));
            return write_all(stream, &simple(status, &[], head_only)).await;
        }
        Err(e) => return Err(e),
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
            if let Some(n) = faults.close_after_bytes {
                if reaches(n, start, end) && claim(faults.once, &mut spent.close) {
                    plan.close_at = Some(n);
                }
            }
            if let Some(n) = faults.stall_after_bytes {
                if reaches(n, start, end) && claim(faults.once, &mut spent.stall) {
                    plan.stall_at = Some((n, Duration::from_millis(faults.stall_ms)));
                }
            }
            if let Some(n) = faults.flip_byte_at {
                if (start..end).contains(&n) && claim(faults.once, &mut spent.flip) {
                    plan.flip_at = Some(n);
                }
            }
            if let Some(bps) = faults.throttle_bytes_per_sec.filter(|&b| b > 0) {
                if claim(faults.once, &mut spent.throttle) {
                    plan.throttle = Some(bps);
                }
            }
        }
    }

    let (status, start, end) = match outcome {
        RangeOutcome::Unsatisfiable => {
            shared.emit(answer(416));
            let cr = [("Content-Range", format!("bytes */{len}"))];
            return write_all(stream, &simple(416, &cr, head_only)).await;
        }
        RangeOutcome::Full => (200, 0, len),
        RangeOutcome::Partial { start, end } => (206, start, end + 1),
    };
    shared.emit(answer(status));
    if let Some(offset) = ignored_at {
        shared.fired(FaultKind::IgnoreRange, offset);
    }
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n",
        http::reason(status),
        end - start
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            end - 1
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(plan.seq);
    let split = rng.gen_range(1..=head.len());
    write_all(stream, &head.as_bytes()[..split]).await?;
    write_all(stream, &head.as_bytes()[split..]).await?;
    if head_only {
        return Ok(());
    }
    send_body(shared, stream, Arc::new(file), start, end, &plan, &mut rng).await
}

/// Bytes `[start, end)` of `file`, with the planned faults.
async fn send_body(
    shared: &Shared,
    stream: &mut TcpStream,
    file: Arc<File>,
    start: u64,
    end: u64,
    plan: &Plan,
    rng: &mut ChaCha8Rng,
) -> io::Result<()> {
    let began = Instant::now();
    if let Some(bps) = plan.throttle {
        shared.fired(FaultKind::Throttle, start);
        tracing::debug!("artifact server: throttling to {bps} B/s");
    }
    let mut sent = 0u64;
    let mut pos = start;
    let mut stalled = false;
    while pos < end {
        if plan.close_at == Some(pos) {
            shared.fired(FaultKind::CloseAfter, pos);
            return stream.shutdown().await;
        }
        if let Some((at, pause)) = plan.stall_at {
            if at == pos && !stalled {
                shared.fired(FaultKind::Stall, pos);
                tokio::time::sleep(pause).await;
                stalled = true;
            }
        }
        let stop = [plan.close_at, plan.stall_at.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .filter(|&p| p > pos)
            .fold(end, u64::min);
        let n = (stop - pos).min(READ_CHUNK) as usize;
        let f = Arc::clone(&file);
        let mut data = blocking(move || {
            let mut f = &*f;
            f.seek(SeekFrom::Start(pos))?;
            let mut data = vec![0u8; n];
            f.read_exact(&mut data)?;
            Ok(data)
        })
        .await?;
        if let Some(at) = plan
            .flip_at
            .filter(|&at| (pos..pos + n as u64).contains(&at))
        {
            data[(at - pos) as usize] ^= 0xFF;
            shared.fired(FaultKind::FlipByte, at);
        }
        let mut off = 0;
        while off < data.len() {
            let mut piece = rng.gen_range(1..=MAX_SEGMENT).min(data.len() - off);
            if let Some(bps) = plan.throttle {
                piece = piece.min((bps / 20).max(1) as usize);
                let due = Duration::from_secs_f64((sent + piece as u64) as f64 / bps as f64);
                tokio::time::sleep_until(began + due).await;
            }
            shared.body_bytes.fetch_add(piece as u64, Ordering::SeqCst);
            write_all(stream, &data[off..off + piece]).await?;
            off += piece;
            sent += piece as u64;
        }
        pos += n as u64;
    }
    Ok(())
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

    #[test]
    fn simple_responses_parse() {
        let bytes = simple(416, &[("Content-Range", "bytes */10".into())], false);
        let (head, used) = http::parse_response_head(&bytes).unwrap().unwrap();
        assert_eq!(head.status, 416);
        assert_eq!(head.headers.get("content-range"), Some("bytes */10"));
        assert_eq!(
            head.headers.content_length(),
            Ok(Some((bytes.len() - used) as u64))
        );
    }
}
