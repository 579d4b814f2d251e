"""Type stubs for the compiled kernel module orochi_fdw.kernels.chunkread."""

from typing import Any, Callable

import numpy as np
import numpy.typing as npt

PHYSICALS: dict[str, int]

def read_chunk(fd: int, checksum: Callable[[Any], int], verify: bool, lz4_decompress: Callable[..., bytes],
               offset: int, length: int, raw_length: int, crc: int, codec: int, compression: int,
               rows: int, nulls: int, physical: int, width: int, out: npt.NDArray[np.uint8],
               valid: npt.NDArray[np.uint8]) -> bool: ...
def read_column(fd: int, checksum: Callable[[Any], int], verify: bool, lz4_decompress: Callable[..., bytes],
                offsets: npt.NDArray[np.uint64], lengths: npt.NDArray[np.uint64],
                raw_lengths: npt.NDArray[np.uint64], crcs: npt.NDArray[np.uint32],
                codecs: npt.NDArray[np.uint8], compressions: npt.NDArray[np.uint8],
                rows: npt.NDArray[np.uint32], nulls: npt.NDArray[np.uint32], starts: npt.NDArray[np.int64],
                physical: int, width: int, out: npt.NDArray[np.uint8], valid: npt.NDArray[np.uint8],
                status: npt.NDArray[np.uint8]) -> int: ...
def read_dictionary(fd: int, checksum: Callable[[Any], int], verify: bool, lz4_decompress: Callable[..., bytes],
                    offset: int, length: int, raw_length: int, crc: int, codec: int, compression: int,
                    rows: int, nulls: int
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int32],
                               npt.NDArray[np.bool_] | None] | None: ...
