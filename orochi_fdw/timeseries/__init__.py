"""Time series on columnar tables: hypertables chunked by time, chunk
management, chunk compression, retention and compression policies, and
continuous aggregates.

Importing the package plugs hypertables into the columnar table
(:mod:`orochi_fdw.timeseries.extension`)."""

from orochi_fdw.timeseries import extension  # noqa: F401  (registers the table extension)
