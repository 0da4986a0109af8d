//! A deterministic virtual CAN / CAN FD bus in virtual time, with fault injection, and a helper
//! that runs ISO-TP endpoints over it.

pub mod bus;
pub mod fault;
pub mod frame;
pub mod link;
pub mod socketcan;
pub mod timing;
