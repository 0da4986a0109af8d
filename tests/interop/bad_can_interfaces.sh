#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh), on a kernel with CAN: a CAN interface that
# is missing, down or not CAN (loopback `lo`), and CAN FD asked of a classic interface, for both
# `ecu-sim serve --socketcan` and `hil flash --socketcan`. Each must fail at once with the
# cause named and exit 2 (invalid input), never hang or panic. Prints one line per case
# ("CASE: exit N: MESSAGE"); exits 1 at the first case that does not hold.
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/bad-can"
mkdir -p "$work" && cd "$work" || exit 3
"$bin/hil" image build --version 2.0.0 --size 4000 --out v2.bin >/dev/null || exit 3
# An interface that exists and is CAN but is down.
ip link add dev vcan9 type vcan || exit 3
trap 'ip link del vcan9 2>/dev/null' EXIT
failed=0
# check NAME EXPECTED-TEXT COMMAND...: COMMAND exits 2 within 30 s, its output has the text once.
check() {
    name="$1"; want="$2"; shift 2
    timeout 30 "$@" >out.txt 2>&1
    code=$?
    msg="$(grep -v '^$' out.txt | tail -1)"
    echo "$name: exit $code: $msg"
    # The cause named once (not repeated by an error chain), no panic.
    if [ "$code" -ne 2 ] || [ "$(grep -oF -- "$want" out.txt | wc -l)" -ne 1 ] || grep -q panicked out.txt; then
        echo "  FAILED: expected exit 2 and \"$want\" once"
        cat out.txt
        failed=1
    fi
}
check "ecu-sim serve, missing" "CAN interface nosuch0: no such interface" "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --socketcan nosuch0
check "ecu-sim serve, down" "CAN interface vcan9: interface is down" "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --socketcan vcan9
check "ecu-sim serve, not CAN" "CAN interface lo: not a CAN interface (link type 772, CAN is 280)" "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --socketcan lo
check "ecu-sim serve, fd on classic" "CAN interface vcan0: CAN FD requested, but the MTU is 16" "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --socketcan vcan0 --socketcan-fd
check "hil flash, missing" "CAN interface nosuch0: no such interface" "$bin/hil" flash --socketcan nosuch0 v2.bin
check "hil flash, down" "CAN interface vcan9: interface is down" "$bin/hil" flash --socketcan vcan9 v2.bin
check "hil flash, not CAN" "CAN interface lo: not a CAN interface (link type 772, CAN is 280)" "$bin/hil" flash --socketcan lo v2.bin
check "hil flash, fd on classic" "CAN interface vcan0: CAN FD requested, but the MTU is 16" "$bin/hil" flash --socketcan vcan0 --fd v2.bin
exit "$failed"
