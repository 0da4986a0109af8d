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

/// Settings of one ISO-TP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Identifier we send on.
    pub tx_id: u32,
    /// Identifier we receive on; frames with other ids are ignored.
    pub rx_id: u32,
    /// CAN FD: frames of up to 64 bytes.
    pub fd: bool,
    /// Pad frames to the full length with this byte (classic CAN: 8 bytes).
    pub padding: Option<u8>,
    /// Block size we ask senders for (0 = all frames without further flow control).
    pub block_size: u8,
    /// STmin byte we ask senders for.
    pub st_min: u8,
    /// Largest message we accept; longer first frames get a flow control *overflow*.
    pub max_message: usize,
    pub n_bs_us: u64,
    pub n_cr_us: u64,
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
        }
    }
    fn frame_len(&self) -> usize {
        if self.fd { 64 } else { 8 }
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

    fn push(&mut self, mut data: Vec<u8>) {
        if let Some(pad) = self.cfg.padding {
            let target = if self.cfg.fd {
                // CAN FD lengths: 8, 12, 16, 20, 24, 32, 48, 64.
                [8, 12, 16, 20, 24, 32, 48, 64]
                    .into_iter()
                    .find(|&l| l >= data.len())
                    .unwrap_or(64)
            } else {
                8
            };
            data.resize(target.max(data.len()), pad);
        }
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
        if msg.len() <= 7 && msg.len() < fl {
            let mut d = vec![msg.len() as u8];
            d.extend_from_slice(msg);
            self.push(d);
            self.events.push_back(Event::Sent);
            return Ok(());
        }
        if self.cfg.fd && msg.len() <= fl - 2 {
            let mut d = vec![0x00, msg.len() as u8];
            d.extend_from_slice(msg);
            self.push(d);
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
        self.push(d);
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
        let d = &frame.data;
        let Some(&pci) = d.first() else {
            return self
                .events
                .push_back(Event::Error(IsoTpError::Malformed("empty frame")));
        };
        match pci >> 4 {
            0 => self.on_single(d),
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

    fn on_single(&mut self, d: &[u8]) {
        let (len, start) = match d[0] & 0x0F {
            0 if self.cfg.fd && d.len() > 8 => (usize::from(*d.get(1).unwrap_or(&0)), 2),
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
        if d.len() < 8 {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "first frame shorter than 8 bytes",
            )));
        }
        let short = (usize::from(d[0] & 0x0F) << 8) | usize::from(d[1]);
        let (len, start) = if short == 0 {
            (u32::from_be_bytes([d[2], d[3], d[4], d[5]]) as usize, 6)
        } else {
            (short, 2)
        };
        if len < 8 {
            return self.events.push_back(Event::Error(IsoTpError::Malformed(
                "first frame announces under 8 bytes",
            )));
        }
        self.start_rx();
        if len > self.cfg.max_message {
            self.push(vec![0x32, 0, 0]);
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
        self.push(vec![0x30, self.cfg.block_size, self.cfg.st_min]);
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
                let fc = vec![0x30, self.cfg.block_size, self.cfg.st_min];
                self.push(fc);
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
        let mut d = vec![0x20 | *sn];
        d.extend_from_slice(&msg[*pos..*pos + take]);
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
        self.push(d);
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
}
