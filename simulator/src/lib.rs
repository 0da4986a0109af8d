//! The virtual ECU: a NOR flash model, MCUboot-format images, an MCUboot-style bootloader
//! (swap and A/B modes with probationary boot) and the firmware model that runs once booted.

pub mod boot;
pub mod can;
pub mod cli;
pub mod dtc;
pub mod ecu;
pub mod event;
pub mod exit;
pub mod factory;
pub mod fingerprint;
pub mod firmware;
pub mod flash;
pub mod host;
pub mod image;
pub mod powercut;
pub mod proto;
pub mod serve;
pub mod vehicle;
