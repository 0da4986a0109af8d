//! The entity's TCP_DATA socket registry (ISO 13400-2 socket handling at routing activation),
//! sans-IO: which socket is registered for which tester address, and what an activation
//! needs before it can be answered. The I/O layer runs the alive checks it asks for.
//!
//! ## Routing activation on a socket (after [`Connection`]'s own checks: source address
//! known, activation type supported, not registered for another address on this socket)
//!
//! | case | [`Registry::admit`] | after the alive checks |
//! |---|---|---|
//! | the tester address is registered on another socket | alive check that socket | it answered: refuse `0x03` (source address already active), close; it did not (closed after the alive check timeout): accept |
//! | `max_sockets` sockets are registered | alive check all of them | all answered: refuse `0x01` (all sockets registered), close; one did not: accept |
//! | otherwise | accept: register the socket for the address | — |
//!
//! A socket is registered from its successful routing activation until it closes. The
//! entity takes `max_sockets + 1` TCP connections at a time (the extra one to answer `0x01`
//! on, as the standard asks); [`Registry::open`] refuses more, and the I/O layer closes
//! them at once.
//!
//! [`Connection`]: super::Connection

use std::collections::BTreeMap;

use super::RoutingActivationCode;

/// A TCP connection of the entity, numbered from 1 in the order accepted.
pub type SocketId = u64;

/// What a routing activation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accepted, and the socket is registered for the tester address.
    Accepted,
    /// Alive check these sockets first, then ask again; if the same checks are still needed,
    /// refuse with `refusal`.
    AliveCheck {
        sockets: Vec<SocketId>,
        refusal: RoutingActivationCode,
    },
}

/// The open TCP connections and the tester address each is registered for.
#[derive(Clone, Debug)]
pub struct Registry {
    max_sockets: u8,
    next: SocketId,
    sockets: BTreeMap<SocketId, Option<u16>>,
}

impl Registry {
    /// An entity announcing `max_sockets` concurrent TCP_DATA sockets (at least 1).
    pub fn new(max_sockets: u8) -> Self {
        Registry {
            max_sockets: max_sockets.max(1),
            next: 1,
            sockets: BTreeMap::new(),
        }
    }

    pub fn max_sockets(&self) -> u8 {
        self.max_sockets
    }

    /// A new TCP connection: its id, or `None` if `max_sockets + 1` are open already (close
    /// it without a word).
    pub fn open(&mut self) -> Option<SocketId> {
        if self.sockets.len() > usize::from(self.max_sockets) {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.sockets.insert(id, None);
        Some(id)
    }

    /// The connection closed: its registration ends.
    pub fn close(&mut self, socket: SocketId) {
        self.sockets.remove(&socket);
    }

    /// Open TCP connections, as the entity status reports them.
    pub fn open_sockets(&self) -> u8 {
        u8::try_from(self.sockets.len()).unwrap_or(u8::MAX)
    }

    /// The tester address `socket` is registered for.
    pub fn source(&self, socket: SocketId) -> Option<u16> {
        self.sockets.get(&socket).copied().flatten()
    }

    /// Routing activation for `source` on `socket`: accepted (and registered) at once, or
    /// alive checks first (see the [module docs](self)).
    pub fn admit(&mut self, socket: SocketId, source: u16) -> Admission {
        let others = || {
            self.sockets
                .iter()
                .filter(move |(id, s)| **id != socket && s.is_some())
        };
        let same: Vec<SocketId> = others()
            .filter(|(_, s)| **s == Some(source))
            .map(|(id, _)| *id)
            .collect();
        if !same.is_empty() {
            return Admission::AliveCheck {
                sockets: same,
                refusal: RoutingActivationCode::SourceAlreadyActive,
            };
        }
        let registered: Vec<SocketId> = others().map(|(id, _)| *id).collect();
        if registered.len() >= usize::from(self.max_sockets) {
            return Admission::AliveCheck {
                sockets: registered,
                refusal: RoutingActivationCode::AllSocketsRegistered,
            };
        }
        if let Some(s) = self.sockets.get_mut(&socket) {
            *s = Some(source);
        }
        Admission::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tester_on_another_socket_needs_an_alive_check_of_that_socket() {
        let mut r = Registry::new(4);
        let (a, b) = (r.open().unwrap(), r.open().unwrap());
        assert_eq!(r.admit(a, 0x0E00), Admission::Accepted);
        assert_eq!(r.source(a), Some(0x0E00));
        assert_eq!(
            r.admit(b, 0x0E00),
            Admission::AliveCheck {
                sockets: vec![a],
                refusal: RoutingActivationCode::SourceAlreadyActive
            }
        );
        assert_eq!(r.source(b), None);
        // The alive check failed: that socket closed, and the address is free.
        r.close(a);
        assert_eq!(r.admit(b, 0x0E00), Admission::Accepted);
    }

    #[test]
    fn beyond_max_sockets_every_registered_socket_is_checked() {
        let mut r = Registry::new(2);
        let ids: Vec<_> = (0..3).map(|_| r.open().unwrap()).collect();
        assert_eq!(r.open(), None, "max_sockets + 1 connections at most");
        assert_eq!(r.open_sockets(), 3);
        assert_eq!(r.admit(ids[0], 0x0E00), Admission::Accepted);
        assert_eq!(r.admit(ids[1], 0x0E01), Admission::Accepted);
        assert_eq!(
            r.admit(ids[2], 0x0E02),
            Admission::AliveCheck {
                sockets: vec![ids[0], ids[1]],
                refusal: RoutingActivationCode::AllSocketsRegistered
            }
        );
        r.close(ids[1]);
        assert_eq!(r.admit(ids[2], 0x0E02), Admission::Accepted);
        assert!(r.open().is_some(), "a closed socket frees a connection");
    }
}
