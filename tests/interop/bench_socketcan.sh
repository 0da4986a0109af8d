#!/bin/sh
# Inside the Linux CAN guest (ci/linux-can-vm.sh): `hil run --bench` with a bench whose target
# is a kernel CAN interface. The ECU is `ecu-sim serve --socketcan vcan0 --relay-pty` (its
# supply behind an emulated USB relay board on a pty); the bench file reaches it on vcan0 and
# switches its power through the relay; the scenario cuts the power at 50 % of the transfer and
# expects the update to commit all the same. udsoncan over DoIP then reads the ECU's boot
# count, and the ECU's log shows the relay's switching: the cut really happened.
# Prints the results; exits non-zero at the first failure.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${HIL_BIN_DIR:-$root/target/debug}"
work="${TMPDIR:-/tmp}/bench-socketcan"
mkdir -p "$work/scenarios" && cd "$work"
RUST_LOG=${RUST_LOG:-info} "$bin/ecu-sim" serve --doip 127.0.0.1:13401 --state ecu --speed max \
    --socketcan vcan0 --relay-pty >ecu.out 2>ecu.log &
ecu=$!
trap 'kill $ecu 2>/dev/null || true; wait 2>/dev/null || true' EXIT
i=0
until grep -q 'power relay on' ecu.out 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { cat ecu.out ecu.log; exit 3; }; sleep 0.2
done
grep 'socketcan on' ecu.out
relay="$(sed -n 's/^ecu-sim: power relay on \([^ ]*\) .*/\1/p' ecu.out)"
status() {
    "$root/.venv/bin/python" "$root/tests/interop/flash_doip.py" --port 13401 |
        sed -n 's/.*"boot_count": \([0-9]*\).*/\1/p'
}
before="$(status)"
cat >bench.yaml <<EOF
name: ecu-sim on the kernel's vcan0
target: {transport: socketcan, interface: vcan0}
power:
  relay: {port: $relay, baud: 9600, on: "A0 01 01 A2", off: "A0 01 00 A1"}
faults: [power_cut]
boot_timeout_s: 60
confirm_timeout_s: 30
EOF
cat >scenarios/socketcan-power-cut.yaml <<'EOF'
description: the relay cuts power at 50 % of a transfer on vcan0; the manager starts over and commits
seed: 7
update: {version: 2.0.0, size: 40000}
faults:
  - when: {transfer_percent: 50}
    do: {power_cut: {restore_after_ms: 500}}
expect:
  outcome: committed
  version: 2.0.0
  events: [power_off, power_on, state:committed]
EOF
"$bin/hil" run --ui plain --bench bench.yaml scenarios --trace traces
after="$(status)"
echo "ecu boot count: $before -> $after"
echo "relay: $(grep -c 'relay: switched off' ecu.log) switch(es) off, $(grep -c 'relay: switched on' ecu.log) on"
# A boot for the cut and one for the update.
[ "$after" -ge $((before + 2)) ]
grep -q 'relay: switched off' ecu.log
