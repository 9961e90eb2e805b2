"""cffi build script (API mode) for the native core: compiled into pktswitch._native."""

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools refuses absolute source paths: name them relative to the working directory
REL = Path(os.path.relpath(HERE))
# pks.h includes one header per concern, in the order their types need; the cffi
# declaration is those headers, in that order, minus their #include and #pragma lines
# (`#define NAME 123` constants stay).
PARTS = re.findall(r'^#include "(pks_\w+\.h)"$', (HERE / "pks.h").read_text(), re.M)
SOURCES = sorted(p.name for p in HERE.glob("*.c"))


def cdef_text() -> str:
    """The headers of PARTS as cffi declares them."""
    lines = [
        ln
        for part in PARTS
        for ln in (HERE / part).read_text().splitlines()
        if not ln.startswith(("#include", "#pragma"))
    ]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "pktswitch._native",
    '#include "pks.h"',
    sources=[str(REL / name) for name in SOURCES],
    include_dirs=[str(REL)],
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-std=c11"],
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
