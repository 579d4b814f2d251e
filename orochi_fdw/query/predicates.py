"""Quals as an immutable, bound expression tree, and the visitors over it.

The bridge hands a wrapper a list of :class:`~orochi_fdw.bridge.api.Qual`
(ANDed). :func:`bind_quals` ties each to its column and converts its constant
*exactly* into the column's storage domain (the integers, floats and bytes
that batches and statistics hold), or decides it cannot:

* an ``int4`` column ``= 2.5`` is never true; ``< 2.5`` is ``<= 2``; ``= 2^40``
  is never true and ``< 2^40`` is true for every non-NULL row;
* a ``float4`` column against a ``float8`` constant compares the column
  widened to ``float8``: ``= 0.1`` is never true (0.1 is no float4) and
  ``< 0.1`` is ``<=`` the largest float4 below 0.1;
* a ``date`` column against a ``timestamp`` compares the date's midnight;
* a ``timestamptz`` column against a ``date`` or ``timestamp`` (or a
  ``timestamp``/``date`` column against a ``timestamptz``) depends on the
  session's time zone, which is not known here: the qual is **not exact**. It
  still prunes with a range widened by the largest UTC offset Postgres allows,
  but rows are left for Postgres to filter;
* text ``=`` and ``<>`` are byte (in)equality in any deterministic collation;
  ``<``, ``<=``, ``>``, ``>=`` are byte order only under "C"/"POSIX" in a UTF-8
  database; ``LIKE 'abc%'`` is a byte prefix test (and ``LIKE 'abc'`` byte
  equality) in any deterministic collation. ILIKE and other patterns are not
  exact.

A bound qual carries two expressions: ``expr``, equivalent to the qual (None
when the qual is not exact), and ``prune``, implied by the qual (``expr``
itself when exact, a widened range, or :data:`ALWAYS_TRUE`). Then:

* :func:`might_match` (min/max pruning) says :data:`ROWS_MIGHT_MATCH` or
  :data:`ROWS_CANNOT_MATCH` for a stripe or chunk group from its statistics
  (:func:`pruner` makes it once into a function, for a scan's many tests);
* :func:`evaluate` runs the filter kernels on a batch and returns a uint8 row
  mask (:func:`selection` turns it into row indices);
* :attr:`BoundQuals.exact` answers the wrapper's ``exact_quals()`` and
  :meth:`BoundQuals.residual` lists what Postgres must still check;
* :func:`render` writes an expression for EXPLAIN.

Semantics of the bound tree: a predicate is *true* for a row or not; SQL's
NULL counts as not true (as WHERE does). ``Not`` is rewritten away as trees are
built (``~expr``), with SQL's three-valued logic kept: ``NOT (x < 5)`` is
``x >= 5``, which is still not true for a NULL ``x``. Comparisons of floats
follow Postgres (NaN equals NaN and sorts above every number); comparisons of
text and bytea are byte order (memcmp), the order of the statistics.

Example:
    >>> from orochi_fdw.bridge.api import ColumnDefinition, Qual
    >>> cols = {"n": ColumnDefinition("n", 23), "s": ColumnDefinition("s", 25)}
    >>> bound = bind_quals([Qual("n", "<", 2.5), Qual("s", "~~", "ab%", "C")], cols)
    >>> render(bound.filter)
    "n <= 2 AND s LIKE 'ab%'"
    >>> bound.exact
    [True, True]
    >>> might_match(bound.prune, {"n": ColumnStats(row_count=10, null_count=0, min=3, max=9)})
    False
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any, Callable, Generic, Iterable, Mapping, NamedTuple, Sequence, TypeVar, Union

import numpy as np

from orochi_fdw.bridge.api import ColumnDefinition, Qual
from orochi_fdw.bridge.batch import (PG_EPOCH_DATE, PG_EPOCH_DATETIME, PG_EPOCH_DATETIME_UTC,
                                     Column)
from orochi_fdw.bridge.runtime import UNKNOWN
from orochi_fdw.bridge.types import SpecialValue
from orochi_fdw.errors import InvalidParameterError, WrapperError
from orochi_fdw.kernels import filters as _kf
from orochi_fdw.storage import decimal as _dec

__all__ = [
    "ROWS_MIGHT_MATCH",
    "ROWS_CANNOT_MATCH",
    "IN_PREDICATE_LIMIT",
    "LIST_EXPANSION_LIMIT",
    "BooleanExpression",
    "AlwaysTrue",
    "AlwaysFalse",
    "ALWAYS_TRUE",
    "ALWAYS_FALSE",
    "And",
    "Or",
    "Not",
    "BoundReference",
    "BoundPredicate",
    "IsNull",
    "NotNull",
    "Comparison",
    "In",
    "NotIn",
    "StartsWith",
    "NotStartsWith",
    "CollationPolicy",
    "BoundQual",
    "BoundQuals",
    "ColumnStats",
    "DictionaryColumn",
    "bind_reference",
    "bind_qual",
    "bind_quals",
    "exact_quals",
    "might_match",
    "pruner",
    "evaluate",
    "selection",
    "render",
    "referenced_columns",
    "BooleanExpressionVisitor",
    "visit",
]

#: :func:`might_match` answers: rows of the stripe / chunk group may satisfy
#: the expression (read them) ...
ROWS_MIGHT_MATCH = True
#: ... or none can (skip them).
ROWS_CANNOT_MATCH = False

#: IN lists longer than this are not checked against min/max (see might_match).
IN_PREDICATE_LIMIT = 200
#: ``op ANY/ALL (list)`` other than ``= ANY`` / ``<> ALL`` is expanded into an
#: OR / AND of comparisons up to this many items; longer lists are left to Postgres.
LIST_EXPANSION_LIMIT = 32

_OPS = ("=", "<>", "<", "<=", ">", ">=")
_NEGATED_OP = {"=": "<>", "<>": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_KERNEL_OP = {"=": _kf.OP_EQ, "<>": _kf.OP_NE, "<": _kf.OP_LT, "<=": _kf.OP_LE,
              ">": _kf.OP_GT, ">=": _kf.OP_GE}

_US_PER_DAY = 86_400_000_000
_NUMERIC_OID, _BPCHAR_OID = 1700, 1042
#: Postgres accepts UTC offsets up to 15:59:59 (MAX_TZDISP_HOUR = 15); a local
#: time and its UTC instant are never further apart than this.
_MAX_UTC_OFFSET_US = 16 * 3_600_000_000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: first microsecond after the last finite timestamp (294277-01-01 00:00:00)
_END_TIMESTAMP = 9_223_371_331_200_000_000
#: the first finite timestamp (4714-11-24 00:00:00 BC)
_MIN_TIMESTAMP = -211_813_488_000_000_000


# ============================================================== expressions


class BooleanExpression(ABC):
    """A node of a bound expression tree. Immutable; ``&``, ``|`` and ``~``
    build And, Or and (rewritten away) Not."""

    __slots__ = ()

    @abstractmethod
    def __invert__(self) -> "BooleanExpression":
        """SQL NOT, rewritten into an expression without Not."""

    def __and__(self, other: "BooleanExpression") -> "BooleanExpression":
        return And(self, other)

    def __or__(self, other: "BooleanExpression") -> "BooleanExpression":
        return Or(self, other)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {render(self)}>"


class AlwaysTrue(BooleanExpression):
    """True for every row, NULLs included (e.g. ``x <> ALL('{}')``)."""

    __slots__ = ()
    _instance: "AlwaysTrue | None" = None

    def __new__(cls) -> "AlwaysTrue":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __invert__(self) -> BooleanExpression:
        return ALWAYS_FALSE

    def __reduce__(self):
        return (AlwaysTrue, ())


class AlwaysFalse(BooleanExpression):
    """True for no row (e.g. ``x = ANY('{}')``, ``x <> ALL('{1,NULL}')``)."""

    __slots__ = ()
    _instance: "AlwaysFalse | None" = None

    def __new__(cls) -> "AlwaysFalse":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __invert__(self) -> BooleanExpression:
        return ALWAYS_TRUE

    def __reduce__(self):
        return (AlwaysFalse, ())


ALWAYS_TRUE = AlwaysTrue()
ALWAYS_FALSE = AlwaysFalse()


class _Junction(BooleanExpression):
    """And / Or: n-ary, flattened and simplified as they are built."""

    __slots__ = ("children",)
    children: tuple[BooleanExpression, ...]
    _absorbing: BooleanExpression  # the constant that decides the junction
    _neutral: BooleanExpression  # the constant that drops out

    def __new__(cls, *children: BooleanExpression) -> BooleanExpression:  # type: ignore[misc]
        flat: list[BooleanExpression] = []
        for child in children:
            if not isinstance(child, BooleanExpression):
                raise TypeError(f"{cls.__name__} of a {type(child).__name__}")
            if child is cls._absorbing:
                return child
            if child is cls._neutral:
                continue
            for c in (child.children if type(child) is cls else (child,)):  # type: ignore[attr-defined]
                if c not in flat:
                    flat.append(c)
        if not flat:
            return cls._neutral
        if len(flat) == 1:
            return flat[0]
        obj = super().__new__(cls)
        object.__setattr__(obj, "children", tuple(flat))
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.children == self.children  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.children))

    def __reduce__(self):
        return (type(self), self.children)


class And(_Junction):
    """True where every child is. ``And()`` is ALWAYS_TRUE, ``And(x)`` is x."""

    __slots__ = ()
    _absorbing = ALWAYS_FALSE
    _neutral = ALWAYS_TRUE

    def __invert__(self) -> BooleanExpression:
        # De Morgan holds in three-valued logic.
        return Or(*(~c for c in self.children))


class Or(_Junction):
    """True where some child is. ``Or()`` is ALWAYS_FALSE, ``Or(x)`` is x."""

    __slots__ = ()
    _absorbing = ALWAYS_TRUE
    _neutral = ALWAYS_FALSE

    def __invert__(self) -> BooleanExpression:
        return And(*(~c for c in self.children))


def Not(child: BooleanExpression) -> BooleanExpression:
    """SQL NOT, rewritten away: there is no Not node in a tree."""
    return ~child


# ---------------------------------------------------------------- references

#: column type oid -> (kind, numpy dtype of the batch values; None: offsets + bytes)
_COLUMN_TYPES: dict[int, tuple[str, np.dtype | None]] = {
    16: ("bool", np.dtype(np.uint8)),
    21: ("int16", np.dtype("<i2")),
    23: ("int32", np.dtype("<i4")),
    20: ("int64", np.dtype("<i8")),
    700: ("float32", np.dtype("<f4")),
    701: ("float64", np.dtype("<f8")),
    1082: ("date", np.dtype("<i4")),
    1114: ("timestamp", np.dtype("<i8")),
    1184: ("timestamptz", np.dtype("<i8")),
    1083: ("time", np.dtype("<i8")),
    25: ("text", None),
    1043: ("varchar", None),
    17: ("bytea", None),
    2950: ("uuid", None),  # prunes by its 16 bytes; filtered by Postgres
}
#: integer-valued kinds and the range of their stored values (infinities included)
_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "int32": (_INT32_MIN, _INT32_MAX),
    "int64": (_INT64_MIN, _INT64_MAX),
    "date": (_INT32_MIN, _INT32_MAX),
    "timestamp": (_INT64_MIN, _INT64_MAX),
    "timestamptz": (_INT64_MIN, _INT64_MAX),
    "time": (0, _US_PER_DAY),
}
_FLOAT_KINDS = ("float32", "float64")
#: "char": character(n), stored and compared without its trailing spaces
_TEXT_KINDS = ("text", "varchar", "char")
_BYTES_KINDS = ("text", "varchar", "char", "bytea")
#: numeric(p, s), p <= 18, as scaled int64: NaN is int64 max, above every number
_DECIMAL_NAN = _INT64_MAX


@dataclass(frozen=True)
class BoundReference:
    """A column a predicate is bound to.

    Attributes:
        name: the column's name (the key of its batch column and statistics).
        kind: ``bool``, ``int16``, ``int32``, ``int64``, ``float32``,
            ``float64``, ``date``, ``timestamp``, ``timestamptz``, ``time``,
            ``text``, ``varchar``, ``char`` (character(n) without its
            padding), ``bytea``, ``decimal`` (numeric(p, s) with p <= 18 as
            the value times 10^s), or ``other`` (only NULL tests bind to such
            a column).
        type_oid: the column type's oid.
        scale: a decimal column's scale.
    """

    name: str
    kind: str
    type_oid: int = 0
    scale: int = 0

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype of the column's batch values (None: variable width)."""
        if self.kind == "decimal":
            return np.dtype("<i8")
        return _COLUMN_TYPES.get(self.type_oid, ("other", None))[1]

    @property
    def is_float(self) -> bool:
        return self.kind in _FLOAT_KINDS

    @property
    def is_bytes(self) -> bool:
        return self.kind in _BYTES_KINDS


def bind_reference(column: ColumnDefinition) -> BoundReference:
    """The reference to ``column`` that predicates bind to."""
    if column.type_oid == _NUMERIC_OID:
        ps = _dec.typmod_precision_scale(column.typmod)
        if ps is not None and 0 <= ps[1] <= ps[0] <= _dec.MAX_PRECISION:
            return BoundReference(column.column_name, "decimal", column.type_oid, ps[1])
    if column.type_oid == _BPCHAR_OID and column.typmod > 4:
        return BoundReference(column.column_name, "char", column.type_oid)
    kind = _COLUMN_TYPES.get(column.type_oid, ("other", None))[0]
    return BoundReference(column.column_name, kind, column.type_oid)


# ---------------------------------------------------------------- predicates


class BoundPredicate(BooleanExpression):
    """A predicate on one column; ``term`` is the column."""

    __slots__ = ()
    term: BoundReference


@dataclass(frozen=True, eq=True, repr=False)
class IsNull(BoundPredicate):
    """``term IS NULL``."""

    term: BoundReference

    def __invert__(self) -> BooleanExpression:
        return NotNull(self.term)


@dataclass(frozen=True, eq=True, repr=False)
class NotNull(BoundPredicate):
    """``term IS NOT NULL``."""

    term: BoundReference

    def __invert__(self) -> BooleanExpression:
        return IsNull(self.term)


@dataclass(frozen=True, eq=True, repr=False)
class Comparison(BoundPredicate):
    """``term <op> value``, ``value`` in the column's storage domain: an int
    (integers, dates as days, timestamps as microseconds since 2000-01-01,
    booleans as 0 / 1), a float exactly representable in the column's float
    type, or bytes (text, varchar, bytea, compared in byte order)."""

    term: BoundReference
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise InvalidParameterError(f"unknown comparison operator {self.op!r}")

    def __invert__(self) -> BooleanExpression:
        # Postgres orders every type here totally (NaN last), so NOT (x < v)
        # is x >= v; a NULL x satisfies neither.
        return Comparison(self.term, _NEGATED_OP[self.op], self.value)


def _sort_key(value: Any) -> tuple:
    """Postgres's order of storage-domain values (NaN after every number)."""
    if isinstance(value, float) and math.isnan(value):
        return (1, 0.0)
    return (0, value)


def _sorted_values(values: Iterable[Any]) -> tuple:
    out: list[Any] = []
    for v in sorted(values, key=_sort_key):
        if not out or _sort_key(out[-1]) != _sort_key(v) or (isinstance(v, float) and v == 0.0):
            out.append(v)
    return tuple(out)


@dataclass(frozen=True, eq=True, repr=False)
class In(BoundPredicate):
    """``term = ANY(values)`` (values in the storage domain, sorted in
    Postgres's order). ``In(term, ())`` is true for no row, yet its negation
    is true for every non-NULL row: it is the bound form of a comparison no
    value of the column can satisfy (``int4col = 2.5``)."""

    term: BoundReference
    values: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _sorted_values(self.values))

    def __invert__(self) -> BooleanExpression:
        return NotIn(self.term, self.values)


@dataclass(frozen=True, eq=True, repr=False)
class NotIn(BoundPredicate):
    """``term <> ALL(values)``: a non-NULL value that is none of ``values``
    (``NotIn(term, ())`` is every non-NULL row)."""

    term: BoundReference
    values: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _sorted_values(self.values))

    def __invert__(self) -> BooleanExpression:
        return In(self.term, self.values)


@dataclass(frozen=True, eq=True, repr=False)
class StartsWith(BoundPredicate):
    """``term LIKE 'prefix%'``: the value's bytes start with ``prefix``."""

    term: BoundReference
    prefix: bytes

    def __invert__(self) -> BooleanExpression:
        return NotStartsWith(self.term, self.prefix)


@dataclass(frozen=True, eq=True, repr=False)
class NotStartsWith(BoundPredicate):
    """``term NOT LIKE 'prefix%'`` (a non-NULL value not starting with ``prefix``)."""

    term: BoundReference
    prefix: bytes

    def __invert__(self) -> BooleanExpression:
        return StartsWith(self.term, self.prefix)


# ================================================================== binding


@dataclass(frozen=True)
class CollationPolicy:
    """What binding text quals needs to know of the database.

    Attributes:
        byte_ordered: collations that order text as its bytes.
        deterministic: collations known to be deterministic (equal strings are
            equal bytes), besides the byte-ordered ones. A collation not listed
            is treated as possibly nondeterministic, so its quals are left to
            Postgres; a wrapper that can ask ``pg_collation`` may pass
            ``is_deterministic`` instead.
        default_collation: the database's default collation (what ``default``
            means), e.g. ``C`` or ``en_US.UTF-8``.
        utf8: whether the server encoding is UTF-8 (then byte order is code
            point order, the order of "C").
        is_deterministic: optional lookup overriding ``deterministic``.
    """

    byte_ordered: frozenset[str] = frozenset({"C", "POSIX", "ucs_basic"})
    deterministic: frozenset[str] = frozenset({"default"})
    default_collation: str = ""
    utf8: bool = True
    is_deterministic: Callable[[str], bool] | None = field(default=None, compare=False)

    def _resolve(self, name: str | None) -> str:
        if name in (None, "default") and self.default_collation:
            return self.default_collation
        return "default" if name is None else name

    def orders_bytes(self, name: str | None) -> bool:
        """Whether ``<`` under ``name`` is byte order."""
        return self.utf8 and self._resolve(name) in self.byte_ordered

    def equals_bytes(self, name: str | None) -> bool:
        """Whether ``=`` under ``name`` is byte equality (deterministic)."""
        resolved = self._resolve(name)
        if resolved in self.byte_ordered or resolved in self.deterministic or name in self.deterministic:
            return True
        if self.is_deterministic is not None:
            return bool(self.is_deterministic(resolved))
        return False


DEFAULT_COLLATIONS = CollationPolicy()


@dataclass(frozen=True)
class BoundQual:
    """One qual, bound.

    Attributes:
        qual: the qual as the bridge passed it.
        exact: whether ``expr`` is equivalent to the qual (the wrapper may
            filter with it and tell Postgres not to recheck).
        expr: the equivalent expression, or None when not exact.
        prune: an expression the qual implies, for min/max pruning: ``expr``
            when exact, a widened range, or ALWAYS_TRUE.
        reason: why the qual is not exact (None when it is).
    """

    qual: Qual
    exact: bool
    expr: BooleanExpression | None
    prune: BooleanExpression
    reason: str | None = None


@dataclass(frozen=True)
class BoundQuals:
    """The quals of a scan, bound (ANDed, as the bridge gives them)."""

    quals: tuple[BoundQual, ...]

    @cached_property
    def filter(self) -> BooleanExpression:
        """The AND of the exact quals: what the filter kernels apply."""
        return And(*(b.expr for b in self.quals if b.exact and b.expr is not None))

    @cached_property
    def prune(self) -> BooleanExpression:
        """The AND of what every qual implies: what min/max pruning uses."""
        return And(*(b.prune for b in self.quals))

    @property
    def exact(self) -> list[bool]:
        """One flag per qual, for ``exact_quals()``."""
        return [b.exact for b in self.quals]

    def residual(self) -> list[Qual]:
        """The quals Postgres must still check."""
        return [b.qual for b in self.quals if not b.exact]

    @property
    def columns(self) -> set[str]:
        """Columns the filter reads."""
        return referenced_columns(self.filter)

    @property
    def prune_columns(self) -> set[str]:
        """Columns min/max pruning reads the statistics of."""
        return referenced_columns(self.prune)

    @property
    def pruning(self) -> list[BoundQual]:
        """The quals min/max pruning tests against bounds or NULL counts (not
        ``<>`` nor NOT IN, which only rule out chunks of NULLs), for
        EXPLAIN's "Min/Max Filter"."""
        return [b for b in self.quals if visit(b.prune, _UsesBounds())]

    def explain(self, verbose: bool = False) -> list[str]:
        """``Label: text`` lines for the wrapper's ``explain()``."""
        lines = []
        parts = [render(self.filter)] if self.filter is not ALWAYS_TRUE else []
        # exact quals whose values come at execution (parameters, now() ...)
        parts += [_render_qual(b.qual) for b in self.quals if b.exact and b.qual.value is UNKNOWN]
        if parts:
            lines.append(f"Orochi Filter: {' AND '.join(parts)}")
        widened = [b.prune for b in self.quals if not b.exact and b.prune is not ALWAYS_TRUE]
        if widened:
            lines.append(f"Orochi Pruning Bounds: {render(And(*widened))}")
        rest = [b for b in self.quals if not b.exact]
        if rest:
            if verbose:
                text = "; ".join(f"{_render_qual(b.qual)} ({b.reason})" for b in rest)
            else:
                text = " AND ".join(_render_qual(b.qual) for b in rest)
            lines.append(f"Rechecked by Postgres: {text}")
        return lines


class _NotExact(Exception):
    """Raised inside binding: the qual cannot be applied exactly."""

    def __init__(self, reason: str, prune: BooleanExpression = ALWAYS_TRUE):
        super().__init__(reason)
        self.reason = reason
        self.prune = prune


def bind_quals(quals: Iterable[Qual], columns: Mapping[str, ColumnDefinition],
               collations: CollationPolicy = DEFAULT_COLLATIONS,
               must_be_exact: Sequence[bool] | None = None) -> BoundQuals:
    """Bind the quals of a scan to the table's columns.

    Args:
        quals: the quals the bridge passed (ANDed).
        columns: the table's columns by name.
        collations: what is known of the database's collations.
        must_be_exact: what ``exact_quals()`` answered at plan time: a qual
            Postgres no longer rechecks must bind exactly now.

    Returns:
        The bound quals, in the given order.

    Raises:
        WrapperError: a qual declared exact at plan time is not exact with
            its execution-time value.
    """
    bound = tuple(bind_qual(q, columns.get(q.field_name), collations) for q in quals)
    if must_be_exact is not None:
        for b, required in zip(bound, must_be_exact):
            if required and not b.exact:
                raise WrapperError(f"qual {b.qual!r} was declared exact at plan time but is not: {b.reason}")
    return BoundQuals(bound)


def exact_quals(quals: Iterable[Qual], columns: Mapping[str, ColumnDefinition],
                collations: CollationPolicy = DEFAULT_COLLATIONS) -> list[bool]:
    """For ``ForeignDataWrapper.exact_quals``: which quals the filter applies
    exactly, values unknown at plan time included (then by type alone)."""
    return bind_quals(quals, columns, collations).exact


def bind_qual(qual: Qual, column: ColumnDefinition | None,
              collations: CollationPolicy = DEFAULT_COLLATIONS) -> BoundQual:
    """Bind one qual to its column (None: no such column)."""
    if column is None:
        return BoundQual(qual, False, None, ALWAYS_TRUE, "no such column")
    term = bind_reference(column)
    try:
        if qual.value is UNKNOWN:
            _check_unknown(term, qual, collations)
            # Exact by type: the scan binds the value when it starts.
            return BoundQual(qual, True, None, ALWAYS_TRUE)
        expr = _bind(term, qual, collations)
    except _NotExact as exc:
        return BoundQual(qual, False, None, exc.prune, exc.reason)
    return BoundQual(qual, True, expr, expr)


def _bind(term: BoundReference, qual: Qual, collations: CollationPolicy) -> BooleanExpression:
    op = qual.operator_name
    if not qual.is_list_operator:
        if qual.value is None:
            # IS NULL / IS NOT NULL (a comparison with NULL never reaches us)
            if op == "=":
                return IsNull(term)
            if op == "<>":
                return NotNull(term)
            raise _NotExact(f"operator {op} with NULL")
        return _bind_scalar(term, op, qual.value, qual.collation, collations)

    use_any = bool(qual.list_any_or_all)
    items = qual.value
    if items is None:
        return ALWAYS_FALSE  # x op ANY/ALL (NULL array) is NULL for every row
    if not isinstance(items, (list, tuple)):
        raise _NotExact("list operator without a list value")
    if not items:
        # Postgres: an empty array gives FALSE for ANY and TRUE for ALL, for
        # every row (even a NULL one: the operator is never called).
        return ALWAYS_TRUE if not use_any else ALWAYS_FALSE
    values = [v for v in items if v is not None]
    if len(values) < len(items) and not use_any:
        # x op ALL(..., NULL, ...) is FALSE or NULL, never TRUE
        return ALWAYS_FALSE
    if not values:
        return ALWAYS_FALSE  # x op ANY of NULLs only: NULL for every row
    if op == "=" and use_any:
        return _bind_in(term, values, negate=False, collation=qual.collation, collations=collations)
    if op == "<>" and not use_any:
        return _bind_in(term, values, negate=True, collation=qual.collation, collations=collations)
    if len(values) > LIST_EXPANSION_LIMIT:
        raise _NotExact(f"{op} {'ANY' if use_any else 'ALL'} of more than {LIST_EXPANSION_LIMIT} items")
    return _bind_each(term, op, values, use_any, qual.collation, collations)


def _bind_each(term: BoundReference, op: str, values: list, use_any: bool, collation: str | None,
               collations: CollationPolicy) -> BooleanExpression:
    """``op ANY/ALL (values)`` as the OR / AND of one comparison per item.

    When an item cannot be bound exactly, neither can the list; it still
    prunes with the OR / AND of what each item implies (an item that implies
    nothing makes the OR imply nothing)."""
    exprs: list[BooleanExpression] = []
    prunes: list[BooleanExpression] = []
    reason = None
    for v in values:
        try:
            e = _bind_scalar(term, op, v, collation, collations)
        except _NotExact as exc:
            reason = reason or exc.reason
            prunes.append(exc.prune)
        else:
            exprs.append(e)
            prunes.append(e)
    if reason is not None:
        raise _NotExact(reason, Or(*prunes) if use_any else And(*prunes))
    return Or(*exprs) if use_any else And(*exprs)


def _bind_in(term: BoundReference, values: list, negate: bool, collation: str | None,
             collations: CollationPolicy) -> BooleanExpression:
    """``= ANY`` / ``<> ALL`` without NULLs: one In / NotIn of the items that
    some value of the column can equal."""
    if term.kind == "bool":
        return _bind_each(term, "<>" if negate else "=", values, not negate, collation, collations)
    members: list[Any] = []
    prunes: list[BooleanExpression] = []
    reason = None
    for v in values:
        try:
            e = _bind_scalar(term, "=", v, collation, collations)
        except _NotExact as exc:
            reason = reason or exc.reason
            prunes.append(exc.prune)
            continue
        prunes.append(e)
        if isinstance(e, Comparison) and e.op == "=":
            members.append(e.value)
        elif isinstance(e, In):
            members.extend(e.values)  # nothing for an item no value can equal
        else:  # pragma: no cover - "=" binds to one of the above
            raise _NotExact(f"cannot bind list item {v!r}")
    if reason is not None:
        # NOT IN implies nothing useful for min/max; IN implies one of the items
        raise _NotExact(reason, ALWAYS_TRUE if negate else Or(*prunes))
    return NotIn(term, tuple(members)) if negate else In(term, tuple(members))


#: the SQL type of the columns of each time kind, as the bridge names it
_TIME_SQL_TYPES = {"date": "date", "timestamp": "timestamp without time zone",
                   "timestamptz": "timestamp with time zone"}


def _check_unknown(term: BoundReference, qual: Qual, collations: CollationPolicy) -> None:
    """A value known only when the scan starts (a parameter): decide by the
    column's type whether every constant its operators accept binds exactly."""
    op = qual.operator_name
    if op not in _OPS:
        raise _NotExact("pattern not known at plan time")
    if qual.is_list_operator and not ((op == "=" and qual.list_any_or_all) or
                                      (op == "<>" and not qual.list_any_or_all)):
        raise _NotExact("list length not known at plan time")
    kind = term.kind
    if kind in ("int16", "int32", "int64", "float32", "float64", "bool", "time", "bytea"):
        # Operators of these types take only integers / floats / booleans /
        # times / bytea on the other side, and every such value binds exactly.
        return
    if kind in _TEXT_KINDS:
        _check_text_op(op, qual.collation, collations)
        return
    if kind == "decimal":
        # numeric parameters bind exactly (any scale: compared as rationals)
        if qual.value_type in ("numeric", "numeric[]"):
            return
        raise _NotExact("a numeric column against a parameter of another type")
    if kind in _TIME_SQL_TYPES:
        # Against a value of the column's own type (now() - interval '1 day'
        # on a timestamptz) the comparison does not involve the time zone.
        if not qual.is_list_operator and qual.value_type == _TIME_SQL_TYPES[kind]:
            return
        raise _NotExact("the constant may be of a type whose comparison depends on the session time zone")
    raise _NotExact(f"{kind} columns are not filtered")


def _check_text_op(op: str, collation: str | None, collations: CollationPolicy) -> None:
    if op in ("=", "<>"):
        if not collations.equals_bytes(collation):
            raise _NotExact(f"collation {collation!r} may be nondeterministic")
    elif not collations.orders_bytes(collation):
        raise _NotExact(f"collation {collation!r} does not order text as bytes")


def _bind_scalar(term: BoundReference, op: str, value: Any, collation: str | None,
                 collations: CollationPolicy) -> BooleanExpression:
    kind = term.kind
    if op in ("~~", "!~~"):
        return _bind_like(term, op, value, collation, collations)
    if op not in _OPS:
        raise _NotExact(f"operator {op} is left to Postgres")
    if value is UNKNOWN:
        raise _NotExact("value not known")
    if kind == "bool":
        return _bind_bool(term, op, value)
    if kind == "decimal":
        return _bind_decimal(term, op, value)
    if kind in _INT_RANGES:
        const = _int_constant(kind, value)
        lo, hi = _INT_RANGES[kind]
        if const.delta:
            raise _NotExact(const.reason, _widened(term, op, const, lo, hi))
        return _int_comparison(term, op, const.value, lo, hi)
    if kind in _FLOAT_KINDS:
        return _bind_float(term, op, value)
    if kind == "uuid":
        # uuid orders as its 16 bytes, the order of its statistics; the
        # filter kernels do not take it, so it prunes but Postgres filters
        if not isinstance(value, uuid.UUID):
            raise _NotExact(f"a uuid column against a {type(value).__name__}")
        raise _NotExact("uuid columns are filtered by Postgres", Comparison(term, op, value.bytes))
    if kind in _BYTES_KINDS:
        if kind == "bytea":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise _NotExact(f"a bytea column against a {type(value).__name__}")
            return Comparison(term, op, bytes(value))
        if not isinstance(value, str):
            raise _NotExact(f"a text column against a {type(value).__name__}")
        _check_text_op(op, collation, collations)
        if kind == "char":
            value = value.rstrip(" ")  # bpchar compares without trailing spaces
        return Comparison(term, op, _utf8(value))
    raise _NotExact(f"{kind} columns are not filtered")


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise _NotExact("text that is not valid UTF-8") from None


# ----------------------------------------------------------------- booleans

def _bind_bool(term: BoundReference, op: str, value: Any) -> BooleanExpression:
    if not isinstance(value, bool):
        raise _NotExact(f"a boolean column against a {type(value).__name__}")
    # false < true; bound forms test the stored byte against 0 only (as an
    # unsigned byte, > 0 is nonzero), so any nonzero byte reads as true.
    true_rows = Comparison(term, ">", 0)
    false_rows = Comparison(term, "=", 0)
    table = {
        ("=", True): true_rows, ("=", False): false_rows,
        ("<>", True): false_rows, ("<>", False): true_rows,
        ("<", True): false_rows, ("<", False): In(term, ()),
        ("<=", True): NotIn(term, ()), ("<=", False): false_rows,
        (">", True): In(term, ()), (">", False): true_rows,
        (">=", True): true_rows, (">=", False): NotIn(term, ()),
    }
    return table[(op, value)]


# ----------------------------------------------------------------- integers

class _NaN:
    """Numeric / float NaN as a constant: greater than every number."""

    def __repr__(self) -> str:
        return "NaN"


_NAN = _NaN()
_Exact = Union[int, Fraction, float, _NaN]  # float only for ±inf


class _Const(NamedTuple):
    """A constant in a column's integer domain: the column value ``x`` is
    compared as ``x op value``; when ``delta`` is nonzero, as ``x + d op value``
    for some unknown ``|d| <= delta`` (the session time zone's offset)."""

    value: _Exact
    delta: Fraction | int = 0
    reason: str = ""


def _number(value: Any, kind: str) -> _Exact:
    """An exact number for an integer column (int, Fraction, ±inf, NaN)."""
    if isinstance(value, bool):
        raise _NotExact("an integer column against a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return _NAN
        if value.is_infinite():
            return math.inf if value > 0 else -math.inf
        return Fraction(value)
    if isinstance(value, float):
        if math.isnan(value):
            return _NAN
        if math.isinf(value):
            return value
        if kind == "int64" and abs(value) >= 2.0**53:
            # Postgres compares bigint::float8 with it, and the cast rounds.
            raise _NotExact("a bigint compared as float8 beyond 2^53")
        return Fraction(value)
    raise _NotExact(f"an integer column against a {type(value).__name__}")


def _us_since_epoch(value: datetime.datetime) -> int:
    d = value - (PG_EPOCH_DATETIME_UTC if value.tzinfo is not None else PG_EPOCH_DATETIME)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


_TZ_REASON = "the comparison depends on the session time zone"


def _special(value: SpecialValue) -> tuple[str, int]:
    """(short type name, raw) of a SpecialValue."""
    names = {"date": "date", "timestamp without time zone": "timestamp", "timestamp": "timestamp",
             "timestamp with time zone": "timestamptz", "timestamptz": "timestamptz",
             "time without time zone": "time", "time": "time"}
    t = names.get(value.type_name)
    if t is None:
        raise _NotExact(f"a constant of type {value.type_name}")
    return t, int(value.raw)


def _infinity(t: str, raw: int) -> int | None:
    """±1 when a date / timestamp raw value is ±infinity, else None."""
    if t == "date":
        return 1 if raw == _INT32_MAX else -1 if raw == _INT32_MIN else None
    if t in ("timestamp", "timestamptz"):
        return 1 if raw == _INT64_MAX else -1 if raw == _INT64_MIN else None
    return None


def _int_constant(kind: str, value: Any) -> _Const:
    """``value`` in the integer domain of a column of ``kind``."""
    if kind in ("int16", "int32", "int64"):
        return _Const(_number(value, kind))
    if isinstance(value, SpecialValue):
        t, raw = _special(value)
        inf = _infinity(t, raw)
        if kind == "time":
            if t != "time":
                raise _NotExact(f"a time column against a {t}")
            return _Const(raw)
        if inf is not None:
            # infinities convert between date, timestamp and timestamptz
            # without a time zone
            lo, hi = _INT_RANGES[kind]
            return _Const(hi if inf > 0 else lo)
        if t == "time":
            raise _NotExact(f"a {kind} column against a time")
        if kind == "date":
            return _Const(Fraction(raw, 1 if t == "date" else _US_PER_DAY),
                          _zone_delta(kind, t), _TZ_REASON if _zone_delta(kind, t) else "")
        if t == "date":
            raw *= _US_PER_DAY  # a date before year 1 or after 9999
            if not _MIN_TIMESTAMP <= raw < _END_TIMESTAMP:
                raise _NotExact("a date beyond the timestamp range")
        return _Const(raw, _zone_delta(kind, t), _TZ_REASON if _zone_delta(kind, t) else "")
    if kind == "time":
        if type(value) is datetime.time and value.tzinfo is None:
            return _Const(((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
                          + value.microsecond)
        raise _NotExact(f"a time column against a {type(value).__name__}")
    if isinstance(value, datetime.datetime):
        t = "timestamptz" if value.tzinfo is not None else "timestamp"
        us = _us_since_epoch(value)
        scaled: _Exact = Fraction(us, _US_PER_DAY) if kind == "date" else us
        delta = _zone_delta(kind, t)
        return _Const(scaled, delta, _TZ_REASON if delta else "")
    if type(value) is datetime.date:
        days = (value - PG_EPOCH_DATE).days
        delta = _zone_delta(kind, "date")
        return _Const(days if kind == "date" else days * _US_PER_DAY, delta, _TZ_REASON if delta else "")
    raise _NotExact(f"a {kind} column against a {type(value).__name__}")


def _zone_delta(kind: str, const_type: str) -> Fraction | int:
    """How far apart, at most, the column's and the constant's clocks are
    (0 when the comparison does not involve the session time zone), in the
    column's units."""
    zoned = (kind == "timestamptz") != (const_type == "timestamptz")
    if not zoned:
        return 0
    return Fraction(_MAX_UTC_OFFSET_US, _US_PER_DAY) if kind == "date" else _MAX_UTC_OFFSET_US


def _floor(r: _Exact) -> float | int:
    return r if isinstance(r, float) else math.floor(r)


def _ceil(r: _Exact) -> float | int:
    return r if isinstance(r, float) else math.ceil(r)


def _int_comparison(term: BoundReference, op: str, r: _Exact, lo: int, hi: int) -> BooleanExpression:
    """``x op r`` for integer column values ``x`` in ``[lo, hi]`` and an
    exact constant ``r`` (int, Fraction, ±inf, or NaN, which is above every
    number and equal to none)."""
    if r is _NAN:
        r = math.inf
    is_int = isinstance(r, int) or (isinstance(r, Fraction) and r.denominator == 1)
    if op in ("=", "<>"):
        if is_int and lo <= r <= hi:
            return Comparison(term, op, int(r))
        return In(term, ()) if op == "=" else NotIn(term, ())
    # the values satisfying the comparison are the integers in [a, b]
    if op == "<":
        a, b = -math.inf, _ceil(r) - 1
    elif op == "<=":
        a, b = -math.inf, _floor(r)
    elif op == ">":
        a, b = _floor(r) + 1, math.inf
    else:
        a, b = _ceil(r), math.inf
    if b < lo or a > hi:
        return In(term, ())
    if a <= lo and b >= hi:
        return NotIn(term, ())
    if is_int:
        return Comparison(term, op, int(r))
    return Comparison(term, "<=", int(b)) if op in ("<", "<=") else Comparison(term, ">=", int(a))


def _widened(term: BoundReference, op: str, const: _Const, lo: int, hi: int) -> BooleanExpression:
    """What ``x + d op r`` implies for every ``|d| <= delta``: a range for pruning."""
    r, d = const.value, const.delta
    if isinstance(r, float) or r is _NAN:  # pragma: no cover - infinities bind exactly
        return ALWAYS_TRUE
    if op == "<":
        return _int_comparison(term, "<", r + d, lo, hi)
    if op == "<=":
        return _int_comparison(term, "<=", r + d, lo, hi)
    if op == ">":
        return _int_comparison(term, ">", r - d, lo, hi)
    if op == ">=":
        return _int_comparison(term, ">=", r - d, lo, hi)
    if op == "=":
        return And(_int_comparison(term, ">=", r - d, lo, hi), _int_comparison(term, "<=", r + d, lo, hi))
    return ALWAYS_TRUE


# ------------------------------------------------------------------ numeric

def _bind_decimal(term: BoundReference, op: str, value: Any) -> BooleanExpression:
    """``x op value`` for a numeric(p, s) column stored as ``x = v * 10^s``:
    the constant scaled exactly (a rational when it has more digits), NaN as
    the stored NaN (equal to itself, above every number), ±Infinity between
    the numbers and NaN (Postgres's numeric order)."""
    if isinstance(value, bool) or not isinstance(value, (int, decimal.Decimal)):
        # a float8 constant would compare the column cast to float8
        raise _NotExact(f"a numeric column against a {type(value).__name__}")
    lo, hi = _INT64_MIN, _DECIMAL_NAN
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return _int_comparison(term, op, _DECIMAL_NAN, lo, hi)
        if value.is_infinite():
            r: _Exact = Fraction(2 * hi - 1, 2) if value > 0 else Fraction(2 * lo - 1, 2)
            return _int_comparison(term, op, r, lo, hi)
        r = Fraction(value) * 10 ** term.scale
    else:
        r = value * 10 ** term.scale
    if not (lo < r < hi):
        # beyond any value numeric(18, s) holds: compare with infinity
        r = Fraction(2 * hi - 1, 2) if r > 0 else Fraction(2 * lo - 1, 2)
    return _int_comparison(term, op, r, lo, hi)


# ------------------------------------------------------------------- floats

def _bind_float(term: BoundReference, op: str, value: Any) -> BooleanExpression:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # numeric: Postgres would compare the column cast to numeric (through
        # its 15-digit text form): not the float comparison the kernels do.
        raise _NotExact(f"a float column against a {type(value).__name__}")
    if isinstance(value, int):
        try:
            f = float(value)
        except OverflowError:
            raise _NotExact("an integer beyond the float range") from None
        if f != value:
            raise _NotExact("an integer that is not exactly a float")
        value = f
    if term.kind == "float64" or math.isnan(value):
        return Comparison(term, op, value)
    # float4 column, float8 constant: Postgres compares the column widened to
    # float8, so x op c over the float4 values x.
    with np.errstate(over="ignore"):
        f32 = np.float32(value)
    if float(f32) == value:
        return Comparison(term, op, float(f32))
    if float(f32) > value:
        below, above = np.nextafter(f32, np.float32(-np.inf)), f32
    else:
        below, above = f32, np.nextafter(f32, np.float32(np.inf))
    if op == "=":
        return In(term, ())
    if op == "<>":
        return NotIn(term, ())
    if op in ("<", "<="):
        return Comparison(term, "<=", float(below))
    return Comparison(term, ">=", float(above))


# --------------------------------------------------------------------- LIKE

def _like_literal(pattern: str | bytes) -> tuple[str, str | bytes] | None:
    """("equal", literal) for a pattern without wildcards, ("prefix",
    literal) for a literal followed only by ``%``, else None (backslash
    escapes, Postgres's default)."""
    is_bytes = isinstance(pattern, (bytes, bytearray))
    items = [pattern[i:i + 1] for i in range(len(pattern))]
    esc, pct, under = (b"\\", b"%", b"_") if is_bytes else ("\\", "%", "_")
    lit: list = []
    i = 0
    while i < len(items):
        ch = items[i]
        if ch == esc:
            if i + 1 == len(items):
                return None  # Postgres raises an error: let it
            lit.append(items[i + 1])
            i += 2
            continue
        if ch == pct:
            if all(c == pct for c in items[i:]):
                return "prefix", (b"" if is_bytes else "").join(lit)
            return None
        if ch == under:
            return None
        lit.append(ch)
        i += 1
    return "equal", (b"" if is_bytes else "").join(lit)


def _bind_like(term: BoundReference, op: str, value: Any, collation: str | None,
               collations: CollationPolicy) -> BooleanExpression:
    negate = op == "!~~"
    if term.kind == "char":
        raise _NotExact("LIKE on character(n) is left to Postgres")
    if term.kind == "bytea":
        if not isinstance(value, (bytes, bytearray)):
            raise _NotExact("a bytea pattern that is not bytes")
        parsed = _like_literal(bytes(value))
    elif term.kind in _TEXT_KINDS:
        if not isinstance(value, str):
            raise _NotExact("a text pattern that is not text")
        # LIKE matches bytes (characters, in UTF-8) whatever the collation,
        # but Postgres refuses nondeterministic collations.
        if not collations.equals_bytes(collation):
            raise _NotExact(f"collation {collation!r} may be nondeterministic")
        parsed = _like_literal(value)
    else:
        raise _NotExact(f"LIKE on a {term.kind} column")
    if parsed is None:
        raise _NotExact("a LIKE pattern other than 'literal' or 'prefix%'")
    how, literal = parsed
    raw = literal if isinstance(literal, bytes) else _utf8(literal)
    if how == "equal":
        return Comparison(term, "<>" if negate else "=", raw)
    return NotStartsWith(term, raw) if negate else StartsWith(term, raw)


# ================================================================= visitors

T = TypeVar("T")


class BooleanExpressionVisitor(Generic[T], ABC):
    """Bottom-up visitor: ``visit`` calls ``visit_and`` / ``visit_or`` with the
    children's results already computed."""

    @abstractmethod
    def visit_true(self) -> T: ...

    @abstractmethod
    def visit_false(self) -> T: ...

    @abstractmethod
    def visit_and(self, results: list[T]) -> T: ...

    @abstractmethod
    def visit_or(self, results: list[T]) -> T: ...

    @abstractmethod
    def visit_predicate(self, predicate: BoundPredicate) -> T: ...


def visit(expr: BooleanExpression, visitor: BooleanExpressionVisitor[T]) -> T:
    """Apply ``visitor`` to ``expr``."""
    if expr is ALWAYS_TRUE:
        return visitor.visit_true()
    if expr is ALWAYS_FALSE:
        return visitor.visit_false()
    if isinstance(expr, And):
        return visitor.visit_and([visit(c, visitor) for c in expr.children])
    if isinstance(expr, Or):
        return visitor.visit_or([visit(c, visitor) for c in expr.children])
    if isinstance(expr, BoundPredicate):
        return visitor.visit_predicate(expr)
    raise TypeError(f"not a bound expression: {expr!r}")


# ----------------------------------------------------------- min/max pruning


@dataclass(frozen=True)
class ColumnStats:
    """What is known of one column over some rows (a stripe, a chunk group).

    Attributes:
        row_count: rows described.
        null_count: how many are NULL (None: unknown).
        min, max: bounds of the non-NULL (and, for floats, non-NaN) values in
            the storage domain, or None when unknown. They need not be values
            of the column: any lower / upper bound is right (a truncated
            text minimum, say).
        has_nan: for floats, whether some value is NaN (None: unknown).
    """

    row_count: int
    null_count: int | None
    min: Any = None
    max: Any = None
    has_nan: bool | None = None


StatsLookup = Union[Mapping[str, Any], Callable[[str], Any]]


def might_match(expr: BooleanExpression, stats: StatsLookup) -> bool:
    """Whether rows described by per-column statistics may satisfy ``expr``.

    Args:
        expr: a bound expression (``BoundQuals.prune``).
        stats: column name -> statistics (a :class:`ColumnStats` or anything
            with ``row_count``, ``null_count``, ``min``, ``max`` and optionally
            ``has_nan``, such as the stripe format's ``ChunkStats``), as a
            mapping or a function; None or missing: nothing known.

    Returns:
        ROWS_CANNOT_MATCH only when no row can satisfy ``expr``; otherwise
        ROWS_MIGHT_MATCH.
    """
    lookup = stats.get if isinstance(stats, Mapping) else stats
    return visit(expr, _MinMaxEvaluator(lookup))


Pruner = Callable[[Callable[[str], Any]], bool]


def pruner(expr: BooleanExpression) -> Pruner:
    """:func:`might_match` of ``expr`` made once into a function of the
    statistics lookup, for a scan testing many stripes and chunk groups
    (the same answers, without walking the tree each time; AND and OR stop
    at the first deciding child).

    Example:
        >>> t = BoundReference("n", "int32", 23)
        >>> test = pruner(And(Comparison(t, ">=", 5), Comparison(t, "<", 9)))
        >>> test({"n": ColumnStats(10, 0, 0, 4)}.get), test({"n": ColumnStats(10, 0, 0, 6)}.get)
        (False, True)
    """
    if expr is ALWAYS_TRUE or expr is ALWAYS_FALSE:
        answer = expr is ALWAYS_TRUE
        return lambda lookup: answer
    if isinstance(expr, (And, Or)):
        parts = tuple(pruner(c) for c in expr.children)
        if isinstance(expr, And):
            def all_may(lookup: Callable[[str], Any]) -> bool:
                for part in parts:
                    if not part(lookup):
                        return ROWS_CANNOT_MATCH
                return ROWS_MIGHT_MATCH
            return all_may

        def any_may(lookup: Callable[[str], Any]) -> bool:
            for part in parts:
                if part(lookup):
                    return ROWS_MIGHT_MATCH
            return ROWS_CANNOT_MATCH
        return any_may
    if isinstance(expr, Comparison) and not expr.term.is_float and expr.op != "<>":
        return _comparison_pruner(expr.term.name, expr.op, expr.value)
    if isinstance(expr, BoundPredicate):
        return lambda lookup: _MinMaxEvaluator(lookup).visit_predicate(expr)
    raise TypeError(f"not a bound expression: {expr!r}")


def _comparison_pruner(name: str, op: str, v: Any) -> Pruner:
    """:meth:`_MinMaxEvaluator.visit_predicate` of ``name op v`` on a column without
    NaN (integers, times, numerics, text), unrolled: the test a scan makes
    of most chunk groups."""
    def may_match(lookup: Callable[[str], Any]) -> bool:
        s = lookup(name)
        if s is None:
            return ROWS_MIGHT_MATCH
        rows = getattr(s, "row_count", None)
        nulls = getattr(s, "null_count", None)
        if rows is not None and nulls is not None and nulls >= rows:
            return ROWS_CANNOT_MATCH  # only NULLs
        lo, hi = s.min, s.max
        if lo is None and hi is None:
            return ROWS_MIGHT_MATCH
        if _is_nan(lo) or _is_nan(hi):
            return ROWS_MIGHT_MATCH
        return ROWS_MIGHT_MATCH if _bounds_allow(op, v, lo, hi) else ROWS_CANNOT_MATCH
    return may_match


def _bounds_allow(op: str, v: Any, lo: Any, hi: Any) -> bool:
    """Whether a value between ``lo`` and ``hi`` (None: unknown) can satisfy
    ``value op v``."""
    if op == "=":
        return (lo is None or lo <= v) and (hi is None or v <= hi)
    if op == "<":
        return lo is None or lo < v
    if op == "<=":
        return lo is None or lo <= v
    if op == ">":
        return hi is None or hi > v
    return hi is None or hi >= v


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


class _MinMaxEvaluator(BooleanExpressionVisitor[bool]):
    def __init__(self, lookup: Callable[[str], Any]):
        self._lookup = lookup

    def visit_true(self) -> bool:
        return ROWS_MIGHT_MATCH

    def visit_false(self) -> bool:
        return ROWS_CANNOT_MATCH

    def visit_and(self, results: list[bool]) -> bool:
        return ROWS_MIGHT_MATCH if all(results) else ROWS_CANNOT_MATCH

    def visit_or(self, results: list[bool]) -> bool:
        return ROWS_MIGHT_MATCH if any(results) else ROWS_CANNOT_MATCH

    def visit_predicate(self, p: BoundPredicate) -> bool:
        if isinstance(p, In) and not p.values:
            return ROWS_CANNOT_MATCH  # no value satisfies it, whatever the stats
        s = self._lookup(p.term.name)
        if s is None:
            return ROWS_MIGHT_MATCH  # no statistics: nothing to go by
        rows = getattr(s, "row_count", None)
        nulls = getattr(s, "null_count", None)
        if rows is None or nulls is None:
            # without counts, NULL tests cannot be decided; comparisons can
            # still use the bounds below
            if isinstance(p, (IsNull, NotNull)) or (isinstance(p, NotIn) and not p.values):
                return ROWS_MIGHT_MATCH
        else:
            if isinstance(p, IsNull):
                return ROWS_MIGHT_MATCH if nulls > 0 else ROWS_CANNOT_MATCH
            if nulls >= rows:
                return ROWS_CANNOT_MATCH  # only NULLs: nothing but IS NULL is true
            if isinstance(p, NotNull) or (isinstance(p, NotIn) and not p.values):
                return ROWS_MIGHT_MATCH
        if isinstance(p, NotIn):
            # NOT IN rules out a chunk only when all its values are in the
            # list, which min/max cannot tell apart from gaps between them.
            return ROWS_MIGHT_MATCH
        # a bound may be missing (a text maximum whose truncation could not be
        # bounded): each known bound still decides what it can (None below:
        # no bound on that side)
        lo, hi = s.min, s.max
        if lo is None and hi is None:
            return ROWS_MIGHT_MATCH  # nothing to compare with
        if _is_nan(lo) or _is_nan(hi):
            # a NaN bound orders nothing (and Postgres puts NaN above every
            # number, which a NaN max may or may not mean)
            return ROWS_MIGHT_MATCH
        # whether NaN rows may be present (None: unknown, so maybe)
        nan = p.term.is_float and getattr(s, "has_nan", None) is not False
        if isinstance(p, Comparison):
            return self._comparison(p.op, p.value, lo, hi, nan)
        if isinstance(p, In):
            if len(p.values) > IN_PREDICATE_LIMIT:
                # checking a long list against the bounds costs more than the
                # skip is likely to save
                return ROWS_MIGHT_MATCH
            return any(self._comparison("=", v, lo, hi, nan) for v in p.values)
        if isinstance(p, StartsWith):
            # values starting with the prefix form the byte range
            # [prefix, successor): disjoint from [lo, hi] -> skip
            if hi is not None and hi < p.prefix:
                return ROWS_CANNOT_MATCH
            succ = _prefix_successor(p.prefix)
            if succ is not None and lo is not None and lo >= succ:
                return ROWS_CANNOT_MATCH
            return ROWS_MIGHT_MATCH
        if isinstance(p, NotStartsWith):
            # every value between two that start with the prefix starts with
            # it too: then no value fails to
            if isinstance(lo, bytes) and isinstance(hi, bytes) and lo.startswith(p.prefix) \
                    and hi.startswith(p.prefix):
                return ROWS_CANNOT_MATCH
            return ROWS_MIGHT_MATCH
        return ROWS_MIGHT_MATCH

    @staticmethod
    def _comparison(op: str, v: Any, lo: Any, hi: Any, nan: bool) -> bool:
        """``x op v`` for some value x in [lo, hi] (a None bound: unbounded)."""
        if op == "<>":
            # only a chunk holding nothing but v could be skipped: too rare to
            # be worth the NaN and bound-exactness cases it would need
            return ROWS_MIGHT_MATCH
        if _is_nan(v):
            # Postgres: NaN = NaN and NaN > every number
            if op in ("=", ">="):
                return ROWS_MIGHT_MATCH if nan else ROWS_CANNOT_MATCH
            if op == ">":
                return ROWS_CANNOT_MATCH
            # "<", "<=": every non-NaN value, and there are some when a bound is known
            return ROWS_MIGHT_MATCH
        if nan and op in (">", ">="):
            return ROWS_MIGHT_MATCH  # NaN rows are greater than every number
        return ROWS_MIGHT_MATCH if _bounds_allow(op, v, lo, hi) else ROWS_CANNOT_MATCH


def _prefix_successor(prefix: bytes) -> bytes | None:
    """The least byte string greater than every string starting with
    ``prefix`` (None: there is none, the prefix is all 0xFF)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


# ------------------------------------------------------- kernel evaluation


class DictionaryColumn:
    """A text (or bytea) column in dictionary form, as a columnar scan reads
    a DICTIONARY-coded chunk: its distinct values ``entries`` (a wire column
    without NULLs), an int32 ``codes`` per row, each an index into
    ``entries`` (0 for a NULL row; None: row i is entry i), and ``validity``
    (nonzero where a row has a value; None: no NULL). Filtered without
    decoding it: each predicate runs once per entry, then the codes pick."""

    __slots__ = ("entries", "codes", "validity")

    def __init__(self, entries: Column, codes: np.ndarray | None, validity: np.ndarray | None = None):
        self.entries = entries
        self.codes = codes
        self.validity = validity

    def take(self, idx: np.ndarray) -> "DictionaryColumn":
        """Rows ``idx`` (positions)."""
        codes = np.asarray(idx, dtype=np.int32) if self.codes is None else self.codes[idx]
        return DictionaryColumn(self.entries, codes, None if self.validity is None else self.validity[idx])


BatchColumn = Union[Column, DictionaryColumn, np.ndarray]


def evaluate(expr: BooleanExpression, columns: Mapping[str, BatchColumn], nrows: int,
             out: np.ndarray | None = None) -> np.ndarray:
    """The rows of a batch where ``expr`` is true, as a uint8 mask.

    Args:
        expr: a bound expression (``BoundQuals.filter``).
        columns: the batch's columns by name, in wire layout
            (:class:`~orochi_fdw.bridge.batch.Column`), dictionary-encoded
            (:class:`DictionaryColumn`), or a bare numpy array (no NULLs).
        nrows: rows in the batch.
        out: optional uint8 array of ``nrows`` to write into.

    Returns:
        ``out`` (or a new array): 1 where the row passes, else 0.

    Raises:
        InvalidParameterError: a column the expression needs is missing or of
            the wrong layout.
    """
    if out is None:
        out = np.empty(nrows, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.shape != (nrows,):
        raise InvalidParameterError("out must be a uint8 array of nrows entries")
    _KernelEvaluator(columns, nrows).eval(expr, out, _kf.COMBINE_SET)
    return out


def selection(mask: np.ndarray, dtype: Any = np.int32) -> np.ndarray:
    """Row indices where ``mask`` is nonzero (a selection vector)."""
    count = _kf.count_selected(mask)
    idx = np.empty(count, dtype=dtype)
    _kf.mask_to_indices(mask, idx)
    return idx


def _validity_u8(v: np.ndarray | None) -> np.ndarray | None:
    if v is None:
        return None
    v = np.ascontiguousarray(v)
    return v.view(np.uint8) if v.dtype == np.bool_ else v.astype(np.uint8, copy=False)


class _KernelEvaluator:
    """Runs the filter kernels; ``eval(expr, out, combine)`` meets ``expr``'s
    mask with ``out`` as ``combine`` says."""

    def __init__(self, columns: Mapping[str, BatchColumn], nrows: int):
        self._columns = columns
        self._n = nrows

    # -- column access ----------------------------------------------------

    def _column(self, term: BoundReference) -> BatchColumn:
        try:
            col = self._columns[term.name]
        except KeyError:
            raise InvalidParameterError(f"the batch has no column {term.name!r}") from None
        return col

    def _fixed(self, term: BoundReference) -> tuple[np.ndarray, np.ndarray | None]:
        col = self._column(term)
        if isinstance(col, np.ndarray):
            values, validity = col, None
        elif isinstance(col, Column) and col.offsets is None:
            values, validity = col.values, col.validity
        else:
            raise InvalidParameterError(f"column {term.name!r} is not a fixed-width column")
        if values.dtype == np.bool_:
            values = values.view(np.uint8)
        expected = term.dtype
        if expected is not None and values.dtype != expected:
            raise InvalidParameterError(
                f"column {term.name!r} holds {values.dtype}, expected {expected} for {term.kind}")
        if len(values) != self._n:
            raise InvalidParameterError(f"column {term.name!r} has {len(values)} rows, not {self._n}")
        return np.ascontiguousarray(values), _validity_u8(validity)

    def _validity(self, term: BoundReference) -> np.ndarray | None:
        col = self._column(term)
        if isinstance(col, np.ndarray):
            return None
        return _validity_u8(col.validity)

    # -- combining --------------------------------------------------------

    def eval(self, expr: BooleanExpression, out: np.ndarray, combine: int) -> None:
        if expr is ALWAYS_TRUE or expr is ALWAYS_FALSE:
            value = 1 if expr is ALWAYS_TRUE else 0
            if combine == _kf.COMBINE_SET or (combine == _kf.COMBINE_AND) != bool(value):
                out[:] = value  # SET, AND false, OR true
            else:
                np.not_equal(out, 0, out=out.view(np.bool_))  # unchanged, as 0 / 1
            return
        if isinstance(expr, And):
            self._junction(expr, out, combine, _kf.COMBINE_AND)
        elif isinstance(expr, Or):
            self._junction(expr, out, combine, _kf.COMBINE_OR)
        else:
            self._predicate(expr, out, combine)  # type: ignore[arg-type]

    def _junction(self, expr: _Junction, out: np.ndarray, combine: int, inner: int) -> None:
        if combine not in (_kf.COMBINE_SET, inner):
            # out AND (a OR b), out OR (a AND b): evaluate apart, then meet
            tmp = np.empty(self._n, dtype=np.uint8)
            self._junction(expr, tmp, _kf.COMBINE_SET, inner)
            if combine == _kf.COMBINE_AND:
                np.logical_and(out, tmp, out=out.view(np.bool_))
            else:
                np.logical_or(out, tmp, out=out.view(np.bool_))
            return
        steps = _and_steps(expr) if inner == _kf.COMBINE_AND else [(c,) for c in expr.children]
        mode = combine
        for i, step in enumerate(steps):
            if len(step) == 2:
                self._range(step[0], step[1], out, mode)  # type: ignore[arg-type]
            else:
                self.eval(step[0], out, mode)
            mode = inner
            if inner == _kf.COMBINE_AND and i + 1 < len(steps) and _kf.count_selected(out) == 0:
                return  # nothing left to filter

    @staticmethod
    def _pair_ranges(children: list[BooleanExpression]) -> list[tuple]:
        """Pair a lower and an upper bound on the same fixed-width column
        (``ts >= a AND ts < b``) into one range step."""
        steps: list[tuple] = []
        used: set[int] = set()
        for i, a in enumerate(children):
            if i in used:
                continue
            if isinstance(a, Comparison) and a.term.dtype is not None and a.op in (">", ">=", "<", "<="):
                for j in range(i + 1, len(children)):
                    b = children[j]
                    if (j not in used and isinstance(b, Comparison) and b.term == a.term
                            and b.op in (">", ">=", "<", "<=") and (b.op[0] != a.op[0])):
                        used.add(j)
                        steps.append((a, b))
                        break
                else:
                    steps.append((a,))
            else:
                steps.append((a,))
        return steps

    # -- predicates -------------------------------------------------------

    def _range(self, a: Comparison, b: Comparison, out: np.ndarray, combine: int) -> None:
        values, validity = self._fixed(a.term)
        _kf.compare_range(values, validity, _KERNEL_OP[a.op], a.value, _KERNEL_OP[b.op], b.value,
                          out, combine)

    def _predicate(self, p: BoundPredicate, out: np.ndarray, combine: int) -> None:
        if isinstance(p, (IsNull, NotNull)) or (isinstance(p, NotIn) and not p.values):
            self._column(p.term)
            _kf.validity_filter(self._validity(p.term), isinstance(p, IsNull), out, combine)
            return
        if isinstance(p, In) and not p.values:
            self.eval(ALWAYS_FALSE, out, combine)
            return
        col = self._column(p.term)
        if p.term.is_bytes:
            if isinstance(col, DictionaryColumn):
                self._dictionary(p, col, out, combine)
                return
            if not isinstance(col, Column) or col.offsets is None:
                raise InvalidParameterError(f"column {p.term.name!r} is not a variable-width column")
            if len(col.offsets) != self._n + 1:
                raise InvalidParameterError(f"column {p.term.name!r} does not have {self._n} rows")
            self._bytes(p, col.offsets, col.values, _validity_u8(col.validity), out, combine)
            return
        values, validity = self._fixed(p.term)
        if isinstance(p, Comparison):
            _kf.compare(values, validity, _KERNEL_OP[p.op], p.value, out, combine)
        elif isinstance(p, (In, NotIn)):
            items = np.array(p.values, dtype=values.dtype)
            _kf.in_list(values, validity, items, isinstance(p, NotIn), out, combine)
        else:
            raise InvalidParameterError(f"{type(p).__name__} on a {p.term.kind} column")

    def _bytes(self, p: BoundPredicate, offsets: np.ndarray, data: np.ndarray,
               validity: np.ndarray | None, out: np.ndarray, combine: int) -> None:
        if isinstance(p, Comparison):
            _kf.text_compare(offsets, data, validity, _KERNEL_OP[p.op], p.value, out, combine)
        elif isinstance(p, (StartsWith, NotStartsWith)):
            _kf.text_prefix(offsets, data, validity, p.prefix, isinstance(p, NotStartsWith), out, combine)
        elif isinstance(p, (In, NotIn)):
            item_offsets, item_data = _var_items(p)
            _kf.text_in_list(offsets, data, validity, item_offsets, item_data,
                             isinstance(p, NotIn), out, combine)
        else:
            raise InvalidParameterError(f"{type(p).__name__} on a {p.term.kind} column")

    def _dictionary(self, p: BoundPredicate, col: DictionaryColumn, out: np.ndarray, combine: int) -> None:
        # once per entry (entries are never NULL) ...
        entries = col.entries
        d = len(entries.offsets) - 1
        entry_mask = np.empty(d, dtype=np.uint8)
        data = entries.values if isinstance(entries.values, np.ndarray) else np.frombuffer(entries.values, np.uint8)
        self._bytes(p, entries.offsets, data, None, entry_mask, _kf.COMBINE_SET)
        # ... then per row, through the codes
        codes = np.arange(d, dtype=np.int32) if col.codes is None else np.ascontiguousarray(col.codes, dtype=np.int32)
        if len(codes) != self._n:
            raise InvalidParameterError(f"column {p.term.name!r} does not have {self._n} rows")
        _kf.dict_filter(codes, entry_mask, _validity_u8(col.validity), out, combine)


#: the steps of AND expressions evaluated lately (:func:`_and_steps`), by id
_AND_STEPS: dict[int, tuple] = {}


def _and_steps(expr: _Junction) -> list[tuple]:
    """:meth:`_KernelEvaluator._pair_ranges` of an AND's children, worked
    out once per expression (a scan evaluates one per chunk group)."""
    known = _AND_STEPS.get(id(expr))
    if known is not None and known[0] is expr:
        return known[1]
    steps = _KernelEvaluator._pair_ranges(list(expr.children))
    if len(_AND_STEPS) >= 256:
        _AND_STEPS.clear()
    _AND_STEPS[id(expr)] = (expr, steps)
    return steps


def _var_items(p: In | NotIn) -> tuple[np.ndarray, np.ndarray]:
    items = [bytes(v) for v in p.values]
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in items], out=offsets[1:])
    data = np.frombuffer(b"".join(items), dtype=np.uint8)
    return offsets, data


# --------------------------------------------------------------- references

class _Columns(BooleanExpressionVisitor[set]):
    def visit_true(self) -> set:
        return set()

    def visit_false(self) -> set:
        return set()

    def visit_and(self, results: list[set]) -> set:
        return set().union(*results)

    def visit_or(self, results: list[set]) -> set:
        return set().union(*results)

    def visit_predicate(self, predicate: BoundPredicate) -> set:
        return {predicate.term.name}


class _UsesBounds(BooleanExpressionVisitor[bool]):
    """Whether min/max pruning may skip chunks holding non-NULL values."""

    def visit_true(self) -> bool:
        return False

    def visit_false(self) -> bool:
        return True

    def visit_and(self, results: list[bool]) -> bool:
        return any(results)

    def visit_or(self, results: list[bool]) -> bool:
        return all(results)

    def visit_predicate(self, predicate: BoundPredicate) -> bool:
        if isinstance(predicate, NotIn):
            return False
        return not (isinstance(predicate, Comparison) and predicate.op == "<>")


def referenced_columns(expr: BooleanExpression) -> set[str]:
    """Names of the columns ``expr`` reads (to decode before filtering)."""
    return visit(expr, _Columns())


# ---------------------------------------------------------------- rendering

def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _render_ident(name: str) -> str:
    if name.isidentifier() and name == name.lower():
        return name
    return '"' + name.replace('"', '""') + '"'


def _render_value(term: BoundReference, v: Any) -> str:
    kind = term.kind
    if kind in _FLOAT_KINDS:
        if math.isnan(v):
            return "'NaN'"
        if math.isinf(v):
            return "'Infinity'" if v > 0 else "'-Infinity'"
        return repr(float(v))
    if kind in ("date", "timestamp", "timestamptz", "time"):
        return _render_datetime(kind, v)
    if kind == "bytea":
        return "'\\x" + bytes(v).hex() + "'"
    if kind == "uuid":
        return _quote(str(uuid.UUID(bytes=bytes(v))))
    if kind in _TEXT_KINDS:
        return _quote(bytes(v).decode("utf-8", errors="replace"))
    if kind == "decimal":
        return "'NaN'" if v == _DECIMAL_NAN else _dec.format_reference(int(v), term.scale)
    return repr(v)


def _render_datetime(kind: str, v: int) -> str:
    lo, hi = _INT_RANGES[kind]
    if kind != "time" and v in (lo, hi):
        return "'infinity'" if v == hi else "'-infinity'"
    try:
        if kind == "date":
            return _quote((PG_EPOCH_DATE + datetime.timedelta(days=v)).isoformat())
        if kind == "time":
            if v == _US_PER_DAY:
                return "'24:00:00'"
            return _quote((datetime.datetime.min + datetime.timedelta(microseconds=v)).time().isoformat())
        ts = PG_EPOCH_DATETIME + datetime.timedelta(microseconds=v)
        return _quote(ts.isoformat(sep=" ") + ("+00" if kind == "timestamptz" else ""))
    except OverflowError:
        return str(v)


def _like_escape(prefix: bytes, term: BoundReference) -> str:
    text = prefix.decode("utf-8", errors="replace")
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Renderer(BooleanExpressionVisitor[str]):
    def visit_true(self) -> str:
        return "true"

    def visit_false(self) -> str:
        return "false"

    def visit_and(self, results: list[str]) -> str:
        return " AND ".join(f"({r})" if " OR " in r else r for r in results)

    def visit_or(self, results: list[str]) -> str:
        return " OR ".join(f"({r})" if " AND " in r else r for r in results)

    def visit_predicate(self, p: BoundPredicate) -> str:
        name = _render_ident(p.term.name)
        if isinstance(p, IsNull):
            return f"{name} IS NULL"
        if isinstance(p, NotNull):
            return f"{name} IS NOT NULL"
        if isinstance(p, Comparison):
            if p.term.kind == "bool":  # bound as the stored byte against 0
                return f"{name} = {'false' if p.op in ('=', '<=') else 'true'}"
            return f"{name} {p.op} {_render_value(p.term, p.value)}"
        if isinstance(p, (In, NotIn)):
            if not p.values:
                return "false" if isinstance(p, In) else f"{name} IS NOT NULL"
            items = ", ".join(_render_value(p.term, v) for v in p.values)
            return f"{name} {'IN' if isinstance(p, In) else 'NOT IN'} ({items})"
        if isinstance(p, (StartsWith, NotStartsWith)):
            if p.term.kind == "bytea":
                test = f"starts_with({name}, {_render_value(p.term, p.prefix)})"
                return test if isinstance(p, StartsWith) else f"NOT {test}"
            like = "LIKE" if isinstance(p, StartsWith) else "NOT LIKE"
            return f"{name} {like} {_quote(_like_escape(p.prefix, p.term) + '%')}"
        return repr(p)  # pragma: no cover


def render(expr: BooleanExpression) -> str:
    """SQL-like text of a bound expression, for EXPLAIN.

    Example:
        >>> t = BoundReference("ts", "date", 1082)
        >>> render(And(Comparison(t, ">=", 0), Or(IsNull(t), In(t, (1, 2)))))
        "ts >= '2000-01-01' AND (ts IS NULL OR ts IN ('2000-01-02', '2000-01-03'))"
    """
    return visit(expr, _Renderer())


def _render_qual(q: Qual) -> str:
    op = q.operator_name
    if not q.is_list_operator and q.value is None:
        return f"{_render_ident(q.field_name)} IS {'NOT ' if op == '<>' else ''}NULL"
    names = {"~~": "LIKE", "~~*": "ILIKE", "!~~": "NOT LIKE", "!~~*": "NOT ILIKE"}
    op = names.get(op, op)
    if q.is_list_operator:
        return f"{_render_ident(q.field_name)} {op} {'ANY' if q.list_any_or_all else 'ALL'}({q.value!r})"
    value = "$param" if q.value is UNKNOWN else _quote(str(q.value)) if isinstance(q.value, str) else repr(q.value)
    return f"{_render_ident(q.field_name)} {op} {value}"
