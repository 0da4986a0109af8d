//! Fault rules for the virtual bus: which frames to harm, and how.
//!
//! Every frame is judged once, when it first wins arbitration (retransmissions after an error
//! frame and duplicate copies are not judged again). Rules are consulted in order; the first
//! that fires decides the frame's fate, later rules still count the frame for their `nth`.
//!
//! | [`Fault`] | bus time | receivers | sender |
//! |---|---|---|---|
//! | `Drop` | the whole frame | nothing (lost behind a gateway or a receive filter) | TX complete |
//! | `Corrupt { bit }` | the altered frame | the altered data (a gateway mangled it; the CRC matches the new data) | TX complete |
//! | `ErrorFrame` | frame up to the ACK delimiter + error frame (17 bits) | nothing; the frame is sent again | TX complete after the retransmission |
//! | `Delay { us }` | the whole frame | the frame, `us` after its end | TX complete at the frame's end |
//! | `Duplicate` | the frame twice | the frame twice | one TX complete |
//!
//! A rule matches a frame when its `id` (if any) equals the frame's id and its `first_byte`
//! (if any, `(mask, value)`) matches the frame's first data byte (`byte & mask == value`: an
//! ISO-TP frame type is `(0xF0, 0x20)` for consecutive frames, see [`FaultRule::first_byte`]);
//! `nth` (0-based) counts the frames the rule matched; `per_million` is the seeded probability of firing on a
//! matching frame (1 000 000: always, no random number drawn); `times` caps how often it fires.

/// What happens to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Drop,
    /// Flip one data bit: bit 0 is the most significant bit of byte 0; taken modulo the data
    /// bits; `None`: a random bit from the bus RNG. Frames without data are left alone.
    Corrupt {
        bit: Option<u32>,
    },
    ErrorFrame,
    Delay {
        us: u64,
    },
    Duplicate,
}

/// When a [`Fault`] applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only frames with this identifier (None: every frame).
    pub id: Option<u32>,
    /// Only frames whose first data byte `& mask == value`, as `(mask, value)` (None: every
    /// frame; frames without data never match).
    pub first_byte: Option<(u8, u8)>,
    /// Only the nth matching frame, counted from 0 (None: every matching frame).
    pub nth: Option<u64>,
    /// Probability of firing on a matching frame, in millionths.
    pub per_million: u32,
    /// Fire at most this often (None: no limit).
    pub times: Option<u64>,
}

impl FaultRule {
    /// Applies to every frame, always.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            id: None,
            first_byte: None,
            nth: None,
            per_million: 1_000_000,
            times: None,
        }
    }

    pub fn on_id(self, id: u32) -> Self {
        FaultRule {
            id: Some(id),
            ..self
        }
    }

    /// Only frames whose first data byte `& mask == value` (ISO-TP frame types by their
    /// N_PCI nibble: `(0xF0, 0x00)` single, `0x10` first, `0x20` consecutive, `0x30` flow
    /// control).
    pub fn first_byte(self, mask: u8, value: u8) -> Self {
        FaultRule {
            first_byte: Some((mask, value)),
            ..self
        }
    }

    pub fn nth(self, n: u64) -> Self {
        FaultRule {
            nth: Some(n),
            ..self
        }
    }

    /// Fire with probability `p` (clamped to 0..=1, rounded to millionths; NaN is 0).
    pub fn probability(self, p: f64) -> Self {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        FaultRule {
            per_million: (p * 1e6).round() as u32,
            ..self
        }
    }

    pub fn times(self, n: u64) -> Self {
        FaultRule {
            times: Some(n),
            ..self
        }
    }
}

/// A rule and its counters.
#[derive(Clone, Debug)]
pub(super) struct RuleState {
    pub rule: FaultRule,
    /// Frames matched so far.
    pub seen: u64,
    /// Times fired so far.
    pub fired: u64,
}

impl RuleState {
    pub fn new(rule: FaultRule) -> Self {
        RuleState {
            rule,
            seen: 0,
            fired: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let r = FaultRule::new(Fault::Drop)
            .on_id(0x7E0)
            .first_byte(0xF0, 0x20)
            .nth(3)
            .probability(0.25)
            .times(1);
        assert_eq!(
            r,
            FaultRule {
                fault: Fault::Drop,
                id: Some(0x7E0),
                first_byte: Some((0xF0, 0x20)),
                nth: Some(3),
                per_million: 250_000,
                times: Some(1)
            }
        );
        assert_eq!(
            FaultRule::new(Fault::Drop).probability(7.0).per_million,
            1_000_000
        );
        assert_eq!(
            FaultRule::new(Fault::Drop)
                .probability(f64::NAN)
                .per_million,
            0
        );
    }
}
