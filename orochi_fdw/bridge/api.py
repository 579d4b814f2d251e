"""The Python API a foreign-data wrapper implements.

Names and meanings follow Multicorn where Multicorn has them, so that anyone
who has written a Multicorn wrapper can read an Orochi one; what Multicorn
lacks (batch scans, batch inserts, exact quals, option specs) is added here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from orochi_fdw.errors import InvalidOptionError, InvalidOptionValueError


@dataclass(frozen=True)
class ColumnDefinition:
    """A column of a foreign table.

    Attributes:
        column_name: the column's name.
        type_oid: its type's oid.
        typmod: its type modifier (-1 if none).
        type_name: its type as format_type shows it (``numeric(10,2)``).
        attnum: its attribute number in the table (dropped columns leave gaps).
        not_null: whether the column is declared NOT NULL.
        options: the column's options (``OPTIONS (...)`` on the column).
    """

    column_name: str
    type_oid: int
    typmod: int = -1
    type_name: str = ""
    attnum: int = 0
    not_null: bool = False
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_type_name(self) -> str:
        """The type name without modifiers (``numeric``)."""
        return self.type_name.split("(", 1)[0]


@dataclass(frozen=True)
class Qual:
    """A condition of the query on one column, for the wrapper to use.

    ``operator`` is the operator's name (``=``, ``<``, ``~~`` for LIKE, ``~~*``
    for ILIKE ...); for ``col op ANY(array)`` / ``col op ALL(array)`` it is the
    tuple ``(name, True)`` for ANY and ``(name, False)`` for ALL, and
    ``value`` is a list.  ``col IS NULL`` is ``Qual(col, "=", None)`` and
    ``col IS NOT NULL`` is ``Qual(col, "<>", None)``, as in Multicorn; a
    comparison with a NULL value never reaches the wrapper (no row can match,
    so nothing is scanned).  A list value may contain None (SQL NULL, which
    equals nothing).

    Values are the comparison's own constant, converted to Python: it may be
    of another type than the column (an int4 column compared with an int8 or
    numeric constant, a timestamptz with a date).  Postgres rechecks every
    qual unless the wrapper declares it exact (``exact_quals``).
    """

    field_name: str
    operator: str | tuple[str, bool]
    value: Any
    collation: str | None = None
    #: at execution: Postgres does not recheck this qual (the wrapper said at
    #: plan time that it applies it exactly, or it is under a pushed-down
    #: aggregation), so the wrapper must apply it
    exact: bool = False
    #: at plan time, for a value known only at execution (``value`` is
    #: ``UNKNOWN``): the SQL name of its type (``timestamp with time zone``)
    value_type: str | None = None

    @property
    def is_list_operator(self) -> bool:
        return isinstance(self.operator, tuple)

    @property
    def list_any_or_all(self) -> bool | None:
        """True for ANY, False for ALL, None for a scalar qual."""
        return self.operator[1] if isinstance(self.operator, tuple) else None

    @property
    def operator_name(self) -> str:
        return self.operator[0] if isinstance(self.operator, tuple) else self.operator

    def __repr__(self) -> str:
        if self.is_list_operator:
            op, any_ = self.operator
            return f"{self.field_name} {op} {'ANY' if any_ else 'ALL'}({self.value!r})"
        return f"{self.field_name} {self.operator} {self.value!r}"


@dataclass(frozen=True)
class SortKey:
    """One key of the order the query wants: a column, or a function of a
    column and a value fixed for the scan, such as the distance
    ``embedding <-> '[1,2,3]'`` (``function`` is then the function's
    ``"schema.name"``, ``orochi.l2_distance``; the value is converted as a
    qual's, and is ``UNKNOWN`` at plan time when it is a parameter, with its
    SQL type in ``value_type``)."""

    attname: str
    attnum: int
    is_reversed: bool = False
    nulls_first: bool = False
    collate: str | None = None
    function: str | None = None
    value: Any = None
    #: the column is the function's first argument (else its second)
    column_first: bool = True
    value_type: str | None = None


@dataclass(frozen=True)
class OptionSpec:
    """An option a wrapper accepts: its type (a callable converting the text
    value, e.g. int), a description, and optional allowed values."""

    parse: Callable[[str], Any] = str
    description: str = ""
    choices: tuple[str, ...] | None = None


def parse_bool(value: str) -> bool:
    """Postgres's spellings of a boolean option."""
    v = value.strip().lower()
    if v in ("true", "on", "yes", "1", "t"):
        return True
    if v in ("false", "off", "no", "0", "f"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


@dataclass
class TableDefinition:
    """A table that IMPORT FOREIGN SCHEMA creates."""

    table_name: str
    columns: list[ColumnDefinition] = field(default_factory=list)
    options: Mapping[str, str] = field(default_factory=dict)


class ForeignDataWrapper:
    """Base class of every Orochi foreign-data wrapper.

    A table is served by one instance, made with the server's and table's
    options merged (table options win) and the table's columns, and kept while
    they stay the same.

    Args:
        options: server and table options, minus ``wrapper``.
        columns: column name to :class:`ColumnDefinition`, in table order.
    """

    #: options accepted, by where they are given: "server", "table", "column"
    options_spec: Mapping[str, Mapping[str, OptionSpec]] = {}

    #: rows to gather before calling insert_batch (when it is overridden)
    insert_batch_size: int = 10_000

    def __init__(self, options: Mapping[str, Any], columns: Mapping[str, ColumnDefinition]):
        self.options = dict(options)
        self.columns = dict(columns)

    # -- scanning ---------------------------------------------------------

    def execute(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None) -> Iterable:
        """Yield the table's rows: dicts, or sequences in column order, or
        :class:`~orochi_fdw.bridge.batch.Batch` objects.  Only ``columns``
        are needed; the others may be left out."""
        raise NotImplementedError

    def get_rel_size(self, quals: list[Qual], columns: list[str]) -> tuple[float, int]:
        """Estimated (rows, average row width in bytes) of a scan."""
        return (1_000_000, 100)

    def get_costs(self, quals: list[Qual], columns: list[str], rows: float, width: int) -> tuple[float, float]:
        """(startup, total) cost of a scan; by default a sequential read."""
        pages = max(rows * width / 8192.0, 1.0)
        return (10.0, 10.0 + pages + rows * 0.01)

    def can_sort(self, sortkeys: list[SortKey]) -> list[SortKey]:
        """The leading sort keys this wrapper can produce rows in order of;
        or ``(keys, startup_cost, total_cost)`` to cost the sorted scan
        itself (by default: the scan's cost and a comparison per row)."""
        return []

    def get_path_keys(self) -> list[tuple[tuple[str, ...], int]]:
        """Multicorn's parameterized paths; not used by Orochi yet."""
        return []

    def exact_quals(self, quals: list[Qual]) -> list[bool]:
        """For each qual, whether the wrapper applies it exactly (Postgres then
        does not recheck it).  Values may be unknown (parameters) at plan
        time.  By default every qual is rechecked."""
        return [False] * len(quals)

    def explain(self, quals: list[Qual], columns: list[str], sortkeys: list[SortKey] | None = None,
                verbose: bool = False) -> list[str]:
        """Lines EXPLAIN shows; ``"Label: text"`` lines become properties."""
        return []

    # -- modifying --------------------------------------------------------

    @property
    def rowid_column(self) -> str | None:
        """The column identifying a row for UPDATE and DELETE, or "ctid" for
        row ids delivered with batches; None if the table is read-only."""
        return None

    def insert(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """Insert one row; may return the row as stored (for RETURNING)."""
        raise NotImplementedError(f"{type(self).__name__} does not support INSERT")

    def insert_batch(self, batch) -> None:
        """Insert a :class:`~orochi_fdw.bridge.batch.Batch` of rows (COPY FROM,
        INSERT ... SELECT, multi-row INSERT).  Override to receive rows in
        column form; by default rows go one by one through insert()."""
        raise NotImplementedError

    def update(self, oldvalues: Any, newvalues: dict[str, Any]) -> dict[str, Any] | bool | None:
        """Update the row whose rowid_column value is ``oldvalues``; may
        return the row as stored (for RETURNING), or False when the row was
        not updated (this statement already updated or deleted it, as when a
        join of UPDATE ... FROM matches it twice): it is then not counted, as
        Postgres does not count such a row of a heap table."""
        raise NotImplementedError(f"{type(self).__name__} does not support UPDATE")

    def delete(self, oldvalues: Any) -> dict[str, Any] | bool | None:
        """Delete the row whose rowid_column value is ``oldvalues``; may
        return the deleted row (for RETURNING), or False when the row was not
        deleted (this statement already deleted it)."""
        raise NotImplementedError(f"{type(self).__name__} does not support DELETE")

    def end_modify(self) -> None:
        """The INSERT, UPDATE, DELETE or COPY statement is done."""

    def flush_writes(self) -> None:
        """Write what the running statement handed over so far (rows a wrapper
        keeps until ``end_modify``) where later queries see it: a trigger or a
        function that may read the table is about to run. More rows of the
        same statement may follow."""

    # -- transactions -----------------------------------------------------

    def begin(self, serializable: bool) -> None:
        """The first use of this table in a transaction."""

    def pre_commit(self) -> None:
        """Before COMMIT; raising here aborts the transaction."""

    def commit(self) -> None:
        """After COMMIT."""

    def rollback(self) -> None:
        """After ROLLBACK or an error."""

    def sub_begin(self, level: int) -> None:
        """SAVEPOINT (level is the nesting depth, 1 for the first)."""

    def sub_commit(self, level: int) -> None:
        """RELEASE SAVEPOINT."""

    def sub_rollback(self, level: int) -> None:
        """ROLLBACK TO SAVEPOINT."""

    # -- schema -----------------------------------------------------------

    @classmethod
    def import_schema(cls, schema: str, srv_options: Mapping[str, str], options: Mapping[str, str],
                      restriction_type: str | None, restricts: list[str]) -> list[TableDefinition]:
        """Tables IMPORT FOREIGN SCHEMA creates."""
        return []

    @classmethod
    def validate_options(cls, kind: str, options: Mapping[str, str]) -> dict[str, Any]:
        """Check options given at ``kind`` ("server", "table", "column")
        against :attr:`options_spec`; returns them parsed.

        Raises:
            InvalidOptionError: an option the wrapper does not know.
            InvalidOptionValueError: a value of the wrong type or not allowed.
        """
        spec = dict(cls.options_spec.get(kind, {}))
        parsed: dict[str, Any] = {}
        for name, value in options.items():
            if name not in spec:
                valid = ", ".join(sorted(spec)) or "(none)"
                raise InvalidOptionError(
                    f'invalid option "{name}" for {kind} of {cls.__module__}.{cls.__name__}',
                    hint=f"Valid options in this context are: {valid}",
                )
            option = spec[name]
            if option.choices is not None and value not in option.choices:
                raise InvalidOptionValueError(
                    f'invalid value for option "{name}": "{value}" (expected one of {", ".join(option.choices)})'
                )
            try:
                parsed[name] = option.parse(value)
            except (TypeError, ValueError) as exc:
                raise InvalidOptionValueError(f'invalid value for option "{name}": "{value}" ({exc})') from None
        return parsed


_takes: dict[tuple[type, str, str, bool], bool] = {}


def method_takes(instance: Any, name: str, method: str = "execute", any_keyword: bool = False) -> bool:
    """Whether the wrapper's ``method`` (execute() by default) has a parameter
    ``name`` (an Orochi addition to Multicorn's signatures), by name, or with
    ``any_keyword`` also through ``**kwargs``; cached per class."""
    key = (type(instance), name, method, any_keyword)
    known = _takes.get(key)
    if known is None:
        import inspect

        try:
            params = inspect.signature(getattr(instance, method)).parameters
        except (TypeError, ValueError, AttributeError):
            params = {}
        known = _takes[key] = name in params or (any_keyword and any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))
    return known
