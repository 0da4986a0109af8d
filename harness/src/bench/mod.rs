//! Bench files: a real ECU on a test bench — how the harness reaches it, how it computes
//! security keys and switches power, which faults it can inject — and whether a scenario can
//! run there (`hil run --bench BENCH.yaml`).
//!
//! | module | what |
//! |---|---|
//! | [`schema`] | the file format and the typed [`schema::Bench`] |
//! | [`validate`] | reading files, every problem as `file:line:col: message` with hints |
//! | [`realise`] | which scenarios a bench can realise, and why not |
//! | [`run`] | one scenario on the bench: the manager against the real ECU, faults from what the bench has |

pub mod realise;
pub mod run;
pub mod schema;
pub mod validate;
