#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh): the kernel's slcan driver against our slcan
# adapter emulation. `ecu-sim serve --slcan-pty` puts the ECU behind an emulated Lawicel adapter
# on a pty; can-utils' `slcand` configures it (`C`, `S6`, `F`, `O`) and attaches it to the
# kernel as the CAN interface slcan0 (line discipline N_SLCAN); `hil flash --socketcan slcan0`
# programs a v2 image through the kernel's slcan driver, and udsoncan over DoIP reads back what
# the ECU runs. Prints the results; exits non-zero at the first failure.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/slcand-flash"
mkdir -p "$work" && cd "$work"
RUST_LOG=${RUST_LOG:-info} "$bin/ecu-sim" serve --doip 127.0.0.1:13400 --state ecu --speed max \
    --slcan-pty >ecu.out 2>ecu.log &
ecu=$!
slcand_pid=""
dump=""
cleanup() {
    [ -n "$slcand_pid" ] && kill "$slcand_pid" 2>/dev/null
    [ -n "$dump" ] && kill "$dump" 2>/dev/null
    kill "$ecu" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT
i=0
until grep -q 'slcan adapter on' ecu.out 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat ecu.out ecu.log; exit 3; }; sleep 0.2
done
pty="$(sed -n 's/^ecu-sim: slcan adapter on \([^ ]*\) .*/\1/p' ecu.out)"
echo "ecu-sim: slcan adapter on $pty"
# -o open, -c close first, -f read the status flags, -s6 500 kbit/s; -F: stay in the foreground
# (killed at the end, which detaches slcan0).
slcand -F -o -c -f -s6 "$pty" slcan0 >slcand.log 2>&1 &
slcand_pid=$!
i=0
until [ -e /sys/class/net/slcan0 ]; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat slcand.log; echo "slcan0 did not appear"; exit 3; }; sleep 0.2
done
ip link set slcan0 up
echo "slcan0: type $(cat /sys/class/net/slcan0/type), mtu $(cat /sys/class/net/slcan0/mtu), $(cat /sys/class/net/slcan0/operstate)"
# What the ECU's adapter was told by slcand, in order.
grep -o 'slcan: host sent .*' ecu.log | tr '\n' ';'
echo
candump -L slcan0 >capture.log &
dump=$!
"$bin/hil" image build --version 2.0.0 --size 40000 --out v2.bin >/dev/null
"$bin/hil" flash --socketcan slcan0 v2.bin
sleep 0.2
kill "$dump" 2>/dev/null || true
dump=""
echo "candump captured $(wc -l <capture.log) frames on slcan0"
# Read back over DoIP with a third-party client (udsoncan + doipclient).
"$root/.venv/bin/python" "$root/tests/interop/flash_doip.py" --port 13400 >status.json
echo "read back over doip: $(cat status.json)"
grep -q '"version": "2.0.0"' status.json
grep -q '"confirmed": true' status.json
