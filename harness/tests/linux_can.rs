//! The CAN tests on a real Linux CAN stack: this machine's kernel has no CAN, so
//! `ci/linux-can-vm.sh` boots Debian's kernel under QEMU with vcan, the kernel's ISO-TP and
//! slcan modules, and runs the SocketCAN trials of `harness/tests/socketcan.rs` inside it with
//! `HIL_REQUIRE_VCAN=1`: there a trial that cannot run fails instead of being skipped. The
//! guest's packages come from `ci/install.sh`; without them this test fails, naming the step.

mod common;

use std::path::Path;
use std::process::Command;

/// `ci/linux-can-vm.sh ARGS` from the repository root: the exit status and all output (also
/// printed, for the test's log).
fn guest(args: &[&str]) -> (Option<i32>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("ci/linux-can-vm.sh"))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.code(), text)
}

/// `script` in the guest with this build's `hil` and `ecu-sim` (`HIL_BIN_DIR`: the guest
/// starts with a clean environment, so the variable goes in the command).
fn guest_script(script: &str) -> (Option<i32>, String) {
    let hil = Path::new(env!("CARGO_BIN_EXE_hil"));
    let ecu_sim = common::workspace_bin("ecu-sim");
    assert_eq!(
        hil.parent(),
        ecu_sim.parent(),
        "hil and ecu-sim side by side"
    );
    let bin_dir = format!("HIL_BIN_DIR={}", hil.parent().unwrap().display());
    guest(&["env", &bin_dir, "/bin/sh", "-c", script])
}

#[test]
fn the_socketcan_trials_pass_on_a_linux_kernel_with_vcan() {
    let (code, text) = guest(&[]);
    assert_eq!(
        code,
        Some(0),
        "the guest run failed:
{text}"
    );
    // Every trial ran in the guest: none ignored (skipped), none failed.
    for trial in [
        "flash_over_vcan_classic_11bit",
        "flash_over_vcan_fd_29bit",
        "backend_against_the_kernel",
    ] {
        assert!(
            text.contains(&format!("test {trial}"))
                && !text.contains(&format!("{trial} ... ignored")),
            "{trial} did not run in the guest:\n{text}"
        );
    }
    assert!(
        text.contains("test result: ok. 4 passed; 0 failed; 0 ignored"),
        "{text}"
    );
}

/// The harness's ISO-TP against the kernel's: `tests/interop/isotp_relay.py` answers on a
/// kernel CAN_ISOTP socket and relays to `ecu-sim serve --doip` in the guest; `hil flash
/// --socketcan` programs a v2 image through it, on classic CAN (vcan0) and CAN FD (vcan1), in
/// blocks of 8198 bytes: messages above 4095 bytes need ISO-TP's escaped first frame. The
/// kernel's flow control asks for blocks of 8 frames 1 ms apart; `candump -L` records the bus
/// and `tests/interop/check_flow_control.py` checks that hil kept to it.
#[test]
fn hil_flashes_through_the_kernels_isotp_classic_and_fd() {
    let script = "tests/interop/kernel_isotp_flash.sh vcan0 && tests/interop/kernel_isotp_flash.sh vcan1 --fd";
    let (code, text) = guest_script(script);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.matches("result: COMMITTED v2.0.0").count(),
        2,
        "classic and fd both commit:\n{text}"
    );
    assert!(
        text.contains("transfer data: 5 blocks of up to 8198 bytes"),
        "{text}"
    );
    for iface in ["vcan0", "vcan1"] {
        assert!(
            text.contains(&format!("through the kernel's ISO-TP on {iface}")),
            "{text}"
        );
    }
    // The candump captures kept to the kernel's flow control (blocks of 8, STmin 1 ms).
    assert_eq!(
        text.matches("flow control respected: ").count(),
        2,
        "{text}"
    );
}

/// The virtual ECU on a kernel CAN interface (`ecu-sim serve --socketcan`), and third-party
/// stacks against it on classic (vcan0) and FD (vcan1): can-utils' `isotpsend`/`isotprecv`
/// read F189 through the kernel's ISO-TP, and python-udsoncan over can-isotp's kernel socket
/// runs the whole programming sequence to v2.0.0 confirmed (`tests/interop/ecu_on_socketcan.sh`).
#[test]
fn third_party_stacks_program_the_ecu_on_a_kernel_can_interface() {
    let script =
        "tests/interop/ecu_on_socketcan.sh vcan0 && tests/interop/ecu_on_socketcan.sh vcan1 --fd";
    let (code, text) = guest_script(script);
    assert_eq!(code, Some(0), "{text}");
    for kind in ["socketcan vcan0 (classic)", "socketcan vcan1 (fd)"] {
        assert!(
            text.contains(&format!("ecu-sim: socketcan on {kind}")),
            "{text}"
        );
    }
    assert_eq!(
        text.matches("isotprecv: 62 F1 89 31 2E 30 2E 30").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("\"version\": \"2.0.0\", \"boot_status\": {\"slot\": 0, \"on_probation\": false, \"confirmed\": true")
            .count(),
        2,
        "{text}"
    );
}

/// A command that fails inside the guest fails the script with its exit status, and a
/// missing step is named.
#[test]
fn the_guest_reports_the_commands_exit_status() {
    let (code, text) = guest(&["/bin/sh", "-c", "test -e /sys/class/net/vcan1 && exit 7"]);
    assert_eq!(code, Some(7), "{text}");
    assert!(text.contains("command exited 7"), "{text}");
}

/// The kernel's slcan driver against our slcan adapter emulation
/// (`tests/interop/slcand_flash.sh`): can-utils' `slcand -o -c -f -s6` configures the pty of
/// `ecu-sim serve --slcan-pty` (the ECU logs each command it answered) and attaches it as the
/// kernel interface `slcan0`; `hil flash --socketcan slcan0` programs v2 through the kernel's
/// driver, and udsoncan over DoIP reads back v2.0.0 confirmed.
#[test]
fn hil_flashes_the_ecu_through_slcand_and_the_kernels_slcan_driver() {
    let (code, text) = guest_script("tests/interop/slcand_flash.sh");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("slcan0: type 280, mtu 16, up"), "{text}");
    // What slcand told the adapter, in order, each answered (`F` while the channel is closed).
    assert!(
        text.contains(
            r#"slcan: host sent "C", answered;slcan: host sent "S6", answered;slcan: host sent "F", answered;slcan: host sent "O", answered;"#
        ),
        "{text}"
    );
    assert!(
        text.contains("transfer data: 3 blocks of up to 16384 bytes"),
        "{text}"
    );
    assert!(
        text.contains("result: COMMITTED v2.0.0 runs from slot 0, confirmed"),
        "{text}"
    );
    // The frames went through slcan0 (a 40 kB image is thousands of frames).
    let frames: usize = text
        .split("candump captured ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no candump count:\n{text}"));
    assert!(frames > 5000, "{frames} frames on slcan0:\n{text}");
    assert!(
        text.contains(r#"read back over doip: {"version": "2.0.0", "boot_status": {"slot": 0, "on_probation": false, "confirmed": true"#),
        "{text}"
    );
}

/// `hil run --bench` with a bench whose target is `socketcan` (vcan0), power through the relay
/// pty of `ecu-sim serve --socketcan vcan0 --relay-pty`: a power cut at 50 % of the transfer,
/// and the update commits; the ECU's boot count (read over DoIP by udsoncan) and its log of the
/// relay prove the cut (`tests/interop/bench_socketcan.sh`). In the same guest: an interface
/// that is missing, down, not CAN (`lo`), or classic where FD is asked, is a named error with
/// exit 2 for `ecu-sim serve --socketcan` and `hil flash --socketcan` alike
/// (`tests/interop/bad_can_interfaces.sh`).
#[test]
fn a_bench_on_socketcan_commits_through_a_power_cut_and_bad_interfaces_are_named() {
    let (code, text) =
        guest_script("tests/interop/bench_socketcan.sh && tests/interop/bad_can_interfaces.sh");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ecu-sim: socketcan on socketcan vcan0 (classic)"),
        "{text}"
    );
    assert!(text.contains("fault 1 fired at transfer block"), "{text}");
    assert!(
        text.contains("PASS  socketcan-power-cut") && text.contains("(socketcan vcan0 (iso-tp"),
        "{text}"
    );
    assert!(
        text.contains("1 scenario(s): 1 passed, 0 failed, 0 error(s), 0 invalid, 0 skipped"),
        "{text}"
    );
    let boots = text
        .split("ecu boot count: ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|l| l.split_once(" -> "))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("no boot count:\n{text}"));
    assert!(boots.1 >= boots.0 + 2, "boots {boots:?}: {text}");
    assert!(text.contains("relay: 1 switch(es) off"), "{text}");

    for (case, message) in [
        (
            "ecu-sim serve, missing",
            "error: --socketcan: CAN interface nosuch0: no such interface",
        ),
        (
            "ecu-sim serve, down",
            "error: --socketcan: CAN interface vcan9: interface is down: `ip link set vcan9 up`",
        ),
        (
            "ecu-sim serve, not CAN",
            "error: --socketcan: CAN interface lo: not a CAN interface (link type 772, CAN is 280)",
        ),
        (
            "ecu-sim serve, fd on classic",
            "error: --socketcan: CAN interface vcan0: CAN FD requested, but the MTU is 16",
        ),
        (
            "hil flash, missing",
            "error: socketcan nosuch0 (iso-tp 0x7e0/0x7e8): can: CAN interface nosuch0: no such interface",
        ),
        (
            "hil flash, down",
            "error: socketcan vcan9 (iso-tp 0x7e0/0x7e8): can: CAN interface vcan9: interface is down",
        ),
        (
            "hil flash, not CAN",
            "error: socketcan lo (iso-tp 0x7e0/0x7e8): can: CAN interface lo: not a CAN interface (link type 772, CAN is 280)",
        ),
        (
            "hil flash, fd on classic",
            "error: socketcan vcan0 fd (iso-tp 0x7e0/0x7e8): can: CAN interface vcan0: CAN FD requested, but the MTU is 16",
        ),
    ] {
        assert!(
            text.contains(&format!("{case}: exit 2: {message}")),
            "{case}: {message}\n{text}"
        );
    }
}

/// python-can's `socketcan` interface with can-isotp's own Python ISO-TP stack
/// (`NotifierBasedCanStack`, not the kernel's) and udsoncan run the whole programming sequence
/// against `ecu-sim serve --socketcan` on vcan0 and vcan1 (FD), the ECU asking for blocks of 16
/// frames 1 ms apart (`--can-flow-control 16:1`); `candump -L` captures each whole flash and
/// `tests/interop/check_flow_control.py` checks the Python sender kept to that flow control
/// (`tests/interop/pycan_socketcan_flash.sh`).
#[test]
fn python_cans_socketcan_bus_and_can_isotps_python_stack_program_the_ecu() {
    let script = "tests/interop/pycan_socketcan_flash.sh vcan0 && tests/interop/pycan_socketcan_flash.sh vcan1 --fd";
    let (code, text) = guest_script(script);
    assert_eq!(code, Some(0), "{text}");
    for iface in ["vcan0", "vcan1"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "python-can socketcan + can-isotp (python) + udsoncan on {iface}: "
                ))
            })
            .unwrap_or_else(|| panic!("no report for {iface}:\n{text}"));
        assert!(
            line.contains(r#""check_status": [0]"#)
                && line.contains(r#""version": "2.0.0", "boot_status": {"slot": 0, "on_probation": false, "confirmed": true"#),
            "{line}"
        );
    }
    // Both captures checked against what the ECU asked for, and kept to it.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("flow control respected: ")
                && l.ends_with("asked for BS 16 STmin 0x01"))
            .count(),
        2,
        "{text}"
    );
}

/// `tests/interop/check_flow_control.py`, which the guest tests trust with their captures, on
/// hand-written `candump -L` captures (runs everywhere, no guest): a sender that keeps to
/// BS 2 / STmin 5 ms passes; one that sends a consecutive frame before the flow control, more
/// than BS frames a block, or frames closer than STmin fails, naming the rule.
#[test]
fn the_flow_control_checker_fails_a_sender_that_breaks_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let check = |name: &str, frames: &[(f64, &str)]| {
        let path = dir.path().join(name);
        let text: String = frames
            .iter()
            .map(|(t, f)| format!("({t:.6}) vcan0 {f}\n"))
            .collect();
        std::fs::write(&path, text).unwrap();
        let out = Command::new("python3")
            .arg(root.join("tests/interop/check_flow_control.py"))
            .arg(&path)
            .args(["7E0", "7E8"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    // A 20-byte request: first frame (6 bytes), then 2 blocks of up to 2 consecutive frames.
    let ff = "7E0#1014360102030405";
    let fc = "7E8#3002050000000000"; // CTS, BS 2, STmin 5 ms
    let cf = |n: u8| format!("7E0#2{n:X}AAAAAAAAAAAAAA");
    let (cf1, cf2, cf3) = (cf(1), cf(2), cf(3));
    let good = [
        (0.0, ff),
        (0.001, fc),
        (0.002, cf1.as_str()),
        (0.008, cf2.as_str()),
        (0.009, fc),
        (0.010, cf3.as_str()),
    ];
    let (code, out) = check("good.log", &good);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "flow control respected: 1 first frames, 2 flow control frames, 3 consecutive frames; 1 gaps, 0 below STmin, mean 6.000 ms; asked for BS 2 STmin 0x05"
    );
    let (code, out) = check(
        "early.log",
        &[(0.0, ff), (0.001, cf1.as_str()), (0.002, fc)],
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out,
        "violation at 0.001000: consecutive frame while waiting for flow control"
    );
    let (code, out) = check(
        "block.log",
        &[
            (0.0, ff),
            (0.001, fc),
            (0.002, cf1.as_str()),
            (0.008, cf2.as_str()),
            (0.014, cf3.as_str()),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out,
        "violation at 0.014000: consecutive frame while waiting for flow control"
    );
    let (code, out) = check(
        "stmin.log",
        &[
            (0.0, ff),
            (0.001, fc),
            (0.002, cf1.as_str()),
            (0.003, cf2.as_str()),
            (0.004, fc),
            (0.005, cf3.as_str()),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("violation: STmin not kept (1 first frames, 2 flow control frames, 3 consecutive frames; 1 gaps, 1 below STmin"), "{out}");
}
