"""Orochi: HTAP for PostgreSQL."""

__version__ = "0.1.0"
