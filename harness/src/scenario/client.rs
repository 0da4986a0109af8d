//! The project's OTA manager as a scenario's client, the same wherever the ECU lives: it
//! drives the job to its end; a kill (a `kill_manager` fault, a power cut that takes it down)
//! stops it where it is, and it starts again from its job store — as after a crash — once the
//! place lets it (power back). An external client is the other kind ([`super::external`]).

use tokio::sync::Notify;
use tokio::time::Instant;

use super::outcome::RunError;
use crate::ota::job::Job;
use crate::ota::live::{LiveConfig, Progress, Workers, drive};
use crate::ota::store::Store;

/// What the manager's kill/restart loop asks of the place it runs against.
pub trait ManagerSeat {
    /// When the manager may start again after a kill (`None`: at once).
    fn restart_at(&self) -> Option<Instant>;
    /// The manager was just killed: record it.
    fn killed(&self);
}

/// Run job `id` until it ends, restarting the manager after every `kill`; `progress` makes
/// each incarnation's progress callback; a job that has not ended at `limit` (the instant
/// and what it is in seconds of the run) is [`RunError::Stuck`].
#[expect(clippy::too_many_arguments)]
pub async fn run_manager<W: Workers, P: FnMut(&Progress) + Send>(
    store: &Store,
    id: &str,
    config: &LiveConfig,
    workers: &W,
    kill: &Notify,
    seat: &impl ManagerSeat,
    progress: impl Fn() -> P,
    limit: Option<(Instant, u64)>,
) -> Result<Job, RunError> {
    loop {
        if let Some(t) = seat.restart_at() {
            tokio::time::sleep_until(t).await;
        }
        let stuck = async {
            match limit {
                Some((t, _)) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            () = kill.notified() => None,
            () = stuck => return Err(RunError::Stuck(limit.map_or(0, |(_, s)| s))),
            r = drive(store, id, config, workers, progress()) => Some(r),
        };
        match result {
            Some(Ok(job)) => return Ok(job),
            Some(Err(e)) => return Err(e.into()),
            None => seat.killed(),
        }
    }
}
