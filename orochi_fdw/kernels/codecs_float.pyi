"""Type stubs for the compiled kernel module orochi_fdw.kernels.codecs_float."""

from typing import Union

import numpy as np
import numpy.typing as npt

_Buffer = Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8]]
_Bits = Union[npt.NDArray[np.uint32], npt.NDArray[np.uint64]]

def gorilla_max_size(n: int, width: int) -> int: ...
def gorilla_encode(bits: _Bits, out: npt.NDArray[np.uint8]) -> int: ...
def gorilla_decode(buf: _Buffer, out: _Bits) -> int: ...

_Floats = Union[npt.NDArray[np.float32], npt.NDArray[np.float64]]

DECIMAL_MAX_EXPONENT: int

def decimal_encode(values: _Floats, exponent: int, out: npt.NDArray[np.int64]) -> int: ...
def decimal_decode(ints: npt.NDArray[np.int64], exponent: int, out: _Floats) -> None: ...
def decimal_unpack(packed: _Buffer, base: int, width: int, exponent: int, out: _Floats) -> None: ...
