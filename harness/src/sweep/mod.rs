//! Power-cut sweeps: cut power at every opportunity of an update and check that the ECU never
//! bricks.
//!
//! One clean pass runs the scenario and records every step (each UDS request the ECU handles,
//! each tick of the clock, each download chunk) with a copy of the simulation before it (the
//! flash is copy-on-write, so a copy is a table of pointers). Each step yields cut points:
//!
//! | class | points | the cut |
//! |---|---|---|
//! | `flash-ops` | every flash operation in the step, × `before`/`torn`/`after` | inside the operation |
//! | `uds` | every request | right after the ECU handled it (the response is lost) |
//! | `boots` | every boot | right after the boot |
//! | `download` | every `--download-step` bytes | at that byte |
//!
//! A cut takes the OTA manager down with the ECU (a vehicle loses power everywhere): power and
//! the manager come back after `--restore-ms`, the manager resumes from its store. Each point
//! runs as a *fork*: the step again from its copy with the cut armed, then on to the end — the
//! prefix is never replayed. Steps stream to worker threads through a bounded queue, so memory
//! stays bounded. Each point is classified ([`verdict`]): an outcome (`committed`, `rolled
//! back`, `refused`, `gave up`) or a failure (`bricked`, `invariant broken`, `installed
//! twice`, an outcome the scenario does not allow); it passes when it has no failure. The cut
//! must really fire (otherwise the sweep did not test what it says).
//!
//! **The scenario's own faults**: the point's cut comes first. The scenario's faults stay armed
//! in the fork and fire where their triggers match on the path after the cut; the ones that do
//! not fire any more are not required (the cut changed the path), and the reproducer marks
//! them `optional: true`.
//!
//! Every failing point gets a **reproducer**: the scenario plus the one fault at that point,
//! counted from the start, which `hil run` replays.

//!
//! | module | what |
//! |---|---|
//! | [`points`] | the cut points of a clean pass and the fault of each |
//! | [`run`] | the clean pass, the forks, the tally; random chains |
//! | [`verdict`] | how each point's run is classified |
//! | [`converge`] | forks that stop at a state known to lead to an end |
//! | [`reproducer`] | the YAML that replays a failing point |
//! | [`shard`] | `--partition K/N` shards and `hil sweep merge` |
//! | [`cli`] | `hil sweep`: options, output, the dashboard |

pub mod cli;
pub mod converge;
pub mod points;
pub mod reproducer;
pub mod run;
pub mod shard;
pub mod verdict;

pub use points::{Class, Point};
pub use reproducer::{reproducer, to_yaml};
pub use run::{
    CleanPass, Failure, Identity, Options, Partition, PointEnd, PointRecord, Summary, Tally,
    random_chains, sweep,
};
