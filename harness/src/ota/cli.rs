//! `hil ota …`: submit a manifest, run or resume jobs, show their status.
//!
//! Exit codes ([`crate::exit`]): 0 every job committed (or, for `submit` and `status`, the
//! command worked), 1 a job rolled back or failed, 2 invalid input (a bad manifest, a job file
//! that does not read — reported by name after the other jobs ran or were listed —, no such
//! job, another runner holding the store), 3 the harness broke (the store cannot be read or
//! written, an illegal transition).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::error::OtaError;
use super::job::{Job, Phase, State, TransferStep};
use super::live::{self, LiveConfig, Progress};
use super::manifest::Manifest;
use super::serve::{Service, WorkersKind};
use super::store::{Store, StoreError};
use crate::exit;

fn fail(e: impl std::fmt::Display) -> ExitCode {
    exit::error(exit::INVALID, e)
}

/// Bad input (what the user gave or left in the store) or the harness breaking.
fn code_of(e: &OtaError) -> exit::Code {
    match e {
        OtaError::Store(StoreError::Io { .. } | StoreError::Lock { .. })
        | OtaError::IllegalTransition(_) => exit::BROKEN,
        OtaError::Store(_) | OtaError::Finished { .. } => exit::INVALID,
        OtaError::Stopped { .. } => exit::FAILED,
    }
}

/// `hil ota submit MANIFEST --store DIR`: prints the new job's id.
pub fn submit(manifest: &Path, store: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(manifest) {
        Ok(t) => t,
        Err(e) => return fail(format_args!("reading {}: {e}", manifest.display())),
    };
    let origin = manifest.display().to_string();
    let base = manifest.parent().unwrap_or(Path::new("."));
    let m = match Manifest::parse(&text, &origin).and_then(|mut m| {
        m.resolve_files(&text, &origin, base)?;
        Ok(m)
    }) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let store = match Store::open(store) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match store.submit(m, live::now_us()) {
        Ok(job) => {
            println!("{}", job.id);
            exit::OK.into()
        }
        Err(e) => fail(e),
    }
}

/// The store at `dir` with its runner lock, or the exit code that says why not.
fn open_locked(dir: &Path) -> Result<(Store, super::store::RunnerLock), ExitCode> {
    let store = Store::open(dir).map_err(fail)?;
    let lock = store.lock_runner().map_err(fail)?;
    Ok((store, lock))
}

/// `hil ota run|resume --store DIR [JOB]`: drive every unfinished job (or `JOB`) to its end.
pub fn run(store: &Path, only: Option<&str>, config: &LiveConfig) -> ExitCode {
    // Held until this function returns: no other runner drives these jobs meanwhile.
    let (store, _runner) = match open_locked(store) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (ids, broken) = match only {
        Some(id) => (vec![id.to_string()], Vec::new()),
        None => match store.scan() {
            Ok((jobs, broken)) => (
                jobs.into_iter()
                    .filter(|j| !j.state.is_terminal())
                    .map(|j| j.id)
                    .collect(),
                broken,
            ),
            Err(e) => return fail(e),
        },
    };
    for e in &broken {
        eprintln!("error: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut all_committed = true;
    for id in ids {
        let mut out = std::io::stdout();
        let mut last_block_tenth = None;
        let printer = |p: &Progress| {
            let line = match p {
                Progress::State(State::Transferring {
                    step: TransferStep::Block { n, of },
                }) => {
                    // A line per 10 % of the blocks, not per block.
                    let tenth = if *of == 0 { 10 } else { n * 10 / of };
                    if last_block_tenth == Some(tenth) {
                        return;
                    }
                    last_block_tenth = Some(tenth);
                    format!("{id}: transferring: block {n}/{of}")
                }
                Progress::State(s) => format!("{id}: {s}"),
                Progress::Download(e) => format!("{id}:   download: {e}"),
                Progress::DownloadFailed { reason, .. } => format!("{id}:   download: {reason}"),
                Progress::Note(n) => format!("{id}:   {n}"),
                // The persisted steps are the job's state lines.
                Progress::Bytes(_) => return,
                Progress::BootStatus(s) => {
                    format!(
                        "{id}:   {}",
                        crate::flasher::FlashEvent::BootStatus(s.clone())
                    )
                }
            };
            let _ = writeln!(out, "{line}");
        };
        match runtime.block_on(live::run(&store, &id, config, printer)) {
            Ok(job) => {
                println!("{id}: {}", summary(&job));
                all_committed &= job.state == State::Committed;
            }
            Err(e) => return exit::error(code_of(&e), format_args!("{id}: {e}")),
        }
    }
    let code = if !broken.is_empty() {
        exit::INVALID
    } else if all_committed {
        exit::OK
    } else {
        exit::FAILED
    };
    code.into()
}

/// The one-line result of a job.
pub fn summary(job: &Job) -> String {
    let m = &job.manifest;
    match &job.state {
        State::Committed => format!("COMMITTED v{} to {}", m.version, target(job)),
        State::RolledBack { reason } => format!("ROLLED BACK ({reason})"),
        State::Failed {
            reason,
            refused: true,
        } => format!("FAILED (refused: {reason})"),
        State::Failed { reason, .. } => format!("FAILED ({reason})"),
        other => format!("{other}"),
    }
}

fn target(job: &Job) -> String {
    job.manifest.target.describe()
}

/// `hil ota status --store DIR [--json]`.
pub fn status(store: &Path, json: bool) -> ExitCode {
    let store = match Store::open(store) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (jobs, broken) = match store.scan() {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    for e in &broken {
        eprintln!("error: {e}");
    }
    let code: ExitCode = if broken.is_empty() {
        exit::OK
    } else {
        exit::INVALID
    }
    .into();
    if json {
        match serde_json::to_string_pretty(&jobs) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(e),
        }
        return code;
    }
    for job in &jobs {
        let downloads = job.attempts.get("download").copied().unwrap_or(0);
        let transfers = job.attempts.get("transfer").copied().unwrap_or(0);
        println!(
            "{}  v{:<10} {:<40} downloads {downloads}, transfers {transfers}, {} transitions",
            job.id,
            job.manifest.version,
            summary(job),
            job.history.len()
        );
        if job.state.phase() != Phase::Committed {
            if let Some(last) = job.history.last() {
                println!("      last: {}", last.state);
            }
        }
    }
    code
}

/// `hil ota serve --store DIR --http ADDR`: see [`crate::ota::serve`] and [`crate::ota::api`].
pub fn serve(
    store: &Path,
    http: &str,
    workers: WorkersKind,
    mqtt: Option<&str>,
    config: LiveConfig,
) -> ExitCode {
    let broker = match mqtt
        .map(str::parse::<crate::ota::mqtt::BrokerUrl>)
        .transpose()
    {
        Ok(b) => b,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    // Held while the service runs: no `hil ota run` drives its jobs meanwhile.
    let (store, _runner) = match open_locked(store) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let base = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fail(format_args!("the working directory: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return exit::error(exit::BROKEN, format_args!("starting the runtime: {e}")),
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .map_err(|e| format!("listening on {http}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("listening on {http}: {e}"))?;
        let root = store.root().display().to_string();
        let service = Service::new(store, config, workers, base);
        if let Some(broker) = &broker {
            let client_id = format!("hil-ota-serve-{}", std::process::id());
            let mqtt = crate::ota::mqtt::Mqtt::connect(
                broker,
                &client_id,
                &[],
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
            tokio::spawn(publish_job_events(mqtt, service.subscribe()));
        }
        println!(
            "hil ota serve: http://{addr}/ (store {root}, workers {})",
            match workers {
                WorkersKind::Local => "local",
            }
        );
        let (resumed, broken) = service.resume_all().map_err(|e| e.to_string())?;
        for e in &broken {
            eprintln!("error: {e}");
        }
        for job in &resumed {
            println!("{}: resuming ({})", job.id, job.state);
        }
        let _ = std::io::stdout().flush();
        // Not a graceful shutdown: an open event stream (a portal) would hold it forever.
        tokio::select! {
            r = axum::serve(listener, crate::ota::api::router(service)) => {
                r.map_err(|e| format!("serving on {addr}: {e}"))
            }
            () = shutdown_signal() => Ok(()),
        }
    });
    // Jobs still running stop here, as if killed; the next start resumes them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match served {
        Ok(()) => exit::OK.into(),
        Err(e) => fail(e),
    }
}

/// Every trace event of the service's jobs on `ota/<job>/events` ([`wire::JobEventMsg`]).
async fn publish_job_events(
    mqtt: crate::ota::mqtt::Mqtt,
    mut events: tokio::sync::broadcast::Receiver<crate::ota::serve::Published>,
) {
    use crate::ota::serve::Published;
    use crate::ota::wire;
    loop {
        let e = match events.recv().await {
            Ok(Published::Trace(e)) => e,
            Ok(Published::Job(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("hil ota serve: {n} job event(s) not published on MQTT (lagging)");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let msg = wire::JobEventMsg {
            v: wire::VERSION,
            job: e.job.clone(),
            seq: e.seq,
            event: e.trace.event.to_string(),
            state: e.trace.event.strip_prefix("state:").map(str::to_string),
            text: e.trace.text.to_string(),
            at_ms: e.trace.at_us / 1000,
        };
        if let Err(err) = mqtt.publish(&wire::topic::job_events(&e.job), &msg).await {
            eprintln!("hil ota serve: publishing on MQTT: {err}");
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
