"""Time series on columnar tables: hypertables chunked by time, chunk
management, chunk compression, retention and compression policies, and
continuous aggregates."""
