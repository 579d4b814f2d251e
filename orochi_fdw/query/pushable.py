"""Which planner expressions can be computed outside PostgreSQL with exactly
PostgreSQL's results, and their SQL for a vectorized engine.

The C bridge hands expressions over as plain tuples (``pgext/py_expr.c``):

    ("var", rti, attname, type, typmod, collation)
    ("const", type, typmod, collation, value)
    ("op", opno, opname, builtin, result type, input collation, [args])
    ("bool", "and" | "or" | "not", [args])
    ("nulltest", is_null, arg)
    ("relabel", type, typmod, collation, arg)
    ("saop", opno, opname, builtin, use_or, input collation, [args])
    ("func", funcid, name, builtin, result type, [args])
    ("case", result type, collation, arg or None, [(when, then)], default or None)
    ("casetest", type, typmod, collation)
    ("coalesce", result type, collation, [args])
    ("param", kind, id, type, typmod, collation)
    ("subplan", "expr", plan id, [(varno, table handle, rows, cost)], [quals],
     target, [(paramid, outer expression)])
    ("unsupported", node tag)

with a collation as ``(name, is_c, deterministic)`` or None.

This module is the one place that decides what is safe to push: the join
engine (:mod:`orochi_fdw.query.engine`, DuckDB) uses it, and expression
kernels over one table must use it too, so that two evaluators never
disagree with PostgreSQL or with each other.  Anything it does not know is
refused (:class:`Refused`), and the caller leaves the whole construct to
PostgreSQL.  What is accepted, and why it is exact:

- types: smallint, integer, bigint, boolean, date, text and varchar, char(n)
  (without its trailing spaces, which is how bpchar compares), numeric
  stored as scaled int64 (precision at most 18: DuckDB's DECIMAL has the same
  layout and compares by value), real and double precision (comparisons,
  min and max only; both order NaN above every number and equal to itself);
  timestamp; timestamptz as the UTC instant (compared as instants, so the
  session's TimeZone does not matter; never mixed with date or timestamp);
  timestamp constants against dates (the date at midnight, as PostgreSQL);
- comparisons ``= <> < <= > >=`` between values of one family (the integer
  types among themselves, numeric with numeric, the float types, date,
  boolean, text, char(n)); text equality under deterministic collations
  (equal means equal bytes), text ordering only under the C collation (byte
  order); ``LIKE`` / ``NOT LIKE`` with a constant pattern without
  backslashes (``%`` and ``_``, a character in both; DuckDB has no default
  escape);
- ``AND``, ``OR``, ``NOT``, ``IS [NOT] NULL`` (SQL's three-valued logic in
  both), ``x = ANY(array constant)`` and ``x <> ALL(array constant)``;
- ``+ - *`` of integer types, computed in PostgreSQL's result type so that
  overflow raises an error at the same bound (SQLSTATE 22003);
- ``+ - *`` of numerics, exact in both while the result fits 38 digits
  (PostgreSQL's display scale: max(s1, s2) for + and -, s1 + s2 for *);
  integers become numeric through the ``numeric(int)`` cast; a numeric
  column whose values the caller bounds (``column_bound``: the catalog's
  min/max statistics) counts, in arithmetic, the digits those values need
  and one more (a checked cast in DuckDB; in a sum's or avg's argument,
  DuckDB's own decimal types where they compute it exactly:
  ``Translator._native_arithmetic``), not its declared precision; a text
  group key of at most one character is grouped by its code point
  (``Translator.group_key``);
- aggregates: count(*), count(x), count(DISTINCT x) (equality types), sum
  and avg of integers and numerics, min and max; in PostgreSQL's result
  types (sum(int4) bigint, sum(int8) numeric, avg numeric at the scale
  numeric division gives, computed from DuckDB's exact sum and count).  A
  sum of numerics beyond 38 digits is an error (22003) in DuckDB where
  PostgreSQL would answer: it needs more than 10^20 rows of numeric(18, s);
- ``CASE`` (searched and simple) and ``COALESCE``: both evaluate only the
  branch taken; a numeric result keeps each branch's display scale, carried
  per row beside the value (``Typed.scale_sql``), so sum and avg of it are
  rescaled to the largest scale summed; min/max and group keys of such
  values are refused;
- ``extract(year | month | day from date)`` (numeric, scale 0; years before
  1 AD from -1; an infinite date's year is an error in the engine),
  ``substring(text, s [, n])`` with constants s >= 1 and n >= 0,
  ``text(char(n))``;
- parameters (``$n``, InitPlan values): slots ``{"param": [kind, id, type,
  typmod]}`` in the parameter list, given their values at execution; a
  numeric parameter only in comparisons (its scale is its value's);
- a correlated scalar subquery (``subplan``), when the caller translates
  one (``Translator.subquery``): its correlation parameters become the outer
  expressions (``correlated``); inside it a numeric sum is declared at the
  precision its values and rows need, and avg of a numeric column is
  computed at PostgreSQL's select_div_scale in integers (``_exact_avg``), a
  value only compared;
- no division, no modulo, no float or date arithmetic, no other function.

Values are never pasted into SQL: constants become ``$n`` parameters cast to
their exact type.

Compiled expression kernels over one table (:mod:`orochi_fdw.jit`) ask
:func:`kernel_expression` and :func:`kernel_aggregate` instead: they accept
more (``/`` and ``%`` of integers, ``+ - * /`` of floats, unary minus,
``CASE``, ``COALESCE``, casts among smallint, integer, bigint, real and double
precision), over integer, float, date, timestamp and timestamptz columns
only, because the kernels reproduce PostgreSQL's own checks (overflow at the
result type's bounds, division by zero, float overflow and underflow, NaN's
order, rint in float to integer casts, the date and timestamp ranges) row by
row and in PostgreSQL's order of evaluation; date/time arithmetic only where
the result does not depend on the session's time zone or month lengths
(docs/jit.md).  They answer a typed tree of the accepted expression
(``("col", type, attname)``, ``("const", type, value)`` with dates and times
as PostgreSQL's integers and an interval as [months, days, microseconds],
``("param", type, [kind, id, type, typmod])``, ``("dt", type, function,
[args])`` for date/time functions, ``("arith", type, op, l, r)``, ``("neg", type,
x)``, ``("cast", type, x)``, ``("cmp", op, l, r)``, ``("and" | "or",
[args])``, ``("not", x)``, ``("isnull", is_null, x)``, ``("case", type,
[(cond, value)], default)``, ``("coalesce", type, [args])``), operands
already widened to the operator's type, or raise :class:`Refused`.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Any, Callable

INT2, INT4, INT8 = 21, 23, 20
BOOL, DATE, TEXT, VARCHAR, NUMERIC = 16, 1082, 25, 1043, 1700
FLOAT4, FLOAT8 = 700, 701
BPCHAR, TIMESTAMP = 1042, 1114
TIMESTAMPTZ = 1184

INTEGER_TYPES = {INT2: "SMALLINT", INT4: "INTEGER", INT8: "BIGINT"}
TEXT_TYPES = {TEXT, VARCHAR}
FLOAT_TYPES = {FLOAT4: "FLOAT", FLOAT8: "DOUBLE"}
COMPARISONS = {"=", "<>", "<", "<=", ">", ">="}
ARITHMETIC = {"+", "-", "*"}
MAX_DECIMAL64_PRECISION = 18
#: the type modifier of char(1) and varchar(1): a length of 1 plus VARHDRSZ
ONE_CHARACTER_TYPMOD = 5
#: DuckDB's widest DECIMAL
MAX_DECIMAL_PRECISION = 38


class Refused(Exception):
    """The expression cannot be computed outside PostgreSQL with its results."""


def column_comparison(e: tuple, other: str = "const") -> tuple[tuple, str, tuple] | None:
    """``column op constant`` (or ``constant op column``, turned round) as
    (var, op, const), for the quals a columnar scan may prune with; None for
    any other expression.  ``other="param"``: ``column op $param``."""
    if e[0] != "op" or e[2] not in COMPARISONS or len(e[6]) != 2:
        return None
    left, right = e[6]
    op = e[2]
    if left[0] == other and right[0] == "var":
        left, right = right, left
        op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
    if left[0] != "var" or right[0] != other:
        return None
    return left, op, right


def quote_ident(name: str) -> str:
    """An identifier in double quotes (DuckDB's and SQL's quoting)."""
    return '"' + name.replace('"', '""') + '"'


def numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric type modifier, None if unconstrained."""
    if typmod < 4:
        return None
    t = typmod - 4
    p, s = (t >> 16) & 0xFFFF, t & 0x7FF
    if s & 0x400:
        s -= 0x800  # negative scale (PostgreSQL 15)
    return p, s


def decimal64_type(type_oid: int, typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric that travels as scaled int64, else None."""
    if type_oid != NUMERIC:
        return None
    ps = numeric_typmod(typmod)
    if ps is None or not 0 <= ps[1] <= ps[0] <= MAX_DECIMAL64_PRECISION:
        return None
    return ps


def family(type_oid: int) -> str | None:
    if type_oid in INTEGER_TYPES:
        return "int"
    if type_oid in TEXT_TYPES:
        return "text"
    if type_oid in FLOAT_TYPES:
        return "float"
    return {BOOL: "bool", DATE: "date", NUMERIC: "numeric", BPCHAR: "bpchar",
            TIMESTAMP: "timestamp", TIMESTAMPTZ: "timestamptz"}.get(type_oid)


def column_type_sql(type_oid: int, typmod: int) -> str:
    """The DuckDB type a column of this type is handed over as, or Refused."""
    if type_oid in INTEGER_TYPES:
        return INTEGER_TYPES[type_oid]
    if type_oid in FLOAT_TYPES:
        return FLOAT_TYPES[type_oid]
    if type_oid in TEXT_TYPES or type_oid == BPCHAR:
        return "VARCHAR"
    if type_oid in (TIMESTAMP, TIMESTAMPTZ):
        # timestamptz as the UTC instant: compared as instants, whatever the
        # session's TimeZone (nothing that reads its fields is pushed)
        return "TIMESTAMP"
    if type_oid == BOOL:
        return "BOOLEAN"
    if type_oid == DATE:
        return "DATE"
    ps = decimal64_type(type_oid, typmod)
    if ps is not None:
        return f"DECIMAL({max(ps[0], 1)},{ps[1]})"
    raise Refused(f"type {type_oid} is not handled")


@dataclass
class Translation:
    """SQL text with ``$n`` parameters, their values, and the columns used."""

    params: list = field(default_factory=list)
    columns: set = field(default_factory=set)  # (rti, attname)
    #: numeric columns narrowed in arithmetic: [rti, attname, digits]; the
    #: SQL holds while every value of each has at most that many digits
    narrowed: list = field(default_factory=list)


@dataclass
class Typed:
    sql: str
    type_oid: int
    typmod: int = -1
    collation: Any = None
    #: a numeric's (precision, scale): every value has that display scale,
    #: or, with ``scale_sql``, at most that scale
    decimal: tuple | None = None
    #: SQL of each value's own display scale (an INTEGER), when the values of
    #: a numeric expression differ in it (CASE, COALESCE: PostgreSQL keeps
    #: each branch's); its values are then DECIMAL(p, the largest scale)
    scale_sql: str | None = None
    #: a numeric column: (rti, attname), whose known bounds may narrow its
    #: precision in arithmetic (Translator.column_bound)
    column: tuple | None = None
    #: a numeric whose display scale differs per row and is not carried
    #: (a subquery's avg, PostgreSQL's select_div_scale): its value only
    #: compared, never output, summed or computed with
    compare_only: bool = False
    #: DuckDB's own (precision, scale) of ``sql`` where it differs from
    #: ``decimal`` (arithmetic left in DuckDB's types: Translator.aggregate)
    native: tuple | None = None


class Translator:
    """Translates expressions to DuckDB SQL; ``column_sql(rti, attname)``
    names a column, ``column_ok(rti, attname, type, typmod)`` says whether the
    column's values reach the engine in that type exactly."""

    def __init__(self, column_sql: Callable[[int, str], str],
                 column_ok: Callable[[int, str, int, int], bool],
                 column_bound: Callable[[int, str], int | None] | None = None,
                 max_rows: int | None = None, wide: bool = False):
        self.column_sql = column_sql
        self.column_ok = column_ok
        #: the greatest absolute value of a numeric column as a scaled
        #: integer, over every row the engine may read (None: not known)
        self.column_bound = column_bound
        #: at most this many rows reach an aggregate (None: not known)
        self.max_rows = max_rows
        #: numeric arithmetic at DuckDB's widest decimal, whatever the
        #: values: 38 digits, every operation checked by DuckDB (a result
        #: beyond them is an error, 22003, never a wrong one); for values
        #: that outgrew the narrowed columns of a plan made before them
        self.wide = wide
        self.out = Translation()
        #: the value a simple CASE compares (CaseTestExpr), innermost last
        self._case_values: list[Typed] = []
        #: translates a correlated subquery (a "subplan" node) when set:
        #: ``subquery(translator, *node[1:])`` -> Typed
        self.subquery: Callable[..., Typed] | None = None
        #: the correlation parameters of the subqueries being translated
        #: (paramid -> the outer expression whose value it takes), innermost last
        self._correlation: list[dict] = []
        #: the depth of subqueries being translated
        self.subquery_depth = 0
        #: translating a sum's or avg's argument: numeric arithmetic of
        #: columns and constants in DuckDB's own decimal types
        #: (:meth:`_native_arithmetic`)
        self._native = False

    def param(self, value: Any, sql_type: str) -> str:
        self.out.params.append(value)
        return f"CAST(${len(self.out.params)} AS {sql_type})"

    # -- entry points

    def condition(self, expr: tuple) -> str:
        t = self.expr(expr)
        if t.type_oid != BOOL:
            raise Refused("a condition that is not boolean")
        return t.sql

    def output(self, expr: tuple) -> Typed:
        if expr[0] != "var":
            raise Refused("only columns are outputs")
        return self.expr(expr)

    def value(self, expr: tuple) -> Typed:
        """An expression whose values are output (a group key): one type
        and, for numerics, one display scale."""
        t = self.expr(expr)
        if t.type_oid == NUMERIC and (t.decimal is None or t.scale_sql is not None or t.compare_only):
            raise Refused("a numeric output whose values differ in display scale")
        if family(t.type_oid) in ("text", "bpchar") and (t.collation is None or not t.collation[2]):
            # (a group key: PostgreSQL groups the values its collation calls
            # equal, DuckDB equal bytes)
            raise Refused("a text value under a nondeterministic collation")
        return t

    def group_key(self, expr: tuple, typed: Typed) -> tuple[str, str] | None:
        """(select SQL, GROUP BY SQL) of a group key DuckDB groups faster
        by another expression than by its value, else None (grouped by the
        value itself).  A text column of at most one character (char(1),
        varchar(1)) is grouped by its character's code point (``ord``: -1
        for the empty string, NULL for NULL, one code point per value, so
        the groups are the same), its value made again from it (``chr``):
        DuckDB groups integers several times faster than strings it has no
        statistics of (TPC-H Q1's l_returnflag, l_linestatus at SF1: 184 ms
        of DuckDB's CPU grouped by the strings, 80 ms by code points)."""
        if expr[0] != "var" or family(typed.type_oid) not in ("text", "bpchar") or \
                typed.typmod != ONE_CHARACTER_TYPMOD:
            return None
        key = f"ord({typed.sql})"
        return f"(CASE WHEN {key} < 0 THEN '' ELSE chr({key}) END)", key

    # -- nodes

    def expr(self, e: tuple) -> Typed:
        kind = e[0]
        method = getattr(self, "_" + kind, None)
        if method is None:
            raise Refused(f"expression node {kind} {e[1:]!r}")
        native = self._native
        if native and not (kind in ("var", "const") or (kind == "op" and e[2] in ARITHMETIC)):
            self._native = False  # (DuckDB's types only in a tree of + - *)
        try:
            return method(*e[1:])
        finally:
            self._native = native

    def _native_arithmetic(self, opname: str, left: Typed, right: Typed, p: int, sc: int) -> Typed | None:
        """``left op right`` in DuckDB's own decimal types, without the
        casts that declare the narrowed precisions (``p``, ``sc``: the
        result's), where DuckDB computes it exactly all the same: + and -
        widen (DuckDB's result holds every sum of its inputs); * of two
        DECIMALs of at most 18 digits is DuckDB's int64 product, checked
        (beyond 18 digits an error, never a wrong result), which the
        narrowed result's ``p`` <= 18 digits keep from overflowing.  A sum
        needs no more (its result is DECIMAL(38, scale) whatever the
        argument's precision), and each cast is a checked conversion per
        row (TPC-H Q1 at SF1: 26 ms of DuckDB's CPU for the two of
        l_extendedprice * (1 - l_discount)).  None where it does not apply."""
        if not self._native or self.wide or left.decimal is None or right.decimal is None \
                or left.scale_sql is not None or right.scale_sql is not None \
                or left.compare_only or right.compare_only:
            return None
        (nl, sl), (nr, sr) = left.native or left.decimal, right.native or right.decimal
        if opname == "*":
            if p > MAX_DECIMAL64_PRECISION or nl > MAX_DECIMAL64_PRECISION or nr > MAX_DECIMAL64_PRECISION:
                return None
            native = (min(nl + nr, MAX_DECIMAL64_PRECISION), sl + sr)
        else:
            native = (max(nl - sl, nr - sr) + max(sl, sr) + 1, max(sl, sr))
            if native[0] > MAX_DECIMAL_PRECISION:
                return None
        if native[1] != sc:
            return None
        return Typed(f"({left.sql} {opname} {right.sql})", NUMERIC, -1, None, (p, sc),
                     native=None if native == (p, sc) else native)

    @staticmethod
    def _declared(t: Typed) -> Typed:
        """A value in DuckDB's type of its ``decimal`` (a checked cast of
        DuckDB's own, :meth:`_native_arithmetic`)."""
        if t.native is None or t.decimal is None:
            return t
        return Typed(f"CAST({t.sql} AS DECIMAL({t.decimal[0]},{t.decimal[1]}))", t.type_oid, t.typmod,
                     t.collation, t.decimal, t.scale_sql, t.column, t.compare_only)

    def _var(self, rti, attname, type_oid, typmod, collation) -> Typed:
        column_type_sql(type_oid, typmod)
        if type_oid == NUMERIC and decimal64_type(type_oid, typmod) is None:
            raise Refused("numeric without a precision of at most 18")
        if not self.column_ok(rti, attname, type_oid, typmod):
            raise Refused(f"column {attname} does not reach the engine as its type")
        self.out.columns.add((rti, attname))
        return Typed(self.column_sql(rti, attname), type_oid, typmod, collation,
                     decimal64_type(type_oid, typmod), column=(rti, attname) if type_oid == NUMERIC else None)

    def _narrowed(self, t: Typed) -> Typed:
        """A numeric column in arithmetic, at the precision its known values
        need, with a digit to spare (DECIMAL(15,2) values below 1,000 as
        DECIMAL(6,2)): products stay within 38 digits (and in 64 bits)
        where the declared precisions would not.  Each narrowing is listed
        in ``out.narrowed``: a plan run after larger values arrived takes
        its ``wide`` translation instead (the engine checks the bounds when
        a run starts).  The cast is checked in DuckDB all the same: a value
        beyond it is an error, never a wrong result."""
        if t.column is None or t.decimal is None:
            return t
        p, sc = t.decimal
        if self.wide:
            return Typed(f"CAST({t.sql} AS DECIMAL({MAX_DECIMAL_PRECISION},{sc}))", t.type_oid, t.typmod,
                         t.collation, (MAX_DECIMAL_PRECISION, sc))
        if self.column_bound is None:
            return t
        bound = self.column_bound(*t.column)
        if bound is None:
            return t
        narrow = min(p, max(len(str(abs(int(bound)))) + 1, sc, 1))
        if narrow >= p:
            return t
        self.out.narrowed.append([*t.column, narrow])
        return Typed(f"CAST({t.sql} AS DECIMAL({narrow},{sc}))", t.type_oid, t.typmod, t.collation, (narrow, sc))

    def _const(self, type_oid, typmod, collation, value) -> Typed:
        fam = family(type_oid)
        if fam is None:
            raise Refused(f"a constant of type {type_oid}")
        if value is None:
            if fam == "numeric":
                return Typed("CAST(NULL AS DECIMAL(1,0))", type_oid, typmod, collation, (1, 0))
            sql_type = self._const_type(type_oid, typmod, None)
            return Typed(f"CAST(NULL AS {sql_type})", type_oid, typmod, collation)
        if fam == "numeric":
            if not isinstance(value, decimal.Decimal) or not value.is_finite():
                raise Refused("a numeric constant that is not a finite number")
        elif fam == "date":
            if type(value) is not datetime.date:
                raise Refused("a date constant outside the years 1-9999 (infinity)")
        elif fam == "int":
            if type(value) is not int:
                raise Refused("an integer constant that did not convert")
        elif fam == "text":
            if not isinstance(value, str):
                raise Refused("a text constant that did not convert")
        elif fam == "bpchar":
            if not isinstance(value, str):
                raise Refused("a character constant that did not convert")
            value = value.rstrip(" ")  # char(n) compares without its trailing spaces
        elif fam == "timestamp":
            if type(value) is not datetime.datetime or value.tzinfo is not None:
                raise Refused("a timestamp constant outside the years 1-9999 (infinity)")
        elif fam == "timestamptz":
            if type(value) is not datetime.datetime or value.tzinfo is None:
                raise Refused("a timestamptz constant outside the years 1-9999 (infinity)")
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)  # the instant in UTC
        elif fam == "bool":
            if type(value) is not bool:
                raise Refused("a boolean constant that did not convert")
        elif fam == "float":
            if not isinstance(value, float):
                raise Refused("a float constant that did not convert")
        sql_type = self._const_type(type_oid, typmod, value)
        dec = None
        if fam == "numeric":
            p, sc = sql_type[len("DECIMAL("):-1].split(",")
            dec = (int(p), int(sc))
        return Typed(self.param(value, sql_type), type_oid, typmod, collation, dec)

    @staticmethod
    def _const_type(type_oid: int, typmod: int, value: Any) -> str:
        if type_oid != NUMERIC:
            return column_type_sql(type_oid, typmod)
        if value is None:
            return "DECIMAL(18,0)"
        sign, digits, exponent = value.as_tuple()
        scale = max(-exponent, 0)
        precision = max(len(digits) + max(exponent, 0), scale, 1)
        if precision > 38:
            raise Refused("a numeric constant wider than 38 digits")
        return f"DECIMAL({precision},{scale})"

    def _relabel(self, type_oid, typmod, collation, arg) -> Typed:
        inner = self.expr(arg)
        if family(inner.type_oid) == "bpchar" and type_oid == BPCHAR:
            return Typed(inner.sql, type_oid, typmod, collation if collation is not None else inner.collation)
        if family(inner.type_oid) != "text" or type_oid not in TEXT_TYPES:
            raise Refused("a binary-compatible cast outside the text types")
        return Typed(inner.sql, type_oid, typmod, collation if collation is not None else inner.collation)

    def _bool(self, op, args) -> Typed:
        parts = [self.condition(a) for a in args]
        if op == "not":
            return Typed(f"(NOT {parts[0]})", BOOL)
        return Typed("(" + f" {op.upper()} ".join(parts) + ")", BOOL)

    def _nulltest(self, is_null, arg) -> Typed:
        inner = self.expr(arg)
        return Typed(f"({inner.sql} IS {'' if is_null else 'NOT '}NULL)", BOOL)

    def _op(self, opno, opname, builtin, result_type, collation, args) -> Typed:
        if not builtin or len(args) != 2:
            raise Refused(f"operator {opname}")
        left, right = (self.expr(a) for a in args)
        lf, rf = family(left.type_oid), family(right.type_oid)
        if opname in COMPARISONS:
            if {lf, rf} == {"date", "timestamp"}:
                # date against timestamp: the date at midnight, as date2timestamp
                l_sql = f"CAST({left.sql} AS TIMESTAMP)" if lf == "date" else left.sql
                r_sql = f"CAST({right.sql} AS TIMESTAMP)" if rf == "date" else right.sql
                return Typed(f"({l_sql} {opname} {r_sql})", BOOL)
            self._check_comparison(opname, left, right, collation)
            if lf == rf == "numeric" and left.decimal is not None and right.decimal is not None and \
                    self._compared_width(left, right) > MAX_DECIMAL_PRECISION:
                # DuckDB compares in one DECIMAL type wide enough for both
                # scales and integer digits: past 38 digits its cast fails;
                # columns at the precision their known values need
                left, right = self._narrowed(left), self._narrowed(right)
                if self._compared_width(left, right) > MAX_DECIMAL_PRECISION:
                    raise Refused("a numeric comparison wider than 38 digits")
            return Typed(f"({left.sql} {opname} {right.sql})", BOOL)
        if opname in ("~~", "!~~") and lf == "text" and right.type_oid == TEXT and args[1][0] == "const":
            pattern = args[1][4]
            # % and _ match bytes and characters alike in both; DuckDB has no
            # default escape character, PostgreSQL's is the backslash
            if not isinstance(pattern, str) or "\\" in pattern:
                raise Refused("a LIKE pattern with an escape")
            if collation is None or not collation[2]:
                raise Refused("LIKE under a nondeterministic collation")
            word = "LIKE" if opname == "~~" else "NOT LIKE"
            return Typed(f"({left.sql} {word} {right.sql})", BOOL)
        if opname in ARITHMETIC and lf == "int" and rf == "int" and result_type in INTEGER_TYPES:
            t = INTEGER_TYPES[result_type]
            return Typed(f"(CAST({left.sql} AS {t}) {opname} CAST({right.sql} AS {t}))", result_type)
        if opname in ARITHMETIC and lf == "numeric" and rf == "numeric" and result_type == NUMERIC:
            # exact in both: PostgreSQL's display scale is max(s1, s2) for + and -,
            # s1 + s2 for *; DuckDB computes it exactly while it fits 38 digits
            if left.decimal is None or right.decimal is None:
                raise Refused("numeric arithmetic on a value of unknown scale")
            unnarrowed = left, right
            left, right = self._narrowed(left), self._narrowed(right)
            (p1, s1), (p2, s2) = left.decimal, right.decimal
            if opname == "*":
                p, sc = p1 + p2, s1 + s2
            else:
                sc = max(s1, s2)
                p = max(p1 - s1, p2 - s2) + sc + 1
            if p > MAX_DECIMAL_PRECISION:
                if not self.wide or sc > MAX_DECIMAL_PRECISION:
                    raise Refused("numeric arithmetic wider than 38 digits")
                p = MAX_DECIMAL_PRECISION
            scale_sql = None
            if left.scale_sql is not None or right.scale_sql is not None:
                ls, rs = left.scale_sql or str(s1), right.scale_sql or str(s2)
                scale_sql = f"({ls} + {rs})" if opname == "*" else f"greatest({ls}, {rs})"
            native = self._native_arithmetic(opname, *unnarrowed, p, sc) if scale_sql is None else None
            if native is not None:
                return native
            left, right = self._declared(left), self._declared(right)
            # (a value compared only stays so: its display scale is not carried)
            return Typed(f"CAST(({left.sql} {opname} {right.sql}) AS DECIMAL({p},{sc}))", NUMERIC, -1,
                         None, (p, sc), scale_sql, compare_only=left.compare_only or right.compare_only)
        raise Refused(f"operator {opname} on types {left.type_oid}, {right.type_oid}")

    @staticmethod
    def _compared_width(left: Typed, right: Typed) -> int:
        (p1, s1), (p2, s2) = left.decimal, right.decimal
        return max(p1 - s1, p2 - s2) + max(s1, s2)

    def _check_comparison(self, opname: str, left: Typed, right: Typed, collation) -> None:
        lf, rf = family(left.type_oid), family(right.type_oid)
        if lf is None or lf != rf:
            raise Refused(f"a comparison of types {left.type_oid} and {right.type_oid}")
        if lf in ("text", "bpchar"):
            if collation is None:
                raise Refused("a text comparison without a collation")
            _name, is_c, deterministic = collation
            if opname in ("=", "<>"):
                if not deterministic:
                    raise Refused("text equality under a nondeterministic collation")
            elif not is_c:
                raise Refused("text ordering under a collation other than C")

    def _saop(self, opno, opname, builtin, use_or, collation, args) -> Typed:
        if not builtin or len(args) != 2 or args[1][0] != "const":
            raise Refused("an ANY/ALL comparison that is not with a constant array")
        if (opname, use_or) not in (("=", True), ("<>", False)):
            raise Refused(f"{opname} {'ANY' if use_or else 'ALL'}")
        left = self.expr(args[0])
        _kind, array_type, _typmod, _coll, values = args[1]
        if values is None:
            return Typed("CAST(NULL AS BOOLEAN)", BOOL)
        if not isinstance(values, list) or any(isinstance(v, list) for v in values):
            raise Refused("a multi-dimensional array")
        if not values:
            return Typed("TRUE" if not use_or else "FALSE", BOOL)
        # the elements as the widest type of the column's family: compared by value
        element_type = {"int": INT8, "text": TEXT, "float": FLOAT8}.get(family(left.type_oid), left.type_oid)
        items = []
        for v in values:
            if element_type == FLOAT8 and type(v) is int:
                raise Refused("an integer array compared with a float")
            item = self._const(element_type, -1, collation, v)
            self._check_comparison(opname, left, item, collation)
            items.append(item.sql)
        word = "IN" if use_or else "NOT IN"
        return Typed(f"({left.sql} {word} ({', '.join(items)}))", BOOL)

    def _func(self, funcid, name, builtin, result_type, args) -> Typed:
        if builtin and name == "numeric" and result_type == NUMERIC and len(args) == 1:
            inner = self.expr(args[0])
            if family(inner.type_oid) == "int":
                p = {INT2: 5, INT4: 10, INT8: 19}[inner.type_oid]
                return Typed(f"CAST({inner.sql} AS DECIMAL({p},0))", NUMERIC, -1, None, (p, 0))
        if builtin and name == "extract" and result_type == NUMERIC and len(args) == 2:
            return self._extract(args)
        if builtin and name == "substring" and result_type == TEXT and len(args) in (2, 3):
            return self._substring(args)
        if builtin and name == "text" and result_type == TEXT and len(args) == 1:
            inner = self.expr(args[0])
            if family(inner.type_oid) == "bpchar":
                # char(n) to text drops the trailing spaces: values reach the
                # engine without them already
                return Typed(inner.sql, TEXT, -1, inner.collation)
        raise Refused(f"function {name}")

    def _extract(self, args) -> Typed:
        """``extract(year | month | day from date)``: numeric with scale 0.
        PostgreSQL counts the years before 1 AD from -1 (DuckDB from 0); the
        year of an infinite date is numeric's Infinity, which DuckDB's
        DECIMAL cannot hold: an error there (month and day are NULL in both)."""
        field_arg, arg = args
        if field_arg[0] != "const" or not isinstance(field_arg[4], str):
            raise Refused("extract of a field that is not a constant")
        unit = field_arg[4].lower()
        inner = self.expr(arg)
        if inner.type_oid != DATE or unit not in ("year", "month", "day"):
            raise Refused(f"extract({unit}) of type {inner.type_oid}")
        x = inner.sql
        if unit == "year":
            sql = (f"CASE WHEN NOT isfinite({x}) THEN error('extract(year) of an infinite date is not computed "
                   f"by the join engine (SET orochi.duckdb_join_enabled = off)') "
                   f"WHEN year({x}) <= 0 THEN year({x}) - 1 ELSE year({x}) END")
        else:
            sql = f"{unit}({x})"
        return Typed(f"CAST({sql} AS DECIMAL(18,0))", NUMERIC, -1, None, (18, 0))

    def _substring(self, args) -> Typed:
        """``substring(text from s [for n])`` with constants s >= 1, n >= 0:
        characters in both (UTF-8 code points)."""
        inner = self.expr(args[0])
        if family(inner.type_oid) != "text":
            raise Refused("substring of a value that is not text")
        bounds = []
        for a in args[1:]:
            if a[0] != "const" or type(a[4]) is not int or a[1] != INT4:
                raise Refused("substring with bounds that are not integer constants")
            bounds.append(a[4])
        if bounds[0] < 1 or (len(bounds) > 1 and bounds[1] < 0):
            raise Refused("substring from before the first character or of negative length")
        parts = ", ".join([inner.sql] + [str(b) for b in bounds])
        return Typed(f"substring({parts})", TEXT, -1, inner.collation)

    # -- CASE, COALESCE: PostgreSQL evaluates only the branch it takes, DuckDB
    # too (selection vectors); a numeric result keeps each branch's scale

    def _branches(self, result_type: int, collation, values: list[Typed]) -> tuple[list[str], Typed]:
        """Each branch's SQL in the result's DuckDB type, and the result's
        Typed (without SQL); ``values`` without the NULL constants."""
        fam = family(result_type)
        if fam is None or fam == "float":
            raise Refused(f"a CASE or COALESCE of type {result_type}")
        for v in values:
            if family(v.type_oid) != fam or (fam == "int" and v.type_oid != result_type):
                raise Refused("a CASE or COALESCE whose branches differ in type")
            if v.compare_only:
                raise Refused("a CASE or COALESCE of a value whose display scale is not known")
        if fam != "numeric":
            sql_type = column_type_sql(result_type, -1)
            return [f"CAST({v.sql} AS {sql_type})" for v in values], Typed("", result_type, -1, collation)
        if any(v.decimal is None for v in values):
            raise Refused("a numeric CASE branch of unknown scale")
        scale = max((v.decimal[1] for v in values), default=0)
        digits = max((v.decimal[0] - v.decimal[1] for v in values), default=1)
        precision = max(digits + scale, 1)
        if precision > MAX_DECIMAL_PRECISION:
            if not self.wide or scale > MAX_DECIMAL_PRECISION:
                raise Refused("a numeric CASE wider than 38 digits")
            precision = MAX_DECIMAL_PRECISION
        uniform = all(v.scale_sql is None and v.decimal[1] == scale for v in values)
        typed = Typed("", NUMERIC, -1, None, (precision, scale), None if uniform else "")
        return [f"CAST({v.sql} AS DECIMAL({precision},{scale}))" for v in values], typed

    @staticmethod
    def _scale_of(v: Typed) -> str:
        return v.scale_sql if v.scale_sql is not None else str(v.decimal[1])

    def _case(self, result_type, collation, arg, whens, default) -> Typed:
        conds = []
        if arg is not None:
            self._case_values.append(self.expr(arg))
        try:
            conds = [self.condition(w) for w, _then in whens]
        finally:
            if arg is not None:
                self._case_values.pop()
        results = [self.expr(then) for _w, then in whens]
        default_t = self.expr(default) if default is not None else None
        is_null = [then[0] == "const" and then[4] is None for _w, then in whens]
        default_null = default is None or (default[0] == "const" and default[4] is None)
        typed_values = [r for r, n in zip(results, is_null) if not n]
        if default_t is not None and not default_null:
            typed_values.append(default_t)
        sqls, typed = self._branches(result_type, collation, typed_values)
        sql_type = (f"DECIMAL({typed.decimal[0]},{typed.decimal[1]})" if typed.decimal
                    else column_type_sql(result_type, -1))
        it = iter(sqls)
        branch_sql = [f"CAST(NULL AS {sql_type})" if n else next(it) for n in is_null]
        else_sql = f"CAST(NULL AS {sql_type})" if default_null else next(it)
        typed.sql = ("(CASE " + " ".join(f"WHEN {c} THEN {b}" for c, b in zip(conds, branch_sql))
                     + f" ELSE {else_sql} END)")
        if typed.scale_sql is not None:
            it = iter(typed_values)
            scales = ["NULL" if n else self._scale_of(next(it)) for n in is_null]
            else_scale = "NULL" if default_null else self._scale_of(next(it))
            typed.scale_sql = ("(CASE " + " ".join(f"WHEN {c} THEN {sc}" for c, sc in zip(conds, scales))
                               + f" ELSE {else_scale} END)")
        return typed

    def _casetest(self, type_oid, typmod, collation) -> Typed:
        if not self._case_values:
            raise Refused("a CASE value outside a CASE")
        v = self._case_values[-1]
        if v.type_oid != type_oid:
            raise Refused("a CASE value of another type")
        return v

    def _coalesce(self, result_type, collation, args) -> Typed:
        values = [self.expr(a) for a in args if not (a[0] == "const" and a[4] is None)]
        if not values:
            return self._const(result_type, -1, collation, None)
        sqls, typed = self._branches(result_type, collation, values)
        typed.sql = f"COALESCE({', '.join(sqls)})"
        if typed.scale_sql is not None:
            typed.scale_sql = ("(CASE " + " ".join(f"WHEN {v.sql} IS NOT NULL THEN {self._scale_of(v)}"
                                                   for v in values) + " END)")
        return typed

    # -- parameters ($1, an InitPlan's value): given at execution

    def _param(self, kind, paramid, type_oid, typmod, collation) -> Typed:
        for depth in range(len(self._correlation) - 1, -1, -1):
            outer = self._correlation[depth].get(paramid) if kind == PARAM_EXEC else None
            if outer is None:
                continue
            # a correlated subquery's reference to the outer row: the outer
            # expression itself (DuckDB decorrelates the subquery), outside
            # this subquery's own parameters
            inner = self._correlation[depth:]
            del self._correlation[depth:]
            try:
                t = self.expr(outer)
            finally:
                self._correlation.extend(inner)
            if t.type_oid != type_oid:
                raise Refused("a correlation parameter of another type than its outer value")
            return t
        fam = family(type_oid)
        if fam is None:
            raise Refused(f"a parameter of type {type_oid}")
        slot = {"param": [kind, paramid, type_oid, typmod]}
        self.out.params.append(slot)
        n = len(self.out.params)
        if fam == "numeric":
            # its scale is the value's: compared by value, not computed with
            return Typed(f"${n}", NUMERIC, typmod, collation, None)
        return Typed(f"CAST(${n} AS {column_type_sql(type_oid, typmod)})", type_oid, typmod, collation)

    def _subplan(self, *node) -> Typed:
        if self.subquery is None:
            raise Refused("a subquery")
        return self.subquery(self, *node)

    def correlated(self, params: list) -> "_Correlated":
        """While translating a subquery: its correlation parameters (paramid,
        outer expression) stand for the outer expressions."""
        return _Correlated(self, {paramid: outer for paramid, outer in params})

    def _exact_avg(self, arg_expr: tuple) -> Typed:
        """avg of a numeric column inside a subquery, as PostgreSQL computes
        it: numeric_div of the sum by the count, at the scale
        select_div_scale picks from their base-10000 weights and leading
        digits, rounded half away from zero (the orochi_numeric_avg macro of
        the engine's database, in integers).  The value is held at the
        largest of those scales that the column's bounds and ``max_rows``
        allow (DECIMAL(p, x)); its own display scale is not carried, so it is
        only compared."""
        arg = self.expr(arg_expr)
        if arg.type_oid != NUMERIC or arg.decimal is None or arg.scale_sql is not None or arg.column is None:
            raise Refused("avg of a value that is not a numeric column")
        if self.max_rows is None:
            raise Refused("avg over rows of unknown number")
        bound = self._value_bound(arg)
        p, sc = arg.decimal
        self._check_sum(p)
        qweight_min = (-sc) // 4 - (len(str(max(int(self.max_rows), 1))) - 1) // 4 - 1
        x = max(16 - 4 * qweight_min, sc)
        digits = max(len(str(abs(int(bound)))) - sc, 1) + 1  # (rounding may carry one)
        if digits + x > MAX_DECIMAL_PRECISION:
            raise Refused("avg beyond 38 digits at its largest scale")
        total = f"CAST(CAST(sum({arg.sql}) AS DECIMAL(38,{sc})) * {10 ** sc} AS HUGEINT)"
        unit = "0." + "0" * (x - 1) + "1"
        sql = (f"CAST(CAST(orochi_numeric_avg({total}, count({arg.sql}), {sc}, {x}) AS DECIMAL(38,0)) "
               f"* CAST('{unit}' AS DECIMAL({x},{x})) AS DECIMAL({digits + x},{x}))")
        return Typed(sql, NUMERIC, -1, None, (digits + x, x), compare_only=True)

    def _value_bound(self, arg: Typed) -> int:
        """The greatest absolute value (scaled) of a numeric column: its
        known values' (column_bound; listed in ``out.narrowed``, as
        :meth:`_narrowed` lists its narrowings), else, and in the wide
        translation, its declared precision's."""
        bound = None if self.wide or self.column_bound is None else self.column_bound(*arg.column)
        if bound is None:
            return 10 ** arg.decimal[0] - 1
        self.out.narrowed.append([*arg.column, len(str(abs(int(bound))))])
        return bound

    def aggregate(self, e: tuple) -> tuple[list[str], dict]:
        """The select items of an aggregate and how its value is made from them:
        ``{"type_oid", "post": None | "avg", "scale"}``."""
        if e[0] != "agg":
            raise Refused("an output that is not an aggregate")
        _kind, fnoid, name, builtin, rtype, star, distinct, collation, args = e
        if not builtin:
            raise Refused(f"aggregate {name}")
        if name == "count" and rtype == INT8:
            if star:
                return ["count(*)"], {"type_oid": INT8}
            arg = self.expr(args[0])
            if distinct:
                fam = family(arg.type_oid)
                if fam not in ("int", "date", "numeric", "text", "bpchar", "timestamp", "timestamptz"):
                    raise Refused("count(DISTINCT) of that type")
                if fam in ("text", "bpchar") and (collation is None or not collation[2]):
                    raise Refused("count(DISTINCT) of text under a nondeterministic collation")
                return [f"count(DISTINCT {arg.sql})"], {"type_oid": INT8}
            return [f"count({arg.sql})"], {"type_oid": INT8}
        if distinct or star or len(args) != 1:
            raise Refused(f"{name}(DISTINCT ...)")
        # (a sum's result is DECIMAL(38, scale) whatever its argument's
        # precision: the argument's arithmetic in DuckDB's own types)
        native, self._native = self._native, name in ("sum", "avg") and rtype == NUMERIC
        try:
            arg = self.expr(args[0])
        finally:
            self._native = native
        if arg.compare_only:
            raise Refused(f"{name} of a value whose display scale is not known")
        fam = family(arg.type_oid)
        if name in ("sum", "avg") and fam == "numeric" and arg.decimal is not None:
            self._check_sum(arg.decimal[0])
        if name == "sum" and fam == "numeric" and rtype == NUMERIC and self.subquery_depth and \
                arg.scale_sql is None and arg.decimal is not None and arg.column is not None \
                and self.max_rows is not None:
            # a subquery's sum of a column, at the precision its values and
            # rows need (a checked cast): computed with where 38 digits would not be
            sc = arg.decimal[1]
            p = min(max(len(str(abs(int(self._value_bound(arg))) * max(int(self.max_rows), 1))) + 1, sc + 1),
                    MAX_DECIMAL_PRECISION)
            return [f"CAST(sum({arg.sql}) AS DECIMAL({p},{sc}))"], {"type_oid": NUMERIC, "decimal": (p, sc)}
        if name == "sum":
            if arg.type_oid in (INT2, INT4) and rtype == INT8:
                return [f"CAST(sum({arg.sql}) AS BIGINT)"], {"type_oid": INT8}
            if arg.type_oid == INT8 and rtype == NUMERIC:
                return [f"CAST(sum({arg.sql}) AS DECIMAL(38,0))"], {"type_oid": NUMERIC, "decimal": (38, 0)}
            if fam == "numeric" and rtype == NUMERIC and arg.decimal is not None:
                if arg.scale_sql is not None:
                    # the sum's display scale is the largest of its inputs'
                    return ([f"CAST(sum({arg.sql}) AS DECIMAL(38,{arg.decimal[1]}))",
                             f"max(CASE WHEN {arg.sql} IS NOT NULL THEN {arg.scale_sql} END)"],
                            {"type_oid": NUMERIC, "post": "rescale"})
                return [f"CAST(sum({arg.sql}) AS DECIMAL(38,{arg.decimal[1]}))"], \
                    {"type_oid": NUMERIC, "decimal": (38, arg.decimal[1])}
        if name == "avg" and rtype == NUMERIC:
            if fam == "int":
                scale = 0
            elif fam == "numeric" and arg.decimal is not None:
                scale = arg.decimal[1]
            else:
                raise Refused(f"avg of type {arg.type_oid}")
            items = [f"CAST(sum({arg.sql}) AS DECIMAL(38,{scale}))", f"count({arg.sql})"]
            if arg.scale_sql is not None:
                items.append(f"max(CASE WHEN {arg.sql} IS NOT NULL THEN {arg.scale_sql} END)")
            return items, {"type_oid": NUMERIC, "post": "avg", "scale": scale}
        if name in ("min", "max") and fam == "numeric" and (arg.decimal is None or arg.scale_sql is not None):
            raise Refused(f"{name} of numerics that differ in display scale")
        if name in ("min", "max") and fam in ("int", "numeric", "date", "float", "text", "bpchar", "timestamp",
                                              "timestamptz"):
            if rtype != arg.type_oid and not (fam == "text" and rtype == TEXT):
                raise Refused(f"{name} of type {arg.type_oid} as {rtype}")
            if fam in ("text", "bpchar") and (collation is None or not collation[1]):
                raise Refused(f"{name} of text under a collation other than C")
            out = {"type_oid": rtype}
            if fam == "numeric":
                out["decimal"] = arg.decimal
            return [f"{name}({arg.sql})"], out
        raise Refused(f"aggregate {name} of type {arg.type_oid}")

    def _agg(self, fnoid, name, builtin, rtype, star, distinct, collation, args) -> Typed:
        """An aggregate in a HAVING condition or a subquery's output: one the
        engine computes whole (not a sum rescaled afterwards; avg only in a
        subquery, _exact_avg), of a type compared here as PostgreSQL compares
        it (no text: its collation)."""
        if name == "avg" and builtin and rtype == NUMERIC and self.subquery_depth and not distinct \
                and not star and len(args) == 1:
            return self._exact_avg(args[0])
        items, out = self.aggregate(("agg", fnoid, name, builtin, rtype, star, distinct, collation, args))
        if len(items) != 1 or out.get("post") or family(out["type_oid"]) not in ("int", "numeric", "date",
                                                                                  "timestamp", "timestamptz"):
            raise Refused(f"{name} in a condition")
        return Typed(items[0], out["type_oid"], -1, None, out.get("decimal"))

    def _check_sum(self, precision: int) -> None:
        """A sum of numerics of this precision fits DuckDB's 38 digits over
        every row that may reach it, when that is known (else DuckDB's sum
        is checked: an overflow is an error, 22003)."""
        if not self.wide and self.max_rows is not None and \
                precision + len(str(max(int(self.max_rows), 1))) > MAX_DECIMAL_PRECISION:
            raise Refused("a numeric sum that may exceed 38 digits")

    def _unsupported(self, tag) -> Typed:
        raise Refused(f"expression node with tag {tag}")


#: PostgreSQL's ParamKind of a value set during execution (PARAM_EXEC)
PARAM_EXEC = 1


class _Correlated:
    def __init__(self, tr: Translator, params: dict) -> None:
        self.tr = tr
        self.params = params

    def __enter__(self) -> None:
        self.tr._correlation.append(self.params)
        self.tr.subquery_depth += 1

    def __exit__(self, *exc) -> None:
        self.tr._correlation.pop()
        self.tr.subquery_depth -= 1


# ---------------------------------------------------------------------------
# expressions for compiled kernels over one table (orochi_fdw.jit)

KERNEL_TYPES = {INT2, INT4, INT8, FLOAT4, FLOAT8, DATE, TIMESTAMP, TIMESTAMPTZ}
KERNEL_CASTS = {"int2": INT2, "int4": INT4, "int8": INT8, "float4": FLOAT4, "float8": FLOAT8}
#: date and time types a kernel holds as int64: days (date) or microseconds
#: (timestamp; timestamptz as the UTC instant) since 2000-01-01, PostgreSQL's own
KERNEL_DATETIME = {DATE, TIMESTAMP, TIMESTAMPTZ}
INTERVAL = 1186
#: the longest day part of an interval constant added in a kernel (no int32
#: overflow of PostgreSQL's Julian day arithmetic, no int64 one of ours)
KERNEL_MAX_INTERVAL_DAYS = 100_000_000
#: the fields of date_part(text, timestamp) a kernel computes
KERNEL_DATE_PARTS = ("year", "quarter", "month", "day", "hour", "minute", "dow", "doy")
_EPOCH_DATE = datetime.date(2000, 1, 1)
_EPOCH = datetime.datetime(2000, 1, 1)
_USECS_PER_DAY = 86_400_000_000


def kernel_datetime_value(type_oid: int, value: Any) -> int:
    """A date / timestamp / timestamptz value as the kernel's int64 (days or
    microseconds since 2000-01-01; infinity as PostgreSQL's own integers),
    or Refused."""
    from orochi_fdw.bridge.types import SpecialValue

    if isinstance(value, SpecialValue):
        return int(value.raw)
    if type_oid == DATE and type(value) is datetime.date:
        return (value - _EPOCH_DATE).days
    if type_oid in (TIMESTAMP, TIMESTAMPTZ) and type(value) is datetime.datetime \
            and (value.tzinfo is None) == (type_oid == TIMESTAMP):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise Refused(f"a value of type {type_oid} that did not convert")


def kernel_expression(e: tuple, casetest: tuple | None = None) -> tuple:
    """The typed tree of an expression a kernel computes exactly, or Refused
    (see the module's docstring)."""
    kind = e[0]
    if kind == "var":
        _k, _rti, attname, type_oid, _typmod, _coll = e
        if type_oid not in KERNEL_TYPES:
            raise Refused(f"a column of type {type_oid}")
        return ("col", type_oid, attname)
    if kind == "const":
        _k, type_oid, _typmod, _coll, value = e
        if type_oid == INTERVAL:
            # only as an operand of date/time arithmetic (_kernel_datetime_op)
            if value is None or not all(hasattr(value, f) for f in ("months", "days", "microseconds")):
                raise Refused("an interval constant that did not convert")
            return ("const", INTERVAL, [int(value.months), int(value.days), int(value.microseconds)])
        if type_oid not in KERNEL_TYPES and type_oid != BOOL:
            raise Refused(f"a constant of type {type_oid}")
        if type_oid in KERNEL_DATETIME:
            return ("const", type_oid, None if value is None else kernel_datetime_value(type_oid, value))
        expected = bool if type_oid == BOOL else float if type_oid in FLOAT_TYPES else int
        if value is not None and type(value) is not expected:
            raise Refused("a constant that did not convert")
        return ("const", type_oid, value)
    if kind == "param":
        # $n of a generic plan, an InitPlan's value: a kernel argument given
        # its value when the scan starts
        _k, pkind, pid, type_oid, typmod, _coll = e
        if type_oid not in KERNEL_TYPES and type_oid != BOOL:
            raise Refused(f"a parameter of type {type_oid}")
        return ("param", type_oid, [pkind, pid, type_oid, typmod])
    if kind == "casetest":
        if casetest is None:
            raise Refused("a CASE test value outside CASE")
        return casetest
    if kind == "bool":
        args = [kernel_condition(a, casetest) for a in e[2]]
        return ("not", args[0]) if e[1] == "not" else (e[1], args)
    if kind == "nulltest":
        return ("isnull", bool(e[1]), kernel_expression(e[2], casetest))
    if kind == "op":
        return _kernel_op(e, casetest)
    if kind == "func":
        _k, _fid, name, builtin, result_type, args = e
        if builtin and KERNEL_CASTS.get(name) == result_type and len(args) == 1:
            inner = kernel_expression(args[0], casetest)
            if inner[1] in KERNEL_TYPES and inner[1] not in KERNEL_DATETIME:
                return inner if inner[1] == result_type else ("cast", result_type, inner)
        if builtin and name == "date_part" and result_type == FLOAT8 and len(args) == 2 \
                and args[0][0] == "const" and args[0][1] == TEXT and isinstance(args[0][4], str):
            # timestamp_part of fields that are arithmetic on the value itself
            # (date_part of a date is date_part of the date as a timestamp)
            field = args[0][4].lower()
            inner = kernel_expression(args[1], casetest)
            if field in KERNEL_DATE_PARTS and _kernel_type(inner) == TIMESTAMP:
                return ("dt", FLOAT8, "part_" + field, [inner])
            raise Refused(f"date_part of {field} of type {_kernel_type(inner)}")
        if builtin and name == "timestamp" and result_type == TIMESTAMP and len(args) == 1:
            inner = kernel_expression(args[0], casetest)
            if _kernel_type(inner) == DATE:
                return ("dt", TIMESTAMP, "date2ts", [inner])
            if _kernel_type(inner) == TIMESTAMP:
                return inner
        raise Refused(f"function {name}")
    if kind == "case":
        _k, type_oid, _coll, arg, whens, default = e
        if type_oid not in KERNEL_TYPES and type_oid != BOOL:
            raise Refused(f"a CASE of type {type_oid}")
        test = kernel_expression(arg, casetest) if arg is not None else None
        pairs = [(kernel_condition(w, test), _kernel_as(kernel_expression(t, casetest), type_oid))
                 for w, t in whens]
        dflt = _kernel_as(kernel_expression(default, casetest), type_oid) if default is not None \
            else ("const", type_oid, None)
        return ("case", type_oid, pairs, dflt)
    if kind == "coalesce":
        _k, type_oid, _coll, args = e
        if type_oid not in KERNEL_TYPES:
            raise Refused(f"a COALESCE of type {type_oid}")
        return ("coalesce", type_oid, [_kernel_as(kernel_expression(a, casetest), type_oid) for a in args])
    raise Refused(f"expression node {kind}")


def kernel_condition(e: tuple, casetest: tuple | None = None) -> tuple:
    t = kernel_expression(e, casetest)
    if _kernel_type(t) != BOOL:
        raise Refused("a condition that is not boolean")
    return t


def _kernel_type(t: tuple) -> int:
    if t[0] in ("cmp", "and", "or", "not", "isnull"):
        return BOOL
    return t[1]


def _kernel_as(t: tuple, type_oid: int) -> tuple:
    """A CASE branch or COALESCE argument is of the construct's type already
    (the parser casts them); anything else is refused."""
    if _kernel_type(t) != type_oid:
        raise Refused(f"a value of type {_kernel_type(t)} where {type_oid} is expected")
    return t


def _kernel_widen(t: tuple, type_oid: int) -> tuple:
    have = _kernel_type(t)
    if have == type_oid:
        return t
    if (family(have), family(type_oid)) not in (("int", "int"), ("float", "float")):
        raise Refused(f"an operand of type {have} for type {type_oid}")
    return ("cast", type_oid, t)


def _kernel_interval(t: tuple, type_oid: int, negate: bool) -> list[tuple]:
    """The (days, microseconds) constants of an interval added to a value of
    ``type_oid`` (timestamp_mi_interval negates each part, -(-2^63) wrapping
    to itself as in PostgreSQL's C); Refused unless the sum
    is exact without the time zone and the calendar: no months, and no days
    for timestamptz."""
    if t[0] != "const" or t[1] != INTERVAL:
        raise Refused("date/time arithmetic with an interval that is not a constant")
    months, days, usecs = t[2]
    if months != 0:
        raise Refused("an interval with months")
    if days != 0 and type_oid == TIMESTAMPTZ:
        raise Refused("an interval with days added to a timestamptz (the time zone's)")
    if abs(days) > KERNEL_MAX_INTERVAL_DAYS:
        raise Refused("an interval of too many days")
    if negate:
        days = -days
        usecs = usecs if usecs == -(2**63) else -usecs
    return [("const", INT8, days), ("const", INT8, usecs)]


def _kernel_span(t: tuple) -> tuple:
    """An interval operand of a comparison as the int64 PostgreSQL compares
    (interval_cmp_value): a difference of timestamps (its microseconds, as
    justify_hours leaves the sum), or a constant; Refused otherwise."""
    if t[0] == "dt" and t[2] == "ts_mi":
        return ("dt", INT8, "ts_mi", t[3])
    if t[0] == "const" and t[1] == INTERVAL:
        months, days, usecs = t[2]
        span = usecs + (months * 30 + days) * _USECS_PER_DAY
        if not -(2**63) <= span < 2**63:
            raise Refused("an interval constant beyond 64 bits of microseconds")
        return ("const", INT8, span)
    raise Refused("an interval that is neither a constant nor a difference of timestamps")


def _kernel_datetime_op(opname: str, result_type: int, ops: list, types: list) -> tuple:
    """date/time operators a kernel computes as PostgreSQL (docs/jit.md)."""
    if len(ops) == 2 and opname in COMPARISONS and result_type == BOOL:
        a, b = types
        if a == b == INTERVAL:
            # differences of timestamps against each other or a constant, by
            # interval_cmp_value (time + (months * 30 + days) days)
            return ("cmp", opname, _kernel_span(ops[0]), _kernel_span(ops[1]))
        if a == b:
            return ("cmp", opname, ops[0], ops[1])
        # date against timestamp: date_cmp_timestamp_internal's order
        if {a, b} == {DATE, TIMESTAMP}:
            left, right = [("dt", TIMESTAMP, "datekey", [o]) if t == DATE else o for o, t in zip(ops, types)]
            return ("cmp", opname, left, right)
        raise Refused(f"a comparison of types {types} (the time zone's)")
    if len(ops) != 2:
        raise Refused(f"operator {opname} on types {types}")
    if opname == "+" and types[0] in (INT4, INTERVAL) and types[1] not in (INT4, INTERVAL):
        ops, types = ops[::-1], types[::-1]  # integer + date, interval + timestamp
    a, b = types
    if a == DATE and b == INT4 and opname in ("+", "-") and result_type == DATE:
        return ("dt", DATE, "date_pli" if opname == "+" else "date_mii", ops)
    if a == DATE and b == DATE and opname == "-" and result_type == INT4:
        return ("dt", INT4, "date_mi", ops)
    if a == b and a in (TIMESTAMP, TIMESTAMPTZ) and opname == "-" and result_type == INTERVAL:
        # timestamp_mi: an interval only compared (_kernel_span)
        return ("dt", INTERVAL, "ts_mi", ops)
    if b == INTERVAL and opname in ("+", "-"):
        if a in (TIMESTAMP, TIMESTAMPTZ) and result_type == a:
            return ("dt", a, "ts_pl", [ops[0]] + _kernel_interval(ops[1], a, opname == "-"))
        if a == DATE and result_type == TIMESTAMP:
            return ("dt", TIMESTAMP, "ts_pl", [("dt", TIMESTAMP, "date2ts", [ops[0]])]
                    + _kernel_interval(ops[1], TIMESTAMP, opname == "-"))
    raise Refused(f"operator {opname} on types {types}")


def _kernel_op(e: tuple, casetest: tuple | None) -> tuple:
    _k, _opno, opname, builtin, result_type, _coll, args = e
    if not builtin:
        raise Refused(f"operator {opname}")
    ops = [kernel_expression(a, casetest) for a in args]
    types = [_kernel_type(o) for o in ops]
    if any(t in KERNEL_DATETIME or t == INTERVAL for t in types):
        return _kernel_datetime_op(opname, result_type, ops, types)
    fams = {family(t) for t in types}
    if len(fams) != 1 or fams - {"int", "float"}:
        raise Refused(f"operator {opname} on types {types}")
    fam = fams.pop()
    if len(ops) == 1:
        if opname == "-" and result_type == types[0]:
            return ("neg", result_type, ops[0])
        if opname == "+" and result_type == types[0]:
            return ops[0]
        raise Refused(f"prefix operator {opname}")
    if opname in COMPARISONS and result_type == BOOL:
        wide = INT8 if fam == "int" else FLOAT8
        return ("cmp", opname, _kernel_widen(ops[0], wide), _kernel_widen(ops[1], wide))
    allowed = {"+", "-", "*", "/", "%"} if fam == "int" else {"+", "-", "*", "/"}
    if opname in allowed and result_type in KERNEL_TYPES and family(result_type) == fam:
        return ("arith", result_type, opname, _kernel_widen(ops[0], result_type),
                _kernel_widen(ops[1], result_type))
    raise Refused(f"operator {opname} on types {types}")


def kernel_aggregate(e: tuple) -> tuple:
    """``(name, result type, typed argument or None)`` of an aggregate a
    kernel computes exactly: count(*), count(x), sum, avg, min and max of
    integers and floats, in PostgreSQL's result types; else Refused."""
    if e[0] != "agg":
        raise Refused("an output that is not an aggregate")
    _kind, _fnoid, name, builtin, rtype, star, distinct, _coll, args = e
    if not builtin or distinct:
        raise Refused(f"aggregate {name}")
    if name == "count" and rtype == INT8:
        return ("count", INT8, None if star else kernel_expression(args[0]))
    if star or len(args) != 1:
        raise Refused(f"aggregate {name}")
    arg = kernel_expression(args[0])
    t = _kernel_type(arg)
    expected = {
        "sum": {INT2: INT8, INT4: INT8, INT8: NUMERIC, FLOAT4: FLOAT4, FLOAT8: FLOAT8},
        "avg": {INT2: NUMERIC, INT4: NUMERIC, INT8: NUMERIC, FLOAT4: FLOAT8, FLOAT8: FLOAT8},
        "min": {x: x for x in KERNEL_TYPES},
        "max": {x: x for x in KERNEL_TYPES},
    }.get(name, {})
    if expected.get(t) != rtype:
        raise Refused(f"aggregate {name} of type {t}")
    return (name, rtype, arg)
