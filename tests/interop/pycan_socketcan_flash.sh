#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh): python-can's `socketcan` interface and
# can-isotp's own Python ISO-TP stack (NotifierBasedCanStack: segmentation, flow control,
# STmin and block size in Python, not the kernel's) with udsoncan run the whole programming
# sequence against `ecu-sim serve --socketcan IFACE` (tests/interop/flash_doip.py --isotp python);
# `candump -L` captures the whole flash and check_flow_control.py checks that the Python sender
# kept to the flow control the ECU asked for (block size, STmin).
# Args: IFACE [--fd]. Prints the results; exits non-zero at the first failure.
set -eu
iface="${1:-vcan0}"; fd="${2:-}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/pycan-$iface"
mkdir -p "$work" && cd "$work"
sfd=""; [ -n "$fd" ] && sfd="--socketcan-fd"
# The ECU asks senders for blocks of 16 frames at least 1 ms apart.
RUST_LOG=${RUST_LOG:-info} "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --speed max \
    --socketcan "$iface" $sfd --can-flow-control 16:1 >ecu.out 2>ecu.log &
ecu=$!
candump -L "$iface" >capture.log &
dump=$!
trap 'kill $ecu $dump 2>/dev/null || true; wait 2>/dev/null || true' EXIT
i=0
until grep -q 'socketcan on' ecu.out 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat ecu.out ecu.log; exit 3; }; sleep 0.2
done
grep 'socketcan on' ecu.out
"$bin/hil" image build --version 2.0.0 --size 40000 --out v2.bin >/dev/null
# Blocks as large as the ECU takes (16 KiB): at a few ms a frame (Python in an emulated guest)
# one takes longer than the ECU's S3 time to arrive, which it counts from the first frame.
"$root/.venv/bin/python" "$root/tests/interop/flash_doip.py" --socketcan "$iface" $fd \
    --isotp python --image v2.bin >report.json
echo "python-can socketcan + can-isotp (python) + udsoncan on $iface: $(cat report.json)"
grep -q '"version": "2.0.0"' report.json
grep -q '"confirmed": true' report.json
sleep 0.2
kill $dump 2>/dev/null || true
echo "candump captured $(wc -l <capture.log) frames on $iface"
python3 "$root/tests/interop/check_flow_control.py" capture.log 7E0 7E8
