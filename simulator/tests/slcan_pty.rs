//! `ecu-sim serve --slcan-pty`: the ECU behind an slcan adapter on a real pseudo-terminal,
//! spoken to byte for byte as an slcan tool does (bit rate, open, ISO-TP frames, flow
//! control).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use ecu_sim::can::frame::Frame;
use ecu_sim::proto::slcan::{decode_frame, encode_frame};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines (without `\r`) and bells from the adapter, as they arrive.
fn reader(mut port: std::fs::File) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while port.read_exact(&mut b).is_ok() {
            match b[0] {
                b'\r' => {
                    if tx.send(std::mem::take(&mut line)).is_err() {
                        return;
                    }
                }
                0x07 => {
                    let _ = tx.send(vec![0x07]);
                }
                c => line.push(c),
            }
        }
    });
    rx
}

fn next(rx: &Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the adapter answered within 5 s")
}

/// The next frame from the bus (skipping the adapter's `z` send acknowledgements).
fn next_frame(rx: &Receiver<Vec<u8>>) -> Frame {
    loop {
        let l = next(rx);
        if l == b"z" {
            continue;
        }
        return decode_frame(&l)
            .unwrap_or_else(|| panic!("not a frame: {:?}", String::from_utf8_lossy(&l)));
    }
}

fn send(port: &mut std::fs::File, f: &Frame) {
    port.write_all(&encode_frame(f).unwrap()).unwrap();
}

/// `ecu-sim serve --slcan-pty` on a fresh state directory; the server (killed when dropped)
/// and the pty's path from its second stdout line.
fn serve_slcan(state: &std::path::Path, seed: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecu-sim"))
        .args([
            "serve",
            "--doip",
            "127.0.0.1:0",
            "--speed",
            "max",
            "--seed",
            seed,
            "--slcan-pty",
        ])
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
    assert!(line.contains("doip listening"), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    let pty = line
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pty in {line:?}"))
        .to_string();
    (server, pty)
}

#[test]
fn an_slcan_tool_reads_the_vin_and_opens_a_session_through_the_pty() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = serve_slcan(&dir.path().join("ecu"), "1");
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let rx = reader(port.try_clone().unwrap());

    port.write_all(b"C\rS6\rO\rV\r").unwrap();
    for want in [&b""[..], b"", b"", b"V1013"] {
        assert_eq!(next(&rx), want);
    }
    // DiagnosticSessionControl extended, one single frame each way.
    send(
        &mut port,
        &Frame::classic(0x7E0, [0x02, 0x10, 0x03, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]),
    );
    let f = next_frame(&rx);
    assert_eq!(f.id, 0x7E8);
    assert_eq!(&f.data[..3], &[0x06, 0x50, 0x03], "{f:?}");

    // ReadDataByIdentifier VIN: a first frame, our flow control, consecutive frames.
    send(
        &mut port,
        &Frame::classic(0x7E0, [0x03, 0x22, 0xF1, 0x90, 0xAA, 0xAA, 0xAA, 0xAA]),
    );
    let first = next_frame(&rx);
    assert_eq!(first.data[0] >> 4, 1, "a first frame: {first:?}");
    let len = (usize::from(first.data[0] & 0x0F) << 8) | usize::from(first.data[1]);
    let mut message = first.data[2..].to_vec();
    send(
        &mut port,
        &Frame::classic(0x7E0, [0x30, 0x00, 0x00, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]),
    );
    while message.len() < len {
        let cf = next_frame(&rx);
        assert_eq!(cf.data[0] >> 4, 2, "a consecutive frame: {cf:?}");
        message.extend_from_slice(&cf.data[1..]);
    }
    message.truncate(len);
    assert_eq!(&message[..3], &[0x62, 0xF1, 0x90]);
    assert_eq!(&message[3..], b"WSIM0000000000001");
    drop(server);
}

/// python-can's slcan interface + can-isotp + udsoncan (pinned in ci/requirements.txt, in
/// `.venv` from ci/install.sh; without it this test fails, it never skips) program the ECU
/// through the pty: the full sequence, then the new version runs confirmed.
#[test]
fn python_can_slcan_with_can_isotp_and_udsoncan_flashes_the_ecu() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run ci/install.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let image = ecu_sim::image::ImageBuilder::new(
        ecu_sim::image::Version::new(2, 0, 0),
        vec![0x5A; 20_000],
    )
    .security_counter(2)
    .sign(&ecu_sim::image::dev_key("oem"));
    let image_path = dir.path().join("v2.bin");
    std::fs::write(&image_path, &image).unwrap();
    let (_server, pty) = serve_slcan(&dir.path().join("ecu"), "2");
    let o = Command::new(&python)
        .arg(root.join("tests/interop/flash_doip.py"))
        .args([
            "--slcan",
            &pty,
            "--block",
            "4000",
            "--boot-wait",
            "1.0",
            "--image",
        ])
        .arg(&image_path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "flash over slcan failed:\n{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(report.contains("\"version\": \"2.0.0\""), "{report}");
    assert!(report.contains("\"confirmed\": true"), "{report}");
    assert!(report.contains("\"check_status\": [0]"), "{report}");
}
