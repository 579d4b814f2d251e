"""TPC-H for tests and the benchmark: the schema, the 22 queries, data from
``tpchgen-cli`` (PyPI, a Rust port of dbgen: deterministic for a scale
factor) and loading the same rows into heap tables, orochi tables and DuckDB.

The queries are the standard texts with the validation parameters of the
specification (TPC-H 2.18, section 2.4); Q15's view is a common table
expression.  Tables carry no keys or indexes (orochi tables cannot have
them); the heap tables are the same, so that both sides plan over the same
information.  Numeric columns are ``numeric(15,2)`` as in the specification.

    tables = generate(0.1, directory)      # CSV files, one per table
    load_postgres(conn, directory, "heap") # CREATE TABLE + COPY, ANALYZE
    load_postgres(conn, directory, "orochi", source_schema="heap")
    for name, sql in QUERIES: ...
"""

from __future__ import annotations

import os
import shutil
import subprocess

from psycopg import sql

#: (table, [(column, type)]) in the order of the generated CSV columns;
#: the order tables are loaded in (smallest first)
SCHEMA: list[tuple[str, list[tuple[str, str]]]] = [
    ("region", [("r_regionkey", "int4"), ("r_name", "char(25)"), ("r_comment", "varchar(152)")]),
    ("nation", [("n_nationkey", "int4"), ("n_name", "char(25)"), ("n_regionkey", "int4"),
                ("n_comment", "varchar(152)")]),
    ("supplier", [("s_suppkey", "int4"), ("s_name", "char(25)"), ("s_address", "varchar(40)"),
                  ("s_nationkey", "int4"), ("s_phone", "char(15)"), ("s_acctbal", "numeric(15,2)"),
                  ("s_comment", "varchar(101)")]),
    ("customer", [("c_custkey", "int4"), ("c_name", "varchar(25)"), ("c_address", "varchar(40)"),
                  ("c_nationkey", "int4"), ("c_phone", "char(15)"), ("c_acctbal", "numeric(15,2)"),
                  ("c_mktsegment", "char(10)"), ("c_comment", "varchar(117)")]),
    ("part", [("p_partkey", "int4"), ("p_name", "varchar(55)"), ("p_mfgr", "char(25)"),
              ("p_brand", "char(10)"), ("p_type", "varchar(25)"), ("p_size", "int4"),
              ("p_container", "char(10)"), ("p_retailprice", "numeric(15,2)"),
              ("p_comment", "varchar(23)")]),
    ("partsupp", [("ps_partkey", "int4"), ("ps_suppkey", "int4"), ("ps_availqty", "int4"),
                  ("ps_supplycost", "numeric(15,2)"), ("ps_comment", "varchar(199)")]),
    ("orders", [("o_orderkey", "int4"), ("o_custkey", "int4"), ("o_orderstatus", "char(1)"),
                ("o_totalprice", "numeric(15,2)"), ("o_orderdate", "date"),
                ("o_orderpriority", "char(15)"), ("o_clerk", "char(15)"), ("o_shippriority", "int4"),
                ("o_comment", "varchar(79)")]),
    ("lineitem", [("l_orderkey", "int4"), ("l_partkey", "int4"), ("l_suppkey", "int4"),
                  ("l_linenumber", "int4"), ("l_quantity", "numeric(15,2)"),
                  ("l_extendedprice", "numeric(15,2)"), ("l_discount", "numeric(15,2)"),
                  ("l_tax", "numeric(15,2)"), ("l_returnflag", "char(1)"), ("l_linestatus", "char(1)"),
                  ("l_shipdate", "date"), ("l_commitdate", "date"), ("l_receiptdate", "date"),
                  ("l_shipinstruct", "char(25)"), ("l_shipmode", "char(10)"),
                  ("l_comment", "varchar(44)")]),
]

TABLES = [name for name, _ in SCHEMA]

QUERIES: list[tuple[str, str]] = [
    ("Q1", """
SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc,
       count(*) AS count_order
FROM lineitem
WHERE l_shipdate <= date '1998-12-01' - interval '90' day
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus"""),
    ("Q2", """
SELECT s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
FROM part, supplier, partsupp, nation, region
WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey AND p_size = 15 AND p_type LIKE '%BRASS'
  AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'EUROPE'
  AND ps_supplycost = (SELECT min(ps_supplycost) FROM partsupp, supplier, nation, region
                       WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey AND s_nationkey = n_nationkey
                         AND n_regionkey = r_regionkey AND r_name = 'EUROPE')
ORDER BY s_acctbal DESC, n_name, s_name, p_partkey
LIMIT 100"""),
    ("Q3", """
SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
FROM customer, orders, lineitem
WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
  AND o_orderdate < date '1995-03-15' AND l_shipdate > date '1995-03-15'
GROUP BY l_orderkey, o_orderdate, o_shippriority
ORDER BY revenue DESC, o_orderdate, l_orderkey
LIMIT 10"""),
    ("Q4", """
SELECT o_orderpriority, count(*) AS order_count
FROM orders
WHERE o_orderdate >= date '1993-07-01' AND o_orderdate < date '1993-07-01' + interval '3' month
  AND EXISTS (SELECT * FROM lineitem WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate)
GROUP BY o_orderpriority
ORDER BY o_orderpriority"""),
    ("Q5", """
SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
FROM customer, orders, lineitem, supplier, nation, region
WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey
  AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey
  AND r_name = 'ASIA' AND o_orderdate >= date '1994-01-01'
  AND o_orderdate < date '1994-01-01' + interval '1' year
GROUP BY n_name
ORDER BY revenue DESC"""),
    ("Q6", """
SELECT sum(l_extendedprice * l_discount) AS revenue
FROM lineitem
WHERE l_shipdate >= date '1994-01-01' AND l_shipdate < date '1994-01-01' + interval '1' year
  AND l_discount BETWEEN 0.06 - 0.01 AND 0.06 + 0.01 AND l_quantity < 24"""),
    ("Q7", """
SELECT supp_nation, cust_nation, l_year, sum(volume) AS revenue
FROM (SELECT n1.n_name AS supp_nation, n2.n_name AS cust_nation,
             extract(year FROM l_shipdate) AS l_year, l_extendedprice * (1 - l_discount) AS volume
      FROM supplier, lineitem, orders, customer, nation n1, nation n2
      WHERE s_suppkey = l_suppkey AND o_orderkey = l_orderkey AND c_custkey = o_custkey
        AND s_nationkey = n1.n_nationkey AND c_nationkey = n2.n_nationkey
        AND ((n1.n_name = 'FRANCE' AND n2.n_name = 'GERMANY')
             OR (n1.n_name = 'GERMANY' AND n2.n_name = 'FRANCE'))
        AND l_shipdate BETWEEN date '1995-01-01' AND date '1996-12-31') AS shipping
GROUP BY supp_nation, cust_nation, l_year
ORDER BY supp_nation, cust_nation, l_year"""),
    ("Q8", """
SELECT o_year, sum(CASE WHEN nation = 'BRAZIL' THEN volume ELSE 0 END) / sum(volume) AS mkt_share
FROM (SELECT extract(year FROM o_orderdate) AS o_year, l_extendedprice * (1 - l_discount) AS volume,
             n2.n_name AS nation
      FROM part, supplier, lineitem, orders, customer, nation n1, nation n2, region
      WHERE p_partkey = l_partkey AND s_suppkey = l_suppkey AND l_orderkey = o_orderkey
        AND o_custkey = c_custkey AND c_nationkey = n1.n_nationkey AND n1.n_regionkey = r_regionkey
        AND r_name = 'AMERICA' AND s_nationkey = n2.n_nationkey
        AND o_orderdate BETWEEN date '1995-01-01' AND date '1996-12-31'
        AND p_type = 'ECONOMY ANODIZED STEEL') AS all_nations
GROUP BY o_year
ORDER BY o_year"""),
    ("Q9", """
SELECT nation, o_year, sum(amount) AS sum_profit
FROM (SELECT n_name AS nation, extract(year FROM o_orderdate) AS o_year,
             l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity AS amount
      FROM part, supplier, lineitem, partsupp, orders, nation
      WHERE s_suppkey = l_suppkey AND ps_suppkey = l_suppkey AND ps_partkey = l_partkey
        AND p_partkey = l_partkey AND o_orderkey = l_orderkey AND s_nationkey = n_nationkey
        AND p_name LIKE '%green%') AS profit
GROUP BY nation, o_year
ORDER BY nation, o_year DESC"""),
    ("Q10", """
SELECT c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) AS revenue, c_acctbal, n_name,
       c_address, c_phone, c_comment
FROM customer, orders, lineitem, nation
WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND o_orderdate >= date '1993-10-01'
  AND o_orderdate < date '1993-10-01' + interval '3' month AND l_returnflag = 'R'
  AND c_nationkey = n_nationkey
GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
ORDER BY revenue DESC, c_custkey
LIMIT 20"""),
    ("Q11", """
SELECT ps_partkey, sum(ps_supplycost * ps_availqty) AS value
FROM partsupp, supplier, nation
WHERE ps_suppkey = s_suppkey AND s_nationkey = n_nationkey AND n_name = 'GERMANY'
GROUP BY ps_partkey
HAVING sum(ps_supplycost * ps_availqty) > (
    SELECT sum(ps_supplycost * ps_availqty) * 0.0001
    FROM partsupp, supplier, nation
    WHERE ps_suppkey = s_suppkey AND s_nationkey = n_nationkey AND n_name = 'GERMANY')
ORDER BY value DESC, ps_partkey"""),
    ("Q12", """
SELECT l_shipmode,
       sum(CASE WHEN o_orderpriority = '1-URGENT' OR o_orderpriority = '2-HIGH' THEN 1 ELSE 0 END)
           AS high_line_count,
       sum(CASE WHEN o_orderpriority <> '1-URGENT' AND o_orderpriority <> '2-HIGH' THEN 1 ELSE 0 END)
           AS low_line_count
FROM orders, lineitem
WHERE o_orderkey = l_orderkey AND l_shipmode IN ('MAIL', 'SHIP') AND l_commitdate < l_receiptdate
  AND l_shipdate < l_commitdate AND l_receiptdate >= date '1994-01-01'
  AND l_receiptdate < date '1994-01-01' + interval '1' year
GROUP BY l_shipmode
ORDER BY l_shipmode"""),
    ("Q13", """
SELECT c_count, count(*) AS custdist
FROM (SELECT c_custkey, count(o_orderkey)
      FROM customer LEFT OUTER JOIN orders ON c_custkey = o_custkey
                                          AND o_comment NOT LIKE '%special%requests%'
      GROUP BY c_custkey) AS c_orders (c_custkey, c_count)
GROUP BY c_count
ORDER BY custdist DESC, c_count DESC"""),
    ("Q14", """
SELECT 100.00 * sum(CASE WHEN p_type LIKE 'PROMO%' THEN l_extendedprice * (1 - l_discount) ELSE 0 END)
       / sum(l_extendedprice * (1 - l_discount)) AS promo_revenue
FROM lineitem, part
WHERE l_partkey = p_partkey AND l_shipdate >= date '1995-09-01'
  AND l_shipdate < date '1995-09-01' + interval '1' month"""),
    ("Q15", """
WITH revenue0 AS (
    SELECT l_suppkey AS supplier_no, sum(l_extendedprice * (1 - l_discount)) AS total_revenue
    FROM lineitem
    WHERE l_shipdate >= date '1996-01-01' AND l_shipdate < date '1996-01-01' + interval '3' month
    GROUP BY l_suppkey)
SELECT s_suppkey, s_name, s_address, s_phone, total_revenue
FROM supplier, revenue0
WHERE s_suppkey = supplier_no AND total_revenue = (SELECT max(total_revenue) FROM revenue0)
ORDER BY s_suppkey"""),
    ("Q16", """
SELECT p_brand, p_type, p_size, count(DISTINCT ps_suppkey) AS supplier_cnt
FROM partsupp, part
WHERE p_partkey = ps_partkey AND p_brand <> 'Brand#45' AND p_type NOT LIKE 'MEDIUM POLISHED%'
  AND p_size IN (49, 14, 23, 45, 19, 3, 36, 9)
  AND ps_suppkey NOT IN (SELECT s_suppkey FROM supplier WHERE s_comment LIKE '%Customer%Complaints%')
GROUP BY p_brand, p_type, p_size
ORDER BY supplier_cnt DESC, p_brand, p_type, p_size"""),
    ("Q17", """
SELECT sum(l_extendedprice) / 7.0 AS avg_yearly
FROM lineitem, part
WHERE p_partkey = l_partkey AND p_brand = 'Brand#23' AND p_container = 'MED BOX'
  AND l_quantity < (SELECT 0.2 * avg(l_quantity) FROM lineitem WHERE l_partkey = p_partkey)"""),
    ("Q18", """
SELECT c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity)
FROM customer, orders, lineitem
WHERE o_orderkey IN (SELECT l_orderkey FROM lineitem GROUP BY l_orderkey HAVING sum(l_quantity) > 300)
  AND c_custkey = o_custkey AND o_orderkey = l_orderkey
GROUP BY c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
ORDER BY o_totalprice DESC, o_orderdate, o_orderkey
LIMIT 100"""),
    ("Q19", """
SELECT sum(l_extendedprice * (1 - l_discount)) AS revenue
FROM lineitem, part
WHERE (p_partkey = l_partkey AND p_brand = 'Brand#12'
       AND p_container IN ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
       AND l_quantity >= 1 AND l_quantity <= 1 + 10 AND p_size BETWEEN 1 AND 5
       AND l_shipmode IN ('AIR', 'AIR REG') AND l_shipinstruct = 'DELIVER IN PERSON')
   OR (p_partkey = l_partkey AND p_brand = 'Brand#23'
       AND p_container IN ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
       AND l_quantity >= 10 AND l_quantity <= 10 + 10 AND p_size BETWEEN 1 AND 10
       AND l_shipmode IN ('AIR', 'AIR REG') AND l_shipinstruct = 'DELIVER IN PERSON')
   OR (p_partkey = l_partkey AND p_brand = 'Brand#34'
       AND p_container IN ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
       AND l_quantity >= 20 AND l_quantity <= 20 + 10 AND p_size BETWEEN 1 AND 15
       AND l_shipmode IN ('AIR', 'AIR REG') AND l_shipinstruct = 'DELIVER IN PERSON')"""),
    ("Q20", """
SELECT s_name, s_address
FROM supplier, nation
WHERE s_suppkey IN (
        SELECT ps_suppkey FROM partsupp
        WHERE ps_partkey IN (SELECT p_partkey FROM part WHERE p_name LIKE 'forest%')
          AND ps_availqty > (SELECT 0.5 * sum(l_quantity) FROM lineitem
                             WHERE l_partkey = ps_partkey AND l_suppkey = ps_suppkey
                               AND l_shipdate >= date '1994-01-01'
                               AND l_shipdate < date '1994-01-01' + interval '1' year))
  AND s_nationkey = n_nationkey AND n_name = 'CANADA'
ORDER BY s_name"""),
    ("Q21", """
SELECT s_name, count(*) AS numwait
FROM supplier, lineitem l1, orders, nation
WHERE s_suppkey = l1.l_suppkey AND o_orderkey = l1.l_orderkey AND o_orderstatus = 'F'
  AND l1.l_receiptdate > l1.l_commitdate
  AND EXISTS (SELECT * FROM lineitem l2 WHERE l2.l_orderkey = l1.l_orderkey AND l2.l_suppkey <> l1.l_suppkey)
  AND NOT EXISTS (SELECT * FROM lineitem l3 WHERE l3.l_orderkey = l1.l_orderkey
                  AND l3.l_suppkey <> l1.l_suppkey AND l3.l_receiptdate > l3.l_commitdate)
  AND s_nationkey = n_nationkey AND n_name = 'SAUDI ARABIA'
GROUP BY s_name
ORDER BY numwait DESC, s_name
LIMIT 100"""),
    ("Q22", """
SELECT cntrycode, count(*) AS numcust, sum(c_acctbal) AS totacctbal
FROM (SELECT substring(c_phone FROM 1 FOR 2) AS cntrycode, c_acctbal
      FROM customer
      WHERE substring(c_phone FROM 1 FOR 2) IN ('13', '31', '23', '29', '30', '18', '17')
        AND c_acctbal > (SELECT avg(c_acctbal) FROM customer
                         WHERE c_acctbal > 0.00
                           AND substring(c_phone FROM 1 FOR 2) IN ('13', '31', '23', '29', '30', '18', '17'))
        AND NOT EXISTS (SELECT * FROM orders WHERE o_custkey = c_custkey)) AS custsale
GROUP BY cntrycode
ORDER BY cntrycode"""),
]


class GeneratorMissing(RuntimeError):
    pass


def generator() -> str:
    """The ``tpchgen-cli`` program: next to this interpreter (a venv's bin), or on PATH."""
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "tpchgen-cli")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise GeneratorMissing("tpchgen-cli is not installed (pip install tpchgen-cli)")
    return found


def generate(scale: float, directory: str) -> dict[str, str]:
    """Write the tables at ``scale`` as CSV files (with a header line) into
    ``directory``; {table: path}.  Files already there are reused."""
    os.makedirs(directory, exist_ok=True)
    paths = {t: os.path.join(directory, f"{t}.csv") for t in TABLES}
    if not all(os.path.exists(p) for p in paths.values()):
        subprocess.run([generator(), "csv", "-s", str(scale), "--output-dir", directory, "--overwrite"],
                       check=True, capture_output=True)
    return paths


def create_tables(conn, schema: str, orochi: bool) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for table, columns in SCHEMA:
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns)
        name = sql.Identifier(schema, table)
        if orochi:
            conn.execute(sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER orochi").format(name, cols))
        else:
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, cols))


def load_postgres(conn, paths: dict[str, str] | None, schema: str, *, orochi: bool = False,
                  source_schema: str | None = None, analyze: bool = True, compact: bool = False) -> None:
    """Create the eight tables in ``schema`` and fill them: from the CSV
    files (COPY), or with ``INSERT ... SELECT`` from the same tables in
    ``source_schema``; with ``compact`` (orochi tables) the rows a load left
    in the delta store (a table of at most ``delta_row_limit`` rows: TPC-H's
    supplier, nation and region) folded into stripes by ``orochi.compact``,
    as after a bulk load; then ANALYZE.  ``conn`` is an autocommit
    connection."""
    create_tables(conn, schema, orochi)
    for table, _columns in SCHEMA:
        name = sql.Identifier(schema, table)
        if source_schema is not None:
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                name, sql.Identifier(source_schema, table)))
        else:
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(name)) as copy:
                    with open(paths[table], "rb") as f:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            copy.write(chunk)
        if orochi and compact:
            conn.execute("SELECT orochi.compact(c.oid) FROM pg_class c JOIN pg_namespace n "
                         "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                         [schema, table])
        if analyze:
            conn.execute(sql.SQL("ANALYZE {}").format(name))


def load_duckdb(con, paths: dict[str, str]) -> None:
    """The same tables in a DuckDB connection, read from the CSV files."""
    for table, columns in SCHEMA:
        cols = ", ".join(f"{c} {t}" for c, t in columns)
        con.execute(f"CREATE TABLE {table} ({cols})")
        con.execute(f"INSERT INTO {table} SELECT * FROM read_csv(?, header = true, "
                    f"columns = {{{', '.join(repr(c) + ': ' + repr(t) for c, t in columns)}}})",
                    [paths[table]])
