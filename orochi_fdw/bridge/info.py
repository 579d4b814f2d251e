"""orochi.python_info(): what Python a backend runs."""

from __future__ import annotations

import sys

import orochi_fdw
from orochi_fdw.bridge.sqlfunc import sql_function


@sql_function("python_info")
def python_info():
    import numpy

    yield ("python_version", sys.version.split()[0])
    yield ("python_prefix", sys.prefix)
    yield ("orochi_version", orochi_fdw.__version__)
    yield ("orochi_path", orochi_fdw.__file__)
    yield ("numpy_version", numpy.__version__)
    engine = sys.modules.get("orochi_fdw.query.engine")
    statements, kept = engine.shared_reads() if engine is not None else (0, 0)
    # (the statements running whose engine joins read a table once for
    # several of them, and the bytes kept for their runs to come)
    yield ("join_engine_shared_reads", f"{statements} statements, {kept} bytes")
