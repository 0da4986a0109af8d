//! Power control: a relay board spoken to over a real pseudo-terminal (a fake relay on the
//! other end records what it gets), serial-port errors named, external commands, the
//! operator prompt, the virtual rail.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use hil::power::{ExternalCommand, Manual, PowerControl, SerialRelay, VirtualRail, parse_bytes};
use hil::serial::{OpenError, OpenFailure, open as open_serial};

/// A pty pair: the master (the fake relay's end) and the slave's path (what `hil` opens).
fn pty() -> (OwnedFd, PathBuf) {
    let p = nix::pty::openpty(None, None).expect("openpty");
    let path = nix::unistd::ttyname(&p.slave).expect("ttyname");
    // Keep the slave open on our side too, so the master never sees a hang-up between opens.
    std::mem::forget(p.slave);
    (p.master, path)
}

/// Read `n` bytes from the fake relay's end within 5 s.
fn read_relay(master: &OwnedFd, n: usize) -> Vec<u8> {
    let fd = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut buf = vec![0; n];
        let r = f.read_exact(&mut buf).map(|()| buf);
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the relay got nothing within 5 s")
        .unwrap()
}

#[tokio::test]
async fn a_relay_board_gets_its_on_and_off_bytes_over_a_pty() {
    let (master, path) = pty();
    let on = parse_bytes("A0 01 01 A2").unwrap();
    let off = parse_bytes("0xA0,0x01,0x00,0xA1").unwrap();
    let mut relay = SerialRelay::open(&path, 9600, on.clone(), off.clone()).unwrap();
    assert!(relay.describe().contains(&path.display().to_string()));
    relay.set(true).await.unwrap();
    assert_eq!(read_relay(&master, 4), on, "raw bytes, no line discipline");
    relay.set(false).await.unwrap();
    relay.set(true).await.unwrap();
    let got = read_relay(&master, 8);
    assert_eq!(&got[..4], &off[..]);
    assert_eq!(&got[4..], &on[..]);

    // The port is ours while the relay lives, and released with it.
    match open_serial(&path, 9600) {
        Err(OpenError { kind, message, .. }) => {
            assert_eq!(kind, OpenFailure::Busy, "{message}")
        }
        other => panic!("a second open must fail as busy: {other:?}"),
    }
    drop(relay);
    assert!(open_serial(&path, 9600).is_ok(), "released on drop");
}

#[test]
fn serial_errors_say_what_is_wrong() {
    let e = open_serial(std::path::Path::new("/dev/ttyUSB-hil-missing"), 9600).unwrap_err();
    assert!(
        matches!(
            e,
            OpenError {
                kind: OpenFailure::Missing,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("/dev/ttyUSB-hil-missing: no such device"),
        "{e}"
    );
    let e = parse_bytes("A0 1G").unwrap_err().to_string();
    assert!(e.contains("\"1G\""), "{e}");
    assert!(parse_bytes("").is_err());
    assert!(parse_bytes("A001").is_err(), "one byte per token");
}

#[tokio::test]
async fn external_commands_switch_power_and_their_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("power.log");
    let mut p = ExternalCommand {
        on: format!("echo \"on $HIL_POWER\" >> {}", log.display()),
        off: format!("echo \"off $HIL_POWER\" >> {}", log.display()),
    };
    p.set(true).await.unwrap();
    p.set(false).await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "on on\noff off\n");
    let mut bad = ExternalCommand {
        on: "echo relay unreachable >&2; exit 3".into(),
        off: "true".into(),
    };
    let e = bad.set(true).await.unwrap_err().to_string();
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("relay unreachable"), "{e}");
}

#[tokio::test]
async fn the_operator_is_prompted_and_must_confirm() {
    let mut prompt = Vec::new();
    let mut m = Manual {
        input: &b"\n"[..],
        prompt: &mut prompt,
    };
    m.set(false).await.unwrap();
    let e = m.set(true).await.unwrap_err().to_string();
    assert!(e.contains("no input"), "{e}");
    let text = String::from_utf8(prompt).unwrap();
    assert!(
        text.starts_with("Switch the ECU power OFF and press Enter"),
        "{text}"
    );
    assert!(text.contains("power ON"), "{text}");
}

#[tokio::test]
async fn the_virtual_rail_switches_the_simulation() {
    let seen = std::sync::Mutex::new(Vec::new());
    let mut rail = VirtualRail {
        switch: |on| seen.lock().unwrap().push(on),
    };
    rail.set(true).await.unwrap();
    rail.set(false).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [true, false]);
}
