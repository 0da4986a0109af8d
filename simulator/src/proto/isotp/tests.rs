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
