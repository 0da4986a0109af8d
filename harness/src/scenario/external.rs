//! Running a scenario whose OTA client is another program (`client: {external: …}`): the
//! virtual ECU of the scenario, with its faults, served on real sockets — DoIP on a loopback
//! port, or an slcan adapter on a new pseudo-terminal — in real time, and the team's flashing
//! tool started against it.
//!
//! | step | what happens |
//! |---|---|
//! | prepare | images, the provisioned ECU and the world, as for the manager ([`super::prepare::prepare`]); the update is written to `update.bin` in a temp dir |
//! | serve | `ecu_sim::serve` over the world ([`WorldBackend`]): every request passes the scenario's hooks (power cuts at transfer blocks, NRCs, corrupted requests, lost CAN messages, dropped connections) |
//! | client | `sh -c COMMAND` with the placeholders replaced; its stdout and stderr lines go into the trace (`client`); killed at `timeout_s` |
//! | settle | the ECU runs on until pending power restores happened and [`SETTLE_US`] passed |
//! | end state | exit status + what the ECU runs → outcome (see [`outcome`]) |
//!
//! Times in the trace are real microseconds since the start: runs are not reproducible to the
//! microsecond (the client is a real process), only in their outcome.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecu_sim::image::Version;
use ecu_sim::proto::doip;
use ecu_sim::proto::uds_can::CanIds;
use ecu_sim::serve::{DoipEndpoint, ServeConfig, Served};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::outcome::{EndState, RunError, RunResult};
use super::place::Place;
use super::prepare::{Prepared, prepare, real_time, spawn_ticker};
use super::schema::{ExternalClient, OutcomeSpec, Scenario, TransportSpec};
use super::trace::Source;
use super::world::{Tap, World};
use crate::ota::sim::{SimWorkers, SimWorld, WorldBackend};

/// Real time the ECU runs on after the client exited, before the end state is read.
pub const SETTLE_US: u64 = 2_000_000;

/// Where the served ECU can be reached: the placeholders' values.
fn placeholders(
    endpoint: &Endpoint,
    image: &std::path::Path,
    s: &Scenario,
) -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    let ids = CanIds::default();
    v.insert("ecu_address", format!("{:#06x}", ECU_ADDRESS));
    v.insert("tester_address", format!("{:#06x}", TESTER_ADDRESS));
    v.insert("tx_id", format!("0x{:03X}", ids.request));
    v.insert("rx_id", format!("0x{:03X}", ids.response));
    v.insert("image", image.display().to_string());
    v.insert("version", s.update.version.clone());
    v.insert(
        "dir",
        s.dir
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
            .display()
            .to_string(),
    );
    match endpoint {
        Endpoint::Doip { port } => {
            v.insert("host", "127.0.0.1".into());
            v.insert("port", port.to_string());
        }
        Endpoint::Slcan { pty } => {
            v.insert("pty", pty.clone());
        }
    }
    v
}

/// `text` with `{name}` replaced (validation rejected unknown names; a placeholder the
/// transport does not have, e.g. `{pty}` on DoIP, stays as it is).
pub fn expand(text: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// The DoIP logical address of the served ECU.
const ECU_ADDRESS: u16 = 0x0010;
/// The tester address a client is told to use (the entity routes any tester).
const TESTER_ADDRESS: u16 = 0x0E00;

#[derive(Debug)]
enum Endpoint {
    Doip { port: u16 },
    Slcan { pty: String },
}

/// Run `scenario` with its external client.
pub fn run(scenario: &Scenario, tap: Option<Tap>) -> Result<RunResult, RunError> {
    let super::schema::Client::External(client) = &scenario.client else {
        return Err(RunError::Unsupported("not an external-client scenario"));
    };
    let runtime = real_time()?;
    let dir = tempfile::tempdir().map_err(RunError::Scratch)?;
    let mut p = prepare(&Arc::new(scenario.clone()))?;
    if let Some(t) = &tap {
        for e in &p.world.trace.events {
            (t.0)(e);
        }
    }
    p.world.tap = tap;
    let result = runtime.block_on(execute(p, client.clone(), dir.path()));
    // A read of the pty still blocked in tokio's pool must not hold up the end.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn execute(
    p: Prepared,
    client: ExternalClient,
    dir: &std::path::Path,
) -> Result<RunResult, RunError> {
    let scenario = Arc::clone(&p.world.scenario);
    let s = &scenario;
    let image = dir.join("update.bin");
    std::fs::write(&image, &p.update).map_err(|source| RunError::Io {
        what: "the client's image",
        path: image.clone(),
        source,
    })?;
    let workers = SimWorkers::with_hooks(p.sim, p.world, s.download.bandwidth);
    let epoch = workers.epoch;
    let shared = Arc::clone(&workers.world);
    let wake = Arc::clone(&lock(&shared).hooks.wake);
    let ticker = spawn_ticker(Arc::clone(&shared), wake, epoch);
    let backend = WorldBackend {
        world: Arc::clone(&shared),
        epoch,
    };

    let can = matches!(s.ecu.transport, TransportSpec::Can | TransportSpec::Canfd);
    let config = ServeConfig {
        doip: (!can).then(|| DoipEndpoint {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            entity: doip::EntityInfo {
                logical_address: ECU_ADDRESS,
                ..doip::EntityInfo::default()
            },
        }),
        slcan_pty: can,
        socketcan: None,
        relay: None,
        can_ids: CanIds::default(),
        max_can_message: s.ecu.block_len as usize,
        can_flow_control: None,
    };
    let served = Served::start(&config, backend).await?;
    let endpoint = match (served.doip_addr(), served.slcan_pty()) {
        (Some(addr), _) => Endpoint::Doip { port: addr.port() },
        (None, Some(pty)) => Endpoint::Slcan {
            pty: pty.to_string(),
        },
        (None, None) => return Err(RunError::Unsupported("no endpoint was served")),
    };
    // The client starts once the ECU answers (its first boot is over), as a tester plugged
    // into a running vehicle would.
    let boot_limit = epoch + Duration::from_secs(30);
    let up = |now: u64| {
        let w = lock(&shared);
        w.sim.ecu.answers_diagnostics()
            && w.sim.ecu.running().is_some_and(|r| r.booted_at_us <= now)
    };
    while !up(epoch.elapsed().as_micros() as u64) {
        if tokio::time::Instant::now() > boot_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let values = placeholders(&endpoint, &image, s);
    let command = expand(&client.command, &values);
    let now = move || epoch.elapsed().as_micros() as u64;
    note(
        &shared,
        now(),
        "client_started",
        format!("client: {command}"),
    );

    let exit = run_client(&command, &client, &values, &shared, epoch).await;
    let end_client = now();
    match &exit {
        Ok((code, _)) => note(
            &shared,
            end_client,
            "client_exited",
            format!("the client exited with status {code}"),
        ),
        Err(e) => note(&shared, end_client, "client_failed", e.clone()),
    }
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if now() >= end_client + SETTLE_US && !lock(&shared).hooks.power_pending() {
            break;
        }
    }
    served.stop();
    ticker.abort();
    let mut finish = lock(&shared).finish(None, now());
    let update: Option<Version> = s.update.version.parse().ok();
    (finish.end.outcome, finish.end.reason) = outcome(&exit, &finish.end, update);
    Ok(finish.result(s, None, true, true))
}

/// The outcome of an external client's run: its exit status and what the ECU runs.
///
/// | exit | the ECU runs | outcome |
/// |---|---|---|
/// | 0 | the update, confirmed | committed |
/// | 0 | the old image, after a revert | rolled_back |
/// | 0 | anything else | failed ("the client reported success but …") |
/// | not 0, killed, did not start | anything | failed (the status, the last stderr line) |
pub fn outcome(
    exit: &Result<(i32, String), String>,
    end: &EndState,
    update: Option<Version>,
) -> (OutcomeSpec, Option<String>) {
    let runs = |v: Option<Version>| v.map_or("nothing".to_string(), |v| format!("v{v}"));
    match exit {
        Ok((0, _)) if end.version == update && end.confirmed => (OutcomeSpec::Committed, None),
        Ok((0, _)) if end.version == end.installed && end.rollbacks > 0 => (
            OutcomeSpec::RolledBack,
            Some("the ECU reverted the update".into()),
        ),
        Ok((0, _)) => (
            OutcomeSpec::Failed,
            Some(format!(
                "the client reported success but the ECU runs {}{}",
                runs(end.version),
                if end.confirmed { "" } else { " (unconfirmed)" }
            )),
        ),
        Ok((code, last_err)) => (
            OutcomeSpec::Failed,
            Some(format!(
                "the client exited with status {code}{}; the ECU runs {}",
                if last_err.is_empty() {
                    String::new()
                } else {
                    format!(" ({last_err})")
                },
                runs(end.version)
            )),
        ),
        Err(e) => (OutcomeSpec::Failed, Some(e.clone())),
    }
}

/// Run the client to its end; its exit status and last stderr line, or why it has none.
/// Output lines go into the trace as they come.
async fn run_client(
    command: &str,
    client: &ExternalClient,
    values: &BTreeMap<&'static str, String>,
    shared: &Arc<Mutex<SimWorld<World>>>,
    epoch: tokio::time::Instant,
) -> Result<(i32, String), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills what the shell started too.
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in &client.env {
        cmd.env(k, expand(v, values));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("the client did not start: {e}"))?;
    let out = spawn_lines(child.stdout.take(), "client_stdout", shared, epoch);
    let err = spawn_lines(child.stderr.take(), "client_stderr", shared, epoch);
    let group = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    // Whatever the client left running (its children hold the pty or the socket) goes too.
    let kill_group = || {
        if let Some(g) = group {
            let _ = nix::sys::signal::killpg(g, nix::sys::signal::Signal::SIGKILL);
        }
    };
    let timeout = Duration::from_secs_f64(client.timeout_s);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for the client: {e}")),
        Err(_) => {
            kill_group();
            let _ = child.wait().await;
            return Err(format!(
                "the client did not finish within {} s (killed)",
                client.timeout_s
            ));
        }
    };
    kill_group();
    let _ = out.await;
    let last_err = err.await.unwrap_or_default();
    match status.code() {
        Some(code) => Ok((code, last_err)),
        None => Err(format!("the client was killed by a signal ({status})")),
    }
}

/// Put each line of `r` into the trace as it comes; the task returns the last line.
fn spawn_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: Option<R>,
    event: &'static str,
    shared: &Arc<Mutex<SimWorld<World>>>,
    epoch: tokio::time::Instant,
) -> tokio::task::JoinHandle<String> {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let Some(r) = r else { return String::new() };
        let mut lines = BufReader::new(r).lines();
        let mut last = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let at = epoch.elapsed().as_micros() as u64;
            note(&shared, at, event, format!("client: {line}"));
            last = line;
        }
        last
    })
}

fn note(shared: &Arc<Mutex<SimWorld<World>>>, at: u64, event: &str, text: String) {
    lock(shared).hooks.push(at, Source::Client, event, text);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
