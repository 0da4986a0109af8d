//! `hil ota submit|run|resume|status`: OTA jobs in a store directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::download::DownloadConfig;
use crate::flasher::FlasherConfig;
use crate::ota::cli;
use crate::ota::live::LiveConfig;
use crate::ota::manager::{Limits, Manager};
use crate::ota::serve::WorkersKind;

#[derive(Subcommand, Debug)]
pub enum OtaCommand {
    /// Add a job for MANIFEST (YAML or JSON) to the store; prints its id.
    Submit {
        manifest: PathBuf,
        #[arg(long)]
        store: PathBuf,
    },
    /// Run every unfinished job (or JOB) to its end: download, verify, transfer, apply.
    /// Exit 0 all committed, 1 a job rolled back or failed, 2 invalid input (a job file that
    /// does not read, a store another runner holds), 3 the harness broke.
    Run(OtaRunArgs),
    /// The same as run: continue unfinished jobs from where the store says they are.
    Resume(OtaRunArgs),
    /// The manager as a long-running service: a REST API to submit, list, get and cancel
    /// jobs, a server-sent event stream and a web portal on --http; unfinished jobs of the
    /// store resume at start. Prints `hil ota serve: http://ADDR/ …` first; runs until
    /// SIGINT/SIGTERM (exit 0); exit 2 if it cannot start (store in use, address taken).
    Serve(OtaServeArgs),
    /// Show every job (`--json`: the job documents).
    Status {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct OtaRunArgs {
    /// The job store directory (one JSON document per job, and the downloaded artifacts).
    #[arg(long)]
    store: PathBuf,
    /// Only this job.
    job: Option<String>,
    #[command(flatten)]
    manager: ManagerArgs,
}

/// `hil ota serve`: the manager as a service (REST API, event stream, portal).
#[derive(clap::Args, Debug)]
pub struct OtaServeArgs {
    /// The job store directory (held with the runner lock while the service runs).
    #[arg(long)]
    store: PathBuf,
    /// Address of the API and the portal; port 0 picks a free port (printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    http: String,
    /// Who executes the jobs' commands.
    #[arg(long, value_enum, default_value = "local")]
    workers: WorkersKind,
    /// An MQTT broker (`mqtt://HOST:PORT`) to publish every job's events on, topic
    /// `ota/<job>/events` (QoS 1), for subscribers outside.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    #[command(flatten)]
    manager: ManagerArgs,
}

/// The manager's settings, shared by `run`, `resume` and `serve`.
#[derive(clap::Args, Debug)]
pub struct ManagerArgs {
    /// Seconds the new image may stay on probation before a reset makes the bootloader revert it.
    #[arg(long, default_value_t = 10.0)]
    confirm_timeout: f64,
    /// Seconds the ECU may stay silent after a reset.
    #[arg(long, default_value_t = 30.0)]
    boot_timeout: f64,
    /// Downloads started (each resumes the last) before a job fails; a killed run counts.
    #[arg(long, default_value_t = Limits::default().download_attempts)]
    download_attempts: u32,
    /// Programming sequences started before a job fails; a killed run counts.
    #[arg(long, default_value_t = Limits::default().transfer_attempts)]
    transfer_attempts: u32,
    /// HTTP retries within one download attempt.
    #[arg(long, default_value_t = DownloadConfig::default().retries)]
    http_retries: u32,
    /// Seconds without a byte from the artifact server before the request counts as stalled.
    #[arg(long, default_value_t = 10.0)]
    idle_timeout: f64,
    /// Seed of the retry jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// PEM certificate authorities trusted for https:// artifacts whose manifest names no
    /// `ca_file` (default: the built-in Mozilla roots).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

impl ManagerArgs {
    fn config(&self) -> LiveConfig {
        LiveConfig {
            flasher: FlasherConfig {
                confirm_timeout: Duration::from_secs_f64(self.confirm_timeout),
                boot_timeout: Duration::from_secs_f64(self.boot_timeout),
                ..FlasherConfig::default()
            },
            manager: Manager {
                limits: Limits {
                    download_attempts: self.download_attempts,
                    transfer_attempts: self.transfer_attempts,
                },
            },
            download: DownloadConfig {
                retries: self.http_retries,
                idle_timeout_ms: (self.idle_timeout * 1000.0) as u64,
                jitter_seed: self.seed,
                ca_file: self.ca_file.clone(),
                ..DownloadConfig::default()
            },
            install_gate: None,
        }
    }
}

pub fn run(command: &OtaCommand) -> ExitCode {
    match command {
        OtaCommand::Submit { manifest, store } => cli::submit(manifest, store),
        OtaCommand::Run(a) | OtaCommand::Resume(a) => {
            cli::run(&a.store, a.job.as_deref(), &a.manager.config())
        }
        OtaCommand::Serve(a) => cli::serve(
            &a.store,
            &a.http,
            a.workers,
            a.mqtt.as_deref(),
            a.manager.config(),
        ),
        OtaCommand::Status { store, json } => cli::status(store, *json),
    }
}
