"""What a statement on a distributed table sends to which worker.

- :func:`prune` keeps the shards a query's quals on the distribution column
  can match (``=``, ``IN`` / ``= ANY``, with constants or parameters); when
  unsure it keeps them all (a superset is always correct).
- :class:`RemoteQuals` renders the quals a worker can apply exactly as SQL
  over the shard's columns, every value a ``$n`` parameter in text form
  cast to the type the coordinator compared with (see
  :mod:`orochi_fdw.cluster.values`).
- :func:`shard_tasks` groups the shards by the node that serves them: one
  task, one statement (the shards' SELECTs joined by UNION ALL), per node.

SQL is composed with psycopg.sql: identifiers quoted, values only as
parameters; operator names come from a fixed list and type names from the
catalog's format_type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from psycopg import sql

from orochi_fdw.bridge import runtime
from orochi_fdw.bridge.api import Qual
from orochi_fdw.cluster import hashing, metadata
from orochi_fdw.cluster import values as V
from orochi_fdw.cluster.metadata import ColumnInfo, DistTable, Node, Shard

#: operators a worker applies with the same meaning
_SCALAR_OPERATORS = {"=", "<>", "<", "<=", ">", ">="}
_LIKE_OPERATORS = {"~~", "~~*", "!~~", "!~~*"}
#: column types LIKE is shipped for (the pattern goes as text)
_LIKE_TYPES = ("text", "character varying", "character", "name")


class Params:
    """The parameters of one remote statement, in text form."""

    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def add(self, text: str | None) -> sql.Composable:
        self.values.append(None if text is None else text.encode("utf-8"))
        return sql.SQL(f"${len(self.values)}")


def base_type(column: ColumnInfo) -> str:
    """A column's type without modifiers (varchar(10) -> character varying)."""
    t = column.type
    if "(" in t:
        head, _, tail = t.partition("(")
        t = head + tail.partition(")")[2]
    return t.strip()


def _cast(ph: sql.Composable, type_name: str, array: bool = False) -> sql.Composable:
    return sql.SQL("{}::{}{}").format(ph, sql.SQL(type_name), sql.SQL("[]" if array else ""))


class RemoteQuals:
    """The quals a worker applies exactly, rendered against the shard's
    columns (by name)."""

    def __init__(self, table: DistTable, columns: dict[str, ColumnInfo]):
        self.table = table
        self.columns = columns

    def shippable(self, q: Qual) -> bool:
        """Whether the qual can be shipped exactly, whatever its value turns
        out to be at execution."""
        col = self.columns.get(q.field_name)
        if col is None:
            return False
        op = q.operator_name
        if op not in _SCALAR_OPERATORS and op not in _LIKE_OPERATORS:
            return False
        if not self._collation_ok(q, col):
            return False
        if op in _LIKE_OPERATORS and base_type(col) not in _LIKE_TYPES:
            return False
        value = q.value
        if value is runtime.UNKNOWN:
            vt = q.value_type or ""
            if q.is_list_operator:
                if not vt.endswith("[]"):
                    return False
                vt = vt[:-2]
            if op in _LIKE_OPERATORS:
                return vt in V.TEXT_TYPES
            return V.planned_type_ok(vt, base_type(col))
        if value is None:
            return True
        return self.render(q, Params()) is not None

    @staticmethod
    def _collation_ok(q: Qual, col: ColumnInfo) -> bool:
        coll = q.collation
        if coll in (None, "default") or coll == col.collation:
            return True
        # the shard column has the coordinator column's collation: only a
        # COLLATE naming that one (or byte order under a C database) is the same
        return coll in ("C", "POSIX") and col.collation in ("C", "POSIX")

    def render(self, q: Qual, params: Params) -> sql.Composable | None:
        """The qual as SQL, or None if it cannot be shipped exactly."""
        col = self.columns.get(q.field_name)
        if col is None:
            return None
        ident = sql.Identifier(col.name)
        op = q.operator_name
        value = q.value
        if value is runtime.UNKNOWN:
            return None
        if value is None and not q.is_list_operator:
            if op == "=":
                return sql.SQL("{} IS NULL").format(ident)
            if op == "<>":
                return sql.SQL("{} IS NOT NULL").format(ident)
            return None
        if op not in _SCALAR_OPERATORS and op not in _LIKE_OPERATORS:
            return None
        ctype = base_type(col)
        if q.is_list_operator:
            items = list(value)
            quant = sql.SQL("ANY" if q.list_any_or_all else "ALL")
            if not items:
                return sql.SQL("false" if q.list_any_or_all else "true")
            if all(v is None for v in items):
                return sql.SQL("false")
            etype = "text" if op in _LIKE_OPERATORS else V.list_sql_type(items, ctype)
            if etype is None:
                return None
            try:
                texts = [V.to_text(v) for v in items]
            except TypeError:
                return None
            ph = params.add(V.array_literal(texts))
            return sql.SQL("{} {} {} ({})").format(ident, sql.SQL(op), quant, _cast(ph, etype, array=True))
        vtype = "text" if op in _LIKE_OPERATORS else V.value_sql_type(value, ctype)
        if vtype is None:
            return None
        try:
            text = V.to_text(value)
        except TypeError:
            return None
        return sql.SQL("{} {} {}").format(ident, sql.SQL(op), _cast(params.add(text), vtype))

    def where(self, quals: Iterable[Qual], params: Params) -> tuple[sql.Composable, list[Qual]]:
        """A WHERE clause of the quals that render; and those that do not."""
        parts = []
        rest = []
        for q in quals:
            frag = self.render(q, params)
            if frag is None:
                rest.append(q)
            else:
                parts.append(frag)
        if not parts:
            return sql.SQL(""), rest
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), rest


# ------------------------------------------------------------------ pruning


def prune(table: DistTable, quals: list[Qual], dist_column: str | None) -> tuple[list[Shard], bool]:
    """The shards the quals can match, and whether pruning applied.

    Only equality and ``= ANY`` with values known now prune; a NULL value
    (no row's distribution value is NULL) or a value the column's type
    cannot hold leaves no shard.  Anything unsure keeps every shard.
    """
    shards = list(table.shards)
    if table.is_reference or dist_column is None:
        return shards, False
    col = table.column_by_attnum(table.dist_attnum)
    keep: set[int] | None = None
    for q in quals:
        if q.field_name != dist_column or q.operator_name != "=":
            continue
        if q.value is runtime.UNKNOWN:
            continue
        if q.is_list_operator:
            if not q.list_any_or_all:
                continue
            candidates = [] if q.value is None else list(q.value)
        else:
            candidates = [q.value]
        if q.collation not in (None, "default") and col is not None and q.collation != col.collation \
                and q.collation not in ("C", "POSIX"):
            continue
        indexes = _shard_indexes(table, col, candidates)
        if indexes is None:
            continue
        keep = indexes if keep is None else keep & indexes
    if keep is None:
        return shards, False
    return [s for s in shards if s.shard_index in keep], True


def _shard_indexes(table: DistTable, col: ColumnInfo | None, candidates: list) -> set[int] | None:
    """Shard indexes of values compared for equality with the distribution
    column; None when a value cannot be hashed as the column's type."""
    if col is None:
        return None
    fn = hashing.hash_function(table.dist_type)
    ctype = base_type(col)
    exacts = []
    for v in candidates:
        if v is None:
            continue  # = NULL matches nothing
        exact = _as_column_value(v, ctype)
        if exact is _NOT_EXACT:
            return None
        if exact is _NO_MATCH:
            continue
        exacts.append(exact)
    if not exacts:
        return set()
    if ctype in _INT_RANGES and fn.fast in ("INT16", "INT32", "INT64"):
        # integers hash in numpy, as inserts do (no round trip through SQL)
        import numpy as np

        if ctype == "bigint":
            hashes = hashing.hash_int8(np.array(exacts, dtype=np.int64)).tolist()
        else:
            hashes = hashing.hash_uint32(np.array(exacts, dtype=np.int64).astype(np.int32).view(np.uint32)).tolist()
    else:
        hashes = fn.hash_texts([V.to_text(x) for x in exacts])
    return {metadata.shard_index_for_hash(h, table.shard_count) for h in hashes if h is not None}


_NOT_EXACT = object()
_NO_MATCH = object()

_INT_RANGES = {"smallint": 16, "integer": 32, "bigint": 64}


def _as_column_value(v: Any, column_type: str) -> Any:
    """The value of the column's type equal to ``v``, _NO_MATCH if none can
    be, or _NOT_EXACT when not sure."""
    import decimal

    if column_type in _INT_RANGES:
        bits = _INT_RANGES[column_type]
        if isinstance(v, bool):
            return _NOT_EXACT
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return _NO_MATCH
            if not v.is_integer():
                return _NO_MATCH
            v = int(v)
        elif isinstance(v, decimal.Decimal):
            if not v.is_finite():
                return _NO_MATCH
            if v != v.to_integral_value():
                return _NO_MATCH
            v = int(v)
        if not isinstance(v, int):
            return _NOT_EXACT
        if not -(2 ** (bits - 1)) <= v < 2 ** (bits - 1):
            return _NO_MATCH
        return v
    if column_type in V.TEXT_TYPES:
        return v if isinstance(v, str) else _NOT_EXACT
    # other types: only values of the column's own type (strings were
    # coerced to it by the planner); anything else is not sure
    vt = V.value_sql_type(v, column_type)
    return v if vt == column_type else _NOT_EXACT


# ------------------------------------------------------------------ tasks


@dataclass
class Task:
    """One statement for one node, covering some shards."""

    node: Node
    shards: list[Shard]
    sql: bytes
    #: the parameters' text; None for several statements in one (simple protocol)
    params: list[bytes | None] | None = field(default_factory=list)


def placement(table: DistTable, shard: Shard, nodes: dict[int, Node], preferred: set[int]) -> Node:
    """The node to read a shard from: its only placement, or for a reference
    table one a session of this transaction already uses, else the first."""
    choices = [nodes[n] for n in shard.node_ids if n in nodes and nodes[n].is_active]
    if not choices:
        from orochi_fdw.cluster.errors import ClusterError

        raise ClusterError(f"shard {shard.shard_id} has no active placement", "XX000")
    for node in choices:
        if node.node_id in preferred:
            return node
    return choices[0]


def by_node(table: DistTable, shards: list[Shard], preferred: set[int]) -> dict[int, tuple[Node, list[Shard]]]:
    nodes = metadata.nodes()
    out: dict[int, tuple[Node, list[Shard]]] = {}
    for shard in shards:
        node = placement(table, shard, nodes, preferred)
        out.setdefault(node.node_id, (node, []))[1].append(shard)
    return out


def by_node_all(table: DistTable) -> dict[int, tuple[Node, list[Shard]]]:
    """Every placement of every shard, by node (for writes to all copies)."""
    nodes = metadata.nodes()
    out: dict[int, tuple[Node, list[Shard]]] = {}
    for shard in table.shards:
        for node_id in shard.node_ids:
            out.setdefault(node_id, (nodes[node_id], []))[1].append(shard)
    return out


def shard_ident(table: DistTable, shard: Shard) -> sql.Identifier:
    return sql.Identifier(*table.shard_name(shard))


def union_all(branches: list[sql.Composable]) -> sql.Composable:
    if len(branches) == 1:
        return branches[0]
    return sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(b) for b in branches)
