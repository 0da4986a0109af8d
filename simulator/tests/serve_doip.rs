//! `ecu-sim serve` as a process on loopback: its state directory survives `kill -9` at any
//! instant of its first start, and its DoIP sockets follow ISO 13400-2 (one socket per tester
//! address, alive checks, the announced socket limit), each tester with its own diagnostic
//! session.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecu_sim::proto::doip::{ActivationType, Decoder, Message, RoutingActivationCode, VERSION_2012};
use ecu_sim::proto::uds::security::{compute_key, default_secrets};
use hex_literal::hex;
use rand::{Rng, SeedableRng};

const ECU: u16 = 0x0010;

/// A running `ecu-sim serve`; killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    /// Kept open: the server may print more.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
        .args([
            "serve",
            "--doip",
            "127.0.0.1:0",
            "--speed",
            "max",
            "--seed",
            "1",
        ])
        .arg("--state")
        .arg(state)
        .env(
            "RUST_LOG",
            std::env::var("SERVE_LOG").unwrap_or("warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var("SERVE_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .spawn()
        .unwrap()
}

/// Start `ecu-sim serve` on `state` and wait for its listening line; `Err` with its stderr if
/// it exits first.
fn serve(state: &Path) -> Result<Served, String> {
    let mut child = spawn(state);
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let Some(rest) = line.strip_prefix("ecu-sim: doip listening on ") else {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        return Err(format!("no listening line ({line:?}): {err}"));
    };
    let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
    Ok(Served {
        child,
        addr,
        _stdout: stdout,
    })
}

/// A tester on one TCP connection, message by message (blocking, 5 s read timeout).
struct Tester {
    stream: TcpStream,
    decoder: Decoder,
    source: u16,
}

impl Tester {
    fn connect(addr: SocketAddr, source: u16) -> Tester {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Tester {
            stream,
            decoder: Decoder::new(64 * 1024),
            source,
        }
    }

    fn send(&mut self, msg: &Message) {
        self.stream.write_all(&msg.encode(VERSION_2012)).unwrap();
    }

    /// The next message; `None` once the entity closed the connection.
    fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((_, msg)) = self.decoder.decode().unwrap() {
                return Some(msg);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("tester 0x{:04x}: nothing received within 5 s", self.source)
                }
                Err(e) => panic!("tester 0x{:04x}: {e}", self.source),
            }
        }
    }

    fn send_activation(&mut self) {
        let source = self.source;
        self.send(&Message::RoutingActivationRequest {
            source,
            activation_type: ActivationType::Default,
            oem: None,
        });
    }

    /// The routing activation response code (answering alive checks meanwhile).
    fn activation_code(&mut self) -> RoutingActivationCode {
        loop {
            match self.recv() {
                Some(Message::RoutingActivationResponse { code, .. }) => return code,
                Some(Message::AliveCheckRequest) => self.answer_alive_check(),
                other => panic!("tester 0x{:04x}: got {other:?}", self.source),
            }
        }
    }

    fn activate(&mut self) -> RoutingActivationCode {
        self.send_activation();
        self.activation_code()
    }

    fn answer_alive_check(&mut self) {
        let source = self.source;
        self.send(&Message::AliveCheckResponse { source });
    }

    /// Expect an alive check request next, and answer it.
    fn expect_alive_check(&mut self) {
        match self.recv() {
            Some(Message::AliveCheckRequest) => self.answer_alive_check(),
            other => panic!(
                "tester 0x{:04x}: wanted an alive check, got {other:?}",
                self.source
            ),
        }
    }

    /// Send a UDS request to the ECU; its final response (after any responsePending).
    fn ask(&mut self, data: &[u8]) -> Vec<u8> {
        let source = self.source;
        self.send(&Message::Diagnostic {
            source,
            target: ECU,
            data: data.to_vec(),
        });
        loop {
            match self.recv() {
                Some(Message::DiagnosticAck { .. }) => {}
                Some(Message::Diagnostic { data: r, .. }) if r.len() == 3 && r[2] == 0x78 => {}
                Some(Message::Diagnostic { data: r, .. }) => return r,
                Some(Message::AliveCheckRequest) => self.answer_alive_check(),
                other => panic!("tester 0x{source:04x}: {:02x?} got {other:?}", data),
            }
        }
    }

    fn expect(&mut self, req: &[u8], resp: &[u8]) {
        let got = self.ask(req);
        assert_eq!(
            got, resp,
            "tester 0x{:04x}: request {req:02x?}",
            self.source
        );
    }

    /// Programming session, security level 1 unlocked.
    fn programming(&mut self) {
        self.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
        let seed = self.ask(&hex!("27 01"));
        assert_eq!(seed[..2], [0x67, 0x01], "{seed:02x?}");
        let key = compute_key(&default_secrets()[&1], &seed[2..]);
        let mut req = vec![0x27, 0x02];
        req.extend_from_slice(&key);
        self.expect(&req, &hex!("67 02"));
    }

    /// Whether the entity closed the connection (within the read timeout).
    fn is_closed(&mut self) -> bool {
        self.recv().is_none()
    }
}

/// The default `serve` staging area (`FD03`): erase 4 KiB of it.
const ERASE_4K: [u8; 13] = hex!("31 01 ff 00 44 00 04 30 00 00 00 10 00");
const DOWNLOAD_4K: [u8; 11] = hex!("34 00 44 00 04 30 00 00 00 10 00");

#[test]
fn kill_9_during_the_first_start_never_bricks_the_state_directory() {
    // How long a first start takes here: kills are spread over 1.5 times that.
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    drop(serve(&dir.path().join("probe")).unwrap());
    let first_start = started.elapsed();
    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let window_us = (first_start.as_micros() as u64 * 3 / 2).max(1);
    let (mut without_flash, mut provisioning, mut with_flash) = (0, 0, 0);
    const KILLS: usize = 48;
    for k in 0..KILLS {
        let state = dir.path().join(format!("state-{k}"));
        // Every instant from the exec to past the listening line, evenly, in a random order.
        let slot = window_us / KILLS as u64;
        let at = Duration::from_micros(k as u64 * slot + rng.gen_range(0..slot.max(1)));
        let mut child = spawn(&state);
        std::thread::sleep(at);
        child.kill().unwrap();
        child.wait().unwrap();
        if state.join("flash.bin").exists() {
            with_flash += 1;
        } else if state.join("flash.bin.new").exists() {
            provisioning += 1;
        } else {
            without_flash += 1;
        }
        let served = serve(&state).unwrap_or_else(|e| {
            panic!("kill {k} at {at:?} (KILL_SEED={seed}) left a state that does not start: {e}")
        });
        let mut t = Tester::connect(served.addr, 0x0E00);
        assert_eq!(t.activate(), RoutingActivationCode::Success);
        assert_eq!(
            t.ask(&hex!("22 f1 89")),
            b"\x62\xf1\x891.0.0",
            "kill {k} at {at:?} (KILL_SEED={seed})"
        );
    }
    eprintln!(
        "{KILLS} kills over the first {window_us} µs (first start {first_start:?}, KILL_SEED={seed}): \
         {without_flash} before provisioning, {provisioning} while provisioning, {with_flash} after; every state directory started with 1.0.0"
    );
    assert!(
        without_flash + provisioning > 0 && with_flash > 0,
        "the kills missed the first start"
    );
}

impl Tester {
    /// Every message until the entity closes the connection.
    fn until_closed(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    fn entity_status(&mut self) -> ecu_sim::proto::doip::EntityStatus {
        self.send(&Message::EntityStatusRequest);
        match self.recv() {
            Some(Message::EntityStatusResponse(s)) => s,
            other => panic!("wanted the entity status, got {other:?}"),
        }
    }
}

/// ISO 13400-2: an activation for a tester address already active on another socket makes
/// the entity alive-check that socket: refused with 0x03 while it answers, accepted (and the
/// silent socket closed) when it does not within the alive check timeout.
#[test]
fn an_active_tester_address_is_alive_checked_before_another_socket_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&dir.path().join("state")).unwrap();
    let mut first = Tester::connect(served.addr, 0x0E00);
    assert_eq!(first.activate(), RoutingActivationCode::Success);

    let mut second = Tester::connect(served.addr, 0x0E00);
    second.send_activation();
    first.expect_alive_check();
    assert_eq!(
        second.activation_code(),
        RoutingActivationCode::SourceAlreadyActive
    );
    assert!(second.is_closed(), "a refused socket is closed");
    first.expect(&hex!("22 f1 89"), b"\x62\xf1\x891.0.0");

    // The first tester stops answering: the third socket gets the address.
    let mut third = Tester::connect(served.addr, 0x0E00);
    assert_eq!(third.activate(), RoutingActivationCode::Success);
    assert_eq!(first.until_closed(), [Message::AliveCheckRequest]);
    third.expect(&hex!("22 f1 89"), b"\x62\xf1\x891.0.0");
}

/// The entity status announces 4 sockets: a fifth tester is refused with 0x01 after alive
/// checks of the four, a connection beyond the fifth is closed at once, and a registered
/// socket that fails its alive check makes room.
#[test]
fn the_announced_socket_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&dir.path().join("state")).unwrap();
    let mut testers: Vec<Tester> = (0..4)
        .map(|k| Tester::connect(served.addr, 0x0E00 + k))
        .collect();
    for t in &mut testers {
        assert_eq!(t.activate(), RoutingActivationCode::Success);
    }
    let status = testers[0].entity_status();
    assert_eq!((status.max_sockets, status.open_sockets), (4, 4));

    let mut fifth = Tester::connect(served.addr, 0x0E04);
    fifth.send_activation();
    for t in &mut testers {
        t.expect_alive_check();
    }
    assert_eq!(
        fifth.activation_code(),
        RoutingActivationCode::AllSocketsRegistered
    );
    assert!(fifth.is_closed());

    // Four registered and one more connection at most (to answer 0x01 on).
    let mut fifth = Tester::connect(served.addr, 0x0E04);
    // (Answered on the fifth socket itself: the entity has accepted it.)
    assert_eq!(fifth.entity_status().open_sockets, 5);
    let mut sixth = Tester::connect(served.addr, 0x0E05);
    assert!(sixth.is_closed(), "a sixth connection is closed at once");

    // The last of the four is gone without closing: the fifth takes its socket.
    fifth.send_activation();
    for t in &mut testers[..3] {
        t.expect_alive_check();
    }
    assert_eq!(fifth.activation_code(), RoutingActivationCode::Success);
    assert_eq!(testers[3].until_closed(), [Message::AliveCheckRequest]);
    fifth.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    for t in &mut testers[..3] {
        t.expect(&hex!("3e 00"), &hex!("7e 00"));
    }
}

/// Security access, session and an open download belong to the tester connection that made
/// them: another tester cannot erase with them, and they end when the connection closes.
#[test]
fn diagnostic_state_belongs_to_the_tester_connection() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&dir.path().join("state")).unwrap();
    let mut a = Tester::connect(served.addr, 0x0E00);
    assert_eq!(a.activate(), RoutingActivationCode::Success);
    a.programming();

    let mut b = Tester::connect(served.addr, 0x0E01);
    assert_eq!(b.activate(), RoutingActivationCode::Success);
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    b.expect(&ERASE_4K, &hex!("7f 31 7f"));
    b.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    b.expect(&ERASE_4K, &hex!("7f 31 33"));

    a.expect(&ERASE_4K, &hex!("71 01 ff 00 00"));
    a.expect(&DOWNLOAD_4K, &hex!("74 20 40 02"));
    drop(a);

    // The same tester address on a new connection: default session, locked, no download.
    let mut c = Tester::connect(served.addr, 0x0E00);
    assert_eq!(c.activate(), RoutingActivationCode::Success);
    let mut block = hex!("36 01").to_vec();
    block.extend_from_slice(&[0x11; 16]);
    c.expect(&block, &hex!("7f 36 7f"));
    c.expect(&hex!("22 f1 86"), &hex!("62 f1 86 01"));
    c.expect(&hex!("10 02"), &hex!("50 02 00 32 01 f4"));
    let seed = c.ask(&hex!("27 01"));
    assert!(
        seed.len() == 6 && seed[2..] != [0; 4],
        "locked: {seed:02x?}"
    );
    c.expect(&block, &hex!("7f 36 33"));
    // b kept its own programming session.
    b.expect(&hex!("22 f1 86"), &hex!("62 f1 86 02"));
}
