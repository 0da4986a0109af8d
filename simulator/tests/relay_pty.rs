//! `ecu-sim serve --relay-pty`: the served ECU's supply behind an emulated USB relay board on a
//! real pseudo-terminal, switched byte for byte as a bench's serial relay does, while a tester
//! talks DoIP to the ECU.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecu_sim::image::Version;
use ecu_sim::proto::doip::{ActivationType, ClientConfig, ClientConnection, ClientEvent};
use ecu_sim::proto::uds::codec::BootStatusRecord;
use hex_literal::hex;

const ECU: u16 = 0x0010;
const TESTER: u16 = 0x0E00;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ecu-sim serve --relay-pty` (plus `extra` arguments) on a fresh state directory: the
/// server (killed when dropped), its DoIP port, and its stdout lines after the DoIP one.
fn serve(state: &Path, extra: &[&str], lines: usize) -> (Server, u16, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
        .args(["serve", "--doip", "127.0.0.1:0", "--relay-pty"])
        .args(["--speed", "max", "--seed", "1"])
        .args(extra)
        .arg("--state")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let server = Server(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("ecu-sim: doip listening on "), "{line}");
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let rest = (0..lines)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect();
    (server, port, rest)
}

/// The pty path in `ecu-sim: power relay on PATH (on …, off …)`.
fn relay_path(line: &str) -> String {
    line.strip_prefix("ecu-sim: power relay on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("not the relay line: {line:?}"))
        .to_string()
}

/// A DoIP tester on one TCP connection, driving the crate's sans-IO client.
struct Tester {
    stream: TcpStream,
    conn: ClientConnection,
    start: Instant,
}

impl Tester {
    fn connect(port: u16) -> Tester {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut t = Tester {
            stream,
            conn: ClientConnection::new(ClientConfig::default()),
            start: Instant::now(),
        };
        let now = t.now();
        t.conn
            .activate(now, TESTER, ActivationType::Default)
            .unwrap();
        let activated = t.wait_for(Duration::from_secs(5), |e| {
            matches!(e, ClientEvent::Activated { .. }).then_some(())
        });
        assert!(activated.is_some(), "routing activation within 5 s");
        t
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Send what the client queued, read until `pick` takes an event or `timeout` passes.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(ClientEvent) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(bytes) = self.conn.poll_transmit() {
                self.stream.write_all(&bytes).unwrap();
            }
            while let Some(event) = self.conn.poll_event() {
                match event {
                    ClientEvent::Closed(e) => panic!("the entity closed the connection: {e}"),
                    ClientEvent::DiagnosticNack { code, .. } => panic!("diagnostic nack {code:?}"),
                    e => {
                        if let Some(t) = pick(e) {
                            return Some(t);
                        }
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(50))))
                .unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the entity closed the connection"),
                Ok(n) => {
                    let now = self.now();
                    self.conn.handle_bytes(now, &buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading from the entity: {e}"),
            }
            let now = self.now();
            self.conn.handle_timeout(now);
        }
    }

    /// Send a request; the entity must acknowledge it (it stays up when the ECU is off), and
    /// the ECU's response is returned if it comes within `timeout`.
    fn request(&mut self, data: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let now = self.now();
        self.conn.send_diagnostic(now, ECU, data).unwrap();
        let acked = self.wait_for(Duration::from_secs(2), |e| match e {
            ClientEvent::DiagnosticAck { .. } => Some(()),
            ClientEvent::Diagnostic { data, .. } => {
                panic!("a response before the ack: {data:02x?}")
            }
            _ => None,
        });
        assert!(acked.is_some(), "the DoIP entity acknowledged the request");
        self.wait_for(timeout, |e| match e {
            ClientEvent::Diagnostic { source, data, .. } if source == ECU => Some(data),
            _ => None,
        })
    }

    /// DID 0xFD00, polled until the ECU answers (it may be booting) or `timeout` passes.
    fn boot_status(&mut self, timeout: Duration) -> Option<BootStatusRecord> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(r) = self.request(&hex!("22 FD 00"), Duration::from_millis(300)) {
                assert_eq!(&r[..3], hex!("62 FD 00"), "{r:02x?}");
                return Some(BootStatusRecord::decode(&r[3..]).unwrap());
            }
        }
        None
    }

    /// The ECU stays silent for a second: a ReadDataByIdentifier F189 gets no response.
    fn assert_silent(&mut self, why: &str) {
        let r = self.request(&hex!("22 F1 89"), Duration::from_secs(1));
        assert_eq!(r, None, "{why}: the ECU answered");
    }
}

fn open_relay(path: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// The entity's diagnostic power mode over UDP (0x4003 → 0x4004): 0x00 not ready, 0x01 ready.
fn power_mode(port: u16) -> u8 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&hex!("02 FD 40 03 00 00 00 00"), ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = udp.recv(&mut buf).expect("a power mode response");
    assert_eq!(
        &buf[..8],
        hex!("02 FD 40 04 00 00 00 01"),
        "{:02x?}",
        &buf[..n]
    );
    buf[8]
}

/// Give the server time to read the relay bytes before the next DoIP request.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn the_relay_cuts_and_restores_the_ecus_power() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, lines) = serve(&dir.path().join("ecu"), &[], 1);
    let path = relay_path(&lines[0]);
    assert_eq!(
        lines[0],
        format!("ecu-sim: power relay on {path} (on A0 01 01 A2, off A0 01 00 A1)")
    );
    let mut tester = Tester::connect(port);
    let before = tester
        .boot_status(Duration::from_secs(5))
        .expect("the ECU answers after start-up");
    assert_eq!(before.version, Some(Version::new(1, 0, 0)));
    assert_eq!(before.boot_count, 1);
    let mut relay = open_relay(&path);

    // Off: the ECU answers nothing; the DoIP entity in front of it stays up.
    assert_eq!(power_mode(port), 0x01, "ready while powered");
    relay.write_all(&hex!("A0 01 00 A1")).unwrap();
    settle();
    tester.assert_silent("after the off command");
    assert_eq!(
        power_mode(port),
        0x00,
        "not ready while the ECU has no power"
    );

    // A broken on command (wrong checksum) and noise switch nothing.
    relay.write_all(&hex!("A0 01 01 A3 FF 0D 0A")).unwrap();
    settle();
    tester.assert_silent("after a broken on command");

    // A stray byte, then the on command in two writes: the ECU boots once more.
    relay.write_all(&hex!("55 A0 A0 01")).unwrap();
    settle();
    tester.assert_silent("after half an on command");
    relay.write_all(&hex!("01 A2")).unwrap();
    let after = tester
        .boot_status(Duration::from_secs(5))
        .expect("the ECU answers again after the on command");
    assert_eq!(after.boot_count, before.boot_count + 1, "{after:?}");
    assert_eq!(after.version, Some(Version::new(1, 0, 0)));
    assert_eq!(after.outcome, before.outcome, "a normal boot: {after:?}");
    assert!(after.confirmed);
    assert_eq!(power_mode(port), 0x01, "ready again");

    // On again while on: nothing happens (no second boot).
    relay.write_all(&hex!("A0 01 01 A2")).unwrap();
    settle();
    let again = tester.boot_status(Duration::from_secs(5)).unwrap();
    assert_eq!(again.boot_count, after.boot_count);

    // Shutting down with the relay port still open by a client: a clean exit, in time.
    let mut server = server;
    let child = &mut server.0;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ecu-sim serve did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "ecu-sim serve exited with {status}");
    drop(relay);
}

#[test]
fn custom_relay_commands_come_after_the_slcan_line_and_switch_power() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, lines) = serve(
        &dir.path().join("ecu"),
        &["--slcan-pty", "--relay-on", "0x01", "--relay-off", "FE,02"],
        2,
    );
    assert!(
        lines[0].starts_with("ecu-sim: slcan adapter on /dev/"),
        "{lines:?}"
    );
    let path = relay_path(&lines[1]);
    assert_eq!(
        lines[1],
        format!("ecu-sim: power relay on {path} (on 01, off FE 02)")
    );
    let mut tester = Tester::connect(port);
    let before = tester.boot_status(Duration::from_secs(5)).unwrap();
    let mut relay = open_relay(&path);
    // Noise, then the off command split over two writes: the ECU answers until the last byte.
    relay.write_all(&hex!("A0")).unwrap();
    relay.write_all(&hex!("FE")).unwrap();
    settle();
    assert!(tester.boot_status(Duration::from_secs(1)).is_some());
    relay.write_all(&hex!("02")).unwrap();
    settle();
    tester.assert_silent("after the custom off command");
    relay.write_all(&hex!("01")).unwrap();
    let after = tester.boot_status(Duration::from_secs(5)).unwrap();
    assert_eq!(after.boot_count, before.boot_count + 1);
}
