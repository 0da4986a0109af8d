//! UDS (ISO 14229-1): the wire codec shared by server and client, the seed/key algorithm, and
//! the virtual ECU's diagnostic server.

pub mod codec;
pub mod security;
pub mod server;
