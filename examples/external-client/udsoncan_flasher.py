#!/usr/bin/env python3
"""A team's own flashing tool, as `hil` scenarios run it (`client: {external: ...}`): udsoncan
over doipclient (DoIP) or over can-isotp on python-can's slcan interface.

It programs the image, resets the ECU and waits until the new version runs confirmed. When the
ECU goes silent or the connection breaks mid-sequence (a power cut), it waits for the ECU and
starts the programming sequence over, up to --attempts times. Exit 0: the new version runs
confirmed; 1: it gave up (the reason on stderr).

    udsoncan_flasher.py --host 127.0.0.1 --port 13400 --image update.bin --version 2.0.0
    udsoncan_flasher.py --slcan /dev/pts/7 --image update.bin --version 2.0.0
"""
import argparse
import hashlib
import struct
import sys
import time

import udsoncan
from udsoncan import MemoryLocation
from udsoncan.client import Client
from udsoncan.exceptions import NegativeResponseException, TimeoutException
from udsoncan.services import ECUReset, RoutineControl

SECRETS = {1: b"ecu-sim level 1 secret", 3: b"ecu-sim level 3 secret"}


def key_algo(level, seed, params):
    """The ECU's documented SecurityAccess algorithm: SHA-256(secret || seed)[0:4]."""
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


def config():
    c = dict(udsoncan.configs.default_client_config)
    c["security_algo"] = key_algo
    c["data_identifiers"] = {0xF189: udsoncan.AsciiCodec(5), 0xFD00: Raw(16), 0xFD03: Raw(14)}
    c["request_timeout"] = 5
    # The ECU announces P2 = 50 ms; a pty and Python's scheduling can take longer than that.
    c["use_server_timing"] = False
    c["p2_timeout"] = 2
    c["p2_star_timeout"] = 10
    return c


def connection(args):
    if args.slcan:
        import can
        import isotp
        from udsoncan.connections import PythonIsoTpConnection

        bus = can.Bus(interface="slcan", channel=args.slcan, bitrate=500000)
        address = isotp.Address(isotp.AddressingMode.Normal_11bits,
                                txid=args.tx_id, rxid=args.rx_id)
        stack = isotp.CanStack(bus, address=address, params={
            "tx_padding": 0xAA, "tx_data_min_length": 8, "blocking_send": False,
            "rx_flowcontrol_timeout": 2000, "rx_consecutive_frame_timeout": 2000,
        })
        return PythonIsoTpConnection(stack)
    from doipclient import DoIPClient
    from doipclient.connectors import DoIPClientUDSConnector

    doip = DoIPClient(args.host, args.ecu, tcp_port=args.port, udp_port=args.port,
                      client_logical_address=args.tester, auto_reconnect_tcp=True)
    return DoIPClientUDSConnector(doip)


def log(msg):
    print(msg, flush=True)


def program(client, image):
    """Session, security, erase, download, transfer, exit, check, reset."""
    client.change_session(2)
    client.unlock_security_access(1)
    staging = client.read_data_by_identifier(0xFD03).service_data.values[0xFD03]
    address, size = struct.unpack(">II", staging[1:9])
    client.routine_control(0xFF00, RoutineControl.ControlType.startRoutine,
                           bytes([0x44]) + struct.pack(">II", address, size))
    resp = client.request_download(MemoryLocation(address, len(image), 32, 32))
    block = min(resp.service_data.max_length - 2, 4000)
    seq = 1
    blocks = (len(image) + block - 1) // block
    for i, off in enumerate(range(0, len(image), block)):
        client.transfer_data(seq, image[off:off + block])
        seq = (seq + 1) & 0xFF
        if (i + 1) % max(1, blocks // 4) == 0:
            log(f"block {i + 1}/{blocks}")
    client.request_transfer_exit()
    check = client.routine_control(0xFF01, RoutineControl.ControlType.startRoutine)
    status = bytes(check.service_data.routine_status_record or b"\x00")
    if status[0] != 0:
        raise SystemExit(f"the ECU refused the image: check status {status.hex()}")
    client.ecu_reset(ECUReset.ResetType.hardReset)


def running(client):
    """(version, confirmed) of what the ECU runs now."""
    version = client.read_data_by_identifier(0xF189).service_data.values[0xF189].strip("\0 ")
    status = client.read_data_by_identifier(0xFD00).service_data.values[0xFD00]
    return version, bool(status[9] & 2)


def wait_confirmed(args, deadline):
    """Poll until the new version runs confirmed (new connection per poll: the ECU resets)."""
    last = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with Client(connection(args), config=config()) as client:
                last = running(client)
        except Exception as e:  # the ECU is booting
            last = repr(e)
            continue
        if last == (args.version, True):
            return True
    log(f"still not confirmed: {last}")
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=13400)
    ap.add_argument("--ecu", type=lambda s: int(s, 0), default=0x0010)
    ap.add_argument("--tester", type=lambda s: int(s, 0), default=0x0E00)
    ap.add_argument("--slcan", help="an slcan adapter's serial device instead of DoIP")
    ap.add_argument("--tx-id", type=lambda s: int(s, 0), default=0x7E0)
    ap.add_argument("--rx-id", type=lambda s: int(s, 0), default=0x7E8)
    ap.add_argument("--image", required=True)
    ap.add_argument("--version", required=True, help="the version the image carries")
    ap.add_argument("--attempts", type=int, default=3)
    args = ap.parse_args()
    image = open(args.image, "rb").read()

    for attempt in range(1, args.attempts + 1):
        log(f"attempt {attempt}: programming {len(image)} bytes")
        try:
            with Client(connection(args), config=config()) as client:
                program(client, image)
        except NegativeResponseException as e:
            print(f"attempt {attempt}: negative response {e}", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        except (TimeoutException, ConnectionError, OSError, TimeoutError) as e:
            log(f"attempt {attempt}: the ECU went away ({type(e).__name__}); starting over")
            time.sleep(2)
            continue
        log("programmed; waiting for the new version to confirm")
        if wait_confirmed(args, time.monotonic() + 30):
            log(f"{args.version} runs confirmed")
            return 0
    print(f"gave up after {args.attempts} attempts", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
