"""pushable.kernel_expression / kernel_aggregate (what the expression JIT
compiles, and the typed tree it gets) and the generated kernels run in
Python itself (no server: the differential tests in test_jit_expressions
check the compiled kernels against PostgreSQL)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orochi_fdw.jit import codegen
from orochi_fdw.query import pushable as P
from orochi_fdw.query.pushable import Refused


def var(name, type_oid):
    return ("var", 1, name, type_oid, -1, None)


def const(type_oid, value):
    return ("const", type_oid, -1, None, value)


def op(name, result, *args):
    return ("op", 1, name, True, result, None, list(args))


def agg(name, rtype, *args, star=False, distinct=False):
    return ("agg", 1, name, True, rtype, star, distinct, None, list(args))


def test_operands_widened_to_the_operators_type():
    e = op(">", P.BOOL, op("+", P.INT4, var("a", P.INT2), var("b", P.INT4)), var("c", P.INT8))
    assert P.kernel_condition(e) == (
        "cmp", ">", ("cast", P.INT8, ("arith", P.INT4, "+", ("cast", P.INT4, ("col", P.INT2, "a")),
                                      ("col", P.INT4, "b"))),
        ("col", P.INT8, "c"))


def test_casts_case_coalesce():
    e = ("case", P.FLOAT8, None, None,
         [(op("<", P.BOOL, var("a", P.INT4), const(P.INT4, 0)),
           ("func", 1, "float8", True, P.FLOAT8, [var("a", P.INT4)]))],
         ("coalesce", P.FLOAT8, None, [var("f", P.FLOAT8), const(P.FLOAT8, 1.5)]))
    t = P.kernel_expression(e)
    assert t[0] == "case" and t[2][0][1] == ("cast", P.FLOAT8, ("col", P.INT4, "a"))
    # CASE x WHEN ...: the test value in each WHEN
    simple = ("case", P.INT4, None, var("a", P.INT4), [(op("=", P.BOOL, ("casetest", P.INT4, -1, None),
                                                                const(P.INT4, 1)),
                                                  const(P.INT4, 10))], None)
    assert P.kernel_expression(simple)[2][0][0] == ("cmp", "=", ("cast", P.INT8, ("col", P.INT4, "a")),
                                                    ("cast", P.INT8, ("const", P.INT4, 1)))


@pytest.mark.parametrize("expr", [
    var("n", P.NUMERIC),
    var("t", P.TEXT),
    op("%", P.FLOAT8, var("f", P.FLOAT8), var("g", P.FLOAT8)),  # no float modulo
    ("func", 1, "abs", True, P.INT4, [var("a", P.INT4)]),
    ("func", 1, "numeric", True, P.NUMERIC, [var("a", P.INT4)]),
    op("+", P.INT4, var("a", P.INT4), var("b", P.INT4))[:3] + (False,) + op("+", P.INT4, var("a", P.INT4),
                                                                             var("b", P.INT4))[4:],
    ("unsupported", 123),
    ("casetest", P.INT4, -1, None),
])
def test_refused(expr):
    with pytest.raises(Refused):
        P.kernel_expression(expr)


def test_aggregates():
    assert P.kernel_aggregate(agg("count", P.INT8, star=True)) == ("count", P.INT8, None)
    assert P.kernel_aggregate(agg("sum", P.NUMERIC, var("x", P.INT8)))[0] == "sum"
    assert P.kernel_aggregate(agg("avg", P.FLOAT8, var("x", P.FLOAT4)))[1] == P.FLOAT8
    for bad in (agg("sum", P.INT8, var("x", P.INT4), distinct=True), agg("stddev", P.NUMERIC, var("x", P.INT4)),
                agg("sum", P.NUMERIC, var("n", P.NUMERIC))):
        with pytest.raises(Refused):
            P.kernel_aggregate(bad)


def _run(clauses, aggs, columns: dict, consts=()):
    """Run a generated kernel as plain Python (numba's njit left out)."""
    k = codegen.generate([P.kernel_condition(c) for c in clauses], [P.kernel_aggregate(a) for a in aggs], {})
    source = k.source.replace('@numba.njit(cache=CACHE, error_model="numpy", nogil=True)\n', "")
    ns: dict = {}
    exec(source.replace("@numba.njit(inline=\"always\")\n", ""), ns)  # noqa: S102
    # LLVM's sdiv / srem (numba intrinsics), as plain Python
    ns["sdiv"] = lambda x, y: abs(int(x)) // abs(int(y)) * (1 if (x < 0) == (y < 0) else -1)
    ns["srem"] = lambda x, y: int(x) - ns["sdiv"](x, y) * int(y)
    args = []
    n = None
    for name in k.columns:
        values, valid = columns[name]
        n = len(values)
        args += [values, valid]
    ai, af = np.zeros(max(k.n_int, 1), np.int64), np.zeros(max(k.n_float, 1))
    from orochi_fdw import jit

    code = ns["kernel"](n, *args, *(jit._const_arg(t, v) for t, v in k.constants), ai, af)
    return code, ai, af


def test_python_semantics_of_integer_division_and_modulo():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([2, 2, -2, -2], np.int32)
    ones = np.ones(4, np.uint8)
    # sum(a / b) and sum(a % b): truncation toward zero, the dividend's sign
    code, ai, _ = _run([], [agg("sum", P.INT8, op("/", P.INT4, var("a", P.INT4), var("b", P.INT4))),
                            agg("sum", P.INT8, op("%", P.INT4, var("a", P.INT4), var("b", P.INT4)))],
                       {"a": (a, ones), "b": (b, ones)})
    assert code == 0
    assert (ai[1] << 32) + ai[2] == 3 - 3 - 3 + 3
    assert (ai[4] << 32) + ai[5] == 1 - 1 + 1 - 1


def test_constant_divisors_in_the_source():
    a = np.array([7, -7, 0, -32768], np.int16)
    ones = np.ones(4, np.uint8)
    for d in (1, 2, -2, 7, -7, 1024, 2**20):
        k = codegen.generate([], [P.kernel_aggregate(agg("sum", P.INT8, op(o, P.INT4, var("a", P.INT2), const(P.INT4, d))))
                                  for o in ("/", "%")], {})
        # written into the source (so part of the cache key), not an argument
        assert k.constants == [] and re.search(rf"sdiv\(v\d+, np.int64\({d}\)\)", k.source), d
        code, ai, _ = _run([], [agg("sum", P.INT8, op(o, P.INT4, var("a", P.INT2), const(P.INT4, d)))
                                for o in ("/", "%")], {"a": (a, ones)})
        assert code == 0
        assert (ai[1] << 32) + ai[2] == sum(int(x / d) for x in a.tolist())
        assert (ai[4] << 32) + ai[5] == sum(x - int(x / d) * d for x in a.tolist())
    # 0, -1 and large divisors: arguments, checked on each row
    for d in (0, -1, 2**20 + 1, -(2**31)):
        k = codegen.generate([], [P.kernel_aggregate(agg("sum", P.INT8, op("%", P.INT4, var("a", P.INT4),
                                                                            const(P.INT4, d))))], {})
        assert k.constants == [(P.INT4, d)], d


def test_errors_and_evaluation_order():
    a = np.array([1, 0], np.int32)
    ones = np.ones(2, np.uint8)
    div = op("/", P.INT4, const(P.INT4, 10), var("a", P.INT4))
    # a <> 0 first: no division by zero
    code, _ai, _af = _run([op("<>", P.BOOL, var("a", P.INT4), const(P.INT4, 0)),
                           op(">", P.BOOL, div, const(P.INT4, 0))], [agg("count", P.INT8, star=True)],
                          {"a": (a, ones)})
    assert code == 0
    code, _ai, _af = _run([op(">", P.BOOL, div, const(P.INT4, 0))], [agg("count", P.INT8, star=True)],
                          {"a": (a, ones)})
    assert codegen.ERRORS[code] == ("22012", "division by zero")
    big = np.array([2**31 - 1], np.int32)
    code, _ai, _af = _run([], [agg("sum", P.INT8, op("+", P.INT4, var("a", P.INT4), const(P.INT4, 1)))],
                          {"a": (big, np.ones(1, np.uint8))})
    assert codegen.ERRORS[code] == ("22003", "integer out of range")


def interval(months, days, usecs):
    from orochi_fdw.bridge.types import Interval

    return const(P.INTERVAL, Interval(months, days, usecs))


def test_date_and_time_trees():
    import datetime

    from orochi_fdw.bridge.types import SpecialValue

    # constants as PostgreSQL's integers; infinity as its raw value
    assert P.kernel_expression(const(P.DATE, datetime.date(2000, 1, 2))) == ("const", P.DATE, 1)
    assert P.kernel_expression(const(P.TIMESTAMPTZ, datetime.datetime(
        2000, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))))) == \
        ("const", P.TIMESTAMPTZ, -3_600_000_000)
    assert P.kernel_expression(const(P.TIMESTAMP, SpecialValue("timestamp", 2**63 - 1, "infinity"))) == \
        ("const", P.TIMESTAMP, 2**63 - 1)
    # timestamp - interval: each part negated (the time wrapping as int64 does)
    t = P.kernel_expression(op("-", P.TIMESTAMP, var("ts", P.TIMESTAMP), interval(0, 2, -(2**63))))
    assert t == ("dt", P.TIMESTAMP, "ts_pl", [("col", P.TIMESTAMP, "ts"), ("const", P.INT8, -2),
                                              ("const", P.INT8, -(2**63))])
    # integer + date turned round; a date against a timestamp through its key
    assert P.kernel_expression(op("+", P.DATE, const(P.INT4, 3), var("d", P.DATE)))[2] == "date_pli"
    c = P.kernel_condition(op("<", P.BOOL, var("ts", P.TIMESTAMP), var("d", P.DATE)))
    assert c[3] == ("dt", P.TIMESTAMP, "datekey", [("col", P.DATE, "d")])
    # a parameter: its slot
    assert P.kernel_expression(("param", 0, 2, P.DATE, -1, None)) == ("param", P.DATE, [0, 2, P.DATE, -1])


@pytest.mark.parametrize("expr", [
    # months (month lengths), days on timestamptz (the time zone), too many days
    op("+", P.TIMESTAMP, var("ts", P.TIMESTAMP), interval(1, 0, 0)),
    op("+", P.TIMESTAMPTZ, var("tz", P.TIMESTAMPTZ), interval(0, 1, 0)),
    op("+", P.TIMESTAMP, var("d", P.DATE), interval(0, P.KERNEL_MAX_INTERVAL_DAYS + 1, 0)),
    # timestamp against timestamptz, date against timestamptz (the time zone)
    op("<", P.BOOL, var("ts", P.TIMESTAMP), var("tz", P.TIMESTAMPTZ)),
    op("=", P.BOOL, var("d", P.DATE), var("tz", P.TIMESTAMPTZ)),
    # an interval compared with a parameter; an interval parameter added
    op("<", P.BOOL, op("-", 1186, var("ts", P.TIMESTAMP), var("ts", P.TIMESTAMP)),
       ("param", 0, 1, 1186, -1, None)),
    op("+", P.TIMESTAMP, var("ts", P.TIMESTAMP), ("param", 0, 1, 1186, -1, None)),
    ("func", 1, "timestamptz", True, P.TIMESTAMPTZ, [var("d", P.DATE)]),
    # date_part of a timestamptz (the time zone), of a field not computed
    ("func", 1, "date_part", True, P.FLOAT8, [const(P.TEXT, "year"), var("tz", P.TIMESTAMPTZ)]),
    ("func", 1, "date_part", True, P.FLOAT8, [const(P.TEXT, "epoch"), var("ts", P.TIMESTAMP)]),
    ("func", 1, "extract", True, P.NUMERIC, [const(P.TEXT, "year"), var("ts", P.TIMESTAMP)]),
])
def test_date_and_time_refused(expr):
    with pytest.raises(Refused):
        P.kernel_expression(expr)


def _kernels(clauses, aggs):
    """Both functions of a generated kernel, as plain Python."""
    k = codegen.generate([P.kernel_condition(c) for c in clauses], [P.kernel_aggregate(a) for a in aggs], {})
    ns: dict = {}
    source = k.source.replace('@numba.njit(cache=CACHE, error_model="numpy", nogil=True)\n', "")
    exec(source.replace("@numba.njit(inline=\"always\")\n", ""), ns)  # noqa: S102
    ns["sdiv"] = lambda x, y: abs(int(x)) // abs(int(y)) * (1 if (x < 0) == (y < 0) else -1)
    ns["srem"] = lambda x, y: int(x) - ns["sdiv"](x, y) * int(y)
    return k, ns["kernel"], ns["kernel_fast"]


FAST_CASES = [
    # issue 19's three queries
    ([op(">", P.BOOL, op("+", P.FLOAT8, var("x", P.FLOAT8), var("y", P.FLOAT8)), var("z", P.FLOAT8))],
     [agg("sum", P.FLOAT8, op("*", P.FLOAT8, var("x", P.FLOAT8), var("y", P.FLOAT8)))]),
    ([], [agg("avg", P.FLOAT8, ("case", P.FLOAT8, None, None,
                                [(op(">", P.BOOL, var("x", P.FLOAT8), const(P.FLOAT8, 0.5)), var("y", P.FLOAT8))],
                                op("-", P.FLOAT8, var("z", P.FLOAT8), const(P.FLOAT8, 20.0))))]),
    ([op(">", P.BOOL, op("*", P.FLOAT8, var("x", P.FLOAT8), const(P.FLOAT8, 2.0)), var("y", P.FLOAT8))],
     [agg("count", P.INT8, star=True)]),
    # min / max, integer sums, float4 sums
    ([op("<>", P.BOOL, var("x", P.FLOAT8), var("z", P.FLOAT8))],
     [agg("min", P.FLOAT8, op("/", P.FLOAT8, var("x", P.FLOAT8), var("y", P.FLOAT8))),
      agg("max", P.FLOAT8, op("-", P.FLOAT8, var("y", P.FLOAT8), var("z", P.FLOAT8))),
      agg("sum", P.INT8, op("*", P.INT4, var("i", P.INT4), const(P.INT4, 3))),
      agg("max", P.INT4, op("-", P.INT4, var("i", P.INT4), const(P.INT4, 1))),
      agg("sum", P.FLOAT4, op("*", P.FLOAT4, var("f", P.FLOAT4), var("f", P.FLOAT4))),
      agg("count", P.INT8, op("/", P.INT4, var("i", P.INT4), var("j", P.INT4)))]),
    # CASE: arms with a division stay branches (PostgreSQL never divides by the
    # zero the WHEN excludes), float arms are selected
    ([op(">", P.BOOL, op("-", P.INT4, var("i", P.INT4), var("j", P.INT4)), const(P.INT4, -500))],
     [agg("sum", P.INT8, ("case", P.INT4, None, None,
                          [(op("<>", P.BOOL, var("j", P.INT4), const(P.INT4, 0)),
                            op("/", P.INT4, var("i", P.INT4), var("j", P.INT4)))], var("i", P.INT4))),
      agg("max", P.FLOAT8, ("case", P.FLOAT8, None, None,
                            [(op(">", P.BOOL, var("x", P.FLOAT8), const(P.FLOAT8, 0.0)),
                              op("*", P.FLOAT8, var("y", P.FLOAT8), const(P.FLOAT8, 2.0)))],
                            op("-", P.FLOAT8, const(P.FLOAT8, 0.0), var("z", P.FLOAT8))))]),
]


@pytest.mark.parametrize("case", range(len(FAST_CASES)))
def test_fast_kernel_is_the_exact_kernel_or_redoes(case):
    """On batches without NULLs the fast kernel gives the exact kernel's
    states bit for bit, or asks for the exact kernel (REDO) and stores
    nothing: always where the exact kernel raises (overflow, underflow,
    division by zero), and where an infinite or NaN value reached a sum."""
    clauses, aggs = FAST_CASES[case]
    k, exact, fast = _kernels(clauses, aggs)
    from orochi_fdw import jit

    rng = np.random.default_rng(case)
    edges = {P.FLOAT8: [np.inf, -np.inf, np.nan, -0.0, 1e308, 1e-300, 0.0],
             P.FLOAT4: [np.inf, np.nan, -0.0, 3e38, 1e-30], P.INT4: [0, -1, 2**31 - 1, -2**31]}
    types = {"x": P.FLOAT8, "y": P.FLOAT8, "z": P.FLOAT8, "f": P.FLOAT4, "i": P.INT4, "j": P.INT4}
    dtypes = {P.FLOAT8: np.float64, P.FLOAT4: np.float32, P.INT4: np.int32}
    consts = [jit._const_arg(t, v) for t, v in k.constants]
    redone = computed = 0
    for trial in range(60):
        n = 40
        cols = []
        for name in k.columns:
            t = types[name]
            values = (rng.integers(-1000, 1000, n) / 8).astype(dtypes[t]) if t != P.INT4 else \
                rng.integers(-1000, 1000, n).astype(np.int32)
            if trial % 3 == 0:  # an edge value or two
                values[rng.integers(0, n, 2)] = rng.choice(edges[t], 2)
            cols.append(values)
        start_i = np.zeros(max(k.n_int, 1), np.int64)
        start_f = np.zeros(max(k.n_float, 1))
        ai, af = start_i.copy(), start_f.copy()
        with np.errstate(all="ignore"):
            code = exact(n, *(x for c in cols for x in (c, np.ones(n, np.uint8))), *consts, ai, af)
            fi, ff = start_i.copy(), start_f.copy()
            fast_code = fast(n, *cols, *consts, fi, ff)
        if fast_code == codegen.REDO:
            redone += 1
            assert (fi == start_i).all() and (ff == start_f).all()
            continue
        computed += 1
        assert code == 0 and fast_code == 0
        assert (fi == ai).all() and ff.tobytes() == af.tobytes(), (cols, ai, fi, af, ff)
    assert computed > 0 and redone > 0


def test_is_cached_only_when_both_loops_are(tmp_path, monkeypatch):
    """A kernel counts as cached (planned below orochi.jit_min_cost) only once
    kernel_fast, compiled at the first batch without NULLs, is too: in the
    backend or in numba's disk cache."""
    from orochi_fdw.jit import kernels

    monkeypatch.setattr(kernels, "cache_directory", lambda: str(tmp_path))
    monkeypatch.setattr(kernels, "_memory", {})
    # a shape no other test compiles (its own module name in the cache directory)
    k = codegen.generate([P.kernel_condition(op(">", P.BOOL, var("x", P.FLOAT8), const(P.FLOAT8, 0.25)))],
                         [P.kernel_aggregate(agg("count", P.INT8, star=True))], {})
    values, mask = np.zeros(0, np.float64), np.zeros(0, np.uint8)
    tail = tuple(np.float64(v) for _t, v in k.constants) + (
        np.zeros(max(k.n_int, 1), np.int64), np.zeros(max(k.n_float, 1), np.float64))
    assert not kernels.is_cached(k)
    (_exact, fast), _seconds, how = kernels.load(k, (0, values, mask) + tail)
    assert how == "compiled"
    assert not kernels.is_cached(k)  # kernel_fast not compiled yet
    monkeypatch.setattr(kernels, "_memory", {})  # a new backend: the disk cache has the exact loop only
    assert not kernels.is_cached(k)
    fast(0, values, *tail)
    assert kernels.is_cached(k)  # on disk
    monkeypatch.setattr(kernels, "cache_directory", lambda: str(tmp_path / "gone"))
    (_exact, fast), _seconds, _how = kernels.load(k, (0, values, mask) + tail)
    assert not kernels.is_cached(k)
    fast(0, values, *tail)
    assert kernels.is_cached(k)  # in the backend
