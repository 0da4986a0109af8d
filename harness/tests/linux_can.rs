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
