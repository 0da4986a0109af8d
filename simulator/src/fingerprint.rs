//! Fingerprints of simulation state: a SHA-256 over everything that decides what the state
//! does next, with its times taken relative to "now" (a sweep stops a fork whose state equals
//! one already known to lead to an end, see `hil`'s `sweep::converge`).
//!
//! Each part of the simulation writes itself into a [`Fingerprint`] (its own `fingerprint`
//! method, beside its fields, so a new field is seen where it is added). What a part leaves
//! out, and why that cannot change its future, is written at the part:
//!
//! | part | times | left out |
//! |---|---|---|
//! | [`SimFlash`](crate::flash::SimFlash) | — | operation counters and statistics, the tear randomness: they act only through armed cuts, and a flash with a cut armed has no fingerprint |
//! | [`Ecu`](crate::ecu::Ecu) | its clock, the firmware's boot time, pending events: relative to now | its configuration (the same for every state compared) |
//! | [`DiagServer`](crate::proto::uds::server::DiagServer) | lockout and availability as time left (0 once passed: they are only compared as `now < t`), S3 as time left to its expiry (−1 once expired) | the testers' volatile state when a boot comes before the next request (the server resets it then); its configuration |
//!
//! Two states of the same configuration with equal fingerprints behave alike from now on,
//! shifted in time by the difference of their "now"s (up to SHA-256 collisions).

use std::fmt::Debug;

use sha2::{Digest, Sha256};

/// A state that has no fingerprint: something armed in it acts on counters the fingerprint
/// leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no fingerprint: {0}")]
pub struct Unfingerprintable(pub &'static str);

/// A SHA-256 being fed with a state's parts, each tagged and length-prefixed (no two
/// different sequences of parts hash the same input).
#[derive(Clone, Debug, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new() -> Fingerprint {
        Fingerprint::default()
    }

    /// Start a named part.
    pub fn tag(&mut self, name: &str) {
        self.bytes(name.as_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    pub fn u64(&mut self, v: u64) {
        self.0.update(v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.0.update([u8::from(v)]);
    }

    /// The time `t` (µs) relative to `now`, either side.
    pub fn rel(&mut self, t: u64, now: u64) {
        self.0
            .update((i128::from(t) - i128::from(now)).to_le_bytes());
    }

    /// A deadline only ever compared as `now < t`: the time left, 0 once it passed (every
    /// passed deadline acts alike).
    pub fn deadline(&mut self, t: u64, now: u64) {
        self.u64(t.saturating_sub(now));
    }

    /// A value by its `Debug` text (derived `Debug` of plain data, no times in it).
    pub fn debug<T: Debug + ?Sized>(&mut self, v: &T) {
        self.bytes(format!("{v:?}").as_bytes());
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}
