"""Tiered storage: hypertable chunks' stripe files in S3-compatible object
storage, read back with ranged requests (docs/tiering.md)."""
