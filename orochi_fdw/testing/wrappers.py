"""Small wrappers the bridge's tests and benchmarks use.

They exercise every path of the bridge (per-row and batch scans, inserts in
both forms, row ids, transaction hooks, errors, long-running Python) without
depending on the storage engine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from orochi_fdw.bridge import Batch, Column, ForeignDataWrapper, OptionSpec, Qual, WireKind, parse_bool
from orochi_fdw.bridge import spi


class SeriesWrapper(ForeignDataWrapper):
    """``rows`` rows of generated data, per row or in batches.

    Columns are filled by name: ``id`` (0..rows-1), ``v`` (id * 0.5), ``t``
    (text ``'row-<id>'``), anything else NULL.  Options: rows, mode
    (row | batch | tuple), batch_size, nulls (every 7th value NULL).
    """

    options_spec = {
        "table": {
            "rows": OptionSpec(int, "rows to generate"),
            "mode": OptionSpec(str, "row, tuple or batch", choices=("row", "tuple", "batch")),
            "batch_size": OptionSpec(int, "rows per batch"),
            "nulls": OptionSpec(parse_bool, "make every 7th value NULL"),
        },
        "server": {},
    }

    def __init__(self, options, columns):
        super().__init__(options, columns)
        self.rows = int(options.get("rows", 10))
        self.mode = options.get("mode", "row")
        self.batch_size = int(options.get("batch_size", 10_000))
        self.nulls = parse_bool(options.get("nulls", "false"))
        self.last_quals: list[Qual] = []

    def get_rel_size(self, quals, columns):
        return (self.rows, 24)

    def _value(self, name: str, i: int) -> Any:
        if self.nulls and i % 7 == 3:
            return None
        if name == "id":
            return i
        if name == "v":
            return i * 0.5
        if name == "t":
            return f"row-{i}"
        if name == "g":
            return i % 5
        return None

    def execute(self, quals, columns, sortkeys=None):
        self.last_quals = quals
        if self.mode == "batch":
            yield from self._batches(columns)
            return
        for i in range(self.rows):
            if self.mode == "tuple":
                yield tuple(self._value(name, i) for name in self.columns)
            else:
                yield {name: self._value(name, i) for name in columns}

    def _batches(self, columns):
        for start in range(0, self.rows, self.batch_size):
            n = min(self.batch_size, self.rows - start)
            ids = np.arange(start, start + n, dtype=np.int64)
            cols = {}
            mask = (ids % 7 == 3) if self.nulls else None
            for name in columns:
                if name == "id":
                    data = ids
                elif name == "v":
                    data = ids * 0.5
                elif name == "t":
                    data = [f"row-{i}" for i in ids.tolist()]
                    if mask is not None:
                        data = [None if m else s for s, m in zip(data, mask.tolist())]
                    cols[name] = data
                    continue
                else:
                    continue
                cols[name] = np.ma.MaskedArray(data, mask=mask) if mask is not None else data
            yield Batch(n, cols)

    def explain(self, quals, columns, sortkeys=None, verbose=False):
        lines = [f"Wrapper: series of {self.rows} rows ({self.mode})"]
        if verbose:
            lines.append("Quals: " + ", ".join(repr(q) for q in quals))
            lines.append("Columns: " + ", ".join(columns))
        return lines


class QualsEchoWrapper(ForeignDataWrapper):
    """One row per qual it receives: (field, operator, value as text, value's
    Python type, collation), so tests can see exactly what crossed."""

    def execute(self, quals, columns, sortkeys=None):
        for q in quals:
            op = q.operator if isinstance(q.operator, str) else f"{q.operator[0]} {'ANY' if q.operator[1] else 'ALL'}"
            yield {
                "field": q.field_name,
                "operator": op,
                "value": repr(q.value),
                "pytype": type(q.value).__name__,
                "coll": q.collation,
            }
        if sortkeys:
            for k in sortkeys:
                yield {"field": k.attname, "operator": "ORDER BY", "value": repr(k), "pytype": "SortKey"}


class SortedWrapper(SeriesWrapper):
    """A series that can produce rows ordered by id (descending if asked)."""

    def can_sort(self, sortkeys):
        return [k for k in sortkeys[:1] if k.attname == "id"]

    def execute(self, quals, columns, sortkeys=None, limit=None):
        order = range(self.rows)
        if sortkeys and sortkeys[0].is_reversed:
            order = reversed(order)
        if limit is not None:
            spi.notice(f"limit {limit}")
            order = list(order)[:limit]
        for i in order:
            yield {name: self._value(name, i) for name in columns}


class ExactWrapper(SeriesWrapper):
    """Applies ``id`` comparisons itself and says so (no recheck); to prove
    that exact quals are really left to the wrapper, it can be told to lie."""

    options_spec = {
        "table": {**SeriesWrapper.options_spec["table"], "lie": OptionSpec(parse_bool, "ignore the quals")},
        "server": {},
    }

    def exact_quals(self, quals):
        return [q.field_name == "id" and q.operator in ("=", "<", ">") for q in quals]

    def execute(self, quals, columns, sortkeys=None):
        lie = parse_bool(self.options.get("lie", "false"))
        for i in range(self.rows):
            ok = True
            for q in quals:
                if lie or q.field_name != "id":
                    continue
                if q.operator == "=" and i != q.value or q.operator == "<" and not i < q.value \
                        or q.operator == ">" and not i > q.value:
                    ok = False
            if ok:
                yield {name: self._value(name, i) for name in columns}


class ErrorWrapper(ForeignDataWrapper):
    """Fails where its ``fail_in`` option says: init, execute, iterate,
    insert, or returns what its ``bad`` option says (wrong shapes)."""

    options_spec = {
        "table": {
            "fail_in": OptionSpec(str, "where to raise"),
            "bad": OptionSpec(str, "what wrong thing to yield"),
        },
    }

    def __init__(self, options, columns):
        super().__init__(options, columns)
        if options.get("fail_in") == "init":
            raise ValueError("failing in __init__ on purpose")

    def execute(self, quals, columns, sortkeys=None):
        where = self.options.get("fail_in")
        if where == "execute":
            raise ZeroDivisionError("failing in execute on purpose")
        bad = self.options.get("bad")
        if bad == "euro":
            yield {"t": "price in \u20ac"}
            return
        if bad == "scalar":
            yield 42
            return
        if bad == "short_tuple":
            yield (1,)
            return
        if bad == "wrong_type":
            yield {name: object() for name in self.columns}
            return
        if bad == "bad_batch_length":
            yield Batch(5, {"id": np.arange(3)})
            return
        if bad == "bad_offsets":
            yield Batch(2, {"t": Column(WireKind.TEXT, np.frombuffer(b"abc", np.uint8), None,
                                        np.array([0, 5, 2], dtype=np.int64))})
            return
        if bad == "bad_utf8":
            yield Batch(1, {"t": Column(WireKind.TEXT, np.frombuffer(b"\xff\xfe", np.uint8), None,
                                        np.array([0, 2], dtype=np.int64))})
            return
        if bad == "wrong_kind":
            yield Batch(2, {"id": Column(WireKind.FLOAT64, np.zeros(2), None, None)})
            return
        yield {"id": 1}
        if where == "iterate":
            raise KeyError("failing while iterating on purpose")

    def insert(self, values):
        raise RuntimeError("failing in insert on purpose")


class SlowWrapper(ForeignDataWrapper):
    """A Python loop that never ends by itself (for cancel and timeout tests)."""

    def execute(self, quals, columns, sortkeys=None):
        x = 0
        while True:
            x += 1


class SleepWrapper(ForeignDataWrapper):
    """Python sleeping in a C call (time.sleep): interrupted by signals too."""

    def execute(self, quals, columns, sortkeys=None):
        while True:
            time.sleep(0.05)


class HooksWrapper(ForeignDataWrapper):
    """Appends every transaction hook it receives to the file named by its
    ``log`` option, one JSON line each; yields one row."""

    options_spec = {"table": {"log": OptionSpec(str, "file to append hook calls to"),
                              "fail_in": OptionSpec(str, "a hook to raise in, after recording it")}}

    def _record(self, *event: Any) -> None:
        with open(self.options["log"], "a") as f:
            f.write(json.dumps(list(event)) + "\n")
        if self.options.get("fail_in") == event[0]:
            raise RuntimeError(f"failing in {event[0]} on purpose")

    def execute(self, quals, columns, sortkeys=None):
        yield {name: 1 for name in columns}

    def begin(self, serializable):
        self._record("begin", serializable)

    def pre_commit(self):
        self._record("pre_commit")

    def commit(self):
        self._record("commit")

    def rollback(self):
        self._record("rollback")

    def sub_begin(self, level):
        self._record("sub_begin", level)

    def sub_commit(self, level):
        self._record("sub_commit", level)

    def sub_rollback(self, level):
        self._record("sub_rollback", level)


class SpiTableWrapper(ForeignDataWrapper):
    """A table kept in a heap table through SPI, in the caller's
    transaction: the bridge's SPI, row ids, RETURNING and both insert paths.

    Options: ``target`` (the heap table, schema-qualified, with a bigserial
    ``id`` and the same other columns), ``batch`` (use insert_batch).
    """

    options_spec = {
        "table": {
            "target": OptionSpec(str, "heap table holding the rows"),
            "batch": OptionSpec(parse_bool, "receive inserts in batches"),
        },
    }

    def __init__(self, options, columns):
        super().__init__(options, columns)
        schema, _, name = options["target"].rpartition(".")
        self.target = (spi.quote_ident(schema) + "." if schema else "") + spi.quote_ident(name)
        self.use_batches = parse_bool(options.get("batch", "false"))
        self.insert_batch_size = 1000 if self.use_batches else 0
        self.batches_received = 0

    @property
    def rowid_column(self):
        return "id"

    def _cols(self, names):
        return ", ".join(spi.quote_ident(n) for n in names)

    def execute(self, quals, columns, sortkeys=None):
        names = list(self.columns)
        rows = spi.execute(f"SELECT {self._cols(names)} FROM {self.target} ORDER BY id")
        for row in rows:
            yield dict(zip(names, row))

    def insert(self, values):
        names = [n for n in self.columns if n != "id"]
        params = ", ".join(f"${i + 1}" for i in range(len(names)))
        res = spi.execute(
            f"INSERT INTO {self.target} ({self._cols(names)}) VALUES ({params}) RETURNING {self._cols(self.columns)}",
            [values.get(n) for n in names],
        )
        return dict(zip(self.columns, res.rows[0]))

    def insert_batch(self, batch):
        if not self.use_batches:
            for row in batch.to_pylist():
                self.insert(row)
            return
        self.batches_received += 1
        for row in batch.to_pylist():
            self.insert(row)

    def update(self, rowid, newvalues):
        names = [n for n in self.columns if n != "id"]
        sets = ", ".join(f"{spi.quote_ident(n)} = ${i + 2}" for i, n in enumerate(names))
        res = spi.execute(
            f"UPDATE {self.target} SET {sets} WHERE id = $1 RETURNING {self._cols(self.columns)}",
            [rowid] + [newvalues.get(n) for n in names],
        )
        return dict(zip(self.columns, res.rows[0])) if res.rows else None

    def delete(self, rowid):
        spi.execute(f"DELETE FROM {self.target} WHERE id = $1", [rowid])


class EchoTypesWrapper(ForeignDataWrapper):
    """Returns the rows most recently inserted into it in this backend, in
    whichever form they arrived; ``mode`` batch makes it take batches and
    give batches back (a round trip through both wire directions)."""

    options_spec = {"table": {"mode": OptionSpec(str, "row or batch", choices=("row", "batch"))}}
    _stored: dict[str, list] = {}

    def __init__(self, options, columns):
        super().__init__(options, columns)
        self.key = options["table_oid"]
        self.batch_mode = options.get("mode", "row") == "batch"
        self.insert_batch_size = 10_000 if self.batch_mode else 0

    def insert(self, values):
        self._stored.setdefault(self.key, []).append(("row", values))

    def insert_batch(self, batch):
        if not self.batch_mode:
            for row in batch.to_pylist():
                self.insert(row)
            return
        self._stored.setdefault(self.key, []).append(("batch", batch))

    def execute(self, quals, columns, sortkeys=None):
        for kind, item in self._stored.get(self.key, []):
            yield item

    def end_modify(self):
        pass


def pid() -> int:
    """The process id (to check which backend ran a wrapper)."""
    return os.getpid()



class SpiProbeWrapper(ForeignDataWrapper):
    """Runs SQL through SPI while scanning and reports what happened, one row
    per step: (step, outcome).  Exercises parameters, errors caught in
    sub-transactions, and work that survives a caught error."""

    options_spec = {"table": {"target": OptionSpec(str, "a heap table with an int column x")}}

    def execute(self, quals, columns, sortkeys=None):
        from orochi_fdw.errors import SPIError

        target = self.options["target"]
        res = spi.execute("SELECT $1::int + $2, $3::text || 'y', $4", [40, 2, "x", None])
        yield ("params", repr(res.rows[0]))
        try:
            spi.execute("SELECT 1 / 0")
        except SPIError as exc:
            yield ("caught", f"{exc.sqlstate} {exc.message}")
        with spi.subtransaction():
            spi.execute(f"INSERT INTO {spi.quote_ident(target)} VALUES ($1)", [1])
        try:
            with spi.subtransaction():
                spi.execute(f"INSERT INTO {spi.quote_ident(target)} VALUES ($1)", [2])
                spi.execute("SELECT 1 / 0")
        except SPIError:
            pass
        n = spi.execute(f"SELECT count(*), min(x) FROM {spi.quote_ident(target)}").rows[0]
        yield ("after_subxacts", repr(n))
        plan = spi.prepared("SELECT $1::int8 * 2")
        yield ("prepared", repr([plan.execute([i]).scalar() for i in range(3)]))
        yield ("typed", repr(spi.execute("SELECT $1", ["5"], types=["int4"]).scalar()))
        if self.options.get("raise_uncaught", "false") == "true":
            spi.execute(f"INSERT INTO {spi.quote_ident(target)} VALUES ($1)", [None])


class RowidBatchWrapper(ForeignDataWrapper):
    """A series delivered in batches with row ids (``rowid_column`` "ctid");
    UPDATE and DELETE report the row ids they receive as NOTICEs, so tests
    see the ids round-trip through Postgres."""

    options_spec = {"table": {"rows": OptionSpec(int, "rows")}}

    @property
    def rowid_column(self):
        return "ctid"

    def execute(self, quals, columns, sortkeys=None):
        n = int(self.options.get("rows", 10))
        ids = np.arange(n, dtype=np.int64)
        # row ids far apart, to exercise the whole 47-bit range
        yield Batch(n, {"id": ids}, rowids=ids * 3_000_000_007)

    def delete(self, rowid):
        spi.notice(f"delete {rowid}")

    def update(self, rowid, newvalues):
        spi.notice(f"update {rowid} {newvalues['id']}")
        return None


class AggregatingWrapper(SeriesWrapper):
    """A series that computes count, sum, min and max grouped by plain
    columns itself (aggregate pushdown), in plain Python."""

    FUNCS = {"count", "sum", "min", "max"}

    def can_aggregate(self, request, quals):
        if quals or any(g["kind"] != "column" for g in request["group_by"]):
            return None
        if any(a["func"] not in self.FUNCS or a["distinct"] for a in request["aggregates"]):
            return None
        return {"rows": 5, "startup_cost": 1.0, "total_cost": 2.0}

    def aggregate(self, request, quals):
        groups: dict[tuple, list[dict]] = {}
        for i in range(self.rows if quals is not None else 0):  # None: no row passes
            row = {n: self._value(n, i) for n in ("id", "v", "t", "g")}
            groups.setdefault(tuple(row[g["column"]] for g in request["group_by"]), []).append(row)
        if not request["group_by"] and not groups:
            groups[()] = []
        for key, rows in groups.items():
            out = {}
            for o in request["outputs"]:
                if o["kind"] == "group":
                    out[o["name"]] = key[o["index"]]
                    continue
                a = request["aggregates"][o["index"]]
                vals = rows if a["star"] else [r[a["column"]] for r in rows if r[a["column"]] is not None]
                if a["func"] == "count":
                    out[o["name"]] = len(vals)
                elif a["func"] == "sum":
                    out[o["name"]] = sum(vals) if vals else None
                else:
                    out[o["name"]] = (min if a["func"] == "min" else max)(vals, default=None)
            yield out


class CatalogWrapper(SeriesWrapper):
    """IMPORT FOREIGN SCHEMA: offers two generated tables, ``numbers`` and
    ``Mixed Case``, in any remote schema."""

    @classmethod
    def import_schema(cls, schema, srv_options, options, restriction_type, restricts):
        from orochi_fdw.bridge import ColumnDefinition, TableDefinition

        tables = [
            TableDefinition("numbers", [ColumnDefinition("id", 20, type_name=options.get("id_type", "bigint")),
                                        ColumnDefinition("v", 701, type_name="double precision")],
                            {"wrapper": f"{cls.__module__}.SeriesWrapper", "rows": options.get("rows", "3")}),
            TableDefinition("Mixed Case", [ColumnDefinition("t", 25, type_name="text")],
                            {"wrapper": f"{cls.__module__}.SeriesWrapper", "mode": "tuple"}),
        ]
        if restriction_type == "limit":
            tables = [t for t in tables if t.table_name in restricts]
        elif restriction_type == "except":
            tables = [t for t in tables if t.table_name not in restricts]
        return tables


class SnapshotProbeWrapper(ForeignDataWrapper):
    """Counts the rows of a heap table twice during one scan, with a pause in
    between, through SPI in read-only mode (the statement's snapshot) or not;
    one row: (first, second)."""

    options_spec = {"table": {"target": OptionSpec(str, "a heap table"),
                              "read_only": OptionSpec(str, "true or false"),
                              "pause": OptionSpec(float, "seconds between the counts")}}

    def execute(self, quals, columns, sortkeys=None):
        target = spi.quote_ident(self.options["target"])
        read_only = self.options.get("read_only", "true") == "true"
        first = spi.execute(f"SELECT count(*) FROM {target}", read_only=read_only).scalar()
        spi.execute("SELECT pg_sleep($1)", [float(self.options.get("pause", "0.5"))])
        second = spi.prepared(f"SELECT count(*) FROM {target}").execute(read_only=read_only).scalar()
        yield (int(first), int(second))


class SqlWrapper(ForeignDataWrapper):
    """Runs the SQL of its ``sql`` option through SPI when scanned and yields
    the result's rows (the table's columns in order take the result's).

    Options: ``catch`` (true: an exception of the SQL is caught and the scan
    yields one row holding its text instead, as a wrapper that "handles"
    errors would), ``subtransaction`` (true: inside ``spi.subtransaction()``),
    ``read_only`` (true: SPI's read-only mode).
    """

    options_spec = {"table": {"sql": OptionSpec(str, "the statement to run"),
                              "catch": OptionSpec(parse_bool, "catch the SQL's exception"),
                              "subtransaction": OptionSpec(parse_bool, "run it in a sub-transaction"),
                              "read_only": OptionSpec(parse_bool, "SPI's read-only mode"),
                              "thread": OptionSpec(parse_bool, "run it from another Python thread")}}

    def _run(self):
        if parse_bool(self.options.get("thread", "false")):
            import threading

            outcome: dict = {}

            def work():
                try:
                    outcome["result"] = self._run_here()
                except BaseException as exc:  # noqa: BLE001 - handed to the scan
                    outcome["error"] = exc

            t = threading.Thread(target=work)
            t.start()
            t.join()
            if "error" in outcome:
                raise outcome["error"]
            return outcome["result"]
        return self._run_here()

    def _run_here(self):
        read_only = parse_bool(self.options.get("read_only", "false"))
        if parse_bool(self.options.get("subtransaction", "false")):
            with spi.subtransaction():
                return spi.execute(self.options["sql"], read_only=read_only)
        return spi.execute(self.options["sql"], read_only=read_only)

    def execute(self, quals, columns, sortkeys=None):
        if parse_bool(self.options.get("catch", "false")):
            try:
                result = self._run()
            except Exception as exc:  # noqa: BLE001 - what a careless wrapper does
                yield tuple([f"caught {type(exc).__name__}: {exc}"] + [None] * (len(self.columns) - 1))
                return
        else:
            result = self._run()
        for row in result.rows:
            yield tuple(row)


class FinalizerWrapper(ForeignDataWrapper):
    """Yields ``rows`` rows (column ``x`` = 0, 1, ...) from a generator that
    runs SQL in its ``finally`` block and from an object's ``__del__``: when
    the query stops early (an error above the scan, a LIMIT) the generator is
    closed by the bridge, possibly while Postgres unwinds or aborts.  What the
    finalizers managed to do is appended to the file named by ``log`` (one
    line each).  With ``hold_subtransaction`` it yields inside a
    ``spi.subtransaction()`` (which the bridge refuses).
    """

    options_spec = {"table": {"rows": OptionSpec(int, "rows to yield"),
                              "log": OptionSpec(str, "file to append outcomes to"),
                              "hold_subtransaction": OptionSpec(parse_bool, "yield inside a sub-transaction"),
                              "params": OptionSpec(parse_bool, "instead, pass SQL a parameter whose "
                                                   "conversion fails and whose __del__ runs SQL")}}

    def _note(self, text: str) -> None:
        with open(self.options["log"], "a") as f:
            f.write(text + "\n")

    def _bad_parameter(self):
        wrapper = self

        class BadValue:
            def __str__(self):
                return "not a number"

            def __del__(self):
                try:
                    spi.execute("SELECT 1 / 0")
                    wrapper._note("param del: sql ran")
                except BaseException as exc:  # noqa: BLE001 - recorded
                    wrapper._note(f"param del: {type(exc).__name__}: {exc}")

        class Params:
            def __len__(self):
                return 1

            def __getitem__(self, i):
                if i != 0:
                    raise IndexError(i)
                return BadValue()  # only the bridge holds it

        spi.execute("SELECT $1", Params(), types=["int4"])
        yield {"x": 0}

    def execute(self, quals, columns, sortkeys=None):
        if parse_bool(self.options.get("params", "false")):
            return self._bad_parameter()
        return self._rows()

    def _rows(self):
        wrapper = self

        class Sentinel:
            def __del__(self):
                try:
                    spi.execute("SELECT 1")
                    wrapper._note("del: sql ran")
                except BaseException as exc:  # noqa: BLE001 - recorded
                    wrapper._note(f"del: {type(exc).__name__}: {exc}")

        sentinel = Sentinel()
        rows = int(self.options.get("rows", "10"))
        try:
            if parse_bool(self.options.get("hold_subtransaction", "false")):
                with spi.subtransaction():
                    for i in range(rows):
                        yield {"x": i}
            else:
                for i in range(rows):
                    yield {"x": i}
        finally:
            del sentinel
            try:
                spi.log("log", "finalizer wrapper: finally block")
                spi.execute("SELECT 1")
                self._note("finally: sql ran")
            except BaseException as exc:  # noqa: BLE001 - recorded
                self._note(f"finally: {type(exc).__name__}: {exc}")


class KernelWrapper(ForeignDataWrapper):
    """One kernel call that runs for a long time without the GIL: HyperLogLog
    registers updated from ``rows`` zeros (an array of untouched zero pages,
    so it costs no memory); yields one row (x = the number of registers set).
    For cancel tests of the kernels."""

    options_spec = {"table": {"rows": OptionSpec(int, "values to hash")}}

    def execute(self, quals, columns, sortkeys=None):
        from orochi_fdw.kernels import sketches

        values = np.zeros(int(self.options.get("rows", "1000")), dtype=np.int64)
        registers = np.zeros(1 << 14, dtype=np.uint8)
        sketches.hll_update_int64(registers, values, 14)
        yield {"x": int(np.count_nonzero(registers))}


class LogWrapper(ForeignDataWrapper):
    """Logs through the bridge while scanning: a NOTICE of its ``message``,
    then the same message with a NUL character appended (which text cannot
    hold); yields one row per attempt: the outcome."""

    options_spec = {"table": {"message": OptionSpec(str, "text to log")}}

    def execute(self, quals, columns, sortkeys=None):
        from orochi_fdw.errors import SPIError

        message = self.options.get("message", "hello")
        for text in (message, message + "\0"):
            try:
                spi.notice(text)
                yield ("logged",)
            except SPIError as exc:
                yield (f"{exc.sqlstate} {exc.message}",)


class ReleaseWrapper(ForeignDataWrapper):
    """Yields one row: the file this module was imported from (which
    installed release of orochi the backend runs; for install tests)."""

    def execute(self, quals, columns, sortkeys=None):
        yield {name: __file__ for name in columns}
