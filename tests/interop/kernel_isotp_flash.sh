#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh): the harness's ISO-TP against the kernel's.
# `ecu-sim serve --doip` on loopback, tests/interop/isotp_relay.py answering on a kernel
# CAN_ISOTP socket on IFACE (vcan0 classic, or vcan1 with --fd), and `hil flash --socketcan`
# programming a v2 image through it, the kernel's flow control asking for blocks of 8 frames
# 1 ms apart; `candump -L` captures the bus and check_flow_control.py checks hil kept to it.
# Exits with hil flash's status (or the check's). Args: IFACE [--fd]
set -eu
iface="${1:-vcan0}"; fd="${2:-}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/kernel-isotp-$iface"
mkdir -p "$work" && cd "$work"
"$bin/ecu-sim" serve --doip 127.0.0.1:13400 --state ecu --speed max >ecu.log 2>&1 &
ecu=$!
"$root/.venv/bin/python" "$root/tests/interop/isotp_relay.py" "$iface" 127.0.0.1 13400 $fd \
    --bs 8 --stmin 1 >relay.out 2>relay.log &
relay=$!
candump -L "$iface" >capture.log &
dump=$!
trap 'kill $ecu $relay $dump 2>/dev/null || true; wait 2>/dev/null || true' EXIT
i=0
until grep -q 'relay ready' relay.out 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat relay.log; exit 3; }; sleep 0.2
done
"$bin/hil" image build --version 2.0.0 --size 40000 --out v2.bin >/dev/null
set +e
# --p2-margin 10: the answer goes through the relay (Python, DoIP) in an emulated guest, which
# on a loaded machine takes over hil's default second now and then.
"$bin/hil" flash --socketcan "$iface" $fd --p2-margin 10 v2.bin
status=$?
echo "relayed $(grep -c relayed relay.log) requests through the kernel's ISO-TP on $iface"
sleep 0.2
kill $dump 2>/dev/null
echo "candump captured $(wc -l <capture.log) frames on $iface"
[ "$status" -eq 0 ] || exit "$status"
python3 "$root/tests/interop/check_flow_control.py" capture.log 7E0 7E8
