//! `hil serve-artifacts`: the artifact server with its fault hooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::artifact::{self, Faults};
use crate::exit;

/// Serve the files of DIR over HTTP/1.1 (GET, HEAD, single byte ranges) with fault hooks,
/// over TLS with --tls-cert/--tls-key. Prints `serving DIR on http://ADDR/` (`https://`) first, then one line per request and fault; runs
/// until SIGINT/SIGTERM (exit 0), exit 2 if it cannot start. Offsets are file offsets.
#[derive(clap::Args, Debug)]
pub struct ServeArtifactsArgs {
    /// Directory to serve.
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Close the connection when a response reaches this file offset.
    #[arg(long, value_name = "N")]
    close_after: Option<u64>,
    /// Pause a response for --stall-ms when it reaches this file offset.
    #[arg(long, value_name = "N")]
    stall_after: Option<u64>,
    /// Length of the pause of --stall-after, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    stall_ms: u64,
    /// Send bodies at most this many bytes per second.
    #[arg(long, value_name = "BPS", value_parser = clap::value_parser!(u64).range(1..))]
    throttle: Option<u64>,
    /// Answer every K-th request with --fail-status.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    fail_every: Option<u32>,
    /// Status of the requests failed by --fail-every.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=599))]
    fail_status: u16,
    /// Answer range requests with the whole file (200), like a server without Range support.
    #[arg(long)]
    ignore_range: bool,
    /// Send the byte at this file offset with every bit flipped.
    #[arg(long, value_name = "OFF")]
    flip_byte: Option<u64>,
    /// Each fault fires in one response only (default: every response it matches).
    #[arg(long)]
    once: bool,
    /// Seed of the server's randomness (how responses are split into writes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The server runs on worker threads, so a slow reader of stdout never holds up a download.
pub fn run(a: &ServeArtifactsArgs) -> ExitCode {
    let faults = Faults {
        close_after_bytes: a.close_after,
        stall_after_bytes: a.stall_after,
        stall_ms: a.stall_ms,
        throttle_bytes_per_sec: a.throttle,
        fail_every_kth: a.fail_every.map(|k| (k, a.fail_status)),
        ignore_range: a.ignore_range,
        flip_byte_at: a.flip_byte,
        once: a.once,
        seed: a.seed,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => match artifact::ServerTls::from_pem_files(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => return exit::error(exit::INVALID, e),
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return exit::error(exit::BROKEN, format_args!("starting the runtime: {e}")),
    };
    let mut out = std::io::stdout();
    let served = runtime.block_on(artifact::serve_until_signal(
        &a.dir, &a.addr, faults, tls, &mut out,
    ));
    // A file read stuck in the kernel (e.g. a hung network file system) must not keep a
    // stopped server alive: blocking tasks get one second, then the process exits anyway.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match served {
        Ok(()) => exit::OK.into(),
        Err(e) => exit::error(exit::INVALID, e),
    }
}
