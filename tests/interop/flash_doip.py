#!/usr/bin/env python3
"""Flash the virtual ECU with third-party tools: udsoncan over doipclient, or over can-isotp on
python-can's slcan interface (`--slcan PTY`, for `ecu-sim serve --slcan-pty`).

Runs the full programming sequence against `ecu-sim serve --doip` (session, security, erase,
download, transfer, exit, check, reset), then reads the new version and the boot status.
Prints one JSON object with what it saw; exits non-zero on any unexpected answer.

    flash_doip.py --port 13400 --image v2.bin [--expect-version 2.0.0] [--block N]
    flash_doip.py --port 13400 --image v2.bin --without-security   # must be refused with 0x33
    flash_doip.py --port 13400 --identify                          # UDP identification + status
    flash_doip.py --slcan /dev/pts/5 --image v2.bin --block 4000   # over slcan (ISO-TP 0x7E0/0x7E8)
    flash_doip.py --socketcan vcan0 --image v2.bin [--fd]          # the kernel's ISO-TP
    flash_doip.py --socketcan vcan0 --isotp python --image v2.bin   # python-can's socketcan bus
                                                                   # + can-isotp's Python stack
"""
import argparse
import hashlib
import json
import struct
import sys
import time

import udsoncan
from doipclient import DoIPClient
from doipclient.connectors import DoIPClientUDSConnector
from udsoncan import MemoryLocation
from udsoncan.client import Client
from udsoncan.exceptions import NegativeResponseException
from udsoncan.services import ECUReset, RoutineControl

SECRETS = {1: b"ecu-sim level 1 secret", 3: b"ecu-sim level 3 secret"}


def key_algo(level, seed, params):
    """The documented SecurityAccess algorithm: SHA-256(secret || seed)[0:4]."""
    return hashlib.sha256(SECRETS[level] + bytes(seed)).digest()[:4]


class Raw(udsoncan.DidCodec):
    def __init__(self, length):
        self.length = length

    def encode(self, value):
        return value

    def decode(self, payload):
        return bytes(payload)

    def __len__(self):
        return self.length


def client_config():
    config = dict(udsoncan.configs.default_client_config)
    config["security_algo"] = key_algo
    config["data_identifiers"] = {
        0xF189: udsoncan.AsciiCodec(5),
        0xFD00: Raw(16),
        0xFD03: Raw(14),
    }
    config["request_timeout"] = 20
    # The ECU announces P2 = 50 ms; over a pty, with Python's scheduling on a busy machine,
    # an answer can take longer than that without anything being wrong.
    config["use_server_timing"] = False
    config["p2_timeout"] = 2
    config["p2_star_timeout"] = 10
    return config


def slcan_connection(args):
    """UDS over can-isotp over python-can's slcan interface (normal 11-bit addressing)."""
    import can
    import isotp
    from udsoncan.connections import PythonIsoTpConnection

    bus = can.Bus(interface="slcan", channel=args.slcan, bitrate=args.bitrate)
    address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    stack = isotp.CanStack(bus, address=address, params={
        "tx_padding": 0xAA,
        "tx_data_min_length": 8,
        "blocking_send": False,
        "rx_flowcontrol_timeout": 2000,
        "rx_consecutive_frame_timeout": 2000,
    })
    return PythonIsoTpConnection(stack)


def socketcan_connection(args):
    """UDS over the Linux kernel's own ISO-TP (a CAN_ISOTP socket through can-isotp's
    `isotp.socket`), on a SocketCAN interface (normal 11-bit addressing, 0x7E0/0x7E8)."""
    import isotp
    from udsoncan.connections import IsoTPSocketConnection

    address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    sock = isotp.socket(timeout=0.1)
    # WAIT_TX_DONE: send() returns when the last frame is on the bus, so P2 runs from the end
    # of the request as ISO 14229-2 counts it (a long TransferData takes a while on CAN).
    sock.set_opts(optflag=isotp.socket.flags.TX_PADDING | isotp.socket.flags.WAIT_TX_DONE,
                  txpad=0xAA)
    if args.fd:
        sock.set_ll_opts(mtu=72, tx_dl=64)  # CANFD_MTU
    return IsoTPSocketConnection(args.socketcan, address, tpsock=sock)


def python_socketcan_connection(args):
    """UDS over can-isotp's own (pure-Python) ISO-TP stack on python-can's `socketcan` bus:
    segmentation, flow control, STmin and block size handled in Python, not by the kernel."""
    import can
    import isotp
    from udsoncan.connections import PythonIsoTpConnection

    bus = can.Bus(interface="socketcan", channel=args.socketcan, fd=args.fd)
    notifier = can.Notifier(bus, [], timeout=0.05)
    address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    params = {
        "tx_padding": 0xAA,
        "tx_data_min_length": 8,
        # send() returns when the last frame is out, so P2 runs from the end of the request
        # (a 16 KiB TransferData at the ECU's STmin takes seconds on CAN).
        "blocking_send": True,
        # Generous: an emulated guest schedules Python late now and then.
        "rx_flowcontrol_timeout": 5000,
        "rx_consecutive_frame_timeout": 5000,
        "max_frame_size": 65536,
    }
    if args.fd:
        params.update({"can_fd": True, "tx_data_length": 64, "bitrate_switch": True})
    stack = isotp.NotifierBasedCanStack(bus, notifier, address=address, params=params)
    return PythonIsoTpConnection(stack)


def read_raw(client, did):
    return client.read_data_by_identifier(did).service_data.values[did]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=13400)
    ap.add_argument("--ecu", type=lambda s: int(s, 0), default=0x0010)
    ap.add_argument("--tester", type=lambda s: int(s, 0), default=0x0E00)
    ap.add_argument("--image", help="image to flash (without it: only read the status)")
    ap.add_argument("--identify", action="store_true", help="vehicle identification over UDP")
    ap.add_argument("--block", type=int, default=0, help="bytes per TransferData (0: ECU max)")
    ap.add_argument("--without-security", action="store_true")
    ap.add_argument("--boot-wait", type=float, default=3.0)
    ap.add_argument("--expect-version", help="exit 1 unless this version runs confirmed at the end")
    ap.add_argument("--slcan", help="an slcan adapter's serial device instead of DoIP")
    ap.add_argument("--bitrate", type=int, default=500000)
    ap.add_argument("--socketcan", help="a SocketCAN interface (the kernel's ISO-TP) instead of DoIP")
    ap.add_argument("--fd", action="store_true", help="with --socketcan: CAN FD frames")
    ap.add_argument("--isotp", choices=["kernel", "python"], default="kernel",
                    help="with --socketcan: the kernel's ISO-TP sockets, or can-isotp's Python "
                         "stack on python-can's socketcan bus")
    args = ap.parse_args()

    report = {}
    if args.slcan:
        conn = slcan_connection(args)
    elif args.socketcan and args.isotp == "python":
        conn = python_socketcan_connection(args)
    elif args.socketcan:
        conn = socketcan_connection(args)
    else:
        doip = DoIPClient(args.host, args.ecu, tcp_port=args.port, udp_port=args.port,
                          client_logical_address=args.tester)
        if args.identify:
            ident = doip.request_vehicle_identification()
            report["vin"] = ident.vin
            report["logical_address"] = ident.logical_address
        conn = DoIPClientUDSConnector(doip)
    with Client(conn, config=client_config()) as client:
        if args.image:
            flash(client, args, open(args.image, "rb").read(), report)
            if "refused_nrc" in report:
                print(json.dumps(report))
                return 0
        report["version"] = client.read_data_by_identifier(0xF189).service_data.values[0xF189]
        status = read_raw(client, 0xFD00)
        report["boot_status"] = {
            "slot": status[0],
            "on_probation": bool(status[9] & 1),
            "confirmed": bool(status[9] & 2),
            "boot_count": struct.unpack(">I", status[11:15])[0],
            "outcome": status[15],
        }
    print(json.dumps(report))
    if args.expect_version:
        running = (report["version"], report["boot_status"]["confirmed"])
        if running != (args.expect_version, True):
            print(f"expected {args.expect_version} running confirmed, found {running[0]} "
                  f"{'confirmed' if running[1] else 'not confirmed'}", file=sys.stderr)
            return 1
    return 0


def flash(client, args, image, report):
    """The programming sequence; returns after the reset and the boot wait."""
    t0 = time.monotonic()
    client.change_session(2)
    if args.without_security:
        try:
            client.routine_control(0xFF00, RoutineControl.ControlType.startRoutine,
                                   bytes([0x44]) + struct.pack(">II", 0, 16))
        except NegativeResponseException as e:
            report["refused_nrc"] = e.response.code
            return
        sys.exit("erase without security access was accepted")
    client.unlock_security_access(1)
    staging = read_raw(client, 0xFD03)
    _slot, address, size = staging[0], *struct.unpack(">II", staging[1:9])
    report["staging"] = {"address": address, "size": size}
    client.routine_control(0xFF00, RoutineControl.ControlType.startRoutine,
                           bytes([0x44]) + struct.pack(">II", address, size))
    resp = client.request_download(MemoryLocation(address, len(image), 32, 32))
    max_len = resp.service_data.max_length
    block = args.block or (max_len - 2)
    report["max_block_length"] = max_len
    seq = 1
    for off in range(0, len(image), block):
        client.transfer_data(seq, image[off:off + block])
        seq = (seq + 1) & 0xFF
    client.request_transfer_exit()
    check = client.routine_control(0xFF01, RoutineControl.ControlType.startRoutine)
    report["check_status"] = list(check.service_data.routine_status_record)
    report["flash_seconds"] = round(time.monotonic() - t0, 3)
    client.ecu_reset(ECUReset.ResetType.hardReset)
    time.sleep(args.boot_wait)


if __name__ == "__main__":
    sys.exit(main())
