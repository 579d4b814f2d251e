"""The orochi.vector type: text and binary I/O, casts, operators, errors."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from orochi_fdw.kernels import vector as kernels
from orochi_fdw.vector import reference


@pytest.fixture
def x(db):
    db.execute("SET search_path = public, orochi")
    return db.execute


def test_text_io_round_trips_every_float4(x):
    assert x("SELECT ' [ 1, 2.5 ,-3e2 ] '::vector::text").fetchone()[0] == "[1,2.5,-300]"
    rng = np.random.default_rng(0)
    v = rng.normal(size=50).astype(np.float32) * np.float32(1e-30)
    back = x("SELECT %s::vector::text", ["[" + ",".join(repr(float(f)) for f in v) + "]"]).fetchone()[0]
    assert np.array(back[1:-1].split(","), dtype=np.float32).tobytes() == v.tobytes()


@pytest.mark.parametrize("literal, sqlstate", [
    ("[]", "22000"), ("[1,,2]", "22P02"), ("1,2", "22P02"), ("[1,2", "22P02"), ("[1,2]x", "22P02"),
    ("[NaN]", "22000"), ("[1,Infinity]", "22000"), ("[1e39]", "22003"), ("[a]", "22P02"),
])
def test_bad_text_is_refused(x, literal, sqlstate):
    with pytest.raises(psycopg.Error) as e:
        x("SELECT %s::vector", [literal])
    assert e.value.sqlstate == sqlstate


def test_dimension_of_the_type_modifier(x):
    assert x("SELECT '[1,2,3]'::vector(3)::text").fetchone()[0] == "[1,2,3]"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT '[1,2]'::vector(3)")
    assert e.value.sqlstate == "22000" and "expected 3 dimensions, not 2" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        x("CREATE TABLE bad (v vector(0))")
    assert e.value.sqlstate == "22023"
    x("CREATE TABLE h (v vector(2))")
    with pytest.raises(psycopg.Error) as e:
        x("INSERT INTO h VALUES ('[1,2,3]')")
    assert e.value.sqlstate == "22000"


def test_binary_send_receive(db, x):
    with db.cursor(binary=True) as cur:
        cur.execute("SELECT '[1,-2.5,3]'::vector")
        raw = cur.fetchone()[0]
    assert raw == b"\x00\x03\x00\x00" + np.array([1, -2.5, 3], ">f4").tobytes()
    x("CREATE TABLE b (v vector(3))")
    # a binary COPY round trip through the type's send and receive
    with db.cursor().copy("COPY (SELECT '[1,-2.5,3]'::vector) TO STDOUT (FORMAT binary)") as cp:
        data = b"".join(bytes(b) for b in cp)
    with db.cursor().copy("COPY b FROM STDIN (FORMAT binary)") as cp:
        cp.write(data)
    assert x("SELECT v::text FROM b").fetchall() == [("[1,-2.5,3]",)]


def test_casts_to_and_from_arrays(x):
    assert x("SELECT ARRAY[1,2,3]::real[]::vector::text, ARRAY[1,2]::int[]::vector::text,"
             " ARRAY[0.5,2]::float8[]::vector(2)::text, '[1,2]'::vector::real[]").fetchone() == \
        ("[1,2,3]", "[1,2]", "[0.5,2]", [1.0, 2.0])
    for bad, state in (("ARRAY[1,NULL]::real[]", "22004"), ("ARRAY[[1,2],[3,4]]::real[]", "22000"),
                       ("ARRAY['NaN']::real[]", "22000")):
        with pytest.raises(psycopg.Error) as e:
            x(f"SELECT {bad}::vector")
        assert e.value.sqlstate == state


def test_operators_and_functions(x):
    row = x("SELECT '[1,2]'::vector <-> '[4,6]', '[1,2]'::vector <#> '[3,4]', '[1,0]'::vector <=> '[0,1]',"
            " l2_distance('[1,2]', '[4,6]'), inner_product('[1,2]', '[3,4]'), cosine_distance('[1,1]', '[2,2]'),"
            " vector_dims('[1,2,3]'), l2_normalize('[3,4]')::text, vector_norm('[3,4]'),"
            " ('[0,0]'::vector <=> '[1,1]')::text").fetchone()
    assert row[:5] == (5.0, -11.0, 1.0, 5.0, 11.0)
    assert abs(row[5]) < 1e-15 and row[6] == 3 and row[7] == "[0.6,0.8]" and row[8] == 5.0 and row[9] == "NaN"
    with pytest.raises(psycopg.Error) as e:
        x("SELECT '[1,2]'::vector <-> '[1,2,3]'")
    assert e.value.sqlstate == "22000" and "different vector dimensions 2 and 3" in str(e.value)


@pytest.mark.parametrize("op, metric", [("<->", "l2"), ("<#>", "negative_inner_product"), ("<=>", "cosine"),
                                        ("OPERATOR(orochi.<->)", "l2")])
def test_sql_distances_equal_the_kernels_bit_for_bit(x, op, metric):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 37)).astype(np.float32)
    q = rng.normal(size=37).astype(np.float32)
    lit = lambda v: "[" + ",".join(repr(float(f)) for f in v) + "]"  # noqa: E731
    got = np.array([x(f"SELECT %s::vector {op} %s::vector", [lit(v), lit(q)]).fetchone()[0] for v in X])
    out = np.empty(len(X))
    kernels.distances(X, q, reference.METRICS[metric], out)
    assert got.tobytes() == out.tobytes()
