//! The harness as the host of an slcan adapter: `hil flash --slcan` and an OTA job whose
//! target is `transport: slcan` program the virtual ECU through the pseudo-terminal of
//! `ecu-sim serve --slcan-pty` (ISO-TP over slcan frames, the real serial-port code path),
//! and the serial port's failures are named.

mod common;

use common::{Bench, text};
use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};

const HEALTHY: Behaviour = Behaviour::Healthy {
    confirm_after_ms: 200,
};

fn image(major: u8, len: usize) -> Vec<u8> {
    ImageBuilder::new(Version::new(major, 0, 0), vec![major; len])
        .security_counter(u32::from(major))
        .behaviour(HEALTHY)
        .sign(&dev_key("oem"))
}

#[test]
fn hil_flash_programs_the_ecu_through_its_slcan_pty() {
    let bench = Bench::start_with("max", &[], true);
    let pty = bench.slcan_pty.clone().expect("an slcan pty");
    let path = bench.dir.path().join("v2.bin");
    std::fs::write(&path, image(2, 12_000)).unwrap();

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["flash", "--slcan", &pty, "--boot-timeout", "20"])
        .arg(&path)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("COMMITTED"), "{out}");
    // Each block went out as ISO-TP frames through the adapter.
    assert!(out.contains("request download"), "{out}");

    // Read back over the other transport: v2 runs, confirmed.
    let (status, _) = bench.ecu_state();
    assert_eq!(status.version, Some(Version::new(2, 0, 0)), "{status:?}");
    assert!(status.confirmed, "{status:?}");

    // The adapter was closed and released when `hil` exited: it opens again.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["flash", "--slcan", &pty, "--boot-timeout", "20"])
        .arg(&path)
        .output()
        .unwrap();
    // The same version again is refused by the ECU's downgrade check or accepted as a
    // reinstall; either way the port opened and the ECU answered through it.
    let out = text(&again);
    assert!(!out.contains("busy"), "{out}");
    assert!(out.contains("security access"), "{out}");
}

#[test]
fn an_ota_job_targets_the_ecu_through_slcan() {
    let bench = Bench::start_with("max", &[], true);
    let pty = bench.slcan_pty.clone().expect("an slcan pty");
    let manifest = bench.publish(2, HEALTHY, 10_000);
    // The same manifest, addressed through the adapter instead of DoIP.
    let doip = std::fs::read_to_string(&manifest).unwrap();
    let target = doip.find("target:").unwrap();
    let slcan = format!(
        "{}target:\n  transport: slcan\n  device: {pty}\n  bitrate: 500000\n",
        &doip[..target]
    );
    std::fs::write(&manifest, slcan).unwrap();
    let id = common::submit(&bench, &manifest);

    let o = bench.hil(&["ota", "run", &id, "--boot-timeout", "20"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let status = bench.hil(&["ota", "status"]);
    let status = text(&status);
    assert!(status.contains("COMMITTED"), "{status}");
    assert!(status.contains(&format!("slcan {pty}")), "{status}");
    let (status, _) = bench.ecu_state();
    assert_eq!(status.version, Some(Version::new(2, 0, 0)), "{status:?}");
}

#[test]
fn serial_port_failures_are_named() {
    let bench = Bench::start_with("max", &[], true);
    let pty = bench.slcan_pty.clone().expect("an slcan pty");
    let path = bench.dir.path().join("v2.bin");
    std::fs::write(&path, image(2, 1000)).unwrap();
    let flash = |device: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
            .args(["flash", "--slcan", device])
            .arg(&path)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };

    let (code, out) = flash("/dev/ttyACM-hil-missing");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("/dev/ttyACM-hil-missing: no such device"),
        "{out}"
    );

    // Another program holds the adapter.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = runtime.block_on(async { hil::serial::open(std::path::Path::new(&pty), 115_200) });
    let held = held.expect("the pty opens");
    let (code, out) = flash(&pty);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("busy: another program has the port open"),
        "{out}"
    );
    drop(held);

    // Not an slcan adapter: a plain pty nobody answers on.
    let p = nix::pty::openpty(None, None).unwrap();
    let silent = nix::unistd::ttyname(&p.slave).unwrap();
    let (code, out) = flash(silent.to_str().unwrap());
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no answer to `C`"), "{out}");
    drop(p);

    // A bit rate slcan has no command for.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["flash", "--slcan", &pty, "--bitrate", "83333"])
        .arg(&path)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("bitrate: 83333 is not an slcan bit rate"),
        "{out}"
    );
}
