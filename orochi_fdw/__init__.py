"""Orochi: HTAP for PostgreSQL."""

__version__ = "0.2.0"
