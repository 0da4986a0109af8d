//! The OTA test harness around the virtual ECU. For now: the demo that shows an update
//! surviving a power cut; the OTA manager, scenario engine and sweeps build on it.

pub mod artifact;
pub mod bench;
pub mod can;
pub mod cli;
pub mod demo;
pub mod download;
pub use ecu_sim::exit;
pub mod flasher;
pub mod http;
pub mod imagetool;
pub mod ota;
pub mod power;
pub mod scenario;
pub mod serial;
pub mod sweep;
pub mod target;
pub mod transport;
pub mod uds_client;
pub mod ui;
