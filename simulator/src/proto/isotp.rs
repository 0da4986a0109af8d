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
    /// When the message received last (or the one arriving) began: its single or first frame.
    rx_started: u64,
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
            rx_started: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// When the message received last ([`Event::Received`]), or the one arriving, began: the
    /// time of its single frame or first frame. A segmented request is in progress from its
    /// first frame on (ISO 14229-2 stops the server's S3 timer there).
    pub fn rx_started(&self) -> u64 {
        self.rx_started
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
            0 => self.on_single(now, d, can_dl),
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
    fn on_single(&mut self, now: u64, d: &[u8], can_dl: usize) {
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
        self.rx_started = now;
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
        self.rx_started = now;
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
mod tests;
