"""A naive pure-Python TUN L4 forwarder: the baseline pktswitch is measured against.

One os.read and one os.write per packet, a dict flow table, full NAT from one SNAT address,
IP and TCP checksums recomputed from scratch with struct and sum. Port 80 round robin over
the backends, any other port by a hash of the client address (iperf3 needs its two
connections on one backend). Run in the switch's namespace, stops on SIGINT/SIGTERM.

    naive_tun.py TUN VIP SNAT BACKEND...
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import zlib

from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN


def csum(b: bytes | bytearray) -> int:
    if len(b) & 1:
        b = bytes(b) + b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fix(p: bytearray) -> None:
    ihl = (p[0] & 0x0F) * 4
    p[10:12] = b"\0\0"
    p[10:12] = struct.pack("!H", csum(p[:ihl]))
    tcp = p[ihl:]
    tcp[16:18] = b"\0\0"
    pseudo = p[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    p[ihl + 16 : ihl + 18] = struct.pack("!H", csum(pseudo + tcp))


def main() -> None:
    name, vip_s, snat_s, *backend_s = sys.argv[1:]
    tun = TunTapDevice(name, flags=IFF_TUN | IFF_NO_PI)
    for cmd in (
        ["ip", "link", "set", name, "up"],
        ["ip", "route", "replace", f"{vip_s}/32", "dev", name],
        ["ip", "route", "replace", f"{snat_s}/32", "dev", name],
    ):
        subprocess.run(cmd, check=True)
    vip, snat = socket.inet_aton(vip_s), socket.inet_aton(snat_s)
    backends = [socket.inet_aton(b) for b in backend_s]
    fwd: dict[tuple[bytes, int, int], list] = {}  # (client, cport, vport) -> flow
    rev: dict[int, list] = {}  # snat port -> flow [client, cport, vport, backend, sport]
    state = {"next_port": 1024, "rr": 0}

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fd = tun.fileno()
    while True:
        p = bytearray(os.read(fd, 65535))
        if len(p) < 40 or p[0] >> 4 != 4 or p[9] != 6:
            continue
        ihl = (p[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", p, ihl)
        src, dst = bytes(p[12:16]), bytes(p[16:20])
        if dst == vip:
            flow = fwd.get((src, sport, dport))
            if flow is None:
                if dport == 80:
                    backend = backends[state["rr"] % len(backends)]
                    state["rr"] += 1
                else:
                    backend = backends[zlib.crc32(src) % len(backends)]
                port = state["next_port"]
                state["next_port"] = 1024 if port >= 65000 else port + 1
                flow = [src, sport, dport, backend, port]
                old = rev.pop(port, None)
                if old is not None:
                    fwd.pop((old[0], old[1], old[2]), None)
                fwd[(src, sport, dport)] = flow
                rev[port] = flow
            p[12:16], p[16:20] = snat, flow[3]
            struct.pack_into("!HH", p, ihl, flow[4], dport)
        elif dst == snat:
            flow = rev.get(dport)
            if flow is None:
                continue
            p[12:16], p[16:20] = vip, flow[0]
            struct.pack_into("!HH", p, ihl, flow[2], flow[1])
        else:
            continue
        fix(p)
        os.write(fd, p)


if __name__ == "__main__":
    main()
