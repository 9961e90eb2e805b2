"""The type of what pktswitch._native's cffi objects hand Python from C."""

from typing import Any, TypeAlias

# A C pointer, array or struct (pks_meta *, a pks_flow, uint32_t[]): cffi makes its type at run
# time from native/'s declarations, so statically it has none. A struct's fields read as ints
# and floats.
CData: TypeAlias = Any
