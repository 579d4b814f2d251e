"""Change events: built from a slot's decoded stream (heap row changes and
orochi tables' messages), one transaction at a time, and rendered as
Debezium's envelope or the plain ``json`` format.

**Event ids.**  Every event carries the commit LSN of its transaction and
its position in it (``index``, from 0): ``<commit lsn>:<index>`` is unique,
the same each time the slot decodes the transaction again, and increasing
in the order events are delivered, so a consumer drops duplicates by
keeping the last (lsn, index) it applied.  Snapshot events (op ``r``) have
the slot's consistent point as their LSN, below every change after it.

**Keys.**  The event key is the table's key columns (see
:mod:`.sqlapi`); an update that changes a row's key becomes a delete of the
old key and a create of the new one, as Debezium does it.  Deletions carry
the old key (heap tables: their replica identity; orochi tables: the whole
old row).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from orochi_fdw import __version__
from orochi_fdw.cdc import payload, pgoutput
from orochi_fdw.cdc.capture import verify
from orochi_fdw.cdc.values import UNAVAILABLE, Converter, TypeInfo, type_info

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)
except ImportError:  # pragma: no cover - orjson is a dependency
    import json

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

#: what ``source.version`` says
VERSION = f"orochi-{__version__}"
CONNECTOR = "orochi"
#: microseconds between 1970-01-01 and 2000-01-01
_PG_EPOCH_US = 946_684_800_000_000


@dataclass(slots=True)
class Event:
    """One change event.

    Attributes:
        lsn: the commit LSN of its transaction (snapshot events: the slot's
            consistent point).
        index: its position in the transaction (or the snapshot), from 0.
        op: ``c``, ``u``, ``d``, ``r`` or ``t``.
        schema, table: the table, as named when the change was made.
        key: the key columns' values (None for ``t``).
        before, after: the rows, by column (None where Debezium has null).
        xid: the transaction id.
        commit_ms: the commit time (ms since 1970).
        snapshot: for ``r`` events, Debezium's ``source.snapshot``
            (``first``, ``true``, ``last``).
        collection_order: its position among the transaction's events of
            the same table, from 1.
    """

    lsn: int
    index: int
    op: str
    schema: str
    table: str
    key: dict | None
    before: dict | None
    after: dict | None
    xid: int | None
    commit_ms: int
    snapshot: str | None = None
    collection_order: int = 1

    @property
    def id(self) -> str:
        return f"{self.lsn}:{self.index}"


@dataclass
class Transaction:
    """A decoded transaction's events, and where the slot may move after it."""

    xid: int
    commit_lsn: int
    end_lsn: int
    commit_ms: int
    events: list[Event] = field(default_factory=list)
    count: int = 0  # events made so far (the next one's index); events may be taken out before the commit
    ignored_messages: int = 0


@dataclass(frozen=True)
class TableConfig:
    """A captured table as the subscription's catalog describes it."""

    relid: int
    kind: str
    key_columns: tuple[str, ...]


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class _Relation:
    """A heap relation as pgoutput described it last."""

    def __init__(self, rel: pgoutput.Relation, converters: list[Converter], key: list[int]):
        self.rel = rel
        self.names = [c.name for c in rel.columns]
        self.converters = converters
        self.key = key  # positions of the key columns


class EventBuilder:
    """Turns the decoded stream of one subscription's slot into events.

    Args:
        format: ``debezium`` or ``json``.
        tables: the captured tables by oid.
        message_key: the key that signs orochi tables' messages.
        type_lookup: ``oid -> pg_type row`` (see :func:`values.type_info`).
        decimal_handling: Debezium's numeric mode.
    """

    def __init__(self, format: str, tables: dict[int, TableConfig], message_key: bytes,
                 type_lookup: Callable[[int], tuple] | None = None, decimal_handling: str = "precise"):
        self.format = format
        self.tables = tables
        self.message_key = message_key
        self.type_lookup = type_lookup
        self.decimal_handling = decimal_handling
        self.relations: dict[int, _Relation] = {}
        self._converters: dict[tuple[int, int], Converter] = {}
        self.txn: Transaction | None = None
        self._orders: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ helpers
    def converter(self, type_oid: int, typmod: int) -> Converter:
        conv = self._converters.get((type_oid, typmod))
        if conv is None:
            info: TypeInfo = type_info(type_oid, typmod, self.type_lookup)
            conv = self._converters[(type_oid, typmod)] = Converter(info, self.format, self.decimal_handling)
        return conv

    def _add(self, op: str, schema: str, table: str, key: dict | None, before: dict | None,
             after: dict | None) -> None:
        txn = self.txn
        assert txn is not None
        order = self._orders.get((schema, table), 0) + 1
        self._orders[(schema, table)] = order
        txn.events.append(Event(txn.commit_lsn, txn.count, op, schema, table, key, before, after, txn.xid,
                                txn.commit_ms, None, order))
        txn.count += 1

    def _keyed(self, op: str, schema: str, table: str, key_names: Iterable[str], before: dict | None,
               after: dict | None) -> None:
        """Add a change; an update that changes the key is a delete and a create."""
        names = list(key_names)
        if op == "u" and before is not None:
            old_key = {k: before.get(k) for k in names}
            new_key = {k: after.get(k) for k in names}
            if old_key != new_key and all(v != UNAVAILABLE for v in old_key.values()):
                self._add("d", schema, table, old_key, before, None)
                self._add("c", schema, table, new_key, None, after)
                return
        row = after if after is not None else before
        self._add(op, schema, table, {k: row.get(k) for k in names} if row is not None else None, before, after)

    # ------------------------------------------------------------ the stream
    def feed(self, message: Any) -> Transaction | None:
        """Take one decoded pgoutput message; returns the transaction when
        it is complete (at Commit)."""
        if isinstance(message, pgoutput.Begin):
            commit_ms = (message.commit_time + _PG_EPOCH_US) // 1000
            self.txn = Transaction(message.xid, message.final_lsn, 0, commit_ms)
            self._orders = {}
            return None
        if isinstance(message, pgoutput.Commit):
            txn, self.txn = self.txn, None
            if txn is None:
                return None
            txn.end_lsn = message.end_lsn
            txn.commit_lsn = message.commit_lsn
            return txn
        if isinstance(message, pgoutput.Relation):
            self._relation(message)
        elif isinstance(message, pgoutput.RowChange):
            self._row_change(message)
        elif isinstance(message, pgoutput.Truncate):
            for relid in message.relids:
                rel = self.relations.get(relid)
                if rel is not None and relid in self.tables:
                    self._add("t", rel.rel.schema, rel.rel.table, None, None, None)
        elif isinstance(message, pgoutput.Message):
            if message.transactional and message.prefix == payload.PREFIX and self.txn is not None:
                self._orochi_message(message)
        return None

    def _relation(self, rel: pgoutput.Relation) -> None:
        converters = [self.converter(c.type_oid, c.typmod) for c in rel.columns]
        names = [c.name for c in rel.columns]
        config = self.tables.get(rel.relid)
        wanted = list(config.key_columns) if config is not None else []
        if wanted and all(k in names for k in wanted):
            key = [names.index(k) for k in wanted]
        else:
            key = [i for i, c in enumerate(rel.columns) if c.key] or list(range(len(names)))
        self.relations[rel.relid] = _Relation(rel, converters, key)

    def _row(self, rel: _Relation, values: list | None) -> dict | None:
        if values is None:
            return None
        out = {}
        for name, conv, v in zip(rel.names, rel.converters, values):
            if v is pgoutput.UNCHANGED:
                out[name] = UNAVAILABLE
            else:
                out[name] = conv.from_text(v)
        return out

    def _row_change(self, change: pgoutput.RowChange) -> None:
        rel = self.relations.get(change.relid)
        if rel is None or change.relid not in self.tables:
            return
        key_names = [rel.names[i] for i in rel.key]
        schema, table = rel.rel.schema, rel.rel.table
        if change.op == "I":
            self._keyed("c", schema, table, key_names, None, self._row(rel, change.new))
        elif change.op == "D":
            self._keyed("d", schema, table, key_names, self._row(rel, change.old), None)
        else:
            after = self._row(rel, change.new)
            before = self._row(rel, change.old)
            if before is not None and change.old_kind == "O":
                for name, value in before.items():  # unchanged TOAST values are in a full old row
                    if after.get(name) == UNAVAILABLE and value != UNAVAILABLE:
                        after[name] = value
            self._keyed("u", schema, table, key_names, before, after)

    def _orochi_message(self, message: pgoutput.Message) -> None:
        assert self.txn is not None
        content = verify(self.message_key, message.content)
        if content is None:
            self.txn.ignored_messages += 1
            return
        change = payload.decode(content)
        config = self.tables.get(change.relid)
        if config is None:
            return
        if change.op == "t":
            self._add("t", change.schema, change.table, None, None, None)
            return
        names = [c.name for c in change.columns]
        key_names = [k for k in config.key_columns if k in names] or names
        convs = [self.converter(c.type_oid, c.typmod) for c in change.columns]

        def rows(section: dict | None) -> list[dict] | None:
            if section is None:
                return None
            cols = [conv.from_wire(section[name]) for name, conv in zip(names, convs)]
            return [dict(zip(names, values)) for values in zip(*cols)] if cols else [{} for _ in range(change.rows)]

        before, after = rows(change.before), rows(change.after)
        op = {"c": "c", "d": "d", "u": "u"}[change.op]
        for i in range(change.rows):
            self._keyed(op, change.schema, change.table, key_names,
                        before[i] if before is not None else None, after[i] if after is not None else None)


# ---------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class RenderContext:
    """What rendering needs beyond the event."""

    format: str
    server_name: str
    database: str


def render_value(event: Event, ctx: RenderContext, now_ms: int | None = None) -> bytes:
    """The event as JSON (Debezium's envelope, or the plain format)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if ctx.format == "debezium":
        snapshot = event.snapshot or "false"
        value = {
            "before": event.before,
            "after": event.after,
            "source": {
                "version": VERSION, "connector": CONNECTOR, "name": ctx.server_name, "ts_ms": event.commit_ms,
                "snapshot": snapshot, "db": ctx.database,
                "sequence": f'["{event.lsn}","{event.lsn}"]', "schema": event.schema, "table": event.table,
                "txId": event.xid, "lsn": event.lsn, "xmin": None},
            "op": event.op,
            "ts_ms": now_ms,
            "transaction": None if event.op == "r" else {
                "id": f"{event.xid}:{event.lsn}", "total_order": event.index + 1,
                "data_collection_order": event.collection_order},
        }
        if event.op == "r":
            value["transaction"] = {"id": f"snapshot:{event.lsn}", "total_order": event.index + 1,
                                    "data_collection_order": event.collection_order}
        return dumps(value)
    return dumps({"id": event.id, "lsn": event.lsn, "index": event.index, "txid": event.xid,
                  "commit_ms": event.commit_ms, "op": event.op, "schema": event.schema, "table": event.table,
                  "key": event.key, "before": event.before, "after": event.after,
                  **({"snapshot": event.snapshot} if event.snapshot else {})})


def render_key(event: Event) -> bytes | None:
    """The Kafka message key: the key columns as a JSON object (None for
    events without a key: truncate)."""
    return None if event.key is None else dumps(event.key)
