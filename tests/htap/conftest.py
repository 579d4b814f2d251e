"""Fixtures for the HTAP tests (UPDATE, DELETE, delta store, compaction,
vacuum, concurrency): the columnar helpers are shared."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "columnar"))
