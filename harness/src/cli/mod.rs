//! The `hil` command line, one module per verb: each holds the verb's clap arguments and turns
//! them into a call of the library (the logic lives with what it drives). `main.rs` only
//! parses and dispatches.

pub mod args;
pub mod artifacts;
pub mod demo;
pub mod flash;
pub mod image;
pub mod ota;
pub mod scenario;
pub mod sweep;
