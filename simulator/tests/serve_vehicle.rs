//! `ecu-sim serve --vehicle FILE` as a process on loopback: one DoIP gateway, several ECUs
//! behind it by logical address. python-udsoncan over doipclient addresses each ECU by its
//! logical address and flashes one without touching the others; an unknown address gets the
//! DoIP diagnostic NACK 0x03 on a connection that lives on; a functional request reaches every
//! ECU; every ECU's state persists in its own directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};
use ecu_sim::proto::doip::{ActivationType, Decoder, Message, RoutingActivationCode, VERSION_2012};

const VEHICLE: &str = "\
vin: WVWZZZ1KZAW000042
gateway: {logical_address: 0x0001}
ecus:
  - name: bcm
    logical_address: 0x0010
    seed: 1
  - name: eps
    logical_address: 0x0011
    boot_mode: direct-xip
    seed: 2
  - name: tcu
    logical_address: 0x0012
    boot_mode: overwrite
    seed: 3
";

fn python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        path.exists(),
        "{} not found: run ci/install.sh",
        path.display()
    );
    path
}

/// `ecu-sim serve --vehicle`; killed when dropped.
struct Vehicle {
    child: Child,
    port: u16,
    lines: Vec<String>,
}

impl Vehicle {
    fn start(file: &Path, state: &Path) -> Vehicle {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
            .args([
                "serve",
                "--doip",
                "127.0.0.1:0",
                "--speed",
                "max",
                "--vehicle",
            ])
            .arg(file)
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ecu-sim starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for _ in 0..4 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            lines.push(line.trim().to_string());
        }
        let port = lines[0]
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {lines:?}"));
        Vehicle { child, port, lines }
    }

    /// flash_doip.py against the ECU at `ecu`; its JSON report.
    fn script(&self, ecu: &str, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/flash_doip.py");
        let out = Command::new(python())
            .arg(script)
            .args([
                "--port",
                &self.port.to_string(),
                "--boot-wait",
                "1.0",
                "--ecu",
                ecu,
            ])
            .args(args)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "flash_doip.py --ecu {ecu} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Vehicle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 4..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim_matches('"')
}

/// Raw DoIP: send `msg`, then read messages until `until` returns something.
fn exchange<T>(
    s: &mut TcpStream,
    d: &mut Decoder,
    msg: &Message,
    mut until: impl FnMut(Message) -> Option<T>,
) -> T {
    s.write_all(&msg.encode(VERSION_2012)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        while let Some((_, m)) = d.decode().unwrap() {
            if let Some(t) = until(m) {
                return t;
            }
        }
        let n = s.read(&mut buf).expect("an answer within 5 s");
        assert!(n > 0, "the gateway closed the connection");
        d.push(&buf[..n]);
    }
}

#[test]
fn the_gateway_routes_by_logical_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vehicle.yaml");
    std::fs::write(&file, VEHICLE).unwrap();
    let state = dir.path().join("state");
    let v = Vehicle::start(&file, &state);
    assert!(
        v.lines[0].ends_with("gateway logical address 0x0001"),
        "{:?}",
        v.lines
    );
    assert!(
        v.lines[2].starts_with("ecu-sim: ecu eps at logical address 0x0011 (direct-xip)"),
        "{:?}",
        v.lines
    );

    let mut s = TcpStream::connect(("127.0.0.1", v.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut d = Decoder::new(64 * 1024);
    let activation = Message::RoutingActivationRequest {
        source: 0x0E00,
        activation_type: ActivationType::Default,
        oem: None,
    };
    let code = exchange(&mut s, &mut d, &activation, |m| match m {
        Message::RoutingActivationResponse { code, .. } => Some(code),
        _ => None,
    });
    assert_eq!(code, RoutingActivationCode::Success);
    // Each ECU answers from its own address; a session entered on one is not another's.
    let ask = |s: &mut TcpStream, d: &mut Decoder, target: u16, data: &[u8]| {
        let msg = Message::Diagnostic {
            source: 0x0E00,
            target,
            data: data.to_vec(),
        };
        exchange(s, d, &msg, |m| match m {
            Message::Diagnostic { source, data, .. } if data.get(2) != Some(&0x78) => {
                Some((source, data))
            }
            _ => None,
        })
    };
    assert_eq!(
        ask(&mut s, &mut d, 0x0011, &[0x10, 0x03]),
        (0x0011, vec![0x50, 0x03, 0x00, 0x32, 0x01, 0xF4])
    );
    assert_eq!(
        ask(&mut s, &mut d, 0x0011, &[0x22, 0xF1, 0x86]),
        (0x0011, vec![0x62, 0xF1, 0x86, 0x03])
    );
    assert_eq!(
        ask(&mut s, &mut d, 0x0010, &[0x22, 0xF1, 0x86]),
        (0x0010, vec![0x62, 0xF1, 0x86, 0x01])
    );
    // An address nobody has: NACK 0x03, and the connection still works.
    let unknown = Message::Diagnostic {
        source: 0x0E00,
        target: 0x0013,
        data: vec![0x3E, 0x00],
    };
    let nack = exchange(&mut s, &mut d, &unknown, |m| match m {
        Message::DiagnosticNack { source, code, .. } => Some((source, code)),
        _ => None,
    });
    assert_eq!((nack.0, u8::from(nack.1)), (0x0013, 0x03));
    // Functional TesterPresent: every ECU answers, each from its address.
    let functional = Message::Diagnostic {
        source: 0x0E00,
        target: 0xE400,
        data: vec![0x3E, 0x00],
    };
    s.write_all(&functional.encode(VERSION_2012)).unwrap();
    let mut sources = Vec::new();
    while sources.len() < 3 {
        let got = exchange(
            &mut s,
            &mut d,
            &Message::AliveCheckResponse { source: 0x0E00 },
            |m| match m {
                Message::Diagnostic { source, data, .. } => Some((source, data)),
                _ => None,
            },
        );
        assert_eq!(got.1, [0x7E, 0x00]);
        sources.push(got.0);
    }
    sources.sort();
    assert_eq!(sources, [0x0010, 0x0011, 0x0012]);
    v.stop();
    for name in ["bcm", "eps", "tcu"] {
        assert!(
            state.join(name).join("flash.bin").exists(),
            "{name}'s flash saved"
        );
    }
}

#[test]
fn udsoncan_flashes_one_ecu_of_the_vehicle_and_the_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vehicle.yaml");
    std::fs::write(&file, VEHICLE).unwrap();
    let state = dir.path().join("state");
    let image = dir.path().join("v2.bin");
    let v2 = ImageBuilder::new(Version::new(2, 0, 0), vec![0x42; 60_000])
        .security_counter(2)
        .behaviour(Behaviour::Healthy {
            confirm_after_ms: 200,
        })
        .sign(&dev_key("oem"));
    std::fs::write(&image, &v2).unwrap();

    let v = Vehicle::start(&file, &state);
    let ident = v.script("0x0010", &["--identify"]);
    assert_eq!(field(&ident, "vin"), "WVWZZZ1KZAW000042", "{ident}");
    assert_eq!(
        field(&ident, "logical_address"),
        "1",
        "the gateway identifies: {ident}"
    );
    let flashed = v.script("0x0011", &["--image", image.to_str().unwrap()]);
    assert_eq!(field(&flashed, "version"), "2.0.0", "{flashed}");
    assert_eq!(field(&flashed, "confirmed"), "true", "{flashed}");
    for other in ["0x0010", "0x0012"] {
        let status = v.script(other, &[]);
        assert_eq!(field(&status, "version"), "1.0.0", "{other}: {status}");
    }
    v.stop();
    // Each ECU's state survives a restart of the vehicle.
    let v = Vehicle::start(&file, &state);
    assert_eq!(field(&v.script("0x0011", &[]), "version"), "2.0.0");
    assert_eq!(field(&v.script("0x0010", &[]), "version"), "1.0.0");
}

#[test]
fn a_bad_vehicle_file_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vehicle.yaml");
    std::fs::write(&file, VEHICLE.replace("0x0012", "0x0010")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
        .args(["serve", "--doip", "127.0.0.1:0", "--vehicle"])
        .arg(&file)
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vehicle.yaml:11: ecu tcu: logical_address: 0x0010 is bcm's already"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing created");
}
