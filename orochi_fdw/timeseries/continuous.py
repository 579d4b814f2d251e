"""Continuous aggregates."""
