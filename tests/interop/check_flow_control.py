"""Check a `candump -L` capture of ISO-TP traffic against ISO 15765-2's flow control rules,
from the sender's side (the tester on TX, the receiver's flow control on RX):

- after a first frame the sender waits for a flow control frame before any consecutive frame;
- after a flow control `CTS` with block size BS > 0 it sends at most BS consecutive frames, then
  waits for the next flow control;
- consecutive frames are at least STmin apart. The kernel stamps frames when its receive path
  runs, which in an emulated guest batches now and then — on a loaded host (TCG, other builds
  on the two cores) up to one gap in twelve shows up short, the next one as much longer,
  though the sender waited: the gaps must average at least STmin and at least 85 % of them
  reach it. A sender that ignores STmin sends back to back, far below it, and fails both.

    check_flow_control.py CAPTURE TX_ID RX_ID

Prints one summary line; exits 1 with the first violation.
"""
import sys


def stmin_s(b: int) -> float:
    if b <= 0x7F:
        return b / 1000.0
    if 0xF1 <= b <= 0xF9:
        return (b - 0xF0) / 10000.0
    return 0.127


def main() -> int:
    path, tx, rx = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3], 16)
    frames = []
    for line in open(path):
        # (1700000000.123456) vcan0 7E0#1FFF... or with ## for FD
        parts = line.split()
        if len(parts) < 3:
            continue
        t = float(parts[0].strip("()"))
        ident, _, data = parts[2].partition("#")
        data = data.lstrip("#")
        if data and parts[2].count("#") == 2:
            data = data[1:]  # FD: the flags nibble after ##
        frames.append((t, int(ident, 16), bytes.fromhex(data)))
    fcs = cfs = firsts = 0
    min_gap = None
    state = "idle"  # idle | wait_fc | sending
    left = 0
    stmin = 0.0
    last_cf = None
    gaps = []
    asked = []  # the (BS, STmin byte) pairs the receiver's CTS frames asked for
    for t, ident, data in frames:
        if not data:
            continue
        kind = data[0] >> 4
        if ident == tx:
            if kind == 1:
                firsts += 1
                state, last_cf = "wait_fc", None
            elif kind == 2:
                cfs += 1
                if state != "sending":
                    print(f"violation at {t:.6f}: consecutive frame while waiting for flow control")
                    return 1
                if last_cf is not None:
                    gap = t - last_cf
                    min_gap = gap if min_gap is None else min(min_gap, gap)
                    gaps.append((gap, stmin))
                last_cf = t
                if left > 0:
                    left -= 1
                    if left == 0:
                        state = "wait_fc"
        elif ident == rx and kind == 3:
            fcs += 1
            if data[0] & 0x0F == 0:  # CTS
                bs, stmin = data[1], stmin_s(data[2])
                asked.append((data[1], data[2]))
                state, left = "sending", bs
                last_cf = None
    asked = sorted(set(asked))
    short = [g for g, st in gaps if g < st]
    mean = sum(g for g, _ in gaps) / max(1, len(gaps))
    summary = (f"{firsts} first frames, {fcs} flow control frames, {cfs} consecutive frames; "
               f"{len(gaps)} gaps, {len(short)} below STmin, mean {mean*1000:.3f} ms; "
               f"asked for " + ", ".join(f"BS {bs} STmin 0x{st:02X}" for bs, st in asked))
    if not (firsts and fcs and cfs and gaps):
        print(f"violation: nothing to check ({summary})")
        return 1
    if len(short) > len(gaps) * 0.15 or mean < sum(st for _, st in gaps) / len(gaps):
        print(f"violation: STmin not kept ({summary})")
        return 1
    print(f"flow control respected: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
