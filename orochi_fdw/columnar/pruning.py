"""What binding quals needs to know of the database's collations.

Quals are bound once, to one form that prunes stripes, chunk groups and a
hypertable's chunks by their min / max statistics, filters stripe and delta
rows, pre-filters the delta table and writes EXPLAIN:
:mod:`orochi_fdw.query.predicates` (``ColumnarTable.bound_quals``).
:class:`CollationInfo` is the database's side of it, read once per backend
(:func:`orochi_fdw.columnar.filter.collation_policy` turns it into the
predicate layer's :class:`~orochi_fdw.query.predicates.CollationPolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable



@dataclass(frozen=True)
class CollationInfo:
    """What binding text quals needs to know of the database."""

    utf8: bool
    default_is_c: bool
    deterministic: Callable[[str], bool]

    def is_c(self, name: str | None) -> bool:
        if name in ("C", "POSIX", "ucs_basic"):
            return True
        return name in (None, "default") and self.default_is_c
