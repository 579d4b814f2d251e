"""The query of a continuous aggregate, read and rewritten with pglast
(PostgreSQL's own parser).

A continuous aggregate's query has the shape::

    SELECT time_bucket(<width>, <time column>) [AS bucket], <group columns>, <aggregates>
      FROM <hypertable> [AS alias]
     [WHERE ...]
     GROUP BY <the bucket>, <group columns>
    [HAVING ...]

Every group lies in one bucket, so a bucket can be recomputed on its own from
the raw rows of its time range: :func:`with_time_range` adds
``time_col >= lower AND time_col < upper`` to the WHERE clause, which the scan
of the hypertable uses for chunk exclusion and pushdown.

Accepted bucket functions: ``time_bucket`` (with or without the ``orochi``
schema, any of its overloads), ``date_bin``, and ``date_trunc`` on timestamp
(without time zone) time columns.  The other arguments of the bucket function
must be constants.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from orochi_fdw.errors import OrochiError

if TYPE_CHECKING:  # pragma: no cover
    import pglast
    from pglast import ast
    from pglast.enums import BoolExprType
    from pglast.stream import RawStream
else:
    # pglast is imported at the first use (about 76 ms), not with the module:
    # every backend's first orochi SQL function imports this module.
    pglast = ast = BoolExprType = RawStream = None


def _import_pglast() -> None:
    """Import pglast's parser with its own symbols bound first.

    Its extension module embeds a copy of PostgreSQL's parser (libpg_query)
    and exports that copy's ``palloc``, ``CurrentMemoryContext`` ... Loaded
    into a backend, those names would resolve to the server's own functions
    and variables (which the backend exports), mixing two allocators: the
    module is opened with ``RTLD_DEEPBIND`` so that it uses its own.
    """
    if "pglast.parser" in sys.modules:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        importlib.import_module("pglast.parser")
    finally:
        sys.setdlopenflags(flags)


def _load() -> None:
    """Import pglast (once) and bind the names this module uses."""
    global pglast, ast, BoolExprType, RawStream
    if pglast is not None:
        return
    _import_pglast()
    import pglast as _pglast
    from pglast import ast as _ast
    from pglast.enums import BoolExprType as _BoolExprType
    from pglast.stream import RawStream as _RawStream

    pglast, ast, BoolExprType, RawStream = _pglast, _ast, _BoolExprType, _RawStream

#: bucket function name -> (position of the width, position of the time argument)
_BUCKET_FUNCTIONS: dict[str, tuple[int, int]] = {"time_bucket": (0, 1), "date_bin": (0, 1), "date_trunc": (0, 1)}

#: date_trunc's fields -> the width of its buckets
_DATE_TRUNC_WIDTHS = {
    "microseconds": "1 microsecond", "milliseconds": "1 millisecond", "second": "1 second", "minute": "1 minute",
    "hour": "1 hour", "day": "1 day", "week": "7 days", "month": "1 month", "quarter": "3 months",
    "year": "1 year", "decade": "10 years", "century": "100 years", "millennium": "1000 years",
}


class ContinuousAggregateError(OrochiError):
    """An error of a continuous aggregate that a user can hit: an unsupported
    query, an unknown aggregate, a name already taken...

    Args:
        message: the error message (lowercase, no period).
        sqlstate: the SQLSTATE to report (default 0A000, feature_not_supported).
        hint: an optional hint for the user.
        detail: an optional detail (full sentences).
    """

    def __init__(self, message: str, sqlstate: str = "0A000", hint: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail


def _unsupported(what: str, hint: str | None = None) -> ContinuousAggregateError:
    return ContinuousAggregateError(f"invalid continuous aggregate query: {what}", "0A000", hint=hint)


_SHAPE_HINT = ("A continuous aggregate is SELECT time_bucket(<width>, <time column>), <columns>, "
               "<aggregates> FROM <hypertable> [WHERE ...] GROUP BY time_bucket(...), <columns>.")


@dataclass(frozen=True)
class ParsedQuery:
    """A continuous aggregate's query, checked for its overall shape.

    Attributes:
        select: the SELECT statement's tree.
        relation: the one relation of its FROM clause.
    """

    select: ast.SelectStmt
    relation: ast.RangeVar

    @property
    def relation_name(self) -> str:
        """The relation as written, quoted (``schema.name`` or ``name``)."""
        parts = [p for p in (self.relation.schemaname, self.relation.relname) if p]
        return ".".join(_quote_ident(p) for p in parts)


@dataclass(frozen=True)
class Bucket:
    """The bucket of a continuous aggregate.

    Attributes:
        position: index (0-based) of the bucket in the select list.
        output_name: the name of the select list's bucket column, if it has an
            alias (else the output name is the function's name).
        function: the bucket function call (its time argument is the time column).
        time_argument: position of the time column among the call's arguments.
        width_sql: SQL of the width argument.
    """

    position: int
    output_name: str | None
    function: ast.FuncCall
    time_argument: int
    width_sql: str

    def applied_to(self, argument_sql: str) -> str:
        """SQL of the bucket function applied to another time argument.

        Args:
            argument_sql: SQL of the argument (``$1``, a column, ...).

        Returns:
            The call with its time argument replaced, e.g.
            ``orochi.time_bucket('1 hour', $1)``.
        """
        argument = _expression(argument_sql)
        args = list(self.function.args)
        args[self.time_argument] = argument
        return _stream(_replaced(self.function, args=tuple(args)))


def _quote_ident(name: str) -> str:
    from orochi_fdw.bridge import spi

    return spi.quote_ident(name)


def _replaced(node: ast.Node, **changes: Any) -> ast.Node:
    """A shallow copy of a node with some attributes changed."""
    copied = copy.copy(node)
    for name, value in changes.items():
        setattr(copied, name, value)
    return copied


def _stream(node: ast.Node) -> str:
    return RawStream()(node)


def _expression(sql: str) -> ast.Node:
    """The tree of one SQL expression."""
    _load()
    return pglast.parse_sql(f"SELECT {sql}")[0].stmt.targetList[0].val


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every node of a tree, depth first (the node itself included)."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)


def _function_name(call: ast.FuncCall) -> tuple[str | None, str]:
    names = [n.sval for n in call.funcname]
    return (names[0] if len(names) > 1 else None, names[-1])


def parse_query(sql: str) -> ParsedQuery:
    """Parse a continuous aggregate's query and check its overall shape.

    Args:
        sql: the query's text.

    Returns:
        The parsed query.

    Raises:
        ContinuousAggregateError: a syntax error (42601), more than one
            statement, not a SELECT, or a construct that cannot be refreshed
            bucket by bucket (0A000).
    """
    _load()
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as e:
        raise ContinuousAggregateError(f"invalid continuous aggregate query: {e}", "42601") from None
    if len(statements) != 1:
        raise _unsupported("expected exactly one statement")
    select = statements[0].stmt
    if not isinstance(select, ast.SelectStmt) or select.valuesLists:
        raise _unsupported("expected a SELECT statement", _SHAPE_HINT)
    if select.op is not None and select.op.value != 0:
        raise _unsupported("UNION, INTERSECT and EXCEPT are not supported")
    checks = [
        (select.withClause, "WITH is not supported"),
        (select.intoClause, "SELECT INTO is not supported"),
        (select.distinctClause, "DISTINCT is not supported", "count(DISTINCT ...) is."),
        (select.sortClause, "ORDER BY is not supported", "Order the rows when querying the view."),
        (select.limitCount or select.limitOffset, "LIMIT and OFFSET are not supported"),
        (select.lockingClause, "FOR UPDATE and FOR SHARE are not supported"),
        (select.windowClause, "window functions are not supported"),
    ]
    for check in checks:
        if check[0]:
            raise _unsupported(check[1], check[2] if len(check) > 2 else None)
    if not select.fromClause or len(select.fromClause) != 1 or not isinstance(select.fromClause[0], ast.RangeVar):
        raise _unsupported("the FROM clause must name exactly one hypertable (no joins or subqueries)",
                           _SHAPE_HINT)
    relation = select.fromClause[0]
    if relation.catalogname:
        raise _unsupported("cross-database references are not supported")
    if not relation.inh:
        raise _unsupported("FROM ONLY is not supported")
    for node in _walk(select):
        if isinstance(node, ast.FuncCall) and node.over is not None:
            raise _unsupported("window functions are not supported")
        if isinstance(node, ast.SubLink):
            raise _unsupported("subqueries are not supported")
        if isinstance(node, ast.ParamRef):
            raise _unsupported("parameters ($n) are not supported")
        if isinstance(node, ast.GroupingSet):
            raise _unsupported("GROUPING SETS, ROLLUP and CUBE are not supported")
        if isinstance(node, ast.A_Star):
            raise _unsupported("* in the select list is not supported", "Name the columns.")
    if not select.groupClause:
        raise _unsupported("the query must be an aggregate with GROUP BY on a time bucket", _SHAPE_HINT)
    return ParsedQuery(select, relation)


def _is_time_column(node: Any, time_column: str, qualifiers: set[str]) -> bool:
    if not isinstance(node, ast.ColumnRef):
        return False
    fields = node.fields
    if not all(isinstance(f, ast.String) for f in fields):
        return False
    names = [f.sval for f in fields]
    if names[-1] != time_column:
        return False
    return len(names) == 1 or (len(names) == 2 and names[0] in qualifiers)


def _qualifiers(parsed: ParsedQuery) -> set[str]:
    relation = parsed.relation
    if relation.alias is not None:
        return {relation.alias.aliasname}
    return {relation.relname}


def _date_trunc_width(call: ast.FuncCall, time_type: str | None) -> str:
    """SQL of the bucket width of ``date_trunc(field, time column)``.

    Raises:
        ContinuousAggregateError: a time column other than a timestamp
            without time zone (date_trunc of a timestamptz, or of a date made
            one, depends on the session's time zone), a time zone argument, or
            a field that is not a constant width.
    """
    if time_type != "timestamp without time zone" or len(call.args) != 2:
        raise _unsupported("date_trunc is supported on timestamp (without time zone) time columns only",
                           "Use time_bucket, which buckets timestamptz in UTC whatever the session's time zone.")
    field = call.args[0]
    if isinstance(field, ast.TypeCast):
        field = field.arg
    unit = field.val.sval.lower() if isinstance(field, ast.A_Const) and isinstance(field.val, ast.String) else None
    if unit not in _DATE_TRUNC_WIDTHS:
        raise _unsupported(f"date_trunc field {_stream(call.args[0])} is not supported")
    return f"CAST('{_DATE_TRUNC_WIDTHS[unit]}' AS interval)"


def find_bucket(parsed: ParsedQuery, time_column: str, time_type: str | None = None) -> Bucket:
    """Find the bucket of the query: a bucket function over the hypertable's
    time column in the select list, also grouped by.

    Args:
        parsed: the parsed query.
        time_column: the hypertable's time column.
        time_type: its type (regtype text), which decides whether date_trunc
            may bucket it.

    Returns:
        The bucket.

    Raises:
        ContinuousAggregateError: no bucket function over the time column in
            the select list, more than one, not in GROUP BY, or whose other
            arguments are not constants (0A000).
    """
    qualifiers = _qualifiers(parsed)
    select = parsed.select
    found: list[tuple[int, ast.ResTarget, ast.FuncCall, int]] = []
    for position, target in enumerate(select.targetList):
        call = target.val
        if not isinstance(call, ast.FuncCall):
            continue
        schema, name = _function_name(call)
        if name not in _BUCKET_FUNCTIONS or schema not in (None, "orochi", "pg_catalog"):
            continue
        width_at, time_at = _BUCKET_FUNCTIONS[name]
        args = call.args or ()
        if len(args) <= time_at or not _is_time_column(args[time_at], time_column, qualifiers):
            continue
        for i, arg in enumerate(args):
            if i != time_at and any(isinstance(n, (ast.ColumnRef, ast.FuncCall)) for n in _walk(arg)):
                raise _unsupported(f"the arguments of {name} other than the time column must be constants")
        found.append((position, target, call, time_at))
    if not found:
        raise _unsupported(f'no time_bucket on the time column "{time_column}" in the select list', _SHAPE_HINT)
    if len(found) > 1:
        raise _unsupported(f'more than one time_bucket on the time column "{time_column}"')
    position, target, call, time_at = found[0]
    if _function_name(call)[1] == "time_bucket" and _has_time_zone(call):
        raise _unsupported(
            "time_bucket with a time zone is not supported",
            "Its buckets are not a fixed width of the time column (days of 23 or 25 hours around daylight "
            "saving changes). Use time_bucket without a time zone (buckets in UTC), or name the origin "
            "argument with a type: origin => timestamptz '...'.")
    call_sql = _stream(call)
    grouped = False
    for item in select.groupClause:
        if isinstance(item, ast.A_Const) and isinstance(item.val, ast.Integer) and item.val.ival == position + 1:
            grouped = True
        elif (target.name and isinstance(item, ast.ColumnRef) and len(item.fields) == 1
              and isinstance(item.fields[0], ast.String) and item.fields[0].sval == target.name):
            grouped = True
        elif isinstance(item, ast.FuncCall) and _stream(item) == call_sql:
            grouped = True
    if not grouped:
        raise _unsupported(f"the time bucket {call_sql} must be in GROUP BY", _SHAPE_HINT)
    name = _function_name(call)[1]
    if name == "date_trunc":
        width_sql = _date_trunc_width(call, time_type)
    else:
        width_sql = _stream(call.args[_BUCKET_FUNCTIONS[name][0]])
    return Bucket(position, target.name, call, time_at, width_sql)


def _has_time_zone(call: ast.FuncCall) -> bool:
    """Whether a time_bucket call is the time zone form
    (``time_bucket(width, ts, timezone [, origin] [, "offset"])``): a
    ``timezone`` argument by name, four or more arguments, or a third one
    that is an untyped string or text (which PostgreSQL resolves to that
    form)."""
    args = list(call.args or ())
    if any(isinstance(a, ast.NamedArgExpr) and a.name == "timezone" for a in args):
        return True
    positional = [a for a in args if not isinstance(a, ast.NamedArgExpr)]
    if len(positional) >= 4:
        return True
    if len(positional) == 3:
        third = positional[2]
        if isinstance(third, ast.A_Const) and isinstance(third.val, ast.String):
            return True
        if isinstance(third, ast.TypeCast):
            names = [n.sval for n in third.typeName.names]
            return names[-1] in ("text", "varchar", "bpchar", "name")
    return False


def _and(left: ast.Node | None, right: ast.Node) -> ast.Node:
    if left is None:
        return right
    return ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=(left, right))


def with_time_range(parsed: ParsedQuery, time_column: str, lower_sql: str | None, upper_sql: str | None,
                    relation_sql: str | None = None) -> str:
    """The query restricted to ``lower <= time column < upper``.

    Args:
        parsed: the parsed query.
        time_column: the hypertable's time column.
        lower_sql: SQL of the inclusive lower bound (``$1``, ...), None for none.
        upper_sql: SQL of the exclusive upper bound, None for none.
        relation_sql: SQL naming the hypertable (schema-qualified) to put in
            FROM instead of the name as written; the original name stays as the
            alias so that qualified column references still resolve.

    Returns:
        The SQL of the restricted query.
    """
    select = parsed.select
    column = _quote_ident(time_column)
    where = select.whereClause
    if lower_sql is not None:
        where = _and(where, _expression(f"{column} >= {lower_sql}"))
    if upper_sql is not None:
        where = _and(where, _expression(f"{column} < {upper_sql}"))
    relation = parsed.relation
    if relation_sql is not None:
        named = pglast.parse_sql(f"SELECT 1 FROM {relation_sql}")[0].stmt.fromClause[0]
        alias = relation.alias or ast.Alias(aliasname=relation.relname)
        relation = _replaced(named, alias=alias)
    return _stream(_replaced(select, whereClause=where, fromClause=(relation,)))
