"""Columnar tables: the default wrapper of ``SERVER orochi``.

    CREATE FOREIGN TABLE metrics (ts timestamptz, device int, value float8)
        SERVER orochi OPTIONS (compression 'zstd');
    COPY metrics FROM '/data/metrics.csv' (FORMAT csv);
    SELECT device, avg(value) FROM metrics WHERE ts >= '2024-01-01' GROUP BY device;
"""

from orochi_fdw.columnar.table import ColumnarTable

__all__ = ["ColumnarTable"]
