//! The project's OTA manager as a scenario's client, and the run's one dispatcher, the same
//! wherever the ECU lives: one loop merges the place's events (a bench's server requests,
//! the actions its fault engine fired, its timers), kills, the manager's restart time and the
//! manager's own progress, and hands each to one handler, in one order. A kill (a
//! `kill_manager` fault, a power cut that takes the manager down) stops the manager where it
//! is; it starts again from its job store — as after a crash — when the place lets it (power
//! back). An external client is the other kind of client ([`super::external`]).
//!
//! | branch (in priority order) | what the loop does |
//! |---|---|
//! | `kill` notified (the simulated world's kills) | the manager stops; it restarts at [`ManagerSeat::restart_at`] |
//! | the place's next event ([`ManagerSeat::next`]) | [`ManagerSeat::handle`], which may stop the manager until a time |
//! | the restart time, while the manager is down | a new manager resumes the job from the store |
//! | the time limit | [`RunError::Stuck`] |
//! | the manager's job ended | the place finishes its pending work ([`ManagerSeat::busy`]), the job is returned |

use std::future::Future;
use std::pin::Pin;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::outcome::RunError;
use crate::ota::error::OtaError;
use crate::ota::job::Job;
use crate::ota::live::{LiveConfig, Progress, Workers, drive};
use crate::ota::store::Store;

/// What the dispatcher asks of the place the manager runs against.
pub trait ManagerSeat {
    /// An event of the place's own.
    type Event;
    /// The place's next event. Cancel-safe: it only waits, the work is in [`Self::handle`].
    fn next(&mut self) -> impl Future<Output = Self::Event>;
    /// Handle `event`; `Some(t)`: the manager dies now and may start again at `t`.
    fn handle(&mut self, event: Self::Event) -> impl Future<Output = Option<Instant>>;
    /// When the manager may start again after a `kill` notification (`None`: at once).
    fn restart_at(&mut self) -> Option<Instant>;
    /// The manager was just killed: record it.
    fn killed(&mut self);
    /// After the job ended: the place still has work before its end is read (a power
    /// restore, actions queued behind it).
    fn busy(&self) -> bool;
}

/// The place of a simulation has no events of its own (its world reacts inside the
/// simulated workers and its ticker); `Never` is its event type.
#[derive(Debug)]
pub enum Never {}

type Manager<'a> = Pin<Box<dyn Future<Output = Result<Job, OtaError>> + 'a>>;

async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Run job `id` to its end against `seat`; `progress` makes each manager's progress
/// callback; a job that has not ended at `limit` (the instant, and what it is in seconds of
/// the run) is [`RunError::Stuck`].
#[expect(clippy::too_many_arguments)]
pub async fn run_manager<'a, W, P, S>(
    store: &'a Store,
    id: &'a str,
    config: &'a LiveConfig,
    workers: &'a W,
    kill: &Notify,
    seat: &mut S,
    progress: impl Fn() -> P,
    limit: Option<(Instant, u64)>,
) -> Result<Job, RunError>
where
    W: Workers,
    P: FnMut(&Progress) + Send + 'a,
    S: ManagerSeat,
{
    enum Got<E> {
        Kill,
        Place(E),
        Restart,
        Stuck,
        Done(Box<Result<Job, OtaError>>),
    }
    let mut manager: Option<Manager<'a>> = None;
    let mut restart = Some(Instant::now());
    let job = loop {
        if manager.is_none() && restart.is_some_and(|t| t <= Instant::now()) {
            restart = None;
            manager = Some(Box::pin(drive(store, id, config, workers, progress())));
        }
        let got = tokio::select! {
            biased;
            () = kill.notified() => Got::Kill,
            e = seat.next() => Got::Place(e),
            () = until(restart), if manager.is_none() => Got::Restart,
            () = until(limit.map(|(t, _)| t)) => Got::Stuck,
            r = async { manager.as_mut().expect("the branch runs with a manager").await },
                if manager.is_some() => Got::Done(Box::new(r)),
        };
        match got {
            Got::Kill => {
                manager = None;
                restart = Some(seat.restart_at().unwrap_or_else(Instant::now));
                seat.killed();
            }
            Got::Place(e) => {
                if let Some(t) = seat.handle(e).await {
                    manager = None;
                    restart = Some(t);
                    seat.killed();
                }
            }
            Got::Restart => {}
            Got::Stuck => return Err(RunError::Stuck(limit.map_or(0, |(_, s)| s))),
            Got::Done(r) => break (*r)?,
        }
    };
    while seat.busy() {
        let e = seat.next().await;
        seat.handle(e).await;
    }
    Ok(job)
}
