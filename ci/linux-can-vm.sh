#!/usr/bin/env bash
# A Linux guest with CAN, for the tests this machine's kernel cannot run (it has no PF_CAN).
#
#   ci/linux-can-vm.sh [COMMAND...]
#
# Boots Debian's kernel (package linux-image-amd64) under qemu-system-x86_64 with a busybox
# initramfs, shares the host's root read-only (virtio-9p) and chroots into it, so the guest runs
# the host's own binaries: the test binaries in target/, python3, can-utils, iproute2. In the
# guest: the CAN modules (can, can-raw, can-isotp, can-dev, vcan, vxcan, slcan) are loaded, vcan0
# (classic, mtu 16) and vcan1 (FD, mtu 72) are up, TMPDIR is a fresh tmpfs (/dev/shm; /tmp too
# unless the working directory is under it), and COMMAND runs as root in the current directory
# with HIL_REQUIRE_VCAN=1 (a CAN test that cannot run fails).
# Without COMMAND: the SocketCAN test binary of harness/tests/socketcan.rs (built first).
#
# The guest's output goes to stdout; the script exits with COMMAND's exit status. When a step
# fails (no kernel, a module missing, the guest not booting) it says which one and exits 3.
# Bounded: LINUX_CAN_VM_TIMEOUT seconds (default 600), the guest is always killed on exit.
# Emulation (TCG) by default: on these machines -enable-kvm did not get past the firmware
# (../shared/notes/linux-can-guest.md); LINUX_CAN_VM_ACCEL=kvm uses /dev/kvm where it works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
timeout_s="${LINUX_CAN_VM_TIMEOUT:-600}"

fail() {
    echo "linux-can-vm: $*" >&2
    exit 3
}

command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is missing (ci/install.sh installs qemu-system-x86)"
busybox="$(command -v busybox)" || fail "busybox is missing (ci/install.sh installs busybox-static)"
# The initramfs has no libraries: the busybox in it must be the static one.
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic executable' ||
    fail "$busybox is not static (ci/install.sh installs busybox-static)"

# The newest installed kernel that has its modules.
kernel=""
for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    v="${k#/boot/vmlinuz-}"
    if [ -d "/usr/lib/modules/$v/kernel" ]; then kernel="$k"; version="$v"; break; fi
done
[ -n "$kernel" ] || fail "no kernel with modules in /boot (ci/install.sh installs linux-image-amd64)"
[ -r "$kernel" ] || fail "$kernel is not readable"
mods="/usr/lib/modules/$version/kernel"

if [ "$#" -eq 0 ]; then
    bin="$(cd "$root" && cargo test -q -p hil --test socketcan --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and t.get("name") == "socketcan" and "test" in t.get("kind", []):
        print(m["executable"])
')"
    [ -x "$bin" ] || fail "could not build the SocketCAN test binary"
    set -- "$bin" --color never
fi

work="$(mktemp -d)"
qemu_pid=""
cleanup() {
    [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The initramfs: busybox, the modules to mount the host's root, and /init.
mkdir -p "$work/initrd/bin" "$work/initrd/mod"
cp "$busybox" "$work/initrd/bin/busybox"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
    drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs \
    fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p \
    net/can/can net/can/can-raw net/can/can-isotp drivers/net/can/dev/can-dev \
    drivers/net/can/vcan drivers/net/can/vxcan drivers/net/can/slcan/slcan drivers/net/can/slcan; do
    for ext in ko ko.xz ko.zst; do
        f="$mods/$m.$ext"
        if [ -f "$f" ]; then
            case "$ext" in
                ko) cp "$f" "$work/initrd/mod/" ;;
                ko.xz) xz -dc "$f" >"$work/initrd/mod/$(basename "$m").ko" ;;
                ko.zst) zstd -qdc "$f" >"$work/initrd/mod/$(basename "$m").ko" ;;
            esac
        fi
    done
done
# The command, quoted for the guest's shell.
printf '%q ' "$@" >"$work/initrd/command"
printf '%q' "$PWD" >"$work/initrd/cwd"
cat >"$work/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
step() { echo "linux-can-vm: step: $*"; }
die() { echo "linux-can-vm: FAILED at: $*"; poweroff -f; }
mount -t proc proc /proc 2>/dev/null || { mkdir -p /proc && mount -t proc proc /proc; }
mkdir -p /sys /dev /host && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
step "modules"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache \
    9pnet 9pnet_virtio 9p can can-raw can-isotp can-dev vcan vxcan slcan; do
    [ -f /mod/$m.ko ] || { case $m in virtio_pci_legacy_dev|virtio_pci_modern_dev|netfs|fscache|vxcan) continue;; esac; die "module $m is not in this kernel"; }
    insmod /mod/$m.ko 2>/dev/null || grep -q "^${m//-/_} " /proc/modules || die "insmod $m"
done
step "host root over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || die "mounting the host's root (9p)"
mount -t proc proc /host/proc && mount -t sysfs sys /host/sys && mount -t devtmpfs dev /host/dev || die "proc/sys/dev in the chroot"
# Scratch space: a tmpfs at /dev/shm (TMPDIR), and over /tmp unless the working directory is
# under /tmp (a checkout there must stay visible).
mkdir -p /host/dev/shm && mount -t tmpfs shm /host/dev/shm || die "a tmpfs for TMPDIR"
case "$(cat /cwd)" in /tmp | /tmp/*) ;; *) mount -t tmpfs tmp /host/tmp ;; esac
mount -t tmpfs run /host/run 2>/dev/null
mkdir -p /host/dev/pts && mount -t devpts devpts /host/dev/pts || die "devpts in the chroot"
step "vcan0 (classic) and vcan1 (fd)"
IP=/usr/sbin/ip
chroot /host $IP link set lo up || die "lo up"
chroot /host $IP link add dev vcan0 type vcan && chroot /host $IP link set vcan0 mtu 16 up || die "vcan0"
chroot /host $IP link add dev vcan1 type vcan && chroot /host $IP link set vcan1 mtu 72 up || die "vcan1"
step "running: $(cat /command)"
chroot /host /bin/sh -c "cd $(cat /cwd) && export HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HIL_REQUIRE_VCAN=1 TMPDIR=/dev/shm && exec $(cat /command)" </dev/null
echo "linux-can-vm: exit $?"
poweroff -f
EOF
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz") || fail "building the initramfs"

accel="tcg"
if [ "${LINUX_CAN_VM_ACCEL:-}" = "kvm" ]; then
    [ -w /dev/kvm ] || fail "LINUX_CAN_VM_ACCEL=kvm but /dev/kvm is not usable"
    accel="kvm"
fi
cpu="max"
echo "linux-can-vm: booting $kernel ($accel)" >&2
started=$(date +%s)
qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m 1536 -smp 1 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 loglevel=3 quiet" \
    -virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
    -nic none </dev/null >"$work/console" 2>&1 &
qemu_pid=$!
status=""
while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ $(($(date +%s) - started)) -ge "$timeout_s" ]; then
        cat "$work/console"
        fail "the guest did not finish within ${timeout_s}s"
    fi
    sleep 0.5
done
wait "$qemu_pid" || true
qemu_pid=""
tr -d '\r' <"$work/console" | grep -v '^linux-can-vm: exit ' || true
status="$(tr -d '\r' <"$work/console" | sed -n 's/^linux-can-vm: exit \([0-9]*\)$/\1/p' | tail -1)"
if [ -z "$status" ]; then
    step="$(tr -d '\r' <"$work/console" | sed -n 's/^linux-can-vm: \(FAILED at: .*\)$/\1/p' | tail -1)"
    fail "the guest ended without running the command${step:+ ($step)}; last step: $(tr -d '\r' <"$work/console" | sed -n 's/^linux-can-vm: step: //p' | tail -1)"
fi
echo "linux-can-vm: guest ran for $(($(date +%s) - started)) s, command exited $status" >&2
exit "$status"
