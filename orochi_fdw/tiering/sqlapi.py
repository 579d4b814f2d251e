"""SQL functions of tiered storage (sql/75_tiering.sql)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.bridge.types import Interval
from orochi_fdw.errors import InvalidParameterError
from orochi_fdw.jobs import registry
from orochi_fdw.tiering import move, targets


def _text_arg(name: str, value: Any, allow_empty: bool = False) -> str:
    if value is None or (not allow_empty and not str(value).strip()):
        raise InvalidParameterError(f"{name} cannot be NULL or empty")
    return str(value)


@sql_function("create_storage_target")
def create_storage_target(name: Any, endpoint: Any, bucket: Any, prefix: Any = "", region: Any = None,
                          options: Any = None) -> int:
    """orochi.create_storage_target: a new target owned by the caller."""
    name = _text_arg("name", name)
    bucket = _text_arg("bucket", bucket)
    if endpoint is not None and not str(endpoint).startswith(("http://", "https://")):
        raise targets.TargetError(f'invalid endpoint "{endpoint}"', hint="An endpoint is an http:// or https:// URL.")
    prefix = "" if prefix is None else str(prefix)
    if ".." in prefix.split("/"):
        raise InvalidParameterError(f'invalid prefix "{prefix}"')
    rest, key_id, secret = targets.validate_options(options)
    exists = spi.prepared("SELECT 1 FROM orochi.storage_target WHERE name = $1", ["text"],
                          internal=True).execute([name]).rows
    if exists:
        raise targets.TargetError(f'storage target "{name}" already exists', "42710")
    owner = int(spi.current_user_oid())
    return int(spi.prepared(
        "INSERT INTO orochi.storage_target (name, owner, endpoint, bucket, prefix, region, options,"
        " access_key_id, secret_access_key) VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)"
        " RETURNING target_id",
        ["text", "oid", "text", "text", "text", "text", "text", "text", "text"], internal=True).execute(
        [name, owner, endpoint, bucket, prefix, region, json.dumps(rest), key_id, secret]).scalar())


@sql_function("drop_storage_target")
def drop_storage_target(name: Any, if_exists: bool | None = False) -> None:
    """orochi.drop_storage_target: refused while stripes live in it."""
    name = _text_arg("name", name)
    try:
        target = targets.by_name(name)
    except targets.TargetError:
        if if_exists:
            spi.log("notice", f'storage target "{name}" does not exist, skipping')
            return
        raise
    targets.require_target_rights(target)
    pattern = targets.object_path(target.target_id, "") + "%"
    used = spi.prepared(
        "SELECT (SELECT count(*) FROM orochi.columnar_stripes WHERE file_path LIKE $1)"
        "     + (SELECT count(*) FROM orochi.columnar_retired_files WHERE file_path LIKE $1)",
        ["text"], internal=True).execute([pattern]).scalar()
    if used:
        raise targets.TargetError(
            f'storage target "{name}" still holds {used} stripe(s)', "2BP01",
            hint="Move the chunks back with orochi.untier_chunk(chunk), or drop them, "
                 "then run orochi.vacuum().")
    spi.prepared("DELETE FROM orochi.storage_target WHERE target_id = $1", ["integer"],
                 internal=True).execute([target.target_id])


@sql_function("tier_chunk")
def tier_chunk(chunk: Any, target: Any, if_not_tiered: bool | None = True) -> str:
    result = move.tier_chunk(_text_arg("chunk", chunk), _text_arg("target", target),
                             True if if_not_tiered is None else bool(if_not_tiered))
    return str(chunk) if result is None else result.chunk


@sql_function("untier_chunk")
def untier_chunk(chunk: Any, if_tiered: bool | None = True) -> str:
    result = move.untier_chunk(_text_arg("chunk", chunk), True if if_tiered is None else bool(if_tiered))
    return str(chunk) if result is None else result.chunk


# ---------------------------------------------------------------- the policy

TIERING = registry.TIERING


@sql_function("add_tiering_policy")
def add_tiering_policy(relation: Any, move_after: Any, target: Any, schedule_interval: Interval | None = None,
                       if_not_exists: bool | None = False,
                       initial_start: datetime.datetime | None = None) -> int:
    """orochi.add_tiering_policy: a job moving chunks older than move_after to a target."""
    from orochi_fdw.jobs import catalog
    from orochi_fdw.jobs.sqlapi import (InvalidJobArgumentError, _hypertable_time_type, _policy_lag, _relid,
                                        _require_table_owner)

    if relation is None:
        raise InvalidJobArgumentError("relation cannot be NULL")
    t = targets.by_name(_text_arg("target", target))
    targets.require_target_rights(t)
    relid = _relid(relation)
    time_type = _hypertable_time_type(relid)
    _require_table_owner(relid)
    config = {"hypertable_id": relid, "move_after": _policy_lag("move_after", move_after, time_type),
              "target": t.name}
    return catalog.add_job(TIERING.proc_name, relid, schedule_interval or "1 day", config,
                           TIERING.application_name, bool(if_not_exists), initial_start=initial_start)


@sql_function("remove_tiering_policy")
def remove_tiering_policy(relation: Any, if_exists: bool | None = False) -> None:
    from orochi_fdw.jobs.sqlapi import _remove_policy

    _remove_policy(TIERING, relation, if_exists)


def run_tiering(job_id: int, relid: int, config: dict) -> str:
    """The tiering policy's body: move every chunk lying wholly before now()
    - ``move_after`` that still has local stripes."""
    from orochi_fdw.timeseries import chunks as chunk_catalog
    from orochi_fdw.timeseries.policies import _config_cutoff, _hypertable_or_error
    from orochi_fdw.timeseries.sqlapi import check_owner

    ht = _hypertable_or_error(relid)
    check_owner(relid)
    cutoff = _config_cutoff(ht, config, "move_after")
    target = config.get("target")
    if not target:
        raise InvalidParameterError('the policy\'s config has no "target"')
    moved = nbytes = 0
    hot = {int(r[0]) for r in spi.prepared(
        "SELECT DISTINCT chunk_id FROM orochi.columnar_stripes WHERE relid = $1 AND chunk_id IS NOT NULL"
        " AND file_path NOT LIKE 'tier:%'", ["oid"], internal=True).execute([relid]).rows}
    for chunk in chunk_catalog.list_chunks(relid):
        if chunk.range_end > cutoff or chunk.chunk_id not in hot:
            continue
        r = move.tier_chunk(chunk.name, target, True)
        if r is not None:
            moved += 1
            nbytes += r.bytes
    if not moved:
        return "no chunk to move"
    return f"moved {moved} chunk(s), {nbytes} bytes, to storage target {target}"
