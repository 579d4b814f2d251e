"""Type stubs for the compiled kernel module orochi_fdw.kernels.aggregate."""

from typing import Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]
_Bytes = Union[npt.NDArray[np.uint8], bytes, bytearray, memoryview]
_Validity = Optional[Union[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]
_Selection = Optional[Union[npt.NDArray[np.bool_], npt.NDArray[np.uint8],
                            npt.NDArray[np.int32], npt.NDArray[np.int64]]]
_IntArray = Union[npt.NDArray[np.int16], npt.NDArray[np.int32], npt.NDArray[np.int64]]
_FloatArray = Union[npt.NDArray[np.float32], npt.NDArray[np.float64]]
_MinMaxArray = Union[_IntArray, _FloatArray]
_KeyKind = Literal["int", "float", "bytes"]

#: ("fixed", values, validity) | ("text", offsets, data, validity)
#: | ("dict", codes, dict_offsets, dict_data, validity)
_KeyColumn = Union[
    tuple[Literal["fixed"], np.ndarray, _Validity],
    tuple[Literal["text"], _I64, _Bytes, _Validity],
    tuple[Literal["dict"], npt.NDArray[np.int32], _I64, _Bytes, _Validity],
]
_TextColumn = Union[
    tuple[Literal["text"], _I64, _Bytes, _Validity],
    tuple[Literal["dict"], npt.NDArray[np.int32], _I64, _Bytes, _Validity],
]

class GroupTable:
    def __init__(self, kinds: Sequence[_KeyKind]) -> None: ...
    @property
    def ngroups(self) -> int: ...
    @property
    def nkeys(self) -> int: ...
    def assign(self, keys: Sequence[_KeyColumn],
               selection: _Selection = None) -> tuple[_I64, _I64]: ...
    def column_ids(self, c: int) -> _I64: ...
    def keys(self, c: int) -> Union[tuple[np.ndarray, _U8], tuple[_I64, _U8, _U8]]: ...

class DistinctCounter:
    def __init__(self, kind: _KeyKind) -> None: ...
    @property
    def size(self) -> int: ...
    def update(self, counts: _I64, gids: _I64, column: _KeyColumn,
               selection: _Selection = None) -> None: ...

class TextExtremes:
    def __init__(self, is_max: bool) -> None: ...
    @property
    def arena_bytes(self) -> int: ...
    def update(self, gids: _I64, ngroups: int, column: _TextColumn,
               selection: _Selection = None) -> None: ...
    def result(self, ngroups: int) -> tuple[_I64, _U8, _U8]: ...

def group_count(counts: _I64, gids: _I64, validity: _Validity = None,
                selection: _Selection = None) -> None: ...
def group_sum_int(sums: _I64, carries: _I64, counts: _I64, gids: _I64, values: _IntArray,
                  validity: _Validity = None, selection: _Selection = None) -> None: ...
def group_sum_float(sums: _FloatArray, counts: _I64, gids: _I64, values: _FloatArray,
                    validity: _Validity = None, selection: _Selection = None) -> None: ...
AVG_FAST_BOUND: float
AVG_SXX_BOUND: float
def group_avg_float(counts: _I64, sx: npt.NDArray[np.float64], sxx: npt.NDArray[np.float64],
                    gids: _I64, values: _FloatArray, validity: _Validity = None,
                    selection: _Selection = None,
                    sxx_hi: npt.NDArray[np.float64] | None = None,
                    fast: bool = False) -> bool: ...
def group_minmax(state: _MinMaxArray, counts: _I64, gids: _I64, values: _MinMaxArray,
                 is_max: bool, validity: _Validity = None,
                 selection: _Selection = None) -> None: ...
def group_bool(state: _U8, counts: _I64, gids: _I64, values: _U8, is_and: bool,
               validity: _Validity = None, selection: _Selection = None) -> None: ...
def finalize_sum_int8(out: _I64, validity: _U8, sums: _I64, carries: _I64,
                      counts: _I64) -> None: ...
def finalize_avg_float(out: npt.NDArray[np.float64], validity: _U8, counts: _I64,
                       sx: npt.NDArray[np.float64]) -> None: ...
def numeric_sum_text(sums: _I64, carries: _I64, counts: _I64) -> tuple[_I64, _U8, _U8]: ...
def numeric_avg_text(sums: _I64, carries: _I64, counts: _I64) -> tuple[_I64, _U8, _U8]: ...
def distinct_bitmap_update(bits: npt.NDArray[np.uint64], lo: int, values: _IntArray,
                           validity: _Validity = None, selection: _Selection = None
                           ) -> tuple[int, _U8 | None]: ...
def dense_group_ids(values: _IntArray, lo: int, nslots: int, seen: _U8, validity: _Validity = None,
                    selection: _Selection = None) -> tuple[_I64, int]: ...
