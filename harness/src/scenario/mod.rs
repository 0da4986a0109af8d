//! The scenario engine: YAML fault scenarios, run against the real OTA manager and the
//! in-process virtual ECU in virtual time.
//!
//! | module | what |
//! |---|---|
//! | [`schema`] | the file format (serde, strict) |
//! | [`validate`] | parsing with `file:line:col` problems and hints |
//! | [`engine`] | the fault engine: which faults fire when, for every place (sans-IO) |
//! | [`world`] | the simulated surroundings: observations for the engine, actions, invariants |
//! | [`prepare`] | building a simulated run: seeded images, the provisioned ECU, the world, runtimes, the ticker |
//! | [`runner`] | one run in virtual time: drive the job, settle, check (an external client's run goes to [`external`]) |
//! | [`client`] | the project's manager as the client: its kill/restart loop, for every place |
//! | [`place`] | where the ECU lives: what each place can observe and do, how its end is read |
//! | [`external`] | one run with an external OTA client: the world on real sockets, in real time |
//! | [`outcome`] | what a run produced, wherever it ran: end state, result, errors, faults that never fired |
//! | [`expect`] | expectations against the end state and the trace |
//! | [`trace`] | the one event stream every view reads |
//! | [`report`] | statuses, files and directories, parallel runs, the replay command |
//! | [`junit`], [`timeline`] | JUnit XML and SVG timelines from the outcomes and traces |
//!
//! Dependencies point one way: `runner` → `external` → `prepare` → `outcome`; `runner` and
//! the bench → `client`, `place`; `place` → `expect` → `outcome`.

pub mod cli;
pub mod client;
pub mod engine;
pub mod expect;
pub mod external;
pub mod junit;
pub mod outcome;
pub mod place;
pub mod prepare;
pub mod report;
pub mod runner;
pub mod schema;
pub mod timeline;
pub mod trace;
pub mod validate;
pub mod world;
