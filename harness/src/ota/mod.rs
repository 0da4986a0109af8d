//! The OTA update manager: manifests, jobs as a persisted state machine, and the workers that
//! download, flash and apply.

pub mod api;
pub mod cli;
pub mod error;
pub mod job;
pub mod live;
pub mod manager;
pub mod manifest;
pub mod mqtt;
pub mod serve;
pub mod sim;
pub mod store;
pub mod wire;
