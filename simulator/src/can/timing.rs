//! How long a frame occupies the bus: exact bit counts, stuff bits included.
//!
//! The stuff bits are counted exactly, by running the frame's real bit sequence (with its CRC)
//! through the stuffing rule, not estimated from a worst case.
//!
//! ## Classic CAN (11898-1), bits per frame
//!
//! | field | 11-bit id | 29-bit id | stuffed |
//! |---|---|---|---|
//! | SOF | 1 | 1 | yes |
//! | arbitration (id, SRR, IDE, RTR) | 12 + IDE 1 | 32 | yes |
//! | control (r1, r0, DLC) | 5 (r0 + DLC, IDE counted above) | 6 | yes |
//! | data | 8·n | 8·n | yes |
//! | CRC-15 | 15 | 15 | yes |
//! | CRC delimiter, ACK slot, ACK delimiter | 3 | 3 | no |
//! | EOF | 7 | 7 | no |
//! | intermission (IFS) | 3 | 3 | no |
//! | **total before stuffing** | **47 + 8·n** | **67 + 8·n** | |
//!
//! Stuffing: after five equal bits the transmitter inserts one of the opposite value, from SOF
//! to the end of the CRC (34 + 8·n bits for an 11-bit id, 54 + 8·n for 29-bit). The worst case
//! is ⌊(34 + 8·n − 1) / 4⌋ stuff bits, so an 8-byte 11-bit frame takes 111..=135 bits.
//!
//! ## CAN FD (ISO 11898-1:2015, ISO CRC)
//!
//! | field | 11-bit id | 29-bit id | rate |
//! |---|---|---|---|
//! | SOF, id, RRS/SRR, IDE, FDF, res, BRS | 17 | 36 | nominal |
//! | ESI, DLC | 5 | 5 | data |
//! | data | 8·n | 8·n | data |
//! | stuff count (4) + CRC (17 if n ≤ 16, else 21) + fixed stuff bits (6 / 7) | 27 / 32 | 27 / 32 | data |
//! | CRC delimiter, ACK, ACK delimiter, EOF, IFS | 13 | 13 | nominal |
//!
//! Dynamic stuff bits (SOF to the end of the data) are counted exactly and timed at the rate of
//! the bit that caused them; the CRC field has fixed stuff bits (one before the stuff count, one
//! after every fourth bit), so the CRC value does not change the length and is not computed.
//! The rate switches at whole bits: BRS and the CRC delimiter count at the nominal rate (the
//! standard switches at their sample points). Without a data bit rate (`brs: false`) every bit
//! is nominal.
//!
//! Delivery and the next arbitration both happen at the end of the slot (after the 3-bit
//! intermission), 3 nominal bits later than a real controller signals reception.
//!
//! ## Error frames
//!
//! A frame destroyed by an error frame occupies the bus up to its ACK delimiter (its total
//! minus EOF and IFS, 10 bits), then 6 bits of error flag, 8 of error delimiter and 3 of
//! intermission: [`FrameBits::with_error_frame`], 7 nominal bits more than the whole frame.

use super::frame::Frame;

/// The bits one frame puts on the bus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameBits {
    /// Bits at the nominal (arbitration) rate, stuff bits included.
    pub nominal: u32,
    /// Bits at the data rate (CAN FD with bit rate switch), stuff bits included.
    pub data: u32,
    /// Stuff bits among the above (dynamic and, for CAN FD, fixed).
    pub stuff: u32,
}

/// Bits after the CRC: CRC delimiter, ACK slot, ACK delimiter, EOF (7), intermission (3).
const TRAILER: u32 = 13;

/// Error flag (6) + error delimiter (8) + intermission (3) replace EOF (7) + intermission (3).
const ERROR_EXTRA: u32 = 6 + 8 + 3 - 7 - 3;

impl FrameBits {
    pub fn total(&self) -> u32 {
        self.nominal + self.data
    }

    /// The bits of a transmission attempt destroyed by an error frame after its ACK delimiter.
    pub fn with_error_frame(self) -> FrameBits {
        FrameBits {
            nominal: self.nominal + ERROR_EXTRA,
            ..self
        }
    }

    /// Nanoseconds on a bus with these bit rates (bit/s); each phase is rounded up.
    pub fn duration_ns(&self, bitrate: u32, data_bitrate: u32) -> u64 {
        let phase = |bits: u32, rate: u32| {
            (u64::from(bits) * 1_000_000_000).div_ceil(u64::from(rate.max(1)))
        };
        phase(self.nominal, bitrate) + phase(self.data, data_bitrate)
    }
}

/// The bit count of `frame`; `brs`: a CAN FD frame switches to the data bit rate.
pub fn frame_bits(frame: &Frame, brs: bool) -> FrameBits {
    let n = frame.data.len() as u32;
    let dlc = u64::from(frame.dlc());
    let id = u64::from(frame.id);
    let mut st = Stuffer::after_sof();
    if !frame.fd {
        // Header after SOF, MSB first.
        let (header, bits) = if frame.extended {
            // base 11, SRR 1, IDE 1, ext 18, RTR 0, r1 0, r0 0, DLC 4
            (
                (id >> 18) << 27 | 1 << 26 | 1 << 25 | (id & 0x3_FFFF) << 7 | dlc,
                38u32,
            )
        } else {
            // id 11, RTR 0, IDE 0, r0 0, DLC 4
            (id << 7 | dlc, 18)
        };
        // The CRC starts at 0 and SOF is 0: leading zeros leave it at 0, so SOF + header
        // padded with zeros to whole bytes gives the same CRC.
        let mut crc = Crc15::default();
        let padded_bytes = (bits + 1).div_ceil(8);
        for i in (0..padded_bytes).rev() {
            crc.byte((header >> (8 * i)) as u8);
        }
        st.bits(header, bits);
        for &byte in &frame.data {
            crc.byte(byte);
            st.byte(byte);
        }
        st.bits(u64::from(crc.0), 15);
        return FrameBits {
            nominal: 1 + bits + 8 * n + 15 + st.count + TRAILER,
            data: 0,
            stuff: st.count,
        };
    }
    let (arb, arb_bits) = if frame.extended {
        // base 11, SRR 1, IDE 1, ext 18, RRS 0, FDF 1, res 0, BRS
        (
            (id >> 18) << 24 | 1 << 23 | 1 << 22 | (id & 0x3_FFFF) << 4 | 1 << 2,
            35,
        )
    } else {
        // id 11, RRS 0, IDE 0, FDF 1, res 0, BRS
        (id << 5 | 1 << 2, 16)
    };
    st.bits(arb | u64::from(brs), arb_bits);
    let arb_stuff = st.count;
    // ESI 0, DLC 4
    st.bits(dlc, 5);
    for &byte in &frame.data {
        st.byte(byte);
    }
    let data_stuff = st.count - arb_stuff;
    let crc_field = if n <= 16 { 4 + 17 + 6 } else { 4 + 21 + 7 };
    let fixed = crc_field - if n <= 16 { 21 } else { 25 };
    let arbitration = 1 + arb_bits + arb_stuff + TRAILER;
    let data = 5 + 8 * n + data_stuff + crc_field;
    FrameBits {
        nominal: if brs { arbitration } else { arbitration + data },
        data: if brs { data } else { 0 },
        stuff: st.count + fixed,
    }
}

/// The stuffing rule as a state machine: last bit and the length of its run (1..=4).
#[derive(Clone, Copy, Debug)]
struct Stuffer {
    /// `last * 4 + run - 1`.
    state: u8,
    count: u32,
}

impl Stuffer {
    /// After the dominant SOF: a run of one 0.
    fn after_sof() -> Self {
        Stuffer { state: 0, count: 0 }
    }

    fn bit(&mut self, b: u8) {
        let (s, c) = stuff_step(self.state, b);
        self.state = s;
        self.count += u32::from(c);
    }

    /// The low `n` bits of `v`, most significant first: odd bits one by one, then bytes.
    fn bits(&mut self, v: u64, n: u32) {
        for i in (n / 8 * 8..n).rev() {
            self.bit((v >> i) as u8 & 1);
        }
        for i in (0..n / 8).rev() {
            self.byte((v >> (8 * i)) as u8);
        }
    }

    fn byte(&mut self, byte: u8) {
        let e = STUFF[usize::from(self.state)][usize::from(byte)];
        self.state = e & 0x0F;
        self.count += u32::from(e >> 4);
    }
}

/// One bit through the stuffer: the new state and whether a stuff bit followed it.
const fn stuff_step(state: u8, b: u8) -> (u8, u8) {
    let (last, run) = (state / 4, state % 4 + 1);
    if b != last {
        return (b * 4, 0);
    }
    if run == 4 {
        // Fifth equal bit: a stuff bit of the other value starts a new run.
        return ((1 - last) * 4, 1);
    }
    (last * 4 + run, 0)
}

/// Per state and byte: `stuff count << 4 | new state`.
static STUFF: [[u8; 256]; 8] = {
    let mut t = [[0u8; 256]; 8];
    let mut s = 0;
    while s < 8 {
        let mut byte = 0;
        while byte < 256 {
            let (mut state, mut count) = (s as u8, 0u8);
            let mut i = 0;
            while i < 8 {
                let (n, c) = stuff_step(state, (byte >> (7 - i)) as u8 & 1);
                state = n;
                count += c;
                i += 1;
            }
            t[s][byte] = count << 4 | state;
            byte += 1;
        }
        s += 1;
    }
    t
};

/// CRC-15/CAN: polynomial 0x4599, initial 0, MSB first.
#[derive(Clone, Copy, Debug, Default)]
struct Crc15(u16);

const CRC15_POLY: u16 = 0x4599;

static CRC15_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 7;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 0x4000 != 0 {
                (crc << 1) ^ CRC15_POLY
            } else {
                crc << 1
            } & 0x7FFF;
            k += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
};

impl Crc15 {
    #[cfg(test)]
    fn bit(&mut self, b: u8) {
        let top = (self.0 >> 14) as u8 & 1;
        self.0 = (self.0 << 1) & 0x7FFF;
        if top ^ b != 0 {
            self.0 ^= CRC15_POLY;
        }
    }

    fn byte(&mut self, byte: u8) {
        let idx = usize::from(((self.0 >> 7) as u8) ^ byte);
        self.0 = ((self.0 << 8) ^ CRC15_TABLE[idx]) & 0x7FFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// Reference: build the bit sequence and stuff it one bit at a time.
    fn reference_classic(frame: &Frame) -> u32 {
        let mut bits = vec![0u8]; // SOF
        let push = |bits: &mut Vec<u8>, v: u64, n: u32| {
            for i in (0..n).rev() {
                bits.push((v >> i) as u8 & 1);
            }
        };
        let id = u64::from(frame.id);
        if frame.extended {
            push(&mut bits, id >> 18, 11);
            push(&mut bits, 0b11, 2);
            push(&mut bits, id & 0x3FFFF, 18);
            push(&mut bits, 0, 3);
        } else {
            push(&mut bits, id, 11);
            push(&mut bits, 0, 3);
        }
        push(&mut bits, u64::from(frame.dlc()), 4);
        for &b in &frame.data {
            push(&mut bits, u64::from(b), 8);
        }
        let mut crc = 0u16;
        for &b in &bits {
            let x = ((crc >> 14) as u8 & 1) ^ b;
            crc = (crc << 1) & 0x7FFF;
            if x != 0 {
                crc ^= 0x4599;
            }
        }
        push(&mut bits, u64::from(crc), 15);
        let (mut run, mut last, mut stuff) = (0, 2u8, 0);
        for &b in &bits {
            if b == last {
                run += 1;
            } else {
                last = b;
                run = 1;
            }
            if run == 5 {
                stuff += 1;
                last ^= 1;
                run = 1;
            }
        }
        bits.len() as u32 + stuff + 13
    }

    #[test]
    fn crc15_check_value() {
        let mut c = Crc15::default();
        b"123456789".iter().for_each(|&b| c.byte(b));
        assert_eq!(c.0, 0x059E);
        let mut d = Crc15::default();
        for &byte in b"123456789" {
            for i in (0..8).rev() {
                d.bit(byte >> i & 1);
            }
        }
        assert_eq!(d.0, 0x059E);
    }

    #[test]
    fn classic_frame_bits_worked_examples() {
        // 0x7E8 `02 10 03 cc cc cc cc cc`: 111 bits before stuffing, 6 stuff bits (after
        // the id's six 1s, after `000` + RTR/IDE/r0, and four in the data and CRC).
        let f = Frame::classic(0x7E8, hex!("02 10 03 cc cc cc cc cc").to_vec());
        let bits = frame_bits(&f, false);
        assert_eq!(
            bits,
            FrameBits {
                nominal: 117,
                data: 0,
                stuff: 6
            }
        );
        assert_eq!(bits.duration_ns(500_000, 2_000_000), 234_000);
        // All-zero data on id 0: 111 + 16 stuff bits.
        let z = Frame::classic(0, vec![0; 8]);
        assert_eq!(
            frame_bits(&z, false),
            FrameBits {
                nominal: 127,
                data: 0,
                stuff: 16
            }
        );
        assert_eq!(reference_classic(&z), 127);
        // Empty frame, 29-bit id.
        let e = Frame::classic(0x18DA_F110, vec![]);
        assert_eq!(
            frame_bits(&e, false).total() - frame_bits(&e, false).stuff,
            67
        );
    }

    #[test]
    fn fd_frame_bits_worked_examples() {
        // Id 0x555 and 64 bytes of 0x55 never need a dynamic stuff bit: 17 + 13 nominal,
        // 5 + 512 + 32 data (7 of them fixed stuff bits).
        let f = Frame::fd(0x555, vec![0x55; 64]);
        let bits = frame_bits(&f, true);
        assert_eq!(
            bits,
            FrameBits {
                nominal: 30,
                data: 549,
                stuff: 7
            }
        );
        // At 500k / 2M: 30 · 2 µs + 549 · 0.5 µs = 334.5 µs.
        assert_eq!(bits.duration_ns(500_000, 2_000_000), 334_500);
        // Without the bit rate switch the same bits are all nominal.
        let slow = frame_bits(&f, false);
        assert_eq!((slow.nominal, slow.data), (579, 0));
        // 8 bytes: CRC-17 field (27 bits, 6 fixed stuff bits).
        let short = frame_bits(&Frame::fd(0x555, vec![0x55; 8]), true);
        assert_eq!(short.data, 5 + 64 + 27);
        // Error frame: 7 nominal bits more than the frame itself.
        assert_eq!(bits.with_error_frame().nominal, 37);
    }

    proptest! {
        #[test]
        fn classic_counts_match_reference_and_worst_case(
            id in 0u32..=0x1FFF_FFFF,
            ext in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
        ) {
            let mut f = Frame::classic(id, data);
            f.extended = ext;
            if !ext {
                f.id &= 0x7FF;
            }
            let bits = frame_bits(&f, false);
            prop_assert_eq!(bits.total(), reference_classic(&f));
            let n = f.data.len() as u32;
            let (base, stuffed) = if ext { (67, 54) } else { (47, 34) };
            prop_assert!(bits.stuff <= (stuffed + 8 * n - 1) / 4);
            prop_assert_eq!(bits.total(), base + 8 * n + bits.stuff);
        }

        #[test]
        fn fd_counts_are_bounded(
            id in 0u32..=0x7FF,
            len in prop::sample::select(vec![0usize, 1, 8, 12, 16, 20, 24, 32, 48, 64]),
            byte in any::<u8>(),
        ) {
            let f = Frame::fd(id, vec![byte; len]);
            let b = frame_bits(&f, true);
            let n = len as u32;
            let crc = if n <= 16 { 27 } else { 32 };
            prop_assert_eq!(b.nominal + b.data, 17 + 5 + 8 * n + crc + 13 + b.stuff - if n <= 16 { 6 } else { 7 });
            prop_assert!(b.stuff <= (22 + 8 * n) / 4 + 7);
        }
    }
}
