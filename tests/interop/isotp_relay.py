"""A UDS responder on the Linux kernel's own ISO-TP (a CAN_ISOTP socket): every request that
arrives on IFACE (rx 0x7E0, tx 0x7E8, or as given) is relayed to a DoIP entity (python's
doipclient) and its answer sent back through the kernel's ISO-TP. It puts `ecu-sim serve --doip`
behind the kernel's segmentation and flow control, so a tester's ISO-TP (hil's) talks to the
kernel's. responsePending (7F xx 78) answers are relayed as they come.

The kernel hands a request over only once all of it has arrived, so the ECU behind the relay
cannot see a long segmented request begin (ISO 14229-2 stops S3 at its first frame): while
the relay waits for the next request in a non-default session it sends the ECU a
TesterPresent (3E 80, no positive answer; a negative one is dropped) every second, as a
gateway that hides the segmentation must, so that the ECU's S3 does not expire during an
8 KiB TransferData on a slow (emulated, loaded) machine. An ECU reset or a return to the
default session stops it.

    isotp_relay.py IFACE DOIP_HOST DOIP_PORT [--fd] [--rx 0x7E0] [--tx 0x7E8] [--bs N] [--stmin N]

Prints "relay ready" once the socket is bound; one line per relayed request to stderr.
"""

import argparse
import socket
import struct
import sys

from doipclient import DoIPClient

SOL_CAN_ISOTP = 106  # SOL_CAN_BASE + CAN_ISOTP
CAN_ISOTP_OPTS = 1
CAN_ISOTP_RECV_FC = 2
CAN_ISOTP_LL_OPTS = 5
CAN_ISOTP_TX_PADDING = 0x004
# Services whose second byte is a sub-function (with the suppress-positive-response bit).
SUBFUNCTION_SERVICES = {0x10, 0x11, 0x19, 0x27, 0x28, 0x31, 0x3E, 0x85}


# The largest message the kernel's ISO-TP (Linux 6.1) takes: MAX_MSG_LENGTH 8200 bytes.
KERNEL_MAX_MESSAGE = 8200


def clamp_block_length(answer: bytes) -> bytes:
    """A gateway announces what its CAN side can take: RequestDownload's positive answer
    (74 LFI maxNumberOfBlockLength) with the block length cut to the kernel's message limit.
    Blocks above 4095 bytes still need ISO-TP's escaped first frame (FF_DL > 4095)."""
    if len(answer) >= 3 and answer[0] == 0x74:
        n = answer[1] >> 4
        length = int.from_bytes(answer[2:2 + n], "big")
        if length > KERNEL_MAX_MESSAGE:
            length = KERNEL_MAX_MESSAGE
            return answer[:2] + length.to_bytes(n, "big") + answer[2 + n:]
    return answer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("iface")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--fd", action="store_true")
    p.add_argument("--rx", type=lambda s: int(s, 0), default=0x7E0)
    p.add_argument("--tx", type=lambda s: int(s, 0), default=0x7E8)
    p.add_argument("--bs", type=int, default=0, help="block size in our flow control frames")
    p.add_argument("--stmin", type=lambda s: int(s, 0), default=0,
                   help="STmin in our flow control frames (ISO 15765-2 encoding)")
    a = p.parse_args()

    s = socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_ISOTP)
    # struct can_isotp_options: flags, frame_txtime, ext_address, txpad, rxpad, rx_ext_address
    s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_OPTS,
                 struct.pack("=LLBBBB", CAN_ISOTP_TX_PADDING, 0, 0, 0xCC, 0, 0))
    # struct can_isotp_fc_options: bs, stmin, wftmax — what the tester must respect.
    s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_RECV_FC, struct.pack("=BBB", a.bs, a.stmin, 0))
    if a.fd:
        # struct can_isotp_ll_options: mtu (72 = CANFD_MTU), tx_dl (64), tx_flags
        s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_LL_OPTS, struct.pack("=BBB", 72, 64, 0))
    s.bind((a.iface, a.rx, a.tx))

    doip = DoIPClient(a.host, 0x0010, tcp_port=a.port, udp_port=a.port,
                      client_logical_address=0x0E00)
    print("relay ready", flush=True)
    s.settimeout(1.0)
    in_session = False
    while True:
        try:
            request = s.recv(65536)
        except socket.timeout:
            if in_session:
                doip.send_diagnostic(bytes([0x3E, 0x80]))
                try:
                    dropped = doip.receive_diagnostic(timeout=0.5)
                except TimeoutError:
                    dropped = None
                if dropped:
                    print(f"keep-alive answered {bytes(dropped).hex()} (dropped)",
                          file=sys.stderr, flush=True)
            continue
        if not request:
            continue
        doip.send_diagnostic(bytes(request))
        # suppressPosRspMsgIndicationBit: only a negative answer may come, within P2.
        suppressed = len(request) >= 2 and request[0] in SUBFUNCTION_SERVICES and request[1] & 0x80
        # Relay every answer, responsePending included, until the final one.
        while True:
            try:
                answer = doip.receive_diagnostic(timeout=1 if suppressed else 30)
            except TimeoutError:
                answer = None
            if answer is None:
                break
            s.send(clamp_block_length(bytes(answer)))
            if not (len(answer) >= 3 and answer[0] == 0x7F and answer[2] == 0x78):
                break
        sid = request[0]
        if sid == 0x10 and len(request) >= 2 and answer and answer[0] == 0x50:
            in_session = request[1] & 0x7F != 0x01
        elif sid == 0x11:
            in_session = False
        print(f"relayed 0x{sid:02x} ({len(request)} bytes)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
