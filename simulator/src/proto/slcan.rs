//! slcan (the Lawicel CAN-USB ASCII protocol) as a sans-IO adapter: the device side that cheap
//! USB-CAN adapters implement, so a serial line (a pty) can put the virtual ECU's bus in front
//! of any slcan-speaking tool (python-can's `slcan` interface, `slcand`, SavvyCAN).
//!
//! | host sends | meaning | adapter answers |
//! |---|---|---|
//! | `S0`..`S8` | bit rate 10k, 20k, 50k, 100k, 125k, 250k, 500k, 800k, 1M (channel closed) | `\r` |
//! | `O` / `L` / `C` | open / open listen-only / close (also when closed) | `\r` |
//! | `tiiildd…` | send an 11-bit frame: 3 hex id digits, length 0-8, data | `z\r` |
//! | `Tiiiiiiiildd…` | send a 29-bit frame | `Z\r` |
//! | `riiil` / `Riiiiiiiil` | remote frame (not on this bus: refused) | `\x07` |
//! | `V` / `N` / `F` | version / serial number / status flags (also when closed: `slcand -f` and the kernel's slcan driver read `F` before `O` to clear error states) | `V1013\r` / `NHIL1\r` / `F00\r` |
//! | `Z0` / `Z1` | timestamps off / on (accepted, not sent) | `\r` |
//! | anything else, or a command in the wrong state | | `\x07` (BELL) |
//!
//! Frames from the bus reach the host as `tiiildd…\r` / `Tiiiiiiiildd…\r` while the channel is
//! open (not in listen-only mode for sending). Commands end with `\r` (`\n` is accepted too).
//!
//! Every command that is not a frame is kept with its verdict ([`SlcanDevice::take_commands`]),
//! so the serving side can log what the host configured (`C`, `S6`, `F`, `O` from `slcand`).

use crate::can::frame::{Frame, MAX_EXT_ID, MAX_STD_ID};

/// The bit rates of `S0`..`S8`.
pub const BITRATES: [u32; 9] = [
    10_000, 20_000, 50_000, 100_000, 125_000, 250_000, 500_000, 800_000, 1_000_000,
];

/// Longest command line accepted (a `T` frame with 8 bytes is 26 characters).
const MAX_LINE: usize = 64;

/// The adapter's state and its output queues.
#[derive(Clone, Debug)]
pub struct SlcanDevice {
    bitrate: u32,
    open: bool,
    listen_only: bool,
    line: Vec<u8>,
    overlong: bool,
    to_host: Vec<u8>,
    to_bus: Vec<Frame>,
    commands: Vec<Command>,
}

/// A command line from the host that is not a frame (`t`/`T`), and whether it was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The line as received, without its `\r` (non-ASCII bytes escaped).
    pub line: String,
    /// `false`: answered with BELL.
    pub accepted: bool,
}

impl Default for SlcanDevice {
    fn default() -> Self {
        SlcanDevice {
            bitrate: 500_000,
            open: false,
            listen_only: false,
            line: Vec::new(),
            overlong: false,
            to_host: Vec::new(),
            to_bus: Vec::new(),
            commands: Vec::new(),
        }
    }
}

fn hex_digit(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn hex(bytes: &[u8]) -> Option<u32> {
    bytes
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc.checked_mul(16)? + hex_digit(b)?))
}

/// The ASCII form of a frame for the host (`\r` included); `None` for CAN FD frames, which
/// classic slcan cannot carry.
pub fn encode_frame(f: &Frame) -> Option<Vec<u8>> {
    if f.fd || f.data.len() > 8 {
        return None;
    }
    let mut s = if f.extended {
        format!("T{:08X}{}", f.id, f.data.len())
    } else {
        format!("t{:03X}{}", f.id, f.data.len())
    };
    for b in &f.data {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\r');
    Some(s.into_bytes())
}

/// A `t`/`T` command's frame.
pub fn decode_frame(line: &[u8]) -> Option<Frame> {
    let (extended, id_len) = match line.first()? {
        b't' => (false, 3),
        b'T' => (true, 8),
        _ => return None,
    };
    let id = hex(line.get(1..1 + id_len)?)?;
    if id > if extended { MAX_EXT_ID } else { MAX_STD_ID } {
        return None;
    }
    let len = hex_digit(*line.get(1 + id_len)?)? as usize;
    if len > 8 {
        return None;
    }
    let data_hex = &line[2 + id_len..];
    if data_hex.len() != 2 * len {
        return None;
    }
    let data: Option<Vec<u8>> = data_hex
        .chunks(2)
        .map(|p| hex(p).map(|v| v as u8))
        .collect();
    Some(Frame {
        id,
        extended,
        fd: false,
        data: data?,
    })
}

impl SlcanDevice {
    pub fn new() -> SlcanDevice {
        SlcanDevice::default()
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Bytes from the host (any chunking).
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if self.overlong {
                    self.to_host.push(0x07);
                } else if !self.line.is_empty() {
                    let line = std::mem::take(&mut self.line);
                    self.command(&line);
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let before = self.to_host.len();
        self.answer(line);
        if !matches!(line[0], b't' | b'T') {
            self.commands.push(Command {
                line: line.escape_ascii().to_string(),
                accepted: self.to_host.get(before) != Some(&0x07),
            });
        }
    }

    fn answer(&mut self, line: &[u8]) {
        let ok = |d: &mut Self, answer: &[u8]| d.to_host.extend_from_slice(answer);
        match (line[0], line.len()) {
            (b'S', 2) if !self.open => match (line[1] as char).to_digit(10) {
                Some(n) if (n as usize) < BITRATES.len() => {
                    self.bitrate = BITRATES[n as usize];
                    ok(self, b"\r");
                }
                _ => ok(self, b"\x07"),
            },
            (b'O', 1) if !self.open => {
                self.open = true;
                self.listen_only = false;
                ok(self, b"\r");
            }
            (b'L', 1) if !self.open => {
                self.open = true;
                self.listen_only = true;
                ok(self, b"\r");
            }
            // Closing a closed channel is fine (tools close first, to start clean).
            (b'C', 1) => {
                self.open = false;
                ok(self, b"\r");
            }
            (b'V', 1) => ok(self, b"V1013\r"),
            (b'N', 1) => ok(self, b"NHIL1\r"),
            // Status flags: none set (no error on a virtual bus). Asked also while closed.
            (b'F', 1) => ok(self, b"F00\r"),
            (b'Z', 2) if matches!(line[1], b'0' | b'1') => ok(self, b"\r"),
            (b't' | b'T', _) if self.open && !self.listen_only => match decode_frame(line) {
                Some(f) => {
                    let answer: &[u8] = if f.extended { b"Z\r" } else { b"z\r" };
                    self.to_bus.push(f);
                    ok(self, answer);
                }
                None => ok(self, b"\x07"),
            },
            _ => ok(self, b"\x07"),
        }
    }

    /// A frame seen on the bus: the host gets it while the channel is open.
    pub fn handle_frame(&mut self, f: &Frame) {
        if self.open
            && let Some(bytes) = encode_frame(f)
        {
            self.to_host.extend_from_slice(&bytes);
        }
    }

    /// Bytes for the host, in order.
    pub fn take_to_host(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_host)
    }

    /// Frames the host sent, for the bus, in order.
    pub fn take_to_bus(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.to_bus)
    }

    /// The commands (not frames) the host sent since the last call, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_session_as_python_can_runs_it() {
        let mut d = SlcanDevice::new();
        // python-can's slcan: close, bit rate, open; then a UDS request in a single frame.
        d.handle_bytes(b"C\rS6\rO\r");
        assert_eq!(d.take_to_host(), b"\r\r\r");
        assert_eq!(d.bitrate(), 500_000);
        assert!(d.is_open());
        d.handle_bytes(b"t7E0");
        d.handle_bytes(b"8021003AAAAAAAAAA\r");
        assert_eq!(d.take_to_host(), b"z\r");
        assert_eq!(
            d.take_to_bus(),
            vec![Frame::classic(
                0x7E0,
                vec![0x02, 0x10, 0x03, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]
            )]
        );
        d.handle_frame(&Frame::classic(
            0x7E8,
            vec![0x06, 0x50, 0x03, 0, 0x32, 0x01, 0xF4, 0xAA],
        ));
        assert_eq!(d.take_to_host(), b"t7E88065003003201F4AA\r");
        d.handle_bytes(b"T18DA10F1");
        d.handle_bytes(b"3010203\n");
        assert_eq!(d.take_to_host(), b"Z\r");
        assert_eq!(
            d.take_to_bus()[0],
            Frame::classic(0x18DA10F1, vec![1, 2, 3])
        );
        d.handle_bytes(b"V\rN\rF\rZ1\rC\r");
        assert_eq!(d.take_to_host(), b"V1013\rNHIL1\rF00\r\r\r");
        d.handle_frame(&Frame::classic(0x7E8, vec![1]));
        assert!(
            d.take_to_host().is_empty(),
            "closed: nothing reaches the host"
        );
    }

    #[test]
    fn a_session_as_slcand_and_the_kernels_slcan_driver_run_it() {
        let mut d = SlcanDevice::new();
        // `slcand -o -c -f -s6 PTY slcan0`: close, bit rate, status flags (while closed), open.
        d.handle_bytes(b"C\rS6\rF\rO\r");
        assert_eq!(d.take_to_host(), b"\r\rF00\r\r");
        assert!(d.is_open());
        let line = |l: &str| Command {
            line: l.into(),
            accepted: true,
        };
        assert_eq!(
            d.take_commands(),
            [line("C"), line("S6"), line("F"), line("O")]
        );
        // The kernel's driver writes frames in upper-case hex; frames are not commands.
        d.handle_bytes(b"t7E08021003AAAAAAAAAA\r");
        assert_eq!(d.take_to_host(), b"z\r");
        assert_eq!(d.take_to_bus().len(), 1);
        assert!(d.take_commands().is_empty());
        d.handle_bytes(b"S6\r\xff\r");
        assert_eq!(d.take_to_host(), b"\x07\x07", "no bit rate while open");
        assert_eq!(
            d.take_commands(),
            [
                Command {
                    line: "S6".into(),
                    accepted: false
                },
                Command {
                    line: "\\xff".into(),
                    accepted: false
                }
            ]
        );
    }

    #[test]
    fn refusals_ring_the_bell() {
        let mut d = SlcanDevice::new();
        for bad in [
            &b"t7E01AA\r"[..], // closed
            b"S9\r",
            b"O\rS6\r",   // bit rate while open
            b"t80001\r",  // 11-bit id too large
            b"t7E09\r",   // length 9
            b"t7E02AA\r", // too few data bytes
            b"r7E00\r",   // remote frames
            b"X\r",
        ] {
            d.handle_bytes(bad);
        }
        let out = d.take_to_host();
        assert_eq!(out.iter().filter(|&&b| b == 0x07).count(), 8, "{out:?}");
        assert!(d.take_to_bus().is_empty());
        let mut long = vec![b't'; 200];
        long.push(b'\r');
        d.handle_bytes(&long);
        assert_eq!(
            d.take_to_host(),
            b"\x07",
            "an overlong line is refused whole"
        );
    }

    #[test]
    fn listen_only_sends_nothing() {
        let mut d = SlcanDevice::new();
        d.handle_bytes(b"L\rt1230\r");
        assert_eq!(d.take_to_host(), b"\r\x07");
        assert!(d.take_to_bus().is_empty());
        d.handle_frame(&Frame::classic(0x123, vec![]));
        assert_eq!(d.take_to_host(), b"t1230\r");
    }

    proptest! {
        /// Any bytes, in any chunks: never a panic, and every frame sent is one it accepted.
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
            let mut d = SlcanDevice::new();
            let cut = cut.min(bytes.len());
            d.handle_bytes(&bytes[..cut]);
            d.handle_bytes(&bytes[cut..]);
            for f in d.take_to_bus() {
                prop_assert!(f.data.len() <= 8);
                let mut text = encode_frame(&f).unwrap();
                text.pop();
                prop_assert_eq!(decode_frame(&text), Some(f));
            }
        }

        /// Frames round-trip through their ASCII form.
        #[test]
        fn frames_round_trip(id in 0u32..=MAX_EXT_ID, ext in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..=8)) {
            let id = if ext { id } else { id & MAX_STD_ID };
            let f = Frame { id, extended: ext, fd: false, data };
            let mut text = encode_frame(&f).unwrap();
            prop_assert_eq!(text.pop(), Some(b'\r'));
            prop_assert_eq!(decode_frame(&text), Some(f));
        }
    }
}
