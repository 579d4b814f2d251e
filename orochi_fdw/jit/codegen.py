"""Python source of one fused kernel (filter + aggregates) for numba.

The typed trees come from :func:`orochi_fdw.query.pushable.kernel_expression`
(which decides what is exact); this module only writes them out as the
statements of one loop over a batch's rows, in PostgreSQL's order of
evaluation, with PostgreSQL's checks:

- the WHERE clauses in the order the executor evaluates them (the planner's
  cost order, which the bridge hands over), a row stopping at the first that
  is false or NULL; ``AND`` / ``OR`` stop at their first false / true
  argument, ``CASE`` and ``COALESCE`` evaluate only what they need, so an
  error (overflow, division by zero) is raised exactly where PostgreSQL
  raises it;
- strict operators and casts evaluate every argument, then give NULL if one
  is NULL;
- integers are computed in int64 and checked against the result type's
  bounds (bigint by the sign rules of two's complement), integer division
  truncates toward zero, ``%`` takes the dividend's sign, ``x / -1`` and
  ``x % -1`` are PostgreSQL's special cases;
- real arithmetic stays in single precision (numba keeps float32 with
  float32), with float4pl's / float8mul's / float8div's overflow, underflow
  and zero-division checks; NaN compares equal to itself and above every
  number; casts to integers round with rint and check the range.

A kernel returns 0, or the code of the error it stopped at (:data:`ERRORS`).
Constants are arguments, so one kernel serves every query of one shape;
an integer divisor of ``/`` or ``%`` that is a small constant other than 0
and -1 is written into the source instead (LLVM then divides by multiplying
and shifting), so it is part of the kernel's cache key.
"""

from __future__ import annotations

import re

from orochi_fdw.query import pushable as P

#: error code -> (SQLSTATE, message), PostgreSQL's wording
ERRORS = {
    1: ("22003", "smallint out of range"),
    2: ("22003", "integer out of range"),
    3: ("22003", "bigint out of range"),
    4: ("22012", "division by zero"),
    5: ("22003", "value out of range: overflow"),
    6: ("22003", "value out of range: underflow"),
    7: ("22008", "date out of range"),
    8: ("22008", "timestamp out of range"),
    9: ("22008", "date out of range for timestamp"),
    10: ("22008", "cannot subtract infinite dates"),
    11: ("22008", "cannot subtract infinite timestamps"),
}
_RANGE_ERROR = {P.INT2: 1, P.INT4: 2, P.INT8: 3}
_BOUNDS = {P.INT2: (-(2**15), 2**15 - 1), P.INT4: (-(2**31), 2**31 - 1), P.INT8: (-(2**63), 2**63 - 1)}
_INT = (P.INT2, P.INT4, P.INT8)
_FLOAT = (P.FLOAT4, P.FLOAT8)
_DATETIME = (P.DATE, P.TIMESTAMP, P.TIMESTAMPTZ)
#: the types held as int64 in a kernel and compared as integers
_INTLIKE = _INT + _DATETIME
#: numba's type of each value type in the kernel
_NP = {P.INT2: "np.int64", P.INT4: "np.int64", P.INT8: "np.int64", P.FLOAT4: "np.float32",
       P.FLOAT8: "np.float64", P.BOOL: "np.bool_", P.DATE: "np.int64", P.TIMESTAMP: "np.int64",
       P.TIMESTAMPTZ: "np.int64", P.INTERVAL: "np.int64"}
#: the column's dtype in a batch
COLUMN_DTYPES = {P.INT2: "int16", P.INT4: "int32", P.INT8: "int64", P.FLOAT4: "float32", P.FLOAT8: "float64",
                 P.DATE: "int32", P.TIMESTAMP: "int64", P.TIMESTAMPTZ: "int64"}

PRELUDE = '''\
import numpy as np
import numba

from orochi_fdw.bridge.types import j2date
from orochi_fdw.jit.intrinsics import add_overflow, mul_overflow, sdiv, srem, sub_overflow  # intrinsics version 2

_MIN64 = np.int64(-9223372036854775808)
_MAX64 = np.int64(9223372036854775807)
# PostgreSQL's date and timestamp limits (datatype/timestamp.h), since 2000-01-01
_DATE_NOBEGIN = -2147483648
_DATE_NOEND = 2147483647
_DATE_MIN = -2451545
_DATE_END = 2145031949
_DATE_TS_END = 106751983
_TS_MIN = -211813488000000000
_TS_END = 9223371331200000000
_USECS_PER_DAY = 86400000000


# PostgreSQL's j2date (a valid timestamp's Julian day is not negative)
_j2date = numba.njit(inline="always")(j2date)


@numba.njit(inline="always")
def _date2j(year, month, day):
    # PostgreSQL's date2j, for years from 4713 BC (year + 4799 > 0)
    if month > 2:
        month += 1
        year += 4800
    else:
        month += 13
        year += 4799
    century = year // 100
    return year * 365 - 32167 + year // 4 - century + century // 4 + 7834 * month // 256 + day


# NaN equals NaN and is above every number; written with & and | (no
# branches: LLVM makes them flag operations, a compare a row costs no jump)
@numba.njit(inline="always")
def _feq(a, b):
    return (a == b) | (np.isnan(a) & np.isnan(b))


@numba.njit(inline="always")
def _flt(a, b):
    return (a < b) | (np.isnan(b) & (not np.isnan(a)))


@numba.njit(inline="always")
def _fle(a, b):
    return (a <= b) | np.isnan(b)

'''


#: integer divisors up to this magnitude are written into a kernel's source
#: (part of its cache key) rather than passed as arguments
BAKED_DIVISOR_LIMIT = 2**20


def _baked_divisor(t: tuple) -> int | None:
    """The value of a constant integer divisor to write into the source: not
    0 (division by zero is raised only where a row reaches it) nor -1 (the
    out-of-range case), both left to the checks of the general path."""
    if t[0] != "const" or t[1] not in _INT or type(t[2]) is not int:
        return None
    value = t[2]
    return value if value not in (0, -1) and abs(value) <= BAKED_DIVISOR_LIMIT else None


class Kernel:
    """The source of a kernel and how to call it."""

    def __init__(self, source: str, columns: list[str], constants: list[tuple], layout: list[dict],
                 params: list | None = None):
        self.source = source
        #: (kind, id, type, typmod) of each parameter, in argument order (value then is-NULL of each)
        self.params = params or []
        #: the columns, in argument order (values then validity of each)
        self.columns = columns
        #: (type, value) of each constant argument
        self.constants = constants
        #: per aggregate: {"name", "type", "arg_type", "i": first int slot, "f": first float slot}
        self.layout = layout
        self.n_int = sum(a.get("ni", 0) for a in layout)
        self.n_float = sum(a.get("nf", 0) for a in layout)


class _Gen:
    def __init__(self, column_types: dict[str, int], fast: bool = False):
        #: writing the fast kernel: no column has a NULL, every error is "redo"
        self.fast = fast
        #: the fast kernel has float sums or averages (a loop of additions in order)
        self.float_sums = False
        self.lines: list[str] = []
        self.depth = 2
        self.n = 0
        self.column_types = column_types
        self.columns: list[str] = []
        self.constants: list[tuple] = []
        #: the parameters, (kind, id, type, typmod) each, in argument order
        self.params: list[list] = []

    def put(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def var(self, prefix: str = "t") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # every emit returns (value variable, null variable)
    def emit(self, t: tuple) -> tuple[str, str]:
        return getattr(self, "_" + t[0])(*t[1:])

    def _zero(self, type_oid: int) -> str:
        return "False" if type_oid == P.BOOL else f"{_NP[type_oid]}(0)"

    def _col(self, type_oid, attname):
        if attname not in self.columns:
            self.columns.append(attname)
        j = self.columns.index(attname)
        v, n = self.var("v"), self.var("n")
        conv = "np.int64" if type_oid in _INTLIKE else ""
        self.put(f"{v} = {conv}(c{j}[i])")
        self.put(f"{n} = False" if self.fast else f"{n} = m{j}[i] == 0")
        return v, n

    def _const(self, type_oid, value):
        if type_oid == P.INTERVAL:
            # an interval is an operand of date/time arithmetic or compared, never a value
            raise P.Refused("an interval value")
        v, n = self.var("v"), self.var("n")
        if value is None:
            self.put(f"{v} = {self._zero(type_oid)}")
            self.put(f"{n} = True")
        else:
            self.constants.append((type_oid, value))
            self.put(f"{v} = k{len(self.constants) - 1}")
            self.put(f"{n} = False")
        return v, n

    def _param(self, type_oid, key):
        key = list(key)
        if key not in self.params:
            self.params.append(key)
        j = self.params.index(key)
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = p{j}")
        self.put(f"{n} = q{j}")
        return v, n

    def _dt(self, type_oid, fn, args):
        """date and time functions, as PostgreSQL 15's (utils/adt/date.c,
        timestamp.c; a sum past int64 is out of range, as in 15.20)."""
        v, n, a = self._strict(type_oid, args)
        if fn in ("date_pli", "date_mii"):
            r = self.var("r")
            self.put(f"if {a[0]} == _DATE_NOBEGIN or {a[0]} == _DATE_NOEND:")
            self.put(f"    {v} = {a[0]}")
            self.put("else:")
            self.put(f"    {r} = {a[0]} {'+' if fn == 'date_pli' else '-'} {a[1]}")
            self.put(f"    if {r} < _DATE_MIN or {r} >= _DATE_END:")
            self.put("        return 7")
            self.put(f"    {v} = {r}")
        elif fn == "date_mi":
            self.put(f"if {a[0]} == _DATE_NOBEGIN or {a[0]} == _DATE_NOEND or "
                     f"{a[1]} == _DATE_NOBEGIN or {a[1]} == _DATE_NOEND:")
            self.put("    return 10")
            self.put(f"{v} = {a[0]} - {a[1]}")
        elif fn == "ts_mi":
            # timestamp_mi's microseconds (wrapping, as PostgreSQL 15's)
            o = self.var("o")
            self.put(f"if {a[0]} == _MIN64 or {a[0]} == _MAX64 or {a[1]} == _MIN64 or {a[1]} == _MAX64:")
            self.put("    return 11")
            self.put(f"{v}, {o} = sub_overflow({a[0]}, {a[1]})")
        elif fn in ("date2ts", "datekey"):
            # date2timestamp; as a key of date_cmp_timestamp_internal, a date
            # past the timestamps' range is above every finite timestamp
            self.put(f"if {a[0]} == _DATE_NOBEGIN:")
            self.put(f"    {v} = _MIN64")
            self.put(f"elif {a[0]} == _DATE_NOEND:")
            self.put(f"    {v} = _MAX64")
            self.put(f"elif {a[0]} >= _DATE_TS_END:")
            self.put("    return 9" if fn == "date2ts" else f"    {v} = _MAX64 - 1")
            self.put("else:")
            self.put(f"    {v} = {a[0]} * _USECS_PER_DAY")
        elif fn == "ts_pl":
            # timestamp_pl_interval without months: the days by the Julian
            # day (exact: the sum must be a valid timestamp), then the time
            # (the sum must be a valid timestamp too, not one wrapped round)
            ts, days, usecs = a
            t, o = self.var("t"), self.var("o")
            self.put(f"if {ts} == _MIN64 or {ts} == _MAX64:")
            self.put(f"    {v} = {ts}")
            self.put("else:")
            self.put(f"    {t} = {ts}")
            self.put(f"    if {days} != 0:")
            self.put(f"        {t}, {o} = add_overflow({ts}, {days} * _USECS_PER_DAY)")
            self.put(f"        if {o} or {t} < _TS_MIN or {t} >= _TS_END:")
            self.put("            return 8")
            self.put(f"    {t}, {o} = add_overflow({t}, {usecs})")
            self.put(f"    if {o} or {t} < _TS_MIN or {t} >= _TS_END:")
            self.put("        return 8")
            self.put(f"    {v} = {t}")
        elif fn.startswith("part_"):
            # timestamp_part: infinity is ±Infinity for the year, NULL for the others
            field = fn[len("part_"):]
            ts = a[0]
            date, t, y, mo, d, r = (self.var(x) for x in ("date", "t", "y", "mo", "d", "r"))
            self.put(f"if {ts} == _MIN64 or {ts} == _MAX64:")
            if field == "year":
                self.put(f"    {v} = -np.inf if {ts} == _MIN64 else np.inf")
            else:
                self.put(f"    {n} = True")
            self.put("else:")
            self.depth += 1
            self.put(f"{date} = {ts} // _USECS_PER_DAY")
            self.put(f"{t} = {ts} - {date} * _USECS_PER_DAY")
            self.put(f"{y}, {mo}, {d} = _j2date({date} + 2451545)")
            value = {
                "year": f"{y} if {y} > 0 else {y} - 1",
                "quarter": f"({mo} - 1) // 3 + 1",
                "month": mo,
                "day": d,
                "hour": f"{t} // 3600000000",
                "minute": f"({t} // 60000000) % 60",
                "dow": f"({date} + 2451545 + 1) % 7",
                "doy": f"{date} + 2451545 - _date2j({y}, 1, 1) + 1",
            }[field]
            self.put(f"{r} = {value}")
            self.put(f"{v} = np.float64({r})")
            self.depth -= 1
        else:
            raise P.Refused(f"date/time function {fn}")
        self.depth -= 1
        return v, n

    def _strict(self, type_oid: int, args: list[tuple]) -> tuple[str, str, list[str]]:
        """Evaluate every argument; open ``if not null:`` (closed by the caller)."""
        vals = [self.emit(a) for a in args]
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = {self._zero(type_oid)}")
        self.put(f"{n} = {' or '.join(x[1] for x in vals)}")
        self.put(f"if not {n}:")
        self.depth += 1
        return v, n, [x[0] for x in vals]

    def _range_check(self, type_oid: int, v: str) -> None:
        lo, hi = _BOUNDS[type_oid]
        self._check(f"{v} < {lo} or {v} > {hi}", f"({v} < {lo}) | ({v} > {hi})", _RANGE_ERROR[type_oid])

    def _check(self, cond: str, fast_cond: str, code: int) -> None:
        """Return ``code`` if ``cond``; in the fast kernel, note ``fast_cond``
        (``cond`` or more) in ``bad`` with no jump, the batch redone if it is
        set at the end: for errors after which computing on is harmless (a
        float overflow, an integer out of its type's range or wrapped round),
        unlike a division by zero, which is checked (and redone) before it.
        ``fast_cond`` may also be ``finite X`` (X is infinite or NaN) or
        ``zero X if C`` (X is zero where C holds), which a loop with float
        sums notes in float variables instead (``chk``, ``uf``)."""
        if self.fast and fast_cond.startswith("zero ") and self.float_sums:
            # an underflow (a zero from non-zero operands): the least such
            # result, zero at the end if there was one (no move of a compare
            # to an integer register)
            value, nonzero = fast_cond[len("zero "):].split(" if ", 1)
            self.put(f"uf = min(uf, abs({value}) if {nonzero} else 1.0)")
        elif self.fast and fast_cond.startswith("zero "):
            value, nonzero = fast_cond[len("zero "):].split(" if ", 1)
            self.put(f"bad = bad | (({value} == 0.0) & {nonzero})")
        elif self.fast and fast_cond.startswith("finite "):
            value = fast_cond[len("finite "):]
            if self.float_sums:
                # x * 0.0 is 0 but for an infinite or NaN x: one more float
                # sum beside the aggregates' (whose order of additions keeps
                # the loop from being vectorized anyway)
                self.put(f"chk = chk + {value} * 0.0")
            else:
                # or'ed into a flag: a loop LLVM can vectorize
                self.put(f"bad = bad | (abs({value}) == np.inf)")
        elif self.fast:
            self.put(f"bad = bad | ({fast_cond})")
        else:
            self.put(f"if {cond}:")
            self.put(f"    return {code}")

    def _float_overflow(self, r: str, *inputs: str) -> None:
        cond = " and ".join([f"np.isinf({r})"] + [f"not np.isinf({x})" for x in inputs])
        self._check(cond, f"finite {r}", 5)

    def _arith(self, type_oid, op, left, right):
        if type_oid in _INT and op in ("/", "%") and _baked_divisor(right) is not None:
            # by a constant: in the source (LLVM divides by multiplying), no check needed
            v, n, (a,) = self._strict(type_oid, [left])
            self.put(f"{v} = {'sdiv' if op == '/' else 'srem'}({a}, np.int64({_baked_divisor(right)}))")
            self.depth -= 1
            return v, n
        v, n, (a, b) = self._strict(type_oid, [left, right])
        if type_oid in _INT:
            wide = type_oid == P.INT8
            if op in ("+", "-", "*"):
                if not wide:
                    # int2 / int4 operands: exact in int64
                    self.put(f"{v} = {a} {op} {b}")
                    self._range_check(type_oid, v)
                else:
                    fn = {"+": "add_overflow", "-": "sub_overflow", "*": "mul_overflow"}[op]
                    o = self.var("o")
                    self.put(f"{v}, {o} = {fn}({a}, {b})")
                    self._check(o, o, 3)
            elif op == "/":
                self.put(f"if {b} == 0:")
                self.put("    return 4")
                self.put(f"if {b} == -1:")
                self.put(f"    if {a} == {_BOUNDS[type_oid][0]}:")
                self.put(f"        return {_RANGE_ERROR[type_oid]}")
                self.put(f"    {v} = -{a}")
                self.put("else:")
                self.put(f"    {v} = sdiv({a}, {b})")
            else:  # %
                self.put(f"if {b} == 0:")
                self.put("    return 4")
                self.put(f"if {b} != -1:")
                self.put(f"    {v} = srem({a}, {b})")
        else:
            if op == "/":
                self._check(f"{b} == 0.0 and not np.isnan({a})", f"{b} == 0.0", 4)
            self.put(f"{v} = {a} {op} {b}")
            if op in ("+", "-", "*"):
                self._float_overflow(v, a, b)
            else:
                self._float_overflow(v, a)
            if op == "*":
                self._check(f"{v} == 0.0 and {a} != 0.0 and {b} != 0.0",
                            f"zero {v} if ({a} != 0.0) & ({b} != 0.0)", 6)
            elif op == "/":
                self._check(f"{v} == 0.0 and {a} != 0.0 and not np.isinf({b})",
                            f"zero {v} if ({a} != 0.0)", 6)
        self.depth -= 1
        return v, n

    def _neg(self, type_oid, arg):
        v, n, (a,) = self._strict(type_oid, [arg])
        self.put(f"{v} = -{a}")
        if type_oid == P.INT8:
            self._check(f"{a} == _MIN64", f"{a} == _MIN64", 3)
        elif type_oid in _INT:
            self._range_check(type_oid, v)
        self.depth -= 1
        return v, n

    def _cast(self, type_oid, arg):
        source = P._kernel_type(arg)
        v, n, (a,) = self._strict(type_oid, [arg])
        if type_oid in _INT and source in _INT:
            self.put(f"{v} = {a}")
            if _BOUNDS[type_oid][0] > _BOUNDS[source][0]:
                self._range_check(type_oid, v)
        elif type_oid in _FLOAT and source in _INT:
            self.put(f"{v} = {_NP[type_oid]}({a})")
        elif type_oid in _INT and source in _FLOAT:
            lo = float(_BOUNDS[type_oid][0])
            r = self.var("r")
            self.put(f"{r} = np.rint(np.float64({a}))")
            self.put(f"if np.isnan({r}) or not ({r} >= {lo!r} and {r} < {-lo!r}):")
            self.put(f"    return {_RANGE_ERROR[type_oid]}")
            self.put(f"{v} = np.int64({r})")
        elif type_oid == P.FLOAT8:
            self.put(f"{v} = np.float64({a})")
        else:  # float8 -> float4
            self.put(f"{v} = np.float32({a})")
            self._check(f"np.isinf({v}) and not np.isinf({a})", f"finite {v}", 5)
            self._check(f"{v} == 0.0 and {a} != 0.0", f"zero {v} if ({a} != 0.0)", 6)
        self.depth -= 1
        return v, n

    def _cmp(self, op, left, right):
        v, n, (a, b) = self._strict(P.BOOL, [left, right])
        if P._kernel_type(left) in _INTLIKE:
            self.put(f"{v} = {a} {'!=' if op == '<>' else '==' if op == '=' else op} {b}")
        else:
            expr = {"=": f"_feq({a}, {b})", "<>": f"not _feq({a}, {b})", "<": f"_flt({a}, {b})",
                    "<=": f"_fle({a}, {b})", ">": f"_flt({b}, {a})", ">=": f"_fle({b}, {a})"}[op]
            self.put(f"{v} = {expr}")
        self.depth -= 1
        return v, n

    def _logic(self, stop: bool, args: list[tuple]) -> tuple[str, str]:
        """AND (stop at False) / OR (stop at True), NULLs as SQL's."""
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = {not stop}")
        self.put(f"{n} = False")
        opened = 0
        for arg in args:
            av, an = self.emit(arg)
            self.put(f"if not {an} and {'' if stop else 'not '}{av}:")
            self.put(f"    {v} = {stop}")
            self.put(f"    {n} = False")
            self.put("else:")
            self.depth += 1
            opened += 1
            self.put(f"if {an}:")
            self.put(f"    {n} = True")
        self.depth -= opened
        return v, n

    def _and(self, args):
        return self._logic(False, args)

    def _or(self, args):
        return self._logic(True, args)

    def _not(self, arg):
        a, an = self.emit(arg)
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = not {a}")
        self.put(f"{n} = {an}")
        return v, n

    def _isnull(self, is_null, arg):
        _a, an = self.emit(arg)
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = {an}" if is_null else f"{v} = not {an}")
        self.put(f"{n} = False")
        return v, n

    def _case(self, type_oid, pairs, default):
        v, n = self.var("v"), self.var("n")
        if self.fast:
            # every condition and value on every row, the first WHEN that
            # holds selected: no jump on the row's data; unless one of them
            # has a check that stops the kernel (a division: on the rows
            # PostgreSQL does not take there, the batch would be redone)
            mark = (len(self.lines), len(self.columns), len(self.constants), len(self.params))
            arms = [(self.emit(cond), self.emit(value)) for cond, value in pairs]
            rv, rn = self.emit(default)
            if not any(_ERROR_RETURN.search(line) for line in self.lines[mark[0]:]):
                self.put(f"{v} = {rv}")
                self.put(f"{n} = {rn}")
                for (cv, cn), (rv, rn) in reversed(arms):
                    t = self.var("w")
                    self.put(f"{t} = (not {cn}) & {cv}")
                    self.put(f"{v} = {rv} if {t} else {v}")
                    self.put(f"{n} = {rn} if {t} else {n}")
                return v, n
            del self.lines[mark[0]:], self.columns[mark[1]:], self.constants[mark[2]:], self.params[mark[3]:]
        self.put(f"{v} = {self._zero(type_oid)}")
        self.put(f"{n} = True")
        opened = 0
        for cond, value in pairs:
            cv, cn = self.emit(cond)
            self.put(f"if not {cn} and {cv}:")
            self.depth += 1
            rv, rn = self.emit(value)
            self.put(f"{v} = {rv}")
            self.put(f"{n} = {rn}")
            self.depth -= 1
            self.put("else:")
            self.depth += 1
            opened += 1
        rv, rn = self.emit(default)
        self.put(f"{v} = {rv}")
        self.put(f"{n} = {rn}")
        self.depth -= opened
        return v, n

    def _coalesce(self, type_oid, args):
        v, n = self.var("v"), self.var("n")
        self.put(f"{v} = {self._zero(type_oid)}")
        self.put(f"{n} = True")
        opened = 0
        for arg in args:
            if opened:
                self.put(f"if {n}:")
                self.depth += 1
            opened += 1
            av, an = self.emit(arg)
            self.put(f"{v} = {av}")
            self.put(f"{n} = {an}")
        self.depth -= opened - 1 if opened else 0
        return v, n


def generate(clauses: list[tuple], aggregates: list[tuple], column_types: dict[str, int]) -> Kernel:
    """The kernel of typed WHERE clauses (in evaluation order) and aggregates
    (``kernel_aggregate``'s triples): its source holds two functions,
    ``kernel`` (every batch: PostgreSQL's order of evaluation and its errors)
    and ``kernel_fast`` (batches whose columns have no NULL, see
    :func:`_fast_body`)."""
    g = _Gen(column_types)
    for clause in clauses:
        v, n = g.emit(clause)
        g.put(f"if {n} or not {v}:")
        g.put("    continue")
    layout = []
    ni = nf = 0
    for name, rtype, arg in aggregates:
        arg_type = None if arg is None else P._kernel_type(arg)
        slot = {"name": name, "type": rtype, "arg_type": arg_type, "i": ni, "f": nf}
        if arg is None:
            g.put(f"ai[{ni}] += 1")
            slot["ni"] = 1
        else:
            x, xn = g.emit(arg)
            g.put(f"if not {xn}:")
            g.depth += 1
            if name == "count":
                g.put(f"ai[{ni}] += 1")
                slot["ni"] = 1
            elif name in ("sum", "avg") and arg_type in _INT:
                # the count, and the sum as high and low 32-bit halves: exact for 2^31 rows
                g.put(f"ai[{ni}] += 1")
                g.put(f"ai[{ni + 1}] += {x} >> 32")
                g.put(f"ai[{ni + 2}] += {x} & 0xFFFFFFFF")
                slot["ni"] = 3
            elif name == "sum":
                # float4pl / float8pl from the first value, in the argument's precision
                t = _NP[arg_type]
                s_, r_ = g.var("s"), g.var("r")
                g.put(f"if ai[{ni}] == 0:")
                g.put(f"    af[{nf}] = {x}")
                g.put("else:")
                g.put(f"    {s_} = {t}(af[{nf}])")
                g.put(f"    {r_} = {s_} + {x}")
                g.put(f"    if np.isinf({r_}) and not np.isinf({s_}) and not np.isinf({x}):")
                g.put("        return 5")
                g.put(f"    af[{nf}] = {r_}")
                g.put(f"ai[{ni}] = 1")
                slot["ni"], slot["nf"] = 1, 1
            elif name == "avg":
                # float8_accum (Youngs-Cramer), with its overflow check
                g.put(f"x = np.float64({x})")
                g.put(f"N0 = af[{nf}]")
                g.put(f"Sx0 = af[{nf + 1}]")
                g.put("N = N0 + 1.0")
                g.put("Sx = Sx0 + x")
                g.put(f"Sxx = af[{nf + 2}]")
                g.put("if N0 > 0.0:")
                g.put("    tmp = x * N - Sx")
                g.put("    Sxx += tmp * tmp / (N * N0)")
                g.put("    if np.isinf(Sx) or np.isinf(Sxx):")
                g.put("        if not np.isinf(Sx0) and not np.isinf(x):")
                g.put("            return 5")
                g.put("        Sxx = np.nan")
                g.put("elif np.isnan(x) or np.isinf(x):")
                g.put("    Sxx = np.nan")
                g.put(f"af[{nf}] = N")
                g.put(f"af[{nf + 1}] = Sx")
                g.put(f"af[{nf + 2}] = Sxx")
                slot["nf"] = 3
            else:  # min / max: the state kept unless the new value is not "better"
                if arg_type in _INTLIKE:
                    better = f"{x} < ai[{ni + 1}]" if name == "min" else f"{x} > ai[{ni + 1}]"
                    g.put(f"if ai[{ni}] == 0 or {better}:")
                    g.put(f"    ai[{ni + 1}] = {x}")
                    slot["ni"] = 2
                else:
                    # float8smaller: state if state < new else new (NaN-aware)
                    t = _NP[arg_type]
                    keep = f"_flt({t}(af[{nf}]), {x})" if name == "min" else f"_flt({x}, {t}(af[{nf}]))"
                    g.put(f"if ai[{ni}] == 0 or not {keep}:")
                    g.put(f"    af[{nf}] = {x}")
                    slot["ni"], slot["nf"] = 1, 1
                g.put(f"ai[{ni}] = 1")
            g.depth -= 1
        ni += slot.get("ni", 0)
        nf += slot.get("nf", 0)
        layout.append(slot)
    fast, prologue, epilogue = _fast_body(clauses, aggregates, column_types, layout)
    if (fast.columns, fast.constants, fast.params) != (g.columns, g.constants, g.params):
        raise AssertionError("the two kernels of one query take different arguments")
    tail = [f"k{j}" for j in range(len(g.constants))] + [f"p{j}, q{j}" for j in range(len(g.params))] + ["ai", "af"]
    args = ["n"] + [f"c{j}, m{j}" for j in range(len(g.columns))] + tail
    fast_args = ["n"] + [f"c{j}" for j in range(len(g.columns))] + tail
    # the aggregate states live in local variables during the loop (registers:
    # a count's increment needs no store and no branch) and go back to ai / af
    # at the end; a kernel that stops at an error returns its code, and the
    # caller raises without reading them
    load = "".join(f"    ai_{j} = ai[{j}]\n" for j in range(ni)) + "".join(f"    af_{j} = af[{j}]\n" for j in range(nf))
    store = "".join(f"    ai[{j}] = ai_{j}\n" for j in range(ni)) + "".join(f"    af[{j}] = af_{j}\n" for j in range(nf))
    decorator = "\n@numba.njit(cache=CACHE, error_model=\"numpy\", nogil=True)\n"
    source = (PRELUDE + decorator + f"def kernel({', '.join(args)}):\n{load}    for i in range(n):\n"
              f"{_locals(g.lines)}\n{store}    return 0\n\n"
              + decorator + f"def kernel_fast({', '.join(fast_args)}):\n{load}{prologue}    for i in range(n):\n"
              f"{_locals(fast.lines)}\n{epilogue}{store}    return 0\n")
    return Kernel(source, g.columns, g.constants, layout, g.params)


#: what the fast kernel returns where the batch must be computed again by
#: ``kernel`` (from the states it started with: it stored none)
REDO = -1


def _fast_body(clauses: list[tuple], aggregates: list[tuple], column_types: dict[str, int],
               layout: list[dict]) -> tuple[_Gen, str, str]:
    """The loop of ``kernel_fast``, with the lines before and after it.

    It is called for a batch whose columns have no NULL (their NULL flags
    are the constant False, which LLVM folds away), and it has no jump a
    row's data decides beyond those inside expressions: every WHERE clause
    is evaluated on every row and their conjunction is the row's ``keep``,
    the aggregates' arguments are computed on every row and their states
    updated by selecting (``s + (x if keep else -0.0)``: -0.0 is the exact
    identity of float addition).  Whatever could be an error (a check that
    would raise, whether or not PostgreSQL reaches that row) returns
    :data:`REDO` instead, as do float sums and averages that are not finite
    at the end of the batch (an overflow, or an infinite or NaN value,
    reached them): the caller then runs ``kernel`` on the batch, which
    raises PostgreSQL's error for the row PostgreSQL reaches first, or
    computes the batch exactly.  The results of a batch that returns 0 are
    ``kernel``'s, bit for bit: the same operations on the same values in the
    same order."""
    g = _Gen(column_types, fast=True)
    g.float_sums = any(name in ("sum", "avg") and slot["arg_type"] in _FLOAT
                       for (name, _rtype, _arg), slot in zip(aggregates, layout))
    g.put("keep = True")
    for clause in clauses:
        v, n = g.emit(clause)
        g.put(f"keep = keep & (not {n}) & {v}")
    # bad: a check that would raise; chk: an infinite or NaN value (x * 0.0
    # summed); uf: the least underflowed result (see _Gen._check)
    prologue = ["    bad = False\n    chk = 0.0\n    uf = 1.0\n"]
    epilogue = [f"    if bad or chk != 0.0 or uf == 0.0:\n        return {REDO}\n"]
    for (name, _rtype, arg), slot in zip(aggregates, layout):
        ni, nf, arg_type = slot["i"], slot["f"], slot["arg_type"]
        if arg is None:
            g.put(f"ai[{ni}] += np.int64(keep)")
            continue
        x, xn = g.emit(arg)
        ok = g.var("ok")
        g.put(f"{ok} = keep & (not {xn})")
        if name == "count":
            g.put(f"ai[{ni}] += np.int64({ok})")
        elif name in ("sum", "avg") and arg_type in _INT:
            g.put(f"ai[{ni}] += np.int64({ok})")
            g.put(f"ai[{ni + 1}] += ({x} >> 32) if {ok} else 0")
            g.put(f"ai[{ni + 2}] += ({x} & 0xFFFFFFFF) if {ok} else 0")
        elif name == "sum":
            t = _NP[arg_type]
            # the first value is -0.0 + x == x: PostgreSQL's state from its first value
            prologue.append(f"    if ai_{ni} == 0:\n        af_{nf} = -0.0\n")
            g.put(f"af[{nf}] = {t}(af[{nf}]) + ({x} if {ok} else {t}(-0.0))")
            g.put(f"ai[{ni}] |= np.int64({ok})")
            epilogue.append(f"    if ai_{ni} != 0 and not np.isfinite(af_{nf}):\n        return {REDO}\n")
        elif name == "avg":
            # float8_accum on finite values (any other reaches Sx or Sxx)
            xf, n0, d = g.var("x"), g.var("N"), g.var("d")
            g.put(f"{xf} = np.float64({x})")
            g.put(f"{n0} = af[{nf}]")
            g.put(f"af[{nf}] = {n0} + (1.0 if {ok} else 0.0)")
            g.put(f"af[{nf + 1}] = af[{nf + 1}] + ({xf} if {ok} else -0.0)")
            g.put(f"{d} = {xf} * af[{nf}] - af[{nf + 1}]")
            g.put(f"{d} = {d} * {d} / (af[{nf}] * {n0})")
            g.put(f"af[{nf + 2}] = af[{nf + 2}] + ({d} if {ok} & ({n0} > 0.0) else 0.0)")
            epilogue.append(f"    if not (np.isfinite(af_{nf + 1}) and np.isfinite(af_{nf + 2})):\n"
                            f"        return {REDO}\n")
        else:
            if arg_type in _INTLIKE:
                better = f"{x} < ai[{ni + 1}]" if name == "min" else f"{x} > ai[{ni + 1}]"
                g.put(f"ai[{ni + 1}] = {x} if {ok} & ((ai[{ni}] == 0) | ({better})) else ai[{ni + 1}]")
            else:
                t = _NP[arg_type]
                keep = f"_flt({t}(af[{nf}]), {x})" if name == "min" else f"_flt({x}, {t}(af[{nf}]))"
                g.put(f"af[{nf}] = {x} if {ok} & ((ai[{ni}] == 0) | (not {keep})) else af[{nf}]")
            g.put(f"ai[{ni}] |= np.int64({ok})")
    g.lines = [_ERROR_RETURN.sub(f"return {REDO}", line) for line in g.lines]
    return g, "".join(prologue), "".join(epilogue)


def _locals(lines: list[str]) -> str:
    """The loop's lines with the aggregate states as local variables."""
    return "\n".join(_STATE.sub(lambda m: f"{m.group(1)}_{m.group(2)}", line) for line in lines) \
        if lines else "        pass"


#: an error's return in a kernel's lines
_ERROR_RETURN = re.compile(r"return \d+$")
#: an aggregate state slot in the generated lines (``ai[3]``, ``af[0]``)
_STATE = re.compile(r"\b(ai|af)\[(\d+)\]")
