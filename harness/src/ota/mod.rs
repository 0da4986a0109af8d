//! The OTA update manager: manifests, jobs as a persisted state machine, and the workers that
//! download, flash and apply.

pub mod job;
pub mod manager;
pub mod manifest;
pub mod store;
