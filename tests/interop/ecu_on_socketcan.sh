#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh): the virtual ECU on a kernel CAN interface
# (`ecu-sim serve --socketcan IFACE`), and third-party stacks against it:
#   1. can-utils: isotpsend/isotprecv (the kernel's ISO-TP) exchange ReadDataByIdentifier F189;
#   2. python-udsoncan over can-isotp's kernel socket runs the whole programming sequence
#      (tests/interop/flash_doip.py --socketcan), `candump -L` capturing the bus.
# Args: IFACE [--fd]. Prints the results; exits non-zero at the first failure.
set -eu
iface="${1:-vcan0}"; fd="${2:-}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/ecu-on-$iface"
mkdir -p "$work" && cd "$work"
sfd=""; [ -n "$fd" ] && sfd="--socketcan-fd"
RUST_LOG=${RUST_LOG:-info} "$bin/ecu-sim" serve --doip 127.0.0.1:0 --state ecu --speed max --socketcan "$iface" $sfd >ecu.out 2>ecu.log &
ecu=$!
candump -L "$iface" >capture.log &
dump=$!
trap 'kill $ecu $dump 2>/dev/null || true; wait 2>/dev/null || true' EXIT
i=0
until grep -q 'socketcan on' ecu.out 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat ecu.out ecu.log; exit 3; }; sleep 0.2
done
grep 'socketcan on' ecu.out
# 1. can-utils over the kernel's ISO-TP: -s our id, -d the ECU's.
pad="-p AA:AA"; [ -n "$fd" ] && pad="$pad -L 72:64:0"
isotprecv -s 7E0 -d 7E8 $pad "$iface" >recv.out &
recv=$!
sleep 0.3
echo "22 F1 89" | isotpsend -s 7E0 -d 7E8 $pad "$iface"
i=0
while [ ! -s recv.out ] && [ "$i" -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
kill $recv 2>/dev/null || true
echo "isotprecv: $(cat recv.out)"
grep -q '^62 F1 89 31 2E 30 2E 30' recv.out
# 2. udsoncan over the kernel's ISO-TP: the whole programming sequence.
"$bin/hil" image build --version 2.0.0 --size 40000 --out v2.bin >/dev/null
"$root/.venv/bin/python" "$root/tests/interop/flash_doip.py" --socketcan "$iface" $fd \
    --image v2.bin >report.json
echo "udsoncan: $(cat report.json)"
grep -q '"version": "2.0.0"' report.json
grep -q '"confirmed": true' report.json
sleep 0.2
kill $dump 2>/dev/null || true
echo "candump captured $(wc -l <capture.log) frames on $iface"
exit 0
