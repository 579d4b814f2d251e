"""pushable.kernel_expression / kernel_aggregate (what the expression JIT
compiles, and the typed tree it gets) and the generated kernels run in
Python itself (no server: the differential tests in test_jit_expressions
check the compiled kernels against PostgreSQL)."""

from __future__ import annotations

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
