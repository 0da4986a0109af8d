//! Sans-IO protocol cores: bytes or frames and the current time in, bytes or frames, timers and
//! events out.

pub mod doip;
pub mod isotp;
pub mod relay;
pub mod slcan;
pub mod uds;
pub mod uds_can;
