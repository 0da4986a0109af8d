//! The `ecu-sim` command line, one module per group of verbs; `main.rs` only parses and
//! dispatches. Exit codes: [`crate::exit`].

pub mod ecu;
pub mod offline;
pub mod serve;
pub mod vehicle;
