"""orochi_fdw.query.pushable: which expressions run outside PostgreSQL, and
the SQL they become (no server needed; the differential tests of the join
engine check the results against PostgreSQL's)."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from orochi_fdw.query import pushable
from orochi_fdw.query.pushable import Refused, Translator

C = ("C", True, True)
EN = ("en_US", False, True)
NONDET = ("und-x-icu-ci", False, False)


def var(name, type_oid, typmod=-1, coll=None, rti=1):
    return ("var", rti, name, type_oid, typmod, coll)


def const(type_oid, value, coll=None):
    return ("const", type_oid, -1, coll, value)


def op(name, left, right, result=pushable.BOOL, coll=None):
    return ("op", 1, name, True, result, coll, [left, right])


def numeric_typmod(p, s):
    return ((p << 16) | s) + 4


def tr():
    return Translator(lambda rti, a: f't{rti}."{a}"', lambda rti, a, t, m: True)


def test_comparison_with_a_parameter_of_its_exact_type():
    t = tr()
    sql = t.condition(op(">", var("k", pushable.INT4), const(pushable.INT8, 5)))
    assert sql == '(t1."k" > CAST($1 AS BIGINT))'
    assert t.out.params == [5]


def test_text_ordering_only_under_c_and_equality_only_deterministic():
    assert tr().condition(op("<", var("v", pushable.TEXT, coll=C), const(pushable.TEXT, "x", C), coll=C))
    with pytest.raises(Refused):
        tr().condition(op("<", var("v", pushable.TEXT, coll=EN), const(pushable.TEXT, "x", EN), coll=EN))
    assert tr().condition(op("=", var("v", pushable.TEXT, coll=EN), const(pushable.TEXT, "x", EN), coll=EN))
    with pytest.raises(Refused):
        tr().condition(op("=", var("v", pushable.TEXT, coll=NONDET), const(pushable.TEXT, "x"), coll=NONDET))


def test_division_and_functions_are_refused():
    with pytest.raises(Refused):
        tr().condition(op(">", op("/", var("k", pushable.INT4), var("g", pushable.INT4), pushable.INT4),
                          const(pushable.INT4, 1)))
    with pytest.raises(Refused):
        tr().expr(("func", 870, "lower", True, pushable.TEXT, [var("v", pushable.TEXT, coll=C)]))
    with pytest.raises(Refused):
        tr().expr(("unsupported", 112))


def test_integer_arithmetic_in_postgres_result_type():
    sql = tr().expr(op("+", var("s", pushable.INT2), var("k", pushable.INT4), pushable.INT4)).sql
    assert sql == '(CAST(t1."s" AS INTEGER) + CAST(t1."k" AS INTEGER))'


def test_numeric_arithmetic_scales_and_width():
    n152 = var("x", pushable.NUMERIC, numeric_typmod(15, 2))
    product = tr().expr(op("*", n152, op("-", const(pushable.NUMERIC, Decimal("1")), n152, pushable.NUMERIC),
                           pushable.NUMERIC))
    assert product.decimal == (31, 4)  # (1 - x): 16 digits, scale 2; times x: 31, scale 4
    wide = var("w", pushable.NUMERIC, numeric_typmod(18, 0))
    deep = op("*", op("*", wide, wide, pushable.NUMERIC), wide, pushable.NUMERIC)
    with pytest.raises(Refused):
        tr().expr(deep)  # 54 digits: past DuckDB's 38
    with pytest.raises(Refused):
        tr().expr(var("u", pushable.NUMERIC, -1))  # unconstrained numeric keeps its text form


def test_any_all_and_nulls():
    t = tr()
    assert t.condition(("saop", 1, "=", True, True, None, [var("k", pushable.INT4),
                                                          const(1007, [1, None])])) == \
        '(t1."k" IN (CAST($1 AS BIGINT), CAST(NULL AS BIGINT)))'
    assert tr().condition(("saop", 1, "=", True, True, None, [var("k", pushable.INT4), const(1007, [])])) == "FALSE"
    assert tr().condition(("saop", 1, "<>", True, False, None, [var("k", pushable.INT4), const(1007, [])])) == "TRUE"
    with pytest.raises(Refused):
        tr().condition(("saop", 1, "<", True, True, None, [var("k", pushable.INT4), const(1007, [1])]))


def test_char_constants_lose_their_padding_and_dates_meet_timestamps():
    t = tr()
    t.condition(op("=", var("c", pushable.BPCHAR, 8, C), const(pushable.BPCHAR, "ab  ", C), coll=C))
    assert t.out.params == ["ab"]
    t = tr()
    sql = t.condition(op("<", var("d", pushable.DATE), const(pushable.TIMESTAMP, datetime.datetime(1995, 1, 1))))
    assert sql == '(CAST(t1."d" AS TIMESTAMP) < CAST($1 AS TIMESTAMP))'
    with pytest.raises(Refused):  # infinity arrives as another type: refused
        tr().condition(op("<", var("d", pushable.DATE), const(pushable.DATE, "infinity")))


def test_like_without_escapes():
    for pattern in ("%green%", "gr_en"):
        assert tr().condition(op("~~", var("v", pushable.TEXT, coll=C), const(pushable.TEXT, pattern, C), coll=C))
    with pytest.raises(Refused):  # PostgreSQL's escape character: DuckDB has none by default
        tr().condition(op("~~", var("v", pushable.TEXT, coll=C), const(pushable.TEXT, "a\\%b", C), coll=C))


def test_case_and_coalesce_keep_each_numeric_scale():
    n = var("n", pushable.NUMERIC, numeric_typmod(10, 2))
    zero = const(pushable.NUMERIC, Decimal("0"))
    cond = op(">", var("k", pushable.INT4), const(pushable.INT4, 5))
    t = tr()
    typed = t.expr(("case", pushable.NUMERIC, None, None, [(cond, n)], zero))
    assert typed.decimal == (10, 2) and typed.scale_sql == "(CASE WHEN (t1.\"k\" > CAST($1 AS INTEGER)) THEN 2 ELSE 0 END)"
    items, out = t.aggregate(("agg", 1, "sum", True, pushable.NUMERIC, False, False, None,
                              [("case", pushable.NUMERIC, None, None, [(cond, n)], zero)]))
    assert out["post"] == "rescale" and len(items) == 2
    with pytest.raises(Refused):  # which of 0 and 0.00 is the least is PostgreSQL's order of rows
        tr().aggregate(("agg", 1, "min", True, pushable.NUMERIC, False, False, None,
                        [("case", pushable.NUMERIC, None, None, [(cond, n)], zero)]))
    with pytest.raises(Refused):  # nor a group key whose values differ in scale
        tr().value(("coalesce", pushable.NUMERIC, None, [n, zero]))
    same = tr().expr(("coalesce", pushable.NUMERIC, None, [n, const(pushable.NUMERIC, Decimal("0.00"))]))
    assert same.scale_sql is None and same.sql.startswith("COALESCE(")


def test_extract_and_substring():
    d = var("d", pushable.DATE)
    field = const(pushable.TEXT, "year", C)
    typed = tr().expr(("func", 1, "extract", True, pushable.NUMERIC, [field, d]))
    assert "year(" in typed.sql and typed.decimal == (18, 0)
    with pytest.raises(Refused):  # depends on the session's time zone
        tr().expr(("func", 1, "extract", True, pushable.NUMERIC, [field, var("z", pushable.TIMESTAMPTZ)]))
    v = var("v", pushable.TEXT, coll=C)
    assert tr().expr(("func", 1, "substring", True, pushable.TEXT,
                      [v, const(pushable.INT4, 1), const(pushable.INT4, 2)])).sql == 'substring(t1."v", 1, 2)'
    with pytest.raises(Refused):  # from position 0: PostgreSQL counts the characters before the first
        tr().expr(("func", 1, "substring", True, pushable.TEXT, [v, const(pushable.INT4, 0), const(pushable.INT4, 2)]))


def test_parameters_are_slots():
    t = tr()
    sql = t.condition(op("=", var("k", pushable.INT4), ("param", 0, 1, pushable.INT4, -1, None)))
    assert sql == '(t1."k" = CAST($1 AS INTEGER))' and t.out.params == [{"param": [0, 1, pushable.INT4, -1]}]
    with pytest.raises(Refused):  # a numeric parameter's scale is its value's
        tr().expr(op("+", var("n", pushable.NUMERIC, numeric_typmod(10, 2)),
                     ("param", 0, 1, pushable.NUMERIC, -1, None), result=pushable.NUMERIC))


def test_aggregates_in_postgres_result_types():
    k = var("k", pushable.INT4)
    items, out = tr().aggregate(("agg", 1, "sum", True, pushable.INT8, False, False, None, [k]))
    assert items == ['CAST(sum(t1."k") AS BIGINT)'] and out["type_oid"] == pushable.INT8
    items, out = tr().aggregate(("agg", 1, "avg", True, pushable.NUMERIC, False, False, None,
                                 [var("n", pushable.NUMERIC, numeric_typmod(10, 2))]))
    assert out == {"type_oid": pushable.NUMERIC, "post": "avg", "scale": 2} and len(items) == 2
    with pytest.raises(Refused):  # float sums depend on the order of addition
        tr().aggregate(("agg", 1, "sum", True, pushable.FLOAT8, False, False, None, [var("f", pushable.FLOAT8)]))
    with pytest.raises(Refused):
        tr().aggregate(("agg", 1, "max", True, pushable.TEXT, False, False, EN,
                        [var("v", pushable.TEXT, coll=EN)]))
    with pytest.raises(Refused):  # a user's aggregate
        tr().aggregate(("agg", 1, "sum", False, pushable.INT8, False, False, None, [k]))


def test_orderings_the_engine_takes():
    import json

    from orochi_fdw.query import engine

    plan = {"sql": "SELECT 1", "params": [], "inputs": [], "joins": 1, "description": "(a inner join b)",
            "outputs": [{"name": "j0", "type_oid": pushable.INT4, "typmod": -1, "columns": [0]},
                        {"name": "j1", "type_oid": pushable.TEXT, "typmod": -1, "columns": [1]},
                        {"name": "j2", "type_oid": pushable.FLOAT8, "typmod": -1, "columns": [2]},
                        {"name": "a3", "type_oid": pushable.NUMERIC, "typmod": -1, "post": "avg", "columns": [3, 4]}]}
    text = json.dumps(plan)
    c_coll, en_coll = ("", True, True), ("", False, True)
    got = engine.plan_order(text, [(0, True, True, 1976, None), (1, False, False, 1994, c_coll)], None, None,
                            100.0, 10.0, 20.0)
    sql = json.loads(got[2])["sql"]
    assert sql.endswith("ORDER BY 1 DESC NULLS FIRST, 2 ASC NULLS LAST")
    limited = json.loads(engine.plan_order(got[2], [], 5, 2, 100.0, got[0], got[1])[2])
    assert limited["sql"].endswith("LIMIT CAST($1 AS BIGINT) OFFSET CAST($2 AS BIGINT)") and limited["params"] == [5, 2]
    for key in ((1, False, False, 1994, en_coll),  # text under a linguistic collation
                (2, False, False, 1970, None),  # floats
                (3, False, False, 1988, None),  # an avg, computed after DuckDB
                (0, False, False, 1977, None)):  # another operator family
        assert engine.plan_order(text, [key], None, None, 100.0, 10.0, 20.0) is None
