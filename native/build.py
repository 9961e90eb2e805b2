"""cffi build script (API mode) for the native core: compiled into pktswitch._native."""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools refuses absolute source paths: name them relative to the working directory
REL = Path(os.path.relpath(HERE))
HEADER = (HERE / "pks.h").read_text()

ffibuilder = FFI()
# cffi's cdef takes the header minus its #include lines; `#define NAME 123` constants stay.
ffibuilder.cdef("\n".join(ln for ln in HEADER.splitlines() if not ln.startswith("#include")))
ffibuilder.set_source(
    "pktswitch._native",
    '#include "pks.h"',
    sources=[str(REL / "pks.c")],
    include_dirs=[str(REL)],
    extra_compile_args=["-O3", "-Wall", "-Wextra", "-std=c11"],
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
