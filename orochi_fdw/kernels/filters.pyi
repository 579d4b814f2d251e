"""Type stubs for the compiled kernel module orochi_fdw.kernels.filters."""

from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

_Buffer = Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8]]
_Offsets = npt.NDArray[np.int64]
_Mask = npt.NDArray[np.uint8]
_Validity = Optional[npt.NDArray[np.uint8]]
_Values = Union[npt.NDArray[np.int8], npt.NDArray[np.uint8], npt.NDArray[np.int16],
                npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float32],
                npt.NDArray[np.float64]]
_Indices = Union[npt.NDArray[np.int32], npt.NDArray[np.int64]]

OP_EQ: int
OP_NE: int
OP_LT: int
OP_LE: int
OP_GT: int
OP_GE: int
COMBINE_SET: int
COMBINE_AND: int
COMBINE_OR: int

def compare(values: _Values, validity: _Validity, op: int, value: Any, out: _Mask,
            combine: int = ...) -> None: ...
def compare_range(values: _Values, validity: _Validity, op1: int, value1: Any, op2: int,
                  value2: Any, out: _Mask, combine: int = ...) -> None: ...
def in_list(values: _Values, validity: _Validity, items: _Values, negate: bool, out: _Mask,
            combine: int = ...) -> None: ...
def validity_filter(validity: _Validity, is_null: bool, out: _Mask, combine: int = ...) -> None: ...
def text_compare(offsets: _Offsets, data: _Buffer, validity: _Validity, op: int, value: _Buffer,
                 out: _Mask, combine: int = ...) -> None: ...
def text_prefix(offsets: _Offsets, data: _Buffer, validity: _Validity, prefix: _Buffer,
                negate: bool, out: _Mask, combine: int = ...) -> None: ...
def text_in_list(offsets: _Offsets, data: _Buffer, validity: _Validity, item_offsets: _Offsets,
                 item_data: _Buffer, negate: bool, out: _Mask, combine: int = ...) -> None: ...
def dict_filter(codes: npt.NDArray[np.int32], entry_mask: _Mask, validity: _Validity,
                out: _Mask, combine: int = ...) -> None: ...
def count_selected(mask: _Mask) -> int: ...
def mask_to_indices(mask: _Mask, out: _Indices) -> int: ...
def compress(mask: _Mask, values: _Buffer, out: npt.NDArray[np.uint8], width: int) -> int: ...
