"""A minimal pcap writer (the classic libpcap format) for raw IP packets."""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header (what a TUN device carries)


class PcapWriter:
    def __init__(self, f: BinaryIO, snaplen: int = 65535) -> None:
        self.f = f
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    def write(self, t: float, data: bytes, orig_len: int | None = None) -> None:
        sec = int(t)
        usec = min(999_999, round((t - sec) * 1e6))
        self.f.write(struct.pack("<IIII", sec, usec, len(data), orig_len or len(data)))
        self.f.write(data)
