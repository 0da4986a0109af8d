#!/usr/bin/env bash
# Installs everything the tests need; idempotent, runs from any directory:
#   - cargo-nextest (if `cargo nextest` is missing)
#   - a Python virtualenv at <repo>/.venv holding the pinned tools of ci/requirements.txt
#     (MCUboot's imgtool, used by tests/tests/imgtool_interop.rs)
#   - Debian packages for the Linux CAN guest (ci/linux-can-vm.sh, harness/tests/linux_can.rs):
#     qemu-system-x86, linux-image-amd64, busybox-static, can-utils, iproute2; curl, the
#     independent TLS client of harness/tests/https.rs; mosquitto and mosquitto-clients, the MQTT
#     broker of the service tests (harness/tests/mqtt_wire.rs); chromium, the browser that loads
#     `hil ota serve`'s portal in harness/tests/ota_serve.rs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install.sh: installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

# The Linux CAN guest: installed once (dpkg says what is there), as root or through sudo.
debs=(qemu-system-x86 linux-image-amd64 busybox-static can-utils iproute2 cpio curl mosquitto mosquitto-clients chromium)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install.sh: installing ${missing[*]} (the Linux CAN guest, curl, mosquitto, chromium)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
        { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi

python="${PYTHON:-python3}"
# A venv whose interpreter no longer runs (python upgraded or removed) is rebuilt.
if [ -e .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    echo "install.sh: .venv is broken, recreating it"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "install.sh: creating .venv with $python"
    "$python" -m venv .venv
fi
# Already-satisfied pins need no network; changed pins are installed.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r ci/requirements.txt

want="$(sed -n 's/^imgtool==//p' ci/requirements.txt)"
have="$(.venv/bin/imgtool version)"
if [ "$have" != "$want" ]; then
    echo "install.sh: .venv/bin/imgtool is $have, ci/requirements.txt pins $want" >&2
    exit 1
fi
kernel="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)"
echo "install.sh: ok (imgtool $have, $(cargo nextest --version | head -1), guest kernel ${kernel:-none})"
