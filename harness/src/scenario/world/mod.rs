//! The simulated world of one scenario: the ECU's surroundings, the faults waiting for their
//! triggers, and the trace everything is written to.
//!
//! [`World`] implements the simulation [`Hooks`](crate::ota::sim::Hooks): it sees every UDS request and response,
//! every download chunk, every job state (through the runner) and every ECU event, fires the
//! faults whose triggers match, and checks the always-on invariants (the ECU only ever boots
//! an image that is byte for byte one of the two images and verifies; it never stops booting).
//! What it does to the messages on the links (UDS, the download) is in `links.rs`, the CAN bus
//! of `transport: can|canfd` (the ISO-TP cores on the virtual bus) in `canlink.rs`; arming the
//! faults that act inside the ECU (flash-op and event cuts) in `arm.rs`; the typed record the
//! verdicts read in `facts.rs`.
//!
//! | module | what |
//! |---|---|
//! | `core.rs` | [`World`]'s state, construction, the trace, sweep steps |
//! | `end.rs` | the world as a place: the end of a run read from the virtual ECU |
//! | `react.rs` | faults firing and applied, ECU events, invariants, job states, the clock |
//! | `links.rs`, `canlink.rs` | what faults do to UDS, download and CAN traffic |
//! | `arm.rs` | arming the faults that act inside the ECU |
//! | `facts.rs` | the typed record verdicts read |
//! | `fingerprint.rs` | the world's part of a sweep fork's fingerprint |
//! | `names.rs` | names of job states and ECU events |

mod arm;
mod canlink;
mod core;
mod end;
mod facts;
mod fingerprint;
mod links;
mod names;
mod react;

pub use super::engine::{describe_action, state_matches};
pub use arm::region_ranges;
pub use core::{KnownImage, Recorder, Step, StepRecord, Tap, World};
pub use end::end_state;
pub use facts::{Evidence, ImageEvent, Installs, Violation};
pub use links::download_event;
pub use names::{event_name, progress_only, state_name};
