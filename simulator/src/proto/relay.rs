//! A USB relay board in front of the ECU's supply, sans-IO: the bytes a host writes to the
//! board's serial port in, switch events out. It lets a bench's power control (e.g. the
//! harness's serial relay) cut the virtual ECU's power the way it cuts a real one's.
//!
//! The board knows two byte strings, one that closes the relay (supply on) and one that opens
//! it (supply off). The defaults are those of the common LCUS-1 modules, channel 1:
//!
//! | command | bytes | layout |
//! |---|---|---|
//! | on | `A0 01 01 A2` | start `A0`, channel `01`, state `01`, checksum (sum of the three, mod 256) |
//! | off | `A0 01 00 A1` | start `A0`, channel `01`, state `00`, checksum |
//!
//! ## Driving it
//!
//! 1. feed whatever the serial port delivers to [`RelayBoard::handle_bytes`], in any chunks;
//! 2. drain [`RelayBoard::poll_event`].
//!
//! ## Matching and resynchronisation
//!
//! | input | result |
//! |---|---|
//! | a command's last byte arrives | [`RelayEvent::Switched`] at once, wherever the command started |
//! | bytes that can still begin a command | kept, nothing reported yet |
//! | bytes that cannot be part of a command | skipped: one [`RelayEvent::Ignored`] per run, before the next command's event or at the end of the chunk |
//!
//! The board keeps the longest tail of its input that could still grow into a command, so a
//! stray byte in front of a command (`A0 A0 01 01 A2`) or a broken command in front of a whole
//! one (`A0 01 A0 01 00 A1`) never hides it. The two commands must not contain each other,
//! otherwise sending the longer one would switch on the shorter one on the way
//! ([`CommandError::Overlap`]).

use std::collections::VecDeque;

/// The LCUS-1 command that closes relay 1.
pub const LCUS_ON: [u8; 4] = [0xA0, 0x01, 0x01, 0xA2];
/// The LCUS-1 command that opens relay 1.
pub const LCUS_OFF: [u8; 4] = [0xA0, 0x01, 0x00, 0xA1];

/// Why a pair of commands cannot drive a board.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the {which} command has no bytes")]
    Empty { which: &'static str },
    #[error(
        "the on command ({on}) and the off command ({off}) overlap: one contains the other, so it could never be told apart"
    )]
    Overlap { on: String, off: String },
}

/// Why a hex byte string does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {message} (expected hex bytes like \"A0 01 01 A2\")")]
pub struct HexError {
    pub text: String,
    pub message: String,
}

/// What the board did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// A complete command: the relay is now closed (`on`) or open. Also reported when the
    /// relay already was in that position (a board clicks or not; the supply does not care).
    Switched { on: bool },
    /// Bytes that are no part of any command, in the order they arrived.
    Ignored { bytes: Vec<u8> },
}

/// The relay board's command parser and its event queue.
#[derive(Clone, Debug)]
pub struct RelayBoard {
    on: Vec<u8>,
    off: Vec<u8>,
    /// The longest tail of the input that is a proper prefix of a command.
    partial: Vec<u8>,
    /// Skipped bytes not reported yet.
    skipped: Vec<u8>,
    events: VecDeque<RelayEvent>,
}

impl Default for RelayBoard {
    /// An LCUS-1 board ([`LCUS_ON`], [`LCUS_OFF`]).
    fn default() -> Self {
        RelayBoard::new(LCUS_ON.to_vec(), LCUS_OFF.to_vec()).expect("the LCUS-1 commands are valid")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl RelayBoard {
    /// A board switched by `on` and `off`: both non-empty, neither inside the other.
    pub fn new(on: Vec<u8>, off: Vec<u8>) -> Result<Self, CommandError> {
        for (which, bytes) in [("on", &on), ("off", &off)] {
            if bytes.is_empty() {
                return Err(CommandError::Empty { which });
            }
        }
        if contains(&on, &off) || contains(&off, &on) {
            return Err(CommandError::Overlap {
                on: format_bytes(&on),
                off: format_bytes(&off),
            });
        }
        Ok(RelayBoard {
            on,
            off,
            partial: Vec::new(),
            skipped: Vec::new(),
            events: VecDeque::new(),
        })
    }

    /// The bytes that switch the relay on.
    pub fn on_command(&self) -> &[u8] {
        &self.on
    }

    /// The bytes that switch the relay off.
    pub fn off_command(&self) -> &[u8] {
        &self.off
    }

    /// Feed bytes from the serial line.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.partial.push(b);
            let switched = if self.partial.ends_with(&self.on) {
                Some((true, self.on.len()))
            } else if self.partial.ends_with(&self.off) {
                Some((false, self.off.len()))
            } else {
                None
            };
            if let Some((on, len)) = switched {
                let noise = self.partial.len() - len;
                self.skipped.extend_from_slice(&self.partial[..noise]);
                self.partial.clear();
                self.report_skipped();
                self.events.push_back(RelayEvent::Switched { on });
                continue;
            }
            // Keep the longest tail that can still become a command (the empty one can).
            let keep_from = (0..=self.partial.len())
                .find(|&i| self.could_begin(&self.partial[i..]))
                .unwrap_or(self.partial.len());
            self.skipped.extend(self.partial.drain(..keep_from));
        }
        self.report_skipped();
    }

    /// The next event, in the order the bytes arrived.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    fn could_begin(&self, bytes: &[u8]) -> bool {
        self.on.starts_with(bytes) || self.off.starts_with(bytes)
    }

    fn report_skipped(&mut self) {
        if !self.skipped.is_empty() {
            let bytes = std::mem::take(&mut self.skipped);
            self.events.push_back(RelayEvent::Ignored { bytes });
        }
    }
}

/// `"A0 01 01 A2"` → bytes. Bytes are separated by spaces or commas, each one or two hex
/// digits with an optional `0x` (the notation of a bench file's relay commands).
pub fn parse_bytes(text: &str) -> Result<Vec<u8>, HexError> {
    let err = |message: String| HexError {
        text: text.to_string(),
        message,
    };
    let bytes = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let hex = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix("0X"))
                .unwrap_or(t);
            if hex.len() > 2 {
                return Err(err(format!("{t:?} is more than one byte")));
            }
            u8::from_str_radix(hex, 16).map_err(|e| err(format!("{t:?}: {e}")))
        })
        .collect::<Result<Vec<u8>, _>>()?;
    if bytes.is_empty() {
        return Err(err("no bytes".into()));
    }
    Ok(bytes)
}

/// Bytes → `"A0 01 01 A2"` (what [`parse_bytes`] reads).
pub fn format_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;

    fn events(board: &mut RelayBoard) -> Vec<RelayEvent> {
        std::iter::from_fn(|| board.poll_event()).collect()
    }

    fn switched(on: bool) -> RelayEvent {
        RelayEvent::Switched { on }
    }

    fn ignored(bytes: &[u8]) -> RelayEvent {
        RelayEvent::Ignored {
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn lcus_commands_switch_the_relay() {
        let mut b = RelayBoard::default();
        b.handle_bytes(&hex!("A0 01 00 A1"));
        assert_eq!(events(&mut b), [switched(false)]);
        b.handle_bytes(&hex!("A0 01 01 A2 A0 01 00 A1 A0 01 01 A2"));
        assert_eq!(
            events(&mut b),
            [switched(true), switched(false), switched(true)]
        );
    }

    #[test]
    fn a_command_split_anywhere_switches_once_its_last_byte_arrives() {
        let cmd = hex!("A0 01 00 A1");
        for cut in 1..cmd.len() {
            let mut b = RelayBoard::default();
            b.handle_bytes(&cmd[..cut]);
            assert_eq!(events(&mut b), [], "cut at {cut}");
            b.handle_bytes(&cmd[cut..]);
            assert_eq!(events(&mut b), [switched(false)], "cut at {cut}");
        }
        let mut b = RelayBoard::default();
        for byte in hex!("A0 01 01 A2") {
            b.handle_bytes(&[byte]);
        }
        assert_eq!(events(&mut b), [switched(true)]);
    }

    #[test]
    fn noise_is_skipped_and_reported_without_hiding_commands() {
        let mut b = RelayBoard::default();
        // A stray start byte in front of a command.
        b.handle_bytes(&hex!("A0 A0 01 01 A2"));
        assert_eq!(events(&mut b), [ignored(&hex!("A0")), switched(true)]);
        // A broken command (three bytes of "on") right before a whole "off".
        b.handle_bytes(&hex!("A0 01 01 A0 01 00 A1"));
        assert_eq!(
            events(&mut b),
            [ignored(&hex!("A0 01 01")), switched(false)]
        );
        // A wrong checksum, then garbage: all of it skipped, in order.
        b.handle_bytes(&hex!("A0 01 01 A3 FF 00 0D 0A"));
        assert_eq!(events(&mut b), [ignored(&hex!("A0 01 01 A3 FF 00 0D 0A"))]);
        // The status query of LCUS boards is not a switch command.
        b.handle_bytes(&hex!("FF"));
        assert_eq!(events(&mut b), [ignored(&hex!("FF"))]);
    }

    #[test]
    fn a_partial_command_at_the_end_of_a_chunk_waits_and_is_skipped_only_when_broken() {
        let mut b = RelayBoard::default();
        b.handle_bytes(&hex!("55 A0 01"));
        assert_eq!(events(&mut b), [ignored(&hex!("55"))]);
        b.handle_bytes(&hex!("02 A0 01 01 A2"));
        assert_eq!(events(&mut b), [ignored(&hex!("A0 01 02")), switched(true)]);
    }

    #[test]
    fn custom_commands_of_different_lengths() {
        let mut b = RelayBoard::new(b"on\n".to_vec(), b"power off\n".to_vec()).unwrap();
        b.handle_bytes(b"xpower o");
        assert_eq!(events(&mut b), [ignored(b"x")]);
        b.handle_bytes(b"ff\nonon\n");
        assert_eq!(
            events(&mut b),
            [switched(false), ignored(b"on"), switched(true)]
        );
        // A command that ends inside another command's beginning.
        let mut b = RelayBoard::new(hex!("01 02 05").to_vec(), hex!("02 03").to_vec()).unwrap();
        b.handle_bytes(&hex!("01 02 03"));
        assert_eq!(events(&mut b), [ignored(&hex!("01")), switched(false)]);
    }

    #[test]
    fn commands_that_cannot_be_told_apart_are_refused() {
        assert_eq!(
            RelayBoard::new(vec![], vec![1]).unwrap_err(),
            CommandError::Empty { which: "on" }
        );
        assert_eq!(
            RelayBoard::new(vec![1], vec![]).unwrap_err(),
            CommandError::Empty { which: "off" }
        );
        for (on, off) in [
            (&hex!("A0 01")[..], &hex!("A0 01")[..]),
            (&hex!("A0 01"), &hex!("A0 01 00")),
            (&hex!("FF A0 01 01 A2"), &hex!("A0 01")),
            (&hex!("01"), &hex!("00 01")),
        ] {
            let e = RelayBoard::new(on.to_vec(), off.to_vec()).unwrap_err();
            assert!(matches!(e, CommandError::Overlap { .. }), "{on:?} {off:?}");
        }
        assert_eq!(
            RelayBoard::new(hex!("A0 01").to_vec(), hex!("A0 01 00").to_vec())
                .unwrap_err()
                .to_string(),
            "the on command (A0 01) and the off command (A0 01 00) overlap: one contains the other, so it could never be told apart"
        );
    }

    #[test]
    fn hex_strings_parse_like_bench_files_and_print_back() {
        assert_eq!(parse_bytes("A0 01 01 A2").unwrap(), hex!("A0 01 01 A2"));
        assert_eq!(parse_bytes("0xa0,0x1, 0 a1").unwrap(), hex!("A0 01 00 A1"));
        assert_eq!(format_bytes(&hex!("A0 01 00 A1")), "A0 01 00 A1");
        for (text, message) in [
            (
                "",
                "\"\": no bytes (expected hex bytes like \"A0 01 01 A2\")",
            ),
            (
                "A00101A2",
                "\"A00101A2\": \"A00101A2\" is more than one byte (expected hex bytes like \"A0 01 01 A2\")",
            ),
            (
                "A0 G1",
                "\"A0 G1\": \"G1\": invalid digit found in string (expected hex bytes like \"A0 01 01 A2\")",
            ),
        ] {
            assert_eq!(parse_bytes(text).unwrap_err().to_string(), message);
        }
    }

    /// The switches a stream holds, by brute force: a command counts where it ends, unless a
    /// counted command still uses one of its bytes.
    fn expected_switches(input: &[u8], on: &[u8], off: &[u8]) -> Vec<bool> {
        let mut out = Vec::new();
        let mut free_from = 0;
        for end in 1..=input.len() {
            for (state, cmd) in [(true, on), (false, off)] {
                if end >= cmd.len() + free_from && input[..end].ends_with(cmd) {
                    out.push(state);
                    free_from = end;
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_input_in_any_chunks_is_accounted_for_byte_by_byte(
            input in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0xA0u8), Just(0x01u8), Just(0x00u8), Just(0xA1u8), Just(0xA2u8)],
                0..200,
            ),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.push(0);
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut b = RelayBoard::default();
            let mut got = Vec::new();
            let mut seen = Vec::new();
            for w in cuts.windows(2) {
                b.handle_bytes(&input[w[0]..w[1]]);
                while let Some(e) = b.poll_event() {
                    match e {
                        RelayEvent::Switched { on } => {
                            got.push(on);
                            seen.extend_from_slice(if on { &LCUS_ON } else { &LCUS_OFF });
                        }
                        RelayEvent::Ignored { bytes } => {
                            prop_assert!(!bytes.is_empty());
                            seen.extend_from_slice(&bytes);
                        }
                    }
                }
            }
            prop_assert_eq!(got, expected_switches(&input, &LCUS_ON, &LCUS_OFF));
            // Every byte is reported once, in order; only a possible command start is held back.
            prop_assert!(input.starts_with(&seen));
            let held = &input[seen.len()..];
            prop_assert!(held.len() < LCUS_ON.len());
            prop_assert!(LCUS_ON.starts_with(held) || LCUS_OFF.starts_with(held));
        }

        #[test]
        fn commands_embedded_in_noise_are_all_found(
            parts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..12), any::<bool>()),
                1..20,
            ),
            chunk in 1usize..9,
        ) {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for (noise, on) in &parts {
                // Noise without 0xA0 holds no command; each command follows a broken start
                // (`A0 01`) that must not hide it.
                input.extend(noise.iter().map(|&b| if b == 0xA0 { 0x5A } else { b }));
                input.extend_from_slice(&[0xA0, 0x01]);
                input.extend_from_slice(if *on { &LCUS_ON } else { &LCUS_OFF });
                want.push(*on);
            }
            let mut b = RelayBoard::default();
            for c in input.chunks(chunk) {
                b.handle_bytes(c);
            }
            let got: Vec<bool> = std::iter::from_fn(|| b.poll_event())
                .filter_map(|e| match e {
                    RelayEvent::Switched { on } => Some(on),
                    RelayEvent::Ignored { .. } => None,
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
