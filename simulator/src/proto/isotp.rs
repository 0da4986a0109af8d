//! ISO-TP (ISO 15765-2) transport, sans-IO: CAN frames and the current time in, CAN frames,
//! deadlines and events out. It never reads a clock or touches a socket.
//!
//! ## Driving it
//!
//! 1. feed every received frame for this connection to [`IsoTp::handle_frame`];
//! 2. call [`IsoTp::handle_timeout`] when the time from [`IsoTp::poll_timeout`] has come;
//! 3. drain [`IsoTp::poll_transmit`] (frames due now) and [`IsoTp::poll_event`] (messages
//!    received, transfers done, errors) after each of the above and after [`IsoTp::send`].
//!
//! ## Frames (N_PCI, first byte(s) of the CAN payload)
//!
//! | type | bytes | meaning |
//! |---|---|---|
//! | single | `0L` (L = 1..7) | whole message in one frame |
//! | single, CAN FD | `00 LL` (LL = 8..62) | escape form for longer single frames |
//! | first | `1L LL` (12-bit length 8..4095) | start of a segmented message |
//! | first, escape | `10 00 LLLLLLLL` (32-bit length) | messages over 4095 bytes |
//! | consecutive | `2N` (N = sequence number, 1, 2, …, 15, 0, 1, …) | next segment |
//! | flow control | `3S BS ST` | S: 0 continue, 1 wait, 2 overflow; BS block size (0 = no limit); ST separation time |
//!
//! ## Addressing
//!
//! | [`Addressing`] | CAN payload | bytes for N_PCI + data per frame (classic / FD) |
//! |---|---|---|
//! | `Normal` | `PCI …` | 8 / 64 |
//! | `Extended { tx_ta, rx_ta }` | `TA PCI …` (TA: target address byte) | 7 / 63 |
//!
//! With extended addressing every frame we send starts with `tx_ta`; received frames whose first
//! byte is not `rx_ta` are ignored (they are for another node on the same CAN id). The frame
//! types above, padding, flow control (continue, wait, overflow) and the 32-bit first-frame
//! escape work the same after the address byte; only the room per frame shrinks by one, so a
//! classic single frame holds up to 6 bytes and the shortest segmented message is 7 bytes.
//!
//! ## Frame lengths
//!
//! | bus | padding `Some(b)` | padding `None` |
//! |---|---|---|
//! | classic | every frame padded to 8 bytes with `b` | frames as short as their content |
//! | CAN FD | up to 8 bytes: padded to 8; longer: padded to the next valid FD length (12, 16, 20, 24, 32, 48, 64) with `b` | up to 8 bytes: as short as their content; longer: padded to the next valid FD length with `0xCC` (CAN FD has no other lengths) |
//!
//! ## Timing (microseconds, configurable)
//!
//! | timer | default | runs while |
//! |---|---|---|
//! | N_Bs | 1 000 000 | the sender waits for a flow control frame |
//! | N_Cr | 1 000 000 | the receiver waits for the next consecutive frame |
//! | STmin | from the peer's flow control | between two consecutive frames we send |
//!
//! STmin encoding: `0x00..=0x7F` milliseconds, `0xF1..=0xF9` 100–900 µs, anything else is
//! treated as 127 ms (as the standard requires).

use std::collections::VecDeque;

/// A CAN (or CAN FD) frame on one identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u32,
    pub data: Vec<u8>,
}

/// How a frame names its target beyond the CAN id (ISO 15765-2 addressing formats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Addressing {
    /// The whole payload is N_PCI and data.
    #[default]
    Normal,
    /// The first payload byte is a target address: `tx_ta` on frames we send, and only frames
    /// starting with `rx_ta` are ours.
    Extended { tx_ta: u8, rx_ta: u8 },
}

impl Addressing {
    /// Bytes in front of the N_PCI: 0 or 1.
    pub fn prefix_len(self) -> usize {
        match self {
            Addressing::Normal => 0,
            Addressing::Extended { .. } => 1,
        }
    }
}

/// The valid CAN FD data lengths (DLC 8..=15 above 8 bytes).
pub const FD_LENGTHS: [usize; 8] = [8, 12, 16, 20, 24, 32, 48, 64];

/// The shortest valid CAN FD data length that holds `len` bytes (`len` itself up to 8).
pub fn fd_length(len: usize) -> usize {
    if len <= 8 {
        return len;
    }
    FD_LENGTHS.into_iter().find(|&l| l >= len).unwrap_or(64)
}

/// Settings of one ISO-TP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Identifier we send on.
    pub tx_id: u32,
    /// Identifier we receive on; frames with other ids are ignored.
    pub rx_id: u32,
    /// CAN FD: frames of up to 64 bytes.
    pub fd: bool,
    /// Pad frames with this byte: classic CAN to 8 bytes, CAN FD to at least 8 and then to
    /// the next valid FD length (see *Frame lengths* above).
    pub padding: Option<u8>,
    /// Block size we ask senders for (0 = all frames without further flow control).
    pub block_size: u8,
    /// STmin byte we ask senders for.
    pub st_min: u8,
    /// Largest message we accept; longer first frames get a flow control *overflow*.
    pub max_message: usize,
    pub n_bs_us: u64,
    pub n_cr_us: u64,
    /// Normal or extended addressing.
    pub addressing: Addressing,
}

impl Config {
    /// Classic CAN with the usual diagnostic defaults.
    pub fn new(tx_id: u32, rx_id: u32) -> Self {
        Config {
            tx_id,
            rx_id,
            fd: false,
            padding: Some(0xCC),
            block_size: 0,
            st_min: 0,
            max_message: 4095,
            n_bs_us: 1_000_000,
            n_cr_us: 1_000_000,
            addressing: Addressing::Normal,
        }
    }
    /// Room for N_PCI and data in one frame (after the address byte, if any).
    fn frame_len(&self) -> usize {
        (if self.fd { 64 } else { 8 }) - self.addressing.prefix_len()
    }
}

/// What went wrong on the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsoTpError {
    #[error("no flow control within N_Bs")]
    FlowControlTimeout,
    #[error("no consecutive frame within N_Cr")]
    ConsecutiveTimeout,
    #[error("consecutive frame {got} out of sequence (expected {expected})")]
    WrongSequence { expected: u8, got: u8 },
    #[error("peer refused a {len}-byte message (flow control overflow)")]
    PeerOverflow { len: usize },
    #[error("first frame announces {len} bytes, more than the {max} we accept")]
    TooLarge { len: usize, max: usize },
    #[error("a transfer is already in progress")]
    Busy,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("new message started before the previous one was complete")]
    Interrupted,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete message arrived.
    Received(Vec<u8>),
    /// Our message was sent completely.
    Sent,
    Error(IsoTpError),
}

#[derive(Clone, Debug)]
enum Tx {
    Idle,
    /// Waiting for flow control (deadline N_Bs); `not_before`: STmin after our last
    /// consecutive frame still applies to the next one.
    AwaitFc {
        msg: Vec<u8>,
        pos: usize,
        sn: u8,
        deadline: u64,
        not_before: u64,
    },
    /// Sending consecutive frames.
    Sending {
        msg: Vec<u8>,
        pos: usize,
        sn: u8,
        /// Frames left in this block (None = unlimited).
        left: Option<u8>,
        st_min_us: u64,
        next_at: u64,
    },
}

#[derive(Clone, Debug)]
enum Rx {
    Idle,
    Receiving {
        msg: Vec<u8>,
        len: usize,
        sn: u8,
        left: Option<u8>,
        deadline: u64,
    },
}

/// One ISO-TP connection endpoint.
#[derive(Clone, Debug)]
pub struct IsoTp {
    cfg: Config,
    tx: Tx,
    rx: Rx,
    out: VecDeque<Frame>,
    events: VecDeque<Event>,
}

/// Decode an STmin byte to microseconds.
pub fn st_min_us(b: u8) -> u64 {
    match b {
        0x00..=0x7F => u64::from(b) * 1000,
        0xF1..=0xF9 => u64::from(b - 0xF0) * 100,
        _ => 127_000,
    }
}

impl IsoTp {
    pub fn new(cfg: Config) -> Self {
        IsoTp {
            cfg,
            tx: Tx::Idle,
            rx: Rx::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Queue a frame whose N_PCI and data are `pdu`: address byte in front, padding behind.
    fn push(&mut self, pdu: &[u8]) {
        let mut data = Vec::with_capacity(if self.cfg.fd { 64 } else { 8 });
        if let Addressing::Extended { tx_ta, .. } = self.cfg.addressing {
            data.push(tx_ta);
        }
        data.extend_from_slice(pdu);
        let target = match (self.cfg.fd, self.cfg.padding) {
            (false, Some(_)) => 8,
            (true, Some(_)) => fd_length(data.len().max(8)),
            (_, None) => fd_length(data.len()),
        };
        data.resize(target.max(data.len()), self.cfg.padding.unwrap_or(0xCC));
        self.out.push_back(Frame {
            id: self.cfg.tx_id,
            data,
        });
    }

    /// Start sending `msg`.
    pub fn send(&mut self, now: u64, msg: &[u8]) -> Result<(), IsoTpError> {
        if !matches!(self.tx, Tx::Idle) {
            return Err(IsoTpError::Busy);
        }
        if msg.is_empty() {
            return Err(IsoTpError::Malformed("empty message"));
        }
        let fl = self.cfg.frame_len();
        // A short single frame fits a classic 8-byte frame: 7 bytes, 6 after an address byte.
        if msg.len() < 8 - self.cfg.addressing.prefix_len() {
            let mut d = vec![msg.len() as u8];
            d.extend_from_slice(msg);
            self.push(&d);
            self.events.push_back(Event::Sent);
            return Ok(());
        }
        if self.cfg.fd && msg.len() <= fl - 2 {
            let mut d = vec![0x00, msg.len() as u8];
            d.extend_from_slice(msg);
            self.push(&d);
            self.events.push_back(Event::Sent);
            return Ok(());
        }
        let (mut d, header) = if msg.len() <= 4095 {
            (vec![0x10 | (msg.len() >> 8) as u8, msg.len() as u8], 2)
        } else {
            let len = u32::try_from(msg.len())
                .map_err(|_| IsoTpError::Malformed("message over 4 GiB"))?;
            let mut d = vec![0x10, 0x00];
            d.extend_from_slice(&len.to_be_bytes());
            (d, 6)
        };
        let first = fl - header;
        d.extend_from_slice(&msg[..first]);
        self.push(&d);
        self.tx = Tx::AwaitFc {
            msg: msg.to_vec(),
            pos: first,
            sn: 1,
            deadline: now + self.cfg.n_bs_us,
            not_before: now,
        };
        Ok(())
    }

    /// Feed a received frame.
    pub fn handle_frame(&mut self, now: u64, frame: &Frame) {
        if frame.id != self.cfg.rx_id {
            return;
        }
        let d = match self.cfg.addressing {
            Addressing::Normal => &frame.data[..],
            Addressing::Extended { rx_ta, .. } => match frame.data.split_first() {
                Some((&ta, rest)) if ta == rx_ta => rest,
                _ => return, // Another node's frame (or no address byte at all).
            },
        };
        let can_dl = frame.data.len();
        let Some(&pci) = d.first() else {
            return self
                .events
                .push_back(Event::Error(IsoTpError::Malformed("empty frame")));
        };
        match pci >> 4 {
            0 => self.on_single(d, can_dl),
            1 => self.on_first(now, d),
            2 => self.on_consecutive(now, pci & 0x0F, &d[1..]),
            3 => self.on_flow_control(now, d),
            _ => self
                .events
                .push_back(Event::Error(IsoTpError::Malformed("unknown frame type"))),
        }
    }

    fn start_rx(&mut self) {
        if matches!(self.rx, Rx::Receiving { .. }) {
            self.events.push_back(Event::Error(IsoTpError::Interrupted));
        }
        self.rx = Rx::Idle;
    }

    /// `d`: N_PCI onwards; `can_dl`: the whole CAN payload length (the escape form is only
    /// valid in CAN FD frames longer than 8 bytes).
    fn on_single(&mut self, d: &[u8], can_dl: usize) {
        let (len, start) = match d[0] & 0x0F {
            0 if self.cfg.fd && can_dl > 8 => (usize::from(*d.get(1).unwrap_or(&0)), 2),
            0 => {
                return self.events.push_back(Event::Error(IsoTpError::Malformed(
                    "single frame of length 0",
                )));
            }
            l => (usize::from(l), 1),
        };
        if len == 0 || start + len > d.len() {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "single frame shorter than its length",
            )));
        }
        self.start_rx();
        self.events
            .push_back(Event::Received(d[start..start + len].to_vec()));
    }

    fn on_first(&mut self, now: u64, d: &[u8]) {
        // A first frame fills a whole classic frame: 8 bytes, 7 after an address byte.
        let min = 8 - self.cfg.addressing.prefix_len();
        if d.len() < min {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "first frame shorter than a full frame",
            )));
        }
        let short = (usize::from(d[0] & 0x0F) << 8) | usize::from(d[1]);
        let (len, start) = if short == 0 {
            (u32::from_be_bytes([d[2], d[3], d[4], d[5]]) as usize, 6)
        } else {
            (short, 2)
        };
        if len < min {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "first frame announces a message that fits a single frame",
            )));
        }
        self.start_rx();
        if len > self.cfg.max_message {
            self.push(&[0x32, 0, 0]);
            return self.events.push_back(Event::Error(IsoTpError::TooLarge {
                len,
                max: self.cfg.max_message,
            }));
        }
        let take = (d.len() - start).min(len);
        self.rx = Rx::Receiving {
            msg: d[start..start + take].to_vec(),
            len,
            sn: 1,
            left: (self.cfg.block_size > 0).then_some(self.cfg.block_size),
            deadline: now + self.cfg.n_cr_us,
        };
        self.push(&[0x30, self.cfg.block_size, self.cfg.st_min]);
    }

    fn on_consecutive(&mut self, now: u64, got: u8, data: &[u8]) {
        let Rx::Receiving {
            msg,
            len,
            sn,
            left,
            deadline,
        } = &mut self.rx
        else {
            return; // Stray consecutive frame: ignored, as the standard says.
        };
        if got != *sn {
            let expected = *sn;
            self.rx = Rx::Idle;
            return self
                .events
                .push_back(Event::Error(IsoTpError::WrongSequence { expected, got }));
        }
        let take = (*len - msg.len()).min(data.len());
        msg.extend_from_slice(&data[..take]);
        *sn = (*sn + 1) & 0x0F;
        *deadline = now + self.cfg.n_cr_us;
        if msg.len() == *len {
            let done = std::mem::take(msg);
            self.rx = Rx::Idle;
            return self.events.push_back(Event::Received(done));
        }
        if let Some(l) = left {
            *l -= 1;
            if *l == 0 {
                *l = self.cfg.block_size;
                let fc = [0x30, self.cfg.block_size, self.cfg.st_min];
                self.push(&fc);
            }
        }
    }

    fn on_flow_control(&mut self, now: u64, d: &[u8]) {
        let Tx::AwaitFc {
            msg,
            pos,
            sn,
            not_before,
            ..
        } = &mut self.tx
        else {
            return; // Not waiting: ignored.
        };
        if d.len() < 3 {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "flow control shorter than 3 bytes",
            )));
        }
        match d[0] & 0x0F {
            0 => {
                let (msg, pos, sn, not_before) = (std::mem::take(msg), *pos, *sn, *not_before);
                self.tx = Tx::Sending {
                    msg,
                    pos,
                    sn,
                    left: (d[1] > 0).then_some(d[1]),
                    st_min_us: st_min_us(d[2]),
                    next_at: now.max(not_before),
                };
            }
            1 => {
                if let Tx::AwaitFc { deadline, .. } = &mut self.tx {
                    *deadline = now + self.cfg.n_bs_us;
                }
            }
            2 => {
                let len = msg.len();
                self.tx = Tx::Idle;
                self.events
                    .push_back(Event::Error(IsoTpError::PeerOverflow { len }));
            }
            _ => self
                .events
                .push_back(Event::Error(IsoTpError::Malformed("bad flow status"))),
        }
    }

    /// The next frame due at `now`, if any.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Frame> {
        if let Some(f) = self.out.pop_front() {
            return Some(f);
        }
        let fl = self.cfg.frame_len();
        let n_bs = self.cfg.n_bs_us;
        let Tx::Sending {
            msg,
            pos,
            sn,
            left,
            st_min_us,
            next_at,
        } = &mut self.tx
        else {
            return None;
        };
        if now < *next_at {
            return None;
        }
        let take = (msg.len() - *pos).min(fl - 1);
        let mut d = [0u8; 64];
        d[0] = 0x20 | *sn;
        d[1..=take].copy_from_slice(&msg[*pos..*pos + take]);
        *pos += take;
        *sn = (*sn + 1) & 0x0F;
        *next_at = now + *st_min_us;
        if *pos == msg.len() {
            self.tx = Tx::Idle;
            self.events.push_back(Event::Sent);
        } else if let Some(l) = left {
            *l -= 1;
            if *l == 0 {
                let (msg, pos, sn, not_before) = (std::mem::take(msg), *pos, *sn, *next_at);
                self.tx = Tx::AwaitFc {
                    msg,
                    pos,
                    sn,
                    deadline: now + n_bs,
                    not_before,
                };
            }
        }
        self.push(&d[..=take]);
        self.out.pop_front()
    }

    /// When [`IsoTp::handle_timeout`] or [`IsoTp::poll_transmit`] next has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let tx = match &self.tx {
            Tx::AwaitFc { deadline, .. } => Some(*deadline),
            Tx::Sending { next_at, .. } => Some(*next_at),
            Tx::Idle => None,
        };
        let rx = match &self.rx {
            Rx::Receiving { deadline, .. } => Some(*deadline),
            Rx::Idle => None,
        };
        tx.into_iter().chain(rx).min()
    }

    /// Expire the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        if let Tx::AwaitFc { deadline, .. } = self.tx
            && now >= deadline
        {
            self.tx = Tx::Idle;
            self.events
                .push_back(Event::Error(IsoTpError::FlowControlTimeout));
        }
        if let Rx::Receiving { deadline, .. } = self.rx
            && now >= deadline
        {
            self.rx = Rx::Idle;
            self.events
                .push_back(Event::Error(IsoTpError::ConsecutiveTimeout));
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn pair(fd: bool, bs: u8, st: u8) -> (IsoTp, IsoTp) {
        let mut a = Config::new(0x7E0, 0x7E8);
        let mut b = Config::new(0x7E8, 0x7E0);
        for c in [&mut a, &mut b] {
            c.fd = fd;
            c.block_size = bs;
            c.st_min = st;
            c.max_message = 8192;
        }
        (IsoTp::new(a), IsoTp::new(b))
    }

    /// Shuttle frames between two endpoints in virtual time until both are quiet.
    fn run(a: &mut IsoTp, b: &mut IsoTp, mut now: u64) -> (Vec<Event>, Vec<Event>, u64, usize) {
        let (mut ea, mut eb, mut frames) = (Vec::new(), Vec::new(), 0);
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(f) = a.poll_transmit(now) {
                b.handle_frame(now, &f);
                frames += 1;
                moved = true;
            }
            while let Some(f) = b.poll_transmit(now) {
                a.handle_frame(now, &f);
                frames += 1;
                moved = true;
            }
            ea.extend(std::iter::from_fn(|| a.poll_event()));
            eb.extend(std::iter::from_fn(|| b.poll_event()));
            if !moved {
                match [a.poll_timeout(), b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                {
                    Some(t) if t > now => now = t,
                    Some(_) => {
                        a.handle_timeout(now);
                        b.handle_timeout(now);
                        if a.poll_timeout().is_none_or(|t| t > now)
                            && b.poll_timeout().is_none_or(|t| t > now)
                        {
                            continue;
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
        (ea, eb, now, frames)
    }

    #[test]
    fn single_frame_wire_bytes() {
        let (mut a, _) = pair(false, 0, 0);
        a.send(0, &hex!("22 f1 90")).unwrap();
        assert_eq!(
            a.poll_transmit(0).unwrap().data,
            hex!("03 22 f1 90 cc cc cc cc")
        );
        assert_eq!(a.poll_event(), Some(Event::Sent));
    }

    #[test]
    fn segmented_transfer_round_trips_with_flow_control() {
        for (fd, bs, st, len) in [
            (false, 0, 0, 100usize),
            (false, 4, 5, 1000),
            (false, 1, 0xF3, 4095),
            (true, 2, 1, 3000),
            (false, 0, 0, 5000),
        ] {
            let (mut a, mut b) = pair(fd, bs, st);
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            a.send(0, &msg).unwrap();
            let (ea, eb, end, _) = run(&mut a, &mut b, 0);
            assert_eq!(ea, vec![Event::Sent], "fd {fd} bs {bs}");
            assert_eq!(
                eb,
                vec![Event::Received(msg.clone())],
                "fd {fd} bs {bs} len {len}"
            );
            let frames_after_first = len.div_ceil(if fd { 63 } else { 7 }) as u64 - 1;
            assert!(
                end >= st_min_us(st) * frames_after_first.saturating_sub(1),
                "STmin honoured: {end}"
            );
        }
    }

    #[test]
    fn first_frame_and_flow_control_bytes() {
        let (mut a, mut b) = pair(false, 8, 20);
        a.send(0, &[0xAB; 20]).unwrap();
        let ff = a.poll_transmit(0).unwrap();
        assert_eq!(ff.data, hex!("10 14 ab ab ab ab ab ab"));
        b.handle_frame(0, &ff);
        assert_eq!(
            b.poll_transmit(0).unwrap().data,
            hex!("30 08 14 cc cc cc cc cc")
        );
        assert_eq!(a.poll_transmit(0), None, "nothing before flow control");
    }

    #[test]
    fn errors_are_named() {
        // No flow control: N_Bs.
        let (mut a, _) = pair(false, 0, 0);
        a.send(0, &[1; 20]).unwrap();
        a.poll_transmit(0);
        assert_eq!(a.poll_timeout(), Some(1_000_000));
        a.handle_timeout(1_000_000);
        assert_eq!(
            a.poll_event(),
            Some(Event::Error(IsoTpError::FlowControlTimeout))
        );
        // Receiver: wrong sequence number, then N_Cr.
        let (_, mut b) = pair(false, 0, 0);
        let f = |d: &[u8]| Frame {
            id: 0x7E0,
            data: d.to_vec(),
        };
        b.handle_frame(0, &f(&hex!("10 14 01 02 03 04 05 06")));
        b.handle_frame(1, &f(&hex!("22 07 08 09 0a 0b 0c 0d")));
        assert_eq!(
            b.poll_event(),
            Some(Event::Error(IsoTpError::WrongSequence {
                expected: 1,
                got: 2
            }))
        );
        b.handle_frame(2, &f(&hex!("10 14 01 02 03 04 05 06")));
        b.handle_timeout(2 + 1_000_000);
        assert_eq!(
            b.poll_event(),
            Some(Event::Error(IsoTpError::ConsecutiveTimeout))
        );
        // Too large: flow control overflow and a named error on both sides.
        let (mut a, mut b) = pair(false, 0, 0);
        b.cfg.max_message = 100;
        a.send(0, &[0; 200]).unwrap();
        let (ea, eb, _, _) = run(&mut a, &mut b, 0);
        assert_eq!(
            ea,
            vec![Event::Error(IsoTpError::PeerOverflow { len: 200 })]
        );
        assert_eq!(
            eb,
            vec![Event::Error(IsoTpError::TooLarge { len: 200, max: 100 })]
        );
        assert_eq!(a.send(0, &[]), Err(IsoTpError::Malformed("empty message")));
        let (mut a, _) = pair(false, 0, 0);
        a.send(0, &[0; 20]).unwrap();
        assert_eq!(a.send(0, &[1]), Err(IsoTpError::Busy));
        let mut b = pair(false, 0, 0).1;
        b.handle_frame(0, &f(&hex!("00")));
        b.handle_frame(0, &f(&hex!("05 01")));
        b.handle_frame(0, &f(&hex!("10 03 01 02 03 04 05 06")));
        assert_eq!(std::iter::from_fn(|| b.poll_event()).count(), 3);
    }

    #[test]
    fn wait_frames_extend_n_bs() {
        let (mut a, _) = pair(false, 0, 0);
        a.send(0, &[1; 20]).unwrap();
        a.poll_transmit(0);
        a.handle_frame(
            900_000,
            &Frame {
                id: 0x7E8,
                data: hex!("31 00 00").to_vec(),
            },
        );
        a.handle_timeout(1_000_000);
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.poll_timeout(), Some(1_900_000));
    }

    #[test]
    fn st_min_encoding() {
        assert_eq!(st_min_us(0x00), 0);
        assert_eq!(st_min_us(0x7F), 127_000);
        assert_eq!(st_min_us(0xF1), 100);
        assert_eq!(st_min_us(0xF9), 900);
        assert_eq!(st_min_us(0x80), 127_000);
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let mut b = pair(true, 3, 0).1;
        let mut x: u32 = 1;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 65) as usize;
            let data: Vec<u8> = (0..len).map(|k| (x >> (k % 24)) as u8 ^ k as u8).collect();
            b.handle_frame(i, &Frame { id: 0x7E0, data });
            b.handle_timeout(i);
            while b.poll_transmit(i).is_some() {}
            while b.poll_event().is_some() {}
        }
    }

    /// Tester (0x6F1, target 0x12) and ECU (0x612, target 0xF1) with extended addressing.
    fn ext_pair(fd: bool, padding: Option<u8>) -> (IsoTp, IsoTp) {
        let mut a = Config::new(0x6F1, 0x612);
        a.addressing = Addressing::Extended {
            tx_ta: 0x12,
            rx_ta: 0xF1,
        };
        let mut b = Config::new(0x612, 0x6F1);
        b.addressing = Addressing::Extended {
            tx_ta: 0xF1,
            rx_ta: 0x12,
        };
        for c in [&mut a, &mut b] {
            c.fd = fd;
            c.padding = padding;
            c.max_message = 8192;
        }
        (IsoTp::new(a), IsoTp::new(b))
    }

    fn frame(id: u32, data: &[u8]) -> Frame {
        Frame {
            id,
            data: data.to_vec(),
        }
    }

    #[test]
    fn extended_addressing_wire_bytes() {
        let (mut a, mut b) = ext_pair(false, Some(0xCC));
        // Single frame: TA, then at most 6 bytes.
        a.send(0, &hex!("22 f1 90")).unwrap();
        let sf = a.poll_transmit(0).unwrap();
        assert_eq!(
            (sf.id, &sf.data[..]),
            (0x6F1, &hex!("12 03 22 f1 90 cc cc cc")[..])
        );
        b.handle_frame(0, &sf);
        assert_eq!(
            b.poll_event(),
            Some(Event::Received(hex!("22 f1 90").to_vec()))
        );
        a.poll_event();
        a.send(0, &hex!("01 02 03 04 05 06")).unwrap();
        assert_eq!(
            a.poll_transmit(0).unwrap().data,
            hex!("12 06 01 02 03 04 05 06")
        );
        a.poll_event();
        // Seven bytes no longer fit: first frame with 5 data bytes, flow control, one CF.
        a.send(0, &hex!("01 02 03 04 05 06 07")).unwrap();
        let ff = a.poll_transmit(0).unwrap();
        assert_eq!(ff.data, hex!("12 10 07 01 02 03 04 05"));
        // The same frame with another target address is not for b: no flow control.
        b.handle_frame(0, &frame(0x6F1, &hex!("13 10 07 01 02 03 04 05")));
        assert_eq!((b.poll_transmit(0), b.poll_event()), (None, None));
        b.handle_frame(0, &ff);
        let fc = b.poll_transmit(0).unwrap();
        assert_eq!(
            (fc.id, &fc.data[..]),
            (0x612, &hex!("f1 30 00 00 cc cc cc cc")[..])
        );
        a.handle_frame(0, &fc);
        let cf = a.poll_transmit(0).unwrap();
        assert_eq!(cf.data, hex!("12 21 06 07 cc cc cc cc"));
        b.handle_frame(0, &cf);
        assert_eq!(
            b.poll_event(),
            Some(Event::Received(hex!("01 02 03 04 05 06 07").to_vec()))
        );
        assert_eq!(a.poll_event(), Some(Event::Sent));
    }

    #[test]
    fn extended_addressing_flow_control_wait_and_overflow() {
        let (mut a, _) = ext_pair(false, Some(0xCC));
        a.send(0, &[7; 20]).unwrap();
        assert_eq!(
            a.poll_transmit(0).unwrap().data,
            hex!("12 10 14 07 07 07 07 07")
        );
        // WAIT from the right node restarts N_Bs; a WAIT with a foreign TA does not.
        a.handle_frame(500_000, &frame(0x612, &hex!("f1 31 00 00")));
        a.handle_frame(900_000, &frame(0x612, &hex!("f2 31 00 00")));
        assert_eq!(a.poll_timeout(), Some(1_500_000));
        // OVERFLOW ends the transfer with a named error.
        a.handle_frame(1_000_000, &frame(0x612, &hex!("f1 32 00 00")));
        assert_eq!(
            a.poll_event(),
            Some(Event::Error(IsoTpError::PeerOverflow { len: 20 }))
        );
        assert_eq!(a.poll_timeout(), None);
        // A receiver that refuses the length answers with an addressed overflow.
        let (mut a, mut b) = ext_pair(false, Some(0xCC));
        b.cfg.max_message = 100;
        a.send(0, &[0; 200]).unwrap();
        b.handle_frame(0, &a.poll_transmit(0).unwrap());
        assert_eq!(
            b.poll_transmit(0).unwrap().data,
            hex!("f1 32 00 00 cc cc cc cc")
        );
    }

    #[test]
    fn extended_addressing_first_frame_escape_over_4095_bytes() {
        let (mut a, mut b) = ext_pair(false, Some(0xCC));
        let msg: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        a.send(0, &msg).unwrap();
        // 5000 = 0x1388; 7 bytes after TA leave room for one data byte.
        let ff = a.poll_transmit(0).unwrap();
        assert_eq!(ff.data, hex!("12 10 00 00 00 13 88 00"));
        b.handle_frame(0, &ff);
        let (ea, eb, _, frames) = run(&mut a, &mut b, 0);
        assert_eq!((ea, eb), (vec![Event::Sent], vec![Event::Received(msg)]));
        // FF + FC + ceil(4999 / 6) CFs, of which the FF was shuttled by hand.
        assert_eq!(frames, 1 + 4999usize.div_ceil(6));
    }

    #[test]
    fn fd_frames_are_padded_to_valid_dlc_lengths() {
        // 20 bytes in one FD single frame: `00 14` + 20 = 22 bytes, padded to 24.
        let (mut a, _) = pair(true, 0, 0);
        a.cfg.padding = None;
        a.send(0, &[0x11; 20]).unwrap();
        let mut want = hex!("00 14").to_vec();
        want.extend([0x11; 20]);
        want.extend(hex!("cc cc"));
        assert_eq!(a.poll_transmit(0).unwrap().data, want);
        // Without padding a short frame stays short (any length up to 8 is a valid DLC).
        a.poll_event();
        a.send(0, &hex!("3e 00")).unwrap();
        assert_eq!(a.poll_transmit(0).unwrap().data, hex!("02 3e 00"));
        // Extended addressing, padding 0x55: 100 bytes = FF `TA 10 64` + 61, then CF `TA 21` +
        // 39 bytes = 41, padded to 48.
        let (mut a, mut b) = ext_pair(true, Some(0x55));
        let msg: Vec<u8> = (0..100u8).collect();
        a.send(0, &msg).unwrap();
        let ff = a.poll_transmit(0).unwrap();
        assert_eq!(ff.data.len(), 64);
        assert_eq!(ff.data[..4], hex!("12 10 64 00"));
        b.handle_frame(0, &ff);
        let fc = b.poll_transmit(0).unwrap();
        assert_eq!(fc.data, hex!("f1 30 00 00 55 55 55 55"));
        a.handle_frame(0, &fc);
        let cf = a.poll_transmit(0).unwrap();
        let mut want = hex!("12 21").to_vec();
        want.extend(61..100u8);
        want.extend([0x55; 7]);
        assert_eq!(cf.data, want);
        b.handle_frame(0, &cf);
        assert_eq!(b.poll_event(), Some(Event::Received(msg)));
        // Extended FD single frame at its largest: `TA 00 3D` + 61 bytes = 64.
        let (mut a, mut b) = ext_pair(true, None);
        a.send(0, &[0xEE; 61]).unwrap();
        let sf = a.poll_transmit(0).unwrap();
        assert_eq!(
            (sf.data.len(), &sf.data[..4]),
            (64, &hex!("12 00 3d ee")[..])
        );
        b.handle_frame(0, &sf);
        assert_eq!(b.poll_event(), Some(Event::Received(vec![0xEE; 61])));
    }

    #[test]
    fn every_frame_length_is_a_valid_dlc_length() {
        for ext in [false, true] {
            for padding in [None, Some(0xAA)] {
                for fd in [false, true] {
                    for len in 1..=300 {
                        let (mut a, mut b) = if ext {
                            ext_pair(fd, padding)
                        } else {
                            let (mut a, mut b) = pair(fd, 0, 0);
                            a.cfg.padding = padding;
                            b.cfg.padding = padding;
                            (a, b)
                        };
                        let msg = vec![0x5A; len];
                        a.send(0, &msg).unwrap();
                        let mut frames = Vec::new();
                        for _ in 0..400 {
                            let fa: Vec<_> = std::iter::from_fn(|| a.poll_transmit(0)).collect();
                            let fb: Vec<_> = std::iter::from_fn(|| b.poll_transmit(0)).collect();
                            if fa.is_empty() && fb.is_empty() {
                                break;
                            }
                            fa.iter().for_each(|f| b.handle_frame(0, f));
                            fb.iter().for_each(|f| a.handle_frame(0, f));
                            frames.extend(fa.into_iter().chain(fb));
                        }
                        assert_eq!(b.poll_event(), Some(Event::Received(msg)));
                        for f in frames {
                            let n = f.data.len();
                            let ok = if fd {
                                n <= 8 || FD_LENGTHS.contains(&n)
                            } else {
                                n <= 8
                            };
                            assert!(ok, "ext {ext} fd {fd} pad {padding:?} len {len}: {n}");
                            if padding.is_some() {
                                assert!(n >= 8, "padded frames are at least 8 bytes");
                            }
                        }
                    }
                }
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// A frame on one of a few ids; `ours` forces the extended address byte to match.
            Frame { id: u8, ours: bool, data: Vec<u8> },
            /// Time passes; timers run.
            Wait(u32),
            /// Our side starts a message.
            Send(u16),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u8..4, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..=64))
                    .prop_map(|(id, ours, data)| Op::Frame { id, ours, data }),
                2 => (0u32..3_000_000).prop_map(Op::Wait),
                1 => (0u16..10_000).prop_map(Op::Send),
            ]
        }

        fn config(fd: bool, ext: bool, bs: u8, st: u8, padding: Option<u8>) -> Config {
            let mut c = Config::new(0x7E0, 0x7E8);
            c.fd = fd;
            c.block_size = bs;
            c.st_min = st;
            c.padding = padding;
            c.max_message = 20_000;
            if ext {
                c.addressing = Addressing::Extended {
                    tx_ta: 0x01,
                    rx_ta: 0x02,
                };
            }
            c
        }

        proptest! {
            #[test]
            fn arbitrary_frame_sequences_never_panic(
                fd in any::<bool>(),
                ext in any::<bool>(),
                bs in 0u8..4,
                ops in proptest::collection::vec(op(), 0..200),
            ) {
                let mut tp = IsoTp::new(config(fd, ext, bs, 0, Some(0xCC)));
                let mut now = 0u64;
                for op in ops {
                    match op {
                        Op::Frame { id, ours, mut data } => {
                            let id = [0x7E8, 0x7E0, 0x7DF, 0x123][usize::from(id)];
                            if ext && ours && !data.is_empty() {
                                data[0] = 0x02;
                            }
                            tp.handle_frame(now, &Frame { id, data });
                        }
                        Op::Wait(us) => {
                            now += u64::from(us);
                            tp.handle_timeout(now);
                        }
                        Op::Send(len) => {
                            let _ = tp.send(now, &vec![0xA5; usize::from(len)]);
                        }
                    }
                    while let Some(f) = tp.poll_transmit(now) {
                        prop_assert!(f.data.len() <= 64);
                    }
                    while tp.poll_event().is_some() {}
                }
            }

            #[test]
            fn any_message_round_trips(
                len in 1usize..=20_000,
                fd in any::<bool>(),
                ext in any::<bool>(),
                bs in any::<u8>(),
                st in any::<u8>(),
                padding in proptest::option::of(any::<u8>()),
                seed in any::<u8>(),
            ) {
                let a = config(fd, ext, bs, st, padding);
                let mut b = config(fd, ext, bs, st, padding);
                std::mem::swap(&mut b.tx_id, &mut b.rx_id);
                if ext {
                    b.addressing = Addressing::Extended { tx_ta: 0x02, rx_ta: 0x01 };
                }
                let (mut a, mut b) = (IsoTp::new(a), IsoTp::new(b));
                let msg: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
                a.send(0, &msg).unwrap();
                let (ea, eb, _, _) = run(&mut a, &mut b, 0);
                prop_assert_eq!(ea, vec![Event::Sent]);
                prop_assert_eq!(eb, vec![Event::Received(msg)]);
            }
        }
    }
}
